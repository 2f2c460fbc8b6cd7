//! The 440 answer, byte for byte, and its status line as hyper writes it on the wire.

mod common;

use std::convert::Infallible;

use bytes::Bytes;
use common::app::{app, IDLE};
use http::{Response, StatusCode};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::Layer;
use tower_session_timeout::{login_timeout_status, SessionTimeoutLayer, DEFAULT_BODY};

const IIS_BODY: &str = "<html>\r\n  <head>\r\n    <title>Login Time-out</title>\r\n  </head>\r\n  <body>\r\n   <p>The session has expired. Log in again.</p>\r\n  </body>\r\n</html>";

#[tokio::test]
async fn the_default_answer_byte_for_byte() {
    let app = app(|builder| builder);
    let answer = app.get("/dashboard", Some("gone")).await;
    assert_eq!(answer.status.as_u16(), 440);
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(&answer.body[..], IIS_BODY.as_bytes());
    assert_eq!(answer.body.len(), 142);
    assert_eq!(DEFAULT_BODY, IIS_BODY);
    let mut headers: Vec<(String, String)> = answer
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    assert_eq!(
        headers,
        [
            ("cache-control".to_owned(), "no-store".to_owned()),
            ("content-length".to_owned(), "142".to_owned()),
            ("content-type".to_owned(), "text/html; charset=utf-8".to_owned()),
            (
                "set-cookie".to_owned(),
                "id=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn the_cleared_cookie_carries_the_configured_path_and_domain() {
    let app = app(|builder| builder.cookie_path("/app").cookie_domain("example.com"));
    let answer = app.get("/app/x", Some("gone")).await;
    assert_eq!(
        answer.header("set-cookie"),
        Some("id=; Path=/app; Domain=example.com; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax")
    );
}

#[tokio::test]
async fn json_clients_get_problem_details() {
    let app = app(|builder| builder.login_url("/login"));
    app.login("s").await;
    app.advance(IDLE);
    let request = http::Request::get("/api/items")
        .header("cookie", "id=s")
        .header("accept", "application/json, text/plain;q=0.5")
        .body(http_body_util::Empty::new())
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert_eq!(
        answer.text(),
        "{\"type\":\"about:blank\",\"title\":\"Login Time-out\",\"status\":440,\"detail\":\"The session has expired. Log in again.\",\"reason\":\"idle\",\"login_url\":\"/login\"}"
    );
    assert_eq!(
        answer.header("content-length"),
        Some(answer.body.len().to_string().as_str())
    );
}

#[tokio::test]
async fn a_login_url_adds_a_link() {
    let app = app(|builder| builder.login_url("/login"));
    let answer = app.get("/", Some("gone")).await;
    let expected = IIS_BODY.replace("Log in again.", "<a href=\"/login\">Log in again.</a>");
    assert_eq!(answer.text(), expected);
    assert_eq!(
        answer.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
}

#[tokio::test]
async fn nothing_from_the_request_is_echoed() {
    let app = app(|builder| builder.login_url("/login"));
    let request = http::Request::get("/%3Cscript%3Ealert(1)%3C/script%3E?x=%3Cb%3E")
        .header("cookie", "id=<script>alert(1)</script>")
        .header("referer", "<script>")
        .body(http_body_util::Empty::new())
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, login_timeout_status());
    assert!(!answer.text().contains("script"));
    assert!(!answer.text().contains("%3C"));
}

#[tokio::test]
async fn a_custom_response_replaces_the_answer() {
    let app = app(|builder| {
        builder.expired_response(|expiry| {
            Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("content-type", "text/plain")
                .body(format!("expired: {}", expiry.reason()))
                .unwrap()
        })
    });
    let answer = app.get("/", Some("gone")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.text(), "expired: unknown");
    assert_eq!(answer.header("content-length"), Some("16"));
    assert!(
        answer.header("set-cookie").unwrap().starts_with("id=;"),
        "the stale cookie is still cleared"
    );
    assert_eq!(app.calls(), 0);
}

/// Serves `service` with hyper on a loopback port for one connection and returns the raw
/// response bytes to `request`.
async fn raw_exchange<S>(service: S, request: &[u8]) -> String
where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response<tower_session_timeout::ResponseBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper_util::service::TowerToHyperService::new(service);
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
            .await
            .unwrap();
    });
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    client.write_all(request).await.unwrap();
    let mut raw = Vec::new();
    client.read_to_end(&mut raw).await.unwrap();
    server.await.unwrap();
    String::from_utf8(raw).unwrap()
}

#[tokio::test]
async fn hyper_writes_the_iis_status_line() {
    let layer = SessionTimeoutLayer::builder().build().unwrap();
    let inner = tower::service_fn(|_: http::Request<hyper::body::Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"inner"))))
    });
    let service = layer.layer(inner);
    let raw = raw_exchange(
        service,
        b"GET /dashboard HTTP/1.1\r\nHost: www.example.re\r\nCookie: id=abc123def456\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert_eq!(head.lines().next(), Some("HTTP/1.1 440 Login Time-out"));
    assert!(head.contains("\r\ncontent-length: 142\r\n"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: text/html; charset=utf-8\r\n"),
        "{head}"
    );
    assert_eq!(body, IIS_BODY);
}

/// Every reason the answer can carry reads back from its text (the SQL stores keep reasons as
/// text), and `Display` writes the same text.
#[test]
fn every_reason_reads_back_from_its_text() {
    use tower_session_timeout::ExpiryReason;
    for reason in [
        ExpiryReason::Idle,
        ExpiryReason::Absolute,
        ExpiryReason::Ended,
        ExpiryReason::Superseded,
        ExpiryReason::Unknown,
    ] {
        assert_eq!(reason.to_string(), reason.as_str());
        assert_eq!(reason.as_str().parse::<ExpiryReason>(), Ok(reason));
    }
    assert!("Idle".parse::<ExpiryReason>().is_err());
}

/// A custom response is told what the default one uses: whether the client prefers JSON, and
/// the login URL.
#[tokio::test]
async fn a_custom_response_is_told_the_format_and_the_login_url() {
    let app = app(|builder| {
        builder.login_url("/login").expired_response(|expiry| {
            Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .body(format!(
                    "{} json={} login={:?}",
                    expiry.reason(),
                    expiry.prefers_json(),
                    expiry.login_url()
                ))
                .unwrap()
        })
    });
    assert_eq!(
        app.get("/", Some("gone")).await.text(),
        "unknown json=false login=Some(\"/login\")"
    );
    assert_eq!(
        app.get_json("gone").await.text(),
        "unknown json=true login=Some(\"/login\")"
    );
}
