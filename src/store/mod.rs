//! The [`SessionStore`] trait and the types its operations speak.
//!
//! A store keeps, per session, its creation time and last-seen time under a [`SessionKey`]
//! (a hash of the id). Every operation is one atomic step of the store: that is what makes an
//! expired session stay expired however many requests race on it, on however many app
//! instances.

mod key;
mod memory;
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

pub use self::key::SessionKey;
pub use self::memory::MemoryStore;
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

    /// Begins tracking a session created at `now`. Beginning a session that is already active
    /// changes nothing; one that expired or ended is refused while its tombstone is kept.
    fn begin(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::BeginFuture;

    /// Ends an active session, leaving a tombstone with [`ExpiryReason::Ended`]. Returns
    /// whether there was an active session to end; an unknown key writes nothing. A record
    /// past its retention at `now` is forgotten, as [`check`](SessionStore::check) and
    /// [`begin`](SessionStore::begin) forget it, so a clock stepping back cannot find it again.
    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture;

    /// Removes every record whose session expired and whose tombstone is past its retention
    /// as of `now`, and returns how many it removed. Its cost grows with what expired, not
    /// with what is stored.
    fn purge(&self, now: Timestamp) -> Self::PurgeFuture;
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
    /// The store has never known this id, or has forgotten it.
    Unknown,
}

impl ExpiryReason {
    /// The reason as it appears in the problem+json answer: `idle`, `absolute`, `ended` or
    /// `unknown`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ExpiryReason::Idle => "idle",
            ExpiryReason::Absolute => "absolute",
            ExpiryReason::Ended => "ended",
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

/// The two times a store keeps for an active session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRecord {
    /// When the session began.
    pub created_at: Timestamp,
    /// When the session was last refreshed.
    pub last_seen: Timestamp,
}

/// The timeouts a store applies, handed to every store call by the layer.
///
/// Built by [`SessionTimeoutBuilder::build`](crate::SessionTimeoutBuilder::build), which guarantees its rules
/// (non-zero timeouts, absolute not shorter than idle, touch interval shorter than idle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    idle_timeout: Duration,
    absolute_timeout: Option<Duration>,
    touch_interval: Option<Duration>,
    tombstone_retention: Duration,
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
        }
    }

    /// A session expires when `now - last_seen >= idle_timeout`.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// A session expires when `now - created_at >= absolute_timeout`, whatever its activity.
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

    /// When the record's session goes idle.
    pub fn idle_deadline(&self, record: &SessionRecord) -> Timestamp {
        record.last_seen.saturating_add(self.idle_timeout)
    }

    /// When the record's session reaches its absolute timeout, if there is one.
    pub fn absolute_deadline(&self, record: &SessionRecord) -> Option<Timestamp> {
        self.absolute_timeout
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

    /// Whether a refresh at `now` must write, given the touch interval.
    pub fn needs_touch(&self, record: &SessionRecord, now: Timestamp) -> bool {
        match self.touch_interval {
            Some(interval) => now.saturating_since(record.last_seen) >= interval,
            None => now > record.last_seen,
        }
    }
}
