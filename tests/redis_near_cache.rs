#![cfg(feature = "redis")]
//! `RedisStore::with_near_cache`: the store suites asked as the layer asks (memory first), a
//! hot session answered without Redis, revocations made on another instance (end, superseded,
//! new timeouts, sign-out through the layer) refused here once pushed, the channel they travel
//! on, a publish that fails, and a lost channel. (The listener's own behaviour, on a
//! `redis-server` of each test's own with shortened waits: `src/store/redis/push.rs`.)
//!
//! Needs Redis on 127.0.0.1:6379 (each test keeps to a key prefix of its own) and, for the
//! lost-channel and failed-publish tests, the `redis-server` binary, which they run on a free
//! port of their own.

mod common;

use std::time::{Duration, Instant};

use common::app::app_with_store;
use common::capture::Logs;
use common::redis_server::OwnRedis;
use common::store_suite::{self, fresh_key, start};
use common::via_cache::ViaCache;
use http::StatusCode;
use tower_session_timeout::store::{
    Check, NewSession, OnLimit, SessionStore, SessionTimeouts, Touch,
};
use tower_session_timeout::{
    ExpiryReason, ManualClock, MemoryStore, RedisStore, SessionTimeoutBuilder, SessionTimeoutLayer,
};

const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Bounds every wait on the network, so a broken Redis fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

/// Long enough that, within a test, only a push can make an instance forget a session.
const MAX_AGE: Duration = Duration::from_secs(600);

/// How long a push may take to reach another instance before a test calls it lost. On
/// loopback it takes a millisecond or two (BENCHMARKS.md); this is slack for a loaded CI.
const PUSH_BOUND: Duration = Duration::from_secs(2);

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

fn policy_with_touch(touch: Duration) -> tower_session_timeout::store::Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(60))
        .touch_interval(touch)
        .build()
        .expect("valid policy")
        .policy()
}

/// Waits until `store` no longer answers the session from memory; panics past the bound.
async fn until_forgotten(store: &RedisStore, key: &tower_session_timeout::store::SessionKey) {
    let policy = store_suite::policy();
    let asked = Instant::now();
    while store
        .try_check(key, start(), &policy, Touch::Passive)
        .is_some()
    {
        assert!(
            asked.elapsed() < PUSH_BOUND,
            "still answered from memory {PUSH_BOUND:?} after the change"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
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
    let prefix = unique_prefix("near-hot");
    let store = near_cached(REDIS_URL, &prefix).await;
    let policy = policy_with_touch(Duration::from_secs(10));
    let key = fresh_key("hot");
    let now = start();
    store
        .begin(&key, now, &policy, NewSession::default())
        .await
        .unwrap();
    assert!(store
        .try_check(&key, now, &policy, Touch::Refresh)
        .is_none());
    let checked = store
        .check(&key, now, &policy, Touch::Refresh)
        .await
        .unwrap();
    assert!(matches!(checked, Check::Active(_)), "{checked:?}");

    let mut redis = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(store.redis_key(&key))
        .query_async(&mut redis)
        .await
        .unwrap();
    let later = now.saturating_add(Duration::from_secs(9));
    let answer = store.try_check(&key, later, &policy, Touch::Refresh);
    assert_eq!(
        answer.map(Result::unwrap),
        Some(checked),
        "answered from memory"
    );
    let due = now.saturating_add(Duration::from_secs(10));
    assert!(store
        .try_check(&key, due, &policy, Touch::Refresh)
        .is_none());
    // Redis, asked, knows nothing of it any more: its answer replaces the memory's.
    assert_eq!(
        store
            .check(&key, due, &policy, Touch::Refresh)
            .await
            .unwrap(),
        Check::Expired(ExpiryReason::Unknown)
    );
    assert!(store
        .try_check(&key, later, &policy, Touch::Passive)
        .is_none());
}

#[tokio::test]
async fn an_end_on_another_instance_is_refused_here_once_pushed() {
    let (here, there) = two_instances("near-end").await;
    let policy = store_suite::policy();
    let key = fresh_key("ended-elsewhere");
    let now = start();
    here.begin(&key, now, &policy, NewSession::default())
        .await
        .unwrap();
    here.check(&key, now, &policy, Touch::Passive)
        .await
        .unwrap();
    there
        .check(&key, now, &policy, Touch::Passive)
        .await
        .unwrap();
    assert!(here.try_check(&key, now, &policy, Touch::Passive).is_some());

    assert!(there.end(&key, now, &policy).await.unwrap());
    // The instance that ended it forgets it at once; the other once the push arrives.
    assert!(there
        .try_check(&key, now, &policy, Touch::Passive)
        .is_none());
    until_forgotten(&here, &key).await;
    assert_eq!(
        here.check(&key, now, &policy, Touch::Passive)
            .await
            .unwrap(),
        Check::Expired(ExpiryReason::Ended)
    );
}

#[tokio::test]
async fn superseded_sessions_and_new_timeouts_reach_other_instances() {
    let (here, there) = two_instances("near-owner").await;
    let policy = *SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(60))
        .max_sessions_per_owner(1, OnLimit::EndOldest)
        .build()
        .unwrap()
        .policy();
    let now = start();
    let owned = NewSession {
        owner: Some("ada"),
        timeouts: None,
    };

    // New, shorter timeouts set elsewhere: forgotten here, then judged by them.
    let retimed = fresh_key("retimed");
    here.begin(&retimed, now, &policy, owned).await.unwrap();
    here.check(&retimed, now, &policy, Touch::Passive)
        .await
        .unwrap();
    assert!(here
        .try_check(&retimed, now, &policy, Touch::Passive)
        .is_some());
    let later = now.saturating_add(Duration::from_secs(30));
    let short = SessionTimeouts::new(Duration::from_secs(10));
    assert!(there
        .set_timeouts(&retimed, now, &policy, short)
        .await
        .unwrap());
    until_forgotten(&here, &retimed).await;
    assert!(matches!(
        here.check(&retimed, later, &policy, Touch::Passive)
            .await
            .unwrap(),
        Check::Retired(ExpiryReason::Idle) | Check::Expired(ExpiryReason::Idle)
    ));

    // A sign-in beyond the limit on one instance supersedes the session the other holds.
    let first = fresh_key("first");
    here.begin(&first, now, &policy, owned).await.unwrap();
    here.check(&first, now, &policy, Touch::Passive)
        .await
        .unwrap();
    assert!(here
        .try_check(&first, now, &policy, Touch::Passive)
        .is_some());
    let second = fresh_key("second");
    let after = now.saturating_add(Duration::from_millis(1));
    there.begin(&second, after, &policy, owned).await.unwrap();
    until_forgotten(&here, &first).await;
    assert_eq!(
        here.check(&first, after, &policy, Touch::Passive)
            .await
            .unwrap(),
        Check::Expired(ExpiryReason::Superseded)
    );
}

/// Through the layer: a sign-out on one instance is refused on the other within the push's
/// time, and once refused never answered 200 again.
#[tokio::test]
async fn a_sign_out_through_one_layer_is_refused_by_the_other() {
    let (here, there) = two_instances("near-layer").await;
    let clock = ManualClock::new();
    let touch = |builder: SessionTimeoutBuilder<MemoryStore>| {
        builder.touch_interval(Duration::from_secs(30))
    };
    let a = app_with_store(here, clock.clone(), touch);
    let b = app_with_store(there, clock.clone(), touch);
    let id = "near-cached-session";
    a.login(id).await;
    for _ in 0..3 {
        assert_eq!(a.get("/page", Some(id)).await.status, StatusCode::OK);
    }
    // A answers it from memory now.
    let key = tower_session_timeout::store::SessionKey::from_id(id);
    let now = tower_session_timeout::Timestamp::from_system_time(
        tower_session_timeout::Clock::now(&clock),
    );
    let policy = *SessionTimeoutLayer::builder()
        .idle_timeout(common::app::IDLE)
        .touch_interval(Duration::from_secs(30))
        .build()
        .unwrap()
        .policy();
    assert!(a
        .store
        .try_check(&key, now, &policy, Touch::Refresh)
        .is_some());
    assert_eq!(b.get("/logout", Some(id)).await.status, StatusCode::OK);
    let ended = Instant::now();
    let mut refused = false;
    while ended.elapsed() < PUSH_BOUND {
        let status = a.get("/page", Some(id)).await.status;
        if refused {
            assert_eq!(status.as_u16(), 440, "200 after 440");
        } else {
            refused = status.as_u16() == 440;
        }
        if refused && ended.elapsed() > Duration::from_millis(50) {
            break;
        }
    }
    assert!(
        refused,
        "still answered 200 {PUSH_BOUND:?} after the sign-out"
    );
}

/// While the subscription is down nothing is answered from memory, and once it is back the
/// cache fills again.
#[tokio::test]
async fn a_lost_channel_drops_the_cache_until_it_is_back() {
    let server = OwnRedis::start();
    let prefix = unique_prefix("near-lost");
    let store = near_cached(&server.url(), &prefix).await;
    let policy = store_suite::policy();
    let key = fresh_key("lost");
    let now = start();
    store
        .begin(&key, now, &policy, NewSession::default())
        .await
        .unwrap();
    store
        .check(&key, now, &policy, Touch::Passive)
        .await
        .unwrap();
    assert!(store
        .try_check(&key, now, &policy, Touch::Passive)
        .is_some());

    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(killed, 1, "the near cache's one subscription");
    until_forgotten(&store, &key).await;

    // Back within the listener's back-off: the cache fills again from Redis's answers.
    let asked = Instant::now();
    loop {
        store
            .check(&key, now, &policy, Touch::Passive)
            .await
            .unwrap();
        if store
            .try_check(&key, now, &policy, Touch::Passive)
            .is_some()
        {
            break;
        }
        assert!(asked.elapsed() < PUSH_BOUND, "not subscribed again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let listeners: i64 = redis::cmd("PUBLISH")
        .arg(format!("{prefix}revoked"))
        .arg(revoked.to_hex())
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(listeners >= 1, "the store's listener subscribed");
    until_forgotten(&store, &revoked).await;
}

/// A revocation that could not be published is logged (the change itself stands); one that
/// was is not.
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

    let mut redis = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-publish")
        .query_async(&mut redis)
        .await
        .unwrap();
    let refused = fresh_key("refused");
    store
        .begin(&refused, now, &policy, NewSession::default())
        .await
        .unwrap();
    assert!(
        store.end(&refused, now, &policy).await.unwrap(),
        "the end stands"
    );
    let lines = logs.lines_with(NOT_PUBLISHED);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains(" WARN "), "{lines:?}");
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
