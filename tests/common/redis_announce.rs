//! `RedisStore`'s due index as Redis holds it (issue #14), run by `redis_store.rs` on one
//! Redis and by `redis_cluster.rs` on a cluster (where a session, its listing and the other
//! shards sit in different slots): what a begin lists and an acknowledgement drops, a refreshed
//! session relisted at its deadline, the crashes the order of steps allows (a listing whose
//! begin never ran, an end whose listing was lost, a claimer that dies), a sign-out racing a
//! sweep, and the bound on listings nobody sweeps.
//!
//! `inspector` is a plain connection (one node, or a cluster connection) for looking at and
//! forging what the store writes. Each case runs under a prefix of its own, so a claim hands
//! out only that case's ends. Times are passed to the store; nothing sleeps.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionLike;
use tower_session_timeout::store::{
    Check, NewSession, Policy, SessionKey, SessionStore, SessionTimeouts, Touch,
};
use tower_session_timeout::{
    ExpiryReason, ManualClock, RedisStore, SessionEnd, SessionTimeoutLayer, Timestamp,
    ANNOUNCE_LEASE,
};

use super::store_suite::{fresh_key, start, IDLE};

/// Bounds every wait on the network, so a broken Redis fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

const LEASE: Duration = ANNOUNCE_LEASE;

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("answered in time")
}

fn at(start: Timestamp, seconds: u64) -> Timestamp {
    start.saturating_add(Duration::from_secs(seconds))
}

fn ms(time: Timestamp) -> f64 {
    time.as_unix_millis() as f64
}

/// Idle 60 s, tombstones kept 10 minutes.
fn policy() -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .tombstone_retention(Duration::from_secs(600))
        .build()
        .expect("valid policy")
        .policy()
}

async fn query<C: ConnectionLike + Send, T: redis::FromRedisValue>(
    connection: &mut C,
    command: &redis::Cmd,
) -> T {
    within(command.query_async(connection))
        .await
        .unwrap_or_else(|error| panic!("{command:?}: {error}"))
}

/// The session's score in its shard of the due index, if it is listed.
async fn listing<C: ConnectionLike + Send>(
    connection: &mut C,
    store: &RedisStore,
    key: &SessionKey,
) -> Option<f64> {
    query(
        connection,
        redis::cmd("ZSCORE")
            .arg(store.due_key(key))
            .arg(key.to_hex()),
    )
    .await
}

/// Two instances (connections of their own) under a prefix of the case's own.
fn instances(stores: &[RedisStore], case: &str) -> (RedisStore, RedisStore) {
    let prefix = format!("tst-announce:{case}:{:016x}:", rand::random::<u64>());
    (
        stores[0].clone().with_prefix(prefix.clone()),
        stores[1].clone().with_prefix(prefix),
    )
}

async fn begin(store: &RedisStore, key: &SessionKey, now: Timestamp) {
    within(store.begin(key, now, &policy(), NewSession::plain()))
        .await
        .expect("begin");
}

async fn claim(store: &RedisStore, now: Timestamp) -> Vec<SessionEnd> {
    within(store.claim_ends(now, &policy(), 256, LEASE))
        .await
        .expect("claim_ends")
}

async fn ack(store: &RedisStore, now: Timestamp, ends: &[SessionEnd]) {
    let keys: Vec<SessionKey> = ends.iter().map(|end| end.key).collect();
    within(store.ack_ends(&keys, now, &policy()))
        .await
        .expect("ack_ends");
}

fn keys(ends: &[SessionEnd]) -> Vec<SessionKey> {
    ends.iter().map(|end| end.key).collect()
}

/// Runs every case; `stores` are two or more separate connections (instances) to the same
/// Redis or cluster.
pub async fn run<C: ConnectionLike + Clone + Send>(stores: &[RedisStore], inspector: C) {
    a_begin_lists_the_session_and_an_acknowledgement_drops_it(stores, inspector.clone()).await;
    a_refreshed_session_is_relisted_at_its_deadline(stores, inspector.clone()).await;
    shorter_timeouts_are_announced_by_their_new_deadline(stores, inspector.clone()).await;
    a_listing_whose_begin_never_ran_is_dropped(stores, inspector.clone()).await;
    an_end_whose_listing_was_lost_is_announced_by_its_deadline(stores, inspector.clone()).await;
    a_sign_out_racing_a_sweep_keeps_its_listing(stores, inspector.clone()).await;
    sign_outs_racing_a_sweep_are_announced_by_the_next(stores).await;
    a_claim_holds_however_the_session_is_listed_again(stores, inspector.clone()).await;
    a_dead_instances_claim_is_announced_by_another_after_the_lease(stores).await;
    listings_nobody_sweeps_are_dropped(stores, inspector.clone()).await;
    a_listing_due_within_the_grace_outlives_other_listings(stores, inspector.clone()).await;
    a_relisting_far_ahead_keeps_its_shard_until_then(stores, inspector).await;
}

async fn a_begin_lists_the_session_and_an_acknowledgement_drops_it<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, _) = instances(stores, "listing");
    let t0 = start();
    let (expiring, ended, unknown) = (fresh_key("listed"), fresh_key("ended"), fresh_key("x"));
    begin(&store, &expiring, t0).await;
    begin(&store, &ended, t0).await;
    // Listed at their deadline, by key: the sweep looks then.
    assert_eq!(
        listing(&mut connection, &store, &expiring).await,
        Some(ms(at(t0, 60)))
    );
    let ttl: i64 = query(
        &mut connection,
        redis::cmd("PTTL").arg(store.due_key(&expiring)),
    )
    .await;
    assert!(
        ttl > 0,
        "a shard expires when nobody lists nor sweeps: {ttl}"
    );
    // Ended: listed as due now, so it is announced within a sweep, not at its deadline.
    assert!(within(store.end(&ended, at(t0, 1), &policy()))
        .await
        .expect("end"));
    assert_eq!(
        listing(&mut connection, &store, &ended).await,
        Some(ms(at(t0, 1)))
    );
    // An end of an unknown key writes nothing.
    assert!(!within(store.end(&unknown, at(t0, 1), &policy()))
        .await
        .expect("end"));
    assert_eq!(listing(&mut connection, &store, &unknown).await, None);

    let claimed = claim(&store, at(t0, 2)).await;
    assert_eq!(keys(&claimed), vec![ended]);
    // Claimed: listed until the lease ends, in case its claimer dies.
    assert_eq!(
        listing(&mut connection, &store, &ended).await,
        Some(ms(at(t0, 2).saturating_add(LEASE)))
    );
    ack(&store, at(t0, 2), &claimed).await;
    assert_eq!(listing(&mut connection, &store, &ended).await, None);
    let heard: Option<String> = query(
        &mut connection,
        redis::cmd("HGET").arg(store.redis_key(&ended)).arg("h"),
    )
    .await;
    assert_eq!(heard.as_deref(), Some("1"), "the tombstone says announced");

    // An acknowledgement of a key that is not an ended session leaves it and its listing.
    ack(
        &store,
        at(t0, 2),
        &[SessionEnd {
            key: expiring,
            owner: None,
            reason: ExpiryReason::Idle,
            at: at(t0, 2),
        }],
    )
    .await;
    assert_eq!(
        listing(&mut connection, &store, &expiring).await,
        Some(ms(at(t0, 60)))
    );
    let claimed = claim(&store, at(t0, 61)).await;
    assert_eq!(keys(&claimed), vec![expiring]);
    ack(&store, at(t0, 61), &claimed).await;
    assert_eq!(listing(&mut connection, &store, &expiring).await, None);
    assert!(claim(&store, at(t0, 62).saturating_add(LEASE))
        .await
        .is_empty());
}

async fn a_refreshed_session_is_relisted_at_its_deadline<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, _) = instances(stores, "relist");
    let t0 = start();
    let key = fresh_key("refreshed");
    begin(&store, &key, t0).await;
    // A refresh writes nothing to the index: the request stays one script.
    let check = within(store.check(&key, at(t0, 50), &policy(), Touch::Refresh))
        .await
        .expect("check");
    assert!(matches!(check, Check::Active(_)), "{check:?}");
    assert_eq!(
        listing(&mut connection, &store, &key).await,
        Some(ms(at(t0, 60)))
    );
    // The sweep finds it active and lists it again for its deadline.
    assert!(claim(&store, at(t0, 61)).await.is_empty());
    assert_eq!(
        listing(&mut connection, &store, &key).await,
        Some(ms(at(t0, 110)))
    );
    let claimed = claim(&store, at(t0, 111)).await;
    assert_eq!(
        claimed,
        vec![SessionEnd {
            key,
            owner: None,
            reason: ExpiryReason::Idle,
            at: at(t0, 110),
        }]
    );
    // Retired by the sweep, as a check would retire it.
    let check = within(store.check(&key, at(t0, 112), &policy(), Touch::Refresh))
        .await
        .expect("check");
    assert_eq!(check, Check::Expired(ExpiryReason::Idle));
}

async fn shorter_timeouts_are_announced_by_their_new_deadline<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, _) = instances(stores, "shorter");
    let t0 = start();
    let key = fresh_key("shorter");
    begin(&store, &key, t0).await;
    let shorter = SessionTimeouts::new(Duration::from_secs(30));
    assert!(
        within(store.set_timeouts(&key, at(t0, 5), &policy(), shorter))
            .await
            .expect("set_timeouts")
    );
    // Listed as due now: the sweep finds the new deadline, earlier than the listing was.
    assert_eq!(
        listing(&mut connection, &store, &key).await,
        Some(ms(at(t0, 5)))
    );
    assert!(claim(&store, at(t0, 6)).await.is_empty());
    assert_eq!(
        listing(&mut connection, &store, &key).await,
        Some(ms(at(t0, 30)))
    );
    let claimed = claim(&store, at(t0, 31)).await;
    assert_eq!(
        claimed,
        vec![SessionEnd {
            key,
            owner: None,
            reason: ExpiryReason::Idle,
            at: at(t0, 30),
        }]
    );
}

async fn a_listing_whose_begin_never_ran_is_dropped<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, _) = instances(stores, "half-begun");
    let t0 = start();
    let key = fresh_key("half-begun");
    // What a begin that crashed between its two steps leaves: a listing, no session.
    let _: i64 = query(
        &mut connection,
        redis::cmd("ZADD")
            .arg(store.due_key(&key))
            .arg(ms(at(t0, 60)))
            .arg(key.to_hex()),
    )
    .await;
    assert!(claim(&store, at(t0, 61)).await.is_empty());
    assert_eq!(
        listing(&mut connection, &store, &key).await,
        None,
        "dropped by the sweep that found nothing to announce"
    );
}

async fn an_end_whose_listing_was_lost_is_announced_by_its_deadline<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, _) = instances(stores, "end-unlisted");
    let t0 = start();
    let key = fresh_key("end-unlisted");
    begin(&store, &key, t0).await;
    assert!(within(store.end(&key, at(t0, 1), &policy()))
        .await
        .expect("end"));
    // What a crash right after the end's script leaves: the listing of its begin.
    let _: i64 = query(
        &mut connection,
        redis::cmd("ZADD")
            .arg(store.due_key(&key))
            .arg(ms(at(t0, 60)))
            .arg(key.to_hex()),
    )
    .await;
    assert!(claim(&store, at(t0, 2)).await.is_empty());
    let claimed = claim(&store, at(t0, 61)).await;
    assert_eq!(
        claimed,
        vec![SessionEnd {
            key,
            owner: None,
            reason: ExpiryReason::Ended,
            at: at(t0, 1),
        }],
        "late, but announced, with when it ended"
    );
}

async fn a_sign_out_racing_a_sweep_keeps_its_listing<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, other) = instances(stores, "race");
    let t0 = start();
    let key = fresh_key("race");
    begin(&store, &key, t0).await;
    // A sweep at t0 + 1 took the listing (moved to its lease's end) and found the session
    // active; before it settles, another instance signs it out.
    let taken = at(t0, 1).saturating_add(LEASE);
    let _: i64 = query(
        &mut connection,
        redis::cmd("ZADD")
            .arg(store.due_key(&key))
            .arg(ms(taken))
            .arg(key.to_hex()),
    )
    .await;
    assert!(within(other.end(&key, at(t0, 2), &policy()))
        .await
        .expect("end"));
    assert_eq!(
        listing(&mut connection, &store, &key).await,
        Some(ms(at(t0, 2))),
        "the end listed it earlier than the take, so the sweep's settling leaves it"
    );
    let claimed = claim(&store, at(t0, 3)).await;
    assert_eq!(keys(&claimed), vec![key], "announced within a sweep");
}

/// Sessions whose listings came due while they were still active (refreshed since) are
/// signed out on one instance while another sweeps them: each is relisted by its end, never
/// moved back to its deadline by the sweep that read it active, so the next sweep announces
/// every one. The sign-outs start a little later each round, to land in every step of the
/// sweep.
async fn sign_outs_racing_a_sweep_are_announced_by_the_next(stores: &[RedisStore]) {
    for round in 0..6u64 {
        let (sweeper, other) = instances(stores, "sign-out-race");
        let t0 = start();
        let sessions: Vec<SessionKey> =
            (0..100).map(|i| fresh_key(&format!("racing{i}"))).collect();
        for key in &sessions {
            begin(&other, key, t0).await;
            let check = within(other.check(key, at(t0, 50), &policy(), Touch::Refresh))
                .await
                .expect("check");
            assert!(matches!(check, Check::Active(_)), "{check:?}");
        }
        let ends = {
            let (other, sessions) = (other.clone(), sessions.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_micros(500 * round)).await;
                let ends: Vec<_> = sessions
                    .iter()
                    .map(|key| tokio::spawn(other.end(key, at(t0, 61), &policy())))
                    .collect();
                for ended in ends {
                    assert!(ended.await.expect("end task").expect("end"));
                }
            })
        };
        let swept = claim(&sweeper, at(t0, 61)).await;
        ends.await.expect("the sign-outs");
        let mut announced = keys(&swept);
        announced.extend(keys(&claim(&sweeper, at(t0, 62)).await));
        let missing = sessions
            .iter()
            .filter(|key| !announced.contains(key))
            .count();
        assert_eq!(
            (missing, announced.len()),
            (0, sessions.len()),
            "round {round}: ends not announced within a sweep, and ends announced"
        );
    }
}

/// A claim is kept on the session's key, not by where its listing is: a listing written again
/// meanwhile (here forged earlier) does not let a second sweep have the end before the lease
/// runs out.
async fn a_claim_holds_however_the_session_is_listed_again<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (one, two) = instances(stores, "claim-holds");
    let t0 = start();
    let key = fresh_key("claim-holds");
    begin(&one, &key, t0).await;
    assert!(within(one.end(&key, at(t0, 1), &policy()))
        .await
        .expect("end"));
    assert_eq!(keys(&claim(&one, at(t0, 2)).await), vec![key]);
    let _: i64 = query(
        &mut connection,
        redis::cmd("ZADD")
            .arg(one.due_key(&key))
            .arg(ms(at(t0, 2)))
            .arg(key.to_hex()),
    )
    .await;
    assert!(claim(&two, at(t0, 3)).await.is_empty(), "held by the lease");
    assert_eq!(
        listing(&mut connection, &one, &key).await,
        Some(ms(at(t0, 2).saturating_add(LEASE))),
        "listed again for when the lease runs out"
    );
    let again = claim(&two, at(t0, 2).saturating_add(LEASE)).await;
    assert_eq!(keys(&again), vec![key], "then claimed by the other");
}

/// Through the layer: an instance claims an end and dies before its hook runs; another
/// instance announces it once the lease has run out, and only then.
async fn a_dead_instances_claim_is_announced_by_another_after_the_lease(stores: &[RedisStore]) {
    let (dead, alive) = instances(stores, "dead-claimer");
    let clock = ManualClock::starting_at(std::time::SystemTime::now());
    let heard: Arc<Mutex<Vec<SessionEnd>>> = Arc::default();
    let log = Arc::clone(&heard);
    let layer = SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .tombstone_retention(Duration::from_secs(600))
        .clock(clock.clone())
        .store(alive)
        .on_session_end(move |end| {
            let log = Arc::clone(&log);
            async move { log.lock().unwrap().push(end) }
        })
        .build()
        .expect("valid config");
    let key = fresh_key("dead-claimer");
    let t0 = layer.now();
    begin(&dead, &key, t0).await;
    clock.advance(IDLE + Duration::from_secs(1));
    // The other instance's sweep claims it, then the instance dies.
    let claimed = within(dead.claim_ends(layer.now(), layer.policy(), 256, LEASE))
        .await
        .expect("claim_ends");
    assert_eq!(keys(&claimed), vec![key]);
    drop(dead);
    assert_eq!(within(layer.announce_now()).await.unwrap(), 0, "leased");
    clock.advance(LEASE - Duration::from_secs(1));
    assert_eq!(within(layer.announce_now()).await.unwrap(), 0, "still");
    clock.advance(Duration::from_secs(1));
    assert_eq!(within(layer.announce_now()).await.unwrap(), 1);
    clock.advance(LEASE);
    assert_eq!(within(layer.announce_now()).await.unwrap(), 0, "once");
    assert_eq!(
        *heard.lock().unwrap(),
        vec![SessionEnd {
            key,
            owner: None,
            reason: ExpiryReason::Idle,
            at: t0.saturating_add(IDLE),
        }]
    );
}

async fn listings_nobody_sweeps_are_dropped<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, _) = instances(stores, "unswept");
    let t0 = start();
    let old = fresh_key("unswept-old");
    // Another session listed in the same shard.
    let new = (0..)
        .map(|i| fresh_key(&format!("unswept-new{i}")))
        .find(|key| store.due_key(key) == store.due_key(&old))
        .expect("a key in the same shard");
    begin(&store, &old, t0).await;
    // No sweep ever runs. A begin more than the grace (here longer than the retention) after
    // the first session was due drops its listing: it is long forgotten anyway.
    let later = t0
        .saturating_add(IDLE + RedisStore::SWEEP_GRACE)
        .saturating_add(Duration::from_secs(1));
    begin(&store, &new, later).await;
    assert_eq!(listing(&mut connection, &store, &old).await, None);
    assert_eq!(
        listing(&mut connection, &store, &new).await,
        Some(ms(later.saturating_add(IDLE)))
    );
}

/// Within the grace, a listing past due waits for a sweep, however many sessions are listed
/// beside it meanwhile.
async fn a_listing_due_within_the_grace_outlives_other_listings<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, _) = instances(stores, "unswept-yet");
    let t0 = start();
    let old = fresh_key("unswept-yet-old");
    let new = (0..)
        .map(|i| fresh_key(&format!("unswept-yet-new{i}")))
        .find(|key| store.due_key(key) == store.due_key(&old))
        .expect("a key in the same shard");
    begin(&store, &old, t0).await;
    // A minute past its due time, another session is listed in its shard.
    let later = at(t0, IDLE.as_secs() + 60);
    begin(&store, &new, later).await;
    assert_eq!(
        listing(&mut connection, &store, &old).await,
        Some(ms(t0.saturating_add(IDLE)))
    );
    let ends = claim(&store, later).await;
    assert_eq!(keys(&ends), vec![old]);
    assert_eq!(ends[0].reason, ExpiryReason::Idle);
}

/// A sweep that lists a session again for a deadline hours away keeps the shard until that
/// deadline and the grace (it expires only if nobody lists nor sweeps for that long).
async fn a_relisting_far_ahead_keeps_its_shard_until_then<C: ConnectionLike + Send>(
    stores: &[RedisStore],
    mut connection: C,
) {
    let (store, _) = instances(stores, "far-ahead");
    let t0 = start();
    let key = fresh_key("far-ahead");
    begin(&store, &key, t0).await;
    let longer = SessionTimeouts::new(Duration::from_secs(5 * 60 * 60));
    assert!(
        within(store.set_timeouts(&key, at(t0, 30), &policy(), longer))
            .await
            .expect("set_timeouts")
    );
    assert!(claim(&store, at(t0, 31)).await.is_empty());
    let deadline = at(t0, 5 * 60 * 60);
    assert_eq!(
        listing(&mut connection, &store, &key).await,
        Some(ms(deadline))
    );
    let ttl: i64 = query(&mut connection, redis::cmd("PTTL").arg(store.due_key(&key))).await;
    let expected = (deadline.saturating_since(at(t0, 31)) + RedisStore::SWEEP_GRACE).as_millis();
    assert!(
        (expected - 60_000..=expected).contains(&(ttl as u128)),
        "shard ttl {ttl} ms, expected about {expected} ms"
    );
}
