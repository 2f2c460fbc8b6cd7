#![cfg(feature = "redis")]
//! `RedisStore::with_near_cache`: the store suites asked as the layer asks (memory first), a
//! hot session answered without Redis, revocations made on another instance (end, sign-out
//! everywhere, superseded, new timeouts, sign-out through the layer) refused here once pushed,
//! and a lost channel (the cases themselves are in `common/near_cache.rs`).
//!
//! Needs Redis on 127.0.0.1:6379 (each test keeps to a key prefix of its own) and, for the
//! lost-channel test, the `redis-server` binary, which it runs on a free port of its own.

mod common;

use common::near_cache::{self, MAX_AGE, WAIT};
use common::redis_server::OwnRedis;
use common::store_suite;
use common::via_cache::ViaCache;
use tower_session_timeout::RedisStore;

const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

fn unique_prefix(test: &str) -> String {
    let nonce: u64 = rand::random();
    format!("tst-test:{test}:{nonce:016x}:")
}

async fn near_cached(url: &str, prefix: &str) -> RedisStore {
    let store = tokio::time::timeout(WAIT, RedisStore::connect(url))
        .await
        .expect("Redis answers in time")
        .expect("Redis is reachable")
        .with_prefix(prefix.to_owned());
    store
        .with_near_cache(MAX_AGE, 10_000)
        .await
        .expect("subscribed")
}

/// Two instances, each with a near cache of its own, sharing one prefix.
async fn two_instances(test: &str) -> (RedisStore, RedisStore) {
    let prefix = unique_prefix(test);
    (
        near_cached(REDIS_URL, &prefix).await,
        near_cached(REDIS_URL, &prefix).await,
    )
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn passes_the_store_suite_through_its_near_cache() {
    let store = near_cached(REDIS_URL, &unique_prefix("near-suite")).await;
    store_suite::run(ViaCache(store)).await;
}

#[tokio::test]
async fn passes_the_owner_suite_through_its_near_cache() {
    let store = near_cached(REDIS_URL, &unique_prefix("near-owner-suite")).await;
    common::owner_suite::run(ViaCache(store)).await;
}

/// What the store answered is answered again from memory, with no round trip (the key is
/// gone from Redis and the answer stays), until a refresh must write.
#[tokio::test]
async fn answers_a_hot_session_from_memory_until_a_write_is_due() {
    let store = near_cached(REDIS_URL, &unique_prefix("near-hot")).await;
    let redis_key = |key| store.redis_key(&key);
    let delete = |key| async move {
        let _: i64 = redis::cmd("DEL")
            .arg(redis_key(key))
            .query_async(&mut connection(REDIS_URL).await)
            .await
            .unwrap();
    };
    near_cache::answers_a_hot_session_from_memory_until_a_write_is_due(store.clone(), delete).await;
}

#[tokio::test]
async fn an_end_on_another_instance_is_refused_here_once_pushed() {
    let (here, there) = two_instances("near-end").await;
    near_cache::an_end_on_another_instance_is_refused_here_once_pushed(here, there).await;
}

#[tokio::test]
async fn superseded_sessions_and_new_timeouts_reach_other_instances() {
    let (here, there) = two_instances("near-owner").await;
    near_cache::superseded_sessions_and_new_timeouts_reach_other_instances(here, there).await;
}

#[tokio::test]
async fn a_sign_out_everywhere_reaches_other_instances() {
    let (here, there) = two_instances("near-everywhere").await;
    near_cache::a_sign_out_everywhere_reaches_other_instances(here, there).await;
}

#[tokio::test]
async fn a_sign_out_through_one_layer_is_refused_by_the_other() {
    let (here, there) = two_instances("near-layer").await;
    near_cache::a_sign_out_through_one_layer_is_refused_by_the_other(here, there).await;
}

#[tokio::test]
async fn a_lost_channel_drops_the_cache_until_it_is_back() {
    let server = OwnRedis::start();
    let store = near_cached(&server.url(), &unique_prefix("near-lost")).await;
    let url = server.url();
    let cut = || async move {
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut connection(&url).await)
            .await
            .unwrap();
        assert_eq!(killed, 1, "the near cache's one subscription");
    };
    near_cache::a_lost_channel_drops_the_cache_until_it_is_back(store, cut).await;
}

#[tokio::test]
async fn needs_a_client_of_its_own() {
    let client = redis::Client::open(REDIS_URL).unwrap();
    let manager = redis::aio::ConnectionManager::new(client).await.unwrap();
    let store = RedisStore::from_connection_manager(manager);
    let error = store
        .with_near_cache(MAX_AGE, 10)
        .await
        .expect_err("no client to subscribe with");
    assert!(error.to_string().contains("near cache"), "{error}");
}
