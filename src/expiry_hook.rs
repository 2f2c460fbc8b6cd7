//! [`ExpiryEvent`]: what the app's expiry hook learns.

use std::sync::Arc;

use crate::store::SessionKey;
use crate::{ExpiryReason, Timestamp};

/// A session that expired or ended, handed to the hook set with
/// [`SessionTimeoutBuilder::on_expiry`](crate::SessionTimeoutBuilder::on_expiry), for audit logs.
///
/// The hook is called once per session: by the request that finds it past a deadline (reason
/// `idle` or `absolute`), or by the response that ends it (reason `ended`). A session nobody
/// asks about after its deadline is purged without a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryEvent {
    session: SessionKey,
    reason: ExpiryReason,
    at: Timestamp,
}

impl ExpiryEvent {
    pub(crate) fn new(session: SessionKey, reason: ExpiryReason, at: Timestamp) -> Self {
        ExpiryEvent {
            session,
            reason,
            at,
        }
    }

    /// The hash of the session id (its `Display` is the short form used in logs); never the
    /// id itself.
    pub fn session(&self) -> SessionKey {
        self.session
    }

    /// Why the session is over: `idle`, `absolute` or `ended`.
    pub fn reason(&self) -> ExpiryReason {
        self.reason
    }

    /// When the layer noticed, by its clock.
    pub fn at(&self) -> Timestamp {
        self.at
    }
}

pub(crate) type ExpiryHook = Arc<dyn Fn(&ExpiryEvent) + Send + Sync>;
