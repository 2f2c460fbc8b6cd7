//! [`RedisStore`]: sessions in Redis or Redis Cluster, shared by every app instance that
//! points at it.
//!
//! # Keys and slots
//!
//! One session is one key (`<prefix><hex SHA-256 of the id>`), so on Redis Cluster one
//! session is one slot, and every call is one script on that key's master. Keys carry no hash
//! tag, so sessions spread over every slot. Work that spans sessions (a per-principal index,
//! an expiry sweep) must keep to that rule: a script touches only keys of one slot, so such
//! work is a series of per-key scripts (the session's key, then the index's key, each atomic
//! on its own and ordered so that a crash between them leaves an index that lists too much,
//! never too little; readers prune it), never one multi-key script across slots, which Redis
//! Cluster refuses with `CROSSSLOT`. A key that must live beside a session can share its slot
//! with a hash tag of the session's hash (`<prefix>{<hash>}...`) only under a new key format,
//! which would forget every session of the current one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::{ClusterClient, ClusterClientBuilder};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, FromRedisValue, IntoConnectionInfo, RedisError, Script};

use super::{
    Begin, Check, ExpiryReason, NewSession, Policy, SessionKey, SessionRecord, SessionStore, Touch,
};
use crate::error_log::StoreLog;
use crate::{StoreError, Timestamp};

/// Every number handed to the script is capped here: Lua numbers are doubles, exact only up
/// to 2^53, and a time plus a duration (each at most 2^50 ms, about 35 000 years) stays below.
const MAX_MILLIS: u64 = 1 << 50;

/// The one script behind `check`, `begin` and `end`.
///
/// Each call runs it once, so reading the record, judging it against `now` and writing the
/// refresh or the tombstone is one atomic step on the server: two instances racing on one
/// session see one order of events, and an expired session stays expired. It touches only
/// `KEYS[1]`, so on Redis Cluster it runs on the master of that key's slot.
///
/// Record (one hash per key): active `c` (created_at) and `l` (last_seen); tombstone `r`
/// (reason) and `u` (until). All times are unix milliseconds of the app's clock; Redis's own
/// clock only runs the key's TTL, which is relative and so acts as garbage collection
/// whatever the app's clock says.
const LUA: &str = r#"
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local idle = tonumber(ARGV[3])
local absolute = tonumber(ARGV[4])
local touch = tonumber(ARGV[5])
local retention = tonumber(ARGV[6])
local refresh = ARGV[7] == '1'

-- Whole numbers as digits: tostring would switch to exponents past 14 digits.
local function int(n)
  return string.format('%.0f', n)
end

-- The first deadline and its reason; absolute wins a tie, as activity cannot move it.
local function deadline(created, last)
  local idle_at = last + idle
  if absolute >= 0 then
    local absolute_at = created + absolute
    if absolute_at <= idle_at then
      return absolute_at, 'absolute'
    end
  end
  return idle_at, 'idle'
end

-- A tombstone lives until `ends` by its TTL; one already past it is not worth writing.
local function retire(reason, ends)
  redis.call('DEL', key)
  if ends > now then
    redis.call('HSET', key, 'r', reason, 'u', int(ends))
    redis.call('PEXPIRE', key, int(ends - now))
  end
end

local function keep_active(created, last)
  local at = deadline(created, last)
  redis.call('HSET', key, 'c', int(created), 'l', int(last))
  redis.call('PEXPIRE', key, int(at - now + retention))
end

local state, a, b
local kind = redis.call('TYPE', key)['ok']
if kind == 'hash' then
  local f = redis.call('HMGET', key, 'c', 'l', 'r', 'u')
  local c, l, r, u = tonumber(f[1]), tonumber(f[2]), f[3], tonumber(f[4])
  if c and l and not r then
    state, a, b = 'active', c, l
  elseif (r == 'idle' or r == 'absolute' or r == 'ended') and u and not f[1] then
    if u > now then
      state, a, b = 'tombstone', r, u
    else
      -- Past its retention by the app's clock: forgotten, as if never known.
      redis.call('DEL', key)
    end
  else
    return {'corrupt', 'unexpected fields in the session hash'}
  end
elseif kind ~= 'none' then
  return {'corrupt', 'a ' .. kind .. ' where a session hash was expected'}
end

if op == 'check' then
  if state == nil then
    return {'expired', 'unknown'}
  elseif state == 'tombstone' then
    return {'expired', a}
  end
  local at, reason = deadline(a, b)
  if now >= at + retention then
    -- Never asked about until its retention passed: forgotten, as a purge would have.
    redis.call('DEL', key)
    return {'expired', 'unknown'}
  elseif now >= at then
    retire(reason, at + retention)
    return {'retired', reason}
  end
  if refresh then
    local needs
    if touch >= 0 then
      needs = math.max(now - b, 0) >= touch
    else
      needs = now > b
    end
    if needs then
      b = math.max(b, now)
      keep_active(a, b)
    end
  end
  return {'active', int(a), int(b)}
elseif op == 'begin' then
  if state == 'tombstone' then
    return {'refused', a}
  elseif state == 'active' then
    local at, reason = deadline(a, b)
    if now < at then
      return {'already'}
    elseif now < at + retention then
      retire(reason, at + retention)
      return {'refused', reason}
    end
    -- Forgotten: begins anew below, as after a purge.
  end
  keep_active(now, now)
  return {'began'}
elseif op == 'end' then
  if state ~= 'active' then
    return {'kept'}
  end
  local at, reason = deadline(a, b)
  if now >= at then
    retire(reason, at + retention)
    return {'kept'}
  end
  retire('ended', now + retention)
  return {'ended'}
end
return redis.error_reply('unknown session operation')
"#;

/// Loaded on every master when the store connects (`SCRIPT LOAD`, which the cluster client
/// sends to every master) and then called by its SHA-1 (`EVALSHA`). A node that does not have
/// it (restarted, `SCRIPT FLUSH`, or a replica just promoted: Redis does not replicate its
/// script cache) answers `NOSCRIPT`, and the call is sent again as `EVAL` with the whole
/// script, which that node then keeps. `EVAL` goes to the key's node alone, so a missing
/// script never depends on another master being up.
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LUA));

type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// Keeps sessions in Redis or Redis Cluster, so every app instance pointing at it sees the
/// same sessions.
///
/// What it guarantees:
///
/// - **One atomic round trip per call.** [`check`](SessionStore::check),
///   [`begin`](SessionStore::begin) and [`end`](SessionStore::end) each run one Lua script
///   (loaded once, then called by hash) that reads the record, judges it and writes the
///   refresh or the tombstone. A session that expired on one instance is never brought back by
///   a concurrent request on another.
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
/// can be lost, so that session is active again until its idle deadline.
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
        let connection = ConnectionManager::new_with_config(client, Self::connection_config())
            .await
            .map_err(backend)?;
        Self::loaded(Connection::Single(connection)).await
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
        let client = Self::cluster_client_builder(nodes)
            .build()
            .map_err(backend)?;
        Self::from_cluster_client(client).await
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
    /// the client to [`from_cluster_client`](RedisStore::from_cluster_client).
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
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Arc::from(prefix.into());
        self
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

    /// Runs the script for `op` on `key` and returns its reply, bounded by the timeout.
    fn run(
        &self,
        op: &'static str,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send + 'static {
        let mut connection = self.connection.clone();
        let redis_key = self.redis_key(key);
        let timeout = self.timeout;
        // -1 stands for "none" in the script.
        let absolute = policy.absolute_timeout().map_or(-1, millis_arg);
        let touch_interval = policy.touch_interval().map_or(-1, millis_arg);
        let args = [
            time_arg(now),
            millis_arg(policy.idle_timeout()),
            absolute,
            touch_interval,
            millis_arg(policy.tombstone_retention()),
            i64::from(touch == Touch::Refresh),
        ];
        async move {
            let call = async {
                let mut evalsha = ::redis::cmd("EVALSHA");
                evalsha.arg(SCRIPT.get_hash());
                let mut eval = ::redis::cmd("EVAL");
                eval.arg(LUA);
                for command in [&mut evalsha, &mut eval] {
                    command.arg(1).arg(&redis_key).arg(op).arg(&args[..]);
                }
                match connection.query(&evalsha).await {
                    Err(error) if error.code() == Some("NOSCRIPT") => connection.query(&eval).await,
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

    /// Runs the script for `op` and reads its reply with `parse`, logging the outcome.
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        touch: Touch,
        parse: fn(&[String]) -> Result<T, StoreError>,
    ) -> StoreFuture<T> {
        let reply = self.run(op, key, now, policy, touch);
        let log = self.log.clone();
        Box::pin(async move { log.record(op, reply.await.and_then(|reply| parse(&reply))) })
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
        self.call("check", key, now, policy, touch, parse_check)
    }

    fn begin(
        &self,
        key: &SessionKey,
        now: Timestamp,
        policy: &Policy,
        _new: NewSession<'_>,
    ) -> Self::BeginFuture {
        self.call("begin", key, now, policy, Touch::Passive, parse_begin)
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        self.call("end", key, now, policy, Touch::Passive, parse_end)
    }

    /// Returns `Ok(0)` at once: every key carries a TTL that ends it at its deadline plus the
    /// retention, so Redis removes expired records by itself, at no cost to requests.
    fn purge(&self, _now: Timestamp) -> Self::PurgeFuture {
        Box::pin(std::future::ready(Ok(0)))
    }
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

fn corrupt(reply: &[String]) -> StoreError {
    match reply {
        [tag, detail] if tag == "corrupt" => StoreError::CorruptRecord(detail.clone()),
        _ => StoreError::CorruptRecord(format!("unexpected script reply {reply:?}")),
    }
}

fn reason(text: &str, reply: &[String]) -> Result<ExpiryReason, StoreError> {
    text.parse().map_err(|_| corrupt(reply))
}

fn timestamp(text: &str, reply: &[String]) -> Result<Timestamp, StoreError> {
    text.parse()
        .map(Timestamp::from_unix_millis)
        .map_err(|_| corrupt(reply))
}

fn parse_check(reply: &[String]) -> Result<Check, StoreError> {
    match reply {
        [tag, created_at, last_seen] if tag == "active" => Ok(Check::Active(SessionRecord {
            created_at: timestamp(created_at, reply)?,
            last_seen: timestamp(last_seen, reply)?,
            timeouts: None,
        })),
        [tag, why] if tag == "expired" => Ok(Check::Expired(reason(why, reply)?)),
        [tag, why] if tag == "retired" => Ok(Check::Retired(reason(why, reply)?)),
        _ => Err(corrupt(reply)),
    }
}

fn parse_begin(reply: &[String]) -> Result<Begin, StoreError> {
    match reply {
        [tag] if tag == "began" => Ok(Begin::Began),
        [tag] if tag == "already" => Ok(Begin::AlreadyActive),
        [tag, why] if tag == "refused" => Ok(Begin::Refused(reason(why, reply)?)),
        _ => Err(corrupt(reply)),
    }
}

fn parse_end(reply: &[String]) -> Result<bool, StoreError> {
    match reply {
        [tag] if tag == "ended" => Ok(true),
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
            parse_check(&strings(&["active", "1767225600000", "1767225601000"])).ok(),
            Some(Check::Active(SessionRecord::new(
                Timestamp::from_unix_millis(1_767_225_600_000),
                Timestamp::from_unix_millis(1_767_225_601_000),
            )))
        );
        assert_eq!(
            parse_check(&strings(&["expired", "absolute"])).ok(),
            Some(Check::Expired(ExpiryReason::Absolute))
        );
        assert_eq!(
            parse_check(&strings(&["retired", "idle"])).ok(),
            Some(Check::Retired(ExpiryReason::Idle))
        );
        assert_eq!(
            parse_begin(&strings(&["refused", "ended"])).ok(),
            Some(Begin::Refused(ExpiryReason::Ended))
        );
        assert_eq!(parse_end(&strings(&["kept"])).ok(), Some(false));
    }

    #[test]
    fn malformed_replies_are_corrupt_records() {
        for reply in [
            strings(&["corrupt", "a string where a session hash was expected"]),
            strings(&["active", "1.5e12", "x"]),
            strings(&["expired", "later"]),
            strings(&[]),
        ] {
            assert!(matches!(
                parse_check(&reply),
                Err(StoreError::CorruptRecord(_))
            ));
        }
    }

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
