//! The announcement sweep on PostgreSQL with a million sessions (issue #14): how long the
//! announcer's store calls (`claim_ends` in batches of `ANNOUNCE_BATCH`, each acknowledged with
//! `ack_ends`) take to announce a million sessions that all expired with no request, and what
//! requests on live sessions see meanwhile.
//!
//! ```sh
//! cargo bench --bench postgres_sweep --features postgres
//! ```
//!
//! It makes a database of its own on the server at `DATABASE_URL` (a server URL without a
//! database; default `postgres://postgres@127.0.0.1:5432`) and drops it at the end. `SESSIONS`
//! sets the number of sessions (default 1,000,000).
//!
//! Each run fills a fresh table with the sessions (one statement per 100,000 rows, every
//! session with an owner, begun over 10 minutes, the layer's default timeouts: 20 minutes
//! idle, a day of retention), vacuums and analyzes it, begins 1,000 live sessions, and moves
//! the clock past every deadline. The clock then runs with real time. The sweep claims and
//! acknowledges until nothing is left. In the run under load one task sends `check` with a
//! refresh (a write each time: no touch interval) round robin over the live sessions, for
//! 2 s before the sweep, for 10 s of sweeps at the announcer's pace (one batch a second),
//! during the sweep of the rest batch after batch, and 2 s after.
//!
//! Last, what one refresh of a live session writes under this version's index layout,
//! compared with the layout before announcements and with the alternative of a partial index
//! on the unannounced rows ([`refresh_cost`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::Connection;
use tower_session_timeout::store::{NewSession, Policy, SessionKey, SessionStore, Touch};
use tower_session_timeout::{
    PostgresStore, SessionTimeoutLayer, Timestamp, ANNOUNCE_BATCH, ANNOUNCE_LEASE,
};

const LIVE: usize = 1_000;
/// How many sweeps of one batch a second run before the sweep without pause.
const PACED: usize = 10;
const SPREAD_MS: i64 = 10 * 60 * 1000;
const FILL_CHUNK: i64 = 100_000;
/// The sessions begin from here (Unix ms), far from the real clock: times are passed in.
const T0: i64 = 1_700_000_000_000;

fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
        .trim_end_matches('/')
        .to_owned()
}

fn sessions() -> i64 {
    std::env::var("SESSIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// The layer's defaults: idle 20 minutes, no absolute timeout, a day of retention.
fn policy() -> Policy {
    *SessionTimeoutLayer::builder()
        .build()
        .expect("valid config")
        .policy()
}

/// A clock that starts at `start` and runs with real time.
#[derive(Clone, Copy)]
struct Clock {
    start: i64,
    epoch: Instant,
}

impl Clock {
    fn now(&self) -> Timestamp {
        let ms = self.start + self.epoch.elapsed().as_millis() as i64;
        Timestamp::from_unix_millis(ms as u64)
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank]
}

/// A table row of latencies in microseconds.
fn summary(name: &str, latencies: &mut [u64]) {
    latencies.sort_unstable();
    let us = |ns: u64| format!("{:.0}", ns as f64 / 1000.0);
    let mean = latencies.iter().sum::<u64>() / latencies.len().max(1) as u64;
    println!(
        "| {name} | {} | {} | {} | {} | {} | {} |",
        latencies.len(),
        us(percentile(latencies, 0.50)),
        us(percentile(latencies, 0.99)),
        us(percentile(latencies, 0.999)),
        us(latencies.last().copied().unwrap_or(0)),
        us(mean),
    );
}

/// Fills the table with `n` sessions begun from [`T0`] over [`SPREAD_MS`], each with an owner
/// (100,000 users), active, as `begin` writes them.
async fn fill(admin: &mut sqlx::PgConnection, table: &str, n: i64, policy: &Policy) {
    let idle = policy.idle_timeout().as_millis() as i64;
    let retention = policy.tombstone_retention().as_millis() as i64;
    sqlx::query(&format!("TRUNCATE {table}"))
        .execute(&mut *admin)
        .await
        .expect("truncate");
    let started = Instant::now();
    let mut from = 0;
    while from < n {
        let to = (from + FILL_CHUNK).min(n);
        sqlx::query(&format!(
            "INSERT INTO {table} (key, created_at, last_seen, state, expires_at, owner) \
             SELECT sha256(int8send(i)), t, t, 'active', t + {idle} + {retention}, \
                    'user-' || (i % 100000) \
             FROM (SELECT i, {T0} + i * {SPREAD_MS} / {n} AS t \
                   FROM generate_series({from}::bigint, {last}::bigint) AS i) AS s",
            last = to - 1,
        ))
        .execute(&mut *admin)
        .await
        .expect("fill");
        from = to;
    }
    let filled = started.elapsed();
    sqlx::query(&format!("VACUUM ANALYZE {table}"))
        .execute(&mut *admin)
        .await
        .expect("vacuum");
    println!(
        "filled {n} sessions in {filled:?}, vacuumed and analyzed in {:?}",
        started.elapsed() - filled
    );
}

/// What one sweep did.
struct Swept {
    ends: u64,
    batches: u64,
    took: Duration,
    claims: Vec<u64>,
    acks: Vec<u64>,
    /// Store calls that failed (the statement timeout, 2 s), each tried again at once as the
    /// announcer's next sweep would.
    failed: Vec<String>,
}

/// Claims and acknowledges every end due, as the announcer does, with the time from `clock`.
async fn sweep(store: &PostgresStore, clock: Clock, policy: &Policy) -> Swept {
    let started = Instant::now();
    let (mut ends, mut batches) = (0, 0);
    let (mut claims, mut acks, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let t = Instant::now();
        let batch = match store
            .claim_ends(clock.now(), policy, ANNOUNCE_BATCH, ANNOUNCE_LEASE)
            .await
        {
            Ok(batch) => batch,
            Err(error) => {
                // Rolled back: nothing was leased.
                failed.push(format!("claim_ends after {:?}: {error}", t.elapsed()));
                continue;
            }
        };
        claims.push(t.elapsed().as_nanos() as u64);
        if batch.is_empty() {
            break;
        }
        ends += batch.len() as u64;
        batches += 1;
        let keys: Vec<SessionKey> = batch.iter().map(|end| end.key).collect();
        loop {
            let t = Instant::now();
            match store.ack_ends(&keys, clock.now(), policy).await {
                Ok(()) => {
                    acks.push(t.elapsed().as_nanos() as u64);
                    break;
                }
                Err(error) => failed.push(format!("ack_ends after {:?}: {error}", t.elapsed())),
            }
        }
    }
    Swept {
        ends,
        batches,
        took: started.elapsed(),
        claims,
        acks,
        failed,
    }
}

/// The load average of the last minute, as `/proc/loadavg` has it.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default()
}

async fn run(store: &PostgresStore, admin: &mut sqlx::PgConnection, n: i64, under_load: bool) {
    let policy = policy();
    let table = store.table_name().to_owned();
    fill(admin, &table, n, &policy).await;
    // Every deadline has passed: the last session began at T0 + SPREAD and went idle 20
    // minutes later.
    let start = T0 + SPREAD_MS + policy.idle_timeout().as_millis() as i64 + 1_000;
    let clock = Clock {
        start,
        epoch: Instant::now(),
    };
    let live: Vec<SessionKey> = (0..LIVE)
        .map(|i| SessionKey::from_id(&format!("live-session-{i:08}")))
        .collect();
    for key in &live {
        store
            .begin(key, clock.now(), &policy, NewSession::plain())
            .await
            .expect("begin");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let requests = under_load.then(|| {
        let (store, stop) = (store.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let began = Instant::now();
                let check = store
                    .check(&live[i % LIVE], clock.now(), &policy, Touch::Refresh)
                    .await
                    .expect("check");
                assert!(matches!(
                    check,
                    tower_session_timeout::store::Check::Active(_)
                ));
                samples.push((began, began.elapsed().as_nanos() as u64));
                i += 1;
            }
            samples
        })
    });
    // At the announcer's own pace first: one batch per sweep (here every second, the
    // shortest interval the demo takes), for `PACED` sweeps.
    let mut paced = 0;
    let paced_from = Instant::now() + Duration::from_secs(2);
    if under_load {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        for _ in 0..PACED {
            ticks.tick().await;
            let batch = store
                .claim_ends(clock.now(), &policy, ANNOUNCE_BATCH, ANNOUNCE_LEASE)
                .await
                .expect("claim_ends");
            let keys: Vec<SessionKey> = batch.iter().map(|end| end.key).collect();
            store
                .ack_ends(&keys, clock.now(), &policy)
                .await
                .expect("ack_ends");
            paced += keys.len() as u64;
        }
        ticks.tick().await;
    }
    let from = Instant::now();
    let load_before = load_average();
    let swept = sweep(store, clock, &policy).await;
    let load_after = load_average();
    let to = Instant::now();
    if under_load {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let announced: i64 =
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE announced = 1"))
            .fetch_one(&mut *admin)
            .await
            .expect("count");
    assert_eq!(paced + swept.ends, n as u64, "every end claimed once");
    assert_eq!(announced, n, "every end acknowledged");

    println!();
    println!(
        "## the announcement sweep, {}",
        if under_load {
            "while one task checks live sessions"
        } else {
            "alone"
        }
    );
    println!();
    println!(
        "{} ends (after {paced} at the announcer's pace) in {} batches of up to {ANNOUNCE_BATCH}: {:.2?} ({:.1} µs per end)",
        swept.ends,
        swept.batches,
        swept.took,
        swept.took.as_nanos() as f64 / 1000.0 / swept.ends.max(1) as f64
    );
    println!(
        "load average (1 min) {load_before} as the sweep began, {load_after} as it ended; \
         store calls that failed and were tried again: {}",
        swept.failed.len()
    );
    for failure in &swept.failed {
        println!("- {failure}");
    }
    println!();
    println!("| store call, µs | calls | p50 | p99 | p99.9 | max | mean |");
    println!("|---|---|---|---|---|---|---|");
    // The first and the last tenth of the claims apart, to show whether a claim slows down
    // as the sweep goes (the index range it reads starts with the ends already announced).
    let tenth = swept.claims.len() / 10;
    let mut first = swept.claims[..tenth].to_vec();
    let mut last = swept.claims[swept.claims.len() - tenth..].to_vec();
    let (mut claims, mut acks) = (swept.claims, swept.acks);
    summary("`claim_ends` (256)", &mut claims);
    summary("`claim_ends`, first tenth of the sweep", &mut first);
    summary("`claim_ends`, last tenth of the sweep", &mut last);
    summary("`ack_ends` (256)", &mut acks);
    if let Some(requests) = requests {
        let samples = requests.await.expect("the request task");
        let (mut before, mut during, mut after) = (Vec::new(), Vec::new(), Vec::new());
        let mut at_pace = Vec::new();
        for (began, latency) in samples {
            // A request that began before a window but ended inside it counts in it.
            let ended = began + Duration::from_nanos(latency);
            if ended < paced_from {
                before.push(latency);
            } else if ended < from {
                at_pace.push(latency);
            } else if began <= to {
                during.push(latency);
            } else {
                after.push(latency);
            }
        }
        println!();
        println!(
            "| `check` (refresh), µs: one task, round robin over {LIVE} live sessions | requests | p50 | p99 | p99.9 | max | mean |"
        );
        println!("|---|---|---|---|---|---|---|");
        summary("before the sweep (2 s)", &mut before);
        summary(
            &format!("at the announcer's pace, one batch a second ({PACED} s)"),
            &mut at_pace,
        );
        summary("**during the sweep, batch after batch**", &mut during);
        summary("after the sweep (2 s)", &mut after);
    }
    println!();
}

/// The index layouts compared for what a refresh writes: the one before announcements, this
/// version's, and the alternative of a partial index on the unannounced rows beside the old one.
const LAYOUTS: [(&str, &str); 3] = [
    ("before announcements: `(expires_at)`", "(expires_at)"),
    (
        "**this version: `(announced, expires_at)`**",
        "(announced, expires_at)",
    ),
    (
        "alternative: `(expires_at)` and `(expires_at) WHERE announced = 0`",
        "(expires_at)|(expires_at) WHERE announced = 0",
    ),
];

/// What one refresh of an active row writes under each index layout, read from the WAL with
/// `pg_walinspect` (so whatever else the machine does): index entries (B-tree leaf inserts,
/// splits included) and WAL bytes without full-page images (which depend on when the last
/// checkpoint was); and the time, which depends on everything. 100,000 rows with owners per
/// layout (the owner index in every one), 30,000 refreshes of rows spread over the table, in
/// one server-side loop, three rounds taking turns.
async fn refresh_cost(admin: &mut sqlx::PgConnection) {
    let rows = 100_000;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        .execute(&mut *admin)
        .await
        .expect("pg_walinspect (PostgreSQL 15 or later, as a superuser)");
    for (i, (_, indexes)) in LAYOUTS.iter().enumerate() {
        let table = format!("layout_{i}");
        sqlx::query(&format!(
            "CREATE TABLE {table} (key BYTEA PRIMARY KEY NOT NULL, created_at BIGINT NOT NULL, \
             last_seen BIGINT NOT NULL, state TEXT NOT NULL, expires_at BIGINT NOT NULL, \
             owner TEXT, idle_ms BIGINT, absolute_ms BIGINT, \
             announced SMALLINT NOT NULL DEFAULT 0, lease_until BIGINT)"
        ))
        .execute(&mut *admin)
        .await
        .expect("create");
        let mut statements: Vec<String> = indexes
            .split('|')
            .enumerate()
            .map(|(j, index)| format!("CREATE INDEX {table}_{j} ON {table} {index}"))
            .collect();
        statements.push(format!(
            "CREATE INDEX {table}_owner ON {table} (owner) WHERE owner IS NOT NULL"
        ));
        statements.push(format!(
            "INSERT INTO {table} (key, created_at, last_seen, state, expires_at, owner) \
             SELECT sha256(int8send(i)), 0, 0, 'active', 87600000, 'user-' || (i % 50000) \
             FROM generate_series(0::bigint, {rows}::bigint - 1) AS i"
        ));
        statements.push(format!("VACUUM ANALYZE {table}"));
        for statement in statements {
            sqlx::query(&statement)
                .execute(&mut *admin)
                .await
                .expect("layout");
        }
    }
    let refreshes = 30_000;
    // Per layout: index entries, WAL bytes, µs, per refresh, one of each per round.
    let mut results = vec![[Vec::new(), Vec::new(), Vec::new()]; LAYOUTS.len()];
    for round in 1..=3 {
        for (i, result) in results.iter_mut().enumerate() {
            let table = format!("layout_{i}");
            let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_insert_lsn()::text")
                .fetch_one(&mut *admin)
                .await
                .expect("lsn");
            let started = Instant::now();
            // The refresh of the check statement: `last_seen` and `expires_at` move.
            sqlx::query(&format!(
                "DO $$ BEGIN FOR j IN 1..{refreshes} LOOP \
                   UPDATE {table} SET last_seen = {round} * 100000 + j, \
                     expires_at = {round} * 100000 + j + 87600000 \
                   WHERE key = sha256(int8send((j * 7919) % {rows})) AND state = 'active'; \
                 END LOOP; END $$"
            ))
            .execute(&mut *admin)
            .await
            .expect("refreshes");
            let took = started.elapsed();
            let (entries, bytes): (f64, f64) = sqlx::query_as(
                "SELECT COALESCE(SUM(count) FILTER (WHERE \"resource_manager/record_type\" \
                   IN ('Btree/INSERT_LEAF', 'Btree/SPLIT_L', 'Btree/SPLIT_R')), 0)::float8, \
                   SUM(record_size)::float8 \
                 FROM pg_get_wal_stats($1::pg_lsn, pg_current_wal_flush_lsn(), true)",
            )
            .bind(lsn)
            .fetch_one(&mut *admin)
            .await
            .expect("wal stats");
            let per = |total: f64| total / refreshes as f64;
            result[0].push(per(entries));
            result[1].push(per(bytes));
            result[2].push(per(took.as_nanos() as f64 / 1000.0));
        }
    }
    println!();
    println!("## what a refresh writes, by index layout");
    println!();
    println!(
        "| indexes beside the primary key and the owner's | index entries per refresh | \
         WAL bytes per refresh, without full-page images | µs per refresh |"
    );
    println!("|---|---|---|---|");
    for ((name, _), [entries, bytes, us]) in LAYOUTS.iter().zip(results) {
        let list = |values: &[f64], digits: usize| {
            values
                .iter()
                .map(|v| format!("{v:.digits$}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {name} | {} | {} | {} |",
            list(&entries, 2),
            list(&bytes, 0),
            list(&us, 0)
        );
    }
    println!();
}

/// The bench's own database, dropped when the value is, also when the bench panics.
struct BenchDb {
    server: String,
    name: String,
}

impl Drop for BenchDb {
    fn drop(&mut self) {
        let admin = format!("{}/postgres", self.server);
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await, and may run inside the bench's runtime: a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin).await.ok()?;
                sqlx::query(&drop).execute(&mut admin).await.ok()
            })
        })
        .join();
    }
}

async fn bench() {
    let server = server_url();
    let db = BenchDb {
        name: format!("bench_sweep_{:016x}", rand::random::<u64>()),
        server,
    };
    let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", db.server))
        .await
        .expect("connect to the postgres database");
    sqlx::query(&format!("CREATE DATABASE {}", db.name))
        .execute(&mut admin)
        .await
        .expect("create the bench database");
    let url = format!("{}/{}", db.server, db.name);
    let store = PostgresStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
    let n = sessions();
    run(&store, &mut conn, n, false).await;
    run(&store, &mut conn, n, true).await;
    refresh_cost(&mut conn).await;
    drop(conn);
    store.pool().close().await;
}

fn main() {
    // `cargo test --benches` runs bench binaries without `--bench`; keep that quick.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!(
            "postgres_sweep: run with `cargo bench --bench postgres_sweep --features postgres`"
        );
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench());
}
