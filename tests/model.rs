//! Every store against the reference model, through random runs of begin, requests, passive
//! requests, end, clock steps (forward and back) and purges. The memory store always; the
//! Redis and SQL stores when their features are on (their servers are started by `.ci/test`).
//!
//! Each run starts its clock at a time drawn from the seed (never the real clock), so a failure
//! replays exactly. `TST_LONG=1` runs 10,000 cases per store (see `common/long.rs`).

mod common;

use common::long;
use std::time::Duration;

use common::model::{op, policy, run, start, Op, EPOCH};
use proptest::prelude::*;
use tower_session_timeout::{MemoryStore, SessionTimeoutLayer};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Issue #17's flaky case: A goes idle at 60 s and a sweep turns it into a tombstone kept
/// until 90 s; an end at exactly 90 s (its horizon) must forget it, as a check or a begin at
/// 90 s does, so a clock stepping back 1 ms finds A new. The memory store used to leave the
/// tombstone in place and refuse A. It showed only when a sweep had moved the tombstone to
/// the bucket after 90 s, i.e. when 90 s was not a whole second and B shared A's shard, so
/// every phase and pair of ids is tried, with one and two shards.
#[test]
fn regression_an_end_at_the_horizon_forgets_the_tombstone() {
    let policy = *SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(60))
        .tombstone_retention(Duration::from_secs(30))
        .build()
        .expect("valid policy")
        .policy();
    for shards in [1, 2] {
        for offset in [0, 1, 326, 500, 674, 999] {
            for a in 0..4 {
                for b in (0..4).filter(|&b| b != a) {
                    let ops = [
                        Op::Begin(a),
                        Op::Forward(63_326),
                        Op::Begin(b),
                        Op::Forward(26_674),
                        Op::End(a),
                        Op::Back(1),
                        Op::Begin(a),
                    ];
                    let store = MemoryStore::with_shards(shards);
                    if let Err(failure) =
                        runtime().block_on(run(&store, &policy, EPOCH + offset, &ops, 0))
                    {
                        panic!("{shards} shards, start +{offset} ms, A={a} B={b}: {failure}");
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: long::cases(512), ..ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..80), start in start()) {
        runtime().block_on(run(&MemoryStore::with_shards(2), &policy, start, &ops, 0))?;
    }
}

#[cfg(feature = "redis")]
proptest! {
    #![proptest_config(ProptestConfig { cases: long::cases(48), ..ProptestConfig::default() })]

    #[test]
    fn redis_store_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..60), start in start()) {
        let rt = runtime();
        rt.block_on(async {
            let store = tower_session_timeout::RedisStore::connect("redis://127.0.0.1:6379/0").await.expect("Redis on 127.0.0.1:6379");
            run(&store, &policy, start, &ops, rand::random()).await
        })?;
    }
}

// The same, asked as the layer asks (memory first) with the near cache on.
#[cfg(feature = "redis")]
proptest! {
    #![proptest_config(ProptestConfig { cases: long::cases(48), ..ProptestConfig::default() })]

    #[test]
    fn redis_store_with_a_near_cache_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..60), start in start()) {
        let rt = runtime();
        rt.block_on(async {
            let store = tower_session_timeout::RedisStore::connect("redis://127.0.0.1:6379/0").await.expect("Redis on 127.0.0.1:6379");
            // A prefix (and so a channel) of its own: other runs' pushes would cancel remembers.
            let store = store
                .with_prefix(format!("tst-model-near:{:016x}:", rand::random::<u64>()))
                .with_near_cache(Duration::from_secs(600), 10_000)
                .await
                .expect("subscribed");
            run(&common::via_cache::ViaCache(store), &policy, start, &ops, rand::random()).await
        })?;
    }
}

#[cfg(feature = "sqlite")]
proptest! {
    #![proptest_config(ProptestConfig { cases: long::cases(48), ..ProptestConfig::default() })]

    #[test]
    fn sqlite_store_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..60), start in start()) {
        let rt = runtime();
        rt.block_on(async {
            let store = tower_session_timeout::SqliteStore::connect("sqlite::memory:").await.expect("in-memory SQLite");
            store.migrate().await.expect("migrate");
            run(&store, &policy, start, &ops, rand::random()).await
        })?;
    }
}

#[cfg(feature = "postgres")]
proptest! {
    #![proptest_config(ProptestConfig { cases: long::cases(32), ..ProptestConfig::default() })]

    #[test]
    fn postgres_store_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..60), start in start()) {
        let rt = runtime();
        rt.block_on(async {
            // One table per run, so parallel runs on the shared database keep apart.
            let table = format!("model_{:016x}", rand::random::<u64>());
            let store = tower_session_timeout::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test")
                .await
                .expect("PostgreSQL on 127.0.0.1:5432")
                .with_table_name(&table)
                .expect("valid table name");
            store.migrate().await.expect("migrate");
            let outcome = run(&store, &policy, start, &ops, 0).await;
            sqlx::query(&format!("DROP TABLE {table}")).execute(store.pool()).await.expect("drop the run's table");
            outcome
        })?;
    }
}

// The same, asked as the layer asks (memory first) with the near cache on.
#[cfg(feature = "postgres")]
proptest! {
    #![proptest_config(ProptestConfig { cases: long::cases(32), ..ProptestConfig::default() })]

    #[test]
    fn postgres_store_with_a_near_cache_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..60), start in start()) {
        let rt = runtime();
        rt.block_on(async {
            // A table (and so a channel) of its own: other runs' notifications would cancel
            // remembers.
            let table = format!("model_near_{:016x}", rand::random::<u64>());
            let store = tower_session_timeout::PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test")
                .await
                .expect("PostgreSQL on 127.0.0.1:5432")
                .with_table_name(&table)
                .expect("valid table name");
            store.migrate().await.expect("migrate");
            let store = store
                .with_near_cache(Duration::from_secs(600), 10_000)
                .await
                .expect("listening");
            let outcome = run(&common::via_cache::ViaCache(store.clone()), &policy, start, &ops, 0).await;
            sqlx::query(&format!("DROP TABLE {table}")).execute(store.pool()).await.expect("drop the run's table");
            outcome
        })?;
    }
}
