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

/// Any `Cookie` header on an exempt route that echoes what it receives: the session cookie
/// never reaches the app unless it is active (and here no session is), and every other
/// cookie pair does, unchanged.
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
    let name_of = |pair: &[u8]| {
        pair.split(|&byte| byte == b'=')
            .next()
            .unwrap_or_default()
            .trim_ascii()
            .to_vec()
    };
    // A pair that carries a session id: named `id`, with a non-empty value (`id=` and a
    // bare `id` carry none).
    let is_session = |pair: &[u8]| {
        let mut halves = pair.splitn(2, |&byte| byte == b'=');
        let (name, value) = (halves.next().unwrap_or_default(), halves.next());
        name.trim_ascii() == b"id" && value.is_some_and(|value| !value.trim_ascii().is_empty())
    };
    let all = pairs(cookie.as_bytes());
    let stripped = all.iter().any(|pair| is_session(pair));
    let sent: Vec<_> = all
        .into_iter()
        .filter(|pair| !stripped || name_of(pair) != b"id")
        .collect();
    let received = pairs(&echoed);
    assert!(
        !received.iter().any(|pair| is_session(pair)),
        "a stale session cookie reached the app"
    );
    assert_eq!(received, sent, "other cookies must pass unchanged");
}
