//! A reference model of SPEC's session semantics, small enough to be obviously right, and a
//! driver that runs random operations on a store and on the model side by side.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use tower_session_timeout::store::{
    Begin, Check, NewSession, Policy, SessionKey, SessionRecord, SessionStore, SessionTimeouts,
    Touch,
};
use tower_session_timeout::{ExpiryReason, OnLimit, SessionTimeoutLayer, Timestamp};

#[derive(Debug, Clone, Copy)]
enum Entry {
    Active {
        created: u64,
        last_seen: u64,
        owner: Option<u8>,
        own: Option<SessionTimeouts>,
    },
    Tombstone {
        reason: ExpiryReason,
        until: u64,
    },
}

/// Sessions as SPEC and issue #13 describe them, in milliseconds: each with the layer's
/// timeouts or its own, some with an owner, at most `limit` active per owner.
#[derive(Debug)]
pub struct Model {
    idle: u64,
    absolute: Option<u64>,
    touch: Option<u64>,
    retention: u64,
    limit: Option<(usize, OnLimit)>,
    /// Each id's store key: an owner's sessions are ordered by `created_at`, then key.
    keys: Vec<SessionKey>,
    entries: HashMap<u8, Entry>,
}

fn ms(duration: Duration) -> u64 {
    duration.as_millis() as u64
}

impl Model {
    pub fn new(policy: &Policy, keys: Vec<SessionKey>) -> Self {
        Model {
            idle: ms(policy.idle_timeout()),
            absolute: policy.absolute_timeout().map(ms),
            touch: policy.touch_interval().map(ms),
            retention: ms(policy.tombstone_retention()),
            limit: policy
                .session_limit()
                .map(|limit| (limit.max.get() as usize, limit.on_limit)),
            keys,
            entries: HashMap::new(),
        }
    }

    /// The idle and absolute timeouts of a session with `own` timeouts (or the layer's).
    fn timeouts(&self, own: Option<SessionTimeouts>) -> (u64, Option<u64>) {
        match own {
            Some(own) => (ms(own.idle()), own.absolute().map(ms)),
            None => (self.idle, self.absolute),
        }
    }

    /// The first deadline and its reason; the absolute one on a tie.
    fn deadline(
        &self,
        created: u64,
        last_seen: u64,
        own: Option<SessionTimeouts>,
    ) -> (u64, ExpiryReason) {
        let (idle, absolute) = self.timeouts(own);
        let idle = last_seen + idle;
        match absolute.map(|absolute| created + absolute) {
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
            Entry::Active {
                created,
                last_seen,
                own,
                ..
            } => {
                let (deadline, reason) = self.deadline(created, last_seen, own);
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
            Some(Entry::Active {
                created,
                last_seen,
                own,
                ..
            }) => {
                let (deadline, _) = self.deadline(*created, *last_seen, *own);
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
        if let Some(Entry::Active {
            created,
            last_seen,
            own,
            ..
        }) = self.entries.get(&id).copied()
        {
            let (deadline, reason) = self.deadline(created, last_seen, own);
            let until = deadline + self.retention;
            self.entries.insert(id, Entry::Tombstone { reason, until });
        }
    }

    pub fn check(&mut self, id: u8, now: u64, touch: Touch) -> Check {
        let retired = self.settle(id, now);
        let (idle, _) = match self.entries.get(&id) {
            Some(Entry::Active { own, .. }) => self.timeouts(*own),
            _ => (0, None),
        };
        // No skipped write when the session's own idle timeout is not longer than the
        // touch interval: a skip could let an active session expire.
        let touch_interval = self.touch.filter(|&interval| interval < idle);
        match self.entries.get_mut(&id) {
            None => Check::Expired(ExpiryReason::Unknown),
            Some(Entry::Tombstone { reason, .. }) if retired => Check::Retired(*reason),
            Some(Entry::Tombstone { reason, .. }) => Check::Expired(*reason),
            Some(Entry::Active {
                created,
                last_seen,
                own,
                ..
            }) => {
                let due = match touch_interval {
                    Some(interval) => now.saturating_sub(*last_seen) >= interval,
                    None => now > *last_seen,
                };
                if touch == Touch::Refresh && due {
                    *last_seen = (*last_seen).max(now);
                }
                Check::Active(record(*created, *last_seen, *own))
            }
        }
    }

    /// The owner's sessions active at `now`, oldest first (by creation, then key).
    fn active_of(&self, owner: u8, now: u64) -> Vec<u8> {
        let mut active: Vec<(u64, SessionKey, u8)> = self
            .entries
            .iter()
            .filter(|(id, entry)| {
                matches!(entry, Entry::Active { owner: Some(o), .. } if *o == owner)
                    && self.state_at(**id, now) == 0
            })
            .map(|(id, entry)| match entry {
                Entry::Active { created, .. } => (*created, self.keys[*id as usize], *id),
                Entry::Tombstone { .. } => unreachable!("filtered"),
            })
            .collect();
        active.sort_by(|a, b| (a.0, a.1.as_bytes()).cmp(&(b.0, b.1.as_bytes())));
        active.into_iter().map(|(_, _, id)| id).collect()
    }

    /// The owner's active sessions as the store lists them.
    pub fn list(&self, owner: u8, now: u64) -> Vec<(u8, SessionRecord)> {
        self.active_of(owner, now)
            .into_iter()
            .map(|id| match self.entries[&id] {
                Entry::Active {
                    created,
                    last_seen,
                    own,
                    ..
                } => (id, record(created, last_seen, own)),
                Entry::Tombstone { .. } => unreachable!("active"),
            })
            .collect()
    }

    /// Begins `id` for `owner` with `own` timeouts; answers the outcome and the ids the
    /// limit superseded.
    pub fn begin(
        &mut self,
        id: u8,
        now: u64,
        owner: Option<u8>,
        own: Option<SessionTimeouts>,
    ) -> (Begin, Vec<u8>) {
        self.settle(id, now);
        match self.entries.get(&id) {
            Some(Entry::Active { .. }) => return (Begin::AlreadyActive, Vec::new()),
            Some(Entry::Tombstone { reason, .. }) => return (Begin::Refused(*reason), Vec::new()),
            None => {}
        }
        let Some(owner_id) = owner else {
            self.insert(id, now, None, own);
            return (Begin::Began, Vec::new());
        };
        let others = self.active_of(owner_id, now);
        if let Some((max, OnLimit::Refuse)) = self.limit {
            if others.len() >= max {
                return (Begin::LimitReached, Vec::new());
            }
        }
        self.insert(id, now, owner, own);
        let mut superseded = Vec::new();
        if let Some((max, OnLimit::EndOldest)) = self.limit {
            let active = self.active_of(owner_id, now);
            for &old in &active[..active.len().saturating_sub(max)] {
                self.retire_at(old, ExpiryReason::Superseded, now);
                superseded.push(old);
            }
        }
        (Begin::Began, superseded)
    }

    fn insert(&mut self, id: u8, now: u64, owner: Option<u8>, own: Option<SessionTimeouts>) {
        self.entries.insert(
            id,
            Entry::Active {
                created: now,
                last_seen: now,
                owner,
                own,
            },
        );
    }

    /// Ends an active session with `reason`, its tombstone kept for the retention from now.
    fn retire_at(&mut self, id: u8, reason: ExpiryReason, now: u64) {
        let until = now + self.retention;
        self.entries.insert(id, Entry::Tombstone { reason, until });
    }

    pub fn end(&mut self, id: u8, now: u64) -> bool {
        self.settle(id, now);
        match self.entries.get(&id) {
            Some(Entry::Active { .. }) => {
                self.retire_at(id, ExpiryReason::Ended, now);
                true
            }
            _ => false,
        }
    }

    /// Ends every active session of `owner` but `keep`; answers the ids it ended.
    pub fn end_owner(&mut self, owner: u8, keep: Option<u8>, now: u64) -> Vec<u8> {
        let ended: Vec<u8> = self
            .active_of(owner, now)
            .into_iter()
            .filter(|id| Some(*id) != keep)
            .collect();
        for &id in &ended {
            self.settle(id, now);
            self.retire_at(id, ExpiryReason::Ended, now);
        }
        ended
    }

    /// Gives an active session its own timeouts, retiring it (or forgetting it, past its
    /// horizon) if they put its deadline at or before `now`. Answers whether it was active.
    pub fn set_timeouts(&mut self, id: u8, own: SessionTimeouts, now: u64) -> bool {
        self.settle(id, now);
        let Some(Entry::Active {
            created,
            last_seen,
            owner,
            ..
        }) = self.entries.get(&id).copied()
        else {
            return false;
        };
        self.entries.insert(
            id,
            Entry::Active {
                created,
                last_seen,
                owner,
                own: Some(own),
            },
        );
        let (deadline, reason) = self.deadline(created, last_seen, Some(own));
        if now >= deadline + self.retention {
            self.entries.remove(&id);
        } else if now >= deadline {
            let until = deadline + self.retention;
            self.entries.insert(id, Entry::Tombstone { reason, until });
        }
        true
    }

    /// The owner of a session active at `now`.
    pub fn owner_of(&self, id: u8, now: u64) -> Option<u8> {
        match self.entries.get(&id) {
            Some(Entry::Active { owner, .. }) if self.state_at(id, now) == 0 => *owner,
            _ => None,
        }
    }
}

fn record(created: u64, last_seen: u64, own: Option<SessionTimeouts>) -> SessionRecord {
    SessionRecord::new(
        Timestamp::from_unix_millis(created),
        Timestamp::from_unix_millis(last_seen),
    )
    .with_timeouts(own)
}

/// The own timeouts a step may give a session: none, short (20 s idle), tiny (8 s idle, not
/// longer than the 10 s touch interval, so never skipped), or long (200 s idle, 400 s in all;
/// "remember me").
pub fn own_timeouts(variant: u8) -> Option<SessionTimeouts> {
    let seconds = Duration::from_secs;
    match variant {
        1 => Some(SessionTimeouts::new(seconds(20))),
        2 => Some(SessionTimeouts::new(seconds(8))),
        3 => Some(SessionTimeouts::new(seconds(200)).with_absolute(seconds(400))),
        _ => None,
    }
}

/// One step of a random run.
#[derive(Debug, Clone)]
pub enum Op {
    Begin(u8),
    /// Begins the id for an owner (0 or 1) with the own timeouts of a variant (see
    /// [`own_timeouts`]).
    BeginAs(u8, u8, u8),
    /// Gives the id the own timeouts of a variant (1..=3).
    SetTimeouts(u8, u8),
    /// Lists the owner's sessions.
    List(u8),
    /// Ends the owner's sessions but the given id's.
    EndOwner(u8, Option<u8>),
    /// Asks the id's owner.
    OwnerOf(u8),
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
        2 => id.clone().prop_map(Op::End),
        3 => (id.clone(), 0u8..2, 0u8..4).prop_map(|(id, owner, own)| Op::BeginAs(id, owner, own)),
        1 => (id.clone(), 1u8..4).prop_map(|(id, own)| Op::SetTimeouts(id, own)),
        1 => (0u8..2).prop_map(Op::List),
        1 => (0u8..4).prop_map(Op::OwnerOf),
        1 => (0u8..2, prop::option::of(id)).prop_map(|(owner, keep)| Op::EndOwner(owner, keep)),
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

/// The policies runs draw from: with or without an absolute timeout, a touch interval and a
/// limit of two sessions per owner (ending the oldest, or refusing).
pub fn policy() -> impl Strategy<Value = Policy> {
    (any::<bool>(), any::<bool>(), 0u8..3).prop_map(|(absolute, touch, limit)| {
        let mut builder = SessionTimeoutLayer::builder()
            .idle_timeout(Duration::from_secs(60))
            .tombstone_retention(Duration::from_secs(30));
        if absolute {
            builder = builder.absolute_timeout(Duration::from_secs(150));
        }
        if touch {
            builder = builder.touch_interval(Duration::from_secs(10));
        }
        match limit {
            1 => builder = builder.max_sessions_per_owner(2, OnLimit::EndOldest),
            2 => builder = builder.max_sessions_per_owner(2, OnLimit::Refuse),
            _ => {}
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
/// the first answer that differs. `namespace` keeps this run's ids and owners apart from
/// other runs on a shared server.
pub async fn run<St: SessionStore>(
    store: &St,
    policy: &Policy,
    start: u64,
    ops: &[Op],
    namespace: u128,
) -> Result<(), TestCaseError> {
    let keys: Vec<SessionKey> = (0..4u8)
        .map(|id| SessionKey::from_id(&format!("model-{namespace:032x}-{id}")))
        .collect();
    let mut run = Run {
        store,
        policy,
        model: Model::new(policy, keys.clone()),
        keys,
        now: start,
        high_water: start,
        retired_reported: HashMap::new(),
        ended: HashMap::new(),
        namespace,
    };
    for (step, op) in ops.iter().enumerate() {
        run.high_water = run.high_water.max(run.now);
        run.step(step, op).await?;
    }
    Ok(())
}

/// One run's store, model and bookkeeping.
struct Run<'a, St> {
    store: &'a St,
    policy: &'a Policy,
    model: Model,
    keys: Vec<SessionKey>,
    now: u64,
    /// The latest clock reading so far: a store may already have moved a session on to its
    /// state at this time (see [`Model::ambiguous`]).
    high_water: u64,
    retired_reported: HashMap<u8, u32>,
    ended: HashMap<u8, bool>,
    namespace: u128,
}

fn failed(error: tower_session_timeout::StoreError) -> TestCaseError {
    TestCaseError::fail(error.to_string())
}

impl<St: SessionStore> Run<'_, St> {
    fn at(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.now)
    }

    fn ambiguous(&self, id: u8) -> bool {
        self.model.ambiguous(id, self.now, self.high_water)
    }

    fn owner(&self, owner: u8) -> String {
        format!("owner-{:032x}-{owner}", self.namespace)
    }

    fn id_of(&self, key: &SessionKey) -> Option<u8> {
        self.keys.iter().position(|k| k == key).map(|id| id as u8)
    }

    /// Brings every ambiguous id's model in line with the store, through a passive check
    /// (which any request could make), so per-owner steps compare what both hold at `now`.
    async fn settle_ambiguous(&mut self, step: usize) -> Result<(), TestCaseError> {
        for id in 0..4u8 {
            if self.ambiguous(id) {
                self.check(step, id, Touch::Passive).await?;
            }
        }
        Ok(())
    }

    async fn check(&mut self, step: usize, id: u8, touch: Touch) -> Result<(), TestCaseError> {
        let was_ambiguous = self.ambiguous(id);
        let got = self
            .store
            .check(&self.keys[id as usize], self.at(), self.policy, touch)
            .await
            .map_err(failed)?;
        match got {
            Check::Expired(ExpiryReason::Unknown) if was_ambiguous => self.model.forget(id),
            Check::Expired(_) | Check::Retired(_) if was_ambiguous => self.model.retire(id),
            _ => {}
        }
        let want = self.model.check(id, self.now, touch);
        prop_assert!(
            same_answer(got, want),
            "step {} check {} ({:?}): store {:?}, model {:?}",
            step,
            id,
            touch,
            got,
            want
        );
        if let Check::Retired(_) = got {
            let count = self.retired_reported.entry(id).or_default();
            *count += 1;
            prop_assert_eq!(*count, 1, "step {}: a session was retired twice", step);
            prop_assert!(
                !self.ended.get(&id).copied().unwrap_or(false),
                "step {}: an ended session was retired",
                step
            );
        }
        Ok(())
    }

    async fn begin(
        &mut self,
        step: usize,
        id: u8,
        owner: Option<u8>,
        own: Option<SessionTimeouts>,
    ) -> Result<(), TestCaseError> {
        if owner.is_some() {
            self.settle_ambiguous(step).await?;
        }
        let was_ambiguous = self.ambiguous(id);
        let owner_name = owner.map(|owner| self.owner(owner));
        let new = NewSession {
            owner: owner_name.as_deref(),
            timeouts: own,
        };
        let got = self
            .store
            .begin(&self.keys[id as usize], self.at(), self.policy, new)
            .await
            .map_err(failed)?;
        match got {
            Begin::Refused(_) if was_ambiguous => self.model.retire(id),
            Begin::Began if was_ambiguous => self.model.forget(id),
            _ => {}
        }
        let (want, superseded) = self.model.begin(id, self.now, owner, own);
        prop_assert_eq!(
            got,
            want,
            "step {} begin {} as {:?} {:?}",
            step,
            id,
            owner,
            own
        );
        if want == Begin::Began {
            self.retired_reported.remove(&id);
            self.ended.remove(&id);
        }
        for id in superseded {
            self.ended.insert(id, true);
        }
        Ok(())
    }

    async fn step(&mut self, step: usize, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Begin(id) => self.begin(step, id, None, None).await?,
            Op::BeginAs(id, owner, own) => {
                self.begin(step, id, Some(owner), own_timeouts(own)).await?
            }
            Op::Request(id) => self.check(step, id, Touch::Refresh).await?,
            Op::Passive(id) => self.check(step, id, Touch::Passive).await?,
            Op::End(id) => {
                let was_ambiguous = self.ambiguous(id);
                let got = self
                    .store
                    .end(&self.keys[id as usize], self.at(), self.policy)
                    .await
                    .map_err(failed)?;
                if was_ambiguous && !got {
                    self.model.retire(id);
                }
                let want = self.model.end(id, self.now);
                prop_assert_eq!(got, want, "step {} {:?}", step, op);
                if got {
                    self.ended.insert(id, true);
                }
            }
            Op::SetTimeouts(id, own) => {
                self.settle_ambiguous(step).await?;
                let own = own_timeouts(own).expect("a variant with timeouts");
                let got = self
                    .store
                    .set_timeouts(&self.keys[id as usize], self.at(), self.policy, own)
                    .await
                    .map_err(failed)?;
                let want = self.model.set_timeouts(id, own, self.now);
                prop_assert_eq!(got, want, "step {} {:?}", step, op);
            }
            Op::List(owner) => {
                self.settle_ambiguous(step).await?;
                let listed = self
                    .store
                    .sessions_of(&self.owner(owner), self.at(), self.policy)
                    .await
                    .map_err(failed)?;
                let got: Vec<(Option<u8>, SessionRecord)> = listed
                    .iter()
                    .map(|session| (self.id_of(&session.key), session.record))
                    .collect();
                let want: Vec<(Option<u8>, SessionRecord)> = self
                    .model
                    .list(owner, self.now)
                    .into_iter()
                    .map(|(id, record)| (Some(id), record))
                    .collect();
                prop_assert_eq!(got, want, "step {} {:?}", step, op);
            }
            Op::EndOwner(owner, keep) => {
                self.settle_ambiguous(step).await?;
                let kept = keep.map(|id| self.keys[id as usize]);
                let got = self
                    .store
                    .end_sessions_of(&self.owner(owner), kept.as_ref(), self.at(), self.policy)
                    .await
                    .map_err(failed)?;
                let ended = self.model.end_owner(owner, keep, self.now);
                prop_assert_eq!(got, ended.len() as u64, "step {} {:?}", step, op);
                for id in ended {
                    self.ended.insert(id, true);
                }
            }
            Op::OwnerOf(id) => {
                self.settle_ambiguous(step).await?;
                let got = self
                    .store
                    .owner_of(&self.keys[id as usize], self.at(), self.policy)
                    .await
                    .map_err(failed)?;
                let want = self
                    .model
                    .owner_of(id, self.now)
                    .map(|owner| self.owner(owner));
                prop_assert_eq!(got, want, "step {} {:?}", step, op);
            }
            Op::Forward(ms) => self.now += ms,
            Op::Back(ms) => self.now -= ms,
            Op::Purge => {
                self.store.purge(self.at()).await.map_err(failed)?;
            }
        }
        Ok(())
    }
}
