//! The server `benches/load.sh` drives with wrk: an axum hello world on 127.0.0.1, bare or
//! behind a session layer.
//!
//! ```text
//! BENCH_CONFIG=memory PORT=3100 cargo run --release --all-features --example bench_server
//! ```
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `BENCH_CONFIG` | `bare`, `noop` (a pass-through layer), `memory`, `noop-around` and `memory-around` (the layer around the whole router, not added with `Router::layer`), `redis`, `redis-near`, `postgres`, `postgres-near`, `sqlite`, `tower-sessions` | `bare` |
//! | `PORT` | port on 127.0.0.1 | `3100` |
//! | `WORKERS` | Tokio worker threads | `1` |
//! | `REDIS_URL` | for `redis` (`redis-cluster://host:port[,host:port…]` for a Redis Cluster) | `redis://127.0.0.1:6379/0` |
//! | `DATABASE_URL` | for `postgres` and `postgres-near` | `postgres://postgres@127.0.0.1:5432/postgres` |
//! | `SQLITE_PATH` | for `sqlite` | `target/bench-sessions.sqlite3` |
//! | `TOUCH_INTERVAL_SECS` | ours: skip refresh writes younger than this | none (`redis-near`, `postgres-near`: 60) |
//!
//! `GET /` answers "Hello, World!". `GET /login` begins a session and answers its cookie in
//! `Set-Cookie`: for ours a random `id` the layer observes, for tower-sessions a session with
//! one value inserted (so it is saved). The bare server sets an `id` cookie too, which nothing
//! reads. Sessions use a 20-minute sliding idle timeout in every configuration
//! (tower-sessions: `Expiry::OnInactivity` with `with_always_save(true)`).
//!
//! `redis-near` and `postgres-near` are the shared stores as the docs recommend them for
//! production when requests should not wait for the store: `with_near_cache` and a 60 s touch
//! interval; `max_age` 1 s on Redis (on a Cluster, a publish can miss a listener whose node is
//! cut off from the cluster bus) and 60 s, the touch interval, on PostgreSQL (a notification
//! commits with its change).

use std::convert::Infallible;
use std::error::Error;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Request;
use axum::http::header::SET_COOKIE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use axum::ServiceExt;
use tower_session_timeout::{SessionStore, SessionTimeoutLayer};

const IDLE: Duration = Duration::from_secs(20 * 60);

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn hello() -> &'static str {
    "Hello, World!"
}

/// Sets a fresh random `id` cookie.
async fn login_cookie() -> impl IntoResponse {
    let id = format!("{:032x}", rand::random::<u128>());
    (
        [(SET_COOKIE, format!("id={id}; Path=/; HttpOnly"))],
        "signed in",
    )
}

fn app() -> Router {
    Router::new()
        .route("/", get(hello))
        .route("/login", get(login_cookie))
}

async fn serve(app: Router, addr: SocketAddr) -> Result<(), Box<dyn Error>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bench_server listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}

/// Serves `layer` around the whole router, as `ServiceBuilder` or `Layer::layer` put it, the
/// response body made axum's as `Router::layer` makes it.
async fn serve_around<L>(layer: L, addr: SocketAddr) -> Result<(), Box<dyn Error>>
where
    L: tower::Layer<Router>,
    L::Service: tower::Service<Request, Error = Infallible> + Clone + Send + 'static,
    <L::Service as tower::Service<Request>>::Response: IntoResponse,
    <L::Service as tower::Service<Request>>::Future: Send,
{
    let service = tower::ServiceBuilder::new()
        .map_response(IntoResponse::into_response)
        .layer(layer)
        .service(app());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("bench_server listening on http://{addr}");
    axum::serve(listener, service.into_make_service()).await?;
    Ok(())
}

/// A layer that does nothing: what adding any layer costs.
fn noop() -> tower::util::MapRequestLayer<fn(Request) -> Request> {
    tower::util::MapRequestLayer::new(std::convert::identity)
}

async fn ours<St: SessionStore>(store: St, addr: SocketAddr) -> Result<(), Box<dyn Error>> {
    ours_touching(store, addr, None).await
}

/// Ours, refreshing the store at most every `TOUCH_INTERVAL_SECS`, or else `touch_secs`.
async fn ours_touching<St: SessionStore>(
    store: St,
    addr: SocketAddr,
    touch_secs: Option<u64>,
) -> Result<(), Box<dyn Error>> {
    let mut builder = SessionTimeoutLayer::builder()
        .store(store)
        .idle_timeout(IDLE);
    let touch = match std::env::var("TOUCH_INTERVAL_SECS") {
        Ok(secs) => Some(secs.parse()?),
        Err(_) => touch_secs,
    };
    if let Some(secs) = touch {
        builder = builder.touch_interval(Duration::from_secs(secs));
    }
    let layer = builder.build()?;
    // As an app adds it: `Router::layer`, the same way tower-sessions is added below.
    serve(app().layer(layer), addr).await
}

async fn run() -> Result<(), Box<dyn Error>> {
    let port: u16 = env("PORT", "3100").parse()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match env("BENCH_CONFIG", "bare").as_str() {
        "bare" => serve(app(), addr).await,
        // A layer that does nothing, added as ours is: the floor `Router::layer` itself sets.
        "noop" => serve(app().layer(noop()), addr).await,
        "memory" => ours(tower_session_timeout::MemoryStore::new(), addr).await,
        // The layer around the whole router instead of on its routes (`Router::layer`).
        "memory-around" => {
            let layer = SessionTimeoutLayer::builder()
                .store(tower_session_timeout::MemoryStore::new())
                .idle_timeout(IDLE)
                .build()?;
            serve_around(layer, addr).await
        }
        "noop-around" => serve_around(noop(), addr).await,
        #[cfg(feature = "redis")]
        "redis" => {
            let url = env("REDIS_URL", "redis://127.0.0.1:6379/0");
            let store = tower_session_timeout::RedisStore::open(&url)
                .await?
                .with_prefix("bench-session:");
            ours(store, addr).await
        }
        #[cfg(feature = "redis")]
        "redis-near" => {
            let url = env("REDIS_URL", "redis://127.0.0.1:6379/0");
            let store = tower_session_timeout::RedisStore::open(&url)
                .await?
                .with_prefix("bench-session:")
                .with_near_cache(Duration::from_secs(1), 100_000)
                .await?;
            ours_touching(store, addr, Some(60)).await
        }
        #[cfg(feature = "postgres")]
        "postgres" => {
            let url = env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            );
            let store = tower_session_timeout::PostgresStore::connect(&url)
                .await?
                .with_table_name("bench_session_timeouts")?;
            store.migrate().await?;
            ours(store, addr).await
        }
        #[cfg(feature = "postgres")]
        "postgres-near" => {
            let url = env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            );
            let store = tower_session_timeout::PostgresStore::connect(&url)
                .await?
                .with_table_name("bench_session_timeouts")?;
            store.migrate().await?;
            // A notification is atomic with its change, so `max_age` bounds only what the
            // touch interval already lets lag (another instance's refresh): the same 60 s.
            let store = store
                .with_near_cache(Duration::from_secs(60), 100_000)
                .await?;
            ours_touching(store, addr, Some(60)).await
        }
        #[cfg(feature = "sqlite")]
        "sqlite" => {
            let path = env("SQLITE_PATH", "target/bench-sessions.sqlite3");
            let store = tower_session_timeout::SqliteStore::open(&path).await?;
            store.migrate().await?;
            ours(store, addr).await
        }
        "tower-sessions" => {
            use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer};
            let login = |session: Session| async move {
                session.insert("user", 1_u32).await.expect("insert");
                "signed in"
            };
            let inner = Router::new()
                .route("/", get(hello))
                .route("/login", get(login));
            let layer = SessionManagerLayer::new(MemoryStore::default())
                .with_expiry(Expiry::OnInactivity(
                    tower_sessions::cookie::time::Duration::minutes(20),
                ))
                .with_always_save(true);
            serve(inner.layer(layer), addr).await
        }
        other => Err(format!(
            "BENCH_CONFIG={other:?}: use bare, memory, redis, redis-near, postgres, postgres-near, sqlite or tower-sessions \
             (redis, postgres and sqlite need their features)"
        )
        .into()),
    }
}

fn main() {
    let workers: usize = env("WORKERS", "1").parse().expect("WORKERS is a number");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    if let Err(error) = runtime.block_on(run()) {
        // An error from a driver may quote the URL it was given.
        let error =
            tower_session_timeout::store::redact_credentials(&error.to_string()).into_owned();
        eprintln!("bench_server: {error}");
        std::process::exit(1);
    }
}
