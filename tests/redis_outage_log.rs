#![cfg(feature = "redis")]
//! While Redis is down under load, the logs hold one line from the layer and one from the
//! store, not one per request; one more line says when Redis answers again. Alone in its test
//! binary: log capture uses a thread-local subscriber (see `store_error_log.rs`).
//!
//! Prints the counts (`cargo test --all-features --test redis_outage_log -- --nocapture`).

mod common;

use std::time::{Duration, Instant};

use common::app::app_with_store;
use common::capture::Logs;
use common::redis_server::OwnRedis;
use http::StatusCode;
use tower_session_timeout::{ManualClock, RedisStore};

/// How long the outage lasts under load.
const OUTAGE: Duration = Duration::from_secs(3);

/// Requests in flight at once during the outage.
const CONCURRENCY: usize = 64;

#[tokio::test]
async fn an_outage_under_load_is_logged_once_per_burst_with_a_count() {
    let (logs, _guard) = Logs::capture();
    let mut redis = OwnRedis::start();
    let store = tokio::time::timeout(Duration::from_secs(10), RedisStore::connect(redis.url()))
        .await
        .expect("in time")
        .expect("connected");
    let app = app_with_store(store, ManualClock::new(), |builder| builder);
    app.login("outage").await;
    assert_eq!(
        app.get("/page", Some("outage")).await.status,
        StatusCode::OK
    );

    redis.stop();
    // Bounded by time and count: CONCURRENCY workers send requests until OUTAGE has passed.
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let service = app.service.clone();
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while started.elapsed() < OUTAGE && statuses.len() < 100_000 {
                use tower::ServiceExt;
                let request = http::Request::get("/page")
                    .header(http::header::COOKIE, "id=outage")
                    .body(http_body_util::Empty::new())
                    .unwrap();
                let response = service.clone().oneshot(request).await.expect("infallible");
                statuses.push(response.status());
            }
            statuses
        }));
    }
    let mut requests = 0;
    for worker in workers {
        let statuses = tokio::time::timeout(OUTAGE + Duration::from_secs(10), worker)
            .await
            .expect("the workers stop")
            .expect("worker");
        assert!(statuses
            .iter()
            .all(|s| *s == StatusCode::SERVICE_UNAVAILABLE));
        requests += statuses.len();
    }
    let warn_or_error = |logs: &Logs| -> Vec<String> {
        let mut lines = logs.lines_with(" WARN ");
        lines.extend(logs.lines_with(" ERROR "));
        lines
    };
    let lines = warn_or_error(&logs);
    eprintln!(
        "Redis down {OUTAGE:?} under {CONCURRENCY} concurrent clients: {requests} requests answered 503, {} WARN/ERROR lines",
        lines.len()
    );
    assert!(requests >= CONCURRENCY, "{requests} requests");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let store_line = logs.lines_with("session store call failed store=");
    assert_eq!(store_line.len(), 1, "{store_line:#?}");
    assert!(store_line[0].contains("WARN") && store_line[0].contains("store=\"redis\""));
    let layer_line = logs.lines_with("session store failed error=");
    assert_eq!(layer_line.len(), 1, "{layer_line:#?}");
    assert!(layer_line[0].contains("ERROR"));

    // Back up: one line says so, with the count of the failures it ended.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/page", Some("fresh")).await.status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "Redis did not answer again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recovered = logs.lines_with("session store answers again");
    assert_eq!(recovered.len(), 1, "{recovered:#?}");
    let failures: usize = recovered[0]
        .split("failures=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse().ok())
        .expect("a failure count");
    assert!(
        failures >= requests,
        "{failures} failures for {requests} requests"
    );
    assert_eq!(warn_or_error(&logs).len(), 2);
}
