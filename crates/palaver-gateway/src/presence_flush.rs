//! The once-a-second flush of big rooms' coalesced presence, spread over time.
//!
//! A batch goes to every member of its room, one socket write each: in a room
//! of 15,000 that is ~15,000 writes at once, a burst of a few hundred ms of
//! CPU that would hold up every other room's messages on the node and land in
//! whichever joins happened to be running. Presence can wait a little, so a
//! batch for many members is handed out in slices spread over most of the
//! interval; small rooms' batches still go out at once. (How often a room
//! gets a batch at all is the hub's rule, [`palaver_hub::presence_period`].)

use std::{collections::HashMap, ops::Range, sync::Arc, time::Duration};

use palaver_broker::{Broker, broker::SharedBroker};
use palaver_hub::{Hub, PRESENCE_INTERVAL, PresenceFlush};
use palaver_protocol::RoomName;
use tokio_util::sync::CancellationToken;

/// A flush for more members than this is spread over [`SPREAD`].
const SLICE: usize = 512;
/// Most slices one flush is cut into (bigger flushes get bigger slices).
const MAX_SLICES: usize = 64;
/// Time over which a big flush is handed out, inside [`PRESENCE_INTERVAL`].
const SPREAD: Duration = PRESENCE_INTERVAL.saturating_mul(4).checked_div(5).expect("non-zero");

/// Sends big rooms' coalesced presence when due until shutdown, each batch
/// with the room's cluster-wide member count.
pub(crate) async fn run(hub: Arc<Hub>, broker: SharedBroker, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PRESENCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {
                let counts = member_counts(&*broker, hub.rooms_with_pending_presence()).await;
                let flushes = hub.take_presence(|room| counts.get(room).copied());
                let sizes: Vec<usize> = flushes.iter().map(PresenceFlush::members).collect();
                let slices = plan(&sizes);
                let gap = SPREAD / slices.len().max(1) as u32;
                for (i, slice) in slices.iter().enumerate() {
                    if i > 0 {
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(gap) => {}
                        }
                    }
                    for (flush, range) in slice {
                        hub.deliver_presence(&flushes[*flush], range.clone());
                    }
                }
            }
        }
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
