//! A log event for every decision, at levels production can leave on, with ids only as a short
//! hash. Alone in its test binary, as log capture uses a thread-local subscriber.

mod common;

use common::app::{app, IDLE};
use common::capture::Logs;
use tower_session_timeout::store::SessionKey;

#[tokio::test]
async fn every_decision_is_logged_with_a_short_hash_only() {
    let (logs, _guard) = Logs::capture();
    let raw_id = "raw-session-id-0123456789";
    let short = SessionKey::from_id(raw_id).short();
    let app = app(|builder| builder.exempt_path("/login").passive_path("/poll"));
    app.login(raw_id).await;
    app.get("/", Some(raw_id)).await;
    app.get("/poll", Some(raw_id)).await;
    app.advance(IDLE);
    app.get("/", Some(raw_id)).await;
    app.get("/login", Some(raw_id)).await;

    let text = logs.text();
    assert!(!text.contains(raw_id), "a raw id was logged:\n{text}");
    for decision in [
        "session began",
        "session active",
        "route=Passive",
        "session over",
        "session not active",
        "exempt route",
    ] {
        let lines = logs.lines_with(decision);
        assert!(!lines.is_empty(), "no event for {decision:?}:\n{text}");
    }
    let over = logs.lines_with("session over");
    assert!(
        over[0].contains(" INFO ") && over[0].contains(&short) && over[0].contains("reason=idle"),
        "{over:?}"
    );
    assert!(
        logs.lines_with("session active")
            .iter()
            .all(|line| line.contains("TRACE")),
        "per-request events stay below INFO"
    );
}

/// An owner named on a sign-in is taken without a word; one named on a response that begins
/// nothing (the request's own id set again) is ignored with a warning.
#[tokio::test]
async fn only_an_owner_named_where_nothing_begins_is_warned_about() {
    let (logs, _guard) = Logs::capture();
    let app = app(|builder| builder);
    let login = |carried: Option<&str>| {
        let mut request =
            http::Request::get("/login?id=owned-session-0123456789").header("x-owner", "alice");
        if let Some(id) = carried {
            request = request.header(http::header::COOKIE, format!("id={id}"));
        }
        request.body(http_body_util::Empty::new()).unwrap()
    };
    app.send(login(None)).await;
    let warning = "set_owner on a response that begins no session";
    assert!(logs.lines_with(warning).is_empty(), "{}", logs.text());
    app.send(login(Some("owned-session-0123456789"))).await;
    assert_eq!(logs.lines_with(warning).len(), 1, "{}", logs.text());
}
