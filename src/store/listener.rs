//! The listener that feeds a [`NearCache`] from its store's push channel (Redis pub/sub,
//! PostgreSQL `LISTEN`), one loop for both: it subscribes, forgets every session a message
//! names, notices a lost connection (or one that no longer answers a ping: a connection can
//! die without a word), drops the cache while it is down and subscribes again with back-off.
//! A store provides only the [`Channel`] itself.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::near::NearCache;
use super::SessionKey;
use crate::StoreError;

/// What the listener heard on its subscription.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Heard {
    /// A change to this session was pushed: forget it.
    Revoked(SessionKey),
    /// A message that names no session in the form pushed: it may have been a revocation.
    Unreadable,
    /// The connection is lost: pushes may have been missed.
    Lost,
}

impl Heard {
    /// A message's payload: a session key in hex, or nothing this crate pushes.
    pub(crate) fn from_payload(payload: Option<&str>) -> Self {
        match payload.and_then(SessionKey::from_hex) {
            Some(key) => Heard::Revoked(key),
            None => Heard::Unreadable,
        }
    }
}

/// A store's push channel, as the listener uses it.
pub(crate) trait Channel: Send + 'static {
    /// One subscription, on a connection of its own.
    type Subscription: Subscription;

    /// Connects and subscribes; `None` if either failed (the listener backs off and tries
    /// again).
    fn subscribe(&mut self) -> impl Future<Output = Option<Self::Subscription>> + Send;
}

/// A subscription of a [`Channel`]. The listener drops the future of `next` when nothing
/// came in time, so `next` must lose no message when dropped.
pub(crate) trait Subscription: Send {
    /// The next message, or [`Heard::Lost`].
    fn next(&mut self) -> impl Future<Output = Heard> + Send;

    /// Asks the server something; whether it answered.
    fn ping(&mut self) -> impl Future<Output = bool> + Send;
}

/// The listener's waits: [`Timing::DEFAULT`], but for tests, which shorten them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long the subscription may be quiet before the listener looks whether its store is
    /// still in use, and pings it.
    pub(crate) idle_check: Duration,
    /// How long that ping may take.
    pub(crate) ping: Duration,
    /// The first wait before subscribing again, doubled after each loss up to `max_backoff`.
    pub(crate) first_backoff: Duration,
    /// The longest wait between two attempts to subscribe again.
    pub(crate) max_backoff: Duration,
    /// How long a subscription must have held for the back-off to start over.
    pub(crate) steady: Duration,
    /// At most one line of each kind (channel lost, channel back) per this long.
    pub(crate) log_every: Duration,
}

impl Timing {
    pub(crate) const DEFAULT: Timing = Timing {
        idle_check: Duration::from_secs(1),
        ping: Duration::from_secs(1),
        first_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(1),
        steady: Duration::from_secs(10),
        log_every: crate::error_log::QUIET_PERIOD,
    };
}

/// Starts a listener of `channel` into `cache`, and waits up to `first_within` until its
/// first subscription holds.
pub(crate) async fn start<C: Channel>(
    channel: C,
    cache: &Arc<NearCache>,
    timing: Timing,
    first_within: Duration,
) -> Result<(), StoreError> {
    let (subscribed, first) = oneshot::channel();
    tokio::spawn(listen(channel, Arc::downgrade(cache), subscribed, timing));
    match tokio::time::timeout(first_within, first).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(StoreError::Timeout(first_within)),
    }
}

/// Subscribes, forgets every session a message names, and when the connection is lost (or
/// does not answer a ping after `idle_check` of quiet), drops the cache and subscribes again.
/// Ends once no store uses the cache; should it end any other way (its runtime shut down, a
/// panic), the cache stops answering.
async fn listen<C: Channel>(
    mut channel: C,
    cache: Weak<NearCache>,
    subscribed: oneshot::Sender<()>,
    timing: Timing,
) {
    let _stops_answers = LostOnDrop(cache.clone());
    let mut subscribed = Some(subscribed);
    let mut backoff = timing.first_backoff;
    let mut log = LossLog::default();
    while cache.strong_count() > 0 {
        if let Some(mut subscription) = channel.subscribe().await {
            let Some(live) = cache.upgrade() else { return };
            live.regained();
            drop(live);
            log.regained(Instant::now(), timing.log_every);
            if let Some(subscribed) = subscribed.take() {
                let _ = subscribed.send(());
            }
            let since = Instant::now();
            loop {
                match tokio::time::timeout(timing.idle_check, subscription.next()).await {
                    Ok(Heard::Lost) => break,
                    Ok(heard) => {
                        let Some(live) = cache.upgrade() else { return };
                        if let Heard::Revoked(key) = heard {
                            live.forget(&key);
                        } else {
                            live.lost();
                            live.regained();
                        }
                    }
                    Err(_) if cache.strong_count() == 0 => return,
                    Err(_) => {
                        let ping = tokio::time::timeout(timing.ping, subscription.ping());
                        if !matches!(ping.await, Ok(true)) {
                            break;
                        }
                    }
                }
            }
            // A subscription that lasted starts the back-off over; a flapping one does not.
            if since.elapsed() > timing.steady {
                backoff = timing.first_backoff;
            }
        }
        let Some(live) = cache.upgrade() else { return };
        live.lost();
        drop(live);
        log.lost(Instant::now(), backoff, timing.log_every);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(timing.max_backoff);
    }
}

/// The listener's lines about its channel. A channel that flaps, or a store down for an hour
/// (an attempt a second), writes at most one WARN per `log_every`, with the losses left out
/// since the last, and one INFO per `log_every` when a subscription holds again; a line owed
/// then comes with a later subscription.
#[derive(Debug, Default)]
struct LossLog {
    last_warn: Option<Instant>,
    last_info: Option<Instant>,
    /// Losses since the last WARN, not logged.
    left_out: u64,
    /// The first loss, and how many, since the last INFO.
    since: Option<Instant>,
    losses: u64,
}

impl LossLog {
    fn lost(&mut self, now: Instant, retry_in: Duration, every: Duration) {
        self.since.get_or_insert(now);
        self.losses += 1;
        if self
            .last_warn
            .is_some_and(|at| now.duration_since(at) < every)
        {
            self.left_out += 1;
            tracing::trace!(?retry_in, "near cache: revocation channel lost again");
            return;
        }
        self.last_warn = Some(now);
        tracing::warn!(
            ?retry_in,
            left_out = std::mem::take(&mut self.left_out),
            "near cache: revocation channel lost; every check asks the store until it is back"
        );
    }

    fn regained(&mut self, now: Instant, every: Duration) {
        let Some(since) = self.since else { return };
        if self
            .last_info
            .is_some_and(|at| now.duration_since(at) < every)
        {
            return;
        }
        self.since = None;
        self.last_info = Some(now);
        tracing::info!(
            losses = std::mem::take(&mut self.losses),
            lasted_ms = now.duration_since(since).as_millis(),
            "near cache: revocation channel back"
        );
    }
}

/// Held by the listener: stops the cache answering when the listener ends, however it ends,
/// since no push reaches the cache after.
struct LostOnDrop(Weak<NearCache>);

impl Drop for LostOnDrop {
    fn drop(&mut self) {
        if let Some(cache) = self.0.upgrade() {
            cache.lost();
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
