//! With the `axum` feature: [`SessionHandle`] and [`SessionInfo`] as axum extractors, so
//! handlers take them directly instead of through `Extension<…>`.

use std::convert::Infallible;

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::{SessionHandle, SessionInfo};

/// The request did not pass through a [`SessionTimeoutLayer`](crate::SessionTimeoutLayer):
/// the rejection of the [`SessionHandle`] extractor, answered `500 Internal Server Error`.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no SessionTimeoutLayer around this route: add it with Router::layer (not route_layer, and outside the routes that use SessionHandle)")]
pub struct MissingSessionLayer;

impl IntoResponse for MissingSessionLayer {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

/// The request has no active session: the rejection of the [`SessionInfo`] extractor,
/// answered `401 Unauthorized`. Take `Option<SessionInfo>` where a handler serves both.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no active session: sign in first")]
pub struct NoActiveSession;

impl IntoResponse for NoActiveSession {
    fn into_response(self) -> Response {
        (StatusCode::UNAUTHORIZED, self.to_string()).into_response()
    }
}

/// ```
/// use axum::{routing::post, Router};
/// use tower_session_timeout::{SessionHandle, SessionTimeoutLayer};
///
/// async fn logout(session: SessionHandle) -> &'static str {
///     session.end();
///     "signed out"
/// }
///
/// # fn main() -> Result<(), tower_session_timeout::ConfigError> {
/// let app: Router = Router::new()
///     .route("/logout", post(logout))
///     .layer(SessionTimeoutLayer::builder().build()?);
/// # Ok(())
/// # }
/// ```
impl<S: Send + Sync> FromRequestParts<S> for SessionHandle {
    type Rejection = MissingSessionLayer;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<SessionHandle>()
            .cloned()
            .ok_or(MissingSessionLayer)
    }
}

/// ```
/// use tower_session_timeout::SessionInfo;
///
/// async fn dashboard(session: SessionInfo) -> String {
///     format!("{} s left", session.time_left().as_secs())
/// }
/// ```
impl<S: Send + Sync> FromRequestParts<S> for SessionInfo {
    type Rejection = NoActiveSession;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        info_of(parts).ok_or(NoActiveSession)
    }
}

/// ```
/// use tower_session_timeout::SessionInfo;
///
/// async fn home(session: Option<SessionInfo>) -> &'static str {
///     if session.is_some() { "welcome back" } else { "hello, stranger" }
/// }
/// ```
impl<S: Send + Sync> OptionalFromRequestParts<S> for SessionInfo {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Infallible> {
        Ok(info_of(parts))
    }
}

/// The active session's times, from the one extension the layer adds: its handle.
fn info_of(parts: &Parts) -> Option<SessionInfo> {
    parts.extensions.get::<SessionHandle>()?.info()
}
