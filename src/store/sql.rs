//! What [`PostgresStore`](super::PostgresStore) and [`SqliteStore`](super::SqliteStore) share:
//! the SQL text (the same in both dialects: `$N` parameters, `CASE` rather than
//! `LEAST`/`MIN`, `UPDATE ... RETURNING` and `INSERT ... ON CONFLICT`), row decoding, the
//! reading of a row into an answer, and the background purge task.
//!
//! # Whose clock
//!
//! Every statement takes `now` from the layer's [`Clock`], never the database's
//! (`now()`, `unixepoch()`), for the check and for the purge alike. One clock governs every
//! store, so a store can be swapped without changing when sessions expire, and tests can step a
//! [`ManualClock`](crate::ManualClock). The price: app instances sharing a database must keep
//! their clocks in sync (NTP), as they must anyway for cookies. A clock that lags cannot
//! revive a session: a row, once retired, stays retired whatever `now` a later statement
//! brings, and `last_seen` never moves backwards.
//!
//! # The table
//!
//! One row per session, keyed by the 32-byte [`SessionKey`] (never the id):
//! `created_at` and `last_seen` in Unix milliseconds, `state` (`active`, or the reason a
//! retired row keeps: `idle`, `absolute`, `ended`), and `expires_at`, the time after which the
//! row may be deleted. For an active row that is its deadline plus the tombstone retention
//! (until then an expired row must still answer its reason); for a retired row, the end of its
//! retention. The purge deletes `expires_at <= now` through the index on `expires_at`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{Begin, Check, ExpiryReason, Policy, SessionKey, SessionRecord, SessionStore, Touch};
use crate::error_log::StoreLog;
use crate::{Clock, StoreError, Timestamp};

/// Pool size and time bounds of [`PostgresStore`](super::PostgresStore) and
/// [`SqliteStore`](super::SqliteStore).
///
/// The defaults keep a blocked store call well under the layer's
/// [`store_timeout`](crate::SessionTimeoutBuilder::store_timeout) (5 s by default): at most
/// [`acquire_timeout`](SqlOptions::acquire_timeout) waiting for a connection of the pool, then
/// at most [`statement_timeout`](SqlOptions::statement_timeout) in the database, after which
/// the database itself cancels the statement, so its connection goes back to the pool instead
/// of waiting on behind a lock after the request has been answered 503. Keep
/// `acquire_timeout + statement_timeout` under the layer's store timeout.
///
/// # Sizing the pool (PostgreSQL)
///
/// Each app instance opens up to [`max_connections`](SqlOptions::max_connections)
/// connections, so `instances × max_connections` must stay within the server's
/// `max_connections` (100 by default) less what everything else uses (superuser reserve,
/// migrations, other apps). One check is one short statement (well under a millisecond on a
/// local server), so a few connections serve thousands of requests a second: 4 instances of
/// 10 connections (the default) need 40, and ten instances fit in 100 only at 8 or fewer
/// each. A pool too small shows as calls failing after `acquire_timeout`, not as waits.
///
/// ```
/// use std::time::Duration;
/// use tower_session_timeout::store::SqlOptions;
///
/// let options = SqlOptions::new()
///     .max_connections(8)
///     .acquire_timeout(Duration::from_millis(500))
///     .statement_timeout(Duration::from_secs(1));
/// assert_eq!(options.get_max_connections(), 8);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlOptions {
    max_connections: u32,
    min_connections: u32,
    acquire_timeout: Duration,
    statement_timeout: Duration,
}

impl Default for SqlOptions {
    fn default() -> Self {
        SqlOptions {
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            min_connections: 0,
            acquire_timeout: Self::DEFAULT_ACQUIRE_TIMEOUT,
            statement_timeout: Self::DEFAULT_STATEMENT_TIMEOUT,
        }
    }
}

impl SqlOptions {
    /// Connections per pool, that is per app instance, unless set: sqlx's default.
    pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
    /// How long a call waits for a free connection unless set.
    pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
    /// How long one statement may run (waiting on locks included) unless set.
    pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);

    /// The defaults: 10 connections, 1 s to acquire one, 2 s per statement.
    pub fn new() -> Self {
        Self::default()
    }

    /// The most connections the pool opens (at least 1).
    pub fn max_connections(mut self, connections: u32) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// The connections the pool keeps open even when idle (default 0; at most
    /// [`max_connections`](SqlOptions::max_connections)).
    pub fn min_connections(mut self, connections: u32) -> Self {
        self.min_connections = connections;
        self
    }

    /// How long a call waits for a free connection (or a new one) before it fails.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// How long one statement may run, waiting on locks included, before the database
    /// cancels it and the call fails: PostgreSQL's `statement_timeout`, SQLite's busy timeout.
    /// At least 1 ms (for PostgreSQL zero would mean no limit).
    ///
    /// PostgreSQL gets it as a startup parameter of each connection. A pooler that refuses
    /// startup parameters (PgBouncer) needs `options` in its `ignore_startup_parameters`, and
    /// the timeout then set on the role instead (`ALTER ROLE app SET statement_timeout = '2s'`).
    pub fn statement_timeout(mut self, timeout: Duration) -> Self {
        self.statement_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The most connections the pool opens.
    pub fn get_max_connections(&self) -> u32 {
        self.max_connections
    }

    /// The connections the pool keeps open when idle.
    pub fn get_min_connections(&self) -> u32 {
        self.min_connections.min(self.max_connections)
    }

    /// How long a call waits for a connection.
    pub fn get_acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// How long one statement may run.
    pub fn get_statement_timeout(&self) -> Duration {
        self.statement_timeout
    }

    /// The statement timeout in whole milliseconds, as PostgreSQL takes it.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn statement_timeout_ms(&self) -> u64 {
        u64::try_from(self.statement_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The pool settings for a driver.
    pub(crate) fn pool<DB: sqlx::Database>(&self) -> sqlx::pool::PoolOptions<DB> {
        sqlx::pool::PoolOptions::new()
            .max_connections(self.max_connections)
            .min_connections(self.get_min_connections())
            .acquire_timeout(self.acquire_timeout)
    }
}

/// How many rows one purge statement deletes at most: the purge runs statements of this size
/// until one deletes fewer, so each stays far within the statement timeout however many
/// sessions expired at once, and holds its row locks briefly.
pub(crate) const PURGE_BATCH: u64 = 1000;

/// The table name the stores use unless told otherwise.
pub(crate) const DEFAULT_TABLE: &str = "tower_session_timeout";

/// A boxed store future: these stores do I/O anyway, so one allocation per call is noise.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// `call`, boxed, with its outcome in the store's failure log.
pub(crate) fn logged<T: Send + 'static>(
    log: &Arc<StoreLog>,
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> BoxFuture<T> {
    let log = Arc::clone(log);
    Box::pin(async move { log.record(op, call.await) })
}

/// Binds `$1`..`$6` of [`Params`] to a query of either driver.
macro_rules! bind_params {
    ($query:expr, $p:expr) => {
        $query
            .bind($p.key.to_vec())
            .bind($p.now)
            .bind($p.idle)
            .bind($p.has_absolute)
            .bind($p.absolute)
            .bind($p.retention)
    };
}
pub(crate) use bind_params;

/// How often a statement that found the row changed under it is run again before giving up.
/// Each retry follows a write by another instance, so more than a couple is already unusual.
const ATTEMPTS: usize = 8;

/// Times and durations are clamped to this many milliseconds (about 36 million years after
/// 1970), so that a time plus two durations cannot overflow a `BIGINT` in SQL.
const MAX_MILLIS: i64 = i64::MAX / 4;

/// The columns every statement returns, in this order.
const COLUMNS: &str = "state, created_at, last_seen, expires_at";

pub(crate) fn millis(time: Timestamp) -> i64 {
    i64::try_from(time.as_unix_millis()).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

/// The values bound to a statement, numbered as the SQL expects them:
/// `$1` key, `$2` now, `$3` idle, `$4` has an absolute timeout (0/1), `$5` absolute,
/// `$6` retention, then per statement `$7` (touch threshold, or a new row's `expires_at`) and
/// `$8` (refresh, 0/1).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub key: [u8; 32],
    pub now: i64,
    pub idle: i64,
    pub has_absolute: i64,
    pub absolute: i64,
    pub retention: i64,
    /// A refresh writes only when `now - last_seen` is at least this (at least 1, so a
    /// refreshed row never asks for another write at the same `now`).
    pub touch: i64,
    pub refresh: i64,
}

impl Params {
    pub fn new(key: &SessionKey, now: Timestamp, policy: &Policy, touch: Touch) -> Self {
        Params {
            key: *key.as_bytes(),
            now: millis(now),
            idle: duration_millis(policy.idle_timeout()),
            has_absolute: i64::from(policy.absolute_timeout().is_some()),
            absolute: policy.absolute_timeout().map_or(0, duration_millis),
            retention: duration_millis(policy.tombstone_retention()),
            touch: policy.touch_interval().map_or(1, duration_millis).max(1),
            refresh: i64::from(touch == Touch::Refresh),
        }
    }

    /// The deadline of a row and its reason, the same arithmetic as [`deadline`] in SQL and
    /// as [`Policy::deadline`]: the absolute deadline wins ties.
    fn deadline(&self, created_at: i64, last_seen: i64) -> (i64, ExpiryReason) {
        let idle = last_seen + self.idle;
        let absolute = created_at + self.absolute;
        if self.has_absolute == 1 && absolute <= idle {
            (absolute, ExpiryReason::Absolute)
        } else {
            (idle, ExpiryReason::Idle)
        }
    }

    /// `expires_at` of a session that begins now.
    pub fn new_row_expires_at(&self) -> i64 {
        self.deadline(self.now, self.now).0 + self.retention
    }
}

/// The SQL text of one table, the same for both dialects.
#[derive(Debug, Clone)]
pub(crate) struct Queries {
    pub table: String,
    pub index: String,
    /// `$1`: the row as it stands.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub select: String,
    /// `$1`..`$8`: retires an expired active row, or refreshes an active one that is due;
    /// returns the row it wrote, nothing when no write was needed.
    pub check: String,
    /// `$1`..`$7`: inserts a new row, or replaces a forgotten one, or retires an expired one;
    /// returns the row it wrote, nothing when no write was needed.
    pub begin: String,
    /// `$1`..`$6`: ends an active row (or retires it when it had expired); returns its state.
    pub end: String,
    /// `$1`: deletes up to [`PURGE_BATCH`] rows whose `expires_at` has passed.
    pub purge: String,
    /// `$1`, `$2` (now): deletes one row whose `expires_at` has passed, when a check or an end
    /// finds it forgotten, so a clock stepping back later cannot find it again.
    pub forget: String,
}

/// The deadline of a row whose columns are named `created` and `last_seen`.
fn deadline(created: &str, last_seen: &str) -> String {
    format!(
        "(CASE WHEN {} THEN {created} + $5 ELSE {last_seen} + $3 END)",
        absolute_wins(created, last_seen)
    )
}

fn absolute_wins(created: &str, last_seen: &str) -> String {
    format!("($4 = 1 AND {created} + $5 <= {last_seen} + $3)")
}

fn reason(created: &str, last_seen: &str) -> String {
    format!(
        "(CASE WHEN {} THEN 'absolute' ELSE 'idle' END)",
        absolute_wins(created, last_seen)
    )
}

impl Queries {
    /// The statements for `table`, which must be a plain SQL identifier (it is spliced into
    /// the SQL, so anything else is refused rather than quoted).
    pub fn new(table: &str) -> Result<Self, StoreError> {
        Self::check_table_name(table)?;
        Ok(Self::build(table))
    }

    /// The statements for [`DEFAULT_TABLE`].
    pub fn default_table() -> Self {
        Self::build(DEFAULT_TABLE)
    }

    fn check_table_name(table: &str) -> Result<(), StoreError> {
        let valid = table.len() <= 48
            && table
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(StoreError::backend(format!(
                "table name {table:?} is not a plain SQL identifier: use up to 48 ASCII letters, \
                 digits and '_', not starting with a digit"
            )));
        }
        Ok(())
    }

    fn build(table: &str) -> Self {
        let t = table;
        let row_deadline = deadline("created_at", "last_seen");
        let expired = format!("($2 >= {row_deadline})");
        let check = format!(
            "UPDATE {t} SET \
               state = CASE WHEN {expired} THEN {reason} ELSE state END, \
               last_seen = CASE WHEN {expired} THEN last_seen ELSE $2 END, \
               expires_at = CASE WHEN {expired} THEN {row_deadline} + $6 \
                            ELSE {refreshed_deadline} + $6 END \
             WHERE key = $1 AND state = 'active' AND ( \
               ({expired} AND {row_deadline} + $6 > $2) \
               OR (NOT {expired} AND $8 = 1 AND $2 - last_seen >= $7)) \
             RETURNING {COLUMNS}",
            reason = reason("created_at", "last_seen"),
            refreshed_deadline = deadline("created_at", "$2"),
        );
        // In the upsert, bare column names would be ambiguous with `excluded`'s.
        let (qc, ql) = (format!("{t}.created_at"), format!("{t}.last_seen"));
        let q_deadline = deadline(&qc, &ql);
        let gone = format!(
            "(({t}.state <> 'active' AND {t}.expires_at <= $2) \
              OR ({t}.state = 'active' AND {q_deadline} + $6 <= $2))"
        );
        let begin = format!(
            "INSERT INTO {t} (key, created_at, last_seen, state, expires_at) \
             VALUES ($1, $2, $2, 'active', $7) \
             ON CONFLICT (key) DO UPDATE SET \
               state = CASE WHEN {gone} THEN 'active' ELSE {q_reason} END, \
               created_at = CASE WHEN {gone} THEN $2 ELSE {qc} END, \
               last_seen = CASE WHEN {gone} THEN $2 ELSE {ql} END, \
               expires_at = CASE WHEN {gone} THEN $7 ELSE {q_deadline} + $6 END \
             WHERE {gone} OR ({t}.state = 'active' AND $2 >= {q_deadline}) \
             RETURNING {COLUMNS}",
            q_reason = reason(&qc, &ql),
        );
        let end = format!(
            "UPDATE {t} SET \
               state = CASE WHEN {expired} THEN {reason} ELSE 'ended' END, \
               expires_at = CASE WHEN {expired} THEN {row_deadline} + $6 ELSE $2 + $6 END \
             WHERE key = $1 AND state = 'active' AND (NOT {expired} OR {row_deadline} + $6 > $2) \
             RETURNING state",
            reason = reason("created_at", "last_seen"),
        );
        Queries {
            table: t.to_owned(),
            index: format!("{t}_expires_at_idx"),
            select: format!("SELECT {COLUMNS} FROM {t} WHERE key = $1"),
            check,
            begin,
            end,
            purge: format!(
                "DELETE FROM {t} WHERE key IN \
                 (SELECT key FROM {t} WHERE expires_at <= $1 LIMIT {PURGE_BATCH})"
            ),
            forget: format!("DELETE FROM {t} WHERE key = $1 AND expires_at <= $2"),
        }
    }

    /// The table and its index; `key_type` is the dialect's byte-string type.
    pub fn create(&self, key_type: &str) -> [String; 2] {
        let Queries { table, index, .. } = self;
        [
            format!(
                "CREATE TABLE IF NOT EXISTS {table} ( \
                   key {key_type} PRIMARY KEY NOT NULL, \
                   created_at BIGINT NOT NULL, \
                   last_seen BIGINT NOT NULL, \
                   state TEXT NOT NULL \
                     CHECK (state IN ('active', 'idle', 'absolute', 'ended')), \
                   expires_at BIGINT NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at)"),
        ]
    }

    /// `statement` (one that returns [`COLUMNS`] of the rows it wrote) followed by the row as
    /// it stands when it wrote none, in one statement, with a leading `written` flag. For
    /// PostgreSQL, whose CTEs may hold an `UPDATE` or `INSERT`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub fn written_or_current(&self, statement: &str) -> String {
        format!(
            "WITH written AS ({statement}) \
             SELECT TRUE AS written, {COLUMNS} FROM written \
             UNION ALL \
             SELECT FALSE AS written, {COLUMNS} FROM {table} \
             WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM written)",
            table = self.table,
        )
    }
}

/// What a row says about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RowState {
    Active,
    Retired(ExpiryReason),
}

/// A row read back.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoredRow {
    pub state: RowState,
    pub created_at: i64,
    pub last_seen: i64,
    pub expires_at: i64,
}

/// Reads [`COLUMNS`] by name from a row of either driver.
pub(crate) fn decode_row<R>(row: &R) -> Result<StoredRow, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |e: sqlx::Error| StoreError::CorruptRecord(e.to_string());
    let state: String = row.try_get("state").map_err(corrupt)?;
    let state = match state.as_str() {
        "active" => RowState::Active,
        other => match other.parse() {
            Ok(reason) if reason != ExpiryReason::Unknown => RowState::Retired(reason),
            _ => {
                return Err(StoreError::CorruptRecord(format!(
                    "unknown session state {other:?}"
                )))
            }
        },
    };
    let time = |column: &str| -> Result<i64, StoreError> {
        let value: i64 = row.try_get(column).map_err(corrupt)?;
        if value < 0 {
            return Err(StoreError::CorruptRecord(format!(
                "{column} is negative ({value})"
            )));
        }
        Ok(value)
    };
    Ok(StoredRow {
        state,
        created_at: time("created_at")?,
        last_seen: time("last_seen")?,
        expires_at: time("expires_at")?,
    })
}

fn timestamp(ms: i64) -> Timestamp {
    // Decoding refused negative values, so this cannot fail.
    Timestamp::from_unix_millis(u64::try_from(ms).unwrap_or(0))
}

/// `None` when `row` needs a write the statement did not make (another instance changed the
/// row between the two, or the row was read in a snapshot older than its last write): the
/// statement is run again. `written` says whether `row` is what the check statement wrote: a
/// retired row it wrote is the one retirement reported as [`Check::Retired`].
pub(crate) fn read_check(row: Option<StoredRow>, written: bool, p: &Params) -> Option<Check> {
    let Some(row) = row else {
        return Some(Check::Expired(ExpiryReason::Unknown));
    };
    match row.state {
        RowState::Retired(_) if row.expires_at <= p.now => {
            Some(Check::Expired(ExpiryReason::Unknown))
        }
        RowState::Retired(reason) if written => Some(Check::Retired(reason)),
        RowState::Retired(reason) => Some(Check::Expired(reason)),
        RowState::Active => {
            let (deadline, _) = p.deadline(row.created_at, row.last_seen);
            if p.now >= deadline {
                // Past the retention it is forgotten, as a tombstone would be; the purge
                // deletes it. Within it, only the statement may answer, as it retires the row.
                return (deadline + p.retention <= p.now)
                    .then_some(Check::Expired(ExpiryReason::Unknown));
            }
            if p.refresh == 1 && p.now - row.last_seen >= p.touch {
                return None;
            }
            Some(Check::Active(SessionRecord {
                created_at: timestamp(row.created_at),
                last_seen: timestamp(row.last_seen),
                timeouts: None,
            }))
        }
    }
}

/// `None` when the begin statement must run again (see [`read_check`]); `written` says whether
/// `row` is what the statement wrote, or the row as it stood when it wrote nothing.
pub(crate) fn read_begin(row: Option<StoredRow>, written: bool, p: &Params) -> Option<Begin> {
    let row = row?;
    match (row.state, written) {
        (RowState::Active, true) => Some(Begin::Began),
        (RowState::Retired(reason), true) => Some(Begin::Refused(reason)),
        (RowState::Active, false) => {
            let (deadline, _) = p.deadline(row.created_at, row.last_seen);
            (p.now < deadline).then_some(Begin::AlreadyActive)
        }
        (RowState::Retired(reason), false) => {
            (row.expires_at > p.now).then_some(Begin::Refused(reason))
        }
    }
}

/// Runs `attempt` until it gives an answer, a bounded number of times.
pub(crate) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, StoreError>>,
{
    for _ in 0..ATTEMPTS {
        if let Some(answer) = attempt().await? {
            return Ok(answer);
        }
    }
    Err(StoreError::backend(format!(
        "a session row kept changing under {ATTEMPTS} attempts to read it"
    )))
}

/// Whether a check that read `row` and answered `check` found a forgotten row, which it must
/// delete as a purge would have.
pub(crate) fn found_forgotten(row: Option<&StoredRow>, check: &Check) -> bool {
    row.is_some() && *check == Check::Expired(ExpiryReason::Unknown)
}

pub(crate) fn backend(error: sqlx::Error) -> StoreError {
    StoreError::backend(error)
}

/// Runs `query` (a purge statement taking `now`) in batches of [`PURGE_BATCH`] until one
/// deletes fewer, and returns how many rows went.
pub(crate) async fn purge_in_batches<F, Fut>(mut batch: F) -> Result<u64, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let mut removed = 0;
    loop {
        let deleted = batch().await?;
        removed += deleted;
        if deleted < PURGE_BATCH {
            return Ok(removed);
        }
    }
}

/// Runs `store.purge` every `interval` with the time from `clock`, going on after failures
/// (which the store logs once per burst). The first purge runs at once.
pub(crate) fn spawn_purge<St: SessionStore>(
    store: St,
    interval: Duration,
    clock: impl Clock,
) -> tokio::task::JoinHandle<()> {
    // `tokio::time::interval` refuses zero; a purge more often than every second buys nothing.
    let interval = interval.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let now = Timestamp::from_system_time(clock.now());
            match store.purge(now).await {
                Ok(removed) => tracing::debug!(removed, "purged expired sessions"),
                // The store's own log has it, once per burst.
                Err(error) => tracing::trace!(%error, "purging expired sessions failed"),
            }
        }
    })
}
