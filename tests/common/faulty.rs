//! Stores that fail in the ways a network store can: every call fails, hangs, or is slow.

use std::future::{ready, Future};
use std::pin::Pin;
use std::time::Duration;

use tower_session_timeout::store::{Begin, Check, Policy, SessionKey, SessionStore, Touch};
use tower_session_timeout::{MemoryStore, StoreError, Timestamp};

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Every call fails at once.
    Fail,
    /// Checks fail at once; begin and end work.
    FailChecks,
    /// No call ever finishes.
    Hang,
    /// Every call answers correctly after this long (tokio time, so tests pause it).
    Slow(Duration),
    /// Ends fail at once; checks and begins work.
    FailEnds,
    /// An end takes effect this long after it is first polled, like a request on its way to
    /// a server: a future dropped before then ends nothing. Other calls work at once.
    DeferredEnds(Duration),
}

/// A [`MemoryStore`] behind a fault.
#[derive(Debug, Clone)]
pub struct FaultyStore {
    pub fault: Fault,
    pub inner: MemoryStore,
}

impl FaultyStore {
    pub fn new(fault: Fault) -> Self {
        FaultyStore {
            fault,
            inner: MemoryStore::new(),
        }
    }

    fn wrap<T: Send + 'static>(&self, answer: Result<T, StoreError>) -> StoreFuture<T> {
        match self.fault {
            Fault::Fail => Box::pin(ready(Err(StoreError::backend("connection refused")))),
            Fault::FailChecks | Fault::FailEnds | Fault::DeferredEnds(_) => Box::pin(ready(answer)),
            Fault::Hang => Box::pin(std::future::pending()),
            Fault::Slow(delay) => Box::pin(async move {
                tokio::time::sleep(delay).await;
                answer
            }),
        }
    }
}

type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

impl SessionStore for FaultyStore {
    type CheckFuture = StoreFuture<Check>;
    type BeginFuture = StoreFuture<Begin>;
    type EndFuture = StoreFuture<bool>;
    type PurgeFuture = StoreFuture<u64>;

    fn check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Self::CheckFuture {
        // The answer is decided when the call is made, as a server would on receipt.
        let answer = match self.fault {
            Fault::FailChecks => Err(StoreError::backend("connection refused")),
            _ => self.inner.check(key, now, policy, touch).into_inner(),
        };
        self.wrap(answer)
    }

    fn begin(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        new: tower_session_timeout::store::NewSession<'_>,
    ) -> Self::BeginFuture {
        self.wrap(self.inner.begin(key, now, policy, new).into_inner())
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        match self.fault {
            Fault::FailEnds => self.wrap(Err(StoreError::backend("connection reset"))),
            Fault::DeferredEnds(delay) => {
                let (inner, key, policy) = (self.inner.clone(), *key, *policy);
                Box::pin(async move {
                    tokio::time::sleep(delay).await;
                    inner.end(&key, now, &policy).into_inner()
                })
            }
            _ => self.wrap(self.inner.end(key, now, policy).into_inner()),
        }
    }

    fn purge(&self, now: Timestamp) -> Self::PurgeFuture {
        self.wrap(self.inner.purge(now).into_inner())
    }
}
