//! The demo app: sign in, leave it idle past the timeout, and get `440 Login Time-out`.
//!
//! ```text
//! cargo run --example axum_login
//! ```
//!
//! Then open <http://127.0.0.1:3000/login>. Settings come from the environment:
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `PORT` | port on 127.0.0.1 | `3000` |
//! | `IDLE_TIMEOUT_SECS` | idle timeout | `60` |
//! | `ABSOLUTE_TIMEOUT_SECS` | absolute timeout | none |
//! | `SESSION_STORE` | `memory`, `redis://host:port/db`, `redis-cluster://host:port[,host:port…]` (seed nodes of a Redis Cluster), `postgres://user@host:port/db`, `sqlite://path` | `memory` |
//!
//! Passwords in `SESSION_STORE` (`redis://:secret@host/0`) never appear in the demo's output:
//! it prints the URL as `redis://:***@host/0`.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use tower_session_timeout::store::{redact_credentials, SessionKey};
use tower_session_timeout::{
    SessionInfo, SessionStore, SessionTimeoutBuilder, SessionTimeoutLayer,
    DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_WARN_BEFORE, MIN_WARN_BEFORE,
};

/// What the demo reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub port: u16,
    pub idle_timeout: Duration,
    pub absolute_timeout: Option<Duration>,
    pub store: StoreChoice,
}

/// Where the demo keeps sessions, from `SESSION_STORE`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreChoice {
    Memory,
    Redis(String),
    /// `redis-cluster://host:port[,host:port…]`: seed nodes of a Redis Cluster.
    RedisCluster(String),
    Postgres(String),
    Sqlite(String),
}

/// With the URL's password replaced by `***`: the demo prints its settings at start-up.
impl std::fmt::Debug for StoreChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, url) = match self {
            StoreChoice::Memory => return f.write_str("Memory"),
            StoreChoice::Redis(url) => ("Redis", url),
            StoreChoice::RedisCluster(url) => ("RedisCluster", url),
            StoreChoice::Postgres(url) => ("Postgres", url),
            StoreChoice::Sqlite(url) => ("Sqlite", url),
        };
        f.debug_tuple(kind).field(&redact_credentials(url)).finish()
    }
}

impl Settings {
    /// Reads the settings through `var` (the environment, or a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let number = |name: &str| -> Result<Option<u64>, String> {
            match var(name) {
                None => Ok(None),
                Some(text) => text
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name}={text:?} is not a whole number")),
            }
        };
        let port = match number("PORT")? {
            None => 3000,
            Some(port) => {
                u16::try_from(port).map_err(|_| format!("PORT={port} is not a port number"))?
            }
        };
        let idle_timeout = Duration::from_secs(number("IDLE_TIMEOUT_SECS")?.unwrap_or(60));
        let absolute_timeout = number("ABSOLUTE_TIMEOUT_SECS")?.map(Duration::from_secs);
        let store = match var("SESSION_STORE").as_deref().map(str::trim) {
            None | Some("") | Some("memory") => StoreChoice::Memory,
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                StoreChoice::Redis(url.to_owned())
            }
            Some(url)
                if url.starts_with("redis-cluster://") || url.starts_with("rediss-cluster://") =>
            {
                StoreChoice::RedisCluster(url.to_owned())
            }
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreChoice::Postgres(url.to_owned())
            }
            Some(url) if url.starts_with("sqlite://") => StoreChoice::Sqlite(url.to_owned()),
            Some(other) => {
                return Err(format!(
                    "SESSION_STORE={:?} is not a store: use memory, redis://host:port/db, redis-cluster://host:port[,host:port...], postgres://user@host:port/db or sqlite://path",
                    redact_credentials(other)
                ))
            }
        };
        Ok(Settings {
            port,
            idle_timeout,
            absolute_timeout,
            store,
        })
    }
}

/// Where the demo serves the browser client script.
pub const CLIENT_SCRIPT_PATH: &str = "/session/timeout.js";

/// The browser client's warning time and keep-alive interval for an idle timeout: the warning
/// a third of the way before the deadline, within 20 s (WCAG 2.2.1's least) and 60 s, and
/// keep-alives at most every half of the time before it. `None` when the idle timeout is too
/// short to warn 20 s ahead.
pub fn client_timing(idle: Duration) -> Option<(Duration, Duration)> {
    let warn_before = (idle / 3).clamp(MIN_WARN_BEFORE, DEFAULT_WARN_BEFORE);
    let interval = (idle.checked_sub(warn_before)? / 2).min(DEFAULT_KEEP_ALIVE_INTERVAL);
    (interval >= Duration::from_secs(1)).then_some((warn_before, interval))
}

/// The demo's session settings on any store.
pub fn configure<St>(
    builder: SessionTimeoutBuilder<St>,
    settings: &Settings,
    users: &Users,
) -> SessionTimeoutBuilder<St> {
    let signed_in = users.clone();
    let builder = builder
        // Expired or signed out: forget who it was, so the map holds only live sessions.
        .on_expiry(move |event| signed_in.forget(&event.session()))
        .idle_timeout(settings.idle_timeout)
        .exempt_path("/login")
        .exempt_path("/favicon.ico")
        .keep_alive_path("/session/keepalive")
        .status_path("/session/status")
        .login_url("/login");
    let builder = match client_timing(settings.idle_timeout) {
        Some((warn_before, interval)) => builder
            .client_script_path(CLIENT_SCRIPT_PATH)
            .warn_before(warn_before)
            .keep_alive_interval(interval),
        None => builder,
    };
    match settings.absolute_timeout {
        Some(absolute) => builder.absolute_timeout(absolute),
        None => builder,
    }
}

/// Who is signed in under which session. The layer only tracks time; what a session means is
/// the app's business. Keyed by the hash of the id, so the layer's expiry hook can forget a
/// session's user the moment the session is over.
#[derive(Clone, Default)]
pub struct Users(Arc<Mutex<HashMap<SessionKey, String>>>);

impl Users {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, String>> {
        self.0.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn insert(&self, id: &str, name: String) {
        self.map().insert(SessionKey::from_id(id), name);
    }

    fn forget(&self, session: &SessionKey) {
        self.map().remove(session);
    }

    fn name(&self, id: &str) -> Option<String> {
        self.map().get(&SessionKey::from_id(id)).cloned()
    }

    /// How many users are signed in.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether nobody is signed in.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

/// The demo's routes behind `layer`.
pub fn router<St: SessionStore>(layer: SessionTimeoutLayer<St>, users: Users) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/login", get(login_form).post(login))
        .route("/dashboard", get(dashboard))
        .route("/logout", post(logout))
        .with_state(users)
        .layer(layer)
}

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem}label{display:block;margin:.5rem 0}";

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title><style>{PAGE_STYLE}</style></head><body><h1>{title}</h1>{body}</body></html>"
    ))
}

fn login_page(error: Option<&str>) -> Html<String> {
    let error = error.map_or(String::new(), |error| {
        format!("<p role=\"alert\">{error}</p>")
    });
    page(
        "Sign in",
        &format!(
            "{error}<form method=\"post\" action=\"/login\">\
             <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label>\
             <button type=\"submit\">Sign in</button></form>\
             <p>Any non-empty username and password will do.</p>"
        ),
    )
}

async fn login_form() -> Html<String> {
    login_page(None)
}

#[derive(serde::Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

async fn login(State(users): State<Users>, Form(credentials): Form<Credentials>) -> Response {
    if credentials.username.trim().is_empty() || credentials.password.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            login_page(Some("Enter a username and a password.")),
        )
            .into_response();
    }
    let id = format!("{:032x}", rand::random::<u128>());
    users.insert(&id, credentials.username);
    // Setting the cookie is all it takes: the layer sees it and begins the session.
    let cookie = format!("id={id}; Path=/; HttpOnly; SameSite=Lax");
    ([(SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("id=").map(str::to_owned))
        .filter(|id| !id.is_empty())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn dashboard(
    State(users): State<Users>,
    headers: HeaderMap,
    info: Option<Extension<SessionInfo>>,
) -> Response {
    // The layer already answered 440 for an expired session; no cookie means never signed in.
    let (Some(id), Some(Extension(info))) = (session_id(&headers), info) else {
        return Redirect::to("/login").into_response();
    };
    let name = users.name(&id).unwrap_or_else(|| "someone".to_owned());
    let absolute = info
        .absolute_deadline()
        .map_or("none".to_owned(), |deadline| {
            format!("{} (Unix ms)", deadline.as_unix_millis())
        });
    page(
        "Dashboard",
        &format!(
            "<p>Signed in as <strong>{}</strong>.</p>\
             <p>Idle deadline: <span id=\"idle-deadline\">{}</span> (Unix ms); absolute deadline: {absolute}.</p>\
             <p>While you use this page, it keeps your session alive. Leave it alone and a warning \
             offers to keep you signed in; ignore that too and the page shows <code>440 Login Time-out</code>.</p>\
             <form method=\"post\" action=\"/logout\" data-session-signout><button type=\"submit\">Sign out</button></form>\
             <script src=\"{CLIENT_SCRIPT_PATH}\" defer></script>",
            escape(&name),
            info.idle_deadline().as_unix_millis(),
        ),
    )
    .into_response()
}

async fn logout(State(users): State<Users>, headers: HeaderMap) -> Response {
    if let Some(id) = session_id(&headers) {
        users.forget(&SessionKey::from_id(&id));
    }
    // Clearing the cookie ends the session in the layer too.
    let clear = "id=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax";
    ([(SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

async fn serve<St: SessionStore>(
    settings: &Settings,
    builder: SessionTimeoutBuilder<St>,
) -> Result<(), Box<dyn Error>> {
    let users = Users::default();
    let layer = configure(builder, settings, &users).build()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await?;
    let address = listener.local_addr()?;
    println!("Demo listening on http://{address}; sign in at http://{address}/login");
    println!(
        "Idle timeout {:?}, absolute timeout {:?}, store {:?}",
        settings.idle_timeout, settings.absolute_timeout, settings.store
    );
    if client_timing(settings.idle_timeout).is_none() {
        println!("Idle timeout under 22 s: the browser client (which warns 20 s ahead) is off");
    }
    axum::serve(listener, router(layer, users)).await?;
    Ok(())
}

/// Starts the demo on the store `SESSION_STORE` names; a store whose feature is not compiled
/// in is an error that says how to enable it.
async fn run(settings: Settings) -> Result<(), Box<dyn Error>> {
    let builder = SessionTimeoutLayer::builder();
    match &settings.store {
        StoreChoice::Memory => serve(&settings, builder).await,
        #[cfg(feature = "redis")]
        StoreChoice::Redis(url) | StoreChoice::RedisCluster(url) => {
            // One constructor for both: the scheme says which topology.
            let store = tower_session_timeout::RedisStore::open(url).await?;
            serve(&settings, builder.store(store)).await
        }
        #[cfg(not(feature = "redis"))]
        StoreChoice::Redis(_) => Err(missing_feature("redis", "redis://")),
        #[cfg(not(feature = "redis"))]
        StoreChoice::RedisCluster(_) => Err(missing_feature("redis", "redis-cluster://")),
        #[cfg(feature = "postgres")]
        StoreChoice::Postgres(url) => {
            let store = tower_session_timeout::PostgresStore::connect(url).await?;
            store.migrate().await?;
            // Dropping the handle leaves the task running for the life of the demo.
            store.spawn_purge(Duration::from_secs(60), tower_session_timeout::SystemClock);
            serve(&settings, builder.store(store)).await
        }
        #[cfg(not(feature = "postgres"))]
        StoreChoice::Postgres(_) => Err(missing_feature("postgres", "postgres://")),
        #[cfg(feature = "sqlite")]
        StoreChoice::Sqlite(url) => {
            let store = tower_session_timeout::SqliteStore::connect(url).await?;
            store.migrate().await?;
            store.spawn_purge(Duration::from_secs(60), tower_session_timeout::SystemClock);
            serve(&settings, builder.store(store)).await
        }
        #[cfg(not(feature = "sqlite"))]
        StoreChoice::Sqlite(_) => Err(missing_feature("sqlite", "sqlite://")),
    }
}

#[allow(dead_code)]
fn missing_feature(feature: &str, scheme: &str) -> Box<dyn Error> {
    format!(
        "SESSION_STORE={scheme}... needs the `{feature}` feature: cargo run --example axum_login --features {feature}"
    )
    .into()
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_session_timeout=debug".into()),
        )
        .init();
    let outcome = match Settings::from_vars(|name| std::env::var(name).ok()) {
        Ok(settings) => run(settings).await,
        Err(error) => Err(error.into()),
    };
    if let Err(error) = outcome {
        // An error from a driver may quote the URL it was given.
        eprintln!("axum_login: {}", redact_credentials(&error.to_string()));
        std::process::exit(1);
    }
}
