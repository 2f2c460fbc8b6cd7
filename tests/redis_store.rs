#![cfg(feature = "redis")]
//! `RedisStore` against a real Redis: the shared store and owner suites, the owner index as
//! Redis holds it (`common/redis_owners.rs`), "sign out everywhere" racing with requests and
//! sign-ins on three instances, two layer instances sharing one Redis, a race at the idle
//! deadline, and a Redis that stops and comes back.
//!
//! Needs Redis on 127.0.0.1:6379 (each test keeps to a key prefix of its own) and, for the
//! restart test, the `redis-server` binary, which it runs on a free port of its own.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::app::{app_with_store, TestApp, IDLE};
use common::redis_server::OwnRedis;
use common::store_suite::{self, fresh_key, policy, start, RETENTION};
use http::header::{ACCEPT, COOKIE};
use http::{Request, StatusCode};
use http_body_util::Empty;
use redis::AsyncCommands;
use tower::{Service, ServiceExt};
use tower_session_timeout::store::{Begin, Check, SessionKey, SessionStore, Touch};
use tower_session_timeout::{ExpiryReason, ManualClock, OnLimit, RedisStore, StoreError};

const REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// Bounds every wait on the network, so a broken Redis fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);

fn unique_prefix(test: &str) -> String {
    let nonce: u64 = rand::random();
    format!("tst-test:{test}:{nonce:016x}:")
}

async fn store(test: &str) -> RedisStore {
    tokio::time::timeout(WAIT, RedisStore::connect(REDIS_URL))
        .await
        .expect("Redis on 127.0.0.1:6379 answers in time")
        .expect("Redis on 127.0.0.1:6379 is reachable")
        .with_prefix(unique_prefix(test))
}

/// A plain connection for looking at what the store wrote.
async fn inspector() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(REDIS_URL).expect("valid url");
    tokio::time::timeout(WAIT, client.get_multiplexed_async_connection())
        .await
        .expect("in time")
        .expect("connected")
}

async fn keys_under(prefix: &str) -> Vec<String> {
    let mut connection = inspector().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut connection)
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("answered in time")
}

#[tokio::test]
async fn passes_the_store_suite() {
    store_suite::run(store("suite").await).await;
}

/// Two clients with connections of their own: two app instances sharing one Redis.
#[tokio::test]
async fn passes_the_announce_suite() {
    let one = store("announce").await;
    let other = store("announce").await.with_prefix(one.prefix().to_owned());
    common::announce_suite::run(one, other).await;
}

/// The due index as Redis holds it: listings, relisting, crashes between steps, a claimer
/// that dies, and the bound on what nobody sweeps.
#[tokio::test]
async fn keeps_the_due_index_consistent_across_instances() {
    let stores = three_instances("due-index").await;
    common::redis_announce::run(&stores, inspector().await).await;
}

#[tokio::test]
async fn passes_the_owner_suite() {
    common::owner_suite::run(store("owner-suite").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_owner_indexes_consistent_across_instances() {
    let stores = three_instances("owners").await;
    common::redis_owners::run(&stores, inspector().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_all_racing_with_requests_and_sign_ins_on_three_instances() {
    let stores = three_instances("end-all-race").await;
    let rounds = if common::long::on() { 1_000 } else { 20 };
    common::redis_owners::end_all_races_with_requests_and_sign_ins(&stores, rounds).await;
}

/// Three instances (connections of their own) on one prefix.
async fn three_instances(test: &str) -> Vec<RedisStore> {
    let prefix = unique_prefix(test);
    let mut stores = Vec::new();
    for _ in 0..3 {
        stores.push(store(test).await.with_prefix(prefix.clone()));
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_shared_owner_races_on_three_instances() {
    let stores = three_instances("owner-races").await;
    common::owner_races::end_all_races_requests_and_sign_ins(&stores, 8).await;
    common::owner_races::limited_sign_ins_race(&stores, 3, OnLimit::Refuse, 4).await;
    common::owner_races::limited_sign_ins_race(&stores, 3, OnLimit::EndOldest, 4).await;
    common::owner_races::limited_sign_ins_race(&stores, 1, OnLimit::EndOldest, 2).await;
    common::owner_races::limited_sign_ins_race(&stores, 1, OnLimit::Refuse, 2).await;
}

#[tokio::test]
async fn passes_the_store_suite_after_the_script_cache_is_flushed() {
    // What a Redis restart does to loaded scripts: the store loads it again and goes on.
    let store = store("flushed").await;
    let key = fresh_key("flushed");
    let t0 = start();
    assert_eq!(
        within(store.begin(
            &key,
            t0,
            &policy(),
            tower_session_timeout::store::NewSession::plain()
        ))
        .await
        .unwrap(),
        Begin::Began
    );
    let mut connection = inspector().await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut connection)
        .await
        .expect("SCRIPT FLUSH");
    let check = within(store.check(&key, t0, &policy(), Touch::Refresh))
        .await
        .unwrap();
    assert!(matches!(check, Check::Active(_)), "{check:?}");
}

#[tokio::test]
async fn keys_are_prefixed_hashes_with_a_ttl_and_hold_no_raw_id() {
    let store = store("keys").await;
    let clock = ManualClock::new();
    let app = app_with_store(store.clone(), clock, |builder| builder);
    let id = format!("raw-session-id-{:032x}", rand::random::<u128>());
    app.login(&id).await;
    assert_eq!(app.get("/page", Some(&id)).await.status, StatusCode::OK);

    let key = SessionKey::from_id(&id);
    let expected = format!("{}{}", store.prefix(), key.to_hex());
    assert_eq!(store.redis_key(&key), expected);
    // The session, and the shard of the due index that lists it for the announcement sweep.
    let due = store.due_key(&key);
    assert!(
        due.starts_with(&format!("{}due:{{", store.prefix())),
        "{due}"
    );
    let mut keys = vec![expected.clone(), due.clone()];
    keys.sort();
    assert_eq!(keys_under(store.prefix()).await, keys);

    let mut connection = inspector().await;
    let listed: Vec<String> = connection.zrange(&due, 0, -1).await.expect("ZRANGE");
    assert_eq!(
        listed,
        vec![key.to_hex()],
        "listed by its key, never its id"
    );
    let fields: std::collections::HashMap<String, String> =
        connection.hgetall(&expected).await.expect("HGETALL");
    assert!(!fields.is_empty());
    for (field, value) in &fields {
        assert!(
            !field.contains(&id) && !value.contains(&id),
            "{field}={value}"
        );
    }
    // Active: the deadline (the idle timeout from now, by the app's clock) plus the retention.
    let ttl: i64 = connection.pttl(&expected).await.expect("PTTL");
    let most = (IDLE + tower_session_timeout::DEFAULT_TOMBSTONE_RETENTION).as_millis() as i64;
    assert!(
        ttl > most - 5_000 && ttl <= most,
        "ttl {ttl} ms, expected about {most} ms"
    );

    // Signed out: only the retention is left.
    app.get("/logout", Some(&id)).await;
    let ttl: i64 = connection.pttl(&expected).await.expect("PTTL");
    let most = tower_session_timeout::DEFAULT_TOMBSTONE_RETENTION.as_millis() as i64;
    assert!(
        ttl > most - 5_000 && ttl <= most,
        "ttl {ttl} ms, expected about {most} ms"
    );
}

#[tokio::test]
async fn unknown_ids_write_nothing_and_purge_is_left_to_ttls() {
    let store = store("unknown").await;
    let now = start();
    for i in 0..20 {
        let key = fresh_key(&format!("probe{i}"));
        let check = within(store.check(&key, now, &policy(), Touch::Refresh))
            .await
            .unwrap();
        assert_eq!(check, Check::Expired(ExpiryReason::Unknown));
        assert!(!within(store.end(&key, now, &policy())).await.unwrap());
    }
    assert!(keys_under(store.prefix()).await.is_empty());
    assert_eq!(within(store.purge(now)).await.unwrap(), 0);
}

#[tokio::test]
async fn tombstone_ttl_runs_from_the_deadline() {
    let store = store("tombstone-ttl").await;
    let key = fresh_key("tombstone-ttl");
    let t0 = start();
    within(store.begin(
        &key,
        t0,
        &policy(),
        tower_session_timeout::store::NewSession::plain(),
    ))
    .await
    .unwrap();
    // Found expired 10 s after its deadline: 20 of the 30 s retention are left.
    let late = t0.saturating_add(IDLE + Duration::from_secs(10));
    let check = within(store.check(&key, late, &policy(), Touch::Refresh))
        .await
        .unwrap();
    assert_eq!(check, Check::Retired(ExpiryReason::Idle));
    let mut connection = inspector().await;
    let ttl: i64 = connection.pttl(store.redis_key(&key)).await.expect("PTTL");
    assert!((15_000..=20_000).contains(&ttl), "ttl {ttl} ms");

    // Found after its retention: nothing is kept at all.
    let other = fresh_key("tombstone-gone");
    within(store.begin(
        &other,
        t0,
        &policy(),
        tower_session_timeout::store::NewSession::plain(),
    ))
    .await
    .unwrap();
    let gone = t0.saturating_add(IDLE + RETENTION);
    let check = within(store.check(&other, gone, &policy(), Touch::Refresh))
        .await
        .unwrap();
    assert_eq!(check, Check::Expired(ExpiryReason::Unknown));
    let exists: bool = connection
        .exists(store.redis_key(&other))
        .await
        .expect("EXISTS");
    assert!(!exists);
}

#[tokio::test]
async fn malformed_records_are_store_errors() {
    let store = store("corrupt").await;
    let mut connection = inspector().await;
    let now = start();

    let string_key = fresh_key("corrupt-string");
    // Short-lived, so a failing run leaves nothing behind in the shared Redis.
    let _: () = connection
        .set_ex(store.redis_key(&string_key), "x", 60)
        .await
        .expect("SET");
    let hash_key = fresh_key("corrupt-hash");
    let _: () = connection
        .hset(store.redis_key(&hash_key), "c", "soon")
        .await
        .expect("HSET");
    let _: () = connection
        .expire(store.redis_key(&hash_key), 60)
        .await
        .expect("EXPIRE");

    // The script's account of what is wrong reaches the error (and so the log) as it is.
    for (key, detail) in [
        (string_key, "a string where a session hash was expected"),
        (hash_key, "unexpected fields in the session hash"),
    ] {
        let check = within(store.check(&key, now, &policy(), Touch::Refresh)).await;
        assert!(
            matches!(&check, Err(StoreError::CorruptRecord(text)) if text == detail),
            "{check:?}"
        );
        let owner = within(store.owner_of(&key, now, &policy())).await;
        assert!(
            matches!(&owner, Err(StoreError::CorruptRecord(text)) if text == detail),
            "{owner:?}"
        );
        let begin = within(store.begin(
            &key,
            now,
            &policy(),
            tower_session_timeout::store::NewSession::plain(),
        ))
        .await;
        assert!(
            matches!(begin, Err(StoreError::CorruptRecord(_))),
            "{begin:?}"
        );
        let _: () = connection.del(store.redis_key(&key)).await.expect("DEL");
    }
}

async fn get_json(app: &TestApp<RedisStore>, id: &str) -> (StatusCode, String) {
    let request = Request::get("/page")
        .header(COOKIE, format!("id={id}"))
        .header(ACCEPT, "application/json")
        .body(Empty::new())
        .unwrap();
    let answer = within(app.send(request)).await;
    (answer.status, answer.text().to_owned())
}

#[tokio::test]
async fn two_instances_share_activity_expiry_and_sign_out() {
    let store = store("two-instances").await;
    let clock = ManualClock::new();
    let a = app_with_store(store.clone(), clock.clone(), |builder| builder);
    let b = app_with_store(store.clone(), clock.clone(), |builder| builder);

    // Begun on A, active on B.
    let id = "shared-session";
    within(a.login(id)).await;
    assert_eq!(
        within(b.get("/page", Some(id))).await.status,
        StatusCode::OK
    );

    // Activity on A every 40 s keeps it alive on B well past one idle timeout.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(40));
        assert_eq!(
            within(a.get("/page", Some(id))).await.status,
            StatusCode::OK
        );
    }
    clock.advance(Duration::from_secs(40));
    assert_eq!(
        within(b.get("/page", Some(id))).await.status,
        StatusCode::OK
    );

    // Idle on both: expired on B is expired on A, with the reason.
    clock.advance(IDLE);
    let (status, body) = get_json(&b, id).await;
    assert_eq!(status.as_u16(), 440);
    assert!(body.contains("idle"), "{body}");
    let (status, body) = get_json(&a, id).await;
    assert_eq!(status.as_u16(), 440);
    assert!(body.contains("idle"), "{body}");
    let calls = a.calls() + b.calls();
    // A login on either instance cannot revive it.
    within(
        a.send(
            Request::get(format!("/login?id={id}"))
                .body(Empty::new())
                .unwrap(),
        ),
    )
    .await;
    assert_eq!(within(b.get("/page", Some(id))).await.status.as_u16(), 440);
    assert_eq!(
        a.calls() + b.calls(),
        calls + 1,
        "only the login reached an inner service"
    );

    // Sign-out on B is seen on A.
    let other = "signed-out-session";
    within(a.login(other)).await;
    assert_eq!(
        within(a.get("/page", Some(other))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        within(b.get("/logout", Some(other))).await.status,
        StatusCode::OK
    );
    let (status, body) = get_json(&a, other).await;
    assert_eq!(status.as_u16(), 440);
    assert!(body.contains("ended"), "{body}");
}

/// One request's life: when it left, when its answer came, and the answer.
struct Sent {
    instance: char,
    sent: Instant,
    received: Instant,
    status: StatusCode,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_race_at_the_idle_deadline_never_answers_200_after_440() {
    let store = store("race").await;
    let mut saw_expiry = 0;
    for round in 0..8 {
        // Instance A's clock reads 1 ms before the idle deadline, B's reads the deadline: A's
        // requests would refresh the session, B's find it expired. Redis orders them; whatever
        // order it picks, once a 440 has been answered no later request may get 200.
        let a_clock = ManualClock::new();
        let a = app_with_store(store.clone(), a_clock.clone(), |builder| builder);
        let b_clock = ManualClock::new();
        let b = app_with_store(store.clone(), b_clock.clone(), |builder| builder);
        let id = format!("race-{round}-{:016x}", rand::random::<u64>());
        within(a.login(&id)).await;
        a_clock.advance(IDLE - Duration::from_millis(1));
        b_clock.advance(IDLE);

        let go = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for worker in 0..16 {
            let (instance, service) = if worker % 2 == 0 {
                ('a', a.service.clone())
            } else {
                ('b', b.service.clone())
            };
            let id = id.clone();
            let go = go.clone();
            tasks.push(tokio::spawn(async move {
                while !go.load(Ordering::Acquire) {
                    tokio::task::yield_now().await;
                }
                let mut answers = Vec::new();
                for _ in 0..8 {
                    let request = Request::get("/page")
                        .header(COOKIE, format!("id={id}"))
                        .body(Empty::new())
                        .unwrap();
                    let mut service = service.clone();
                    let sent = Instant::now();
                    let ready = service.ready().await.expect("infallible");
                    let response = ready.call(request).await.expect("infallible");
                    answers.push(Sent {
                        instance,
                        sent,
                        received: Instant::now(),
                        status: response.status(),
                    });
                }
                answers
            }));
        }
        go.store(true, Ordering::Release);
        let mut answers = Vec::new();
        for task in tasks {
            answers.extend(within(task).await.expect("task"));
        }
        answers.sort_by_key(|answer| answer.sent);

        for answer in &answers {
            assert!(
                answer.status == StatusCode::OK || answer.status.as_u16() == 440,
                "unexpected {} from {}",
                answer.status,
                answer.instance
            );
        }
        // In send order, nothing but 440 after the first 440.
        if let Some(first) = answers
            .iter()
            .position(|answer| answer.status.as_u16() == 440)
        {
            let revived = answers[first..]
                .iter()
                .find(|answer| answer.status == StatusCode::OK);
            assert!(
                revived.is_none(),
                "round {round}: a 200 from {} was sent after a 440",
                revived.map_or('?', |answer| answer.instance)
            );
        }
        // Sharper, for this setup: whichever request Redis runs first decides for all. One of
        // A's refreshes the session, and then every request is within the idle timeout of it;
        // one of B's retires it, and then every request finds the tombstone.
        let ok = answers
            .iter()
            .filter(|answer| answer.status == StatusCode::OK)
            .count();
        assert!(
            ok == 0 || ok == answers.len(),
            "round {round}: {ok} of {} answers were 200",
            answers.len()
        );
        if let Some(first_440) = answers
            .iter()
            .filter(|answer| answer.status.as_u16() == 440)
            .map(|answer| answer.received)
            .min()
        {
            saw_expiry += 1;
            for answer in answers.iter().filter(|answer| answer.sent > first_440) {
                assert_eq!(
                    answer.status.as_u16(),
                    440,
                    "round {round}: a request sent on {} after a 440 was answered got 200",
                    answer.instance
                );
            }
            // Expired for good, on both instances.
            assert_eq!(within(a.get("/page", Some(&id))).await.status.as_u16(), 440);
            assert_eq!(within(b.get("/page", Some(&id))).await.status.as_u16(), 440);
        } else {
            // A refreshed first, so the session lives on for both.
            assert_eq!(
                within(b.get("/page", Some(&id))).await.status,
                StatusCode::OK
            );
        }
    }
    eprintln!("{saw_expiry} of 8 rounds expired at the deadline");
}

#[tokio::test]
async fn a_redis_restart_is_answered_503_or_passed_then_survived() {
    let mut redis = OwnRedis::start();
    let store = within(RedisStore::connect(redis.url()))
        .await
        .expect("connected")
        .with_prefix(unique_prefix("restart"));
    let clock = ManualClock::new();
    let closed = app_with_store(store.clone(), clock.clone(), |builder| builder);
    let open = app_with_store(store.clone(), clock.clone(), |builder| {
        builder.fail_open(true)
    });

    within(closed.login("before")).await;
    assert_eq!(
        within(closed.get("/page", Some("before"))).await.status,
        StatusCode::OK
    );

    redis.stop();
    for _ in 0..3 {
        let calls = closed.calls();
        let answer = within(closed.get("/page", Some("before"))).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            closed.calls(),
            calls,
            "fail-closed: the inner service is not called"
        );

        let calls = open.calls();
        let answer = within(open.get("/page", Some("before"))).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "fail-open passes the request on"
        );
        assert_eq!(open.calls(), calls + 1);
    }
    // Without a session cookie the store is not asked at all.
    assert_eq!(
        within(closed.get("/page", None)).await.status,
        StatusCode::OK
    );

    redis.restart();
    // The connection comes back by itself; a new sign-in then works on the same store.
    let deadline = Instant::now() + WAIT;
    loop {
        within(closed.login("after")).await;
        if within(closed.get("/page", Some("after"))).await.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not recover after Redis restarted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        within(open.get("/page", Some("after"))).await.status,
        StatusCode::OK
    );
    // The restarted Redis kept nothing (no persistence): the old session is unknown, not 503.
    assert_eq!(
        within(closed.get("/page", Some("before")))
            .await
            .status
            .as_u16(),
        440
    );
}

/// Connecting loads the script, so a Redis that cannot run it is found at start-up, not on
/// the first request.
#[tokio::test]
async fn connecting_loads_the_script_or_fails() {
    let redis = OwnRedis::start();
    let client = redis::Client::open(redis.url()).expect("valid url");
    let mut connection = within(client.get_multiplexed_async_connection())
        .await
        .expect("connected");
    let cached = |info: String| {
        info.lines()
            .find_map(|line| line.strip_prefix("number_of_cached_scripts:"))
            .map(|count| count.trim().to_owned())
    };
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    assert_eq!(cached(info).as_deref(), Some("0"), "a fresh server");

    let _store = within(RedisStore::connect(redis.url()))
        .await
        .expect("connected");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut connection)
        .await
        .expect("INFO");
    assert_eq!(cached(info).as_deref(), Some("1"), "loaded before any call");

    // A user that may not load scripts: refused at once.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "noscript", "on", ">pw", "~*", "&*", "+@all", "-script",
        ])
        .query_async(&mut connection)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://noscript:pw@127.0.0.1:{}/0", redis.port);
    let refused = within(RedisStore::connect(url)).await;
    assert!(
        matches!(refused, Err(StoreError::Backend(_))),
        "{refused:?}"
    );
}

/// Pauses every client of `redis` for `millis` ms (`CLIENT PAUSE ... ALL`).
async fn pause(connection: &mut redis::aio::MultiplexedConnection, millis: u64) {
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(millis)
        .arg("ALL")
        .query_async(connection)
        .await
        .expect("CLIENT PAUSE");
}

/// A Redis slow to answer (here: paused 700 ms) is waited for, within the connection's
/// one-second response timeout: at start-up, where loading the script may take up to ten
/// seconds, and on a call, within the store timeout.
#[tokio::test]
async fn connecting_and_calls_wait_for_a_redis_slow_to_answer() {
    use redis::IntoConnectionInfo;

    let redis = OwnRedis::start();
    let mut inspector = within(
        redis::Client::open(redis.url())
            .expect("valid url")
            .get_multiplexed_async_connection(),
    )
    .await
    .expect("connected");
    // No handshake (no client name sent, database 0): loading the script is the first command.
    let info = redis.url().into_connection_info().expect("valid url");
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    let client = redis::Client::open(info.set_redis_settings(settings)).expect("valid info");

    pause(&mut inspector, 700).await;
    let store = within(RedisStore::from_client(client))
        .await
        .expect("connected once Redis answers");

    let key = fresh_key("slow");
    pause(&mut inspector, 700).await;
    let began = within(store.begin(
        &key,
        start(),
        &policy(),
        tower_session_timeout::store::NewSession::plain(),
    ))
    .await;
    assert!(matches!(began, Ok(Begin::Began)), "{began:?}");
}

/// Only a node that lacks the script is sent its text: any other failure of a call by hash
/// is the call's answer, not a second run of the script.
#[tokio::test]
async fn a_call_by_hash_that_fails_is_not_sent_again_as_text() {
    let redis = OwnRedis::start();
    let mut inspector = within(
        redis::Client::open(redis.url())
            .expect("valid url")
            .get_multiplexed_async_connection(),
    )
    .await
    .expect("connected");
    // A user that may load and run scripts by their text, but not by hash.
    let _: () = redis::cmd("ACL")
        .arg(&[
            "SETUSER", "nohash", "on", ">pw", "~*", "&*", "+@all", "-evalsha",
        ])
        .query_async(&mut inspector)
        .await
        .expect("ACL SETUSER");
    let url = format!("redis://nohash:pw@127.0.0.1:{}/0", redis.port);
    let store = within(RedisStore::connect(url)).await.expect("connected");
    let check = within(store.check(&fresh_key("nohash"), start(), &policy(), Touch::Refresh)).await;
    assert!(matches!(check, Err(StoreError::Backend(_))), "{check:?}");
}

/// Its `Debug` names the topology, the prefix and the timeout (and no address).
#[tokio::test]
async fn debug_names_the_topology() {
    let store = store("debug")
        .await
        .with_timeout(Duration::from_millis(1500));
    assert!(!store.is_cluster());
    let printed = format!("{store:?}");
    assert!(
        printed.starts_with(r#"RedisStore { topology: "single", prefix: "tst-test:debug:"#)
            && printed.ends_with("timeout: 1.5s, .. }"),
        "{printed}"
    );
}

/// `count` fresh keys that share one shard of the due index.
fn keys_in_one_shard(store: &RedisStore, case: &str, count: usize) -> Vec<SessionKey> {
    let first = fresh_key(case);
    let shard = store.due_key(&first);
    let mut keys = vec![first];
    keys.extend(
        (0..)
            .map(|i| fresh_key(&format!("{case}{i}")))
            .filter(|key| store.due_key(key) == shard)
            .take(count - 1),
    );
    keys
}

/// A sweep goes on in rounds until it has its limit, even when every end is in one shard
/// (its first round takes a share of the limit from each shard), never hands out more than
/// the limit, and returns once it has it.
#[tokio::test]
async fn a_sweep_rounds_up_to_its_limit_and_stops_there() {
    // A long store timeout: a sweep may go on for half of it, but has no reason to.
    let store = store("sweep-rounds")
        .await
        .with_timeout(Duration::from_secs(8));
    let keys = keys_in_one_shard(&store, "sweep-rounds", 40);
    let t0 = start();
    for key in &keys {
        within(store.begin(
            key,
            t0,
            &policy(),
            tower_session_timeout::store::NewSession::plain(),
        ))
        .await
        .unwrap();
        assert!(within(store.end(key, t0, &policy())).await.unwrap());
    }
    let now = t0.saturating_add(Duration::from_secs(1));
    let lease = Duration::from_secs(30);
    let began = Instant::now();
    let first = within(store.claim_ends(now, &policy(), 32, lease))
        .await
        .unwrap();
    let took = began.elapsed();
    assert_eq!(first.len(), 32, "the limit, from one shard");
    assert!(
        took < Duration::from_secs(2),
        "returned at its limit: {took:?}"
    );
    // And once nothing more is due.
    let began = Instant::now();
    let rest = within(store.claim_ends(now, &policy(), 32, lease))
        .await
        .unwrap();
    let took = began.elapsed();
    assert_eq!(rest.len(), 8);
    assert!(
        took < Duration::from_secs(2),
        "returned when done: {took:?}"
    );
    let mut claimed: Vec<SessionKey> = first.iter().chain(&rest).map(|end| end.key).collect();
    claimed.sort_by_key(SessionKey::to_hex);
    let mut expected = keys.clone();
    expected.sort_by_key(SessionKey::to_hex);
    assert_eq!(claimed, expected, "each end once");
}

/// A sweep starts no round after half the store timeout: a backlog is worked off over the
/// next sweeps rather than in one call the layer would time out.
#[tokio::test]
async fn a_sweep_starts_no_round_after_half_the_store_timeout() {
    let store = store("sweep-bound")
        .await
        .with_timeout(Duration::from_millis(400));
    let now = start();
    // A backlog in one shard: listings of sessions never begun, due now. With a limit of one,
    // each round takes one of them (finds it gone, drops it).
    let shard = store.due_key(&fresh_key("sweep-bound"));
    let backlog = 20_000;
    let mut add = redis::cmd("ZADD");
    add.arg(&shard);
    for _ in 0..backlog {
        add.arg(now.as_unix_millis())
            .arg(fresh_key("sweep-bound").to_hex());
    }
    let mut connection = inspector().await;
    let _: () = within(add.query_async(&mut connection))
        .await
        .expect("ZADD");
    let _: () = connection.expire(&shard, 600).await.expect("EXPIRE");

    let ends = within(store.claim_ends(now, &policy(), 1, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(ends.is_empty());
    let left: usize = connection.zcard(&shard).await.expect("ZCARD");
    assert!(
        left > 0 && left < backlog,
        "{left} of {backlog} listings left: some worked off, the rest left for later sweeps"
    );
    let _: () = connection.del(&shard).await.expect("DEL");
}

/// A sweep's first round takes a share of its limit from each shard, and its next the rest
/// from the shards that had more: thousands of ends due in one shard are handed out in two
/// rounds, well within half the store timeout, not one per round.
#[tokio::test]
async fn a_sweep_takes_a_backlog_in_one_shard_in_a_few_rounds() {
    let store = store("sweep-shares")
        .await
        .with_timeout(Duration::from_secs(1));
    let count = 5_000;
    let keys = keys_in_one_shard(&store, "sweep-shares", count);
    let t0 = start();
    // Tombstones of sessions ended at t0 (their retention, 30 s, runs to `until`), listed as
    // due then: what `end` writes, written at once.
    let until = t0.saturating_add(RETENTION).as_unix_millis();
    let mut forge = redis::pipe();
    let mut listing = redis::cmd("ZADD");
    listing.arg(store.due_key(&keys[0]));
    for key in &keys {
        forge
            .cmd("HSET")
            .arg(store.redis_key(key))
            .arg("r")
            .arg("ended")
            .arg("u")
            .arg(until)
            .ignore()
            .cmd("PEXPIRE")
            .arg(store.redis_key(key))
            .arg(600_000)
            .ignore();
        listing.arg(t0.as_unix_millis()).arg(key.to_hex());
    }
    forge
        .add_command(listing)
        .ignore()
        .cmd("PEXPIRE")
        .arg(store.due_key(&keys[0]))
        .arg(600_000)
        .ignore();
    let mut connection = inspector().await;
    let _: () = within(forge.query_async(&mut connection))
        .await
        .expect("forged");

    let now = t0.saturating_add(Duration::from_secs(1));
    let ends = within(store.claim_ends(now, &policy(), count, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(ends.len(), count, "every end, in one sweep: {}", ends.len());
    assert!(ends
        .iter()
        .all(|end| end.reason == ExpiryReason::Ended && end.at == t0));
}

/// An owner's index or a shard of the due index that is not a sorted set is reported with
/// the script's detail, never read as an empty one.
#[tokio::test]
async fn malformed_indexes_are_store_errors() {
    let store = store("corrupt-index").await;
    let mut connection = inspector().await;
    let now = start();

    let owner = "corrupt-owner";
    let _: () = connection
        .set_ex(store.owner_key(owner), "x", 60)
        .await
        .expect("SET");
    let listed = within(store.sessions_of(owner, now, &policy())).await;
    assert!(
        matches!(&listed, Err(StoreError::CorruptRecord(detail))
            if detail == "a string where an owner index was expected"),
        "{listed:?}"
    );

    let _: () = connection
        .set_ex(store.due_key(&fresh_key("corrupt-shard")), "x", 60)
        .await
        .expect("SET");
    let claimed = within(store.claim_ends(now, &policy(), 16, Duration::from_secs(30))).await;
    assert!(
        matches!(&claimed, Err(StoreError::CorruptRecord(detail))
            if detail == "a string where a due index was expected"),
        "{claimed:?}"
    );
}
