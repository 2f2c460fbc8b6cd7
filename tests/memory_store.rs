//! `MemoryStore`: the shared store suite, and what only memory can show.

mod common;

use std::time::Duration;

use common::store_suite::{self, fresh_key, policy, start, IDLE, RETENTION};
use tower_session_timeout::store::{Begin, Check, Policy, SessionStore, Touch};
use tower_session_timeout::{ExpiryReason, MemoryStore, Timestamp};

/// A whole second, so the wheel's one-second buckets fall where the cases expect.
/// Begins `count` sessions without owner or own timeouts, ids `{name}0`, `{name}1`, ..., at `at`.
async fn begin_many(store: &MemoryStore, name: &str, count: usize, at: Timestamp, policy: &Policy) {
    for i in 0..count {
        store
            .begin(
                &fresh_key(&format!("{name}{i}")),
                at,
                policy,
                tower_session_timeout::store::NewSession::plain(),
            )
            .await
            .unwrap();
    }
}

/// Begins and at once ends `count` sessions, ids `{name}0`, `{name}1`, ..., at `at`.
async fn begin_and_end_many(
    store: &MemoryStore,
    name: &str,
    count: usize,
    at: Timestamp,
    policy: &Policy,
) {
    for i in 0..count {
        let key = fresh_key(&format!("{name}{i}"));
        store
            .begin(
                &key,
                at,
                policy,
                tower_session_timeout::store::NewSession::plain(),
            )
            .await
            .unwrap();
        assert!(store.end(&key, at, policy).await.unwrap());
    }
}

fn t0() -> Timestamp {
    Timestamp::from_unix_millis(1_767_225_600_000)
}

#[tokio::test]
async fn passes_the_store_suite() {
    store_suite::run(MemoryStore::new()).await;
}

#[tokio::test]
async fn passes_the_store_suite_with_one_shard() {
    store_suite::run(MemoryStore::with_shards(1)).await;
}

#[tokio::test]
async fn passes_the_announce_suite() {
    let store = MemoryStore::new();
    common::announce_suite::run(store.clone(), store).await;
}

/// Ends are listed for announcement from the start, whether or not anyone claims yet, and
/// the list is compacted as it grows, without losing one.
#[tokio::test]
async fn ends_before_the_first_claim_are_announced() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = t0();
    begin_and_end_many(&store, "early", 1000, t0, &policy).await;
    let claimed = store
        .claim_ends(
            t0.saturating_add(Duration::from_secs(1)),
            &policy,
            5000,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1000);
    assert!(claimed
        .iter()
        .all(|end| end.reason == ExpiryReason::Ended && end.at == t0));
}

#[tokio::test]
async fn counts_its_active_sessions() {
    let store = MemoryStore::with_shards(2);
    let policy = policy();
    let t0 = t0();
    let keys: Vec<_> = (0..3).map(|i| fresh_key(&format!("count{i}"))).collect();
    for key in &keys {
        store
            .begin(
                key,
                t0,
                &policy,
                tower_session_timeout::store::NewSession::plain(),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.active_sessions(), Some(3));
    store.end(&keys[0], t0, &policy).await.unwrap();
    assert_eq!(store.active_sessions(), Some(2));
    // Expired but not yet swept still counts; a purge retires them.
    store.purge(t0.saturating_add(IDLE)).await.unwrap();
    assert_eq!(store.active_sessions(), Some(0));
}

#[tokio::test]
async fn passes_the_owner_suite() {
    common::owner_suite::run(MemoryStore::new()).await;
}

#[tokio::test]
async fn passes_the_owner_suite_with_one_shard() {
    common::owner_suite::run(MemoryStore::with_shards(1)).await;
}

#[tokio::test]
async fn purge_removes_only_what_expired() {
    let store = MemoryStore::with_shards(4);
    let policy = policy();
    let t0 = start();
    let old: Vec<_> = (0..100).map(|i| fresh_key(&format!("old{i}"))).collect();
    for key in &old {
        store
            .begin(
                key,
                t0,
                &policy,
                tower_session_timeout::store::NewSession::plain(),
            )
            .await
            .unwrap();
    }
    let t1 = t0.saturating_add(IDLE);
    let young: Vec<_> = (0..50).map(|i| fresh_key(&format!("young{i}"))).collect();
    for key in &young {
        store
            .begin(
                key,
                t1,
                &policy,
                tower_session_timeout::store::NewSession::plain(),
            )
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 150);

    // The old sessions' deadline plus the tombstone retention has passed (the wheel turns
    // in whole seconds, hence the extra one); the young ones' deadline has not.
    let purge_at = t0.saturating_add(IDLE + RETENTION + Duration::from_secs(1));
    let removed = store.purge(purge_at).await.unwrap();
    assert_eq!(removed, 100);
    assert_eq!(store.len(), 50);
    for key in &young {
        let check = store
            .check(key, purge_at, &policy, Touch::Passive)
            .await
            .unwrap();
        assert!(matches!(check, Check::Active(_)), "{check:?}");
    }
    for key in &old {
        let check = store
            .check(key, purge_at, &policy, Touch::Passive)
            .await
            .unwrap();
        assert_eq!(check, Check::Expired(ExpiryReason::Unknown));
    }
}

#[tokio::test]
async fn purge_keeps_sessions_whose_deadline_moved() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = start();
    let key = fresh_key("moved");
    store
        .begin(
            &key,
            t0,
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .unwrap();
    let t1 = t0.saturating_add(IDLE - Duration::from_secs(1));
    store
        .check(&key, t1, &policy, Touch::Refresh)
        .await
        .unwrap();
    // Past the first deadline (the one the record was first listed at), not the second.
    let t2 = t0.saturating_add(IDLE + Duration::from_secs(5));
    assert_eq!(store.purge(t2).await.unwrap(), 0);
    let check = store
        .check(&key, t2, &policy, Touch::Passive)
        .await
        .unwrap();
    assert!(matches!(check, Check::Active(_)), "{check:?}");
}

#[tokio::test]
async fn a_sweep_reports_the_same_reason_a_check_would() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = start();
    let key = fresh_key("swept");
    store
        .begin(
            &key,
            t0,
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .unwrap();
    let after = t0.saturating_add(IDLE + Duration::from_secs(1));
    // The purge retires the record before any request asks about it.
    assert_eq!(store.purge(after).await.unwrap(), 0);
    let check = store
        .check(&key, after, &policy, Touch::Refresh)
        .await
        .unwrap();
    assert_eq!(
        check,
        Check::Expired(ExpiryReason::Idle),
        "retired by the purge, not by this check"
    );
}

#[tokio::test]
async fn requests_sweep_due_records_as_they_go() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = start();
    begin_many(&store, "swept", 20, t0, &policy).await;
    let later = t0.saturating_add(IDLE + RETENTION + Duration::from_secs(1));
    let probe = fresh_key("probe");
    // Each call sweeps a few due records; a handful of calls clears the shard.
    for _ in 0..10 {
        store
            .check(&probe, later, &policy, Touch::Refresh)
            .await
            .unwrap();
    }
    assert_eq!(store.len(), 0);
}

#[tokio::test]
async fn is_empty_says_whether_any_record_is_kept() {
    // Other tests assert "the store is left empty" with is_empty: it must be able to say no.
    let store = MemoryStore::with_shards(2);
    assert!(store.is_empty());
    store
        .begin(
            &fresh_key("kept"),
            t0(),
            &policy(),
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .unwrap();
    assert!(!store.is_empty());
    assert_eq!(store.len(), 1);
    let gone = t0().saturating_add(IDLE + RETENTION);
    assert_eq!(store.purge(gone).await.unwrap(), 1);
    assert!(store.is_empty());
}

#[tokio::test]
async fn purge_goes_on_past_one_chunk() {
    // A purge takes a shard's lock for 256 records at a time; one shard holding far more
    // must still be purged whole.
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    begin_many(&store, "many", 1_000, t0(), &policy).await;
    let gone = t0().saturating_add(IDLE + RETENTION);
    assert_eq!(store.purge(gone).await.unwrap(), 1_000);
    assert!(store.is_empty(), "{} left", store.len());
}

#[tokio::test]
async fn an_ended_session_is_purged_when_its_retention_ends() {
    // Ending moves the record's clean-up from its idle deadline (60 s) to the end of its
    // tombstone's retention (31 s); a purge at 32 s must find it.
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let key = fresh_key("ended");
    store
        .begin(
            &key,
            t0(),
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .unwrap();
    let ended_at = t0().saturating_add(Duration::from_secs(1));
    assert!(store.end(&key, ended_at, &policy).await.unwrap());
    let after_retention = ended_at.saturating_add(RETENTION + Duration::from_secs(1));
    assert!(after_retention < t0().saturating_add(IDLE));
    assert_eq!(store.purge(after_retention).await.unwrap(), 1);
    assert!(store.is_empty());
}

#[tokio::test]
async fn an_end_at_the_horizon_forgets_a_record_the_sweep_has_not_reached() {
    // The store suite's case, with the shard's wheel busy: each call sweeps only a few due
    // records, so the end alone must forget the unasked record, not leave a due tombstone
    // that a clock stepping back would find.
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let earlier = Timestamp::from_unix_millis(t0().as_unix_millis() - 10_000);
    begin_many(&store, "busy", 20, earlier, &policy).await;
    let key = fresh_key("unasked");
    store
        .begin(
            &key,
            t0(),
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .unwrap();
    let horizon = t0().saturating_add(IDLE + RETENTION);
    assert!(!store.end(&key, horizon, &policy).await.unwrap());
    let back = Timestamp::from_unix_millis(horizon.as_unix_millis() - 1);
    assert_eq!(
        store
            .begin(
                &key,
                back,
                &policy,
                tower_session_timeout::store::NewSession::plain()
            )
            .await
            .unwrap(),
        Begin::Began
    );
}

/// `Debug` names the shard count (rounded up to a power of two) and the records held, and
/// nothing of the sessions.
#[tokio::test]
async fn debug_shows_the_shards_and_the_records() {
    let store = MemoryStore::with_shards(3);
    assert_eq!(
        format!("{store:?}"),
        "MemoryStore { shards: 4, records: 0 }"
    );
    store
        .begin(
            &fresh_key("debug"),
            t0(),
            &policy(),
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .unwrap();
    assert_eq!(
        format!("{store:?}"),
        "MemoryStore { shards: 4, records: 1 }"
    );
}

/// A claim first sweeps the shard to its end, chunk after chunk, so sessions that expired
/// silently (no request came back) are all claimable at once, more than one chunk of them.
#[tokio::test]
async fn a_claim_retires_every_silent_expiry_first() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = t0();
    begin_many(&store, "silent", 300, t0, &policy).await;
    let claimed = store
        .claim_ends(
            t0.saturating_add(IDLE),
            &policy,
            5000,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 300);
    assert!(claimed.iter().all(|end| end.reason == ExpiryReason::Idle));
}

/// Shorter timeouts of a session's own move its listing in the wheel forward, so a sweep
/// finds it at its new deadline: its end is claimable then, not only at the old one.
#[tokio::test]
async fn shorter_own_timeouts_are_swept_at_the_new_deadline() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = t0();
    let key = fresh_key("shortened");
    store
        .begin(
            &key,
            t0,
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .unwrap();
    let short = tower_session_timeout::SessionTimeouts::new(Duration::from_secs(10));
    assert!(store.set_timeouts(&key, t0, &policy, short).await.unwrap());
    let deadline = t0.saturating_add(Duration::from_secs(10));
    let claimed = store
        .claim_ends(deadline, &policy, 10, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].key, key);
    assert_eq!(claimed[0].reason, ExpiryReason::Idle);
    assert_eq!(claimed[0].at, deadline);
}

/// The list of ends to announce is compacted when it holds many more entries than there are
/// tombstones (ends nobody claimed, since forgotten): the compaction keeps every end still
/// to be announced.
#[tokio::test]
async fn compacting_the_ends_keeps_those_still_to_announce() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = t0();
    let plain = tower_session_timeout::store::NewSession::plain;
    begin_and_end_many(&store, "forgotten", 100, t0, &policy).await;
    let t1 = t0.saturating_add(RETENTION + Duration::from_secs(1));
    assert_eq!(store.purge(t1).await.unwrap(), 100);
    // This end makes the list (101 entries, one tombstone) long enough to compact.
    let live = fresh_key("live");
    store.begin(&live, t1, &policy, plain()).await.unwrap();
    assert!(store.end(&live, t1, &policy).await.unwrap());
    let claimed = store
        .claim_ends(t1, &policy, 1000, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].key, live);
    assert_eq!(claimed[0].reason, ExpiryReason::Ended);
}

/// A claim hands out at most `limit` ends; the rest wait, unleased, for the next claim.
#[tokio::test]
async fn a_claim_hands_out_at_most_its_limit() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = t0();
    begin_and_end_many(&store, "limited", 3, t0, &policy).await;
    let lease = Duration::from_secs(30);
    let first = store.claim_ends(t0, &policy, 2, lease).await.unwrap();
    assert_eq!(first.len(), 2);
    let second = store.claim_ends(t0, &policy, 2, lease).await.unwrap();
    assert_eq!(second.len(), 1);
    assert!(first.iter().all(|end| end.key != second[0].key));
}

/// An end is claimable until its tombstone's horizon, not at it: at the horizon the record
/// is forgotten, even before the sweep has reached it (its listing is in the next second).
#[tokio::test]
async fn an_end_is_not_claimed_at_its_horizon() {
    let ended_at = t0().saturating_add(Duration::from_millis(500));
    let horizon = ended_at.saturating_add(RETENTION);
    let policy = policy();
    let lease = Duration::from_secs(30);
    for (claim_at, expected) in [
        (horizon, 0),
        (Timestamp::from_unix_millis(horizon.as_unix_millis() - 1), 1),
    ] {
        let store = MemoryStore::with_shards(1);
        let key = fresh_key("horizon");
        store
            .begin(
                &key,
                t0(),
                &policy,
                tower_session_timeout::store::NewSession::plain(),
            )
            .await
            .unwrap();
        assert!(store.end(&key, ended_at, &policy).await.unwrap());
        let claimed = store
            .claim_ends(claim_at, &policy, 10, lease)
            .await
            .unwrap();
        assert_eq!(claimed.len(), expected, "claimed at {claim_at:?}");
    }
}

/// A session refreshed since it was listed is listed again at its new deadline when the
/// sweep reaches its old one, so it is still retired, and its end claimable, when it expires.
#[tokio::test]
async fn a_refreshed_session_is_swept_at_its_new_deadline() {
    let store = MemoryStore::with_shards(1);
    let policy = policy();
    let t0 = t0();
    let key = fresh_key("refreshed");
    store
        .begin(
            &key,
            t0,
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .unwrap();
    let refreshed = t0.saturating_add(Duration::from_secs(30));
    let check = store
        .check(&key, refreshed, &policy, Touch::Refresh)
        .await
        .unwrap();
    assert!(matches!(check, Check::Active(_)));
    let lease = Duration::from_secs(30);
    // The sweep reaches the listing at the old deadline: nothing has ended yet.
    let at_old = t0.saturating_add(IDLE);
    assert!(store
        .claim_ends(at_old, &policy, 10, lease)
        .await
        .unwrap()
        .is_empty());
    let deadline = refreshed.saturating_add(IDLE);
    let claimed = store
        .claim_ends(deadline, &policy, 10, lease)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].key, key);
    assert_eq!(claimed[0].at, deadline);
}

/// A session whose own idle timeout is no longer than the touch interval is written on every
/// refresh: skipping a write could let it expire while in use.
#[tokio::test]
async fn own_idle_timeout_at_the_touch_interval_writes_every_refresh() {
    let touch = Duration::from_secs(10);
    let policy = *tower_session_timeout::SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .touch_interval(touch)
        .tombstone_retention(RETENTION)
        .build()
        .unwrap()
        .policy();
    let store = MemoryStore::with_shards(1);
    let t0 = t0();
    let key = fresh_key("short-idle");
    let new = tower_session_timeout::store::NewSession {
        owner: None,
        timeouts: Some(tower_session_timeout::SessionTimeouts::new(touch)),
    };
    store.begin(&key, t0, &policy, new).await.unwrap();
    let refreshed = t0.saturating_add(Duration::from_secs(5));
    let check = store
        .check(&key, refreshed, &policy, Touch::Refresh)
        .await
        .unwrap();
    assert!(matches!(check, Check::Active(record) if record.last_seen == refreshed));
    // Past the idle deadline counted from the start, not from the refresh.
    let later = t0.saturating_add(Duration::from_secs(12));
    let check = store
        .check(&key, later, &policy, Touch::Passive)
        .await
        .unwrap();
    assert!(matches!(check, Check::Active(_)), "{check:?}");
}
