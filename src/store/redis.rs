//! [`RedisStore`]: sessions in Redis, shared by every app instance that points at it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, IntoConnectionInfo, RedisError, Script};

use super::{Begin, Check, ExpiryReason, Policy, SessionKey, SessionRecord, SessionStore, Touch};
use crate::{StoreError, Timestamp};

/// Every number handed to the script is capped here: Lua numbers are doubles, exact only up
/// to 2^53, and a time plus a duration (each at most 2^50 ms, about 35 000 years) stays below.
const MAX_MILLIS: u64 = 1 << 50;

/// The one script behind `check`, `begin` and `end`.
///
/// Each call runs it once, so reading the record, judging it against `now` and writing the
/// refresh or the tombstone is one atomic step on the server: two instances racing on one
/// session see one order of events, and an expired session stays expired. It touches only
/// `KEYS[1]`, so it runs unchanged on Redis Cluster.
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

/// Loaded into Redis on first use and then called by its SHA-1 (`EVALSHA`); when Redis has
/// lost it (a restart, `SCRIPT FLUSH`), the call loads it again and retries once.
static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LUA));

type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// Keeps sessions in Redis, so every app instance pointing at it sees the same sessions.
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
///   [`DEFAULT_PREFIX`](RedisStore::DEFAULT_PREFIX)) plus the hex SHA-256 of its id ([`SessionKey::to_hex`]), holding a hash
///   of times (or of a reason and a time). Every operation touches that one key, so the store
///   works unchanged on Redis Cluster.
/// - **Failures are answered, not hidden.** A failed or timed-out call is a [`StoreError`]
///   (logged here with `tracing`), which the layer answers with 503 or passes on, per its
///   fail-closed or fail-open setting. The connection is a [`ConnectionManager`]: multiplexed
///   (one connection for all requests) and reconnecting, so the app survives a Redis restart.
///   No call waits longer than the store timeout ([`DEFAULT_TIMEOUT`](RedisStore::DEFAULT_TIMEOUT) unless set with
///   [`with_timeout`](RedisStore::with_timeout)).
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
/// let layer = SessionTimeoutLayer::builder()
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .store(store)
///     .build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
}

impl RedisStore {
    /// The key prefix when none is set.
    pub const DEFAULT_PREFIX: &'static str = "tst:session:";

    /// How long one store call may take when no other limit is set, reconnecting included.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

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
        Ok(Self::from_connection_manager(connection))
    }

    /// Uses an existing [`ConnectionManager`], with whatever configuration it was built with.
    pub fn from_connection_manager(connection: ConnectionManager) -> Self {
        RedisStore {
            connection,
            prefix: Arc::from(Self::DEFAULT_PREFIX),
            timeout: Self::DEFAULT_TIMEOUT,
        }
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

    /// Keeps sessions under keys starting with `prefix` instead of [`DEFAULT_PREFIX`](RedisStore::DEFAULT_PREFIX), e.g. to
    /// share one Redis between apps. In Redis Cluster a prefix such as `{sessions}:` would put
    /// every session in one slot; leave hash tags out so they spread.
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
        let session = key.short();
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
            let mut invocation = SCRIPT.key(&redis_key);
            invocation.arg(op);
            for arg in args {
                invocation.arg(arg);
            }
            let outcome = tokio::time::timeout(
                timeout,
                invocation.invoke_async::<Vec<String>>(&mut connection),
            )
            .await;
            let result = match outcome {
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(error)) => Err(backend(error)),
                Err(_) => Err(StoreError::Timeout(timeout)),
            };
            if let Err(error) = &result {
                tracing::warn!(%session, op, %error, "redis session store call failed");
            }
            result
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
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
        let reply = self.run("check", key, now, policy, touch);
        let session = key.short();
        Box::pin(async move { logged(&session, parse_check(&reply.await?)) })
    }

    fn begin(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::BeginFuture {
        let reply = self.run("begin", key, now, policy, Touch::Passive);
        let session = key.short();
        Box::pin(async move { logged(&session, parse_begin(&reply.await?)) })
    }

    fn end(&self, key: &SessionKey, now: Timestamp, policy: &Policy) -> Self::EndFuture {
        let reply = self.run("end", key, now, policy, Touch::Passive);
        let session = key.short();
        Box::pin(async move { logged(&session, parse_end(&reply.await?)) })
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

/// Logs a malformed reply; backend failures were logged where they happened.
fn logged<T>(session: &str, result: Result<T, StoreError>) -> Result<T, StoreError> {
    if let Err(error) = &result {
        tracing::warn!(%session, %error, "redis session store read a malformed record");
    }
    result
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
            Some(Check::Active(SessionRecord {
                created_at: Timestamp::from_unix_millis(1_767_225_600_000),
                last_seen: Timestamp::from_unix_millis(1_767_225_601_000),
            }))
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
    fn numbers_stay_exact_in_lua() {
        assert_eq!(millis_arg(Duration::MAX), 1 << 50);
        assert_eq!(time_arg(Timestamp::from_unix_millis(u64::MAX)), 1 << 50);
        assert_eq!(millis_arg(Duration::from_secs(60)), 60_000);
    }
}
