//! A Redis Cluster of the test's own: `redis-server` processes on free loopback ports, in a
//! temporary directory, killed and removed when the guard drops (a panicking test included).
//! Every wait is bounded.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to form, or a replica to take over.
pub const FORM: Duration = Duration::from_secs(30);

/// How long one `redis-cli` call may take.
const CLI: Duration = Duration::from_secs(10);

/// `cluster-node-timeout`: a master silent this long is failed over, so a failover takes
/// seconds, not the default 15 s and more.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// One node of the cluster.
pub struct Node {
    pub port: u16,
    child: Option<Child>,
}

impl Node {
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the node at once (SIGKILL): a crash, not a shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A master as `CLUSTER NODES` reports it.
#[derive(Debug, Clone)]
pub struct Master {
    pub port: u16,
    pub slots: Vec<(u16, u16)>,
}

impl Master {
    pub fn serves(&self, slot: u16) -> bool {
        self.slots
            .iter()
            .any(|&(first, last)| (first..=last).contains(&slot))
    }
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    dir: PathBuf,
}

/// `count` ports free on 127.0.0.1 whose cluster bus port (+10000) is free too.
fn free_ports(count: usize) -> Vec<u16> {
    let mut held = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..200 {
        if ports.len() == count {
            break;
        }
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let port = listener.local_addr().expect("bound").port();
        let Some(bus) = port.checked_add(10000) else {
            continue;
        };
        let Ok(bus_listener) = TcpListener::bind(("127.0.0.1", bus)) else {
            continue;
        };
        // Held until all are chosen, so two picks cannot collide.
        held.push(listener);
        held.push(bus_listener);
        ports.push(port);
    }
    assert_eq!(ports.len(), count, "not enough free port pairs");
    ports
}

/// Runs `redis-cli` against `port` and returns its output, bounded by [`CLI`].
pub fn cli(port: u16, args: &[&str]) -> String {
    let mut child = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli runs");
    let deadline = Instant::now() + CLI;
    loop {
        if child.try_wait().expect("redis-cli status").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-cli {args:?} on {port} took longer than {CLI:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().expect("redis-cli output");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    text
}

impl Cluster {
    /// Starts `masters` masters with `replicas` replicas each, creates the cluster with
    /// `cluster-require-full-coverage no` (slots of a master being failed over are refused,
    /// the others keep answering), and waits until every node sees it whole.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let nonce: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("tst-cluster-{nonce:016x}"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ports = free_ports(masters * (1 + replicas));
        let mut cluster = Cluster {
            nodes: Vec::new(),
            dir,
        };
        for port in ports {
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(cluster.dir.join(format!("nodes-{port}.conf")))
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--cluster-require-full-coverage", "no"])
                // A replica may take over however long it was cut off from its master.
                .args(["--cluster-replica-validity-factor", "0"])
                .args(["--save", "", "--appendonly", "no"])
                // Replicas sync at once (the default waits 5 s for more replicas to join).
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&cluster.dir)
                .arg("--logfile")
                .arg(cluster.dir.join(format!("{port}.log")))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server runs");
            cluster.nodes.push(Node {
                port,
                child: Some(child),
            });
        }
        for node in &cluster.nodes {
            cluster.wait_for(&format!("node {} to start", node.port), || {
                cli(node.port, &["PING"]).contains("PONG")
            });
        }
        let addresses: Vec<String> = cluster.nodes.iter().map(Node::address).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        let replicas = replicas.to_string();
        create.extend(["--cluster-replicas", &replicas, "--cluster-yes"]);
        let created = cli(cluster.nodes[0].port, &create);
        assert!(
            created.contains("[OK] All 16384 slots covered"),
            "{created}"
        );
        let ports: Vec<u16> = cluster.nodes.iter().map(|node| node.port).collect();
        cluster.wait_for("every node to see the cluster whole", || {
            ports.iter().all(|&port| {
                let info = cli(port, &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", ports.len()))
            })
        });
        let replicas: usize = replicas.parse().unwrap();
        let master_ports: Vec<u16> = cluster.masters().iter().map(|m| m.port).collect();
        assert_eq!(master_ports.len(), masters);
        cluster.wait_for("every replica to finish its first sync", || {
            master_ports.iter().all(|&port| {
                let info = cli(port, &["INFO", "replication"]);
                info.matches("state=online").count() == replicas
            })
        });
        cluster
    }

    /// Waits until every replica of the master on `port` has acknowledged all its writes, so
    /// that killing it loses nothing (replication is asynchronous).
    pub fn wait_for_replicas(&self, port: u16) -> Duration {
        self.wait_for("the replicas to catch up", || {
            let info = cli(port, &["INFO", "replication"]);
            let value = |line: &str, name: &str| -> Option<u64> {
                line.split([',', ':'])
                    .find_map(|field| field.strip_prefix(name))
                    .and_then(|v| v.trim().parse().ok())
            };
            let Some(master_offset): Option<u64> = info.lines().find_map(|line| {
                line.strip_prefix("master_repl_offset:")?
                    .trim()
                    .parse()
                    .ok()
            }) else {
                return false;
            };
            let offsets: Vec<u64> = info
                .lines()
                .filter(|line| line.starts_with("slave"))
                .filter_map(|line| value(line, "offset="))
                .collect();
            !offsets.is_empty() && offsets.iter().all(|&offset| offset == master_offset)
        })
    }

    /// Waits (at most [`FORM`]) until `ready`, polling.
    pub fn wait_for(&self, what: &str, mut ready: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        loop {
            if ready() {
                return start.elapsed();
            }
            assert!(start.elapsed() < FORM, "waited {FORM:?} for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The seed URL for the store: `redis-cluster://` and the first `seeds` nodes.
    pub fn url(&self, seeds: usize) -> String {
        let hosts: Vec<String> = self.nodes.iter().take(seeds).map(Node::address).collect();
        format!("redis-cluster://{}", hosts.join(","))
    }

    /// The masters with slots, as a running node reports them (failed ones left out).
    pub fn masters(&self) -> Vec<Master> {
        let asker = self
            .nodes
            .iter()
            .find(|node| node.is_running())
            .expect("a node runs");
        cli(asker.port, &["CLUSTER", "NODES"])
            .lines()
            .filter(|line| line.contains("master") && !line.contains("fail"))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let port = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
                let slots: Vec<(u16, u16)> = fields[8..]
                    .iter()
                    .filter(|range| !range.starts_with('['))
                    .map(|range| match range.split_once('-') {
                        Some((first, last)) => (first.parse().unwrap(), last.parse().unwrap()),
                        None => {
                            let slot = range.parse().unwrap();
                            (slot, slot)
                        }
                    })
                    .collect();
                (!slots.is_empty()).then_some(Master { port, slots })
            })
            .collect()
    }

    pub fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a node of this cluster")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The cluster slot of a key without hash tags: CRC16 (XMODEM) modulo 16384, as Redis
/// computes it.
pub fn key_slot(key: &str) -> u16 {
    let mut crc: u16 = 0;
    for byte in key.bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}
