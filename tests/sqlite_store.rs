//! `SqliteStore` on a file in a temporary directory.
#![cfg(feature = "sqlite")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::app::app_with_store;
use common::owner_races;
use common::owner_suite::fresh_owner;
use common::previous_table::{owners_schema, previous_schema, OldSessions};
use common::store_suite::{self, fresh_key, policy, start, ABSOLUTE, IDLE, RETENTION};
use http::StatusCode;
use tower_session_timeout::store::{
    Begin, Check, NewSession, SessionKey, SessionStore, SqlOptions, Touch,
};
use tower_session_timeout::{
    ExpiryReason, ManualClock, OnLimit, SqliteStore, StoreError, Timestamp,
};

/// A database file path of its own in the temporary directory; the file and its WAL
/// companions are removed when the value is dropped.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> Self {
        let name = format!("tower-session-timeout-{:016x}.db", rand::random::<u64>());
        TempDb(std::env::temp_dir().join(name))
    }

    async fn store(&self) -> SqliteStore {
        self.store_with(SqlOptions::new()).await
    }

    /// A store whose statements give up after 300 ms, for tests that hold the write lock.
    async fn store_with_short_statements(&self) -> SqliteStore {
        let options = SqlOptions::new().statement_timeout(Duration::from_millis(300));
        self.store_with(options).await
    }

    async fn store_with(&self, options: SqlOptions) -> SqliteStore {
        let url = format!("sqlite://{}", self.0.display());
        let store = SqliteStore::connect_with_options(&url, options)
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        store
    }
}

/// SQLite's write lock, held by another connection of `store`'s pool (`BEGIN IMMEDIATE`)
/// until [`release`](WriteLock::release).
struct WriteLock(sqlx::pool::PoolConnection<sqlx::Sqlite>);

impl WriteLock {
    async fn take(store: &SqliteStore) -> Self {
        let mut locker = store.pool().acquire().await.expect("a connection");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *locker)
            .await
            .expect("lock");
        WriteLock(locker)
    }

    async fn release(mut self) {
        sqlx::query("ROLLBACK")
            .execute(&mut *self.0)
            .await
            .expect("unlock");
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

/// The cases the mutation run of the shared SQL code asked for (`tests/common/sql_cases.rs`).
#[tokio::test]
async fn passes_the_sql_cases() {
    let db = TempDb::new();
    common::sql_cases::run(&db.store().await).await;
}

/// Two pools on one file, as two processes sharing it; the race runs on two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_announce_suite() {
    let db = TempDb::new();
    let [store, other] = two_instances(&db).await;
    common::announce_suite::run(store, other).await;
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

/// The plan SQLite makes for `statement`, one step a line.
async fn query_plan(store: &SqliteStore, statement: &str) -> String {
    let plan: Vec<(i64, i64, i64, String)> =
        sqlx::query_as(&format!("EXPLAIN QUERY PLAN {statement}"))
            .fetch_all(store.pool())
            .await
            .expect("explain");
    let plan: Vec<String> = plan.into_iter().map(|(_, _, _, detail)| detail).collect();
    plan.join("\n")
}

#[tokio::test]
async fn the_purge_uses_the_index() {
    let db = TempDb::new();
    let store = db.store().await;
    // The purge's statement: both values of `announced`, so the index serves it as two ranges.
    let plan = query_plan(
        &store,
        "DELETE FROM tower_session_timeout WHERE key IN \
         (SELECT key FROM tower_session_timeout WHERE announced IN (0, 1) \
          AND expires_at <= 50000 LIMIT 1000)",
    )
    .await;
    assert!(
        plan.contains(&format!(
            "INDEX {} (announced=? AND expires_at<?)",
            store.index_name()
        )),
        "{plan}"
    );
}

#[tokio::test]
async fn the_claim_reads_the_ends_due_through_the_index_in_order() {
    let db = TempDb::new();
    let store = db.store().await;
    // The claim's choice of rows (its `SET` and the deadline arithmetic left out): a range of
    // the index, in its order, so `LIMIT` stops the read; the rows are then found by key.
    let plan = query_plan(
        &store,
        "UPDATE tower_session_timeout SET lease_until = 1 WHERE key IN \
         (SELECT key FROM tower_session_timeout \
          WHERE announced = 0 AND expires_at > 5 AND expires_at <= 10 \
            AND (lease_until IS NULL OR lease_until <= 5) \
            AND (state <> 'active' OR last_seen + 60 <= 5) \
          ORDER BY expires_at LIMIT 256)",
    )
    .await;
    assert!(
        plan.contains(&format!(
            "SEARCH tower_session_timeout USING INDEX {} (announced=? AND expires_at>? AND \
             expires_at<?)",
            store.index_name()
        )),
        "{plan}"
    );
    assert!(!plan.contains("TEMP B-TREE"), "no sort: {plan}");
    assert!(
        !plan
            .lines()
            .any(|step| step.contains("SCAN tower_session_timeout")),
        "no scan of the table: {plan}"
    );
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
    let store = db.store_with_short_statements().await;
    let clock = ManualClock::new();
    let app = app_with_store(store.clone(), clock.clone(), |builder| builder);
    app.login("locked").await;
    // A refresh must write, and another connection holds the write lock.
    clock.advance(Duration::from_secs(1));
    let lock = WriteLock::take(&store).await;
    let started = std::time::Instant::now();
    let answer = app.get("/page", Some("locked")).await;
    let took = started.elapsed();
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "answered after {took:?}"
    );
    lock.release().await;
    assert_eq!(
        app.get("/page", Some("locked")).await.status,
        StatusCode::OK
    );
}

/// A check that writes nothing (a refresh within the touch interval) reads without SQLite's
/// write lock, so it answers at once while another connection holds that lock; one that must
/// write waits for it.
#[tokio::test]
async fn a_check_that_writes_nothing_takes_no_write_lock() {
    let db = TempDb::new();
    let store = db.store_with_short_statements().await;
    let clock = ManualClock::new();
    let app = app_with_store(store.clone(), clock.clone(), |builder| {
        builder.touch_interval(Duration::from_secs(10))
    });
    app.login("read-only").await;
    clock.advance(Duration::from_secs(1));
    let lock = WriteLock::take(&store).await;
    assert_eq!(
        app.get("/page", Some("read-only")).await.status,
        StatusCode::OK,
        "within the touch interval nothing is written"
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        app.get("/page", Some("read-only")).await.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a refresh that must write waits for the lock"
    );
    lock.release().await;
}

/// The default table made by `schema` (an earlier version's), with [`OldSessions`] in it.
async fn old_table(store: &SqliteStore, schema: &[String]) -> OldSessions {
    for statement in schema {
        sqlx::query(statement)
            .execute(store.pool())
            .await
            .expect("an earlier version's table");
    }
    let old = OldSessions::new();
    for row in old.rows() {
        sqlx::query(
            "INSERT INTO tower_session_timeout (key, created_at, last_seen, state, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(row.key.as_bytes().to_vec())
        .bind(row.created_at)
        .bind(row.last_seen)
        .bind(row.state)
        .bind(row.expires_at)
        .execute(store.pool())
        .await
        .expect("an old row");
    }
    old
}

async fn table_definition(store: &SqliteStore) -> String {
    sqlx::query_scalar(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'tower_session_timeout'",
    )
    .fetch_one(store.pool())
    .await
    .expect("the table")
}

/// The table's indexes but the primary key's, by name.
async fn indexes(store: &SqliteStore) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tower_session_timeout' \
         AND sql IS NOT NULL ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .expect("indexes")
}

#[tokio::test]
async fn an_old_table_is_upgraded_in_place_and_its_sessions_keep_working() {
    let db = TempDb::new();
    let store = SqliteStore::open(&db.0).await.expect("open");
    let old = old_table(&store, &previous_schema("tower_session_timeout", "BLOB")).await;

    store.migrate().await.expect("migrate upgrades");
    assert_eq!(count(&store).await, 4, "every row survives the upgrade");
    let definition = || table_definition(&store);
    let upgraded = definition().await;
    assert!(upgraded.contains("superseded"), "{upgraded}");
    assert!(upgraded.contains("owner TEXT"), "{upgraded}");
    assert_eq!(
        indexes(&store).await,
        vec![
            store.index_name().to_owned(),
            store.owner_index_name().to_owned()
        ]
    );
    old.ends_are_announced(&store).await;
    old.keep_working(&store).await;

    // A second migrate finds the table current and leaves it, rows and all.
    let rows = count(&store).await;
    store.migrate().await.expect("migrate again");
    assert_eq!(definition().await, upgraded);
    assert_eq!(count(&store).await, rows);
    // The new check still refuses a state no version writes.
    let bogus = sqlx::query(
        "INSERT INTO tower_session_timeout (key, created_at, last_seen, state, expires_at) \
         VALUES (x'00', 0, 0, 'sleepy', 0)",
    )
    .execute(store.pool())
    .await;
    assert!(bogus.is_err(), "{bogus:?}");
}

#[tokio::test]
async fn a_table_from_before_announcements_gets_its_columns_and_index_in_place() {
    let db = TempDb::new();
    let store = SqliteStore::open(&db.0).await.expect("open");
    let old = old_table(&store, &owners_schema("tower_session_timeout", "BLOB")).await;
    let before = table_definition(&store).await;
    store.migrate().await.expect("migrate upgrades");
    assert_eq!(count(&store).await, 4, "every row survives the upgrade");
    // Added by `ALTER TABLE ... ADD COLUMN`, which inserts them after the other columns (a
    // rebuild would have written a definition of its own).
    let upgraded = table_definition(&store).await;
    assert_eq!(
        upgraded,
        before.replace(
            "absolute_ms BIGINT, ",
            "absolute_ms BIGINT, announced SMALLINT NOT NULL DEFAULT 0, lease_until BIGINT, "
        )
    );
    // The index on `expires_at` alone gives way to the one on `(announced, expires_at)`.
    assert_eq!(
        indexes(&store).await,
        vec![
            store.index_name().to_owned(),
            store.owner_index_name().to_owned()
        ]
    );
    old.ends_are_announced(&store).await;
    old.keep_working(&store).await;
    store.migrate().await.expect("migrate again");
    assert_eq!(table_definition(&store).await, upgraded);
}

#[tokio::test]
async fn passes_the_announcement_cases_of_rows() {
    let db = TempDb::new();
    common::announce_rows::run(&db.store().await).await;
}

#[tokio::test]
async fn an_owners_sessions_are_found_through_the_owner_index() {
    let db = TempDb::new();
    let store = db.store().await;
    let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(
        "EXPLAIN QUERY PLAN SELECT key FROM tower_session_timeout \
         WHERE owner = $1 AND state = 'active' ORDER BY created_at, key",
    )
    .bind("someone")
    .fetch_all(store.pool())
    .await
    .expect("explain");
    let plan: Vec<String> = plan.into_iter().map(|(_, _, _, detail)| detail).collect();
    let plan = plan.join("\n");
    assert!(plan.contains(store.owner_index_name()), "{plan}");
}

#[tokio::test]
async fn the_purge_removes_owned_rows_too() {
    let db = TempDb::new();
    let store = db.store().await;
    let policy = policy();
    let owner = fresh_owner("purged");
    let t0 = start();
    let keys: Vec<SessionKey> = (0..3).map(|i| fresh_key(&format!("purged{i}"))).collect();
    for key in &keys {
        let new = NewSession {
            owner: Some(&owner),
            timeouts: None,
        };
        store.begin(key, t0, &policy, new).await.expect("begin");
    }
    assert!(store.end(&keys[0], t0, &policy).await.expect("end"));
    // Past every deadline and retention: the owner's rows go like any other.
    let later = t0.saturating_add(IDLE + RETENTION);
    assert_eq!(store.purge(later).await.expect("purge"), 3);
    assert_eq!(count(&store).await, 0);
    assert!(store
        .sessions_of(&owner, later, &policy)
        .await
        .expect("sessions_of")
        .is_empty());
}

/// A sign-in without a session limit needs no write transaction: a begin that the id's row
/// answers (here an id already active) reads it and returns, even while another connection
/// holds the write lock. Only a limit takes `BEGIN IMMEDIATE`, to count the owner's sessions.
#[tokio::test]
async fn a_sign_in_without_a_limit_never_waits_for_the_write_lock() {
    let db = TempDb::new();
    let store = db.store_with_short_statements().await;
    let owner = fresh_owner("unlimited");
    let key = fresh_key("unlimited");
    let new = || NewSession {
        owner: Some(&owner),
        timeouts: None,
    };
    let t0 = start();
    assert_eq!(
        store
            .begin(&key, t0, &policy(), new())
            .await
            .expect("begin"),
        Begin::Began
    );
    let lock = WriteLock::take(&store).await;
    let again = store
        .begin(
            &key,
            t0.saturating_add(Duration::from_secs(1)),
            &policy(),
            new(),
        )
        .await;
    lock.release().await;
    assert!(matches!(again, Ok(Begin::AlreadyActive)), "{again:?}");
}

/// Two stores on one file stand for two processes sharing it.
async fn two_instances(db: &TempDb) -> [SqliteStore; 2] {
    [db.store().await, db.store().await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_all_racing_requests_and_sign_ins_on_two_instances_ends_every_old_session() {
    let db = TempDb::new();
    owner_races::end_all_races_requests_and_sign_ins(&two_instances(&db).await, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_racing_under_a_limit_on_two_instances_keep_it() {
    let db = TempDb::new();
    let stores = two_instances(&db).await;
    owner_races::limited_sign_ins_race(&stores, 3, OnLimit::Refuse, 3).await;
    owner_races::limited_sign_ins_race(&stores, 3, OnLimit::EndOldest, 3).await;
}
