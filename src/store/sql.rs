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
//! retired row keeps: `idle`, `absolute`, `ended`, `superseded`), and `expires_at`, the time
//! after which the row may be deleted. For an active row that is its deadline plus the
//! tombstone retention (until then an expired row must still answer its reason); for a retired
//! row, the end of its retention. The purge deletes `expires_at <= now` through the index on
//! `(announced, expires_at)`.
//!
//! Three nullable columns carry what issue #13 added: `owner`, the principal (indexed where
//! set, so an owner's rows are found without a scan, and a plain session costs nothing), and
//! the session's own timeouts, `idle_ms` and `absolute_ms`. The row has timeouts of its own
//! exactly when `idle_ms` is set, and then `absolute_ms` is its absolute timeout or, when
//! null, none; with `idle_ms` null the layer's apply. Every statement that judges a deadline
//! takes the row's own timeouts in SQL (a `CASE` on `idle_ms`), so they are enforced in the
//! same atomic step as the layer's. The owner index holds rows, not a list kept beside them:
//! a retired row leaves it when the purge deletes the row, and every query on it asks for
//! rows active at `now`, so it cannot disagree with expiry.
//!
//! Two more carry what issue #14 added, the announcement of every end: `announced` (0 until
//! [`ack_ends`](super::SessionStore::ack_ends) marks the end announced) and `lease_until`
//! (null, or until when a claim holds the end). The index on `(announced, expires_at)` finds
//! the ends due without reading live sessions; see [`ends`] for the claim.
//!
//! # One owner's sign-ins
//!
//! A begin without an owner stays one statement. With an owner (and so possibly a
//! [`SessionLimit`](super::SessionLimit)) it is one transaction that counts the owner's active
//! rows, begins the session or refuses it, and supersedes the oldest beyond the limit. Two such
//! transactions for one owner must not both count before either writes: PostgreSQL takes a
//! transaction-scoped advisory lock on a hash of the table and the owner (row locks cannot
//! lock the row a concurrent sign-in is about to insert), SQLite a write transaction (`BEGIN
//! IMMEDIATE`, as SQLite has one writer anyway). Nothing else adds an active row for an owner,
//! so under that lock the owner's active rows can only decrease, which keeps the count safe.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::{
    Begin, Check, ExpiryReason, Policy, SessionKey, SessionRecord, SessionStore, SessionTimeouts,
    Touch,
};
use crate::error_log::StoreLog;
use crate::{Clock, StoreError, Timestamp};

pub(crate) mod ends;
mod owned;
pub(crate) use owned::{decode_owned, refuses, superseded};

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

/// Binds `$1` (the owner) and `$2`..`$5` of [`Params`] (now and the layer's timeouts), for
/// [`Queries::sessions_of`].
macro_rules! bind_owner {
    ($query:expr, $owner:expr, $p:expr) => {
        $query
            .bind($owner)
            .bind($p.now)
            .bind($p.idle)
            .bind($p.has_absolute)
            .bind($p.absolute)
    };
}
pub(crate) use bind_owner;

/// Binds `$1`..`$5` of [`Params`] (the key, now and the layer's timeouts), for
/// [`Queries::owner_of`].
macro_rules! bind_key_at {
    ($query:expr, $p:expr) => {
        $query
            .bind($p.key.to_vec())
            .bind($p.now)
            .bind($p.idle)
            .bind($p.has_absolute)
            .bind($p.absolute)
    };
}
pub(crate) use bind_key_at;

/// How often a statement that found the row changed under it is run again before giving up.
/// Each retry follows a write by another instance, so more than a couple is already unusual.
pub(crate) const ATTEMPTS: usize = 8;

/// Times and durations are clamped to this many milliseconds (about 36 million years after
/// 1970), so that a time plus two durations cannot overflow a `BIGINT` in SQL.
const MAX_MILLIS: i64 = i64::MAX / 4;

/// The columns every statement returns, in this order.
const COLUMNS: &str = "state, created_at, last_seen, expires_at, idle_ms, absolute_ms";

pub(crate) fn millis(time: Timestamp) -> i64 {
    i64::try_from(time.as_unix_millis()).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

/// A session's own timeouts in milliseconds, as its row keeps them (`idle_ms`,
/// `absolute_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnTimeouts {
    /// At least 1: `SessionTimeouts` never holds a zero idle timeout.
    pub idle: i64,
    pub absolute: Option<i64>,
}

impl OwnTimeouts {
    pub fn new(timeouts: SessionTimeouts) -> Self {
        OwnTimeouts {
            idle: duration_millis(timeouts.idle()).max(1),
            absolute: timeouts.absolute().map(duration_millis),
        }
    }

    /// `None` for a row without its own, as `idle_ms` null says.
    pub fn of(timeouts: Option<SessionTimeouts>) -> Option<Self> {
        timeouts.map(Self::new)
    }

    fn timeouts(self) -> SessionTimeouts {
        let idle = SessionTimeouts::new(Duration::from_millis(self.idle.unsigned_abs()));
        match self.absolute {
            Some(absolute) => idle.with_absolute(Duration::from_millis(absolute.unsigned_abs())),
            None => idle,
        }
    }
}

/// The values bound to a statement, numbered as the SQL expects them:
/// `$1` key, `$2` now, `$3` idle, `$4` has an absolute timeout (0/1), `$5` absolute,
/// `$6` retention, then per statement from `$7` on (see [`Queries`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    pub key: [u8; 32],
    pub now: i64,
    pub idle: i64,
    pub has_absolute: i64,
    pub absolute: i64,
    pub retention: i64,
    /// The layer's touch interval: a refresh writes only when `now - last_seen` is at least
    /// this (at least 1, so a refreshed row never asks for another write at the same `now`),
    /// unless the row's own idle timeout is not longer (see [`Params::touch_of`]).
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

    /// The values of a statement on an owner's rows rather than one key's (its `$1` is the
    /// owner, see [`bind_owner`]).
    pub fn for_owner(now: Timestamp, policy: &Policy) -> Self {
        Self::new(
            &SessionKey::from_bytes([0; 32]),
            now,
            policy,
            Touch::Passive,
        )
    }

    /// The same values for another key (a listed session of the owner).
    pub fn for_key(&self, key: &SessionKey) -> Self {
        Params {
            key: *key.as_bytes(),
            ..*self
        }
    }

    /// The idle and absolute timeouts that apply to a row: its own, or the layer's.
    fn timeouts_of(&self, own: Option<OwnTimeouts>) -> (i64, Option<i64>) {
        match own {
            Some(own) => (own.idle, own.absolute),
            None => (self.idle, (self.has_absolute == 1).then_some(self.absolute)),
        }
    }

    /// The deadline of a row and its reason, the same arithmetic as [`deadline`] in SQL and
    /// as [`Policy::deadline`]: the absolute deadline wins ties.
    fn deadline(
        &self,
        created_at: i64,
        last_seen: i64,
        own: Option<OwnTimeouts>,
    ) -> (i64, ExpiryReason) {
        let (idle, absolute) = self.timeouts_of(own);
        let idle = last_seen + idle;
        match absolute.map(|absolute| created_at + absolute) {
            Some(absolute) if absolute <= idle => (absolute, ExpiryReason::Absolute),
            _ => (idle, ExpiryReason::Idle),
        }
    }

    /// The touch threshold of a row, as [`Policy::touch_interval_of`] has it: the layer's,
    /// unless the row's idle timeout is not longer, and then 1 (a write on every refresh).
    fn touch_of(&self, own: Option<OwnTimeouts>) -> i64 {
        let (idle, _) = self.timeouts_of(own);
        if self.touch < idle {
            self.touch
        } else {
            1
        }
    }

    /// `expires_at` of a session that begins now with the timeouts `own`.
    pub fn new_row_expires_at(&self, own: Option<OwnTimeouts>) -> i64 {
        self.deadline(self.now, self.now, own).0 + self.retention
    }
}

/// The SQL text of one table, the same for both dialects.
#[derive(Debug, Clone)]
pub(crate) struct Queries {
    pub table: String,
    /// The index on `(announced, expires_at)`, for the purge and the announcement sweep.
    pub index: String,
    /// The index on `expires_at` alone that earlier versions made, which `migrate` drops.
    pub old_index: String,
    /// The partial index on `owner`.
    pub owner_index: String,
    /// The name of the `CHECK` constraint on `state`.
    pub state_check: String,
    /// `$1`: the row as it stands.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub select: String,
    /// `$1`..`$8`: retires an expired active row, or refreshes an active one that is due;
    /// returns the row it wrote, nothing when no write was needed.
    pub check: String,
    /// `$1`..`$7`, then `$8` owner, `$9` own idle, `$10` own absolute (each nullable):
    /// inserts a new row, or replaces a forgotten one, or retires an expired one; returns the
    /// row it wrote, nothing when no write was needed.
    pub begin: String,
    /// `$1`..`$6`: ends an active row (or retires it when it had expired); returns its state.
    pub end: String,
    /// `$1`..`$6`: [`end`](Queries::end), with reason `superseded`.
    pub supersede: String,
    /// `$1`..`$6`, `$7` own idle, `$8` own absolute (nullable): gives an active row these
    /// timeouts, retired at once when they put its deadline at or before `now`; returns its
    /// state, nothing when the row was not active at `now`.
    pub set_timeouts: String,
    /// `$1`..`$5`: the row's owner, if the row is active at `now` (null when it has none).
    pub owner_of: String,
    /// `$1` owner, `$2`..`$5`: the owner's rows active at `now`, `key` and [`COLUMNS`],
    /// oldest first (`created_at`, then key bytes, as [`oldest_first`](super::oldest_first)).
    pub sessions_of: String,
    /// `$1` owner, `$2`..`$6`, `$7` the key to keep (nullable): ends the owner's rows active
    /// at `now` but that one.
    pub end_sessions_of: String,
    /// `$1`: deletes up to [`PURGE_BATCH`] rows whose `expires_at` has passed.
    pub purge: String,
    /// [`ends::claim_sql`] as SQLite runs it (PostgreSQL's locks its rows).
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub claim: String,
    /// `$1`, `$2` (now): deletes one row whose `expires_at` has passed, when a check or an end
    /// finds it forgotten, so a clock stepping back later cannot find it again.
    pub forget: String,
}

/// The timeouts that apply to a row, as SQL expressions.
struct TimeoutsSql {
    idle: String,
    /// A boolean expression, never null.
    has_absolute: String,
    absolute: String,
}

impl TimeoutsSql {
    /// The row's own when its `idle_ms` is set, else the layer's (`$3`, `$4`, `$5`);
    /// `prefix` qualifies the columns (`"t."`, or empty).
    fn of_row(prefix: &str) -> Self {
        TimeoutsSql {
            idle: format!("COALESCE({prefix}idle_ms, $3)"),
            has_absolute: format!(
                "(CASE WHEN {prefix}idle_ms IS NULL THEN $4 = 1 \
                 ELSE {prefix}absolute_ms IS NOT NULL END)"
            ),
            absolute: format!(
                "(CASE WHEN {prefix}idle_ms IS NULL THEN $5 ELSE {prefix}absolute_ms END)"
            ),
        }
    }

    /// Timeouts given as parameters: `absolute` may be null for none.
    fn given(idle: &str, absolute: &str) -> Self {
        TimeoutsSql {
            idle: idle.to_owned(),
            has_absolute: format!("({absolute} IS NOT NULL)"),
            absolute: absolute.to_owned(),
        }
    }
}

/// The deadline of a row whose columns are named `created` and `last_seen`.
fn deadline(created: &str, last_seen: &str, timeouts: &TimeoutsSql) -> String {
    format!(
        "(CASE WHEN {} THEN {created} + {} ELSE {last_seen} + {} END)",
        absolute_wins(created, last_seen, timeouts),
        timeouts.absolute,
        timeouts.idle,
    )
}

fn absolute_wins(created: &str, last_seen: &str, timeouts: &TimeoutsSql) -> String {
    let TimeoutsSql {
        idle,
        has_absolute,
        absolute,
    } = timeouts;
    format!("({has_absolute} AND {created} + {absolute} <= {last_seen} + {idle})")
}

fn reason(created: &str, last_seen: &str, timeouts: &TimeoutsSql) -> String {
    format!(
        "(CASE WHEN {} THEN 'absolute' ELSE 'idle' END)",
        absolute_wins(created, last_seen, timeouts)
    )
}

/// Every state a row may have.
const STATES: &str = "'active', 'idle', 'absolute', 'ended', 'superseded'";

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
        let own = TimeoutsSql::of_row("");
        let row_deadline = deadline("created_at", "last_seen", &own);
        let expired = format!("($2 >= {row_deadline})");
        let row_reason = reason("created_at", "last_seen", &own);
        // `Policy::touch_interval_of`: no skipped write when the row's idle is not longer.
        let touch = format!("(CASE WHEN $7 < {} THEN $7 ELSE 1 END)", own.idle);
        let check = format!(
            "UPDATE {t} SET \
               state = CASE WHEN {expired} THEN {row_reason} ELSE state END, \
               last_seen = CASE WHEN {expired} THEN last_seen ELSE $2 END, \
               expires_at = CASE WHEN {expired} THEN {row_deadline} + $6 \
                            ELSE {refreshed_deadline} + $6 END \
             WHERE key = $1 AND state = 'active' AND ( \
               ({expired} AND {row_deadline} + $6 > $2) \
               OR (NOT {expired} AND $8 = 1 AND $2 - last_seen >= {touch})) \
             RETURNING {COLUMNS}",
            refreshed_deadline = deadline("created_at", "$2", &own),
        );
        // In the upsert, bare column names would be ambiguous with `excluded`'s.
        let (qc, ql) = (format!("{t}.created_at"), format!("{t}.last_seen"));
        let q_own = TimeoutsSql::of_row(&format!("{t}."));
        let q_deadline = deadline(&qc, &ql, &q_own);
        let gone = format!(
            "(({t}.state <> 'active' AND {t}.expires_at <= $2) \
              OR ({t}.state = 'active' AND {q_deadline} + $6 <= $2))"
        );
        // A replaced row is a new session: it takes the new one's owner and timeouts, and
        // its end is yet to be announced.
        let begin = format!(
            "INSERT INTO {t} \
               (key, created_at, last_seen, state, expires_at, owner, idle_ms, absolute_ms) \
             VALUES ($1, $2, $2, 'active', $7, $8, $9, $10) \
             ON CONFLICT (key) DO UPDATE SET \
               state = CASE WHEN {gone} THEN 'active' ELSE {q_reason} END, \
               created_at = CASE WHEN {gone} THEN $2 ELSE {qc} END, \
               last_seen = CASE WHEN {gone} THEN $2 ELSE {ql} END, \
               expires_at = CASE WHEN {gone} THEN $7 ELSE {q_deadline} + $6 END, \
               owner = CASE WHEN {gone} THEN excluded.owner ELSE {t}.owner END, \
               idle_ms = CASE WHEN {gone} THEN excluded.idle_ms ELSE {t}.idle_ms END, \
               absolute_ms = CASE WHEN {gone} THEN excluded.absolute_ms \
                             ELSE {t}.absolute_ms END, \
               announced = CASE WHEN {gone} THEN 0 ELSE {t}.announced END, \
               lease_until = CASE WHEN {gone} THEN NULL ELSE {t}.lease_until END \
             WHERE {gone} OR ({t}.state = 'active' AND $2 >= {q_deadline}) \
             RETURNING {COLUMNS}",
            q_reason = reason(&qc, &ql, &q_own),
        );
        let end_as = |ended: &str| {
            format!(
                "UPDATE {t} SET \
                   state = CASE WHEN {expired} THEN {row_reason} ELSE '{ended}' END, \
                   expires_at = CASE WHEN {expired} THEN {row_deadline} + $6 ELSE $2 + $6 END \
                 WHERE key = $1 AND state = 'active' \
                   AND (NOT {expired} OR {row_deadline} + $6 > $2) \
                 RETURNING state"
            )
        };
        // The SET expressions all read the row as it was, so `last_seen` and `created_at`
        // are the session's and only the timeouts are new.
        let new = TimeoutsSql::given("$7", "$8");
        let new_deadline = deadline("created_at", "last_seen", &new);
        let set_timeouts = format!(
            "UPDATE {t} SET idle_ms = $7, absolute_ms = $8, \
               state = CASE WHEN $2 >= {new_deadline} THEN {new_reason} ELSE 'active' END, \
               expires_at = {new_deadline} + $6 \
             WHERE key = $1 AND state = 'active' AND NOT {expired} \
             RETURNING state",
            new_reason = reason("created_at", "last_seen", &new),
        );
        let owned_active = format!("owner = $1 AND state = 'active' AND $2 < {row_deadline}");
        Queries {
            table: t.to_owned(),
            index: format!("{t}_expiry_idx"),
            old_index: format!("{t}_expires_at_idx"),
            owner_index: format!("{t}_owner_idx"),
            state_check: format!("{t}_state_check"),
            select: format!("SELECT {COLUMNS} FROM {t} WHERE key = $1"),
            check,
            begin,
            end: end_as("ended"),
            supersede: end_as("superseded"),
            set_timeouts,
            owner_of: format!(
                "SELECT owner FROM {t} WHERE key = $1 AND state = 'active' AND $2 < {row_deadline}"
            ),
            sessions_of: format!(
                "SELECT key, {COLUMNS} FROM {t} WHERE {owned_active} ORDER BY created_at, key"
            ),
            end_sessions_of: format!(
                "UPDATE {t} SET state = 'ended', expires_at = $2 + $6 \
                 WHERE {owned_active} AND ($7 IS NULL OR key <> $7)"
            ),
            // Both values of `announced`, so the index on `(announced, expires_at)` serves it
            // as two ranges.
            purge: format!(
                "DELETE FROM {t} WHERE key IN \
                 (SELECT key FROM {t} WHERE announced IN (0, 1) AND expires_at <= $1 \
                  LIMIT {PURGE_BATCH})"
            ),
            claim: ends::claim_sql(t, ends::picked_sqlite),
            forget: format!("DELETE FROM {t} WHERE key = $1 AND expires_at <= $2"),
        }
    }

    /// The table `name` as this version has it; `key_type` is the dialect's byte-string
    /// type. `name` differs from [`table`](Queries::table) while SQLite rebuilds an old table.
    pub fn create_table(&self, name: &str, key_type: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {name} ( \
               key {key_type} PRIMARY KEY NOT NULL, \
               created_at BIGINT NOT NULL, \
               last_seen BIGINT NOT NULL, \
               state TEXT NOT NULL, \
               expires_at BIGINT NOT NULL, \
               owner TEXT, \
               idle_ms BIGINT, \
               absolute_ms BIGINT, \
               announced SMALLINT NOT NULL DEFAULT 0, \
               lease_until BIGINT, \
               {check})",
            check = self.state_constraint(),
        )
    }

    /// The indexes: on `(announced, expires_at)` for the purge and the announcement sweep,
    /// and on `owner` where set (a partial index: sessions without an owner, most of them in
    /// many apps, cost it nothing).
    pub fn create_indexes(&self) -> [String; 2] {
        let Queries {
            table,
            index,
            owner_index,
            ..
        } = self;
        [
            format!("CREATE INDEX IF NOT EXISTS {index} ON {table} (announced, expires_at)"),
            format!(
                "CREATE INDEX IF NOT EXISTS {owner_index} ON {table} (owner) \
                 WHERE owner IS NOT NULL"
            ),
        ]
    }

    /// The `CHECK` on `state`, named, as a table constraint.
    pub fn state_constraint(&self) -> String {
        format!(
            "CONSTRAINT {} CHECK (state IN ({STATES}))",
            self.state_check
        )
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

/// Every column of the table, for a migration that copies the ones an old table has.
#[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
pub(crate) const COLUMNS_ALL: [&str; 10] = [
    "key",
    "created_at",
    "last_seen",
    "state",
    "expires_at",
    "owner",
    "idle_ms",
    "absolute_ms",
    "announced",
    "lease_until",
];

/// The columns issue #14 added, with their definitions: a table that lacks them gets them with
/// `ALTER TABLE ... ADD COLUMN` (every old row unannounced and unclaimed).
pub(crate) const ANNOUNCE_COLUMNS: [(&str, &str); 2] = [
    ("announced", "SMALLINT NOT NULL DEFAULT 0"),
    ("lease_until", "BIGINT"),
];

/// The state this version added: a table whose `CHECK` on `state` does not name it predates
/// owners and own timeouts, and is upgraded by `migrate`.
pub(crate) const NEWEST_STATE: &str = "superseded";

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
    /// The session's own timeouts, `None` for the layer's.
    pub own: Option<OwnTimeouts>,
}

impl StoredRow {
    /// The record an active row stands for.
    pub fn record(&self) -> SessionRecord {
        SessionRecord::new(timestamp(self.created_at), timestamp(self.last_seen))
            .with_timeouts(self.own.map(OwnTimeouts::timeouts))
    }
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
    let at_least = |column: &str, value: i64, least: i64| -> Result<i64, StoreError> {
        if value < least {
            return Err(StoreError::CorruptRecord(format!(
                "{column} is below {least} ({value})"
            )));
        }
        Ok(value)
    };
    let time = |column: &str| -> Result<i64, StoreError> {
        let value: i64 = row.try_get(column).map_err(corrupt)?;
        at_least(column, value, 0)
    };
    let maybe = |column: &str, least: i64| -> Result<Option<i64>, StoreError> {
        let value: Option<i64> = row.try_get(column).map_err(corrupt)?;
        value
            .map(|value| at_least(column, value, least))
            .transpose()
    };
    // As the SQL reads them: own timeouts exactly when `idle_ms` is set.
    let own = match maybe("idle_ms", 1)? {
        Some(idle) => Some(OwnTimeouts {
            idle,
            absolute: maybe("absolute_ms", 0)?,
        }),
        None => None,
    };
    Ok(StoredRow {
        state,
        created_at: time("created_at")?,
        last_seen: time("last_seen")?,
        expires_at: time("expires_at")?,
        own,
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
            let (deadline, _) = p.deadline(row.created_at, row.last_seen, row.own);
            if p.now >= deadline {
                // Past the retention it is forgotten, as a tombstone would be; the purge
                // deletes it. Within it, only the statement may answer, as it retires the row.
                return (deadline + p.retention <= p.now)
                    .then_some(Check::Expired(ExpiryReason::Unknown));
            }
            if p.refresh == 1 && p.now - row.last_seen >= p.touch_of(row.own) {
                return None;
            }
            Some(Check::Active(row.record()))
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
            let (deadline, _) = p.deadline(row.created_at, row.last_seen, row.own);
            (p.now < deadline).then_some(Begin::AlreadyActive)
        }
        (RowState::Retired(reason), false) => {
            (row.expires_at > p.now).then_some(Begin::Refused(reason))
        }
    }
}

/// The failure of a call whose row changed under each of its [`ATTEMPTS`].
pub(crate) fn kept_changing() -> StoreError {
    StoreError::backend(format!(
        "a session row kept changing under {ATTEMPTS} attempts to read it"
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn sql_options_keep_what_is_set_within_their_bounds() {
        let defaults = SqlOptions::new();
        assert_eq!(defaults, SqlOptions::default());
        assert_eq!(defaults.get_max_connections(), 10);
        assert_eq!(defaults.get_min_connections(), 0);
        assert_eq!(defaults.get_acquire_timeout(), Duration::from_secs(1));
        assert_eq!(defaults.get_statement_timeout(), Duration::from_secs(2));
        assert_eq!(defaults.statement_timeout_ms(), 2000);

        let options = SqlOptions::new()
            .max_connections(8)
            .min_connections(3)
            .acquire_timeout(ms(500))
            .statement_timeout(ms(1500));
        assert_eq!(options.get_max_connections(), 8);
        assert_eq!(options.get_min_connections(), 3);
        assert_eq!(options.get_acquire_timeout(), ms(500));
        assert_eq!(options.get_statement_timeout(), ms(1500));
        assert_eq!(options.statement_timeout_ms(), 1500);

        // The bounds: at least one connection, no more kept idle than opened, at least 1 ms
        // per statement (zero would mean none for PostgreSQL), and no overflow.
        let clamped = SqlOptions::new()
            .max_connections(0)
            .min_connections(5)
            .statement_timeout(Duration::ZERO);
        assert_eq!(clamped.get_max_connections(), 1);
        assert_eq!(clamped.get_min_connections(), 1);
        assert_eq!(clamped.get_statement_timeout(), ms(1));
        assert_eq!(clamped.statement_timeout_ms(), 1);
        let huge = SqlOptions::new().statement_timeout(Duration::MAX);
        assert_eq!(huge.statement_timeout_ms(), u64::MAX);
    }

    /// The pool the stores open gets the options' sizes and acquire timeout.
    #[cfg(feature = "sqlite")]
    #[test]
    fn the_pool_takes_the_options() {
        let options = SqlOptions::new()
            .max_connections(7)
            .min_connections(2)
            .acquire_timeout(ms(250));
        let pool = options.pool::<sqlx::Sqlite>();
        assert_eq!(pool.get_max_connections(), 7);
        assert_eq!(pool.get_min_connections(), 2);
        assert_eq!(pool.get_acquire_timeout(), ms(250));
        let clamped = SqlOptions::new().max_connections(2).min_connections(9);
        assert_eq!(clamped.pool::<sqlx::Sqlite>().get_min_connections(), 2);
    }

    #[test]
    fn table_names_are_plain_identifiers() {
        let longest = "a".repeat(48);
        for name in [
            "sessions",
            "_sessions",
            "web_sessions_2",
            "S",
            longest.as_str(),
        ] {
            assert!(Queries::new(name).is_ok(), "{name:?} is a plain identifier");
        }
        let too_long = "a".repeat(49);
        for name in [
            "",
            "1sessions",
            "web-sessions",
            "web sessions",
            "s;DROP TABLE x",
            "\"quoted\"",
            "sessi\u{f6}ns",
            too_long.as_str(),
        ] {
            assert!(Queries::new(name).is_err(), "{name:?} must be refused");
        }
    }

    /// `decode_row` on a row of the given column values (SQL literals), read from SQLite.
    #[cfg(feature = "sqlite")]
    async fn decoded(
        state: &str,
        created_at: &str,
        idle_ms: &str,
        absolute_ms: &str,
    ) -> Result<StoredRow, StoreError> {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .expect("open");
        let row = sqlx::query(&format!(
            "SELECT {state} AS state, {created_at} AS created_at, 0 AS last_seen, \
             0 AS expires_at, {idle_ms} AS idle_ms, {absolute_ms} AS absolute_ms"
        ))
        .fetch_one(&mut conn)
        .await
        .expect("select");
        decode_row(&row)
    }

    /// The least values a row may hold are read (time 0, an own idle timeout of 1 ms, an
    /// absolute one of 0), one less is refused, as is a state no row may have.
    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn rows_are_read_down_to_their_least_values_and_no_further() {
        let row = decoded("'active'", "0", "1", "0")
            .await
            .expect("the least values");
        assert_eq!(row.state, RowState::Active);
        assert_eq!(row.created_at, 0);
        assert_eq!(
            row.own,
            Some(OwnTimeouts {
                idle: 1,
                absolute: Some(0)
            })
        );
        let row = decoded("'idle'", "7", "NULL", "5")
            .await
            .expect("a tombstone");
        assert_eq!(row.state, RowState::Retired(ExpiryReason::Idle));
        assert_eq!(row.created_at, 7);
        assert_eq!(row.own, None, "no own timeouts without idle_ms");
        for (state, created_at, idle_ms, absolute_ms) in [
            ("'active'", "-1", "NULL", "NULL"),
            ("'active'", "0", "0", "NULL"),
            ("'active'", "0", "1", "-1"),
            ("'unknown'", "0", "NULL", "NULL"),
            ("'paused'", "0", "NULL", "NULL"),
        ] {
            let decoded = decoded(state, created_at, idle_ms, absolute_ms).await;
            assert!(
                matches!(decoded, Err(StoreError::CorruptRecord(_))),
                "{state} {created_at} {idle_ms} {absolute_ms}: {decoded:?}"
            );
        }
    }
}
