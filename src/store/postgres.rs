//! [`PostgresStore`]: sessions in a PostgreSQL table, shared by every app instance.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgRow};
use sqlx::Row;

mod push;
#[cfg(test)]
pub(crate) use push::PgChannel;

use super::near::NearCache;
use super::sql::ends::{Claim, Resume};
use super::sql::{self, BoxFuture, OwnTimeouts, Params, Queries, SqlOptions};
use super::{
    oldest_first, Begin, Check, NewSession, OwnedSession, Policy, SessionEnd, SessionKey,
    SessionStore, SessionTimeouts, StoreFuture, Touch,
};
use crate::error_log::StoreLog;
use crate::{Clock, StoreError, Timestamp};

/// Keeps sessions in a PostgreSQL table, so several app instances share them and they outlive
/// restarts.
///
/// Every operation on one session is one statement, so two instances racing on one session
/// cannot revive it: a check that finds the session expired retires it in the same `UPDATE`
/// that would have refreshed it (a CTE then reads the row when no write was needed; if that
/// read comes from a snapshot older than another instance's write in the same instant, the
/// statement runs again). Rows are keyed by the SHA-256 of the session id, never the id.
///
/// A session may have an owner and timeouts of its own. An owner's sessions are listed by one
/// `SELECT` and ended by one `UPDATE`, which locks and judges each row as it stands, so a
/// request racing with it either comes first or finds its session ended. A sign-in under
/// [`max_sessions_per_owner`](crate::SessionTimeoutBuilder::max_sessions_per_owner) is one
/// transaction holding an advisory lock on the owner (ending all of an owner's sessions takes
/// it too), so sign-ins of one user on several instances take turns and never leave more
/// than the limit; a sign-in without a limit stays one statement.
///
/// Every session end is announced once across instances
/// ([`on_session_end`](crate::SessionTimeoutBuilder::on_session_end)):
/// [`claim_ends`](SessionStore::claim_ends) is one `UPDATE` that retires the sessions found past
/// their deadline, as a check would, and leases the ends due, found through an index rather
/// than a scan of the live sessions. It takes their rows `FOR UPDATE SKIP LOCKED`, so two
/// instances claiming at once take different ends and never wait on each other or on a
/// request; an end stays leased until its announcement is acknowledged, or its lease runs out
/// and another instance takes it.
///
/// Call [`migrate`](PostgresStore::migrate) once at start-up to create the table and its
/// indexes (or upgrade a table of an earlier version), and [`spawn_purge`](PostgresStore::spawn_purge) (or call
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
/// milliseconds), `state` (`active`, or why it ended: `idle`, `absolute`, `ended`,
/// `superseded`), `expires_at`, the time from which the row may be deleted: for an active
/// session its deadline plus the tombstone retention (until then an expired session still
/// answers its reason), for an ended or expired one the end of that retention; and three
/// nullable columns: `owner` (indexed where set), and the session's own timeouts `idle_ms`
/// and `absolute_ms` (its own exactly when `idle_ms` is set; `absolute_ms` null then means no
/// absolute timeout); and for the announcement of each end, `announced` (0, or 1 once
/// announced) and `lease_until` (null, or until when an instance holds the end to announce
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
pub struct PostgresStore {
    pool: PgPool,
    queries: Arc<PgQueries>,
    log: Arc<StoreLog>,
    /// Where the next claim of ends starts reading.
    resume: Arc<Resume>,
    /// Sessions this instance saw active, answered without a statement
    /// ([`with_near_cache`](PostgresStore::with_near_cache)).
    near: Option<Arc<NearCache>>,
}

#[derive(Debug)]
struct PgQueries {
    shared: Queries,
    /// The check `UPDATE`, then the row as it stands if it wrote nothing: one statement.
    check: String,
    /// The begin upsert, then the row as it stands if it wrote nothing: one statement.
    begin: String,
    /// The claim, its rows taken `FOR UPDATE SKIP LOCKED`.
    claim: String,
    /// The acknowledgement of `$1`, an array of keys.
    ack: String,
    /// The revoking statements, each with a `NOTIFY` of the keys it changed on
    /// [`revoked`](PgQueries::revoked) (see `postgres/push.rs`).
    end: String,
    supersede: String,
    set_timeouts: String,
    end_sessions_of: String,
    /// The channel revocations are notified on: `<table>_revoked`.
    revoked: String,
}

impl From<Queries> for PgQueries {
    fn from(shared: Queries) -> Self {
        PgQueries {
            check: shared.written_or_current(&shared.check),
            begin: shared.written_or_current(&shared.begin),
            claim: sql::ends::claim_sql(&shared.table, sql::ends::picked_postgres),
            ack: sql::ends::ack_sql(&shared.table, "= ANY($1)"),
            end: push::notifying(&shared.end, 7),
            supersede: push::notifying(&shared.supersede, 7),
            set_timeouts: push::notifying(&shared.set_timeouts, 9),
            end_sessions_of: push::notifying_each(&shared.end_sessions_of, 8),
            revoked: push::channel(&shared.table),
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
            resume: Arc::default(),
            near: None,
        }
    }

    /// Uses the table `name` instead of `tower_session_timeout` (its indexes are
    /// `<name>_expiry_idx` and `<name>_owner_idx`). The name must be a plain identifier
    /// (ASCII letters, digits and `_`, at most 48): it is part of the SQL text. To use another
    /// schema, set `search_path` on the pool's connections.
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
            resume: Arc::default(),
            // Its channel is named after the table.
            near: None,
        })
    }

    /// Keeps the sessions this instance saw active in memory and answers their checks without
    /// a statement, while PostgreSQL would answer the same: before the session's deadline,
    /// and for a refreshing request only within the
    /// [touch interval](crate::SessionTimeoutBuilder::touch_interval) (a refresh that must
    /// write goes to PostgreSQL, so no refresh is ever written late). Without a touch interval
    /// every refresh writes, so only passive requests are spared the statement. Off unless
    /// called.
    ///
    /// Every statement that ends a session, signs an owner out everywhere, supersedes a
    /// session or gives it new timeouts also notifies its key on the channel
    /// `<table>_revoked`, and every instance with a near cache `LISTEN`s there and forgets
    /// that session: on loopback, p99 5.0–7.4 ms (two runs) from the call of `end`
    /// (BENCHMARKS.md, section 5). PostgreSQL delivers a notification when its transaction
    /// commits, so no change goes unannounced, even when the instance that made it dies at
    /// once; the instance that made the change
    /// forgets it at once. While its `LISTEN` connection is down, or does not answer a ping
    /// within two seconds, an instance answers nothing from memory and drops what it had. No
    /// entry is used longer than `max_age` after PostgreSQL was asked, which bounds what no
    /// notification reaches:
    ///
    /// - a refresh made on another instance: until then the session's deadline as shown here
    ///   (status route, [`SessionInfo`](crate::SessionInfo)) may be earlier than the table's;
    /// - a change made to the table by hand, or by an instance of a version that does not
    ///   notify (this one notifies with or without a near cache, so enable the cache once
    ///   every instance runs it).
    ///
    /// An expiry is not notified: each instance foresees it from the deadline, so instances
    /// whose clocks differ see it as far apart as their clocks are.
    ///
    /// Since a notification commits with its change, `max_age` bounds no lost revocation here,
    /// only how long another instance's refresh goes unseen, which the touch interval already
    /// lets the table lag by: a `max_age` equal to the touch interval (60 s below) adds no new
    /// staleness. A short one makes every session seen less often than once per `max_age` go
    /// to PostgreSQL: with 10,000 sessions round robin and a 1 s `max_age`, nearly every
    /// request did (BENCHMARKS.md, section 6).
    ///
    /// The cache holds about `capacity` sessions (a few dozen bytes each; a full sixteenth of it
    /// is emptied rather than grown). It listens on a connection of its own, made with the
    /// pool's connect options, outside the pool. Waits until it listens, at most 5 s.
    /// [`with_table_name`](PostgresStore::with_table_name) drops a near cache set before:
    /// call this after it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_session_timeout::PostgresStore;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/app")
    ///     .await?
    ///     .with_near_cache(Duration::from_secs(60), 100_000)
    ///     .await?;
    /// let layer = tower_session_timeout::SessionTimeoutLayer::builder()
    ///     .store(store)
    ///     .touch_interval(Duration::from_secs(60))
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_near_cache(
        mut self,
        max_age: Duration,
        capacity: usize,
    ) -> Result<Self, StoreError> {
        let cache = Arc::new(NearCache::new(max_age, capacity));
        self.listen(&cache).await?;
        self.near = Some(cache);
        Ok(self)
    }

    /// Creates the table and its indexes (on `(announced, expires_at)`, and on `owner` where
    /// set) if they are missing, and upgrades a table of an earlier version in place, keeping
    /// its rows. Safe to call from several instances at once: an advisory lock makes them take
    /// turns.
    ///
    /// The upgrade adds the columns earlier versions lack (`owner`, `idle_ms`, `absolute_ms`,
    /// `lease_until`, nullable, and `announced` with the constant default 0: PostgreSQL adds
    /// them without rewriting the table), replaces the `CHECK` on `state` with one that allows
    /// `superseded`, and replaces the index on `expires_at` alone with the one on
    /// `(announced, expires_at)`. It takes the table's exclusive lock for a moment, once: a
    /// later `migrate` finds the table current and alters nothing. Building the new index
    /// blocks writes to the table while it runs (about a second per million rows); to avoid
    /// that on a large table, add the columns and build the index beforehand with
    /// `CREATE INDEX CONCURRENTLY <table>_expiry_idx ON <table> (announced, expires_at)`,
    /// which `migrate` then keeps.
    ///
    /// ```no_run
    /// # async fn run(store: tower_session_timeout::PostgresStore) -> Result<(), tower_session_timeout::StoreError> {
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let queries = &self.queries.shared;
        let table = &queries.table;
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
            .bind(format!("tower_session_timeout:{table}"))
            .execute(&mut *tx)
            .await
            .map_err(sql::backend)?;
        sqlx::query(&queries.create_table(table, "BYTEA"))
            .execute(&mut *tx)
            .await
            .map_err(sql::backend)?;
        for upgrade in self.upgrade(&mut tx).await? {
            sqlx::query(&upgrade)
                .execute(&mut *tx)
                .await
                .map_err(sql::backend)?;
        }
        for statement in queries.create_indexes() {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(sql::backend)?;
        }
        tx.commit().await.map_err(sql::backend)
    }

    /// The statements that bring a table of an earlier version up to this one (an `ALTER
    /// TABLE`, and the drop of the old index on `expires_at` alone), none when it is current.
    /// Read from the catalog, so a current table is not locked.
    async fn upgrade(&self, conn: &mut PgConnection) -> Result<Vec<String>, StoreError> {
        let queries = &self.queries.shared;
        let table = &queries.table;
        let mut statements = Vec::new();
        let old_index: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&queries.old_index)
            .fetch_one(&mut *conn)
            .await
            .map_err(sql::backend)?;
        if old_index {
            // Replaced by the index on `(announced, expires_at)`, which serves the purge too:
            // keeping both would cost every refresh a second index write.
            statements.push(format!("DROP INDEX {}", queries.old_index));
        }
        let columns: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_attribute WHERE attrelid = $1::regclass \
             AND attname IN ('owner', 'idle_ms', 'absolute_ms', 'announced', 'lease_until') \
             AND NOT attisdropped",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await
        .map_err(sql::backend)?;
        // The checks on `state`: the old one (named by PostgreSQL, `<table>_state_check`
        // unless that name was taken) lacks `superseded`.
        // `pg_get_constraintdef` only in the select list, which is computed for this table's
        // rows alone: in `WHERE`, PostgreSQL may run it on any table's constraint first, and
        // fail on one whose table another session is dropping.
        let definitions: Vec<(String, String)> = sqlx::query_as(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1::regclass AND contype = 'c'",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await
        .map_err(sql::backend)?;
        let checks: Vec<(String, bool)> = definitions
            .into_iter()
            .filter(|(_, definition)| definition.contains("state"))
            .map(|(name, definition)| {
                let current = definition.contains(sql::NEWEST_STATE);
                (name, current)
            })
            .collect();
        let current = checks.iter().any(|(_, current)| *current);
        let stale: Vec<&str> = checks
            .iter()
            .filter(|(_, current)| !current)
            .map(|(name, _)| name.as_str())
            .collect();
        if columns == 5 && current && stale.is_empty() {
            return Ok(statements);
        }
        let mut changes = vec![
            "ADD COLUMN IF NOT EXISTS owner TEXT".to_owned(),
            "ADD COLUMN IF NOT EXISTS idle_ms BIGINT".to_owned(),
            "ADD COLUMN IF NOT EXISTS absolute_ms BIGINT".to_owned(),
        ];
        // A constant default: PostgreSQL (11 and later) adds it without rewriting the table.
        for (column, definition) in sql::ANNOUNCE_COLUMNS {
            changes.push(format!("ADD COLUMN IF NOT EXISTS {column} {definition}"));
        }
        for name in stale {
            changes.push(format!("DROP CONSTRAINT \"{}\"", name.replace('"', "\"\"")));
        }
        if !current {
            // The old rows satisfy the old, narrower check, so scanning them would prove
            // nothing: `NOT VALID` skips the scan, and new rows are checked all the same.
            changes.push(format!("ADD {} NOT VALID", queries.state_constraint()));
        }
        statements.push(format!("ALTER TABLE {table} {}", changes.join(", ")));
        Ok(statements)
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

    /// The name of the index on `(announced, expires_at)`, which the purge and the
    /// announcement sweep read through.
    pub fn index_name(&self) -> &str {
        &self.queries.shared.index
    }

    /// The name of the partial index on `owner`.
    pub fn owner_index_name(&self) -> &str {
        &self.queries.shared.owner_index
    }

    /// Opens a transaction holding the owner's advisory lock until it ends: sign-ins with a
    /// limit and ends of all of an owner's sessions take turns, on every instance, while
    /// requests (checks, single ends) go on. A row lock could not stand in for it, as it
    /// cannot lock the row a concurrent sign-in is about to insert. The lock is a hash of the
    /// table and the owner: a collision only makes two owners take turns.
    async fn owner_transaction(
        &self,
        owner: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(sql::backend)?;
        // Waiting for the lock counts against the statement timeout, so it is bounded too.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "tower_session_timeout:{}:{owner}",
                self.table_name()
            ))
            .execute(&mut *tx)
            .await
            .map_err(sql::backend)?;
        Ok(tx)
    }

    /// Begins an owned session under the limit, in one transaction under the owner's lock:
    /// count the owner's active sessions, refuse or begin, supersede the oldest beyond the
    /// limit. Under the lock nothing else can add an active session of this owner, so the
    /// count can only be too high by sessions ending meanwhile, which orders this sign-in
    /// before those ends.
    async fn begin_limited(
        &self,
        p: &Params,
        policy: &Policy,
        owner: &str,
        timeouts: Option<SessionTimeouts>,
    ) -> Result<Begin, StoreError> {
        let mut tx = self.owner_transaction(owner).await?;
        let active = sessions_on(&mut tx, &self.queries.shared, owner, p).await?;
        let key = SessionKey::from_bytes(p.key);
        let began = begin_on(&mut tx, &self.queries, p, Some(owner), timeouts).await?;
        // The id's own state answers first (an active id is already begun, a retired one is
        // refused): only a new session counts against the limit, and a refused one is rolled
        // back, so nothing of it is written.
        if began == Begin::Began && sql::refuses(policy, &key, &active) {
            tx.rollback().await.map_err(sql::backend)?;
            return Ok(Begin::LimitReached);
        }
        let superseded = sql::superseded(policy, began, &key, p.now, timeouts, active);
        for superseded in &superseded {
            sql::bind_params!(sqlx::query(&self.queries.supersede), p.for_key(superseded))
                .bind(&self.queries.revoked)
                .execute(&mut *tx)
                .await
                .map_err(sql::backend)?;
        }
        let committed = tx.commit().await.map_err(sql::backend);
        superseded.iter().for_each(|key| self.forget_near(key));
        committed?;
        Ok(began)
    }
}

fn decode(row: &PgRow) -> Result<(bool, sql::StoredRow), StoreError> {
    let written: bool = row
        .try_get("written")
        .map_err(|e| StoreError::CorruptRecord(e.to_string()))?;
    Ok((written, sql::decode_row(row)?))
}

/// Deletes the key's row if it is past its `expires_at`.
async fn forget(conn: &mut PgConnection, queries: &Queries, p: &Params) -> Result<(), StoreError> {
    sqlx::query(&queries.forget)
        .bind(p.key.to_vec())
        .bind(p.now)
        .execute(conn)
        .await
        .map_err(sql::backend)?;
    Ok(())
}

/// [`SessionStore::check`] on one connection: the check statement, and when it finds the row
/// forgotten, the statement that deletes it.
async fn check_on(
    conn: &mut PgConnection,
    queries: &PgQueries,
    p: &Params,
) -> Result<Check, StoreError> {
    for _ in 0..sql::ATTEMPTS {
        let row = sql::bind_params!(sqlx::query(&queries.check), p)
            .bind(p.touch)
            .bind(p.refresh)
            .fetch_optional(&mut *conn)
            .await
            .map_err(sql::backend)?;
        let row = row.as_ref().map(decode).transpose()?;
        let answer = match row {
            Some((written, row)) => sql::read_check(Some(row), written, p),
            None => sql::read_check(None, false, p),
        };
        if let Some(answer) = answer {
            if sql::found_forgotten(row.as_ref().map(|(_, row)| row), &answer) {
                // Rare (a row nobody asked about until its retention passed), so a second
                // statement here costs nothing on the common path.
                forget(conn, &queries.shared, p).await?;
            }
            return Ok(answer);
        }
    }
    Err(sql::kept_changing())
}

/// [`SessionStore::begin`]'s statement on one connection, for a session with this owner and
/// these timeouts.
async fn begin_on(
    conn: &mut PgConnection,
    queries: &PgQueries,
    p: &Params,
    owner: Option<&str>,
    timeouts: Option<SessionTimeouts>,
) -> Result<Begin, StoreError> {
    let own = OwnTimeouts::of(timeouts);
    for _ in 0..sql::ATTEMPTS {
        let row = sql::bind_params!(sqlx::query(&queries.begin), p)
            .bind(p.new_row_expires_at(own))
            .bind(owner)
            .bind(own.map(|own| own.idle))
            .bind(own.and_then(|own| own.absolute))
            .fetch_optional(&mut *conn)
            .await
            .map_err(sql::backend)?;
        // No row at all: the key conflicted with a row begun by another instance after this
        // statement's snapshot; the next attempt sees it.
        let answer = match row.as_ref().map(decode).transpose()? {
            Some((written, row)) => sql::read_begin(Some(row), written, p),
            None => None,
        };
        if let Some(answer) = answer {
            return Ok(answer);
        }
    }
    Err(sql::kept_changing())
}

/// The owner's sessions active at `p.now`, oldest first.
async fn sessions_on(
    conn: &mut PgConnection,
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
        let ticket = self.near.as_ref().map(|near| near.ticket());
        let key = *key;
        sql::logged(&self.log, "check", async move {
            let mut conn = store.pool.acquire().await.map_err(sql::backend)?;
            let checked = check_on(&mut conn, &store.queries, &p).await;
            if let (Some(near), Some(ticket)) = (&store.near, ticket) {
                match &checked {
                    Ok(check) => near.remember(&key, check, ticket),
                    Err(_) => near.remove(&key),
                }
            }
            checked
        })
    }

    /// From the near cache, if there is one and it holds the answer.
    fn try_check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Option<Result<Check, StoreError>> {
        self.near.as_ref()?.answer(key, now, policy, touch).map(Ok)
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
                // Only a limit needs the owner's other sessions counted with this one;
                // otherwise a begin stays one statement.
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
        let key = *key;
        sql::logged(&self.log, "end", async move {
            let state: Result<Option<String>, _> =
                sql::bind_params!(sqlx::query_scalar(&store.queries.end), p)
                    .bind(&store.queries.revoked)
                    .fetch_optional(&store.pool)
                    .await
                    .map_err(sql::backend);
            store.forget_near(&key);
            let state = state?;
            if state.is_none() {
                // Nothing active to end. A row past its retention is forgotten at this `now`,
                // as check and begin find it; left in place, a clock stepping back would find
                // it again. Rare (an end on a session long gone), so a second statement.
                let mut conn = store.pool.acquire().await.map_err(sql::backend)?;
                forget(&mut conn, &store.queries.shared, &p).await?;
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
        let key = *key;
        sql::logged(&self.log, "set_timeouts", async move {
            let mut conn = store.pool.acquire().await.map_err(sql::backend)?;
            // One `UPDATE` of a row active at `now`: a racing check or end is ordered before
            // or after it by the row lock, and the statement re-reads the row it waited for.
            let state: Result<Option<String>, _> =
                sql::bind_params!(sqlx::query_scalar(&store.queries.set_timeouts), p)
                    .bind(own.idle)
                    .bind(own.absolute)
                    .bind(&store.queries.revoked)
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err(sql::backend);
            store.forget_near(&key);
            if let Some(state) = state? {
                if state != "active" {
                    // Retired by its new timeouts; if so long ago that the tombstone is over
                    // too, forgotten, as a check at `now` would forget it.
                    forget(&mut conn, &store.queries.shared, &p).await?;
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
                sql::bind_key_at!(sqlx::query_scalar(&store.queries.shared.owner_of), p)
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
            sessions_on(&mut conn, &store.queries.shared, &owner, &p).await
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
        let claim = Claim {
            from: self.resume.from(),
            ..Claim::new(now, policy, limit, lease)
        };
        sql::logged(&self.log, "claim_ends", async move {
            if claim.limit == 0 {
                return Ok(Vec::new());
            }
            // One statement: the rows it picks are locked `SKIP LOCKED`, so a claimer never
            // waits on another, nor on a request's statement, and never shares a row with one.
            let rows = sql::ends::bind_claim!(sqlx::query(&store.queries.claim), claim)
                .fetch_all(&store.pool)
                .await
                .map_err(sql::backend)?;
            let ends = sql::ends::decode_ends(&rows, &claim)?;
            store.resume.claimed(&claim, &ends);
            Ok(ends)
        })
    }

    fn ack_ends(&self, keys: &[SessionKey], _now: Timestamp, _policy: &Policy) -> StoreFuture<()> {
        let store = self.clone();
        let keys: Vec<Vec<u8>> = keys.iter().map(|key| key.as_bytes().to_vec()).collect();
        sql::logged(&self.log, "ack_ends", async move {
            if keys.is_empty() {
                return Ok(());
            }
            sqlx::query(&store.queries.ack)
                .bind(keys)
                .execute(&store.pool)
                .await
                .map_err(sql::backend)?;
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
            // Under the owner's lock, so it takes turns with the owner's sign-ins: two
            // statements that each lock several of the owner's rows could otherwise deadlock.
            // The `UPDATE` itself is what makes it safe against requests: each row it ends is
            // locked and judged again as it stands, so a refresh racing with it either comes
            // first (and the row is still ended) or finds the row ended.
            let mut tx = store.owner_transaction(&owner).await?;
            let ended: Vec<Vec<u8>> = sql::bind_owner!(
                sqlx::query_scalar(&store.queries.end_sessions_of),
                &owner,
                p
            )
            .bind(p.retention)
            .bind(keep)
            .bind(&store.queries.revoked)
            .fetch_all(&mut *tx)
            .await
            .map_err(sql::backend)?;
            let committed = tx.commit().await.map_err(sql::backend);
            for key in &ended {
                if let Ok(key) = <[u8; 32]>::try_from(key.as_slice()) {
                    store.forget_near(&SessionKey::from_bytes(key));
                }
            }
            committed?;
            Ok(ended.len() as u64)
        })
    }
}
