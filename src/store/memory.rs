//! [`MemoryStore`]: sessions in this process, sharded so requests on different sessions do
//! not wait on each other.

use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Ready};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{Begin, Check, ExpiryReason, Policy, SessionKey, SessionRecord, SessionStore, Touch};
use crate::{StoreError, Timestamp};

/// How many due records a request sweeps from its shard, so purging is spread over requests
/// and no request pays for a whole purge.
const SWEEP_PER_CALL: usize = 8;

/// Keeps sessions in this process's memory. The default store.
///
/// Sessions live as long as the process: a restart forgets them (every cookie then gets
/// 440 with reason `unknown`). Use [`SqliteStore`](crate) or another persistent store to keep
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
}

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
        }
    }

    /// How many records are kept: active sessions plus the tombstones of sessions that
    /// expired or ended within the retention.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).records.len())
            .sum()
    }

    /// Whether no record is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

/// A poisoned shard still holds consistent data (every update is a single assignment), so
/// a panic elsewhere must not take the store down with it.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
        let mut shard = self.shard(key);
        shard.retention = policy.tombstone_retention();
        let check = shard.check(key, now, policy, touch);
        shard.sweep(now, SWEEP_PER_CALL);
        ready(Ok(check))
    }

    fn begin(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::BeginFuture {
        let mut shard = self.shard(key);
        shard.retention = policy.tombstone_retention();
        let begin = shard.begin(key, now, policy);
        shard.sweep(now, SWEEP_PER_CALL);
        ready(Ok(begin))
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        let mut shard = self.shard(key);
        shard.retention = policy.tombstone_retention();
        let ended = shard.end(key, now, policy);
        shard.sweep(now, SWEEP_PER_CALL);
        ready(Ok(ended))
    }

    fn purge(&self, now: Timestamp) -> Self::PurgeFuture {
        let removed = self
            .shards
            .iter()
            .map(|shard| lock(shard).sweep(now, usize::MAX))
            .sum::<usize>();
        ready(Ok(removed as u64))
    }
}

#[derive(Default)]
struct Shard {
    records: HashMap<SessionKey, Entry, BuildHasherDefault<KeyHasher>>,
    /// Second-granular buckets of keys to look at once that second has passed. Each record
    /// is listed in the bucket `Entry::bucket` names; a listing elsewhere is stale and skipped.
    wheel: BTreeMap<u64, Vec<SessionKey>>,
    /// The tombstone retention of the latest call, for tombstones a sweep makes.
    retention: Duration,
}

struct Entry {
    state: State,
    /// The bucket (second) in which this record is listed in the wheel.
    bucket: u64,
}

#[derive(Clone, Copy)]
enum State {
    Active {
        record: SessionRecord,
        /// The deadline and its reason under the policy of the last write, so a sweep can
        /// retire the record without knowing the policy.
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

/// The wheel bucket a due time falls in: the first whole second at or after it.
fn bucket_of(due: Timestamp) -> u64 {
    due.as_unix_millis().div_ceil(1000)
}

impl Shard {
    fn check(&mut self, key: &SessionKey, now: Timestamp, policy: &Policy, touch: Touch) -> Check {
        let Some(entry) = self.records.get_mut(key) else {
            return Check::Expired(ExpiryReason::Unknown);
        };
        match entry.state {
            State::Tombstone { until, .. } if until <= now => {
                self.records.remove(key);
                Check::Expired(ExpiryReason::Unknown)
            }
            State::Tombstone { reason, .. } => Check::Expired(reason),
            State::Active { mut record, .. } => {
                if let Some(reason) = policy.expiry(&record, now) {
                    if policy.tombstone_until(&record) <= now {
                        self.records.remove(key);
                        return Check::Expired(ExpiryReason::Unknown);
                    }
                    self.retire_expired(key, &record, reason, policy);
                    return Check::Retired(reason);
                }
                if touch == Touch::Refresh && policy.needs_touch(&record, now) {
                    record.last_seen = record.last_seen.max(now);
                    entry.state = State::active(record, policy);
                    // No reschedule: the deadline only moved later, and the sweep that finds
                    // the record early lists it again at its new deadline.
                }
                Check::Active(record)
            }
        }
    }

    fn begin(&mut self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Begin {
        if let Some(entry) = self.records.get(key) {
            return match entry.state {
                // Forgotten: the listing in the wheel is stale once the record is replaced.
                State::Tombstone { until, .. } if until <= now => {
                    self.records.remove(key);
                    self.begin(key, now, policy)
                }
                State::Active { record, .. } => match policy.expiry(&record, now) {
                    None => Begin::AlreadyActive,
                    Some(_) if policy.tombstone_until(&record) <= now => {
                        self.records.remove(key);
                        self.begin(key, now, policy)
                    }
                    Some(reason) => {
                        self.retire_expired(key, &record, reason, policy);
                        Begin::Refused(reason)
                    }
                },
                State::Tombstone { reason, .. } => Begin::Refused(reason),
            };
        }
        let state = State::active(
            SessionRecord {
                created_at: now,
                last_seen: now,
            },
            policy,
        );
        let bucket = bucket_of(state.due());
        self.records.insert(*key, Entry { state, bucket });
        self.wheel.entry(bucket).or_default().push(*key);
        Begin::Began
    }

    fn end(&mut self, key: &SessionKey, now: Timestamp, policy: &Policy) -> bool {
        let Some(entry) = self.records.get(key) else {
            return false;
        };
        let State::Active { record, .. } = entry.state else {
            return false;
        };
        match policy.expiry(&record, now) {
            None => {
                let until = now.saturating_add(policy.tombstone_retention());
                self.retire(key, ExpiryReason::Ended, until);
                true
            }
            Some(_) if policy.tombstone_until(&record) <= now => {
                self.records.remove(key);
                false
            }
            Some(reason) => {
                self.retire_expired(key, &record, reason, policy);
                false
            }
        }
    }

    /// Retires a session found past its deadline; its tombstone is kept for the retention
    /// counted from the deadline, so the answer does not depend on when it was found.
    fn retire_expired(
        &mut self,
        key: &SessionKey,
        record: &SessionRecord,
        reason: ExpiryReason,
        policy: &Policy,
    ) {
        self.retire(key, reason, policy.tombstone_until(record));
    }

    /// Replaces a record with a tombstone kept until `until`.
    fn retire(&mut self, key: &SessionKey, reason: ExpiryReason, until: Timestamp) {
        let Some(entry) = self.records.get_mut(key) else {
            return;
        };
        entry.state = State::Tombstone { reason, until };
        let bucket = bucket_of(until);
        // A tombstone can fall due before the deadline the record is listed at; list it
        // earlier so it does not linger. The old listing becomes stale.
        if bucket < entry.bucket {
            entry.bucket = bucket;
            self.wheel.entry(bucket).or_default().push(*key);
        }
    }

    /// Looks at up to `budget` records listed in buckets that are due at `now`: retires
    /// active records past their deadline, removes tombstones past their retention, and lists
    /// again records whose deadline moved. Returns how many records it removed.
    fn sweep(&mut self, now: Timestamp, budget: usize) -> usize {
        let now_bucket = now.as_unix_millis() / 1000;
        let mut removed = 0;
        let mut seen = 0;
        while seen < budget {
            let Some(mut due) = self.wheel.first_entry() else {
                break;
            };
            let bucket = *due.key();
            if bucket > now_bucket {
                break;
            }
            let Some(key) = due.get_mut().pop() else {
                due.remove();
                continue;
            };
            if due.get().is_empty() {
                due.remove();
            }
            seen += 1;
            let Some(entry) = self.records.get_mut(&key) else {
                continue;
            };
            if entry.bucket != bucket {
                continue;
            }
            match entry.state {
                State::Tombstone { until, .. } if until <= now => {
                    self.records.remove(&key);
                    removed += 1;
                }
                State::Active {
                    deadline, reason, ..
                } if deadline <= now => {
                    // Retired here, removed when its own retention ends.
                    let until = deadline.saturating_add(self.retention);
                    entry.state = State::Tombstone { reason, until };
                    self.relist(&key, until);
                }
                state => self.relist(&key, state.due()),
            }
        }
        removed
    }

    fn relist(&mut self, key: &SessionKey, due: Timestamp) {
        let bucket = bucket_of(due);
        if let Some(entry) = self.records.get_mut(key) {
            entry.bucket = bucket;
            self.wheel.entry(bucket).or_default().push(*key);
        }
    }
}

/// Hashes a [`SessionKey`] by taking eight of its bytes: it is already a SHA-256, so running
/// SipHash over it again would buy nothing.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
        }
    }
}
