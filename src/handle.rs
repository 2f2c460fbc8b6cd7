//! What a handler sees of its session: [`SessionInfo`] and the [`SessionHandle`].

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use http::{Extensions, HeaderValue};
use std::time::Duration;

use crate::cookie::FoundId;
use crate::sessions::{SessionRef, SessionSummary, Sessions};
use crate::store::{Policy, SessionKey, SessionRecord, SessionTimeouts};
use crate::{StoreError, Timestamp};

/// The times of the request's active session, from its [`SessionHandle`] (with the `axum`
/// feature, also an extractor of its own: `SessionInfo` or `Option<SessionInfo>`).
///
/// ```
/// # use axum::Extension;
/// use tower_session_timeout::SessionHandle;
///
/// async fn dashboard(Extension(session): Extension<SessionHandle>) -> String {
///     match session.info() {
///         Some(info) => format!("signed in since {:?}", info.created_at()),
///         None => "no session".to_owned(),
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    checked_at: Timestamp,
    created_at: Timestamp,
    last_seen: Timestamp,
    idle_deadline: Timestamp,
    absolute_deadline: Option<Timestamp>,
}

impl SessionInfo {
    #[inline]
    pub(crate) fn new(record: &SessionRecord, policy: &Policy, checked_at: Timestamp) -> Self {
        SessionInfo {
            checked_at,
            created_at: record.created_at,
            last_seen: record.last_seen,
            idle_deadline: policy.idle_deadline(record),
            absolute_deadline: policy.absolute_deadline(record),
        }
    }

    /// When the session began.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When the session was last refreshed (this request, unless it was passive or the
    /// touch interval skipped the write).
    pub fn last_seen(&self) -> Timestamp {
        self.last_seen
    }

    /// When the session expires if no further request refreshes it.
    pub fn idle_deadline(&self) -> Timestamp {
        self.idle_deadline
    }

    /// When the session expires whatever its activity, if an absolute timeout is set.
    pub fn absolute_deadline(&self) -> Option<Timestamp> {
        self.absolute_deadline
    }

    /// The earlier of the two deadlines.
    pub fn deadline(&self) -> Timestamp {
        self.absolute_deadline
            .map_or(self.idle_deadline, |absolute| {
                absolute.min(self.idle_deadline)
            })
    }

    /// When the layer checked the session, by its clock: the `now` of this request.
    pub fn checked_at(&self) -> Timestamp {
        self.checked_at
    }

    /// How long the session had left when the layer checked it: from
    /// [`checked_at`](SessionInfo::checked_at) until [`deadline`](SessionInfo::deadline).
    pub fn time_left(&self) -> Duration {
        self.deadline().saturating_since(self.checked_at)
    }
}

/// Lets a handler begin or end a session explicitly, name its owner and timeouts, read the
/// current one, and manage the owner's other sessions.
///
/// The layer puts one in the extensions of every request it passes on. What the handler asks
/// through [`begin`](SessionHandle::begin), [`end`](SessionHandle::end),
/// [`set_owner`](SessionHandle::set_owner) and [`set_timeouts`](SessionHandle::set_timeouts)
/// is carried out when its response passes back through the layer, in the same way as a
/// `Set-Cookie` the layer observes; the per-owner calls ([`sessions`](SessionHandle::sessions),
/// [`end_others`](SessionHandle::end_others)) are carried out at once.
///
/// ```
/// # use axum::Extension;
/// use tower_session_timeout::SessionHandle;
///
/// async fn logout(Extension(session): Extension<SessionHandle>) -> &'static str {
///     session.end();
///     "signed out"
/// }
/// ```
#[derive(Debug, Clone)]
pub struct SessionHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    info: Option<SessionInfo>,
    id: Option<SessionId>,
    /// The key of the session id the request carried, active or not: the layer reads it back
    /// with the response (kept here, not in the response future, so the future stays small).
    carried: Option<SessionKey>,
    /// The request carried a stale cookie, removed on an exempt route.
    stale: bool,
    sessions: Sessions,
    requests: Mutex<Requests>,
    /// Whether the handler asked anything, so a response whose handler asked nothing (most)
    /// does not take the lock.
    asked: AtomicBool,
}

/// What the handler asked of the layer.
#[derive(Debug, Default)]
pub(crate) struct Requests {
    pub(crate) begin: Option<String>,
    pub(crate) end: bool,
    pub(crate) owner: Option<String>,
    pub(crate) timeouts: Option<SessionTimeouts>,
}

impl SessionHandle {
    #[inline]
    pub(crate) fn new(
        info: Option<SessionInfo>,
        id: Option<SessionId>,
        carried: Option<SessionKey>,
        stale: bool,
        sessions: Sessions,
    ) -> Self {
        SessionHandle {
            shared: Arc::new(Shared {
                info,
                id,
                carried,
                stale,
                sessions,
                requests: Mutex::default(),
                asked: AtomicBool::new(false),
            }),
        }
    }

    /// The key of the request's active session: the handle knows the key only of a session
    /// the layer found active.
    fn key(&self) -> Option<SessionKey> {
        self.shared.carried.filter(|_| self.shared.info.is_some())
    }

    /// The key of the session id the request carried, active or not.
    pub(crate) fn carried(&self) -> Option<SessionKey> {
        self.shared.carried
    }

    /// Whether the request carried a stale cookie, removed on an exempt route.
    pub(crate) fn stale(&self) -> bool {
        self.shared.stale
    }

    fn requests(&self) -> MutexGuard<'_, Requests> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the handler asks goes through here.
    fn ask(&self) -> MutexGuard<'_, Requests> {
        let requests = self.requests();
        // Set with the lock held: a take that sees it then locks, and finds what was asked.
        self.shared.asked.store(true, Ordering::Release);
        requests
    }

    /// The request's active session, if it has one.
    pub fn info(&self) -> Option<SessionInfo> {
        self.shared.info
    }

    /// The id of the request's active session, exactly as the layer checked it and the app's
    /// cookie reader will read it: for a correlation id in logs, or to hand to a session
    /// library. `None` without an active session.
    ///
    /// ```
    /// # use axum::Extension;
    /// use tower_session_timeout::SessionHandle;
    ///
    /// async fn handler(Extension(session): Extension<SessionHandle>) -> String {
    ///     match session.id() {
    ///         Some(id) => format!("session {}", &id[..4]),
    ///         None => "no session".to_owned(),
    ///     }
    /// }
    /// ```
    pub fn id(&self) -> Option<&str> {
        self.shared.id.as_ref().map(SessionId::as_str)
    }

    /// Begins tracking a session for `id` (the value of the session cookie the app set or
    /// will set). Beginning an id that is already active changes nothing.
    pub fn begin(&self, id: impl Into<String>) {
        self.ask().begin = Some(id.into());
    }

    /// Ends the request's session: later requests with its cookie get 440 with reason
    /// `ended`.
    pub fn end(&self) {
        self.ask().end = true;
    }

    /// Names the principal (a user id) the session that this response begins belongs to, so
    /// [`Sessions`] can list and end it and
    /// [`max_sessions_per_owner`](crate::SessionTimeoutBuilder::max_sessions_per_owner) can
    /// count it. Call it at sign-in, where the response sets the new session cookie (with
    /// axum-login, next to its `login`); a response that begins no session ignores it, as the
    /// owner of a session never changes.
    ///
    /// ```
    /// # use axum::Extension;
    /// use tower_session_timeout::SessionHandle;
    ///
    /// async fn sign_in(Extension(session): Extension<SessionHandle>) -> &'static str {
    ///     // ... check the password, set the new session cookie ...
    ///     session.set_owner("alice");
    ///     "welcome"
    /// }
    /// ```
    pub fn set_owner(&self, owner: impl Into<String>) {
        self.ask().owner = Some(owner.into());
    }

    /// Gives the session its own timeouts ("remember me" at sign-in, or shorter ones after a
    /// sensitive action), cut to the layer's
    /// [`max_session_timeouts`](crate::SessionTimeoutBuilder::max_session_timeouts). They
    /// apply to the session this response begins, or else to the request's active session,
    /// from when the response passes back through the layer.
    ///
    /// ```
    /// # use axum::Extension;
    /// use std::time::Duration;
    /// use tower_session_timeout::{SessionHandle, SessionTimeouts};
    ///
    /// async fn change_email(Extension(session): Extension<SessionHandle>) -> &'static str {
    ///     // From here on, five idle minutes end the session.
    ///     session.set_timeouts(SessionTimeouts::new(Duration::from_secs(5 * 60)));
    ///     "changed"
    /// }
    /// ```
    pub fn set_timeouts(&self, timeouts: SessionTimeouts) {
        self.ask().timeouts = Some(timeouts);
    }

    /// A reference to the request's active session, as [`SessionSummary::session`] gives it.
    pub fn session_ref(&self) -> Option<SessionRef> {
        self.key().as_ref().map(SessionRef::of)
    }

    /// The owner's sessions, for the app to list or end; see [`Sessions`].
    pub fn sessions(&self) -> &Sessions {
        &self.shared.sessions
    }

    /// The owner of the request's session, as the store keeps it (named at sign-in with
    /// [`set_owner`](SessionHandle::set_owner)): `None` without an active session or an
    /// owner. One store call; the same answer on every instance sharing the store.
    pub async fn owner(&self) -> Result<Option<String>, StoreError> {
        match self.key() {
            Some(key) => self.shared.sessions.owner_of(key).await,
            None => Ok(None),
        }
    }

    /// The active sessions of the request's owner (see [`owner`](SessionHandle::owner)),
    /// oldest first, this one marked [`is_current`](SessionSummary::is_current): for a
    /// "where you're signed in" page. Empty without an owner.
    ///
    /// ```
    /// # use axum::Extension;
    /// use tower_session_timeout::SessionHandle;
    ///
    /// async fn devices(Extension(session): Extension<SessionHandle>) -> String {
    ///     let Ok(sessions) = session.list_sessions().await else {
    ///         return "try again later".to_owned();
    ///     };
    ///     sessions
    ///         .iter()
    ///         .map(|s| format!("{} since {:?}{}\n", s.session(), s.created_at(), if s.is_current() { " (this one)" } else { "" }))
    ///         .collect()
    /// }
    /// ```
    pub async fn list_sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        match self.owner().await? {
            Some(owner) => self.shared.sessions.list_marking(&owner, self.key()).await,
            None => Ok(Vec::new()),
        }
    }

    /// Ends every other active session of the request's owner ("sign out my other devices";
    /// OWASP ASVS asks apps to offer it, and to do it on a password change); answers how
    /// many it ended. Each then answers 440 with reason `ended`, on every instance.
    pub async fn end_others(&self) -> Result<u64, StoreError> {
        match self.owner().await? {
            Some(owner) => self.shared.sessions.end_all_but(&owner, self.key()).await,
            None => Ok(0),
        }
    }

    /// Ends one session of the request's owner, found by the reference a
    /// [`list_sessions`](SessionHandle::list_sessions) entry gives; answers whether it was
    /// one of the owner's active sessions. A reference to someone else's session ends
    /// nothing.
    pub async fn end_session(&self, session: &SessionRef) -> Result<bool, StoreError> {
        match self.owner().await? {
            Some(owner) => self.shared.sessions.end(&owner, session).await,
            None => Ok(false),
        }
    }

    /// Takes what the handler asked, leaving nothing for a second take; `None` if it never
    /// asked anything.
    #[inline]
    pub(crate) fn take_requests(&self) -> Option<Requests> {
        if !self.shared.asked.load(Ordering::Acquire) {
            return None;
        }
        Some(std::mem::take(&mut *self.requests()))
    }
}

/// A session id where the request carried it: the `Cookie` header (whose bytes are shared,
/// not copied, when the server read them) and the id's place in it.
#[derive(Debug, Clone)]
pub(crate) struct SessionId {
    header: HeaderValue,
    range: Range<usize>,
}

impl SessionId {
    /// The id where [`cookie::find`](crate::cookie::find) found it: a clone of its header (a
    /// reference count when the server shares the bytes of its headers) and the range.
    #[inline]
    pub(crate) fn new(found: &FoundId<'_>) -> Self {
        SessionId {
            header: found.header.clone(),
            range: found.range.clone(),
        }
    }

    fn as_str(&self) -> &str {
        // The layer checked these bytes: a session id is ASCII.
        std::str::from_utf8(&self.header.as_bytes()[self.range.clone()]).unwrap_or_default()
    }
}

/// Puts the request's session handle (which holds its info) in its extensions: one
/// extension, so one allocation of the extension map's.
pub(crate) fn annotate<B>(
    request: &mut http::Request<B>,
    info: Option<SessionInfo>,
    id: Option<SessionId>,
    carried: Option<SessionKey>,
    stale: bool,
    sessions: Sessions,
) -> SessionHandle {
    let handle = SessionHandle::new(info, id, carried, stale, sessions);
    let extensions = request.extensions_mut();
    if extensions.is_empty() {
        *extensions = roomy_extensions();
    }
    extensions.insert(handle.clone());
    handle
}

/// An empty extension map with room for seven entries.
///
/// `Extensions` starts its map with room for three, and axum's router adds three to a request
/// on a plain route: with the layer's handle that makes four, and every request would build the
/// map twice (about 600 instructions, BENCHMARKS.md section 1). `Extensions` has no
/// `with_capacity`, but a clone keeps the capacity of what it clones.
#[inline]
fn roomy_extensions() -> Extensions {
    static ROOMY: OnceLock<Extensions> = OnceLock::new();
    ROOMY
        .get_or_init(|| {
            #[derive(Clone)]
            struct Room<const N: usize>;
            let mut extensions = Extensions::new();
            // A fourth entry makes the map grow to room for seven; removing them keeps it.
            extensions.insert(Room::<0>);
            extensions.insert(Room::<1>);
            extensions.insert(Room::<2>);
            extensions.insert(Room::<3>);
            extensions.clear();
            extensions
        })
        .clone()
}
