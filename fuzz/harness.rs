//! What the fuzz targets run, shared with `tests/fuzz_regressions.rs` so every input that
//! once found a bug stays a test. Only the crate's public API is used.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use tower_layer::Layer;
use tower_service::Service;
use tower_session_timeout::{ManualClock, MemoryStore, SessionTimeoutLayer};

/// Everything here answers at once (memory store, ready inner service), so one poll with a
/// no-op waker finishes it; a future that did not would be a bug.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the layer did not answer at once on the memory store"),
    }
}

fn body_bytes<B: Body<Data = Bytes>>(body: B) -> Vec<u8> {
    let mut body = pin!(body);
    let mut bytes = Vec::new();
    while let Poll::Ready(Some(frame)) = body
        .as_mut()
        .poll_frame(&mut Context::from_waker(Waker::noop()))
    {
        if let Ok(Some(data)) = frame.map(|frame| frame.into_data().ok()) {
            bytes.extend_from_slice(&data);
        }
    }
    bytes
}

/// The inner service: echoes the `Cookie` header it got, and sets `set_cookie` if given. Its
/// future is ready at once, so the harness needs no runtime.
fn inner(
    set_cookie: Option<HeaderValue>,
) -> impl Service<Request<Full<Bytes>>, Response = Response<Full<Bytes>>, Error = Infallible> + Clone
{
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        let echoed = request
            .headers()
            .get_all(COOKIE)
            .iter()
            .map(|value| value.as_bytes().to_vec())
            .collect::<Vec<_>>()
            .join(&b"; "[..]);
        let mut response = Response::new(Full::new(Bytes::from(echoed)));
        if let Some(value) = &set_cookie {
            response.headers_mut().insert(SET_COOKIE, value.clone());
        }
        std::future::ready(Ok(response))
    })
}

/// Splits fuzz input into up to three fields at 0xFF bytes (never valid in a header).
fn fields(data: &[u8]) -> [&[u8]; 3] {
    let mut parts = data.splitn(3, |&byte| byte == 0xFF);
    [
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    ]
}

/// Any `Cookie` header, any `Set-Cookie` from the inner service, any path: the layer answers
/// one of its defined statuses, never panics, and the store holds at most the sessions the
/// responses began.
pub fn request_path(data: &[u8]) {
    let [cookie, set_cookie, path] = fields(data);
    let Ok(cookie) = HeaderValue::from_bytes(cookie) else {
        return;
    };
    let set_cookie = HeaderValue::from_bytes(set_cookie).ok();
    let path = format!("/{}", String::from_utf8_lossy(path));
    let Ok(uri) = path.parse::<http::Uri>() else {
        return;
    };

    let store = MemoryStore::with_shards(1);
    let clock = ManualClock::new();
    let layer = SessionTimeoutLayer::builder()
        .store(store.clone())
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(60))
        .exempt_prefix("/login")
        .passive_prefix("/poll")
        .keep_alive_path("/keepalive")
        .status_path("/status")
        .max_id_len(64)
        .build()
        .expect("valid settings");
    let mut service = layer.layer(inner(set_cookie.clone()));
    // Twice, with the clock stepping across the idle deadline between.
    for step in [Duration::ZERO, Duration::from_secs(60)] {
        clock.advance(step);
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.uri_mut() = uri.clone();
        request.headers_mut().insert(COOKIE, cookie.clone());
        let response = now(service.call(request)).unwrap_or_else(|never| match never {});
        let status = response.status().as_u16();
        assert!(
            matches!(status, 200 | 400 | 440),
            "unexpected status {status}"
        );
        let body = body_bytes(response.into_body());
        if status == 440 {
            assert!(
                body.starts_with(b"<html>") || body.starts_with(b"{"),
                "a 440 without its page"
            );
        }
        assert!(
            store.len() <= 1,
            "a request grew the store by more than the one session its response began"
        );
    }
}

/// Any `Cookie` header on an exempt route that echoes what it receives, with no session
/// active: the app always gets the request, no reader finds a session cookie in it, and
/// every pair it gets was sent (the layer only takes pairs away).
pub fn cookie_header(data: &[u8]) {
    let Ok(cookie) = HeaderValue::from_bytes(data) else {
        return;
    };
    let layer = SessionTimeoutLayer::builder()
        .exempt_path("/login")
        .max_id_len(64)
        .build()
        .expect("valid settings");
    let mut service = layer.layer(inner(None));
    let request = Request::get("/login")
        .header(COOKIE, cookie.clone())
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    let response = now(service.call(request)).unwrap_or_else(|never| match never {});
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "an exempt route always reaches the app"
    );
    let echoed = body_bytes(response.into_body());
    let pairs = |bytes: &[u8]| -> Vec<Vec<u8>> {
        bytes
            .split(|&byte| byte == b';')
            .map(|pair| pair.trim_ascii().to_vec())
            .filter(|pair| !pair.is_empty())
            .collect()
    };
    let received = pairs(&echoed);
    if let Ok(received) = HeaderValue::from_bytes(&echoed) {
        let readings = Readings::of(&[received]);
        assert!(
            readings
                .all()
                .iter()
                .all(|(_, value)| value.is_none_or(str::is_empty)),
            "a stale session cookie reached the app: {readings:?}"
        );
    }
    let sent = pairs(cookie.as_bytes());
    for pair in &received {
        assert!(
            sent.contains(pair),
            "the app got a pair nobody sent: {pair:?}"
        );
    }
    // A plain pair of another name always gets through.
    for pair in &sent {
        let plain = pair
            .iter()
            .all(|&byte| byte.is_ascii_graphic() || byte == b' ')
            && !pair.contains(&b'%')
            && !pair.contains(&b',');
        let name = pair.split(|&byte| byte == b'=').next().unwrap_or_default();
        if plain && pair.contains(&b'=') && name.trim_ascii() != b"id" {
            assert!(
                received.contains(pair),
                "another cookie was dropped: {pair:?}"
            );
        }
    }
}

/// The active session of [`cookie_readers`]: begun, not expired.
pub const ACTIVE_ID: &str = "active-session-0001";
/// The expired session of [`cookie_readers`]: begun, then idle past its timeout.
pub const EXPIRED_ID: &str = "expired-session-002";

/// The session cookie as each reader an app may use finds it in one request.
#[derive(Debug, Clone, Default)]
pub struct Readings {
    /// tower-cookies' `Cookies` (under tower-sessions and axum-login).
    pub tower_cookies: Option<String>,
    /// axum-extra's `CookieJar`.
    pub axum_extra: Option<String>,
    /// The cookie crate's `parse_encoded` over every pair, the last one named `id`.
    pub parse_encoded: Option<String>,
    /// The cookie crate's `parse_encoded`, the first one named `id`.
    pub parse_encoded_first: Option<String>,
    /// The cookie crate's `parse` (no decoding), the last one named `id`.
    pub parse: Option<String>,
    /// The cookie crate's `parse`, the first one named `id`.
    pub parse_first: Option<String>,
}

impl Readings {
    /// What every reader but tower-cookies finds in these `Cookie` headers.
    pub fn of(headers: &[HeaderValue]) -> Self {
        let texts: Vec<&str> = headers
            .iter()
            .filter_map(|value| std::str::from_utf8(value.as_bytes()).ok())
            .collect();
        let named = |decode: bool| -> Vec<String> {
            texts
                .iter()
                .flat_map(|text| text.split(';'))
                .filter_map(|pair| {
                    let parsed = if decode {
                        cookie::Cookie::parse_encoded(pair)
                    } else {
                        cookie::Cookie::parse(pair)
                    };
                    parsed.ok()
                })
                .filter(|cookie| cookie.name() == "id")
                .map(|cookie| cookie.value().to_owned())
                .collect()
        };
        let mut map = http::HeaderMap::new();
        for header in headers {
            map.append(COOKIE, header.clone());
        }
        Readings {
            tower_cookies: None,
            axum_extra: axum_extra::extract::cookie::CookieJar::from_headers(&map)
                .get("id")
                .map(|cookie| cookie.value().to_owned()),
            parse_encoded: named(true).pop(),
            parse_encoded_first: named(true).into_iter().next(),
            parse: named(false).pop(),
            parse_first: named(false).into_iter().next(),
        }
    }

    /// Every reading, named.
    pub fn all(&self) -> [(&'static str, Option<&str>); 6] {
        [
            ("tower-cookies", self.tower_cookies.as_deref()),
            ("axum-extra CookieJar", self.axum_extra.as_deref()),
            (
                "Cookie::parse_encoded (last)",
                self.parse_encoded.as_deref(),
            ),
            (
                "Cookie::parse_encoded (first)",
                self.parse_encoded_first.as_deref(),
            ),
            ("Cookie::parse (last)", self.parse.as_deref()),
            ("Cookie::parse (first)", self.parse_first.as_deref()),
        ]
    }
}

/// What [`check_cookie_readers`] saw: the status, and the app's view when it was called.
#[derive(Debug)]
pub struct ReaderOutcome {
    /// The response status.
    pub status: u16,
    /// What each reader found in the request the app got, if the app was called.
    pub readings: Option<Readings>,
    /// Whether the layer put the active session's info in that request.
    pub checked_active: bool,
}

/// Fuzz input for [`check_cookie_readers`]: the first byte picks the route (even: a
/// protected one, odd: the exempt login page), the rest is up to four `Cookie` header lines
/// split at `\n`, in which byte 0x01 stands for [`ACTIVE_ID`] and 0x02 for [`EXPIRED_ID`].
pub fn cookie_readers(data: &[u8]) {
    let Some((&route, rest)) = data.split_first() else {
        return;
    };
    let path = if route % 2 == 0 { "/app" } else { "/login" };
    let mut headers = Vec::new();
    for line in rest.split(|&byte| byte == b'\n').take(4) {
        let mut bytes = Vec::with_capacity(line.len());
        for &byte in line {
            match byte {
                1 => bytes.extend_from_slice(ACTIVE_ID.as_bytes()),
                2 => bytes.extend_from_slice(EXPIRED_ID.as_bytes()),
                _ => bytes.push(byte),
            }
        }
        let Ok(value) = HeaderValue::from_bytes(&bytes) else {
            return;
        };
        headers.push(value);
    }
    check_cookie_readers(path, &headers);
}

/// Sends a request with these `Cookie` headers to `path` through the layer, in front of an app
/// that reads the session cookie with every reader ([`Readings`]), one session active
/// ([`ACTIVE_ID`]) and one expired ([`EXPIRED_ID`]). Whatever the headers: either the layer
/// refuses the request (400 or 440, the app never called), or every reader finds no session
/// id, or finds exactly the active one the layer checked.
pub fn check_cookie_readers(path: &str, cookies: &[HeaderValue]) -> ReaderOutcome {
    use std::sync::{Arc, Mutex};
    use tower_session_timeout::store::SessionKey;
    use tower_session_timeout::{SessionHandle, SessionStore};

    let store = MemoryStore::with_shards(1);
    let clock = ManualClock::new();
    let layer = SessionTimeoutLayer::builder()
        .store(store.clone())
        .clock(clock.clone())
        .idle_timeout(Duration::from_secs(60))
        .exempt_path("/login")
        .build()
        .expect("valid settings");
    let begin = |id: &str| {
        let began = now(store.begin(
            &SessionKey::from_id(id),
            layer.now(),
            layer.policy(),
            tower_session_timeout::store::NewSession::plain(),
        ));
        began.expect("the memory store does not fail");
    };
    begin(EXPIRED_ID);
    clock.advance(Duration::from_secs(59));
    begin(ACTIVE_ID);
    clock.advance(Duration::from_secs(2));

    let seen: Arc<Mutex<Option<(Readings, bool)>>> = Arc::default();
    let app = {
        let seen = seen.clone();
        tower::service_fn(move |request: Request<Full<Bytes>>| {
            let headers: Vec<HeaderValue> =
                request.headers().get_all(COOKIE).iter().cloned().collect();
            let mut readings = Readings::of(&headers);
            readings.tower_cookies = request
                .extensions()
                .get::<tower_cookies::Cookies>()
                .and_then(|cookies| cookies.get("id"))
                .map(|cookie| cookie.value().to_owned());
            let checked = request
                .extensions()
                .get::<SessionHandle>()
                .and_then(SessionHandle::info)
                .is_some();
            *seen.lock().unwrap() = Some((readings, checked));
            std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))))
        })
    };
    let mut service = layer.layer(tower_cookies::CookieManagerLayer::new().layer(app));
    let mut request = Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("valid request");
    // Three other headers beside each `Cookie`: up to two `Cookie` headers the map holds at
    // most eight values, from three on more, so both ways the layer finds its headers (a
    // scan of a small map, `get_all` in a larger one) are checked.
    for (n, cookie) in cookies.iter().enumerate() {
        for filler in 0..3 {
            let name = format!("x-filler-{n}-{filler}");
            let name = http::HeaderName::from_bytes(name.as_bytes()).expect("a header name");
            request
                .headers_mut()
                .append(name, HeaderValue::from_static("1"));
        }
        request.headers_mut().append(COOKIE, cookie.clone());
    }
    let response = now(service.call(request)).unwrap_or_else(|never| match never {});
    let status = response.status().as_u16();
    let seen = seen.lock().unwrap().take();
    match &seen {
        None => assert!(
            matches!(status, 400 | 440),
            "the app was not called, yet the answer is {status}"
        ),
        Some((readings, checked_active)) => {
            assert_eq!(status, 200, "the app was called");
            for (reader, value) in readings.all() {
                let Some(value) = value.filter(|value| !value.is_empty()) else {
                    continue;
                };
                assert!(
                    value == ACTIVE_ID && *checked_active,
                    "{reader} gave the app session {value:?}, but the layer checked {}; headers {cookies:?}",
                    if *checked_active { "the active session" } else { "no session" }
                );
            }
        }
    }
    let (readings, checked_active) = match seen {
        Some((readings, checked)) => (Some(readings), checked),
        None => (None, false),
    };
    ReaderOutcome {
        status,
        readings,
        checked_active,
    }
}
