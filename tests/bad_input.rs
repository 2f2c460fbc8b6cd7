//! Malformed requests: each gets its documented answer, none panics or grows the store.

mod common;

use bytes::Bytes;
use common::app::app;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::Empty;
use tower_session_timeout::login_timeout_status;

fn with_cookie_headers(values: &[&[u8]]) -> Request<Empty<Bytes>> {
    let mut request = Request::get("/").body(Empty::new()).unwrap();
    for value in values {
        request
            .headers_mut()
            .append("cookie", HeaderValue::from_bytes(value).unwrap());
    }
    request
}

#[tokio::test]
async fn non_utf8_session_cookie_is_400_and_cleared() {
    let app = app(|builder| builder);
    let answer = app.send(with_cookie_headers(&[b"id=\xff\xfe"])).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.header("set-cookie").unwrap().starts_with("id=;"));
    assert_eq!(app.calls(), 0);
    assert!(app.store.is_empty());
}

#[tokio::test]
async fn non_utf8_bytes_in_other_cookies_do_not_matter() {
    let app = app(|builder| builder);
    app.login("s").await;
    let answer = app.send(with_cookie_headers(&[b"junk=\xff; id=s"])).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn empty_value_is_no_session() {
    let app = app(|builder| builder);
    let answer = app.send(with_cookie_headers(&[b"id="])).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(app.calls(), 1);
}

#[tokio::test]
async fn quoted_values_are_taken_verbatim() {
    let app = app(|builder| builder);
    let login = Request::get("/login")
        .header("x-new-id", "\"quoted\"")
        .body(Empty::new())
        .unwrap();
    assert_eq!(app.send(login).await.status, StatusCode::OK);
    let answer = app.send(with_cookie_headers(&[b"id=\"quoted\""])).await;
    assert_eq!(answer.status, StatusCode::OK);
    let unquoted = app.send(with_cookie_headers(&[b"id=quoted"])).await;
    assert_eq!(
        unquoted.status,
        login_timeout_status(),
        "a different value is a different id"
    );
}

#[tokio::test]
async fn the_same_id_repeated_counts_once() {
    let app = app(|builder| builder);
    app.login("s").await;
    let answer = app
        .send(with_cookie_headers(&[b"id=s; id=s", b"id=s"]))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn different_ids_under_one_name_are_400() {
    let app = app(|builder| builder);
    app.login("s").await;
    let answer = app.send(with_cookie_headers(&[b"id=s; id=other"])).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(app.calls(), 1);
}

#[tokio::test]
async fn thousands_of_cookies_are_read_through() {
    let app = app(|builder| builder);
    app.login("s").await;
    let mut header = (0..5000)
        .map(|i| format!("c{i}=v{i}"))
        .collect::<Vec<_>>()
        .join("; ");
    header.push_str("; id=s");
    let answer = app.send(with_cookie_headers(&[header.as_bytes()])).await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn ids_longer_than_the_limit_are_440_without_a_lookup() {
    let app = app(|builder| builder.max_id_len(64));
    let long = "x".repeat(65);
    let answer = app.get("/", Some(&long)).await;
    assert_eq!(answer.status, login_timeout_status());
    // The app cannot begin such an id either.
    app.login(&long).await;
    assert!(app.store.is_empty());
    let huge = "y".repeat(100_000);
    assert_eq!(
        app.get("/", Some(&huge)).await.status,
        login_timeout_status()
    );
}

#[tokio::test]
async fn malformed_or_long_cookies_on_exempt_routes_are_stripped() {
    let app = app(|builder| builder.exempt_path("/echo-cookie").max_id_len(8));
    let mut request = with_cookie_headers(&[b"a=1; id=ba d", b"id=123456789"]);
    *request.uri_mut() = "/echo-cookie".parse().unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "a=1");
}

#[tokio::test]
async fn random_ids_add_nothing_to_the_store() {
    let app = app(|builder| {
        builder
            .exempt_path("/login")
            .keep_alive_path("/keepalive")
            .status_path("/status")
    });
    for i in 0..500 {
        let id = format!("{:032x}", rand::random::<u128>());
        let path = ["/", "/keepalive", "/status", "/login", "/logout"][i % 5];
        let answer = app.get(path, Some(&id)).await;
        assert_ne!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert!(app.store.is_empty(), "{} records", app.store.len());
}

#[tokio::test]
async fn a_400_for_two_ids_also_clears_the_stray_cookie_at_the_root() {
    let app = app(|builder| builder.cookie_path("/app"));
    let answer = app.send(with_cookie_headers(&[b"id=a; id=b"])).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let cleared: Vec<_> = answer
        .set_cookies()
        .iter()
        .map(|cookie| cookie.split("; Max-Age").next().unwrap().to_owned())
        .collect();
    assert_eq!(cleared, ["id=; Path=/app", "id=; Path=/"]);
}

#[tokio::test]
async fn plain_ascii_bytes_a_cookie_may_not_hold_are_400_on_a_protected_route() {
    let app = app(|builder| builder);
    app.login("s1").await;
    for header in [&b"id=s 1"[..], b"id=s1\\", b"id=s,1", b"id=s1%", b"id=s\t1"] {
        let answer = app.send(with_cookie_headers(&[header])).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(header)
        );
    }
    assert_eq!(app.calls(), 1, "only the sign-in reached the app");
}

#[tokio::test]
async fn ids_at_the_length_limits_are_tracked_and_one_past_them_are_not() {
    let app = app(|builder| builder.min_id_len(4).max_id_len(8));
    for (id, tracked) in [
        ("abc", false),
        ("abcd", true),
        ("abcdefgh", true),
        ("abcdefghi", false),
    ] {
        app.login(id).await;
        let status = app.get("/", Some(id)).await.status;
        let want = if tracked {
            StatusCode::OK
        } else {
            login_timeout_status()
        };
        assert_eq!(status, want, "{id} ({} bytes)", id.len());
    }
    assert_eq!(
        app.store.len(),
        2,
        "only the ids within the limits were begun"
    );
}
