//! The crate's errors: one enum per concern.

use std::time::Duration;

/// A setting passed to [`SessionTimeoutBuilder`](crate::SessionTimeoutBuilder) that cannot work; returned by
/// [`SessionTimeoutBuilder::build`](crate::SessionTimeoutBuilder::build).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The idle timeout is zero.
    #[error("idle_timeout is zero: every session would expire at once; set it to how long a session may go unused (IIS uses 20 minutes)")]
    ZeroIdleTimeout,
    /// The absolute timeout is zero.
    #[error("absolute_timeout is zero: every session would expire at once; set a positive duration, or leave it unset for no absolute limit")]
    ZeroAbsoluteTimeout,
    /// The absolute timeout is shorter than the idle timeout.
    #[error("absolute_timeout ({absolute:?}) is shorter than idle_timeout ({idle:?}): raise absolute_timeout to at least idle_timeout (the IIS rule that the forms timeout is at least the session timeout)")]
    AbsoluteShorterThanIdle {
        /// The absolute timeout set.
        absolute: Duration,
        /// The idle timeout set.
        idle: Duration,
    },
    /// The touch interval is not shorter than the idle timeout.
    #[error("touch_interval ({touch:?}) is not shorter than idle_timeout ({idle:?}): sessions would expire while skipping refreshes; set it well below idle_timeout")]
    TouchIntervalNotShorter {
        /// The touch interval set.
        touch: Duration,
        /// The idle timeout set.
        idle: Duration,
    },
    /// The cookie name is empty.
    #[error("cookie_name is empty: set the name of the session cookie your app sets (tower-sessions and axum-login use \"id\")")]
    EmptyCookieName,
    /// The cookie name has a character RFC 6265 does not allow in a name.
    #[error("cookie_name {0:?} is not a valid cookie name: use letters, digits and !#$%&'*+-.^_`|~ only")]
    InvalidCookieName(String),
    /// The cookie path does not start with `/` or holds a character not allowed in it.
    #[error("cookie_path {0:?} is invalid: it must start with '/' and hold no ';', spaces or control characters")]
    InvalidCookiePath(String),
    /// The cookie domain holds a character not allowed in it.
    #[error("cookie_domain {0:?} is invalid: give a host name such as \"example.com\"")]
    InvalidCookieDomain(String),
    /// A `__Host-` cookie name with a domain or a path other than `/`.
    #[error("cookie_name {0:?} has the __Host- prefix, which browsers accept only with cookie_path \"/\" and no cookie_domain")]
    HostPrefixRules(String),
    /// A route path that does not start with `/`.
    #[error("route path {0:?} is invalid: it must start with '/'")]
    InvalidRoutePath(String),
    /// Two of the layer's own routes (keep-alive, status, client script) share one path.
    #[error(
        "the path {0:?} is given to two routes: keep-alive, status and the client script need paths of their own"
    )]
    RouteConflict(String),
    /// The login URL cannot be used in a link.
    #[error(
        "login_url {0:?} is not a valid URI: give a path such as \"/login\" or an absolute URL"
    )]
    InvalidLoginUrl(String),
    /// The seconds-left header name is not a valid header name.
    #[error("seconds_left_header {0:?} is not a valid header name: use lowercase letters, digits and '-'")]
    InvalidHeaderName(String),
    /// The store timeout is zero.
    #[error("store_timeout is zero: every store call would time out; give it a few seconds, or call no_store_timeout() to wait as long as the store takes")]
    ZeroStoreTimeout,
    /// The maximum id length is zero.
    #[error("max_id_len is zero: no session id would ever be accepted; leave the default (1024) or set the length of your ids")]
    ZeroMaxIdLen,
    /// `min_id_len` is above `max_id_len`.
    #[error("min_id_len ({min}) is above max_id_len ({max}): no session id would ever be accepted; lower min_id_len to the length of your shortest ids (default 16)")]
    MinIdLenAboveMax {
        /// The minimum given.
        min: usize,
        /// The maximum given.
        max: usize,
    },
    /// The browser client's warning would come less than 20 seconds before the deadline.
    #[error("warn_before ({0:?}) is under 20 seconds: WCAG 2.2 success criterion 2.2.1 gives users at least 20 seconds to extend their session; set 20 s or more")]
    WarnBeforeTooShort(Duration),
    /// The browser client's keep-alive interval is zero.
    #[error("keep_alive_interval is zero: the client would send a request on every mouse movement; set the shortest time between two keep-alive requests (default 60 s)")]
    ZeroKeepAliveInterval,
    /// The warning and the keep-alive interval together do not fit in the idle timeout.
    #[error("warn_before ({warn_before:?}) plus keep_alive_interval ({keep_alive_interval:?}) is not shorter than idle_timeout ({idle:?}): an active user would see the warning; shorten them or raise idle_timeout")]
    ClientTimingDoesNotFit {
        /// The warning time set.
        warn_before: Duration,
        /// The keep-alive interval set.
        keep_alive_interval: Duration,
        /// The idle timeout set.
        idle: Duration,
    },
    /// The announcer's sweep interval is zero.
    #[error("sweep_interval is zero: the announcer would sweep the store without pause; give it a few seconds (default 5 s)")]
    ZeroSweepInterval,
    /// `max_sessions_per_owner` is zero.
    #[error("max_sessions_per_owner is zero: no one could ever sign in; set the most sessions one user may have at once, or leave it unset for no limit")]
    ZeroSessionLimit,
    /// The client script is enabled without the routes it talks to.
    #[error("client_script_path needs keep_alive_path and status_path: the script refreshes the session through the first and reads its deadline from the second; add both, e.g. .keep_alive_path(\"/session/keepalive\").status_path(\"/session/status\")")]
    ClientScriptNeedsRoutes,
}

/// A store call that failed. The layer answers it per its fail-closed (503, the default) or
/// fail-open setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend (connection, server, query) failed.
    #[error("the session store failed: {0}; check that its server is reachable and healthy")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A stored record could not be read back.
    #[error("a stored session record is malformed ({0}); delete it, or check that every instance runs the same version of this crate")]
    CorruptRecord(String),
    /// The store did not answer in time.
    #[error(
        "the session store did not answer within {0:?}; check its load, or raise the store timeout"
    )]
    Timeout(Duration),
    /// The store does not implement this operation (per-owner operations and per-session
    /// timeouts are optional for a [`SessionStore`](crate::SessionStore)).
    #[error("this session store cannot {0}; use one of the crate's stores, or implement the operation in yours")]
    Unsupported(&'static str),
}

impl StoreError {
    /// Wraps any backend error.
    pub fn backend(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Backend(error.into())
    }
}

/// Text that is not one of [`ExpiryReason`](crate::ExpiryReason)'s names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a session end reason: expected idle, absolute, ended, superseded or unknown")]
pub struct ParseExpiryReasonError(pub(crate) String);
