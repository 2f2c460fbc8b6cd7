//! `RedisStore`'s announcement sweep (issue #14) at one million sessions: the time to claim
//! and acknowledge a million silent expiries, and the latency of requests' `check`s on other
//! sessions meanwhile.
//!
//! ```text
//! cargo bench --bench redis_sweep --features redis
//! ```
//!
//! Runs its own `redis-server` (no persistence) on a free port, so nothing else shares it.
//! The million sessions are begun through `RedisStore::begin` (its two scripts: the listing in
//! the due index, then the session), 512 at a time, over ten minutes of (manual) clock time;
//! then the clock moves past every deadline, so every session ended with no request, and a
//! sweep calls `claim_ends` (batches of `ANNOUNCE_BATCH`) and `ack_ends` until nothing is
//! left, as the announcer does with a hook that does nothing. A task meanwhile runs `check`
//! (a refreshing request's store call) round robin over 1,000 live sessions, one at a time,
//! 1 s before the sweep, during it, and 0.5 s after. Then the same again without the task.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tower_session_timeout::store::{Check, NewSession, Policy, SessionKey, SessionStore, Touch};
use tower_session_timeout::{
    RedisStore, SessionTimeoutLayer, Timestamp, ANNOUNCE_BATCH, ANNOUNCE_LEASE,
};

/// `SWEEP_SESSIONS` sets another count (for a quick try).
fn sessions() -> u64 {
    std::env::var("SWEEP_SESSIONS")
        .ok()
        .and_then(|count| count.parse().ok())
        .unwrap_or(1_000_000)
}
const LIVE: u64 = 1_000;
const IN_FLIGHT: usize = 512;
const IDLE: Duration = Duration::from_secs(20 * 60);
/// Sign-ins arrive one every 0.6 ms of clock time: a million over ten minutes.
const SPACING_MICROS: u64 = 600;

/// The bench's own `redis-server`, killed when dropped.
struct Server {
    port: u16,
    child: Child,
}

impl Server {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { port, child }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn policy() -> Policy {
    // The default day of tombstone retention.
    *SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .build()
        .expect("valid policy")
        .policy()
}

fn key(run: &str, i: u64) -> SessionKey {
    SessionKey::from_id(&format!("bench-{run}-session-{i:016}"))
}

/// Begins `count` sessions from `first`, one every 0.6 ms of clock time from `t0`, 512 calls
/// at a time.
async fn fill(store: &RedisStore, run: &str, first: u64, count: u64, t0: u64) {
    let policy = policy();
    let mut tasks = tokio::task::JoinSet::new();
    for i in first..first + count {
        if tasks.len() >= IN_FLIGHT {
            tasks
                .join_next()
                .await
                .expect("a task")
                .expect("begin task");
        }
        let (store, key) = (store.clone(), key(run, i));
        let now = Timestamp::from_unix_millis(t0 + i * SPACING_MICROS / 1000);
        tasks.spawn(async move {
            store
                .begin(&key, now, &policy, NewSession::plain())
                .await
                .expect("begin");
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("begin task");
    }
}

/// Claims and acknowledges until nothing is left, as the announcer does: a failed call (a
/// timeout on the shared machine) is tried again. (ends, claim calls, failed calls).
async fn sweep(store: &RedisStore, now: Timestamp) -> (u64, u64, u64) {
    let policy = policy();
    let (mut ends, mut calls, mut failed) = (0, 0, 0);
    loop {
        calls += 1;
        let claimed = match store
            .claim_ends(now, &policy, ANNOUNCE_BATCH, ANNOUNCE_LEASE)
            .await
        {
            Ok(claimed) => claimed,
            Err(_) => {
                failed += 1;
                continue;
            }
        };
        if claimed.is_empty() {
            return (ends, calls, failed);
        }
        ends += claimed.len() as u64;
        let keys: Vec<SessionKey> = claimed.iter().map(|end| end.key).collect();
        // Acknowledging is idempotent.
        while store.ack_ends(&keys, now, &policy).await.is_err() {
            failed += 1;
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank]
}

fn row(window: &str, latencies: &mut [u64]) {
    latencies.sort_unstable();
    println!(
        "| {window} | {} | {} | {} | {} | {} |",
        latencies.len(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
    );
}

/// `check`s one at a time, round robin over the live sessions, until `stop`; latencies in µs.
async fn checks(
    store: RedisStore,
    run: &'static str,
    now: Timestamp,
    stop: Arc<AtomicBool>,
) -> Vec<u64> {
    let policy = policy();
    let mut latencies = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let key = key(run, sessions() + i % LIVE);
        let started = Instant::now();
        let check = store
            .check(&key, now, &policy, Touch::Refresh)
            .await
            .expect("check");
        latencies.push(started.elapsed().as_micros() as u64);
        assert!(matches!(check, Check::Active(_)), "{check:?}");
        i += 1;
    }
    latencies
}

/// `check`s for `window`, on a task of their own.
async fn checks_for(
    store: &RedisStore,
    run: &'static str,
    now: Timestamp,
    window: Duration,
) -> Vec<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(checks(store.clone(), run, now, Arc::clone(&stop)));
    tokio::time::sleep(window).await;
    stop.store(true, Ordering::Relaxed);
    task.await.expect("check task")
}

/// Redis's own count and time of the scripts it ran since the last call (`INFO
/// commandstats`, then `CONFIG RESETSTAT`): (calls, µs per call).
async fn script_stats(url: &str) -> (u64, f64) {
    let client = redis::Client::open(url).expect("url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut connection)
        .await
        .expect("CONFIG RESETSTAT");
    let field = |line: &str, name: &str| -> f64 {
        line.split(',')
            .find_map(|part| part.split_once('=').filter(|(key, _)| key.ends_with(name)))
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0.0)
    };
    info.lines()
        .find(|line| line.starts_with("cmdstat_evalsha:"))
        .map_or((0, 0.0), |line| {
            (field(line, "calls") as u64, field(line, "usec_per_call"))
        })
}

/// The bytes of the due index's shards (`MEMORY USAGE`, every member counted).
async fn due_index_bytes(url: &str, store: &RedisStore) -> u64 {
    let client = redis::Client::open(url).expect("url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let mut shards = std::collections::BTreeSet::new();
    for i in 0..256 {
        shards.insert(store.due_key(&key("probe", i)));
    }
    let mut bytes = 0;
    for shard in shards {
        let usage: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&shard)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut connection)
            .await
            .expect("MEMORY USAGE");
        bytes += usage.unwrap_or(0);
    }
    bytes
}

async fn used_memory(url: &str) -> u64 {
    let client = redis::Client::open(url).expect("url");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connected");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|bytes| bytes.trim().parse().ok())
        .expect("used_memory")
}

async fn run(server: &Server, run: &'static str, under_load: bool) {
    let store = RedisStore::connect(server.url())
        .await
        .expect("the bench's redis-server")
        .with_prefix(format!("bench-{run}:"));
    let t0 = 1_767_225_600_000;
    let before = used_memory(&server.url()).await;
    let started = Instant::now();
    fill(&store, run, 0, sessions(), t0).await;
    let filled = started.elapsed();
    let after = used_memory(&server.url()).await;
    let listings = due_index_bytes(&server.url(), &store).await;
    // Every one of the million is past its deadline then; the live ones begin a minute before.
    let now = Timestamp::from_unix_millis(t0 + sessions() * SPACING_MICROS / 1000)
        .saturating_add(IDLE)
        .saturating_add(Duration::from_secs(1));
    fill(
        &store,
        run,
        sessions(),
        LIVE,
        now.as_unix_millis() - 60_000 - sessions() * SPACING_MICROS / 1000,
    )
    .await;
    println!(
        "{run}: {} sessions begun in {:.1} s ({:.1} µs per begin, {IN_FLIGHT} in flight); Redis memory {:.0} bytes per session (record, TTL and listing), of which the listing {:.0}",
        sessions(),
        filled.as_secs_f64(),
        filled.as_secs_f64() * 1e6 / sessions() as f64,
        (after - before) as f64 / sessions() as f64,
        listings as f64 / sessions() as f64,
    );

    let mut windows = Vec::new();
    if under_load {
        windows.push((
            "before the sweep (1 s)",
            checks_for(&store, run, now, Duration::from_secs(1)).await,
        ));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = under_load.then(|| tokio::spawn(checks(store.clone(), run, now, Arc::clone(&stop))));
    script_stats(&server.url()).await;
    let started = Instant::now();
    let (ends, calls, failed) = sweep(&store, now).await;
    let swept = started.elapsed();
    let (scripts, per_script) = script_stats(&server.url()).await;
    stop.store(true, Ordering::Relaxed);
    if let Some(load) = load {
        windows.push(("**during the sweep**", load.await.expect("check task")));
        windows.push((
            "after the sweep (0.5 s)",
            checks_for(&store, run, now, Duration::from_millis(500)).await,
        ));
    }
    println!(
        "{run}: {ends} ends claimed and acknowledged in {:.2} s ({:.1} µs per end, {calls} claim calls, {failed} failed and tried again; Redis ran {scripts} scripts, {per_script:.1} µs each){}",
        swept.as_secs_f64(),
        swept.as_secs_f64() * 1e6 / ends.max(1) as f64,
        if under_load { ", with checks running" } else { ", alone" },
    );
    if ends < sessions() {
        // A call that failed (a timeout on the shared machine) left its ends claimed: the
        // announcer's sweeps after the lease hand them out.
        let (again, _, _) = sweep(&store, now.saturating_add(ANNOUNCE_LEASE)).await;
        println!("{run}: {again} more claimed after the lease, where a call had failed");
        assert_eq!(ends + again, sessions(), "every silent expiry announced");
    }
    assert!(ends <= sessions(), "none announced twice");
    if under_load {
        println!("| window | checks | p50 µs | p99 µs | p99.9 µs | max µs |");
        println!("|---|---|---|---|---|---|");
        for (window, mut latencies) in windows {
            row(window, &mut latencies);
        }
    }
}

fn main() {
    // The store's own warnings (a failed call) on stderr.
    tracing_subscriber::fmt()
        .with_env_filter("warn")
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = Server::start();
    runtime.block_on(async {
        run(&server, "load", true).await;
        run(&server, "alone", false).await;
    });
}
