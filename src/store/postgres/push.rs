//! The push channel of [`PostgresStore`]'s near cache. Every statement that changes a session
//! in a way another instance's memory could not foretell (an end, a sign-out everywhere, a
//! session superseded, new timeouts) also runs `pg_notify('<table>_revoked', <key in hex>)`.
//! PostgreSQL delivers a notification when, and only if, its transaction commits, so the push
//! is atomic with the change: no change goes unpushed because its caller died or was
//! cancelled. Each instance with a near cache `LISTEN`s on its own connection and forgets the
//! sessions named. See `store/near.rs` for what the cache may answer.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use super::PostgresStore;
use crate::store::listener::{self, Channel, Heard, Subscription, Timing};
use crate::store::near::NearCache;
use crate::store::SessionKey;
use crate::StoreError;

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
        // Named, so an operator can tell it in `pg_stat_activity`.
        let connect = (*self.pool.connect_options())
            .clone()
            .application_name(&format!("{} near cache", self.queries.shared.table));
        let channel = PgChannel::new(connect, self.queries.revoked.clone(), FIRST_LISTEN);
        listener::start(channel, cache, Timing::DEFAULT, FIRST_LISTEN).await
    }
}

/// The channel `<table>_revoked`, for the near cache's listener.
pub(crate) struct PgChannel {
    connect: PgConnectOptions,
    channel: String,
    /// Bounds each attempt to connect and `LISTEN`, so a server that stops answering midway
    /// holds up the listener no longer than that.
    timeout: Duration,
}

impl PgChannel {
    pub(crate) fn new(connect: PgConnectOptions, channel: String, timeout: Duration) -> Self {
        PgChannel {
            connect,
            channel,
            timeout,
        }
    }
}

impl Channel for PgChannel {
    type Subscription = PgListener;

    /// A listener on a connection of its own that reports a lost connection instead of
    /// reconnecting behind the caller's back (which would hide the notifications missed
    /// meanwhile).
    async fn subscribe(&mut self) -> Option<PgListener> {
        // A pool of one for each subscription: a dropped listener hands its connection back
        // to its pool after an `UNLISTEN`, which never ends on a connection that stopped
        // answering; a shared pool would then have no connection to give.
        // No lifetime or idle limit: the connection is the listener's for as long as it
        // holds, and the pool then needs no maintenance task.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .acquire_timeout(self.timeout)
            .connect_lazy_with(self.connect.clone());
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await.ok()?;
            listener.eager_reconnect(false);
            listener.ignore_pool_close_event(true);
            listener.listen(&self.channel).await.ok()?;
            Some(listener)
        };
        tokio::time::timeout(self.timeout, listening).await.ok()?
    }
}

impl Subscription for PgListener {
    async fn next(&mut self) -> Heard {
        match self.try_recv().await {
            Ok(Some(notification)) => Heard::from_payload(Some(notification.payload())),
            Ok(None) | Err(_) => Heard::Lost,
        }
    }

    async fn ping(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(self).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::listener::tests::a_change_made_here_is_forgotten_here_at_once;

    const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

    /// What this instance changes it forgets at once, before its own notification comes back:
    /// its cache is live but has no listener, so only that can make it forget.
    #[tokio::test]
    async fn forgets_its_own_changes_at_once() {
        let table = format!("near_here_{:016x}", rand::random::<u64>());
        let mut store = PostgresStore::connect(DATABASE_URL)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432")
            .with_table_name(&table)
            .expect("a valid name");
        store.migrate().await.expect("migrate");
        let cache = NearCache::new(Duration::from_secs(600), 1024);
        cache.regained();
        store.near = Some(Arc::new(cache));
        a_change_made_here_is_forgotten_here_at_once(&store).await;
        let drop = format!("DROP TABLE {table}");
        sqlx::query(&drop)
            .execute(&store.pool)
            .await
            .expect("dropped");
    }
}
