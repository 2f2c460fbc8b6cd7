//! What the layer counts through the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`); without the feature every function here is empty and compiles away. The names
//! and labels are in the crate docs' "Metrics" table.

use crate::ExpiryReason;

/// What the layer decided about a request.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) enum Decision {
    /// An active session, refreshed.
    Active,
    /// An active session, checked but not refreshed (passive and status routes).
    Passive,
    /// Not active: answered 440 with this reason.
    Expired(ExpiryReason),
    /// A stale cookie on an exempt route, removed and passed on.
    Exempt,
    /// No session cookie: passed on untouched.
    NoSession,
    /// The store failed (503, or passed on without the cookie with fail-open).
    StoreError,
    /// A session cookie that cannot be read: 400.
    Malformed,
}

#[cfg(feature = "metrics")]
impl Decision {
    fn labels(self) -> (&'static str, &'static str) {
        match self {
            Decision::Active => ("active", ""),
            Decision::Passive => ("passive", ""),
            Decision::Expired(reason) => ("expired", reason.as_str()),
            Decision::Exempt => ("exempt", ""),
            Decision::NoSession => ("no_session", ""),
            Decision::StoreError => ("store_error", ""),
            Decision::Malformed => ("malformed", ""),
        }
    }
}

/// Counts a request by what the layer decided.
#[inline]
pub(crate) fn request(decision: Decision) {
    #[cfg(feature = "metrics")]
    {
        let (decision, reason) = decision.labels();
        metrics::counter!("session_timeout_requests_total", "decision" => decision, "reason" => reason)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = decision;
}

/// Counts a session begun.
#[inline]
pub(crate) fn session_begun() {
    #[cfg(feature = "metrics")]
    metrics::counter!("session_timeout_sessions_begun_total").increment(1);
}

/// Counts a session end, once, as the announcer announces it.
#[inline]
pub(crate) fn session_ended(reason: ExpiryReason) {
    #[cfg(feature = "metrics")]
    metrics::counter!("session_timeout_sessions_ended_total", "reason" => reason.as_str())
        .increment(1);
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
}

/// Counts a session end the announcer dropped after its hook kept failing.
#[inline]
pub(crate) fn announcement_dropped() {
    #[cfg(feature = "metrics")]
    metrics::counter!("session_timeout_announcements_dropped_total").increment(1);
}

/// Runs a store call that may answer without waiting, timing an answer as
/// [`Bounded`](crate::bounded::Bounded) times the calls that wait.
#[inline]
pub(crate) fn timed<T>(operation: &'static str, call: impl FnOnce() -> Option<T>) -> Option<T> {
    #[cfg(feature = "metrics")]
    {
        let started = std::time::Instant::now();
        let answer = call();
        if answer.is_some() {
            store_call(operation, started.elapsed());
        }
        answer
    }
    #[cfg(not(feature = "metrics"))]
    {
        let _ = operation;
        call()
    }
}

/// Records how long a store call took.
#[cfg(feature = "metrics")]
pub(crate) fn store_call(operation: &'static str, took: std::time::Duration) {
    metrics::histogram!("session_timeout_store_call_duration_seconds", "operation" => operation)
        .record(took.as_secs_f64());
}

/// Sets the number of active sessions, from a store that counts them cheaply.
#[inline]
pub(crate) fn active_sessions(count: u64) {
    #[cfg(feature = "metrics")]
    metrics::gauge!("session_timeout_active_sessions").set(count as f64);
    #[cfg(not(feature = "metrics"))]
    let _ = count;
}
