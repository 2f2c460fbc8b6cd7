//! An axum app on [tower-sessions] 0.15, with `SessionTimeoutLayer` added around it and
//! nothing else changed.
//!
//! ```text
//! cargo run --example tower_sessions
//! ```
//!
//! Then open <http://127.0.0.1:3000/login> (or the port in `PORT`) and sign in as `ada` with
//! password `lovelace`. Leave the dashboard alone for a minute and reload it: `440 Login
//! Time-out`.
//!
//! tower-sessions sets the `id` cookie when a session first holds data (here the login
//! form's CSRF token), sends a new id when the app calls `cycle_id` at sign-in, and clears the
//! cookie when the app calls `flush` at sign-out. The layer observes each of these `Set-Cookie`
//! headers, so it begins, rotates and ends its own record of the session with no code of its
//! own in the handlers. For axum-login on top of tower-sessions, see
//! `examples/tower_sessions_axum_login.rs`.
//!
//! [tower-sessions]: https://docs.rs/tower-sessions

use std::error::Error;
use std::time::Duration;

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_session_timeout::{SessionTimeoutBuilder, SessionTimeoutLayer};
use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer};

/// Our idle timeout: short, so the demo shows the 440 page within a minute.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const CSRF_KEY: &str = "csrf";
const USER_KEY: &str = "user";

/// The accounts. A real app checks a password hash from its database.
const USERS: &[(&str, &str)] = &[("ada", "lovelace"), ("grace", "hopper")];

/// The session timeouts for this app. `/login` is exempt so that a stale cookie does not
/// stand between a timed-out user and the login form.
pub fn timeouts() -> SessionTimeoutBuilder<tower_session_timeout::MemoryStore> {
    SessionTimeoutLayer::builder()
        .idle_timeout(IDLE_TIMEOUT)
        .exempt_path("/login")
        .login_url("/login")
}

/// The app, with `timeouts` as its outermost layer.
pub fn app<St: tower_session_timeout::SessionStore>(timeouts: SessionTimeoutLayer<St>) -> Router {
    // tower-sessions' own expiry stays longer than ours (a browser-session cookie and its
    // default two-week record), so our idle timeout is the one that decides. `Secure` is off
    // only because the demo serves plain HTTP; keep the default behind TLS.
    let sessions = SessionManagerLayer::new(MemoryStore::default())
        .with_expiry(Expiry::OnSessionEnd)
        .with_secure(false);
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/login", get(login_form).post(login))
        .route("/dashboard", get(dashboard))
        .route("/logout", post(logout))
        .layer(sessions)
        // The one line this crate adds. Outermost, so it sees the cookie tower-sessions sets.
        .layer(timeouts)
}

/// A session store failure, answered as 500 without details.
#[derive(Debug)]
pub struct AppError(tower_sessions::session::Error);

impl From<tower_sessions::session::Error> for AppError {
    fn from(error: tower_sessions::session::Error) -> Self {
        AppError(error)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        eprintln!("session error: {}", self.0);
        (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong.").into_response()
    }
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1>{body}</body></html>"
    ))
}

/// The form, with a fresh CSRF token kept in the (anonymous) session.
async fn login_page(session: &Session, error: Option<&str>) -> Result<Html<String>, AppError> {
    let token = format!("{:032x}", rand::random::<u128>());
    session.insert(CSRF_KEY, &token).await?;
    let error = error.map_or(String::new(), |error| {
        format!("<p role=\"alert\">{error}</p>")
    });
    Ok(page(
        "Sign in",
        &format!(
            "{error}<form method=\"post\" action=\"/login\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{token}\">\
             <label>Username <input name=\"username\" autocomplete=\"username\" required></label>\
             <label>Password <input name=\"password\" type=\"password\" required></label>\
             <button type=\"submit\">Sign in</button></form>"
        ),
    ))
}

async fn login_form(session: Session) -> Result<Response, AppError> {
    if session.get::<String>(USER_KEY).await?.is_some() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    Ok(login_page(&session, None).await?.into_response())
}

#[derive(serde::Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
}

async fn login(session: Session, Form(form): Form<LoginForm>) -> Result<Response, AppError> {
    let expected = session.remove::<String>(CSRF_KEY).await?;
    if expected.as_deref() != Some(form.csrf.as_str()) {
        let page = login_page(&session, Some("The form expired; try again.")).await?;
        return Ok((StatusCode::FORBIDDEN, page).into_response());
    }
    let known = USERS
        .iter()
        .any(|&(name, password)| name == form.username && password == form.password);
    if !known {
        let page = login_page(&session, Some("Wrong username or password.")).await?;
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    }
    // A new id at sign-in, against session fixation. tower-sessions sends the new cookie, and
    // the layer begins the new id and ends the old one.
    session.cycle_id().await?;
    session.insert(USER_KEY, &form.username).await?;
    Ok(Redirect::to("/dashboard").into_response())
}

async fn dashboard(session: Session) -> Result<Response, AppError> {
    // An expired session never gets here: the layer has answered 440.
    let Some(name) = session.get::<String>(USER_KEY).await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    Ok(page(
        "Dashboard",
        &format!(
            "<p>Signed in as <strong>{}</strong>.</p>\
             <form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form>",
            escape(&name)
        ),
    )
    .into_response())
}

async fn logout(session: Session) -> Result<Response, AppError> {
    // tower-sessions clears the cookie, which ends the session in the layer too.
    session.flush().await?;
    Ok(Redirect::to("/login").into_response())
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port
            .trim()
            .parse()
            .map_err(|_| format!("PORT={port:?} is not a port number"))?,
        Err(_) => 3000,
    };
    let app = app(timeouts().build()?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let address = listener.local_addr()?;
    println!("Listening on http://{address}; sign in at http://{address}/login as ada / lovelace");
    axum::serve(listener, app).await?;
    Ok(())
}
