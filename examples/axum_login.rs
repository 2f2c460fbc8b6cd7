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
//! | `REMEMBER_IDLE_TIMEOUT_SECS` | idle timeout of a "remember me" session | 7 days |
//! | `REMEMBER_ABSOLUTE_TIMEOUT_SECS` | absolute timeout of a "remember me" session | 30 days |
//! | `MAX_SESSIONS_PER_USER` | most sessions one user may have; a sign-in beyond it ends the oldest (440, reason `superseded`) | no limit |
//! | `AUDIT_LOG` | a file to append one JSON line to per session end: `{"event":"session_end","user":"…","reason":"idle\|absolute\|ended\|superseded","at_ms":…}`, for every session, whether or not it is requested again, once across all instances sharing the store | none |
//! | `EXPIRY_SWEEP_SECS` | how often session ends are swept for announcement: each is announced within about this of its deadline | `5` |
//! | `TOMBSTONE_RETENTION_SECS` | how long an ended session is remembered (its id refused, its reason told) | 1 day |
//! | `PURGE_SECS` | how often the SQL stores delete records past their retention | `60` |
//!
//! The username is the session's owner, kept in the store, so every instance sharing the store
//! knows it:
//!
//! | route | answer |
//! |---|---|
//! | `POST /login` (`username`, `password`, optional `remember`) | signs in; `remember` (any non-empty value) uses the "remember me" timeouts |
//! | `GET /sessions` | `{"sessions":[{"handle":"…","created_at_ms":…,"last_seen_ms":…,"current":true},…]}`, the user's active sessions |
//! | `POST /sessions/end-others` | ends every other session of the user (each then gets 440, reason `ended`): `{"ended":2}` |
//! | `POST /sessions/{handle}/end` | ends one of the user's sessions: `{"ended":true}`, or 404 |
//! | `GET /metrics` | the Prometheus text format (the crate's metrics with `--features metrics`) |
//!
//! Passwords in `SESSION_STORE` (`redis://:secret@host/0`) never appear in the demo's output:
//! it prints the URL as `redis://:***@host/0`.

use std::error::Error;
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::header::{ACCEPT, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::json;
use tower_session_timeout::store::redact_credentials;
use tower_session_timeout::{
    OnLimit, SessionHandle, SessionRef, SessionStore, SessionTimeoutBuilder, SessionTimeoutLayer,
    SessionTimeouts, DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_WARN_BEFORE, MIN_WARN_BEFORE,
};

const DAY: u64 = 24 * 60 * 60;

/// What the demo reads from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub port: u16,
    pub idle_timeout: Duration,
    pub absolute_timeout: Option<Duration>,
    /// The timeouts of a "remember me" session.
    pub remember: SessionTimeouts,
    /// The most sessions one user may have at once.
    pub max_sessions_per_user: Option<u32>,
    /// Where session ends are written, one JSON line each.
    pub audit_log: Option<std::path::PathBuf>,
    /// How often session ends are swept for announcement.
    pub expiry_sweep: Duration,
    /// How long ended sessions are remembered, if not the crate's default.
    pub tombstone_retention: Option<Duration>,
    /// How often the SQL stores purge.
    pub purge_every: Duration,
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
        let remember_idle = number("REMEMBER_IDLE_TIMEOUT_SECS")?.unwrap_or(7 * DAY);
        let remember_absolute = number("REMEMBER_ABSOLUTE_TIMEOUT_SECS")?.unwrap_or(30 * DAY);
        if remember_idle == 0 || remember_absolute < remember_idle {
            return Err(format!(
                "REMEMBER_IDLE_TIMEOUT_SECS={remember_idle} and REMEMBER_ABSOLUTE_TIMEOUT_SECS={remember_absolute}: the idle timeout must be positive and the absolute one at least as long"
            ));
        }
        let remember = SessionTimeouts::new(Duration::from_secs(remember_idle))
            .with_absolute(Duration::from_secs(remember_absolute));
        let expiry_sweep = match number("EXPIRY_SWEEP_SECS")? {
            Some(0) => {
                return Err(
                    "EXPIRY_SWEEP_SECS=0 would sweep without pause: give at least 1".to_owned(),
                )
            }
            seconds => Duration::from_secs(seconds.unwrap_or(5)),
        };
        let tombstone_retention = number("TOMBSTONE_RETENTION_SECS")?.map(Duration::from_secs);
        let purge_every = match number("PURGE_SECS")? {
            Some(0) => {
                return Err("PURGE_SECS=0 would purge without pause: give at least 1".to_owned())
            }
            seconds => Duration::from_secs(seconds.unwrap_or(60)),
        };
        let audit_log = var("AUDIT_LOG")
            .filter(|path| !path.trim().is_empty())
            .map(std::path::PathBuf::from);
        let max_sessions_per_user = match number("MAX_SESSIONS_PER_USER")? {
            None => None,
            Some(0) => return Err("MAX_SESSIONS_PER_USER=0 would let no one sign in: give at least 1, or leave it unset for no limit".to_owned()),
            Some(max) => Some(u32::try_from(max).map_err(|_| format!("MAX_SESSIONS_PER_USER={max} is too large"))?),
        };
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
            remember,
            max_sessions_per_user,
            audit_log,
            expiry_sweep,
            tombstone_retention,
            purge_every,
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
) -> SessionTimeoutBuilder<St> {
    // A "remember me" session may have its longer timeouts; no other may exceed the layer's.
    let bound = SessionTimeouts::new(settings.remember.idle().max(settings.idle_timeout))
        .with_absolute(
            settings
                .remember
                .absolute()
                .into_iter()
                .chain(settings.absolute_timeout)
                .max()
                .unwrap_or(settings.idle_timeout),
        );
    let audit_log = settings.audit_log.clone();
    let builder = builder
        .on_session_end(move |end| record_end(audit_log.clone(), end))
        .sweep_interval(settings.expiry_sweep)
        .idle_timeout(settings.idle_timeout)
        .max_session_timeouts(bound)
        .exempt_path("/login")
        .exempt_path("/favicon.ico")
        .keep_alive_path("/session/keepalive")
        .status_path("/session/status")
        .login_url("/login");
    let builder = match settings.tombstone_retention {
        Some(retention) => builder.tombstone_retention(retention),
        None => builder,
    };
    let builder = match settings.max_sessions_per_user {
        Some(max) => builder.max_sessions_per_owner(max, OnLimit::EndOldest),
        None => builder,
    };
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

/// Announces one session end: a line in the audit log, if there is one, and in the output.
async fn record_end(audit_log: Option<std::path::PathBuf>, end: tower_session_timeout::SessionEnd) {
    tracing::info!(user = ?end.owner, reason = %end.reason, "session ended");
    let Some(path) = audit_log else { return };
    let line = json!({
        "event": "session_end",
        "user": end.owner,
        "reason": end.reason.as_str(),
        "at_ms": end.at.as_unix_millis(),
    });
    // One write of a whole line to a file opened for appending: lines from concurrent hooks
    // and from other instances sharing the file never interleave.
    let write = async {
        use tokio::io::AsyncWriteExt;
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        file.write_all(format!("{line}\n").as_bytes()).await?;
        // Tokio's file writes in the background: the line is in the file only once flushed.
        file.flush().await
    };
    if let Err(error) = write.await {
        // Panicking makes the announcer try again on a later sweep.
        panic!("could not write to AUDIT_LOG {}: {error}", path.display());
    }
}

/// The demo's routes behind `layer`. The layer knows who owns each session (the username,
/// given at sign-in), so the app keeps no sessions of its own and any instance sharing the
/// store can serve any user.
pub fn router<St: SessionStore>(layer: SessionTimeoutLayer<St>, settings: &Settings) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/login", get(login_form).post(login))
        .route("/dashboard", get(dashboard))
        .route("/logout", post(logout))
        .route("/sessions", get(sessions))
        .route("/sessions/end-others", post(end_others))
        .route("/sessions/{handle}/end", post(end_one))
        .with_state(settings.remember)
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
             <label><input name=\"remember\" type=\"checkbox\" value=\"on\"> Remember me</label>\
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
    #[serde(default)]
    remember: String,
}

async fn login(
    State(remember): State<SessionTimeouts>,
    Extension(session): Extension<SessionHandle>,
    Form(credentials): Form<Credentials>,
) -> Response {
    if credentials.username.trim().is_empty() || credentials.password.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            login_page(Some("Enter a username and a password.")),
        )
            .into_response();
    }
    let id = format!("{:032x}", rand::random::<u128>());
    // Setting the cookie is all it takes: the layer sees it and begins the session, owned by
    // this user (and with the "remember me" timeouts, if asked).
    session.set_owner(credentials.username);
    let mut cookie = format!("id={id}; Path=/; HttpOnly; SameSite=Lax");
    if !credentials.remember.is_empty() {
        session.set_timeouts(remember);
        // The browser keeps the cookie across restarts for as long as the session may live.
        let lifetime = remember.absolute().unwrap_or(remember.idle());
        cookie.push_str(&format!("; Max-Age={}", lifetime.as_secs()));
    }
    ([(SET_COOKIE, cookie)], Redirect::to("/dashboard")).into_response()
}

/// A store failure in one of the demo's own calls.
fn unavailable(error: tower_session_timeout::StoreError) -> Response {
    tracing::warn!(%error, "session store call failed");
    let body = Json(json!({"error": "the session store is unavailable"}));
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

fn not_signed_in() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": "not signed in"})),
    )
        .into_response()
}

/// `GET /sessions`: the signed-in user's active sessions.
async fn sessions(Extension(session): Extension<SessionHandle>) -> Response {
    if session.info().is_none() {
        return not_signed_in();
    }
    match session.list_sessions().await {
        Ok(listed) => {
            let sessions: Vec<_> = listed
                .iter()
                .map(|s| {
                    json!({
                        "handle": s.session().to_string(),
                        "created_at_ms": s.created_at().as_unix_millis(),
                        "last_seen_ms": s.last_seen().as_unix_millis(),
                        "current": s.is_current(),
                    })
                })
                .collect();
            Json(json!({ "sessions": sessions })).into_response()
        }
        Err(error) => unavailable(error),
    }
}

/// Whether the request came from a page's form (then the answer goes back to the dashboard).
fn from_a_page(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// `POST /sessions/end-others`: signs the user out everywhere else.
async fn end_others(Extension(session): Extension<SessionHandle>, headers: HeaderMap) -> Response {
    if session.info().is_none() {
        return not_signed_in();
    }
    match session.end_others().await {
        Ok(_) if from_a_page(&headers) => Redirect::to("/dashboard").into_response(),
        Ok(ended) => Json(json!({ "ended": ended })).into_response(),
        Err(error) => unavailable(error),
    }
}

/// `POST /sessions/{handle}/end`: ends one of the user's sessions.
async fn end_one(
    Extension(session): Extension<SessionHandle>,
    Path(handle): Path<String>,
    headers: HeaderMap,
) -> Response {
    if session.info().is_none() {
        return not_signed_in();
    }
    let Ok(reference) = handle.parse::<SessionRef>() else {
        let body = Json(json!({"error": "not a session handle"}));
        return (StatusCode::BAD_REQUEST, body).into_response();
    };
    match session.end_session(&reference).await {
        Ok(true) if from_a_page(&headers) => Redirect::to("/dashboard").into_response(),
        Ok(true) => Json(json!({ "ended": true })).into_response(),
        Ok(false) => (StatusCode::NOT_FOUND, Json(json!({ "ended": false }))).into_response(),
        Err(error) => unavailable(error),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn dashboard(Extension(session): Extension<SessionHandle>) -> Response {
    // The layer already answered 440 for an expired session; no cookie means never signed in.
    let Some(info) = session.info() else {
        return Redirect::to("/login").into_response();
    };
    let name = match session.owner().await {
        Ok(owner) => owner.unwrap_or_else(|| "someone".to_owned()),
        Err(error) => return unavailable(error),
    };
    let others = match session.list_sessions().await {
        Ok(listed) => listed.iter().filter(|s| !s.is_current()).count(),
        Err(error) => return unavailable(error),
    };
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
             <p>Signed in on <span id=\"other-sessions\">{others}</span> other device(s) (<a href=\"/sessions\">list</a>).</p>\
             <form method=\"post\" action=\"/sessions/end-others\"><button type=\"submit\">Sign out everywhere else</button></form>\
             <form method=\"post\" action=\"/logout\" data-session-signout><button type=\"submit\">Sign out</button></form>\
             <script src=\"{CLIENT_SCRIPT_PATH}\" defer></script>",
            escape(&name),
            info.idle_deadline().as_unix_millis(),
        ),
    )
    .into_response()
}

async fn logout() -> Response {
    // Clearing the cookie ends the session in the layer too.
    let clear = "id=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax";
    ([(SET_COOKIE, clear)], Redirect::to("/login")).into_response()
}

async fn serve<St: SessionStore>(
    settings: &Settings,
    builder: SessionTimeoutBuilder<St>,
) -> Result<(), Box<dyn Error>> {
    let layer = configure(builder, settings).build()?;
    // Session ends go to the audit log from here, off the request path.
    layer.spawn_announcer();
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    // Without its HTTP listener the exporter keeps every histogram sample until upkeep
    // drains it: unscraped, memory would grow with every request (found by the soak).
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port)).await?;
    let address = listener.local_addr()?;
    println!("Demo listening on http://{address}; sign in at http://{address}/login");
    println!(
        "Idle timeout {:?}, absolute timeout {:?}, store {:?}",
        settings.idle_timeout, settings.absolute_timeout, settings.store
    );
    println!(
        "Remember me: idle {:?}, absolute {:?}; most sessions per user: {}",
        settings.remember.idle(),
        settings.remember.absolute(),
        settings
            .max_sessions_per_user
            .map_or("no limit".to_owned(), |max| max.to_string())
    );
    if client_timing(settings.idle_timeout).is_none() {
        println!("Idle timeout under 22 s: the browser client (which warns 20 s ahead) is off");
    }
    let app = router(layer, settings).route(
        "/metrics",
        get(move || std::future::ready(metrics.render())),
    );
    axum::serve(listener, app).await?;
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
            store.spawn_purge(settings.purge_every, tower_session_timeout::SystemClock);
            serve(&settings, builder.store(store)).await
        }
        #[cfg(not(feature = "postgres"))]
        StoreChoice::Postgres(_) => Err(missing_feature("postgres", "postgres://")),
        #[cfg(feature = "sqlite")]
        StoreChoice::Sqlite(url) => {
            let store = tower_session_timeout::SqliteStore::connect(url).await?;
            store.migrate().await?;
            store.spawn_purge(settings.purge_every, tower_session_timeout::SystemClock);
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
