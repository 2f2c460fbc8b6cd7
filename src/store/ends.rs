//! [`SessionEnd`]: a session end a store hands out to be announced, once.

use crate::{ExpiryReason, SessionKey, Timestamp};

/// A session that ended, as [`SessionStore::claim_ends`](super::SessionStore::claim_ends)
/// hands it out and the hook set with
/// [`on_session_end`](crate::SessionTimeoutBuilder::on_session_end) receives it: once per
/// session, whether or not a request ever came back for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnd {
    /// The session's key (the hash of its id; never the id).
    pub key: SessionKey,
    /// Its owner, if it had one.
    pub owner: Option<String>,
    /// Why it ended: `idle` or `absolute` at its deadline, `ended` or `superseded` when it was
    /// ended.
    pub reason: ExpiryReason,
    /// When it ended: its deadline, or when it was ended.
    pub at: Timestamp,
}
