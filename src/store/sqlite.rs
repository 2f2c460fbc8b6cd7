//! [`SqliteStore`]: sessions in an SQLite file, kept across restarts.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool};

use super::sql::ends::Claim;
use super::sql::{self, BoxFuture, OwnTimeouts, Params, Queries, SqlOptions, StoredRow};
use super::{
    oldest_first, Begin, Check, NewSession, OwnedSession, Policy, SessionEnd, SessionKey,
    SessionStore, SessionTimeouts, StoreFuture, Touch,
};
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
/// A session may have an owner and timeouts of its own. Ending all of an owner's sessions is
/// one `UPDATE`; a sign-in under
/// [`max_sessions_per_owner`](crate::SessionTimeoutBuilder::max_sessions_per_owner) is one
/// write transaction (`BEGIN IMMEDIATE`), so sign-ins from several processes on the file take
/// turns and never leave more than the limit; a sign-in without a limit stays one statement.
///
/// Every session end is announced once across processes
/// ([`on_session_end`](crate::SessionTimeoutBuilder::on_session_end)):
/// [`claim_ends`](SessionStore::claim_ends) is one `UPDATE`, which holds SQLite's write lock
/// from its start, that retires the sessions found past their deadline, as a check would, and
/// leases the ends due, found through an index rather than a scan of the live sessions; an
/// end stays leased until its announcement is acknowledged, or its lease runs out and another
/// process takes it.
///
/// Call [`migrate`](SqliteStore::migrate) once at start-up to create the table and its
/// indexes (or upgrade a table of an earlier version), and [`spawn_purge`](SqliteStore::spawn_purge) (or call
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
/// milliseconds), `state` (`active`, or why it ended: `idle`, `absolute`, `ended`,
/// `superseded`), `expires_at`, the time from which the row may be deleted: for an active
/// session its deadline plus the tombstone retention (until then an expired session still
/// answers its reason), for an ended or expired one the end of that retention; and three
/// nullable columns: `owner` (indexed where set), and the session's own timeouts `idle_ms`
/// and `absolute_ms` (its own exactly when `idle_ms` is set; `absolute_ms` null then means no
/// absolute timeout); and for the announcement of each end, `announced` (0, or 1 once
/// announced) and `lease_until` (null, or until when a process holds the end to announce
/// it). The index `<table>_expiry_idx` on `(announced, expires_at)` serves the purge,
/// `DELETE ... WHERE expires_at <= now`, whose cost so grows with what expired, not with what
/// is stored, and the announcement sweep, which reads the unannounced rows whose
/// `expires_at` lies within a retention of now: the ends due, never the live sessions. An
/// owner's rows go with the purge like any other, so the owner index never holds more than
/// the table. The purge may delete an end nobody announced once it is past its retention:
/// it is forgotten with its announcement.
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

    /// Uses the table `name` instead of `tower_session_timeout` (its indexes are
    /// `<name>_expiry_idx` and `<name>_owner_idx`). The name must be a plain identifier
    /// (ASCII letters, digits and `_`, at most 48): it is part of the SQL text.
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

    /// Creates the table and its indexes (on `(announced, expires_at)`, and on `owner` where
    /// set) if they are missing, and upgrades a table of an earlier version in place, keeping
    /// its rows.
    ///
    /// A table from before owners and per-session timeouts lacks columns and a `state`
    /// (`superseded`); SQLite cannot change a table's `CHECK`, so that table is rebuilt: a copy
    /// with the new definition, filled from the old one, which is then dropped. A table from
    /// before announcements only lacks `announced` and `lease_until`, added with
    /// `ALTER TABLE ... ADD COLUMN`, which rewrites no row. Either way the index on
    /// `expires_at` alone gives way to the one on `(announced, expires_at)`. It runs once, in
    /// one write transaction, so every session survives it unchanged and a concurrent
    /// migration from another process waits for it (up to the busy timeout) and then finds
    /// nothing to do.
    ///
    /// ```no_run
    /// # async fn run(store: tower_session_timeout::SqliteStore) -> Result<(), tower_session_timeout::StoreError> {
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let queries = &self.queries;
        let table = &queries.table;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql::backend)?;
        let definition: Option<String> = sqlx::query_scalar(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = $1 COLLATE NOCASE",
        )
        .bind(table)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql::backend)?;
        let mut statements = Vec::new();
        match definition {
            None => statements.push(queries.create_table(table, "BLOB")),
            Some(definition) if !definition.contains(sql::NEWEST_STATE) => {
                let existing: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                        .bind(table)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(sql::backend)?;
                let kept = sql::COLUMNS_ALL
                    .iter()
                    .filter(|column| existing.iter().any(|name| name == *column))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ");
                let new = format!("{table}__upgrade");
                statements.push(queries.create_table(&new, "BLOB"));
                statements.push(format!(
                    "INSERT INTO {new} ({kept}) SELECT {kept} FROM {table}"
                ));
                // Its indexes go with it, and are made again below.
                statements.push(format!("DROP TABLE {table}"));
                statements.push(format!("ALTER TABLE {new} RENAME TO {table}"));
            }
            Some(_) => {
                // A table of the version before announcements: two columns more, added in
                // place (SQLite does not rewrite the rows for that).
                let existing: Vec<String> =
                    sqlx::query_scalar("SELECT name FROM pragma_table_info($1)")
                        .bind(table)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(sql::backend)?;
                for (column, definition) in sql::ANNOUNCE_COLUMNS {
                    if !existing.iter().any(|name| name == column) {
                        statements.push(format!(
                            "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                        ));
                    }
                }
            }
        }
        // Replaced by the index on `(announced, expires_at)`, which serves the purge too.
        statements.push(format!("DROP INDEX IF EXISTS {}", queries.old_index));
        statements.extend(queries.create_indexes());
        for statement in statements {
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

    /// The name of the index on `(announced, expires_at)`, which the purge and the
    /// announcement sweep read through.
    pub fn index_name(&self) -> &str {
        &self.queries.index
    }

    /// The name of the partial index on `owner`.
    pub fn owner_index_name(&self) -> &str {
        &self.queries.owner_index
    }

    /// Begins an owned session under the limit, in one write transaction: SQLite has one
    /// writer, so `BEGIN IMMEDIATE` (which waits out the busy timeout for the lock, where a
    /// deferred transaction that reads and then writes would fail at once with `SQLITE_BUSY`)
    /// orders this sign-in against every other write, from any connection or process.
    async fn begin_limited(
        &self,
        p: &Params,
        policy: &Policy,
        owner: &str,
        timeouts: Option<SessionTimeouts>,
    ) -> Result<Begin, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql::backend)?;
        let active = sessions_on(&mut tx, &self.queries, owner, p).await?;
        let key = SessionKey::from_bytes(p.key);
        let began = begin_on(&mut tx, &self.queries, p, Some(owner), timeouts).await?;
        // The id's own state answers first (an active id is already begun, a retired one is
        // refused): only a new session counts against the limit, and a refused one is rolled
        // back, so nothing of it is written.
        if began == Begin::Began && sql::refuses(policy, &key, &active) {
            tx.rollback().await.map_err(sql::backend)?;
            return Ok(Begin::LimitReached);
        }
        for superseded in sql::superseded(policy, began, &key, p.now, timeouts, active) {
            sql::bind_params!(sqlx::query(&self.queries.supersede), p.for_key(&superseded))
                .execute(&mut *tx)
                .await
                .map_err(sql::backend)?;
        }
        tx.commit().await.map_err(sql::backend)?;
        Ok(began)
    }
}

/// The most keys one acknowledgement statement names: the announcer's whole batch
/// ([`ANNOUNCE_BATCH`](crate::ANNOUNCE_BATCH)), far below SQLite's limit on parameters.
const ACK_CHUNK: usize = 256;

/// The row for `p.key` as it stands.
async fn current(
    conn: &mut SqliteConnection,
    queries: &Queries,
    p: &Params,
) -> Result<Option<StoredRow>, StoreError> {
    let row = sqlx::query(&queries.select)
        .bind(p.key.to_vec())
        .fetch_optional(conn)
        .await
        .map_err(sql::backend)?;
    row.as_ref().map(sql::decode_row).transpose()
}

/// Deletes the key's row if it is past its `expires_at`.
async fn forget(
    conn: &mut SqliteConnection,
    queries: &Queries,
    p: &Params,
) -> Result<(), StoreError> {
    sqlx::query(&queries.forget)
        .bind(p.key.to_vec())
        .bind(p.now)
        .execute(conn)
        .await
        .map_err(sql::backend)?;
    Ok(())
}

/// [`SessionStore::check`] on one connection.
async fn check_on(
    conn: &mut SqliteConnection,
    queries: &Queries,
    p: &Params,
) -> Result<Check, StoreError> {
    for _ in 0..sql::ATTEMPTS {
        if let Some(answer) = check_once(conn, queries, p).await? {
            return Ok(answer);
        }
    }
    Err(sql::kept_changing())
}

/// One attempt of [`check_on`]: `None` when the row changed between the read and the write.
async fn check_once(
    conn: &mut SqliteConnection,
    queries: &Queries,
    p: &Params,
) -> Result<Option<Check>, StoreError> {
    // Read first, so passive checks, tombstones and refreshes the touch interval skips take
    // no write lock; the write itself re-checks its condition atomically, and when it finds
    // the row changed since the read, the read runs again.
    let current = current(conn, queries, p).await?;
    if let Some(answer) = sql::read_check(current, false, p) {
        if sql::found_forgotten(current.as_ref(), &answer) {
            forget(conn, queries, p).await?;
        }
        return Ok(Some(answer));
    }
    let written = sql::bind_params!(sqlx::query(&queries.check), p)
        .bind(p.touch)
        .bind(p.refresh)
        .fetch_optional(conn)
        .await
        .map_err(sql::backend)?;
    match written {
        Some(row) => Ok(sql::read_check(Some(sql::decode_row(&row)?), true, p)),
        None => Ok(None),
    }
}

/// [`SessionStore::begin`]'s statement on one connection, for a session with this owner and
/// these timeouts.
async fn begin_on(
    conn: &mut SqliteConnection,
    queries: &Queries,
    p: &Params,
    owner: Option<&str>,
    timeouts: Option<SessionTimeouts>,
) -> Result<Begin, StoreError> {
    let own = OwnTimeouts::of(timeouts);
    for _ in 0..sql::ATTEMPTS {
        // An active session or a live tombstone needs no write (see `check_once`).
        let current = current(conn, queries, p).await?;
        if current.is_some() {
            if let Some(answer) = sql::read_begin(current, false, p) {
                return Ok(answer);
            }
        }
        let written = sql::bind_params!(sqlx::query(&queries.begin), p)
            .bind(p.new_row_expires_at(own))
            .bind(owner)
            .bind(own.map(|own| own.idle))
            .bind(own.and_then(|own| own.absolute))
            .fetch_optional(&mut *conn)
            .await
            .map_err(sql::backend)?;
        if let Some(row) = written {
            if let Some(answer) = sql::read_begin(Some(sql::decode_row(&row)?), true, p) {
                return Ok(answer);
            }
        }
    }
    Err(sql::kept_changing())
}

/// The owner's sessions active at `p.now`, oldest first.
async fn sessions_on(
    conn: &mut SqliteConnection,
    queries: &Queries,
    owner: &str,
    p: &Params,
) -> Result<Vec<OwnedSession>, StoreError> {
    let rows = sql::bind_owner!(sqlx::query(&queries.sessions_of), owner, p)
        .fetch_all(conn)
        .await
        .map_err(sql::backend)?;
    let mut sessions = rows
        .iter()
        .map(sql::decode_owned)
        .collect::<Result<Vec<_>, _>>()?;
    // The query's order already; sorted here too so the one definition of the order rules.
    oldest_first(&mut sessions);
    Ok(sessions)
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
            let mut conn = store.pool.acquire().await.map_err(sql::backend)?;
            check_on(&mut conn, &store.queries, &p).await
        })
    }

    fn begin(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        new: NewSession<'_>,
    ) -> Self::BeginFuture {
        let store = self.clone();
        let p = Params::new(key, now, policy, Touch::Passive);
        let policy = *policy;
        let owner = new.owner.map(str::to_owned);
        let timeouts = new.timeouts;
        sql::logged(&self.log, "begin", async move {
            match owner {
                // Only a limit needs the owner's other sessions counted with this one.
                Some(owner) if policy.session_limit().is_some() => {
                    store.begin_limited(&p, &policy, &owner, timeouts).await
                }
                owner => {
                    let mut conn = store.pool.acquire().await.map_err(sql::backend)?;
                    begin_on(&mut conn, &store.queries, &p, owner.as_deref(), timeouts).await
                }
            }
        })
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        let store = self.clone();
        let p = Params::new(key, now, policy, Touch::Passive);
        sql::logged(&self.log, "end", async move {
            let mut conn = store.pool.acquire().await.map_err(sql::backend)?;
            let state: Option<String> =
                sql::bind_params!(sqlx::query_scalar(&store.queries.end), p)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(sql::backend)?;
            if state.is_none() {
                // Nothing active to end. A row past its retention is forgotten at this `now`,
                // as check and begin find it; left in place, a clock stepping back would find
                // it again. Rare (an end on a session long gone), so a second statement.
                forget(&mut conn, &store.queries, &p).await?;
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

    fn set_timeouts(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        timeouts: SessionTimeouts,
    ) -> StoreFuture<bool> {
        let store = self.clone();
        let p = Params::new(key, now, policy, Touch::Passive);
        let own = OwnTimeouts::new(timeouts);
        sql::logged(&self.log, "set_timeouts", async move {
            let mut conn = store.pool.acquire().await.map_err(sql::backend)?;
            let state: Option<String> =
                sql::bind_params!(sqlx::query_scalar(&store.queries.set_timeouts), p)
                    .bind(own.idle)
                    .bind(own.absolute)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(sql::backend)?;
            if let Some(state) = state {
                if state != "active" {
                    // Retired by its new timeouts; if so long ago that the tombstone is over
                    // too, forgotten, as a check at `now` would forget it.
                    forget(&mut conn, &store.queries, &p).await?;
                }
                return Ok(true);
            }
            // Not active at `now`: an expired row is settled as a check settles it.
            check_on(&mut conn, &store.queries, &p).await?;
            Ok(false)
        })
    }

    fn owner_of(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Option<String>> {
        let store = self.clone();
        let p = Params::new(key, now, policy, Touch::Passive);
        sql::logged(&self.log, "owner_of", async move {
            let owner: Option<Option<String>> =
                sql::bind_key_at!(sqlx::query_scalar(&store.queries.owner_of), p)
                    .fetch_optional(&store.pool)
                    .await
                    .map_err(sql::backend)?;
            Ok(owner.flatten())
        })
    }

    fn sessions_of(
        &self,
        owner: &str,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Vec<OwnedSession>> {
        let store = self.clone();
        let owner = owner.to_owned();
        let p = Params::for_owner(now, policy);
        sql::logged(&self.log, "sessions_of", async move {
            let mut conn = store.pool.acquire().await.map_err(sql::backend)?;
            sessions_on(&mut conn, &store.queries, &owner, &p).await
        })
    }

    fn claim_ends(
        &self,
        now: Timestamp,
        policy: &Policy,
        limit: usize,
        lease: Duration,
    ) -> StoreFuture<Vec<SessionEnd>> {
        let store = self.clone();
        let claim = Claim::new(now, policy, limit, lease);
        sql::logged(&self.log, "claim_ends", async move {
            if claim.limit == 0 {
                return Ok(Vec::new());
            }
            // One statement, which takes SQLite's write lock as it starts: the rows it picks
            // are leased before any other claimer, in any process, can read them.
            let rows = sql::ends::bind_claim!(sqlx::query(&store.queries.claim), claim)
                .fetch_all(&store.pool)
                .await
                .map_err(sql::backend)?;
            sql::ends::decode_ends(&rows, &claim)
        })
    }

    fn ack_ends(&self, keys: &[SessionKey], _now: Timestamp, _policy: &Policy) -> StoreFuture<()> {
        let store = self.clone();
        let keys: Vec<SessionKey> = keys.to_vec();
        sql::logged(&self.log, "ack_ends", async move {
            // SQLite has no arrays: the keys go in as `IN` lists of a bounded length (one
            // statement for the announcer's batch). Each statement may stand alone, as an end
            // left unacknowledged is only announced again after its lease.
            for chunk in keys.chunks(ACK_CHUNK) {
                let placeholders = (1..=chunk.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let statement =
                    sql::ends::ack_sql(&store.queries.table, &format!("IN ({placeholders})"));
                let mut query = sqlx::query(&statement);
                for key in chunk {
                    query = query.bind(key.as_bytes().to_vec());
                }
                query.execute(&store.pool).await.map_err(sql::backend)?;
            }
            Ok(())
        })
    }

    fn end_sessions_of(
        &self,
        owner: &str,
        keep: Option<&SessionKey>,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<u64> {
        let store = self.clone();
        let owner = owner.to_owned();
        let keep = keep.map(|key| key.as_bytes().to_vec());
        let p = Params::for_owner(now, policy);
        sql::logged(&self.log, "end_sessions_of", async move {
            // One statement, and SQLite has one writer: every row it ends is ended at once.
            let done = sql::bind_owner!(sqlx::query(&store.queries.end_sessions_of), owner, p)
                .bind(p.retention)
                .bind(keep)
                .execute(&store.pool)
                .await
                .map_err(sql::backend)?;
            Ok(done.rows_affected())
        })
    }
}
