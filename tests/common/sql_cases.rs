//! Cases for the SQL stores that the mutation run of `src/store/sql.rs` asked for (issue #17):
//! the paths where `SqliteStore` answers from the row it read, without running the statement
//! that judges the row in SQL, so the Rust reading of a row must agree with the SQL.

use std::time::Duration;

use tower_session_timeout::store::{
    Begin, Check, NewSession, Policy, SessionRecord, SessionStore, SessionTimeouts, Touch,
};
use tower_session_timeout::{ExpiryReason, SessionTimeoutLayer, Timestamp};

use super::store_suite::{fresh_key, policy, start, ABSOLUTE, IDLE, RETENTION, TOUCH};

fn at(start: Timestamp, offset: Duration) -> Timestamp {
    start.saturating_add(offset)
}

fn just_before(time: Timestamp) -> Timestamp {
    Timestamp::from_unix_millis(time.as_unix_millis() - 1)
}

fn active(check: Check) -> SessionRecord {
    match check {
        Check::Active(record) => record,
        other => panic!("expected an active session, got {other:?}"),
    }
}

/// Runs every case against `store`.
pub async fn run<St: SessionStore>(store: &St) {
    a_passive_check_at_the_absolute_deadline_retires_the_session(store).await;
    an_own_idle_timeout_equal_to_the_touch_interval_writes_every_refresh(store).await;
    a_begin_at_a_tombstones_horizon_begins_anew(store).await;
    a_check_past_the_horizon_forgets_for_good(store).await;
    a_passive_check_deletes_no_session_it_finds_active(store).await;
    timeouts_that_end_a_session_past_its_horizon_forget_it(store).await;
}

/// A session kept busy (its idle deadline well ahead) reaches its absolute deadline: a passive
/// check then, which writes nothing for an active session, must still find it over.
async fn a_passive_check_at_the_absolute_deadline_retires_the_session<St: SessionStore>(
    store: &St,
) {
    let key = fresh_key("passive-absolute");
    let t0 = start();
    store
        .begin(&key, t0, &policy(), NewSession::plain())
        .await
        .expect("begin");
    // A request every 50 s, the last 10 s before the absolute deadline.
    let busy = at(t0, ABSOLUTE - Duration::from_secs(10));
    let mut now = t0;
    while now < busy {
        now = at(now, Duration::from_secs(50)).min(busy);
        let record = active(
            store
                .check(&key, now, &policy(), Touch::Refresh)
                .await
                .expect("check"),
        );
        assert_eq!(record.last_seen, now);
    }
    let deadline = at(t0, ABSOLUTE);
    assert!(
        deadline < at(busy, IDLE),
        "the absolute deadline comes first"
    );
    assert_eq!(
        store
            .check(&key, deadline, &policy(), Touch::Passive)
            .await
            .expect("check"),
        Check::Retired(ExpiryReason::Absolute)
    );
}

/// With its own idle timeout no longer than the layer's touch interval, a session's refresh is
/// never skipped (a skipped one could let it expire while in use): a refresh well within the
/// touch interval still moves `last_seen`.
async fn an_own_idle_timeout_equal_to_the_touch_interval_writes_every_refresh<St: SessionStore>(
    store: &St,
) {
    let policy: Policy = *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .touch_interval(TOUCH)
        .build()
        .expect("valid policy")
        .policy();
    let key = fresh_key("own-idle-is-touch");
    let t0 = start();
    let new = NewSession {
        owner: None,
        timeouts: Some(SessionTimeouts::new(TOUCH)),
    };
    store.begin(&key, t0, &policy, new).await.expect("begin");
    let soon = at(t0, TOUCH / 2);
    let record = active(
        store
            .check(&key, soon, &policy, Touch::Refresh)
            .await
            .expect("check"),
    );
    assert_eq!(record.last_seen, soon, "the refresh was written");
    // And it counts: the session lives past its first idle deadline.
    active(
        store
            .check(&key, at(t0, TOUCH), &policy, Touch::Passive)
            .await
            .expect("check"),
    );
}

/// A tombstone's horizon (its end plus the retention) is where it is forgotten: a begin of its
/// id at exactly that time, with no check before it, begins a new session.
async fn a_begin_at_a_tombstones_horizon_begins_anew<St: SessionStore>(store: &St) {
    let key = fresh_key("begin-at-horizon");
    let t0 = start();
    store
        .begin(&key, t0, &policy(), NewSession::plain())
        .await
        .expect("begin");
    assert!(store.end(&key, t0, &policy()).await.expect("end"));
    let horizon = at(t0, RETENTION);
    assert_eq!(
        store
            .begin(&key, just_before(horizon), &policy(), NewSession::plain())
            .await
            .expect("begin"),
        Begin::Refused(ExpiryReason::Ended)
    );
    assert_eq!(
        store
            .begin(&key, horizon, &policy(), NewSession::plain())
            .await
            .expect("begin"),
        Begin::Began
    );
}

/// What a check forgot (a session past its horizon), a clock stepping back does not bring
/// back: the row is deleted by the check that found it forgotten, not left for the purge.
async fn a_check_past_the_horizon_forgets_for_good<St: SessionStore>(store: &St) {
    let key = fresh_key("check-forgets");
    let t0 = start();
    store
        .begin(&key, t0, &policy(), NewSession::plain())
        .await
        .expect("begin");
    let horizon = at(t0, IDLE + RETENTION);
    assert_eq!(
        store
            .check(&key, horizon, &policy(), Touch::Passive)
            .await
            .expect("check"),
        Check::Expired(ExpiryReason::Unknown)
    );
    for touch in [Touch::Passive, Touch::Refresh] {
        assert_eq!(
            store
                .check(&key, just_before(horizon), &policy(), touch)
                .await
                .expect("check"),
            Check::Expired(ExpiryReason::Unknown),
            "1 ms back, the forgotten session must stay forgotten"
        );
    }
}

/// After the idle timeout is raised (a new deploy), a session begun under the old one is
/// active past the horizon its row was written with. A passive check, which writes nothing,
/// answers it active and must leave it so: only a session found forgotten is deleted.
async fn a_passive_check_deletes_no_session_it_finds_active<St: SessionStore>(store: &St) {
    let raised: Policy = *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE * 10)
        .tombstone_retention(RETENTION)
        .build()
        .expect("valid policy")
        .policy();
    let key = fresh_key("raised-idle");
    let t0 = start();
    store
        .begin(&key, t0, &policy(), NewSession::plain())
        .await
        .expect("begin");
    let past_old_horizon = at(t0, IDLE + RETENTION + Duration::from_secs(10));
    for _ in 0..2 {
        let record = active(
            store
                .check(&key, past_old_horizon, &raised, Touch::Passive)
                .await
                .expect("check"),
        );
        assert_eq!(record.created_at, t0);
    }
}

/// New timeouts that put a session's horizon (its new deadline plus the retention) at `now`
/// end it and forget it at once, as a check at `now` would: a clock 1 ms back finds nothing.
async fn timeouts_that_end_a_session_past_its_horizon_forget_it<St: SessionStore>(store: &St) {
    let key = fresh_key("timeouts-forget");
    let t0 = start();
    store
        .begin(&key, t0, &policy(), NewSession::plain())
        .await
        .expect("begin");
    let tiny = Duration::from_secs(1);
    let horizon = at(t0, tiny + RETENTION);
    assert!(
        store
            .set_timeouts(&key, horizon, &policy(), SessionTimeouts::new(tiny))
            .await
            .expect("set_timeouts"),
        "the session was active at `now` under its old timeouts"
    );
    assert_eq!(
        store
            .check(&key, just_before(horizon), &policy(), Touch::Passive)
            .await
            .expect("check"),
        Check::Expired(ExpiryReason::Unknown)
    );
}
