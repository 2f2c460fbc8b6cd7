//! Many requests racing on one session across its idle deadline.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::app::{app, TestApp, IDLE};
use http::StatusCode;
use tower_session_timeout::login_timeout_status;

/// Runs 8 workers sending requests on session `shared` while the clock moves by `steps`,
/// each step once the workers have answered a few more requests, and checks that no request
/// started after a 440 was seen got a 200.
async fn race(app: Arc<TestApp>, steps: Vec<Duration>) {
    let expired_seen = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let app = Arc::clone(&app);
        let expired_seen = Arc::clone(&expired_seen);
        let done = Arc::clone(&done);
        let answered = Arc::clone(&answered);
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            while !done.load(Ordering::SeqCst) {
                let started_after_expiry = expired_seen.load(Ordering::SeqCst);
                let status = app.get("/", Some("shared")).await.status;
                if status == login_timeout_status() {
                    expired_seen.store(true, Ordering::SeqCst);
                }
                answers.push((started_after_expiry, status));
                answered.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
            answers
        }));
    }
    let wait_for_answers = |count: usize| {
        let answered = Arc::clone(&answered);
        async move {
            let target = answered.load(Ordering::SeqCst) + count;
            let waiting = async {
                while answered.load(Ordering::SeqCst) < target {
                    tokio::task::yield_now().await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), waiting)
                .await
                .expect("workers answer");
        }
    };
    for step in steps {
        wait_for_answers(4).await;
        app.advance(step);
    }
    wait_for_answers(32).await;
    done.store(true, Ordering::SeqCst);

    let mut answers = Vec::new();
    for worker in workers {
        answers.extend(worker.await.unwrap());
    }
    assert!(
        answers.iter().any(|(_, status)| *status == StatusCode::OK),
        "some requests came before the deadline"
    );
    assert!(
        answers
            .iter()
            .any(|(_, status)| *status == login_timeout_status()),
        "the deadline was crossed"
    );
    for (started_after_expiry, status) in &answers {
        if *started_after_expiry {
            assert_eq!(
                *status,
                login_timeout_status(),
                "a 200 after a 440 was seen"
            );
        } else {
            assert!(*status == StatusCode::OK || *status == login_timeout_status());
        }
    }
    // Stepping the clock back cannot revive it either.
    app.clock
        .set(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600));
    assert_eq!(
        app.get("/", Some("shared")).await.status,
        login_timeout_status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_idle_a_session_never_answers_200_again() {
    let app = Arc::new(app(|builder| builder));
    app.login("shared").await;
    // Requests keep refreshing it, so only a jump of a whole idle timeout crosses the
    // deadline, racing with the requests in flight.
    race(app, vec![IDLE]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn once_past_the_absolute_deadline_a_session_never_answers_200_again() {
    let absolute = IDLE * 2;
    let app = Arc::new(app(|builder| builder.absolute_timeout(absolute)));
    app.login("shared").await;
    // Up to 50 ms before the absolute deadline in steps the requests keep up with, then
    // across it a millisecond at a time.
    let mut steps = vec![(absolute - Duration::from_millis(50)) / 4; 4];
    steps.extend(std::iter::repeat_n(Duration::from_millis(1), 100));
    race(app, steps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_exactly_at_the_deadline_all_get_440() {
    let app = Arc::new(app(|builder| builder));
    app.login("shared").await;
    app.advance(IDLE);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let app = Arc::clone(&app);
        tasks.push(tokio::spawn(async move {
            app.get("/", Some("shared")).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), login_timeout_status());
    }
    assert_eq!(app.calls(), 1, "only the login reached the inner service");
}
