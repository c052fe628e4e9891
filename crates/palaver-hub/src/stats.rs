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
