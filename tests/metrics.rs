//! The `metrics` feature: what the layer counts, read back through a Prometheus recorder.
#![cfg(feature = "metrics")]

use std::time::Duration;

use http::header::{COOKIE, SET_COOKIE};
use http::Request;
use http_body_util::Empty;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::{Layer, Service};
use tower_session_timeout::store::{NewSession, SessionKey, SessionStore};
use tower_session_timeout::{ManualClock, SessionTimeoutLayer, ANNOUNCE_LEASE, HOOK_ATTEMPTS};

const IDLE: Duration = Duration::from_secs(60);

/// A request on a passive route is counted as `passive`, one on any other route as `active`:
/// with `MemoryStore`, which answers at once, the layer counts in `call`.
#[tokio::test]
async fn requests_are_counted_by_decision() {
    let layer = SessionTimeoutLayer::builder()
        .clock(ManualClock::new())
        .passive_path("/poll")
        .build()
        .unwrap();
    let id = "counted-session-0123456789";
    layer
        .store()
        .begin(
            &SessionKey::from_id(id),
            layer.now(),
            layer.policy(),
            NewSession::plain(),
        )
        .await
        .unwrap();
    let inner = tower::service_fn(|_request: Request<Empty<bytes::Bytes>>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<bytes::Bytes>::new()))
    });
    let mut service = layer.layer(inner);
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    for path in ["/poll", "/", "/"] {
        let request = Request::get(path)
            .header(COOKIE, format!("id={id}"))
            .body(Empty::new())
            .unwrap();
        let response = metrics::with_local_recorder(&recorder, || service.call(request));
        assert!(response.await.unwrap().status().is_success());
    }
    let text = handle.render();
    assert!(
        text.contains(r#"session_timeout_requests_total{decision="passive",reason=""} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"session_timeout_requests_total{decision="active",reason=""} 2"#),
        "{text}"
    );
}

/// A sign-in through the layer counts a session begun, checks are timed, and the sweep counts
/// the end it announces (by reason) and sets the active-sessions gauge.
#[tokio::test]
async fn sessions_begun_and_ended_store_calls_and_the_active_gauge() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let clock = ManualClock::new();
    let layer = SessionTimeoutLayer::builder()
        .clock(clock.clone())
        .idle_timeout(IDLE)
        .on_session_end(|_end| async {})
        .build()
        .unwrap();
    let id = "metered-session-0123456789";
    let mut service = layer.layer(tower::service_fn(
        |request: Request<Empty<bytes::Bytes>>| async move {
            let mut response = http::Response::new(Empty::<bytes::Bytes>::new());
            if request.uri().path() == "/login" {
                let cookie = format!("id={}", request.uri().query().unwrap_or_default());
                response
                    .headers_mut()
                    .insert(SET_COOKIE, cookie.parse().unwrap());
            }
            Ok::<_, std::convert::Infallible>(response)
        },
    ));
    let login = Request::get(format!("/login?{id}"))
        .body(Empty::new())
        .unwrap();
    assert!(service.call(login).await.unwrap().status().is_success());
    let page = Request::get("/")
        .header(COOKIE, format!("id={id}"))
        .body(Empty::new())
        .unwrap();
    assert!(service.call(page).await.unwrap().status().is_success());

    clock.advance(IDLE + Duration::from_secs(1));
    assert_eq!(layer.announce_now().await.unwrap(), 1);
    let text = handle.render();
    for line in [
        "session_timeout_sessions_begun_total 1",
        r#"session_timeout_sessions_ended_total{reason="idle"} 1"#,
        r#"session_timeout_store_call_duration_seconds_count{operation="check"} 1"#,
        // Counted as the sweep began, before it retired the session.
        "session_timeout_active_sessions 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }
}

/// An end whose hook kept failing is dropped after the last attempt, and counted.
#[tokio::test]
async fn an_announcement_given_up_is_counted() {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _recording = metrics::set_default_local_recorder(&recorder);
    let clock = ManualClock::new();
    let layer = SessionTimeoutLayer::builder()
        .clock(clock.clone())
        .idle_timeout(IDLE)
        .on_session_end(|_end| async { panic!("the audit database is down") })
        .build()
        .unwrap();
    layer
        .store()
        .begin(
            &SessionKey::from_id("given-up-session"),
            layer.now(),
            layer.policy(),
            NewSession::plain(),
        )
        .await
        .unwrap();
    clock.advance(IDLE + Duration::from_secs(1));
    for _ in 0..HOOK_ATTEMPTS {
        layer.announce_now().await.unwrap();
        clock.advance(ANNOUNCE_LEASE);
    }
    assert_eq!(layer.announcements_dropped(), 1);
    let text = handle.render();
    assert!(
        text.lines()
            .any(|line| line == "session_timeout_announcements_dropped_total 1"),
        "{text}"
    );
}
