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

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use palaver_protocol::RoomName;
use parking_lot::Mutex;
use rand::Rng;
use redis::{
    Value,
    aio::{PubSubSink, PubSubStream},
};
use tokio::{sync::oneshot, time::timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Core, control, keys::channel, stats::add};
use crate::broker::BrokerError;

/// Most channels sent in one `SUBSCRIBE` when re-subscribing.
const RESUBSCRIBE_BATCH: usize = 256;

/// Local interest in rooms, and the current pub/sub connection's sink.
pub(crate) struct Bus {
    prefix: String,
    timeout: Duration,
    interests: Mutex<HashMap<RoomName, Arc<Gate>>>,
    sink: Mutex<Option<PubSubSink>>,
    up: AtomicBool,
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

    fn current_sink(&self) -> Option<PubSubSink> {
        self.sink.lock().clone()
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
                Some(mut sink) => {
                    match timeout(self.timeout, sink.subscribe(channel(&self.prefix, room))).await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(e)) => Err(BrokerError::Unavailable(format!("subscribe: {e}"))),
                        Err(_) => Err(BrokerError::Unavailable("subscribe timed out".into())),
                    }
                }
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
        if let Some(mut sink) = self.current_sink() {
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
    async fn resubscribe(&self, sink: &PubSubSink) -> Result<usize, BrokerError> {
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
        for batch in channels.chunks(RESUBSCRIBE_BATCH) {
            match timeout(self.timeout, sink.clone().subscribe(batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(BrokerError::Unavailable(format!("resubscribe: {e}"))),
                Err(_) => return Err(BrokerError::Unavailable("resubscribe timed out".into())),
            }
        }
        Ok(channels.len())
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
    client: redis::Client,
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
            attempt = timeout(core.config.command_timeout, client.get_async_pubsub()) => attempt,
        };
        let failure = match attempt {
            Ok(Ok(pubsub)) => {
                let (sink, mut stream) = pubsub.split();
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
    core: &Core,
    stream: &mut PubSubStream,
    mut sink: PubSubSink,
    shutdown: &CancellationToken,
) -> Ended {
    let (every, limit) = (core.config.heartbeat, core.config.command_timeout);
    let heartbeat = async move {
        loop {
            tokio::time::sleep(every).await;
            match timeout(limit, sink.ping::<Value>()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("heartbeat failed: {e}"),
                Err(_) => return "heartbeat timed out".to_owned(),
            }
        }
    };
    tokio::pin!(heartbeat);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ended::Shutdown,
            message = stream.next() => match message {
                Some(message) => {
                    let channel = message.get_channel_name();
                    if control::is_control(&core.config.prefix, channel) {
                        core.receive_control(message.get_payload_bytes());
                    } else {
                        core.workers.dispatch(channel, message.get_payload_bytes(), &core.stats);
                    }
                }
                None => return Ended::Lost("connection closed".to_owned()),
            },
            reason = &mut heartbeat => return Ended::Lost(reason),
        }
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
