//! The answers the layer writes itself, besides the 440: the keep-alive `OK`, the status
//! JSON, the browser client script, and the answers to a failed store or a malformed cookie.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::{SessionInfo, Timestamp};

fn plain(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `200 OK` with body `OK`, what idle-timeout client scripts expect from a keep-alive.
pub(crate) fn keep_alive() -> Response<Bytes> {
    plain(
        StatusCode::OK,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"OK"),
    )
}

/// The session's deadlines as JSON. Times are Unix milliseconds; `now_ms` is the server's
/// clock, so a client can correct for its own clock's skew.
pub(crate) fn status(info: &SessionInfo, now: Timestamp) -> Response<Bytes> {
    let seconds_left = |deadline: Timestamp| deadline.saturating_since(now).as_secs();
    let absolute = info.absolute_deadline();
    let json = format!(
        "{{\"active\":true,\"now_ms\":{},\"created_at_ms\":{},\"last_seen_ms\":{},\"idle_deadline_ms\":{},\"absolute_deadline_ms\":{},\"idle_seconds_left\":{},\"absolute_seconds_left\":{},\"seconds_left\":{}}}",
        now.as_unix_millis(),
        info.created_at().as_unix_millis(),
        info.last_seen().as_unix_millis(),
        info.idle_deadline().as_unix_millis(),
        optional(absolute.map(Timestamp::as_unix_millis)),
        seconds_left(info.idle_deadline()),
        optional(absolute.map(seconds_left)),
        seconds_left(info.deadline()),
    );
    plain(StatusCode::OK, "application/json", Bytes::from(json))
}

fn optional(value: Option<u64>) -> String {
    value.map_or_else(|| "null".to_owned(), |value| value.to_string())
}

/// The browser client script, rendered once when the layer was built. `no-cache` lets the
/// browser keep it but ask again each time, so a changed configuration reaches it at once.
pub(crate) fn client_script(script: &Bytes) -> Response<Bytes> {
    let mut response = plain(
        StatusCode::OK,
        "text/javascript; charset=utf-8",
        script.clone(),
    );
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The answer to a sign-in refused by the session limit ([`OnLimit::Refuse`](crate::OnLimit)):
/// `409 Conflict` with RFC 9457 problem details the app's front end can show.
pub(crate) fn session_limit() -> Response<Bytes> {
    plain(
        StatusCode::CONFLICT,
        "application/problem+json",
        Bytes::from_static(
            b"{\"type\":\"https://docs.rs/tower-session-timeout/latest/tower_session_timeout/enum.OnLimit.html#session-limit\",\"title\":\"Too many sessions\",\"status\":409,\"detail\":\"This account has as many active sessions as allowed. Sign out on another device, then sign in again.\",\"reason\":\"session-limit\"}",
        ),
    )
}

/// The fail-closed answer when the store could not be asked.
pub(crate) fn store_unavailable() -> Response<Bytes> {
    plain(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"Service Unavailable: the session store did not answer"),
    )
}

/// The answer to a session cookie that cannot be read (see the crate docs' bad-input table).
pub(crate) fn malformed_cookie() -> Response<Bytes> {
    plain(
        StatusCode::BAD_REQUEST,
        "text/plain; charset=utf-8",
        Bytes::from_static(b"Bad Request: the session cookie is malformed"),
    )
}
