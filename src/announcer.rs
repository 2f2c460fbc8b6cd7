//! Announcing every session end once, off the request path: the sweep that claims ends from
//! the store and hands them to the hook set with
//! [`on_session_end`](crate::SessionTimeoutBuilder::on_session_end).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::bounded::Bounded;
use crate::config::Config;
use crate::store::{SessionEnd, SessionKey};
use crate::{SessionStore, StoreError};

/// How often the announcer sweeps the store for ends when not set otherwise: 5 s, so an end
/// is announced within about that of its deadline.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How long one call of the end hook may take before it counts as failed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an end stays claimed by the instance that claimed it: another instance may
/// announce it only after this, so a hook that completes within [`HOOK_TIMEOUT`] is never
/// run twice, and an end whose instance died is announced this long after.
pub const ANNOUNCE_LEASE: Duration = Duration::from_secs(30);

/// The most ends one sweep claims and hands to the hook at once.
pub const ANNOUNCE_BATCH: usize = 256;

/// After this many failed hook calls (a panic, or longer than [`HOOK_TIMEOUT`]) on one
/// instance, an end is dropped: acknowledged unannounced, and counted.
pub const HOOK_ATTEMPTS: u32 = 3;

/// The app's end hook, boxed.
pub(crate) type EndHook =
    Arc<dyn Fn(SessionEnd) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What the announcer counts.
#[derive(Debug, Default)]
pub(crate) struct Announcements {
    dropped: AtomicU64,
    /// Failed hook calls per end, on this instance.
    failures: Mutex<HashMap<SessionKey, u32>>,
}

impl Announcements {
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a failed call; answers whether the end is now dropped.
    fn failed(&self, key: SessionKey) -> bool {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key).or_default();
        *count += 1;
        if *count < HOOK_ATTEMPTS {
            return false;
        }
        failures.remove(&key);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn succeeded(&self, key: &SessionKey) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// One sweep: claims the ends due, runs the hook on each (concurrently, each as a task of its
/// own, so a panic is contained), and acknowledges those announced or dropped. Answers how
/// many the hook announced.
pub(crate) async fn announce_once<St: SessionStore>(
    config: &Arc<Config<St>>,
) -> Result<usize, StoreError> {
    if let Some(active) = config.store.active_sessions() {
        crate::metrics::active_sessions(active);
    }
    let Some(hook) = config.on_session_end.clone() else {
        return Ok(0);
    };
    // Batch after batch while batches come back full, so a burst of ends (a deploy that
    // restarts every client, a mass sign-out) is announced within the sweep, not one batch
    // per interval.
    let mut announced = 0;
    loop {
        let (claimed, heard) = announce_batch(config, &hook).await?;
        announced += heard;
        if claimed < ANNOUNCE_BATCH {
            return Ok(announced);
        }
    }
}

/// Claims one batch and announces it; answers how many were claimed and how many the hook
/// announced.
async fn announce_batch<St: SessionStore>(
    config: &Arc<Config<St>>,
    hook: &EndHook,
) -> Result<(usize, usize), StoreError> {
    let now = config.now();
    let claim = config
        .store
        .claim_ends(now, &config.policy, ANNOUNCE_BATCH, ANNOUNCE_LEASE);
    let claimed = Bounded::new("claim_ends", claim, config.store_timeout).await?;
    let count = claimed.len();
    let mut calls = tokio::task::JoinSet::new();
    for end in claimed {
        let hook = Arc::clone(hook);
        let key = end.key;
        tracing::info!(session = %key, reason = %end.reason, "session end announced");
        crate::metrics::session_ended(end.reason);
        calls.spawn(async move {
            // A task of its own, so a panic in the hook is an answer, not a lost end.
            let call = tokio::spawn(hook(end));
            let abort = call.abort_handle();
            let announced = match tokio::time::timeout(HOOK_TIMEOUT, call).await {
                Ok(Ok(())) => true,
                Ok(Err(error)) => {
                    tracing::error!(session = %key, %error, "the session end hook panicked");
                    false
                }
                Err(_) => {
                    abort.abort();
                    tracing::error!(session = %key, "the session end hook took longer than {HOOK_TIMEOUT:?}");
                    false
                }
            };
            (key, announced)
        });
    }
    let mut done = Vec::new();
    let mut announced = 0;
    while let Some(joined) = calls.join_next().await {
        // The outer task only awaits; it cannot panic.
        let Ok((key, ok)) = joined else { continue };
        if ok {
            config.announcements.succeeded(&key);
            announced += 1;
            done.push(key);
        } else if config.announcements.failed(key) {
            tracing::error!(session = %key, "session end dropped after {HOOK_ATTEMPTS} failed hook calls");
            crate::metrics::announcement_dropped();
            done.push(key);
        }
    }
    if !done.is_empty() {
        let ack = config.store.ack_ends(&done, config.now(), &config.policy);
        Bounded::new("ack_ends", ack, config.store_timeout).await?;
    }
    Ok((count, announced))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An end is dropped after `HOOK_ATTEMPTS` failed calls in a row: a call that succeeds in
    /// between starts the count again (and forgets the end's failures).
    #[test]
    fn a_success_starts_the_failure_count_again() {
        let announcements = Announcements::default();
        let key = SessionKey::from_id("flaky");
        for _ in 1..HOOK_ATTEMPTS {
            assert!(!announcements.failed(key));
        }
        announcements.succeeded(&key);
        assert!(announcements.failures.lock().unwrap().is_empty());
        for _ in 1..HOOK_ATTEMPTS {
            assert!(!announcements.failed(key));
        }
        assert!(announcements.failed(key));
        assert_eq!(announcements.dropped(), 1);
    }
}
