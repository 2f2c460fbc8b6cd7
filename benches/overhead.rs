//! Per-request overhead in process: an axum hello-world router called through
//! `tower::ServiceExt::oneshot`, bare, behind `SessionTimeoutLayer` on `MemoryStore`, and behind
//! tower-sessions 0.15 on its `MemoryStore` with `Expiry::OnInactivity` and
//! `with_always_save(true)` (the same sliding idle timeout).
//!
//! ```text
//! cargo bench --bench overhead            # then: python3 benches/ratios.py
//! ```
//!
//! Every row sends `GET /` with a `Cookie: id=<id>` header, bare included, so building the
//! request costs the same everywhere. For the two session layers the id is one of a session
//! that is active in the layer's store: begun by a `/login` request through the layer (its
//! `Set-Cookie` observed by ours; a value inserted into the session by tower-sessions), then
//! reused. "one session" sends one id on every request, "many sessions" cycles through
//! `SESSIONS` ids.
//!
//! `single/*` runs the requests one after another on a current-thread runtime. `concurrent/*`
//! spreads the same number of requests over 1, 2 or 8 tasks on a two-worker multi-thread
//! runtime and reports wall time per request (throughput), so lock contention on one session
//! (one shard, one record) shows against many sessions.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use axum::body::Body;
use common::{bare, ours, request, sign_in, tower_sessions};
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion};
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service, ServiceExt};

/// Distinct sessions in the "many sessions" rows.
const SESSIONS: usize = 10_000;
/// Tasks in the concurrency rows.
const TASKS: [usize; 3] = [1, 2, 8];

/// Sends `iters` requests one after another, cycling through `cookies`.
async fn run<S, B>(service: &S, cookies: &[HeaderValue], offset: usize, iters: u64)
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut next = offset % cookies.len();
    for _ in 0..iters {
        let response = service
            .clone()
            .oneshot(request(&cookies[next]))
            .await
            .expect("request");
        debug_assert!(response.status().is_success());
        black_box(response);
        next += 1;
        if next == cookies.len() {
            next = 0;
        }
    }
}

/// One configuration: a name, the service, and its cookies for one and for many sessions.
struct Subject<S> {
    name: &'static str,
    service: S,
    many: Arc<[HeaderValue]>,
}

fn subject<S, B>(rt: &tokio::runtime::Runtime, name: &'static str, service: S) -> Subject<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let many = rt.block_on(sign_in(&service, SESSIONS));
    // Every session answers 200 before measuring starts.
    rt.block_on(async {
        for cookie in &many {
            let response = service.clone().oneshot(request(cookie)).await.unwrap();
            assert!(
                response.status().is_success(),
                "{name}: {}",
                response.status()
            );
        }
    });
    Subject {
        name,
        service,
        many: many.into(),
    }
}

/// Requests one after another on `sessions` sessions.
fn single<S, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    subject: &Subject<S>,
    label: &str,
    sessions: usize,
) where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    group.bench_function(BenchmarkId::new(label, subject.name), |b| {
        let mut offset = 0;
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                run(&subject.service, &subject.many[..sessions], offset, iters).await;
                offset += iters as usize;
                start.elapsed()
            })
        })
    });
}

/// `tasks` tasks sharing the requests, on `sessions` sessions.
fn concurrent<S, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    subject: &Subject<S>,
    label: &str,
    sessions: usize,
    tasks: usize,
) where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: Send + 'static,
{
    {
        {
            let id = BenchmarkId::new(format!("{label}_{tasks}_tasks"), subject.name);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let per_task = iters.div_ceil(tasks as u64);
                    rt.block_on(async {
                        let start = Instant::now();
                        let handles: Vec<_> = (0..tasks)
                            .map(|task| {
                                let service = subject.service.clone();
                                let cookies = Arc::clone(&subject.many);
                                // Many sessions: each task walks its own part of the ids.
                                let offset = task * (SESSIONS / tasks);
                                tokio::spawn(async move {
                                    run(&service, &cookies[..sessions], offset, per_task).await
                                })
                            })
                            .collect();
                        for handle in handles {
                            handle.await.unwrap();
                        }
                        start.elapsed()
                    })
                })
            });
        }
    }
}

fn benches(c: &mut Criterion) {
    let local = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // Sessions are begun on the runtime each subject is measured on; the stores do not care.
    let bare = subject(&local, "bare", bare());
    let ours = subject(&local, "ours_memory", ours());
    let (layer, app) = tower_sessions();
    let theirs = subject(&local, "tower_sessions_memory", layer.layer(app));

    // The three configurations of a scenario run back to back, so the ratios between them
    // see the same machine.
    let mut group = c.benchmark_group("single");
    for (label, sessions) in [("one_session", 1), ("many_sessions", SESSIONS)] {
        single(&mut group, &local, &bare, label, sessions);
        single(&mut group, &local, &ours, label, sessions);
        single(&mut group, &local, &theirs, label, sessions);
    }
    group.finish();

    let mut group = c.benchmark_group("concurrent");
    for tasks in TASKS {
        for (label, sessions) in [("one_session", 1), ("many_sessions", SESSIONS)] {
            concurrent(&mut group, &multi, &bare, label, sessions, tasks);
            concurrent(&mut group, &multi, &ours, label, sessions, tasks);
            concurrent(&mut group, &multi, &theirs, label, sessions, tasks);
        }
    }
    group.finish();
}

criterion_group! {
    name = overhead;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = benches
}
criterion_main!(overhead);
