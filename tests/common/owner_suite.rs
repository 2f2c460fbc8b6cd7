//! What every store that keeps owners and per-session timeouts must show (issue #13), run by
//! each store's test file beside `store_suite`.
//!
//! Times are passed to the store, so no case sleeps; each case uses owners and ids of its
//! own, so stores on a shared server can run it beside other tests.

use std::time::Duration;

use tower_session_timeout::store::{
    Begin, Check, NewSession, OwnedSession, Policy, SessionKey, SessionStore, SessionTimeouts,
    Touch,
};
use tower_session_timeout::{ExpiryReason, OnLimit, SessionTimeoutLayer, Timestamp};

use super::store_suite::{fresh_key, policy, start, IDLE, RETENTION};

/// The suite's policy with at most two sessions per owner.
pub fn limited(on_limit: OnLimit) -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .absolute_timeout(super::store_suite::ABSOLUTE)
        .tombstone_retention(RETENTION)
        .max_sessions_per_owner(2, on_limit)
        .build()
        .expect("valid policy")
        .policy()
}

/// An owner no other case or run uses.
pub fn fresh_owner(case: &str) -> String {
    let nonce: u64 = rand::random();
    format!("{case}-{nonce:016x}@example.com")
}

fn at(start: Timestamp, seconds: u64) -> Timestamp {
    start.saturating_add(Duration::from_secs(seconds))
}

async fn begin_as<St: SessionStore>(
    store: &St,
    policy: &Policy,
    key: &SessionKey,
    now: Timestamp,
    owner: Option<&str>,
    timeouts: Option<SessionTimeouts>,
) -> Begin {
    store
        .begin(key, now, policy, NewSession { owner, timeouts })
        .await
        .expect("begin")
}

async fn check<St: SessionStore>(store: &St, key: &SessionKey, now: Timestamp) -> Check {
    store
        .check(key, now, &policy(), Touch::Refresh)
        .await
        .expect("check")
}

async fn listed<St: SessionStore>(store: &St, owner: &str, now: Timestamp) -> Vec<SessionKey> {
    sessions(store, owner, now)
        .await
        .iter()
        .map(|session| session.key)
        .collect()
}

async fn sessions<St: SessionStore>(store: &St, owner: &str, now: Timestamp) -> Vec<OwnedSession> {
    store
        .sessions_of(owner, now, &policy())
        .await
        .expect("sessions_of")
}

fn reason(check: Check) -> Option<ExpiryReason> {
    match check {
        Check::Active(_) => None,
        Check::Expired(reason) | Check::Retired(reason) => Some(reason),
    }
}

/// Runs every case against `store`.
pub async fn run<St: SessionStore>(store: St) {
    own_timeouts_replace_the_layers(&store).await;
    own_timeouts_come_back_with_the_record(&store).await;
    set_timeouts_shortens_and_can_retire(&store).await;
    set_timeouts_needs_an_active_session(&store).await;
    an_owner_lists_its_active_sessions_oldest_first(&store).await;
    end_sessions_of_ends_all_but_the_kept_one(&store).await;
    other_owners_and_plain_sessions_are_untouched(&store).await;
    the_limit_ends_the_oldest_as_superseded(&store).await;
    the_limit_can_refuse_and_write_nothing(&store).await;
    an_owned_id_is_never_revived(&store).await;
    a_second_begin_is_listed_once(&store).await;
    the_owner_is_told_while_the_session_is_active(&store).await;
}

async fn own_timeouts_replace_the_layers<St: SessionStore>(store: &St) {
    let policy = policy();
    let t0 = start();
    // Longer than the layer's 60 s idle ("remember me") ...
    let remembered = fresh_key("remembered");
    let long =
        SessionTimeouts::new(Duration::from_secs(600)).with_absolute(Duration::from_secs(900));
    begin_as(store, &policy, &remembered, t0, None, Some(long)).await;
    assert!(
        matches!(
            check(store, &remembered, at(t0, 500)).await,
            Check::Active(_)
        ),
        "500 s idle is within the session's own 600 s"
    );
    assert_eq!(
        reason(check(store, &remembered, at(t0, 900)).await),
        Some(ExpiryReason::Absolute),
        "its own absolute timeout ends it"
    );
    // ... and shorter (an admin session).
    let admin = fresh_key("admin");
    let short = SessionTimeouts::new(Duration::from_secs(5));
    begin_as(store, &policy, &admin, t0, None, Some(short)).await;
    assert!(matches!(
        check(store, &admin, at(t0, 4)).await,
        Check::Active(_)
    ));
    assert_eq!(
        reason(check(store, &admin, at(t0, 9)).await),
        Some(ExpiryReason::Idle),
        "5 s without a request ends it, though the layer allows 60 s"
    );
    // A session without its own keeps the layer's.
    let plain = fresh_key("plain");
    begin_as(store, &policy, &plain, t0, None, None).await;
    assert!(matches!(
        check(store, &plain, at(t0, 59)).await,
        Check::Active(_)
    ));
}

async fn own_timeouts_come_back_with_the_record<St: SessionStore>(store: &St) {
    let policy = policy();
    let t0 = start();
    let key = fresh_key("record");
    let own = SessionTimeouts::new(Duration::from_secs(120));
    begin_as(store, &policy, &key, t0, None, Some(own)).await;
    let Check::Active(record) = check(store, &key, at(t0, 1)).await else {
        panic!("active");
    };
    assert_eq!(record.timeouts, Some(own));
    assert_eq!(policy.idle_deadline(&record), at(t0, 121));
    assert_eq!(policy.absolute_deadline(&record), None);
    let plain = fresh_key("record-plain");
    begin_as(store, &policy, &plain, t0, None, None).await;
    let Check::Active(record) = check(store, &plain, at(t0, 1)).await else {
        panic!("active");
    };
    assert_eq!(record.timeouts, None);
}

async fn set_timeouts_shortens_and_can_retire<St: SessionStore>(store: &St) {
    let policy = policy();
    let t0 = start();
    let key = fresh_key("shorten");
    begin_as(store, &policy, &key, t0, None, None).await;
    let short = SessionTimeouts::new(Duration::from_secs(10));
    assert!(store
        .set_timeouts(&key, at(t0, 5), &policy, short)
        .await
        .expect("set_timeouts"));
    // Still active at 9 s (refreshed), expired 10 s after that, not after the layer's 60 s.
    let Check::Active(record) = check(store, &key, at(t0, 9)).await else {
        panic!("active within its new timeout");
    };
    assert_eq!(record.timeouts, Some(short));
    assert_eq!(
        reason(check(store, &key, at(t0, 19)).await),
        Some(ExpiryReason::Idle)
    );

    // New timeouts already past: retired at once, never active again.
    let key = fresh_key("retire-now");
    begin_as(store, &policy, &key, t0, None, None).await;
    let tiny = SessionTimeouts::new(Duration::from_secs(1));
    assert!(store
        .set_timeouts(&key, at(t0, 3), &policy, tiny)
        .await
        .expect("set_timeouts"));
    assert_eq!(
        reason(check(store, &key, at(t0, 3)).await),
        Some(ExpiryReason::Idle)
    );
    // Longer timeouts afterwards cannot bring it back.
    let long = SessionTimeouts::new(Duration::from_secs(600));
    assert!(!store
        .set_timeouts(&key, at(t0, 4), &policy, long)
        .await
        .expect("set_timeouts"));
    assert_eq!(
        reason(check(store, &key, at(t0, 5)).await),
        Some(ExpiryReason::Idle)
    );
}

async fn set_timeouts_needs_an_active_session<St: SessionStore>(store: &St) {
    let policy = policy();
    let t0 = start();
    let own = SessionTimeouts::new(Duration::from_secs(600));
    let unknown = fresh_key("retime-unknown");
    assert!(!store
        .set_timeouts(&unknown, t0, &policy, own)
        .await
        .expect("set_timeouts"));
    assert_eq!(
        reason(check(store, &unknown, t0).await),
        Some(ExpiryReason::Unknown),
        "nothing was written for an unknown key"
    );
    let ended = fresh_key("retime-ended");
    begin_as(store, &policy, &ended, t0, None, None).await;
    assert!(store.end(&ended, at(t0, 1), &policy).await.expect("end"));
    assert!(!store
        .set_timeouts(&ended, at(t0, 2), &policy, own)
        .await
        .expect("set_timeouts"));
    assert_eq!(
        reason(check(store, &ended, at(t0, 3)).await),
        Some(ExpiryReason::Ended)
    );
}

async fn an_owner_lists_its_active_sessions_oldest_first<St: SessionStore>(store: &St) {
    let policy = policy();
    let owner = fresh_owner("list");
    let t0 = start();
    let keys: Vec<SessionKey> = (0..3).map(|i| fresh_key(&format!("list{i}"))).collect();
    for (i, key) in keys.iter().enumerate() {
        let began = begin_as(store, &policy, key, at(t0, i as u64), Some(&owner), None).await;
        assert_eq!(began, Begin::Began);
    }
    let listed_now = sessions(store, &owner, at(t0, 3)).await;
    assert_eq!(
        listed_now.iter().map(|s| s.key).collect::<Vec<_>>(),
        keys,
        "oldest first"
    );
    assert_eq!(listed_now[1].record.created_at, at(t0, 1));
    // An ended session leaves the list.
    assert!(store.end(&keys[1], at(t0, 4), &policy).await.expect("end"));
    assert_eq!(
        listed(store, &owner, at(t0, 5)).await,
        vec![keys[0], keys[2]]
    );
    // An expired one too, asked or not: keep the newest alive, let the oldest go idle.
    check(store, &keys[2], at(t0, 50)).await;
    assert_eq!(listed(store, &owner, at(t0, 61)).await, vec![keys[2]]);
    assert!(listed(store, &fresh_owner("nobody"), t0).await.is_empty());
}

async fn end_sessions_of_ends_all_but_the_kept_one<St: SessionStore>(store: &St) {
    let policy = policy();
    let owner = fresh_owner("end-all");
    let t0 = start();
    let keys: Vec<SessionKey> = (0..3).map(|i| fresh_key(&format!("endall{i}"))).collect();
    for key in &keys {
        begin_as(store, &policy, key, t0, Some(&owner), None).await;
    }
    let ended = store
        .end_sessions_of(&owner, Some(&keys[1]), at(t0, 1), &policy)
        .await
        .expect("end_sessions_of");
    assert_eq!(ended, 2);
    for (i, key) in keys.iter().enumerate() {
        let got = reason(check(store, key, at(t0, 2)).await);
        let want = if i == 1 {
            None
        } else {
            Some(ExpiryReason::Ended)
        };
        assert_eq!(got, want, "session {i}");
    }
    assert_eq!(listed(store, &owner, at(t0, 2)).await, vec![keys[1]]);
    let ended = store
        .end_sessions_of(&owner, None, at(t0, 3), &policy)
        .await
        .expect("end_sessions_of");
    assert_eq!(ended, 1);
    assert_eq!(
        reason(check(store, &keys[1], at(t0, 4)).await),
        Some(ExpiryReason::Ended)
    );
    assert!(listed(store, &owner, at(t0, 4)).await.is_empty());
    // Ended ids stay ended, whoever signs in with them again.
    assert_eq!(
        begin_as(store, &policy, &keys[0], at(t0, 5), Some(&owner), None).await,
        Begin::Refused(ExpiryReason::Ended)
    );
}

async fn other_owners_and_plain_sessions_are_untouched<St: SessionStore>(store: &St) {
    let policy = policy();
    let (alice, bob) = (fresh_owner("alice"), fresh_owner("bob"));
    let t0 = start();
    let (a, b, plain) = (fresh_key("alice"), fresh_key("bob"), fresh_key("nobody"));
    begin_as(store, &policy, &a, t0, Some(&alice), None).await;
    begin_as(store, &policy, &b, t0, Some(&bob), None).await;
    begin_as(store, &policy, &plain, t0, None, None).await;
    let ended = store
        .end_sessions_of(&alice, None, at(t0, 1), &policy)
        .await
        .expect("end_sessions_of");
    assert_eq!(ended, 1);
    assert!(matches!(
        check(store, &b, at(t0, 2)).await,
        Check::Active(_)
    ));
    assert!(matches!(
        check(store, &plain, at(t0, 2)).await,
        Check::Active(_)
    ));
    assert_eq!(listed(store, &bob, at(t0, 2)).await, vec![b]);
}

async fn the_limit_ends_the_oldest_as_superseded<St: SessionStore>(store: &St) {
    let policy = limited(OnLimit::EndOldest);
    let owner = fresh_owner("supersede");
    let t0 = start();
    let keys: Vec<SessionKey> = (0..4).map(|i| fresh_key(&format!("sup{i}"))).collect();
    for (i, key) in keys.iter().enumerate() {
        let began = begin_as(store, &policy, key, at(t0, i as u64), Some(&owner), None).await;
        assert_eq!(began, Begin::Began, "sign-in {i} is never refused");
    }
    for (i, key) in keys.iter().enumerate() {
        let want = if i < 2 {
            Some(ExpiryReason::Superseded)
        } else {
            None
        };
        assert_eq!(
            reason(check(store, key, at(t0, 5)).await),
            want,
            "session {i}"
        );
    }
    assert_eq!(listed(store, &owner, at(t0, 5)).await, keys[2..].to_vec());
}

async fn the_limit_can_refuse_and_write_nothing<St: SessionStore>(store: &St) {
    let policy = limited(OnLimit::Refuse);
    let owner = fresh_owner("refuse");
    let t0 = start();
    let keys: Vec<SessionKey> = (0..3).map(|i| fresh_key(&format!("ref{i}"))).collect();
    assert_eq!(
        begin_as(store, &policy, &keys[0], t0, Some(&owner), None).await,
        Begin::Began
    );
    assert_eq!(
        begin_as(store, &policy, &keys[1], at(t0, 1), Some(&owner), None).await,
        Begin::Began
    );
    assert_eq!(
        begin_as(store, &policy, &keys[2], at(t0, 2), Some(&owner), None).await,
        Begin::LimitReached
    );
    assert_eq!(
        reason(check(store, &keys[2], at(t0, 2)).await),
        Some(ExpiryReason::Unknown),
        "a refused sign-in writes no session"
    );
    assert_eq!(listed(store, &owner, at(t0, 2)).await, keys[..2].to_vec());
    // Once one signs out there is room again; the refused id was never begun, so it can be.
    assert!(store.end(&keys[0], at(t0, 3), &policy).await.expect("end"));
    assert_eq!(
        begin_as(store, &policy, &keys[2], at(t0, 4), Some(&owner), None).await,
        Begin::Began
    );
    // And when one goes idle.
    check(store, &keys[2], at(t0, 40)).await;
    let late = fresh_key("ref-late");
    assert_eq!(
        begin_as(store, &policy, &late, at(t0, 61), Some(&owner), None).await,
        Begin::Began,
        "keys[1] went idle at 61 s, so it no longer counts"
    );
}

async fn an_owned_id_is_never_revived<St: SessionStore>(store: &St) {
    let policy = policy();
    let owner = fresh_owner("revive");
    let t0 = start();
    let key = fresh_key("revive");
    begin_as(store, &policy, &key, t0, Some(&owner), None).await;
    assert_eq!(
        reason(check(store, &key, at(t0, 60)).await),
        Some(ExpiryReason::Idle)
    );
    assert_eq!(
        begin_as(store, &policy, &key, at(t0, 61), Some(&owner), None).await,
        Begin::Refused(ExpiryReason::Idle)
    );
    assert!(listed(store, &owner, at(t0, 61)).await.is_empty());
}

async fn a_second_begin_is_listed_once<St: SessionStore>(store: &St) {
    let policy = limited(OnLimit::EndOldest);
    let owner = fresh_owner("twice");
    let t0 = start();
    let (a, b) = (fresh_key("twice-a"), fresh_key("twice-b"));
    begin_as(store, &policy, &a, t0, Some(&owner), None).await;
    begin_as(store, &policy, &b, at(t0, 1), Some(&owner), None).await;
    // The same id again (a cookie re-sent at sign-in) must not count twice and end `a`.
    assert_eq!(
        begin_as(store, &policy, &b, at(t0, 2), Some(&owner), None).await,
        Begin::AlreadyActive
    );
    assert_eq!(listed(store, &owner, at(t0, 3)).await, vec![a, b]);
}

async fn the_owner_is_told_while_the_session_is_active<St: SessionStore>(store: &St) {
    let policy = policy();
    let owner = fresh_owner("owner-of");
    let t0 = start();
    let (owned, plain, unknown) = (fresh_key("owned"), fresh_key("unowned"), fresh_key("none"));
    begin_as(store, &policy, &owned, t0, Some(&owner), None).await;
    begin_as(store, &policy, &plain, t0, None, None).await;
    let owner_of = |key: SessionKey, now: Timestamp| async move {
        store.owner_of(&key, now, &policy).await.expect("owner_of")
    };
    assert_eq!(owner_of(owned, at(t0, 1)).await, Some(owner.clone()));
    assert_eq!(owner_of(plain, at(t0, 1)).await, None);
    assert_eq!(owner_of(unknown, at(t0, 1)).await, None);
    // Past its deadline the session has no owner to tell, asked or not.
    assert_eq!(owner_of(owned, at(t0, 60)).await, None);
    assert!(
        matches!(check(store, &owned, at(t0, 59)).await, Check::Active(_)),
        "asking wrote nothing"
    );
    assert!(store.end(&owned, at(t0, 61), &policy).await.expect("end"));
    assert_eq!(owner_of(owned, at(t0, 62)).await, None);
}
