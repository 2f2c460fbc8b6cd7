//! Which cookie is the session, differentially: the id the layer checks against the id each
//! cookie reader an app may use (tower-cookies, axum-extra's `CookieJar`, the cookie crate's
//! `parse` and `parse_encoded`) finds in the request the app gets. For any `Cookie` headers,
//! either the layer refuses the request, or every reader finds no session id or exactly the
//! active one the layer checked. The same check is the fuzz target `cookie_readers`.

#[allow(dead_code)]
#[path = "../fuzz/harness.rs"]
mod harness;

#[allow(dead_code)]
#[path = "common/long.rs"]
mod long;

use std::sync::atomic::{AtomicUsize, Ordering};

use harness::{check_cookie_readers, ACTIVE_ID, EXPIRED_ID};
use http::HeaderValue;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Spellings of a cookie name: the session cookie's to some reader, or near misses.
const NAMES: &[&str] = &[
    "id",
    " id",
    "id ",
    "\tid",
    "%69d",
    "i%64",
    "%69%64",
    "%20id",
    "\u{a0}id",
    "id\u{2003}",
    "\u{3000}id",
    "\u{85}id",
    "ID",
    "idx",
    "i d",
    "%2569d",
    "%69d%ff",
    "x",
    "session",
];

fn value() -> impl Strategy<Value = String> {
    let (active, expired) = (ACTIVE_ID.to_owned(), EXPIRED_ID.to_owned());
    prop_oneof![
        4 => Just(active.clone()),
        4 => Just(expired.clone()),
        1 => Just(format!("\"{active}\"")),
        1 => Just(format!("\"{expired}\"")),
        // The same ids with a percent escape: `parse_encoded` decodes it, `parse` does not.
        1 => Just(format!("%61{}", &active[1..])),
        1 => Just(format!("%65{}", &expired[1..])),
        1 => Just(format!("{active}\u{a0}")),
        1 => Just(format!("\u{2003}{expired}")),
        1 => Just(format!(" {expired} ")),
        1 => Just(String::new()),
        1 => Just("unknown-session-0003".to_owned()),
        1 => Just("%".to_owned()),
    ]
}

fn pair() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (prop::sample::select(NAMES), value()).prop_map(|(name, value)| format!("{name}={value}")),
        1 => Just("theme=dark".to_owned()),
        1 => Just("q=\"quoted\"".to_owned()),
        1 => Just("z=%41%42".to_owned()),
        // A session cookie behind a comma, where an RFC 2965 reader would split.
        1 => Just(format!("c=1, id={EXPIRED_ID}")),
        1 => Just(format!("c=1,%69d={ACTIVE_ID}")),
        1 => Just("noequals".to_owned()),
        1 => Just("=".to_owned()),
        1 => Just(String::new()),
    ]
}

fn header() -> impl Strategy<Value = String> {
    let separator = prop::sample::select(&[";", "; ", ";;", " ; "][..]);
    prop::collection::vec((pair(), separator), 0..6).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(pair, separator)| format!("{pair}{separator}"))
            .collect()
    })
}

/// 4,096 headers in CI; `TST_LONG=1` runs the long mode's count.
fn cases() -> u32 {
    long::cases(4096)
}

#[test]
fn every_reader_gets_the_checked_id_or_the_request_is_refused() {
    let strategy = (any::<bool>(), prop::collection::vec(header(), 1..4));
    let (reached_active, reached_without, refused) = (
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    );
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |(exempt, headers)| {
            let headers: Vec<HeaderValue> = headers
                .iter()
                .map(|header| HeaderValue::from_str(header).expect("no control characters"))
                .collect();
            let path = if exempt { "/login" } else { "/app" };
            // The check itself asserts; here only what kind of case it was.
            let outcome = check_cookie_readers(path, &headers);
            let counter = match (&outcome.readings, outcome.checked_active) {
                (None, _) => &refused,
                (Some(_), true) => &reached_active,
                (Some(_), false) => &reached_without,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
    // The generator reaches all three kinds of case, so the property is not vacuous.
    for (kind, count) in [
        ("reached the app on the active session", &reached_active),
        ("reached the app without a session", &reached_without),
        ("were refused", &refused),
    ] {
        assert!(count.load(Ordering::Relaxed) > 0, "no case {kind}");
    }
}

/// The attacks the security review found, and their neighbours, each with its answer.
#[test]
fn spellings_of_the_session_cookie_are_the_session_cookie() {
    let (active, expired) = (ACTIVE_ID, EXPIRED_ID);
    let cases: &[(&str, String, u16, bool)] = &[
        // (path, Cookie header, status, whether the app saw the active session)
        ("/app", format!("id={active}"), 200, true),
        ("/app", format!("%69d={active}"), 200, true),
        ("/app", format!("id={expired}"), 440, false),
        // The review's holes: each spelling reached tower-sessions with the expired session.
        ("/app", format!("%69d={expired}"), 440, false),
        ("/app", format!("i%64={expired}"), 440, false),
        ("/app", format!("\u{a0}id={expired}"), 440, false),
        ("/app", format!("id\u{3000}={expired}"), 440, false),
        // A live id beside a victim's expired one, in another spelling: two ids, refused.
        ("/app", format!("id={active}; %69d={expired}"), 400, false),
        (
            "/app",
            format!("id={active}; \u{a0}id={expired}"),
            400,
            false,
        ),
        // The same id in two spellings is one id.
        ("/app", format!("id={active}; %69d={active}"), 200, true),
        // Values readers decode differently are refused.
        ("/app", format!("id=%61{}", &active[1..]), 400, false),
        ("/app", format!("id={active}\u{a0}"), 400, false),
        // A session cookie hidden behind a comma.
        ("/app", format!("c=1, id={expired}"), 400, false),
        // On the exempt login page the stale cookie is removed in every spelling.
        ("/login", format!("%69d={expired}; theme=dark"), 200, false),
        ("/login", format!("id={active}; x=1"), 200, true),
    ];
    for (path, header, status, active_seen) in cases {
        let headers = [HeaderValue::from_str(header).unwrap()];
        let outcome = check_cookie_readers(path, &headers);
        assert_eq!(outcome.status, *status, "{path} with {header:?}");
        let tower_cookies = outcome
            .readings
            .as_ref()
            .and_then(|readings| readings.tower_cookies.clone());
        assert_eq!(
            tower_cookies.as_deref() == Some(ACTIVE_ID),
            *active_seen,
            "{path} with {header:?}: tower-cookies read {tower_cookies:?}"
        );
    }
}

/// Several `Cookie` header lines count together, whichever line a reader prefers.
#[test]
fn ids_in_different_header_lines_must_agree() {
    let lines = |lines: &[String]| -> Vec<HeaderValue> {
        lines
            .iter()
            .map(|line| HeaderValue::from_str(line).unwrap())
            .collect()
    };
    let split = lines(&[format!("id={ACTIVE_ID}"), format!("%69d={EXPIRED_ID}")]);
    assert_eq!(check_cookie_readers("/app", &split).status, 400);
    let same = lines(&[format!("id={ACTIVE_ID}"), format!("i%64={ACTIVE_ID}")]);
    assert_eq!(check_cookie_readers("/app", &same).status, 200);
}
