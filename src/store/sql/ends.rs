//! Announcing session ends from the table (issue #14): the claim and the acknowledgement, as
//! both SQL stores run them, and the reading of a claimed row.
//!
//! # Which rows are due
//!
//! Every row's `expires_at` is its end plus the tombstone retention: for a retired row its
//! end (the deadline, or when it was ended) plus the retention, for an active row its deadline
//! plus the retention. A session ended at or before `now` and not yet forgotten therefore has
//! `expires_at` in `(now, now + retention]`, and a live session lies beyond that range. The
//! index on `(announced, expires_at)` holds the unannounced rows first, in `expires_at` order,
//! so the claim reads the range of unannounced rows whose end is due and stops at `limit`: it
//! costs what it hands out (plus ends still under a lease), never a scan of the live
//! sessions. The same index serves the purge (`announced IN (0, 1) AND expires_at <= now`),
//! so a refresh, which moves `expires_at`, writes no more index entries than before the
//! sweep existed.
//!
//! An active row past its deadline is retired by the claim itself, in the same statement, as
//! a check would retire it: the end is then the same whoever finds it first.
//!
//! # Once, and at least once
//!
//! The claim is one `UPDATE` whose subquery picks the due rows that are not announced and not
//! under a running lease (`lease_until` null or at most `now`), and which sets `lease_until`
//! to `now + lease` on each. On PostgreSQL the subquery takes the rows `FOR UPDATE SKIP
//! LOCKED`: a row another claimer holds is skipped (never waited for), and a row another
//! claimer leased and committed meanwhile is judged again as it now stands, lease included,
//! so two claimers never both get it. SQLite runs the statement under its one write lock,
//! taken when the statement starts. Either way an end is handed to one claimer per lease;
//! `ack_ends` sets `announced`, after which no claim finds it, and an end never acknowledged
//! is claimable again once its lease has run out (at least once across a crash).
//!
//! If `tombstone_retention` changes, rows written before keep the `expires_at` of the old
//! one until they are written again: with a longer retention the claim reads more of the
//! range (rows it then leaves alone) for a while, with a much shorter one an end may go
//! unannounced because it is already past its new horizon.

use super::{deadline, millis, reason, timestamp, Params, TimeoutsSql};
use crate::store::{ExpiryReason, Policy, SessionEnd, SessionKey, Touch};
use crate::{StoreError, Timestamp};

/// The claim `UPDATE` for `table`; `picked` turns the `SELECT` of the due keys into the
/// condition on `key` ([`picked_postgres`], [`picked_sqlite`]). Parameters: `$1` the lease's
/// end, `$2` now, `$3`..`$5` the layer's timeouts (as [`Params`]), `$6` retention, `$7` the
/// most rows, `$8` the least `expires_at` to read (see [`Resume`]); returns `key`, `owner`,
/// `state` and `expires_at` of each row claimed.
pub(crate) fn claim_sql(table: &str, picked: fn(&str) -> String) -> String {
    let t = table;
    let own = TimeoutsSql::of_row("");
    let row_deadline = deadline("created_at", "last_seen", &own);
    let row_reason = reason("created_at", "last_seen", &own);
    // An active row is due once past its deadline, and forgotten past its horizon, as the
    // check statement judges it.
    let due = format!(
        "SELECT key FROM {t} \
         WHERE announced = 0 AND expires_at > $2 AND expires_at >= $8 \
           AND expires_at <= $2 + $6 \
           AND (lease_until IS NULL OR lease_until <= $2) \
           AND (state <> 'active' \
                OR ($2 >= {row_deadline} AND {row_deadline} + $6 > $2)) \
         ORDER BY expires_at LIMIT $7"
    );
    format!(
        "UPDATE {t} SET \
           state = CASE WHEN state = 'active' THEN {row_reason} ELSE state END, \
           expires_at = CASE WHEN state = 'active' THEN {row_deadline} + $6 \
                        ELSE expires_at END, \
           lease_until = $1 \
         WHERE {picked} \
         RETURNING key, owner, state, expires_at",
        picked = picked(&due),
    )
}

/// PostgreSQL: the due rows locked `SKIP LOCKED`, and gathered into an array first, so the
/// `UPDATE` finds each by its primary key: as an `IN` join the planner may choose to read the
/// whole table and hash the few keys.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn picked_postgres(due: &str) -> String {
    format!("key = ANY(ARRAY({due} FOR UPDATE SKIP LOCKED))")
}

/// SQLite: the due keys, read under the write lock the statement holds.
pub(crate) fn picked_sqlite(due: &str) -> String {
    format!("key IN ({due})")
}

/// The acknowledgement `UPDATE` for `table`, with `keys` the SQL that matches the keys
/// (`= ANY($1)` on PostgreSQL, `IN ($1, ...)` on SQLite). Only ended rows not yet announced
/// are written: an active session's key is left alone, and a second acknowledgement writes
/// nothing.
pub(crate) fn ack_sql(table: &str, keys: &str) -> String {
    format!(
        "UPDATE {table} SET announced = 1, lease_until = NULL \
         WHERE key {keys} AND state <> 'active' AND announced = 0"
    )
}

/// The values a claim binds (see [`claim_sql`] and [`bind_claim`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub lease_until: i64,
    pub p: Params,
    pub limit: i64,
    /// The least `expires_at` the claim reads: 0 for the whole range.
    pub from: i64,
}

impl Claim {
    pub fn new(now: Timestamp, policy: &Policy, limit: usize, lease: std::time::Duration) -> Self {
        Claim {
            lease_until: millis(now.saturating_add(lease)),
            p: Params::new(
                &SessionKey::from_bytes([0; 32]),
                now,
                policy,
                Touch::Passive,
            ),
            limit: i64::try_from(limit).unwrap_or(i64::MAX),
            from: 0,
        }
    }
}

/// Where a store's next claim starts reading, so that claims working through a backlog each
/// read their own batch rather than everything the claims before them went through.
///
/// PostgreSQL keeps an updated row's old index entries until the table is vacuumed: each end
/// claimed and acknowledged leaves up to two in the range of unannounced rows (killed by the
/// first read that finds them dead, but still read past). A claim that started at `now` every
/// time would read past all of them, so announcing a backlog would cost the square of its
/// size between vacuums. After a full batch the next claim starts at the last `expires_at`
/// handed out instead: nothing newly due can lie below it (an end at or after the earlier
/// claim's `now` has `expires_at` past that claim's whole range), only ends it skipped (held
/// by another claimer's lease or a request's row lock) or whose lease ran out since. A batch
/// short of the limit means the backlog is through, and the next claim reads the whole range
/// again, finding those. SQLite rewrites its index entries in place and needs none of this.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct Resume(std::sync::atomic::AtomicI64);

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
impl Resume {
    /// The `from` of the next claim.
    pub fn from(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records what a claim handed out.
    pub fn claimed(&self, claim: &Claim, ends: &[SessionEnd]) {
        let next = if (ends.len() as i64) < claim.limit {
            0
        } else {
            // The ends are in `expires_at` order, which is `at` plus the retention.
            ends.last()
                .map_or(0, |end| millis(end.at).saturating_add(claim.p.retention))
        };
        self.0.store(next, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Binds `$1`..`$8` of a [`Claim`] to [`claim_sql`]'s statement, for either driver.
macro_rules! bind_claim {
    ($query:expr, $c:expr) => {
        $query
            .bind($c.lease_until)
            .bind($c.p.now)
            .bind($c.p.idle)
            .bind($c.p.has_absolute)
            .bind($c.p.absolute)
            .bind($c.p.retention)
            .bind($c.limit)
            .bind($c.from)
    };
}
pub(crate) use bind_claim;

/// Reads the rows the claim returned, oldest end first (`RETURNING` keeps no order).
pub(crate) fn decode_ends<R>(rows: &[R], claim: &Claim) -> Result<Vec<SessionEnd>, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut ends = rows
        .iter()
        .map(|row| decode_end(row, claim))
        .collect::<Result<Vec<_>, _>>()?;
    ends.sort_by(|a, b| (a.at, a.key.as_bytes()).cmp(&(b.at, b.key.as_bytes())));
    Ok(ends)
}

/// Reads a row the claim returned: the end is `expires_at` less the retention (the deadline
/// of an expiry, the time of an end).
fn decode_end<R>(row: &R, claim: &Claim) -> Result<SessionEnd, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let corrupt = |e: sqlx::Error| StoreError::CorruptRecord(e.to_string());
    let key: Vec<u8> = row.try_get("key").map_err(corrupt)?;
    let key: [u8; 32] = key.try_into().map_err(|key: Vec<u8>| {
        StoreError::CorruptRecord(format!("a key of {} bytes", key.len()))
    })?;
    let owner: Option<String> = row.try_get("owner").map_err(corrupt)?;
    let state: String = row.try_get("state").map_err(corrupt)?;
    let reason = match state.parse() {
        Ok(ExpiryReason::Unknown) | Err(_) => {
            return Err(StoreError::CorruptRecord(format!(
                "a claimed session in state {state:?}"
            )))
        }
        Ok(reason) => reason,
    };
    let expires_at: i64 = row.try_get("expires_at").map_err(corrupt)?;
    Ok(SessionEnd {
        key: SessionKey::from_bytes(key),
        owner,
        reason,
        at: timestamp((expires_at - claim.p.retention).max(0)),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const RETENTION_MS: u64 = 30_000;

    fn claim(limit: usize) -> Claim {
        let policy = Policy::new(
            Duration::from_secs(60),
            None,
            None,
            Duration::from_millis(RETENTION_MS),
        );
        Claim::new(
            Timestamp::from_unix_millis(1_000_000),
            &policy,
            limit,
            Duration::from_secs(30),
        )
    }

    fn end_at(ms: u64) -> SessionEnd {
        SessionEnd {
            key: SessionKey::from_bytes([(ms % 251) as u8; 32]),
            owner: None,
            reason: ExpiryReason::Ended,
            at: Timestamp::from_unix_millis(ms),
        }
    }

    /// The first claim reads the whole range; after a full batch the next one starts at the
    /// last end handed out (its `expires_at`: the end plus the retention); after a short
    /// batch, or an empty one, the backlog is through and the next reads the whole range
    /// again.
    #[test]
    fn a_claim_resumes_after_a_full_batch_and_starts_over_after_a_short_one() {
        let resume = Resume::default();
        assert_eq!(resume.from(), 0, "the first claim reads the whole range");
        let claim = claim(2);
        resume.claimed(&claim, &[end_at(900_000), end_at(950_000)]);
        assert_eq!(resume.from(), (950_000 + RETENTION_MS) as i64);
        resume.claimed(&claim, &[end_at(990_000)]);
        assert_eq!(resume.from(), 0, "a short batch: the backlog is through");
        resume.claimed(&claim, &[end_at(960_000), end_at(970_000)]);
        assert_eq!(resume.from(), (970_000 + RETENTION_MS) as i64);
        resume.claimed(&claim, &[]);
        assert_eq!(resume.from(), 0, "nothing left");
    }
}
