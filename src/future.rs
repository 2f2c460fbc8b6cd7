//! [`ResponseFuture`], the future [`SessionTimeout`](crate::SessionTimeout) returns.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::SET_COOKIE;
use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::bounded::Bounded;
use crate::config::Config;
use crate::cookie::{self, ResponseCookie};
use crate::handle::{annotate, SessionId};
use crate::inactive::inactive;
use crate::metrics::{self, Decision};
use crate::routes::Route;
use crate::sessions::Sessions;
use crate::store::{Begin, Check, NewSession, SessionKey, SessionTimeouts, StoreFuture};
use crate::{
    answer, expired, ExpiryReason, ResponseBody, SessionHandle, SessionInfo, SessionStore,
    StoreError, Timestamp,
};

/// The session cookie of a request the store is checking, and how the request uses it.
pub(crate) struct Checking {
    pub(crate) route: Route,
    pub(crate) key: SessionKey,
    pub(crate) id: SessionId,
    pub(crate) now: Timestamp,
}

/// A request waiting for the store's answer, with the inner service that will take it.
pub(crate) struct Pending<S, B> {
    pub(crate) inner: S,
    pub(crate) request: Request<B>,
    pub(crate) checking: Checking,
}

/// What the layer does with a request once the store has checked its session.
pub(crate) enum Decided {
    /// The layer answers itself.
    Answer(Response<Bytes>),
    /// The request goes on to the inner service; `After` settles the response.
    Pass(After),
}

/// What the layer needs, once the inner service answers, to begin or end sessions: the
/// request's [`SessionHandle`], which also remembers the session id the request carried (a
/// response that sets this id again begins nothing, so an expired id is never revived, even
/// when the store could not be asked; one that clears the cookie or rotates the id ends it),
/// the session's times when it is active, and whether the cookie was stale. Only the handle,
/// so the response future carries a pointer, not the session's details.
pub(crate) struct After {
    handle: SessionHandle,
}

impl After {
    /// Puts the session info and a [`SessionHandle`] in the request and remembers them.
    pub(crate) fn new<B>(
        carried: Option<SessionKey>,
        info: Option<SessionInfo>,
        id: Option<SessionId>,
        stale: bool,
        request: &mut Request<B>,
        sessions: Sessions,
    ) -> Self {
        After {
            handle: annotate(request, info, id, carried, stale, sessions),
        }
    }
}

pin_project! {
    /// The response future of [`SessionTimeout`](crate::SessionTimeout).
    ///
    /// It waits for the store (unless the store answered at once, through
    /// [`SessionStore::try_check`]), then for the inner service, then for the store again when
    /// the response begins or ends a session. Nothing is boxed unless a store makes the
    /// request wait: then the waiting request and the store timeout's timer are.
    pub struct ResponseFuture<S, St, B>
    where
        S: Service<Request<B>>,
        St: SessionStore,
    {
        #[pin]
        state: State<S, St, B>,
        config: Arc<Config<St>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, St, B>
    where
        S: Service<Request<B>>,
        St: SessionStore,
    {
        Checking {
            #[pin]
            check: Bounded<St::CheckFuture>,
            // Boxed: only a store that makes the request wait comes here, and a request is
            // large; unboxed, it would be copied with the future on every path.
            pending: Option<Box<Pending<S, B>>>,
        },
        Calling {
            #[pin]
            call: S::Future,
            after: Option<After>,
        },
        Settling {
            #[pin]
            settle: Settle<St>,
            response: Option<S::Response>,
        },
        Answered {
            response: Option<Response<Bytes>>,
        },
    }
}

const POLLED_AFTER_COMPLETION: &str = "ResponseFuture polled after completion";

impl<S, St, B> ResponseFuture<S, St, B>
where
    S: Service<Request<B>>,
    St: SessionStore,
{
    pub(crate) fn checking(
        check: St::CheckFuture,
        pending: Box<Pending<S, B>>,
        config: Arc<Config<St>>,
    ) -> Self {
        let state = State::Checking {
            check: Bounded::new("check", check, config.store_timeout),
            pending: Some(pending),
        };
        ResponseFuture { state, config }
    }

    pub(crate) fn calling(call: S::Future, after: After, config: Arc<Config<St>>) -> Self {
        let state = State::Calling {
            call,
            after: Some(after),
        };
        ResponseFuture { state, config }
    }

    pub(crate) fn answered(response: Response<Bytes>, config: Arc<Config<St>>) -> Self {
        let state = State::Answered {
            response: Some(response),
        };
        ResponseFuture { state, config }
    }
}

impl<S, St, B, ResBody> Future for ResponseFuture<S, St, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    St: SessionStore,
{
    type Output = Result<Response<ResponseBody<ResBody>>, S::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let this = self.as_mut().project();
            let config = &**this.config;
            let next = match this.state.project() {
                StateProj::Checking { check, pending } => {
                    let checked = ready!(check.poll(cx));
                    let pending = pending.take().expect(POLLED_AFTER_COMPLETION);
                    next_state(checked, *pending, this.config)
                }
                StateProj::Calling { call, after } => {
                    let mut response = ready!(call.poll(cx))?;
                    let after = after.take().expect(POLLED_AFTER_COMPLETION);
                    match settle(&mut response, &after, config) {
                        None => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                        Some(settle) => State::Settling {
                            settle,
                            response: Some(response),
                        },
                    }
                }
                StateProj::Settling { settle, response } => {
                    let settled = ready!(settle.poll_settle(cx, config));
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    let mut answer = match settled {
                        Settled::Done => return Poll::Ready(Ok(response.map(ResponseBody::inner))),
                        Settled::EndFailed if config.fail_open => {
                            return Poll::Ready(Ok(response.map(ResponseBody::inner)))
                        }
                        // The session the app ended is still active: not a success.
                        Settled::EndFailed => answer::store_unavailable(),
                        // The new session was not begun: the app's sign-in did not happen.
                        Settled::LimitReached => {
                            let mut answer = answer::session_limit();
                            answer
                                .headers_mut()
                                .append(SET_COOKIE, config.cookie.clear.clone());
                            answer
                        }
                    };
                    drop(response);
                    expired::finish(&mut answer);
                    return Poll::Ready(Ok(answer.map(ResponseBody::full)));
                }
                StateProj::Answered { response } => {
                    let response = response.take().expect(POLLED_AFTER_COMPLETION);
                    return Poll::Ready(Ok(response.map(ResponseBody::full)));
                }
            };
            self.as_mut().project().state.set(next);
        }
    }
}

/// The next step once the store has checked the request's session.
fn next_state<S, St, B>(
    checked: Result<Check, StoreError>,
    pending: Pending<S, B>,
    config: &Arc<Config<St>>,
) -> State<S, St, B>
where
    S: Service<Request<B>>,
    St: SessionStore,
{
    let Pending {
        mut inner,
        mut request,
        checking,
    } = pending;
    match decide(checked, checking, &mut request, config) {
        Decided::Answer(answer) => State::Answered {
            response: Some(answer),
        },
        Decided::Pass(after) => State::Calling {
            call: inner.call(request),
            after: Some(after),
        },
    }
}

/// What the store's answer means for the request: the layer's own answer, or the request
/// for the inner service (with its session in the extensions, or its cookie removed).
#[inline]
pub(crate) fn decide<St: SessionStore, B>(
    checked: Result<Check, StoreError>,
    checking: Checking,
    request: &mut Request<B>,
    shared: &Arc<Config<St>>,
) -> Decided {
    let config = &**shared;
    let Checking {
        route,
        key,
        id,
        now,
    } = checking;
    let (carried, info, stale) = match checked {
        Ok(Check::Active(record)) => {
            metrics::request(match route {
                Route::Passive | Route::Status => Decision::Passive,
                _ => Decision::Active,
            });
            let info = SessionInfo::new(&record, &config.policy, now);
            // `route=Passive` says the session was checked but not refreshed.
            tracing::trace!(session = %key, ?route, "session active");
            match route {
                Route::KeepAlive => {
                    let mut answer = answer::keep_alive();
                    set_seconds_left(&mut answer, &info, now, config);
                    expired::finish(&mut answer);
                    return Decided::Answer(answer);
                }
                Route::Status => {
                    let mut answer = answer::status(&info, now);
                    expired::finish(&mut answer);
                    return Decided::Answer(answer);
                }
                _ => (Some(key), Some(info), false),
            }
        }
        Ok(check @ (Check::Expired(reason) | Check::Retired(reason))) => {
            if matches!(check, Check::Retired(_)) {
                config.report_expiry(key, reason, now);
            }
            tracing::debug!(session = %key, %reason, ?route, "session not active");
            match inactive(config, route, Some(reason), request) {
                Some(answer) => return Decided::Answer(answer),
                None => (Some(key), None, true),
            }
        }
        Err(error) => {
            metrics::request(Decision::StoreError);
            // The keep-alive and status routes are the layer's own: no app route could stand
            // in for them, so they say the store failed even when fail-open.
            if !config.fail_open || matches!(route, Route::KeepAlive | Route::Status) {
                config.errors.record(&error, "answered 503 (fail-closed)");
                let mut answer = answer::store_unavailable();
                expired::finish(&mut answer);
                return Decided::Answer(answer);
            }
            config
                .errors
                .record(&error, "passed the request on (fail-open)");
            // Unchecked, so the app must not see it: as on an exempt route, the request goes
            // on without its session cookie. The response does not clear it, so the user
            // stays signed in once the store is back.
            cookie::remove(request.headers_mut(), &config.cookie.name);
            (Some(key), None, false)
        }
    };
    // The handler sees the id only of a session the layer found active.
    let id = info.is_some().then_some(id);
    let sessions = Sessions::new(Arc::clone(shared));
    let after = After::new(carried, info, id, stale, request, sessions);
    Decided::Pass(after)
}

fn set_seconds_left<T, St>(
    response: &mut Response<T>,
    info: &SessionInfo,
    now: Timestamp,
    config: &Config<St>,
) {
    if let Some(name) = &config.seconds_left_header {
        let seconds = info.deadline().saturating_since(now).as_secs();
        response
            .headers_mut()
            .insert(name.clone(), HeaderValue::from(seconds));
    }
}

/// Reads what the response does to the session (a `Set-Cookie` the layer observes, or what
/// the handler asked through its [`SessionHandle`]) and returns the store calls that carry it
/// out, if any.
fn settle<St: SessionStore, T>(
    response: &mut Response<T>,
    after: &After,
    config: &Config<St>,
) -> Option<Settle<St>> {
    // Read once, and only if needed: most responses set no cookie and ask for nothing.
    let clock = std::cell::OnceCell::new();
    let now = || *clock.get_or_init(|| config.now());
    let name = &config.cookie.name;
    // What the request carried is read where needed: most responses need none of it.
    let handle = &after.handle;
    let mut begin = None;
    let mut end = None;
    match cookie::observe(response.headers(), name, now) {
        ResponseCookie::Set(id) => {
            let carried = handle.carried();
            begin = key_to_begin(&id, carried, config);
            // Any other value replacing the request's id ends it (a rotation, or a sign-out
            // that writes a placeholder such as `id=deleted`), whether or not the new value
            // is one the layer tracks: the browser will not send the old id again.
            if carried.is_some_and(|carried| carried != SessionKey::from_id(&id)) {
                end = carried;
            }
        }
        ResponseCookie::Cleared => end = handle.carried(),
        ResponseCookie::Untouched => {
            if handle.stale() {
                response
                    .headers_mut()
                    .append(SET_COOKIE, config.cookie.clear.clone());
            }
        }
    }
    let asked = handle.take_requests();
    let asked = asked.as_ref();
    if let Some(id) = asked.and_then(|asked| asked.begin.as_ref()) {
        begin = key_to_begin(id, handle.carried(), config).or(begin);
    }
    if asked.is_some_and(|asked| asked.end) {
        end = handle.carried();
    }
    let timeouts = asked
        .and_then(|asked| asked.timeouts)
        .map(|timeouts| timeouts.within(config.policy.max_session_timeouts()));
    // New timeouts go to the session this response begins, or else to the request's own
    // (if active), unless it is ending.
    let retime = match (begin, end, timeouts) {
        (None, None, Some(timeouts)) if handle.info().is_some() => {
            handle.carried().map(|key| (key, timeouts))
        }
        _ => None,
    };
    let owner = asked.and_then(|asked| asked.owner.as_deref());
    if owner.is_some() && begin.is_none() {
        tracing::warn!("set_owner on a response that begins no session; ignored");
    }
    if let (Some(_), None) = (&config.seconds_left_header, end) {
        if let Some(info) = handle.info() {
            set_seconds_left(response, &info, now(), config);
        }
    }
    if begin.is_none() && end.is_none() && retime.is_none() {
        return None;
    }
    let new = NewSession { owner, timeouts };
    Some(Settle::new(
        begin.map(|key| (key, new)),
        end,
        retime,
        now(),
        config,
    ))
}

/// The key of an id a response or handler begins, unless it is the request's own session (a
/// cookie re-sent on every response, or an expired id the app set again) or an id the layer
/// would never accept back in a request (outside the length bounds, or with bytes some cookie
/// reader would read differently).
fn key_to_begin<St>(
    id: &str,
    current: Option<SessionKey>,
    config: &Config<St>,
) -> Option<SessionKey> {
    let bounds = config.id_bounds;
    if !bounds.admits(id.len()) {
        tracing::warn!(
            len = id.len(),
            min = bounds.min,
            max = bounds.max,
            "session id outside min_id_len..=max_id_len; not tracked"
        );
        return None;
    }
    if !cookie::is_session_id(id.as_bytes()) {
        tracing::warn!(
            "session id with bytes cookie readers disagree on (such as '%'); not tracked"
        );
        return None;
    }
    let key = SessionKey::from_id(id);
    (current != Some(key)).then_some(key)
}

pin_project! {
    /// The store calls that begin and end sessions after a response.
    pub(crate) struct Settle<St>
    where
        St: SessionStore,
    {
        #[pin]
        begin: Option<Bounded<St::BeginFuture>>,
        #[pin]
        end: Option<Ending<Bounded<St::EndFuture>>>,
        #[pin]
        retime: Option<Bounded<StoreFuture<bool>>>,
        began: Option<SessionKey>,
        ended: Option<SessionKey>,
        now: Timestamp,
        limit_reached: bool,
    }
}

/// How the store calls after a response went.
enum Settled {
    Done,
    /// An end failed: the session the app meant to end is still active.
    EndFailed,
    /// The owner has as many sessions as the limit allows, which refuses more.
    LimitReached,
}

impl<St: SessionStore> Settle<St> {
    fn new(
        begin: Option<(SessionKey, NewSession<'_>)>,
        end: Option<SessionKey>,
        retime: Option<(SessionKey, SessionTimeouts)>,
        now: Timestamp,
        config: &Config<St>,
    ) -> Self {
        let (store, policy, limit) = (&config.store, &config.policy, config.store_timeout);
        Settle {
            begin: begin.map(|(key, new)| {
                Bounded::new("begin", store.begin(&key, now, policy, new), limit)
            }),
            end: end
                .map(|key| Ending::start(Bounded::new("end", store.end(&key, now, policy), limit))),
            retime: retime.map(|(key, timeouts)| {
                Bounded::new(
                    "set_timeouts",
                    store.set_timeouts(&key, now, policy, timeouts),
                    limit,
                )
            }),
            began: begin.map(|(key, _)| key),
            ended: end,
            now,
            limit_reached: false,
        }
    }

    /// Drives the calls to completion, and answers how they went. A failed begin is logged,
    /// not answered: the next request on the untracked session gets 440, which fails safe
    /// (so does a failed change of timeouts: the session keeps the ones it had). A failed
    /// end left a session active that the app meant to end, so with fail-closed the response
    /// must not look like a success.
    fn poll_settle(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        config: &Config<St>,
    ) -> Poll<Settled> {
        let mut this = self.project();
        if let Some(begin) = this.begin.as_mut().as_pin_mut() {
            let outcome = ready!(begin.poll(cx));
            if let Some(session) = *this.began {
                match outcome {
                    Ok(Begin::Began) => {
                        metrics::session_begun();
                        tracing::debug!(%session, "session began");
                    }
                    Ok(Begin::AlreadyActive) => {}
                    Ok(Begin::Refused(reason)) => {
                        tracing::warn!(%session, %reason, "the app set a session id that already expired; not revived")
                    }
                    Ok(Begin::LimitReached) => {
                        tracing::info!(%session, "sign-in refused: the owner has as many sessions as the limit allows");
                        *this.limit_reached = true;
                    }
                    Err(error) => config
                        .errors
                        .record(&error, "did not begin a session; its requests will get 440"),
                }
            }
            this.begin.set(None);
        }
        if let Some(retime) = this.retime.as_mut().as_pin_mut() {
            if let Err(error) = ready!(retime.poll(cx)) {
                config
                    .errors
                    .record(&error, "did not change a session's timeouts");
            }
            this.retime.set(None);
        }
        let mut end_failed = false;
        if let Some(end) = this.end.as_mut().as_pin_mut() {
            let outcome = ready!(end.poll(cx));
            if let Some(session) = *this.ended {
                match outcome {
                    Ok(true) => config.report_expiry(session, ExpiryReason::Ended, *this.now),
                    Ok(false) => {}
                    Err(error) => {
                        end_failed = true;
                        let what = if config.fail_open {
                            "did not end a session (fail-open: the response went out)"
                        } else {
                            "did not end a session; answered 503 (fail-closed)"
                        };
                        config.errors.record(&error, what);
                    }
                }
            }
            this.end.set(None);
        }
        Poll::Ready(if end_failed {
            Settled::EndFailed
        } else if *this.limit_reached {
            Settled::LimitReached
        } else {
            Settled::Done
        })
    }
}

pin_project! {
    /// A store call that ends a session. It runs as a task of its own where there is a Tokio
    /// runtime, so once started it completes (within the store timeout) even if the client
    /// goes away and the response future is dropped: a sign-out must not be half done.
    #[project = EndingProj]
    enum Ending<F> {
        Spawned {
            #[pin]
            task: tokio::task::JoinHandle<Result<bool, StoreError>>,
        },
        Inline {
            #[pin]
            call: F,
        },
    }
}

impl<F> Ending<F>
where
    F: Future<Output = Result<bool, StoreError>> + Send + 'static,
{
    fn start(call: F) -> Self {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => Ending::Spawned {
                task: runtime.spawn(call),
            },
            Err(_) => Ending::Inline { call },
        }
    }
}

impl<F> Future for Ending<F>
where
    F: Future<Output = Result<bool, StoreError>>,
{
    type Output = Result<bool, StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            EndingProj::Spawned { task } => {
                let joined = ready!(task.poll(cx));
                // The task only fails if the store's future panicked.
                Poll::Ready(
                    joined.unwrap_or_else(|error| Err(StoreError::Backend(Box::new(error)))),
                )
            }
            EndingProj::Inline { call } => call.poll(cx),
        }
    }
}
