//! [`Bounded`]: a store call that gives up after the store timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::StoreError;

pin_project! {
    /// A store call bounded by a timeout, so a hung store never holds a request forever.
    ///
    /// The timer is armed only when the call does not finish on its first poll, so a store
    /// call that is ready at once pays nothing for it. Outside a tokio runtime there is no
    /// timer to arm, and the call is left unbounded.
    pub(crate) struct Bounded<F> {
        #[pin]
        call: F,
        // Boxed, and only when armed: inline, tokio's `Sleep` would grow every response
        // future, also those of requests that never wait for a store.
        timer: Option<Pin<Box<Sleep>>>,
        limit: Option<Duration>,
        timing: Timing,
    }
}

/// What the call-duration histogram needs (feature `metrics`): nothing without the feature,
/// so every response future, which holds a few calls, stays smaller.
struct Timing {
    // The store operation.
    #[cfg(feature = "metrics")]
    operation: &'static str,
    // When the call was first polled.
    #[cfg(feature = "metrics")]
    started: Option<std::time::Instant>,
}

impl<F> Bounded<F> {
    pub(crate) fn new(operation: &'static str, call: F, limit: Option<Duration>) -> Self {
        #[cfg(not(feature = "metrics"))]
        let _ = operation;
        Bounded {
            call,
            timer: None,
            limit,
            timing: Timing {
                #[cfg(feature = "metrics")]
                operation,
                #[cfg(feature = "metrics")]
                started: None,
            },
        }
    }
}

impl<F, T> Future for Bounded<F>
where
    F: Future<Output = Result<T, StoreError>>,
{
    type Output = Result<T, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        #[cfg(feature = "metrics")]
        let started = *this
            .timing
            .started
            .get_or_insert_with(std::time::Instant::now);
        #[cfg(not(feature = "metrics"))]
        let _ = &this.timing;
        if let Poll::Ready(output) = this.call.poll(cx) {
            #[cfg(feature = "metrics")]
            crate::metrics::store_call(this.timing.operation, started.elapsed());
            return Poll::Ready(output);
        }
        let Some(limit) = *this.limit else {
            return Poll::Pending;
        };
        if this.timer.is_none() {
            if tokio::runtime::Handle::try_current().is_err() {
                *this.limit = None;
                return Poll::Pending;
            }
            *this.timer = Some(Box::pin(tokio::time::sleep(limit)));
        }
        let expired = this
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if expired {
            #[cfg(feature = "metrics")]
            crate::metrics::store_call(this.timing.operation, started.elapsed());
            Poll::Ready(Err(StoreError::Timeout(limit)))
        } else {
            Poll::Pending
        }
    }
}
