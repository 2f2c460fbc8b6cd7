//! The expiry hook: called once per session a request finds expired or a response ends.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::app::{app, TestApp, IDLE};
use tower_session_timeout::store::SessionKey;
use tower_session_timeout::{Clock, ExpiryEvent, ExpiryReason, Timestamp};

fn recording_app(
    configure: impl FnOnce(
        tower_session_timeout::SessionTimeoutBuilder<tower_session_timeout::MemoryStore>,
    ) -> tower_session_timeout::SessionTimeoutBuilder<
        tower_session_timeout::MemoryStore,
    >,
) -> (TestApp, Arc<Mutex<Vec<ExpiryEvent>>>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let recorded = Arc::clone(&events);
    let app = app(move |builder| {
        configure(builder.on_expiry(move |event| recorded.lock().unwrap().push(*event)))
    });
    (app, events)
}

#[tokio::test]
async fn the_hook_hears_an_idle_expiry_once() {
    let (app, events) = recording_app(|builder| builder);
    app.login("s1").await;
    app.advance(IDLE);
    let noticed = Timestamp::from_system_time(app.clock.now());
    for _ in 0..5 {
        app.get("/", Some("s1")).await;
    }
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].reason(), ExpiryReason::Idle);
    assert_eq!(events[0].session(), SessionKey::from_id("s1"));
    assert_eq!(
        events[0].at(),
        noticed,
        "when the layer noticed, by its clock"
    );
}

#[tokio::test]
async fn the_hook_hears_an_absolute_expiry_and_a_sign_out() {
    let (app, events) = recording_app(|builder| builder.absolute_timeout(IDLE));
    app.login("a").await;
    app.login("b").await;
    app.get("/logout", Some("b")).await;
    app.get("/logout", Some("b")).await;
    app.advance(IDLE);
    app.get("/", Some("a")).await;
    let reasons: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .map(ExpiryEvent::reason)
        .collect();
    // Idle and absolute deadlines coincide here: the absolute one is reported.
    assert_eq!(reasons, [ExpiryReason::Ended, ExpiryReason::Absolute]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_requests_at_the_deadline_call_the_hook_once() {
    let (app, events) = recording_app(|builder| builder);
    let app = Arc::new(app);
    app.login("s1").await;
    app.advance(IDLE + Duration::from_millis(1));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            app.get("/", Some("s1")).await.status
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(events.lock().unwrap().len(), 1);
}
