//! Reading the script's replies: every reply is a list of strings, its first the outcome.

use std::time::Duration;

use super::super::{Begin, Check, ExpiryReason, SessionRecord, SessionTimeouts};
use crate::{StoreError, Timestamp};

pub(super) fn corrupt(reply: &[String]) -> StoreError {
    match reply {
        [tag, detail] if tag == "corrupt" => StoreError::CorruptRecord(detail.clone()),
        _ => StoreError::CorruptRecord(format!("unexpected script reply {reply:?}")),
    }
}

fn reason(text: &str, reply: &[String]) -> Result<ExpiryReason, StoreError> {
    text.parse().map_err(|_| corrupt(reply))
}

pub(super) fn number(text: &str, reply: &[String]) -> Result<u64, StoreError> {
    text.parse().map_err(|_| corrupt(reply))
}

fn timestamp(text: &str, reply: &[String]) -> Result<Timestamp, StoreError> {
    number(text, reply).map(Timestamp::from_unix_millis)
}

/// A record from `created_at`, `last_seen` and, if the session has its own, its idle and
/// absolute timeouts (-1 for no absolute timeout).
pub(super) fn record(fields: &[String], reply: &[String]) -> Result<SessionRecord, StoreError> {
    let (created_at, last_seen, own) = match fields {
        [created_at, last_seen] => (created_at, last_seen, None),
        [created_at, last_seen, idle, absolute] => (created_at, last_seen, Some((idle, absolute))),
        _ => return Err(corrupt(reply)),
    };
    let timeouts = match own {
        None => None,
        Some((idle, absolute)) => Some(SessionTimeouts {
            idle: Duration::from_millis(number(idle, reply)?),
            absolute: match absolute.as_str() {
                "-1" => None,
                millis => Some(Duration::from_millis(number(millis, reply)?)),
            },
        }),
    };
    Ok(SessionRecord {
        created_at: timestamp(created_at, reply)?,
        last_seen: timestamp(last_seen, reply)?,
        timeouts,
    })
}

/// An owned session's ask, beside an active check, to have its owner's index kept longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Renewal {
    pub(super) owner: String,
    /// Its index score, which names this session of that key.
    pub(super) order: String,
    /// Until when (app-clock ms) the index should be kept.
    pub(super) until: u64,
}

pub(super) fn check(reply: &[String]) -> Result<(Check, Option<Renewal>), StoreError> {
    match reply {
        [tag, fields @ ..] if tag == "active" => Ok((Check::Active(record(fields, reply)?), None)),
        [tag, owner, order, until, fields @ ..] if tag == "renew" => Ok((
            Check::Active(record(fields, reply)?),
            Some(Renewal {
                owner: owner.clone(),
                order: order.clone(),
                until: number(until, reply)?,
            }),
        )),
        [tag, why] if tag == "expired" => Ok((Check::Expired(reason(why, reply)?), None)),
        [tag, why] if tag == "retired" => Ok((Check::Retired(reason(why, reply)?), None)),
        _ => Err(corrupt(reply)),
    }
}

/// What the begin script did; `AlreadyActive` says whether the active session has the owner
/// the begin named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Began {
    New,
    AlreadyActive { same_owner: bool },
    Refused(ExpiryReason),
}

impl Began {
    pub(super) fn answer(self) -> Begin {
        match self {
            Began::New => Begin::Began,
            Began::AlreadyActive { .. } => Begin::AlreadyActive,
            Began::Refused(reason) => Begin::Refused(reason),
        }
    }
}

pub(super) fn begin(reply: &[String]) -> Result<Began, StoreError> {
    match reply {
        [tag] if tag == "began" => Ok(Began::New),
        [tag, same] if tag == "already" => Ok(Began::AlreadyActive {
            same_owner: same == "1",
        }),
        [tag, why] if tag == "refused" => Ok(Began::Refused(reason(why, reply)?)),
        _ => Err(corrupt(reply)),
    }
}

pub(super) fn end(reply: &[String]) -> Result<bool, StoreError> {
    match reply {
        [tag] if tag == "ended" => Ok(true),
        [tag] if tag == "kept" || tag == "other" => Ok(false),
        _ => Err(corrupt(reply)),
    }
}

pub(super) fn owner(reply: &[String]) -> Result<Option<String>, StoreError> {
    match reply {
        [tag, owner] if tag == "owner" => Ok(Some(owner.clone())),
        [tag] if tag == "none" => Ok(None),
        _ => Err(corrupt(reply)),
    }
}

/// What a sweep's `claim` found for one session listed in the due index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Claim {
    /// Active until its deadline (app-clock ms): to be listed again for then.
    Later(u64),
    /// Its end, now claimed by this sweep: the reason, when it ended, and the owner.
    End {
        reason: ExpiryReason,
        at: Timestamp,
        owner: Option<String>,
    },
    /// Claimed by another sweep until then (app-clock ms).
    Claimed(u64),
    /// Announced, forgotten or never known: nothing to announce.
    Over,
}

pub(super) fn claim(reply: &[String]) -> Result<Claim, StoreError> {
    match reply {
        [tag, at] if tag == "later" => Ok(Claim::Later(number(at, reply)?)),
        [tag, until] if tag == "claimed" => Ok(Claim::Claimed(number(until, reply)?)),
        [tag] if tag == "done" || tag == "gone" => Ok(Claim::Over),
        [tag, why, at, owner @ ..] if tag == "end" && owner.len() <= 1 => Ok(Claim::End {
            reason: reason(why, reply)?,
            at: timestamp(at, reply)?,
            owner: owner.first().cloned(),
        }),
        _ => Err(corrupt(reply)),
    }
}

/// Whether `ack` marked an end announced (`false`: not an ended session, left alone).
pub(super) fn ack(reply: &[String]) -> Result<bool, StoreError> {
    match reply {
        [tag] if tag == "acked" => Ok(true),
        [tag] if tag == "kept" => Ok(false),
        _ => Err(corrupt(reply)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn parses_replies() {
        assert_eq!(
            check(&strings(&["active", "1767225600000", "1767225601000"])).ok(),
            Some((
                Check::Active(SessionRecord::new(
                    Timestamp::from_unix_millis(1_767_225_600_000),
                    Timestamp::from_unix_millis(1_767_225_601_000),
                )),
                None
            ))
        );
        assert_eq!(
            check(&strings(&[
                "active",
                "1767225600000",
                "1767225601000",
                "300000",
                "-1"
            ]))
            .ok(),
            Some((
                Check::Active(
                    SessionRecord::new(
                        Timestamp::from_unix_millis(1_767_225_600_000),
                        Timestamp::from_unix_millis(1_767_225_601_000),
                    )
                    .with_timeouts(Some(SessionTimeouts::new(Duration::from_secs(300))))
                ),
                None
            ))
        );
        assert_eq!(
            check(&strings(&[
                "renew",
                "alice",
                "1767225600000",
                "1767229200000",
                "1767225600000",
                "1767225601000"
            ]))
            .ok()
            .and_then(|(_, renewal)| renewal),
            Some(Renewal {
                owner: "alice".to_owned(),
                order: "1767225600000".to_owned(),
                until: 1_767_229_200_000,
            })
        );
        assert_eq!(
            check(&strings(&["expired", "superseded"])).ok(),
            Some((Check::Expired(ExpiryReason::Superseded), None))
        );
        assert_eq!(
            check(&strings(&["retired", "idle"])).ok(),
            Some((Check::Retired(ExpiryReason::Idle), None))
        );
        assert_eq!(
            begin(&strings(&["refused", "ended"])).ok(),
            Some(Began::Refused(ExpiryReason::Ended))
        );
        assert_eq!(
            begin(&strings(&["already", "0"])).ok(),
            Some(Began::AlreadyActive { same_owner: false })
        );
        assert_eq!(end(&strings(&["kept"])).ok(), Some(false));
        assert_eq!(
            claim(&strings(&["end", "idle", "1767225660000", "ada"])).ok(),
            Some(Claim::End {
                reason: ExpiryReason::Idle,
                at: Timestamp::from_unix_millis(1_767_225_660_000),
                owner: Some("ada".to_owned()),
            })
        );
        assert_eq!(
            claim(&strings(&["end", "ended", "1767225660000"])).ok(),
            Some(Claim::End {
                reason: ExpiryReason::Ended,
                at: Timestamp::from_unix_millis(1_767_225_660_000),
                owner: None,
            })
        );
        assert_eq!(
            claim(&strings(&["later", "1767225660000"])).ok(),
            Some(Claim::Later(1_767_225_660_000))
        );
        assert_eq!(claim(&strings(&["gone"])).ok(), Some(Claim::Over));
        assert!(claim(&strings(&["end", "sleepy", "1"])).is_err());
        assert!(claim(&strings(&["end", "idle", "1", "a", "b"])).is_err());
        assert_eq!(ack(&strings(&["acked"])).ok(), Some(true));
        assert_eq!(end(&strings(&["other"])).ok(), Some(false));
        assert_eq!(claim(&strings(&["done"])).ok(), Some(Claim::Over));
    }

    /// A reply with a tag the reading does not know (a script of another version, say) is a
    /// corrupt record, whatever its length: never taken for the known outcome of that shape.
    #[test]
    fn unknown_tags_are_corrupt_whatever_the_shape() {
        let shapes = [
            strings(&["bogus"]),
            strings(&["bogus", "idle"]),
            strings(&["bogus", "5"]),
            strings(&["bogus", "idle", "5"]),
            strings(&["bogus", "alice", "1", "2", "1767225600000", "1767225601000"]),
        ];
        for reply in &shapes {
            let corrupt = |error: StoreError| matches!(error, StoreError::CorruptRecord(_));
            assert!(check(reply).err().is_some_and(corrupt), "check {reply:?}");
            assert!(begin(reply).err().is_some_and(corrupt), "begin {reply:?}");
            assert!(end(reply).err().is_some_and(corrupt), "end {reply:?}");
            assert!(owner(reply).err().is_some_and(corrupt), "owner {reply:?}");
            assert!(claim(reply).err().is_some_and(corrupt), "claim {reply:?}");
            assert!(ack(reply).err().is_some_and(corrupt), "ack {reply:?}");
        }
    }

    /// The script's own account of a corrupt record is passed on as it is; any other reply
    /// that cannot be read is quoted whole.
    #[test]
    fn corrupt_records_carry_the_scripts_detail_or_the_whole_reply() {
        let detail = |reply: &[&str]| match corrupt(&strings(reply)) {
            StoreError::CorruptRecord(detail) => detail,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            detail(&["corrupt", "a string where a session hash was expected"]),
            "a string where a session hash was expected"
        );
        assert_eq!(
            detail(&["expired", "later"]),
            r#"unexpected script reply ["expired", "later"]"#
        );
        assert_eq!(detail(&[]), "unexpected script reply []");
    }

    #[test]
    fn malformed_replies_are_corrupt_records() {
        for reply in [
            strings(&["corrupt", "a string where a session hash was expected"]),
            strings(&["active", "1.5e12", "x"]),
            strings(&["active", "1", "2", "3"]),
            strings(&["active", "1", "2", "3", "soon"]),
            strings(&["expired", "later"]),
            strings(&[]),
        ] {
            assert!(matches!(check(&reply), Err(StoreError::CorruptRecord(_))));
        }
    }
}
