//! The [`SessionStore`] trait and the types its operations speak.
//!
//! A store keeps, per session, its creation time and last-seen time under a [`SessionKey`]
//! (a hash of the id). Every operation is one atomic step of the store: that is what makes an
//! expired session stay expired however many requests race on it, on however many app
//! instances.

mod ends;
mod key;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod listener;
mod memory;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod near;
mod owner;
#[cfg(feature = "postgres")]
mod postgres;
mod redact;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;

use std::future::Future;
use std::time::Duration;

pub use self::ends::SessionEnd;
pub use self::key::SessionKey;
pub use self::memory::MemoryStore;
pub(crate) use self::owner::unsupported;
pub use self::owner::{
    NewSession, OnLimit, OwnedSession, SessionLimit, SessionTimeouts, StoreFuture,
};
#[cfg(feature = "postgres")]
pub use self::postgres::PostgresStore;
pub use self::redact::redact_credentials;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
#[cfg(any(feature = "postgres", feature = "sqlite"))]
pub use self::sql::SqlOptions;
#[cfg(feature = "sqlite")]
pub use self::sqlite::SqliteStore;
use crate::{StoreError, Timestamp};

/// A backend that tracks sessions for the layer.
///
/// Implementations must make each method one atomic step: a check that finds a session expired
/// must, in the same step, mark it so no later call can see it active (for Redis one script,
/// for SQL one statement, in memory one lock). The futures are associated types, so the layer's
/// response future stays a named type and a store that needs no I/O ([`MemoryStore`]) costs no
/// allocation; a networked store may box its futures.
///
/// Times are passed in rather than read, so the layer's [`Clock`](crate::Clock) governs every
/// store and tests can step it. A store must treat `now` earlier than a stored time as no time
/// having passed (a clock stepping backwards never makes a session younger), and must never
/// move `last_seen` backwards.
pub trait SessionStore: Clone + Send + Sync + 'static {
    /// The future [`check`](SessionStore::check) returns.
    type CheckFuture: Future<Output = Result<Check, StoreError>> + Send + 'static;
    /// The future [`begin`](SessionStore::begin) returns.
    type BeginFuture: Future<Output = Result<Begin, StoreError>> + Send + 'static;
    /// The future [`end`](SessionStore::end) returns.
    type EndFuture: Future<Output = Result<bool, StoreError>> + Send + 'static;
    /// The future [`purge`](SessionStore::purge) returns.
    type PurgeFuture: Future<Output = Result<u64, StoreError>> + Send + 'static;

    /// Checks the session and, if it is active and `touch` is [`Touch::Refresh`], moves its
    /// `last_seen` to `now` (unless [`Policy::touch_interval`] allows skipping the write).
    ///
    /// A session found expired is, in the same atomic step, replaced by a tombstone (and
    /// reported as [`Check::Retired`] by the call that does it) that
    /// remembers the reason until [`Policy::tombstone_retention`] after its deadline; past
    /// that, judged by `now` and not by the store's own clock, the key answers
    /// [`ExpiryReason::Unknown`]. An unknown key writes nothing.
    fn check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Self::CheckFuture;

    /// [`check`](SessionStore::check), answered at once by a store whose answer needs no
    /// waiting: an in-process store such as [`MemoryStore`], whose memory
    /// *is* the store, or a shared store's near cache. `None` (the default) means "ask
    /// [`check`](SessionStore::check)", and the layer then does; a `None` must have written
    /// nothing.
    ///
    /// An answer must be the one `check` would give, with the same writes done: the layer takes
    /// it instead of calling `check`, and skips the future and its timeout
    /// ([`store_timeout`](crate::SessionTimeoutBuilder::store_timeout) does not bound this
    /// call). So a cache in front of a shared store may answer only checks that would write
    /// nothing, and only while it hears every change other instances make (an end would
    /// otherwise go unseen): `RedisStore::with_near_cache` shows how.
    fn try_check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Option<Result<Check, StoreError>> {
        let _ = (key, now, policy, touch);
        None
    }

    /// Begins tracking a session created at `now`, with the owner and own timeouts `new`
    /// gives. Beginning a session that is already active changes nothing; one that expired or
    /// ended is refused while its tombstone is kept.
    ///
    /// With an owner and a [`Policy::session_limit`], the new session and the owner's others
    /// are counted in the same step (or, on a store without multi-key atomicity, in an order
    /// that every instance settles the same way): beyond the limit, the owner's oldest
    /// sessions (by `created_at`, then key) end with [`ExpiryReason::Superseded`], or with
    /// [`OnLimit::Refuse`] the new one is not begun ([`Begin::LimitReached`]).
    fn begin(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        new: NewSession<'_>,
    ) -> Self::BeginFuture;

    /// Ends an active session, leaving a tombstone with [`ExpiryReason::Ended`]. Returns
    /// whether there was an active session to end; an unknown key writes nothing. A record
    /// past its retention at `now` is forgotten, as [`check`](SessionStore::check) and
    /// [`begin`](SessionStore::begin) forget it, so a clock stepping back cannot find it again.
    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture;

    /// Removes every record whose session expired and whose tombstone is past its retention
    /// as of `now`, and returns how many it removed. Its cost grows with what expired, not
    /// with what is stored.
    fn purge(&self, now: Timestamp) -> Self::PurgeFuture;

    /// Replaces an active session's own timeouts (already within the layer's bounds) and
    /// answers whether there was an active session. If the new timeouts put its deadline at
    /// or before `now`, the session is retired as a check would retire it.
    ///
    /// Optional: the default answers [`StoreError::Unsupported`].
    fn set_timeouts(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        timeouts: SessionTimeouts,
    ) -> StoreFuture<bool> {
        let _ = (key, now, policy, timeouts);
        unsupported("change a session's timeouts")
    }

    /// The owner of the session, if it is active at `now` and was begun with one; writes
    /// nothing.
    ///
    /// Optional: the default answers [`StoreError::Unsupported`].
    fn owner_of(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Option<String>> {
        let _ = (key, now, policy);
        unsupported("tell a session's owner")
    }

    /// The owner's sessions active at `now`, oldest first (by `created_at`, then key). Never
    /// lists an expired or ended session, however the owner's index lags behind.
    ///
    /// Optional: the default answers [`StoreError::Unsupported`].
    fn sessions_of(
        &self,
        owner: &str,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Vec<OwnedSession>> {
        let _ = (owner, now, policy);
        unsupported("list a principal's sessions")
    }

    /// How many sessions are active, if the store can tell without a scan (for the
    /// `session_timeout_active_sessions` gauge). The default answers `None`.
    fn active_sessions(&self) -> Option<u64> {
        None
    }

    /// Claims session ends to announce: up to `limit` sessions that ended at or before `now`
    /// (an active session past its deadline is retired in the same step, as a check would
    /// retire it), whose end is not yet announced and not claimed by a call whose lease still
    /// runs. Each one handed out stays claimed until `now + lease`; a later call, from any
    /// instance, may claim it again only after that, so an end whose claimer died before
    /// [`ack_ends`](SessionStore::ack_ends) is still announced (at least once), and while the
    /// claimer lives nobody else announces it (exactly once). A record past its horizon
    /// ([`Policy::tombstone_until`]) is forgotten with its announcement.
    ///
    /// Optional: the default answers [`StoreError::Unsupported`].
    fn claim_ends(
        &self,
        now: Timestamp,
        policy: &Policy,
        limit: usize,
        lease: Duration,
    ) -> StoreFuture<Vec<SessionEnd>> {
        let _ = (now, policy, limit, lease);
        unsupported("announce session ends")
    }

    /// Marks the ends of these sessions announced: no call claims them again. A key that is
    /// not an ended session is left alone.
    ///
    /// Optional: the default answers [`StoreError::Unsupported`].
    fn ack_ends(&self, keys: &[SessionKey], now: Timestamp, policy: &Policy) -> StoreFuture<()> {
        let _ = (keys, now, policy);
        unsupported("announce session ends")
    }

    /// Ends every session of the owner active at `now` except `keep`, each as
    /// [`end`](SessionStore::end) would, and answers how many it ended.
    ///
    /// Optional: the default answers [`StoreError::Unsupported`].
    fn end_sessions_of(
        &self,
        owner: &str,
        keep: Option<&SessionKey>,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<u64> {
        let _ = (owner, keep, now, policy);
        unsupported("end a principal's sessions")
    }
}

/// Whether a request refreshes its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// An ordinary request: an active session's `last_seen` moves to now.
    Refresh,
    /// A passive request (background polling, the status route): checked, not refreshed.
    Passive,
}

/// What [`SessionStore::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The session is active; the record is as it stands after the refresh, if any.
    Active(SessionRecord),
    /// The session is not active, and why.
    Expired(ExpiryReason),
    /// The session was active until this call, which found it past its deadline and
    /// retired it. Reported once per session, so the layer can tell the
    /// [expiry hook](crate::SessionTimeoutBuilder::on_expiry) exactly once.
    Retired(ExpiryReason),
}

/// What [`SessionStore::begin`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// A new session is tracked from now.
    Began,
    /// The session was already active; its times are unchanged.
    AlreadyActive,
    /// The id expired or ended and may not come back to life.
    Refused(ExpiryReason),
    /// The owner already has as many active sessions as the [`SessionLimit`] allows, and it
    /// refuses more ([`OnLimit::Refuse`]); nothing was written.
    LimitReached,
}

/// Why a session is not active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpiryReason {
    /// No request came within the idle timeout.
    Idle,
    /// The absolute timeout since the session began has passed.
    Absolute,
    /// The app ended the session (sign-out or id rotation).
    Ended,
    /// The owner signed in elsewhere beyond the [`SessionLimit`], which ended this, their
    /// oldest session.
    Superseded,
    /// The store has never known this id, or has forgotten it.
    Unknown,
}

impl ExpiryReason {
    /// The reason as it appears in the problem+json answer: `idle`, `absolute`, `ended`,
    /// `superseded` or `unknown`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExpiryReason::Idle => "idle",
            ExpiryReason::Absolute => "absolute",
            ExpiryReason::Ended => "ended",
            ExpiryReason::Superseded => "superseded",
            ExpiryReason::Unknown => "unknown",
        }
    }
}

/// Parses [`as_str`](ExpiryReason::as_str)'s form, for stores that keep the reason as text.
///
/// ```
/// use tower_session_timeout::ExpiryReason;
///
/// assert_eq!("idle".parse::<ExpiryReason>(), Ok(ExpiryReason::Idle));
/// assert!("sleepy".parse::<ExpiryReason>().is_err());
/// ```
impl std::str::FromStr for ExpiryReason {
    type Err = crate::ParseExpiryReasonError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "idle" => Ok(ExpiryReason::Idle),
            "absolute" => Ok(ExpiryReason::Absolute),
            "ended" => Ok(ExpiryReason::Ended),
            "superseded" => Ok(ExpiryReason::Superseded),
            "unknown" => Ok(ExpiryReason::Unknown),
            _ => Err(crate::ParseExpiryReasonError(text.to_owned())),
        }
    }
}

impl std::fmt::Display for ExpiryReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a store keeps for an active session: its two times and its own timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// When the session began.
    pub created_at: Timestamp,
    /// When the session was last refreshed.
    pub last_seen: Timestamp,
    /// The session's own timeouts, or `None` for the layer's.
    pub timeouts: Option<SessionTimeouts>,
}

impl SessionRecord {
    /// A session with the layer's timeouts that began at `created_at` and was last seen at
    /// `last_seen`.
    pub const fn new(created_at: Timestamp, last_seen: Timestamp) -> Self {
        SessionRecord {
            created_at,
            last_seen,
            timeouts: None,
        }
    }

    /// The record with its own timeouts.
    pub const fn with_timeouts(mut self, timeouts: Option<SessionTimeouts>) -> Self {
        self.timeouts = timeouts;
        self
    }
}

/// The timeouts a store applies, handed to every store call by the layer.
///
/// Built by [`SessionTimeoutBuilder::build`](crate::SessionTimeoutBuilder::build), which guarantees its rules
/// (non-zero timeouts, absolute not shorter than idle, touch interval shorter than idle).
/// A record with its own [`SessionTimeouts`] is judged by those instead of the layer's; every
/// deadline method here takes that into account, so a store that judges records through them
/// enforces per-session timeouts with no code of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    idle_timeout: Duration,
    absolute_timeout: Option<Duration>,
    touch_interval: Option<Duration>,
    tombstone_retention: Duration,
    max_session_timeouts: SessionTimeouts,
    session_limit: Option<SessionLimit>,
}

impl Policy {
    pub(crate) fn new(
        idle_timeout: Duration,
        absolute_timeout: Option<Duration>,
        touch_interval: Option<Duration>,
        tombstone_retention: Duration,
    ) -> Self {
        Policy {
            idle_timeout,
            absolute_timeout,
            touch_interval,
            tombstone_retention,
            max_session_timeouts: SessionTimeouts {
                idle: idle_timeout,
                absolute: absolute_timeout,
            },
            session_limit: None,
        }
    }

    pub(crate) fn with_owner_rules(
        mut self,
        max_session_timeouts: Option<SessionTimeouts>,
        session_limit: Option<SessionLimit>,
    ) -> Self {
        if let Some(bound) = max_session_timeouts {
            self.max_session_timeouts = bound;
        }
        self.session_limit = session_limit;
        self
    }

    /// The layer's idle timeout: a session without its own expires when
    /// `now - last_seen >= idle_timeout`.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// The layer's absolute timeout: a session without its own expires when
    /// `now - created_at >= absolute_timeout`, whatever its activity.
    pub fn absolute_timeout(&self) -> Option<Duration> {
        self.absolute_timeout
    }

    /// A refresh may be skipped while `last_seen` is younger than this.
    pub fn touch_interval(&self) -> Option<Duration> {
        self.touch_interval
    }

    /// How long a store remembers why a session expired or ended, so a late request is told
    /// the reason and a late `Set-Cookie` cannot revive the id.
    pub fn tombstone_retention(&self) -> Duration {
        self.tombstone_retention
    }

    /// The longest timeouts a session may have of its own (by default the layer's).
    pub fn max_session_timeouts(&self) -> SessionTimeouts {
        self.max_session_timeouts
    }

    /// The cap on one owner's active sessions, if any.
    pub fn session_limit(&self) -> Option<SessionLimit> {
        self.session_limit
    }

    /// The idle timeout that applies to the record: its own, or the layer's.
    pub fn idle_timeout_of(&self, record: &SessionRecord) -> Duration {
        record
            .timeouts
            .map_or(self.idle_timeout, |timeouts| timeouts.idle)
    }

    /// The absolute timeout that applies to the record: its own, or the layer's.
    pub fn absolute_timeout_of(&self, record: &SessionRecord) -> Option<Duration> {
        record
            .timeouts
            .map_or(self.absolute_timeout, |timeouts| timeouts.absolute)
    }

    /// The touch interval that applies to the record: none (a write on every refresh) when
    /// the record's own idle timeout is not longer than the layer's touch interval, as a
    /// skipped write could then let an active session expire.
    pub fn touch_interval_of(&self, record: &SessionRecord) -> Option<Duration> {
        self.touch_interval
            .filter(|&touch| touch < self.idle_timeout_of(record))
    }

    /// When the record's session goes idle.
    pub fn idle_deadline(&self, record: &SessionRecord) -> Timestamp {
        record
            .last_seen
            .saturating_add(self.idle_timeout_of(record))
    }

    /// When the record's session reaches its absolute timeout, if there is one.
    pub fn absolute_deadline(&self, record: &SessionRecord) -> Option<Timestamp> {
        self.absolute_timeout_of(record)
            .map(|timeout| record.created_at.saturating_add(timeout))
    }

    /// The first deadline the record reaches, and which one it is. When both fall at the same
    /// instant the absolute one is reported, as it is the one activity cannot move.
    pub fn deadline(&self, record: &SessionRecord) -> (Timestamp, ExpiryReason) {
        let idle = self.idle_deadline(record);
        match self.absolute_deadline(record) {
            Some(absolute) if absolute <= idle => (absolute, ExpiryReason::Absolute),
            _ => (idle, ExpiryReason::Idle),
        }
    }

    /// Until when a store remembers why the record's session expired: its deadline plus the
    /// tombstone retention. From then on, asked or not before, the key answers
    /// [`ExpiryReason::Unknown`].
    pub fn tombstone_until(&self, record: &SessionRecord) -> Timestamp {
        self.deadline(record)
            .0
            .saturating_add(self.tombstone_retention)
    }

    /// `Some(reason)` when the session has expired at `now`. Exactly at a deadline it has.
    pub fn expiry(&self, record: &SessionRecord, now: Timestamp) -> Option<ExpiryReason> {
        let (deadline, reason) = self.deadline(record);
        (now >= deadline).then_some(reason)
    }

    /// Whether a refresh at `now` must write, given the record's touch interval.
    pub fn needs_touch(&self, record: &SessionRecord, now: Timestamp) -> bool {
        match self.touch_interval_of(record) {
            Some(interval) => now.saturating_since(record.last_seen) >= interval,
            None => now > record.last_seen,
        }
    }

    /// Which of the owner's active sessions a limit ends so that `max` remain: the oldest,
    /// by `created_at` then key. `sessions` holds every active session of the owner, the new
    /// one included; the answer lists the keys to end, oldest first.
    pub fn superseded(&self, sessions: &mut [OwnedSession]) -> Vec<SessionKey> {
        let Some(limit) = self.session_limit else {
            return Vec::new();
        };
        oldest_first(sessions);
        let max = limit.max.get() as usize;
        let excess = sessions.len().saturating_sub(max);
        sessions[..excess]
            .iter()
            .map(|session| session.key)
            .collect()
    }
}

/// Sorts an owner's sessions oldest first: by `created_at`, then by key, the order every
/// store and instance agrees on.
pub fn oldest_first(sessions: &mut [OwnedSession]) {
    sessions.sort_by(|a, b| {
        (a.record.created_at, a.key.as_bytes()).cmp(&(b.record.created_at, b.key.as_bytes()))
    });
}
