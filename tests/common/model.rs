//! A reference model of SPEC's session semantics, small enough to be obviously right, and a
//! driver that runs random operations on a store and on the model side by side.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use tower_session_timeout::store::{
    Begin, Check, Policy, SessionKey, SessionRecord, SessionStore, Touch,
};
use tower_session_timeout::{ExpiryReason, SessionTimeoutLayer, Timestamp};

#[derive(Debug, Clone, Copy)]
enum Entry {
    Active { created: u64, last_seen: u64 },
    Tombstone { reason: ExpiryReason, until: u64 },
}

/// Sessions as SPEC describes them, in milliseconds.
#[derive(Debug, Default)]
pub struct Model {
    idle: u64,
    absolute: Option<u64>,
    touch: Option<u64>,
    retention: u64,
    entries: HashMap<u8, Entry>,
}

impl Model {
    pub fn new(policy: &Policy) -> Self {
        let ms = |duration: Duration| duration.as_millis() as u64;
        Model {
            idle: ms(policy.idle_timeout()),
            absolute: policy.absolute_timeout().map(ms),
            touch: policy.touch_interval().map(ms),
            retention: ms(policy.tombstone_retention()),
            entries: HashMap::new(),
        }
    }

    /// The first deadline and its reason; the absolute one on a tie.
    fn deadline(&self, created: u64, last_seen: u64) -> (u64, ExpiryReason) {
        let idle = last_seen + self.idle;
        match self.absolute.map(|absolute| created + absolute) {
            Some(absolute) if absolute <= idle => (absolute, ExpiryReason::Absolute),
            _ => (idle, ExpiryReason::Idle),
        }
    }

    /// The entry as it stands at `now`: past-deadline sessions are tombstones, past-retention
    /// tombstones are gone. Returns whether an active session just turned into a tombstone.
    fn settle(&mut self, id: u8, now: u64) -> bool {
        let Some(entry) = self.entries.get(&id).copied() else {
            return false;
        };
        match entry {
            Entry::Active { created, last_seen } => {
                let (deadline, reason) = self.deadline(created, last_seen);
                let until = deadline + self.retention;
                if now >= until {
                    self.entries.remove(&id);
                    false
                } else if now >= deadline {
                    self.entries.insert(id, Entry::Tombstone { reason, until });
                    true
                } else {
                    false
                }
            }
            Entry::Tombstone { until, .. } if now >= until => {
                self.entries.remove(&id);
                false
            }
            Entry::Tombstone { .. } => false,
        }
    }

    /// What the session is at `now`: 0 active, 1 a tombstone, 2 gone.
    fn state_at(&self, id: u8, now: u64) -> u8 {
        match self.entries.get(&id) {
            None => 2,
            Some(Entry::Active { created, last_seen }) => {
                let (deadline, _) = self.deadline(*created, *last_seen);
                if now < deadline {
                    0
                } else if now < deadline + self.retention {
                    1
                } else {
                    2
                }
            }
            Some(Entry::Tombstone { until, .. }) => u8::from(now >= *until) + 1,
        }
    }

    /// Whether the session is in another state at `now` than at a later time the clock
    /// already showed before stepping back. A store may then answer either way (a purge or
    /// a request on another session may have moved it on when the clock read later); the
    /// run follows the store's answer, and no store may ever revive it.
    pub fn ambiguous(&self, id: u8, now: u64, high_water: u64) -> bool {
        self.state_at(id, now) != self.state_at(id, high_water)
    }

    /// Forgets a session, as a store did once its retention passed by a later clock.
    pub fn forget(&mut self, id: u8) {
        self.entries.remove(&id);
    }

    /// Retires an active session at its deadline, as a store did when the clock read later.
    pub fn retire(&mut self, id: u8) {
        if let Some(Entry::Active { created, last_seen }) = self.entries.get(&id).copied() {
            let (deadline, reason) = self.deadline(created, last_seen);
            let until = deadline + self.retention;
            self.entries.insert(id, Entry::Tombstone { reason, until });
        }
    }

    pub fn check(&mut self, id: u8, now: u64, touch: Touch) -> Check {
        let retired = self.settle(id, now);
        match self.entries.get_mut(&id) {
            None => Check::Expired(ExpiryReason::Unknown),
            Some(Entry::Tombstone { reason, .. }) if retired => Check::Retired(*reason),
            Some(Entry::Tombstone { reason, .. }) => Check::Expired(*reason),
            Some(Entry::Active { created, last_seen }) => {
                let due = match self.touch {
                    Some(touch) => now.saturating_sub(*last_seen) >= touch,
                    None => now > *last_seen,
                };
                if touch == Touch::Refresh && due {
                    *last_seen = (*last_seen).max(now);
                }
                Check::Active(SessionRecord {
                    created_at: Timestamp::from_unix_millis(*created),
                    last_seen: Timestamp::from_unix_millis(*last_seen),
                    timeouts: None,
                })
            }
        }
    }

    pub fn begin(&mut self, id: u8, now: u64) -> Begin {
        self.settle(id, now);
        match self.entries.get(&id) {
            Some(Entry::Active { .. }) => Begin::AlreadyActive,
            Some(Entry::Tombstone { reason, .. }) => Begin::Refused(*reason),
            None => {
                self.entries.insert(
                    id,
                    Entry::Active {
                        created: now,
                        last_seen: now,
                    },
                );
                Begin::Began
            }
        }
    }

    pub fn end(&mut self, id: u8, now: u64) -> bool {
        self.settle(id, now);
        match self.entries.get(&id) {
            Some(Entry::Active { .. }) => {
                let until = now + self.retention;
                self.entries.insert(
                    id,
                    Entry::Tombstone {
                        reason: ExpiryReason::Ended,
                        until,
                    },
                );
                true
            }
            _ => false,
        }
    }
}

/// One step of a random run.
#[derive(Debug, Clone)]
pub enum Op {
    Begin(u8),
    Request(u8),
    Passive(u8),
    End(u8),
    /// The clock moves forward by this many milliseconds.
    Forward(u64),
    /// The clock steps back by this many milliseconds.
    Back(u64),
    Purge,
}

pub fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..4;
    prop_oneof![
        3 => id.clone().prop_map(Op::Begin),
        6 => id.clone().prop_map(Op::Request),
        2 => id.clone().prop_map(Op::Passive),
        2 => id.prop_map(Op::End),
        5 => prop_oneof![0u64..2_000, 55_000u64..65_000, 0u64..120_000].prop_map(Op::Forward),
        1 => (0u64..10_000).prop_map(Op::Back),
        1 => Just(Op::Purge),
    ]
}

/// 2026-01-01T00:00:00Z: runs start here, never at the real clock, so a failing run is
/// reproduced exactly from its proptest seed.
pub const EPOCH: u64 = 1_767_225_600_000;

/// Where a run's clock starts: [`EPOCH`] plus an offset within a second. The offset is drawn,
/// not fixed, because `MemoryStore`'s wheel turns in whole seconds: where a deadline falls
/// within its second decides whether a sweep at that deadline already finds it due.
pub fn start() -> impl Strategy<Value = u64> {
    (0u64..1_000).prop_map(|offset| EPOCH + offset)
}

/// The policies runs draw from: with or without an absolute timeout and a touch interval.
pub fn policy() -> impl Strategy<Value = Policy> {
    (any::<bool>(), any::<bool>()).prop_map(|(absolute, touch)| {
        let mut builder = SessionTimeoutLayer::builder()
            .idle_timeout(Duration::from_secs(60))
            .tombstone_retention(Duration::from_secs(30));
        if absolute {
            builder = builder.absolute_timeout(Duration::from_secs(150));
        }
        if touch {
            builder = builder.touch_interval(Duration::from_secs(10));
        }
        *builder.build().expect("valid policy").policy()
    })
}

/// Retired and Expired answer the same question; which call retires a session may differ
/// when a purge got there first, so they are compared by reason, and "reported once" is
/// checked on its own.
fn same_answer(store: Check, model: Check) -> bool {
    match (store, model) {
        (Check::Retired(a) | Check::Expired(a), Check::Retired(b) | Check::Expired(b)) => a == b,
        (store, model) => store == model,
    }
}

/// Runs `ops` on `store` and on the model from the clock reading `start` (Unix ms), failing at
/// the first answer that differs. `namespace` keeps this run's ids apart from other runs on a
/// shared server.
pub async fn run<St: SessionStore>(
    store: &St,
    policy: &Policy,
    start: u64,
    ops: &[Op],
    namespace: u128,
) -> Result<(), TestCaseError> {
    let mut model = Model::new(policy);
    let mut now = start;
    let key = |id: u8| SessionKey::from_id(&format!("model-{namespace:032x}-{id}"));
    let mut retired_reported: HashMap<u8, u32> = HashMap::new();
    let mut ended: HashMap<u8, bool> = HashMap::new();
    let mut high_water = now;
    for (step, op) in ops.iter().enumerate() {
        high_water = high_water.max(now);
        let at = Timestamp::from_unix_millis(now);
        let ambiguous = |model: &Model, id: u8| model.ambiguous(id, now, high_water);
        match *op {
            Op::Begin(id) => {
                let was_ambiguous = ambiguous(&model, id);
                let got = store
                    .begin(
                        &key(id),
                        at,
                        policy,
                        tower_session_timeout::store::NewSession::plain(),
                    )
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                match got {
                    Begin::Refused(_) if was_ambiguous => model.retire(id),
                    Begin::Began if was_ambiguous => model.forget(id),
                    _ => {}
                }
                let want = model.begin(id, now);
                prop_assert_eq!(got, want, "step {} {:?}", step, op);
                if want == Begin::Began {
                    retired_reported.remove(&id);
                    ended.remove(&id);
                }
            }
            Op::Request(id) | Op::Passive(id) => {
                let touch = if matches!(op, Op::Request(_)) {
                    Touch::Refresh
                } else {
                    Touch::Passive
                };
                let was_ambiguous = ambiguous(&model, id);
                let got = store
                    .check(&key(id), at, policy, touch)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                match got {
                    Check::Expired(ExpiryReason::Unknown) if was_ambiguous => model.forget(id),
                    Check::Expired(_) | Check::Retired(_) if was_ambiguous => model.retire(id),
                    _ => {}
                }
                let want = model.check(id, now, touch);
                prop_assert!(
                    same_answer(got, want),
                    "step {} {:?}: store {:?}, model {:?}",
                    step,
                    op,
                    got,
                    want
                );
                if let Check::Retired(_) = got {
                    let count = retired_reported.entry(id).or_default();
                    *count += 1;
                    prop_assert_eq!(*count, 1, "step {}: a session was retired twice", step);
                    prop_assert!(
                        !ended.get(&id).copied().unwrap_or(false),
                        "step {}: an ended session was retired",
                        step
                    );
                }
            }
            Op::End(id) => {
                let was_ambiguous = ambiguous(&model, id);
                let got = store
                    .end(&key(id), at, policy)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                if was_ambiguous && !got {
                    model.retire(id);
                }
                let want = model.end(id, now);
                prop_assert_eq!(got, want, "step {} {:?}", step, op);
                if got {
                    ended.insert(id, true);
                }
            }
            Op::Forward(ms) => now += ms,
            Op::Back(ms) => now -= ms,
            Op::Purge => {
                store
                    .purge(at)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
        }
    }
    Ok(())
}
