//! Hundreds of concurrent requests on one session across its idle and absolute deadlines,
//! on every store: once any request has seen the session expired, no request started later
//! sees it active; and once its retention has passed, nothing of it is left.
//!
//! CI races each store once per deadline; `TST_LONG=1` races it 10,000 times (see
//! `common/long.rs`).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::long;
use common::store_suite::{fresh_key, start};
use tower_session_timeout::store::{Check, Policy, SessionStore, Touch};
use tower_session_timeout::{ExpiryReason, MemoryStore, SessionTimeoutLayer, Timestamp};

const TASKS: usize = 200;

fn policy(absolute: bool) -> Policy {
    let mut builder = SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(60))
        .tombstone_retention(Duration::from_secs(30));
    if absolute {
        builder = builder.absolute_timeout(Duration::from_secs(60));
    }
    *builder.build().expect("valid policy").policy()
}

/// Races `TASKS` checks on one session while a shared clock walks from 50 ms before its
/// deadline to 150 ms after, one millisecond per check. Checks before the deadline are passive
/// (or refreshes could keep moving the idle deadline away); those after it refresh, racing
/// with the one that retires the session.
async fn race<St: SessionStore>(store: St, absolute: bool) {
    let policy = policy(absolute);
    let key = fresh_key("race");
    let t0 = start();
    store
        .begin(
            &key,
            t0,
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .expect("begin");
    // Seen once before the race, so that a near cache holds it as the race begins.
    store
        .check(&key, t0, &policy, Touch::Passive)
        .await
        .expect("check");
    // With the absolute timeout equal to the idle one, both deadlines fall together: the
    // absolute one is reported.
    let deadline = t0.saturating_add(Duration::from_secs(60));
    let clock = Arc::new(AtomicU64::new(deadline.as_unix_millis() - 50));
    let expired_seen = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (store, clock, expired_seen) =
            (store.clone(), Arc::clone(&clock), Arc::clone(&expired_seen));
        tasks.push(tokio::spawn(async move {
            let started_after_expiry = expired_seen.load(Ordering::SeqCst);
            let now = Timestamp::from_unix_millis(clock.fetch_add(1, Ordering::SeqCst));
            let touch = if now < deadline {
                Touch::Passive
            } else {
                Touch::Refresh
            };
            let check = store.check(&key, now, &policy, touch).await.expect("check");
            if !matches!(check, Check::Active(_)) {
                expired_seen.store(true, Ordering::SeqCst);
            }
            (started_after_expiry, now, check)
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    let reason = if absolute {
        ExpiryReason::Absolute
    } else {
        ExpiryReason::Idle
    };
    let mut retired = 0;
    for (started_after_expiry, now, check) in &answers {
        match check {
            Check::Active(_) => assert!(
                !started_after_expiry,
                "a 200 after a 440 was seen, at {now:?}"
            ),
            Check::Retired(got) => {
                retired += 1;
                assert_eq!(*got, reason);
            }
            Check::Expired(got) => assert_eq!(*got, reason),
        }
    }
    assert!(retired <= 1, "retired {retired} times");
    assert_eq!(retired, 1, "the deadline was crossed");
    {
        let late = deadline.saturating_add(Duration::from_millis(500));
        assert_eq!(
            store
                .check(&key, late, &policy, Touch::Refresh)
                .await
                .expect("check"),
            Check::Expired(reason)
        );
        // Past the retention nothing of it is left, and a purge finds nothing of it either.
        let gone = deadline.saturating_add(Duration::from_secs(31));
        store.purge(gone).await.expect("purge");
        assert_eq!(
            store
                .check(&key, gone, &policy, Touch::Passive)
                .await
                .expect("check"),
            Check::Expired(ExpiryReason::Unknown)
        );
    }
}

/// Races `store` on fresh sessions, at the idle deadline and at the absolute one, once in CI
/// and [`long::RACE_ROUNDS`] times in the long mode.
async fn races<St: SessionStore>(store: St) {
    for _ in 0..long::race_rounds(1) {
        race(store.clone(), false).await;
        race(store.clone(), true).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_store_races() {
    let store = MemoryStore::new();
    races(store.clone()).await;
    store
        .purge(start().saturating_add(Duration::from_secs(200)))
        .await
        .unwrap();
    assert!(
        store.is_empty(),
        "no record outlives its session: {} left",
        store.len()
    );
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_races() {
    let store = tower_session_timeout::RedisStore::connect("redis://127.0.0.1:6379/0")
        .await
        .expect("Redis on 127.0.0.1:6379")
        .with_prefix(format!("race:{:016x}:", rand::random::<u64>()));
    races(store).await;
}

/// The same, asked as the layer asks (memory first) with the near cache on.
#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store_races_with_a_near_cache() {
    let store = tower_session_timeout::RedisStore::connect("redis://127.0.0.1:6379/0")
        .await
        .expect("Redis on 127.0.0.1:6379")
        .with_prefix(format!("race:{:016x}:", rand::random::<u64>()))
        .with_near_cache(Duration::from_secs(600), 10_000)
        .await
        .expect("subscribed");
    races(common::via_cache::ViaCache(store)).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_races() {
    let path = std::env::temp_dir().join(format!("races-{:016x}.db", rand::random::<u64>()));
    let store =
        tower_session_timeout::SqliteStore::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("SQLite");
    store.migrate().await.expect("migrate");
    races(store.clone()).await;
    store
        .purge(start().saturating_add(Duration::from_secs(200)))
        .await
        .expect("purge");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tower_session_timeout")
        .fetch_one(store.pool())
        .await
        .expect("count");
    assert_eq!(left, 0, "no row outlives its session");
    let _ = std::fs::remove_file(&path);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_races() {
    let table = format!("races_{:016x}", rand::random::<u64>());
    let store =
        tower_session_timeout::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test")
            .await
            .expect("PostgreSQL on 127.0.0.1:5432")
            .with_table_name(&table)
            .expect("valid table name");
    store.migrate().await.expect("migrate");
    races(store.clone()).await;
    store
        .purge(start().saturating_add(Duration::from_secs(200)))
        .await
        .expect("purge");
    let left: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(store.pool())
        .await
        .expect("count");
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(store.pool())
        .await
        .expect("drop");
    assert_eq!(left, 0, "no row outlives its session");
}

/// The same, asked as the layer asks (memory first) with the near cache on.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_races_with_a_near_cache() {
    let table = format!("races_near_{:016x}", rand::random::<u64>());
    let store =
        tower_session_timeout::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test")
            .await
            .expect("PostgreSQL on 127.0.0.1:5432")
            .with_table_name(&table)
            .expect("valid table name");
    store.migrate().await.expect("migrate");
    let store = store
        .with_near_cache(Duration::from_secs(600), 10_000)
        .await
        .expect("listening");
    races(common::via_cache::ViaCache(store.clone())).await;
    sqlx::query(&format!("DROP TABLE {table}"))
        .execute(store.pool())
        .await
        .expect("drop");
}
