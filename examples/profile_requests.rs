//! N requests through one configuration of `benches/overhead.rs`, for a profiler. Counting
//! instructions with callgrind is repeatable whatever else the machine runs:
//!
//! ```text
//! cargo build --release --example profile_requests
//! for n in 1000 21000; do
//!   valgrind --tool=callgrind --callgrind-out-file=target/cg.ours.$n \
//!     target/release/examples/profile_requests ours $n
//! done
//! # instructions per request: (total at 21000 - total at 1000) / 20000
//! ```
//!
//! Configurations: `bare`, `ours` (the layer on `MemoryStore`), `tower-sessions` (its
//! `MemoryStore`, `Expiry::OnInactivity`, always-save). Requests go one after another on a
//! current-thread runtime, round robin over `SESSIONS` (default 1000) sessions begun first.

use std::hint::black_box;

use axum::body::Body;
use http::{Request, Response};
use tower::{Layer, Service, ServiceExt};

#[path = "../benches/common/mod.rs"]
mod common;

use common::{bare, ours, request, sign_in, tower_sessions};

async fn run<S, B>(service: S, sessions: usize, requests: usize)
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let cookies = sign_in(&service, sessions).await;
    for i in 0..requests {
        let response = service
            .clone()
            .oneshot(request(&cookies[i % cookies.len()]))
            .await
            .expect("request");
        assert!(response.status().is_success());
        black_box(response);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let config = args.next().unwrap_or_else(|| "ours".to_owned());
    let requests: usize = args.next().map_or(10_000, |n| n.parse().expect("a count"));
    let sessions: usize = std::env::var("SESSIONS").map_or(1000, |n| n.parse().expect("a count"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match config.as_str() {
            "bare" => run(bare(), sessions, requests).await,
            "ours" => run(ours(), sessions, requests).await,
            "tower-sessions" => {
                let (layer, app) = tower_sessions();
                run(layer.layer(app), sessions, requests).await
            }
            other => panic!("unknown configuration {other:?}: bare, ours or tower-sessions"),
        }
    });
}
