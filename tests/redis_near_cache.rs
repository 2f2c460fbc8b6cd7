#![cfg(feature = "redis")]
//! `RedisStore::with_near_cache`: the store suites asked as the layer asks (memory first), a
//! hot session answered without Redis, revocations made on another instance (end, sign-out
//! everywhere, superseded, new timeouts, sign-out through the layer) refused here once pushed
//! (those cases are in `common/near_cache.rs`), the channel they travel on, a publish that
//! fails, and a lost channel. (The listener's own behaviour, with shortened waits, through a
//! relay that cuts or freezes its connection: `src/store/listener/tests.rs`.)
//!
//! Needs Redis on 127.0.0.1:6379 (each test keeps to a key prefix of its own) and, for the
//! lost-channel and failed-publish tests, the `redis-server` binary, which they run on a free
//! port of their own.

mod common;

use std::time::Duration;

use common::capture::Logs;
use common::near_cache::{self, until_forgotten, MAX_AGE, PUSH_BOUND, WAIT};
use common::redis_server::OwnRedis;
use common::store_suite::{self, fresh_key, start};
use common::via_cache::ViaCache;
use tower_session_timeout::store::{Check, NewSession, SessionStore, Touch};
use tower_session_timeout::{ExpiryReason, RedisStore, SessionTimeouts};

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

/// The channel is `<prefix>revoked` (what an ACL must allow) and a message the session key in
/// hex: what an instance publishes there a plain subscriber reads, and what a plain client
/// publishes there an instance forgets.
#[tokio::test]
async fn revocations_travel_on_the_prefix_revoked_channel() {
    let prefix = unique_prefix("near-channel");
    let store = near_cached(REDIS_URL, &prefix).await;
    let policy = store_suite::policy();
    let now = start();
    let client = redis::Client::open(REDIS_URL).unwrap();
    let mut subscriber = tokio::time::timeout(WAIT, client.get_async_pubsub())
        .await
        .expect("Redis answers in time")
        .unwrap();
    subscriber
        .subscribe(format!("{prefix}revoked"))
        .await
        .unwrap();

    let ended = fresh_key("ended-here");
    store
        .begin(&ended, now, &policy, NewSession::default())
        .await
        .unwrap();
    assert!(store.end(&ended, now, &policy).await.unwrap());
    let mut messages = subscriber.on_message();
    let next = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut messages), cx)
    });
    let message = tokio::time::timeout(PUSH_BOUND, next)
        .await
        .expect("published on <prefix>revoked")
        .expect("still subscribed");
    assert_eq!(message.get_payload::<String>().unwrap(), ended.to_hex());

    let revoked = fresh_key("revoked-by-hand");
    store
        .begin(&revoked, now, &policy, NewSession::default())
        .await
        .unwrap();
    store
        .check(&revoked, now, &policy, Touch::Passive)
        .await
        .unwrap();
    assert!(store
        .try_check(&revoked, now, &policy, Touch::Passive)
        .is_some());
    let mut redis = connection(REDIS_URL).await;
    let listeners: i64 = redis::cmd("PUBLISH")
        .arg(format!("{prefix}revoked"))
        .arg(revoked.to_hex())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(listeners >= 1, "the store's listener subscribed");
    until_forgotten(&store, &revoked).await;
}

/// A revocation that could not be published is logged, once for a burst of them (the changes
/// themselves stand: ends and new timeouts); one that was is not.
#[tokio::test]
async fn a_publish_that_fails_is_logged() {
    const NOT_PUBLISHED: &str = "could not publish a session's revocation";
    let (logs, _guard) = Logs::capture();
    let server = OwnRedis::start();
    let store = tokio::time::timeout(WAIT, RedisStore::connect(server.url()))
        .await
        .expect("Redis answers in time")
        .expect("Redis is reachable");
    let policy = store_suite::policy();
    let now = start();

    let published = fresh_key("published");
    store
        .begin(&published, now, &policy, NewSession::default())
        .await
        .unwrap();
    assert!(store.end(&published, now, &policy).await.unwrap());
    assert_eq!(logs.lines_with(NOT_PUBLISHED), Vec::<String>::new());

    let mut redis = connection(&server.url()).await;
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-publish")
        .query_async(&mut redis)
        .await
        .unwrap();
    let [ended, also_ended, retimed] = ["refused", "refused-too", "retimed"].map(fresh_key);
    for key in [&ended, &also_ended, &retimed] {
        store
            .begin(key, now, &policy, NewSession::default())
            .await
            .unwrap();
    }
    for key in [&ended, &also_ended] {
        assert!(
            store.end(key, now, &policy).await.unwrap(),
            "the end stands"
        );
        let check = store
            .check(key, now, &policy, Touch::Passive)
            .await
            .unwrap();
        assert!(matches!(check, Check::Expired(_)), "{check:?}");
    }
    let short = SessionTimeouts::new(Duration::from_secs(60));
    assert!(store
        .set_timeouts(&retimed, now, &policy, short)
        .await
        .unwrap());
    let later = now.saturating_add(Duration::from_secs(61));
    let check = store
        .check(&retimed, later, &policy, Touch::Passive)
        .await
        .unwrap();
    assert!(
        matches!(
            check,
            Check::Retired(ExpiryReason::Idle) | Check::Expired(ExpiryReason::Idle)
        ),
        "the new timeouts stand: {check:?}"
    );
    // A refused publish is refused every time: one WARN for the three, the others counted
    // at TRACE (the three run well inside the log's 10 s quiet period).
    let lines = logs.lines_with(NOT_PUBLISHED);
    let at = |level: &str| lines.iter().filter(|line| line.contains(level)).count();
    assert_eq!((at(" WARN "), at(" TRACE ")), (1, 2), "{lines:#?}");
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
