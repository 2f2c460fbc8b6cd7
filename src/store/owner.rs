//! What a store keeps beyond the two times: a session's own timeouts, its owner, and the
//! cap on an owner's sessions.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::time::Duration;

use super::{SessionKey, SessionRecord};
use crate::StoreError;

/// A session's own idle and absolute timeouts, replacing the layer's for that session ("remember
/// me", or a short-lived admin session).
///
/// The layer never lets them exceed the bounds set with
/// [`max_session_timeouts`](crate::SessionTimeoutBuilder::max_session_timeouts): longer ones
/// are cut to the bound before they reach the store.
///
/// ```
/// use std::time::Duration;
/// use tower_session_timeout::SessionTimeouts;
///
/// const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// let remember_me = SessionTimeouts::new(7 * DAY).with_absolute(30 * DAY);
/// assert_eq!(remember_me.idle(), 7 * DAY);
/// assert_eq!(remember_me.absolute(), Some(30 * DAY));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionTimeouts {
    pub(super) idle: Duration,
    pub(super) absolute: Option<Duration>,
}

impl SessionTimeouts {
    /// An idle timeout and no absolute timeout (the layer's bound, if it has one, still
    /// applies). A zero idle timeout is raised to one millisecond.
    pub const fn new(idle: Duration) -> Self {
        let idle = if idle.is_zero() {
            Duration::from_millis(1)
        } else {
            idle
        };
        SessionTimeouts {
            idle,
            absolute: None,
        }
    }

    /// Adds an absolute timeout. One shorter than the idle timeout is raised to it, as the
    /// builder requires of the layer's own.
    pub const fn with_absolute(mut self, absolute: Duration) -> Self {
        self.absolute = Some(if absolute.as_nanos() < self.idle.as_nanos() {
            self.idle
        } else {
            absolute
        });
        self
    }

    /// How long the session may go unused.
    pub const fn idle(&self) -> Duration {
        self.idle
    }

    /// How long the session may last whatever its activity, if it has such a limit.
    pub const fn absolute(&self) -> Option<Duration> {
        self.absolute
    }

    /// These timeouts, each cut to `bound`'s (a missing absolute timeout is unbounded).
    pub fn within(self, bound: SessionTimeouts) -> SessionTimeouts {
        let idle = self.idle.min(bound.idle);
        let absolute = match (self.absolute, bound.absolute) {
            (Some(own), Some(bound)) => Some(own.min(bound)),
            (own, bound) => own.or(bound),
        };
        SessionTimeouts {
            idle,
            absolute: absolute.map(|absolute| absolute.max(idle)),
        }
    }
}

/// What a new session starts with besides its creation time, handed to
/// [`SessionStore::begin`](super::SessionStore::begin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewSession<'a> {
    /// The principal (user id) the session belongs to, if the app named one.
    pub owner: Option<&'a str>,
    /// The session's own timeouts, already within the layer's bounds; `None` for the
    /// layer's.
    pub timeouts: Option<SessionTimeouts>,
}

impl<'a> NewSession<'a> {
    /// A session with no owner and the layer's timeouts.
    pub const fn plain() -> Self {
        NewSession {
            owner: None,
            timeouts: None,
        }
    }
}

/// An active session of one owner, as [`SessionStore::sessions_of`](super::SessionStore::sessions_of)
/// lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnedSession {
    /// The session's key.
    pub key: SessionKey,
    /// Its times and own timeouts.
    pub record: SessionRecord,
}

/// At most this many active sessions per owner, and what a sign-in beyond it does. Set with
/// [`max_sessions_per_owner`](crate::SessionTimeoutBuilder::max_sessions_per_owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimit {
    /// The most active sessions one owner may have.
    pub max: NonZeroU32,
    /// What a session beyond the limit does.
    pub on_limit: OnLimit,
}

/// What a sign-in beyond the [`SessionLimit`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OnLimit {
    /// The owner's oldest sessions end, with reason
    /// [`Superseded`](crate::ExpiryReason::Superseded), so the new one fits. The default, as
    /// with Spring Security's `maximumSessions`.
    #[default]
    EndOldest,
    /// The new session is not begun: the store answers
    /// [`Begin::LimitReached`](super::Begin::LimitReached) and the layer answers the sign-in
    /// with `409 Conflict` (problem+json, type `…#session-limit`).
    Refuse,
}

/// The future of a store call off the request path (per-owner operations, changing a
/// session's timeouts): boxed, as these calls are rare next to checks.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'static>>;

/// The answer of a store that does not implement an optional operation.
pub(crate) fn unsupported<T: Send + 'static>(operation: &'static str) -> StoreFuture<T> {
    Box::pin(std::future::ready(Err(StoreError::Unsupported(operation))))
}
