//! The receive side's workers: the pub/sub reader only reads; parsing and
//! the hub's fan-out run on a fixed set of workers, one per core, each owning
//! the rooms whose channel hashes to it.
//!
//! With fan-out inline on the reader, a gateway in cluster mode fanned out on
//! one core, and one big room's fan-out delayed every other room's delivery.
//! A room always goes to the same worker, so its events keep channel order.
//! A worker whose queue is full does not block the reader: the event is
//! dropped, counted, and the room handed to [`Inbox::lost`], which sends its
//! members back to history (a gap, never a silent loss).

use std::{
    hash::{BuildHasher, RandomState},
    sync::Arc,
};

use palaver_protocol::{Envelope, RoomName};
use tokio::{sync::mpsc, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{keys::room_in_channel, stats::RedisStats, stats::add};
use crate::broker::Inbox;

/// Events waiting per worker before the next one is dropped as a gap.
const QUEUE: usize = 8192;

/// One bus event as read off the connection.
struct Raw {
    channel: String,
    payload: Vec<u8>,
}

/// The workers' queues; dropping it ends the workers once they drain.
pub(crate) struct Workers {
    queues: Box<[mpsc::Sender<Raw>]>,
    hasher: RandomState,
    prefix: String,
    inbox: Arc<dyn Inbox>,
}

/// What a worker needs, shared.
struct Shared {
    prefix: String,
    inbox: Arc<dyn Inbox>,
    stats: Arc<RedisStats>,
}

impl Workers {
    /// Starts `count` workers (at least one) on `tasks`; they stop on `shutdown`.
    pub fn start(
        count: usize,
        prefix: &str,
        inbox: Arc<dyn Inbox>,
        stats: Arc<RedisStats>,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Workers {
        let shared = Arc::new(Shared { prefix: prefix.to_owned(), inbox: inbox.clone(), stats });
        let queues = (0..count.max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(QUEUE);
                tasks.spawn(work(shared.clone(), rx, shutdown.clone()));
                tx
            })
            .collect();
        Workers { queues, hasher: RandomState::new(), prefix: prefix.to_owned(), inbox }
    }

    /// Hands one event to its room's worker. Never waits.
    pub fn dispatch(&self, channel: &str, payload: &[u8], stats: &RedisStats) {
        let index = self.hasher.hash_one(channel) as usize % self.queues.len();
        let raw = Raw { channel: channel.to_owned(), payload: payload.to_vec() };
        if self.queues[index].try_send(raw).is_err() {
            add(&stats.delivery_overflows, 1);
            match room_in_channel(&self.prefix, channel).map(RoomName::parse) {
                Some(Ok(room)) => {
                    warn!(room = %room, "delivery worker overloaded; members resync from history");
                    self.inbox.lost(&room);
                }
                _ => add(&stats.parse_errors, 1),
            }
        }
    }
}

async fn work(shared: Arc<Shared>, mut queue: mpsc::Receiver<Raw>, shutdown: CancellationToken) {
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => return,
            next = queue.recv() => next,
        };
        let Some(Raw { channel, payload }) = next else { return };
        match serde_json::from_slice::<Envelope>(&payload) {
            Ok(envelope)
                if room_in_channel(&shared.prefix, &channel) == Some(envelope.room.as_str()) =>
            {
                add(&shared.stats.delivered, 1);
                shared.inbox.deliver(envelope);
            }
            Ok(envelope) => {
                add(&shared.stats.parse_errors, 1);
                warn!(channel, room = %envelope.room, "dropped envelope for another room");
            }
            Err(e) => {
                add(&shared.stats.parse_errors, 1);
                warn!(channel, error = %e, "dropped unparsable bus payload");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use palaver_protocol::{BusEvent, PresenceState, UserName};

    use super::*;

    /// An inbox whose deliveries wait on a gate the test holds.
    struct Stuck {
        gate: parking_lot::Mutex<()>,
        delivered: AtomicUsize,
        lost: parking_lot::Mutex<Vec<RoomName>>,
    }

    impl Inbox for Stuck {
        fn deliver(&self, _envelope: Envelope) {
            let _wait = self.gate.lock();
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
        fn lost(&self, room: &RoomName) {
            self.lost.lock().push(room.clone());
        }
        fn bus_state(&self, _up: bool) {}
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_worker_reports_the_room_lost_and_delivers_what_it_queued() {
        let inbox = Arc::new(Stuck {
            gate: parking_lot::Mutex::new(()),
            delivered: AtomicUsize::new(0),
            lost: parking_lot::Mutex::new(Vec::new()),
        });
        let stats = Arc::new(RedisStats::default());
        let mut tasks = JoinSet::new();
        let shutdown = CancellationToken::new();
        let workers = Workers::start(1, "p", inbox.clone(), stats.clone(), &mut tasks, &shutdown);
        let room = RoomName::parse("lobby").expect("valid");
        let payload = Envelope {
            room: room.clone(),
            event: BusEvent::Presence {
                user: UserName::parse("ann").expect("valid"),
                state: PresenceState::Typing,
            },
            trace: None,
        }
        .to_json();
        let gate = inbox.gate.lock();
        let sent = QUEUE + 50;
        for _ in 0..sent {
            workers.dispatch("p:room:{lobby}", payload.as_bytes(), &stats);
        }
        let overflowed = stats.snapshot().delivery_overflows as usize;
        assert!(overflowed >= 49, "{overflowed} overflowed");
        assert_eq!(inbox.lost.lock().len(), overflowed);
        assert!(inbox.lost.lock().iter().all(|r| *r == room));
        drop(gate);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while inbox.delivered.load(Ordering::Relaxed) < sent - overflowed {
            assert!(std::time::Instant::now() < deadline, "queued events not delivered");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}
