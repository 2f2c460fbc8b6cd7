//! Idle and absolute session timeouts for [tower] and [axum], enforced on the server and
//! answered with `440 Login Time-out`, the way IIS and Exchange answer an expired session.
//!
//! [tower]: https://docs.rs/tower
//! [axum]: https://docs.rs/axum
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use tower_session_timeout::SessionTimeoutLayer;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let timeouts = SessionTimeoutLayer::builder()
//!     .idle_timeout(Duration::from_secs(20 * 60))
//!     .absolute_timeout(Duration::from_secs(8 * 60 * 60))
//!     .exempt_path("/login")
//!     .login_url("/login")
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/dashboard", get(|| async { "only while the session is active" }))
//!     .route("/login", get(|| async { "sign in here" }))
//!     .layer(timeouts);
//! # let _ = app;
//! # Ok(())
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
//! ```
//!
//! The layer reads the session id from a cookie (`id` by default, the name tower-sessions and
//! axum-login use, so it tracks their sessions with no other change), keeps each session's
//! creation and last-seen time in a [`SessionStore`], and never calls the inner service for a
//! session that has expired.
//!
//! # One request, step by step
//!
//! | request carries | session | answer |
//! |---|---|---|
//! | no session cookie | — | passed to the inner service untouched |
//! | the session cookie | active | `last_seen` refreshed, a [`SessionHandle`] (with the session's [`SessionInfo`]) put in the extensions, inner service called |
//! | the session cookie | expired (idle or absolute), ended, or never known | **440 Login Time-out**; the record becomes a tombstone that remembers why; the inner service is not called |
//! | the session cookie, on an [exempt route](SessionTimeoutBuilder::exempt_path) | expired or unknown | the stale cookie is removed from the request, the inner service is called, and the response clears the cookie unless it sets a new one |
//! | the session cookie | the store failed | `503 Service Unavailable` (fail-closed), or with [`fail_open`](SessionTimeoutBuilder::fail_open) passed on without its session cookie, as on an exempt route |
//!
//! The record of a session that expired or ended is kept as a tombstone (its reason, no
//! times) for [`tombstone_retention`](SessionTimeoutBuilder::tombstone_retention) past its end, a day by
//! default, then deleted. That is what lets a late request learn *why* (`idle`, `ended`), and
//! what keeps the id from ever being begun again while a browser may still send it.
//!
//! A session expires when `now - last_seen >= idle_timeout` or `now - created_at >=
//! absolute_timeout`: exactly at a deadline it has expired. Deadlines are enforced on the
//! server to the millisecond; the cookie's `Max-Age` is never relied on. Once expired or
//! ended, an id is never active again, whatever requests race on it. A clock stepping
//! backwards never makes a session younger.
//!
//! # How sessions begin and end
//!
//! - **Observed.** When a response sets the session cookie, the layer begins tracking that
//!   id. Setting the id the request already carries changes nothing (so a cookie re-sent on
//!   every response does not reset the absolute deadline). When a response clears the cookie
//!   (`Max-Age=0`, an `Expires` in the past, or an empty value) the request's session ends. A
//!   new id replacing the request's one (rotation at sign-in) begins the new id and ends the
//!   old one. An id the request carried, active or expired, is never begun by its response.
//! - **Explicit.** A [`SessionHandle`] in the request extensions lets a handler
//!   [`begin`](SessionHandle::begin) a session, [`end`](SessionHandle::end) the current one,
//!   and read its deadlines.
//!
//! An end the store does not take (it failed, or timed out) leaves the session active, so
//! with fail-closed the response becomes `503 Service Unavailable` instead of a sign-out
//! that looks done. An end that has started runs to completion, within the store timeout,
//! even if the client goes away before the response is sent.
//!
//! Ids shorter than [`min_id_len`](SessionTimeoutBuilder::min_id_len) (16 bytes by default) are never
//! begun: a guessable id is one an attacker can plant in a victim's browser (session
//! fixation) or guess. Nor are ids that cookie readers would read differently (see below).
//! The app gets its response as usual; the cookie it set answers 440 `unknown` on the next
//! request, and a WARN log line says why.
//!
//! # Whose session, and for how long
//!
//! At sign-in a handler names the session's owner with
//! [`SessionHandle::set_owner`], and may give it timeouts of its own with
//! [`SessionHandle::set_timeouts`] ("remember me"; or shorter ones after a sensitive action),
//! never beyond [`max_session_timeouts`](SessionTimeoutBuilder::max_session_timeouts). The
//! store keeps both with the session, so every instance sharing it knows them. A handler lists
//! the user's sessions ([`SessionHandle::list_sessions`]) and ends one or all the others
//! ([`SessionHandle::end_session`], [`SessionHandle::end_others`]: "sign out everywhere", as
//! after a password change); admin tools do the same for any user through
//! [`SessionTimeoutLayer::sessions`]. With
//! [`max_sessions_per_owner`](SessionTimeoutBuilder::max_sessions_per_owner), a sign-in
//! beyond the limit ends the user's oldest session, which then answers 440 with reason
//! `superseded`, or is refused with `409 Conflict`.
//!
//! # Hearing every session end
//!
//! [`on_session_end`](SessionTimeoutBuilder::on_session_end) sets an async hook that hears
//! every session end once, with its reason, owner and time, including sessions that expire
//! with no later request; [`SessionTimeoutLayer::spawn_announcer`] starts the sweep that feeds
//! it. The store decides which instance announces each end, so several instances announce it
//! once; an end whose instance died before its hook returned is announced by another after
//! [`ANNOUNCE_LEASE`].
//!
//! # Metrics
//!
//! With the `metrics` feature the layer records through the [`metrics`](https://docs.rs/metrics)
//! facade, for whichever exporter the app installs (the demo serves them at `GET /metrics`
//! with `metrics-exporter-prometheus`):
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `session_timeout_requests_total` | counter | `decision`: `active`, `passive`, `expired`, `exempt`, `no_session`, `store_error`, `malformed`; `reason` (for `expired`): `idle`, `absolute`, `ended`, `superseded`, `unknown` | requests by what the layer decided |
//! | `session_timeout_sessions_begun_total` | counter | | sessions begun |
//! | `session_timeout_sessions_ended_total` | counter | `reason` | session ends, counted once as the announcer announces them (so only where an announcer runs) |
//! | `session_timeout_announcements_dropped_total` | counter | | ends dropped after their hook failed [`HOOK_ATTEMPTS`] times |
//! | `session_timeout_store_call_duration_seconds` | histogram | `operation`: `check`, `begin`, `end`, `set_timeouts`, `owner_of`, `sessions_of`, `end_sessions_of`, `claim_ends`, `ack_ends` | how long store calls take, timeouts included |
//! | `session_timeout_active_sessions` | gauge | | active sessions, set at each sweep, for stores that count them cheaply ([`MemoryStore`]) |
//!
//! # Which cookie is the session
//!
//! The layer checks the very id the app will use. Apps read cookies with the `cookie` crate
//! (directly, or through tower-cookies, axum-extra's `CookieJar`, tower-sessions and
//! axum-login), which trims Unicode whitespace from a cookie's name and value and, in
//! `parse_encoded`, percent-decodes them: to those readers `id`, ` id`, `%69d`, `i%64` and
//! `\u{a0}id` are all the cookie `id`. So are they to the layer: every pair that any such
//! reading takes for the session cookie is one, in every `Cookie` header line. All of them
//! must carry the same value, made only of bytes every reader keeps as they are (cookie
//! octets without `%`); a request where two readers could find different ids is refused
//! with `400 Bad Request`. The test suite checks this differentially against tower-cookies,
//! axum-extra and the cookie crate, and a fuzz target does the same.
//!
//! # Where to add it
//!
//! Add it with `Router::layer` (or `ServiceBuilder`), not `Router::route_layer`: axum runs a
//! route layer only for requests that match a route, so the layer's own routes (the
//! [keep-alive](SessionTimeoutBuilder::keep_alive_path), [status](SessionTimeoutBuilder::status_path)
//! and [client script](SessionTimeoutBuilder::client_script_path) paths, which no route of
//! the app declares) would answer 404. It works the same over HTTP/1.1 and HTTP/2; HTTP/2
//! has no reason phrases, so there a 440 goes out as plain `440`.
//!
//! # With tower-sessions and axum-login
//!
//! Add the layer outermost, around tower-sessions' `SessionManagerLayer` (or axum-login's
//! `AuthManagerLayer`), and change nothing else: it tracks their `id` cookie. Sign-in through
//! axum-login cycles the id, which begins the new id and ends the old one; sign-out clears the
//! cookie, which ends the session. Keep tower-sessions' own expiry longer than the layer's
//! timeouts, so the layer decides.
//!
//! ```
//! use axum::{routing::get, Router};
//! use tower_session_timeout::SessionTimeoutLayer;
//! use tower_sessions::{MemoryStore, SessionManagerLayer};
//!
//! # fn main() -> Result<(), tower_session_timeout::ConfigError> {
//! let app: Router = Router::new()
//!     .route("/dashboard", get(|| async { "signed in" }))
//!     .layer(SessionManagerLayer::new(MemoryStore::default()))
//!     .layer(SessionTimeoutLayer::builder().exempt_path("/login").build()?);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/tower_sessions_axum_login.rs` is a whole app on axum-login 0.18 (which is built on
//! tower-sessions 0.14), and `examples/tower_sessions.rs` the same app on tower-sessions 0.15
//! alone.
//!
//! # The 440 answer
//!
//! Status 440 with the reason phrase `Login Time-out` on the HTTP/1.1 status line (through
//! hyper's `ReasonPhrase` extension), `Content-Type: text/html; charset=utf-8`, a correct
//! `Content-Length`, `Cache-Control: no-store`, a `Set-Cookie` that clears the session cookie
//! with the configured `Path` and `Domain`, and [`DEFAULT_BODY`], byte for byte the page IIS
//! sends. A client whose `Accept` prefers JSON gets `application/problem+json` (RFC 9457)
//! with `status: 440`, `title: "Login Time-out"` and `reason` (`idle`, `absolute`, `ended` or
//! `unknown`). A [login URL](SessionTimeoutBuilder::login_url) adds a "Log in again" link; the whole answer
//! can be [replaced](SessionTimeoutBuilder::expired_response). Nothing from the request is echoed.
//!
//! # Keeping a session alive
//!
//! - [`keep_alive_path`](SessionTimeoutBuilder::keep_alive_path): refreshes the session and answers
//!   `200 OK` with body `OK`, or 440 once it has expired.
//! - [`status_path`](SessionTimeoutBuilder::status_path): the deadlines and seconds left as JSON, without
//!   refreshing.
//! - [Passive routes](SessionTimeoutBuilder::passive_path): checked for expiry, never refreshing, so a
//!   forgotten tab that polls does not keep its session alive forever.
//! - [`seconds_left_header`](SessionTimeoutBuilder::seconds_left_header): the seconds left on every active
//!   response.
//! - [`client_script_path`](SessionTimeoutBuilder::client_script_path): the browser client, below.
//!
//! # The browser client
//!
//! One builder call serves a small dependency-free script (shipped in the crate) that keeps
//! a page's session alive while its user is active and warns before it expires:
//!
//! ```
//! # use std::time::Duration;
//! # use tower_session_timeout::SessionTimeoutLayer;
//! let layer = SessionTimeoutLayer::builder()
//!     .keep_alive_path("/session/keepalive") // the script refreshes through it
//!     .status_path("/session/status")        // and reads the deadline from it
//!     .client_script_path("/session/timeout.js")
//!     .warn_before(Duration::from_secs(60))        // default; at least 20 s (WCAG 2.2.1)
//!     .keep_alive_interval(Duration::from_secs(60)) // default; at most one refresh per interval
//!     .login_url("/login")
//!     .build()?;
//! # Ok::<(), tower_session_timeout::ConfigError>(())
//! ```
//!
//! Pages include it with `<script src="/session/timeout.js" defer></script>`. The layer
//! answers that path itself, whatever the session's state, with the script and a generated
//! prelude holding these settings (`text/javascript; charset=utf-8`; nothing from the request
//! goes in). In the page the script:
//!
//! - reads the deadline from the status route, and while the user is active (mouse, keys,
//!   scroll, focus) refreshes the session through the keep-alive route at most once per
//!   interval; an idle user sends nothing;
//! - `warn_before` the deadline opens a modal `alertdialog` saying how long is left, with
//!   focus on its one action, "Stay signed in" (Enter, Space, click or Escape), and a live
//!   region that announces the time left at whole minutes, 30 and 10 seconds;
//! - once the deadline has passed, reloads the page, which the layer answers with 440;
//! - shares deadlines and sign-out between the app's tabs (BroadcastChannel, or `storage`
//!   events where that is missing): activity in one tab keeps the others from warning, and a
//!   sign-out form or link marked `data-session-signout` (or a call to
//!   `SessionTimeout.signedOut()`) sends the other tabs to the login URL.
//!
//! The warning and one interval must fit in the idle timeout, so an active user never sees
//! it; [`SessionTimeoutBuilder::build`] says so otherwise.
//!
//! # Stores
//!
//! [`MemoryStore`] (the default) keeps sessions in the process, sharded so requests on
//! different sessions never wait on one lock, with a timer wheel that purges expired records
//! at a cost that grows with what expired. Every store keeps the SHA-256 of a session id
//! ([`SessionKey`]), never the id, and writes nothing for an id the app
//! never began, so random ids sent by a client cost nothing. Each store operation is atomic;
//! see [`SessionStore`] to write one. With the features of those names, `RedisStore` shares
//! sessions across instances through Redis or Redis Cluster (`RedisStore::open` takes
//! `redis://…` and `redis-cluster://host:port[,host:port…]` alike), `PostgresStore` through
//! PostgreSQL, and `SqliteStore` keeps them in a file across restarts; the SQL stores take a
//! pool size and time bounds (`SqlOptions`).
//!
//! A store that fails answers `503` (or passes the request on with
//! [`fail_open`](SessionTimeoutBuilder::fail_open)); a store call slower than
//! [`store_timeout`](SessionTimeoutBuilder::store_timeout) counts as failed, so no request
//! waits forever. On Redis Cluster, a master that fails costs `503` for its slots' sessions
//! only until a replica takes over (seconds; run the cluster with
//! `cluster-require-full-coverage no` so the other masters keep answering). The README's
//! "Running on several instances" says which store fits which deployment and what users see
//! in each failure, with measured figures. Store URLs appear in logs and `Debug` output with
//! their password replaced by `***` ([`store::redact_credentials`]).
//!
//! # In production
//!
//! - Logs go through `tracing`: `session over` at INFO once per session the layer sees end, store failures at
//!   ERROR once per burst, per-request decisions at DEBUG and TRACE. A session appears only as
//!   the first 8 hex digits of the SHA-256 of its id.
//! - [`on_expiry`](SessionTimeoutBuilder::on_expiry) tells an audit log of each session's end, once, with
//!   its reason ([`ExpiryEvent`]).
//! - [`preset`](SessionTimeoutBuilder::preset) sets the timeouts of OWASP ASVS 5.0, NIST SP 800-63B-4 AAL2
//!   and AAL3, or PCI DSS 4.0 ([`Preset`]).
//!
//! # Bad input
//!
//! No request panics the service or grows the store:
//!
//! | session cookie in the request | answer |
//! |---|---|
//! | absent, or present with an empty value (`id=`) | passed on as a request without a session |
//! | the name spelled as a cookie reader would also take it (`%69d`, ` id`, `\u{a0}id`) | the session cookie, like `id` |
//! | a value with bytes a cookie may not hold (non-UTF-8, Unicode whitespace, controls, spaces, `;`, `,`, `\`) | `400 Bad Request`, cookie cleared |
//! | a value with `%` (`parse_encoded` decodes it, `parse` does not) | `400 Bad Request`, cookie cleared |
//! | the name in two spellings or two header lines with different values (the app and the layer could read different ids) | `400 Bad Request`, cookie cleared at the configured path and domain and at `Path=/`, where a stray second one usually lives |
//! | the name after a comma inside another cookie's value (`a=1, id=x`, where a reader of the obsolete comma syntax would find it) | `400 Bad Request` |
//! | the name repeated with one value, in any spellings | that value |
//! | a quoted value (`id="abc"`) | the value with its quotes, as the browser echoes what the app set and the cookie crate's `value()` returns it |
//! | shorter than [`min_id_len`](SessionTimeoutBuilder::min_id_len) (default 16 bytes) or longer than [`max_id_len`](SessionTimeoutBuilder::max_id_len) (default 1024 bytes) | 440 `unknown`, not looked up: never an id the layer began |
//! | thousands of other cookies, or other cookies with non-UTF-8 bytes | ignored; only the session cookie counts |
//!
//! Where this table says "cleared", the response clears the cookie named as configured
//! (`id`); a cookie stored under another spelling (`%69d`), or with a `Domain` the layer was
//! not given, is not cleared, as the layer cannot name it. Browsers send such cookies only
//! if something other than the app set them. On an exempt route each of these is removed
//! from the request (in every spelling) and cleared in the response instead. The size of the whole header is bounded by the server
//! (hyper's header limits).
//!
//! Path prefixes ([`exempt_prefix`](SessionTimeoutBuilder::exempt_prefix),
//! [`passive_prefix`](SessionTimeoutBuilder::passive_prefix)) match whole segments, on the path as the
//! request spells it, as axum's router does: `/static` covers `/static/app.js`, not
//! `/static-admin` or `/static%2Fadmin`.
//!
//! # Configuration errors
//!
//! [`SessionTimeoutBuilder::build`] returns a [`ConfigError`], never panics, for settings that cannot work:
//! zero timeouts, an absolute timeout shorter than the idle timeout, a touch interval not
//! shorter than the idle timeout, an empty or invalid cookie name, and the others its variants
//! list, each saying what to change.
//!
//! # Testing
//!
//! Give the builder a [`ManualClock`] and step it across deadlines instead of sleeping:
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response, StatusCode};
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_session_timeout::{login_timeout_status, ManualClock, SessionTimeoutLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let clock = ManualClock::new();
//! let layer = SessionTimeoutLayer::builder()
//!     .idle_timeout(Duration::from_secs(60))
//!     .clock(clock.clone())
//!     .build()
//!     .unwrap();
//! let app = layer.layer(service_fn(|request: Request<String>| async move {
//!     let mut response = Response::new(http_body_util::Full::new(bytes::Bytes::new()));
//!     if request.uri().path() == "/login" {
//!         // Session ids are random and at least 16 bytes (`min_id_len`).
//!         response.headers_mut().insert("set-cookie", "id=q8Kx2LwZ0fNd5TmB; Path=/".parse().unwrap());
//!     }
//!     Ok::<_, std::convert::Infallible>(response)
//! }));
//! let get = |path: &str| {
//!     Request::get(path).header("cookie", "id=q8Kx2LwZ0fNd5TmB").body(String::new()).unwrap()
//! };
//!
//! app.clone().oneshot(Request::get("/login").body(String::new()).unwrap()).await.unwrap();
//! assert_eq!(app.clone().oneshot(get("/")).await.unwrap().status(), StatusCode::OK);
//! clock.advance(Duration::from_secs(60));
//! assert_eq!(app.clone().oneshot(get("/")).await.unwrap().status(), login_timeout_status());
//! # }
//! ```
//!
//! # Features
//!
//! None is on by default, and the default build pulls in no database client.
//! `redis`, `postgres` and `sqlite` add the stores of those names. `axum` makes
//! [`SessionHandle`] and [`SessionInfo`] axum extractors of their own (`Option<SessionInfo>`
//! for a handler that serves both signed-in and anonymous requests), so handlers need no
//! `Extension<…>` wrapper. `metrics` records the metrics in the table above.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod announcer;
mod answer;
mod body;
mod bounded;
mod builder;
mod client;
mod clock;
mod config;
mod cookie;
mod error;
mod error_log;
mod expired;
mod expiry_hook;
#[cfg(feature = "axum")]
mod extract;
mod future;
mod handle;
mod inactive;
mod json;
mod layer;
mod metrics;
mod preset;
mod routes;
mod service;
mod sessions;
pub mod store;
#[cfg(test)]
mod test_logs;

pub use announcer::{
    ANNOUNCE_BATCH, ANNOUNCE_LEASE, DEFAULT_SWEEP_INTERVAL, HOOK_ATTEMPTS, HOOK_TIMEOUT,
};
pub use body::ResponseBody;
pub use builder::{
    SessionTimeoutBuilder, DEFAULT_COOKIE_NAME, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_ID_LEN,
    DEFAULT_MIN_ID_LEN, DEFAULT_STORE_TIMEOUT, DEFAULT_TOMBSTONE_RETENTION,
};
pub use client::{DEFAULT_KEEP_ALIVE_INTERVAL, DEFAULT_WARN_BEFORE, MIN_WARN_BEFORE};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{ConfigError, ParseExpiryReasonError, StoreError};
pub use expired::{login_timeout_status, ExpiredSession, DEFAULT_BODY, REASON_PHRASE};
pub use expiry_hook::ExpiryEvent;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{MissingSessionLayer, NoActiveSession};
pub use future::ResponseFuture;
pub use handle::{SessionHandle, SessionInfo};
pub use layer::SessionTimeoutLayer;
pub use preset::Preset;
pub use routes::RequestHead;
pub use service::SessionTimeout;
pub use sessions::{ParseSessionRefError, SessionRef, SessionSummary, Sessions};
#[cfg(feature = "redis")]
pub use store::RedisStore;
pub use store::{
    ExpiryReason, MemoryStore, OnLimit, SessionEnd, SessionKey, SessionStore, SessionTimeouts,
};

#[cfg(feature = "postgres")]
pub use store::PostgresStore;
#[cfg(feature = "sqlite")]
pub use store::SqliteStore;
