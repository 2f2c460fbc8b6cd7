//! `MemoryStore` at one million sessions: bytes per tracked session, and the time to purge a
//! million expired records while requests keep flowing on other sessions.
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! Bytes are counted by a counting global allocator in this bench binary (the bytes the store
//! asked the allocator for, still live after the inserts, divided by the session count); the
//! growth of the resident set (`/proc/self/statm`) is printed beside it as a check that
//! includes the allocator's own overhead. The library itself has no unsafe code: only this
//! harness does, to wrap `System`.
//!
//! The million sessions are begun over ten minutes of (manual) clock time, as sign-ins arrive,
//! so they spread over the timer wheel's one-second buckets as they would in production.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::header::COOKIE;
use http::{HeaderValue, Request};
use tower::{Layer, ServiceExt};
use tower_session_timeout::store::SessionKey;
use tower_session_timeout::{
    ManualClock, MemoryStore, SessionStore, SessionTimeoutLayer, Timestamp,
    DEFAULT_TOMBSTONE_RETENTION,
};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const SESSIONS: u64 = 1_000_000;
/// Sessions the requests during the purge run on.
const LIVE_SESSIONS: usize = 10_000;
const MINUTE: u64 = 60_000;
/// The million sessions are begun over this span, one every 0.6 ms.
const SPREAD: u64 = 10 * MINUTE;

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn key(i: u64) -> SessionKey {
    SessionKey::from_id(&format!("bench-expired-{i:08}"))
}

fn layer(store: &MemoryStore, clock: &ManualClock) -> SessionTimeoutLayer {
    layer_keeping(store, clock, Duration::from_secs(5 * 60))
}

/// The default 20-minute idle timeout, tombstones kept for `retention` (5 minutes for the
/// purge, so it has tombstones past their retention to remove; the default day for the
/// announcement sweep, so every end is still there to announce).
fn layer_keeping(
    store: &MemoryStore,
    clock: &ManualClock,
    retention: Duration,
) -> SessionTimeoutLayer {
    SessionTimeoutLayer::builder()
        .tombstone_retention(retention)
        .store(store.clone())
        .clock(clock.clone())
        .build()
        .expect("valid config")
}

/// Begins the million sessions, from `t0` to `t0 + SPREAD`.
fn fill(store: &MemoryStore, layer: &SessionTimeoutLayer, t0: u64) {
    let policy = *layer.policy();
    for i in 0..SESSIONS {
        let now = Timestamp::from_unix_millis(t0 + i * SPREAD / SESSIONS);
        store
            .begin(
                &key(i),
                now,
                &policy,
                tower_session_timeout::store::NewSession::plain(),
            )
            .into_inner()
            .expect("begin");
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

fn summary(name: &str, latencies: &mut [u64]) {
    latencies.sort_unstable();
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} |",
        latencies.len(),
        percentile(latencies, 0.50),
        percentile(latencies, 0.99),
        percentile(latencies, 0.999),
        latencies.last().copied().unwrap_or(0),
        if latencies.is_empty() {
            0
        } else {
            latencies.iter().sum::<u64>() / latencies.len() as u64
        }
    );
}

fn bytes_per_session() {
    let clock = ManualClock::new();
    let store = MemoryStore::new();
    let layer = layer(&store, &clock);
    let t0 = layer.now().as_unix_millis();
    let (heap_before, rss_before) = (LIVE.load(Ordering::SeqCst), resident_bytes());
    let start = Instant::now();
    fill(&store, &layer, t0);
    let took = start.elapsed();
    let (heap_after, rss_after) = (LIVE.load(Ordering::SeqCst), resident_bytes());
    let heap = (heap_after - heap_before) as f64 / SESSIONS as f64;
    let rss = rss_after.saturating_sub(rss_before) as f64 / SESSIONS as f64;
    println!(
        "## bytes per session ({SESSIONS} sessions, {} records, {store:?})",
        store.len()
    );
    println!();
    println!("| measure | bytes per session | beyond the 32-byte key |");
    println!("|---|---|---|");
    println!(
        "| heap (counting allocator) | {heap:.1} | {:.1} |",
        heap - 32.0
    );
    println!(
        "| resident set growth (statm) | {rss:.1} | {:.1} |",
        rss - 32.0
    );
    println!();
    println!(
        "begin x {SESSIONS}: {took:?} ({:.0} ns each)",
        took.as_nanos() as f64 / SESSIONS as f64
    );
    println!();
}

/// What the bench sweeps the million expired records with.
#[derive(Clone, Copy, PartialEq)]
enum Sweep {
    /// `purge` once every deadline and retention has passed.
    Purge,
    /// The announcer's store calls once every deadline has passed (within the retention):
    /// `claim_ends` in batches of `ANNOUNCE_BATCH`, each batch acknowledged with `ack_ends`
    /// (the hook itself costs nothing here).
    Announce,
}

/// Claims and acknowledges every end due at `now`; answers how many.
fn announce_all(
    store: &MemoryStore,
    now: Timestamp,
    policy: &tower_session_timeout::store::Policy,
) -> u64 {
    // The memory store's boxed futures are ready at once; a runtime only to poll them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut announced = 0;
    loop {
        let batch = rt
            .block_on(store.claim_ends(
                now,
                policy,
                tower_session_timeout::ANNOUNCE_BATCH,
                tower_session_timeout::ANNOUNCE_LEASE,
            ))
            .expect("claim_ends");
        if batch.is_empty() {
            return announced;
        }
        announced += batch.len() as u64;
        let keys: Vec<SessionKey> = batch.iter().map(|end| end.key).collect();
        rt.block_on(store.ack_ends(&keys, now, policy))
            .expect("ack_ends");
    }
}

/// Sweeps the million expired records, with or without requests flowing on other sessions.
fn purge(sweep: Sweep, under_load: bool) {
    let clock = ManualClock::new();
    let store = MemoryStore::new();
    let layer = match sweep {
        Sweep::Purge => layer(&store, &clock),
        Sweep::Announce => layer_keeping(&store, &clock, DEFAULT_TOMBSTONE_RETENTION),
    };
    let t0 = layer.now().as_unix_millis();
    fill(&store, &layer, t0);
    let policy = *layer.policy();

    // The live sessions begin after the last sign-in above, before the first deadline (t0 +
    // 20 min), so no record is due while the baseline is measured.
    let t_live = t0 + 16 * MINUTE;
    clock.set(Timestamp::from_unix_millis(t_live).to_system_time());
    let cookies: Vec<HeaderValue> = (0..LIVE_SESSIONS)
        .map(|i| {
            let id = format!("bench-live-{i:08}");
            store
                .begin(
                    &SessionKey::from_id(&id),
                    layer.now(),
                    &policy,
                    tower_session_timeout::store::NewSession::plain(),
                )
                .into_inner()
                .expect("begin");
            HeaderValue::from_str(&format!("id={id}")).unwrap()
        })
        .collect();
    // Every expired record is past its deadline and its tombstone retention (deadlines run
    // to t0 + 30 min, tombstones to t0 + 35 min); the live sessions are 19 minutes idle.
    let t_purge = match sweep {
        Sweep::Purge => Timestamp::from_unix_millis(t0 + 35 * MINUTE + 1000),
        // Past every deadline (t0 + 30 min), within every retention.
        Sweep::Announce => Timestamp::from_unix_millis(t0 + 30 * MINUTE + 1000),
    };
    let records_before = store.len();

    let service = layer.layer(Router::new().route("/", get(|| async { "Hello, World!" })));
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let requests = under_load.then(|| {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            // (started at, in ns since epoch; latency in ns)
            let mut samples: Vec<(u64, u64)> = Vec::with_capacity(20_000_000);
            rt.block_on(async {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let mut request = Request::get("/").body(Body::empty()).unwrap();
                    request
                        .headers_mut()
                        .insert(COOKIE, cookies[i % cookies.len()].clone());
                    let start = Instant::now();
                    let response = service.clone().oneshot(request).await.unwrap();
                    let latency = start.elapsed();
                    assert!(response.status().is_success(), "{}", response.status());
                    samples.push((
                        start.duration_since(epoch).as_nanos() as u64,
                        latency.as_nanos() as u64,
                    ));
                    i += 1;
                }
            });
            samples
        })
    });

    std::thread::sleep(Duration::from_millis(if under_load { 1000 } else { 0 }));
    clock.set(t_purge.to_system_time());
    let purge_start = Instant::now();
    let removed = match sweep {
        Sweep::Purge => store.purge(t_purge).into_inner().expect("purge"),
        Sweep::Announce => announce_all(&store, t_purge, &policy),
    };
    let purge_end = Instant::now();
    std::thread::sleep(Duration::from_millis(if under_load { 500 } else { 0 }));
    stop.store(true, Ordering::Relaxed);

    let took = purge_end - purge_start;
    let name = match sweep {
        Sweep::Purge => "purge",
        Sweep::Announce => "announcement sweep (claim_ends + ack_ends)",
    };
    println!(
        "## {name} {} ({records_before} records before, {} after)",
        if under_load {
            "while requests flow on other sessions"
        } else {
            "alone"
        },
        store.len()
    );
    println!();
    println!(
        "{name}: {took:?}, {removed} records ({:.0} ns per record); the rest were swept by requests",
        took.as_nanos() as f64 / removed.max(1) as f64
    );
    if let Some(requests) = requests {
        let samples = requests.join().unwrap();
        let (from, to) = (
            purge_start.duration_since(epoch).as_nanos() as u64,
            purge_end.duration_since(epoch).as_nanos() as u64,
        );
        let mut before: Vec<u64> = Vec::new();
        let mut during: Vec<u64> = Vec::new();
        let mut after: Vec<u64> = Vec::new();
        for (at, latency) in samples {
            // A request that started before the purge but ended inside it counts as during.
            if at + latency < from {
                before.push(latency);
            } else if at <= to {
                during.push(latency);
            } else {
                after.push(latency);
            }
        }
        println!();
        println!("request latency, ns (one task, round robin over {LIVE_SESSIONS} live sessions):");
        println!();
        println!("| window | requests | p50 | p99 | p99.9 | max | mean |");
        println!("|---|---|---|---|---|---|---|");
        summary("before the purge (1 s)", &mut before);
        summary("during the purge", &mut during);
        summary("after the purge (0.5 s)", &mut after);
    }
    println!();
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent; keep that quick.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("memory bench: run with `cargo bench --bench memory`");
        return;
    }
    bytes_per_session();
    purge(Sweep::Purge, false);
    purge(Sweep::Purge, true);
    purge(Sweep::Announce, false);
    purge(Sweep::Announce, true);
}
