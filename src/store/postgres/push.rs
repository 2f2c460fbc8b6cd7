//! The push channel of [`PostgresStore`]'s near cache. Every statement that changes a session
//! in a way another instance's memory could not foretell (an end, a sign-out everywhere, a
//! session superseded, new timeouts) also runs `pg_notify('<table>_revoked', <key in hex>)`.
//! PostgreSQL delivers a notification when, and only if, its transaction commits, so the push
//! is atomic with the change: no change goes unpushed because its caller died or was
//! cancelled. Each instance with a near cache `LISTEN`s on its own connection and forgets the
//! sessions named. See `store/near.rs` for what the cache may answer.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgListener, PgPoolOptions};

use super::PostgresStore;
use crate::store::near::{LostOnDrop, NearCache};
use crate::store::SessionKey;
use crate::StoreError;

/// How long the listener waits for a notification before it pings its connection (a
/// connection can die without a word), and how long the ping may take.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long a subscription must have held for the back-off to start over.
const STEADY: Duration = Duration::from_secs(10);
/// The longest wait between two attempts to listen again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long [`with_near_cache`](PostgresStore::with_near_cache) waits for the first `LISTEN`.
const FIRST_LISTEN: Duration = Duration::from_secs(5);

/// The channel revocations of the sessions in `table` are notified on. Table names are at
/// most 48 bytes, so this stays within PostgreSQL's 63 for a channel.
pub(super) fn channel(table: &str) -> String {
    format!("{table}_revoked")
}

/// `statement`, an `UPDATE` of the row `key = $1` that returns its state, made to notify the
/// key on the channel `$<channel>` when it changed the row. In the select list, the
/// notification is sent once for each row changed, and only then.
pub(super) fn notifying(statement: &str, channel: usize) -> String {
    format!(
        "WITH changed AS ({statement}) \
         SELECT state, pg_notify(${channel}, encode($1, 'hex')) FROM changed"
    )
}

/// `statement`, an `UPDATE` of any number of rows that returns nothing, made to notify each
/// key it changed on the channel `$<channel>`, and to return those keys.
pub(super) fn notifying_each(statement: &str, channel: usize) -> String {
    format!(
        "WITH changed AS ({statement} RETURNING key) \
         SELECT key, pg_notify(${channel}, encode(key, 'hex')) FROM changed"
    )
}

impl PostgresStore {
    /// Forgets the session in this instance's near cache, if it has one, after a change
    /// (other instances hear of it by the notification).
    pub(super) fn forget_near(&self, key: &SessionKey) {
        if let Some(near) = &self.near {
            near.forget(key);
        }
    }

    /// Starts listening for revocations into `cache` on a connection of its own (made with
    /// the pool's connect options), and waits until the first `LISTEN` holds.
    pub(super) async fn listen(&self, cache: &Arc<NearCache>) -> Result<(), StoreError> {
        let (listening, first) = tokio::sync::oneshot::channel();
        let options = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(FIRST_LISTEN);
        // Named, so an operator can tell it in `pg_stat_activity` (tests end it by name).
        let connect = (*self.pool.connect_options())
            .clone()
            .application_name(&format!("{} near cache", self.queries.shared.table));
        let pool = options.connect_lazy_with(connect);
        tokio::spawn(listener(
            pool,
            self.queries.revoked.clone(),
            Arc::downgrade(cache),
            listening,
        ));
        match tokio::time::timeout(FIRST_LISTEN, first).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(StoreError::Timeout(FIRST_LISTEN)),
        }
    }
}

/// Listens, forgets every session a notification names, and when the connection is lost (or
/// does not answer a ping), drops the cache and listens again. Ends once no store uses the
/// cache; should it end any other way (its runtime shut down), the cache stops answering.
async fn listener(
    pool: sqlx::PgPool,
    channel: String,
    cache: Weak<NearCache>,
    listening: tokio::sync::oneshot::Sender<()>,
) {
    let _stops_answers = LostOnDrop::new(&cache);
    let mut listening = Some(listening);
    let mut backoff = Duration::from_millis(50);
    while cache.strong_count() > 0 {
        if let Ok(mut listener) = subscribe(&pool, &channel).await {
            let Some(live) = cache.upgrade() else { return };
            live.regained();
            drop(live);
            if let Some(listening) = listening.take() {
                let _ = listening.send(());
            }
            let since = Instant::now();
            loop {
                match tokio::time::timeout(IDLE_CHECK, listener.try_recv()).await {
                    Ok(Ok(Some(notification))) => {
                        let Some(live) = cache.upgrade() else { return };
                        match SessionKey::from_hex(notification.payload()) {
                            Some(key) => live.forget(&key),
                            // Not ours to read: it may have been a revocation.
                            None => {
                                live.lost();
                                live.regained();
                            }
                        }
                    }
                    // The connection was lost: notifications may have been missed.
                    Ok(Ok(None) | Err(_)) => break,
                    Err(_) if cache.strong_count() == 0 => return,
                    Err(_) => {
                        let ping = sqlx::query("SELECT 1").execute(&mut listener);
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
        let Some(live) = cache.upgrade() else { return };
        live.lost();
        drop(live);
        tracing::warn!(
            retry_in = ?backoff,
            "near cache: revocation channel lost; every check asks PostgreSQL until it is back"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// A listener on `channel` that reports a lost connection instead of reconnecting behind
/// the caller's back (which would hide the notifications missed meanwhile).
async fn subscribe(pool: &sqlx::PgPool, channel: &str) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.eager_reconnect(false);
    listener.ignore_pool_close_event(true);
    listener.listen(channel).await?;
    Ok(listener)
}
