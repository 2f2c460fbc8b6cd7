#![cfg(feature = "postgres")]
//! `PostgresStore::with_near_cache`: the store suites asked as the layer asks (memory first),
//! a hot session answered without a statement, revocations made on another instance (end,
//! sign-out everywhere, superseded, new timeouts, sign-out through the layer) refused here
//! once notified, a lost `LISTEN` connection, and a notification that is atomic with its
//! change (the shared cases are in `common/near_cache.rs`).
//!
//! Needs PostgreSQL on 127.0.0.1:5432 with a database `test`; each test has a table (and so a
//! channel) of its own, dropped at the end.

mod common;

use common::near_cache::{self, seen_active, until_forgotten, MAX_AGE, WAIT};
use common::store_suite::{self, fresh_key, start};
use common::via_cache::ViaCache;
use tower_session_timeout::store::{NewSession, SessionStore, Touch};
use tower_session_timeout::PostgresStore;

const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A table of one test's own, dropped (best effort) when the value is.
struct TestTable(String);

impl TestTable {
    async fn new(test: &str) -> Self {
        let table = TestTable(format!("near_{test}_{:016x}", rand::random::<u64>()));
        table
            .instance_without_cache()
            .await
            .migrate()
            .await
            .expect("migrate");
        table
    }

    async fn instance_without_cache(&self) -> PostgresStore {
        tokio::time::timeout(WAIT, PostgresStore::connect(DATABASE_URL))
            .await
            .expect("PostgreSQL answers in time")
            .expect("PostgreSQL on 127.0.0.1:5432")
            .with_table_name(&self.0)
            .expect("valid table name")
    }

    /// One app instance: a pool of its own and a near cache.
    async fn instance(&self) -> PostgresStore {
        self.instance_without_cache()
            .await
            .with_near_cache(MAX_AGE, 10_000)
            .await
            .expect("listening")
    }

    async fn two_instances(&self) -> (PostgresStore, PostgresStore) {
        (self.instance().await, self.instance().await)
    }
}

impl Drop for TestTable {
    fn drop(&mut self) {
        let drop = format!("DROP TABLE IF EXISTS {}", self.0);
        // Drop cannot await, and runs inside the test's runtime: a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = sqlx::PgPool::connect(DATABASE_URL).await.ok()?;
                sqlx::query(&drop).execute(&pool).await.ok()
            })
        })
        .join();
    }
}

#[tokio::test]
async fn passes_the_store_suite_through_its_near_cache() {
    let table = TestTable::new("suite").await;
    store_suite::run(ViaCache(table.instance().await)).await;
}

#[tokio::test]
async fn passes_the_owner_suite_through_its_near_cache() {
    let table = TestTable::new("owners").await;
    common::owner_suite::run(ViaCache(table.instance().await)).await;
}

/// What the store answered is answered again from memory, with no statement (the row is
/// deleted and the answer stays), until a refresh must write.
#[tokio::test]
async fn answers_a_hot_session_from_memory_until_a_write_is_due() {
    let table = TestTable::new("hot").await;
    let store = table.instance().await;
    let pool = store.pool().clone();
    let sql = format!("DELETE FROM {} WHERE key = $1", table.0);
    let delete = |key: tower_session_timeout::store::SessionKey| async move {
        let deleted = sqlx::query(&sql)
            .bind(key.as_bytes().to_vec())
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(deleted.rows_affected(), 1);
    };
    near_cache::answers_a_hot_session_from_memory_until_a_write_is_due(store, delete).await;
}

#[tokio::test]
async fn an_end_on_another_instance_is_refused_here_once_notified() {
    let table = TestTable::new("end").await;
    let (here, there) = table.two_instances().await;
    near_cache::an_end_on_another_instance_is_refused_here_once_pushed(here, there).await;
}

#[tokio::test]
async fn superseded_sessions_and_new_timeouts_reach_other_instances() {
    let table = TestTable::new("owner").await;
    let (here, there) = table.two_instances().await;
    near_cache::superseded_sessions_and_new_timeouts_reach_other_instances(here, there).await;
}

#[tokio::test]
async fn a_sign_out_everywhere_reaches_other_instances() {
    let table = TestTable::new("everywhere").await;
    let (here, there) = table.two_instances().await;
    near_cache::a_sign_out_everywhere_reaches_other_instances(here, there).await;
}

#[tokio::test]
async fn a_sign_out_through_one_layer_is_refused_by_the_other() {
    let table = TestTable::new("layer").await;
    let (here, there) = table.two_instances().await;
    near_cache::a_sign_out_through_one_layer_is_refused_by_the_other(here, there).await;
}

/// An instance without a near cache of its own notifies too, so the instances that have one
/// hear of its ends.
#[tokio::test]
async fn an_instance_without_a_cache_still_notifies() {
    let table = TestTable::new("plain").await;
    let here = table.instance().await;
    let there = table.instance_without_cache().await;
    near_cache::an_end_on_another_instance_is_refused_here_once_pushed(here, there).await;
}

#[tokio::test]
async fn a_lost_listen_connection_drops_the_cache_until_it_is_back() {
    let table = TestTable::new("lost").await;
    let store = table.instance().await;
    let pool = store.pool().clone();
    let name = format!("{} near cache", table.0);
    let cut = || async move {
        let ended: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(ended, [true], "the near cache's one connection");
    };
    near_cache::a_lost_channel_drops_the_cache_until_it_is_back(store, cut).await;
}

/// The notification is sent when the change commits, and only then: one rolled back never
/// reaches other instances (a later one, committed, does, and notifications arrive in commit
/// order), so memory is left as it was.
#[tokio::test]
async fn a_notification_is_sent_with_its_commit_and_only_then() {
    let table = TestTable::new("commit").await;
    let here = table.instance().await;
    let policy = store_suite::policy();
    let now = start();
    let (rolled_back, committed) = (fresh_key("rolled-back"), fresh_key("committed"));
    for key in [&rolled_back, &committed] {
        here.begin(key, now, &policy, NewSession::default())
            .await
            .unwrap();
        seen_active(&here, key, now, &policy).await;
    }

    // The notifying statements' own `pg_notify`, in two transactions.
    let pool = here.pool().clone();
    let channel = format!("{}_revoked", table.0);
    for (key, commit) in [(&rolled_back, false), (&committed, true)] {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_notify($1, encode($2, 'hex'))")
            .bind(&channel)
            .bind(key.as_bytes().to_vec())
            .execute(&mut *tx)
            .await
            .unwrap();
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
        }
    }
    until_forgotten(&here, &committed).await;
    assert!(
        here.try_check(&rolled_back, now, &policy, Touch::Passive)
            .is_some(),
        "a notification rolled back is never delivered"
    );
}

/// A notification that names no session of ours may have been a revocation: the whole cache
/// is dropped rather than trusted.
#[tokio::test]
async fn an_unreadable_notification_drops_the_cache() {
    let table = TestTable::new("garbled").await;
    let here = table.instance().await;
    let policy = store_suite::policy();
    let now = start();
    let key = fresh_key("garbled");
    here.begin(&key, now, &policy, NewSession::default())
        .await
        .unwrap();
    seen_active(&here, &key, now, &policy).await;
    sqlx::query("SELECT pg_notify($1, 'not a key')")
        .bind(format!("{}_revoked", table.0))
        .execute(here.pool())
        .await
        .unwrap();
    until_forgotten(&here, &key).await;
}
