//! Live counters many tasks bump at once, read by the progress bar and by the
//! end-of-run check that every expected delivery has arrived.
//!
//! Cells are spread over separate cache lines so receivers on different
//! worker threads do not fight over one line; a read sums the cells.

use std::sync::atomic::{AtomicU64, Ordering};

/// Cells per counter: enough to keep a few worker threads apart.
const CELLS: usize = 16;

#[repr(align(128))]
#[derive(Default)]
struct Cell(AtomicU64);

/// A counter split over cache-line-sized cells.
pub struct ShardedCounter {
    cells: [Cell; CELLS],
}

impl Default for ShardedCounter {
    fn default() -> Self {
        ShardedCounter { cells: std::array::from_fn(|_| Cell::default()) }
    }
}

impl ShardedCounter {
    /// Adds `n`; `hint` (e.g. the client index) picks the cell.
    pub fn add(&self, hint: usize, n: u64) {
        self.cells[hint % CELLS].0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current total.
    pub fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cells() {
        let c = ShardedCounter::default();
        for i in 0..100 {
            c.add(i, 2);
        }
        assert_eq!(c.get(), 200);
    }
}
