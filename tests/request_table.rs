//! Every row of SPEC's "One request, step by step" table.

mod common;

use std::time::Duration;

use common::app::{app, NowMillis, IDLE};
use http::StatusCode;
use tower_session_timeout::{login_timeout_status, DEFAULT_BODY};

#[tokio::test]
async fn no_session_cookie_passes_untouched() {
    let app = app(|builder| builder);
    let answer = app.get("/anything", None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "inner");
    assert!(answer.set_cookies().is_empty(), "the layer adds nothing");
    assert_eq!(app.calls(), 1);
    assert!(app.store.is_empty(), "no session, no record");
}

#[tokio::test]
async fn active_session_is_refreshed_and_passed_on() {
    let app = app(|builder| builder);
    app.login("s1").await;
    app.advance(Duration::from_secs(40));
    let answer = app.get("/info", Some("s1")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let now = app.clock.now_millis();
    assert_eq!(
        answer.text(),
        now.to_string(),
        "last_seen moved to now, seen through the extensions"
    );
    // 40 s + 40 s is past the original deadline, but the refresh moved it.
    app.advance(Duration::from_secs(40));
    assert_eq!(app.get("/", Some("s1")).await.status, StatusCode::OK);
    assert_eq!(app.calls(), 3);
}

#[tokio::test]
async fn expired_session_gets_440_and_never_reaches_the_inner_service() {
    let app = app(|builder| builder);
    app.login("s1").await;
    app.advance(IDLE);
    let answer = app.get("/dashboard", Some("s1")).await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(answer.text(), DEFAULT_BODY);
    assert_eq!(app.calls(), 1, "only the login reached the inner service");
    assert!(answer.set_cookies()[0].starts_with("id=; Path=/; Max-Age=0"));
}

#[tokio::test]
async fn ended_session_gets_440() {
    let app = app(|builder| builder);
    app.login("s1").await;
    assert_eq!(app.get("/logout", Some("s1")).await.status, StatusCode::OK);
    let answer = app.get("/dashboard", Some("s1")).await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(app.calls(), 2);
}

#[tokio::test]
async fn never_known_session_gets_440() {
    let app = app(|builder| builder);
    let answer = app.get("/dashboard", Some("made-up")).await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(app.calls(), 0);
}

#[tokio::test]
async fn exempt_route_with_a_stale_cookie_passes_without_it_and_clears_it() {
    let app = app(|builder| builder.exempt_path("/echo-cookie"));
    app.login("s1").await;
    app.advance(IDLE);
    let request = http::Request::get("/echo-cookie")
        .header("cookie", "theme=dark; id=s1; lang=en")
        .body(http_body_util::Empty::new())
        .unwrap();
    let answer = app.send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.text(),
        "theme=dark; lang=en",
        "the stale id was removed, the rest kept"
    );
    assert_eq!(answer.set_cookies().len(), 1);
    assert!(answer.set_cookies()[0].starts_with("id=; Path=/; Max-Age=0"));
}

#[tokio::test]
async fn exempt_route_with_an_unknown_cookie_that_sets_a_new_one_is_not_cleared() {
    let app = app(|builder| builder.exempt_path("/login"));
    let answer = app.get("/login?id=fresh", Some("stale")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.set_cookies(),
        ["id=fresh; Path=/; HttpOnly"],
        "only the app's new cookie"
    );
    assert_eq!(
        app.get("/", Some("fresh")).await.status,
        StatusCode::OK,
        "the new id began"
    );
}

#[tokio::test]
async fn exempt_route_with_an_active_session_is_an_ordinary_request() {
    let app = app(|builder| builder.exempt_path("/echo-cookie"));
    app.login("s1").await;
    let answer = app.get("/echo-cookie", Some("s1")).await;
    assert_eq!(answer.text(), "id=s1");
    assert!(answer.set_cookies().is_empty());
}

#[tokio::test]
async fn store_failure_answers_503_by_default() {
    let app = common::app::app_with_store(
        common::failing::FailingStore,
        tower_session_timeout::ManualClock::new(),
        |builder| builder,
    );
    let answer = app.get("/dashboard", Some("s1")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(app.calls(), 0);
}

#[tokio::test]
async fn store_failure_passes_when_fail_open() {
    let app = common::app::app_with_store(
        common::failing::FailingStore,
        tower_session_timeout::ManualClock::new(),
        |builder| builder.fail_open(true),
    );
    let answer = app.get("/dashboard", Some("s1")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.text(), "inner");
    assert_eq!(app.calls(), 1);
}
