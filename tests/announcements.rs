//! Issue #14 through the layer: every session end reaches the async hook once, including
//! sessions no request ever comes back for; a failing hook is retried, then dropped and
//! counted. A manual clock drives deadlines; Tokio's paused clock drives the sweep.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_session_timeout::store::NewSession;
use tower_session_timeout::{
    ExpiryReason, ManualClock, MemoryStore, SessionEnd, SessionKey, SessionStore,
    SessionTimeoutBuilder, SessionTimeoutLayer, ANNOUNCE_LEASE, HOOK_ATTEMPTS,
};

const IDLE: Duration = Duration::from_secs(60);

type Heard = Arc<Mutex<Vec<SessionEnd>>>;

/// A layer whose hook writes down what it hears.
fn layer(store: &MemoryStore, clock: &ManualClock) -> (SessionTimeoutLayer<MemoryStore>, Heard) {
    let heard = Heard::default();
    let log = Arc::clone(&heard);
    let layer = builder(store, clock)
        .on_session_end(move |end| {
            let log = Arc::clone(&log);
            async move { log.lock().unwrap().push(end) }
        })
        .build()
        .expect("valid config");
    (layer, heard)
}

fn builder(store: &MemoryStore, clock: &ManualClock) -> SessionTimeoutBuilder<MemoryStore> {
    SessionTimeoutLayer::builder()
        .idle_timeout(IDLE)
        .sweep_interval(Duration::from_secs(5))
        .clock(clock.clone())
        .store(store.clone())
}

async fn sign_in(layer: &SessionTimeoutLayer<MemoryStore>, id: &str, owner: &str) -> SessionKey {
    let key = SessionKey::from_id(id);
    let new = NewSession {
        owner: Some(owner),
        timeouts: None,
    };
    layer
        .store()
        .begin(&key, layer.now(), layer.policy(), new)
        .await
        .expect("begin");
    key
}

#[tokio::test]
async fn a_session_nobody_comes_back_for_is_announced_once() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let (layer, heard) = layer(&store, &clock);
    let began = layer.now();
    let key = sign_in(&layer, "closed-laptop-session", "alice").await;
    clock.advance(IDLE - Duration::from_secs(1));
    assert_eq!(layer.announce_now().await.unwrap(), 0, "not over yet");
    clock.advance(Duration::from_secs(2));
    assert_eq!(layer.announce_now().await.unwrap(), 1);
    assert_eq!(layer.announce_now().await.unwrap(), 0, "once");
    let heard = heard.lock().unwrap().clone();
    assert_eq!(
        heard,
        vec![SessionEnd {
            key,
            owner: Some("alice".to_owned()),
            reason: ExpiryReason::Idle,
            at: began.saturating_add(IDLE),
        }]
    );
}

#[tokio::test]
async fn two_instances_announce_each_end_once() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let (one, heard_one) = layer(&store, &clock);
    let (two, heard_two) = layer(&store, &clock);
    for i in 0..50 {
        sign_in(&one, &format!("shared-session-{i:04}"), "bob").await;
    }
    clock.advance(IDLE + Duration::from_secs(1));
    let (a, b) = tokio::join!(one.announce_now(), two.announce_now());
    assert_eq!(a.unwrap() + b.unwrap(), 50);
    let total = heard_one.lock().unwrap().len() + heard_two.lock().unwrap().len();
    assert_eq!(total, 50);
}

#[tokio::test(start_paused = true)]
async fn the_spawned_announcer_sweeps_on_its_own() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let (layer, heard) = layer(&store, &clock);
    sign_in(&layer, "left-alone-session", "carol").await;
    let announcer = layer.spawn_announcer();
    clock.advance(IDLE + Duration::from_secs(1));
    // Within one sweep interval of the deadline (the sweep runs on Tokio's paused clock).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(heard.lock().unwrap().len(), 1);
    announcer.abort();
}

#[tokio::test]
async fn a_hook_that_keeps_failing_is_retried_then_dropped_and_counted() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let calls = Arc::new(Mutex::new(0u32));
    let counted = Arc::clone(&calls);
    let layer = builder(&store, &clock)
        .on_session_end(move |_end| {
            *counted.lock().unwrap() += 1;
            async { panic!("the audit database is down") }
        })
        .build()
        .unwrap();
    sign_in(&layer, "unlucky-session-id", "dave").await;
    clock.advance(IDLE + Duration::from_secs(1));
    assert_eq!(layer.announcements_dropped(), 0);
    for attempt in 1..=HOOK_ATTEMPTS {
        assert_eq!(layer.announce_now().await.unwrap(), 0);
        assert_eq!(*calls.lock().unwrap(), attempt);
        // The next attempt comes once the failed claim's lease runs out.
        assert_eq!(layer.announce_now().await.unwrap(), 0);
        assert_eq!(*calls.lock().unwrap(), attempt, "held by the lease");
        clock.advance(ANNOUNCE_LEASE);
    }
    assert_eq!(layer.announcements_dropped(), 1);
    layer.announce_now().await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        HOOK_ATTEMPTS,
        "dropped: never tried again"
    );
}

#[tokio::test]
async fn without_a_hook_nothing_is_claimed() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let layer = builder(&store, &clock).build().unwrap();
    sign_in(&layer, "unheard-session-id", "erin").await;
    clock.advance(IDLE + Duration::from_secs(1));
    assert_eq!(layer.announce_now().await.unwrap(), 0);
    // A hook added later (another instance) still hears it.
    let (with_hook, heard) = self::layer(&store, &clock);
    assert_eq!(with_hook.announce_now().await.unwrap(), 1);
    assert_eq!(heard.lock().unwrap()[0].reason, ExpiryReason::Idle);
}

/// A burst of ends larger than a batch is announced in one sweep, batch after batch.
#[tokio::test]
async fn a_burst_of_ends_is_announced_in_one_sweep() {
    let (store, clock) = (MemoryStore::new(), ManualClock::new());
    let (layer, heard) = layer(&store, &clock);
    let burst = 3 * tower_session_timeout::ANNOUNCE_BATCH + 7;
    for i in 0..burst {
        sign_in(&layer, &format!("burst-session-{i:06}"), "frank").await;
    }
    clock.advance(IDLE + Duration::from_secs(1));
    assert_eq!(layer.announce_now().await.unwrap(), burst);
    assert_eq!(heard.lock().unwrap().len(), burst);
}
