//! The demo app (`examples/axum_login.rs`), as a browser or curl would use it.

#[allow(dead_code, unreachable_pub)]
#[path = "../examples/axum_login.rs"]
mod demo;

#[allow(dead_code)]
#[path = "common/demo_binary.rs"]
mod demo_binary;

use std::time::Duration;

use axum::body::Body;
use demo::{Settings, StoreChoice};
use http::header::{COOKIE, LOCATION, SET_COOKIE};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_session_timeout::{
    login_timeout_status, ManualClock, SessionTimeoutLayer, SessionTimeouts,
};

fn settings(vars: &[(&str, &str)]) -> Result<Settings, String> {
    Settings::from_vars(|name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_string())
    })
}

#[test]
fn settings_defaults() {
    assert_eq!(
        settings(&[]).unwrap(),
        Settings {
            port: 3000,
            idle_timeout: Duration::from_secs(60),
            absolute_timeout: None,
            remember: SessionTimeouts::new(7 * DAY).with_absolute(30 * DAY),
            max_sessions_per_user: None,
            audit_log: None,
            expiry_sweep: Duration::from_secs(5),
            tombstone_retention: None,
            purge_every: Duration::from_secs(60),
            store: StoreChoice::Memory
        }
    );
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

#[test]
fn settings_from_the_environment() {
    let parsed = settings(&[
        ("PORT", "8080"),
        ("IDLE_TIMEOUT_SECS", "5"),
        ("ABSOLUTE_TIMEOUT_SECS", "30"),
        ("SESSION_STORE", "sqlite:///tmp/demo.db"),
        ("REMEMBER_IDLE_TIMEOUT_SECS", "600"),
        ("REMEMBER_ABSOLUTE_TIMEOUT_SECS", "3600"),
        ("MAX_SESSIONS_PER_USER", "3"),
    ])
    .unwrap();
    assert_eq!(
        parsed.remember,
        SessionTimeouts::new(Duration::from_secs(600)).with_absolute(Duration::from_secs(3600))
    );
    assert_eq!(parsed.max_sessions_per_user, Some(3));
    assert_eq!(parsed.port, 8080);
    assert_eq!(parsed.idle_timeout, Duration::from_secs(5));
    assert_eq!(parsed.absolute_timeout, Some(Duration::from_secs(30)));
    assert_eq!(
        parsed.store,
        StoreChoice::Sqlite("sqlite:///tmp/demo.db".into())
    );
}

#[test]
fn redis_cluster_seeds_pick_the_cluster_store() {
    let parsed = settings(&[(
        "SESSION_STORE",
        "redis-cluster://127.0.0.1:7000,127.0.0.1:7001",
    )])
    .unwrap();
    assert_eq!(
        parsed.store,
        StoreChoice::RedisCluster("redis-cluster://127.0.0.1:7000,127.0.0.1:7001".into())
    );
}

#[test]
fn store_settings_print_without_passwords() {
    for (url, shown) in [
        (
            "redis://:secret@127.0.0.1:6379/0",
            "redis://:***@127.0.0.1:6379/0",
        ),
        (
            "redis-cluster://u:secret@a:7000,b:7001",
            "redis-cluster://u:***@a:7000,b:7001",
        ),
        (
            "postgres://app:secret@db:5432/app",
            "postgres://app:***@db:5432/app",
        ),
    ] {
        let parsed = settings(&[("SESSION_STORE", url)]).unwrap();
        let printed = format!("{parsed:?}");
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains(shown), "{printed}");
    }
    let error = settings(&[("SESSION_STORE", "mongodb://u:secret@x")]).unwrap_err();
    assert!(!error.contains("secret"), "{error}");
}

#[test]
fn bad_settings_are_clear_errors() {
    assert!(settings(&[("PORT", "99999")]).unwrap_err().contains("PORT"));
    assert!(settings(&[("IDLE_TIMEOUT_SECS", "soon")])
        .unwrap_err()
        .contains("IDLE_TIMEOUT_SECS"));
    assert!(settings(&[("SESSION_STORE", "mongodb://x")])
        .unwrap_err()
        .contains("SESSION_STORE"));
    assert!(settings(&[("MAX_SESSIONS_PER_USER", "0")])
        .unwrap_err()
        .contains("MAX_SESSIONS_PER_USER"));
    assert!(settings(&[
        ("REMEMBER_IDLE_TIMEOUT_SECS", "100"),
        ("REMEMBER_ABSOLUTE_TIMEOUT_SECS", "50")
    ])
    .unwrap_err()
    .contains("REMEMBER_ABSOLUTE_TIMEOUT_SECS"));
}

struct Demo {
    router: axum::Router,
    clock: ManualClock,
    layer: SessionTimeoutLayer,
}

impl Demo {
    fn new() -> Self {
        Self::with(&[])
    }

    /// The demo with these environment variables, on a manual clock.
    fn with(vars: &[(&str, &str)]) -> Self {
        let clock = ManualClock::new();
        let settings = settings(vars).unwrap();
        let layer = demo::configure(SessionTimeoutLayer::builder(), &settings)
            .clock(clock.clone())
            .build()
            .unwrap();
        Demo {
            router: demo::router(layer.clone(), &settings),
            clock,
            layer,
        }
    }

    async fn send(&self, request: Request<Body>) -> (http::response::Parts, String) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts, String::from_utf8(bytes.to_vec()).unwrap())
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> (http::response::Parts, String) {
        let mut request = Request::get(path);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    /// Signs in as ada and returns the `id=...` cookie pair.
    async fn sign_in(&self) -> String {
        self.sign_in_as("username=ada&password=secret").await
    }

    /// Signs in with this form and returns the `id=...` cookie pair.
    async fn sign_in_as(&self, form: &str) -> String {
        let request = Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        let (parts, _) = self.send(request).await;
        assert_eq!(parts.status, StatusCode::SEE_OTHER);
        assert_eq!(parts.headers[LOCATION], "/dashboard");
        let set_cookie = parts.headers[SET_COOKIE].to_str().unwrap();
        set_cookie.split(';').next().unwrap().to_owned()
    }

    async fn post(&self, path: &str, cookie: &str) -> (http::response::Parts, String) {
        let request = Request::post(path).header(COOKIE, cookie);
        self.send(request.body(Body::empty()).unwrap()).await
    }

    /// `GET /sessions` as JSON.
    async fn sessions(&self, cookie: &str) -> serde_json::Value {
        let (parts, body) = self.get("/sessions", Some(cookie)).await;
        assert_eq!(parts.status, StatusCode::OK, "{body}");
        serde_json::from_str(&body).expect("JSON")
    }
}

/// The `reason` of a 440 problem+json answer to `GET /dashboard` asking for JSON.
async fn reason_of(demo: &Demo, cookie: &str) -> String {
    let request = Request::get("/dashboard")
        .header(COOKIE, cookie)
        .header("accept", "application/json")
        .body(Body::empty())
        .unwrap();
    let (parts, body) = demo.send(request).await;
    assert_eq!(parts.status, login_timeout_status(), "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).expect("problem+json");
    problem["reason"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_sessions_route_lists_the_users_sessions_and_ends_them() {
    let demo = Demo::new();
    let laptop = demo.sign_in_as("username=ada&password=x").await;
    demo.clock.advance(Duration::from_secs(1));
    let phone = demo.sign_in_as("username=ada&password=x").await;
    let other = demo.sign_in_as("username=bob&password=x").await;

    let listed = demo.sessions(&phone).await;
    let sessions = listed["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{listed}");
    assert_eq!(sessions[0]["current"], false);
    assert_eq!(sessions[1]["current"], true);
    let created = sessions[0]["created_at_ms"].as_u64().unwrap();
    assert_eq!(
        sessions[1]["created_at_ms"].as_u64().unwrap(),
        created + 1000
    );
    assert!(sessions[0]["last_seen_ms"].as_u64().unwrap() >= created);
    let handle = sessions[0]["handle"].as_str().unwrap().to_owned();
    assert!(!laptop.contains(&handle), "the handle is not the id");

    // One session, by its handle; a handle that is not the user's ends nothing.
    let bobs = demo.sessions(&other).await["sessions"][0]["handle"]
        .as_str()
        .unwrap()
        .to_owned();
    let (parts, _) = demo.post(&format!("/sessions/{bobs}/end"), &phone).await;
    assert_eq!(parts.status, StatusCode::NOT_FOUND);
    let (parts, body) = demo.post(&format!("/sessions/{handle}/end"), &phone).await;
    assert_eq!(
        (parts.status, body.as_str()),
        (StatusCode::OK, "{\"ended\":true}")
    );
    assert_eq!(reason_of(&demo, &laptop).await, "ended");
    let (parts, _) = demo.post("/sessions/not-a-handle/end", &phone).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);

    // Every other one.
    let tablet = demo.sign_in_as("username=ada&password=x").await;
    let (parts, body) = demo.post("/sessions/end-others", &phone).await;
    assert_eq!(
        (parts.status, body.as_str()),
        (StatusCode::OK, "{\"ended\":1}")
    );
    assert_eq!(reason_of(&demo, &tablet).await, "ended");
    assert_eq!(
        demo.get("/dashboard", Some(&phone)).await.0.status,
        StatusCode::OK
    );
    assert_eq!(
        demo.get("/dashboard", Some(&other)).await.0.status,
        StatusCode::OK
    );

    // Without a session there is nothing to list.
    let (parts, _) = demo.get("/sessions", None).await;
    assert_eq!(parts.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn remember_me_uses_the_remember_timeouts() {
    let demo = Demo::with(&[
        ("REMEMBER_IDLE_TIMEOUT_SECS", "600"),
        ("REMEMBER_ABSOLUTE_TIMEOUT_SECS", "900"),
    ]);
    let request = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("username=ada&password=x&remember=on"))
        .unwrap();
    let (parts, _) = demo.send(request).await;
    let set_cookie = parts.headers[SET_COOKIE].to_str().unwrap();
    assert!(set_cookie.contains("Max-Age=900"), "{set_cookie}");
    let remembered = set_cookie.split(';').next().unwrap().to_owned();
    let plain = demo.sign_in().await;
    demo.clock.advance(Duration::from_secs(60));
    assert_eq!(reason_of(&demo, &plain).await, "idle");
    let (parts, status) = demo.get("/session/status", Some(&remembered)).await;
    assert_eq!(parts.status, StatusCode::OK);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["idle_seconds_left"], 540, "{status}");
    assert_eq!(status["absolute_seconds_left"], 840, "{status}");
    // Used now and then, it lasts until its own absolute timeout.
    demo.clock.advance(Duration::from_secs(500));
    let (parts, _) = demo.get("/dashboard", Some(&remembered)).await;
    assert_eq!(parts.status, StatusCode::OK);
    demo.clock.advance(Duration::from_secs(340));
    assert_eq!(reason_of(&demo, &remembered).await, "absolute");
}

#[tokio::test]
async fn a_sign_in_beyond_the_limit_supersedes_the_oldest_session() {
    let demo = Demo::with(&[("MAX_SESSIONS_PER_USER", "2")]);
    let first = demo.sign_in().await;
    demo.clock.advance(Duration::from_secs(1));
    let second = demo.sign_in().await;
    demo.clock.advance(Duration::from_secs(1));
    let third = demo.sign_in().await;
    assert_eq!(reason_of(&demo, &first).await, "superseded");
    for cookie in [&second, &third] {
        assert_eq!(
            demo.get("/dashboard", Some(cookie)).await.0.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        demo.sessions(&third).await["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn the_audit_log_gets_one_line_per_session_end_asked_for_or_not() {
    let path = std::env::temp_dir().join(format!("audit-{:016x}.jsonl", rand::random::<u64>()));
    let demo = Demo::with(&[
        ("AUDIT_LOG", path.to_str().unwrap()),
        ("MAX_SESSIONS_PER_USER", "2"),
    ]);
    let began = demo.layer.now().as_unix_millis();
    let abandoned = demo.sign_in_as("username=ada&password=x").await;
    let signed_out = demo.sign_in_as("username=bob&password=x").await;
    let request = Request::post("/logout").header(COOKIE, &signed_out);
    demo.send(request.body(Body::empty()).unwrap()).await;
    let first = demo.sign_in_as("username=cy&password=x").await;
    demo.clock.advance(Duration::from_secs(1));
    demo.sign_in_as("username=cy&password=x").await;
    demo.sign_in_as("username=cy&password=x").await;
    // Nobody comes back for ada's session: it is announced at its deadline all the same.
    demo.clock.advance(Duration::from_secs(61));
    let announced = demo.layer.announce_now().await.unwrap();
    assert!(announced >= 4, "{announced}");
    assert_eq!(demo.layer.announce_now().await.unwrap(), 0, "once");
    let log = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let mut lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    lines.sort_by_key(|line| {
        (
            line["user"].as_str().unwrap().to_owned(),
            line["at_ms"].as_u64(),
        )
    });
    let summary: Vec<(&str, &str, u64)> = lines
        .iter()
        .map(|line| {
            assert_eq!(line["event"], "session_end");
            let at = line["at_ms"].as_u64().unwrap() - began;
            (
                line["user"].as_str().unwrap(),
                line["reason"].as_str().unwrap(),
                at,
            )
        })
        .collect();
    // Every session ended: ada's went idle at 60 s; bob signed out at once; cy's first was
    // superseded by the third sign-in at 1 s, the other two went idle at 61 s.
    assert_eq!(
        summary,
        vec![
            ("ada", "idle", 60_000),
            ("bob", "ended", 0),
            ("cy", "superseded", 1_000),
            ("cy", "idle", 61_000),
            ("cy", "idle", 61_000),
        ],
        "{log}"
    );
    drop((abandoned, first));
}

#[tokio::test]
async fn sign_in_wait_past_the_idle_timeout_and_see_440() {
    let demo = Demo::new();
    let (parts, form) = demo.get("/login", None).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(form.contains("name=\"username\"") && form.contains("name=\"password\""));

    let cookie = demo.sign_in().await;
    let (parts, page) = demo.get("/dashboard", Some(&cookie)).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(page.contains("Signed in as <strong>ada</strong>"), "{page}");

    demo.clock.advance(Duration::from_secs(60));
    let (parts, page) = demo.get("/dashboard", Some(&cookie)).await;
    assert_eq!(parts.status, login_timeout_status());
    assert!(page.contains("<title>Login Time-out</title>"));
    assert!(page.contains("<a href=\"/login\">Log in again.</a>"));

    // The login page still opens with the stale cookie, and clears it.
    let (parts, _) = demo.get("/login", Some(&cookie)).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(parts.headers[SET_COOKIE]
        .to_str()
        .unwrap()
        .starts_with("id=;"));
}

#[tokio::test]
async fn dashboard_without_a_session_redirects_to_login() {
    let demo = Demo::new();
    let (parts, _) = demo.get("/dashboard", None).await;
    assert_eq!(parts.status, StatusCode::SEE_OTHER);
    assert_eq!(parts.headers[LOCATION], "/login");
}

#[tokio::test]
async fn empty_credentials_are_refused() {
    let demo = Demo::new();
    let request = Request::post("/login")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from("username=&password="))
        .unwrap();
    let (parts, _) = demo.send(request).await;
    assert_eq!(parts.status, StatusCode::BAD_REQUEST);
    assert!(parts.headers.get(SET_COOKIE).is_none());
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let demo = Demo::new();
    let cookie = demo.sign_in().await;
    let request = Request::post("/logout")
        .header(COOKIE, &cookie)
        .body(Body::empty())
        .unwrap();
    let (parts, _) = demo.send(request).await;
    assert_eq!(parts.status, StatusCode::SEE_OTHER);
    assert!(parts.headers[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (parts, _) = demo.get("/dashboard", Some(&cookie)).await;
    assert_eq!(parts.status, login_timeout_status());
}

#[tokio::test]
async fn keep_alive_and_status_routes() {
    let demo = Demo::new();
    let cookie = demo.sign_in().await;
    demo.clock.advance(Duration::from_secs(59));
    let (parts, body) = demo.get("/session/keepalive", Some(&cookie)).await;
    assert_eq!((parts.status, body.as_str()), (StatusCode::OK, "OK"));
    demo.clock.advance(Duration::from_secs(30));
    let (parts, body) = demo.get("/session/status", Some(&cookie)).await;
    assert_eq!(parts.status, StatusCode::OK);
    assert!(body.contains("\"seconds_left\":30"), "{body}");
}

#[tokio::test]
async fn the_dashboard_runs_the_browser_client() {
    let demo = Demo::new();
    let cookie = demo.sign_in().await;
    let (_, page) = demo.get("/dashboard", Some(&cookie)).await;
    assert!(
        page.contains("<script src=\"/session/timeout.js\" defer></script>"),
        "{page}"
    );
    assert!(page.contains("data-session-signout"), "{page}");
    let (parts, script) = demo.get("/session/timeout.js", None).await;
    assert_eq!(parts.status, StatusCode::OK);
    // The demo's default 60 s idle timeout: warn 20 s ahead, keep-alive every 20 s.
    assert!(
        script.contains("\"warnBeforeMs\":20000,\"keepAliveIntervalMs\":20000"),
        "{}",
        &script[..300]
    );
}

#[test]
fn client_timing_follows_the_idle_timeout() {
    let secs = Duration::from_secs;
    let timing = |idle| demo::client_timing(secs(idle));
    assert_eq!(timing(25), Some((secs(20), Duration::from_millis(2500))));
    assert_eq!(timing(60), Some((secs(20), secs(20))));
    assert_eq!(timing(20 * 60), Some((secs(60), secs(60))));
    assert_eq!(timing(22), Some((secs(20), secs(1))));
    assert_eq!(timing(21), None);
    assert_eq!(timing(5), None);
}

#[tokio::test]
async fn the_binary_serves_the_sign_in_flow_on_port() {
    let mut demo = demo_binary::start(&[("IDLE_TIMEOUT_SECS", "60")]).await;
    let address = &demo.address;
    let form = demo_binary::get(address, "/login", None).await;
    assert!(form.starts_with("HTTP/1.1 200 OK"), "{form}");
    let cookie = demo_binary::sign_in(address).await;
    let dashboard = demo_binary::get(address, "/dashboard", Some(&cookie)).await;
    assert!(dashboard.starts_with("HTTP/1.1 200 OK"), "{dashboard}");
    let stale = demo_binary::get(address, "/dashboard", Some("id=stale-session-id-0")).await;
    assert!(
        stale.starts_with("HTTP/1.1 440 Login Time-out\r\n"),
        "{stale}"
    );
    demo.child.kill().await.unwrap();
}

#[cfg(not(feature = "redis"))]
#[tokio::test]
async fn a_store_whose_feature_is_missing_is_a_clear_error() {
    // Bounded: an example binary built with the feature (by an earlier `--all-features`
    // build) would start serving instead of failing.
    let run = tokio::process::Command::new(demo_binary::example_binary())
        .env("PORT", "0")
        .env("SESSION_STORE", "redis://127.0.0.1:6379/0")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the demo exits at once when the store's feature is missing")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("--features redis"), "{stderr}");
}
