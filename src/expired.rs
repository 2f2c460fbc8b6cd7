//! The `440 Login Time-out` answer.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::ExpiryReason;

/// The reason phrase hyper writes on the status line, as IIS does.
pub const REASON_PHRASE: &str = "Login Time-out";

/// The default HTML body, byte for byte the page IIS sends: eight lines joined with CRLF, no
/// trailing line break, 142 bytes.
pub const DEFAULT_BODY: &str = "<html>\r\n  <head>\r\n    <title>Login Time-out</title>\r\n  </head>\r\n  <body>\r\n   <p>The session has expired. Log in again.</p>\r\n  </body>\r\n</html>";

/// `440 Login Time-out`, the unofficial status IIS and Exchange send for an expired session.
///
/// `http`'s `StatusCode` knows no reason phrase for 440, so its `Display` (what a
/// `TraceLayer` or a `tracing` field with `%status` prints) reads `440 <unknown status
/// code>`. Log `status.as_u16()` instead, or [`REASON_PHRASE`] beside it. On the wire the
/// layer's 440 carries the phrase over HTTP/1.1 (through hyper's `ReasonPhrase` extension);
/// HTTP/2 has no reason phrases, so there the status is just `440`.
///
/// ```
/// use tower_session_timeout::{login_timeout_status, REASON_PHRASE};
///
/// let status = login_timeout_status();
/// assert_eq!(status.as_u16(), 440);
/// assert_eq!(status.to_string(), "440 <unknown status code>");
/// let logged = format!("{} {REASON_PHRASE}", status.as_u16());
/// assert_eq!(logged, "440 Login Time-out");
/// ```
pub fn login_timeout_status() -> StatusCode {
    // 440 is within 100..=999, which is all `from_u16` checks.
    StatusCode::from_u16(440).unwrap_or(StatusCode::UNAUTHORIZED)
}

/// What the layer knows when it answers an expired session; handed to a custom
/// [`expired_response`](crate::SessionTimeoutBuilder::expired_response).
///
/// It holds nothing taken from the request but the client's format preference, so a page
/// built from it cannot echo the request back.
#[derive(Debug, Clone, Copy)]
pub struct ExpiredSession<'a> {
    reason: ExpiryReason,
    prefers_json: bool,
    login_url: Option<&'a str>,
}

impl<'a> ExpiredSession<'a> {
    pub(crate) fn new(
        reason: ExpiryReason,
        prefers_json: bool,
        login_url: Option<&'a str>,
    ) -> Self {
        ExpiredSession {
            reason,
            prefers_json,
            login_url,
        }
    }

    /// Why the session is not active.
    pub fn reason(&self) -> ExpiryReason {
        self.reason
    }

    /// Whether the request's `Accept` header prefers JSON to HTML.
    pub fn prefers_json(&self) -> bool {
        self.prefers_json
    }

    /// The configured login URL, if any.
    pub fn login_url(&self) -> Option<&'a str> {
        self.login_url
    }

    /// The response the layer sends by default: the IIS page, or problem+json for a client
    /// that prefers JSON. A custom responder can start from it and change what it needs.
    pub fn default_response(&self) -> Response<Bytes> {
        let (content_type, body) = if self.prefers_json {
            ("application/problem+json", Bytes::from(self.problem_json()))
        } else {
            ("text/html; charset=utf-8", self.html())
        };
        let mut response = Response::new(body);
        *response.status_mut() = login_timeout_status();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn html(&self) -> Bytes {
        match self.login_url {
            None => Bytes::from_static(DEFAULT_BODY.as_bytes()),
            Some(url) => Bytes::from(DEFAULT_BODY.replace(
                "Log in again.",
                &format!("<a href=\"{}\">Log in again.</a>", escape_html(url)),
            )),
        }
    }

    /// RFC 9457 problem details, with the reason and login URL as extension members.
    fn problem_json(&self) -> String {
        let mut json = format!(
            "{{\"type\":\"about:blank\",\"title\":\"{REASON_PHRASE}\",\"status\":440,\"detail\":\"The session has expired. Log in again.\",\"reason\":\"{}\"",
            self.reason.as_str()
        );
        if let Some(url) = self.login_url {
            json.push_str(",\"login_url\":");
            crate::json::push_string(&mut json, url);
        }
        json.push('}');
        json
    }
}

/// Builds the answer to an expired session.
pub(crate) type Responder = Arc<dyn Fn(&ExpiredSession<'_>) -> Response<Bytes> + Send + Sync>;

/// Sets what every 440 needs whoever built it: the reason phrase for hyper and a correct
/// `Content-Length`.
pub(crate) fn finish(response: &mut Response<Bytes>) {
    let length = response.body().len();
    response
        .headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(length));
    if response.status() == login_timeout_status() {
        response
            .extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(
                REASON_PHRASE.as_bytes(),
            ));
    }
}

/// Whether the `Accept` header ranks a JSON type above HTML. Ties go to HTML, so browsers
/// sending `*/*` get the page.
pub(crate) fn prefers_json(headers: &HeaderMap) -> bool {
    let mut json = 0u16;
    let mut html = 0u16;
    for header in headers.get_all(ACCEPT) {
        let Ok(text) = header.to_str() else { continue };
        for range in text.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let quality = parts
                .filter_map(|param| param.trim().strip_prefix("q="))
                .find_map(parse_quality)
                .unwrap_or(1000);
            let is_json = media == "application/json"
                || media == "application/problem+json"
                || media.ends_with("+json");
            if is_json {
                json = json.max(quality);
            } else if media == "text/html" || media == "text/*" || media == "*/*" {
                html = html.max(quality);
            }
        }
    }
    json > html
}

/// An RFC 9110 qvalue in thousandths.
fn parse_quality(text: &str) -> Option<u16> {
    let value: f32 = text.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&value)
        .then(|| (value * 1000.0).round() as u16)
}

fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_body_is_the_iis_page() {
        assert_eq!(DEFAULT_BODY.len(), 142);
        assert_eq!(DEFAULT_BODY.split("\r\n").count(), 8);
        assert!(!DEFAULT_BODY.ends_with("\r\n"));
    }

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn accept_negotiation() {
        assert!(prefers_json(&accept("application/json")));
        assert!(prefers_json(&accept(
            "application/problem+json, text/html;q=0.5"
        )));
        assert!(!prefers_json(&accept(
            "text/html,application/xhtml+xml,*/*;q=0.8"
        )));
        assert!(!prefers_json(&accept("*/*")));
        assert!(!prefers_json(&accept("application/json;q=0.5, text/html")));
        assert!(!prefers_json(&HeaderMap::new()));
        // Only HTML and the wildcards that cover it outrank JSON; other types do not count.
        assert!(!prefers_json(&accept("application/json;q=0.5, text/*")));
        assert!(!prefers_json(&accept("application/json;q=0.5, */*")));
        assert!(prefers_json(&accept("application/json;q=0.5, image/png")));
        // Qualities are compared as given, not only as present or absent.
        assert!(prefers_json(&accept(
            "application/json;q=0.9, text/html;q=0.5"
        )));
    }

    #[test]
    fn login_link_is_escaped() {
        let expiry = ExpiredSession::new(ExpiryReason::Idle, false, Some("/login?next=\"x\"&y"));
        let body = expiry.default_response().into_body();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.contains("<a href=\"/login?next=&quot;x&quot;&amp;y\">Log in again.</a>"));
        let expiry = ExpiredSession::new(ExpiryReason::Idle, false, Some("/login?<b>='x'"));
        let body = expiry.default_response().into_body();
        let text = std::str::from_utf8(&body).unwrap();
        assert!(
            text.contains("href=\"/login?&lt;b&gt;=&#39;x&#39;\""),
            "{text}"
        );
    }
}
