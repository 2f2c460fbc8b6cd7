//! [`SessionTimeoutBuilder`], which configures a [`SessionTimeoutLayer`], and its defaults.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Response, Uri};

use crate::announcer::{Announcements, EndHook, DEFAULT_SWEEP_INTERVAL};
use crate::client::{ClientOptions, Prelude};
use crate::config::Config;
use crate::cookie::{self, CookieSettings, IdBounds};
use crate::error_log::ErrorLog;
use crate::expired::{ExpiredSession, Responder};
use crate::expiry_hook::{ExpiryEvent, ExpiryHook};
use crate::routes::{Matcher, RequestHead, Routes};
use crate::store::{OnLimit, Policy, SessionEnd, SessionLimit, SessionTimeouts};
use crate::{Clock, ConfigError, Preset, SessionStore, SessionTimeoutLayer, SystemClock};

/// The idle timeout when none is set: 20 minutes, IIS's `sessionState` default.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The session cookie name when none is set: `id`, the name tower-sessions and axum-login use.
pub const DEFAULT_COOKIE_NAME: &str = "id";

/// How long a store remembers a session that expired or ended, when not set otherwise: a day.
///
/// For that long its id is refused as a new session, whoever sets it again, and a late
/// request is told why it ended. A browser may send a cookie for as long as the cookie lives
/// (its `Max-Age`, or while the browser stays open), so set
/// [`tombstone_retention`](SessionTimeoutBuilder::tombstone_retention) to at least that.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest session id accepted when not set otherwise; browsers cap a whole cookie at
/// 4096 bytes, and no session id scheme comes near this.
pub const DEFAULT_MAX_ID_LEN: usize = 1024;

/// The shortest session id tracked when not set otherwise: 16 bytes, the length of a
/// 96-bit random id in base64. Shorter ids are never begun, so a guessable id an app might
/// set (a user number, a counter) cannot become a session someone else can ride.
pub const DEFAULT_MIN_ID_LEN: usize = 16;

/// How long a store call may take when not set otherwise.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_secs(5);

/// Configures a [`SessionTimeoutLayer`]; made by [`SessionTimeoutLayer::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_session_timeout::SessionTimeoutLayer;
///
/// let layer = SessionTimeoutLayer::builder()
///     .idle_timeout(Duration::from_secs(15 * 60))
///     .absolute_timeout(Duration::from_secs(8 * 60 * 60))
///     .exempt_path("/login")
///     .exempt_prefix("/static/")
///     .keep_alive_path("/session/keepalive")
///     .status_path("/session/status")
///     .login_url("/login")
///     .build()?;
/// # Ok::<(), tower_session_timeout::ConfigError>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct SessionTimeoutBuilder<St> {
    store: St,
    idle_timeout: Duration,
    absolute_timeout: Option<Duration>,
    touch_interval: Option<Duration>,
    tombstone_retention: Duration,
    cookie_name: String,
    cookie_path: String,
    cookie_domain: Option<String>,
    routes: Routes,
    login_url: Option<String>,
    responder: Option<Responder>,
    fail_open: bool,
    clock: Arc<dyn Clock>,
    min_id_len: usize,
    max_id_len: usize,
    seconds_left_header: Option<String>,
    store_timeout: Option<Duration>,
    on_expiry: Option<ExpiryHook>,
    on_session_end: Option<EndHook>,
    sweep_interval: Duration,
    client: ClientOptions,
    max_session_timeouts: Option<SessionTimeouts>,
    session_limit: Option<(u32, OnLimit)>,
}

impl<St> SessionTimeoutBuilder<St> {
    pub(crate) fn new(store: St) -> Self {
        SessionTimeoutBuilder {
            store,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            absolute_timeout: None,
            touch_interval: None,
            tombstone_retention: DEFAULT_TOMBSTONE_RETENTION,
            cookie_name: DEFAULT_COOKIE_NAME.to_owned(),
            cookie_path: "/".to_owned(),
            cookie_domain: None,
            routes: Routes::default(),
            login_url: None,
            responder: None,
            fail_open: false,
            clock: Arc::new(SystemClock),
            min_id_len: DEFAULT_MIN_ID_LEN,
            max_id_len: DEFAULT_MAX_ID_LEN,
            seconds_left_header: None,
            store_timeout: Some(DEFAULT_STORE_TIMEOUT),
            on_expiry: None,
            on_session_end: None,
            sweep_interval: DEFAULT_SWEEP_INTERVAL,
            client: ClientOptions::default(),
            max_session_timeouts: None,
            session_limit: None,
        }
    }

    /// Tracks sessions in `store` instead of a new [`MemoryStore`](crate::MemoryStore).
    pub fn store<T: SessionStore>(self, store: T) -> SessionTimeoutBuilder<T> {
        SessionTimeoutBuilder {
            store,
            idle_timeout: self.idle_timeout,
            absolute_timeout: self.absolute_timeout,
            touch_interval: self.touch_interval,
            tombstone_retention: self.tombstone_retention,
            cookie_name: self.cookie_name,
            cookie_path: self.cookie_path,
            cookie_domain: self.cookie_domain,
            routes: self.routes,
            login_url: self.login_url,
            responder: self.responder,
            fail_open: self.fail_open,
            clock: self.clock,
            min_id_len: self.min_id_len,
            max_id_len: self.max_id_len,
            seconds_left_header: self.seconds_left_header,
            store_timeout: self.store_timeout,
            on_expiry: self.on_expiry,
            on_session_end: self.on_session_end,
            sweep_interval: self.sweep_interval,
            client: self.client,
            max_session_timeouts: self.max_session_timeouts,
            session_limit: self.session_limit,
        }
    }

    /// Sets the idle and absolute timeouts a standard asks for; see [`Preset`] for the
    /// numbers and their sources. Later calls override either.
    pub fn preset(mut self, preset: Preset) -> Self {
        self.idle_timeout = preset.idle_timeout();
        self.absolute_timeout = preset.absolute_timeout();
        self
    }

    /// A session expires when no request came for this long (default 20 minutes).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// A session expires this long after it began, whatever its activity (default: none).
    /// Must be at least the idle timeout.
    pub fn absolute_timeout(mut self, timeout: Duration) -> Self {
        self.absolute_timeout = Some(timeout);
        self
    }

    /// Lets the store skip refreshing `last_seen` while it is younger than `interval`, saving
    /// writes; a session may then expire up to `interval` early, never late. Must be shorter
    /// than the idle timeout.
    pub fn touch_interval(mut self, interval: Duration) -> Self {
        self.touch_interval = Some(interval);
        self
    }

    /// The longest timeouts a session may be given of its own, through
    /// [`SessionHandle::set_timeouts`](crate::SessionHandle::set_timeouts) (default: the
    /// layer's own, so sessions may only be given shorter ones). Longer ones are cut to these.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_session_timeout::{SessionTimeoutLayer, SessionTimeouts};
    ///
    /// const DAY: Duration = Duration::from_secs(24 * 60 * 60);
    /// // Sessions get 30 idle minutes; "remember me" ones up to 7 days idle, 30 days in all.
    /// let layer = SessionTimeoutLayer::builder()
    ///     .idle_timeout(Duration::from_secs(30 * 60))
    ///     .max_session_timeouts(SessionTimeouts::new(7 * DAY).with_absolute(30 * DAY))
    ///     .build()?;
    /// assert_eq!(layer.policy().max_session_timeouts().idle(), 7 * DAY);
    /// # Ok::<(), tower_session_timeout::ConfigError>(())
    /// ```
    pub fn max_session_timeouts(mut self, bound: SessionTimeouts) -> Self {
        self.max_session_timeouts = Some(bound);
        self
    }

    /// At most `max` active sessions per owner (named with
    /// [`SessionHandle::set_owner`](crate::SessionHandle::set_owner)); default: no limit.
    /// A sign-in beyond it ends the owner's oldest sessions, which then answer 440 with
    /// reason `superseded` ([`OnLimit::EndOldest`]), or is refused with `409 Conflict`
    /// ([`OnLimit::Refuse`]). Zero is a [`ConfigError::ZeroSessionLimit`].
    ///
    /// ```
    /// use tower_session_timeout::{OnLimit, SessionTimeoutLayer};
    ///
    /// let layer = SessionTimeoutLayer::builder()
    ///     .max_sessions_per_owner(3, OnLimit::EndOldest)
    ///     .build()?;
    /// assert_eq!(layer.policy().session_limit().unwrap().max.get(), 3);
    /// # Ok::<(), tower_session_timeout::ConfigError>(())
    /// ```
    pub fn max_sessions_per_owner(mut self, max: u32, on_limit: OnLimit) -> Self {
        self.session_limit = Some((max, on_limit));
        self
    }

    /// How long past its end the store remembers a session that expired or ended (default
    /// [24 hours](DEFAULT_TOMBSTONE_RETENTION)). Until then its id is never begun again,
    /// whether a response sets it or a handler asks, and its cookie gets 440 with the reason
    /// (`idle`, `ended`); after that the id is forgotten and its cookie gets reason `unknown`.
    ///
    /// Set it to at least how long a browser may still send the cookie: its `Max-Age`, or
    /// for a cookie without one, how long a browser may stay open. Each remembered session
    /// costs one record, so a day of retention holds a day of sign-outs and expiries:
    ///
    /// | store | one remembered session | measured with |
    /// |---|---|---|
    /// | `MemoryStore` | 64-byte slot, 4-byte index entry, 4-byte wheel listing | `cargo bench --bench memory` (84 bytes a record at 1 M) |
    /// | `RedisStore` | one hash key with a TTL: 168 bytes | `MEMORY USAGE` on a tombstone key |
    /// | `PostgresStore`, `SqliteStore` | one row (32-byte key, three times, a reason) and its index entries | `pg_column_size` of a row: 93 bytes before indexes |
    pub fn tombstone_retention(mut self, retention: Duration) -> Self {
        self.tombstone_retention = retention;
        self
    }

    /// The session cookie's name (default `id`).
    pub fn cookie_name(mut self, name: impl Into<String>) -> Self {
        self.cookie_name = name.into();
        self
    }

    /// The session cookie's `Path`, used when the layer clears it (default `/`).
    pub fn cookie_path(mut self, path: impl Into<String>) -> Self {
        self.cookie_path = path.into();
        self
    }

    /// The session cookie's `Domain`, used when the layer clears it (default: none).
    pub fn cookie_domain(mut self, domain: impl Into<String>) -> Self {
        self.cookie_domain = Some(domain.into());
        self
    }

    /// Lets requests to exactly `path` through with an expired or unknown session: the stale
    /// cookie is removed from the request and cleared in the response. For the login page.
    pub fn exempt_path(mut self, path: impl Into<String>) -> Self {
        self.routes.exempt.push(Matcher::Exact(path.into()));
        self
    }

    /// Like [`exempt_path`](SessionTimeoutBuilder::exempt_path) for every path under `prefix`, in whole
    /// segments: `/static` covers `/static` and `/static/app.js`, not `/static-admin`. For
    /// static assets.
    pub fn exempt_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.routes.exempt.push(Matcher::Prefix(prefix.into()));
        self
    }

    /// Like [`exempt_path`](SessionTimeoutBuilder::exempt_path) for every request `predicate` picks.
    pub fn exempt_when(
        mut self,
        predicate: impl Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.routes.exempt.push(Matcher::When(Arc::new(predicate)));
        self
    }

    /// Requests to exactly `path` are checked for expiry but do not refresh the session, so a
    /// forgotten tab polling it does not keep the session alive forever.
    pub fn passive_path(mut self, path: impl Into<String>) -> Self {
        self.routes.passive.push(Matcher::Exact(path.into()));
        self
    }

    /// Like [`passive_path`](SessionTimeoutBuilder::passive_path) for every path under `prefix`, in whole
    /// segments, as [`exempt_prefix`](SessionTimeoutBuilder::exempt_prefix).
    pub fn passive_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.routes.passive.push(Matcher::Prefix(prefix.into()));
        self
    }

    /// Like [`passive_path`](SessionTimeoutBuilder::passive_path) for every request `predicate` picks, for
    /// example those with a header your polling code sends.
    pub fn passive_when(
        mut self,
        predicate: impl Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.routes.passive.push(Matcher::When(Arc::new(predicate)));
        self
    }

    /// Answers requests to `path` itself: refreshes the session and sends `200 OK` with body
    /// `OK`, or 440 when it has expired. For keep-alive scripts during long work.
    pub fn keep_alive_path(mut self, path: impl Into<String>) -> Self {
        self.routes.keep_alive = Some(path.into());
        self
    }

    /// Answers requests to `path` itself with the session's deadlines as JSON, without
    /// refreshing it; 440 (problem+json) when it has expired. Times are Unix milliseconds by
    /// the layer's clock; `now_ms` lets a client correct for its own clock's skew:
    ///
    /// | field | meaning |
    /// |---|---|
    /// | `active` | always `true` (an inactive session gets 440) |
    /// | `now_ms` | when the layer answered |
    /// | `created_at_ms`, `last_seen_ms` | when the session began, and was last refreshed |
    /// | `idle_deadline_ms` | when it goes idle without another refreshing request |
    /// | `absolute_deadline_ms` | when it ends whatever its activity, or `null` |
    /// | `idle_seconds_left`, `absolute_seconds_left` | whole seconds until each (`null` without an absolute timeout) |
    /// | `seconds_left` | whole seconds until the earlier of the two |
    ///
    /// ```json
    /// {"active":true,"now_ms":1767225600000,"created_at_ms":1767225000000,
    ///  "last_seen_ms":1767225540000,"idle_deadline_ms":1767226740000,
    ///  "absolute_deadline_ms":null,"idle_seconds_left":1140,
    ///  "absolute_seconds_left":null,"seconds_left":1140}
    /// ```
    pub fn status_path(mut self, path: impl Into<String>) -> Self {
        self.routes.status = Some(path.into());
        self
    }

    /// Adds a "Log in again" link to this URL on the 440 page and a `login_url` member to
    /// the problem+json answer.
    pub fn login_url(mut self, url: impl Into<String>) -> Self {
        self.login_url = Some(url.into());
        self
    }

    /// Replaces the 440 answer. The closure gets the [`ExpiredSession`] (the reason, the client's
    /// format preference, the login URL) and returns the whole response; the layer sets
    /// `Content-Length`, and adds the `Set-Cookie` that clears the session cookie unless the
    /// response sets that cookie itself.
    ///
    /// ```
    /// use http::{Response, StatusCode};
    /// use tower_session_timeout::SessionTimeoutLayer;
    ///
    /// let layer = SessionTimeoutLayer::builder()
    ///     .expired_response(|expiry| {
    ///         Response::builder()
    ///             .status(StatusCode::SEE_OTHER)
    ///             .header("location", format!("/login?why={}", expiry.reason()))
    ///             .body(String::new())
    ///             .unwrap()
    ///     })
    ///     .build()?;
    /// # Ok::<(), tower_session_timeout::ConfigError>(())
    /// ```
    pub fn expired_response<F, T>(mut self, respond: F) -> Self
    where
        F: Fn(&ExpiredSession<'_>) -> Response<T> + Send + Sync + 'static,
        T: Into<Bytes>,
    {
        self.responder = Some(Arc::new(move |expiry: &ExpiredSession<'_>| {
            respond(expiry).map(Into::into)
        }));
        self
    }

    /// When the store fails, pass requests on as if they carried no session instead of
    /// answering `503 Service Unavailable` (the default, fail-closed).
    pub fn fail_open(mut self, fail_open: bool) -> Self {
        self.fail_open = fail_open;
        self
    }

    /// Reads the time from `clock` instead of the system clock; tests use a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Session ids shorter than `len` bytes are never begun (default
    /// [16](DEFAULT_MIN_ID_LEN)): a response setting one, or a handler beginning one, is
    /// logged at WARN and tracks nothing, so the next request with that cookie gets 440
    /// `unknown`. Short ids are guessable, and a guessable id is a session fixation waiting
    /// to happen. Requests carrying one get 440 `unknown` without a store lookup.
    pub fn min_id_len(mut self, len: usize) -> Self {
        self.min_id_len = len;
        self
    }

    /// Session ids longer than `len` bytes are never looked up and get 440 (default 1024).
    pub fn max_id_len(mut self, len: usize) -> Self {
        self.max_id_len = len;
        self
    }

    /// Adds a header with this name to responses on an active session, holding the whole
    /// seconds left before its deadline, for client scripts.
    pub fn seconds_left_header(mut self, name: impl Into<String>) -> Self {
        self.seconds_left_header = Some(name.into());
        self
    }

    /// The shortest session id tracked when not set otherwise: 16 bytes, the length of a
    /// 96-bit random id in base64. Shorter ids are never begun, so a guessable id an app might
    /// set (a user number, a counter) cannot become a session someone else can ride.
    pub const DEFAULT_MIN_ID_LEN: usize = 16;

    /// How long a store call may take before the layer treats it as failed (default 5 s):
    /// the request is then answered per [`fail_open`](SessionTimeoutBuilder::fail_open), so a
    /// hung store never holds a request forever. The timer needs a Tokio runtime with its time
    /// driver (`enable_time`, on by default in `#[tokio::main]`), as networked stores do
    /// anyway; a store that answers at once, like [`MemoryStore`](crate::MemoryStore), never
    /// arms it.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = Some(timeout);
        self
    }

    /// Waits as long as the store takes, with no [`store_timeout`](Self::store_timeout): for
    /// a store that bounds its own calls, or a runtime without a time driver.
    pub fn no_store_timeout(mut self) -> Self {
        self.store_timeout = None;
        self
    }

    /// Announces every session end to `hook`, exactly once across the app instances sharing
    /// the store, including sessions that expire with no later request (a closed laptop):
    /// within about [`sweep_interval`](SessionTimeoutBuilder::sweep_interval) of the deadline,
    /// with the reason, the owner and the time. The hook is async and runs off the request
    /// path (it may write to a database); start the sweep that feeds it with
    /// [`SessionTimeoutLayer::spawn_announcer`].
    ///
    /// The store decides who announces each end: an instance claims it for
    /// [`ANNOUNCE_LEASE`](crate::ANNOUNCE_LEASE) and acknowledges it once the hook returns,
    /// so no other instance announces it meanwhile, and an end whose instance died before
    /// the hook returned is announced again by another (at least once across a crash). At
    /// most [`ANNOUNCE_BATCH`](crate::ANNOUNCE_BATCH) ends are in flight per instance; a hook
    /// call that panics or takes longer than [`HOOK_TIMEOUT`](crate::HOOK_TIMEOUT) is
    /// retried on a later sweep, and after [`HOOK_ATTEMPTS`](crate::HOOK_ATTEMPTS) failures
    /// the end is dropped and counted
    /// ([`SessionTimeoutLayer::announcements_dropped`]).
    ///
    /// ```
    /// use tower_session_timeout::SessionTimeoutLayer;
    ///
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let layer = SessionTimeoutLayer::builder()
    ///     .on_session_end(|end| async move {
    ///         // e.g. INSERT INTO audit_log ...
    ///         println!("{:?} ended ({}) at {:?}", end.owner, end.reason, end.at);
    ///     })
    ///     .build()?;
    /// let announcer = layer.spawn_announcer();
    /// # announcer.abort();
    /// # Ok(())
    /// # }
    /// # tokio::runtime::Runtime::new().unwrap().block_on(run()).unwrap();
    /// ```
    pub fn on_session_end<F, Fut>(mut self, hook: F) -> Self
    where
        F: Fn(SessionEnd) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.on_session_end = Some(Arc::new(move |end| Box::pin(hook(end))));
        self
    }

    /// How often the announcer sweeps the store for session ends (default
    /// [5 s](DEFAULT_SWEEP_INTERVAL)): an end is announced within about this of its
    /// deadline. Each sweep is one store call (plus one per batch announced).
    pub fn sweep_interval(mut self, interval: Duration) -> Self {
        self.sweep_interval = interval;
        self
    }

    /// Calls `hook` once per session when a request finds it expired (reason `idle` or
    /// `absolute`) or a response ends it (`ended`), for audit logs. A session nobody asks
    /// about after its deadline (a closed tab) is purged without a call. The hook runs on the
    /// request path: keep it quick (send to a channel for slow work).
    ///
    /// ```
    /// use tower_session_timeout::SessionTimeoutLayer;
    ///
    /// let layer = SessionTimeoutLayer::builder()
    ///     .on_expiry(|event| {
    ///         println!("session {} over: {}", event.session(), event.reason());
    ///     })
    ///     .build()?;
    /// # Ok::<(), tower_session_timeout::ConfigError>(())
    /// ```
    pub fn on_expiry(mut self, hook: impl Fn(&ExpiryEvent) + Send + Sync + 'static) -> Self {
        self.on_expiry = Some(Arc::new(hook));
        self
    }

    /// Serves the browser client script at `path`: it refreshes the session through the
    /// [keep-alive route](SessionTimeoutBuilder::keep_alive_path) while the user is active, warns
    /// [`warn_before`](SessionTimeoutBuilder::warn_before) the deadline it reads from the
    /// [status route](SessionTimeoutBuilder::status_path) with a "Stay signed in" dialog, and leaves the
    /// page when the session expires. Both routes must be set. Include it in your pages with
    /// `<script src="/session/timeout.js" defer></script>`; see the crate docs.
    pub fn client_script_path(mut self, path: impl Into<String>) -> Self {
        self.routes.client_script = Some(path.into());
        self
    }

    /// How long before the deadline the browser client warns (default 60 seconds, at least
    /// 20: WCAG 2.2 success criterion 2.2.1).
    pub fn warn_before(mut self, warn_before: Duration) -> Self {
        self.client.warn_before = warn_before;
        self
    }

    /// The browser client sends at most one keep-alive request per `interval` while the user
    /// is active (default 60 seconds). With [`warn_before`](SessionTimeoutBuilder::warn_before) it must
    /// fit in the idle timeout, so an active user never sees the warning.
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.client.keep_alive_interval = interval;
        self
    }

    /// Checks that the settings work together and builds the layer.
    pub fn build(self) -> Result<SessionTimeoutLayer<St>, ConfigError> {
        let idle = self.idle_timeout;
        if idle.is_zero() {
            return Err(ConfigError::ZeroIdleTimeout);
        }
        if let Some(absolute) = self.absolute_timeout {
            if absolute.is_zero() {
                return Err(ConfigError::ZeroAbsoluteTimeout);
            }
            if absolute < idle {
                return Err(ConfigError::AbsoluteShorterThanIdle { absolute, idle });
            }
        }
        if let Some(touch) = self.touch_interval {
            if touch >= idle {
                return Err(ConfigError::TouchIntervalNotShorter { touch, idle });
            }
        }
        if self.max_id_len == 0 {
            return Err(ConfigError::ZeroMaxIdLen);
        }
        if self.min_id_len > self.max_id_len {
            return Err(ConfigError::MinIdLenAboveMax {
                min: self.min_id_len,
                max: self.max_id_len,
            });
        }
        if self.store_timeout.is_some_and(|timeout| timeout.is_zero()) {
            return Err(ConfigError::ZeroStoreTimeout);
        }
        if self.sweep_interval.is_zero() {
            return Err(ConfigError::ZeroSweepInterval);
        }
        let session_limit = match self.session_limit {
            Some((max, on_limit)) => Some(SessionLimit {
                max: std::num::NonZeroU32::new(max).ok_or(ConfigError::ZeroSessionLimit)?,
                on_limit,
            }),
            None => None,
        };
        self.validate_cookie()?;
        self.validate_routes()?;
        self.client.validate()?;
        if let Some(url) = &self.login_url {
            if url.parse::<Uri>().is_err() {
                return Err(ConfigError::InvalidLoginUrl(url.clone()));
            }
        }
        let seconds_left_header = match self.seconds_left_header {
            Some(name) => Some(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ConfigError::InvalidHeaderName(name))?,
            ),
            None => None,
        };
        let client_script = match &self.routes.client_script {
            Some(_) => Some(self.client.render(&Prelude {
                keep_alive_path: self.routes.keep_alive.as_deref(),
                status_path: self.routes.status.as_deref(),
                login_url: self.login_url.as_deref(),
                cookie_name: &self.cookie_name,
                idle_timeout: idle,
            })?),
            None => None,
        };
        let config = Config {
            policy: Policy::new(
                idle,
                self.absolute_timeout,
                self.touch_interval,
                self.tombstone_retention,
            )
            .with_owner_rules(self.max_session_timeouts, session_limit),
            cookie: CookieSettings::new(
                self.cookie_name,
                &self.cookie_path,
                self.cookie_domain.as_deref(),
            ),
            store: self.store,
            clock: self.clock,
            routes: self.routes,
            login_url: self.login_url,
            responder: self.responder,
            fail_open: self.fail_open,
            id_bounds: IdBounds {
                // An empty value is no session at all.
                min: self.min_id_len.max(1),
                max: self.max_id_len,
            },
            seconds_left_header,
            store_timeout: self.store_timeout,
            on_expiry: self.on_expiry,
            on_session_end: self.on_session_end,
            sweep_interval: self.sweep_interval,
            announcements: Announcements::default(),
            errors: ErrorLog::default(),
            client_script,
        };
        Ok(SessionTimeoutLayer {
            config: Arc::new(config),
        })
    }

    fn validate_cookie(&self) -> Result<(), ConfigError> {
        let name = &self.cookie_name;
        if name.is_empty() {
            return Err(ConfigError::EmptyCookieName);
        }
        if !cookie::is_valid_name(name) {
            return Err(ConfigError::InvalidCookieName(name.clone()));
        }
        let path = &self.cookie_path;
        if !path.starts_with('/') || !cookie::is_valid_attribute(path) {
            return Err(ConfigError::InvalidCookiePath(path.clone()));
        }
        if let Some(domain) = &self.cookie_domain {
            if domain.is_empty() || !cookie::is_valid_attribute(domain) {
                return Err(ConfigError::InvalidCookieDomain(domain.clone()));
            }
        }
        if name.starts_with("__Host-") && (path != "/" || self.cookie_domain.is_some()) {
            return Err(ConfigError::HostPrefixRules(name.clone()));
        }
        Ok(())
    }

    fn validate_routes(&self) -> Result<(), ConfigError> {
        let routes = &self.routes;
        let named = [
            routes.keep_alive.as_deref(),
            routes.status.as_deref(),
            routes.client_script.as_deref(),
        ];
        let matched = routes
            .exempt
            .iter()
            .chain(&routes.passive)
            .map(Matcher::path);
        for path in named.into_iter().chain(matched).flatten() {
            if !path.starts_with('/') {
                return Err(ConfigError::InvalidRoutePath(path.to_owned()));
            }
        }
        for (i, path) in named.iter().enumerate() {
            if let Some(path) = path {
                if named[i + 1..].contains(&Some(path)) {
                    return Err(ConfigError::RouteConflict((*path).to_owned()));
                }
            }
        }
        Ok(())
    }
}

impl<St: fmt::Debug> fmt::Debug for SessionTimeoutBuilder<St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTimeoutBuilder")
            .field("store", &self.store)
            .field("idle_timeout", &self.idle_timeout)
            .field("absolute_timeout", &self.absolute_timeout)
            .field("touch_interval", &self.touch_interval)
            .field("cookie_name", &self.cookie_name)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}
