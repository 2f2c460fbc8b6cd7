//! A store that fails, hangs or is slow: the layer answers per its fail-open/closed setting
//! within the store timeout, logs once per burst, and never holds a request forever.

mod common;

use std::time::Duration;

use common::app::{app_with_store, TestApp};
use common::faulty::{Fault, FaultyStore};
use http::StatusCode;
use tower_session_timeout::store::{Check, SessionKey, SessionStore, Touch};
use tower_session_timeout::{ExpiryReason, ManualClock, MemoryStore, SessionTimeoutBuilder};

const TIMEOUT: Duration = Duration::from_millis(300);

fn faulty(
    fault: Fault,
    configure: impl FnOnce(SessionTimeoutBuilder<MemoryStore>) -> SessionTimeoutBuilder<MemoryStore>,
) -> TestApp<FaultyStore> {
    app_with_store(FaultyStore::new(fault), ManualClock::new(), |builder| {
        configure(builder.store_timeout(TIMEOUT))
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
async fn fail_open_never_revives_an_expired_id_the_app_sets_again() {
    let app = faulty(Fault::FailChecks, |builder| {
        builder
            .fail_open(true)
            .tombstone_retention(Duration::from_secs(1))
    });
    let policy = *tower_session_timeout::SessionTimeoutLayer::builder()
        .idle_timeout(common::app::IDLE)
        .tombstone_retention(Duration::from_secs(1))
        .build()
        .unwrap()
        .policy();
    app.login("s").await;
    // Past the deadline and the retention: the store has forgotten the id.
    app.advance(common::app::IDLE + Duration::from_secs(2));
    // The store cannot be asked; the app (tower-sessions does this) sets the same id again.
    assert_eq!(
        app.get("/login?id=s", Some("s")).await.status,
        StatusCode::OK
    );
    let now = tower_session_timeout::Timestamp::from_system_time(
        tower_session_timeout::Clock::now(&app.clock),
    );
    let check = app
        .store
        .inner
        .check(&SessionKey::from_id("s"), now, &policy, Touch::Passive)
        .into_inner()
        .unwrap();
    assert_eq!(
        check,
        Check::Expired(ExpiryReason::Unknown),
        "the expired id began again"
    );
}

#[tokio::test]
async fn fail_open_still_ends_the_session_a_sign_out_clears() {
    let app = faulty(Fault::FailChecks, |builder| builder.fail_open(true));
    let policy = *tower_session_timeout::SessionTimeoutLayer::builder()
        .idle_timeout(common::app::IDLE)
        .build()
        .unwrap()
        .policy();
    app.login("s").await;
    assert_eq!(app.get("/logout", Some("s")).await.status, StatusCode::OK);
    let now = tower_session_timeout::Timestamp::from_system_time(
        tower_session_timeout::Clock::now(&app.clock),
    );
    let check = app
        .store
        .inner
        .check(&SessionKey::from_id("s"), now, &policy, Touch::Passive)
        .into_inner()
        .unwrap();
    assert_eq!(check, Check::Expired(ExpiryReason::Ended));
}

/// A store that implements only the required methods (this one wraps a `MemoryStore`, which
/// counts its sessions) cannot tell how many sessions are active, and answers every optional
/// operation `Unsupported`.
#[tokio::test]
async fn a_store_with_only_the_required_methods_counts_nothing_and_supports_no_more() {
    let store = FaultyStore::new(Fault::FailChecks);
    assert_eq!(store.active_sessions(), None);
    let policy = *tower_session_timeout::SessionTimeoutLayer::builder()
        .build()
        .unwrap()
        .policy();
    let key = SessionKey::from_id("optional");
    let now = tower_session_timeout::Timestamp::from_unix_millis(1_767_225_600_000);
    let unsupported = |error: tower_session_timeout::StoreError| {
        matches!(error, tower_session_timeout::StoreError::Unsupported(_))
    };
    let timeouts = tower_session_timeout::SessionTimeouts::new(Duration::from_secs(60));
    assert!(unsupported(
        store
            .set_timeouts(&key, now, &policy, timeouts)
            .await
            .unwrap_err()
    ));
    assert!(unsupported(
        store.owner_of(&key, now, &policy).await.unwrap_err()
    ));
    assert!(unsupported(
        store.sessions_of("alice", now, &policy).await.unwrap_err()
    ));
    assert!(unsupported(
        store
            .claim_ends(now, &policy, 1, Duration::from_secs(30))
            .await
            .unwrap_err()
    ));
    assert!(unsupported(
        store.ack_ends(&[key], now, &policy).await.unwrap_err()
    ));
    assert!(unsupported(
        store
            .end_sessions_of("alice", None, now, &policy)
            .await
            .unwrap_err()
    ));
}
