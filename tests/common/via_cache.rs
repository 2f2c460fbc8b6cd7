//! A store asked as the layer asks it: `try_check` first, `check` only when that has no
//! answer. The store suites call `check`; through this, a store's near cache answers them.

use std::time::Duration;

use tower_session_timeout::store::{
    Check, NewSession, OwnedSession, Policy, SessionEnd, SessionKey, SessionStore, SessionTimeouts,
    StoreFuture, Touch,
};
use tower_session_timeout::Timestamp;

#[derive(Debug, Clone)]
pub struct ViaCache<St>(pub St);

impl<St: SessionStore> SessionStore for ViaCache<St> {
    type CheckFuture = StoreFuture<Check>;
    type BeginFuture = St::BeginFuture;
    type EndFuture = St::EndFuture;
    type PurgeFuture = St::PurgeFuture;

    fn check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Self::CheckFuture {
        match self.0.try_check(key, now, policy, touch) {
            Some(answer) => Box::pin(std::future::ready(answer)),
            None => Box::pin(self.0.check(key, now, policy, touch)),
        }
    }

    fn begin(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        new: NewSession<'_>,
    ) -> Self::BeginFuture {
        self.0.begin(key, now, policy, new)
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        self.0.end(key, now, policy)
    }

    fn purge(&self, now: Timestamp) -> Self::PurgeFuture {
        self.0.purge(now)
    }

    fn set_timeouts(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        timeouts: SessionTimeouts,
    ) -> StoreFuture<bool> {
        self.0.set_timeouts(key, now, policy, timeouts)
    }

    fn owner_of(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Option<String>> {
        self.0.owner_of(key, now, policy)
    }

    fn sessions_of(
        &self,
        owner: &str,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Vec<OwnedSession>> {
        self.0.sessions_of(owner, now, policy)
    }

    fn active_sessions(&self) -> Option<u64> {
        self.0.active_sessions()
    }

    fn claim_ends(
        &self,
        now: Timestamp,
        policy: &Policy,
        limit: usize,
        lease: Duration,
    ) -> StoreFuture<Vec<SessionEnd>> {
        self.0.claim_ends(now, policy, limit, lease)
    }

    fn ack_ends(&self, keys: &[SessionKey], now: Timestamp, policy: &Policy) -> StoreFuture<()> {
        self.0.ack_ends(keys, now, policy)
    }

    fn end_sessions_of(
        &self,
        owner: &str,
        keep: Option<&SessionKey>,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<u64> {
        self.0.end_sessions_of(owner, keep, now, policy)
    }
}
