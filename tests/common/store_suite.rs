//! The behaviour every `SessionStore` must show, run by each store's test file.
//!
//! Times are passed to the store, so no case sleeps; each run uses ids of its own, so stores
//! on a shared server (Redis, PostgreSQL) can run it beside other tests.

use std::time::Duration;

use tower_session_timeout::store::{Begin, Check, Policy, SessionKey, SessionStore, Touch};
use tower_session_timeout::{ExpiryReason, SessionTimeoutLayer, Timestamp};

pub const IDLE: Duration = Duration::from_secs(60);
pub const ABSOLUTE: Duration = Duration::from_secs(300);
pub const RETENTION: Duration = Duration::from_secs(30);
pub const TOUCH: Duration = Duration::from_secs(10);

/// The policy most cases use: idle 60 s, absolute 300 s, tombstones kept 30 s.
pub fn policy() -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .absolute_timeout(ABSOLUTE)
        .tombstone_retention(RETENTION)
        .build()
        .expect("valid policy")
        .policy()
}

fn policy_with_touch() -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .touch_interval(TOUCH)
        .tombstone_retention(RETENTION)
        .build()
        .expect("valid policy")
        .policy()
}

/// A time near the real clock, so stores that also set server-side TTLs keep records alive
/// for the whole run.
pub fn start() -> Timestamp {
    Timestamp::from_system_time(std::time::SystemTime::now())
}

fn at(start: Timestamp, offset: Duration) -> Timestamp {
    start.saturating_add(offset)
}

fn just_before(start: Timestamp, offset: Duration) -> Timestamp {
    Timestamp::from_unix_millis(at(start, offset).as_unix_millis() - 1)
}

/// A key no other test or run uses.
pub fn fresh_key(case: &str) -> SessionKey {
    let nonce: u128 = rand::random();
    SessionKey::from_id(&format!("{case}-{nonce:032x}"))
}

fn active(check: Check) -> tower_session_timeout::store::SessionRecord {
    match check {
        Check::Active(record) => record,
        other => panic!("expected an active session, got {other:?}"),
    }
}

/// Runs every case against `store`.
pub async fn run<St: SessionStore>(store: St) {
    unknown_ids_are_unknown_and_write_nothing(&store).await;
    begin_is_idempotent(&store).await;
    refresh_moves_last_seen_passive_does_not(&store).await;
    idle_deadline(&store).await;
    absolute_deadline(&store).await;
    end_leaves_a_tombstone(&store).await;
    expired_ids_are_never_revived(&store).await;
    tombstones_are_forgotten_after_retention(&store).await;
    an_end_at_the_horizon_forgets(&store).await;
    clock_backwards_never_makes_a_session_younger(&store).await;
    touch_interval_skips_young_writes(&store).await;
    concurrent_checks_at_the_deadline_agree(&store).await;
}

async fn check<St: SessionStore>(
    store: &St,
    key: &SessionKey,
    now: Timestamp,
    touch: Touch,
) -> Check {
    store
        .check(key, now, &policy(), touch)
        .await
        .expect("check")
}

async fn begin<St: SessionStore>(store: &St, key: &SessionKey, now: Timestamp) -> Begin {
    store
        .begin(
            key,
            now,
            &policy(),
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .expect("begin")
}

async fn unknown_ids_are_unknown_and_write_nothing<St: SessionStore>(store: &St) {
    let key = fresh_key("unknown");
    let t0 = start();
    for touch in [Touch::Refresh, Touch::Passive] {
        assert_eq!(
            check(store, &key, t0, touch).await,
            Check::Expired(ExpiryReason::Unknown)
        );
    }
    // Checking wrote no record, so the id can still begin as new.
    assert_eq!(begin(store, &key, t0).await, Begin::Began);
}

async fn begin_is_idempotent<St: SessionStore>(store: &St) {
    let key = fresh_key("begin");
    let t0 = start();
    assert_eq!(begin(store, &key, t0).await, Begin::Began);
    let later = at(t0, Duration::from_secs(5));
    assert_eq!(begin(store, &key, later).await, Begin::AlreadyActive);
    let record = active(check(store, &key, later, Touch::Passive).await);
    assert_eq!(
        record.created_at, t0,
        "a second begin must not reset created_at"
    );
    assert_eq!(record.last_seen, t0);
}

async fn refresh_moves_last_seen_passive_does_not<St: SessionStore>(store: &St) {
    let key = fresh_key("refresh");
    let t0 = start();
    begin(store, &key, t0).await;
    let t1 = at(t0, Duration::from_secs(20));
    assert_eq!(
        active(check(store, &key, t1, Touch::Passive).await).last_seen,
        t0
    );
    assert_eq!(
        active(check(store, &key, t1, Touch::Refresh).await).last_seen,
        t1
    );
    // The refresh at t1 moved the idle deadline: t0 + IDLE is no longer the end.
    let after_first_deadline = at(t0, IDLE + Duration::from_secs(1));
    assert_eq!(
        active(check(store, &key, after_first_deadline, Touch::Passive).await).created_at,
        t0
    );
}

async fn idle_deadline<St: SessionStore>(store: &St) {
    let key = fresh_key("idle");
    let t0 = start();
    begin(store, &key, t0).await;
    active(check(store, &key, just_before(t0, IDLE), Touch::Passive).await);
    assert_eq!(
        check(store, &key, at(t0, IDLE), Touch::Refresh).await,
        Check::Retired(ExpiryReason::Idle),
        "the check that finds it expired retires it"
    );
    assert_eq!(
        check(
            store,
            &key,
            at(t0, IDLE + Duration::from_secs(1)),
            Touch::Refresh
        )
        .await,
        Check::Expired(ExpiryReason::Idle)
    );
}

async fn absolute_deadline<St: SessionStore>(store: &St) {
    let key = fresh_key("absolute");
    let t0 = start();
    begin(store, &key, t0).await;
    // Activity every 50 s keeps the idle deadline away; the absolute one still comes.
    let mut now = t0;
    while now < just_before(t0, ABSOLUTE) {
        now = at(now, Duration::from_secs(50)).min(just_before(t0, ABSOLUTE));
        active(check(store, &key, now, Touch::Refresh).await);
    }
    assert_eq!(
        check(store, &key, at(t0, ABSOLUTE), Touch::Refresh).await,
        Check::Retired(ExpiryReason::Absolute)
    );
}

async fn end_leaves_a_tombstone<St: SessionStore>(store: &St) {
    let key = fresh_key("end");
    let t0 = start();
    begin(store, &key, t0).await;
    let t1 = at(t0, Duration::from_secs(1));
    assert!(store.end(&key, t1, &policy()).await.expect("end"));
    assert_eq!(
        check(store, &key, t1, Touch::Refresh).await,
        Check::Expired(ExpiryReason::Ended)
    );
    assert!(
        !store.end(&key, t1, &policy()).await.expect("end"),
        "ending twice ends nothing"
    );
    let unknown = fresh_key("end-unknown");
    assert!(!store.end(&unknown, t1, &policy()).await.expect("end"));
    assert_eq!(
        check(store, &unknown, t1, Touch::Refresh).await,
        Check::Expired(ExpiryReason::Unknown)
    );
}

async fn expired_ids_are_never_revived<St: SessionStore>(store: &St) {
    let ended = fresh_key("revive-ended");
    let idle = fresh_key("revive-idle");
    let t0 = start();
    begin(store, &ended, t0).await;
    begin(store, &idle, t0).await;
    store.end(&ended, t0, &policy()).await.expect("end");
    let within_retention = just_before(t0, RETENTION);
    assert_eq!(
        begin(store, &ended, within_retention).await,
        Begin::Refused(ExpiryReason::Ended)
    );
    assert_eq!(
        check(store, &ended, within_retention, Touch::Refresh).await,
        Check::Expired(ExpiryReason::Ended)
    );
    // Begin finds the idle session expired even before any check did.
    let t1 = at(t0, IDLE);
    assert_eq!(
        begin(store, &idle, t1).await,
        Begin::Refused(ExpiryReason::Idle)
    );
    assert_eq!(
        check(store, &idle, t1, Touch::Refresh).await,
        Check::Expired(ExpiryReason::Idle)
    );
}

async fn tombstones_are_forgotten_after_retention<St: SessionStore>(store: &St) {
    let key = fresh_key("retention");
    let t0 = start();
    begin(store, &key, t0).await;
    let deadline = at(t0, IDLE);
    assert_eq!(
        check(store, &key, deadline, Touch::Refresh).await,
        Check::Retired(ExpiryReason::Idle)
    );
    assert_eq!(
        check(
            store,
            &key,
            just_before(deadline, RETENTION),
            Touch::Refresh
        )
        .await,
        Check::Expired(ExpiryReason::Idle)
    );
    assert_eq!(
        check(store, &key, at(deadline, RETENTION), Touch::Refresh).await,
        Check::Expired(ExpiryReason::Unknown)
    );
    // Never asked about until its retention passed: the same answer as if it had been.
    let unasked = fresh_key("retention-unasked");
    begin(store, &unasked, t0).await;
    assert_eq!(
        check(store, &unasked, at(deadline, RETENTION), Touch::Refresh).await,
        Check::Expired(ExpiryReason::Unknown)
    );
    assert_eq!(
        begin(store, &unasked, at(deadline, RETENTION)).await,
        Begin::Began,
        "forgotten ids are new again"
    );
}

/// Issue #17: past its horizon (deadline plus retention) a session is forgotten by whatever
/// call is made at that `now`, `end` as much as `check` and `begin`; what a call forgot, a
/// clock stepping back does not bring back. Both forms are tried: a tombstone a check made,
/// and a record nobody asked about.
async fn an_end_at_the_horizon_forgets<St: SessionStore>(store: &St) {
    // Half a second into a second: `MemoryStore`'s wheel then has not reached the tombstone
    // when the end comes, so only the end itself can forget it.
    let t0 = Timestamp::from_unix_millis(start().as_unix_millis() / 1000 * 1000 + 500);
    let retired = fresh_key("horizon-retired");
    let unasked = fresh_key("horizon-unasked");
    begin(store, &retired, t0).await;
    begin(store, &unasked, t0).await;
    assert_eq!(
        check(
            store,
            &retired,
            at(t0, Duration::from_millis(63_326)),
            Touch::Refresh
        )
        .await,
        Check::Retired(ExpiryReason::Idle)
    );
    let horizon = at(t0, IDLE + RETENTION);
    for key in [retired, unasked] {
        assert!(
            !store.end(&key, horizon, &policy()).await.expect("end"),
            "nothing active to end"
        );
        assert_eq!(
            begin(store, &key, just_before(horizon, Duration::ZERO)).await,
            Begin::Began,
            "the end forgot the id; a clock 1 ms back must find it new"
        );
    }
}

async fn clock_backwards_never_makes_a_session_younger<St: SessionStore>(store: &St) {
    let key = fresh_key("backwards");
    let t0 = start();
    begin(store, &key, t0).await;
    let t1 = at(t0, Duration::from_secs(30));
    check(store, &key, t1, Touch::Refresh).await;
    // The clock steps back 20 s: last_seen must not move back with it.
    let back = at(t0, Duration::from_secs(10));
    assert_eq!(
        active(check(store, &key, back, Touch::Refresh).await).last_seen,
        t1
    );
    assert_eq!(
        check(store, &key, at(t1, IDLE), Touch::Refresh).await,
        Check::Retired(ExpiryReason::Idle)
    );
}

async fn touch_interval_skips_young_writes<St: SessionStore>(store: &St) {
    let policy = policy_with_touch();
    let key = fresh_key("touch");
    let t0 = start();
    store
        .begin(
            &key,
            t0,
            &policy,
            tower_session_timeout::store::NewSession::plain(),
        )
        .await
        .expect("begin");
    let young = just_before(t0, TOUCH);
    let record = active(
        store
            .check(&key, young, &policy, Touch::Refresh)
            .await
            .expect("check"),
    );
    assert_eq!(
        record.last_seen, t0,
        "a refresh younger than the touch interval may be skipped"
    );
    let old_enough = at(t0, TOUCH);
    let record = active(
        store
            .check(&key, old_enough, &policy, Touch::Refresh)
            .await
            .expect("check"),
    );
    assert_eq!(record.last_seen, old_enough);
    // Early by at most the touch interval, never late.
    assert_eq!(
        store
            .check(&key, at(old_enough, IDLE), &policy, Touch::Refresh)
            .await
            .expect("check"),
        Check::Retired(ExpiryReason::Idle)
    );
}

async fn concurrent_checks_at_the_deadline_agree<St: SessionStore>(store: &St) {
    let key = fresh_key("concurrent");
    let t0 = start();
    begin(store, &key, t0).await;
    let deadline = at(t0, IDLE);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .check(&key, deadline, &policy(), Touch::Refresh)
                .await
                .expect("check")
        }));
    }
    let mut retired = 0;
    for task in tasks {
        match task.await.expect("task") {
            Check::Retired(ExpiryReason::Idle) => retired += 1,
            Check::Expired(ExpiryReason::Idle) => {}
            other => panic!("expected the idle expiry, got {other:?}"),
        }
    }
    assert_eq!(retired, 1, "exactly one check retires the session");
    assert_eq!(
        check(
            store,
            &key,
            just_before(deadline, Duration::ZERO),
            Touch::Refresh
        )
        .await,
        Check::Expired(ExpiryReason::Idle),
        "once expired, an earlier clock reading cannot revive it"
    );
}

/// The SQL stores' purge: it removes exactly the rows past their retention (100 old sessions),
/// keeps young sessions and the tombstones still within theirs, and the kept rows answer as
/// before. `count` reads how many rows the store holds.
pub async fn purge_removes_only_expired_rows<St, F, Fut>(store: &St, count: F)
where
    St: SessionStore,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = i64>,
{
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
            .expect("begin");
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
            .expect("begin");
    }
    // Ended a second later than the old ones' deadline: their tombstones outlive the purge.
    let ended: Vec<_> = (0..10).map(|i| fresh_key(&format!("ended{i}"))).collect();
    let t2 = t1.saturating_add(Duration::from_secs(1));
    for key in &ended {
        store
            .begin(
                key,
                t2,
                &policy,
                tower_session_timeout::store::NewSession::plain(),
            )
            .await
            .expect("begin");
        assert!(store.end(key, t2, &policy).await.expect("end"));
    }
    assert_eq!(count().await, 160);

    let purge_at = t0.saturating_add(IDLE + RETENTION);
    // Just before, the old sessions still answer why they ended, so nothing may go.
    let before = Timestamp::from_unix_millis(purge_at.as_unix_millis() - 1);
    assert_eq!(store.purge(before).await.expect("purge"), 0);
    assert_eq!(store.purge(purge_at).await.expect("purge"), 100);
    assert_eq!(count().await, 60);
    for key in &young {
        let check = store
            .check(key, purge_at, &policy, Touch::Passive)
            .await
            .expect("check");
        assert!(matches!(check, Check::Active(_)), "{check:?}");
    }
    for key in &ended {
        let check = store
            .check(key, purge_at, &policy, Touch::Passive)
            .await
            .expect("check");
        assert_eq!(check, Check::Expired(ExpiryReason::Ended));
    }
    for key in &old {
        let check = store
            .check(key, purge_at, &policy, Touch::Passive)
            .await
            .expect("check");
        assert_eq!(check, Check::Expired(ExpiryReason::Unknown));
    }
}
