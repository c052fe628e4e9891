//! Small helpers shared by the backends.

use std::time::{SystemTime, UNIX_EPOCH};

use palaver_protocol::Epoch;
use rand::Rng;

/// Milliseconds since the Unix epoch (message timestamps).
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A fresh random epoch: 16 hex digits, unique enough that two incarnations
/// of one room never share one.
pub fn new_epoch() -> Epoch {
    Epoch::new(format!("{:016x}", rand::rng().random::<u64>()))
}
