//! [`Sessions`]: an owner's sessions, listed and ended by the app (admin tools, "sign out
//! everywhere", a list of signed-in devices).

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::bounded::Bounded;
use crate::config::Config;
use crate::store::{OwnedSession, Policy, SessionKey, StoreFuture};
use crate::{SessionStore, StoreError, Timestamp};

/// An owner's sessions, for the app: list them, end one, end all, end all but one.
///
/// Got from [`SessionTimeoutLayer::sessions`](crate::SessionTimeoutLayer::sessions) (for
/// admin tools) or [`SessionHandle::sessions`](crate::SessionHandle::sessions) (in a
/// handler). An owner is the principal the app named when the session began, through
/// [`SessionHandle::set_owner`](crate::SessionHandle::set_owner). Each call is one or a few
/// store calls; an ended session answers 440 with reason `ended` on its next request, on every
/// instance sharing the store.
///
/// ```
/// use tower_session_timeout::SessionTimeoutLayer;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = SessionTimeoutLayer::builder().build()?;
/// let sessions = layer.sessions();
/// // A password change: sign the user out everywhere.
/// let ended = sessions.end_all("alice").await?;
/// assert_eq!(ended, 0);
/// assert!(sessions.list("alice").await?.is_empty());
/// # Ok(())
/// # }
/// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
/// ```
#[derive(Clone)]
pub struct Sessions {
    admin: Arc<dyn Admin>,
}

impl fmt::Debug for Sessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    pub(crate) fn new<St: SessionStore>(config: Arc<Config<St>>) -> Self {
        Sessions { admin: config }
    }

    /// The owner's active sessions, oldest first.
    pub async fn list(&self, owner: &str) -> Result<Vec<SessionSummary>, StoreError> {
        self.list_marking(owner, None).await
    }

    pub(crate) async fn list_marking(
        &self,
        owner: &str,
        current: Option<SessionKey>,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        let (sessions, policy) = self.admin.sessions_of(owner).await?;
        Ok(sessions
            .iter()
            .map(|session| {
                let record = &session.record;
                SessionSummary {
                    session: SessionRef::of(&session.key),
                    created_at: record.created_at,
                    last_seen: record.last_seen,
                    idle_deadline: policy.idle_deadline(record),
                    absolute_deadline: policy.absolute_deadline(record),
                    current: current == Some(session.key),
                }
            })
            .collect())
    }

    /// Ends the owner's session `session` refers to; answers whether it was one of the
    /// owner's active sessions (a reference of another owner's session ends nothing).
    pub async fn end(&self, owner: &str, session: &SessionRef) -> Result<bool, StoreError> {
        let (sessions, _) = self.admin.sessions_of(owner).await?;
        match sessions
            .iter()
            .find(|listed| SessionRef::of(&listed.key) == *session)
        {
            Some(listed) => self.admin.end(listed.key).await,
            None => Ok(false),
        }
    }

    /// Ends every active session of the owner ("sign out everywhere", as after a password
    /// change); answers how many it ended.
    pub async fn end_all(&self, owner: &str) -> Result<u64, StoreError> {
        self.admin.end_sessions_of(owner, None).await
    }

    /// Ends every active session of the owner but `keep` ("sign out my other devices");
    /// answers how many it ended.
    pub async fn end_all_except(&self, owner: &str, keep: &SessionRef) -> Result<u64, StoreError> {
        let (sessions, _) = self.admin.sessions_of(owner).await?;
        let keep = sessions
            .iter()
            .find(|listed| SessionRef::of(&listed.key) == *keep)
            .map(|listed| listed.key);
        self.end_all_but(owner, keep).await
    }

    pub(crate) fn owner_of(
        &self,
        key: SessionKey,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send + 'static {
        self.admin.owner_of(key)
    }

    pub(crate) fn end_all_but(
        &self,
        owner: &str,
        keep: Option<SessionKey>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        self.admin.end_sessions_of(owner, keep)
    }
}

/// One active session of an owner, as [`Sessions::list`] answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    session: SessionRef,
    created_at: Timestamp,
    last_seen: Timestamp,
    idle_deadline: Timestamp,
    absolute_deadline: Option<Timestamp>,
    current: bool,
}

impl SessionSummary {
    /// A reference to the session, to end it with [`Sessions::end`]: not its id, and no id
    /// can be made from it.
    pub fn session(&self) -> &SessionRef {
        &self.session
    }

    /// When the session began.
    pub fn created_at(&self) -> Timestamp {
        self.created_at
    }

    /// When the session was last refreshed.
    pub fn last_seen(&self) -> Timestamp {
        self.last_seen
    }

    /// When the session goes idle unless refreshed (by its own timeouts, if it has them).
    pub fn idle_deadline(&self) -> Timestamp {
        self.idle_deadline
    }

    /// When the session ends whatever its activity, if it has an absolute timeout.
    pub fn absolute_deadline(&self) -> Option<Timestamp> {
        self.absolute_deadline
    }

    /// Whether this is the session of the request that listed it (always `false` from
    /// [`Sessions::list`]).
    pub fn is_current(&self) -> bool {
        self.current
    }
}

/// An opaque reference to a session, safe to show to its owner and to put in a URL: 32 hex
/// digits of a one-way hash of the store's key (itself a one-way hash of the id), so it
/// leads to no id, and it is honoured only together with the owner it belongs to.
///
/// ```
/// use tower_session_timeout::SessionRef;
///
/// let text = "0123456789abcdef0123456789abcdef";
/// let session: SessionRef = text.parse().unwrap();
/// assert_eq!(session.to_string(), text);
/// assert!("not-a-reference".parse::<SessionRef>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionRef([u8; 16]);

impl SessionRef {
    pub(crate) fn of(key: &SessionKey) -> Self {
        let digest = Sha256::new()
            .chain_update(b"tower-session-timeout session reference\0")
            .chain_update(key.as_bytes())
            .finalize();
        let mut bytes = [0; 16];
        bytes.copy_from_slice(&digest[..16]);
        SessionRef(bytes)
    }
}

impl fmt::Display for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

impl fmt::Debug for SessionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionRef({self})")
    }
}

/// Text that is not a [`SessionRef`]: 32 lowercase or uppercase hex digits are expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a session reference: expected 32 hex digits")]
pub struct ParseSessionRefError(());

impl std::str::FromStr for SessionRef {
    type Err = ParseSessionRefError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.as_bytes();
        if text.len() != 32 {
            return Err(ParseSessionRefError(()));
        }
        let digit = |byte: u8| {
            (byte as char)
                .to_digit(16)
                .map(|digit| digit as u8)
                .ok_or(ParseSessionRefError(()))
        };
        let mut bytes = [0; 16];
        for (i, pair) in text.chunks_exact(2).enumerate() {
            bytes[i] = digit(pair[0])? << 4 | digit(pair[1])?;
        }
        Ok(SessionRef(bytes))
    }
}

/// The store calls [`Sessions`] makes, without the store's type.
trait Admin: Send + Sync {
    fn owner_of(&self, key: SessionKey) -> StoreFuture<Option<String>>;
    fn sessions_of(&self, owner: &str) -> StoreFuture<(Vec<OwnedSession>, Policy)>;
    fn end(&self, key: SessionKey) -> StoreFuture<bool>;
    fn end_sessions_of(&self, owner: &str, keep: Option<SessionKey>) -> StoreFuture<u64>;
}

impl<St: SessionStore> Admin for Config<St> {
    fn owner_of(&self, key: SessionKey) -> StoreFuture<Option<String>> {
        let call = self.store.owner_of(&key, self.now(), &self.policy);
        Box::pin(Bounded::new("owner_of", call, self.store_timeout))
    }

    fn sessions_of(&self, owner: &str) -> StoreFuture<(Vec<OwnedSession>, Policy)> {
        let policy = self.policy;
        let call = Bounded::new(
            "sessions_of",
            self.store.sessions_of(owner, self.now(), &policy),
            self.store_timeout,
        );
        Box::pin(async move { Ok((call.await?, policy)) })
    }

    fn end(&self, key: SessionKey) -> StoreFuture<bool> {
        let call = self.store.end(&key, self.now(), &self.policy);
        Box::pin(Bounded::new("end", call, self.store_timeout))
    }

    fn end_sessions_of(&self, owner: &str, keep: Option<SessionKey>) -> StoreFuture<u64> {
        let call = self
            .store
            .end_sessions_of(owner, keep.as_ref(), self.now(), &self.policy);
        Box::pin(Bounded::new("end_sessions_of", call, self.store_timeout))
    }
}
