//! Publishes, batched: every publish waiting when a lane frees up goes to
//! Redis in one [`PUBLISH`](super::scripts::PUBLISH) call.
//!
//! A script call has a fixed cost in Redis (the call, argument parsing, the
//! Lua entry) that was most of a message's cost when each message was its
//! own call. By default the batcher never waits to fill a batch: with a
//! lane free, a lone publish goes at once; under load, publishes queue while
//! every lane is busy and the next batch takes them all (up to
//! [`MAX_BATCH`]), so the batch size follows the load and latency does not
//! grow with it. With a linger (`publish_linger`) the first publish of a
//! batch waits that long for company: batches form at moderate rates too,
//! for that much latency.
//!
//! On a Redis Cluster a script's keys must share one slot, so a batch is
//! split by room (a room's keys share its hash tag) and the parts go out
//! concurrently, each to its shard; only messages of one room share a call.

use std::sync::Arc;

use palaver_protocol::RoomName;
use tokio::{
    sync::{Semaphore, mpsc, oneshot},
    task::JoinSet,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

use super::{
    Core,
    keys::{RoomKeys, envelope_head, message_envelope_tail},
    scripts::decode_publish_batch,
    stats::add,
};
use crate::{
    broker::{BrokerError, Draft, Published},
    util::{new_epoch, now_ms},
};

/// Most messages in one script call.
pub(crate) const MAX_BATCH: usize = 64;
/// Publishes waiting for a batch before `publish` waits for room.
const QUEUE: usize = 4096;

/// One publish waiting for its batch.
pub(crate) struct Pending {
    room: RoomName,
    draft: Draft,
    reply: oneshot::Sender<Result<Published, BrokerError>>,
}

/// The handle `publish` uses to enqueue.
pub(crate) struct Publisher {
    queue: mpsc::Sender<Pending>,
}

impl Publisher {
    /// A publisher and the receiving end for [`run`].
    pub fn new() -> (Publisher, mpsc::Receiver<Pending>) {
        let (queue, pending) = mpsc::channel(QUEUE);
        (Publisher { queue }, pending)
    }
}

impl Core {
    /// Enqueues one publish and waits for its batch's reply.
    pub(crate) async fn publish(
        &self,
        room: &RoomName,
        draft: Draft,
    ) -> Result<Published, BrokerError> {
        let (reply, replied) = oneshot::channel();
        let pending = Pending { room: room.clone(), draft, reply };
        let limit = self.config.command_timeout;
        let closed = || BrokerError::Unavailable("broker closed".into());
        match timeout(limit, self.publisher.queue.send(pending)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(closed()),
            Err(_) => return Err(BrokerError::Unavailable("too many publishes waiting".into())),
        }
        // The batch itself is bounded by the command deadline; this one only
        // covers the wait for a free lane on top of it.
        match timeout(limit * 2, replied).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(closed()),
            Err(_) => Err(BrokerError::Unavailable("publish timed out".into())),
        }
    }

    /// Sends one batch (split by room on a Cluster) and hands each publisher its reply.
    async fn publish_batch(&self, batch: Vec<Pending>) {
        if !self.sharded {
            return self.publish_call(batch).await;
        }
        let mut by_room: Vec<Vec<Pending>> = Vec::new();
        for pending in batch {
            match by_room.iter_mut().find(|group| group[0].room == pending.room) {
                Some(group) => group.push(pending),
                None => by_room.push(vec![pending]),
            }
        }
        futures_util::future::join_all(by_room.into_iter().map(|group| self.publish_call(group)))
            .await;
    }

    /// Sends one script call for `batch` and hands each publisher its reply.
    async fn publish_call(&self, batch: Vec<Pending>) {
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation
            .arg(new_epoch().as_str())
            .arg(self.config.room_ttl.as_millis() as u64)
            .arg(self.config.history_max);
        let ts = now_ms();
        for Pending { room, draft, .. } in &batch {
            let keys = RoomKeys::new(&self.config.prefix, room);
            invocation
                .key(&keys.meta)
                .key(&keys.stream)
                .key(&keys.ids)
                .arg(&keys.channel)
                .arg(envelope_head(room))
                .arg(message_envelope_tail(draft, ts))
                .arg(draft.user.as_str())
                .arg(draft.id.as_str())
                .arg(&draft.text)
                .arg(ts);
            match &draft.witness {
                Some(w) => invocation
                    .arg(w.epoch.as_str())
                    .arg(w.seq)
                    .arg(w.id.as_ref().map_or("", |id| id.as_str()))
                    .arg(w.user.as_ref().map_or("", |user| user.as_str())),
                None => invocation.arg("").arg(0).arg("").arg(""),
            };
        }
        add(&self.stats.publish_batches, 1);
        let count = batch.len();
        let result = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
            .and_then(|reply: redis::Value| decode_publish_batch(&reply, count));
        match result {
            Ok(replies) => {
                for (pending, reply) in batch.into_iter().zip(replies) {
                    let counter = if reply.duplicate {
                        &self.stats.duplicates
                    } else {
                        &self.stats.publishes
                    };
                    add(counter, 1);
                    let published = Published {
                        epoch: reply.epoch,
                        seq: reply.seq,
                        duplicate: reply.duplicate,
                    };
                    let _ = pending.reply.send(Ok(published));
                }
            }
            Err(e) => {
                for pending in batch {
                    let _ = pending.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The batcher: takes what is queued whenever a lane is free.
pub(crate) async fn run(
    core: Arc<Core>,
    mut pending: mpsc::Receiver<Pending>,
    shutdown: CancellationToken,
) {
    let lanes = Arc::new(Semaphore::new(core.config.connections.max(1)));
    let mut batches = JoinSet::new();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = pending.recv() => match next {
                Some(first) => first,
                None => break,
            },
        };
        let linger = core.config.publish_linger;
        if !linger.is_zero() && pending.len() + 1 < MAX_BATCH {
            // Let others join this call (tokio's timer ticks in milliseconds).
            tokio::select! {
                _ = shutdown.cancelled() => break,
                () = tokio::time::sleep(linger) => {}
            }
        }
        let Ok(lane) = lanes.clone().acquire_owned().await else { break };
        // While every lane was busy, more publishes queued: they share this call.
        let mut batch = Vec::with_capacity(MAX_BATCH.min(pending.len() + 1));
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        while batches.try_join_next().is_some() {}
        let core = core.clone();
        batches.spawn(async move {
            core.publish_batch(batch).await;
            drop(lane);
        });
    }
    // Publishes still queued get `broker closed` when their senders drop.
    batches.shutdown().await;
}
