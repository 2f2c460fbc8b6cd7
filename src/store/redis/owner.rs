//! The owner index of [`RedisStore`]: which sessions a principal has, though they and the
//! index live in different slots.
//!
//! # The index
//!
//! One sorted set per owner, [`owner_key`](RedisStore::owner_key): members are session keys
//! (hex), scores the sign-in's `now` made strictly increasing per index (`max(now, highest
//! score + 1)`, so the score also tells in which order sign-ins reached the index). A session
//! record names its owner (`p`) and keeps the score it got (`q`). No script touches both a
//! session and an index: every step below is one script on one key, and the steps are ordered
//! so that a crash between two leaves the index listing too much, never too little.
//!
//! - **Sign-in**: (1) add the member to the index (and, at the same time, list the session
//!   in the due index, see `due.rs`), (2) begin the session with its owner. A crash between
//!   them leaves a member whose key is missing: a reader takes it for a sign-in
//!   under way for [`SIGN_IN_GRACE`](RedisStore::SIGN_IN_GRACE) (never listing it as active),
//!   then drops it. When the begin does not begin this owner's session (the id was already
//!   active, or expired), the member is taken back.
//! - **Reading** (listing, ending all, counting for a limit): read the index, then each member's
//!   session with a read-only script that answers "active" only for a session of *this* owner,
//!   so an index entry never grants power over another owner's session; then drop, in one
//!   script on the index, the members found over (a tombstone, another owner's session, a key
//!   missing past the grace). A session past its deadline but not retired yet is not listed,
//!   but stays in the index: a clock stepping back would find it active again. A member is
//!   dropped only while it has the score the reader saw: a sign-in that re-added it meanwhile
//!   (the same id begun again) gave it a new score, and it stays.
//! - **Ending all**: read as above, then end each active session with the end script told the
//!   owner (it ends nothing else). A session active before the call began was in the index
//!   (added before it began), is found active, and is ended; a check racing with it sees either
//!   the session before the end or the tombstone after, never revives it. Each session it
//!   ended is then listed in the due index as due now, so its end is announced within a sweep
//!   (its begin listed it already, for its deadline).
//!
//! # Limits
//!
//! With [`OnLimit::EndOldest`], after the session began the store reads the owner's active
//! sessions (the new one included) and ends the oldest beyond the limit (by `created_at`, then
//! key: [`Policy::superseded`]) with reason `superseded`. Of concurrent sign-ins, the last to
//! read sees every session begun before it (each began before it read), and each instance ends
//! only sessions that have at least `max` newer ones in its view, which it also has in the last
//! one's; so once they are all done the newest `max` remain, whichever instance ran which.
//!
//! With [`OnLimit::Refuse`], the session is begun, then ranked among the owner's active
//! sessions and sign-ins under way by index score (the sign-in order): if `max` or more are
//! ahead of it, it is withdrawn (its key left as a forgotten record, which answers as if never
//! begun), its member dropped, and the answer is [`Begin::LimitReached`]. Every member ahead of
//! it was added before it, so this sign-in sees them all, active or under way, and an admitted
//! one is never withdrawn: of concurrent sign-ins the first ones to reach the index are
//! admitted, up to `max` in all, on every instance alike. Only when some of the owner's
//! sessions end during the race may it refuse a sign-in that would have fitted (it counted one
//! under way that was then refused itself); it never admits one too many. For the moment between its begin and its
//! withdrawal, the refused session exists; its id has not reached the client yet.
//!
//! A sign-in and an end-all run as tasks of their own, so a client that goes away does not
//! stop them between two steps; a crash still can, which leaves at most one session beyond
//! the limit until the owner's next sign-in.
//!
//! Clock skew between instances does not make them disagree: the index score is made
//! increasing in the order sign-ins reach Redis, and `created_at` is one stored value every
//! instance reads (with skew, "oldest" is by the clocks of the instances that signed in, not by
//! real time, but the same for all). Skew only moves the grace, so it must stay well below it.
//!
//! # Growth
//!
//! Every sign-in and every read drops the members that are over, so an index holds an owner's
//! active sessions plus those that ended since it was last read. An owner who never comes back
//! leaves an index that Redis expires by itself: its TTL, only ever lengthened, outlasts by the
//! grace the `x` of every session it lists, the time until which that session may live (see
//! `script.rs`): its absolute deadline, or its idle deadline plus
//! [`OWNER_INDEX_LEASE`](RedisStore::OWNER_INDEX_LEASE), renewed by the requests that keep it
//! alive. Changing a session's timeouts first lengthens its index's TTL if they let it live
//! longer. An index thus lasts at most about a lease (or until the absolute deadline) past its
//! owner's last activity.

use std::future::Future;

use super::reply::{self, Began, Renewal};
use super::{both, join_all, millis_arg, time_arg, timeouts_args, Arg, RedisStore};
use crate::store::{
    oldest_first, Begin, ExpiryReason, OnLimit, OwnedSession, Policy, SessionKey, SessionRecord,
    SessionTimeouts, Touch,
};
use crate::{StoreError, Timestamp};

/// One member of an owner's index, with what its session was found to be.
struct Member {
    key: SessionKey,
    hex: String,
    /// The score as the index gave it, for a conditional removal.
    score: String,
    seen: Seen,
}

enum Seen {
    /// This owner's active session, and its index score at sign-in.
    Active { record: SessionRecord, order: u64 },
    /// A missing key within the grace: a sign-in under way.
    Pending { order: u64 },
    /// This owner's session past its deadline but not retired yet: not active, yet kept in
    /// the index, as a clock stepping back would find it active again.
    Expired,
    /// Over, or not this owner's: to be dropped from the index.
    Over,
}

impl Member {
    fn owned(&self) -> Option<OwnedSession> {
        match self.seen {
            Seen::Active { record, .. } => Some(OwnedSession {
                key: self.key,
                record,
            }),
            _ => None,
        }
    }
}

type Reply = Result<Vec<String>, StoreError>;

impl RedisStore {
    /// `begin` with an owner: [`sign_in`](Self::sign_in), as a task of its own.
    pub(super) fn begin_owned(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        owner: &str,
        timeouts: Option<SessionTimeouts>,
    ) -> impl Future<Output = Result<Begin, StoreError>> + Send + 'static {
        let (store, key, policy, owner) = (self.clone(), *key, *policy, owner.to_owned());
        detached(async move { store.sign_in(key, now, &policy, &owner, timeouts).await })
    }

    /// `sessions_of`: the owner's active sessions, oldest first.
    pub(super) fn active_of(
        &self,
        owner: &str,
        now: Timestamp,
        policy: &Policy,
    ) -> impl Future<Output = Result<Vec<OwnedSession>, StoreError>> + Send + 'static {
        let (store, policy, owner) = (self.clone(), *policy, owner.to_owned());
        async move {
            let members = store.survey(&owner, now, &policy).await?;
            let mut active: Vec<OwnedSession> = members.iter().filter_map(Member::owned).collect();
            oldest_first(&mut active);
            Ok(active)
        }
    }

    /// `end_sessions_of`, as a task of its own.
    pub(super) fn end_all_of(
        &self,
        owner: &str,
        keep: Option<SessionKey>,
        now: Timestamp,
        policy: &Policy,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send + 'static {
        let (store, policy, owner) = (self.clone(), *policy, owner.to_owned());
        detached(async move {
            let members = store.survey(&owner, now, &policy).await?;
            let targets = members
                .iter()
                .filter(|member| member.owned().is_some() && Some(member.key) != keep);
            store
                .end_members(&owner, targets, ExpiryReason::Ended, now, &policy)
                .await
        })
    }

    /// `set_timeouts`: one script call, or, when the new timeouts let an owned session live
    /// longer than its index is kept, the index kept longer first and then the call again.
    pub(super) fn change_timeouts(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        timeouts: SessionTimeouts,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send + 'static {
        let (store, key, policy) = (self.clone(), *key, *policy);
        async move {
            // Until when the owner's index has been kept longer by this call; -1: not yet.
            let mut covered = -1;
            // A second round always settles it, unless the key was begun anew in between.
            for _ in 0..3 {
                let [idle, absolute] = timeouts_args(Some(timeouts));
                let extra = [idle, absolute, Arg::Int(covered)];
                let reply = store
                    .session_op("set", &key, now, &policy, Touch::Passive, extra)
                    .await?;
                match reply.as_slice() {
                    [tag] if tag == "changed" => return Ok(true),
                    [tag] if tag == "kept" => return Ok(false),
                    [tag, owner, order, until] if tag == "cover" => {
                        let until = Timestamp::from_unix_millis(reply::number(until, &reply)?);
                        store.keep_index(owner, &key, order, until, now).await?;
                        covered = time_arg(until);
                    }
                    _ => return Err(reply::corrupt(&reply)),
                }
            }
            Err(StoreError::CorruptRecord(
                "the session changed under three attempts to set its timeouts".to_owned(),
            ))
        }
    }

    /// Acts on a check's [`Renewal`]: keeps the owner's index longer, then lets the session
    /// live that long. In the background where there is a Tokio runtime, so the request does
    /// not wait for it; a failure is logged, and the next refresh asks again.
    pub(super) fn renew(
        &self,
        key: SessionKey,
        now: Timestamp,
        policy: Policy,
        renewal: Renewal,
    ) -> impl Future<Output = ()> + Send + 'static {
        let store = self.clone();
        let renew = async move {
            let until = Timestamp::from_unix_millis(renewal.until);
            let kept = store
                .keep_index(&renewal.owner, &key, &renewal.order, until, now)
                .await;
            let raised = match kept {
                Ok(()) => {
                    let extra = [
                        Arg::Text(renewal.owner),
                        Arg::Text(renewal.order),
                        Arg::Int(time_arg(until)),
                    ];
                    store
                        .session_op("raise", &key, now, &policy, Touch::Passive, extra)
                        .await
                        .map(drop)
                }
                Err(error) => Err(error),
            };
            let _ = store.log.record("renew", raised);
        };
        async move {
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn(renew)),
                Err(_) => renew.await,
            }
        }
    }

    /// Has the owner's index keep the session's member (adding it back at `order` if it was
    /// dropped) until `until` and the grace at least.
    async fn keep_index(
        &self,
        owner: &str,
        key: &SessionKey,
        order: &str,
        until: Timestamp,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let args = vec![
            Arg::Name("index_keep"),
            Arg::Int(time_arg(now)),
            Arg::Text(key.to_hex()),
            Arg::Text(order.to_owned()),
            Arg::Int(lease(until, now)),
        ];
        let reply = self.eval(self.owner_key(owner), args).await?;
        match reply.as_slice() {
            [tag] if tag == "kept" => Ok(()),
            _ => Err(reply::corrupt(&reply)),
        }
    }

    /// Sign-in with an owner: the index first, then the session, then the limit.
    async fn sign_in(
        &self,
        key: SessionKey,
        now: Timestamp,
        policy: &Policy,
        owner: &str,
        timeouts: Option<SessionTimeouts>,
    ) -> Result<Begin, StoreError> {
        let index = self.owner_key(owner);
        let member = key.to_hex();
        // Until when the index is kept for the session: its absolute deadline, or its idle
        // deadline plus a lease (the check that refreshes it renews the lease).
        let (idle, absolute) = match timeouts {
            Some(timeouts) => (timeouts.idle, timeouts.absolute),
            None => (policy.idle_timeout(), policy.absolute_timeout()),
        };
        let leased = now.saturating_add(idle.saturating_add(Self::OWNER_INDEX_LEASE));
        let until = absolute.map_or(leased, |absolute| leased.min(now.saturating_add(absolute)));
        let add = self.eval(
            index.clone(),
            vec![
                Arg::Name("index_add"),
                Arg::Int(time_arg(now)),
                Arg::Text(member.clone()),
                Arg::Int(lease(until, now)),
            ],
        );
        // Listed for the announcement sweep as well, before the session begins (`due.rs`).
        let deadline = policy
            .deadline(&SessionRecord::new(now, now).with_timeouts(timeouts))
            .0;
        let (added, listed) = both(add, self.list_due(&key, deadline, now, policy)).await;
        let added = added?;
        listed?;
        let (order, score) = match added.as_slice() {
            [tag, score] if tag == "added" => (reply::number(score, &added)?, score.clone()),
            _ => return Err(reply::corrupt(&added)),
        };

        let [idle, absolute] = timeouts_args(timeouts);
        let extra = [
            Arg::Text(owner.to_owned()),
            idle,
            absolute,
            Arg::Int(i64::try_from(order).unwrap_or(i64::MAX)),
            Arg::Int(time_arg(until)),
        ];
        let began = reply::begin(
            &self
                .session_op("begin", &key, now, policy, Touch::Passive, extra)
                .await?,
        )?;
        let limit = policy.session_limit();
        match began {
            Began::New => {}
            Began::AlreadyActive { same_owner: true } => return Ok(Begin::AlreadyActive),
            other => {
                // Not a new session of this owner: the index takes back what it just listed.
                // The id's own state answers, whatever the limit says.
                self.prune(&index, &[(member.as_str(), score.as_str())])
                    .await?;
                return Ok(other.answer());
            }
        }
        let Some(limit) = limit else {
            return Ok(Begin::Began);
        };

        let members = self.survey(owner, now, policy).await?;
        match limit.on_limit {
            OnLimit::Refuse => {
                let ahead = members
                    .iter()
                    .filter(|member| member.key != key)
                    .filter(|member| match member.seen {
                        Seen::Active { order: theirs, .. } | Seen::Pending { order: theirs } => {
                            theirs < order
                        }
                        Seen::Expired | Seen::Over => false,
                    })
                    .count();
                if ahead < limit.max.get() as usize {
                    return Ok(Begin::Began);
                }
                let extra = [
                    Arg::Text(owner.to_owned()),
                    Arg::Int(i64::try_from(order).unwrap_or(i64::MAX)),
                ];
                let withdrawn = self
                    .session_op("withdraw", &key, now, policy, Touch::Passive, extra)
                    .await;
                self.forget_near(&key);
                withdrawn?;
                self.prune(&index, &[(member.as_str(), score.as_str())])
                    .await?;
                Ok(Begin::LimitReached)
            }
            OnLimit::EndOldest => {
                let mut active: Vec<OwnedSession> =
                    members.iter().filter_map(Member::owned).collect();
                let superseded = policy.superseded(&mut active);
                let targets = members
                    .iter()
                    .filter(|member| superseded.contains(&member.key));
                self.end_members(owner, targets, ExpiryReason::Superseded, now, policy)
                    .await?;
                Ok(Begin::Began)
            }
        }
    }

    /// The owner's index, each member with what its session is at `now`; drops from the
    /// index the members found over.
    async fn survey(
        &self,
        owner: &str,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<Vec<Member>, StoreError> {
        let index = self.owner_key(owner);
        let listed = self
            .eval(
                index.clone(),
                vec![Arg::Name("index_list"), Arg::Int(time_arg(now))],
            )
            .await?;
        if listed.len() % 2 != 0 {
            return Err(reply::corrupt(&listed));
        }
        let mut members = Vec::with_capacity(listed.len() / 2);
        let mut scores = Vec::with_capacity(listed.len() / 2);
        let mut strays = Vec::new();
        let mut peeks = Vec::with_capacity(listed.len() / 2);
        for pair in listed.chunks_exact(2) {
            let (hex, score) = (&pair[0], &pair[1]);
            // Whole milliseconds, though Redis may write them as a float.
            let order = score.parse::<f64>().ok().filter(|order| *order >= 0.0);
            match (SessionKey::from_hex(hex), order) {
                (Some(key), Some(order)) => {
                    let extra = [Arg::Text(owner.to_owned())];
                    peeks.push(self.session_op("peek", &key, now, policy, Touch::Passive, extra));
                    scores.push(order as u64);
                    members.push(Member {
                        key,
                        hex: hex.clone(),
                        score: score.clone(),
                        seen: Seen::Over,
                    });
                }
                // Nothing the store writes: dropped, as it lists no session.
                _ => strays.push((hex.as_str(), score.as_str())),
            }
        }
        let peeked: Vec<Reply> = join_all(peeks).await;
        for ((member, peek), score) in members.iter_mut().zip(peeked).zip(scores) {
            let peek = peek?;
            member.seen = match peek.as_slice() {
                [tag, order, fields @ ..] if tag == "active" => Seen::Active {
                    record: reply::record(fields, &peek)?,
                    order: reply::number(order, &peek)?,
                },
                [tag] if tag == "expired" => Seen::Expired,
                [tag] if tag == "dead" || tag == "other" => Seen::Over,
                [tag] if tag == "none" => {
                    let added = Timestamp::from_unix_millis(score);
                    if now.saturating_since(added) < Self::SIGN_IN_GRACE {
                        Seen::Pending { order: score }
                    } else {
                        Seen::Over
                    }
                }
                _ => return Err(reply::corrupt(&peek)),
            };
        }
        let mut over: Vec<(&str, &str)> = members
            .iter()
            .filter(|member| matches!(member.seen, Seen::Over))
            .map(|member| (member.hex.as_str(), member.score.as_str()))
            .collect();
        over.extend(strays);
        self.prune(&index, &over).await?;
        members.retain(|member| !matches!(member.seen, Seen::Over));
        Ok(members)
    }

    /// Ends the members' sessions (only if they are still this owner's) with `reason`, drops
    /// them from the index, and answers how many were active.
    async fn end_members(
        &self,
        owner: &str,
        members: impl Iterator<Item = &Member>,
        reason: ExpiryReason,
        now: Timestamp,
        policy: &Policy,
    ) -> Result<u64, StoreError> {
        let members: Vec<&Member> = members.collect();
        let ends = members.iter().map(|member| {
            let extra = [Arg::Name(reason.as_str()), Arg::Text(owner.to_owned())];
            self.session_op("end", &member.key, now, policy, Touch::Passive, extra)
        });
        let mut ended = Vec::new();
        let mut result = Ok(());
        for (member, reply) in members.iter().zip(join_all(ends.collect()).await) {
            match reply.and_then(|reply| reply::end(&reply)) {
                Ok(true) => ended.push(member.key),
                Ok(false) => {}
                Err(error) => result = Err(error),
            }
        }
        // Every member asked, whatever its reply: a reply lost on the way may hide an end.
        members
            .iter()
            .for_each(|member| self.forget_near(&member.key));
        // Listed as due now, so the sweep announces these ends soon (`due.rs`).
        let listings = ended
            .iter()
            .map(|key| self.announce_soon(key, now, policy))
            .collect();
        join_all(listings).await;
        result?;
        // Every one of them is over now (ended, or found over), whatever the answer was.
        let over: Vec<(&str, &str)> = members
            .iter()
            .map(|member| (member.hex.as_str(), member.score.as_str()))
            .collect();
        self.prune(&self.owner_key(owner), &over).await?;
        Ok(ended.len() as u64)
    }

    /// Drops the members from the index, each only while it still has the score given.
    async fn prune(&self, index: &str, members: &[(&str, &str)]) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let mut args = Vec::with_capacity(2 + 2 * members.len());
        args.push(Arg::Name("index_prune"));
        args.push(Arg::Int(0));
        for (hex, score) in members {
            args.push(Arg::Text((*hex).to_owned()));
            args.push(Arg::Text((*score).to_owned()));
        }
        let reply = self.eval(index.to_owned(), args).await?;
        match reply.as_slice() {
            [tag, _] if tag == "pruned" => Ok(()),
            _ => Err(reply::corrupt(&reply)),
        }
    }
}

/// Runs `call` as a task of its own where there is a Tokio runtime, so that once started it
/// completes (each step within the store timeout) even if the caller goes away: a sign-in must
/// not stop between its session and its limit, nor "sign out everywhere" half-way.
async fn detached<T: Send + 'static>(
    call: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        // The task only fails if the call panicked.
        Ok(runtime) => runtime
            .spawn(call)
            .await
            .unwrap_or_else(|error| Err(StoreError::backend(error))),
        Err(_) => call.await,
    }
}

/// How long (ms) an owner's index must last for a session that lives until `until` at most:
/// to then, plus the grace.
fn lease(until: Timestamp, now: Timestamp) -> i64 {
    millis_arg(
        until
            .saturating_since(now)
            .saturating_add(RedisStore::SIGN_IN_GRACE),
    )
}
