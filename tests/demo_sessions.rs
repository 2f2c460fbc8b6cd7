//! The demo's contract from outside, on every store and across two instances sharing one.
//! Issue #13: the username owns the session, `GET /sessions` lists the user's sessions
//! wherever they began, `POST /sessions/end-others` signs the user out on every instance
//! (440, reason `ended`), and `MAX_SESSIONS_PER_USER` supersedes the oldest (440, reason
//! `superseded`). Issue #14: `AUDIT_LOG` gets one line per session end, once across the
//! instances, and `GET /metrics` answers the Prometheus text format. Servers: Redis and
//! PostgreSQL as `.ci/` starts them.

mod common;

use std::time::Duration;

use common::demo_binary::{self, body, get_json, post, sign_in_as, Demo};

/// Two demo instances on `store`, at most `max` sessions per user, both appending session
/// ends to `audit_log` and sweeping every second.
async fn two_instances(store: &str, max: &str, audit_log: &str) -> (Demo, Demo) {
    let env = [
        ("SESSION_STORE", store),
        ("MAX_SESSIONS_PER_USER", max),
        ("AUDIT_LOG", audit_log),
        ("EXPIRY_SWEEP_SECS", "1"),
    ];
    (
        demo_binary::start(&env).await,
        demo_binary::start(&env).await,
    )
}

/// A fresh audit log path.
fn audit_log() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("demo-audit-{:016x}.jsonl", rand::random::<u64>()))
}

/// The audit log's lines for `user`, once it holds `count` of them (waiting, bounded, for the
/// sweeps), and again after two more sweeps, so a second announcement would show.
async fn ends_of(path: &std::path::Path, user: &str, count: usize) -> Vec<serde_json::Value> {
    let read = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("a JSON line"))
            .filter(|line| line["user"] == user)
            .collect()
    };
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while read().len() < count {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    waited
        .await
        .expect("the ends are announced within the sweeps");
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    read()
}

fn reason(response: &str) -> String {
    assert!(
        response.starts_with("HTTP/1.1 440 Login Time-out"),
        "{response}"
    );
    let problem: serde_json::Value = serde_json::from_str(body(response)).expect("problem+json");
    problem["reason"].as_str().unwrap().to_owned()
}

fn sessions(response: &str) -> Vec<serde_json::Value> {
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    let listed: serde_json::Value = serde_json::from_str(body(response)).expect("JSON");
    listed["sessions"].as_array().unwrap().clone()
}

/// Signs `user` in, a few milliseconds after the previous sign-in, so "oldest" is clear.
async fn sign_in(demo: &Demo, user: &str) -> String {
    tokio::time::sleep(Duration::from_millis(5)).await;
    sign_in_as(&demo.address, &format!("username={user}&password=x")).await
}

/// The whole contract on `store`, with two instances sharing it.
async fn contract(store: &str) {
    let log = audit_log();
    let (one, two) = two_instances(store, "3", log.to_str().unwrap()).await;
    let user = format!("user{:016x}", rand::random::<u64>());
    let first = sign_in(&one, &user).await;
    let second = sign_in(&two, &user).await;

    // Each instance lists the sessions begun on the other.
    let listed = sessions(&get_json(&one.address, "/sessions", &second).await);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(
        (
            listed[0]["current"].as_bool(),
            listed[1]["current"].as_bool()
        ),
        (Some(false), Some(true))
    );

    // Sign out everywhere else, from the other instance.
    let ended = post(&two.address, "/sessions/end-others", &second).await;
    assert!(ended.starts_with("HTTP/1.1 200 OK"), "{ended}");
    assert_eq!(body(&ended), "{\"ended\":1}");
    assert_eq!(
        reason(&get_json(&one.address, "/dashboard", &first).await),
        "ended"
    );

    // One session by its handle.
    let third = sign_in(&one, &user).await;
    let listed = sessions(&get_json(&two.address, "/sessions", &second).await);
    let handle = listed
        .iter()
        .find(|s| s["current"] == false)
        .and_then(|s| s["handle"].as_str())
        .unwrap()
        .to_owned();
    let ended = post(&two.address, &format!("/sessions/{handle}/end"), &second).await;
    assert_eq!(body(&ended), "{\"ended\":true}", "{ended}");
    assert_eq!(
        reason(&get_json(&one.address, "/dashboard", &third).await),
        "ended"
    );

    // At most three: the fourth sign-in supersedes the oldest, on whichever instance.
    let mut cookies = vec![second];
    for demo in [&one, &two, &one] {
        cookies.push(sign_in(demo, &user).await);
    }
    assert_eq!(
        reason(&get_json(&two.address, "/dashboard", &cookies[0]).await),
        "superseded"
    );
    for cookie in &cookies[1..] {
        let page = get_json(&one.address, "/dashboard", cookie).await;
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    }
    assert_eq!(
        sessions(&get_json(&two.address, "/sessions", &cookies[3]).await).len(),
        3
    );

    // Every end so far is in the audit log once, whichever instance announced it: one
    // signed out elsewhere, one ended by its handle, one superseded.
    let ends = ends_of(&log, &user, 3).await;
    let mut reasons: Vec<&str> = ends
        .iter()
        .map(|end| end["reason"].as_str().unwrap())
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["ended", "ended", "superseded"], "{ends:?}");
    std::fs::remove_file(&log).ok();
}

#[tokio::test]
async fn on_memory_one_instance() {
    let log = audit_log();
    let demo = demo_binary::start(&[
        ("MAX_SESSIONS_PER_USER", "1"),
        ("AUDIT_LOG", log.to_str().unwrap()),
        ("EXPIRY_SWEEP_SECS", "1"),
    ])
    .await;
    let first = sign_in(&demo, "ada").await;
    let second = sign_in(&demo, "ada").await;
    assert_eq!(
        reason(&get_json(&demo.address, "/dashboard", &first).await),
        "superseded"
    );
    assert_eq!(
        sessions(&get_json(&demo.address, "/sessions", &second).await).len(),
        1
    );
    let ends = ends_of(&log, "ada", 1).await;
    assert_eq!(ends.len(), 1, "{ends:?}");
    assert_eq!(ends[0]["reason"], "superseded");
    std::fs::remove_file(&log).ok();

    let metrics = demo_binary::get(&demo.address, "/metrics", None).await;
    assert!(metrics.starts_with("HTTP/1.1 200 OK"), "{metrics}");
    #[cfg(feature = "metrics")]
    for name in [
        "session_timeout_requests_total{decision=\"active\",reason=\"\"}",
        "session_timeout_requests_total{decision=\"expired\",reason=\"superseded\"} 1",
        "session_timeout_sessions_begun_total 2",
        "session_timeout_sessions_ended_total{reason=\"superseded\"} 1",
        "session_timeout_store_call_duration_seconds{operation=\"check\",quantile=\"0.5\"}",
        "session_timeout_active_sessions 1",
    ] {
        assert!(metrics.contains(name), "{name} in {metrics}");
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn on_sqlite_two_instances_sharing_a_file() {
    let dir = std::env::temp_dir().join(format!("demo-sessions-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("sessions.db").display());
    contract(&url).await;
    std::fs::remove_dir_all(&dir).ok();
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn on_redis_two_instances() {
    contract("redis://127.0.0.1:6379/0").await;
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn on_postgres_two_instances() {
    contract("postgres://postgres@127.0.0.1:5432/test").await;
}
