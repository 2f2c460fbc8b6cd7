//! The layer around real tower-sessions and axum-login apps (`examples/tower_sessions.rs` and
//! `examples/tower_sessions_axum_login.rs`), driven as a browser would, on a manual clock.
//!
//! Every scenario runs against both apps: tower-sessions 0.15 on its own, and axum-login 0.18
//! on the tower-sessions 0.14 it is built on.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/tower_sessions.rs"]
mod plain;

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/tower_sessions_axum_login.rs"]
mod with_axum_login;

use std::time::Duration;

use axum::body::Body;
use axum::Router;
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_session_timeout::{login_timeout_status, ManualClock};

const IDLE: Duration = plain::IDLE_TIMEOUT;
/// Long enough not to matter except where a test says so.
const ABSOLUTE: Duration = Duration::from_secs(24 * 60 * 60);

struct App {
    router: Router,
    clock: ManualClock,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    /// The `Set-Cookie` headers for the `id` cookie.
    fn id_cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .filter(|value| value.starts_with("id="))
            .collect()
    }

    /// The `id=<value>` pair the response sets, if it sets a non-empty one.
    fn new_cookie(&self) -> Option<String> {
        let cookies = self.id_cookies();
        assert!(cookies.len() <= 1, "one id cookie at most: {cookies:?}");
        let pair = cookies.first()?.split(';').next()?.trim();
        (pair != "id=").then(|| pair.to_owned())
    }

    fn location(&self) -> Option<&str> {
        self.headers
            .get(LOCATION)
            .and_then(|value| value.to_str().ok())
    }
}

impl App {
    fn plain() -> Self {
        Self::plain_with(ABSOLUTE)
    }

    fn with_axum_login() -> Self {
        Self::with_axum_login_with(ABSOLUTE)
    }

    /// The example's app, its timeouts plus an absolute timeout.
    fn plain_with(absolute: Duration) -> Self {
        let clock = ManualClock::new();
        let layer = plain::timeouts()
            .absolute_timeout(absolute)
            .clock(clock.clone())
            .build()
            .unwrap();
        App {
            router: plain::app(layer),
            clock,
        }
    }

    fn with_axum_login_with(absolute: Duration) -> Self {
        let clock = ManualClock::new();
        let layer = with_axum_login::timeouts()
            .absolute_timeout(absolute)
            .clock(clock.clone())
            .build()
            .unwrap();
        App {
            router: with_axum_login::app(layer),
            clock,
        }
    }

    async fn send(&self, request: Request<Body>) -> Answer {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    /// `GET path` asking for JSON, as a script would.
    async fn get_json(&self, path: &str, cookie: &str) -> Answer {
        let request = Request::get(path)
            .header(COOKIE, cookie)
            .header(ACCEPT, "application/json")
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }

    async fn post(&self, path: &str, cookie: Option<&str>, form: &str) -> Answer {
        let mut request = Request::post(path)
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        if let Some(cookie) = cookie {
            request
                .headers_mut()
                .insert(COOKIE, cookie.parse().unwrap());
        }
        self.send(request).await
    }

    /// Opens the login form with `cookie` (if any) and returns the cookie the browser holds
    /// afterwards and the form's CSRF token.
    async fn open_login_form(&self, cookie: Option<&str>) -> (String, String) {
        let form = self.get("/login", cookie).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let token = form
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSRF token in the form")
            .to_owned();
        // Storing the token makes the anonymous session non-empty, so tower-sessions sets
        // the cookie for it.
        let cookie = form
            .new_cookie()
            .expect("an id cookie for the anonymous session");
        (cookie, token)
    }

    /// Signs in as ada through the form, and returns the anonymous session's cookie and the
    /// signed-in one.
    async fn sign_in(&self) -> (String, String) {
        let (anonymous, token) = self.open_login_form(None).await;
        let form = format!("username=ada&password=lovelace&csrf={token}");
        let answer = self.post("/login", Some(&anonymous), &form).await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location(), Some("/dashboard"));
        let signed_in = answer.new_cookie().expect("a new id cookie at sign-in");
        (anonymous, signed_in)
    }

    async fn sign_out(&self, cookie: &str) -> Answer {
        let answer = self.post("/logout", Some(cookie), "").await;
        assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
        assert_eq!(answer.location(), Some("/login"));
        answer
    }

    async fn assert_signed_in(&self, cookie: &str) {
        let page = self.get("/dashboard", Some(cookie)).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(
            page.body.contains("Signed in as <strong>ada</strong>"),
            "{}",
            page.body
        );
    }

    async fn assert_440(&self, cookie: &str, reason: &str) {
        let answer = self.get_json("/dashboard", cookie).await;
        assert_eq!(answer.status, login_timeout_status(), "{}", answer.body);
        assert!(
            answer.body.contains(&format!("\"reason\":\"{reason}\"")),
            "{}",
            answer.body
        );
    }
}

/// Runs one scenario against both apps.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod on_tower_sessions {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::App::plain()).await;
                }
            )*
        }
        mod on_axum_login {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::App::with_axum_login()).await;
                }
            )*
        }
    };
}

/// The security review's first hole: the app's cookie reader (tower-cookies, which
/// percent-decodes names and trims Unicode whitespace) took `%69d=<id>` as the session
/// cookie while the layer saw none, and served the idle-expired session with 200.
async fn a_respelled_cookie_name_is_still_the_session(app: App) {
    let (_, cookie) = app.sign_in().await;
    app.assert_signed_in(&cookie).await;
    let id = cookie.strip_prefix("id=").expect("an id cookie");
    // Active: every spelling is the same session to the layer and to the app.
    app.assert_signed_in(&format!("%69d={id}")).await;
    app.clock.advance(IDLE);
    for spelling in ["%69d", "i%64", "%69%64", "\u{a0}id", "id\u{2003}"] {
        let respelled = format!("{spelling}={id}");
        let page = app.get("/dashboard", Some(&respelled)).await;
        assert_eq!(
            page.status,
            login_timeout_status(),
            "{respelled}: {}",
            page.body
        );
    }
    // A live session beside the expired one in another spelling: refused, not mixed up.
    let (_, live) = app.sign_in().await;
    let both = format!("{live}; %69d={id}");
    assert_eq!(
        app.get("/dashboard", Some(&both)).await.status,
        StatusCode::BAD_REQUEST
    );
}

both!(
    a_respelled_cookie_name_is_still_the_session,
    sign_in_stay_active_then_idle_gets_440,
    sign_out_then_the_old_cookie_gets_440_ended,
    rotation_at_sign_in_begins_the_new_id_and_ends_the_old,
    the_login_form_opens_with_a_stale_cookie_and_signs_in_again,
    wrong_password_keeps_the_anonymous_session,
    no_cookie_passes_through_to_the_app,
    the_cookies_tower_sessions_sends,
);

async fn sign_in_stay_active_then_idle_gets_440(app: App) {
    let (_, cookie) = app.sign_in().await;
    app.assert_signed_in(&cookie).await;

    // Requests spaced just under the idle timeout keep the session for three times as long.
    let step = IDLE - Duration::from_secs(1);
    for _ in 0..3 {
        app.clock.advance(step);
        app.assert_signed_in(&cookie).await;
    }

    app.clock.advance(IDLE);
    let page = app.get("/dashboard", Some(&cookie)).await;
    assert_eq!(page.status, login_timeout_status());
    assert!(page.body.contains("<title>Login Time-out</title>"));
    assert!(page.body.contains("href=\"/login\""), "{}", page.body);
    assert_eq!(page.id_cookies().len(), 1, "the 440 clears the cookie");
    assert!(page.new_cookie().is_none());
    app.assert_440(&cookie, "idle").await;
}

async fn sign_out_then_the_old_cookie_gets_440_ended(app: App) {
    let (_, cookie) = app.sign_in().await;
    app.assert_signed_in(&cookie).await;
    let answer = app.sign_out(&cookie).await;
    // tower-sessions clears the cookie of the flushed session: that is what ends it here.
    let cleared = answer.id_cookies();
    assert_eq!(cleared.len(), 1, "{cleared:?}");
    assert!(cleared[0].starts_with("id=;"), "{cleared:?}");
    assert!(cleared[0].contains("Max-Age=0"), "{cleared:?}");
    app.assert_440(&cookie, "ended").await;
    // The browser dropped the cookie, so it sees the app without a session.
    let page = app.get("/dashboard", None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), Some("/login"));
}

async fn rotation_at_sign_in_begins_the_new_id_and_ends_the_old(app: App) {
    let (anonymous, signed_in) = app.sign_in().await;
    assert_ne!(anonymous, signed_in, "the id is cycled at sign-in");
    app.assert_440(&anonymous, "ended").await;
    app.assert_signed_in(&signed_in).await;
    // The new id has the whole idle timeout from sign-in.
    app.clock.advance(IDLE - Duration::from_millis(1));
    app.assert_signed_in(&signed_in).await;
}

async fn the_login_form_opens_with_a_stale_cookie_and_signs_in_again(app: App) {
    let (_, stale) = app.sign_in().await;
    app.clock.advance(IDLE);
    app.assert_440(&stale, "idle").await;

    // `/login` is exempt: the stale cookie is taken off the request, so tower-sessions starts
    // a new anonymous session and its cookie replaces the stale one.
    let (anonymous, token) = app.open_login_form(Some(&stale)).await;
    assert_ne!(anonymous, stale);
    let form = format!("username=ada&password=lovelace&csrf={token}");
    let answer = app.post("/login", Some(&anonymous), &form).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let cookie = answer.new_cookie().expect("a new id at sign-in");
    app.assert_signed_in(&cookie).await;
    app.assert_440(&stale, "idle").await;
}

async fn wrong_password_keeps_the_anonymous_session(app: App) {
    let (anonymous, token) = app.open_login_form(None).await;
    let form = format!("username=ada&password=babbage&csrf={token}");
    let answer = app.post("/login", Some(&anonymous), &form).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    // The fresh token modifies the session, so tower-sessions sends its cookie again with
    // the same id: no rotation, and the layer keeps the session as it was.
    assert_eq!(answer.new_cookie().as_deref(), Some(anonymous.as_str()));
    let token = answer
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a fresh token")
        .to_owned();
    let form = format!("username=ada&password=lovelace&csrf={token}");
    let answer = app.post("/login", Some(&anonymous), &form).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER, "{}", answer.body);
    let cookie = answer.new_cookie().expect("a new id at sign-in");
    app.assert_signed_in(&cookie).await;
    app.assert_440(&anonymous, "ended").await;
}

async fn no_cookie_passes_through_to_the_app(app: App) {
    let page = app.get("/dashboard", None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location(), Some("/login"));
    assert!(page.id_cookies().is_empty());
    // An id the app never handed out is not a session.
    app.assert_440("id=forged", "unknown").await;
}

/// What tower-sessions sends, which the layer relies on: the default cookie name `id`, a new
/// value at sign-in, and `id=` with `Max-Age=0` at sign-out.
async fn the_cookies_tower_sessions_sends(app: App) {
    let form = app.get("/login", None).await;
    let set = form.id_cookies();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].contains("HttpOnly"), "{set:?}");
    assert!(set[0].contains("Path=/"), "{set:?}");
    assert!(
        !set[0].contains("Max-Age"),
        "a browser-session cookie: {set:?}"
    );

    // A request on the active session that changes nothing sends no cookie.
    let (_, cookie) = app.sign_in().await;
    let page = app.get("/dashboard", Some(&cookie)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.id_cookies().is_empty(), "{:?}", page.id_cookies());
}

/// tower-sessions sends the cookie again, same id, whenever the session's data changes (here
/// a fresh CSRF token); that must not restart the session's absolute deadline.
#[tokio::test]
async fn a_cookie_sent_again_does_not_reset_the_absolute_deadline() {
    for app in [
        App::plain_with(IDLE + IDLE / 2),
        App::with_axum_login_with(IDLE + IDLE / 2),
    ] {
        let (anonymous, _) = app.open_login_form(None).await;
        app.clock.advance(IDLE * 5 / 6);
        let form = app.get("/login", Some(&anonymous)).await;
        assert_eq!(form.new_cookie().as_deref(), Some(anonymous.as_str()));
        app.clock.advance(IDLE * 5 / 6);
        // 50 s since the last request, 100 s since the session began: past 90 s absolute.
        app.assert_440(&anonymous, "absolute").await;
    }
}

/// The README's "sign out everywhere": a password change in the axum-login app ends every
/// other session of the user (440 `ended`, not a silently anonymous session) and keeps the
/// browser that changed it signed in; another user is not touched.
#[tokio::test]
async fn a_password_change_signs_the_user_out_everywhere_else() {
    let app = App::with_axum_login();
    let (_, laptop) = app.sign_in().await;
    let (_, tablet) = app.sign_in().await;
    let (_, phone) = app.sign_in().await;
    let changed = app
        .post("/password", Some(&phone), "password=new-secret")
        .await;
    assert_eq!(changed.status, StatusCode::SEE_OTHER, "{}", changed.body);
    assert_eq!(changed.location(), Some("/dashboard"));
    app.assert_440(&laptop, "ended").await;
    app.assert_440(&tablet, "ended").await;
    app.assert_signed_in(&phone).await;
    // The old password no longer signs in; the new one does.
    let (anonymous, token) = app.open_login_form(None).await;
    let form = format!("username=ada&password=lovelace&csrf={token}");
    let refused = app.post("/login", Some(&anonymous), &form).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
}
