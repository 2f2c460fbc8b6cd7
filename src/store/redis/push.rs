//! The push channel of [`RedisStore`]'s near cache: every change to a session that another
//! instance's memory could not foretell is published on `<prefix>revoked` (the session key in
//! hex), and each instance with a near cache listens on its own connection and forgets that
//! session. See `store/near.rs` for what the cache may answer.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::Client;
use futures_core::Stream;

use super::{Connection, RedisStore};
use crate::store::near::{LostOnDrop, NearCache};
use crate::store::SessionKey;
use crate::StoreError;

/// How often the listener looks whether its store is still in use.
const IDLE_CHECK: Duration = Duration::from_secs(1);
/// How long a subscription must have held for the back-off to start over.
const STEADY: Duration = Duration::from_secs(10);
/// The first wait before subscribing again.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest wait between two attempts to subscribe again.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The listener's waits: [`Timing::DEFAULT`], but for tests, which shorten them.
#[derive(Debug, Clone, Copy)]
struct Timing {
    /// How long the subscription may be quiet before the listener looks whether its store is
    /// still in use, and pings it.
    idle_check: Duration,
    /// How long that ping may take.
    ping: Duration,
    /// The first wait before subscribing again, doubled after each loss up to `max_backoff`.
    first_backoff: Duration,
    /// The longest wait between two attempts to subscribe again.
    max_backoff: Duration,
    /// How long a subscription must have held for the back-off to start over.
    steady: Duration,
}

impl Timing {
    const DEFAULT: Timing = Timing {
        idle_check: IDLE_CHECK,
        ping: IDLE_CHECK,
        first_backoff: FIRST_BACKOFF,
        max_backoff: MAX_BACKOFF,
        steady: STEADY,
    };
}

impl RedisStore {
    /// The channel revocations are published on.
    pub(super) fn revoked_channel(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    /// Tells every instance's near cache that the session changed: this one's at once (a
    /// check under way is then not remembered either), the others' through the channel. A
    /// lost publish only delays the revocation on other instances by their cache's
    /// `max_age`, so a failure is logged, not returned: the change itself is done.
    pub(super) async fn publish_revoked(&self, key: &SessionKey) {
        if let Some(near) = &self.near {
            near.forget(key);
        }
        // On a cluster, PUBLISH would go to every node; the near cache is single-node only.
        if !matches!(self.connection, Connection::Single(_)) {
            return;
        }
        let mut command = ::redis::cmd("PUBLISH");
        command.arg(self.revoked_channel()).arg(key.to_hex());
        let mut connection = self.connection.clone();
        let published = tokio::time::timeout(self.timeout, connection.query::<i64>(&command)).await;
        if !matches!(published, Ok(Ok(_))) {
            tracing::warn!(
                session = %key,
                "could not publish a session's revocation; other instances' near caches keep it until their max_age"
            );
        }
    }

    /// Starts listening for revocations into `cache`, and waits (up to the store timeout)
    /// until the first subscription holds.
    pub(super) async fn listen(
        &self,
        client: Client,
        cache: &Arc<NearCache>,
    ) -> Result<(), StoreError> {
        let (subscribed, first) = tokio::sync::oneshot::channel();
        tokio::spawn(listener(
            client,
            self.revoked_channel(),
            Arc::downgrade(cache),
            subscribed,
            Timing::DEFAULT,
        ));
        match tokio::time::timeout(self.timeout, first).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(StoreError::Timeout(self.timeout)),
        }
    }
}

/// Subscribes, forgets every session a message names, and when the connection is lost (or
/// does not answer a ping after [`IDLE_CHECK`] of quiet: a connection can die without a
/// word), drops the cache and subscribes again. Ends once no store uses the cache; should it
/// end any other way (its runtime shut down), the cache stops answering. Its waits are
/// `timing`'s ([`Timing::DEFAULT`] but in tests).
async fn listener(
    client: Client,
    channel: String,
    cache: Weak<NearCache>,
    subscribed: tokio::sync::oneshot::Sender<()>,
    timing: Timing,
) {
    let _stops_answers = LostOnDrop::new(&cache);
    let mut subscribed = Some(subscribed);
    let mut backoff = timing.first_backoff;
    while cache.strong_count() > 0 {
        if let Ok(pubsub) = client.get_async_pubsub().await {
            let (mut sink, mut messages) = pubsub.split();
            if sink.subscribe(&channel).await.is_ok() {
                let Some(live) = cache.upgrade() else { return };
                live.regained();
                drop(live);
                if let Some(subscribed) = subscribed.take() {
                    let _ = subscribed.send(());
                }
                let since = std::time::Instant::now();
                loop {
                    let next = poll_fn(|cx| Pin::new(&mut messages).poll_next(cx));
                    match tokio::time::timeout(timing.idle_check, next).await {
                        Ok(Some(message)) => {
                            let Some(live) = cache.upgrade() else { return };
                            let key = message
                                .get_payload::<String>()
                                .ok()
                                .and_then(|hex| SessionKey::from_hex(&hex));
                            match key {
                                Some(key) => live.forget(&key),
                                // Not ours to read: it may have been a revocation.
                                None => {
                                    live.lost();
                                    live.regained();
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(_) if cache.strong_count() == 0 => return,
                        Err(_) => {
                            let ping = sink.ping::<::redis::Value>();
                            if !matches!(tokio::time::timeout(timing.ping, ping).await, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                // A subscription that lasted starts the back-off over; a flapping one does not.
                if since.elapsed() > timing.steady {
                    backoff = timing.first_backoff;
                }
            }
        }
        let Some(live) = cache.upgrade() else { return };
        live.lost();
        drop(live);
        tracing::warn!(
            retry_in = ?backoff,
            "near cache: revocation channel lost; every check asks the store until it is back"
        );
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(timing.max_backoff);
    }
}

#[cfg(test)]
mod tests {
    //! The listener on a `redis-server` of each test's own, whose subscription a test may
    //! kill (`CLIENT KILL TYPE pubsub`) without disturbing other tests, with waits shortened
    //! by [`Timing`]: its cache keeps answering while the store is in use and the connection
    //! answers, stops when the listener ends however it ends, and its back-off.

    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::time::Instant;

    use ::redis::aio::MultiplexedConnection;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::store::{Check, Policy, SessionRecord, Touch};
    use crate::Timestamp;

    /// Bounds every wait, so a broken listener fails a test instead of hanging it.
    const WAIT: Duration = Duration::from_secs(10);
    /// Longer than any test: a wait that never ends within one.
    const NEVER: Duration = Duration::from_secs(3600);
    const CHANNEL: &str = "tst-push:revoked";
    const T0: Timestamp = Timestamp::from_unix_millis(1_767_225_600_000);
    /// A session a test watches: once the channel is lost it is gone for good.
    const KEY: SessionKey = SessionKey::from_bytes([1; 32]);
    /// A session kept to see whether the cache keeps anything (the channel is up).
    const PROBE: SessionKey = SessionKey::from_bytes([2; 32]);

    /// A `redis-server` of the test's own on a free port, killed when dropped.
    struct OwnRedis {
        port: u16,
        child: Child,
    }

    impl OwnRedis {
        fn start() -> Self {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .expect("a free port")
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs");
            let server = OwnRedis { port, child };
            let started = Instant::now();
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(started.elapsed() < WAIT, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(20));
            }
            server
        }

        fn client(&self) -> Client {
            Client::open(format!("redis://127.0.0.1:{}/0", self.port)).expect("a valid URL")
        }

        async fn admin(&self) -> MultiplexedConnection {
            tokio::time::timeout(WAIT, self.client().get_multiplexed_async_connection())
                .await
                .expect("connected in time")
                .expect("connected")
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// Waits that never come: each test shortens the ones it looks at.
    const QUIET: Timing = Timing {
        idle_check: NEVER,
        ping: WAIT,
        first_backoff: Duration::from_millis(10),
        max_backoff: NEVER,
        steady: NEVER,
    };

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

    /// A listener on `server` feeding a new cache, once it is subscribed.
    async fn listening(server: &OwnRedis, timing: Timing) -> (Arc<NearCache>, JoinHandle<()>) {
        let cache = Arc::new(NearCache::new(NEVER, 1024));
        let (subscribed, first) = oneshot::channel();
        let task = tokio::spawn(listener(
            server.client(),
            CHANNEL.to_owned(),
            Arc::downgrade(&cache),
            subscribed,
            timing,
        ));
        tokio::time::timeout(WAIT, first)
            .await
            .expect("subscribed in time")
            .expect("subscribed");
        (cache, task)
    }

    /// Kills the listener's subscription once it is up, and returns how long after that the
    /// cache kept entries again (the listener subscribed again).
    async fn kill_subscription(admin: &mut MultiplexedConnection, cache: &NearCache) -> Duration {
        until("subscribed", || keeps(cache)).await;
        remember(cache, &KEY);
        assert!(answers(cache, &KEY));
        let killed_at = Instant::now();
        let killed: i64 = ::redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(admin)
            .await
            .expect("CLIENT KILL");
        assert_eq!(killed, 1, "the listener's one subscription");
        until("the loss noticed", || !answers(cache, &KEY)).await;
        until("subscribed again", || keeps(cache)).await;
        killed_at.elapsed()
    }

    /// How many PINGs the server has been sent.
    async fn pings(admin: &mut MultiplexedConnection) -> u64 {
        let stats: String = ::redis::cmd("INFO")
            .arg("commandstats")
            .query_async(admin)
            .await
            .expect("INFO");
        stats
            .lines()
            .find_map(|line| line.strip_prefix("cmdstat_ping:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |calls| calls.parse().expect("a count"))
    }

    #[tokio::test]
    async fn a_quiet_subscription_that_answers_pings_keeps_the_cache() {
        let server = OwnRedis::start();
        let timing = Timing {
            idle_check: Duration::from_millis(20),
            ..QUIET
        };
        let (cache, task) = listening(&server, timing).await;
        remember(&cache, &KEY);
        let mut admin = server.admin().await;
        let asked = Instant::now();
        while pings(&mut admin).await < 5 {
            assert!(asked.elapsed() < WAIT, "not pinged 5 times within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(answers(&cache, &KEY), "dropped while quiet");
        assert!(!task.is_finished());
    }

    #[tokio::test]
    async fn a_listener_ends_once_no_store_uses_its_cache() {
        let server = OwnRedis::start();
        let timing = Timing {
            idle_check: Duration::from_millis(20),
            ..QUIET
        };
        let (cache, task) = listening(&server, timing).await;
        drop(cache);
        tokio::time::timeout(WAIT, task)
            .await
            .expect("ended at its next idle check")
            .expect("no panic");
    }

    /// A store dropped before its listener first runs: nothing to subscribe for.
    #[tokio::test]
    async fn a_listener_whose_cache_is_gone_connects_to_nothing() {
        let socket = TcpListener::bind("127.0.0.1:0").expect("a free port");
        socket.set_nonblocking(true).expect("non-blocking");
        let address = socket.local_addr().expect("bound");
        let client = Client::open(format!("redis://{address}/0")).expect("a valid URL");
        let cache = Arc::new(NearCache::new(NEVER, 1024));
        let gone = Arc::downgrade(&cache);
        drop(cache);
        let (subscribed, first) = oneshot::channel();
        let listening = listener(client, CHANNEL.to_owned(), gone, subscribed, QUIET);
        tokio::time::timeout(WAIT, listening)
            .await
            .expect("ended at once");
        assert!(first.await.is_err(), "never subscribed");
        assert_eq!(
            socket.accept().map(|_| ()).map_err(|error| error.kind()),
            Err(std::io::ErrorKind::WouldBlock),
            "connected"
        );
    }

    /// However the listener ends (here its runtime shuts down), the cache stops answering:
    /// nothing would tell it of revocations any more.
    #[test]
    fn a_listener_whose_runtime_ends_stops_its_cache_answering() {
        let server = OwnRedis::start();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (cache, _task) = runtime.block_on(listening(&server, QUIET));
        remember(&cache, &KEY);
        assert!(answers(&cache, &KEY));
        drop(runtime);
        assert!(!answers(&cache, &KEY), "answered with no listener");
        assert!(!keeps(&cache), "kept with no listener");
    }

    /// A subscription lost as soon as it is made waits twice as long each time before the
    /// next (a lower bound: a loaded machine only makes it longer).
    #[tokio::test]
    async fn a_flapping_subscription_backs_off_doubling() {
        let server = OwnRedis::start();
        let first_backoff = Duration::from_millis(50);
        let timing = Timing {
            first_backoff,
            ..QUIET
        };
        let (cache, _task) = listening(&server, timing).await;
        let mut admin = server.admin().await;
        let mut backoff = first_backoff;
        for _ in 0..5 {
            let took = kill_subscription(&mut admin, &cache).await;
            assert!(
                took >= backoff,
                "subscribed again {took:?} after a loss, within the back-off of {backoff:?}"
            );
            backoff *= 2;
        }
    }

    /// After a subscription that held longer than `steady`, the next loss waits only the first
    /// back-off again, however long the back-off had grown.
    #[tokio::test]
    async fn a_subscription_that_held_starts_the_back_off_over() {
        let server = OwnRedis::start();
        let first_backoff = Duration::from_millis(10);
        let steady = Duration::from_millis(200);
        let timing = Timing {
            first_backoff,
            steady,
            ..QUIET
        };
        let (cache, _task) = listening(&server, timing).await;
        let mut admin = server.admin().await;
        // Eight quick losses: the next wait would be 2.56 s (10 ms doubled eight times).
        for _ in 0..8 {
            kill_subscription(&mut admin, &cache).await;
        }
        until("subscribed", || keeps(&cache)).await;
        tokio::time::sleep(steady * 5).await;
        let took = kill_subscription(&mut admin, &cache).await;
        assert!(
            took < Duration::from_secs(2),
            "subscribed again only {took:?} after a loss that followed a steady subscription"
        );
    }
}
