//! [`NearCache`]: what one app instance remembers of sessions it saw active in a shared store,
//! so that it can answer their checks without a round trip.
//!
//! An answer from memory must be the store's answer. It is, for as long as nothing changed the
//! session in the store but this instance's own refreshes, which the store would skip anyway:
//!
//! - an entry is the record exactly as the store's last check returned it, and it answers only
//!   checks that would write nothing (before the session's deadline, and, for a refreshing
//!   request, within the touch interval of its `last_seen`); any other check goes to the
//!   store, which writes and gives the entry its new record;
//! - every change made elsewhere that the deadline does not foretell (an end, a sign-out
//!   everywhere, a session superseded or withdrawn, new timeouts) is pushed to every instance,
//!   which forgets the entry ([`forget`](NearCache::forget));
//! - while the push channel is down, nothing is remembered or answered, and what was
//!   remembered is dropped: a push may have been missed;
//! - no entry is used longer than `max_age` after the store was asked, so that a push lost
//!   without the channel noticing (an instance that ended a session and crashed before
//!   pushing, a connection that died silently) delays a revocation by `max_age` at most.
//!
//! A push can overtake the store's answer it revokes (they travel on two connections): a
//! check takes a [`Ticket`] before asking, and its answer is remembered only if no push was
//! heard since.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{Check, Policy, SessionKey, SessionRecord, Touch};
use crate::Timestamp;

/// Shards of the map, so requests on many sessions rarely wait on one lock.
const SHARDS: usize = 16;

/// What one instance remembers of active sessions; see the module docs.
#[derive(Debug)]
pub(crate) struct NearCache {
    shards: [Mutex<HashMap<SessionKey, Entry>>; SHARDS],
    /// Pushes heard (and channel losses), so an answer fetched before one is not remembered.
    heard: AtomicU64,
    /// Whether the push channel is up: nothing is remembered or answered while it is not.
    live: AtomicBool,
    max_age: Duration,
    /// Entries per shard at most; a full shard is emptied (its sessions are asked again).
    shard_capacity: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    record: SessionRecord,
    fetched: Instant,
}

/// Taken before asking the store: the pushes heard until then, and when it was asked (an
/// entry's age counts from there, so `max_age` also covers the time the answer took).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    heard: u64,
    asked: Instant,
}

impl NearCache {
    /// A cache that uses an entry for `max_age` at most and keeps about `capacity` entries.
    /// The channel starts down: call [`regained`](NearCache::regained) once subscribed.
    pub(crate) fn new(max_age: Duration, capacity: usize) -> Self {
        NearCache {
            shards: std::array::from_fn(|_| Mutex::default()),
            heard: AtomicU64::new(0),
            live: AtomicBool::new(false),
            max_age,
            shard_capacity: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard(&self, key: &SessionKey) -> MutexGuard<'_, HashMap<SessionKey, Entry>> {
        // The key is a SHA-256: any of its bytes spreads as well as a hash would.
        let index = usize::from(key.as_bytes()[0]) % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The store's answer to this check, if memory holds it: see the module docs. `None`
    /// means "ask the store".
    pub(crate) fn answer(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Option<Check> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        let entry = *self.shard(key).get(key)?;
        let record = entry.record;
        let young = entry.fetched.elapsed() < self.max_age;
        let active = now < policy.deadline(&record).0;
        let writes = touch == Touch::Refresh && policy.needs_touch(&record, now);
        (young && active && !writes).then_some(Check::Active(record))
    }

    /// Taken before asking the store, for [`remember`](NearCache::remember).
    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            heard: self.heard.load(Ordering::Acquire),
            asked: Instant::now(),
        }
    }

    /// Keeps what the store answered a check that took `ticket`: an active session's record,
    /// unless a push was heard since the ticket (it may be this session's end) or the channel
    /// is down; any other answer drops the entry.
    pub(crate) fn remember(&self, key: &SessionKey, check: &Check, ticket: Ticket) {
        let mut shard = self.shard(key);
        let Check::Active(record) = check else {
            shard.remove(key);
            return;
        };
        // Read under the shard's lock: a push forgets under it too, so it comes before this
        // read (and is seen) or after the insert (and removes it).
        if self.heard.load(Ordering::Acquire) != ticket.heard || !self.live.load(Ordering::Acquire)
        {
            shard.remove(key);
            return;
        }
        if shard.len() >= self.shard_capacity && !shard.contains_key(key) {
            shard.clear();
        }
        shard.insert(
            *key,
            Entry {
                record: *record,
                fetched: ticket.asked,
            },
        );
    }

    /// Drops the session's entry, if any.
    pub(crate) fn remove(&self, key: &SessionKey) {
        self.shard(key).remove(key);
    }

    /// A push: the session changed elsewhere.
    pub(crate) fn forget(&self, key: &SessionKey) {
        let mut shard = self.shard(key);
        self.heard.fetch_add(1, Ordering::AcqRel);
        shard.remove(key);
    }

    /// The push channel is down: drop everything, remember nothing until it is back.
    pub(crate) fn lost(&self) {
        self.live.store(false, Ordering::Release);
        self.heard.fetch_add(1, Ordering::AcqRel);
        self.clear();
    }

    /// The push channel is up (again). What was remembered before is gone already.
    pub(crate) fn regained(&self) {
        self.clear();
        self.heard.fetch_add(1, Ordering::AcqRel);
        self.live.store(true, Ordering::Release);
    }

    fn clear(&self) {
        for shard in &self.shards {
            shard.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// How many entries it holds.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap().len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ExpiryReason;

    const T0: Timestamp = Timestamp::from_unix_millis(1_767_225_600_000);

    fn policy(touch_interval: Option<Duration>) -> Policy {
        Policy::new(
            Duration::from_secs(60),
            None,
            touch_interval,
            Duration::from_secs(60),
        )
    }

    fn key(n: u8) -> SessionKey {
        SessionKey::from_bytes([n; 32])
    }

    fn live_cache() -> NearCache {
        let cache = NearCache::new(Duration::from_secs(3600), 1024);
        cache.regained();
        cache
    }

    fn active(last_seen: Timestamp) -> Check {
        Check::Active(SessionRecord::new(T0, last_seen))
    }

    #[test]
    fn answers_what_the_store_answered_while_nothing_would_be_written() {
        let cache = live_cache();
        let policy = policy(Some(Duration::from_secs(10)));
        cache.remember(&key(1), &active(T0), cache.ticket());
        let at = |secs| T0.saturating_add(Duration::from_secs(secs));
        // Passive checks never write: answered until the deadline, not at it.
        assert_eq!(
            cache.answer(&key(1), at(59), &policy, Touch::Passive),
            Some(active(T0))
        );
        assert_eq!(cache.answer(&key(1), at(60), &policy, Touch::Passive), None);
        // A refresh within the touch interval writes nothing; one at it does: the store's.
        assert_eq!(
            cache.answer(&key(1), at(9), &policy, Touch::Refresh),
            Some(active(T0))
        );
        assert_eq!(cache.answer(&key(1), at(10), &policy, Touch::Refresh), None);
        assert_eq!(cache.answer(&key(2), T0, &policy, Touch::Passive), None);
    }

    #[test]
    fn without_a_touch_interval_every_refresh_goes_to_the_store() {
        let cache = live_cache();
        let policy = policy(None);
        cache.remember(&key(1), &active(T0), cache.ticket());
        assert_eq!(
            cache.answer(&key(1), T0, &policy, Touch::Refresh),
            Some(active(T0))
        );
        let later = T0.saturating_add(Duration::from_millis(1));
        assert_eq!(cache.answer(&key(1), later, &policy, Touch::Refresh), None);
        assert_eq!(
            cache.answer(&key(1), later, &policy, Touch::Passive),
            Some(active(T0))
        );
    }

    #[test]
    fn a_push_forgets_and_an_answer_older_than_a_push_is_not_kept() {
        let cache = live_cache();
        let policy = policy(None);
        cache.remember(&key(1), &active(T0), cache.ticket());
        cache.forget(&key(1));
        assert_eq!(cache.answer(&key(1), T0, &policy, Touch::Passive), None);
        // Asked before a push (of any session), answered after it: not kept.
        let ticket = cache.ticket();
        cache.forget(&key(9));
        cache.remember(&key(1), &active(T0), ticket);
        assert_eq!(cache.answer(&key(1), T0, &policy, Touch::Passive), None);
        cache.remember(&key(1), &active(T0), cache.ticket());
        assert_eq!(cache.len(), 1);
        // An answer that is not active drops the entry.
        cache.remember(
            &key(1),
            &Check::Expired(ExpiryReason::Ended),
            cache.ticket(),
        );
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn nothing_is_kept_or_answered_while_the_channel_is_down() {
        let cache = NearCache::new(Duration::from_secs(3600), 1024);
        let policy = policy(None);
        // Down from the start.
        cache.remember(&key(1), &active(T0), cache.ticket());
        assert_eq!(cache.len(), 0);
        cache.regained();
        cache.remember(&key(1), &active(T0), cache.ticket());
        let ticket = cache.ticket();
        cache.lost();
        assert_eq!(cache.answer(&key(1), T0, &policy, Touch::Passive), None);
        assert_eq!(cache.len(), 0);
        // Back up: what was asked before the loss is not kept, and nothing from before lives.
        cache.regained();
        cache.remember(&key(1), &active(T0), ticket);
        assert_eq!(cache.answer(&key(1), T0, &policy, Touch::Passive), None);
    }

    #[test]
    fn an_entry_is_not_used_past_its_max_age() {
        let cache = NearCache::new(Duration::ZERO, 1024);
        cache.regained();
        cache.remember(&key(1), &active(T0), cache.ticket());
        assert_eq!(
            cache.answer(&key(1), T0, &policy(None), Touch::Passive),
            None
        );
    }

    #[test]
    fn a_full_shard_is_emptied_rather_than_grown() {
        // Two entries per shard; keys whose first byte is a multiple of SHARDS share shard 0.
        let cache = NearCache::new(Duration::from_secs(3600), SHARDS * 2);
        cache.regained();
        let policy = policy(None);
        for n in [1, 0, 16] {
            cache.remember(&key(n), &active(T0), cache.ticket());
        }
        assert_eq!(cache.len(), 3, "a shard holds up to its capacity");
        cache.remember(&key(16), &active(T0), cache.ticket());
        assert_eq!(
            cache.len(),
            3,
            "a key already kept replaces its entry, in a full shard too"
        );
        cache.remember(&key(32), &active(T0), cache.ticket());
        assert_eq!(cache.len(), 2, "a new key empties its full shard");
        for (n, kept) in [(0, false), (16, false), (32, true), (1, true)] {
            let answer = cache.answer(&key(n), T0, &policy, Touch::Passive);
            assert_eq!(answer.is_some(), kept, "key {n}");
        }
    }

    #[test]
    fn a_removed_entry_is_asked_again() {
        let cache = live_cache();
        let policy = policy(None);
        cache.remember(&key(1), &active(T0), cache.ticket());
        cache.remember(&key(2), &active(T0), cache.ticket());
        cache.remove(&key(1));
        assert_eq!(cache.answer(&key(1), T0, &policy, Touch::Passive), None);
        assert_eq!(
            cache.answer(&key(2), T0, &policy, Touch::Passive),
            Some(active(T0))
        );
    }
}
