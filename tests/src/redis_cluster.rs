//! A private Redis Cluster: real `redis-server --cluster-enabled yes`
//! processes on ephemeral ports (below 55535, since each node's cluster bus
//! listens on its port + 10000), joined by `redis-cli --cluster create`, and
//! the topology changes tests need: move a slot, kill a master (its replica is
//! promoted), add a master, make a replica fall behind.
//!
//! Only `std`: the broker's own tests include this file too.

use std::{
    collections::HashMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Highest port a node may use: its bus port (+10000) must exist too.
const MAX_PORT: u16 = 55534;

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    child: Option<Child>,
}

/// A running Redis Cluster; every node is killed (and its directory removed) on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

/// A node as `CLUSTER NODES` describes it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Cluster node id.
    pub id: String,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Serves slots (else a replica).
    pub master: bool,
    /// Marked failed (or not reachable) by the cluster.
    pub failed: bool,
    /// Its master's id, for a replica.
    pub master_id: Option<String>,
}

/// A free port whose bus port is free too, both below 65535.
fn cluster_port() -> u16 {
    for _ in 0..1000 {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else { continue };
        let Ok(port) = listener.local_addr().map(|a| a.port()) else { continue };
        if port <= MAX_PORT && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free port below {MAX_PORT} with a free bus port");
}

impl RedisCluster {
    /// Starts `masters` masters with one replica each and waits until the
    /// cluster is `ok` on every node.
    pub fn start(masters: usize) -> RedisCluster {
        let dir = std::env::temp_dir().join(format!("palaver-cluster-{}", cluster_port()));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut cluster = RedisCluster { nodes: Vec::new(), dir };
        for _ in 0..masters * 2 {
            cluster.spawn_node();
        }
        let mut create = vec!["--cluster".to_owned(), "create".to_owned()];
        create.extend(cluster.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        create.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        let output = Command::new("redis-cli")
            .args(&create)
            .output()
            .expect("redis-cli must be installed (apt-get install redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        cluster.wait_ok();
        cluster.wait_formed(masters);
        cluster
    }

    fn spawn_node(&mut self) -> u16 {
        let port = cluster_port();
        let dir = self.dir.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("node dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            // Fast failover; a replica may be promoted however stale (the
            // lagging-replica tests need that, and it is what loses writes).
            .args(["--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        let start = Instant::now();
        while cli(port, &["PING"]).trim() != "PONG" {
            assert!(start.elapsed() < Duration::from_secs(10), "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        self.nodes.push(Node { port, child: Some(child) });
        port
    }

    /// Seed URLs of every live node, comma-separated (for `--redis-cluster`).
    pub fn seeds(&self) -> String {
        self.ports().iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// Ports of the nodes still running.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().filter(|n| n.child.is_some()).map(|n| n.port).collect()
    }

    /// Runs `redis-cli -p <port> args…` and returns its output.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, args)
    }

    /// The cluster as a live node sees it.
    pub fn topology(&self) -> Vec<NodeInfo> {
        for port in self.ports() {
            let nodes = cli(port, &["CLUSTER", "NODES"]);
            if nodes.lines().count() > 0 && !nodes.starts_with("ERR") {
                return parse_nodes(&nodes);
            }
        }
        panic!("no node answers CLUSTER NODES");
    }

    /// Live masters by port.
    pub fn masters(&self) -> Vec<NodeInfo> {
        self.topology().into_iter().filter(|n| n.master && !n.failed).collect()
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot(&self, key: &str) -> u16 {
        cli(self.ports()[0], &["CLUSTER", "KEYSLOT", key]).trim().parse().expect("a slot")
    }

    /// The master port serving each of the 16384 slots (`0` for none).
    pub fn slot_owners(&self) -> Vec<u16> {
        let slots = cli(self.ports()[0], &["CLUSTER", "SLOTS"]);
        let lines: Vec<&str> = slots.lines().map(str::trim).collect();
        let mut owners = vec![0u16; 16384];
        for i in 0..lines.len().saturating_sub(3) {
            if let (Ok(start), Ok(end)) = (lines[i].parse::<usize>(), lines[i + 1].parse::<usize>())
                && lines[i + 2] == "127.0.0.1"
                && start <= end
                && end < 16384
                && let Ok(port) = lines[i + 3].parse::<u16>()
            {
                owners[start..=end].fill(port);
            }
        }
        owners
    }

    /// The port of the master serving `slot`.
    pub fn owner(&self, slot: u16) -> u16 {
        for port in self.ports() {
            let slots = cli(port, &["CLUSTER", "SLOTS"]);
            if let Some(owner) = owner_in_slots(&slots, slot) {
                return owner;
            }
        }
        panic!("no owner for slot {slot}");
    }

    /// Moves `slot` (and its keys) to the master on `to`, the way
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, `MIGRATE` the
    /// keys in batches, then `SETSLOT NODE` on every master.
    pub fn move_slot(&self, slot: u16, to: u16) {
        let from = self.owner(slot);
        if from == to {
            return;
        }
        let id = |port: u16| {
            self.topology().into_iter().find(|n| n.port == port).expect("node in topology").id
        };
        let (from_id, to_id) = (id(from), id(to));
        let s = slot.to_string();
        assert_ok(cli(to, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]));
        assert_ok(cli(from, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &to_id]));
        loop {
            let keys = cli(from, &["CLUSTER", "GETKEYSINSLOT", &s, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = to.to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            let reply = cli(from, &args);
            assert!(reply.contains("OK") || reply.contains("NOKEY"), "MIGRATE: {reply}");
        }
        for master in self.masters() {
            assert_ok(cli(master.port, &["CLUSTER", "SETSLOT", &s, "NODE", &to_id]));
        }
        self.wait_ok();
    }

    /// Kills the master on `port` (SIGKILL) and waits until another node
    /// serves its slots (its replica promoted) and the cluster is `ok`.
    pub fn kill_master(&mut self, port: u16) {
        let slot = self.any_slot_of(port);
        self.kill(port);
        let start = Instant::now();
        loop {
            if self.ports().iter().all(|p| {
                let slots = cli(*p, &["CLUSTER", "SLOTS"]);
                owner_in_slots(&slots, slot).is_some_and(|owner| owner != port)
            }) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no failover of {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_ok();
    }

    /// Kills the node on `port` (SIGKILL) without waiting for anything.
    pub fn kill(&mut self, port: u16) {
        let node = self.nodes.iter_mut().find(|n| n.port == port).expect("a node of ours");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Cuts the master on `port` from its replica so the replica falls behind:
    /// the master requires a password from now on (connections already open,
    /// the cluster bus and gossip are unaffected) and drops its replica
    /// connections, so the replica cannot resynchronise. Writes acknowledged
    /// from now on exist only on the master.
    pub fn detach_replica(&self, port: u16) {
        assert_ok(cli(port, &["CONFIG", "SET", "requirepass", "cut-off"]));
        let _ = cli_auth(port, "cut-off", &["CLIENT", "KILL", "TYPE", "replica"]);
    }

    /// Waits until every replica of the master on `port` has acknowledged
    /// its whole replication stream (`INFO replication` offsets).
    pub fn wait_replicated(&self, port: u16) {
        let start = Instant::now();
        loop {
            let info = cli(port, &["INFO", "replication"]);
            let offset = info.lines().find_map(|l| l.trim().strip_prefix("master_repl_offset:"));
            let replicas: Vec<&str> = info
                .lines()
                .filter(|l| l.starts_with("slave"))
                .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("offset=")))
                .collect();
            if !replicas.is_empty() && replicas.iter().all(|r| Some(r.trim()) == offset) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "replica behind: {info}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a new empty master, joins it to the cluster and returns its port.
    pub fn add_master(&mut self) -> u16 {
        let port = self.spawn_node();
        let existing = self.ports().into_iter().find(|p| *p != port).expect("a live node");
        let output = Command::new("redis-cli")
            .args(["--cluster", "add-node", &format!("127.0.0.1:{port}")])
            .arg(format!("127.0.0.1:{existing}"))
            .output()
            .expect("redis-cli");
        assert!(output.status.success(), "add-node: {}", String::from_utf8_lossy(&output.stdout));
        let start = Instant::now();
        while !self.masters().iter().any(|m| m.port == port) {
            assert!(start.elapsed() < Duration::from_secs(20), "new master not seen");
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_ok();
        port
    }

    /// `INFO commandstats` of the node on `port`: calls that succeeded, by
    /// command (lower case). Failed calls are left out: an `EVALSHA` that
    /// meets `NOSCRIPT` (every publish in flight before a master first has
    /// the script, however many the machine's speed lets pile up) is sent
    /// again after `SCRIPT LOAD`, so only the second one ran the script.
    pub fn command_calls(&self, port: u16) -> HashMap<String, u64> {
        cli(port, &["INFO", "commandstats"])
            .lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let field = |key: &str| -> Option<u64> {
                    rest.split(',').find_map(|f| f.strip_prefix(key))?.parse().ok()
                };
                let calls = field("calls=")?;
                let failed = field("failed_calls=").unwrap_or(0);
                Some((name.to_owned(), calls.saturating_sub(failed)))
            })
            .collect()
    }

    fn any_slot_of(&self, port: u16) -> u16 {
        let other = self.ports().into_iter().find(|p| *p != port).expect("another node");
        let slots = cli(other, &["CLUSTER", "SLOTS"]);
        (0..16384).step_by(16).find(|s| owner_in_slots(&slots, *s) == Some(port)).expect("a slot")
    }

    /// Waits until every node sees `masters` masters, each with its replica:
    /// `--cluster create` attaches the replicas after assigning the slots, so
    /// for a moment they are empty masters (a test picking rooms "on every
    /// master" then, or resharding to one, would pick a replica).
    fn wait_formed(&self, masters: usize) {
        let start = Instant::now();
        loop {
            let formed = self.ports().iter().all(|p| {
                let nodes = parse_nodes(&cli(*p, &["CLUSTER", "NODES"]));
                let (m, r): (Vec<_>, Vec<_>) = nodes.iter().partition(|n| n.master);
                m.len() == masters && r.len() == masters && r.iter().all(|n| n.master_id.is_some())
            });
            if formed {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "replicas not attached");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until every live node reports `cluster_state:ok` and agrees on
    /// the owner of every slot.
    pub fn wait_ok(&self) {
        let start = Instant::now();
        loop {
            let states: Vec<String> =
                self.ports().iter().map(|p| cli(*p, &["CLUSTER", "INFO"])).collect();
            let slots: Vec<String> = self
                .ports()
                .iter()
                .map(|p| {
                    let mut lines: Vec<String> =
                        cli(*p, &["CLUSTER", "SLOTS"]).lines().map(str::to_owned).collect();
                    lines.sort();
                    lines.join(",")
                })
                .collect();
            let ok = states.iter().all(|s| s.contains("cluster_state:ok"));
            if ok && slots.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "cluster not ok: {states:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for port in self.ports() {
            self.kill(port);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli must be installed (apt-get install redis-tools)");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn cli_auth(port: u16, password: &str, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--no-auth-warning", "-a", password])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn assert_ok(reply: String) {
    assert!(reply.trim() == "OK", "expected OK, got {reply:?}");
}

/// The slot of `key` as Redis Cluster computes it: CRC16 (XMODEM) of the
/// hash tag (the first non-empty `{…}`) or of the whole key, mod 16384.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|b| *b == b'{').and_then(|open| {
        let close = bytes[open + 1..].iter().position(|b| *b == b'}')?;
        (close > 0).then(|| &bytes[open + 1..open + 1 + close])
    });
    let mut crc: u16 = 0;
    for byte in tagged.unwrap_or(bytes) {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc % 16384
}

/// Parses `CLUSTER NODES`.
fn parse_nodes(text: &str) -> Vec<NodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (id, addr, flags, master) =
                (fields.first()?, fields.get(1)?, fields.get(2)?, fields.get(3)?);
            let port = addr.split('@').next()?.rsplit(':').next()?.parse().ok()?;
            Some(NodeInfo {
                id: (*id).to_owned(),
                port,
                master: flags.contains("master"),
                failed: flags.contains("fail") || flags.contains("noaddr"),
                master_id: (*master != "-").then(|| (*master).to_owned()),
            })
        })
        .collect()
}

/// The master port serving `slot` in `redis-cli CLUSTER SLOTS` output (one
/// value per line: start, end, then per node ip, port, id, [metadata]).
fn owner_in_slots(text: &str, slot: u16) -> Option<u16> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut i = 0;
    while i + 3 < lines.len() {
        if let (Ok(start), Ok(end)) = (lines[i].parse::<u16>(), lines[i + 1].parse::<u16>())
            && lines[i + 2] == "127.0.0.1"
            && (start..=end).contains(&slot)
        {
            return lines[i + 3].parse().ok();
        }
        i += 1;
    }
    None
}
