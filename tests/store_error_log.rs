//! Store failures are logged once per burst. Alone in its test binary: log capture uses a
//! thread-local subscriber, and tests on other threads touching the same callsites could
//! otherwise race with tracing's global interest cache.

mod common;

use std::time::Duration;

use common::app::app_with_store;
use common::capture::Logs;
use common::faulty::{Fault, FaultyStore};
use http::StatusCode;
use tower_session_timeout::ManualClock;

#[tokio::test]
async fn failures_are_logged_once_per_burst() {
    let (logs, _guard) = Logs::capture();
    let app = app_with_store(
        FaultyStore::new(Fault::Fail),
        ManualClock::new(),
        |builder| builder.store_timeout(Duration::from_millis(300)),
    );
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
