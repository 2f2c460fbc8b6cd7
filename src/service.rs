//! [`SessionTimeout`]: the middleware service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::config::Config;
use crate::cookie::{self, RequestCookie};
use crate::expired;
use crate::future::{decide, After, Checking, Decided, Pending, ResponseFuture};
use crate::handle::SessionId;
use crate::inactive::inactive;
use crate::metrics::{self, Decision};
use crate::routes::Route;
use crate::sessions::Sessions;
use crate::store::{SessionKey, Touch};
use crate::{answer, ExpiryReason, MemoryStore, ResponseBody, SessionStore};

/// Middleware that enforces idle and absolute session timeouts on an inner service.
///
/// Made by [`SessionTimeoutLayer`](crate::SessionTimeoutLayer). Requests without a session
/// cookie pass untouched; requests on an active session refresh it and pass; requests on an
/// expired, ended or unknown session get `440 Login Time-out` and never reach the inner
/// service. The [crate docs](crate) have the full table.
pub struct SessionTimeout<S, St = MemoryStore> {
    inner: S,
    config: Arc<Config<St>>,
}

impl<S, St> SessionTimeout<S, St> {
    pub(crate) fn new(inner: S, config: Arc<Config<St>>) -> Self {
        SessionTimeout { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, St> Clone for SessionTimeout<S, St> {
    fn clone(&self) -> Self {
        SessionTimeout {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, St> fmt::Debug for SessionTimeout<S, St> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTimeout")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, St, ReqBody, ResBody> Service<Request<ReqBody>> for SessionTimeout<S, St>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    St: SessionStore,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, St, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let config = Arc::clone(&self.config);
        let route = config.routes.classify(&request);
        if let (Route::ClientScript, Some(script)) = (route, &config.client_script) {
            // The script is the same for every visitor: no session lookup, no inner call.
            let mut answer = answer::client_script(script);
            expired::finish(&mut answer);
            return ResponseFuture::answered(answer, config);
        }
        let found = cookie::find(request.headers(), &config.cookie.name, config.id_bounds);
        let reason = match found {
            RequestCookie::Present(found) => {
                let key = SessionKey::from_id_bytes(found.bytes());
                let id = SessionId::new(&found);
                let touch = match route {
                    Route::Passive | Route::Status => Touch::Passive,
                    _ => Touch::Refresh,
                };
                let now = config.now();
                let checking = Checking {
                    route,
                    key,
                    id,
                    now,
                };
                let policy = &config.policy;
                // A store that can answer without waiting (in memory, or from a cache) saves
                // the request a trip through the response future's states.
                if let Some(checked) =
                    metrics::timed("check", || config.store.try_check(&key, now, policy, touch))
                {
                    return match decide(checked, checking, &mut request, &config) {
                        Decided::Answer(answer) => {
                            // The readied service is not called: let it go (a concurrency
                            // permit, a buffer slot), as a wait for the store would; keep a
                            // clone.
                            self.inner = self.inner.clone();
                            ResponseFuture::answered(answer, config)
                        }
                        Decided::Pass(after) => {
                            ResponseFuture::calling(self.inner.call(request), after, config)
                        }
                    };
                }
                let check = config.store.check(&key, now, policy, touch);
                // The store answers before the inner service is called, so the future takes
                // the clone that `poll_ready` readied and leaves a fresh one here.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let pending = Box::new(Pending {
                    inner,
                    request,
                    checking,
                });
                return ResponseFuture::checking(check, pending, config);
            }
            RequestCookie::Absent if matches!(route, Route::KeepAlive | Route::Status) => {
                Some(ExpiryReason::Unknown)
            }
            RequestCookie::Absent => {
                metrics::request(Decision::NoSession);
                let sessions = Sessions::new(Arc::clone(&config));
                let after = After::new(None, None, None, false, &mut request, sessions);
                return ResponseFuture::calling(self.inner.call(request), after, config);
            }
            RequestCookie::Untracked => {
                tracing::debug!(
                    ?route,
                    "session id outside min_id_len..=max_id_len; never looked up"
                );
                Some(ExpiryReason::Unknown)
            }
            RequestCookie::Malformed => None,
        };
        match inactive(&config, route, reason, &mut request) {
            Some(answer) => ResponseFuture::answered(answer, config),
            None => {
                let sessions = Sessions::new(Arc::clone(&config));
                let after = After::new(None, None, None, true, &mut request, sessions);
                ResponseFuture::calling(self.inner.call(request), after, config)
            }
        }
    }
}
