//! `SessionTimeoutBuilder::build` rejects settings that cannot work together, one rule per test.

use std::time::Duration;

use tower_session_timeout::{ConfigError, SessionTimeoutLayer};

fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

#[test]
fn defaults_build() {
    let layer = SessionTimeoutLayer::builder().build().unwrap();
    assert_eq!(layer.policy().idle_timeout(), minutes(20));
    assert_eq!(layer.policy().absolute_timeout(), None);
}

#[test]
fn zero_idle_timeout() {
    let error = SessionTimeoutLayer::builder()
        .idle_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::ZeroIdleTimeout);
}

#[test]
fn zero_absolute_timeout() {
    let error = SessionTimeoutLayer::builder()
        .absolute_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::ZeroAbsoluteTimeout);
}

#[test]
fn absolute_shorter_than_idle() {
    let error = SessionTimeoutLayer::builder()
        .idle_timeout(minutes(30))
        .absolute_timeout(minutes(20))
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        ConfigError::AbsoluteShorterThanIdle {
            absolute: minutes(20),
            idle: minutes(30)
        }
    );
    assert!(
        error.to_string().contains("raise absolute_timeout"),
        "{error}"
    );
}

#[test]
fn absolute_equal_to_idle_is_allowed() {
    SessionTimeoutLayer::builder()
        .idle_timeout(minutes(20))
        .absolute_timeout(minutes(20))
        .build()
        .unwrap();
}

#[test]
fn touch_interval_not_shorter_than_idle() {
    let error = SessionTimeoutLayer::builder()
        .idle_timeout(minutes(5))
        .touch_interval(minutes(5))
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        ConfigError::TouchIntervalNotShorter {
            touch: minutes(5),
            idle: minutes(5)
        }
    );
}

#[test]
fn empty_cookie_name() {
    let error = SessionTimeoutLayer::builder()
        .cookie_name("")
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::EmptyCookieName);
}

#[test]
fn invalid_cookie_name() {
    for name in ["a b", "a;b", "a=b", "séance", "a\"b"] {
        let error = SessionTimeoutLayer::builder()
            .cookie_name(name)
            .build()
            .unwrap_err();
        assert_eq!(error, ConfigError::InvalidCookieName(name.to_owned()));
    }
}

#[test]
fn invalid_cookie_path() {
    for path in ["app", "/a;b", "/a b"] {
        let error = SessionTimeoutLayer::builder()
            .cookie_path(path)
            .build()
            .unwrap_err();
        assert_eq!(error, ConfigError::InvalidCookiePath(path.to_owned()));
    }
}

#[test]
fn invalid_cookie_domain() {
    let error = SessionTimeoutLayer::builder()
        .cookie_domain("a;b")
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::InvalidCookieDomain("a;b".to_owned()));
}

#[test]
fn host_prefix_needs_root_path_and_no_domain() {
    let error = SessionTimeoutLayer::builder()
        .cookie_name("__Host-id")
        .cookie_domain("example.com")
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::HostPrefixRules("__Host-id".to_owned()));
    SessionTimeoutLayer::builder()
        .cookie_name("__Host-id")
        .build()
        .unwrap();
}

#[test]
fn route_paths_start_with_a_slash() {
    let error = SessionTimeoutLayer::builder()
        .exempt_path("login")
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::InvalidRoutePath("login".to_owned()));
}

#[test]
fn keep_alive_and_status_need_their_own_paths() {
    let error = SessionTimeoutLayer::builder()
        .keep_alive_path("/session")
        .status_path("/session")
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::RouteConflict("/session".to_owned()));
}

#[test]
fn invalid_login_url() {
    let error = SessionTimeoutLayer::builder()
        .login_url("/log in")
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::InvalidLoginUrl("/log in".to_owned()));
}

#[test]
fn invalid_seconds_left_header() {
    let error = SessionTimeoutLayer::builder()
        .seconds_left_header("bad header")
        .build()
        .unwrap_err();
    assert_eq!(
        error,
        ConfigError::InvalidHeaderName("bad header".to_owned())
    );
}

#[test]
fn zero_max_id_len() {
    let error = SessionTimeoutLayer::builder()
        .max_id_len(0)
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::ZeroMaxIdLen);
}

#[test]
fn presets_set_the_numbers_they_document() {
    use tower_session_timeout::Preset;
    let hours = |n: u64| minutes(60 * n);
    let expected = [
        (Preset::OwaspAsvs5, minutes(30), Some(hours(12))),
        (Preset::NistAal2, hours(1), Some(hours(24))),
        (Preset::NistAal3, minutes(15), Some(hours(12))),
        (Preset::PciDss4, minutes(15), None),
    ];
    for (preset, idle, absolute) in expected {
        let layer = SessionTimeoutLayer::builder()
            .preset(preset)
            .build()
            .unwrap();
        assert_eq!(layer.policy().idle_timeout(), idle, "{preset:?}");
        assert_eq!(layer.policy().absolute_timeout(), absolute, "{preset:?}");
        assert!(!preset.source().is_empty());
    }
}

#[test]
fn later_calls_override_a_preset() {
    use tower_session_timeout::Preset;
    let layer = SessionTimeoutLayer::builder()
        .preset(Preset::PciDss4)
        .absolute_timeout(minutes(8 * 60))
        .build()
        .unwrap();
    assert_eq!(layer.policy().idle_timeout(), minutes(15));
    assert_eq!(layer.policy().absolute_timeout(), Some(minutes(8 * 60)));
}

#[test]
fn zero_store_timeout() {
    let error = SessionTimeoutLayer::builder()
        .store_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(error, ConfigError::ZeroStoreTimeout);
}

/// The layer's `Debug` shows its route rules, each as it was given (a predicate as `When(..)`).
#[test]
fn debug_shows_the_route_rules() {
    let layer = SessionTimeoutLayer::builder()
        .exempt_path("/login")
        .exempt_prefix("/static")
        .passive_when(|head| head.path() == "/poll")
        .build()
        .unwrap();
    let debug = format!("{layer:?}");
    assert!(
        debug.contains(r#"exempt: [Exact("/login"), Prefix("/static")]"#),
        "{debug}"
    );
    assert!(debug.contains("passive: [When(..)]"), "{debug}");
}

/// The service's `Debug` names it and shows the service it wraps.
#[test]
fn the_services_debug_shows_the_inner_service() {
    #[derive(Debug)]
    struct Named;
    let service = tower::Layer::layer(&SessionTimeoutLayer::builder().build().unwrap(), Named);
    let debug = format!("{service:?}");
    assert!(debug.starts_with("SessionTimeout {"), "{debug}");
    assert!(debug.contains("inner: Named"), "{debug}");
}

/// A day: the retention the docs promise when none is set, and what the policy keeps.
#[test]
fn the_default_retention_is_a_day() {
    assert_eq!(
        tower_session_timeout::DEFAULT_TOMBSTONE_RETENTION,
        Duration::from_secs(24 * 60 * 60)
    );
    let layer = SessionTimeoutLayer::builder().build().unwrap();
    assert_eq!(
        layer.policy().tombstone_retention(),
        Duration::from_secs(86_400)
    );
}

/// Ids of exactly one length are allowed; a minimum above the maximum is not.
#[test]
fn min_id_len_may_equal_max_but_not_pass_it() {
    let equal = SessionTimeoutLayer::builder()
        .min_id_len(32)
        .max_id_len(32)
        .build();
    assert!(equal.is_ok(), "{equal:?}");
    let above = SessionTimeoutLayer::builder()
        .min_id_len(33)
        .max_id_len(32)
        .build()
        .unwrap_err();
    assert!(
        matches!(above, ConfigError::MinIdLenAboveMax { min: 33, max: 32 }),
        "{above:?}"
    );
}

#[test]
fn the_builder_shows_its_settings_in_debug() {
    let builder = SessionTimeoutLayer::builder().idle_timeout(minutes(7));
    let shown = format!("{builder:?}");
    assert!(shown.starts_with("SessionTimeoutBuilder {"), "{shown}");
    assert!(shown.contains("idle_timeout: 420s"), "{shown}");
}
