//! [`ErrorLog`]: store errors logged once per burst.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::StoreError;

/// How long after logging a store error the next ones are only counted.
const QUIET_PERIOD: Duration = Duration::from_secs(10);

/// Logs the first store error of a burst at `error` level, and counts the rest until the
/// quiet period has passed, so a store outage under load writes one line per period rather
/// than one per request.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    last_logged: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl ErrorLog {
    /// Records a store error; `what` says what the layer did about it.
    pub(crate) fn record(&self, error: &StoreError, what: &'static str) {
        let now = Instant::now();
        let mut last = self
            .last_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let quiet = last.is_some_and(|logged| now.duration_since(logged) < QUIET_PERIOD);
        if quiet {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%error, what, "session store failed again");
            return;
        }
        *last = Some(now);
        drop(last);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::error!(%error, what, suppressed, "session store failed");
    }
}
