//! Announcement cases beyond the announce suite, for a store that keeps one record per key
//! through its whole life and marks it announced (the SQL stores' rows): an acknowledgement
//! leaves an active session alone, a forgotten end is never handed out, a key begun again
//! after it was forgotten is announced again, a claim hands out at most its limit, oldest end
//! first, and an expiry the sweep retired answers as one a check retired. Each case runs a day
//! of clock time after the one before, so the ends of one are long forgotten in the next.

use std::time::Duration;

use tower_session_timeout::store::{
    Begin, Check, NewSession, Policy, SessionEnd, SessionKey, SessionStore, Touch,
};
use tower_session_timeout::{ExpiryReason, SessionTimeoutLayer, Timestamp};

use super::store_suite::{fresh_key, start, IDLE};

const LEASE: Duration = Duration::from_secs(30);
const DAY: u64 = 24 * 60 * 60;

/// Idle 60 s; ends remembered 10 minutes.
fn policy() -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .tombstone_retention(Duration::from_secs(600))
        .build()
        .expect("valid policy")
        .policy()
}

fn at(start: Timestamp, seconds: u64) -> Timestamp {
    start.saturating_add(Duration::from_secs(seconds))
}

async fn claim<St: SessionStore>(store: &St, now: Timestamp, limit: usize) -> Vec<SessionEnd> {
    store
        .claim_ends(now, &policy(), limit, LEASE)
        .await
        .expect("claim_ends")
}

async fn ack<St: SessionStore>(store: &St, now: Timestamp, keys: &[SessionKey]) {
    store
        .ack_ends(keys, now, &policy())
        .await
        .expect("ack_ends");
}

async fn begin<St: SessionStore>(store: &St, key: &SessionKey, now: Timestamp) -> Begin {
    store
        .begin(key, now, &policy(), NewSession::plain())
        .await
        .expect("begin")
}

/// Runs every case on `store`, which holds no other sessions.
pub async fn run<St: SessionStore>(store: &St) {
    let t0 = start();
    an_acknowledgement_leaves_an_active_session_alone(store, t0).await;
    a_forgotten_end_is_never_handed_out(store, at(t0, DAY)).await;
    a_key_begun_again_is_announced_again(store, at(t0, 2 * DAY)).await;
    a_claim_hands_out_its_limit_oldest_end_first(store, at(t0, 3 * DAY)).await;
    an_expiry_the_sweep_retired_answers_as_retired(store, at(t0, 4 * DAY)).await;
}

async fn an_acknowledgement_leaves_an_active_session_alone<St: SessionStore>(
    store: &St,
    t0: Timestamp,
) {
    let key = fresh_key("acked-alive");
    assert_eq!(begin(store, &key, t0).await, Begin::Began);
    ack(store, at(t0, 1), &[key]).await;
    assert_eq!(
        claim(store, at(t0, 61), 64).await,
        vec![SessionEnd {
            key,
            owner: None,
            reason: ExpiryReason::Idle,
            at: at(t0, 60),
        }],
        "its end is still announced"
    );
}

async fn a_forgotten_end_is_never_handed_out<St: SessionStore>(store: &St, t0: Timestamp) {
    let (ended, expired) = (fresh_key("forgotten-ended"), fresh_key("forgotten-idle"));
    begin(store, &ended, t0).await;
    begin(store, &expired, t0).await;
    assert!(store.end(&ended, at(t0, 1), &policy()).await.expect("end"));
    // Ended at 1 s and gone idle at 60 s, each remembered 600 s: past both horizons.
    assert_eq!(claim(store, at(t0, 660), 64).await, Vec::new());
    assert_eq!(claim(store, at(t0, 700), 64).await, Vec::new());
    assert_eq!(begin(store, &ended, at(t0, 700)).await, Begin::Began);
}

async fn a_key_begun_again_is_announced_again<St: SessionStore>(store: &St, t0: Timestamp) {
    let key = fresh_key("again");
    begin(store, &key, t0).await;
    assert!(store.end(&key, at(t0, 1), &policy()).await.expect("end"));
    let first = claim(store, at(t0, 2), 64).await;
    assert_eq!(first.len(), 1, "{first:?}");
    ack(store, at(t0, 2), &[key]).await;
    // Forgotten at 601 s; the id may then begin a new session, whose end is news again.
    assert_eq!(begin(store, &key, at(t0, 700)).await, Begin::Began);
    assert!(store.end(&key, at(t0, 701), &policy()).await.expect("end"));
    assert_eq!(
        claim(store, at(t0, 702), 64).await,
        vec![SessionEnd {
            key,
            owner: None,
            reason: ExpiryReason::Ended,
            at: at(t0, 701),
        }]
    );
}

async fn a_claim_hands_out_its_limit_oldest_end_first<St: SessionStore>(store: &St, t0: Timestamp) {
    let keys: Vec<SessionKey> = (0..5).map(|i| fresh_key(&format!("order{i}"))).collect();
    for key in &keys {
        begin(store, key, t0).await;
    }
    // Ended in the reverse of the order they began.
    for (i, key) in keys.iter().rev().enumerate() {
        assert!(store
            .end(key, at(t0, 10 + i as u64), &policy())
            .await
            .expect("end"));
    }
    let now = at(t0, 20);
    let first = claim(store, now, 2).await;
    assert_eq!(
        first.iter().map(|end| end.key).collect::<Vec<_>>(),
        vec![keys[4], keys[3]],
        "the two oldest ends"
    );
    let rest = claim(store, now, 64).await;
    assert_eq!(
        rest.iter().map(|end| end.key).collect::<Vec<_>>(),
        vec![keys[2], keys[1], keys[0]]
    );
    assert_eq!(
        claim(store, now, 64).await,
        Vec::new(),
        "all held by leases"
    );
}

async fn an_expiry_the_sweep_retired_answers_as_retired<St: SessionStore>(
    store: &St,
    t0: Timestamp,
) {
    let key = fresh_key("swept");
    begin(store, &key, t0).await;
    let claimed = claim(store, at(t0, 61), 64).await;
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    // Retired by the claim: a late request is told why, and the id cannot begin again.
    assert_eq!(
        store
            .check(&key, at(t0, 62), &policy(), Touch::Refresh)
            .await
            .expect("check"),
        Check::Expired(ExpiryReason::Idle)
    );
    assert_eq!(
        begin(store, &key, at(t0, 62)).await,
        Begin::Refused(ExpiryReason::Idle)
    );
}
