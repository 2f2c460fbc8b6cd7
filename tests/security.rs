//! The security review's holes, each as the attack that worked, and the rules around them:
//! an expired id never comes back, fail-open never hands the app an unchecked cookie, a
//! sign-out the store did not take is not answered as a success, short ids are never begun,
//! and path prefixes match whole segments. (Which cookie is the session: tests/cookie_readers.rs.)

mod common;

use std::time::Duration;

use common::app::{app, app_with_store, IDLE};
use common::failing::FailingStore;
use common::faulty::{Fault, FaultyStore};
use http::header::COOKIE;
use http::{Request, StatusCode};
use tower::{Layer, ServiceExt};
use tower_session_timeout::{
    login_timeout_status, ConfigError, ManualClock, SessionTimeoutLayer, DEFAULT_MIN_ID_LEN,
    DEFAULT_TOMBSTONE_RETENTION,
};

/// Past the five minutes tombstones were kept before the review.
const SIX_MINUTES: Duration = Duration::from_secs(6 * 60);

#[tokio::test]
async fn a_handler_cannot_begin_an_expired_id_again_after_minutes() {
    let app = app(|builder| builder);
    app.login("s1").await;
    app.advance(IDLE);
    assert_eq!(
        app.get("/", Some("s1")).await.status,
        login_timeout_status()
    );
    app.advance(SIX_MINUTES);
    // A handler (or a tower-sessions app with `with_always_save`) sets the old id again.
    assert_eq!(app.get("/begin?id=s1", None).await.status, StatusCode::OK);
    assert_eq!(app.get("/login?id=s1", None).await.status, StatusCode::OK);
    let answer = app.get_json("s1").await;
    assert_eq!(answer.status, login_timeout_status(), "revived");
    assert_eq!(answer.reason(), "idle");
}

#[tokio::test]
async fn an_expired_id_is_refused_until_the_horizon_then_forgotten() {
    assert_eq!(
        DEFAULT_TOMBSTONE_RETENTION,
        Duration::from_secs(24 * 60 * 60)
    );
    let app = app(|builder| builder);
    app.login("s1").await;
    app.advance(IDLE + DEFAULT_TOMBSTONE_RETENTION - Duration::from_millis(1));
    app.get("/begin?id=s1", None).await;
    assert_eq!(
        app.get_json("s1").await.reason(),
        "idle",
        "within the horizon"
    );
    app.advance(Duration::from_millis(1));
    assert_eq!(
        app.get_json("s1").await.reason(),
        "unknown",
        "forgotten at the horizon"
    );
}

#[tokio::test]
async fn the_id_a_request_carried_in_another_spelling_is_not_begun_by_its_response() {
    let app = app(|builder| builder.exempt_path("/login"));
    app.login("s1").await;
    app.advance(IDLE + SIX_MINUTES);
    // The exempt login page sets the id the request carried as `%69d`: that is the
    // request's own (expired) session, never a new one.
    let answer = app.get_with_cookie_header("/login?id=s1", "%69d=s1").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(app.get_json("s1").await.reason(), "idle");
}

#[tokio::test]
async fn fail_open_removes_the_unchecked_cookie_from_the_request() {
    let app = app_with_store(FailingStore, ManualClock::new(), |builder| {
        builder.fail_open(true)
    });
    let answer = app
        .get_with_cookie_header("/echo-cookie", "theme=dark; id=s1; %69d=s1")
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.text(),
        "theme=dark",
        "the app saw an unchecked session"
    );
    assert!(
        answer.set_cookies().is_empty(),
        "fail-open does not sign the user out"
    );
}

#[tokio::test]
async fn a_sign_out_the_store_did_not_take_is_answered_503() {
    let app = app_with_store(
        FaultyStore::new(Fault::FailEnds),
        ManualClock::new(),
        |builder| builder,
    );
    app.login("s1").await;
    let answer = app.get("/logout", Some("s1")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        answer.set_cookies().is_empty(),
        "the 503 does not pass on the app's cleared cookie as if signed out"
    );
    assert_eq!(app.get("/", Some("s1")).await.status, StatusCode::OK);
    // The same through the handle.
    assert_eq!(
        app.get("/end", Some("s1")).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn with_fail_open_a_failed_sign_out_still_answers_the_app() {
    let app = app_with_store(
        FaultyStore::new(Fault::FailEnds),
        ManualClock::new(),
        |builder| builder.fail_open(true),
    );
    app.login("s1").await;
    assert_eq!(app.get("/logout", Some("s1")).await.status, StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_sign_out_completes_when_the_client_goes_away() {
    let delay = Duration::from_millis(200);
    let app = app_with_store(
        FaultyStore::new(Fault::DeferredEnds(delay)),
        ManualClock::new(),
        |builder| builder,
    );
    app.login("s1").await;
    let sign_out = app.get("/logout", Some("s1"));
    // The client hangs up while the end is on its way to the store.
    let gave_up = tokio::time::timeout(delay / 2, sign_out).await;
    assert!(gave_up.is_err(), "the end was still under way");
    assert_eq!(
        app.get("/", Some("s1")).await.status,
        StatusCode::OK,
        "not ended yet"
    );
    tokio::time::sleep(delay).await;
    assert_eq!(app.get_json("s1").await.reason(), "ended");
}

#[tokio::test]
async fn ids_shorter_than_the_minimum_are_never_begun() {
    assert_eq!(DEFAULT_MIN_ID_LEN, 16);
    let app = app(|builder| builder.min_id_len(DEFAULT_MIN_ID_LEN));
    let short = "a".repeat(15);
    let long_enough = "a".repeat(16);
    app.login(&short).await;
    app.get(&format!("/begin?id={short}"), None).await;
    let answer = app.get_json(&short).await;
    assert_eq!(answer.status, login_timeout_status());
    assert_eq!(answer.reason(), "unknown");
    app.login(&long_enough).await;
    assert_eq!(
        app.get("/", Some(&long_enough)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn ids_some_reader_would_read_differently_are_never_begun() {
    let app = app(|builder| builder);
    // `parse_encoded` reads this as "s1!", `parse` as it stands.
    app.login("s1%21").await;
    assert!(app.store.is_empty());
    assert_eq!(
        app.get("/", Some("s1%21")).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[test]
fn the_minimum_may_not_exceed_the_maximum() {
    let error = SessionTimeoutLayer::builder()
        .min_id_len(65)
        .max_id_len(64)
        .build()
        .unwrap_err();
    assert!(matches!(
        error,
        ConfigError::MinIdLenAboveMax { min: 65, max: 64 }
    ));
    assert!(error.to_string().contains("lower min_id_len"));
}

#[tokio::test]
async fn prefixes_match_whole_segments() {
    let app = app(|builder| builder.exempt_prefix("/static").passive_prefix("/poll/"));
    app.login("s1").await;
    // An unknown id: exempt paths reach the app, others get 440.
    for (path, exempt) in [
        ("/static", true),
        ("/static/", true),
        ("/static/app.js", true),
        ("/static-admin", false),
        ("/staticx/app.js", false),
        ("/static%2F..%2Fadmin", false),
    ] {
        let status = app.get(path, Some("gone")).await.status;
        let want = if exempt {
            StatusCode::OK
        } else {
            login_timeout_status()
        };
        assert_eq!(status, want, "{path}");
    }
    // Passive paths do not refresh the session; others do.
    app.advance(IDLE / 2);
    app.get("/poll", Some("s1")).await;
    app.get("/poll/x", Some("s1")).await;
    app.get("/polling", Some("s1")).await; // not under /poll: refreshes
    app.advance(IDLE / 2 + Duration::from_millis(1));
    assert_eq!(app.get("/", Some("s1")).await.status, StatusCode::OK);
}

/// The layer's exempt prefix and axum's router agree on which paths are under `/static`:
/// the layer exempts a path exactly when the router sends it to the static files.
#[tokio::test]
async fn exempt_prefixes_agree_with_axums_router() {
    use axum::routing::get as route;
    use axum::Router;

    let statics = Router::new().fallback(route(|| async { "static" }));
    let router: Router = Router::new()
        .nest_service("/static", statics)
        .fallback(route(|| async { "app" }));
    let layer = SessionTimeoutLayer::builder()
        .exempt_prefix("/static")
        .build()
        .unwrap();
    let service = layer.layer(router.clone());
    let segments = [
        "static",
        "static-admin",
        "",
        ".",
        "..",
        "%2F",
        "%73tatic",
        "Static",
        "a",
        "static.js",
    ];
    let mut paths = vec!["/".to_owned()];
    for first in segments {
        for second in segments {
            paths.push(format!("/{first}"));
            paths.push(format!("/{first}/{second}"));
            paths.push(format!("/{first}/{second}/"));
        }
    }
    for path in paths {
        let Ok(uri) = path.parse::<http::Uri>() else {
            continue;
        };
        let routed = router
            .clone()
            .oneshot(
                Request::get(uri.clone())
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let routed = axum::body::to_bytes(routed.into_body(), 64).await.unwrap();
        let request = Request::get(uri)
            .header(COOKIE, "id=unknown-session-id-000")
            .body(axum::body::Body::empty())
            .unwrap();
        let exempt = service.clone().oneshot(request).await.unwrap().status() == StatusCode::OK;
        assert_eq!(
            exempt,
            &routed[..] == b"static",
            "{path}: the layer and the router disagree"
        );
    }
}

/// A response replacing the request's id with a value the layer will not track (a
/// placeholder like `id=deleted` at sign-out, an id with a `%`, one over the length limit)
/// still ends the old session: the browser will not send it again, and nobody else should.
#[tokio::test]
async fn a_replacement_the_layer_will_not_track_still_ends_the_old_id() {
    let app = app(|builder| builder.max_id_len(8));
    for (old, replacement) in [("s1", "bad%25id"), ("s2", "far-too-long-id")] {
        app.login(old).await;
        let answer = app
            .get(&format!("/login?id={replacement}"), Some(old))
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            app.get_json(old).await.reason(),
            "ended",
            "{old} -> {replacement}"
        );
    }
    // The same id set again is no replacement.
    app.login("s3").await;
    app.get("/login?id=s3", Some("s3")).await;
    assert_eq!(app.get("/", Some("s3")).await.status, StatusCode::OK);
}

/// The keep-alive and status routes are the layer's own, so when the store fails they say
/// so even with fail-open, instead of falling through to an app that has no such route.
#[tokio::test]
async fn the_layers_own_routes_answer_503_when_the_store_fails_even_fail_open() {
    let app = app_with_store(FailingStore, ManualClock::new(), |builder| {
        builder
            .fail_open(true)
            .keep_alive_path("/session/keepalive")
            .status_path("/session/status")
    });
    for path in ["/session/keepalive", "/session/status"] {
        let answer = app.get(path, Some("s1")).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    assert_eq!(app.calls(), 0);
    assert_eq!(
        app.get("/", Some("s1")).await.status,
        StatusCode::OK,
        "fail-open elsewhere"
    );
}
