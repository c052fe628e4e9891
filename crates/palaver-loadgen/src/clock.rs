//! A monotonic wall clock shared by senders and receivers.
//!
//! Latency is "receive time minus the send time written in the message", and
//! both ends live in this process, so they only need to agree with each other.
//! Reading `SystemTime` for every message would let an NTP step corrupt a
//! run; instead the clock reads the Unix time once and advances it with the
//! monotonic `Instant`.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Unix nanoseconds that never go backwards within a run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    base_unix_nanos: u64,
}

impl Clock {
    /// Anchors the clock at the current system time.
    pub fn new() -> Self {
        let base = Instant::now();
        let base_unix_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        Clock { base, base_unix_nanos }
    }

    /// Unix nanoseconds now.
    pub fn now_nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    /// Unix nanoseconds at `t` (clamped to the clock's anchor for earlier instants).
    pub fn nanos_at(&self, t: Instant) -> u64 {
        let since = t.saturating_duration_since(self.base).as_nanos();
        self.base_unix_nanos.saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn advances_with_instants() {
        let clock = Clock::new();
        let a = clock.now_nanos();
        let later = Instant::now() + Duration::from_millis(5);
        assert!(clock.nanos_at(later) >= a + 5_000_000);
        // Roughly today's date: after 2020.
        assert!(a > 1_577_836_800 * 1_000_000_000);
    }
}
