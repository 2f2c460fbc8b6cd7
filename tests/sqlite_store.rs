//! `SqliteStore` on a file in a temporary directory.
#![cfg(feature = "sqlite")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::app::app_with_store;
use common::store_suite::{self, fresh_key, policy, start, ABSOLUTE, IDLE, RETENTION};
use http::StatusCode;
use tower_session_timeout::store::{Check, SessionKey, SessionStore, SqlOptions, Touch};
use tower_session_timeout::{ExpiryReason, ManualClock, SqliteStore, StoreError, Timestamp};

/// A database file path of its own in the temporary directory; the file and its WAL
/// companions are removed when the value is dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        let name = format!("tower-session-timeout-{:016x}.db", rand::random::<u64>());
        TempDb(std::env::temp_dir().join(name))
    }

    async fn store(&self) -> SqliteStore {
        let url = format!("sqlite://{}", self.0.display());
        let store = SqliteStore::connect(&url).await.expect("open");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn count(store: &SqliteStore) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", store.table_name()))
        .fetch_one(store.pool())
        .await
        .expect("count")
}

#[tokio::test]
async fn passes_the_store_suite() {
    let db = TempDb::new();
    store_suite::run(db.store().await).await;
}

#[tokio::test]
async fn passes_the_owner_suite() {
    let db = TempDb::new();
    common::owner_suite::run(db.store().await).await;
}

#[tokio::test]
async fn the_file_is_created_and_migrate_is_idempotent() {
    let db = TempDb::new();
    assert!(!db.0.exists());
    let store = SqliteStore::open(&db.0).await.expect("open");
    assert!(db.0.exists(), "the file is created when missing");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate again");
    assert!(store.clone().with_table_name("1bad").is_err());
    let other = store.with_table_name("other_sessions").expect("valid name");
    other.migrate().await.expect("migrate other table");
    store_suite::run(other).await;
}

#[tokio::test]
async fn a_restarted_app_keeps_its_sessions_and_their_deadlines() {
    let db = TempDb::new();
    let clock = ManualClock::new();
    let configure = |b: tower_session_timeout::SessionTimeoutBuilder<
        tower_session_timeout::MemoryStore,
    >| { b.absolute_timeout(ABSOLUTE).tombstone_retention(RETENTION) };
    let key = SessionKey::from_id("kept");

    let store = db.store().await;
    let app = app_with_store(store.clone(), clock.clone(), configure);
    app.login("kept").await;
    let t0 = Timestamp::from_system_time(tower_session_timeout::Clock::now(&clock));
    clock.advance(Duration::from_secs(30));
    assert_eq!(app.get("/", Some("kept")).await.status, StatusCode::OK);
    let now = Timestamp::from_system_time(tower_session_timeout::Clock::now(&clock));
    let before = store
        .check(&key, now, &policy(), Touch::Passive)
        .await
        .expect("check");
    // Stop: the app and every connection to the file go away.
    drop(app);
    store.pool().close().await;
    drop(store);

    let store = db.store().await;
    let app = app_with_store(store.clone(), clock.clone(), configure);
    let after = store
        .check(&key, now, &policy(), Touch::Passive)
        .await
        .expect("check");
    assert_eq!(
        after, before,
        "created_at and last_seen survive the restart"
    );
    let Check::Active(record) = after else {
        panic!("expected an active session, got {after:?}");
    };
    assert_eq!(record.created_at, t0);
    assert_eq!(record.last_seen, t0.saturating_add(Duration::from_secs(30)));

    // The idle deadline still counts from the last request before the restart...
    clock.advance(IDLE - Duration::from_millis(1));
    assert_eq!(app.get("/", Some("kept")).await.status, StatusCode::OK);
    // ...and the absolute one from the sign-in, however active the session stays.
    loop {
        let now = Timestamp::from_system_time(tower_session_timeout::Clock::now(&clock));
        let left = t0.saturating_add(ABSOLUTE).as_unix_millis() - now.as_unix_millis();
        if left <= 50_000 {
            clock.advance(Duration::from_millis(left - 1));
            assert_eq!(app.get("/", Some("kept")).await.status, StatusCode::OK);
            clock.advance(Duration::from_millis(1));
            break;
        }
        clock.advance(Duration::from_secs(50));
        assert_eq!(app.get("/", Some("kept")).await.status, StatusCode::OK);
    }
    let answer = app.get("/", Some("kept")).await;
    assert_eq!(answer.status.as_u16(), 440);
    let check = store
        .check(&key, t0.saturating_add(ABSOLUTE), &policy(), Touch::Passive)
        .await;
    assert_eq!(
        check.expect("check"),
        Check::Expired(ExpiryReason::Absolute)
    );
}

#[tokio::test]
async fn purge_removes_only_expired_rows() {
    let db = TempDb::new();
    let store = db.store().await;
    let rows = || {
        let store = store.clone();
        async move { count(&store).await }
    };
    store_suite::purge_removes_only_expired_rows(&store, rows).await;
}

#[tokio::test]
async fn the_purge_uses_the_index() {
    let db = TempDb::new();
    let store = db.store().await;
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN DELETE FROM tower_session_timeout WHERE key IN \
         (SELECT key FROM tower_session_timeout WHERE expires_at <= 50000 LIMIT 1000)",
    )
    .fetch_all(store.pool())
    .await
    .expect("explain");
    let plan: Vec<String> = plan.into_iter().map(|(_, _, _, detail)| detail).collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("USING INDEX") || plan.contains("USING COVERING INDEX"),
        "{plan}"
    );
    assert!(plan.contains(store.index_name()), "{plan}");
}

#[tokio::test]
async fn malformed_rows_are_reported_not_trusted() {
    let db = TempDb::new();
    let store = db.store().await;
    let key = fresh_key("corrupt");
    sqlx::query(
        "INSERT INTO tower_session_timeout (key, created_at, last_seen, state, expires_at) \
         VALUES ($1, -5, 0, 'active', 0)",
    )
    .bind(key.as_bytes().to_vec())
    .execute(store.pool())
    .await
    .expect("insert");
    let check = store.check(&key, start(), &policy(), Touch::Refresh).await;
    assert!(
        matches!(check, Err(StoreError::CorruptRecord(_))),
        "{check:?}"
    );
}

#[tokio::test]
async fn the_background_purge_uses_the_given_clock() {
    let db = TempDb::new();
    let store = db.store().await;
    let clock = ManualClock::new();
    let t0 = Timestamp::from_system_time(tower_session_timeout::Clock::now(&clock));
    store
        .begin(
            &fresh_key("bg-old"),
            t0,
            &policy(),
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .expect("begin");
    clock.advance(IDLE + RETENTION);
    let now = Timestamp::from_system_time(tower_session_timeout::Clock::now(&clock));
    store
        .begin(
            &fresh_key("bg-young"),
            now,
            &policy(),
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .expect("begin");
    let task = store.spawn_purge(Duration::from_secs(3600), clock.clone());
    // The first purge runs at once; wait for the task, not for any deadline.
    for _ in 0..500 {
        if count(&store).await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    task.abort();
    assert_eq!(count(&store).await, 1, "only the expired row is purged");
}

#[tokio::test]
async fn a_locked_file_is_answered_503_within_the_busy_timeout() {
    let db = TempDb::new();
    let url = format!("sqlite://{}", db.0.display());
    let options = SqlOptions::new().statement_timeout(Duration::from_millis(300));
    let store = SqliteStore::connect_with_options(&url, options)
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    let clock = ManualClock::new();
    let app = app_with_store(store.clone(), clock.clone(), |builder| builder);
    app.login("locked").await;
    // A refresh must write, and another connection holds the write lock.
    clock.advance(Duration::from_secs(1));
    let mut locker = store.pool().acquire().await.expect("a connection");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *locker)
        .await
        .expect("lock");
    let started = std::time::Instant::now();
    let answer = app.get("/page", Some("locked")).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "answered after {took:?}"
    );
    sqlx::query("ROLLBACK")
        .execute(&mut *locker)
        .await
        .expect("unlock");
    drop(locker);
    assert_eq!(
        app.get("/page", Some("locked")).await.status,
        StatusCode::OK
    );
}
