//! [`ErrorLog`]: store errors logged once per burst by the layer; [`StoreLog`]: the same for
//! a store's own lines, with a line when the store answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::StoreError;

/// How long after logging a store error the next ones are only counted.
pub(crate) const QUIET_PERIOD: Duration = Duration::from_secs(10);

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
            // TRACE, not DEBUG: apps (the demo among them) run this crate at DEBUG, and an
            // outage under load would write a line per request.
            tracing::trace!(%error, what, "session store failed again");
            return;
        }
        *last = Some(now);
        drop(last);
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        tracing::error!(%error, what, suppressed, "session store failed");
    }
}

/// A store's own failure log. The first failure of a burst is logged at WARN with the store,
/// the operation and the error; later ones are only counted (TRACE) until the quiet period has
/// passed, when the next one is logged with how many were left out. When calls succeed again,
/// one INFO line says so, with the count and how long it lasted.
///
/// At most one WARN per quiet period, plus one after each recovery line, and at most one
/// recovery line per quiet period: a store that half works (a Redis Cluster with one master
/// down answers for the other masters' slots) alternates failures and successes, and must not
/// write a pair of lines per request. A success outside an outage costs one atomic load.
///
/// Its clock is Tokio's, so tests under paused time can cross the quiet period.
#[derive(Debug)]
#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
pub(crate) struct StoreLog {
    store: &'static str,
    /// Failures happened that no recovery line has reported yet.
    pending: AtomicBool,
    burst: Mutex<Burst>,
    unannounced: Mutex<Unannounced>,
}

/// Changes the store made but could not announce to other instances, since the last WARN.
#[derive(Debug, Default)]
struct Unannounced {
    last_warn: Option<tokio::time::Instant>,
    suppressed: u64,
}

#[derive(Debug, Default)]
struct Burst {
    /// The first failure since the last recovery line.
    began: Option<tokio::time::Instant>,
    last_warn: Option<tokio::time::Instant>,
    last_info: Option<tokio::time::Instant>,
    /// Failures since the last WARN line, not logged.
    suppressed: u64,
    /// Failures since the last recovery line.
    failures: u64,
    /// A recovery line was written after the last WARN line.
    recovered_since_warn: bool,
}

#[cfg_attr(
    not(any(feature = "redis", feature = "postgres", feature = "sqlite")),
    allow(dead_code)
)]
impl StoreLog {
    /// A log for the store named `store` (`"redis"`, `"postgres"`, `"sqlite"`).
    pub(crate) fn new(store: &'static str) -> Self {
        StoreLog {
            store,
            pending: AtomicBool::new(false),
            burst: Mutex::new(Burst::default()),
            unannounced: Mutex::new(Unannounced::default()),
        }
    }

    /// Records a change to `session` that the store made but could not announce (Redis
    /// refused the revocation's `PUBLISH`, as an ACL without the channel does): at WARN once
    /// per quiet period with how many were left out, since a misconfigured ACL refuses every
    /// one of them; TRACE otherwise.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn unannounced(&self, session: &dyn std::fmt::Display) {
        let now = tokio::time::Instant::now();
        let mut unannounced = self
            .unannounced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let quiet = unannounced
            .last_warn
            .is_some_and(|logged| now.duration_since(logged) < QUIET_PERIOD);
        if quiet {
            unannounced.suppressed += 1;
            drop(unannounced);
            tracing::trace!(store = self.store, %session, "could not publish a session's revocation again");
            return;
        }
        unannounced.last_warn = Some(now);
        let suppressed = std::mem::take(&mut unannounced.suppressed);
        drop(unannounced);
        tracing::warn!(
            store = self.store,
            %session,
            suppressed,
            "could not publish a session's revocation; other instances' near caches keep it until their max_age"
        );
    }

    fn burst(&self) -> std::sync::MutexGuard<'_, Burst> {
        self.burst
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a failed call of operation `op`.
    pub(crate) fn failed(&self, op: &'static str, error: &StoreError) {
        let now = tokio::time::Instant::now();
        let mut burst = self.burst();
        self.pending.store(true, Ordering::Release);
        burst.failures += 1;
        burst.began.get_or_insert(now);
        let quiet = burst
            .last_warn
            .is_some_and(|logged| now.duration_since(logged) < QUIET_PERIOD);
        if quiet && !burst.recovered_since_warn {
            burst.suppressed += 1;
            drop(burst);
            tracing::trace!(store = self.store, op, %error, "session store call failed again");
            return;
        }
        burst.last_warn = Some(now);
        burst.recovered_since_warn = false;
        let suppressed = std::mem::take(&mut burst.suppressed);
        let failures = burst.failures;
        drop(burst);
        tracing::warn!(
            store = self.store,
            op,
            %error,
            suppressed,
            failures,
            "session store call failed"
        );
    }

    /// Records a call the store answered: reports the end of an outage, at most once per
    /// quiet period (a later success reports it when this one may not).
    pub(crate) fn succeeded(&self) {
        if !self.pending.load(Ordering::Acquire) {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut burst = self.burst();
        let quiet = burst
            .last_info
            .is_some_and(|logged| now.duration_since(logged) < QUIET_PERIOD);
        if quiet || !self.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        burst.last_info = Some(now);
        burst.recovered_since_warn = true;
        let failures = std::mem::take(&mut burst.failures);
        let lasted_ms = burst
            .began
            .take()
            .map_or(0, |began| now.duration_since(began).as_millis());
        drop(burst);
        tracing::info!(
            store = self.store,
            failures,
            lasted_ms,
            "session store answers again"
        );
    }

    /// Records the outcome of a call of operation `op`, and passes it on.
    pub(crate) fn record<T>(
        &self,
        op: &'static str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.succeeded(),
            Err(error) => self.failed(op, error),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{StoreLog, QUIET_PERIOD};
    use crate::test_logs::capture;
    use crate::StoreError;

    fn error() -> StoreError {
        StoreError::Timeout(Duration::from_secs(1))
    }

    #[tokio::test(start_paused = true)]
    async fn one_line_per_quiet_period_with_counts_and_one_on_recovery() {
        let (lines, _guard) = capture();
        let log = StoreLog::new("test");

        log.succeeded();
        for _ in 0..1000 {
            log.failed("check", &error());
        }
        assert_eq!(lines.at("WARN").len(), 1);
        tokio::time::advance(QUIET_PERIOD).await;
        for _ in 0..10 {
            log.failed("begin", &error());
        }
        let warns = lines.at("WARN");
        assert_eq!(warns.len(), 2, "{warns:#?}");
        assert!(warns[0].contains("suppressed=0") && warns[0].ends_with("failures=1"));
        assert!(warns[1].contains("suppressed=999") && warns[1].contains("failures=1001"));

        tokio::time::advance(Duration::from_secs(1)).await;
        log.succeeded();
        log.succeeded();
        let infos = lines.at("INFO");
        assert_eq!(infos.len(), 1, "{infos:#?}");
        assert!(infos[0].contains("failures=1010"), "{}", infos[0]);
        assert!(infos[0].contains("lasted_ms=11000"), "{}", infos[0]);

        // A new outage after the recovery line is logged at once.
        log.failed("check", &error());
        assert_eq!(lines.at("WARN").len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn unannounced_changes_warn_once_per_quiet_period_with_counts() {
        let (lines, _guard) = capture();
        let log = StoreLog::new("test");
        for session in 0..100 {
            log.unannounced(&session);
        }
        assert_eq!(lines.at("WARN").len(), 1);
        tokio::time::advance(QUIET_PERIOD - Duration::from_millis(1)).await;
        log.unannounced(&100);
        assert_eq!(lines.at("WARN").len(), 1);
        tokio::time::advance(Duration::from_millis(1)).await;
        log.unannounced(&101);
        let warns = lines.at("WARN");
        assert_eq!(warns.len(), 2, "{warns:#?}");
        assert!(warns[0].contains("session=0 suppressed=0"), "{}", warns[0]);
        assert!(
            warns[1].contains("session=101 suppressed=100"),
            "{}",
            warns[1]
        );
        // A failure burst has a quiet period of its own.
        log.failed("end", &error());
        assert_eq!(lines.at("WARN").len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_half_working_store_writes_few_lines() {
        let (lines, _guard) = capture();
        let log = StoreLog::new("test");
        for _ in 0..1000 {
            log.failed("check", &error());
            log.succeeded();
        }
        assert_eq!(lines.at("WARN").len(), 2, "{:#?}", lines.at("WARN"));
        assert_eq!(lines.at("INFO").len(), 1);
        // The owed recovery line comes with the first success after the quiet period.
        tokio::time::advance(QUIET_PERIOD).await;
        log.succeeded();
        log.succeeded();
        let infos = lines.at("INFO");
        assert_eq!(infos.len(), 2, "{infos:#?}");
        assert!(infos[1].contains("failures=999"), "{}", infos[1]);
    }
}
