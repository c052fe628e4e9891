//! Test helpers: a real `redis-server` per test, a recording inbox, and polling.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use palaver_broker::{Control, Draft, Inbox, RedisBroker, RedisConfig};

/// The Redis Cluster harness, shared with the end-to-end tests (std only).
#[path = "../../../../tests/src/redis_cluster.rs"]
#[allow(dead_code)] // used by tests/redis_cluster.rs only
mod redis_cluster;
use palaver_protocol::{BusEvent, ClientMessageId, Envelope, PresenceState, RoomName, UserName};
use parking_lot::Mutex;
#[allow(unused_imports)] // used by tests/redis_cluster.rs only
pub use redis_cluster::{RedisCluster, key_slot};

/// A throwaway `redis-server` on a free port, with no persistence; killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port.
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts a server on `port` and waits until it answers `PING`.
    pub fn start_on(port: u16) -> Self {
        let mut server = RedisServer { port, child: None };
        server.restart();
        server
    }

    /// A port nothing listens on (for "Redis is not there yet").
    pub fn reserve() -> Self {
        RedisServer { port: free_port(), child: None }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts an empty server on the same port (stopping the current one first).
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server must be installed to run these tests (apt-get install redis-server)",
            );
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.pings() {
            assert!(Instant::now() < deadline, "redis-server on port {} did not start", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// A plain connection for inspecting the server from the test.
    pub async fn client(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .expect("valid url")
            .get_multiplexed_async_connection()
            .await
            .expect("test connection")
    }

    /// How many clients are subscribed to `room`'s channel.
    pub async fn numsub(&self, room: &str) -> i64 {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(format!("palaver:room:{{{room}}}"))
            .query_async(&mut self.client().await)
            .await
            .expect("PUBSUB NUMSUB");
        count
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("bound address").port()
}

/// An inbox that records what it is given.
#[derive(Default)]
pub struct Recorder {
    events: Mutex<Vec<Envelope>>,
    states: Mutex<Vec<bool>>,
    lost: Mutex<Vec<RoomName>>,
    controls: Mutex<Vec<Control>>,
}

impl Inbox for Recorder {
    fn deliver(&self, envelope: Envelope) {
        self.events.lock().push(envelope);
    }

    fn lost(&self, room: &RoomName) {
        self.lost.lock().push(room.clone());
    }

    fn bus_state(&self, up: bool) {
        self.states.lock().push(up);
    }

    fn control(&self, order: Control) {
        self.controls.lock().push(order);
    }
}

impl Recorder {
    /// Every envelope so far.
    pub fn events(&self) -> Vec<Envelope> {
        self.events.lock().clone()
    }

    /// (epoch, seq) of the messages received for `room`, in arrival order.
    pub fn seqs(&self, room: &RoomName) -> Vec<(String, u64)> {
        self.events
            .lock()
            .iter()
            .filter(|e| &e.room == room)
            .filter_map(|e| match &e.event {
                BusEvent::Message { epoch, message } => Some((epoch.to_string(), message.seq)),
                _ => None,
            })
            .collect()
    }

    /// Presence events of `room`, in arrival order.
    pub fn presence(&self, room: &RoomName) -> Vec<(String, PresenceState)> {
        self.events
            .lock()
            .iter()
            .filter(|e| &e.room == room)
            .filter_map(|e| match &e.event {
                BusEvent::Presence { user, state } => Some((user.to_string(), *state)),
                _ => None,
            })
            .collect()
    }

    /// Every `lost` call so far.
    #[allow(dead_code)] // used by tests/redis_cluster.rs only
    pub fn lost(&self) -> Vec<RoomName> {
        self.lost.lock().clone()
    }

    /// Every `bus_state` call so far.
    pub fn states(&self) -> Vec<bool> {
        self.states.lock().clone()
    }

    /// Every control order received so far.
    #[allow(dead_code)] // used by tests/directory.rs only
    pub fn controls(&self) -> Vec<Control> {
        self.controls.lock().clone()
    }
}

/// One node: a broker and what its inbox received.
pub struct Node {
    /// The broker under test.
    pub broker: Arc<RedisBroker>,
    /// What the broker delivered.
    pub inbox: Arc<Recorder>,
}

/// Starts a node against `server` with test-friendly timings.
pub async fn node(server: &RedisServer, id: &str) -> Node {
    node_with(server, id, |_| {}).await
}

/// Starts a node, letting the test adjust its config.
pub async fn node_with(
    server: &RedisServer,
    id: &str,
    adjust: impl FnOnce(&mut RedisConfig),
) -> Node {
    let mut config = RedisConfig::new(server.url(), id);
    config.command_timeout = Duration::from_millis(500);
    connect(config, adjust).await
}

/// Starts a node against a Redis Cluster, letting the test adjust its config.
#[allow(dead_code)] // used by tests/redis_cluster.rs only
pub async fn cluster_node(
    cluster: &RedisCluster,
    id: &str,
    adjust: impl FnOnce(&mut RedisConfig),
) -> Node {
    let mut config = RedisConfig::new(cluster.seeds(), id);
    config.cluster = true;
    config.command_timeout = Duration::from_millis(1000);
    connect(config, adjust).await
}

/// Connects a node with a fast heartbeat, after the test's adjustments.
async fn connect(mut config: RedisConfig, adjust: impl FnOnce(&mut RedisConfig)) -> Node {
    config.heartbeat = Duration::from_millis(200);
    adjust(&mut config);
    let inbox = Arc::new(Recorder::default());
    let broker = RedisBroker::connect(config, inbox.clone()).await.expect("broker starts");
    Node { broker, inbox }
}

/// A room name known to be valid.
pub fn room(name: &str) -> RoomName {
    RoomName::parse(name).expect("valid room")
}

/// A user name known to be valid.
pub fn user(name: &str) -> UserName {
    UserName::parse(name).expect("valid user")
}

/// A message from `user_name` with client id `id`.
pub fn draft(user_name: &str, id: &str) -> Draft {
    Draft {
        id: ClientMessageId::parse(id).expect("valid id"),
        user: user(user_name),
        text: format!("text of {id}"),
        trace: None,
        witness: None,
    }
}

/// Polls `check` until it holds, or panics after `secs` seconds.
pub async fn eventually<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {secs} s waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
