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
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service, ServiceExt};
use tower_session_timeout::SessionTimeoutLayer;

async fn hello() -> &'static str {
    "Hello, World!"
}

async fn sign_in<S, B>(service: &S, count: usize) -> Vec<HeaderValue>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut cookies = Vec::with_capacity(count);
    for i in 0..count {
        let request = Request::get(format!("/login?id=profile-session-{i:08}-0123456789abcdef"))
            .body(Body::empty())
            .unwrap();
        let response = service.clone().oneshot(request).await.expect("login");
        let cookie = match response.headers().get(SET_COOKIE) {
            Some(set) => set.to_str().unwrap().split(';').next().unwrap().to_owned(),
            None => format!("id=profile-session-{i:08}-0123456789abcdef"),
        };
        cookies.push(HeaderValue::from_str(&cookie).unwrap());
    }
    cookies
}

async fn run<S, B>(service: S, sessions: usize, requests: usize)
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let cookies = sign_in(&service, sessions).await;
    for i in 0..requests {
        let mut request = Request::get("/").body(Body::empty()).unwrap();
        request
            .headers_mut()
            .insert(COOKIE, cookies[i % cookies.len()].clone());
        let response = service.clone().oneshot(request).await.expect("request");
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
    let app = Router::new().route("/", get(hello));
    rt.block_on(async {
        match config.as_str() {
            "bare" => run(app, sessions, requests).await,
            "ours" => {
                let login = Router::new().route(
                    "/login",
                    get(|request: Request<Body>| async move {
                        let id = request
                            .uri()
                            .query()
                            .unwrap_or_default()
                            .trim_start_matches("id=");
                        Response::builder()
                            .header(SET_COOKIE, format!("id={id}; Path=/; HttpOnly"))
                            .body(Body::empty())
                            .unwrap()
                    }),
                );
                let layer = SessionTimeoutLayer::builder()
                    .idle_timeout(Duration::from_secs(20 * 60))
                    .build()
                    .unwrap();
                run(layer.layer(app.merge(login)), sessions, requests).await
            }
            "tower-sessions" => {
                use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer};
                let login = Router::new().route(
                    "/login",
                    get(|session: Session| async move {
                        session.insert("user", 1_u32).await.expect("insert");
                        "signed in"
                    }),
                );
                let layer = SessionManagerLayer::new(MemoryStore::default())
                    .with_expiry(Expiry::OnInactivity(
                        tower_sessions::cookie::time::Duration::minutes(20),
                    ))
                    .with_always_save(true);
                run(layer.layer(app.merge(login)), sessions, requests).await
            }
            other => panic!("unknown configuration {other:?}: bare, ours or tower-sessions"),
        }
    });
}
