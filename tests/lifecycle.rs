//! How sessions begin and end: observed `Set-Cookie`, rotation, and the explicit handle.

mod common;

use std::time::Duration;

use common::app::{app, IDLE};
use http::StatusCode;
use tower_session_timeout::login_timeout_status;

#[tokio::test]
async fn a_set_cookie_begins_a_session() {
    let app = app(|builder| builder);
    assert_eq!(
        app.get("/", Some("s1")).await.status,
        login_timeout_status()
    );
    app.login("s1").await;
    assert_eq!(app.get("/", Some("s1")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_cookie_resent_on_every_response_does_not_reset_the_absolute_deadline() {
    let absolute = Duration::from_secs(120);
    let app = app(|builder| builder.absolute_timeout(absolute));
    app.login("s1").await;
    app.advance(Duration::from_secs(50));
    // The app sets the same id again (as tower-sessions does when it saves).
    assert_eq!(
        app.get("/login?id=s1", Some("s1")).await.status,
        StatusCode::OK
    );
    app.advance(Duration::from_secs(50));
    assert_eq!(
        app.get("/login?id=s1", Some("s1")).await.status,
        StatusCode::OK
    );
    app.advance(Duration::from_secs(20));
    let answer = app.get_json("s1").await;
    assert_eq!(answer.reason(), "absolute");
}

#[tokio::test]
async fn clearing_the_cookie_ends_the_session() {
    let app = app(|builder| builder);
    app.login("s1").await;
    let answer = app.get("/logout", Some("s1")).await;
    assert_eq!(
        answer.set_cookies(),
        ["id=; Path=/; Max-Age=0"],
        "the app's own clearing only"
    );
    let answer = app.get_json("s1").await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(answer.reason(), "ended");
}

#[tokio::test]
async fn rotation_begins_the_new_id_and_ends_the_old_one() {
    let app = app(|builder| builder);
    app.login("old").await;
    assert_eq!(
        app.get("/login?id=new", Some("old")).await.status,
        StatusCode::OK
    );
    assert_eq!(app.get("/", Some("new")).await.status, StatusCode::OK);
    let answer = app.get_json("old").await;
    assert_eq!(answer.reason(), "ended");
}

#[tokio::test]
async fn the_handle_begins_and_ends_sessions() {
    let app = app(|builder| builder);
    assert_eq!(app.get("/begin?id=h1", None).await.status, StatusCode::OK);
    assert_eq!(app.get("/", Some("h1")).await.status, StatusCode::OK);
    assert_eq!(app.get("/end", Some("h1")).await.status, StatusCode::OK);
    let answer = app.get_json("h1").await;
    assert_eq!(answer.reason(), "ended");
}

#[tokio::test]
async fn an_expired_id_set_again_by_the_app_is_not_revived() {
    let app = app(|builder| builder);
    app.login("s1").await;
    app.advance(IDLE);
    assert_eq!(
        app.get("/", Some("s1")).await.status,
        login_timeout_status()
    );
    // A buggy app re-issues the expired id on a fresh request.
    app.login("s1").await;
    assert_eq!(
        app.get("/", Some("s1")).await.status,
        login_timeout_status()
    );
}

#[tokio::test]
async fn after_the_retention_an_expired_id_reads_unknown() {
    let retention = Duration::from_secs(30);
    let app = app(|builder| builder.tombstone_retention(retention));
    app.login("s1").await;
    app.advance(IDLE + retention);
    let answer = app.get_json("s1").await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(answer.reason(), "unknown");
}

#[tokio::test]
async fn a_handler_reads_the_checked_id_and_the_time_left() {
    let app = app(|builder| builder);
    app.login("s1").await;
    app.advance(Duration::from_secs(10));
    // The id as the layer checked it, whichever spelling carried it.
    let answer = app
        .get_with_cookie_header("/whoami", "theme=dark; %69d=s1")
        .await;
    assert_eq!(
        answer.text(),
        "s1 60000",
        "refreshed now: the whole idle timeout left"
    );
    let answer = app.get("/whoami", None).await;
    assert_eq!(answer.text(), "none 0");
}

/// `SessionInfo::checked_at` is the layer's clock when it checked this request, not when the
/// session began or was last seen.
#[tokio::test]
async fn the_info_says_when_the_layer_checked_the_session() {
    let app = app(|builder| builder);
    app.login("checked-session-0123456789").await;
    let begun = tower_session_timeout::Timestamp::from_system_time(
        tower_session_timeout::Clock::now(&app.clock),
    );
    app.advance(Duration::from_secs(7));
    let answer = app
        .get("/checked-at", Some("checked-session-0123456789"))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let checked = begun.saturating_add(Duration::from_secs(7));
    assert_eq!(answer.text(), checked.as_unix_millis().to_string());
}
