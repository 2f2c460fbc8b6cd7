//! The near cache's cases, for any store that keeps one (`RedisStore`, `PostgresStore`): a
//! revocation made on one instance (end, sign-out everywhere, superseded, new timeouts,
//! sign-out through the layer) is refused by another once pushed.

use std::time::{Duration, Instant};

use http::StatusCode;
use tower_session_timeout::store::{
    Check, NewSession, OnLimit, Policy, SessionKey, SessionStore, SessionTimeouts, Touch,
};
use tower_session_timeout::{
    Clock, ExpiryReason, ManualClock, MemoryStore, SessionTimeoutBuilder, SessionTimeoutLayer,
    Timestamp,
};

use super::app::app_with_store;
use super::store_suite::{self, fresh_key, start};

/// Bounds every wait on the network, so a broken server fails a test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(10);

/// Long enough that, within a test, only a push can make an instance forget a session.
pub const MAX_AGE: Duration = Duration::from_secs(600);

/// How long a push may take to reach another instance before a test calls it lost. On
/// loopback it takes a millisecond or two (BENCHMARKS.md); this is slack for a loaded CI.
pub const PUSH_BOUND: Duration = Duration::from_secs(2);

pub fn policy_with_touch(touch: Duration) -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(60))
        .touch_interval(touch)
        .build()
        .expect("valid policy")
        .policy()
}

/// Waits until `store` no longer answers the session from memory; panics past the bound.
pub async fn until_forgotten(store: &impl SessionStore, key: &SessionKey) {
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

/// Checks the session through `store` until its near cache holds it, asserting it does.
pub async fn seen_active(
    store: &impl SessionStore,
    key: &SessionKey,
    now: Timestamp,
    policy: &Policy,
) {
    let checked = store.check(key, now, policy, Touch::Passive).await.unwrap();
    assert!(matches!(checked, Check::Active(_)), "{checked:?}");
    assert!(
        store.try_check(key, now, policy, Touch::Passive).is_some(),
        "the near cache holds what the store answered"
    );
}

/// Begins a session, has the store answer it, then deletes its record behind the store's
/// back with `delete`: the cache answers what the store answered until a refresh must write,
/// and the store's answer then replaces the memory's.
pub async fn answers_a_hot_session_from_memory_until_a_write_is_due<S, D, F>(store: S, delete: D)
where
    S: SessionStore,
    D: FnOnce(SessionKey) -> F,
    F: std::future::Future<Output = ()>,
{
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

    delete(key).await;
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
    // The store, asked, knows nothing of it any more: its answer replaces the memory's.
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

pub async fn an_end_on_another_instance_is_refused_here_once_pushed(
    here: impl SessionStore,
    there: impl SessionStore,
) {
    let policy = store_suite::policy();
    let key = fresh_key("ended-elsewhere");
    let now = start();
    here.begin(&key, now, &policy, NewSession::default())
        .await
        .unwrap();
    seen_active(&here, &key, now, &policy).await;
    let checked = there.check(&key, now, &policy, Touch::Passive).await;
    assert!(matches!(checked, Ok(Check::Active(_))), "{checked:?}");

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

pub async fn superseded_sessions_and_new_timeouts_reach_other_instances(
    here: impl SessionStore,
    there: impl SessionStore,
) {
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
    seen_active(&here, &retimed, now, &policy).await;
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
    seen_active(&here, &first, now, &policy).await;
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

/// Sign-out everywhere on one instance: the other forgets every session it ended, and keeps
/// the one spared.
pub async fn a_sign_out_everywhere_reaches_other_instances(
    here: impl SessionStore,
    there: impl SessionStore,
) {
    let policy = store_suite::policy();
    let now = start();
    let owned = NewSession {
        owner: Some("grace"),
        timeouts: None,
    };
    let keys = [fresh_key("phone"), fresh_key("laptop"), fresh_key("kept")];
    for key in &keys {
        here.begin(key, now, &policy, owned).await.unwrap();
        seen_active(&here, key, now, &policy).await;
    }
    let ended = there
        .end_sessions_of("grace", Some(&keys[2]), now, &policy)
        .await
        .unwrap();
    assert_eq!(ended, 2);
    for key in &keys[..2] {
        until_forgotten(&here, key).await;
        assert_eq!(
            here.check(key, now, &policy, Touch::Passive).await.unwrap(),
            Check::Expired(ExpiryReason::Ended)
        );
    }
    assert!(
        here.try_check(&keys[2], now, &policy, Touch::Passive)
            .is_some(),
        "the session spared is still answered from memory"
    );
}

/// Through the layer: a sign-out on one instance is refused on the other within the push's
/// time, and once refused never answered 200 again.
pub async fn a_sign_out_through_one_layer_is_refused_by_the_other<S: SessionStore>(
    here: S,
    there: S,
) {
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
    let key = SessionKey::from_id(id);
    let now = Timestamp::from_system_time(clock.now());
    let policy = *SessionTimeoutLayer::builder()
        .idle_timeout(super::app::IDLE)
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
        // A request answered from memory never waits: let the listener run between two, as
        // a server's reads of the next request do.
        tokio::task::yield_now().await;
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

/// While the channel is down nothing is answered from memory, and once it is back the cache
/// fills again. `cut` severs the store's push channel and returns once it has.
pub async fn a_lost_channel_drops_the_cache_until_it_is_back<S, C, F>(store: S, cut: C)
where
    S: SessionStore,
    C: FnOnce() -> F,
    F: std::future::Future<Output = ()>,
{
    let policy = store_suite::policy();
    let key = fresh_key("lost");
    let now = start();
    store
        .begin(&key, now, &policy, NewSession::default())
        .await
        .unwrap();
    seen_active(&store, &key, now, &policy).await;

    cut().await;
    until_forgotten(&store, &key).await;

    // Back within the listener's back-off: the cache fills again from the store's answers.
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
