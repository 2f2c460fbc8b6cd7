//! `PostgresStore` against the PostgreSQL on 127.0.0.1:5432 (or `DATABASE_URL`, a server URL
//! without a database): each test makes a database of its own and drops it at the end.
#![cfg(feature = "postgres")]

mod common;

use std::time::{Duration, Instant};

use common::app::app_with_store;
use common::owner_races;
use common::owner_suite::fresh_owner;
use common::previous_table::{owners_schema, previous_schema, OldSessions};
use common::store_suite::{self, fresh_key, policy, start, ABSOLUTE, IDLE, RETENTION};
use http::StatusCode;
use sqlx::Connection;
use tower_session_timeout::store::{
    Begin, Check, NewSession, SessionKey, SessionStore, SqlOptions, Touch,
};
use tower_session_timeout::{ExpiryReason, ManualClock, OnLimit, PostgresStore};

/// A database made for one test, dropped (best effort) when the value is.
struct TestDb {
    server: String,
    name: String,
}

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

impl TestDb {
    async fn new() -> Self {
        let server = server_url();
        let name = format!("tst_session_timeout_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .expect("connect to the postgres database");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        TestDb { server, name }
    }

    fn url(&self) -> String {
        format!("{}/{}", self.server, self.name)
    }

    /// A store with a pool of its own, as one app instance would have.
    async fn store(&self) -> PostgresStore {
        let store = PostgresStore::connect(&self.url()).await.expect("connect");
        store.migrate().await.expect("migrate");
        store
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = format!("{}/postgres", self.server);
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await, and may run inside the test's runtime: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.ok()?;
                sqlx::query(&drop).execute(&mut admin).await.ok()
            })
        })
        .join();
    }
}

async fn count(store: &PostgresStore) -> i64 {
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", store.table_name()))
        .fetch_one(store.pool())
        .await
        .expect("count")
}

#[tokio::test]
async fn passes_the_store_suite() {
    let db = TestDb::new().await;
    store_suite::run(db.store().await).await;
}

#[tokio::test]
async fn passes_the_owner_suite() {
    let db = TestDb::new().await;
    common::owner_suite::run(db.store().await).await;
}

/// The cases the mutation run of the shared SQL code asked for (`tests/common/sql_cases.rs`).
#[tokio::test]
async fn passes_the_sql_cases() {
    let db = TestDb::new().await;
    common::sql_cases::run(&db.store().await).await;
}

/// Two pools on one database, as two app instances; the race runs on two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_announce_suite() {
    let db = TestDb::new().await;
    common::announce_suite::run(db.store().await, db.store().await).await;
}

#[tokio::test]
async fn migrate_is_idempotent_and_names_are_checked() {
    let db = TestDb::new().await;
    let store = db.store().await;
    store.migrate().await.expect("second migrate");
    assert!(store
        .clone()
        .with_table_name("bad name; DROP TABLE x")
        .is_err());
    let other = store.with_table_name("other_sessions").expect("valid name");
    other.migrate().await.expect("migrate other table");
    assert_eq!(other.index_name(), "other_sessions_expiry_idx");
    store_suite::run(other).await;
}

/// A check that writes nothing (passive, or a refresh within the touch interval) takes no
/// row lock, so it answers while another transaction holds the session's row; a refresh that
/// must write waits for that lock (here: until the statement timeout ends it).
#[tokio::test]
async fn a_check_that_writes_nothing_takes_no_row_lock() {
    let db = TestDb::new().await;
    let options = SqlOptions::new().statement_timeout(Duration::from_millis(500));
    let store = PostgresStore::connect_with_options(&db.url(), options)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let policy = *tower_session_timeout::SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .touch_interval(Duration::from_secs(10))
        .build()
        .unwrap()
        .policy();
    let key = fresh_key("row-locked");
    let now = start();
    store
        .begin(&key, now, &policy, NewSession::default())
        .await
        .unwrap();

    let mut locker = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    sqlx::query("BEGIN").execute(&mut locker).await.unwrap();
    sqlx::query("SELECT 1 FROM tower_session_timeout WHERE key = $1 FOR UPDATE")
        .bind(key.as_bytes().to_vec())
        .execute(&mut locker)
        .await
        .unwrap();

    let within = now.saturating_add(Duration::from_secs(5));
    for touch in [Touch::Passive, Touch::Refresh] {
        let checked = store.check(&key, within, &policy, touch).await;
        assert!(
            matches!(checked, Ok(Check::Active(_))),
            "{touch:?}: {checked:?}"
        );
    }
    let due = now.saturating_add(Duration::from_secs(10));
    let refreshed = store.check(&key, due, &policy, Touch::Refresh).await;
    assert!(
        refreshed.is_err(),
        "a refresh that writes waits for the row: {refreshed:?}"
    );
    sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
    let refreshed = store.check(&key, due, &policy, Touch::Refresh).await;
    assert!(matches!(refreshed, Ok(Check::Active(record)) if record.last_seen == due));
}

#[tokio::test]
async fn keys_are_hashes_of_the_id() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let clock = ManualClock::new();
    let app = app_with_store(store.clone(), clock, |b| b);
    app.login("a-secret-session-id").await;
    let keys: Vec<Vec<u8>> = sqlx::query_scalar("SELECT key FROM tower_session_timeout")
        .fetch_all(store.pool())
        .await
        .expect("keys");
    let expected = tower_session_timeout::store::SessionKey::from_id("a-secret-session-id");
    assert_eq!(keys, vec![expected.as_bytes().to_vec()]);
}

#[tokio::test]
async fn two_instances_share_activity_expiry_and_sign_out() {
    let db = TestDb::new().await;
    // One clock: instances sharing a database keep their clocks in sync.
    let clock = ManualClock::new();
    let a = app_with_store(db.store().await, clock.clone(), |b| b);
    let b = app_with_store(db.store().await, clock.clone(), |b| b);
    let timeout = StatusCode::from_u16(440).expect("440");

    // Activity on either instance keeps the session alive on both.
    a.login("shared").await;
    assert_eq!(b.get("/", Some("shared")).await.status, StatusCode::OK);
    clock.advance(Duration::from_secs(40));
    assert_eq!(a.get("/", Some("shared")).await.status, StatusCode::OK);
    clock.advance(Duration::from_secs(40));
    // 80 s since sign-in, 40 s since the activity on A.
    assert_eq!(b.get("/", Some("shared")).await.status, StatusCode::OK);

    // Expiry seen by one is seen by the other, and signing in again cannot revive it.
    clock.advance(IDLE);
    assert_eq!(a.get("/", Some("shared")).await.status, timeout);
    assert_eq!(b.get("/", Some("shared")).await.status, timeout);
    a.login("shared").await;
    assert_eq!(b.get("/", Some("shared")).await.status, timeout);

    // Signing out on B ends the session on A.
    b.login("second").await;
    assert_eq!(a.get("/", Some("second")).await.status, StatusCode::OK);
    let calls_before = a.calls();
    b.get("/logout", Some("second")).await;
    let answer = a.get("/", Some("second")).await;
    assert_eq!(answer.status, timeout);
    assert_eq!(a.calls(), calls_before, "the inner service is not called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_racing_on_one_session_agree() {
    let db = TestDb::new().await;
    let stores = [db.store().await, db.store().await];
    let policy = policy();
    let t0 = start();

    // Racing begins of one new id: exactly one begins it, the others find it active.
    let key = fresh_key("race-begin");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = stores[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            store
                .begin(
                    &key,
                    t0,
                    &policy,
                    tower_session_timeout::store::NewSession::plain(),
                )
                .await
        }));
    }
    let mut began = 0;
    for task in tasks {
        match task.await.expect("task").expect("begin") {
            tower_session_timeout::store::Begin::Began => began += 1,
            tower_session_timeout::store::Begin::AlreadyActive => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(began, 1);

    // Refreshes racing with checks at the deadline, and with an end: none revives it.
    let deadline = t0.saturating_add(IDLE);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = stores[i % 2].clone();
        let now = if i % 2 == 0 {
            deadline
        } else {
            deadline.saturating_add(Duration::from_secs(1))
        };
        tasks.push(tokio::spawn(async move {
            store.check(&key, now, &policy, Touch::Refresh).await
        }));
    }
    let mut retired = 0;
    for task in tasks {
        match task.await.expect("task").expect("check") {
            Check::Retired(ExpiryReason::Idle) => retired += 1,
            Check::Expired(ExpiryReason::Idle) => {}
            other => panic!("expected the idle expiry, got {other:?}"),
        }
    }
    assert_eq!(retired, 1, "exactly one statement retires the session");
    let early = t0.saturating_add(Duration::from_secs(1));
    assert_eq!(
        stores[1]
            .check(&key, early, &policy, Touch::Refresh)
            .await
            .expect("check"),
        Check::Expired(ExpiryReason::Idle),
        "a lagging clock on the other instance cannot revive it"
    );
    assert_eq!(
        stores[0]
            .begin(
                &key,
                early,
                &policy,
                tower_session_timeout::store::NewSession::plain()
            )
            .await
            .expect("begin"),
        tower_session_timeout::store::Begin::Refused(ExpiryReason::Idle)
    );

    // An end racing with refreshes: afterwards the session is ended for everyone.
    let key = fresh_key("race-end");
    stores[0]
        .begin(
            &key,
            t0,
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .expect("begin");
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store = stores[i % 2].clone();
        let now = t0.saturating_add(Duration::from_millis(1000 + i as u64));
        tasks.push(tokio::spawn(async move {
            if i == 7 {
                store.end(&key, now, &policy).await.map(|_| ())
            } else {
                store
                    .check(&key, now, &policy, Touch::Refresh)
                    .await
                    .map(|_| ())
            }
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("store call");
    }
    for store in &stores {
        let later = t0.saturating_add(Duration::from_secs(2));
        assert_eq!(
            store
                .check(&key, later, &policy, Touch::Refresh)
                .await
                .expect("check"),
            Check::Expired(ExpiryReason::Ended)
        );
    }
}

#[tokio::test]
async fn purge_removes_only_expired_rows() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let rows = || {
        let store = store.clone();
        async move { count(&store).await }
    };
    store_suite::purge_removes_only_expired_rows(&store, rows).await;
}

/// A store whose pool has one connection, so what it prepared can be read back from
/// `pg_prepared_statements` on that connection.
async fn one_connection_store(db: &TestDb) -> PostgresStore {
    // Filling and analyzing take longer than a request may, on a busy machine.
    let options = SqlOptions::new()
        .max_connections(1)
        .statement_timeout(Duration::from_secs(60));
    let store = PostgresStore::connect_with_options(&db.url(), options)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// The text of the statement `store` prepared that matches `pattern` (SQL `LIKE`), so a test
/// explains the store's own SQL, not a copy of it.
async fn prepared(store: &PostgresStore, pattern: &str) -> String {
    sqlx::query_scalar("SELECT statement FROM pg_prepared_statements WHERE statement LIKE $1")
        .bind(pattern)
        .fetch_one(store.pool())
        .await
        .expect("the store prepared the statement")
}

/// A scan of the table in a plan: its node type, its index, and the rows it read (returned
/// and removed by a filter, over all its loops).
#[derive(Debug)]
struct Scan {
    node: String,
    index: Option<String>,
    rows_read: f64,
}

/// The scans of `tower_session_timeout` in `EXPLAIN (ANALYZE, FORMAT JSON)` output.
fn table_scans(plan: &serde_json::Value, scans: &mut Vec<Scan>) {
    let node = plan["Node Type"].as_str().unwrap_or_default();
    if node.contains("Scan") && plan["Relation Name"] == "tower_session_timeout" {
        let number = |name: &str| plan[name].as_f64().unwrap_or(0.0);
        scans.push(Scan {
            node: node.to_owned(),
            index: plan["Index Name"].as_str().map(str::to_owned),
            rows_read: (number("Actual Rows") + number("Rows Removed by Filter"))
                * number("Actual Loops"),
        });
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        table_scans(child, scans);
    }
}

/// Runs `statement` under `EXPLAIN (ANALYZE, FORMAT JSON)` in a transaction it rolls back,
/// and answers its scans of the table.
async fn explain_analyze(
    store: &PostgresStore,
    query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Vec<Scan> {
    use sqlx::Row;
    let mut tx = store.pool().begin().await.expect("begin");
    let row = query.fetch_one(&mut *tx).await.expect("explain");
    tx.rollback().await.expect("rollback");
    // The column is `json`, which is text on the wire.
    let text: String = row.try_get_unchecked(0).expect("the plan");
    let plan: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let mut scans = Vec::new();
    table_scans(&plan[0]["Plan"], &mut scans);
    scans
}

/// No scan of the whole table (rows are found through an index: the primary key, or the
/// index on `(announced, expires_at)`, which reads at most `most` rows).
fn assert_read_through_the_index(store: &PostgresStore, scans: &[Scan], most: f64) {
    assert!(
        scans.iter().all(|scan| scan.node != "Seq Scan"),
        "{scans:?}"
    );
    let through: Vec<&Scan> = scans
        .iter()
        .filter(|scan| scan.index.as_deref() == Some(store.index_name()))
        .collect();
    assert_eq!(through.len(), 1, "{scans:?}");
    assert!(through[0].rows_read <= most, "{scans:?}");
}

#[tokio::test]
async fn the_purge_uses_the_index() {
    let db = TestDb::new().await;
    let store = one_connection_store(&db).await;
    // Enough rows, spread over expiry times, that a scan of the whole table costs more.
    sqlx::query(
        "INSERT INTO tower_session_timeout (key, created_at, last_seen, state, expires_at) \
         SELECT sha256(i::text::bytea), i, i, 'active', i * 1000 \
         FROM generate_series(1, 20000) AS i",
    )
    .execute(store.pool())
    .await
    .expect("fill");
    sqlx::query("ANALYZE tower_session_timeout")
        .execute(store.pool())
        .await
        .expect("analyze");
    let now = tower_session_timeout::Timestamp::from_unix_millis(50_000);
    // Nothing to purge yet: the statement is prepared, and explained with what has expired
    // a small part of what is stored.
    let before = tower_session_timeout::Timestamp::from_unix_millis(500);
    assert_eq!(store.purge(before).await.expect("purge"), 0);
    let purge = prepared(&store, "DELETE FROM tower_session_timeout %").await;
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {purge}");
    let scans = explain_analyze(&store, sqlx::query(&explain).bind(50_000_i64)).await;
    assert_read_through_the_index(&store, &scans, 50.0);
    assert_eq!(store.purge(now).await.expect("purge"), 50);
}

#[tokio::test]
async fn the_claim_reads_the_ends_due_through_the_index_not_the_live_sessions() {
    let db = TestDb::new().await;
    let store = one_connection_store(&db).await;
    let policy = policy();
    let t = 10_000_000_i64;
    let (idle, retention) = (IDLE.as_millis() as i64, RETENTION.as_millis() as i64);
    // 20,000 live sessions, 20,000 ends already announced, and 100 ends due, all of them
    // within the retention of `t`.
    for (rows, state, announced, expires_at) in [
        (
            20_000,
            "active",
            0,
            format!("{t} - i + {}", idle + retention),
        ),
        (
            20_000,
            "idle",
            1,
            format!("{t} + 1 + i % {}", retention - 1),
        ),
        (100, "ended", 0, format!("{t} + 100 + i")),
    ] {
        sqlx::query(&format!(
            "INSERT INTO tower_session_timeout \
               (key, created_at, last_seen, state, expires_at, announced) \
             SELECT sha256(('{state}' || i)::bytea), {t} - i, {t} - i, '{state}', {expires_at}, \
                    {announced} \
             FROM generate_series(1, {rows}) AS i"
        ))
        .execute(store.pool())
        .await
        .expect("fill");
    }
    sqlx::query("ANALYZE tower_session_timeout")
        .execute(store.pool())
        .await
        .expect("analyze");
    let at = |ms: i64| tower_session_timeout::Timestamp::from_unix_millis(ms as u64);
    let lease = Duration::from_secs(30);
    // Long before anything ends: nothing claimed, and the statement is prepared.
    let early = store
        .claim_ends(at(t - 10 * retention), &policy, 256, lease)
        .await
        .expect("claim_ends");
    assert_eq!(early, Vec::new());
    let claim = prepared(
        &store,
        "UPDATE tower_session_timeout SET state = %lease_until = $1%",
    )
    .await;
    let explain = format!("EXPLAIN (ANALYZE, FORMAT JSON) {claim}");
    let query = sqlx::query(&explain)
        .bind(t + 30_000)
        .bind(t)
        .bind(idle)
        .bind(1_i64)
        .bind(ABSOLUTE.as_millis() as i64)
        .bind(retention)
        .bind(256_i64)
        .bind(0_i64);
    let scans = explain_analyze(&store, query).await;
    assert_read_through_the_index(&store, &scans, 100.0);
    let claimed = store
        .claim_ends(at(t), &policy, 256, lease)
        .await
        .expect("claim_ends");
    assert_eq!(claimed.len(), 100);
    assert!(claimed.iter().all(|end| end.reason == ExpiryReason::Ended));
}

/// A claim never waits for a row another transaction holds (a request's statement, another
/// claimer): it skips it, and takes it on a later sweep.
#[tokio::test]
async fn a_claim_skips_an_end_another_transaction_holds_and_never_waits_for_it() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let policy = policy();
    let t0 = start();
    let (held, free) = (fresh_key("held"), fresh_key("free"));
    for key in [&held, &free] {
        store
            .begin(key, t0, &policy, NewSession::plain())
            .await
            .expect("begin");
        assert!(store
            .end(key, t0.saturating_add(Duration::from_secs(1)), &policy)
            .await
            .expect("end"));
    }
    let mut other = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("SELECT key FROM tower_session_timeout WHERE key = $1 FOR UPDATE")
        .bind(held.as_bytes().to_vec())
        .fetch_one(&mut *tx)
        .await
        .expect("lock the row");
    let now = t0.saturating_add(Duration::from_secs(2));
    let lease = Duration::from_secs(30);
    let claimed = tokio::time::timeout(
        Duration::from_millis(500),
        store.claim_ends(now, &policy, 64, lease),
    )
    .await
    .expect("the claim does not wait for the lock")
    .expect("claim_ends");
    assert_eq!(
        claimed.iter().map(|end| end.key).collect::<Vec<_>>(),
        vec![free]
    );
    tx.rollback().await.expect("rollback");
    let claimed = store
        .claim_ends(now, &policy, 64, lease)
        .await
        .expect("claim_ends");
    assert_eq!(
        claimed.iter().map(|end| end.key).collect::<Vec<_>>(),
        vec![held]
    );
}

/// A claim in a backlog starts where the one before left off; an end it passed over (held
/// by a request's row lock) is found once the backlog is through.
#[tokio::test]
async fn an_end_passed_over_in_a_backlog_is_claimed_after_it() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let policy = policy();
    let t = 10_000_000_i64;
    let retention = RETENTION.as_millis() as i64;
    // 600 ends, one every 10 ms, all due at `t`.
    sqlx::query(&format!(
        "INSERT INTO tower_session_timeout (key, created_at, last_seen, state, expires_at) \
         SELECT sha256(int8send(i)), 0, 0, 'ended', {t} + i * 10 \
         FROM generate_series(1::bigint, 600::bigint) AS i"
    ))
    .execute(store.pool())
    .await
    .expect("fill");
    let held: Vec<u8> = sqlx::query_scalar("SELECT sha256(int8send(100::bigint))")
        .fetch_one(store.pool())
        .await
        .expect("a key");
    let mut other = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    let mut tx = other.begin().await.expect("begin");
    sqlx::query("SELECT key FROM tower_session_timeout WHERE key = $1 FOR UPDATE")
        .bind(&held)
        .fetch_one(&mut *tx)
        .await
        .expect("lock the row");
    let now = tower_session_timeout::Timestamp::from_unix_millis(t as u64);
    let lease = Duration::from_secs(30);
    let mut sizes = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let batch = store
            .claim_ends(now, &policy, 256, lease)
            .await
            .expect("claim_ends");
        sizes.push(batch.len());
        let keys: Vec<SessionKey> = batch.iter().map(|end| end.key).collect();
        for key in &keys {
            assert!(seen.insert(*key), "{key:?} handed out twice");
        }
        store.ack_ends(&keys, now, &policy).await.expect("ack_ends");
        if batch.len() < 256 {
            break;
        }
    }
    assert_eq!(sizes, [256, 256, 87]);
    tx.rollback().await.expect("rollback");
    let after = store
        .claim_ends(now, &policy, 256, lease)
        .await
        .expect("claim_ends");
    assert_eq!(
        after
            .iter()
            .map(|end| end.key.as_bytes().to_vec())
            .collect::<Vec<_>>(),
        vec![held]
    );
    assert_eq!(after[0].at.as_unix_millis() as i64, t + 1000 - retention);
}

#[tokio::test]
async fn passes_the_announcement_cases_of_rows() {
    let db = TestDb::new().await;
    common::announce_rows::run(&db.store().await).await;
}

#[tokio::test]
async fn the_purge_removes_more_than_one_batch() {
    let db = TestDb::new().await;
    let store = db.store().await;
    sqlx::query(
        "INSERT INTO tower_session_timeout (key, created_at, last_seen, state, expires_at) \
         SELECT sha256(i::text::bytea), i, i, 'active', i \
         FROM generate_series(1, 2500) AS i",
    )
    .execute(store.pool())
    .await
    .expect("fill");
    let purge = |at| store.purge(tower_session_timeout::Timestamp::from_unix_millis(at));
    assert_eq!(purge(2400).await.expect("purge"), 2400);
    assert_eq!(purge(2500).await.expect("purge"), 100);
    assert_eq!(count(&store).await, 0);
}

/// Statements of the test database that wait on a lock.
async fn waiting_on_locks(db: &TestDb, admin: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(&db.name)
    .fetch_one(admin)
    .await
    .expect("pg_stat_activity")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_table_is_answered_503_within_the_bound_and_gives_connections_back() {
    let db = TestDb::new().await;
    // The default bounds (1 s to acquire, 2 s per statement), on a small pool.
    let options = SqlOptions::new().max_connections(2);
    let store = PostgresStore::connect_with_options(&db.url(), options)
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let clock = ManualClock::new();
    // The layer's own store timeout (5 s by default) is not what answers.
    let app = app_with_store(store.clone(), clock.clone(), |builder| builder);
    let ids: Vec<String> = (0..4).map(|i| format!("locked-{i}")).collect();
    for id in &ids {
        app.login(id).await;
    }
    clock.advance(Duration::from_secs(1));

    let mut locker = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut locker)
        .await
        .expect("begin");
    sqlx::query("LOCK TABLE tower_session_timeout IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .expect("lock");

    // Twice as many requests as connections: two wait on the lock, two for a connection.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in &ids {
        let service = app.service.clone();
        let request = http::Request::get("/page")
            .header(http::header::COOKIE, format!("id={id}"))
            .body(http_body_util::Empty::new())
            .unwrap();
        tasks.push(tokio::spawn(async move {
            use tower::ServiceExt;
            let status = service.oneshot(request).await.expect("infallible").status();
            (status, started.elapsed())
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        let (status, took) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("answered")
            .expect("task");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        slowest = slowest.max(took);
    }
    eprintln!("PostgreSQL table lock: every request answered 503 within {slowest:?}");
    assert!(
        slowest >= Duration::from_millis(1900) && slowest < Duration::from_millis(3500),
        "answered after {slowest:?}: the statement timeout (2 s) should answer, not the layer's 5 s"
    );
    // The cancelled statements are not left waiting on the lock, and the pool has its
    // connections back.
    let mut admin = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    assert_eq!(waiting_on_locks(&db, &mut admin).await, 0);
    assert_eq!(store.pool().num_idle(), store.pool().size() as usize);

    sqlx::query("ROLLBACK")
        .execute(&mut locker)
        .await
        .expect("rollback");
    for id in &ids {
        assert_eq!(app.get("/page", Some(id)).await.status, StatusCode::OK);
    }
}

/// The default table made by `schema` (an earlier version's), with [`OldSessions`] in it.
async fn old_table(store: &PostgresStore, schema: &[String]) -> OldSessions {
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

/// The table's indexes but its primary key, by name.
async fn indexes(store: &PostgresStore) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE tablename = 'tower_session_timeout' \
         AND indexname <> 'tower_session_timeout_pkey' ORDER BY indexname",
    )
    .fetch_all(store.pool())
    .await
    .expect("indexes")
}

#[tokio::test]
async fn an_old_table_is_upgraded_in_place_and_its_sessions_keep_working() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url()).await.expect("connect");
    let old = old_table(&store, &previous_schema("tower_session_timeout", "BYTEA")).await;

    // Two instances starting at once: one upgrades, the other waits and finds it done.
    let other = PostgresStore::connect(&db.url()).await.expect("connect");
    let (a, b) = tokio::join!(store.migrate(), other.migrate());
    a.expect("migrate upgrades");
    b.expect("a concurrent migrate");
    assert_eq!(count(&store).await, 4, "every row survives the upgrade");
    let checks = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = 'tower_session_timeout'::regclass AND contype = 'c'",
        )
        .fetch_all(store.pool())
        .await
        .expect("constraints")
    };
    let upgraded = checks().await;
    assert_eq!(upgraded.len(), 1, "the old check is replaced: {upgraded:?}");
    assert!(upgraded[0].contains("superseded"), "{upgraded:?}");
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_name = 'tower_session_timeout' AND is_nullable = 'YES' ORDER BY column_name",
    )
    .fetch_all(store.pool())
    .await
    .expect("columns");
    assert_eq!(columns, ["absolute_ms", "idle_ms", "lease_until", "owner"]);
    assert_eq!(
        indexes(&store).await,
        vec![
            store.index_name().to_owned(),
            store.owner_index_name().to_owned()
        ]
    );
    old.ends_are_announced(&store).await;
    old.keep_working(&store).await;

    // A second migrate finds the table current and leaves it; the check still refuses a
    // state no version writes.
    store.migrate().await.expect("migrate again");
    assert_eq!(checks().await, upgraded);
    let bogus = sqlx::query(
        "INSERT INTO tower_session_timeout (key, created_at, last_seen, state, expires_at) \
         VALUES ('\\x00', 0, 0, 'sleepy', 0)",
    )
    .execute(store.pool())
    .await;
    assert!(bogus.is_err(), "{bogus:?}");
}

#[tokio::test]
async fn a_table_from_before_announcements_gets_its_columns_and_index_in_place() {
    let db = TestDb::new().await;
    let store = PostgresStore::connect(&db.url()).await.expect("connect");
    let old = old_table(&store, &owners_schema("tower_session_timeout", "BYTEA")).await;
    let other = PostgresStore::connect(&db.url()).await.expect("connect");
    let (a, b) = tokio::join!(store.migrate(), other.migrate());
    a.expect("migrate upgrades");
    b.expect("a concurrent migrate");
    assert_eq!(count(&store).await, 4, "every row survives the upgrade");
    // The index on `expires_at` alone gives way to the one on `(announced, expires_at)`.
    let upgraded = indexes(&store).await;
    assert_eq!(
        upgraded,
        vec![
            store.index_name().to_owned(),
            store.owner_index_name().to_owned()
        ]
    );
    let definition: String = sqlx::query_scalar("SELECT pg_get_indexdef($1::regclass)")
        .bind(store.index_name())
        .fetch_one(store.pool())
        .await
        .expect("index definition");
    assert!(
        definition.ends_with("(announced, expires_at)"),
        "{definition}"
    );
    old.ends_are_announced(&store).await;
    old.keep_working(&store).await;
    store.migrate().await.expect("migrate again");
    assert_eq!(indexes(&store).await, upgraded);
}

/// Only a sign-in under a limit takes the owner's lock: with no limit, a begin with an owner
/// stays one statement and never waits behind another transaction holding that lock (here
/// held by hand, under the name `owner_transaction` gives it).
#[tokio::test]
async fn a_sign_in_without_a_limit_never_waits_for_the_owners_lock() {
    let db = TestDb::new().await;
    let store = db.store().await;
    let owner = fresh_owner("unlimited");
    let mut holder = sqlx::PgConnection::connect(&db.url())
        .await
        .expect("connect");
    let mut held = holder.begin().await.expect("begin");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!(
            "tower_session_timeout:{}:{owner}",
            store.table_name()
        ))
        .execute(&mut *held)
        .await
        .expect("take the owner's lock");
    let new = NewSession {
        owner: Some(&owner),
        timeouts: None,
    };
    let began = tokio::time::timeout(
        Duration::from_secs(5),
        store.begin(&fresh_key("unlimited"), start(), &policy(), new),
    )
    .await;
    held.rollback().await.expect("release the lock");
    assert!(matches!(began, Ok(Ok(Begin::Began))), "{began:?}");
}

#[tokio::test]
async fn an_owners_sessions_are_found_through_the_owner_index() {
    let db = TestDb::new().await;
    let store = db.store().await;
    // Many owners of a few sessions each, and as many sessions without one.
    sqlx::query(
        "INSERT INTO tower_session_timeout (key, created_at, last_seen, state, expires_at, owner) \
         SELECT sha256(i::text::bytea), i, i, 'active', i + 1000000, \
                CASE WHEN i % 2 = 0 THEN 'user-' || (i % 5000) END \
         FROM generate_series(1, 20000) AS i",
    )
    .execute(store.pool())
    .await
    .expect("fill");
    sqlx::query("ANALYZE tower_session_timeout")
        .execute(store.pool())
        .await
        .expect("analyze");
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT key FROM tower_session_timeout \
         WHERE owner = 'user-42' AND state = 'active' ORDER BY created_at, key",
    )
    .fetch_all(store.pool())
    .await
    .expect("explain");
    let plan = plan.join("\n");
    assert!(plan.contains(store.owner_index_name()), "{plan}");
}

#[tokio::test]
async fn the_purge_removes_owned_rows_too() {
    let db = TestDb::new().await;
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

/// Three app instances, each with a pool of its own.
async fn three_instances(db: &TestDb) -> [PostgresStore; 3] {
    [db.store().await, db.store().await, db.store().await]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_all_racing_requests_and_sign_ins_on_three_instances_ends_every_old_session() {
    let db = TestDb::new().await;
    owner_races::end_all_races_requests_and_sign_ins(&three_instances(&db).await, 8).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_ins_racing_under_a_limit_on_three_instances_keep_it() {
    let db = TestDb::new().await;
    let stores = three_instances(&db).await;
    owner_races::limited_sign_ins_race(&stores, 3, OnLimit::Refuse, 4).await;
    owner_races::limited_sign_ins_race(&stores, 3, OnLimit::EndOldest, 4).await;
    owner_races::limited_sign_ins_race(&stores, 1, OnLimit::EndOldest, 2).await;
}
