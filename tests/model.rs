//! Every store against the reference model, through random runs of begin, requests, passive
//! requests, end, clock steps (forward and back) and purges. The memory store always; the
//! Redis and SQL stores when their features are on (their servers are started by `.ci/test`).

mod common;

use common::model::{op, policy, run};
use proptest::prelude::*;
use tower_session_timeout::MemoryStore;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn memory_store_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..80)) {
        runtime().block_on(run(&MemoryStore::with_shards(2), &policy, &ops, 0))?;
    }
}

#[cfg(feature = "redis")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redis_store_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..60)) {
        let rt = runtime();
        rt.block_on(async {
            let store = tower_session_timeout::RedisStore::connect("redis://127.0.0.1:6379/0").await.expect("Redis on 127.0.0.1:6379");
            run(&store, &policy, &ops, rand::random()).await
        })?;
    }
}

#[cfg(feature = "sqlite")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sqlite_store_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..60)) {
        let rt = runtime();
        rt.block_on(async {
            let store = tower_session_timeout::SqliteStore::connect("sqlite::memory:").await.expect("in-memory SQLite");
            store.migrate().await.expect("migrate");
            run(&store, &policy, &ops, rand::random()).await
        })?;
    }
}

#[cfg(feature = "postgres")]
proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn postgres_store_matches_the_model(policy in policy(), ops in prop::collection::vec(op(), 1..60)) {
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
            let outcome = run(&store, &policy, &ops, 0).await;
            sqlx::query(&format!("DROP TABLE {table}")).execute(store.pool()).await.expect("drop the run's table");
            outcome
        })?;
    }
}
