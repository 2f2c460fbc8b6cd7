//! With the `axum` feature, handlers take `SessionHandle` and `SessionInfo` directly.
#![cfg(feature = "axum")]

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use http::header::COOKIE;
use http::{Request, StatusCode};
use tower::ServiceExt;
use tower_session_timeout::{
    login_timeout_status, SessionHandle, SessionInfo, SessionTimeoutLayer,
};

const ID: &str = "f3a9c1e07b5d4a28";

async fn login(session: SessionHandle) -> &'static str {
    session.begin(ID);
    "signed in"
}

async fn dashboard(session: SessionInfo, handle: SessionHandle) -> String {
    format!(
        "{} {}",
        handle.id().unwrap_or("none"),
        session.time_left().as_secs()
    )
}

async fn home(session: Option<SessionInfo>) -> &'static str {
    if session.is_some() {
        "signed in"
    } else {
        "anonymous"
    }
}

async fn logout(session: SessionHandle) -> &'static str {
    session.end();
    "signed out"
}

async fn send(
    app: &Router,
    method: &str,
    path: &str,
    cookie: Option<&str>,
) -> (StatusCode, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn handlers_take_the_session_directly() {
    let app = Router::new()
        .route("/login", post(login))
        .route("/dashboard", get(dashboard))
        .route("/", get(home))
        .route("/logout", post(logout))
        .layer(SessionTimeoutLayer::builder().build().unwrap());
    let cookie = format!("id={ID}");

    assert_eq!(
        send(&app, "GET", "/", None).await,
        (StatusCode::OK, "anonymous".into())
    );
    let (status, body) = send(&app, "GET", "/dashboard", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");

    assert_eq!(send(&app, "POST", "/login", None).await.0, StatusCode::OK);
    assert_eq!(
        send(&app, "GET", "/", Some(&cookie)).await,
        (StatusCode::OK, "signed in".into())
    );
    assert_eq!(
        send(&app, "GET", "/dashboard", Some(&cookie)).await,
        (StatusCode::OK, format!("{ID} 1200"))
    );
    assert_eq!(
        send(&app, "POST", "/logout", Some(&cookie)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&app, "GET", "/", Some(&cookie)).await.0,
        login_timeout_status()
    );
}

#[tokio::test]
async fn without_the_layer_the_handle_is_a_500_that_says_what_to_do() {
    let app = Router::new().route("/logout", post(logout));
    let (status, body) = send(&app, "POST", "/logout", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("Router::layer"), "{body}");
}
