//! [`MemoryStore`]: sessions in this process, sharded so requests on different sessions do
//! not wait on each other.

use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hashbrown::HashTable;

use super::{
    oldest_first, Begin, Check, ExpiryReason, NewSession, OnLimit, OwnedSession, Policy,
    SessionEnd, SessionKey, SessionRecord, SessionStore, SessionTimeouts, StoreFuture, Touch,
};
use crate::{StoreError, Timestamp};

/// How many due records a request sweeps from its shard, so purging is spread over requests
/// and no request pays for a whole purge.
const SWEEP_PER_CALL: usize = 8;

/// How many due records [`purge`](SessionStore::purge) sweeps under one shard lock before it
/// lets requests on that shard in.
const PURGE_CHUNK: usize = 256;

/// Keeps sessions in this process's memory. The default store.
///
/// Sessions live as long as the process: a restart forgets them (every cookie then gets
/// 440 with reason `unknown`). Use `SqliteStore` (feature `sqlite`) or another persistent store to keep
/// them across restarts, and a shared store for several instances.
///
/// Records are spread over shards, each behind its own lock held for a few hash-map
/// operations, so there is no global lock on the request path. Expired records are purged by
/// a timer wheel: each record waits in one one-second bucket at its deadline, and every store
/// call sweeps a few due records from its shard, so the cost of purging grows with what
/// expired, not with what is stored. [`purge`](SessionStore::purge) sweeps everything due.
///
/// Clones share the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    shards: Arc<[Mutex<Shard>]>,
    /// Each owner's sessions, possibly with some that have ended (pruned whenever the owner's
    /// sessions are counted or listed, and when a record is removed). Locked before any
    /// shard, never while one is held, so no two locks are taken in opposite orders.
    owners: Arc<Mutex<Owners>>,
}

type Owners = HashMap<Arc<str>, Vec<SessionKey>>;

impl MemoryStore {
    /// An empty store with a shard count fitted to the machine.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, usize::from);
        Self::with_shards(cores * 16)
    }

    /// An empty store with `shards` shards (rounded up to a power of two, at least one).
    pub fn with_shards(shards: usize) -> Self {
        let count = shards.max(1).next_power_of_two();
        MemoryStore {
            shards: (0..count).map(|_| Mutex::new(Shard::default())).collect(),
            owners: Arc::default(),
        }
    }

    /// How many records are kept: active sessions plus the tombstones of sessions that
    /// expired or ended within the retention.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    /// Whether no record is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key's shard, told the retention of `policy` for the tombstones its sweep makes.
    fn writing(&self, key: &SessionKey, policy: &Policy) -> MutexGuard<'_, Shard> {
        let mut shard = self.shard(key);
        shard.retention = policy.tombstone_retention();
        shard
    }

    fn shard(&self, key: &SessionKey) -> MutexGuard<'_, Shard> {
        // The key is a SHA-256, so its low bytes are already uniform.
        let index = usize::from(key.as_bytes()[31]) | usize::from(key.as_bytes()[30]) << 8;
        lock(&self.shards[index & (self.shards.len() - 1)])
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("records", &self.len())
            .finish()
    }
}

/// A poisoned lock still guards consistent data (every update is a single assignment), so
/// a panic elsewhere must not take the store down with it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MemoryStore {
    /// `check`'s work, done at once: the store never waits.
    #[inline]
    fn check_at_once(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Check {
        let mut shard = self.writing(key, policy);
        let check = shard.check(key, now, policy, touch);
        shard.sweep(now, SWEEP_PER_CALL);
        check
    }

    /// The owner's sessions active at `now`, oldest first, after dropping from its index
    /// every session no longer active (and, from every index, the removed records the shards
    /// reported). Called with the owners' lock held.
    fn active_of(
        &self,
        owners: &mut Owners,
        owner: &str,
        now: Timestamp,
        policy: &Policy,
    ) -> Vec<OwnedSession> {
        for shard in self.shards.iter() {
            let released = std::mem::take(&mut lock(shard).released);
            for (owner, key) in released {
                // The id may have been begun again since (its old record forgotten by that
                // very begin): then it is listed for its new session.
                if self.shard(&key).find(&key).is_some() {
                    continue;
                }
                if let Some(keys) = owners.get_mut(&owner) {
                    keys.retain(|listed| *listed != key);
                    if keys.is_empty() {
                        owners.remove(&owner);
                    }
                }
            }
        }
        let Some(keys) = owners.get_mut(owner) else {
            return Vec::new();
        };
        let mut active = Vec::with_capacity(keys.len());
        keys.retain(
            |key| match self.shard(key).listing(key, owner, now, policy) {
                Listing::Active(record) => {
                    active.push(OwnedSession { key: *key, record });
                    true
                }
                // Past its deadline but not yet retired: a clock stepping back would still find
                // it active, so it stays listed until a check or the sweep retires it.
                Listing::Expired => true,
                Listing::Gone => false,
            },
        );
        if keys.is_empty() {
            owners.remove(owner);
        }
        oldest_first(&mut active);
        active
    }

    fn begin_owned(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        owner: &str,
        timeouts: Option<SessionTimeouts>,
    ) -> Begin {
        let mut owners = lock(&self.owners);
        let mut active = self.active_of(&mut owners, owner, now, policy);
        // The id's own state answers first: an active id is already begun and a retired one
        // is refused whatever the limit says. Only a new session counts against the limit.
        let would_begin = self.shard(key).would_begin(key, now, policy);
        if let (true, Some(limit)) = (would_begin, policy.session_limit()) {
            if limit.on_limit == OnLimit::Refuse && active.len() >= limit.max.get() as usize {
                return Begin::LimitReached;
            }
        }
        let owner: Arc<str> = owners
            .get_key_value(owner)
            .map_or_else(|| Arc::from(owner), |(name, _)| Arc::clone(name));
        let began = self
            .writing(key, policy)
            .begin(key, now, policy, Some(&owner), timeouts);
        if began != Begin::Began {
            return began;
        }
        let keys = owners.entry(Arc::clone(&owner)).or_default();
        // Still listed for its forgotten record if that was never retired.
        if !keys.contains(key) {
            keys.push(*key);
        }
        active.push(OwnedSession {
            key: *key,
            record: SessionRecord::new(now, now).with_timeouts(timeouts),
        });
        for superseded in policy.superseded(&mut active) {
            self.writing(&superseded, policy).end(
                &superseded,
                now,
                policy,
                ExpiryReason::Superseded,
            );
        }
        Begin::Began
    }
}

impl SessionStore for MemoryStore {
    type CheckFuture = Ready<Result<Check, StoreError>>;
    type BeginFuture = Ready<Result<Begin, StoreError>>;
    type EndFuture = Ready<Result<bool, StoreError>>;
    type PurgeFuture = Ready<Result<u64, StoreError>>;

    fn check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Self::CheckFuture {
        ready(Ok(self.check_at_once(key, now, policy, touch)))
    }

    fn try_check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Option<Result<Check, StoreError>> {
        Some(Ok(self.check_at_once(key, now, policy, touch)))
    }

    fn begin(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        new: NewSession<'_>,
    ) -> Self::BeginFuture {
        if let Some(owner) = new.owner {
            return ready(Ok(self.begin_owned(key, now, policy, owner, new.timeouts)));
        }
        let mut shard = self.writing(key, policy);
        let begin = shard.begin(key, now, policy, None, new.timeouts);
        shard.sweep(now, SWEEP_PER_CALL);
        ready(Ok(begin))
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        let mut shard = self.writing(key, policy);
        let ended = shard.end(key, now, policy, ExpiryReason::Ended);
        shard.sweep(now, SWEEP_PER_CALL);
        ready(Ok(ended))
    }

    fn set_timeouts(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        timeouts: SessionTimeouts,
    ) -> StoreFuture<bool> {
        let changed = self
            .writing(key, policy)
            .set_timeouts(key, now, policy, timeouts);
        Box::pin(ready(Ok(changed)))
    }

    fn owner_of(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Option<String>> {
        let owner = self.shard(key).owner_of(key, now, policy);
        Box::pin(ready(Ok(owner)))
    }

    fn sessions_of(
        &self,
        owner: &str,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Vec<OwnedSession>> {
        let mut owners = lock(&self.owners);
        let active = self.active_of(&mut owners, owner, now, policy);
        Box::pin(ready(Ok(active)))
    }

    fn end_sessions_of(
        &self,
        owner: &str,
        keep: Option<&SessionKey>,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<u64> {
        let mut owners = lock(&self.owners);
        let mut ended = 0;
        for session in self.active_of(&mut owners, owner, now, policy) {
            if Some(&session.key) != keep
                && self.writing(&session.key, policy).end(
                    &session.key,
                    now,
                    policy,
                    ExpiryReason::Ended,
                )
            {
                ended += 1;
            }
        }
        Box::pin(ready(Ok(ended)))
    }

    fn claim_ends(
        &self,
        now: Timestamp,
        policy: &Policy,
        limit: usize,
        lease: Duration,
    ) -> StoreFuture<Vec<SessionEnd>> {
        let mut claimed = Vec::new();
        let lease_until = now.saturating_add(lease);
        for shard in self.shards.iter() {
            // Silent expiries become tombstones (and so ends) only when swept.
            loop {
                let mut shard = lock(shard);
                shard.retention = policy.tombstone_retention();
                let (_, seen) = shard.sweep(now, PURGE_CHUNK);
                if seen < PURGE_CHUNK {
                    let retention = policy.tombstone_retention();
                    shard.claim(now, retention, limit, lease_until, &mut claimed);
                    break;
                }
            }
            if claimed.len() >= limit {
                break;
            }
        }
        Box::pin(ready(Ok(claimed)))
    }

    fn ack_ends(&self, keys: &[SessionKey], _now: Timestamp, _policy: &Policy) -> StoreFuture<()> {
        for key in keys {
            self.shard(key).ack(key);
        }
        Box::pin(ready(Ok(())))
    }

    fn active_sessions(&self) -> Option<u64> {
        let active = self
            .shards
            .iter()
            .map(|shard| lock(shard).active)
            .sum::<usize>();
        Some(active as u64)
    }

    fn purge(&self, now: Timestamp) -> Self::PurgeFuture {
        let mut removed = 0;
        for shard in self.shards.iter() {
            // A chunk per lock, so a request on this shard waits for one chunk at most.
            loop {
                let (chunk_removed, seen) = lock(shard).sweep(now, PURGE_CHUNK);
                removed += chunk_removed;
                if seen < PURGE_CHUNK {
                    break;
                }
            }
        }
        ready(Ok(removed as u64))
    }
}

/// One shard: the records in a dense slab, a hash index into it, and the timer wheel.
///
/// Laid out for memory: a record is one 64-byte [`Slot`] (the 32-byte key and 32 bytes of
/// times and state) in a `Vec`, the index holds 4-byte slot numbers, and the wheel lists
/// slot numbers rather than keys. A `HashMap<SessionKey, _>` at its usual half-empty load
/// after a doubling, plus a 32-byte key per wheel listing, took about twice as much; see
/// BENCHMARKS.md.
#[derive(Default)]
struct Shard {
    slots: Vec<Slot>,
    /// Slots freed by removals, reused before the slab grows.
    free: Vec<u32>,
    /// Slot numbers, found by the key's hash and compared on the slot's key.
    index: HashTable<u32>,
    /// Second-granular buckets of slots to look at once that second has passed. Each record
    /// is listed in the bucket `Slot::bucket` names; a listing elsewhere, or of a freed slot,
    /// is stale and skipped.
    wheel: BTreeMap<u32, Vec<u32>>,
    /// No bucket of the wheel is earlier than this, so a sweep with nothing due returns
    /// without walking the tree (most calls). Lowered by every listing, raised by sweeps.
    earliest: u32,
    /// The tombstone retention of the latest call, for tombstones a sweep makes.
    retention: Duration,
    /// What records with [`Slot::extra`] set keep beyond the slot: most sessions have no
    /// owner and the layer's timeouts, so the slot stays 64 bytes.
    extras: HashMap<SessionKey, Extra>,
    /// Owned records removed since the owners' index last looked, so it can drop them.
    released: Vec<(Arc<str>, SessionKey)>,
    /// Tombstones whose end is not yet acknowledged ([`SessionStore::ack_ends`]); some may
    /// be stale (forgotten since), dropped when claimed or when they outnumber the
    /// tombstones, so the list stays within twice the tombstones whether or not anyone
    /// claims.
    ends: Vec<SessionKey>,
    /// Ends claimed and not yet acknowledged, and until when.
    leases: HashMap<SessionKey, Timestamp>,
    /// How many records are active (not yet retired), for the active-sessions gauge.
    active: usize,
}

/// What an owner's index entry stands for.
enum Listing {
    Active(SessionRecord),
    /// Past its deadline at `now`, not yet retired.
    Expired,
    /// Retired, forgotten, or begun again for another owner.
    Gone,
}

/// A record's owner and own timeouts.
struct Extra {
    owner: Option<Arc<str>>,
    timeouts: Option<SessionTimeouts>,
}

/// One record: 64 bytes.
struct Slot {
    key: SessionKey,
    /// Active: when the session began. Tombstone: unused.
    created_at: Timestamp,
    /// Active: when it was last refreshed. Tombstone: unused.
    last_seen: Timestamp,
    /// Active: the deadline under the policy of the last write, so a sweep can retire the
    /// record without knowing the policy. Tombstone: until when it is kept.
    due: Timestamp,
    /// The bucket (second) in which this record is listed in the wheel.
    bucket: u32,
    kind: Kind,
    /// Active: which deadline `due` is. Tombstone: why the session is not active.
    reason: ExpiryReason,
    /// Whether the shard keeps an [`Extra`] for this record.
    extra: bool,
    /// Tombstone: whether its end was announced ([`SessionStore::ack_ends`]).
    announced: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Free,
    Active,
    Tombstone,
}

impl Slot {
    fn new(key: SessionKey, state: State, bucket: u32) -> Self {
        let mut slot = Slot {
            key,
            created_at: Timestamp::UNIX_EPOCH,
            last_seen: Timestamp::UNIX_EPOCH,
            due: Timestamp::UNIX_EPOCH,
            bucket,
            kind: Kind::Free,
            reason: ExpiryReason::Unknown,
            extra: false,
            announced: false,
        };
        slot.set(state);
        slot
    }

    /// The record's state, without its own timeouts (see [`Shard::state`]); only called on a
    /// slot in use.
    fn state(&self) -> State {
        match self.kind {
            Kind::Active => State::Active {
                record: SessionRecord::new(self.created_at, self.last_seen),
                deadline: self.due,
                reason: self.reason,
            },
            Kind::Tombstone | Kind::Free => State::Tombstone {
                reason: self.reason,
                until: self.due,
            },
        }
    }

    fn set(&mut self, state: State) {
        match state {
            State::Active {
                record,
                deadline,
                reason,
            } => {
                self.kind = Kind::Active;
                self.announced = false;
                self.created_at = record.created_at;
                self.last_seen = record.last_seen;
                self.due = deadline;
                self.reason = reason;
            }
            State::Tombstone { reason, until } => {
                self.kind = Kind::Tombstone;
                self.due = until;
                self.reason = reason;
            }
        }
    }
}

#[derive(Clone, Copy)]
enum State {
    Active {
        record: SessionRecord,
        deadline: Timestamp,
        reason: ExpiryReason,
    },
    Tombstone {
        reason: ExpiryReason,
        until: Timestamp,
    },
}

impl State {
    fn active(record: SessionRecord, policy: &Policy) -> Self {
        let (deadline, reason) = policy.deadline(&record);
        State::Active {
            record,
            deadline,
            reason,
        }
    }

    /// When a sweep must next look at this record.
    fn due(&self) -> Timestamp {
        match *self {
            State::Active { deadline, .. } => deadline,
            State::Tombstone { until, .. } => until,
        }
    }
}

/// The wheel bucket a due time falls in: the first whole second at or after it (seconds
/// since 1970 fit in 32 bits until 2106; later ones wait in the last bucket).
fn bucket_of(due: Timestamp) -> u32 {
    u32::try_from(due.as_unix_millis().div_ceil(1000)).unwrap_or(u32::MAX)
}

/// The index's hash of a key: it is already a SHA-256, so eight of its bytes are uniform
/// (the shard is chosen by two others).
fn hash_of(key: &SessionKey) -> u64 {
    let bytes = key.as_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

impl Shard {
    fn len(&self) -> usize {
        self.index.len()
    }

    fn find(&self, key: &SessionKey) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash_of(key), |&slot| slots[slot as usize].key == *key)
            .map(|&slot| slot as usize)
    }

    /// Stores a new record, listed in no bucket yet, and returns its slot.
    fn insert(&mut self, key: &SessionKey, state: State, bucket: u32) -> u32 {
        if let State::Active { .. } = state {
            self.active += 1;
        }
        let record = Slot::new(*key, state, bucket);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = record;
                slot
            }
            None => {
                // 2^32 records of 64 bytes would be 256 GiB in one shard.
                let slot =
                    u32::try_from(self.slots.len()).expect("fewer than 2^32 records per shard");
                self.slots.push(record);
                slot
            }
        };
        let slots = &self.slots;
        self.index.insert_unique(hash_of(key), slot, |&other| {
            hash_of(&slots[other as usize].key)
        });
        slot
    }

    /// Forgets the record in `slot`; its wheel listings become stale.
    fn remove(&mut self, slot: usize) {
        let key = self.slots[slot].key;
        if let Ok(entry) = self
            .index
            .find_entry(hash_of(&key), |&other| other as usize == slot)
        {
            entry.remove();
        }
        if self.slots[slot].kind == Kind::Active {
            self.active -= 1;
        }
        if std::mem::take(&mut self.slots[slot].extra) {
            if let Some(owner) = self.extras.remove(&key).and_then(|extra| extra.owner) {
                self.released.push((owner, key));
            }
        }
        self.slots[slot].kind = Kind::Free;
        self.free.push(slot as u32);
    }

    /// The record's state, with its own timeouts.
    fn state(&self, slot: usize) -> State {
        let mut state = self.slots[slot].state();
        if let State::Active { record, .. } = &mut state {
            if self.slots[slot].extra {
                let extra = self.extras.get(&self.slots[slot].key);
                record.timeouts = extra.and_then(|extra| extra.timeouts);
            }
        }
        state
    }

    /// Whether a begin at `now` would begin a new session (the key is unknown or forgotten by
    /// then); writes nothing.
    fn would_begin(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> bool {
        match self.find(key).map(|slot| self.state(slot)) {
            None => true,
            Some(State::Tombstone { until, .. }) => until <= now,
            Some(State::Active { record, .. }) => policy.tombstone_until(&record) <= now,
        }
    }

    /// The owner of the session if it is active at `now`; writes nothing.
    fn owner_of(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Option<String> {
        let slot = self.find(key)?;
        match self.state(slot) {
            State::Active { record, .. } if policy.expiry(&record, now).is_none() => self
                .extras
                .get(key)
                .and_then(|extra| extra.owner.as_deref())
                .map(str::to_owned),
            _ => None,
        }
    }

    /// What an owner's index entry for `key` stands for at `now`; writes nothing.
    fn listing(&self, key: &SessionKey, owner: &str, now: Timestamp, policy: &Policy) -> Listing {
        let Some(slot) = self.find(key) else {
            return Listing::Gone;
        };
        // An id can be begun again for someone else once its old record is forgotten.
        let owned = self.slots[slot].extra
            && self
                .extras
                .get(key)
                .and_then(|extra| extra.owner.as_deref())
                == Some(owner);
        match self.state(slot) {
            State::Active { record, .. } if owned => match policy.expiry(&record, now) {
                None => Listing::Active(record),
                Some(_) => Listing::Expired,
            },
            _ => Listing::Gone,
        }
    }

    /// Gives an active session new timeouts of its own, retiring it if they put its deadline
    /// at or before `now`. Answers whether the session was active.
    fn set_timeouts(
        &mut self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        timeouts: SessionTimeouts,
    ) -> bool {
        let Some(slot) = self.find(key) else {
            return false;
        };
        let State::Active { record, .. } = self.state(slot) else {
            return false;
        };
        if let Some(reason) = policy.expiry(&record, now) {
            // Already over: settled as a check would settle it.
            if policy.tombstone_until(&record) <= now {
                self.remove(slot);
            } else {
                self.retire_expired(slot, &record, reason, policy);
            }
            return false;
        }
        let record = record.with_timeouts(Some(timeouts));
        self.slots[slot].extra = true;
        self.extras
            .entry(*key)
            .or_insert(Extra {
                owner: None,
                timeouts: None,
            })
            .timeouts = Some(timeouts);
        match policy.expiry(&record, now) {
            // Over so long ago that its tombstone would be gone too: forgotten, as a check
            // at `now` would forget it, so a clock stepping back cannot find it.
            Some(_) if policy.tombstone_until(&record) <= now => self.remove(slot),
            Some(reason) => self.retire_expired(slot, &record, reason, policy),
            None => {
                let state = State::active(record, policy);
                self.slots[slot].set(state);
                // Shorter timeouts can bring the deadline before the bucket it is listed in.
                let bucket = bucket_of(state.due());
                if bucket < self.slots[slot].bucket {
                    self.relist(slot, state.due());
                }
            }
        }
        true
    }

    fn list(&mut self, slot: usize, bucket: u32) {
        self.earliest = self.earliest.min(bucket);
        self.wheel.entry(bucket).or_default().push(slot as u32);
    }

    fn check(&mut self, key: &SessionKey, now: Timestamp, policy: &Policy, touch: Touch) -> Check {
        let Some(slot) = self.find(key) else {
            return Check::Expired(ExpiryReason::Unknown);
        };
        match self.state(slot) {
            State::Tombstone { until, .. } if until <= now => {
                self.remove(slot);
                Check::Expired(ExpiryReason::Unknown)
            }
            State::Tombstone { reason, .. } => Check::Expired(reason),
            State::Active { mut record, .. } => {
                if let Some(reason) = policy.expiry(&record, now) {
                    if policy.tombstone_until(&record) <= now {
                        self.remove(slot);
                        return Check::Expired(ExpiryReason::Unknown);
                    }
                    self.retire_expired(slot, &record, reason, policy);
                    return Check::Retired(reason);
                }
                if touch == Touch::Refresh && policy.needs_touch(&record, now) {
                    record.last_seen = record.last_seen.max(now);
                    self.slots[slot].set(State::active(record, policy));
                    // No reschedule: the deadline only moved later, and the sweep that finds
                    // the record early lists it again at its new deadline.
                }
                Check::Active(record)
            }
        }
    }

    fn begin(
        &mut self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        owner: Option<&Arc<str>>,
        timeouts: Option<SessionTimeouts>,
    ) -> Begin {
        if let Some(slot) = self.find(key) {
            return match self.state(slot) {
                // Forgotten: the listing in the wheel is stale once the record is replaced.
                State::Tombstone { until, .. } if until <= now => {
                    self.remove(slot);
                    self.begin(key, now, policy, owner, timeouts)
                }
                State::Active { record, .. } => match policy.expiry(&record, now) {
                    None => Begin::AlreadyActive,
                    Some(_) if policy.tombstone_until(&record) <= now => {
                        self.remove(slot);
                        self.begin(key, now, policy, owner, timeouts)
                    }
                    Some(reason) => {
                        self.retire_expired(slot, &record, reason, policy);
                        Begin::Refused(reason)
                    }
                },
                State::Tombstone { reason, .. } => Begin::Refused(reason),
            };
        }
        let state = State::active(SessionRecord::new(now, now).with_timeouts(timeouts), policy);
        let bucket = bucket_of(state.due());
        let slot = self.insert(key, state, bucket);
        if owner.is_some() || timeouts.is_some() {
            self.slots[slot as usize].extra = true;
            self.extras.insert(
                *key,
                Extra {
                    owner: owner.cloned(),
                    timeouts,
                },
            );
        }
        self.list(slot as usize, bucket);
        Begin::Began
    }

    fn end(
        &mut self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        reason: ExpiryReason,
    ) -> bool {
        let Some(slot) = self.find(key) else {
            return false;
        };
        let record = match self.state(slot) {
            // Forgotten at this `now`, as check and begin would find it: left in place, a
            // clock stepping back would find it again.
            State::Tombstone { until, .. } if until <= now => {
                self.remove(slot);
                return false;
            }
            State::Tombstone { .. } => return false,
            State::Active { record, .. } => record,
        };
        match policy.expiry(&record, now) {
            None => {
                let until = now.saturating_add(policy.tombstone_retention());
                self.retire(slot, reason, until);
                true
            }
            Some(_) if policy.tombstone_until(&record) <= now => {
                self.remove(slot);
                false
            }
            Some(reason) => {
                self.retire_expired(slot, &record, reason, policy);
                false
            }
        }
    }

    /// Retires a session found past its deadline; its tombstone is kept for the retention
    /// counted from the deadline, so the answer does not depend on when it was found.
    fn retire_expired(
        &mut self,
        slot: usize,
        record: &SessionRecord,
        reason: ExpiryReason,
        policy: &Policy,
    ) {
        self.retire(slot, reason, policy.tombstone_until(record));
    }

    /// Lists a new tombstone's end for announcement.
    fn ended(&mut self, slot: usize) {
        self.ends.push(self.slots[slot].key);
        let tombstones = self.len() - self.active;
        if self.ends.len() > 2 * tombstones + 64 {
            let mut ends = std::mem::take(&mut self.ends);
            ends.retain(|key| self.unannounced(key));
            self.ends = ends;
        }
    }

    /// Whether `key` is a tombstone whose end is not yet acknowledged.
    fn unannounced(&self, key: &SessionKey) -> bool {
        self.find(key).is_some_and(|slot| {
            let record = &self.slots[slot];
            record.kind == Kind::Tombstone && !record.announced
        })
    }

    /// Replaces a record with a tombstone kept until `until`.
    fn retire(&mut self, slot: usize, reason: ExpiryReason, until: Timestamp) {
        self.active -= 1;
        let record = &mut self.slots[slot];
        record.set(State::Tombstone { reason, until });
        let bucket = bucket_of(until);
        // A tombstone can fall due before the deadline the record is listed at; list it
        // earlier so it does not linger. The old listing becomes stale.
        if bucket < record.bucket {
            record.bucket = bucket;
            self.list(slot, bucket);
        }
        self.ended(slot);
    }

    /// Looks at up to `budget` records listed in buckets that are due at `now`: retires
    /// active records past their deadline, removes tombstones past their retention, and lists
    /// again records whose deadline moved. Returns how many records it removed and how many
    /// listings it looked at (fewer than `budget` when nothing more is due).
    #[inline]
    fn sweep(&mut self, now: Timestamp, budget: usize) -> (usize, usize) {
        let now_bucket = u32::try_from(now.as_unix_millis() / 1000).unwrap_or(u32::MAX);
        if now_bucket < self.earliest {
            // Inlined, most calls stop here.
            return (0, 0);
        }
        self.sweep_due(now, now_bucket, budget)
    }

    fn sweep_due(&mut self, now: Timestamp, now_bucket: u32, budget: usize) -> (usize, usize) {
        let mut removed = 0;
        let mut seen = 0;
        while seen < budget {
            let Some(mut due) = self.wheel.first_entry() else {
                self.earliest = u32::MAX;
                break;
            };
            let bucket = *due.key();
            if bucket > now_bucket {
                self.earliest = bucket;
                break;
            }
            let Some(slot) = due.get_mut().pop() else {
                due.remove();
                continue;
            };
            if due.get().is_empty() {
                due.remove();
            }
            seen += 1;
            let slot = slot as usize;
            let record = &mut self.slots[slot];
            if record.kind == Kind::Free || record.bucket != bucket {
                continue;
            }
            match record.state() {
                State::Tombstone { until, .. } if until <= now => {
                    self.remove(slot);
                    removed += 1;
                }
                State::Active {
                    deadline, reason, ..
                } if deadline <= now => {
                    let until = deadline.saturating_add(self.retention);
                    if until <= now {
                        // Past its retention as well: a tombstone would only be removed on
                        // its next visit, and every call answers a missing key as it would
                        // that tombstone (unknown).
                        self.remove(slot);
                        removed += 1;
                    } else {
                        // Retired here, removed when its own retention ends.
                        record.set(State::Tombstone { reason, until });
                        self.active -= 1;
                        self.ended(slot);
                        self.relist(slot, until);
                    }
                }
                state => self.relist(slot, state.due()),
            }
        }
        (removed, seen)
    }

    /// Adds to `out` ends not yet announced and not leased at `now` until it holds `limit`
    /// (it may hold some from other shards already), leasing each until `lease_until`; drops
    /// listings of records since forgotten or announced. Stops at `limit`, so a claim costs
    /// what it hands out (and what it drops), not the whole list.
    fn claim(
        &mut self,
        now: Timestamp,
        retention: Duration,
        limit: usize,
        lease_until: Timestamp,
        out: &mut Vec<SessionEnd>,
    ) {
        let mut next = 0;
        while next < self.ends.len() && out.len() < limit {
            let key = self.ends[next];
            let listed = self.find(&key).and_then(|slot| {
                let record = &self.slots[slot];
                match record.state() {
                    State::Tombstone { reason, until } if !record.announced && until > now => {
                        Some((slot, reason, until))
                    }
                    _ => None,
                }
            });
            let Some((slot, reason, until)) = listed else {
                // Forgotten, announced, or past its horizon: no longer anyone's to announce.
                self.leases.remove(&key);
                self.ends.swap_remove(next);
                continue;
            };
            next += 1;
            if self.leases.get(&key).is_some_and(|&lease| lease > now) {
                continue;
            }
            self.leases.insert(key, lease_until);
            let owner = self.slots[slot]
                .extra
                .then(|| self.extras.get(&key))
                .flatten()
                .and_then(|extra| extra.owner.as_deref())
                .map(str::to_owned);
            out.push(SessionEnd {
                key,
                owner,
                reason,
                at: Timestamp::from_unix_millis(
                    until
                        .as_unix_millis()
                        .saturating_sub(retention.as_millis() as u64),
                ),
            });
        }
    }

    /// Marks a tombstone's end announced.
    fn ack(&mut self, key: &SessionKey) {
        self.leases.remove(key);
        if let Some(slot) = self.find(key) {
            if self.slots[slot].kind == Kind::Tombstone {
                self.slots[slot].announced = true;
            }
        }
    }

    fn relist(&mut self, slot: usize, due: Timestamp) {
        let bucket = bucket_of(due);
        self.slots[slot].bucket = bucket;
        self.list(slot, bucket);
    }
}
