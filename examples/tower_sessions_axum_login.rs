//! An axum app signing users in with [axum-login] on tower-sessions, with
//! `SessionTimeoutLayer` added around it and nothing else changed.
//!
//! ```text
//! cargo run --example tower_sessions_axum_login
//! ```
//!
//! Then open <http://127.0.0.1:3000/login> (or the port in `PORT`) and sign in as `ada` with
//! password `lovelace`. Leave the dashboard alone for a minute and reload it: `440 Login
//! Time-out`.
//!
//! axum-login 0.18, the newest, is built on tower-sessions 0.14, so this example reaches
//! tower-sessions through `axum_login::tower_sessions`, which is always the version axum-login
//! expects (a `SessionManagerLayer` of another version would leave axum-login without a
//! session). In an app: `axum-login = "0.18"` and `tower-sessions = "0.14"`.
//!
//! `auth_session.login` cycles the session id (against session fixation) and
//! `auth_session.logout` flushes the session; tower-sessions sends the new cookie or clears it,
//! and the layer, observing those `Set-Cookie` headers, begins the new id and ends the old one,
//! or ends the session.
//!
//! At sign-in the app names the session's owner (the user id) through the layer's
//! [`SessionHandle`], so a password change can sign the user out everywhere else
//! (`POST /password`): every other session of the user then answers 440 with reason `ended`,
//! on every instance sharing the store, instead of turning silently anonymous.
//!
//! [axum-login]: https://docs.rs/axum-login

use std::collections::HashMap;
use std::convert::Infallible;
use std::error::Error;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use axum_login::tower_sessions::{self, Expiry, MemoryStore, Session, SessionManagerLayer};
use axum_login::{AuthManagerLayerBuilder, AuthUser, AuthnBackend, UserId};
use tower_session_timeout::{SessionHandle, SessionTimeoutBuilder, SessionTimeoutLayer};

/// Our idle timeout: short, so the demo shows the 440 page within a minute.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const CSRF_KEY: &str = "csrf";

/// A user. A real app keeps a password hash (argon2 and the like), never the password.
#[derive(Clone)]
pub struct User {
    id: u64,
    name: String,
    password: String,
}

// By hand, so the password never reaches a log.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl AuthUser for User {
    type Id = u64;

    fn id(&self) -> u64 {
        self.id
    }

    // Changing the password changes this, which signs out every other session of the user.
    fn session_auth_hash(&self) -> &[u8] {
        self.password.as_bytes()
    }
}

/// What the login form sends.
#[derive(Clone, serde::Deserialize)]
pub struct Credentials {
    username: String,
    password: String,
    csrf: String,
}

/// The user list axum-login authenticates against, in memory.
#[derive(Clone)]
pub struct Backend {
    users: Arc<RwLock<HashMap<u64, User>>>,
}

impl Backend {
    /// Sets a user's password and answers the updated user.
    fn set_password(&self, id: u64, password: String) -> Option<User> {
        let mut users = self
            .users
            .write()
            .unwrap_or_else(|poison| poison.into_inner());
        let user = users.get_mut(&id)?;
        user.password = password;
        Some(user.clone())
    }

    fn users(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, User>> {
        self.users
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

impl Default for Backend {
    fn default() -> Self {
        let users = [(1, "ada", "lovelace"), (2, "grace", "hopper")]
            .into_iter()
            .map(|(id, name, password)| {
                let user = User {
                    id,
                    name: name.to_owned(),
                    password: password.to_owned(),
                };
                (id, user)
            })
            .collect();
        Backend {
            users: Arc::new(RwLock::new(users)),
        }
    }
}

impl AuthnBackend for Backend {
    type User = User;
    type Credentials = Credentials;
    // An in-memory list cannot fail; a database backend would name its error here.
    type Error = Infallible;

    async fn authenticate(&self, credentials: Credentials) -> Result<Option<User>, Infallible> {
        Ok(self
            .users()
            .values()
            .find(|user| user.name == credentials.username && user.password == credentials.password)
            .cloned())
    }

    async fn get_user(&self, id: &UserId<Self>) -> Result<Option<User>, Infallible> {
        Ok(self.users().get(id).cloned())
    }
}

type AuthSession = axum_login::AuthSession<Backend>;

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
    let auth = AuthManagerLayerBuilder::new(Backend::default(), sessions).build();
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard") }))
        .route("/login", get(login_form).post(login))
        .route("/dashboard", get(dashboard))
        .route("/logout", post(logout))
        .route("/password", post(change_password))
        .layer(auth)
        // The one line this crate adds. Outermost, so it sees the cookie tower-sessions sets.
        .layer(timeouts)
}

/// A session store failure, answered as 500 without details.
#[derive(Debug)]
pub struct AppError(Box<dyn Error + Send + Sync>);

impl From<tower_sessions::session::Error> for AppError {
    fn from(error: tower_sessions::session::Error) -> Self {
        AppError(error.into())
    }
}

impl From<axum_login::Error<Backend>> for AppError {
    fn from(error: axum_login::Error<Backend>) -> Self {
        AppError(error.into())
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

async fn login_form(auth_session: AuthSession) -> Result<Response, AppError> {
    if auth_session.user.is_some() {
        return Ok(Redirect::to("/dashboard").into_response());
    }
    Ok(login_page(&auth_session.session, None)
        .await?
        .into_response())
}

async fn login(
    mut auth_session: AuthSession,
    Extension(timeouts): Extension<SessionHandle>,
    Form(credentials): Form<Credentials>,
) -> Result<Response, AppError> {
    let session = auth_session.session.clone();
    let expected = session.remove::<String>(CSRF_KEY).await?;
    if expected.as_deref() != Some(credentials.csrf.as_str()) {
        let page = login_page(&session, Some("The form expired; try again.")).await?;
        return Ok((StatusCode::FORBIDDEN, page).into_response());
    }
    let Some(user) = auth_session.authenticate(credentials).await? else {
        let page = login_page(&session, Some("Wrong username or password.")).await?;
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    // axum-login cycles the session id here; the layer begins the new id (owned by this
    // user, so it can be listed and ended with the user's other sessions) and ends the old.
    auth_session.login(&user).await?;
    timeouts.set_owner(user.id.to_string());
    Ok(Redirect::to("/dashboard").into_response())
}

/// What the password form sends.
#[derive(serde::Deserialize)]
pub struct NewPassword {
    password: String,
}

/// A password change signs the user out everywhere else, as OWASP ASVS asks.
async fn change_password(
    mut auth_session: AuthSession,
    Extension(timeouts): Extension<SessionHandle>,
    Form(form): Form<NewPassword>,
) -> Result<Response, AppError> {
    let Some(user) = auth_session.user.clone() else {
        return Ok(Redirect::to("/login").into_response());
    };
    let Some(user) = auth_session.backend.set_password(user.id, form.password) else {
        return Ok(Redirect::to("/login").into_response());
    };
    // Every other session of the user ends now, on every instance: 440 `ended`.
    timeouts
        .end_others()
        .await
        .map_err(|error| AppError(error.into()))?;
    // Signing in again stores the new password hash in this session, so axum-login keeps
    // this browser signed in (an already signed-in session keeps its id).
    auth_session.login(&user).await?;
    Ok(Redirect::to("/dashboard").into_response())
}

async fn dashboard(auth_session: AuthSession) -> Response {
    // An expired session never gets here: the layer has answered 440.
    let Some(user) = auth_session.user else {
        return Redirect::to("/login").into_response();
    };
    page(
        "Dashboard",
        &format!(
            "<p>Signed in as <strong>{}</strong>.</p>\
             <form method=\"post\" action=\"/logout\"><button type=\"submit\">Sign out</button></form>",
            escape(&user.name)
        ),
    )
    .into_response()
}

async fn logout(mut auth_session: AuthSession) -> Result<Response, AppError> {
    // axum-login flushes the session and tower-sessions clears the cookie, which ends the
    // session in the layer too.
    auth_session.logout().await?;
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
