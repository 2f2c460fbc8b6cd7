//! Issue #13 through the layer: sessions with an owner and timeouts of their own, the owner's
//! list, "sign out everywhere", and the limit on concurrent sessions, in an axum app driven
//! with `tower::ServiceExt` and a manual clock. Two layers sharing one store stand for two
//! app instances.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_session_timeout::{
    ManualClock, MemoryStore, OnLimit, SessionHandle, SessionRef, SessionTimeoutBuilder,
    SessionTimeoutLayer, SessionTimeouts,
};

const IDLE: Duration = Duration::from_secs(60);
const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(serde::Deserialize)]
struct SignIn {
    user: String,
    id: String,
    remember: Option<String>,
}

/// `/login?user=U&id=ID[&remember=1]` signs in as the demo does: sets the cookie, names the
/// owner, and for "remember me" asks for a week of idle time.
async fn login(
    Extension(session): Extension<SessionHandle>,
    Query(form): Query<SignIn>,
) -> impl axum::response::IntoResponse {
    session.set_owner(form.user);
    if form.remember.is_some() {
        session.set_timeouts(SessionTimeouts::new(7 * DAY).with_absolute(30 * DAY));
    }
    [(SET_COOKIE, format!("id={}; Path=/; HttpOnly", form.id))]
}

/// `/begin?id=ID`: a session with no owner.
async fn begin(Query(form): Query<Begin>) -> impl axum::response::IntoResponse {
    [(SET_COOKIE, format!("id={}; Path=/; HttpOnly", form.id))]
}

#[derive(serde::Deserialize)]
struct Begin {
    id: String,
}

async fn sessions(Extension(session): Extension<SessionHandle>) -> String {
    let listed = session.list_sessions().await.expect("store");
    listed
        .iter()
        .map(|s| {
            let current = if s.is_current() { " current" } else { "" };
            // The handle's own reference names the same session the list marks.
            let mine = if session.session_ref().as_ref() == Some(s.session()) {
                " mine"
            } else {
                ""
            };
            format!(
                "{} {}{current}{mine}\n",
                s.session(),
                s.created_at().as_unix_millis()
            )
        })
        .collect()
}

async fn end_others(Extension(session): Extension<SessionHandle>) -> String {
    session.end_others().await.expect("store").to_string()
}

async fn end_one(
    Extension(session): Extension<SessionHandle>,
    Path(reference): Path<String>,
) -> String {
    let reference: SessionRef = reference.parse().expect("a reference");
    session
        .end_session(&reference)
        .await
        .expect("store")
        .to_string()
}

async fn owner(Extension(session): Extension<SessionHandle>) -> String {
    session
        .owner()
        .await
        .expect("store")
        .unwrap_or_else(|| "none".to_owned())
}

async fn shorten(Extension(session): Extension<SessionHandle>) -> &'static str {
    session.set_timeouts(SessionTimeouts::new(Duration::from_secs(5)));
    "shortened"
}

/// The app, behind a layer on `store` with `clock`; `configure` adds to the builder.
fn instance(
    store: &MemoryStore,
    clock: &ManualClock,
    configure: impl FnOnce(SessionTimeoutBuilder<MemoryStore>) -> SessionTimeoutBuilder<MemoryStore>,
) -> Router {
    let builder = SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .min_id_len(1)
        .exempt_path("/login")
        .exempt_path("/begin")
        .status_path("/session/status")
        .clock(clock.clone())
        .store(store.clone());
    let layer = configure(builder).build().expect("valid config");
    Router::new()
        .route("/", get(|| async { "ok" }))
        .route("/login", post(login))
        .route("/begin", post(begin))
        .route("/owner", get(owner))
        .route("/sessions", get(sessions))
        .route("/sessions/end-others", post(end_others))
        .route("/sessions/{reference}/end", post(end_one))
        .route("/shorten", post(shorten))
        .layer(layer)
}

struct Answer {
    status: StatusCode,
    set_cookie: Vec<String>,
    body: String,
}

async fn send(app: &Router, method: &str, path: &str, id: Option<&str>) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("accept", "application/json");
    if let Some(id) = id {
        request = request.header(COOKIE, format!("id={id}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .expect("infallible");
    let status = response.status();
    let set_cookie = response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        set_cookie,
        body: String::from_utf8(body.to_vec()).unwrap(),
    }
}

async fn sign_in(app: &Router, user: &str, id: &str) -> Answer {
    send(app, "POST", &format!("/login?user={user}&id={id}"), None).await
}

fn reason(answer: &Answer) -> String {
    assert_eq!(answer.status.as_u16(), 440, "{}", answer.body);
    let json: serde_json::Value = serde_json::from_str(&answer.body).expect("problem+json");
    json["reason"].as_str().expect("a reason").to_owned()
}

/// The 440 reason of `GET /` with session `id`.
async fn home_reason(app: &Router, id: &str) -> String {
    reason(&send(app, "GET", "/", Some(id)).await)
}

/// The status of `GET /` with session `id`.
async fn home_status(app: &Router, id: &str) -> StatusCode {
    send(app, "GET", "/", Some(id)).await.status
}

#[tokio::test]
async fn sign_in_names_the_owner_and_the_list_marks_the_current_session() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| b);
    sign_in(&app, "alice", "alice-laptop").await;
    clock.advance(Duration::from_secs(1));
    sign_in(&app, "alice", "alice-phone").await;
    sign_in(&app, "bob", "bob-desktop").await;

    assert_eq!(
        send(&app, "GET", "/owner", Some("alice-phone")).await.body,
        "alice"
    );
    let listed = send(&app, "GET", "/sessions", Some("alice-phone"))
        .await
        .body;
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 2, "alice's two sessions, not bob's: {listed}");
    assert!(
        !lines[0].contains("current") && lines[1].ends_with(" current mine"),
        "{listed}"
    );
    for line in &lines {
        let reference = line.split(' ').next().unwrap();
        assert_eq!(reference.len(), 32);
        assert!(!listed.contains("alice-laptop") && !listed.contains("alice-phone"));
        assert!(reference.parse::<SessionRef>().is_ok());
    }
    // A session begun without an owner has none, and no list.
    send(&app, "POST", "/begin?id=anonymous", None).await;
    assert_eq!(
        send(&app, "GET", "/owner", Some("anonymous")).await.body,
        "none"
    );
    assert_eq!(
        send(&app, "GET", "/sessions", Some("anonymous")).await.body,
        ""
    );
}

#[tokio::test]
async fn end_others_signs_out_every_other_device_on_every_instance() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let (one, two) = (
        instance(&store, &clock, |b| b),
        instance(&store, &clock, |b| b),
    );
    sign_in(&one, "alice", "alice-laptop").await;
    sign_in(&two, "alice", "alice-phone").await;
    sign_in(&two, "alice", "alice-tablet").await;
    sign_in(&one, "bob", "bob-desktop").await;

    assert_eq!(
        send(&two, "POST", "/sessions/end-others", Some("alice-phone"))
            .await
            .body,
        "2"
    );
    for (app, id) in [
        (&one, "alice-laptop"),
        (&two, "alice-tablet"),
        (&one, "alice-tablet"),
    ] {
        assert_eq!(home_reason(app, id).await, "ended", "{id}");
    }
    assert_eq!(home_status(&one, "alice-phone").await, StatusCode::OK);
    assert_eq!(home_status(&two, "bob-desktop").await, StatusCode::OK);
}

#[tokio::test]
async fn one_session_is_ended_by_its_reference_and_only_by_its_owner() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| b);
    sign_in(&app, "alice", "alice-laptop").await;
    clock.advance(Duration::from_secs(1));
    sign_in(&app, "alice", "alice-phone").await;
    sign_in(&app, "bob", "bob-desktop").await;
    let listed = send(&app, "GET", "/sessions", Some("alice-phone"))
        .await
        .body;
    let laptop = listed
        .lines()
        .next()
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();
    let bobs = send(&app, "GET", "/sessions", Some("bob-desktop"))
        .await
        .body;
    let bobs = bobs.split(' ').next().unwrap().to_owned();

    // Alice cannot end Bob's session with its reference.
    let path = format!("/sessions/{bobs}/end");
    assert_eq!(
        send(&app, "POST", &path, Some("alice-phone")).await.body,
        "false"
    );
    assert_eq!(home_status(&app, "bob-desktop").await, StatusCode::OK);
    // Her own laptop she can.
    let path = format!("/sessions/{laptop}/end");
    assert_eq!(
        send(&app, "POST", &path, Some("alice-phone")).await.body,
        "true"
    );
    assert_eq!(home_reason(&app, "alice-laptop").await, "ended");
    assert_eq!(home_status(&app, "alice-phone").await, StatusCode::OK);
}

#[tokio::test]
async fn a_sign_in_beyond_the_limit_supersedes_the_oldest_session() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let limited =
        |b: SessionTimeoutBuilder<MemoryStore>| b.max_sessions_per_owner(2, OnLimit::EndOldest);
    let (one, two) = (
        instance(&store, &clock, limited),
        instance(&store, &clock, limited),
    );
    sign_in(&one, "alice", "first").await;
    clock.advance(Duration::from_secs(1));
    sign_in(&two, "alice", "second").await;
    clock.advance(Duration::from_secs(1));
    assert_eq!(sign_in(&one, "alice", "third").await.status, StatusCode::OK);

    let answer = send(&two, "GET", "/", Some("first")).await;
    assert_eq!(
        reason(&answer),
        "superseded",
        "the app can say \"you signed in elsewhere\""
    );
    for id in ["second", "third"] {
        assert_eq!(home_status(&two, id).await, StatusCode::OK, "{id}");
    }
}

#[tokio::test]
async fn a_sign_in_beyond_the_limit_can_be_refused_with_409() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| {
        b.max_sessions_per_owner(1, OnLimit::Refuse)
    });
    assert_eq!(sign_in(&app, "alice", "first").await.status, StatusCode::OK);
    let refused = sign_in(&app, "alice", "second").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    let problem: serde_json::Value = serde_json::from_str(&refused.body).expect("problem+json");
    assert_eq!(problem["reason"], "session-limit");
    assert_eq!(problem["status"], 409);
    assert!(
        refused
            .set_cookie
            .iter()
            .any(|c| c.starts_with("id=;") && c.contains("Max-Age=0")),
        "the refused session's cookie is cleared, not set: {:?}",
        refused.set_cookie
    );
    assert_eq!(home_reason(&app, "second").await, "unknown");
    assert_eq!(home_status(&app, "first").await, StatusCode::OK);
    // Another user is not affected.
    assert_eq!(sign_in(&app, "bob", "bobs").await.status, StatusCode::OK);
}

#[tokio::test]
async fn remember_me_outlives_the_layers_idle_timeout_within_the_bound() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| {
        b.max_session_timeouts(SessionTimeouts::new(2 * DAY).with_absolute(3 * DAY))
    });
    send(
        &app,
        "POST",
        "/login?user=alice&id=remembered&remember=1",
        None,
    )
    .await;
    sign_in(&app, "alice", "plain").await;
    clock.advance(IDLE);
    assert_eq!(home_reason(&app, "plain").await, "idle");
    let status = send(&app, "GET", "/session/status", Some("remembered")).await;
    assert_eq!(status.status, StatusCode::OK);
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    let (last_seen, idle_deadline, absolute_deadline) = (
        status["last_seen_ms"].as_u64().unwrap(),
        status["idle_deadline_ms"].as_u64().unwrap(),
        status["absolute_deadline_ms"].as_u64().unwrap(),
    );
    // Asked for 7 days idle and 30 in all; the layer's bound cut it to 2 and 3.
    assert_eq!(
        idle_deadline - last_seen,
        2 * DAY.as_millis() as u64,
        "{status}"
    );
    let created = status["created_at_ms"].as_u64().unwrap();
    assert_eq!(absolute_deadline - created, 3 * DAY.as_millis() as u64);
    clock.advance(2 * DAY - IDLE);
    assert_eq!(home_reason(&app, "remembered").await, "idle");
}

#[tokio::test]
async fn by_default_a_session_may_only_shorten_its_timeouts() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| b);
    send(
        &app,
        "POST",
        "/login?user=alice&id=remembered&remember=1",
        None,
    )
    .await;
    clock.advance(IDLE);
    assert_eq!(
        home_reason(&app, "remembered").await,
        "idle",
        "without max_session_timeouts the layer's 60 s are the most a session gets"
    );
}

#[tokio::test]
async fn a_handler_can_shorten_the_current_session() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| b);
    sign_in(&app, "alice", "sensitive").await;
    assert_eq!(
        send(&app, "POST", "/shorten", Some("sensitive"))
            .await
            .status,
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(4));
    assert_eq!(home_status(&app, "sensitive").await, StatusCode::OK);
    clock.advance(Duration::from_secs(5));
    assert_eq!(home_reason(&app, "sensitive").await, "idle");
}

#[tokio::test]
async fn an_owner_named_on_a_response_that_begins_nothing_is_ignored() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| b);
    // A sign-in that re-sends the id the request carries begins nothing, so it cannot
    // hand the session to someone else: the owner of a session never changes.
    sign_in(&app, "first", "fixed").await;
    assert_eq!(
        send(&app, "GET", "/owner", Some("fixed")).await.body,
        "first"
    );
    let again = send(&app, "POST", "/login?user=mallory&id=fixed", Some("fixed")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(
        send(&app, "GET", "/owner", Some("fixed")).await.body,
        "first"
    );
}

/// The admin side, `SessionTimeoutLayer::sessions` on another layer over the same store: it
/// lists an owner's sessions oldest first with their deadlines, none of them current, and
/// "sign out everywhere" ends them all, and no one else's.
#[tokio::test]
async fn an_admin_lists_and_ends_all_of_an_owners_sessions() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| b);
    sign_in(&app, "alice", "alice-laptop").await;
    clock.advance(Duration::from_secs(1));
    sign_in(&app, "alice", "alice-phone").await;
    sign_in(&app, "bob", "bob-desktop").await;
    let admin = SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .clock(clock.clone())
        .store(store.clone())
        .build()
        .expect("valid config")
        .sessions();
    let listed = admin.list("alice").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed[0].created_at() < listed[1].created_at());
    for session in &listed {
        assert!(!session.is_current());
        assert_eq!(
            session.idle_deadline(),
            session.last_seen().saturating_add(IDLE)
        );
    }
    assert_eq!(admin.end_all("alice").await.unwrap(), 2);
    assert!(admin.list("alice").await.unwrap().is_empty());
    assert_eq!(admin.end_all("alice").await.unwrap(), 0);
    assert_eq!(home_reason(&app, "alice-phone").await, "ended");
    assert_eq!(home_status(&app, "bob-desktop").await, StatusCode::OK);
}

/// "Sign out my other devices" from the admin side: every session of the owner but the one
/// referred to ends. The summaries carry the admin layer's absolute deadline, and neither
/// `Sessions` nor a reference shows more than it should in `Debug`.
#[tokio::test]
async fn an_admin_ends_all_but_one_of_an_owners_sessions() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let app = instance(&store, &clock, |b| b);
    for device in ["laptop", "phone", "tablet"] {
        sign_in(&app, "alice", &format!("alice-{device}")).await;
        clock.advance(Duration::from_secs(1));
    }
    let admin = SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .absolute_timeout(DAY)
        .clock(clock.clone())
        .store(store.clone())
        .build()
        .expect("valid config")
        .sessions();
    assert_eq!(format!("{admin:?}"), "Sessions { .. }");
    let listed = admin.list("alice").await.unwrap();
    assert_eq!(listed.len(), 3);
    for session in &listed {
        assert_eq!(
            session.absolute_deadline(),
            Some(session.created_at().saturating_add(DAY))
        );
    }
    let keep = *listed[1].session();
    assert_eq!(format!("{keep:?}"), format!("SessionRef({keep})"));
    assert_eq!(admin.end_all_except("alice", &keep).await.unwrap(), 2);
    let left = admin.list("alice").await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(*left[0].session(), keep);
    assert_eq!(home_status(&app, "alice-phone").await, StatusCode::OK);
    assert_eq!(home_reason(&app, "alice-laptop").await, "ended");
}

/// A session's own timeouts keep the rules the builder keeps for the layer's: a zero idle
/// timeout becomes a millisecond, an absolute timeout shorter than the idle one is raised to
/// it, and `within` cuts both to a bound.
#[test]
fn own_timeouts_are_kept_consistent() {
    let minute = Duration::from_secs(60);
    assert_eq!(
        SessionTimeouts::new(Duration::ZERO).idle(),
        Duration::from_millis(1)
    );
    let short_absolute = SessionTimeouts::new(2 * minute).with_absolute(minute);
    assert_eq!(short_absolute.absolute(), Some(2 * minute));
    let long = SessionTimeouts::new(7 * DAY).with_absolute(30 * DAY);
    assert_eq!((long.idle(), long.absolute()), (7 * DAY, Some(30 * DAY)));
    let bound = SessionTimeouts::new(DAY).with_absolute(2 * DAY);
    let cut = long.within(bound);
    assert_eq!((cut.idle(), cut.absolute()), (DAY, Some(2 * DAY)));
    let unbounded = SessionTimeouts::new(minute).within(bound);
    assert_eq!(unbounded.absolute(), Some(2 * DAY));
}
