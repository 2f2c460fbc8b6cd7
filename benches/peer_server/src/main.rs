//! tower-sessions 0.14 as `examples/bench_server.rs` serves the crate: the same hello-world
//! app, a session begun by `GET /login`, the same 20-minute sliding idle timeout, saved on
//! every request (`with_always_save`, as a sliding expiry needs). `PEER_STORE` picks the
//! store: `memory`, `redis` (`REDIS_URL`) or `postgres` (`DATABASE_URL`); `PORT` the port
//! (127.0.0.1 only), `WORKERS` the runtime's threads.

use std::error::Error;
use std::net::SocketAddr;

use axum::routing::get;
use axum::Router;
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

async fn hello() -> &'static str {
    "Hello, World!"
}

async fn login(session: Session) -> &'static str {
    session.insert("user", 1_u32).await.expect("insert");
    "signed in"
}

async fn serve<S: SessionStore + Clone>(store: S, addr: SocketAddr) -> Result<(), Box<dyn Error>> {
    let layer = SessionManagerLayer::new(store)
        .with_secure(false)
        .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::minutes(20)))
        .with_always_save(true);
    let app = Router::new()
        .route("/", get(hello))
        .route("/login", get(login))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn run() -> Result<(), Box<dyn Error>> {
    let port: u16 = env("PORT", "3100").parse()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match env("PEER_STORE", "memory").as_str() {
        "memory" => serve(tower_sessions::MemoryStore::default(), addr).await,
        "redis" => {
            use tower_sessions_redis_store::fred::prelude::*;
            let config = Config::from_url(&env("REDIS_URL", "redis://127.0.0.1:6379/0"))?;
            let pool = Pool::new(config, None, None, None, 6)?;
            pool.init().await?;
            serve(tower_sessions_redis_store::RedisStore::new(pool), addr).await
        }
        "postgres" => {
            let url = env("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres");
            let pool = tower_sessions_sqlx_store::sqlx::PgPool::connect(&url).await?;
            let store = tower_sessions_sqlx_store::PostgresStore::new(pool)
                .with_table_name("bench_peer_sessions")?;
            store.migrate().await?;
            serve(store, addr).await
        }
        other => Err(format!("PEER_STORE={other:?}: use memory, redis or postgres").into()),
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
        eprintln!("peer-server: {error}");
        std::process::exit(1);
    }
}
