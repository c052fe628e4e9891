//! Counters the hub keeps for metrics; plain atomics, read by the gateway.

use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic hub counters.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Frames queued to members by fan-out (one per member per event).
    pub deliveries: AtomicU64,
    /// Messages fanned out (once per message per node).
    pub messages: AtomicU64,
    /// Clients evicted because their queue overflowed.
    pub evictions: AtomicU64,
    /// Times a member fell back to syncing (gap, epoch change, bus outage).
    pub resyncs: AtomicU64,
    /// Live messages that reused a sequence number this node had already
    /// delivered in the same epoch (Redis lost writes).
    pub reused_seqs: AtomicU64,
    /// Epoch resets announced on the bus for rooms with local members.
    pub epoch_resets: AtomicU64,
}

impl HubStats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
