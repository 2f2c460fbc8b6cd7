//! The `metrics` feature: what the layer counts, read back through a Prometheus recorder.
#![cfg(feature = "metrics")]

use http::header::COOKIE;
use http::Request;
use http_body_util::Empty;
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::{Layer, Service};
use tower_session_timeout::store::{NewSession, SessionKey, SessionStore};
use tower_session_timeout::{ManualClock, SessionTimeoutLayer};

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
