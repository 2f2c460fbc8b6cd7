//! What `benches/overhead.rs` and `examples/profile_requests.rs` share: the hello-world app
//! in its three configurations (bare, ours, tower-sessions) and the sign-in that begins the
//! sessions the measured requests carry.
#![allow(dead_code)]

use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use axum::Router;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service, ServiceExt};
use tower_session_timeout::SessionTimeoutLayer;

pub async fn hello() -> &'static str {
    "Hello, World!"
}

/// The inner app, the same in every row: `GET /` answers "Hello, World!". `/login` begins a
/// session the way each configuration does it, and is never measured.
pub fn router(login: Router) -> Router {
    Router::new().route("/", get(hello)).merge(login)
}

pub fn bare() -> Router {
    router(Router::new())
}

/// Ours: `/login?id=X` sets `id=X`; the layer observes the `Set-Cookie` and begins X.
pub fn ours() -> tower_session_timeout::SessionTimeout<Router> {
    let login = Router::new().route(
        "/login",
        get(|request: Request<Body>| async move {
            let id = request
                .uri()
                .query()
                .unwrap_or_default()
                .trim_start_matches("id=");
            Response::builder()
                .header(SET_COOKIE, format!("id={id}; Path=/; HttpOnly"))
                .body(Body::empty())
                .unwrap()
        }),
    );
    let layer = SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(20 * 60))
        .build()
        .expect("valid config");
    layer.layer(router(login))
}

/// tower-sessions: `/login` inserts a value, so the session is saved and its cookie set.
/// (The service is a `tower_cookies::CookieManager`, a type tower-sessions does not export, so
/// the caller applies the layer.)
pub fn tower_sessions() -> (
    tower_sessions::SessionManagerLayer<tower_sessions::MemoryStore>,
    Router,
) {
    use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer};
    let login = Router::new().route(
        "/login",
        get(|session: Session| async move {
            session.insert("user", 1_u32).await.expect("insert");
            "signed in"
        }),
    );
    let layer = SessionManagerLayer::new(MemoryStore::default())
        .with_expiry(Expiry::OnInactivity(
            tower_sessions::cookie::time::Duration::minutes(20),
        ))
        .with_always_save(true);
    (layer, router(login))
}

/// Signs in `count` times through `service` and returns the `Cookie` headers to send back.
pub async fn sign_in<S, B>(service: &S, count: usize) -> Vec<HeaderValue>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut cookies = Vec::with_capacity(count);
    for i in 0..count {
        let request = Request::get(format!("/login?id=bench-session-{i:08}-0123456789abcdef"))
            .body(Body::empty())
            .unwrap();
        let response = service.clone().oneshot(request).await.expect("login");
        let cookie = match response.headers().get(SET_COOKIE) {
            // Send back the `name=value` pair only, as a browser does.
            Some(set) => set.to_str().unwrap().split(';').next().unwrap().to_owned(),
            // Bare: no session, but the same shape of header.
            None => format!("id=bench-session-{i:08}-0123456789abcdef"),
        };
        cookies.push(HeaderValue::from_str(&cookie).unwrap());
    }
    cookies
}

pub fn request(cookie: &HeaderValue) -> Request<Body> {
    let mut request = Request::get("/").body(Body::empty()).unwrap();
    request.headers_mut().insert(COOKIE, cookie.clone());
    request
}
