//! One owner's rows, as both SQL stores read them and judge a sign-in against the
//! [`SessionLimit`](crate::store::SessionLimit).

use super::{decode_row, timestamp, OwnTimeouts, StoredRow};
use crate::store::{
    Begin, OnLimit, OwnedSession, Policy, SessionKey, SessionRecord, SessionTimeouts,
};
use crate::StoreError;

/// Reads a row of [`Queries::sessions_of`](super::Queries::sessions_of): `key`, then the
/// usual columns.
pub(crate) fn decode_owned<R>(row: &R) -> Result<OwnedSession, StoreError>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let key: Vec<u8> = row
        .try_get("key")
        .map_err(|e| StoreError::CorruptRecord(e.to_string()))?;
    let key: [u8; 32] = key.try_into().map_err(|key: Vec<u8>| {
        StoreError::CorruptRecord(format!("a key of {} bytes", key.len()))
    })?;
    let stored: StoredRow = decode_row(row)?;
    Ok(OwnedSession {
        key: SessionKey::from_bytes(key),
        record: stored.record(),
    })
}

/// Whether a sign-in that began `key` as a new session is refused after all (and rolled
/// back): the limit refuses more, and the owner's sessions active at `now` (`active`, which
/// the query listed before the begin) already fill it without `key`.
pub(crate) fn refuses(policy: &Policy, key: &SessionKey, active: &[OwnedSession]) -> bool {
    policy.session_limit().is_some_and(|limit| {
        limit.on_limit == OnLimit::Refuse
            && !active.iter().any(|session| session.key == *key)
            && active.len() >= limit.max.get() as usize
    })
}

/// The keys a sign-in of `key` at `now` (Unix ms) supersedes, oldest first, once `begin` answered
/// `began`: nothing unless it began, else the owner's oldest beyond the limit, the new session
/// counted.
pub(crate) fn superseded(
    policy: &Policy,
    began: Begin,
    key: &SessionKey,
    now: i64,
    timeouts: Option<SessionTimeouts>,
    mut active: Vec<OwnedSession>,
) -> Vec<SessionKey> {
    if began != Begin::Began {
        return Vec::new();
    }
    // Only ms survive the row, so the new session is counted as it is stored.
    let own = OwnTimeouts::of(timeouts).map(OwnTimeouts::timeouts);
    active.retain(|session| session.key != *key);
    active.push(OwnedSession {
        key: *key,
        record: SessionRecord::new(timestamp(now), timestamp(now)).with_timeouts(own),
    });
    policy.superseded(&mut active)
}
