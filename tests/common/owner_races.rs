//! Races of one owner's sessions across several app instances (store values with pools of
//! their own), for the shared stores: an end-all racing requests and sign-ins, and sign-ins
//! racing under a limit. Times are passed in, so nothing sleeps; every race uses an owner and
//! ids of its own.

use std::collections::BTreeSet;
use std::time::Duration;

use tower_session_timeout::store::{
    oldest_first, Begin, Check, NewSession, OwnedSession, Policy, SessionKey, SessionRecord,
    SessionStore, Touch,
};
use tower_session_timeout::{ExpiryReason, OnLimit, SessionTimeoutLayer, Timestamp};

use super::owner_suite::fresh_owner;
use super::store_suite::{fresh_key, policy, start, ABSOLUTE, IDLE, RETENTION};

/// The suite's policy with at most `max` sessions per owner.
pub fn limited(max: u32, on_limit: OnLimit) -> Policy {
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .absolute_timeout(ABSOLUTE)
        .tombstone_retention(RETENTION)
        .max_sessions_per_owner(max, on_limit)
        .build()
        .expect("valid policy")
        .policy()
}

fn ms(start: Timestamp, millis: u64) -> Timestamp {
    start.saturating_add(Duration::from_millis(millis))
}

fn owned(owner: &str) -> NewSession<'_> {
    NewSession {
        owner: Some(owner),
        timeouts: None,
    }
}

/// What one task of a race did.
enum Outcome {
    Checked,
    Began(SessionKey, Begin),
    EndedAll(u64),
}

/// An end-all of one owner racing, on every instance, with refreshes of the owner's sessions
/// and with new sign-ins of that owner (half under a limit, which takes the owner's turn
/// like the end-all, half without). Afterwards every session that was active before the
/// end-all is ended for good (a lagging clock and a new sign-in with its id find it ended),
/// and the end-all's count is exactly the sessions it ended: the old ones, and the new ones
/// it found.
pub async fn end_all_races_requests_and_sign_ins<St: SessionStore>(stores: &[St], rounds: usize) {
    let plain = policy();
    // Large enough that no sign-in supersedes anything: this race is about the end-all.
    let roomy = limited(1000, OnLimit::EndOldest);
    for round in 0..rounds {
        let owner = fresh_owner(&format!("race-end-all-{round}"));
        let t0 = start();
        let old: Vec<SessionKey> = (0..8)
            .map(|i| fresh_key(&format!("race-old-{round}-{i}")))
            .collect();
        for (i, key) in old.iter().enumerate() {
            let began = stores[i % stores.len()]
                .begin(key, t0, &plain, owned(&owner))
                .await
                .expect("begin");
            assert_eq!(began, Begin::Began);
        }
        let t1 = ms(t0, 10_000);
        let mut tasks = Vec::new();
        let mut spawn = |task: tokio::task::JoinHandle<Outcome>| tasks.push(task);
        // The end-all goes in among the others, at a place that moves with the round.
        let end_at = round % 5;
        for step in 0..6usize {
            if step == end_at {
                let store = stores[round % stores.len()].clone();
                let owner = owner.clone();
                spawn(tokio::spawn(async move {
                    let ended = store
                        .end_sessions_of(&owner, None, ms(t1, 3), &plain)
                        .await
                        .expect("end_sessions_of");
                    Outcome::EndedAll(ended)
                }));
            }
            for (i, key) in old.iter().enumerate() {
                let store = stores[(i + step) % stores.len()].clone();
                let key = *key;
                spawn(tokio::spawn(async move {
                    let now = ms(t1, (i + step) as u64);
                    store
                        .check(&key, now, &plain, Touch::Refresh)
                        .await
                        .expect("check");
                    Outcome::Checked
                }));
            }
            let store = stores[step % stores.len()].clone();
            let owner = owner.clone();
            let policy = if step % 2 == 0 { plain } else { roomy };
            let key = fresh_key(&format!("race-new-{round}-{step}"));
            spawn(tokio::spawn(async move {
                let began = store
                    .begin(&key, ms(t1, step as u64), &policy, owned(&owner))
                    .await
                    .expect("begin");
                Outcome::Began(key, began)
            }));
        }
        let mut ended_all = None;
        let mut new = Vec::new();
        for task in tasks {
            match task.await.expect("task") {
                Outcome::Checked => {}
                Outcome::Began(key, began) => {
                    assert_eq!(began, Begin::Began, "a new id begins");
                    new.push(key);
                }
                Outcome::EndedAll(ended) => ended_all = Some(ended),
            }
        }
        let ended_all = ended_all.expect("the end-all ran");

        let t2 = ms(t1, 1_000);
        let lagging = ms(t0, 5_000);
        for (i, key) in old.iter().enumerate() {
            for store in stores {
                for now in [t2, lagging] {
                    assert_eq!(
                        store
                            .check(key, now, &plain, Touch::Refresh)
                            .await
                            .expect("check"),
                        Check::Expired(ExpiryReason::Ended),
                        "round {round}: old session {i} stays ended"
                    );
                }
            }
            assert_eq!(
                stores[i % stores.len()]
                    .begin(key, t2, &roomy, owned(&owner))
                    .await
                    .expect("begin"),
                Begin::Refused(ExpiryReason::Ended),
                "round {round}: old session {i} is not revived by a sign-in"
            );
        }
        let mut still_active = Vec::new();
        let mut new_ended = 0;
        for key in &new {
            match stores[0]
                .check(key, t2, &plain, Touch::Passive)
                .await
                .expect("check")
            {
                Check::Active(record) => still_active.push(OwnedSession { key: *key, record }),
                Check::Expired(ExpiryReason::Ended) => new_ended += 1,
                other => panic!("round {round}: a new session is {other:?}"),
            }
        }
        assert_eq!(
            ended_all,
            old.len() as u64 + new_ended,
            "round {round}: the end-all counts exactly the sessions it ended"
        );
        oldest_first(&mut still_active);
        for store in stores {
            let listed = store
                .sessions_of(&owner, t2, &plain)
                .await
                .expect("sessions_of");
            assert_eq!(
                listed, still_active,
                "round {round}: the owner's list is what is active"
            );
        }
    }
}

/// Sign-ins of one owner racing on every instance under a limit of `max`, each at a time of
/// its own. With [`OnLimit::Refuse`] exactly `max` begin and the refused ones wrote nothing;
/// with [`OnLimit::EndOldest`] every one begins and exactly the `max` newest are left active,
/// the others superseded (whatever order the sign-ins took turns in, each keeps the newest).
pub async fn limited_sign_ins_race<St: SessionStore>(
    stores: &[St],
    max: u32,
    on_limit: OnLimit,
    rounds: usize,
) {
    let policy = limited(max, on_limit);
    for round in 0..rounds {
        let owner = fresh_owner(&format!("race-limit-{round}"));
        let t0 = start();
        let keys: Vec<SessionKey> = (0..16)
            .map(|i| fresh_key(&format!("race-limit-{round}-{i}")))
            .collect();
        let mut tasks = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let store = stores[i % stores.len()].clone();
            let owner = owner.clone();
            let key = *key;
            // Later keys sign in at earlier times, against the order the tasks start in.
            let now = ms(t0, (keys.len() - i) as u64);
            tasks.push(tokio::spawn(async move {
                let began = store
                    .begin(&key, now, &policy, owned(&owner))
                    .await
                    .expect("begin");
                (key, now, began)
            }));
        }
        let mut began = Vec::new();
        let mut refused = Vec::new();
        for task in tasks {
            let (key, now, outcome) = task.await.expect("task");
            match outcome {
                Begin::Began => began.push(OwnedSession {
                    key,
                    record: SessionRecord::new(now, now),
                }),
                Begin::LimitReached => refused.push(key),
                other => panic!("round {round}: a new id answered {other:?}"),
            }
        }
        let t1 = ms(t0, 1_000);
        let listed = stores[round % stores.len()]
            .sessions_of(&owner, t1, &policy)
            .await
            .expect("sessions_of");
        let want = match on_limit {
            OnLimit::Refuse => {
                assert_eq!(
                    began.len(),
                    max as usize,
                    "round {round}: exactly max begin"
                );
                for key in &refused {
                    assert_eq!(
                        stores[0]
                            .check(key, t1, &policy, Touch::Passive)
                            .await
                            .expect("check"),
                        Check::Expired(ExpiryReason::Unknown),
                        "round {round}: a refused sign-in wrote nothing"
                    );
                }
                let mut want = began;
                oldest_first(&mut want);
                want
            }
            _ => {
                assert!(
                    refused.is_empty(),
                    "round {round}: ending the oldest refuses none"
                );
                let mut all = began;
                oldest_first(&mut all);
                let kept = all.split_off(all.len() - max as usize);
                for superseded in &all {
                    assert_eq!(
                        stores[1 % stores.len()]
                            .check(&superseded.key, t1, &policy, Touch::Passive)
                            .await
                            .expect("check"),
                        Check::Expired(ExpiryReason::Superseded),
                        "round {round}: an older session is superseded"
                    );
                }
                kept
            }
        };
        let listed_keys: BTreeSet<_> = listed.iter().map(|s| *s.key.as_bytes()).collect();
        assert_eq!(
            listed.len(),
            max as usize,
            "round {round}: never more than max"
        );
        assert_eq!(
            listed_keys.len(),
            listed.len(),
            "round {round}: listed once each"
        );
        assert_eq!(
            listed.iter().map(|s| s.key).collect::<Vec<_>>(),
            want.iter().map(|s| s.key).collect::<Vec<_>>(),
            "round {round}: the newest are the ones left"
        );
    }
}
