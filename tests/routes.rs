//! The keep-alive and status routes, passive routes, and the seconds-left header.

mod common;

use std::time::Duration;

use common::app::{app, IDLE};
use http::StatusCode;
use tower_session_timeout::login_timeout_status;

#[tokio::test]
async fn keep_alive_refreshes_and_answers_ok() {
    let app = app(|builder| builder.keep_alive_path("/keepalive"));
    app.login("s").await;
    for _ in 0..5 {
        app.advance(IDLE - Duration::from_secs(1));
        let answer = app.get("/keepalive", Some("s")).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.text(), "OK");
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }
    assert_eq!(
        app.calls(),
        1,
        "the keep-alive never reaches the inner service"
    );
    assert_eq!(app.get("/", Some("s")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn keep_alive_on_an_expired_or_missing_session_is_440() {
    let app = app(|builder| builder.keep_alive_path("/keepalive"));
    app.login("s").await;
    app.advance(IDLE);
    assert_eq!(
        app.get("/keepalive", Some("s")).await.status,
        login_timeout_status()
    );
    assert_eq!(
        app.get("/keepalive", None).await.status,
        login_timeout_status()
    );
}

#[tokio::test]
async fn status_reports_deadlines_without_refreshing() {
    let absolute = Duration::from_secs(600);
    let app = app(|builder| builder.status_path("/status").absolute_timeout(absolute));
    app.login("s").await;
    app.advance(Duration::from_secs(45));
    let answer = app.get("/status", Some("s")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let json = answer.text();
    assert!(json.contains("\"idle_seconds_left\":15"), "{json}");
    assert!(json.contains("\"absolute_seconds_left\":555"), "{json}");
    assert!(json.contains("\"seconds_left\":15"), "{json}");
    // The status request did not refresh: 15 s later the session has gone idle.
    app.advance(Duration::from_secs(15));
    let answer = app.get("/status", Some("s")).await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json")
    );
    assert!(answer.text().contains("\"reason\":\"idle\""));
}

#[tokio::test]
async fn passive_routes_are_checked_but_do_not_refresh() {
    let app = app(|builder| builder.passive_prefix("/poll/"));
    app.login("s").await;
    app.advance(IDLE - Duration::from_secs(1));
    assert_eq!(
        app.get("/poll/messages", Some("s")).await.status,
        StatusCode::OK
    );
    app.advance(Duration::from_secs(1));
    assert_eq!(
        app.get("/poll/messages", Some("s")).await.status,
        login_timeout_status()
    );
}

#[tokio::test]
async fn passive_predicate_picks_requests_by_header() {
    let app =
        app(|builder| builder.passive_when(|head| head.headers().contains_key("x-background")));
    app.login("s").await;
    app.advance(IDLE - Duration::from_secs(1));
    let request = http::Request::get("/")
        .header("cookie", "id=s")
        .header("x-background", "1")
        .body(http_body_util::Empty::new())
        .unwrap();
    assert_eq!(app.send(request).await.status, StatusCode::OK);
    app.advance(Duration::from_secs(1));
    assert_eq!(app.get("/", Some("s")).await.status, login_timeout_status());
}

#[tokio::test]
async fn seconds_left_header_on_active_responses() {
    let app = app(|builder| builder.seconds_left_header("session-seconds-left"));
    app.login("s").await;
    app.advance(Duration::from_secs(10));
    let answer = app.get("/", Some("s")).await;
    assert_eq!(
        answer.header("session-seconds-left"),
        Some("60"),
        "refreshed to a full idle timeout"
    );
}

#[tokio::test]
async fn exempt_predicate_picks_requests_by_method() {
    // CORS preflights carry the browser's cookies but no user action: let them through.
    let app = app(|builder| builder.exempt_when(|head| head.method() == http::Method::OPTIONS));
    app.login("s").await;
    app.advance(IDLE);
    let preflight = http::Request::options("/")
        .header("cookie", "id=s")
        .body(http_body_util::Empty::new())
        .unwrap();
    let answer = app.send(preflight).await;
    assert_eq!(answer.status, StatusCode::OK, "exempt: reaches the app");
    assert!(answer.set_cookies()[0].starts_with("id=; Path=/; Max-Age=0"));
    // The same expired cookie on another method is not exempt.
    assert_eq!(app.get("/", Some("s")).await.status, login_timeout_status());
}

#[tokio::test]
async fn passive_predicate_picks_requests_by_uri() {
    // Polling code marks itself in the query string.
    let app = app(|builder| {
        builder.passive_when(|head| {
            head.uri()
                .query()
                .is_some_and(|query| query.split('&').any(|pair| pair == "background=1"))
        })
    });
    app.login("s").await;
    app.advance(IDLE - Duration::from_secs(1));
    let answer = app.get("/messages?background=1", Some("s")).await;
    assert_eq!(answer.status, StatusCode::OK);
    app.advance(Duration::from_secs(1));
    assert_eq!(
        app.get("/", Some("s")).await.status,
        login_timeout_status(),
        "the background request did not refresh the session"
    );
}
