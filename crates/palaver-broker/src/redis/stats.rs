//! Counters of the Redis backend, for the gateway's metrics endpoint.
//!
//! Plain relaxed atomics: each is bumped on its own path and read whole by a
//! scrape, so no two of them need to agree at any instant.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters; read them with [`RedisStats::snapshot`].
#[derive(Debug, Default)]
pub struct RedisStats {
    pub(crate) reconnects: AtomicU64,
    pub(crate) publishes: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) publish_batches: AtomicU64,
    pub(crate) signals: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) parse_errors: AtomicU64,
    pub(crate) delivery_overflows: AtomicU64,
    pub(crate) history_reads: AtomicU64,
    pub(crate) single_flight_hits: AtomicU64,
    pub(crate) presence_expired: AtomicU64,
    pub(crate) command_errors: AtomicU64,
    pub(crate) resubscribes: AtomicU64,
}

/// One reading of [`RedisStats`]; every counter only grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedisStatsSnapshot {
    /// Pub/sub connections re-established after a loss (the first connect is not counted).
    pub reconnects: u64,
    /// Messages sequenced and published (duplicates excluded).
    pub publishes: u64,
    /// Publishes answered as duplicates by the idempotency index.
    pub duplicates: u64,
    /// Publish script calls; publishes / batches is the mean batch size.
    pub publish_batches: u64,
    /// Presence/typing signals published.
    pub signals: u64,
    /// Envelopes received on the bus and handed to the inbox.
    pub delivered: u64,
    /// Bus payloads that were not valid envelopes (dropped).
    pub parse_errors: u64,
    /// Bus events dropped because their room's delivery worker was full; each
    /// sent the room's members back to history.
    pub delivery_overflows: u64,
    /// Head/history reads that went to Redis.
    pub history_reads: u64,
    /// Head/history requests answered by another caller's read.
    pub single_flight_hits: u64,
    /// Users removed from a room's presence by this node's sweeps (their
    /// entries expired, e.g. their node died).
    pub presence_expired: u64,
    /// Commands that failed (timeouts, lost connections, script errors).
    pub command_errors: u64,
    /// Redis Cluster: rooms re-subscribed after a topology change (slot
    /// migrated, failover) whose members were sent to catch up.
    pub resubscribes: u64,
}

impl RedisStats {
    /// The current value of every counter.
    pub fn snapshot(&self) -> RedisStatsSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        RedisStatsSnapshot {
            reconnects: get(&self.reconnects),
            publishes: get(&self.publishes),
            duplicates: get(&self.duplicates),
            publish_batches: get(&self.publish_batches),
            signals: get(&self.signals),
            delivered: get(&self.delivered),
            parse_errors: get(&self.parse_errors),
            delivery_overflows: get(&self.delivery_overflows),
            history_reads: get(&self.history_reads),
            single_flight_hits: get(&self.single_flight_hits),
            presence_expired: get(&self.presence_expired),
            command_errors: get(&self.command_errors),
            resubscribes: get(&self.resubscribes),
        }
    }
}

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}
