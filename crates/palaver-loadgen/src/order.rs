//! Loss, duplicate and order accounting for one ordered stream at one receiver.
//!
//! A stream is a room's `seq` (palaver) or one sender's counter (raw). Each
//! number should arrive exactly once, in increasing order. The tracker keeps
//! the highest number seen and the ranges skipped below it, so a number at or
//! below the highest is told apart: one that fills a skipped range arrived out
//! of order, one that does not is a duplicate. In a healthy run the range list
//! stays empty; it is bounded so a pathological run cannot exhaust memory.

/// Most skipped ranges remembered; older ones are forgotten (and counted).
const MAX_GAPS: usize = 4096;

/// How one arrival fits the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next number.
    InOrder,
    /// Higher than the next number: this many numbers were skipped (so far).
    Skipped(u64),
    /// Fills a skipped number: it arrived out of order.
    Late,
    /// Already seen.
    Duplicate,
}

/// Per-stream accounting state.
#[derive(Debug, Clone, Default)]
pub struct SeqTracker {
    last: u64,
    /// Skipped numbers below `last`, as inclusive ranges in ascending order.
    gaps: Vec<(u64, u64)>,
    /// Skipped numbers whose ranges were forgotten because of [`MAX_GAPS`].
    forgotten: u64,
}

impl SeqTracker {
    /// A stream whose next expected number is `last + 1`.
    pub fn after(last: u64) -> Self {
        SeqTracker { last, gaps: Vec::new(), forgotten: 0 }
    }

    /// Classifies one arrival and updates the state.
    pub fn observe(&mut self, n: u64) -> Arrival {
        if n == self.last.wrapping_add(1) {
            self.last = n;
            return Arrival::InOrder;
        }
        if n > self.last {
            let skipped = n - self.last - 1;
            self.gaps.push((self.last + 1, n - 1));
            if self.gaps.len() > MAX_GAPS {
                let (lo, hi) = self.gaps.remove(0);
                self.forgotten += hi - lo + 1;
            }
            self.last = n;
            return Arrival::Skipped(skipped);
        }
        // At or below the highest seen: late if it fills a gap, else a duplicate.
        let index = self.gaps.partition_point(|&(_, hi)| hi < n);
        match self.gaps.get(index).copied() {
            Some((lo, hi)) if lo <= n => {
                match (lo == n, hi == n) {
                    (true, true) => {
                        self.gaps.remove(index);
                    }
                    (true, false) => self.gaps[index].0 = n + 1,
                    (false, true) => self.gaps[index].1 = n - 1,
                    (false, false) => {
                        self.gaps[index].1 = n - 1;
                        self.gaps.insert(index + 1, (n + 1, hi));
                    }
                }
                Arrival::Late
            }
            _ => Arrival::Duplicate,
        }
    }

    /// Numbers skipped and never filled (the tail after the last arrival is not known here).
    pub fn missing(&self) -> u64 {
        self.forgotten + self.gaps.iter().map(|&(lo, hi)| hi - lo + 1).sum::<u64>()
    }
}

/// Counts of arrivals by kind, summed over streams and receivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct OrderCounts {
    /// Arrivals that were new (in order, after a skip, or late).
    pub unique: u64,
    /// Arrivals already seen.
    pub duplicates: u64,
    /// New arrivals that filled a skipped number.
    pub out_of_order: u64,
}

impl OrderCounts {
    /// Counts one classified arrival.
    pub fn count(&mut self, arrival: Arrival) {
        match arrival {
            Arrival::InOrder | Arrival::Skipped(_) => self.unique += 1,
            Arrival::Late => {
                self.unique += 1;
                self.out_of_order += 1;
            }
            Arrival::Duplicate => self.duplicates += 1,
        }
    }

    /// Adds another receiver's counts.
    pub fn merge(&mut self, other: &OrderCounts) {
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(start: u64, arrivals: &[u64]) -> (SeqTracker, Vec<Arrival>) {
        let mut t = SeqTracker::after(start);
        let seen = arrivals.iter().map(|&n| t.observe(n)).collect();
        (t, seen)
    }

    #[test]
    fn in_order_stream() {
        let (t, seen) = run(10, &[11, 12, 13]);
        assert!(seen.iter().all(|a| *a == Arrival::InOrder));
        assert_eq!(t.missing(), 0);
        assert_eq!(t.clone().observe(14), Arrival::InOrder);
    }

    #[test]
    fn gap_then_late_fill() {
        use Arrival::*;
        let (t, seen) = run(0, &[1, 5, 3, 2, 4, 4, 1, 6]);
        assert_eq!(
            seen,
            vec![InOrder, Skipped(3), Late, Late, Late, Duplicate, Duplicate, InOrder]
        );
        assert_eq!(t.missing(), 0);
    }

    #[test]
    fn unfilled_gaps_are_missing() {
        let (t, _) = run(0, &[1, 4, 10, 7]);
        // Skipped 2,3 and 5..=9; 7 came late.
        assert_eq!(t.missing(), 2 + 4);
        let (t, seen) = run(0, &[3, 3]);
        assert_eq!(seen, vec![Arrival::Skipped(2), Arrival::Duplicate]);
        assert_eq!(t.missing(), 2);
    }

    #[test]
    fn counts_by_kind() {
        let mut counts = OrderCounts::default();
        let (_, seen) = run(0, &[1, 3, 2, 2, 4]);
        for a in seen {
            counts.count(a);
        }
        assert_eq!(counts, OrderCounts { unique: 4, duplicates: 1, out_of_order: 1 });
        let mut total = OrderCounts::default();
        total.merge(&counts);
        total.merge(&counts);
        assert_eq!(total.unique, 8);
    }

    #[test]
    fn gap_list_is_bounded() {
        let mut t = SeqTracker::after(0);
        for i in 0..(MAX_GAPS as u64 + 10) {
            t.observe(2 * i + 2);
        }
        assert!(t.gaps.len() <= MAX_GAPS);
        assert_eq!(t.missing(), MAX_GAPS as u64 + 10);
        // A number from a forgotten range can no longer be told from a duplicate.
        assert_eq!(t.observe(1), Arrival::Duplicate);
        assert_eq!(t.observe(2 * (MAX_GAPS as u64 + 9) + 1), Arrival::Late);
    }
}
