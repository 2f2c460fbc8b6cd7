//! What a handler sees of its session: [`SessionInfo`] and the [`SessionHandle`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::store::{Policy, SessionRecord};
use crate::Timestamp;

/// The times of the request's active session, put in the request extensions.
///
/// ```
/// # use axum::{Extension, response::IntoResponse};
/// use tower_session_timeout::SessionInfo;
///
/// async fn dashboard(session: Option<Extension<SessionInfo>>) -> impl IntoResponse {
///     match session {
///         Some(Extension(info)) => format!("signed in since {:?}", info.created_at()),
///         None => "no session".to_owned(),
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    created_at: Timestamp,
    last_seen: Timestamp,
    idle_deadline: Timestamp,
    absolute_deadline: Option<Timestamp>,
}

impl SessionInfo {
    pub(crate) fn new(record: &SessionRecord, policy: &Policy) -> Self {
        SessionInfo {
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

    /// How long from `now` until [`deadline`](SessionInfo::deadline).
    pub fn time_left(&self, now: Timestamp) -> Duration {
        self.deadline().saturating_since(now)
    }
}

/// Lets a handler begin or end a session explicitly, and read the current one.
///
/// The layer puts one in the extensions of every request it passes on. What the handler asks
/// is carried out when its response passes back through the layer, in the same way as a
/// `Set-Cookie` the layer observes.
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
#[derive(Debug, Clone, Default)]
pub struct SessionHandle {
    shared: Arc<Mutex<HandleState>>,
}

#[derive(Debug, Default)]
pub(crate) struct HandleState {
    pub(crate) info: Option<SessionInfo>,
    pub(crate) begin: Option<String>,
    pub(crate) end: bool,
}

impl SessionHandle {
    pub(crate) fn new(info: Option<SessionInfo>) -> Self {
        SessionHandle {
            shared: Arc::new(Mutex::new(HandleState {
                info,
                ..HandleState::default()
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, HandleState> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The request's active session, if it has one.
    pub fn info(&self) -> Option<SessionInfo> {
        self.state().info
    }

    /// Begins tracking a session for `id` (the value of the session cookie the app set or
    /// will set). Beginning an id that is already active changes nothing.
    pub fn begin(&self, id: impl Into<String>) {
        self.state().begin = Some(id.into());
    }

    /// Ends the request's session: later requests with its cookie get 440 with reason
    /// `ended`.
    pub fn end(&self) {
        self.state().end = true;
    }

    /// Takes what the handler asked, leaving nothing for a second take.
    pub(crate) fn take_requests(&self) -> (Option<String>, bool) {
        let mut state = self.state();
        (state.begin.take(), std::mem::take(&mut state.end))
    }
}

/// Puts the request's session info and handle in its extensions.
pub(crate) fn annotate<B>(
    request: &mut http::Request<B>,
    info: Option<SessionInfo>,
) -> SessionHandle {
    let handle = SessionHandle::new(info);
    if let Some(info) = info {
        request.extensions_mut().insert(info);
    }
    request.extensions_mut().insert(handle.clone());
    handle
}
