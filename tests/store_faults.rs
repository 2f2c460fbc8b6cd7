//! A store that fails, hangs or is slow: the layer answers per its fail-open/closed setting
//! within the store timeout, logs once per burst, and never holds a request forever.

mod common;

use std::time::Duration;

use common::app::{app_with_store, TestApp};
use common::capture::Logs;
use common::faulty::{Fault, FaultyStore};
use http::StatusCode;
use tower_session_timeout::{Builder, ManualClock, MemoryStore};

const TIMEOUT: Duration = Duration::from_millis(300);

fn faulty(
    fault: Fault,
    configure: impl FnOnce(Builder<MemoryStore>) -> Builder<MemoryStore>,
) -> TestApp<FaultyStore> {
    app_with_store(FaultyStore::new(fault), ManualClock::new(), |builder| {
        configure(builder.store_timeout(Some(TIMEOUT)))
    })
}

#[tokio::test(start_paused = true)]
async fn a_hanging_store_is_answered_503_at_the_timeout() {
    let app = faulty(Fault::Hang, |builder| builder);
    let started = tokio::time::Instant::now();
    let answer = app.get("/", Some("s")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        started.elapsed(),
        TIMEOUT,
        "answered exactly when the timeout fell due"
    );
    assert_eq!(app.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_store_is_passed_on_at_the_timeout_when_fail_open() {
    let app = faulty(Fault::Hang, |builder| builder.fail_open(true));
    let started = tokio::time::Instant::now();
    let answer = app.get("/", Some("s")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(started.elapsed(), TIMEOUT);
    assert_eq!(app.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_slow_store_within_the_timeout_is_waited_for() {
    let app = faulty(Fault::Slow(TIMEOUT / 2), |builder| builder);
    let login = app.get("/login?id=s", None).await;
    assert_eq!(login.status, StatusCode::OK);
    let started = tokio::time::Instant::now();
    let answer = app.get("/", Some("s")).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "the session began and is active"
    );
    assert_eq!(started.elapsed(), TIMEOUT / 2);
}

#[tokio::test(start_paused = true)]
async fn a_store_slower_than_the_timeout_fails_closed() {
    let app = faulty(Fault::Slow(TIMEOUT * 2), |builder| builder);
    let started = tokio::time::Instant::now();
    assert_eq!(
        app.get("/", Some("s")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(started.elapsed(), TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_begin_does_not_hold_the_login_response_forever() {
    let app = faulty(Fault::Hang, |builder| builder);
    let started = tokio::time::Instant::now();
    let answer = app.get("/login?id=s", None).await;
    assert_eq!(answer.status, StatusCode::OK, "the app's answer goes out");
    assert_eq!(started.elapsed(), TIMEOUT);
}

#[tokio::test]
async fn failures_are_logged_once_per_burst() {
    let (logs, _guard) = Logs::capture();
    let app = faulty(Fault::Fail, |builder| builder);
    for _ in 0..100 {
        assert_eq!(
            app.get("/", Some("s")).await.status,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let errors = logs.lines_with("ERROR");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("session store failed"), "{}", errors[0]);
    assert!(
        errors[0].contains("answered 503 (fail-closed)"),
        "{}",
        errors[0]
    );
    assert_eq!(logs.lines_with("session store failed again").len(), 99);
}
