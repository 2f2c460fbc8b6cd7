//! A small app behind the layer, driven with `tower::ServiceExt` and a manual clock.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{COOKIE, SET_COOKIE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};
use tower_session_timeout::{
    ManualClock, MemoryStore, SessionHandle, SessionStore, SessionTimeout, SessionTimeoutBuilder,
};

pub const IDLE: Duration = Duration::from_secs(60);

pub type Inner = BoxCloneSyncService<Request<Empty<Bytes>>, Response<Full<Bytes>>, Infallible>;

/// The inner service: `/login?id=X` (or `x-new-id: X`) sets cookie `id=X` (and names the owner
/// in `x-owner`, if any), `/logout` clears it, `/checked-at` answers when the layer checked the
/// session, `/begin?id=X`
/// begins X through the handle, `/end` ends through the handle, `/echo-cookie` answers the
/// `Cookie` header it got, `/info` answers the session's last-seen time, `/whoami` the
/// session id and the milliseconds it has left; everything else
/// answers `inner`. It counts its calls.
pub fn inner(calls: Arc<AtomicUsize>) -> Inner {
    BoxCloneSyncService::new(tower::service_fn(move |request: Request<Empty<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            // The new id comes from the query, or from `x-new-id` for ids a URI cannot hold.
            let query_id = request
                .headers()
                .get("x-new-id")
                .and_then(|value| value.to_str().ok())
                .or_else(|| {
                    request
                        .uri()
                        .query()
                        .and_then(|query| query.strip_prefix("id="))
                })
                .map(str::to_owned);
            let handle = request.extensions().get::<SessionHandle>().cloned();
            let mut response = Response::new(Full::new(Bytes::from_static(b"inner")));
            match request.uri().path() {
                "/login" => {
                    if let Some(owner) = request.headers().get("x-owner") {
                        let owner = owner.to_str().unwrap_or_default().to_owned();
                        handle.expect("handle").set_owner(owner);
                    }
                    let cookie = format!("id={}; Path=/; HttpOnly", query_id.unwrap_or_default());
                    response
                        .headers_mut()
                        .insert(SET_COOKIE, cookie.parse().unwrap());
                }
                "/logout" => {
                    response
                        .headers_mut()
                        .insert(SET_COOKIE, "id=; Path=/; Max-Age=0".parse().unwrap());
                }
                "/begin" => handle.expect("handle").begin(query_id.unwrap_or_default()),
                "/end" => handle.expect("handle").end(),
                "/echo-cookie" => {
                    let cookie = request
                        .headers()
                        .get(COOKIE)
                        .map(|value| value.as_bytes().to_vec())
                        .unwrap_or_default();
                    *response.body_mut() = Full::new(Bytes::from(cookie));
                }
                "/whoami" => {
                    let handle = handle.expect("handle");
                    let text = format!(
                        "{} {}",
                        handle.id().unwrap_or("none"),
                        handle.info().map_or(0, |info| info.time_left().as_millis())
                    );
                    *response.body_mut() = Full::new(Bytes::from(text));
                }
                "/checked-at" => {
                    let info = handle.and_then(|handle| handle.info());
                    let text = info.map_or("none".to_owned(), |info| {
                        info.checked_at().as_unix_millis().to_string()
                    });
                    *response.body_mut() = Full::new(Bytes::from(text));
                }
                "/info" => {
                    let info = handle.and_then(|handle| handle.info());
                    let text = info.map_or("none".to_owned(), |info| {
                        info.last_seen().as_unix_millis().to_string()
                    });
                    *response.body_mut() = Full::new(Bytes::from(text));
                }
                _ => {}
            }
            Ok::<_, Infallible>(response)
        }
    }))
}

/// The layer around [`inner`], with its clock, store and call counter.
pub struct TestApp<St: SessionStore = MemoryStore> {
    pub service: SessionTimeout<Inner, St>,
    pub clock: ManualClock,
    pub store: St,
    pub calls: Arc<AtomicUsize>,
}

/// A builder with a manual clock and the given idle timeout; `configure` adds the rest.
pub fn app(
    configure: impl FnOnce(SessionTimeoutBuilder<MemoryStore>) -> SessionTimeoutBuilder<MemoryStore>,
) -> TestApp {
    app_with_store(MemoryStore::new(), ManualClock::new(), configure)
}

pub fn app_with_store<St: SessionStore>(
    store: St,
    clock: ManualClock,
    configure: impl FnOnce(SessionTimeoutBuilder<MemoryStore>) -> SessionTimeoutBuilder<MemoryStore>,
) -> TestApp<St> {
    // Short readable ids ("s1", "old"); the minimum length has tests of its own.
    let builder = tower_session_timeout::SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .min_id_len(1)
        .clock(clock.clone());
    let layer = configure(builder)
        .store(store.clone())
        .build()
        .expect("valid config");
    let calls = Arc::new(AtomicUsize::new(0));
    TestApp {
        service: layer.layer(inner(calls.clone())),
        clock,
        store,
        calls,
    }
}

/// A response with its body read.
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The `reason` of a problem+json 440.
    pub fn reason(&self) -> &str {
        let text = self.text();
        let start = text.find("\"reason\":\"").expect("a reason") + 10;
        text[start..].split('"').next().unwrap()
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("utf-8 body")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|value| value.to_str().expect("ascii header"))
    }

    pub fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|value| value.to_str().expect("ascii header"))
            .collect()
    }
}

/// The manual clock's reading in Unix milliseconds.
pub trait NowMillis {
    fn now_millis(&self) -> u64;
}

impl NowMillis for ManualClock {
    fn now_millis(&self) -> u64 {
        use tower_session_timeout::Clock;
        tower_session_timeout::Timestamp::from_system_time(self.now()).as_unix_millis()
    }
}

impl<St: SessionStore> TestApp<St> {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Sends `request` through the layer.
    pub async fn send(&self, request: Request<Empty<Bytes>>) -> Answer {
        let response = self
            .service
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    /// `GET path`, with `Cookie: id=<id>` when `id` is given.
    pub async fn get(&self, path: &str, id: Option<&str>) -> Answer {
        let mut request = Request::get(path);
        if let Some(id) = id {
            request = request.header(COOKIE, format!("id={id}"));
        }
        self.send(request.body(Empty::new()).unwrap()).await
    }

    /// `GET path` with this whole `Cookie` header (other cookies, other spellings).
    pub async fn get_with_cookie_header(&self, path: &str, cookie: &str) -> Answer {
        let request = Request::get(path)
            .header(COOKIE, cookie)
            .body(Empty::new())
            .unwrap();
        self.send(request).await
    }

    /// `GET /` with `Cookie: id=<id>`, asking for JSON, so a 440 says its reason.
    pub async fn get_json(&self, id: &str) -> Answer {
        let request = Request::get("/")
            .header(COOKIE, format!("id={id}"))
            .header("accept", "application/json")
            .body(Empty::new())
            .unwrap();
        self.send(request).await
    }

    /// Signs in with session id `id` through the inner service's `/login`.
    pub async fn login(&self, id: &str) {
        let answer = self.get(&format!("/login?id={id}"), None).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
}
