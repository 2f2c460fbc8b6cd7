//! How long a session ended on one instance stays answered from another instance's near
//! cache (issue #15): two `RedisStore`s with a near cache each, sharing one Redis on loopback,
//! then two `PostgresStore`s sharing one PostgreSQL table.
//!
//! ```text
//! cargo bench --bench revocation_lag --features redis,postgres
//! ```
//!
//! Each round begins a session, has both instances check it (so both remember it), then ends
//! it on the first and measures, on the second, how long `try_check` (what the layer asks
//! first) still answers it from memory: from the moment the end was called, and from the
//! moment it returned (acknowledged). `REDIS_URL` names another Redis, `DATABASE_URL` another
//! PostgreSQL database; `LAG_ROUNDS` another number of rounds (default 2,000);
//! `LAG_STORES=postgres` (or `redis`) measures one store only.

use std::time::{Duration, Instant};

use tower_session_timeout::store::{NewSession, SessionKey, SessionStore, Touch};
use tower_session_timeout::{PostgresStore, RedisStore, SessionTimeoutLayer, Timestamp};

const MAX_AGE: Duration = Duration::from_secs(600);

fn main() {
    let stores = std::env::var("LAG_STORES").unwrap_or_else(|_| "redis,postgres".into());
    let rounds: usize = std::env::var("LAG_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(2_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if stores.contains("redis") {
            let prefix = format!("tst-lag:{:016x}:", rand::random::<u64>());
            let (ending, other) = (redis(&prefix).await, redis(&prefix).await);
            println!("RedisStore:");
            run(ending, other, rounds, &prefix).await;
        }
        if stores.contains("postgres") {
            let table = format!("lag_{:016x}", rand::random::<u64>());
            let (ending, other) = (postgres(&table).await, postgres(&table).await);
            ending.migrate().await.expect("migrate");
            println!("PostgresStore:");
            run(ending.clone(), other, rounds, &table).await;
            sqlx::query(&format!("DROP TABLE {table}"))
                .execute(ending.pool())
                .await
                .expect("drop the bench's table");
        }
    });
}

async fn redis(prefix: &str) -> RedisStore {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    RedisStore::connect(url.as_str())
        .await
        .expect("Redis is reachable")
        .with_prefix(prefix.to_owned())
        .with_near_cache(MAX_AGE, 100_000)
        .await
        .expect("subscribed")
}

async fn postgres(table: &str) -> PostgresStore {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    PostgresStore::connect(&url)
        .await
        .expect("PostgreSQL is reachable")
        .with_table_name(table)
        .expect("valid table name")
        .with_near_cache(MAX_AGE, 100_000)
        .await
        .expect("listening")
}

async fn run(ending: impl SessionStore, other: impl SessionStore, rounds: usize, prefix: &str) {
    let policy = *SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(20 * 60))
        .build()
        .expect("valid policy")
        .policy();
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let mut from_call = Vec::with_capacity(rounds);
    let mut from_ack = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let key = SessionKey::from_id(&format!("lag-{round:08}-{prefix}"));
        ending
            .begin(&key, now, &policy, NewSession::default())
            .await
            .expect("begin");
        ending
            .check(&key, now, &policy, Touch::Passive)
            .await
            .expect("check");
        other
            .check(&key, now, &policy, Touch::Passive)
            .await
            .expect("check");
        assert!(other
            .try_check(&key, now, &policy, Touch::Passive)
            .is_some());
        let called = Instant::now();
        assert!(ending.end(&key, now, &policy).await.expect("end"));
        let acknowledged = Instant::now();
        while other
            .try_check(&key, now, &policy, Touch::Passive)
            .is_some()
        {
            assert!(called.elapsed() < Duration::from_secs(5), "push lost");
            tokio::task::yield_now().await;
        }
        let forgotten = Instant::now();
        from_call.push(forgotten - called);
        from_ack.push(forgotten.saturating_duration_since(acknowledged));
    }
    report("from the end's call", &mut from_call);
    report("from the end's acknowledgement", &mut from_ack);
}

fn report(what: &str, lags: &mut [Duration]) {
    lags.sort();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q).round() as usize];
    println!(
        "revocation lag {what} ({} rounds): p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        lags.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        lags[lags.len() - 1],
    );
}
