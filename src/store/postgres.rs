//! [`PostgresStore`]: sessions in a PostgreSQL table, shared by every app instance.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgRow};
use sqlx::Row;

use super::sql::{self, BoxFuture, Params, Queries, SqlOptions};
use super::{Begin, Check, NewSession, Policy, SessionKey, SessionStore, Touch};
use crate::error_log::StoreLog;
use crate::{Clock, StoreError, Timestamp};

/// Keeps sessions in a PostgreSQL table, so several app instances share them and they outlive
/// restarts.
///
/// Every operation is one statement, so two instances racing on one session cannot revive it:
/// a check that finds the session expired retires it in the same `UPDATE` that would have
/// refreshed it (a CTE then reads the row when no write was needed; if that read comes from a
/// snapshot older than another instance's write in the same instant, the statement runs
/// again). Rows are keyed by the SHA-256 of the session id, never the id.
///
/// Call [`migrate`](PostgresStore::migrate) once at start-up to create the table and its index
/// on the expiry time, and [`spawn_purge`](PostgresStore::spawn_purge) (or call
/// [`purge`](SessionStore::purge) yourself) so expired rows do not accumulate.
///
/// [`connect`](PostgresStore::connect) bounds every call: a second to get a connection from
/// the pool, two seconds per statement (PostgreSQL's `statement_timeout`, which also ends a
/// wait on a lock), so a locked table is answered with a store error (503) within about
/// 2 s rather than the layer's whole store timeout, and the cancelled statement gives its
/// connection back. [`connect_with_options`](PostgresStore::connect_with_options) sets the
/// pool size and these bounds ([`SqlOptions`], which also says how to size the pool). Failures
/// are logged once per burst, with a count.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_session_timeout::{PostgresStore, SessionTimeoutLayer, SystemClock};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// store.migrate().await?;
/// let _purge = store.spawn_purge(Duration::from_secs(60), SystemClock);
/// let layer = SessionTimeoutLayer::builder().store(store).build()?;
/// # let _ = layer; Ok(()) }
/// ```
///
/// # The table
///
/// `tower_session_timeout` by default ([`with_table_name`](PostgresStore::with_table_name)): `key`
/// (the 32-byte SHA-256 of the id, primary key), `created_at` and `last_seen` (Unix
/// milliseconds), `state` (`active`, or why it ended: `idle`, `absolute`, `ended`) and
/// `expires_at`, the time from which the row may be deleted: for an active session its deadline
/// plus the tombstone retention (until then an expired session still answers its reason), for
/// an ended or expired one the end of that retention. The purge is
/// `DELETE ... WHERE expires_at <= now`, through the index on `expires_at`, so its cost grows
/// with what expired, not with what is stored.
///
/// # Why the app's clock
///
/// The check and the purge both use the `now` the layer passes in, never the database's
/// clock: one clock then governs every store, so swapping stores never changes when a session
/// expires, and tests can step a [`ManualClock`](crate::ManualClock). Instances sharing the
/// database must keep their clocks in sync (NTP). A clock that lags cannot revive a session: a
/// retired row stays retired whatever `now` a later statement brings, and `last_seen` never
/// moves backwards.
///
/// Clones share the pool.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    queries: Arc<PgQueries>,
    log: Arc<StoreLog>,
}

#[derive(Debug)]
struct PgQueries {
    shared: Queries,
    /// The check `UPDATE`, then the row as it stands if it wrote nothing: one statement.
    check: String,
    /// The begin upsert, then the row as it stands if it wrote nothing: one statement.
    begin: String,
}

impl From<Queries> for PgQueries {
    fn from(shared: Queries) -> Self {
        PgQueries {
            check: shared.written_or_current(&shared.check),
            begin: shared.written_or_current(&shared.begin),
            shared,
        }
    }
}

impl PostgresStore {
    /// Connects a new pool to `url` (`postgres://user:password@host:port/database`), with
    /// the default [`SqlOptions`] (10 connections, 1 s to acquire one, 2 s per statement).
    /// The table is not created: call [`migrate`](PostgresStore::migrate).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_session_timeout::StoreError> {
    /// let store = tower_session_timeout::PostgresStore::connect("postgres://postgres@localhost/app").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_options(url, SqlOptions::default()).await
    }

    /// Connects a new pool to `url` with the pool size and time bounds of `options`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_session_timeout::StoreError> {
    /// use std::time::Duration;
    /// use tower_session_timeout::{store::SqlOptions, PostgresStore};
    ///
    /// // Eight instances of 10 connections fit a server's default max_connections (100).
    /// let options = SqlOptions::new()
    ///     .max_connections(10)
    ///     .statement_timeout(Duration::from_secs(1));
    /// let store = PostgresStore::connect_with_options("postgres://app@db/app", options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_options(url: &str, options: SqlOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(url).map_err(sql::backend)?;
        Self::connect_with(connect, options).await
    }

    /// Connects a new pool with `connect` (for what a URL cannot say: TLS files, a socket
    /// directory) and the pool size and time bounds of `options`, which set the connections'
    /// `statement_timeout`.
    pub async fn connect_with(
        connect: PgConnectOptions,
        options: SqlOptions,
    ) -> Result<Self, StoreError> {
        // A startup parameter, so it holds for every statement of every connection, and the
        // server itself cancels a statement stuck behind a lock.
        let connect = connect.options([("statement_timeout", options.statement_timeout_ms())]);
        let pool = options
            .pool()
            .connect_with(connect)
            .await
            .map_err(sql::backend)?;
        Ok(Self::from_pool(pool))
    }

    /// Uses an existing pool, with the table named `tower_session_timeout`.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let pool = sqlx::PgPool::connect("postgres://postgres@localhost/app").await?;
    /// let store = tower_session_timeout::PostgresStore::from_pool(pool);
    /// # Ok(()) }
    /// ```
    pub fn from_pool(pool: PgPool) -> Self {
        PostgresStore {
            pool,
            queries: Arc::new(PgQueries::from(Queries::default_table())),
            log: Arc::new(StoreLog::new("postgres")),
        }
    }

    /// Uses the table `name` instead of `tower_session_timeout` (its index is
    /// `<name>_expires_at_idx`). The name must be a plain identifier (ASCII letters, digits and
    /// `_`, at most 48): it is part of the SQL text. To use another schema, set `search_path`
    /// on the pool's connections.
    ///
    /// ```no_run
    /// # async fn run(store: tower_session_timeout::PostgresStore) -> Result<(), tower_session_timeout::StoreError> {
    /// let store = store.with_table_name("web_sessions")?;
    /// # Ok(()) }
    /// ```
    pub fn with_table_name(self, name: &str) -> Result<Self, StoreError> {
        Ok(PostgresStore {
            pool: self.pool,
            queries: Arc::new(PgQueries::from(Queries::new(name)?)),
            log: self.log,
        })
    }

    /// Creates the table and its index on `expires_at` if they are missing. Safe to call from
    /// several instances at once: an advisory lock makes them take turns.
    ///
    /// ```no_run
    /// # async fn run(store: tower_session_timeout::PostgresStore) -> Result<(), tower_session_timeout::StoreError> {
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(sql::backend)?;
        // Waiting for another instance's migration may take longer than the statement
        // timeout meant for requests.
        sqlx::query("SET LOCAL statement_timeout = 60000")
            .execute(&mut *tx)
            .await
            .map_err(sql::backend)?;
        // Two `CREATE TABLE IF NOT EXISTS` racing can still fail on the catalog's unique
        // index, hence the lock, released at commit.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
            .bind(format!("tower_session_timeout:{}", self.table_name()))
            .execute(&mut *tx)
            .await
            .map_err(sql::backend)?;
        for statement in self.queries.shared.create("BYTEA") {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(sql::backend)?;
        }
        tx.commit().await.map_err(sql::backend)
    }

    /// Runs [`purge`](SessionStore::purge) every `interval` (at least a second) in a Tokio
    /// task, with the time from `clock`; give it the layer's clock. Failures are logged with
    /// `tracing` and the task goes on; abort the returned handle to stop it.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime, as [`tokio::spawn`] does.
    ///
    /// ```no_run
    /// # async fn run(store: tower_session_timeout::PostgresStore) {
    /// let purge = store.spawn_purge(std::time::Duration::from_secs(60), tower_session_timeout::SystemClock);
    /// // ... on shutdown:
    /// purge.abort();
    /// # }
    /// ```
    pub fn spawn_purge(
        &self,
        interval: Duration,
        clock: impl Clock,
    ) -> tokio::task::JoinHandle<()> {
        sql::spawn_purge(self.clone(), interval, clock)
    }

    /// The pool the store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The name of the table.
    pub fn table_name(&self) -> &str {
        &self.queries.shared.table
    }

    /// The name of the index on `expires_at`.
    pub fn index_name(&self) -> &str {
        &self.queries.shared.index
    }
}

fn decode(row: &PgRow) -> Result<(bool, sql::StoredRow), StoreError> {
    let written: bool = row
        .try_get("written")
        .map_err(|e| StoreError::CorruptRecord(e.to_string()))?;
    Ok((written, sql::decode_row(row)?))
}

impl SessionStore for PostgresStore {
    type CheckFuture = BoxFuture<Check>;
    type BeginFuture = BoxFuture<Begin>;
    type EndFuture = BoxFuture<bool>;
    type PurgeFuture = BoxFuture<u64>;

    fn check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Self::CheckFuture {
        let store = self.clone();
        let p = Params::new(key, now, policy, touch);
        sql::logged(&self.log, "check", async move {
            sql::retrying(|| async {
                let row = sql::bind_params!(sqlx::query(&store.queries.check), p)
                    .bind(p.touch)
                    .bind(p.refresh)
                    .fetch_optional(&store.pool)
                    .await
                    .map_err(sql::backend)?;
                let row = row.as_ref().map(decode).transpose()?;
                let answer = match row {
                    Some((written, row)) => sql::read_check(Some(row), written, &p),
                    None => sql::read_check(None, false, &p),
                };
                if let Some(answer) = &answer {
                    if sql::found_forgotten(row.as_ref().map(|(_, row)| row), answer) {
                        // Rare (a row nobody asked about until its retention passed), so a
                        // second statement here costs nothing on the common path.
                        sqlx::query(&store.queries.shared.forget)
                            .bind(p.key.to_vec())
                            .bind(p.now)
                            .execute(&store.pool)
                            .await
                            .map_err(sql::backend)?;
                    }
                }
                Ok(answer)
            })
            .await
        })
    }

    fn begin(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        _new: NewSession<'_>,
    ) -> Self::BeginFuture {
        let store = self.clone();
        let p = Params::new(key, now, policy, Touch::Passive);
        sql::logged(&self.log, "begin", async move {
            sql::retrying(|| async {
                let row = sql::bind_params!(sqlx::query(&store.queries.begin), p)
                    .bind(p.new_row_expires_at())
                    .fetch_optional(&store.pool)
                    .await
                    .map_err(sql::backend)?;
                // No row at all: the key conflicted with a row begun by another instance
                // after this statement's snapshot; the next attempt sees it.
                Ok(match row.as_ref().map(decode).transpose()? {
                    Some((written, row)) => sql::read_begin(Some(row), written, &p),
                    None => None,
                })
            })
            .await
        })
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        let store = self.clone();
        let p = Params::new(key, now, policy, Touch::Passive);
        sql::logged(&self.log, "end", async move {
            let state: Option<String> =
                sql::bind_params!(sqlx::query_scalar(&store.queries.shared.end), p)
                    .fetch_optional(&store.pool)
                    .await
                    .map_err(sql::backend)?;
            if state.is_none() {
                // Nothing active to end. A row past its retention is forgotten at this `now`,
                // as check and begin find it; left in place, a clock stepping back would find
                // it again. Rare (an end on a session long gone), so a second statement.
                sqlx::query(&store.queries.shared.forget)
                    .bind(p.key.to_vec())
                    .bind(p.now)
                    .execute(&store.pool)
                    .await
                    .map_err(sql::backend)?;
            }
            Ok(state.as_deref() == Some("ended"))
        })
    }

    fn purge(&self, now: Timestamp) -> Self::PurgeFuture {
        let store = self.clone();
        let now = sql::millis(now);
        sql::logged(&self.log, "purge", async move {
            sql::purge_in_batches(|| async {
                let done = sqlx::query(&store.queries.shared.purge)
                    .bind(now)
                    .execute(&store.pool)
                    .await
                    .map_err(sql::backend)?;
                Ok(done.rows_affected())
            })
            .await
        })
    }
}
