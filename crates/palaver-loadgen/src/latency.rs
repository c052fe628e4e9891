//! Latency histograms that many client tasks record into at once.
//!
//! One histogram per client would cost ~100 KiB each at microsecond precision;
//! one shared histogram would be a lock taken per delivery. Instead each task
//! buffers a few hundred samples and adds them to one of a few shards under a
//! short lock; the shards are merged once, at the end of the run.

use std::sync::Arc;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Largest recordable value: one hour, in microseconds. Larger ones saturate.
const MAX_MICROS: u64 = 3_600_000_000;
/// Samples buffered by a recorder before it takes a shard lock.
const BATCH: usize = 256;

/// A new empty histogram with microsecond precision and 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("bounds are valid constants")
}

/// Sharded histogram shared by every recorder of one quantity.
pub struct LatencySink {
    shards: Box<[Mutex<Histogram<u64>>]>,
}

impl LatencySink {
    /// A sink with `shards` independently locked histograms.
    pub fn new(shards: usize) -> Arc<Self> {
        let shards = (0..shards.max(1)).map(|_| Mutex::new(new_histogram())).collect();
        Arc::new(LatencySink { shards })
    }

    /// A recorder for one task; `hint` (e.g. the client index) picks its shard.
    pub fn recorder(self: &Arc<Self>, hint: usize) -> Recorder {
        Recorder {
            sink: self.clone(),
            shard: hint % self.shards.len(),
            buffer: Vec::with_capacity(BATCH),
        }
    }

    /// All shards merged into one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in self.shards.iter() {
            // Shards share the bounds of `new_histogram`, so adding cannot fail.
            let _ = total.add(&*shard.lock());
        }
        total
    }
}

/// Buffers samples for one task; flushes when full and when dropped.
pub struct Recorder {
    sink: Arc<LatencySink>,
    shard: usize,
    buffer: Vec<u64>,
}

impl Recorder {
    /// Records a duration given in nanoseconds (stored as microseconds, at least 1).
    pub fn record_nanos(&mut self, nanos: u64) {
        self.buffer.push((nanos / 1_000).max(1));
        if self.buffer.len() >= BATCH {
            self.flush();
        }
    }

    /// Moves the buffered samples into the shared shard.
    pub fn flush(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let mut shard = self.sink.shards[self.shard].lock();
        for &v in &self.buffer {
            shard.saturating_record(v.min(MAX_MICROS));
        }
        drop(shard);
        self.buffer.clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_merge_across_shards() {
        let sink = LatencySink::new(4);
        for client in 0..10 {
            let mut r = sink.recorder(client);
            for i in 1..=1000u64 {
                r.record_nanos(i * 1_000);
            }
        }
        let h = sink.merged();
        assert_eq!(h.len(), 10_000);
        assert_eq!(h.max(), 1000);
        assert_eq!(h.min(), 1);
        let p50 = h.value_at_quantile(0.5);
        assert!((499..=501).contains(&p50), "{p50}");
    }

    #[test]
    fn sub_microsecond_and_huge_values_are_clamped() {
        let sink = LatencySink::new(1);
        let mut r = sink.recorder(0);
        r.record_nanos(10);
        r.record_nanos(u64::MAX);
        drop(r);
        let h = sink.merged();
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_MICROS);
    }
}
