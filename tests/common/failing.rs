//! A store whose every call fails, to test fail-closed and fail-open.

use std::future::{ready, Ready};

use tower_session_timeout::store::{Begin, Check, Policy, SessionKey, SessionStore, Touch};
use tower_session_timeout::{StoreError, Timestamp};

#[derive(Debug, Clone, Copy)]
pub struct FailingStore;

fn failure<T>() -> Ready<Result<T, StoreError>> {
    ready(Err(StoreError::backend("connection refused")))
}

impl SessionStore for FailingStore {
    type CheckFuture = Ready<Result<Check, StoreError>>;
    type BeginFuture = Ready<Result<Begin, StoreError>>;
    type EndFuture = Ready<Result<bool, StoreError>>;
    type PurgeFuture = Ready<Result<u64, StoreError>>;

    fn check(&self, _: &SessionKey, _: Timestamp, _: &Policy, _: Touch) -> Self::CheckFuture {
        failure()
    }

    fn begin(
        &self,
        _: &SessionKey,
        _: Timestamp,
        _: &Policy,
        _: tower_session_timeout::store::NewSession<'_>,
    ) -> Self::BeginFuture {
        failure()
    }

    fn end(&self, _: &SessionKey, _: Timestamp, _: &Policy) -> Self::EndFuture {
        failure()
    }

    fn purge(&self, _: Timestamp) -> Self::PurgeFuture {
        failure()
    }
}
