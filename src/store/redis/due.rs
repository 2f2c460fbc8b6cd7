//! The due index of [`RedisStore`]: which sessions a sweep must look at, and from when, so
//! that every session end is announced once ([`SessionStore::claim_ends`]) without keyspace
//! notifications, which Redis drops across restarts and failovers.
//!
//! # The index
//!
//! [`DUE_SHARDS`] sorted sets, `<prefix>due:{0}` to `<prefix>due:{15}`: each a hash tag of its
//! own, so a slot of its own, and on a cluster they spread over the masters. A session is
//! listed in one of them, picked by its key ([`due_key`](RedisStore::due_key)). Members are
//! session keys (hex), scores the app-clock milliseconds from which the session may need a
//! sweep's look. No script touches both a shard and a session; the steps below are ordered so
//! that a crash between two leaves a member too many (which a sweep drops), never a session
//! unlisted.
//!
//! - **Listing**, before the session script: when a session begins (at its deadline), when it
//!   is ended, superseded or given new timeouts (at `now`). An earlier listing stays, as the
//!   sweep will look then anyway.
//! - **Refreshes write nothing here**, so a request stays one script call. A listing may thus
//!   come due before the session does: the sweep finds it active and lists it again for its
//!   deadline, as the memory store's timer wheel relists a record.
//!
//! # A sweep
//!
//! 1. **Take**: one script per shard returns the members due at `now` and moves them to the
//!    end of the sweep's lease. Sweeps on several instances thus take different members, and
//!    what a sweep that dies took comes due again when its lease ends.
//! 2. **Claim**: one script per member on the session's own key decides, in one step: active
//!    and not due, its deadline; past its deadline, retired as a check would retire it, then
//!    as below; a tombstone neither announced nor claimed (or whose claim ran out) is claimed
//!    (`n`: until when) and its end handed out; claimed by another sweep, when that claim runs
//!    out; announced, forgotten or unknown, over. Exactly once is decided here: one script
//!    on one key, so two sweeps see one order, and the second finds the first one's claim.
//! 3. **Settle**: one script per shard moves each member to when it is next due (the
//!    deadline, or the end of another's claim) or drops it when over, but only a member still
//!    at the score the take gave it: an end or a begin that listed it earlier since (a
//!    sign-out racing with the sweep) keeps its listing.
//!
//! An end handed out stays listed at the end of the lease. If its claimer dies before
//! acknowledging it, a later sweep takes it again then, and the claim, now run out, hands it
//! out again: at least once. A claim runs out by the `now` of the instance that looks, so
//! instances' clocks must differ by much less than the lease
//! ([`ANNOUNCE_LEASE`](crate::ANNOUNCE_LEASE), 30 s) for an end never to be handed out twice.
//!
//! Each sweep does at most `limit` ends' worth of takes per round (never taking an end it
//! could not hand out), rounds until it has `limit` ends or nothing is due, and stops starting
//! rounds after half the store timeout: a backlog of active sessions to relist is worked off
//! over the next sweeps rather than in one call the layer would time out.
//!
//! # Acknowledging
//!
//! One script per session marks its tombstone announced (`h`), then one per shard drops the
//! members. A crash between the two leaves a member that the next sweep finds announced and
//! drops.
//!
//! # Growth
//!
//! A member leaves the index when a sweep finds its session over or its end acknowledged. An
//! app that never sweeps (no end hook) would still list every session it begins, so every
//! listing first drops the shard's members due more than
//! [`SWEEP_GRACE`](RedisStore::SWEEP_GRACE) ago (or the tombstone retention, if longer),
//! which a running sweep never leaves there, and a shard expires that long after its last
//! listing or sweep. Such an app keeps about the sessions begun within that time listed:
//! fewer than the records it keeps anyway when the retention is longer.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::reply::{self, Claim};
use super::{join_all, millis_arg, time_arg, Arg, RedisStore};
use crate::store::{Policy, SessionEnd, SessionKey, Touch};
use crate::{StoreError, Timestamp};

/// How many sorted sets the due index is spread over: enough that no one key, nor one
/// master of a cluster, carries every listing.
pub(super) const DUE_SHARDS: usize = 16;

/// How many of a sweep's per-session scripts are sent at once. Redis runs one script at a
/// time, and requests on the same connection (and other clients) wait behind what is queued:
/// a few dozen keep Redis busy over the round trips while adding well under a millisecond
/// to a request that arrives behind them.
const IN_FLIGHT: usize = 32;

type Reply = Result<Vec<String>, StoreError>;

/// Runs the futures `IN_FLIGHT` at a time, in order, and answers their outputs in order.
async fn in_batches<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut outputs = Vec::with_capacity(futures.len());
    let mut futures = futures.into_iter();
    loop {
        let batch: Vec<F> = futures.by_ref().take(IN_FLIGHT).collect();
        if batch.is_empty() {
            return outputs;
        }
        outputs.extend(join_all(batch).await);
    }
}

impl RedisStore {
    /// The shard of the due index that lists the session.
    pub(super) fn due_shard(key: &SessionKey) -> usize {
        // A SHA-256: its bytes are already uniform.
        usize::from(key.as_bytes()[0]) % DUE_SHARDS
    }

    /// The Redis key of shard `shard` of the due index.
    pub(super) fn due_shard_key(&self, shard: usize) -> String {
        format!("{}due:{{{shard}}}", self.prefix)
    }

    /// How long past its due time a member waits for a sweep before a listing drops it.
    fn patience(policy: &Policy) -> Duration {
        Self::SWEEP_GRACE.max(policy.tombstone_retention())
    }

    /// Lists the session in its shard as due at `due`, unless it is listed earlier already.
    pub(super) fn list_due(
        &self,
        key: &SessionKey,
        due: Timestamp,
        now: Timestamp,
        policy: &Policy,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'static {
        let patience = Self::patience(policy);
        let args = vec![
            Arg::Name("due_add"),
            Arg::Int(time_arg(now)),
            Arg::Text(key.to_hex()),
            Arg::Int(time_arg(due)),
            Arg::Int((time_arg(now) - millis_arg(patience)).max(0)),
            Arg::Int(millis_arg(
                due.saturating_since(now).saturating_add(patience),
            )),
        ];
        let added = self.eval(self.due_shard_key(Self::due_shard(key)), args);
        async move {
            let added = added.await?;
            match added.as_slice() {
                [tag] if tag == "added" => Ok(()),
                _ => Err(reply::corrupt(&added)),
            }
        }
    }

    /// After a session ended (or its deadline moved): lists it as due now, so the sweep
    /// announces it within an interval instead of at its old deadline. Its begin listed it
    /// already, so a failure here only delays the announcement: it is logged, not answered.
    pub(super) async fn announce_soon(&self, key: &SessionKey, now: Timestamp, policy: &Policy) {
        if let Err(error) = self.list_due(key, now, now, policy).await {
            self.log.failed("list_due", &error);
        }
    }

    /// `claim_ends`: rounds of take, claim and settle over the shards, starting each sweep
    /// at another shard, until `limit` ends are claimed, nothing more is due, or half the
    /// store timeout has gone (the next sweep goes on). A failure on one shard or session
    /// leaves what it touched to come due again after the lease; the ends claimed elsewhere
    /// are still handed out.
    pub(super) async fn claim(
        &self,
        now: Timestamp,
        policy: Policy,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<SessionEnd>, StoreError> {
        let mut ends = Vec::new();
        let taken = time_arg(now.saturating_add(lease));
        let patience = Self::patience(&policy);
        let keep = millis_arg(lease.saturating_add(patience));
        let first = self.sweeps.fetch_add(1, Ordering::Relaxed);
        let mut open: Vec<usize> = (0..DUE_SHARDS).map(|i| (first + i) % DUE_SHARDS).collect();
        let started = Instant::now();
        let mut failure = None;
        let mut rounds = 0;
        while ends.len() < limit && !open.is_empty() {
            if rounds > 0 && started.elapsed() >= self.timeout / 2 {
                break;
            }
            rounds += 1;
            // Never more taken than can be handed out: an end taken beyond the limit would
            // wait a lease for nothing.
            let remaining = limit - ends.len();
            let quota = (remaining / open.len()).max(1);
            let shards: Vec<usize> = open.iter().copied().take(remaining).collect();
            let takes = shards
                .iter()
                .map(|&shard| {
                    let args = vec![
                        Arg::Name("due_take"),
                        Arg::Int(time_arg(now)),
                        Arg::Int(taken),
                        Arg::Int(i64::try_from(quota).unwrap_or(i64::MAX)),
                        Arg::Int(keep),
                    ];
                    self.eval(self.due_shard_key(shard), args)
                })
                .collect();
            let mut settles: BTreeMap<usize, Vec<(String, Option<i64>)>> = BTreeMap::new();
            let mut visits = Vec::new();
            for (&shard, reply) in shards.iter().zip(join_all(takes).await) {
                match reply {
                    Ok(members) => {
                        if members.len() < quota {
                            open.retain(|&open| open != shard);
                        }
                        for hex in members {
                            match SessionKey::from_hex(&hex) {
                                Some(key) => visits.push((shard, key, hex)),
                                // Nothing the store writes: it lists no session.
                                None => settles.entry(shard).or_default().push((hex, None)),
                            }
                        }
                    }
                    Err(error) => {
                        open.retain(|&open| open != shard);
                        failure.get_or_insert(error);
                    }
                }
            }
            // The shards this round did not reach go first in the next.
            open.sort_by_key(|shard| shards.contains(shard));

            let claims = visits
                .iter()
                .map(|(_, key, _)| {
                    let extra = [Arg::Int(taken)];
                    self.session_op("claim", key, now, &policy, Touch::Passive, extra)
                })
                .collect();
            for ((shard, key, hex), reply) in visits.into_iter().zip(in_batches(claims).await) {
                let next = match reply.and_then(|reply| reply::claim(&reply)) {
                    Ok(Claim::End { reason, at, owner }) => {
                        // Stays taken until the lease ends: acknowledged by then, or claimed
                        // again.
                        ends.push(SessionEnd {
                            key,
                            owner,
                            reason,
                            at,
                        });
                        continue;
                    }
                    Ok(Claim::Later(at) | Claim::Claimed(at)) => {
                        Some(i64::try_from(at).unwrap_or(i64::MAX))
                    }
                    Ok(Claim::Over) => None,
                    Err(StoreError::CorruptRecord(detail)) => {
                        tracing::warn!(session = %key, detail, "session record not announced: it is corrupt");
                        None
                    }
                    Err(error) => {
                        failure.get_or_insert(error);
                        continue;
                    }
                };
                settles.entry(shard).or_default().push((hex, next));
            }

            let settled = settles
                .into_iter()
                .map(|(shard, members)| {
                    let latest = members.iter().filter_map(|(_, at)| *at).max().unwrap_or(0);
                    let ttl = (latest - time_arg(now)).max(0) + millis_arg(patience);
                    let mut args = Vec::with_capacity(4 + 2 * members.len());
                    args.push(Arg::Name("due_settle"));
                    args.push(Arg::Int(time_arg(now)));
                    args.push(Arg::Int(taken));
                    args.push(Arg::Int(ttl.max(keep)));
                    for (hex, at) in members {
                        args.push(Arg::Text(hex));
                        args.push(at.map_or(Arg::Name("-"), Arg::Int));
                    }
                    self.eval(self.due_shard_key(shard), args)
                })
                .collect();
            for reply in join_all(settled).await {
                if let Err(error) = reply.and_then(|reply| match reply.as_slice() {
                    [tag, _] if tag == "settled" => Ok(()),
                    _ => Err(reply::corrupt(&reply)),
                }) {
                    failure.get_or_insert(error);
                }
            }
        }
        match failure {
            Some(error) if ends.is_empty() => Err(error),
            Some(error) => {
                self.log.failed("claim_ends", &error);
                Ok(ends)
            }
            None => Ok(ends),
        }
    }

    /// `ack_ends`: marks each tombstone announced, then drops the members of those marked.
    pub(super) async fn acknowledge(
        &self,
        keys: Vec<SessionKey>,
        now: Timestamp,
        policy: Policy,
    ) -> Result<(), StoreError> {
        let acks = keys
            .iter()
            .map(|key| self.session_op("ack", key, now, &policy, Touch::Passive, []))
            .collect();
        let mut drops: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        let mut failure = None;
        for (key, reply) in keys.iter().zip(in_batches(acks).await) {
            match reply.and_then(|reply| reply::ack(&reply)) {
                Ok(true) => drops
                    .entry(Self::due_shard(key))
                    .or_default()
                    .push(key.to_hex()),
                // Not an ended session: left alone, listing included.
                Ok(false) => {}
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        let dropped: Vec<_> = drops
            .into_iter()
            .map(|(shard, members)| {
                let mut args = vec![Arg::Name("due_drop"), Arg::Int(time_arg(now))];
                args.extend(members.into_iter().map(Arg::Text));
                self.eval(self.due_shard_key(shard), args)
            })
            .collect();
        for reply in join_all(dropped).await {
            let reply: Reply = reply;
            if let Err(error) = reply.and_then(|reply| match reply.as_slice() {
                [tag] if tag == "dropped" => Ok(()),
                _ => Err(reply::corrupt(&reply)),
            }) {
                failure.get_or_insert(error);
            }
        }
        failure.map_or(Ok(()), Err)
    }
}
