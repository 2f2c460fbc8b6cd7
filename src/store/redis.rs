//! [`RedisStore`]: sessions in Redis or Redis Cluster, shared by every app instance that
//! points at it.
//!
//! # Keys and slots
//!
//! One session is one key (`<prefix><hex SHA-256 of the id>`), so on Redis Cluster one
//! session is one slot, and every call is one script on that key's master. Keys carry no hash
//! tag, so sessions spread over every slot. Work that spans sessions (the per-principal index,
//! the announcement sweep) must keep to that rule: a script touches only keys of one slot, so such
//! work is a series of per-key scripts (the session's key, then the index's key, each atomic
//! on its own and ordered so that a crash between them leaves an index that lists too much,
//! never too little; readers prune it), never one multi-key script across slots, which Redis
//! Cluster refuses with `CROSSSLOT`. A key that must live beside a session can share its slot
//! with a hash tag of the session's hash (`<prefix>{<hash>}...`) only under a new key format,
//! which would forget every session of the current one.
//!
//! The script and the record are in `script.rs`, the reading of its replies in `reply.rs`,
//! the owner index (`<prefix>owner:<hex SHA-256 of the principal>`, in a slot of its own)
//! with the order of its steps in `owner.rs`, and the due index that the announcement sweep
//! reads (`<prefix>due:{0}` to `{15}`, a slot each) with the order of its steps in `due.rs`.

mod due;
mod owner;
mod push;
#[cfg(test)]
pub(crate) use push::RedisChannel;
mod reply;
mod script;

use std::fmt;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, FromRedisValue, IntoConnectionInfo, RedisError};

use self::script::{LUA, SCRIPT};
use super::near::NearCache;
use super::{
    Begin, Check, ExpiryReason, NewSession, OwnedSession, Policy, SessionEnd, SessionKey,
    SessionRecord, SessionStore, SessionTimeouts, StoreFuture, Touch,
};
use crate::error_log::StoreLog;
use crate::{StoreError, Timestamp};

/// Every number handed to the script is capped here: Lua numbers are doubles, exact only up
/// to 2^53, and a time plus a duration (each at most 2^50 ms, about 35 000 years) stays below.
const MAX_MILLIS: u64 = 1 << 50;

/// Keeps sessions in Redis or Redis Cluster, so every app instance pointing at it sees the
/// same sessions.
///
/// What it guarantees:
///
/// - **One atomic round trip per request.** [`check`](SessionStore::check) runs one Lua
///   script (loaded once, then called by hash) that reads the record, judges it and writes
///   the refresh or the tombstone; [`begin`](SessionStore::begin) and
///   [`end`](SessionStore::end) run one such script on the session, and one more on the due
///   index (below). A session that expired on one instance is never brought back by a
///   concurrent request on another. A session's own timeouts live in its record and are
///   judged by the same script.
/// - **Every end announced once, without keyspace notifications** (which Redis loses across
///   restarts and failovers). A begin first lists the session in the due index, sorted sets in
///   slots of their own ([`due_key`](RedisStore::due_key)), at its deadline, and an end lists
///   it again as due now; refreshes write nothing there.
///   [`claim_ends`](SessionStore::claim_ends) takes what is due and claims each end with a
///   script on the session's own key, which retires a session past its deadline as a check
///   would and keeps the claim in the record until the lease runs out: two instances
///   sweeping at once never both get an end, and an end whose claimer died comes due again
///   after the lease. A session still active is listed again for its deadline. Listings
///   nobody sweeps are dropped after a while (see [`SWEEP_GRACE`](RedisStore::SWEEP_GRACE)),
///   so an app without an end hook keeps few.
/// - **Owners across slots.** A session begun with an owner is listed in that owner's index,
///   a sorted set in a slot of its own ([`owner_key`](RedisStore::owner_key)). Sign-in,
///   listing and ending an owner's sessions are a few per-key scripts, in an order that leaves
///   the index listing too much, never too little (see
///   [`SIGN_IN_GRACE`](RedisStore::SIGN_IN_GRACE)), and settles concurrent sign-ins on several
///   instances the same way. Listing drops what is over from the index, and an index Redis no
///   longer needs expires by itself (see [`OWNER_INDEX_LEASE`](RedisStore::OWNER_INDEX_LEASE)).
/// - **App time.** Expiry is judged by the `now` the layer passes in (its
///   [`Clock`](crate::Clock)), never by Redis's clock. Each write sets a *relative* TTL: an
///   active record's ends at its deadline plus the tombstone retention, a tombstone's when its
///   retention ends. Redis thus removes what expired by itself, and
///   [`purge`](SessionStore::purge) has nothing to do: it returns `Ok(0)`.
/// - **No raw ids.** A session lives under one key, the prefix (default
///   [`DEFAULT_PREFIX`](RedisStore::DEFAULT_PREFIX)) plus the hex SHA-256 of its id
///   ([`SessionKey::to_hex`]), holding a hash of times (or of a reason and a time).
/// - **One store, any topology.** [`connect`](RedisStore::connect) takes one Redis (through a
///   [`ConnectionManager`]: multiplexed, reconnecting), [`connect_cluster`](RedisStore::connect_cluster)
///   a Redis Cluster (through redis-rs's async cluster client: slot routing, `MOVED`/`ASK`,
///   a new slot map after a failover), and [`open`](RedisStore::open) either, from a URL
///   (`redis://`, `rediss://`, or `redis-cluster://host:port[,host:port…]`). Every
///   operation touches one key, so on a cluster each call runs on the master of that
///   session's slot, and sessions spread over every master.
/// - **Failures are answered, not hidden.** A failed or timed-out call is a [`StoreError`],
///   which the layer answers with 503 or passes on, per its fail-closed or fail-open setting.
///   No call waits longer than the store timeout ([`DEFAULT_TIMEOUT`](RedisStore::DEFAULT_TIMEOUT)
///   unless set with [`with_timeout`](RedisStore::with_timeout)). The store logs its failures
///   with `tracing` once per burst, with a count, and once more when Redis answers again.
///
/// Clones share the connection. Like redis-rs itself, the store runs on Tokio and needs its
/// time driver (`#[tokio::main]` enables it).
///
/// ```no_run
/// use std::time::Duration;
/// use tower_session_timeout::{RedisStore, SessionTimeoutLayer};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/0")
///     .await?
///     .with_prefix("myapp:session:");
/// // Or, on Redis Cluster, from any of its nodes:
/// let clustered = RedisStore::connect_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]).await?;
/// // Or from one URL, whichever the topology:
/// let from_env = RedisStore::open("redis-cluster://10.0.0.1:7000,10.0.0.2:7000").await?;
/// let layer = SessionTimeoutLayer::builder()
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .store(store)
///     .build()?;
/// # let _ = (layer, clustered, from_env);
/// # Ok(())
/// # }
/// ```
///
/// # Redis Cluster and failover
///
/// While a master is down, calls for its slots fail (503 with the default fail-closed
/// setting) until the cluster promotes one of its replicas, after `cluster-node-timeout` and
/// an election; the cluster client then finds the new master by itself (a `MOVED` answer or a
/// failed connection makes it read the slot map again), and those sessions answer 200 again
/// without a restart of the app. Sessions on the other masters keep answering throughout only
/// when the cluster runs with `cluster-require-full-coverage no`: by default Redis refuses
/// every slot while one has no master.
///
/// Replication is asynchronous: a write a master acknowledged just before it died may be
/// missing on the replica that takes over. For a refresh that means a deadline earlier by the
/// time lost; a retirement the replica lacks is found again by the next check (expiry is
/// judged from the times, not from the tombstone), so the expiry hook may hear it twice; a
/// sign-in in that window is unknown (440) on the next request; and a sign-out in that window
/// can be lost, so that session is active again until its idle deadline. For announcements, a
/// lost claim lets another instance announce that end again (at least once still holds), and
/// a lost listing of a session begun in that window leaves its end unannounced unless it is
/// ended or listed again.
///
/// # Upgrading
///
/// Records of sessions begun by earlier versions are read as sessions with the layer's
/// timeouts and no owner. Earlier versions judge a session with timeouts of its own by the
/// layer's, and answer a superseded or forgotten owned session with a store error (503 by
/// default), so finish a rolling upgrade before the app names owners, gives sessions timeouts
/// of their own or sets a limit. Earlier versions list nothing in the due index: of the
/// sessions they began, only those that this version ends are announced (an expiry a request
/// finds still reaches [`on_expiry`](crate::SessionTimeoutBuilder::on_expiry)); every session
/// begun by this version is.
///
/// # Why not Redis Sentinel
///
/// redis-rs's Sentinel support finds the current master when a connection is made
/// (`SentinelClient`), but offers no connection that follows a failover: a
/// [`ConnectionManager`] over the client it returns reconnects to the old master's address,
/// and `AsyncLockedSentinelClient` makes a new connection (and a Sentinel query) per call.
/// A store on it would stay on a demoted master (answering `READONLY`) or pay a connection per
/// request, so there is none; run Redis Cluster (a single shard with replicas will do) for
/// failover.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: Arc<str>,
    timeout: Duration,
    log: Arc<StoreLog>,
    /// Sweeps begun, so each starts at another shard of the due index.
    sweeps: Arc<AtomicUsize>,
    /// Where the near cache's listener subscribes: the client or the cluster's seeds the
    /// store was opened with.
    subscriber: Option<push::Subscriber>,
    /// What this instance remembers of active sessions, if asked to
    /// ([`with_near_cache`](RedisStore::with_near_cache)).
    near: Option<Arc<NearCache>>,
}

/// The connection, whichever the topology. Both kinds are cheap to clone and multiplexed.
#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Connection {
    async fn query<T: FromRedisValue>(&mut self, command: &::redis::Cmd) -> Result<T, RedisError> {
        match self {
            Connection::Single(connection) => command.query_async(connection).await,
            Connection::Cluster(connection) => command.query_async(connection).await,
        }
    }

    async fn load_script(&mut self) -> Result<(), RedisError> {
        match self {
            Connection::Single(connection) => SCRIPT.load_async(connection).await,
            Connection::Cluster(connection) => SCRIPT.load_async(connection).await,
        }
        .map(drop)
    }
}

impl RedisStore {
    /// The key prefix when none is set.
    pub const DEFAULT_PREFIX: &'static str = "tst:session:";

    /// How long one store call may take when no other limit is set, reconnecting included.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// How long an owner's index is kept beyond the idle deadline of a session of its that has
    /// no absolute timeout (a session with one keeps it until that deadline). A request that
    /// refreshes such a session once less than half of it is left lengthens it again, in the
    /// background (two more script calls, about once per half lease of activity), so an owner
    /// who never comes back leaves an index that Redis expires by itself within about this
    /// long after their last session's idle deadline.
    pub const OWNER_INDEX_LEASE: Duration = Duration::from_secs(60 * 60);

    /// How long an owner's index keeps a session it lists whose key is missing, taking it for a
    /// sign-in under way (the index is written before the session). Past it, by the `now` of
    /// the call that reads the index, the entry is dropped as a sign-in that failed or crashed
    /// half-way.
    ///
    /// Such an entry is never listed as active, but a sign-in under
    /// [`OnLimit::Refuse`](crate::OnLimit::Refuse) counts it, so a crash half-way through a
    /// sign-in can refuse that owner's next sign-ins for this long. It assumes that a sign-in's
    /// two steps run within it of each other, which the store timeout (a few seconds) makes
    /// sure of, and that app instances' clocks differ by much less. Keys of owned sessions
    /// outlive their retention by as much, so that a missing key always means a sign-in under
    /// way or long over.
    pub const SIGN_IN_GRACE: Duration = Duration::from_secs(60);

    /// How long past its due time a session listed for the announcement sweep waits for one,
    /// at least (the tombstone retention, if longer). A running sweep looks at every listing
    /// within a [sweep interval](crate::SessionTimeoutBuilder::sweep_interval) of its time;
    /// one nobody looked at for this long is dropped by the next session begun on its shard,
    /// and a shard nobody lists in nor sweeps for this long expires. That keeps the index
    /// small in an app that never announces ends (no
    /// [`on_session_end`](crate::SessionTimeoutBuilder::on_session_end) hook), at one cost:
    /// when every instance stops sweeping for longer than this, the ends of sessions due
    /// that long before may never be announced.
    pub const SWEEP_GRACE: Duration = Duration::from_secs(60 * 60);

    /// Connects to the store a URL names: `redis://host:port/db` (or `rediss://`, or any URL
    /// [`connect`](RedisStore::connect) takes) for one Redis, and
    /// `redis-cluster://host:port[,host:port…]` (or `rediss-cluster://`) for a Redis Cluster
    /// known by those seed nodes. User and password, given once before the first node
    /// (`redis-cluster://user:password@a:7000,b:7000`), apply to every node.
    ///
    /// Fails when the URL is invalid or the store cannot be reached now.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        match cluster_seeds(url) {
            Some(seeds) => Self::connect_cluster(seeds?).await,
            None => Self::connect(url).await,
        }
    }

    /// Connects to the Redis at `info` (a URL such as `redis://host:port/db`, or any
    /// [`IntoConnectionInfo`]) with [`connection_config`](RedisStore::connection_config).
    ///
    /// Fails when the URL is invalid or the server cannot be reached now; once connected,
    /// the store reconnects by itself.
    pub async fn connect(info: impl IntoConnectionInfo) -> Result<Self, StoreError> {
        let client = Client::open(info).map_err(backend)?;
        Self::from_client(client).await
    }

    /// Connects with an existing [`Client`], with
    /// [`connection_config`](RedisStore::connection_config).
    pub async fn from_client(client: Client) -> Result<Self, StoreError> {
        let connection =
            ConnectionManager::new_with_config(client.clone(), Self::connection_config())
                .await
                .map_err(backend)?;
        let mut store = Self::loaded(Connection::Single(connection)).await?;
        store.subscriber = Some(push::Subscriber::Single(client));
        Ok(store)
    }

    /// Uses an existing [`ConnectionManager`], with whatever configuration it was built with.
    /// The script is loaded on first use.
    pub fn from_connection_manager(connection: ConnectionManager) -> Self {
        Self::with_connection(Connection::Single(connection))
    }

    /// Connects to the Redis Cluster that `nodes` (URLs such as `redis://host:port`, or any
    /// [`IntoConnectionInfo`]) belong to, with
    /// [`cluster_client_builder`](RedisStore::cluster_client_builder)'s settings, and loads the
    /// script on every master. A few seeds are enough: the client learns the rest of the
    /// cluster from them.
    ///
    /// Fails when no seed answers, or a master cannot load the script now; once connected,
    /// the store follows the cluster's slot map, failovers included.
    pub async fn connect_cluster<T: IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
    ) -> Result<Self, StoreError> {
        let seeds = nodes
            .into_iter()
            .map(IntoConnectionInfo::into_connection_info)
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        let client = Self::cluster_client_builder(seeds.iter().cloned())
            .build()
            .map_err(backend)?;
        let mut store = Self::from_cluster_client(client).await?;
        store.subscriber = Some(push::Subscriber::Cluster(seeds.into()));
        Ok(store)
    }

    /// Connects with an existing [`ClusterClient`], with whatever settings it was built with,
    /// and loads the script on every master.
    pub async fn from_cluster_client(client: ClusterClient) -> Result<Self, StoreError> {
        let connection = client.get_async_connection().await.map_err(backend)?;
        Self::loaded(Connection::Cluster(connection)).await
    }

    /// Uses an existing cluster connection. The script is loaded on first use, on each master.
    pub fn from_cluster_connection(connection: ClusterConnection) -> Self {
        Self::with_connection(Connection::Cluster(connection))
    }

    /// The cluster client settings [`connect_cluster`](RedisStore::connect_cluster) uses, for
    /// `nodes`: one-second connection and response timeouts, and few, short retries (a
    /// `MOVED` after a failover takes one), so that while a master is down requests for its
    /// slots are answered quickly instead of queueing. Add to it (TLS, credentials) and pass
    /// the client to [`from_cluster_client`](RedisStore::from_cluster_client); a store made
    /// that way keeps no near cache, as it has no seeds to subscribe with (put credentials in
    /// the seed URLs of [`connect_cluster`](RedisStore::connect_cluster) instead).
    pub fn cluster_client_builder<T: IntoConnectionInfo>(
        nodes: impl IntoIterator<Item = T>,
    ) -> ClusterClientBuilder {
        ClusterClientBuilder::new(nodes)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(1))
            .retries(3)
            .min_retry_wait(50)
            .max_retry_wait(500)
    }

    /// The connection settings [`connect`](RedisStore::connect) and
    /// [`from_client`](RedisStore::from_client) use: one-second connection and response
    /// timeouts, and few, short reconnection retries, so that while Redis is down requests
    /// are answered (503, or passed on when fail-open) quickly instead of queueing.
    pub fn connection_config() -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500))
    }

    fn with_connection(connection: Connection) -> Self {
        RedisStore {
            connection,
            prefix: Arc::from(Self::DEFAULT_PREFIX),
            timeout: Self::DEFAULT_TIMEOUT,
            log: Arc::new(StoreLog::new("redis")),
            sweeps: Arc::default(),
            subscriber: None,
            near: None,
        }
    }

    /// The store on `connection`, with the script loaded (on every master of a cluster), so
    /// that a node that cannot run it is found at start-up rather than on the first request.
    async fn loaded(mut connection: Connection) -> Result<Self, StoreError> {
        let load = connection.load_script();
        match tokio::time::timeout(Self::DEFAULT_TIMEOUT * 5, load).await {
            Ok(Ok(())) => Ok(Self::with_connection(connection)),
            Ok(Err(error)) => Err(backend(error)),
            Err(_) => Err(StoreError::Timeout(Self::DEFAULT_TIMEOUT * 5)),
        }
    }

    /// Keeps sessions under keys starting with `prefix` instead of [`DEFAULT_PREFIX`](RedisStore::DEFAULT_PREFIX), e.g. to
    /// share one Redis between apps. On Redis Cluster a prefix holding a hash tag, such as
    /// `{sessions}:`, would put every session in one slot, on one master; leave braces out
    /// so they spread.
    ///
    /// It drops a near cache set before: its channel is named after the prefix. Call
    /// [`with_near_cache`](RedisStore::with_near_cache) after this.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self.near = None;
        self
    }

    /// Answers checks of sessions this instance found active from its memory, without a
    /// round trip, while Redis would answer the same: before the session's deadline, and for a
    /// refreshing request only within the
    /// [touch interval](crate::SessionTimeoutBuilder::touch_interval) (a refresh that must
    /// write goes to Redis). Without a touch interval every refresh writes, so only passive
    /// requests are spared the trip. Off unless called.
    ///
    /// Every end, sign-out everywhere, superseded or withdrawn session and change of timeouts
    /// is published on the channel `<prefix>revoked` by the script that makes the change, in
    /// the same atomic step, and every instance with a near cache forgets that session: on
    /// loopback within a millisecond (BENCHMARKS.md, section 5); the instance that made the
    /// change forgets it at once. On Redis Cluster the publish, made on the key's master,
    /// reaches every node over the cluster bus; the listener subscribes on one node, which it
    /// finds with `CLUSTER NODES`, and moves to another when that node is lost. While its
    /// subscription is down, or does not answer a ping within two seconds, an instance answers
    /// nothing from memory and drops what it had. No entry is used longer than `max_age`
    /// after Redis was asked, which bounds what no push can reach:
    ///
    /// - on a Cluster, a publish that does not cross the cluster bus to the node subscribed
    ///   to (a partition that leaves the subscription's own connection up);
    /// - a publish the user's ACL refuses: the change stands, and a warning is logged (once
    ///   per 10 s, with how many were left out since the last one);
    /// - a refresh made on another instance: until then the session's deadline as shown here
    ///   (status route, [`SessionInfo`](crate::SessionInfo)) may be earlier than Redis's;
    /// - an owned session whose owner's index could not be kept longer, which Redis ends at
    ///   the index's lease.
    ///
    /// An expiry decided by another instance is not pushed: each instance foresees it from the
    /// deadline, so instances whose clocks differ see it as far apart as their clocks are
    /// (the crate assumes clocks that agree, see
    /// [`SIGN_IN_GRACE`](RedisStore::SIGN_IN_GRACE)).
    ///
    /// Every instance sharing the store publishes, with or without a near cache of its own, so
    /// enable it only once every instance runs a version that does. With Redis ACLs the user
    /// needs `PUBLISH` and `SUBSCRIBE` on the channel (`&<prefix>revoked`), and on a Cluster
    /// `CLUSTER NODES`.
    ///
    /// The cache holds about `capacity` sessions (a few dozen bytes each; a full sixteenth of it
    /// is emptied rather than grown). It needs connections of its own, made with the settings
    /// the store was opened with, so the store must have been opened from a URL, a
    /// [`Client`] or cluster seeds ([`open`](RedisStore::open),
    /// [`connect`](RedisStore::connect), [`from_client`](RedisStore::from_client),
    /// [`connect_cluster`](RedisStore::connect_cluster)), not from a [`ConnectionManager`] or a
    /// [`ClusterClient`]. On a Cluster the nodes `CLUSTER NODES` lists are reached at the
    /// addresses it gives, then the seeds, so with TLS that checks host names only the seeds
    /// can be subscribed to. Waits until it is subscribed, at most three times the store's
    /// timeout.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tower_session_timeout::store::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_session_timeout::StoreError> {
    /// let store = RedisStore::open("redis://127.0.0.1:6379")
    ///     .await?
    ///     .with_near_cache(Duration::from_secs(1), 100_000)
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn with_near_cache(
        mut self,
        max_age: Duration,
        capacity: usize,
    ) -> Result<Self, StoreError> {
        let Some(subscriber) = self.subscriber.clone() else {
            return Err(StoreError::Unsupported(
                "keep a near cache: open the store with connect, from_client or connect_cluster",
            ));
        };
        let cache = Arc::new(NearCache::new(max_age, capacity));
        self.listen(subscriber, &cache).await?;
        self.near = Some(cache);
        Ok(self)
    }

    /// Bounds each store call, reconnection included, by `timeout` instead of
    /// [`DEFAULT_TIMEOUT`](RedisStore::DEFAULT_TIMEOUT); a call that takes longer fails with [`StoreError::Timeout`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The key prefix in use.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the store talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.connection, Connection::Cluster(_))
    }

    /// The Redis key a session is kept under: the prefix plus the hex SHA-256 of its id.
    pub fn redis_key(&self, key: &SessionKey) -> String {
        let mut redis_key = String::with_capacity(self.prefix.len() + 64);
        redis_key.push_str(&self.prefix);
        redis_key.push_str(&key.to_hex());
        redis_key
    }

    /// The Redis key of the owner's index: the prefix, `owner:`, and the hex SHA-256 of the
    /// principal. A sorted set of the owner's session keys (hex), scored by sign-in time;
    /// it may list sessions that are over, which readers drop, but never misses an active one.
    pub fn owner_key(&self, owner: &str) -> String {
        let mut redis_key = String::with_capacity(self.prefix.len() + 70);
        redis_key.push_str(&self.prefix);
        redis_key.push_str("owner:");
        redis_key.push_str(&SessionKey::from_id(owner).to_hex());
        redis_key
    }

    /// The Redis key of the shard of the due index that lists the session for the
    /// announcement sweep: the prefix, `due:` and a hash tag of the shard's number,
    /// `{0}` to `{15}`. A sorted set of session keys (hex), scored by when (app-clock ms) a
    /// sweep should look at them; it may list a session early or one that is over, which the
    /// sweep settles, but never misses one whose end is yet to be announced.
    pub fn due_key(&self, key: &SessionKey) -> String {
        self.due_shard_key(Self::due_shard(key))
    }

    /// Runs the script on `redis_key` with `args` and returns its reply, bounded by the
    /// timeout. By hash first; by its text where the node lacks it.
    fn eval(
        &self,
        redis_key: String,
        args: Vec<Arg>,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send + 'static {
        let mut connection = self.connection.clone();
        let timeout = self.timeout;
        async move {
            let command = |first: &str, script: &str| {
                let mut command = ::redis::cmd(first);
                command.arg(script).arg(1).arg(&redis_key);
                for arg in &args {
                    match arg {
                        Arg::Int(number) => command.arg(number),
                        Arg::Text(text) => command.arg(text),
                        Arg::Name(name) => command.arg(name),
                    };
                }
                command
            };
            let call = async {
                match connection
                    .query(&command("EVALSHA", SCRIPT.get_hash()))
                    .await
                {
                    Err(error) if error.code() == Some("NOSCRIPT") => {
                        connection.query(&command("EVAL", LUA)).await
                    }
                    reply => reply,
                }
            };
            match tokio::time::timeout(timeout, call).await {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(error)) => Err(backend(error)),
                Err(_) => Err(StoreError::Timeout(timeout)),
            }
        }
    }

    /// Runs the script's session operation `op` on `key`, with the policy's numbers and then
    /// `extra`, the operation's own arguments.
    fn session_op(
        &self,
        op: &'static str,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
        extra: impl IntoIterator<Item = Arg>,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send + 'static {
        // -1 stands for "none" in the script.
        let mut args = vec![
            Arg::Name(op),
            Arg::Int(time_arg(now)),
            Arg::Int(millis_arg(policy.idle_timeout())),
            Arg::Int(policy.absolute_timeout().map_or(-1, millis_arg)),
            Arg::Int(policy.touch_interval().map_or(-1, millis_arg)),
            Arg::Int(millis_arg(policy.tombstone_retention())),
            Arg::Int(i64::from(touch == Touch::Refresh)),
            Arg::Int(millis_arg(Self::SIGN_IN_GRACE)),
            Arg::Int(millis_arg(Self::OWNER_INDEX_LEASE)),
        ];
        args.extend(extra);
        let revokes = REVOKING_OPS.contains(&op);
        if revokes {
            args.push(Arg::Text(self.revoked_channel()));
        }
        let reply = self.eval(self.redis_key(key), args);
        let key = *key;
        let log = revokes.then(|| Arc::clone(&self.log));
        async move {
            let mut reply = reply.await?;
            if let Some(log) =
                log.filter(|_| reply.last().is_some_and(|last| last == "unpublished"))
            {
                reply.pop();
                log.unannounced(&key);
            }
            Ok(reply)
        }
    }

    /// Runs `op` and reads its reply with `parse`, logging the outcome.
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        reply: impl Future<Output = Result<Vec<String>, StoreError>> + Send + 'static,
        parse: fn(&[String]) -> Result<T, StoreError>,
    ) -> StoreFuture<T> {
        let log = self.log.clone();
        Box::pin(async move { log.record(op, reply.await.and_then(|reply| parse(&reply))) })
    }
}

/// The script's operations that change a session in a way no instance's near cache could
/// foretell: they publish the session on the revocation channel (`push.rs`).
const REVOKING_OPS: [&str; 3] = ["end", "withdraw", "set"];

/// One argument of a script call.
enum Arg {
    Int(i64),
    Text(String),
    Name(&'static str),
}

/// A session's own timeouts as the script takes them: idle and absolute milliseconds, -1 for
/// none (no own timeouts at all when idle is -1).
fn timeouts_args(timeouts: Option<SessionTimeouts>) -> [Arg; 2] {
    match timeouts {
        None => [Arg::Int(-1), Arg::Int(-1)],
        Some(timeouts) => [
            Arg::Int(millis_arg(timeouts.idle)),
            Arg::Int(timeouts.absolute.map_or(-1, millis_arg)),
        ],
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No addresses: they may carry credentials, and the connection does not keep them
        // redacted.
        let topology = if self.is_cluster() {
            "cluster"
        } else {
            "single"
        };
        f.debug_struct("RedisStore")
            .field("topology", &topology)
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl From<ConnectionManager> for RedisStore {
    fn from(connection: ConnectionManager) -> Self {
        Self::from_connection_manager(connection)
    }
}

impl From<ClusterConnection> for RedisStore {
    fn from(connection: ClusterConnection) -> Self {
        Self::from_cluster_connection(connection)
    }
}

/// The seed node URLs of a `redis-cluster://` or `rediss-cluster://` URL, or `None` for any
/// other URL. The user info before the first node and the query after the last apply to every
/// node.
fn cluster_seeds(url: &str) -> Option<Result<Vec<String>, StoreError>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis-cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss-cluster://") {
        ("rediss", rest)
    } else {
        return None;
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    // A trailing `/` or `/0` is allowed; a cluster has only database 0.
    let rest =
        match rest.split_once('/') {
            Some((rest, "" | "0")) => rest,
            Some(_) => return Some(Err(StoreError::backend(
                "a redis-cluster:// URL names no database (Redis Cluster has only database 0): \
                 give redis-cluster://host:port[,host:port...]",
            ))),
            None => rest,
        };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, rest),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| {
            let mut seed = format!("{scheme}://");
            if let Some(userinfo) = userinfo {
                seed.push_str(userinfo);
                seed.push('@');
            }
            seed.push_str(host);
            if let Some(query) = query {
                seed.push('?');
                seed.push_str(query);
            }
            seed
        })
        .collect();
    if seeds.is_empty() {
        return Some(Err(StoreError::backend(
            "a redis-cluster:// URL names no node: give redis-cluster://host:port[,host:port...]",
        )));
    }
    Some(Ok(seeds))
}

impl SessionStore for RedisStore {
    type CheckFuture = StoreFuture<Check>;
    type BeginFuture = StoreFuture<Begin>;
    type EndFuture = StoreFuture<bool>;
    type PurgeFuture = StoreFuture<u64>;

    fn check(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> Self::CheckFuture {
        let ticket = self.near.as_ref().map(|near| near.ticket());
        let reply = self.session_op("check", key, now, policy, touch, []);
        let (store, key, policy) = (self.clone(), *key, *policy);
        Box::pin(async move {
            let checked = reply.await.and_then(|reply| reply::check(&reply));
            if let (Some(near), Some(ticket)) = (&store.near, ticket) {
                match &checked {
                    // A session whose owner's index is due to be kept longer may end at that
                    // index's lease, which the record does not show: not remembered.
                    Ok((check, None)) => near.remember(&key, check, ticket),
                    _ => near.remove(&key),
                }
            }
            let (check, renewal) = store.log.record("check", checked)?;
            if let Some(renewal) = renewal {
                store.renew(key, now, policy, renewal).await;
            }
            Ok(check)
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

    /// Without an owner, one script call. With one, a few, in the order `owner.rs` explains:
    /// the owner's index first, then the session, then (with a limit) the owner's others.
    fn begin(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        new: NewSession<'_>,
    ) -> Self::BeginFuture {
        if let Some(owner) = new.owner {
            let begin = self.begin_owned(key, now, policy, owner, new.timeouts);
            let log = self.log.clone();
            return Box::pin(async move { log.record("begin", begin.await) });
        }
        let deadline = policy
            .deadline(&SessionRecord::new(now, now).with_timeouts(new.timeouts))
            .0;
        let listed = self.list_due(key, deadline, now, policy);
        let [idle, absolute] = timeouts_args(new.timeouts);
        let extra = [Arg::Name(""), idle, absolute, Arg::Int(0), Arg::Int(-1)];
        let began = self.session_op("begin", key, now, policy, Touch::Passive, extra);
        let reply = async move {
            listed.await?;
            began.await
        };
        self.call("begin", reply, |reply| {
            reply::begin(reply).map(reply::Began::answer)
        })
    }

    /// One script call; when it ends the session, a second lists it as due now for the
    /// announcement sweep.
    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        let extra = [Arg::Name(ExpiryReason::Ended.as_str()), Arg::Name("")];
        let reply = self.session_op("end", key, now, policy, Touch::Passive, extra);
        let (store, key, policy) = (self.clone(), *key, *policy);
        Box::pin(async move {
            let ended = reply.await.and_then(|reply| reply::end(&reply));
            // Whatever the reply says: a reply lost on the way may hide an end Redis made.
            store.forget_near(&key);
            let ended = store.log.record("end", ended)?;
            if ended {
                store.announce_soon(&key, now, &policy).await;
            }
            Ok(ended)
        })
    }

    /// Returns `Ok(0)` at once: every key carries a TTL that ends it at its deadline plus the
    /// retention, so Redis removes expired records by itself, at no cost to requests.
    fn purge(&self, _now: Timestamp) -> Self::PurgeFuture {
        Box::pin(std::future::ready(Ok(0)))
    }

    /// One script call; two more when the session has an owner and its new timeouts let it
    /// live longer than its owner's index is kept, which is then kept longer first. After a
    /// change, one more lists the session as due now for the announcement sweep, which then
    /// finds its new deadline.
    fn set_timeouts(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        timeouts: SessionTimeouts,
    ) -> StoreFuture<bool> {
        let change = self.change_timeouts(key, now, policy, timeouts);
        let (store, key, policy) = (self.clone(), *key, *policy);
        Box::pin(async move {
            let changed = change.await;
            // Whatever the reply says: a reply lost on the way may hide a change Redis made.
            store.forget_near(&key);
            let changed = store.log.record("set_timeouts", changed)?;
            if changed {
                store.announce_soon(&key, now, &policy).await;
            }
            Ok(changed)
        })
    }

    /// One read-only script call.
    fn owner_of(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Option<String>> {
        let reply = self.session_op("owner", key, now, policy, Touch::Passive, []);
        self.call("owner_of", reply, reply::owner)
    }

    /// Reads the owner's index, then each session it lists (one script call per session, at
    /// once), dropping from the index the sessions that are over.
    fn sessions_of(
        &self,
        owner: &str,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<Vec<OwnedSession>> {
        let list = self.active_of(owner, now, policy);
        let log = self.log.clone();
        Box::pin(async move { log.record("sessions_of", list.await) })
    }

    /// Lists as [`sessions_of`](SessionStore::sessions_of) does, then ends each session (one
    /// script call per session, at once, each checking that the session is this owner's).
    fn end_sessions_of(
        &self,
        owner: &str,
        keep: Option<&SessionKey>,
        now: Timestamp,
        policy: &Policy,
    ) -> StoreFuture<u64> {
        let end = self.end_all_of(owner, keep.copied(), now, policy);
        let log = self.log.clone();
        Box::pin(async move { log.record("end_sessions_of", end.await) })
    }

    /// Takes the sessions due from the due index, then claims each with a script on its own
    /// key, as `due.rs` explains: about three script calls per session looked at, most at
    /// once.
    fn claim_ends(
        &self,
        now: Timestamp,
        policy: &Policy,
        limit: usize,
        lease: Duration,
    ) -> StoreFuture<Vec<SessionEnd>> {
        let (store, policy) = (self.clone(), *policy);
        Box::pin(async move {
            let claimed = store.claim(now, policy, limit, lease).await;
            store.log.record("claim_ends", claimed)
        })
    }

    /// Marks each end announced with a script on its session's key, then drops them from the
    /// due index (one script per shard).
    fn ack_ends(&self, keys: &[SessionKey], now: Timestamp, policy: &Policy) -> StoreFuture<()> {
        let (store, keys, policy) = (self.clone(), keys.to_vec(), *policy);
        Box::pin(async move {
            let acknowledged = store.acknowledge(keys, now, policy).await;
            store.log.record("ack_ends", acknowledged)
        })
    }
}

/// Runs the futures at once and answers their outputs in order: per-key scripts go out
/// together, each to its own slot's master.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Runs two futures at once and answers both outputs.
async fn both<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut first, mut second) = (None, None);
    std::future::poll_fn(move |cx| {
        if first.is_none() {
            if let Poll::Ready(output) = a.as_mut().poll(cx) {
                first = Some(output);
            }
        }
        if second.is_none() {
            if let Poll::Ready(output) = b.as_mut().poll(cx) {
                second = Some(output);
            }
        }
        match (first.take(), second.take()) {
            (Some(first), Some(second)) => Poll::Ready((first, second)),
            (one, two) => {
                (first, second) = (one, two);
                Poll::Pending
            }
        }
    })
    .await
}

fn backend(error: RedisError) -> StoreError {
    StoreError::backend(error)
}

fn millis_arg(duration: Duration) -> i64 {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    // Cannot fail: MAX_MILLIS is far below i64::MAX.
    i64::try_from(millis.min(MAX_MILLIS)).unwrap_or(i64::MAX)
}

fn time_arg(time: Timestamp) -> i64 {
    millis_arg(Duration::from_millis(time.as_unix_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_give_seed_nodes() {
        let seeds = |url: &str| cluster_seeds(url).map(|seeds| seeds.map_err(|e| e.to_string()));
        assert_eq!(seeds("redis://127.0.0.1:6379/0"), None);
        assert_eq!(
            seeds("redis-cluster://127.0.0.1:7000,127.0.0.1:7001"),
            Some(Ok(vec![
                "redis://127.0.0.1:7000".to_owned(),
                "redis://127.0.0.1:7001".to_owned()
            ]))
        );
        assert_eq!(
            seeds("rediss-cluster://u:pw@a:7000, b:7001/?protocol=resp3"),
            Some(Ok(vec![
                "rediss://u:pw@a:7000?protocol=resp3".to_owned(),
                "rediss://u:pw@b:7001?protocol=resp3".to_owned()
            ]))
        );
        assert!(matches!(seeds("redis-cluster://a:7000/3"), Some(Err(_))));
        assert!(matches!(seeds("redis-cluster://"), Some(Err(_))));
    }

    #[test]
    fn numbers_stay_exact_in_lua() {
        assert_eq!(millis_arg(Duration::MAX), 1 << 50);
        assert_eq!(time_arg(Timestamp::from_unix_millis(u64::MAX)), 1 << 50);
        assert_eq!(millis_arg(Duration::from_secs(60)), 60_000);
    }
}
