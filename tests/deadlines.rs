//! Both timeouts just before, at and just after their deadlines, through the layer.

mod common;

use std::time::Duration;

use common::app::{app, IDLE};
use http::StatusCode;
use tower_session_timeout::login_timeout_status;

const MS: Duration = Duration::from_millis(1);
const ABSOLUTE: Duration = Duration::from_secs(150);

#[tokio::test]
async fn idle_just_before_the_deadline_is_active() {
    let app = app(|builder| builder);
    app.login("s").await;
    app.advance(IDLE - MS);
    assert_eq!(app.get("/", Some("s")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn idle_exactly_at_the_deadline_is_expired() {
    let app = app(|builder| builder);
    app.login("s").await;
    app.advance(IDLE);
    assert_eq!(app.get("/", Some("s")).await.status, login_timeout_status());
}

#[tokio::test]
async fn idle_just_after_the_deadline_is_expired_with_reason_idle() {
    let app = app(|builder| builder);
    app.login("s").await;
    app.advance(IDLE + MS);
    let answer = app.get_json("s").await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(answer.reason(), "idle");
}

#[tokio::test]
async fn activity_slides_the_idle_deadline() {
    let app = app(|builder| builder);
    app.login("s").await;
    for _ in 0..10 {
        app.advance(IDLE - MS);
        assert_eq!(app.get("/", Some("s")).await.status, StatusCode::OK);
    }
    app.advance(IDLE);
    assert_eq!(app.get("/", Some("s")).await.status, login_timeout_status());
}

/// Keeps the session active every 50 s up to `until` after sign-in.
async fn stay_active(app: &common::app::TestApp, until: Duration) {
    let mut elapsed = Duration::ZERO;
    while elapsed < until {
        let step = (until - elapsed).min(Duration::from_secs(50));
        app.advance(step);
        elapsed += step;
        assert_eq!(
            app.get("/", Some("s")).await.status,
            StatusCode::OK,
            "at {elapsed:?}"
        );
    }
}

#[tokio::test]
async fn absolute_just_before_the_deadline_is_active() {
    let app = app(|builder| builder.absolute_timeout(ABSOLUTE));
    app.login("s").await;
    stay_active(&app, ABSOLUTE - MS).await;
}

#[tokio::test]
async fn absolute_exactly_at_the_deadline_is_expired_whatever_the_activity() {
    let app = app(|builder| builder.absolute_timeout(ABSOLUTE));
    app.login("s").await;
    stay_active(&app, ABSOLUTE - MS).await;
    app.advance(MS);
    let answer = app.get_json("s").await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(answer.reason(), "absolute");
}

#[tokio::test]
async fn absolute_just_after_the_deadline_is_expired() {
    let app = app(|builder| builder.absolute_timeout(ABSOLUTE));
    app.login("s").await;
    stay_active(&app, ABSOLUTE - MS).await;
    app.advance(MS * 2);
    assert_eq!(app.get("/", Some("s")).await.status, login_timeout_status());
}

#[tokio::test]
async fn a_clock_stepping_back_does_not_make_a_session_younger() {
    let app = app(|builder| builder);
    app.login("s").await;
    let start = std::time::SystemTime::UNIX_EPOCH
        + Duration::from_millis(common::app::NowMillis::now_millis(&app.clock));
    app.advance(Duration::from_secs(50));
    assert_eq!(app.get("/", Some("s")).await.status, StatusCode::OK);
    // Back to sign-in time, then forward one idle timeout from the last refresh.
    app.clock.set(start);
    assert_eq!(app.get("/", Some("s")).await.status, StatusCode::OK);
    app.clock.set(start + Duration::from_secs(50) + IDLE);
    assert_eq!(app.get("/", Some("s")).await.status, login_timeout_status());
}

#[tokio::test]
async fn touch_interval_makes_expiry_early_never_late() {
    let touch = Duration::from_secs(10);
    let app = app(|builder| builder.touch_interval(touch));
    app.login("s").await;
    // A refresh 9 s in is skipped, so the deadline stays at sign-in + IDLE: early by 9 s.
    app.advance(touch - Duration::from_secs(1));
    assert_eq!(app.get("/", Some("s")).await.status, StatusCode::OK);
    app.advance(IDLE - touch + Duration::from_secs(1));
    assert_eq!(app.get("/", Some("s")).await.status, login_timeout_status());
}
