//! The push channel of [`RedisStore`]'s near cache: every change to a session that another
//! instance's memory could not foretell is published on `<prefix>revoked` (the session key in
//! hex), and each instance with a near cache listens on its own connection and forgets that
//! session. See `store/near.rs` for what the cache may answer.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::redis::aio::{PubSubSink, PubSubStream};
use ::redis::cluster_async::ClusterConnection;
use ::redis::{Client, ConnectionAddr, ConnectionInfo};
use futures_core::Stream;

use super::RedisStore;
use crate::store::listener::{self, Channel, Heard, Subscription, Timing};
use crate::store::near::NearCache;
use crate::store::SessionKey;
use crate::StoreError;

/// Where the near cache's listener subscribes.
#[derive(Clone)]
pub(super) enum Subscriber {
    /// The one Redis the store was opened on.
    Single(Client),
    /// Any node of a Redis Cluster: a publish on one node reaches every node's subscribers
    /// over the cluster bus. These seeds are where the store was opened; each subscription
    /// looks up the cluster's nodes first, and uses the seeds' settings (credentials, TLS) to
    /// connect to them.
    Cluster(Arc<[ConnectionInfo]>),
}

/// The channel `<prefix>revoked`, for the near cache's listener.
pub(crate) struct RedisChannel {
    subscriber: Subscriber,
    /// A cluster's connection, to look up its nodes; `None` on one Redis.
    cluster: Option<ClusterConnection>,
    channel: String,
    /// Bounds each attempt on one node, so a node that does not answer is passed over.
    timeout: Duration,
    /// Subscriptions begun, so that each starts at another node.
    attempts: usize,
}

impl RedisChannel {
    /// A channel on one Redis, at `client`.
    #[cfg(test)]
    pub(crate) fn single(client: Client, channel: String) -> Self {
        RedisChannel {
            subscriber: Subscriber::Single(client),
            cluster: None,
            channel,
            timeout: Duration::from_secs(1),
            attempts: 0,
        }
    }

    /// The servers to try, in turn: the one Redis, or the cluster's nodes as it reports them
    /// now (a failover moves them), and the seeds.
    async fn candidates(&mut self) -> Vec<ConnectionInfo> {
        let seeds = match &self.subscriber {
            Subscriber::Single(client) => return vec![client.get_connection_info().clone()],
            Subscriber::Cluster(seeds) => seeds.clone(),
        };
        let mut nodes = Vec::new();
        if let Some(cluster) = &mut self.cluster {
            let mut command = ::redis::cmd("CLUSTER");
            command.arg("NODES");
            let listed = command.query_async::<String>(cluster);
            if let Ok(Ok(listed)) = tokio::time::timeout(self.timeout, listed).await {
                nodes = seeds.first().map_or_else(Vec::new, |template| {
                    cluster_nodes(&listed)
                        .filter_map(|(host, port)| at(template, host, port))
                        .collect()
                });
            }
        }
        nodes.extend(seeds.iter().cloned());
        nodes
    }
}

/// The address (host, port) of each node `CLUSTER NODES` lists as reachable.
fn cluster_nodes(listed: &str) -> impl Iterator<Item = (&str, u16)> {
    listed.lines().filter_map(|line| {
        let mut fields = line.split(' ');
        let address = fields.nth(1)?;
        let flags = fields.next()?;
        let unreachable = flags
            .split(',')
            .any(|flag| matches!(flag, "fail" | "fail?" | "noaddr" | "handshake"));
        let (host, port) = address.split(['@', ',']).next()?.rsplit_once(':')?;
        (!unreachable && !host.is_empty()).then_some((host, port.parse().ok()?))
    })
}

/// `template`'s settings at another host and port; `None` for a Unix socket.
fn at(template: &ConnectionInfo, host: &str, port: u16) -> Option<ConnectionInfo> {
    let mut address = template.addr().clone();
    match &mut address {
        ConnectionAddr::Tcp(old_host, old_port)
        | ConnectionAddr::TcpTls {
            host: old_host,
            port: old_port,
            ..
        } => {
            *old_host = host.to_owned();
            *old_port = port;
        }
        _ => return None,
    }
    Some(template.clone().set_addr(address))
}

/// A subscription of [`RedisChannel`] on a pub/sub connection of its own.
pub(crate) struct RedisSubscription {
    sink: PubSubSink,
    messages: PubSubStream,
}

impl Channel for RedisChannel {
    type Subscription = RedisSubscription;

    async fn subscribe(&mut self) -> Option<RedisSubscription> {
        let candidates = self.candidates().await;
        let first = self.attempts.checked_rem(candidates.len())?;
        self.attempts = self.attempts.wrapping_add(1);
        for info in candidates[first..].iter().chain(&candidates[..first]) {
            let subscribed = async {
                let client = Client::open(info.clone()).ok()?;
                let (mut sink, messages) = client.get_async_pubsub().await.ok()?.split();
                sink.subscribe(&self.channel).await.ok()?;
                Some(RedisSubscription { sink, messages })
            };
            if let Ok(Some(subscription)) = tokio::time::timeout(self.timeout, subscribed).await {
                return Some(subscription);
            }
        }
        None
    }
}

impl Subscription for RedisSubscription {
    async fn next(&mut self) -> Heard {
        match poll_fn(|cx| Pin::new(&mut self.messages).poll_next(cx)).await {
            Some(message) => Heard::from_payload(message.get_payload::<String>().ok().as_deref()),
            None => Heard::Lost,
        }
    }

    async fn ping(&mut self) -> bool {
        self.sink.ping::<::redis::Value>().await.is_ok()
    }
}

impl RedisStore {
    /// The channel revocations are published on.
    pub(super) fn revoked_channel(&self) -> String {
        format!("{}revoked", self.prefix)
    }

    /// Forgets the session in this instance's near cache, if it has one, after a change
    /// (a check under way is then not remembered either). Other instances hear of it by the
    /// script's publish, made in the step that changed the session.
    pub(super) fn forget_near(&self, key: &SessionKey) {
        if let Some(near) = &self.near {
            near.forget(key);
        }
    }

    /// Starts listening for revocations into `cache`, and waits (up to three times the store
    /// timeout) until the first subscription holds.
    pub(super) async fn listen(
        &self,
        subscriber: Subscriber,
        cache: &Arc<NearCache>,
    ) -> Result<(), StoreError> {
        let channel = RedisChannel {
            subscriber,
            cluster: match &self.connection {
                super::Connection::Cluster(cluster) => Some(cluster.clone()),
                super::Connection::Single(_) => None,
            },
            channel: self.revoked_channel(),
            timeout: self.timeout,
            attempts: 0,
        };
        // A first candidate that does not answer may take one timeout before the next does.
        listener::start(channel, cache, Timing::DEFAULT, self.timeout * 3).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::listener::tests::a_change_made_here_is_forgotten_here_at_once;

    /// What this instance changes it forgets at once, before its own publish comes back: its
    /// cache is live but has no listener, so only that can make it forget.
    #[tokio::test]
    async fn forgets_its_own_changes_at_once() {
        let prefix = format!("tst-here:{:016x}:", rand::random::<u64>());
        let mut store = RedisStore::connect("redis://127.0.0.1:6379/0")
            .await
            .expect("Redis on 127.0.0.1:6379")
            .with_prefix(prefix);
        let cache = NearCache::new(Duration::from_secs(600), 1024);
        cache.regained();
        store.near = Some(Arc::new(cache));
        a_change_made_here_is_forgotten_here_at_once(&store).await;
    }

    /// As Redis 7 prints it: a master, a replica with a hostname, a failed master, a node
    /// still in handshake, and one with no address.
    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002,node-2.example myself,master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master,fail - 1426238317741 1426238316232 3 disconnected 10923-16383
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 handshake - 0 0 0 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 :0@0 master,noaddr - 0 0 1 disconnected
";

    #[test]
    fn cluster_nodes_lists_the_reachable_nodes_addresses() {
        let nodes: Vec<_> = cluster_nodes(NODES).collect();
        assert_eq!(nodes, [("127.0.0.1", 30004), ("127.0.0.1", 30002)]);
    }

    #[test]
    fn a_node_is_reached_with_the_seeds_settings() {
        let seed: ConnectionInfo = "redis://ada:secret@127.0.0.1:7000/0".parse().unwrap();
        let node = at(&seed, "10.0.0.2", 7001).expect("a TCP address");
        assert!(matches!(node.addr(), ConnectionAddr::Tcp(host, 7001) if host == "10.0.0.2"));
        assert_eq!(node.redis_settings().username(), Some("ada"));
        assert_eq!(node.redis_settings().password(), Some("secret"));
        let socket: ConnectionInfo = "redis+unix:///tmp/redis.sock".parse().unwrap();
        assert!(at(&socket, "10.0.0.2", 7001).is_none());
    }
}
