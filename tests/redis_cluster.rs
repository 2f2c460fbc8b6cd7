#![cfg(feature = "redis")]
//! `RedisStore` on a real Redis Cluster of the test's own (3 masters and 3 replicas from the
//! machine's `redis-server`, on free loopback ports, `cluster-node-timeout` 1 s,
//! `cluster-require-full-coverage no`): two layer instances sharing it, sessions on every
//! master, a master killed under load and its replica promoted, owners whose sessions and
//! index sit in different slots (the store, owner and Redis owner suites, and end-all racing
//! with requests and sign-ins on three instances), every session end announced once with the
//! due index's shards on every master (the announce suite and the Redis due index cases), and
//! the demo on `redis-cluster://`, and the near cache: a revocation published on one master
//! reaches a listener subscribed on another node, and a listener whose node dies subscribes
//! on another.
//!
//! Prints the measured 503 window of the failover (`cargo test --all-features --test
//! redis_cluster -- --nocapture`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::app::{app_with_store, TestApp, IDLE};
use common::cluster::{cli, key_slot, Cluster, FORM};
use common::demo_binary;
use common::near_cache::{seen_active, until_forgotten, MAX_AGE};
use common::store_suite::{self, fresh_key, start};
use http::header::COOKIE;
use http::{Request, StatusCode};
use http_body_util::Empty;
use tower::ServiceExt;
use tower_session_timeout::store::{Begin, Check, NewSession, SessionKey, SessionStore, Touch};
use tower_session_timeout::{ExpiryReason, ManualClock, OnLimit, RedisStore};

/// Bounds every single request.
const WAIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(WAIT, future)
        .await
        .expect("answered in time")
}

async fn store(url: &str, prefix: &str) -> RedisStore {
    within(RedisStore::open(url))
        .await
        .expect("the cluster is reachable")
        .with_prefix(prefix)
}

/// One session of the test: its id, and the master port its key's slot lives on.
#[derive(Clone)]
struct Session {
    id: String,
    master: u16,
    /// Left idle before the failover, so it has expired when the master dies.
    expiring: bool,
}

/// Sends `GET /page` for every session at once, alternating instances, and returns each
/// status in order.
async fn round(apps: &[&TestApp<RedisStore>; 2], sessions: &[Session]) -> Vec<StatusCode> {
    let mut tasks = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let service = apps[i % 2].service.clone();
        let request = Request::get("/page")
            .header(COOKIE, format!("id={}", session.id))
            .body(Empty::new())
            .unwrap();
        tasks.push(tokio::spawn(async move {
            within(service.oneshot(request))
                .await
                .expect("infallible")
                .status()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.expect("request task"));
    }
    statuses
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_over_masters_and_survive_a_failover() {
    let mut cluster = Cluster::start(3, 1);
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{masters:?}");

    // Two instances, each with its own connection, sharing one clock and one prefix.
    let prefix = format!("tst-cluster:{:016x}:", rand::random::<u64>());
    let clock = ManualClock::new();
    let a_store = store(&cluster.url(2), &prefix).await;
    let b_store = store(
        &format!("redis-cluster://{}", cluster.nodes[5].address()),
        &prefix,
    )
    .await;
    assert!(a_store.is_cluster() && b_store.is_cluster());
    // The store loaded its script on every master when it connected.
    for master in &masters {
        let memory = cli(master.port, &["INFO", "memory"]);
        assert!(
            memory.contains("number_of_cached_scripts:1"),
            "master {}: {memory}",
            master.port
        );
    }
    // The slot function here is Redis's own.
    let probe = a_store.redis_key(&SessionKey::from_id("probe"));
    assert_eq!(
        cli(masters[0].port, &["CLUSTER", "KEYSLOT", &probe]).trim(),
        key_slot(&probe).to_string()
    );
    let a = app_with_store(a_store.clone(), clock.clone(), |builder| builder);
    let b = app_with_store(b_store, clock.clone(), |builder| builder);
    let apps = [&a, &b];

    // Sessions begun on either instance, until every master holds at least 8 of them.
    let mut sessions = Vec::new();
    for i in 0..400 {
        let per_master = |port: u16| {
            sessions
                .iter()
                .filter(|s: &&Session| s.master == port)
                .count()
        };
        if masters.iter().all(|master| per_master(master.port) >= 8) {
            break;
        }
        let id = format!("cluster-{i}-{:016x}", rand::random::<u64>());
        let slot = key_slot(&a_store.redis_key(&SessionKey::from_id(&id)));
        let master = masters
            .iter()
            .find(|m| m.serves(slot))
            .expect("a master")
            .port;
        if per_master(master) >= 8 {
            continue;
        }
        within(apps[i % 2].login(&id)).await;
        let expiring = per_master(master) % 2 == 1;
        sessions.push(Session {
            id,
            master,
            expiring,
        });
    }
    assert_eq!(sessions.len(), 24, "8 sessions on each master");
    for master in &masters {
        let keys = cli(master.port, &["DBSIZE"]);
        assert!(keys.trim().parse::<u32>().unwrap() >= 8, "{keys}");
    }
    // Active on both instances.
    for statuses in [
        round(&apps, &sessions).await,
        round(&[&b, &a], &sessions).await,
    ] {
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
    }

    // Half the sessions are left idle; the others stay in use.
    clock.advance(IDLE - Duration::from_secs(2));
    let active: Vec<Session> = sessions.iter().filter(|s| !s.expiring).cloned().collect();
    let statuses = round(&apps, &active).await;
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );

    // Kill the master of the first sessions; the idle half is now past its deadline.
    // Replication is asynchronous: wait until the replica has the last refreshes, as this
    // test is about the failover, not about what a master takes with it (the docs say).
    let dead = masters[0].port;
    cluster.wait_for_replicas(dead);
    cluster.node_mut(dead).kill();
    let killed = Instant::now();
    clock.advance(Duration::from_secs(3));

    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut last_503: Option<Duration> = None;
    let mut first_all_ok: Option<Duration> = None;
    let mut rounds_all_ok = 0;
    while rounds_all_ok < 5 {
        assert!(
            killed.elapsed() < FORM,
            "the dead master's sessions did not answer again within {FORM:?}: {outcomes:?}"
        );
        let statuses = round(&apps, &sessions).await;
        let at = killed.elapsed();
        let mut all_ok = true;
        for (session, status) in sessions.iter().zip(&statuses) {
            let on_dead = session.master == dead;
            let kind = match (session.expiring, on_dead, status.as_u16()) {
                (true, _, 200) => panic!("an expired session answered 200 at {at:?}"),
                (true, _, 440) => "expired: 440",
                (true, _, 503) => "expired, dead master: 503",
                (false, false, 200) => "other masters: 200",
                (false, false, other) => {
                    panic!("a session on a live master answered {other} at {at:?}")
                }
                (false, true, 200) => "dead master: 200",
                (false, true, 503) => {
                    all_ok = false;
                    last_503 = Some(at);
                    "dead master: 503"
                }
                (_, _, other) => {
                    let answer = within(a.get_json(&session.id)).await;
                    panic!("unexpected {other} at {at:?}: {}", answer.text())
                }
            };
            *outcomes.entry(kind).or_default() += 1;
        }
        if all_ok {
            first_all_ok.get_or_insert(at);
            rounds_all_ok += 1;
        } else {
            assert!(
                first_all_ok.is_none(),
                "503 again at {at:?} after every session answered at {first_all_ok:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "failover: dead master's sessions answered 503 until {last_503:?}, all 200 from {first_all_ok:?} after the kill; {outcomes:?}"
    );
    assert!(
        outcomes.contains_key("dead master: 503"),
        "fail-closed while the master was down: {outcomes:?}"
    );
    assert!(outcomes.contains_key("other masters: 200"));

    // A replica took over the dead master's slots.
    let after = cluster.masters();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.iter().all(|master| master.port != dead));
    // Expired sessions stay expired on the new master, on both instances.
    let expired: Vec<Session> = sessions.iter().filter(|s| s.expiring).cloned().collect();
    for statuses in [
        round(&apps, &expired).await,
        round(&[&b, &a], &expired).await,
    ] {
        assert!(statuses.iter().all(|s| s.as_u16() == 440), "{statuses:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_work_across_slots() {
    let cluster = Cluster::start(3, 1);
    let masters = cluster.masters();
    let prefix = format!("tst-cluster-owners:{:016x}:", rand::random::<u64>());
    // Three instances, each with its own connection, from different seeds.
    let mut stores = Vec::new();
    for seed in [0, 2, 4] {
        let url = format!("redis-cluster://{}", cluster.nodes[seed].address());
        stores.push(store(&url, &prefix).await);
    }
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| format!("redis://{}", node.address()))
        .collect();
    let inspector = within(
        redis::cluster::ClusterClient::new(seeds)
            .expect("cluster client")
            .get_async_connection(),
    )
    .await
    .expect("inspector connected");

    // An owner's sessions and its index land on several masters: every owner operation here
    // crosses slots, which one multi-key script could not (CROSSSLOT).
    let master_of = |key: &str| {
        let slot = key_slot(key);
        masters
            .iter()
            .find(|master| master.serves(slot))
            .expect("a master")
            .port
    };
    let owner = format!("owner-{:016x}@example.com", rand::random::<u64>());
    let policy = common::store_suite::policy();
    let t0 = common::store_suite::start();
    let mut sessions = Vec::new();
    for i in 0..9u64 {
        let key = SessionKey::from_id(&format!("cluster-owner-{i}-{:016x}", rand::random::<u64>()));
        let new = NewSession {
            owner: Some(&owner),
            timeouts: None,
        };
        let now = t0.saturating_add(Duration::from_millis(i));
        let began = within(stores[i as usize % 3].begin(&key, now, &policy, new)).await;
        assert_eq!(began.expect("begin"), Begin::Began);
        sessions.push(key);
    }
    let used: BTreeSet<u16> = sessions
        .iter()
        .map(|key| master_of(&stores[0].redis_key(key)))
        .chain([master_of(&stores[0].owner_key(&owner))])
        .collect();
    assert!(used.len() >= 2, "nine sessions and an index on one master");
    let after = t0.saturating_add(Duration::from_secs(1));
    let listed = within(stores[1].sessions_of(&owner, after, &policy))
        .await
        .expect("sessions_of");
    assert_eq!(
        listed.iter().map(|session| session.key).collect::<Vec<_>>(),
        sessions
    );
    let ended = within(stores[2].end_sessions_of(&owner, Some(&sessions[4]), after, &policy))
        .await
        .expect("end_sessions_of");
    assert_eq!(ended, 8);
    let listed = within(stores[0].sessions_of(&owner, after, &policy))
        .await
        .expect("sessions_of");
    assert_eq!(
        listed.iter().map(|session| session.key).collect::<Vec<_>>(),
        vec![sessions[4]]
    );

    common::store_suite::run(stores[0].clone()).await;
    common::owner_suite::run(stores[1].clone()).await;
    common::redis_owners::run(&stores, inspector).await;
    common::redis_owners::end_all_races_with_requests_and_sign_ins(&stores, 10).await;
    common::owner_races::end_all_races_requests_and_sign_ins(&stores, 4).await;
    common::owner_races::limited_sign_ins_race(&stores, 3, OnLimit::Refuse, 2).await;
    common::owner_races::limited_sign_ins_race(&stores, 3, OnLimit::EndOldest, 2).await;
}

/// Every session end announced once on a cluster: the due index's shards spread over the
/// masters, most sessions listed on another master than their own key's, and two instances
/// (from different seeds) running the announce suite and the Redis due index cases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_session_ends_across_slots() {
    let cluster = Cluster::start(3, 1);
    let masters = cluster.masters();
    let prefix = format!("tst-cluster-announce:{:016x}:", rand::random::<u64>());
    let mut stores = Vec::new();
    for seed in [0, 4] {
        let url = format!("redis-cluster://{}", cluster.nodes[seed].address());
        stores.push(store(&url, &prefix).await);
    }
    let master_of = |key: &str| {
        let slot = key_slot(key);
        masters
            .iter()
            .find(|master| master.serves(slot))
            .expect("a master")
            .port
    };
    let probes: Vec<SessionKey> = (0..64)
        .map(|i| SessionKey::from_id(&format!("announce-probe-{i}")))
        .collect();
    let shards: BTreeSet<String> = probes.iter().map(|key| stores[0].due_key(key)).collect();
    assert_eq!(shards.len(), 16, "{shards:?}");
    let shard_masters: BTreeSet<u16> = shards.iter().map(|shard| master_of(shard)).collect();
    assert_eq!(shard_masters.len(), 3, "the due index on every master");
    let split = probes
        .iter()
        .filter(|key| master_of(&stores[0].redis_key(key)) != master_of(&stores[0].due_key(key)))
        .count();
    assert!(
        split >= 16,
        "{split} of 64 sessions listed on another master"
    );

    common::announce_suite::run(stores[0].clone(), stores[1].clone()).await;
    let seeds: Vec<String> = cluster
        .nodes
        .iter()
        .map(|node| format!("redis://{}", node.address()))
        .collect();
    let inspector = within(
        redis::cluster::ClusterClient::new(seeds)
            .expect("cluster client")
            .get_async_connection(),
    )
    .await
    .expect("inspector connected");
    common::redis_announce::run(&stores, inspector).await;
}

/// The reference model on a cluster: owners' indexes and their sessions in different slots,
/// asked directly, then as the layer asks (memory first) with the near cache on. `TST_LONG=1`
/// runs it for as many cases as the model test runs each store.
#[test]
fn matches_the_model_on_a_cluster() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let cluster = Cluster::start(3, 0);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let prefix = format!("tst-cluster-model:{:016x}:", rand::random::<u64>());
    let store = runtime.block_on(store(&cluster.url(3), &prefix));
    // A prefix (and so a channel) of its own: the first run's pushes would cancel remembers.
    let near_prefix = format!("tst-cluster-model-near:{:016x}:", rand::random::<u64>());
    let near = runtime.block_on(async {
        let near = self::store(&cluster.url(3), &near_prefix).await;
        within(near.with_near_cache(MAX_AGE, 10_000))
            .await
            .expect("subscribed")
    });
    let cases = (
        common::model::policy(),
        prop::collection::vec(common::model::op(), 1..60),
        common::model::start(),
    );
    let config = Config {
        cases: common::long::cases(32),
        ..Config::default()
    };
    let outcome = TestRunner::new(config.clone()).run(&cases, |(policy, ops, start)| {
        runtime.block_on(common::model::run(
            &store,
            &policy,
            start,
            &ops,
            rand::random(),
        ))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    let near = common::via_cache::ViaCache(near);
    let outcome = TestRunner::new(config).run(&cases, |(policy, ops, start)| {
        runtime.block_on(common::model::run(
            &near,
            &policy,
            start,
            &ops,
            rand::random(),
        ))
    });
    if let Err(failure) = outcome {
        panic!("near cache: {failure}");
    }
}

#[tokio::test]
async fn the_demo_runs_on_redis_cluster_urls() {
    let cluster = Cluster::start(3, 0);
    let url = cluster.url(2);
    let mut demo =
        demo_binary::start(&[("SESSION_STORE", url.as_str()), ("RUST_LOG", "off")]).await;
    let settings = within(demo.lines.next_line()).await.unwrap().unwrap();
    assert!(settings.contains("RedisCluster"), "{settings}");

    // Sign in several times, so sessions land on several masters, each usable.
    for _ in 0..12 {
        let cookie = demo_binary::sign_in(&demo.address).await;
        let dashboard = demo_binary::get(&demo.address, "/dashboard", Some(&cookie)).await;
        assert!(dashboard.starts_with("HTTP/1.1 200 OK"), "{dashboard}");
    }
    let stale = demo_binary::get(&demo.address, "/dashboard", Some("id=stale-session-id-0")).await;
    assert!(
        stale.starts_with("HTTP/1.1 440 Login Time-out\r\n"),
        "{stale}"
    );
    let keys: Vec<String> = cluster
        .nodes
        .iter()
        .flat_map(|node| {
            let keys = cli(node.port, &["KEYS", "*"]);
            keys.lines().map(str::to_owned).collect::<Vec<_>>()
        })
        .filter(|key| !key.is_empty())
        .collect();
    let indexes = keys.iter().filter(|key| key.contains(":owner:")).count();
    let due = keys.iter().filter(|key| key.contains(":due:{")).count();
    assert_eq!(
        (keys.len() - indexes - due, indexes),
        (12, 1),
        "one key per session, over the masters, and the user's index: {keys:?}"
    );
    // And the shards of the due index that list them for the announcement sweep.
    assert!((1..=12).contains(&due), "{keys:?}");
    let masters_used = cluster
        .nodes
        .iter()
        .filter(|node| cli(node.port, &["DBSIZE"]).trim() != "0")
        .count();
    assert!(masters_used >= 2, "twelve sessions on one master of three");
    demo.child.kill().await.unwrap();
}

/// The ports of the running nodes on which `channel` has a subscriber.
fn subscribed_nodes(cluster: &Cluster, channel: &str) -> Vec<u16> {
    cluster
        .nodes
        .iter()
        .filter(|node| node.is_running())
        .filter(|node| {
            let reply = cli(node.port, &["PUBSUB", "NUMSUB", channel]);
            reply.lines().nth(1).map(str::trim) != Some("0")
        })
        .map(|node| node.port)
        .collect()
}

/// A session of `store`'s whose key lives on a master other than the one on `port`.
fn key_not_on(cluster: &Cluster, store: &RedisStore, port: u16) -> SessionKey {
    let masters = cluster.masters();
    loop {
        let key = fresh_key("elsewhere");
        let slot = key_slot(&store.redis_key(&key));
        if masters.iter().any(|m| m.port != port && m.serves(slot)) {
            return key;
        }
    }
}

/// Waits (at most [`FORM`]) until `store` answers a check of `key`.
async fn until_served(store: &RedisStore, key: &SessionKey) {
    let policy = store_suite::policy();
    let asked = Instant::now();
    while !matches!(
        tokio::time::timeout(WAIT, store.check(key, start(), &policy, Touch::Passive)).await,
        Ok(Ok(_))
    ) {
        assert!(asked.elapsed() < FORM, "not served within {FORM:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Begins `key` here, has this instance's near cache hold it, ends it there, and waits until
/// here has forgotten it and Redis answers it ended.
async fn ended_elsewhere_is_forgotten_here(here: &RedisStore, there: &RedisStore, key: SessionKey) {
    let policy = store_suite::policy();
    let now = start();
    within(here.begin(&key, now, &policy, NewSession::default()))
        .await
        .expect("begun");
    seen_active(here, &key, now, &policy).await;
    assert!(within(there.end(&key, now, &policy)).await.expect("ended"));
    until_forgotten(here, &key).await;
    assert_eq!(
        within(here.check(&key, now, &policy, Touch::Passive))
            .await
            .expect("checked"),
        Check::Expired(ExpiryReason::Ended)
    );
}

// Threads of its own: `Cluster::wait_for` blocks, and the listener must go on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_caches_hear_revocations_from_every_master_and_outlive_their_node() {
    let mut cluster = Cluster::start(3, 1);
    let prefix = format!("tst-cluster:{:016x}:", rand::random::<u64>());
    let channel = format!("{prefix}revoked");
    let here = within(
        store(&cluster.url(2), &prefix)
            .await
            .with_near_cache(MAX_AGE, 1000),
    )
    .await
    .expect("subscribed on the cluster");
    let there = store(&cluster.url(6), &prefix).await;

    let nodes = subscribed_nodes(&cluster, &channel);
    assert_eq!(nodes.len(), 1, "one subscription: {nodes:?}");
    let node = nodes[0];
    // Published by the script on the key's master, heard on another node.
    let key = key_not_on(&cluster, &here, node);
    ended_elsewhere_is_forgotten_here(&here, &there, key).await;

    // The node subscribed to dies (a master's slots fail over to its replica meanwhile).
    cluster.node_mut(node).kill();
    cluster.wait_for("the listener on another node", || {
        subscribed_nodes(&cluster, &channel).len() == 1
    });
    cluster.wait_for("every slot served again", || {
        let masters = cluster.masters();
        masters.len() == 3 && masters.iter().all(|master| master.port != node)
    });
    let moved_to = subscribed_nodes(&cluster, &channel)[0];
    assert_ne!(moved_to, node);
    let key = key_not_on(&cluster, &here, moved_to);
    // Each store learns the new slot map from its first failed call.
    for store in [&here, &there] {
        until_served(store, &key).await;
    }
    ended_elsewhere_is_forgotten_here(&here, &there, key).await;
}
