//! The listener on each store's real channel (Redis on 127.0.0.1:6379, PostgreSQL on
//! 127.0.0.1:5432, a channel of each test's own), reached through a [`Relay`] the test can cut
//! (a lost connection) or freeze (a connection that no longer answers), with the waits
//! shortened by [`Timing`]: its cache keeps answering while the store is in use and the
//! connection answers, it forgets what it is told, it stops answering when the listener
//! ends however it ends, and its back-off.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use super::*;
use crate::store::{
    Check, NewSession, Policy, SessionRecord, SessionStore, SessionTimeouts, Touch,
};
use crate::Timestamp;

/// Bounds every wait, so a broken listener fails a test instead of hanging it.
const WAIT: Duration = Duration::from_secs(10);
/// Longer than any test: a wait that never ends within one.
const NEVER: Duration = Duration::from_secs(3600);
const T0: Timestamp = Timestamp::from_unix_millis(1_767_225_600_000);
/// A session a test watches: once the channel is lost it is gone for good.
const KEY: SessionKey = SessionKey::from_bytes([1; 32]);
/// A session kept to see whether the cache keeps anything (the channel is up).
const PROBE: SessionKey = SessionKey::from_bytes([2; 32]);

/// Waits that never come: each test shortens the ones it looks at.
const QUIET: Timing = Timing {
    idle_check: NEVER,
    ping: WAIT,
    first_backoff: Duration::from_millis(10),
    max_backoff: NEVER,
    steady: NEVER,
    log_every: NEVER,
};

/// A server whose channel the listener subscribes to.
trait Server {
    type Channel: Channel;

    /// The server's address.
    fn address(&self) -> SocketAddr;

    /// The test's channel on the server reached at `port` on loopback.
    fn channel(&self, port: u16) -> Self::Channel;

    /// Pushes `payload` on the test's channel, on a connection of its own.
    async fn push(&self, payload: &str);
}

#[cfg(feature = "redis")]
struct Redis(String);

#[cfg(feature = "redis")]
impl Redis {
    fn new() -> Self {
        Redis(format!(
            "tst-listener:{:016x}:revoked",
            rand::random::<u64>()
        ))
    }
}

#[cfg(feature = "redis")]
impl Server for Redis {
    type Channel = crate::store::redis::RedisChannel;

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 6379))
    }

    fn channel(&self, port: u16) -> Self::Channel {
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/0"));
        crate::store::redis::RedisChannel::single(client.expect("a valid URL"), self.0.clone())
    }

    async fn push(&self, payload: &str) {
        let client = ::redis::Client::open("redis://127.0.0.1:6379/0").expect("a valid URL");
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis on 127.0.0.1:6379");
        let _: i64 = ::redis::cmd("PUBLISH")
            .arg(&self.0)
            .arg(payload)
            .query_async(&mut connection)
            .await
            .expect("PUBLISH");
    }
}

#[cfg(feature = "postgres")]
struct Postgres(String);

#[cfg(feature = "postgres")]
impl Postgres {
    fn new() -> Self {
        Postgres(format!(
            "tst_listener_{:016x}_revoked",
            rand::random::<u64>()
        ))
    }

    fn options(port: u16) -> sqlx::postgres::PgConnectOptions {
        sqlx::postgres::PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .database("postgres")
            // The startup message is then the client's first request (no TLS request first).
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
    }
}

#[cfg(feature = "postgres")]
impl Server for Postgres {
    type Channel = crate::store::postgres::PgChannel;

    fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 5432))
    }

    fn channel(&self, port: u16) -> Self::Channel {
        let timeout = Duration::from_secs(1);
        crate::store::postgres::PgChannel::new(Self::options(port), self.0.clone(), timeout)
    }

    async fn push(&self, payload: &str) {
        let mut connection = sqlx::ConnectOptions::connect(&Self::options(5432))
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&self.0)
            .bind(payload)
            .execute(&mut connection)
            .await
            .expect("NOTIFY");
    }
}

/// A TCP relay on a free loopback port to a server, whose connections a test can cut or
/// freeze.
struct Relay {
    port: u16,
    links: Arc<Mutex<Vec<Link>>>,
    accepted: Arc<AtomicUsize>,
    /// Whether connections accepted from now on stall after the client's first request.
    stalling: Arc<std::sync::atomic::AtomicBool>,
    accepting: JoinHandle<()>,
}

/// One relayed connection; dropping it closes both sides.
struct Link {
    frozen: watch::Sender<bool>,
    _pipes: JoinSet<()>,
}

impl Relay {
    async fn start(to: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a free port");
        let port = listener.local_addr().expect("bound").port();
        let links = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let stalling = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let accepting = tokio::spawn({
            let (links, accepted, stalling) = (links.clone(), accepted.clone(), stalling.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let Ok(server) = TcpStream::connect(to).await else {
                        continue;
                    };
                    let (frozen, thawed) = watch::channel(false);
                    let stalls = stalling.load(Ordering::SeqCst);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut pipes = JoinSet::new();
                    pipes.spawn(pipe(client_read, server_write, thawed.clone(), stalls));
                    pipes.spawn(pipe(server_read, client_write, thawed, false));
                    let link = Link {
                        frozen,
                        _pipes: pipes,
                    };
                    links.lock().unwrap().push(link);
                }
            }
        });
        Relay {
            port,
            links,
            accepted,
            stalling,
            accepting,
        }
    }

    /// Closes every connection open now; returns how many there were.
    fn cut(&self) -> usize {
        self.links.lock().unwrap().drain(..).count()
    }

    /// Stops forwarding anything on the connections open now, without closing them: the
    /// two ends wait in silence. Later connections are relayed.
    fn freeze(&self) {
        for link in self.links.lock().unwrap().iter() {
            link.frozen.send_replace(true);
        }
    }

    /// Makes every connection accepted from now on pass the client's first request (its
    /// handshake) and the server's answers, and hold whatever the client sends after it: a
    /// server that stops answering once connected.
    fn stall_new_after_first_request(&self) {
        self.stalling.store(true, Ordering::SeqCst);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Forwards what `from` sends to `to`, holding it while frozen, and for good after the first
/// read when `first_only`.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
    first_only: bool,
) {
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if frozen.wait_for(|frozen| !frozen).await.is_err()
            || to.write_all(&buffer[..read]).await.is_err()
        {
            return;
        }
        if first_only {
            // Both halves stay open: the connection is up, and says nothing more.
            return std::future::pending().await;
        }
    }
}

/// A channel whose subscriptions count the pings their server answered.
struct Counted<C> {
    channel: C,
    pings: Arc<AtomicUsize>,
}

struct CountedSubscription<S> {
    subscription: S,
    pings: Arc<AtomicUsize>,
}

impl<C: Channel> Channel for Counted<C> {
    type Subscription = CountedSubscription<C::Subscription>;

    async fn subscribe(&mut self) -> Option<Self::Subscription> {
        let subscription = self.channel.subscribe().await?;
        let pings = self.pings.clone();
        Some(CountedSubscription {
            subscription,
            pings,
        })
    }
}

impl<S: Subscription> Subscription for CountedSubscription<S> {
    async fn next(&mut self) -> Heard {
        self.subscription.next().await
    }

    async fn ping(&mut self) -> bool {
        let answered = self.subscription.ping().await;
        if answered {
            self.pings.fetch_add(1, Ordering::SeqCst);
        }
        answered
    }
}

fn policy() -> Policy {
    Policy::new(Duration::from_secs(60), None, None, Duration::from_secs(60))
}

/// Gives the cache the store's answer "active" for `key`; kept only while the channel is up.
fn remember(cache: &NearCache, key: &SessionKey) {
    let active = Check::Active(SessionRecord::new(T0, T0));
    cache.remember(key, &active, cache.ticket());
}

fn answers(cache: &NearCache, key: &SessionKey) -> bool {
    cache.answer(key, T0, &policy(), Touch::Passive).is_some()
}

/// Whether the cache keeps what it is given, that is whether the channel is up.
fn keeps(cache: &NearCache) -> bool {
    remember(cache, &PROBE);
    answers(cache, &PROBE)
}

async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let asked = Instant::now();
    while !ready() {
        assert!(asked.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A listener of `channel` feeding a new cache, once it is subscribed.
async fn listening<C: Channel>(channel: C, timing: Timing) -> (Arc<NearCache>, JoinHandle<()>) {
    let cache = Arc::new(NearCache::new(NEVER, 1024));
    let (subscribed, first) = oneshot::channel();
    let task = tokio::spawn(listen(channel, Arc::downgrade(&cache), subscribed, timing));
    tokio::time::timeout(WAIT, first)
        .await
        .expect("subscribed in time")
        .expect("subscribed");
    (cache, task)
}

/// Cuts the listener's connection once it is up, and returns how long after that the cache
/// kept entries again (the listener subscribed again).
async fn cut_subscription(relay: &Relay, cache: &NearCache) -> Duration {
    until("subscribed", || keeps(cache)).await;
    remember(cache, &KEY);
    assert!(answers(cache, &KEY));
    let cut_at = Instant::now();
    assert_eq!(relay.cut(), 1, "the listener's one connection");
    until("the loss noticed", || !answers(cache, &KEY)).await;
    until("subscribed again", || keeps(cache)).await;
    cut_at.elapsed()
}

async fn a_quiet_subscription_that_answers_pings_keeps_the_cache(server: impl Server) {
    let timing = Timing {
        idle_check: Duration::from_millis(20),
        ..QUIET
    };
    let pings = Arc::new(AtomicUsize::new(0));
    let channel = Counted {
        channel: server.channel(server.address().port()),
        pings: pings.clone(),
    };
    let (cache, task) = listening(channel, timing).await;
    remember(&cache, &KEY);
    until("5 pings answered", || pings.load(Ordering::SeqCst) >= 5).await;
    assert!(answers(&cache, &KEY), "dropped while quiet");
    assert!(!task.is_finished());
}

async fn a_connection_that_stops_answering_is_given_up(server: impl Server) {
    let relay = Relay::start(server.address()).await;
    let timing = Timing {
        idle_check: Duration::from_millis(20),
        ping: Duration::from_millis(50),
        ..QUIET
    };
    let (cache, _task) = listening(server.channel(relay.port), timing).await;
    remember(&cache, &KEY);
    relay.freeze();
    until("the silence noticed", || !answers(&cache, &KEY)).await;
    until("subscribed again on a new connection", || keeps(&cache)).await;
    assert_eq!(relay.accepted(), 2);
}

async fn a_message_forgets_its_session_and_an_unreadable_one_everything(server: impl Server) {
    let (cache, _task) = listening(server.channel(server.address().port()), QUIET).await;
    remember(&cache, &KEY);
    remember(&cache, &PROBE);
    server.push(&KEY.to_hex()).await;
    until("the session forgotten", || !answers(&cache, &KEY)).await;
    assert!(answers(&cache, &PROBE), "forgot another session");
    remember(&cache, &KEY);
    server.push("not a session key").await;
    until("everything forgotten", || !answers(&cache, &PROBE)).await;
    assert!(!answers(&cache, &KEY));
    assert!(keeps(&cache), "the channel is still up");
}

async fn a_listener_ends_once_no_store_uses_its_cache(server: impl Server) {
    let timing = Timing {
        idle_check: Duration::from_millis(20),
        ..QUIET
    };
    let (cache, task) = listening(server.channel(server.address().port()), timing).await;
    drop(cache);
    tokio::time::timeout(WAIT, task)
        .await
        .expect("ended at its next idle check")
        .expect("no panic");
}

/// `start` answers once the first subscription holds, and a timeout if none does in time.
async fn start_waits_for_the_first_subscription(server: impl Server) {
    let cache = Arc::new(NearCache::new(NEVER, 1024));
    let channel = server.channel(server.address().port());
    start(channel, &cache, QUIET, WAIT)
        .await
        .expect("subscribed");
    assert!(keeps(&cache), "answered before the channel was up");

    // A port nothing listens on: the listener keeps trying, `start` gives up.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = closed.local_addr().expect("bound").port();
    drop(closed);
    let cache = Arc::new(NearCache::new(NEVER, 1024));
    let within = Duration::from_millis(200);
    let started = start(server.channel(port), &cache, QUIET, within).await;
    assert!(
        matches!(started, Err(StoreError::Timeout(timeout)) if timeout == within),
        "{started:?}"
    );
    assert!(!keeps(&cache));
}

/// A server that answers the handshake and then says nothing, not even to the subscription:
/// each attempt to subscribe gives up (the channel's own bound, a second here), so the
/// listener tries again and notices a store that is gone.
async fn a_server_that_never_answers_holds_no_attempt_up(server: impl Server) {
    let relay = Relay::start(server.address()).await;
    relay.stall_new_after_first_request();
    let mut channel = server.channel(relay.port);
    let attempt = tokio::time::timeout(WAIT, channel.subscribe()).await;
    assert!(matches!(attempt, Ok(None)), "not given up in time");
    assert!(relay.accepted() >= 1, "never connected");
}

/// A store dropped before its listener first runs: nothing to subscribe for.
async fn a_listener_whose_cache_is_gone_connects_to_nothing(server: impl Server) {
    let relay = Relay::start(server.address()).await;
    let cache = Arc::new(NearCache::new(NEVER, 1024));
    let gone = Arc::downgrade(&cache);
    drop(cache);
    let (subscribed, first) = oneshot::channel();
    let listening = listen(server.channel(relay.port), gone, subscribed, QUIET);
    tokio::time::timeout(WAIT, listening)
        .await
        .expect("ended at once");
    assert!(first.await.is_err(), "never subscribed");
    assert_eq!(relay.accepted(), 0, "connected");
}

/// However the listener ends (here its runtime shuts down), the cache stops answering:
/// nothing would tell it of revocations any more.
fn a_listener_whose_runtime_ends_stops_its_cache_answering(server: impl Server) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let channel = server.channel(server.address().port());
    let (cache, _task) = runtime.block_on(listening(channel, QUIET));
    remember(&cache, &KEY);
    assert!(answers(&cache, &KEY));
    drop(runtime);
    assert!(!answers(&cache, &KEY), "answered with no listener");
    assert!(!keeps(&cache), "kept with no listener");
}

/// A subscription lost as soon as it is made waits twice as long each time before the next
/// (a lower bound: a loaded machine only makes it longer).
async fn a_flapping_subscription_backs_off_doubling(server: impl Server) {
    let relay = Relay::start(server.address()).await;
    let first_backoff = Duration::from_millis(50);
    let timing = Timing {
        first_backoff,
        ..QUIET
    };
    let (cache, _task) = listening(server.channel(relay.port), timing).await;
    let mut backoff = first_backoff;
    for _ in 0..5 {
        let took = cut_subscription(&relay, &cache).await;
        assert!(
            took >= backoff,
            "subscribed again {took:?} after a loss, within the back-off of {backoff:?}"
        );
        backoff *= 2;
    }
}

/// A channel lost again and again, through the listener: one WARN and one INFO for the lot.
async fn a_channel_lost_again_and_again_logs_once_per_period(server: impl Server) {
    let (lines, _guard) = crate::test_logs::capture();
    let relay = Relay::start(server.address()).await;
    let (cache, _task) = listening(server.channel(relay.port), QUIET).await;
    for _ in 0..3 {
        cut_subscription(&relay, &cache).await;
    }
    assert_eq!(lines.at(LOST).len(), 1, "{:#?}", lines.at(LOST));
    let back = lines.at(BACK);
    assert_eq!(back.len(), 1, "{back:#?}");
    assert!(back[0].contains("losses=1 "), "{}", back[0]);
}

const LOST: &str = "revocation channel lost";
const BACK: &str = "revocation channel back";

/// However often the channel is lost, one WARN and one INFO per `log_every`, the WARN with
/// the losses it left out and the INFO with the losses since the last: a store down for an
/// hour would otherwise log an attempt a second.
#[test]
fn the_loss_log_writes_once_per_period_with_counts() {
    let (lines, _guard) = crate::test_logs::capture();
    let every = Duration::from_secs(10);
    let retry = Duration::from_millis(50);
    let t0 = Instant::now();
    let at = |millis: u64| t0 + Duration::from_millis(millis);
    let mut log = LossLog::default();
    log.regained(at(0), every);
    assert_eq!(lines.at(BACK).len(), 0, "nothing was lost");
    log.lost(at(0), retry, every);
    log.regained(at(100), every);
    log.lost(at(200), retry, every);
    log.regained(at(300), every);
    log.lost(at(9_999), retry, every);
    log.regained(at(10_100), every);
    assert_eq!(lines.at(LOST).len(), 1, "{:#?}", lines.at(LOST));
    let back = lines.at(BACK);
    assert_eq!(back.len(), 2, "{back:#?}");
    assert!(back[0].contains("losses=1 lasted_ms=100"), "{}", back[0]);
    // The INFO owed since 300 ms comes at the first subscription after the period.
    assert!(back[1].contains("losses=2 lasted_ms=9900"), "{}", back[1]);
    log.lost(at(10_200), retry, every);
    let lost = lines.at(LOST);
    assert_eq!(lost.len(), 2, "{lost:#?}");
    assert!(lost[0].contains("left_out=0"), "{}", lost[0]);
    assert!(lost[1].contains("left_out=2"), "{}", lost[1]);
}

/// After a subscription that held longer than `steady`, the next loss waits only the first
/// back-off again, however long the back-off had grown.
async fn a_subscription_that_held_starts_the_back_off_over(server: impl Server) {
    let relay = Relay::start(server.address()).await;
    let first_backoff = Duration::from_millis(10);
    let steady = Duration::from_millis(200);
    let timing = Timing {
        first_backoff,
        steady,
        ..QUIET
    };
    let (cache, _task) = listening(server.channel(relay.port), timing).await;
    // Eight quick losses: the next wait would be 2.56 s (10 ms doubled eight times).
    for _ in 0..8 {
        cut_subscription(&relay, &cache).await;
    }
    until("subscribed", || keeps(&cache)).await;
    tokio::time::sleep(steady * 5).await;
    let took = cut_subscription(&relay, &cache).await;
    assert!(
        took < Duration::from_secs(2),
        "subscribed again only {took:?} after a loss that followed a steady subscription"
    );
}

/// The store's own changes, forgotten by its own cache at once, before its own push comes
/// back: `store`'s cache must be live and have no listener, so only that can make it forget.
/// Ends, new timeouts, a session superseded, and a sign-out everywhere.
pub(crate) async fn a_change_made_here_is_forgotten_here_at_once(store: &impl SessionStore) {
    let policy = *crate::SessionTimeoutLayer::builder()
        .idle_timeout(Duration::from_secs(60))
        .max_sessions_per_owner(2, crate::OnLimit::EndOldest)
        .build()
        .expect("a valid policy")
        .policy();
    // Each session begins a millisecond after the one before, so "the oldest" is one.
    let at = |ms| T0.saturating_add(Duration::from_millis(ms));
    let held = |ms| async move {
        let key = SessionKey::from_id(&format!("{:032x}", rand::random::<u128>()));
        let owned = NewSession {
            owner: Some("ada"),
            timeouts: None,
        };
        store
            .begin(&key, at(ms), &policy, owned)
            .await
            .expect("begun");
        holds_again(store, &key, &policy).await;
        key
    };
    let forgotten = |key| {
        store
            .try_check(key, at(9), &policy, Touch::Passive)
            .is_none()
    };

    let ended = held(0).await;
    assert!(store.end(&ended, at(9), &policy).await.expect("ended"));
    assert!(forgotten(&ended), "end");

    let retimed = held(1).await;
    let short = SessionTimeouts::new(Duration::from_secs(10));
    let set = store.set_timeouts(&retimed, at(9), &policy, short).await;
    assert!(set.expect("set"));
    assert!(forgotten(&retimed), "new timeouts");
    holds_again(store, &retimed, &policy).await;

    // "ada" has `retimed` and `kept`; a third session supersedes the older.
    let kept = held(2).await;
    let newest = held(3).await;
    assert!(forgotten(&retimed), "superseded");

    let ended = store.end_sessions_of("ada", Some(&newest), at(9), &policy);
    assert_eq!(ended.await.expect("ended"), 1);
    assert!(forgotten(&kept), "sign-out everywhere");
    assert!(!forgotten(&newest), "the session kept");
}

/// Checks `key` in the store and asserts its cache holds it after.
async fn holds_again(store: &impl SessionStore, key: &SessionKey, policy: &Policy) {
    let now = T0.saturating_add(Duration::from_millis(9));
    let check = store.check(key, now, policy, Touch::Passive).await;
    assert!(matches!(check, Ok(Check::Active(_))), "{check:?}");
    let held = store.try_check(key, now, policy, Touch::Passive);
    assert!(held.is_some(), "not held");
}

/// Each case above on `$server`, in a module `$store`; a test's channel is its own.
macro_rules! on_server {
    ($feature:literal, $store:ident, $server:ident) => {
        #[cfg(feature = $feature)]
        mod $store {
            use super::*;

            on_server!(@async $server:
                a_quiet_subscription_that_answers_pings_keeps_the_cache,
                a_connection_that_stops_answering_is_given_up,
                a_message_forgets_its_session_and_an_unreadable_one_everything,
                a_listener_ends_once_no_store_uses_its_cache,
                start_waits_for_the_first_subscription,
                a_server_that_never_answers_holds_no_attempt_up,
                a_listener_whose_cache_is_gone_connects_to_nothing,
                a_flapping_subscription_backs_off_doubling,
                a_subscription_that_held_starts_the_back_off_over,
                a_channel_lost_again_and_again_logs_once_per_period,
            );

            #[test]
            fn a_listener_whose_runtime_ends_stops_its_cache_answering() {
                super::a_listener_whose_runtime_ends_stops_its_cache_answering($server::new());
            }
        }
    };
    (@async $server:ident: $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                super::$case($server::new()).await;
            }
        )*
    };
}

on_server!("redis", redis, Redis);
on_server!("postgres", postgres, Postgres);
