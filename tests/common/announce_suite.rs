//! What every store that announces session ends must show (issue #14), at the store level:
//! silent expiries and ends are claimable once, a claim holds them for its lease, an
//! unacknowledged claim is handed out again after the lease (at least once across a crash),
//! and racing claimers never both get one end (exactly once). Times are passed in.

use std::collections::HashSet;
use std::time::Duration;

use tower_session_timeout::store::{NewSession, Policy, SessionEnd, SessionKey, SessionStore};
use tower_session_timeout::{ExpiryReason, OnLimit, SessionTimeoutLayer, Timestamp};

use super::owner_suite::fresh_owner;
use super::store_suite::{fresh_key, start, IDLE};

const LEASE: Duration = Duration::from_secs(30);

/// Idle 60 s; ended sessions remembered 10 minutes, well past a lease.
fn policy() -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .tombstone_retention(Duration::from_secs(600))
        .build()
        .expect("valid policy")
        .policy()
}

/// The same, with at most two sessions per owner.
fn limited(on_limit: OnLimit) -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .tombstone_retention(Duration::from_secs(600))
        .max_sessions_per_owner(2, on_limit)
        .build()
        .expect("valid policy")
        .policy()
}

fn at(start: Timestamp, seconds: u64) -> Timestamp {
    start.saturating_add(Duration::from_secs(seconds))
}

/// Claims everything due at `now` (several calls: a store may hand out a batch at a time),
/// keeping only this run's keys.
async fn claim<St: SessionStore>(
    store: &St,
    policy: &Policy,
    now: Timestamp,
    mine: &[SessionKey],
) -> Vec<SessionEnd> {
    let mut claimed = Vec::new();
    loop {
        let batch = store
            .claim_ends(now, policy, 64, LEASE)
            .await
            .expect("claim_ends");
        let done = batch.len() < 64;
        claimed.extend(batch.into_iter().filter(|end| mine.contains(&end.key)));
        if done {
            return claimed;
        }
    }
}

async fn ack<St: SessionStore>(store: &St, policy: &Policy, now: Timestamp, ends: &[SessionEnd]) {
    let keys: Vec<SessionKey> = ends.iter().map(|end| end.key).collect();
    store.ack_ends(&keys, now, policy).await.expect("ack_ends");
}

/// Runs every case against `store`; `other` is a second handle on the same store (another
/// instance: its own connections) for the race.
pub async fn run<St: SessionStore>(store: St, other: St) {
    a_silent_expiry_is_announced_once(&store).await;
    ends_carry_reason_owner_and_time(&store).await;
    an_unacknowledged_claim_comes_back_after_its_lease(&store).await;
    racing_claimers_never_share_an_end(&store, &other).await;
    nothing_is_announced_before_it_ends(&store).await;
}

async fn a_silent_expiry_is_announced_once<St: SessionStore>(store: &St) {
    let policy = policy();
    let t0 = start();
    let owner = fresh_owner("silent");
    let key = fresh_key("silent");
    let new = NewSession {
        owner: Some(&owner),
        timeouts: None,
    };
    store.begin(&key, t0, &policy, new).await.expect("begin");
    // No request ever comes back: the end is found by the sweep alone.
    let claimed = claim(store, &policy, at(t0, 61), &[key]).await;
    assert_eq!(
        claimed,
        vec![SessionEnd {
            key,
            owner: Some(owner),
            reason: ExpiryReason::Idle,
            at: at(t0, 60),
        }]
    );
    ack(store, &policy, at(t0, 61), &claimed).await;
    assert!(
        claim(store, &policy, at(t0, 62), &[key]).await.is_empty(),
        "announced once"
    );
    assert!(
        claim(store, &policy, at(t0, 62 + LEASE.as_secs()), &[key])
            .await
            .is_empty(),
        "an acknowledged end never comes back"
    );
}

async fn ends_carry_reason_owner_and_time<St: SessionStore>(store: &St) {
    let policy = limited(OnLimit::EndOldest);
    let t0 = start();
    let owner = fresh_owner("reasons");
    let keys: Vec<SessionKey> = (0..4).map(|i| fresh_key(&format!("reason{i}"))).collect();
    let new = NewSession {
        owner: Some(&owner),
        timeouts: None,
    };
    store
        .begin(&keys[0], t0, &policy, new)
        .await
        .expect("begin");
    store
        .begin(&keys[1], at(t0, 1), &policy, new)
        .await
        .expect("begin");
    // A third sign-in supersedes the first.
    store
        .begin(&keys[2], at(t0, 2), &policy, new)
        .await
        .expect("begin");
    // The second is signed out.
    assert!(store.end(&keys[1], at(t0, 3), &policy).await.expect("end"));
    // A plain session expires.
    let plain = NewSession::plain();
    store
        .begin(&keys[3], at(t0, 4), &policy, plain)
        .await
        .expect("begin");
    let claimed = claim(store, &policy, at(t0, 5), &keys).await;
    ack(store, &policy, at(t0, 5), &claimed).await;
    let ended = summary(claimed);
    assert_eq!(
        ended,
        vec![
            (
                keys[0],
                Some(owner.clone()),
                ExpiryReason::Superseded,
                at(t0, 2)
            ),
            (keys[1], Some(owner.clone()), ExpiryReason::Ended, at(t0, 3)),
        ]
    );
    // Deadlines at 62 s and 64 s; a store may find an expiry up to a second late.
    let claimed = claim(store, &policy, at(t0, 66), &keys).await;
    ack(store, &policy, at(t0, 66), &claimed).await;
    let expired = summary(claimed);
    assert_eq!(
        expired,
        vec![
            (keys[2], Some(owner.clone()), ExpiryReason::Idle, at(t0, 62)),
            (keys[3], None, ExpiryReason::Idle, at(t0, 64)),
        ]
    );
}

type Summary = (SessionKey, Option<String>, ExpiryReason, Timestamp);

/// The claimed ends by time.
fn summary(mut claimed: Vec<SessionEnd>) -> Vec<Summary> {
    claimed.sort_by_key(|end| end.at);
    claimed
        .into_iter()
        .map(|end| (end.key, end.owner, end.reason, end.at))
        .collect()
}

async fn an_unacknowledged_claim_comes_back_after_its_lease<St: SessionStore>(store: &St) {
    let policy = policy();
    let t0 = start();
    let key = fresh_key("crash");
    store
        .begin(&key, t0, &policy, NewSession::plain())
        .await
        .expect("begin");
    assert!(store.end(&key, at(t0, 1), &policy).await.expect("end"));
    // An instance claims the end and dies before announcing it.
    assert_eq!(claim(store, &policy, at(t0, 2), &[key]).await.len(), 1);
    assert!(
        claim(store, &policy, at(t0, 3), &[key]).await.is_empty(),
        "held by its claimer's lease"
    );
    let after_lease = at(t0, 2 + LEASE.as_secs());
    let again = claim(store, &policy, after_lease, &[key]).await;
    assert_eq!(again.len(), 1, "another instance announces it");
    assert_eq!(again[0].reason, ExpiryReason::Ended);
    ack(store, &policy, after_lease, &again).await;
    assert!(
        claim(store, &policy, at(t0, 3 + 2 * LEASE.as_secs()), &[key])
            .await
            .is_empty()
    );
}

async fn racing_claimers_never_share_an_end<St: SessionStore>(store: &St, other: &St) {
    let policy = policy();
    let t0 = start();
    let keys: Vec<SessionKey> = (0..40).map(|i| fresh_key(&format!("race{i}"))).collect();
    for key in &keys {
        store
            .begin(key, t0, &policy, NewSession::plain())
            .await
            .expect("begin");
    }
    let now = at(t0, IDLE.as_secs() + 1);
    let (one, two) = tokio::join!(
        claim(store, &policy, now, &keys),
        claim(other, &policy, now, &keys)
    );
    let mut seen = HashSet::new();
    for end in one.iter().chain(&two) {
        assert!(
            seen.insert(end.key),
            "{:?} was handed to both instances",
            end.key
        );
    }
    assert_eq!(seen.len(), keys.len(), "every end handed out once");
    ack(store, &policy, now, &one).await;
    ack(other, &policy, now, &two).await;
}

async fn nothing_is_announced_before_it_ends<St: SessionStore>(store: &St) {
    let policy = policy();
    let t0 = start();
    let key = fresh_key("alive");
    store
        .begin(&key, t0, &policy, NewSession::plain())
        .await
        .expect("begin");
    assert!(claim(store, &policy, at(t0, 59), &[key]).await.is_empty());
}
