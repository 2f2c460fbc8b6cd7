//! `RedisStore`'s owner index as Redis holds it, run by `redis_store.rs` on one Redis and by
//! `redis_cluster.rs` on a cluster (where an owner's index and its sessions sit in different
//! slots): the keys it writes, the pruning of members that are over, an index entry that
//! names another owner's session, a sign-in that stopped half-way, timeouts that outlive the
//! index's TTL, both limits with sign-ins racing on several instances, and "sign out
//! everywhere" racing with requests and sign-ins on several instances.
//!
//! `inspector` is a plain connection (one node, or a cluster connection) for looking at and
//! forging what the store writes. Times are passed to the store; nothing sleeps.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use tower_session_timeout::store::{
    Begin, Check, NewSession, Policy, SessionKey, SessionStore, SessionTimeouts, Touch,
};
use tower_session_timeout::{ExpiryReason, OnLimit, RedisStore, SessionTimeoutLayer, Timestamp};

use super::owner_suite::{fresh_owner, limited};
use super::store_suite::{fresh_key, policy, start, ABSOLUTE, IDLE, RETENTION};

/// Bounds every wait on the network, so a broken Redis fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

const GRACE: Duration = RedisStore::SIGN_IN_GRACE;

const LEASE: Duration = RedisStore::OWNER_INDEX_LEASE;

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("answered in time")
}

fn at(start: Timestamp, seconds: u64) -> Timestamp {
    start.saturating_add(Duration::from_secs(seconds))
}

fn ms(duration: Duration) -> i64 {
    duration.as_millis() as i64
}

async fn query<C: ConnectionLike + Send, T: redis::FromRedisValue>(
    connection: &mut C,
    command: &redis::Cmd,
) -> T {
    within(command.query_async(connection))
        .await
        .unwrap_or_else(|error| panic!("{command:?}: {error}"))
}

async fn score<C: ConnectionLike + Send>(
    connection: &mut C,
    index: &str,
    key: &SessionKey,
) -> Option<f64> {
    query(
        connection,
        redis::cmd("ZSCORE").arg(index).arg(key.to_hex()),
    )
    .await
}

async fn members<C: ConnectionLike + Send>(connection: &mut C, index: &str) -> usize {
    query(connection, redis::cmd("ZCARD").arg(index)).await
}

async fn pttl<C: ConnectionLike + Send>(connection: &mut C, key: &str) -> i64 {
    query(connection, redis::cmd("PTTL").arg(key)).await
}

async fn field<C: ConnectionLike + Send>(
    connection: &mut C,
    key: &str,
    name: &str,
) -> Option<String> {
    query(connection, redis::cmd("HGET").arg(key).arg(name)).await
}

async fn begin_as(
    store: &RedisStore,
    policy: &Policy,
    key: &SessionKey,
    now: Timestamp,
    owner: Option<&str>,
    timeouts: Option<SessionTimeouts>,
) -> Begin {
    within(store.begin(key, now, policy, NewSession { owner, timeouts }))
        .await
        .expect("begin")
}

async fn check(store: &RedisStore, key: &SessionKey, now: Timestamp) -> Check {
    within(store.check(key, now, &policy(), Touch::Refresh))
        .await
        .expect("check")
}

async fn listed(store: &RedisStore, owner: &str, now: Timestamp) -> Vec<SessionKey> {
    within(store.sessions_of(owner, now, &policy()))
        .await
        .expect("sessions_of")
        .iter()
        .map(|session| session.key)
        .collect()
}

fn is_active(check: &Check) -> bool {
    matches!(check, Check::Active(_))
}

/// Asserts `ttl` (ms) is `expected`, less at most 5 s of test time.
fn assert_ttl(ttl: i64, expected: Duration, what: &str) {
    let most = ms(expected);
    assert!(
        ttl > most - 5_000 && ttl <= most,
        "{what}: ttl {ttl} ms, expected about {most} ms"
    );
}

/// Runs every case; `stores` are separate connections (instances) to the same Redis.
pub async fn run<C: ConnectionLike + Clone + Send>(stores: &[RedisStore], inspector: C) {
    let store = &stores[0];
    the_index_is_a_sorted_set_of_session_keys_with_a_ttl(store, inspector.clone()).await;
    members_that_are_over_are_pruned(store, inspector.clone()).await;
    an_index_entry_grants_no_power_over_another_owners_session(store, inspector.clone()).await;
    a_sign_in_stopped_half_way_is_kept_only_for_the_grace(store, inspector.clone()).await;
    longer_timeouts_keep_the_index_longer_first(store, inspector.clone()).await;
    an_owned_session_never_outlives_its_index(store, inspector.clone()).await;
    a_sign_in_or_end_all_whose_caller_goes_away_completes(store).await;
    concurrent_sign_ins_beyond_the_limit_keep_the_newest(stores).await;
    concurrent_sign_ins_beyond_a_refusing_limit_admit_exactly_the_limit(stores).await;
}

async fn the_index_is_a_sorted_set_of_session_keys_with_a_ttl<C: ConnectionLike + Send>(
    store: &RedisStore,
    mut connection: C,
) {
    let policy = policy();
    let owner = fresh_owner("layout");
    let t0 = start();
    let key = fresh_key("layout");
    assert_eq!(
        begin_as(store, &policy, &key, t0, Some(&owner), None).await,
        Begin::Began
    );
    let index = store.owner_key(&owner);
    assert!(index.starts_with(&format!("{}owner:", store.prefix())));
    assert!(!index.contains(&owner), "the principal is hashed: {index}");
    assert_eq!(
        score(&mut connection, &index, &key).await,
        Some(t0.as_unix_millis() as f64),
        "one member, the session key, scored by the sign-in time"
    );
    assert_eq!(members(&mut connection, &index).await, 1);
    let session = store.redis_key(&key);
    assert_eq!(
        field(&mut connection, &session, "p").await.as_deref(),
        Some(owner.as_str()),
        "the record names its owner"
    );
    // The index outlives the longest the session may live; the session's key outlives its
    // horizon by the grace.
    assert_ttl(
        pttl(&mut connection, &index).await,
        ABSOLUTE + GRACE,
        "index",
    );
    assert_ttl(
        pttl(&mut connection, &session).await,
        IDLE + RETENTION + GRACE,
        "session",
    );
    // Another sign-in of the same owner never shortens the index's TTL.
    let short = SessionTimeouts::new(Duration::from_secs(5)).with_absolute(Duration::from_secs(10));
    let second = fresh_key("layout-short");
    begin_as(
        store,
        &policy,
        &second,
        at(t0, 1),
        Some(&owner),
        Some(short),
    )
    .await;
    assert_ttl(
        pttl(&mut connection, &index).await,
        ABSOLUTE + GRACE,
        "index after a shorter session",
    );
    assert_eq!(listed(store, &owner, at(t0, 2)).await, vec![key, second]);

    // A session without an absolute timeout: the index is kept a lease beyond its idle
    // deadline (and its requests renew that lease).
    let unbounded = *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .tombstone_retention(RETENTION)
        .build()
        .expect("valid policy")
        .policy();
    let owner = fresh_owner("layout-unbounded");
    let key = fresh_key("layout-unbounded");
    begin_as(store, &unbounded, &key, t0, Some(&owner), None).await;
    assert_ttl(
        pttl(&mut connection, &store.owner_key(&owner)).await,
        IDLE + LEASE + GRACE,
        "index of a session without an absolute timeout",
    );
    assert_eq!(
        field(&mut connection, &store.redis_key(&key), "x").await,
        Some(t0.saturating_add(IDLE + LEASE).as_unix_millis().to_string())
    );
}

async fn members_that_are_over_are_pruned<C: ConnectionLike + Send>(
    store: &RedisStore,
    mut connection: C,
) {
    let policy = policy();
    let owner = fresh_owner("prune");
    let index = store.owner_key(&owner);
    let t0 = start();
    let [a, b, c, d] = ["a", "b", "c", "d"].map(|name| fresh_key(&format!("prune-{name}")));
    for (i, key) in [&a, &b, &c, &d].into_iter().enumerate() {
        begin_as(
            store,
            &policy,
            key,
            at(t0, i as u64 / 2),
            Some(&owner),
            None,
        )
        .await;
    }
    assert_eq!(members(&mut connection, &index).await, 4);
    // b ends; a and d are kept alive; c goes idle at 60 s.
    assert!(within(store.end(&b, at(t0, 1), &policy)).await.unwrap());
    check(store, &a, at(t0, 50)).await;
    check(store, &d, at(t0, 50)).await;
    assert_eq!(listed(store, &owner, at(t0, 61)).await, vec![a, d]);
    assert_eq!(
        score(&mut connection, &index, &b).await,
        None,
        "ended: pruned"
    );
    assert!(
        score(&mut connection, &index, &c).await.is_some(),
        "expired but not retired: kept, a clock stepping back finds it active"
    );
    assert_eq!(
        check(store, &c, at(t0, 61)).await,
        Check::Retired(ExpiryReason::Idle)
    );
    listed(store, &owner, at(t0, 62)).await;
    assert_eq!(
        score(&mut connection, &index, &c).await,
        None,
        "retired: pruned"
    );

    // Past its retention a session is forgotten; the key keeps a mark for the grace, so the
    // index can tell "over" from "a sign-in under way".
    assert_eq!(
        check(store, &a, at(t0, 140)).await,
        Check::Expired(ExpiryReason::Unknown)
    );
    let session = store.redis_key(&a);
    assert_eq!(
        field(&mut connection, &session, "g").await.as_deref(),
        Some("1")
    );
    assert!(pttl(&mut connection, &session).await <= ms(GRACE));
    listed(store, &owner, at(t0, 140)).await;
    assert_eq!(
        score(&mut connection, &index, &a).await,
        None,
        "forgotten: pruned"
    );
    // The mark answers as a missing key: the id can begin anew.
    assert_eq!(
        begin_as(store, &policy, &a, at(t0, 141), Some(&owner), None).await,
        Begin::Began
    );
    assert_eq!(listed(store, &owner, at(t0, 142)).await, vec![a]);
}

async fn an_index_entry_grants_no_power_over_another_owners_session<C: ConnectionLike + Send>(
    store: &RedisStore,
    mut connection: C,
) {
    let policy = policy();
    let (alice, bob) = (fresh_owner("alice"), fresh_owner("bob"));
    let alices = store.owner_key(&alice);
    let t0 = start();
    let (bobs_session, plain) = (fresh_key("bobs"), fresh_key("plain"));
    begin_as(store, &policy, &bobs_session, t0, Some(&bob), None).await;
    begin_as(store, &policy, &plain, t0, None, None).await;
    // Forged entries in alice's index: bob's session and a session of nobody.
    for key in [&bobs_session, &plain] {
        let _: () = query(
            &mut connection,
            redis::cmd("ZADD")
                .arg(&alices)
                .arg(t0.as_unix_millis())
                .arg(key.to_hex()),
        )
        .await;
    }
    let _: () = query(
        &mut connection,
        redis::cmd("PEXPIRE").arg(&alices).arg(60_000),
    )
    .await;
    assert!(listed(store, &alice, at(t0, 1)).await.is_empty());
    assert_eq!(
        within(store.end_sessions_of(&alice, None, at(t0, 1), &policy))
            .await
            .unwrap(),
        0
    );
    for key in [&bobs_session, &plain] {
        assert!(is_active(&check(store, key, at(t0, 2)).await));
        assert_eq!(score(&mut connection, &alices, key).await, None, "pruned");
    }
    // Signing in as alice with bob's active id does not make it hers.
    assert_eq!(
        begin_as(store, &policy, &bobs_session, at(t0, 3), Some(&alice), None).await,
        Begin::AlreadyActive
    );
    assert_eq!(score(&mut connection, &alices, &bobs_session).await, None);
    assert!(listed(store, &alice, at(t0, 4)).await.is_empty());
    assert_eq!(
        within(store.owner_of(&bobs_session, at(t0, 4), &policy))
            .await
            .unwrap(),
        Some(bob.clone())
    );
    assert_eq!(listed(store, &bob, at(t0, 4)).await, vec![bobs_session]);
}

async fn a_sign_in_stopped_half_way_is_kept_only_for_the_grace<C: ConnectionLike + Send>(
    store: &RedisStore,
    mut connection: C,
) {
    let policy = limited(OnLimit::Refuse);
    let owner = fresh_owner("half-way");
    let index = store.owner_key(&owner);
    let t0 = start();
    let a = fresh_key("half-a");
    assert_eq!(
        begin_as(store, &policy, &a, t0, Some(&owner), None).await,
        Begin::Began
    );
    // A sign-in that added itself to the index and stopped before its session began.
    let stopped = fresh_key("half-stopped");
    let _: () = query(
        &mut connection,
        redis::cmd("ZADD")
            .arg(&index)
            .arg(at(t0, 1).as_unix_millis())
            .arg(stopped.to_hex()),
    )
    .await;
    // Never shown as a session, and not dropped while it may still be under way.
    assert_eq!(listed(store, &owner, at(t0, 2)).await, vec![a]);
    assert!(score(&mut connection, &index, &stopped).await.is_some());
    assert_eq!(
        check(store, &stopped, at(t0, 2)).await,
        Check::Expired(ExpiryReason::Unknown)
    );
    assert_eq!(
        within(store.end_sessions_of(&owner, Some(&a), at(t0, 2), &policy))
            .await
            .unwrap(),
        0
    );
    // A refusing limit counts it, as it may be a sign-in about to begin: the limit of two is
    // reached, and the refused session leaves nothing.
    let b = fresh_key("half-b");
    assert_eq!(
        begin_as(store, &policy, &b, at(t0, 3), Some(&owner), None).await,
        Begin::LimitReached
    );
    assert_eq!(
        check(store, &b, at(t0, 3)).await,
        Check::Expired(ExpiryReason::Unknown)
    );
    assert_eq!(score(&mut connection, &index, &b).await, None);
    // Past the grace it is a sign-in that failed: dropped, and no longer counted.
    check(store, &a, at(t0, 40)).await;
    let late = at(t0, 1).saturating_add(GRACE);
    assert_eq!(listed(store, &owner, late).await, vec![a]);
    assert_eq!(score(&mut connection, &index, &stopped).await, None);
    assert_eq!(
        begin_as(store, &policy, &b, late, Some(&owner), None).await,
        Begin::Began
    );
    assert_eq!(listed(store, &owner, late).await, vec![a, b]);
}

async fn longer_timeouts_keep_the_index_longer_first<C: ConnectionLike + Clone + Send>(
    store: &RedisStore,
    mut connection: C,
) {
    let policy = policy();
    let owner = fresh_owner("retime");
    let index = store.owner_key(&owner);
    let t0 = start();
    let key = fresh_key("retime");
    let session = store.redis_key(&key);
    begin_as(store, &policy, &key, t0, Some(&owner), None).await;
    assert_eq!(
        field(&mut connection, &session, "x").await,
        Some(at(t0, 300).as_unix_millis().to_string()),
        "the layer's absolute deadline caps it"
    );
    // "Remember me" for an hour: the index is kept that long (from the session's start).
    let hour = Duration::from_secs(3600);
    let long = SessionTimeouts::new(Duration::from_secs(600)).with_absolute(hour);
    assert!(within(store.set_timeouts(&key, t0, &policy, long))
        .await
        .unwrap());
    assert_ttl(
        pttl(&mut connection, &index).await,
        hour + GRACE,
        "index kept for the longer session",
    );
    assert_eq!(
        field(&mut connection, &session, "x").await,
        Some(at(t0, 3600).as_unix_millis().to_string())
    );
    let Check::Active(record) = check(store, &key, at(t0, 500)).await else {
        panic!("active past the layer's absolute timeout, within its own");
    };
    assert_eq!(record.timeouts, Some(long));
    // Shorter ones change nothing of the index.
    let short =
        SessionTimeouts::new(Duration::from_secs(600)).with_absolute(Duration::from_secs(1000));
    assert!(
        within(store.set_timeouts(&key, at(t0, 501), &policy, short))
            .await
            .unwrap()
    );
    assert_ttl(
        pttl(&mut connection, &index).await,
        hour + GRACE,
        "index after shorter timeouts",
    );
    // None at all: the index is kept a lease beyond the idle deadline...
    let key = fresh_key("retime-endless");
    let session = store.redis_key(&key);
    begin_as(store, &policy, &key, at(t0, 502), Some(&owner), None).await;
    let endless = SessionTimeouts::new(Duration::from_secs(600));
    assert!(
        within(store.set_timeouts(&key, at(t0, 503), &policy, endless))
            .await
            .unwrap()
    );
    let leased = |from: u64| at(t0, from + 600).saturating_add(LEASE);
    assert_ttl(
        pttl(&mut connection, &index).await,
        Duration::from_secs(600) + LEASE + GRACE,
        "index of a session without an absolute timeout",
    );
    assert_eq!(
        field(&mut connection, &session, "x").await,
        Some(leased(503).as_unix_millis().to_string())
    );
    // ... and the requests that keep it alive renew that lease, in the background, once less
    // than half of it is left: the index's TTL first, then the session's `x`.
    for now in (1000..=2800).step_by(450) {
        assert!(is_active(&check(store, &key, at(t0, now)).await), "{now} s");
    }
    let want = Some(leased(2800).as_unix_millis().to_string());
    let mut inspect = connection.clone();
    eventually(
        || {
            let (mut connection, session, want) = (inspect.clone(), session.clone(), want.clone());
            async move { field(&mut connection, &session, "x").await == want }
        },
        "the lease renewed",
    )
    .await;
    assert_ttl(
        pttl(&mut inspect, &index).await,
        Duration::from_secs(600) + LEASE + GRACE,
        "index after the renewal",
    );
    assert!(is_active(&check(store, &key, at(t0, 3300)).await));
    assert_eq!(listed(store, &owner, at(t0, 3300)).await, vec![key]);
}

async fn an_owned_session_never_outlives_its_index<C: ConnectionLike + Clone + Send>(
    store: &RedisStore,
    mut connection: C,
) {
    // Begun under a 300 s absolute timeout, then judged by instances whose layer allows an
    // hour (a new release): its requests have its owner's index kept longer, and it lives on.
    let grown = *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .absolute_timeout(Duration::from_secs(3600))
        .tombstone_retention(RETENTION)
        .build()
        .expect("valid policy")
        .policy();
    let owner = fresh_owner("grown");
    let t0 = start();
    let (owned, stuck, plain) = (
        fresh_key("grown-owned"),
        fresh_key("grown-stuck"),
        fresh_key("grown-plain"),
    );
    begin_as(store, &policy(), &owned, t0, Some(&owner), None).await;
    begin_as(store, &policy(), &plain, t0, None, None).await;
    let refresh = |key: SessionKey, now: u64| async move {
        within(store.check(&key, at(t0, now), &grown, Touch::Refresh))
            .await
            .unwrap()
    };
    assert!(is_active(&refresh(owned, 50).await));
    assert!(is_active(&refresh(plain, 50).await));
    let session = store.redis_key(&owned);
    let want = Some(at(t0, 3600).as_unix_millis().to_string());
    eventually(
        || {
            let (mut connection, session, want) =
                (connection.clone(), session.clone(), want.clone());
            async move { field(&mut connection, &session, "x").await == want }
        },
        "the lease renewed to the new absolute deadline",
    )
    .await;
    for now in [100, 150, 200, 250, 300, 350] {
        for key in [owned, plain] {
            let got = refresh(key, now).await;
            assert!(is_active(&got), "{now} s: {got:?}");
        }
    }
    // When the index cannot be kept longer (here: it is not an index), the session ends where
    // its index would: it never outlives it.
    let other = fresh_owner("grown-stuck");
    begin_as(store, &policy(), &stuck, t0, Some(&other), None).await;
    let index = store.owner_key(&other);
    let _: () = query(&mut connection, redis::cmd("DEL").arg(&index)).await;
    let _: () = query(
        &mut connection,
        redis::cmd("SET")
            .arg(&index)
            .arg("not an index")
            .arg("PX")
            .arg(60_000),
    )
    .await;
    for now in [50, 100, 150, 200, 250] {
        assert!(is_active(&refresh(stuck, now).await), "{now} s");
    }
    assert_eq!(
        refresh(stuck, 300).await,
        Check::Retired(ExpiryReason::Absolute)
    );
}

/// Polls `call` once (enough to start it) and drops it, as hyper drops a response future when
/// the client goes away.
fn start_and_drop<F: std::future::Future>(call: F) {
    let mut call = Box::pin(call);
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        call.as_mut().poll(&mut context).is_pending(),
        "a store call answered without a round trip"
    );
}

/// Waits (at most [`WAIT`], polling) until `done` says so.
async fn eventually<F: std::future::Future<Output = bool>>(
    mut done: impl FnMut() -> F,
    what: &str,
) {
    let deadline = Instant::now() + WAIT;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn a_sign_in_or_end_all_whose_caller_goes_away_completes(store: &RedisStore) {
    let policy = limited(OnLimit::EndOldest);
    let owner = fresh_owner("goes-away");
    let t0 = start();
    let keys: Vec<SessionKey> = (0..3)
        .map(|i| fresh_key(&format!("goes-away-{i}")))
        .collect();
    for (i, key) in keys[..2].iter().enumerate() {
        begin_as(store, &policy, key, at(t0, i as u64), Some(&owner), None).await;
    }
    // The third sign-in's caller goes away: it still begins, and still supersedes the oldest.
    start_and_drop(store.begin(
        &keys[2],
        at(t0, 2),
        &policy,
        NewSession {
            owner: Some(&owner),
            timeouts: None,
        },
    ));
    eventually(
        || async {
            check(store, &keys[0], at(t0, 3)).await == Check::Expired(ExpiryReason::Superseded)
        },
        "the oldest session superseded",
    )
    .await;
    assert_eq!(listed(store, &owner, at(t0, 3)).await, keys[1..].to_vec());
    // "Sign out everywhere" whose caller goes away still ends every session.
    start_and_drop(store.end_sessions_of(&owner, None, at(t0, 4), &policy));
    eventually(
        || async { listed(store, &owner, at(t0, 5)).await.is_empty() },
        "every session ended",
    )
    .await;
    for key in &keys[1..] {
        assert_eq!(
            check(store, key, at(t0, 5)).await,
            Check::Expired(ExpiryReason::Ended)
        );
    }
}

/// Sign-ins of one owner at once, spread over the instances, each `now` a millisecond apart
/// (so the instances' clocks disagree on which came first in real time).
async fn sign_in_at_once(
    stores: &[RedisStore],
    policy: &Policy,
    owner: &str,
    keys: &[SessionKey],
    t0: Timestamp,
) -> Vec<Begin> {
    let mut tasks = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let (store, policy, owner, key) = (
            stores[i % stores.len()].clone(),
            *policy,
            owner.to_owned(),
            *key,
        );
        // Later `now` first, so real order and clock order disagree.
        let now = t0.saturating_add(Duration::from_millis((keys.len() - i) as u64));
        tasks.push(tokio::spawn(async move {
            let new = NewSession {
                owner: Some(&owner),
                timeouts: None,
            };
            within(store.begin(&key, now, &policy, new))
                .await
                .expect("begin")
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("sign-in task"));
    }
    answers
}

async fn concurrent_sign_ins_beyond_the_limit_keep_the_newest(stores: &[RedisStore]) {
    let policy = limited(OnLimit::EndOldest);
    for round in 0..10 {
        let owner = fresh_owner("supersede-race");
        let t0 = start();
        let keys: Vec<SessionKey> = (0..8)
            .map(|i| fresh_key(&format!("supersede-race-{i}")))
            .collect();
        let answers = sign_in_at_once(stores, &policy, &owner, &keys, t0).await;
        assert!(
            answers.iter().all(|answer| *answer == Begin::Began),
            "round {round}: {answers:?}"
        );
        // The newest two by creation time (keys[0] and keys[1]: they took the latest `now`)
        // remain, whichever instance ran which sign-in in which order.
        let after = at(t0, 1);
        let mut remaining = listed(&stores[0], &owner, after).await;
        remaining.sort();
        let mut newest = vec![keys[0], keys[1]];
        newest.sort();
        assert_eq!(remaining, newest, "round {round}");
        for key in &keys[2..] {
            assert_eq!(
                check(&stores[1 % stores.len()], key, after).await,
                Check::Expired(ExpiryReason::Superseded),
                "round {round}"
            );
        }
    }
}

async fn concurrent_sign_ins_beyond_a_refusing_limit_admit_exactly_the_limit(
    stores: &[RedisStore],
) {
    let policy = limited(OnLimit::Refuse);
    for round in 0..10 {
        let owner = fresh_owner("refuse-race");
        let t0 = start();
        let keys: Vec<SessionKey> = (0..8)
            .map(|i| fresh_key(&format!("refuse-race-{i}")))
            .collect();
        let answers = sign_in_at_once(stores, &policy, &owner, &keys, t0).await;
        let began: HashSet<SessionKey> = keys
            .iter()
            .zip(&answers)
            .filter(|(_, answer)| **answer == Begin::Began)
            .map(|(key, _)| *key)
            .collect();
        assert!(
            answers
                .iter()
                .all(|answer| matches!(answer, Begin::Began | Begin::LimitReached)),
            "round {round}: {answers:?}"
        );
        // The first two to reach the index, exactly: each later one sees both ahead of it
        // (active, or under way), and no session of the owner ends meanwhile.
        assert_eq!(began.len(), 2, "round {round}: {answers:?}");
        let after = at(t0, 1);
        let remaining: HashSet<SessionKey> = listed(&stores[0], &owner, after)
            .await
            .into_iter()
            .collect();
        assert_eq!(remaining, began, "round {round}");
        for key in &keys {
            let got = check(&stores[1 % stores.len()], key, after).await;
            if began.contains(key) {
                assert!(is_active(&got), "round {round}: {got:?}");
            } else {
                assert_eq!(got, Check::Expired(ExpiryReason::Unknown), "round {round}");
            }
        }
    }
}

/// One check of the race: when it was sent and answered, and what it found.
struct Seen {
    key: SessionKey,
    sent: Instant,
    received: Instant,
    active: bool,
}

/// "Sign out everywhere" racing with requests and sign-ins of the same owner on several
/// instances (`stores`), for `rounds` rounds. Afterwards every session active before the
/// end-all began is ended, no request sent after a request found one of them over finds it
/// active, a sign-in again with its id is refused, and the owner's list is exactly the
/// racing sign-ins that are still active.
pub async fn end_all_races_with_requests_and_sign_ins(stores: &[RedisStore], rounds: usize) {
    let policy = policy();
    // Rounds where requests found the old sessions both active and ended, and where racing
    // sign-ins were both ended and kept: the end-all really ran among them.
    let (mut mixed_requests, mut mixed_sign_ins) = (0, 0);
    for round in 0..rounds {
        let owner = fresh_owner("end-all-race");
        let t0 = start();
        let before: Vec<SessionKey> = (0..6)
            .map(|i| fresh_key(&format!("end-all-race-{i}")))
            .collect();
        for (i, key) in before.iter().enumerate() {
            let store = &stores[i % stores.len()];
            assert_eq!(
                begin_as(store, &policy, key, t0, Some(&owner), None).await,
                Begin::Began
            );
        }
        let during: Vec<SessionKey> = (0..4)
            .map(|i| fresh_key(&format!("end-all-race-new-{i}")))
            .collect();
        let now = at(t0, 1);

        let end_all = {
            let (store, owner) = (stores[0].clone(), owner.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let ended = within(store.end_sessions_of(&owner, None, now, &policy))
                    .await
                    .expect("end_sessions_of");
                (started, ended)
            })
        };
        let mut requests = Vec::new();
        for (n, store) in stores.iter().enumerate() {
            for key in before.iter().copied() {
                let store = store.clone();
                requests.push(tokio::spawn(async move {
                    let mut seen = Vec::new();
                    for _ in 0..4 {
                        let sent = Instant::now();
                        let got = within(store.check(&key, now, &policy, Touch::Refresh))
                            .await
                            .expect("check");
                        seen.push(Seen {
                            key,
                            sent,
                            received: Instant::now(),
                            active: is_active(&got),
                        });
                        tokio::task::yield_now().await;
                    }
                    seen
                }));
            }
            // Sign-ins racing with it: new ids, and the old ids again (a revival attempt).
            let mut sign_ins = vec![during[n % during.len()], during[(n + 2) % during.len()]];
            sign_ins.push(before[n % before.len()]);
            for key in sign_ins {
                let (store, owner) = (store.clone(), owner.clone());
                requests.push(tokio::spawn(async move {
                    let new = NewSession {
                        owner: Some(&owner),
                        timeouts: None,
                    };
                    let got = within(store.begin(&key, now, &policy, new))
                        .await
                        .expect("begin");
                    assert!(
                        !matches!(got, Begin::LimitReached),
                        "no limit is set: {got:?}"
                    );
                    Vec::new()
                }));
            }
        }
        let (end_started, ended) = end_all.await.expect("end-all task");
        let mut seen = Vec::new();
        for task in requests {
            seen.extend(task.await.expect("request task"));
        }

        let after = at(t0, 2);
        for key in &before {
            assert_eq!(
                check(&stores[1 % stores.len()], key, after).await,
                Check::Expired(ExpiryReason::Ended),
                "round {round}: a session active before the end-all is ended"
            );
            assert_eq!(
                begin_as(&stores[0], &policy, key, after, Some(&owner), None).await,
                Begin::Refused(ExpiryReason::Ended),
                "round {round}: and stays so"
            );
            // Per session, once one request found it over, none sent later found it active.
            let first_over = seen
                .iter()
                .filter(|s| s.key == *key && !s.active)
                .map(|s| s.received)
                .min();
            if let Some(first_over) = first_over {
                assert!(
                    !seen
                        .iter()
                        .any(|s| s.key == *key && s.active && s.sent > first_over),
                    "round {round}: a request sent after a 440 found the session active"
                );
                assert!(
                    first_over > end_started,
                    "round {round}: over before the end-all"
                );
            }
        }
        assert!(
            ended >= before.len() as u64,
            "round {round}: ended {ended} of {}",
            before.len()
        );
        // The new sign-ins: each either ended by the end-all or still active, and then listed.
        let mut active_new = Vec::new();
        for key in &during {
            match check(&stores[0], key, after).await {
                Check::Active(_) => active_new.push(*key),
                Check::Expired(ExpiryReason::Ended) => {}
                other => panic!("round {round}: a racing sign-in is {other:?}"),
            }
        }
        let mut remaining = listed(&stores[0], &owner, after).await;
        remaining.sort();
        active_new.sort();
        assert_eq!(remaining, active_new, "round {round}");
        if seen.iter().any(|s| s.active) && seen.iter().any(|s| !s.active) {
            mixed_requests += 1;
        }
        if !active_new.is_empty() && active_new.len() < during.len() {
            mixed_sign_ins += 1;
        }
        assert_eq!(
            ended,
            before.len() as u64 + (during.len() - active_new.len()) as u64,
            "round {round}: every ended session counted once"
        );
    }
    eprintln!(
        "end-all race: requests saw sessions active and ended in {mixed_requests} of {rounds} \
         rounds, racing sign-ins were partly ended in {mixed_sign_ins}"
    );
}
