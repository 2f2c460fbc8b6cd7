//! [`SqliteStore`]: sessions in an SQLite file, kept across restarts.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

use super::sql::{self, BoxFuture, Params, Queries, SqlOptions, StoredRow};
use super::{Begin, Check, NewSession, Policy, SessionKey, SessionStore, Touch};
use crate::error_log::StoreLog;
use crate::{Clock, StoreError, Timestamp};

/// Keeps sessions in an SQLite database file, so they outlive a restart of the app, with their
/// deadlines unchanged.
///
/// Every write is one statement (`UPDATE ... RETURNING`, `INSERT ... ON CONFLICT DO UPDATE ...
/// RETURNING`; SQLite 3.35 or later, which the bundled library is), so requests racing on one
/// session, from this process or another one on the same file, cannot revive it: a check
/// that finds the session expired retires it in the same `UPDATE` that would have refreshed
/// it. The row is read first, so what needs no write (a passive check, a tombstone, a refresh
/// the touch interval skips) takes no write lock; the write re-checks its condition in the
/// same statement, and when the row changed since the read, the read runs again. Rows are
/// keyed by the SHA-256 of the session id, never the id.
///
/// Call [`migrate`](SqliteStore::migrate) once at start-up to create the table and its index
/// on the expiry time, and [`spawn_purge`](SqliteStore::spawn_purge) (or call
/// [`purge`](SessionStore::purge) yourself) so expired rows do not accumulate.
///
/// Every call is bounded: a second to get a connection from the pool, and two seconds of
/// waiting on another writer's lock (SQLite's busy timeout) before it fails; set them with
/// [`connect_with_options`](SqliteStore::connect_with_options) ([`SqlOptions`]). Failures
/// are logged once per burst, with a count.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_session_timeout::{SessionTimeoutLayer, SqliteStore, SystemClock};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::connect("sqlite://sessions.db").await?;
/// store.migrate().await?;
/// let _purge = store.spawn_purge(Duration::from_secs(60), SystemClock);
/// let layer = SessionTimeoutLayer::builder().store(store).build()?;
/// # let _ = layer; Ok(()) }
/// ```
///
/// # The table
///
/// `tower_session_timeout` by default ([`with_table_name`](SqliteStore::with_table_name)): `key`
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
pub struct SqliteStore {
    pool: SqlitePool,
    queries: Arc<Queries>,
    log: Arc<StoreLog>,
}

impl SqliteStore {
    /// Opens the database at `url` (`sqlite://path`, `sqlite:path`), creating the file when it
    /// is missing, in WAL mode so reads do not wait on writes. The table is not created: call
    /// [`migrate`](SqliteStore::migrate).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_session_timeout::StoreError> {
    /// let store = tower_session_timeout::SqliteStore::connect("sqlite://sessions.db").await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with_options(url, SqlOptions::default()).await
    }

    /// Opens the database at `url` as [`connect`](SqliteStore::connect) does, with the pool
    /// size and time bounds of `options` (the statement timeout is SQLite's busy timeout).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_session_timeout::StoreError> {
    /// use std::time::Duration;
    /// use tower_session_timeout::{store::SqlOptions, SqliteStore};
    ///
    /// let options = SqlOptions::new().statement_timeout(Duration::from_millis(500));
    /// let store = SqliteStore::connect_with_options("sqlite://sessions.db", options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect_with_options(url: &str, options: SqlOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url).map_err(sql::backend)?;
        Self::connect_with(connect, options).await
    }

    /// Opens the database file at `path`, creating it when it is missing; see
    /// [`connect`](SqliteStore::connect).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tower_session_timeout::StoreError> {
    /// let store = tower_session_timeout::SqliteStore::open("/var/lib/app/sessions.db").await?;
    /// # Ok(()) }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_options(path, SqlOptions::default()).await
    }

    /// Opens the database file at `path` with the pool size and time bounds of `options`.
    pub async fn open_with_options(
        path: impl AsRef<Path>,
        options: SqlOptions,
    ) -> Result<Self, StoreError> {
        Self::connect_with(SqliteConnectOptions::new().filename(path), options).await
    }

    /// Opens a new pool with `connect` (for settings a URL cannot say) and the pool size and
    /// time bounds of `options`; the file is created when missing, in WAL mode.
    pub async fn connect_with(
        connect: SqliteConnectOptions,
        options: SqlOptions,
    ) -> Result<Self, StoreError> {
        let connect = connect
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(options.get_statement_timeout());
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
    /// let pool = sqlx::SqlitePool::connect("sqlite://sessions.db").await?;
    /// let store = tower_session_timeout::SqliteStore::from_pool(pool);
    /// # Ok(()) }
    /// ```
    pub fn from_pool(pool: SqlitePool) -> Self {
        SqliteStore {
            pool,
            queries: Arc::new(Queries::default_table()),
            log: Arc::new(StoreLog::new("sqlite")),
        }
    }

    /// Uses the table `name` instead of `tower_session_timeout` (its index is
    /// `<name>_expires_at_idx`). The name must be a plain identifier (ASCII letters, digits and
    /// `_`, at most 48): it is part of the SQL text.
    ///
    /// ```no_run
    /// # async fn run(store: tower_session_timeout::SqliteStore) -> Result<(), tower_session_timeout::StoreError> {
    /// let store = store.with_table_name("web_sessions")?;
    /// # Ok(()) }
    /// ```
    pub fn with_table_name(self, name: &str) -> Result<Self, StoreError> {
        Ok(SqliteStore {
            pool: self.pool,
            queries: Arc::new(Queries::new(name)?),
            log: self.log,
        })
    }

    /// Creates the table and its index on `expires_at` if they are missing.
    ///
    /// ```no_run
    /// # async fn run(store: tower_session_timeout::SqliteStore) -> Result<(), tower_session_timeout::StoreError> {
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(sql::backend)?;
        for statement in self.queries.create("BLOB") {
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
    /// # async fn run(store: tower_session_timeout::SqliteStore) {
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
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The name of the table.
    pub fn table_name(&self) -> &str {
        &self.queries.table
    }

    /// The name of the index on `expires_at`.
    pub fn index_name(&self) -> &str {
        &self.queries.index
    }

    /// The row for `p.key` as it stands.
    async fn current(&self, p: &Params) -> Result<Option<StoredRow>, StoreError> {
        let row = sqlx::query(&self.queries.select)
            .bind(p.key.to_vec())
            .fetch_optional(&self.pool)
            .await
            .map_err(sql::backend)?;
        row.as_ref().map(sql::decode_row).transpose()
    }

    /// Deletes the key's row if it is past its `expires_at`.
    async fn forget(&self, p: &Params) -> Result<(), StoreError> {
        sqlx::query(&self.queries.forget)
            .bind(p.key.to_vec())
            .bind(p.now)
            .execute(&self.pool)
            .await
            .map_err(sql::backend)?;
        Ok(())
    }
}

impl SessionStore for SqliteStore {
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
            // Read first, so passive checks, tombstones and refreshes the touch interval skips
            // take no write lock; the write itself re-checks its condition atomically, and
            // when it finds the row changed since the read, the read runs again.
            sql::retrying(|| async {
                let current = store.current(&p).await?;
                if let Some(answer) = sql::read_check(current, false, &p) {
                    if sql::found_forgotten(current.as_ref(), &answer) {
                        store.forget(&p).await?;
                    }
                    return Ok(Some(answer));
                }
                let written = sql::bind_params!(sqlx::query(&store.queries.check), p)
                    .bind(p.touch)
                    .bind(p.refresh)
                    .fetch_optional(&store.pool)
                    .await
                    .map_err(sql::backend)?;
                match written {
                    Some(row) => Ok(sql::read_check(Some(sql::decode_row(&row)?), true, &p)),
                    None => Ok(None),
                }
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
                // An active session or a live tombstone needs no write (see `check`).
                let current = store.current(&p).await?;
                if current.is_some() {
                    if let Some(answer) = sql::read_begin(current, false, &p) {
                        return Ok(Some(answer));
                    }
                }
                let written = sql::bind_params!(sqlx::query(&store.queries.begin), p)
                    .bind(p.new_row_expires_at())
                    .fetch_optional(&store.pool)
                    .await
                    .map_err(sql::backend)?;
                match written {
                    Some(row) => Ok(sql::read_begin(Some(sql::decode_row(&row)?), true, &p)),
                    None => Ok(None),
                }
            })
            .await
        })
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        let store = self.clone();
        let p = Params::new(key, now, policy, Touch::Passive);
        sql::logged(&self.log, "end", async move {
            let state: Option<String> =
                sql::bind_params!(sqlx::query_scalar(&store.queries.end), p)
                    .fetch_optional(&store.pool)
                    .await
                    .map_err(sql::backend)?;
            if state.is_none() {
                // Nothing active to end. A row past its retention is forgotten at this `now`,
                // as check and begin find it; left in place, a clock stepping back would find
                // it again. Rare (an end on a session long gone), so a second statement.
                store.forget(&p).await?;
            }
            Ok(state.as_deref() == Some("ended"))
        })
    }

    fn purge(&self, now: Timestamp) -> Self::PurgeFuture {
        let store = self.clone();
        let now = sql::millis(now);
        sql::logged(&self.log, "purge", async move {
            sql::purge_in_batches(|| async {
                let done = sqlx::query(&store.queries.purge)
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
