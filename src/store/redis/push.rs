//! The push channel of [`RedisStore`]'s near cache: every change to a session that another
//! instance's memory could not foretell is published on `<prefix>revoked` (the session key in
//! hex), and each instance with a near cache listens on its own connection and forgets that
//! session. See `store/near.rs` for what the cache may answer.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::Client;
use futures_core::Stream;

use super::reply::session_key;
use super::{Connection, RedisStore};
use crate::store::near::NearCache;
use crate::store::SessionKey;
use crate::StoreError;

/// How often the listener looks whether its store is still in use.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long a subscription must have held for the back-off to start over.
const STEADY: Duration = Duration::from_secs(10);
/// The longest wait between two attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

impl RedisStore {
    /// The channel revocations are published on.
    pub(super) fn revoked_channel(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    /// Tells every instance's near cache that the session changed: this one's at once (a
    /// check under way is then not remembered either), the others' through the channel. A
    /// lost publish only delays the revocation on other instances by their cache's
    /// `max_age`, so a failure is logged, not returned: the change itself is done.
    pub(super) async fn publish_revoked(&self, key: &SessionKey) {
        if let Some(near) = &self.near {
            near.forget(key);
        }
        // On a cluster, PUBLISH would go to every node; the near cache is single-node only.
        if !matches!(self.connection, Connection::Single(_)) {
            return;
        }
        let mut command = ::redis::cmd("PUBLISH");
        command.arg(self.revoked_channel()).arg(key.to_hex());
        let mut connection = self.connection.clone();
        let published = tokio::time::timeout(self.timeout, connection.query::<i64>(&command)).await;
        if !matches!(published, Ok(Ok(_))) {
            tracing::warn!(
                session = %key,
                "could not publish a session's revocation; other instances' near caches keep it until their max_age"
            );
        }
    }

    /// Starts listening for revocations into `cache`, and waits (up to the store timeout)
    /// until the first subscription holds.
    pub(super) async fn listen(
        &self,
        client: Client,
        cache: &Arc<NearCache>,
    ) -> Result<(), StoreError> {
        let (subscribed, first) = tokio::sync::oneshot::channel();
        tokio::spawn(listener(
            client,
            self.revoked_channel(),
            Arc::downgrade(cache),
            subscribed,
        ));
        match tokio::time::timeout(self.timeout, first).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

/// Subscribes, forgets every session a message names, and when the connection is lost (or
/// does not answer a ping within [`IDLE_CHECK`]: a connection can die without a word), drops
/// the cache and subscribes again. Ends once no store uses the cache; should it end any other
/// way (its runtime shut down), the cache stops answering.
async fn listener(
    client: Client,
    channel: String,
    cache: Weak<NearCache>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let _stops_answers = LostOnDrop(cache.clone());
    let mut subscribed = Some(subscribed);
    let mut backoff = Duration::from_millis(50);
    while cache.strong_count() > 0 {
        if let Ok(pubsub) = client.get_async_pubsub().await {
            let (mut sink, mut messages) = pubsub.split();
            if sink.subscribe(&channel).await.is_ok() {
                let Some(live) = cache.upgrade() else { return };
                live.regained();
                drop(live);
                if let Some(subscribed) = subscribed.take() {
                    let _ = subscribed.send(());
                }
                let since = std::time::Instant::now();
                loop {
                    let next = poll_fn(|cx| Pin::new(&mut messages).poll_next(cx));
                    match tokio::time::timeout(IDLE_CHECK, next).await {
                        Ok(Some(message)) => {
                            let Some(live) = cache.upgrade() else { return };
                            let key = message
                                .get_payload::<String>()
                                .ok()
                                .and_then(|hex| session_key(&hex));
                            match key {
                                Some(key) => live.forget(&key),
                                // Not ours to read: it may have been a revocation.
                                None => {
                                    live.lost();
                                    live.regained();
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(_) if cache.strong_count() == 0 => return,
                        Err(_) => {
                            let ping = sink.ping::<::redis::Value>();
                            if !matches!(tokio::time::timeout(IDLE_CHECK, ping).await, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                // A subscription that lasted starts the back-off over; a flapping one does not.
                if since.elapsed() > STEADY {
                    backoff = Duration::from_millis(50);
                }
            }
        }
        let Some(live) = cache.upgrade() else { return };
        live.lost();
        drop(live);
        tracing::warn!(
            retry_in = ?backoff,
            "near cache: revocation channel lost; every check asks the store until it is back"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Stops the cache answering when the listener ends, however it ends.
struct LostOnDrop(Weak<NearCache>);

impl Drop for LostOnDrop {
    fn drop(&mut self) {
        if let Some(cache) = self.0.upgrade() {
            cache.lost();
        }
    }
}
