//! The SQL stores' table as earlier versions made it (before owners and per-session timeouts,
//! and before announcements), with sessions in it, for the tests that `migrate` upgrades it in
//! place and they keep working.

use std::time::Duration;

use tower_session_timeout::store::{
    Begin, Check, NewSession, SessionEnd, SessionKey, SessionRecord, SessionStore, SessionTimeouts,
    Touch,
};
use tower_session_timeout::{ExpiryReason, OnLimit, Timestamp};

use super::owner_races::limited;
use super::owner_suite::fresh_owner;
use super::store_suite::{fresh_key, policy, start};

/// The previous version's `CREATE TABLE` and `CREATE INDEX`, word for word (`key_type`:
/// `BYTEA` or `BLOB`).
pub fn previous_schema(table: &str, key_type: &str) -> [String; 2] {
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
        format!("CREATE INDEX IF NOT EXISTS {table}_expires_at_idx ON {table} (expires_at)"),
    ]
}

/// The table as the version before announcements made it (issue #13: owners and own
/// timeouts), with its indexes, word for word.
pub fn owners_schema(table: &str, key_type: &str) -> [String; 3] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {table} ( \
               key {key_type} PRIMARY KEY NOT NULL, \
               created_at BIGINT NOT NULL, \
               last_seen BIGINT NOT NULL, \
               state TEXT NOT NULL, \
               expires_at BIGINT NOT NULL, \
               owner TEXT, \
               idle_ms BIGINT, \
               absolute_ms BIGINT, \
               CONSTRAINT {table}_state_check CHECK \
                 (state IN ('active', 'idle', 'absolute', 'ended', 'superseded')))"
        ),
        format!("CREATE INDEX IF NOT EXISTS {table}_expires_at_idx ON {table} (expires_at)"),
        format!(
            "CREATE INDEX IF NOT EXISTS {table}_owner_idx ON {table} (owner) \
             WHERE owner IS NOT NULL"
        ),
    ]
}

/// A row as the previous version wrote it.
#[derive(Debug, Clone)]
pub struct OldRow {
    pub key: SessionKey,
    pub created_at: i64,
    pub last_seen: i64,
    pub state: &'static str,
    pub expires_at: i64,
}

/// Sessions of the previous version, under the suite's policy (idle 60 s, absolute 300 s,
/// retention 30 s), as they stand at [`OldSessions::t0`].
#[derive(Debug, Clone)]
pub struct OldSessions {
    pub t0: Timestamp,
    /// Active, last seen 20 s ago: goes idle at t0 + 40 s.
    pub active: SessionKey,
    /// Active, begun 290 s ago: reaches its absolute timeout at t0 + 10 s.
    pub aging: SessionKey,
    /// Ended 10 s ago.
    pub ended: SessionKey,
    /// Went idle 25 s ago.
    pub idle: SessionKey,
}

impl OldSessions {
    pub fn new() -> Self {
        OldSessions {
            t0: start(),
            active: fresh_key("old-active"),
            aging: fresh_key("old-aging"),
            ended: fresh_key("old-ended"),
            idle: fresh_key("old-idle"),
        }
    }

    fn at(&self, seconds: i64) -> i64 {
        self.t0.as_unix_millis() as i64 + seconds * 1000
    }

    pub fn rows(&self) -> Vec<OldRow> {
        let row = |key, created_at, last_seen, state, expires_at| OldRow {
            key,
            created_at,
            last_seen,
            state,
            expires_at,
        };
        vec![
            row(
                self.active,
                self.at(-100),
                self.at(-20),
                "active",
                self.at(40 + 30),
            ),
            row(
                self.aging,
                self.at(-290),
                self.at(-5),
                "active",
                self.at(10 + 30),
            ),
            row(self.ended, self.at(-60), self.at(-10), "ended", self.at(20)),
            row(self.idle, self.at(-200), self.at(-85), "idle", self.at(5)),
        ]
    }

    fn time(&self, seconds: i64) -> Timestamp {
        Timestamp::from_unix_millis(self.at(seconds) as u64)
    }

    /// After `migrate`, before [`keep_working`](OldSessions::keep_working): the ends the old
    /// table holds (one ended, one gone idle) are announced like any other, at the times their
    /// rows imply, and once; the live sessions are not.
    pub async fn ends_are_announced<St: SessionStore>(&self, store: &St) {
        let policy = policy();
        // A lease of a millisecond, so only the acknowledgement keeps them from coming back.
        let lease = Duration::from_millis(1);
        let mut claimed = store
            .claim_ends(self.time(0), &policy, 64, lease)
            .await
            .expect("claim_ends");
        claimed.sort_by_key(|end| end.at);
        assert_eq!(
            claimed,
            vec![
                SessionEnd {
                    key: self.idle,
                    owner: None,
                    reason: ExpiryReason::Idle,
                    at: self.time(-25),
                },
                SessionEnd {
                    key: self.ended,
                    owner: None,
                    reason: ExpiryReason::Ended,
                    at: self.time(-10),
                },
            ]
        );
        let keys: Vec<SessionKey> = claimed.iter().map(|end| end.key).collect();
        store
            .ack_ends(&keys, self.time(0), &policy)
            .await
            .expect("ack_ends");
        let again = store
            .claim_ends(self.time(1), &policy, 64, lease)
            .await
            .expect("claim_ends");
        assert_eq!(again, Vec::new(), "announced once");
    }

    /// After `migrate`: every old session answers as before, and the new features work on
    /// the upgraded table (owners, own timeouts, `superseded`).
    pub async fn keep_working<St: SessionStore>(&self, store: &St) {
        let policy = policy();
        let check = |key: SessionKey, seconds: i64, touch: Touch| {
            let now = self.time(seconds);
            async move { store.check(&key, now, &policy, touch).await.expect("check") }
        };
        assert_eq!(
            check(self.active, 0, Touch::Passive).await,
            Check::Active(SessionRecord::new(self.time(-100), self.time(-20))),
            "an old session keeps its times, with the layer's timeouts"
        );
        assert_eq!(
            check(self.ended, 0, Touch::Refresh).await,
            Check::Expired(ExpiryReason::Ended)
        );
        assert_eq!(
            check(self.idle, 0, Touch::Refresh).await,
            Check::Expired(ExpiryReason::Idle)
        );
        assert!(matches!(
            check(self.aging, 9, Touch::Refresh).await,
            Check::Active(_)
        ));
        assert_eq!(
            check(self.aging, 10, Touch::Refresh).await,
            Check::Retired(ExpiryReason::Absolute),
            "its absolute deadline still counts from its old created_at"
        );
        // An old session has no owner, and can be given timeouts of its own.
        assert_eq!(
            store
                .owner_of(&self.active, self.time(1), &policy)
                .await
                .expect("owner_of"),
            None
        );
        let own = SessionTimeouts::new(Duration::from_secs(30));
        assert!(store
            .set_timeouts(&self.active, self.time(1), &policy, own)
            .await
            .expect("set_timeouts"));
        assert_eq!(
            check(self.active, 10, Touch::Refresh).await,
            Check::Retired(ExpiryReason::Idle),
            "last seen at -20 s, its own 30 s idle ends it at +10 s"
        );
        // New sessions with an owner, beyond a limit: the table takes `superseded`.
        let limit = limited(1, OnLimit::EndOldest);
        let owner = fresh_owner("upgraded");
        let (first, second) = (fresh_key("upgraded-1"), fresh_key("upgraded-2"));
        for (key, seconds) in [(first, 20), (second, 21)] {
            let began = store
                .begin(
                    &key,
                    self.time(seconds),
                    &limit,
                    NewSession {
                        owner: Some(&owner),
                        timeouts: None,
                    },
                )
                .await
                .expect("begin");
            assert_eq!(began, Begin::Began);
        }
        assert_eq!(
            check(first, 22, Touch::Refresh).await,
            Check::Expired(ExpiryReason::Superseded)
        );
        let listed = store
            .sessions_of(&owner, self.time(22), &policy)
            .await
            .expect("sessions_of");
        assert_eq!(
            listed.iter().map(|s| s.key).collect::<Vec<_>>(),
            vec![second]
        );
    }
}

impl Default for OldSessions {
    fn default() -> Self {
        Self::new()
    }
}
