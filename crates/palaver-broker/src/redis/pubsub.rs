//! The node's one pub/sub connection: which rooms it listens to, the task
//! that keeps it connected, and the reader that feeds the inbox.
//!
//! Interest in a room is refcounted here, so the hub can subscribe once per
//! local member without caring who was first. Each room has an async gate:
//! the 0→1 `SUBSCRIBE` and the 1→0 `UNSUBSCRIBE` are sent while holding it, so
//! concurrent joins and leaves of one room are applied in order and Redis ends
//! subscribed exactly when the count is above zero. A room whose count drops
//! to zero is retired (removed from the map) before its gate is released;
//! anyone still waiting on the old gate sees that and starts over.
//!
//! One supervisor task owns the connection. It connects with exponential
//! backoff and jitter, subscribes the node-control channel (`control`),
//! re-subscribes every room with interest (holding their
//! gates, so no concurrent leave is undone), tells the inbox the bus is back,
//! then reads: each payload goes to its room's worker (`workers`), which
//! parses it as an `Envelope` and delivers it in channel order. A `PING` every heartbeat detects a connection that died
//! silently. When the connection ends the inbox is told the bus is down, and
//! the supervisor starts over.
//!
//! # On a Redis Cluster
//!
//! The bus is a RESP3 cluster connection ([`ClusterConnection`]) whose push
//! messages arrive on a channel: it keeps one connection per node, sends each
//! `SSUBSCRIBE` to the shard owning the channel's slot (following `MOVED`),
//! and after a topology refresh (a failover, a new master) re-subscribes every
//! node to the channels of the slots it now owns. Two things it cannot know:
//!
//! - When a room's slot is resharded away, the old owner ends the room's
//!   subscription (a server `SUNSUBSCRIBE` push). While the node still has
//!   interest the room is subscribed again, which lands on the new owner.
//! - Messages published while a subscription was moving were not received.
//!   So every subscription confirmation the node did not ask for itself
//!   (re-subscribed by the connection after a topology change, or restored
//!   after a migration) sends the room's members to catch up from history
//!   ([`Inbox::lost`](crate::Inbox::lost)), exactly as a dropped event does.
//!
//! A node closing its connection (a master killed) or a failed heartbeat
//! ends the bus connection like a lost single Redis: the node starts over
//! against the new topology (retrying until the replica is promoted) and
//! every member catches up.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream};
use palaver_protocol::RoomName;
use parking_lot::Mutex;
use rand::Rng;
use redis::{
    ProtocolVersion, PushInfo, PushKind, RedisResult, Value,
    aio::{PubSubSink, PubSubStream},
    cluster_async::ClusterConnection,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::timeout,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    Core, Target, connections::cluster_builder, control, keys::channel, keys::room_in_channel,
    scripts::text, stats::add,
};
use crate::broker::BrokerError;

/// How the bus connects: to one Redis, or to a Redis Cluster by its seeds.
pub(crate) enum BusClient {
    Single(redis::Client),
    Cluster { seeds: Vec<String>, timeout: Duration },
}

impl BusClient {
    /// Checks the target's URL(s); connects nothing yet.
    pub fn new(target: &Target, timeout: Duration) -> Result<Self, BrokerError> {
        match target {
            Target::Single(url) => redis::Client::open(url.as_str())
                .map(BusClient::Single)
                .map_err(|e| BrokerError::Unavailable(format!("invalid redis url: {e}"))),
            Target::Cluster(seeds) => {
                cluster_builder(seeds, timeout)
                    .build()
                    .map_err(|e| BrokerError::Unavailable(format!("invalid redis cluster: {e}")))?;
                Ok(BusClient::Cluster { seeds: seeds.clone(), timeout })
            }
        }
    }

    /// A fresh pub/sub connection: its sink and its stream.
    async fn connect(&self) -> RedisResult<(Sink, Pushes)> {
        match self {
            BusClient::Single(client) => {
                let (sink, stream) = client.get_async_pubsub().await?.split();
                Ok((Sink::Single(sink), Pushes::Single(stream)))
            }
            BusClient::Cluster { seeds, timeout } => {
                let (tx, rx) = mpsc::unbounded_channel();
                let client = cluster_builder(seeds, *timeout)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(tx)
                    .build()?;
                let conn = client.get_async_connection().await?;
                Ok((Sink::Cluster(conn), Pushes::Cluster(rx)))
            }
        }
    }
}

/// The sending half of the bus connection.
#[derive(Clone)]
pub(crate) enum Sink {
    Single(PubSubSink),
    /// Room and control channels are sharded channels here.
    Cluster(ClusterConnection),
}

impl Sink {
    /// Subscribes one channel.
    pub async fn subscribe(&self, channel: String) -> RedisResult<()> {
        match self.clone() {
            Sink::Single(mut sink) => sink.subscribe(channel).await,
            Sink::Cluster(mut conn) => conn.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&self, channel: String) -> RedisResult<()> {
        match self.clone() {
            Sink::Single(mut sink) => sink.unsubscribe(channel).await,
            Sink::Cluster(mut conn) => conn.sunsubscribe(channel).await,
        }
    }

    /// On a Cluster, every node answers (a dead master fails it).
    async fn ping(&self) -> RedisResult<()> {
        match self.clone() {
            Sink::Single(mut sink) => sink.ping::<Value>().await.map(drop),
            Sink::Cluster(mut conn) => {
                redis::cmd("PING").query_async::<Value>(&mut conn).await.map(drop)
            }
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(self, Sink::Cluster(_))
    }
}

/// The receiving half: messages (one Redis), or every push (Cluster).
enum Pushes {
    Single(PubSubStream),
    Cluster(mpsc::UnboundedReceiver<PushInfo>),
}

/// Most channels sent in one `SUBSCRIBE` when re-subscribing.
const RESUBSCRIBE_BATCH: usize = 256;

/// Local interest in rooms, and the current pub/sub connection's sink.
pub(crate) struct Bus {
    prefix: String,
    timeout: Duration,
    interests: Mutex<HashMap<RoomName, Arc<Gate>>>,
    sink: Mutex<Option<Sink>>,
    up: AtomicBool,
    /// Cluster: subscription confirmations this node asked for and has not
    /// seen yet, by channel. A confirmation not in here was sent by the
    /// connection itself (after a topology change): the room may have missed
    /// events.
    expected: Mutex<HashMap<String, u32>>,
}

/// One room's refcount behind the lock that orders its (un)subscribes.
type Gate = tokio::sync::Mutex<Interest>;

#[derive(Default)]
struct Interest {
    refs: usize,
    /// Removed from the map; a waiter must look the room up again.
    retired: bool,
}

impl Bus {
    /// No interests, not connected.
    pub fn new(prefix: String, timeout: Duration) -> Self {
        Bus {
            prefix,
            timeout,
            interests: Mutex::new(HashMap::new()),
            sink: Mutex::new(None),
            up: AtomicBool::new(false),
            expected: Mutex::new(HashMap::new()),
        }
    }

    /// Whether the connection is up with every room re-subscribed.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Rooms this node has interest in.
    pub fn rooms(&self) -> Vec<RoomName> {
        self.interests.lock().keys().cloned().collect()
    }

    fn current_sink(&self) -> Option<Sink> {
        self.sink.lock().clone()
    }

    /// Subscribes `channel`, expecting its confirmation (Cluster).
    async fn send_subscribe(&self, sink: &Sink, channel: String) -> Result<(), BrokerError> {
        let cluster = sink.is_cluster();
        if cluster {
            *self.expected.lock().entry(channel.clone()).or_default() += 1;
        }
        let result = match timeout(self.timeout, sink.subscribe(channel.clone())).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => BrokerError::Unavailable(format!("subscribe: {e}")),
            Err(_) => BrokerError::Unavailable("subscribe timed out".into()),
        };
        if cluster {
            self.confirmed(&channel);
        }
        Err(result)
    }

    /// Consumes one expected confirmation of `channel`; false if none was expected.
    fn confirmed(&self, channel: &str) -> bool {
        let mut expected = self.expected.lock();
        match expected.get_mut(channel) {
            Some(count) if *count > 1 => {
                *count -= 1;
                true
            }
            Some(_) => {
                expected.remove(channel);
                true
            }
            None => false,
        }
    }

    /// Adds one interest; the first one subscribes and returns once Redis confirmed.
    pub async fn subscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        loop {
            let gate = self.interests.lock().entry(room.clone()).or_default().clone();
            let mut interest = gate.lock().await;
            if interest.retired {
                continue;
            }
            if interest.refs > 0 {
                interest.refs += 1;
                return Ok(());
            }
            let result = match self.current_sink() {
                Some(sink) => self.send_subscribe(&sink, channel(&self.prefix, room)).await,
                None => Err(BrokerError::Unavailable("bus is down".into())),
            };
            match &result {
                Ok(()) => {
                    interest.refs = 1;
                    debug!(room = %room, "subscribed");
                }
                Err(e) => {
                    self.retire(room, &gate, &mut interest);
                    warn!(room = %room, error = %e, "subscribe failed");
                }
            }
            return result;
        }
    }

    /// Drops one interest; the last one unsubscribes.
    pub async fn unsubscribe(&self, room: &RoomName) {
        let Some(gate) = self.interests.lock().get(room).cloned() else {
            debug!(room = %room, "unsubscribe without interest");
            return;
        };
        let mut interest = gate.lock().await;
        if interest.retired || interest.refs == 0 {
            return;
        }
        interest.refs -= 1;
        if interest.refs > 0 {
            return;
        }
        // Still holding the gate: a concurrent subscribe waits, then starts
        // over with a new entry and subscribes after this unsubscribe.
        if let Some(sink) = self.current_sink() {
            match timeout(self.timeout, sink.unsubscribe(channel(&self.prefix, room))).await {
                Ok(Ok(())) => debug!(room = %room, "unsubscribed"),
                Ok(Err(e)) => warn!(room = %room, error = %e, "unsubscribe failed"),
                Err(_) => warn!(room = %room, "unsubscribe timed out"),
            }
        }
        self.retire(room, &gate, &mut interest);
    }

    fn retire(&self, room: &RoomName, gate: &Arc<Gate>, interest: &mut Interest) {
        interest.retired = true;
        let mut interests = self.interests.lock();
        if interests.get(room).is_some_and(|current| Arc::ptr_eq(current, gate)) {
            interests.remove(room);
        }
    }

    /// Subscribes `sink` to every room with interest, holding their gates
    /// until done. Returns how many rooms were subscribed.
    async fn resubscribe(&self, sink: &Sink) -> Result<usize, BrokerError> {
        let gates: Vec<(RoomName, Arc<Gate>)> =
            self.interests.lock().iter().map(|(room, gate)| (room.clone(), gate.clone())).collect();
        let mut held = Vec::with_capacity(gates.len());
        let mut channels = Vec::new();
        for (room, gate) in gates {
            let interest = gate.lock_owned().await;
            if interest.refs > 0 && !interest.retired {
                channels.push(channel(&self.prefix, &room));
            }
            held.push(interest);
        }
        let count = channels.len();
        match sink {
            Sink::Single(sink) => {
                for batch in channels.chunks(RESUBSCRIBE_BATCH) {
                    match timeout(self.timeout, sink.clone().subscribe(batch)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            return Err(BrokerError::Unavailable(format!("resubscribe: {e}")));
                        }
                        Err(_) => {
                            return Err(BrokerError::Unavailable("resubscribe timed out".into()));
                        }
                    }
                }
            }
            // One `SSUBSCRIBE` per room: each goes to its own shard.
            Sink::Cluster(_) => {
                let results: Vec<Result<(), BrokerError>> = stream::iter(channels)
                    .map(|channel| self.send_subscribe(sink, channel))
                    .buffer_unordered(RESUBSCRIBE_BATCH)
                    .collect()
                    .await;
                results.into_iter().collect::<Result<(), _>>()?;
            }
        }
        Ok(count)
    }

    /// Subscribes `room` again after its shard ended the subscription (slot
    /// migrated), retrying until it succeeds or nobody here wants the room.
    /// The confirmation is not expected, so the room catches up on arrival.
    async fn restore(&self, sink: Sink, room: RoomName) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let Some(gate) = self.interests.lock().get(&room).cloned() else { return };
            {
                let interest = gate.lock().await;
                if interest.retired || interest.refs == 0 {
                    return;
                }
                match timeout(self.timeout, sink.subscribe(channel(&self.prefix, &room))).await {
                    Ok(Ok(())) => {
                        info!(room = %room, "room re-subscribed after its slot moved");
                        return;
                    }
                    Ok(Err(e)) => warn!(room = %room, error = %e, "re-subscribing room failed"),
                    Err(_) => warn!(room = %room, "re-subscribing room timed out"),
                }
            }
            tokio::time::sleep(backoff.next()).await;
        }
    }
}

/// Why a connected session of the supervisor ended.
enum Ended {
    Shutdown,
    Lost(String),
}

/// Keeps the node's pub/sub connection up until `shutdown`. `first_attempt`
/// fires once the first connection attempt has succeeded or failed.
pub(crate) async fn supervise(
    core: Arc<Core>,
    client: BusClient,
    shutdown: CancellationToken,
    first_attempt: oneshot::Sender<()>,
) {
    let node = core.config.node_id.clone();
    let mut first_attempt = Some(first_attempt);
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    let mut connected_before = false;
    let mut failures = 0u32;
    loop {
        let attempt = tokio::select! {
            _ = shutdown.cancelled() => return,
            attempt = timeout(core.config.command_timeout, client.connect()) => attempt,
        };
        let failure = match attempt {
            Ok(Ok((sink, mut stream))) => {
                core.bus.expected.lock().clear();
                *core.bus.sink.lock() = Some(sink.clone());
                // Node-control orders reach every node, whatever its rooms.
                let limit = core.config.command_timeout;
                let subscribed = match control::subscribe(&core.config.prefix, &sink, limit).await {
                    Ok(()) => core.bus.resubscribe(&sink).await,
                    Err(e) => Err(e),
                };
                match subscribed {
                    Ok(rooms) => {
                        core.bus.up.store(true, Ordering::Release);
                        if connected_before {
                            add(&core.stats.reconnects, 1);
                        }
                        connected_before = true;
                        failures = 0;
                        backoff.reset();
                        info!(node = %node, rooms, "bus connected");
                        core.inbox.bus_state(true);
                        if let Some(tx) = first_attempt.take() {
                            let _ = tx.send(());
                        }
                        let ended = read(&core, &mut stream, sink, &shutdown).await;
                        drop(stream);
                        core.bus.up.store(false, Ordering::Release);
                        *core.bus.sink.lock() = None;
                        match ended {
                            Ended::Shutdown => return,
                            Ended::Lost(reason) => {
                                warn!(node = %node, reason = %reason, "bus connection lost");
                                core.commands.reset();
                                core.inbox.bus_state(false);
                                None
                            }
                        }
                    }
                    Err(e) => {
                        *core.bus.sink.lock() = None;
                        Some(e.to_string())
                    }
                }
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("connect timed out".to_owned()),
        };
        if let Some(tx) = first_attempt.take() {
            let _ = tx.send(());
        }
        let delay = backoff.next();
        if let Some(error) = failure {
            failures += 1;
            let retry_ms = delay.as_millis() as u64;
            // Loud once per outage, quiet while it lasts.
            if failures == 1 {
                warn!(node = %node, error = %error, retry_ms, "bus connect failed");
            } else {
                debug!(node = %node, error = %error, failures, retry_ms, "bus connect failed");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Delivers the connection's messages until it fails or `shutdown`.
async fn read(
    core: &Arc<Core>,
    stream: &mut Pushes,
    sink: Sink,
    shutdown: &CancellationToken,
) -> Ended {
    let (every, limit) = (core.config.heartbeat, core.config.command_timeout);
    let pinger = sink.clone();
    let heartbeat = async move {
        loop {
            tokio::time::sleep(every).await;
            match timeout(limit, pinger.ping()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return format!("heartbeat failed: {e}"),
                Err(_) => return "heartbeat timed out".to_owned(),
            }
        }
    };
    tokio::pin!(heartbeat);
    // Rooms being re-subscribed after a slot migration end with the connection.
    let restores = shutdown.child_token();
    let _stop_restores = restores.clone().drop_guard();
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ended::Shutdown,
            ended = next(core, stream, &sink, &restores) => if let Some(ended) = ended {
                return ended;
            },
            reason = &mut heartbeat => return Ended::Lost(reason),
        }
    }
}

/// Handles the stream's next item; `Some` when the connection ended.
async fn next(
    core: &Arc<Core>,
    stream: &mut Pushes,
    sink: &Sink,
    restores: &CancellationToken,
) -> Option<Ended> {
    let closed = || Some(Ended::Lost("connection closed".to_owned()));
    match stream {
        Pushes::Single(stream) => {
            let Some(message) = stream.next().await else { return closed() };
            deliver(core, message.get_channel_name(), message.get_payload_bytes());
            None
        }
        Pushes::Cluster(pushes) => {
            let Some(PushInfo { kind, data }) = pushes.recv().await else { return closed() };
            let channel = data.first().and_then(text);
            match (kind, channel, data.get(1)) {
                (PushKind::SMessage | PushKind::Message, Some(channel), Some(payload)) => {
                    match payload {
                        Value::BulkString(bytes) => deliver(core, channel, bytes),
                        _ => add(&core.stats.parse_errors, 1),
                    }
                }
                (PushKind::SSubscribe, Some(channel), _) if !core.bus.confirmed(channel) => {
                    // Re-subscribed behind our back: events may be missing.
                    if let Some(room) = room_of(core, channel) {
                        add(&core.stats.resubscribes, 1);
                        debug!(room = %room, "room re-subscribed by the cluster connection");
                        core.inbox.lost(&room);
                    }
                }
                (PushKind::SUnsubscribe, Some(channel), _) => {
                    if let Some(room) = room_of(core, channel) {
                        let (core, sink, stop) = (core.clone(), sink.clone(), restores.clone());
                        tokio::spawn(async move {
                            tokio::select! {
                                _ = stop.cancelled() => {}
                                _ = core.bus.restore(sink, room) => {}
                            }
                        });
                    } else if control::is_control(&core.config.prefix, channel) {
                        return Some(Ended::Lost("control channel unsubscribed".to_owned()));
                    }
                }
                // A node went away (killed master, failover): the connection
                // would only retry that node, so start over on the new topology.
                (PushKind::Disconnection, _, _) => {
                    return Some(Ended::Lost("a cluster node closed its connection".to_owned()));
                }
                _ => {}
            }
            None
        }
    }
}

/// The room of one of our room channels.
fn room_of(core: &Core, channel: &str) -> Option<RoomName> {
    RoomName::parse(room_in_channel(&core.config.prefix, channel)?).ok()
}

/// Hands one payload to the control handler or to its room's worker.
fn deliver(core: &Core, channel: &str, payload: &[u8]) {
    if control::is_control(&core.config.prefix, channel) {
        core.receive_control(payload);
    } else {
        core.workers.dispatch(channel, payload, &core.stats);
    }
}

/// Exponential backoff with jitter: each delay is drawn from the upper half
/// of a window that doubles up to `cap`, so a cluster's nodes do not all
/// reconnect in the same instant.
struct Backoff {
    base: Duration,
    cap: Duration,
    window: Duration,
}

impl Backoff {
    fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, window: base }
    }

    fn next(&mut self) -> Duration {
        let half = self.window / 2;
        let jitter = rand::rng().random_range(Duration::ZERO..=half);
        self.window = (self.window * 2).min(self.cap);
        half + jitter
    }

    fn reset(&mut self) {
        self.window = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_cap_with_jitter() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..20).map(|_| backoff.next()).collect();
        assert!(delays[0] >= Duration::from_millis(25) && delays[0] <= Duration::from_millis(50));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(5)));
        assert!(delays[19] >= Duration::from_millis(2500));
        backoff.reset();
        assert!(backoff.next() <= Duration::from_millis(50));
    }
}
