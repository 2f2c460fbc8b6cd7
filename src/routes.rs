//! Which requests the layer treats specially: its own routes, exempt routes and passive
//! routes.

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Uri};

/// What the layer sees of a request when asking a route predicate.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
}

impl<'a> RequestHead<'a> {
    pub(crate) fn of<B>(request: &'a Request<B>) -> Self {
        RequestHead {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
        }
    }

    /// The request method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request path.
    pub fn path(&self) -> &'a str {
        self.uri.path()
    }

    /// The request headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }
}

pub(crate) type Predicate = Arc<dyn Fn(&RequestHead<'_>) -> bool + Send + Sync>;

/// One rule that picks requests.
#[derive(Clone)]
pub(crate) enum Matcher {
    Exact(String),
    Prefix(String),
    When(Predicate),
}

impl Matcher {
    fn matches(&self, head: &RequestHead<'_>) -> bool {
        match self {
            Matcher::Exact(path) => head.path() == path,
            Matcher::Prefix(prefix) => covers(prefix, head.path()),
            Matcher::When(predicate) => predicate(head),
        }
    }

    /// The path a path rule names, for validation.
    pub(crate) fn path(&self) -> Option<&str> {
        match self {
            Matcher::Exact(path) | Matcher::Prefix(path) => Some(path),
            Matcher::When(_) => None,
        }
    }
}

/// Whether `prefix` covers `path` in whole segments: `/static` (or `/static/`) covers
/// `/static`, `/static/` and `/static/app.js`, never `/static-admin`. Paths are compared as
/// the request spells them, percent escapes and all, as axum's router matches them; a
/// `%2F` is no segment boundary.
fn covers(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(path) => write!(f, "Exact({path:?})"),
            Matcher::Prefix(prefix) => write!(f, "Prefix({prefix:?})"),
            Matcher::When(_) => f.write_str("When(..)"),
        }
    }
}

/// How the layer handles one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Refreshes the session and answers `OK`; never reaches the inner service.
    KeepAlive,
    /// Reports the deadlines as JSON without refreshing; never reaches the inner service.
    Status,
    /// Serves the browser client script, whatever the session's state; never reaches the
    /// inner service or the store.
    ClientScript,
    /// Reachable with an expired or unknown session (login page, static assets).
    Exempt,
    /// Checked for expiry, but does not refresh the session.
    Passive,
    /// Everything else.
    Normal,
}

/// The route rules of one layer.
#[derive(Debug, Clone, Default)]
pub(crate) struct Routes {
    pub(crate) keep_alive: Option<String>,
    pub(crate) status: Option<String>,
    pub(crate) client_script: Option<String>,
    pub(crate) exempt: Vec<Matcher>,
    pub(crate) passive: Vec<Matcher>,
}

impl Routes {
    /// Whether no route is special: every request is [`Route::Normal`].
    fn is_empty(&self) -> bool {
        self.keep_alive.is_none()
            && self.status.is_none()
            && self.client_script.is_none()
            && self.exempt.is_empty()
            && self.passive.is_empty()
    }

    #[inline]
    pub(crate) fn classify<B>(&self, request: &Request<B>) -> Route {
        if self.is_empty() {
            // Not even the path to read (and, inlined, not even a call).
            return Route::Normal;
        }
        self.classify_path(request)
    }

    fn classify_path<B>(&self, request: &Request<B>) -> Route {
        let path = request.uri().path();
        if self.keep_alive.as_deref() == Some(path) {
            return Route::KeepAlive;
        }
        if self.status.as_deref() == Some(path) {
            return Route::Status;
        }
        if self.client_script.as_deref() == Some(path) {
            return Route::ClientScript;
        }
        if self.exempt.is_empty() && self.passive.is_empty() {
            return Route::Normal;
        }
        let head = RequestHead::of(request);
        if self.exempt.iter().any(|matcher| matcher.matches(&head)) {
            Route::Exempt
        } else if self.passive.iter().any(|matcher| matcher.matches(&head)) {
            Route::Passive
        } else {
            Route::Normal
        }
    }
}
