//! The once-a-second flush of big rooms' coalesced presence, spread over time.
//!
//! A batch goes to every member of its room, one socket write each: in a room
//! of 15,000 that is ~15,000 writes at once, a burst of a few hundred ms of
//! CPU that would hold up every other room's messages on the node and land in
//! whichever joins happened to be running. Presence can wait a little, so a
//! batch for many members is handed out in slices spread over most of its
//! room's period: a room whose batch is due every `p` flushes
//! ([`palaver_hub::presence_period`]) has its batch spread over `0.8 × p`
//! seconds, so it costs the node at most ~5,000 deliveries in *any* second,
//! not only on average. Small rooms' batches still go out at once.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Range,
    sync::Arc,
    time::Duration,
};

use palaver_broker::{Broker, broker::SharedBroker};
use palaver_hub::{Hub, PRESENCE_INTERVAL, PresenceFlush, presence_period};
use palaver_protocol::RoomName;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A flush for more members than this is cut into slices spread over time ([`spread_of`]).
const SLICE: usize = 512;
/// Most slices one flush is cut into (bigger flushes get bigger slices).
const MAX_SLICES: usize = 64;
/// Time over which a big flush of period 1 is handed out, inside
/// [`PRESENCE_INTERVAL`]; a flush of period `p` takes `p` times as long.
const SPREAD: Duration = PRESENCE_INTERVAL.saturating_mul(4).checked_div(5).expect("non-zero");

/// Sends big rooms' coalesced presence when due until shutdown, each batch
/// with the room's cluster-wide member count.
pub(crate) async fn run(hub: Arc<Hub>, broker: SharedBroker, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PRESENCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Flushes still being handed out, each with its slices' schedule.
    let mut spreading: Vec<(Vec<PresenceFlush>, Schedule)> = Vec::new();
    loop {
        let next_slice = spreading.iter().map(|(_, schedule)| schedule.due).min();
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let counts = member_counts(&*broker, hub.rooms_with_pending_presence()).await;
                let flushes = hub.take_presence(|room| counts.get(room).copied());
                spreading.extend(spread(flushes, Instant::now()));
            }
            () = sleep_until(next_slice) => {}
        }
        let now = Instant::now();
        for (flushes, schedule) in &mut spreading {
            for slice in schedule.take_due(now) {
                for (flush, range) in slice {
                    hub.deliver_presence(&flushes[flush], range);
                }
            }
        }
        spreading.retain(|(_, schedule)| !schedule.done());
    }
}

/// Waits until `at`, or forever when nothing is scheduled.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Groups the flushes taken together by their rooms' period and schedules
/// each group's slices over `SPREAD × period` from `now`.
fn spread(flushes: Vec<PresenceFlush>, now: Instant) -> Vec<(Vec<PresenceFlush>, Schedule)> {
    let mut by_period: BTreeMap<u64, Vec<PresenceFlush>> = BTreeMap::new();
    for flush in flushes {
        by_period.entry(presence_period(flush.members())).or_default().push(flush);
    }
    by_period
        .into_iter()
        .map(|(period, group)| {
            let sizes: Vec<usize> = group.iter().map(PresenceFlush::members).collect();
            let schedule = Schedule::new(plan(&sizes), spread_of(period), now);
            (group, schedule)
        })
        .collect()
}

/// How long a flush of rooms with this period is spread over.
fn spread_of(period: u64) -> Duration {
    SPREAD.saturating_mul(u32::try_from(period).unwrap_or(u32::MAX))
}

/// When each slice of one group of flushes is due: the first at once, the
/// rest evenly over the spread.
struct Schedule {
    slices: std::vec::IntoIter<Vec<(usize, Range<usize>)>>,
    gap: Duration,
    /// When the next slice is due.
    due: Instant,
}

impl Schedule {
    fn new(slices: Vec<Vec<(usize, Range<usize>)>>, spread: Duration, now: Instant) -> Self {
        let gap = spread / u32::try_from(slices.len().max(1)).unwrap_or(u32::MAX);
        Schedule { slices: slices.into_iter(), gap, due: now }
    }

    /// The slices due by `now`, in order.
    fn take_due(&mut self, now: Instant) -> Vec<Vec<(usize, Range<usize>)>> {
        let mut due = Vec::new();
        while self.due <= now && self.slices.len() > 0 {
            due.extend(self.slices.next());
            self.due += self.gap;
        }
        due
    }

    fn done(&self) -> bool {
        self.slices.len() == 0
    }
}

/// Cuts flushes for `sizes` members each into slices of about equal size
/// (at most [`MAX_SLICES`], at least [`SLICE`] members unless all fit in one):
/// each slice lists `(flush index, member range)` pairs, in order, covering
/// every member of every flush exactly once.
fn plan(sizes: &[usize]) -> Vec<Vec<(usize, Range<usize>)>> {
    let total: usize = sizes.iter().sum();
    let count = total.div_ceil(SLICE).clamp(1, MAX_SLICES);
    let per_slice = total.div_ceil(count).max(1);
    let mut slices = vec![Vec::new()];
    let mut room_in_slice = per_slice;
    for (flush, &size) in sizes.iter().enumerate() {
        let mut start = 0;
        while start < size {
            if room_in_slice == 0 {
                slices.push(Vec::new());
                room_in_slice = per_slice;
            }
            let end = size.min(start + room_in_slice);
            slices.last_mut().expect("never empty").push((flush, start..end));
            room_in_slice -= end - start;
            start = end;
        }
    }
    slices
}

/// The member counts of `rooms`, read a few at a time; a room whose count
/// cannot be read now is left out (its batch carries the last one heard).
async fn member_counts(broker: &dyn Broker, rooms: Vec<RoomName>) -> HashMap<RoomName, u64> {
    use futures_util::{StreamExt, stream};
    stream::iter(rooms)
        .map(|room| async move {
            let count = broker.member_count(&room).await.ok()?;
            Some((room, count))
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use palaver_hub::PRESENCE_DELIVERIES_PER_FLUSH;

    use super::*;

    /// Every member of every flush, in order, from the plan.
    fn covered(slices: &[Vec<(usize, Range<usize>)>]) -> Vec<(usize, usize)> {
        slices
            .iter()
            .flatten()
            .flat_map(|(flush, range)| range.clone().map(move |m| (*flush, m)))
            .collect()
    }

    fn expected(sizes: &[usize]) -> Vec<(usize, usize)> {
        sizes.iter().enumerate().flat_map(|(f, &n)| (0..n).map(move |m| (f, m))).collect()
    }

    /// (due offset from the start, members) of every slice of one room's flush.
    fn timeline(members: usize) -> Vec<(Duration, usize)> {
        let start = Instant::now();
        let mut schedule =
            Schedule::new(plan(&[members]), spread_of(presence_period(members)), start);
        let mut out = Vec::new();
        let mut at = start;
        while !schedule.done() {
            for slice in schedule.take_due(at) {
                out.push((at - start, slice.iter().map(|(_, r)| r.len()).sum()));
            }
            at += Duration::from_millis(1);
        }
        out
    }

    #[test]
    fn a_flush_is_spread_over_its_rooms_period() {
        assert_eq!(spread_of(1), SPREAD);
        assert_eq!(spread_of(3), SPREAD * 3);
        for members in [600, 5_000, 6_000, 15_000, 200_000] {
            let slices = timeline(members);
            assert_eq!(slices[0].0, Duration::ZERO, "{members}: the first slice goes at once");
            assert_eq!(slices.iter().map(|s| s.1).sum::<usize>(), members);
            let last = slices.last().expect("slices").0;
            assert!(last < spread_of(presence_period(members)), "{members}: ends at {last:?}");
            // In any second the room costs about the hub's per-flush budget,
            // not the whole room at once.
            let biggest = slices.iter().map(|s| s.1).max().expect("slices");
            let budget = PRESENCE_DELIVERIES_PER_FLUSH * 5 / 4 + biggest;
            for (from, _) in &slices {
                let second: usize = slices
                    .iter()
                    .filter(|(at, _)| at >= from && *at < *from + Duration::from_secs(1))
                    .map(|s| s.1)
                    .sum();
                assert!(
                    second <= budget,
                    "{members}: {second} deliveries in a second from {from:?}"
                );
            }
        }
    }

    #[test]
    fn a_late_loop_catches_up_with_every_due_slice() {
        let start = Instant::now();
        let mut schedule = Schedule::new(plan(&[15_000]), spread_of(3), start);
        assert_eq!(schedule.take_due(start).len(), 1);
        assert!(schedule.take_due(start).is_empty(), "the next slice is not due yet");
        let all_but_first = schedule.take_due(start + spread_of(3));
        assert_eq!(all_but_first.len(), 15_000usize.div_ceil(SLICE) - 1);
        assert!(schedule.done());
    }

    #[test]
    fn small_flushes_go_out_at_once() {
        let sizes = [3, 200, 0, 300];
        let slices = plan(&sizes);
        assert_eq!(slices.len(), 1);
        assert_eq!(covered(&slices), expected(&sizes));
        assert_eq!(plan(&[]).len(), 1, "nothing to send: one empty slice, no waiting");
    }

    #[test]
    fn a_big_room_is_cut_into_even_slices() {
        let sizes = [15_000];
        let slices = plan(&sizes);
        assert_eq!(slices.len(), 15_000usize.div_ceil(SLICE));
        assert!(slices.iter().all(|s| s.iter().map(|(_, r)| r.len()).sum::<usize>() <= SLICE));
        assert_eq!(covered(&slices), expected(&sizes));
    }

    #[test]
    fn a_huge_flush_keeps_the_slice_count_bounded() {
        let sizes = [200_000, 7, 40_000];
        let slices = plan(&sizes);
        assert_eq!(slices.len(), MAX_SLICES);
        assert_eq!(covered(&slices), expected(&sizes));
    }

    #[test]
    fn slices_cross_room_boundaries() {
        let sizes = [SLICE - 10, 20];
        let slices = plan(&sizes);
        assert_eq!(slices.len(), 2);
        let half = (SLICE + 10).div_ceil(2);
        assert_eq!(slices[0], vec![(0, 0..half)]);
        assert_eq!(slices[1], vec![(0, half..SLICE - 10), (1, 0..20)]);
        assert_eq!(covered(&slices), expected(&sizes));
    }
}
