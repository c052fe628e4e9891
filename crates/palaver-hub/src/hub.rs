//! The hub: rooms of local members, sharded, and the fan-out of room events.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{BuildHasher, RandomState},
    ops::Range,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use palaver_protocol::{
    BusEvent, CloseCode, Envelope, Epoch, Frame, PresenceState, RoomName, Seq, ServerFrame,
    StoredMessage, UserName, Witness, limits::PRESENCE_BATCH_NAMES,
};
use parking_lot::{Mutex, RwLock};

use crate::{
    client::{Client, PushError},
    membership::{Cursor, Membership, SyncState},
    stats::HubStats,
};

/// Number of independently locked room shards.
const SHARDS: usize = 64;

/// Presence changes of a big room waiting for the next batch. Each list
/// keeps at most [`PRESENCE_BATCH_NAMES`] users, so a join storm of any size
/// costs bounded memory and one bounded frame per member per flush.
#[derive(Default)]
struct PendingPresence {
    joined: BTreeSet<UserName>,
    left: BTreeSet<UserName>,
    typing: BTreeSet<UserName>,
    /// Some change did not fit in its list.
    truncated: bool,
    /// The flush that took the last batch: the next is due
    /// [`presence_period`] flushes later.
    taken_at: Option<u64>,
    /// Deliveries spent on changes sent one by one since the last flush (up
    /// to [`PRESENCE_AT_ONCE`]).
    spent: usize,
}

impl PendingPresence {
    fn record(&mut self, user: UserName, state: PresenceState) {
        match state {
            PresenceState::Join => {
                self.left.remove(&user);
                self.truncated |= !insert_bounded(&mut self.joined, user);
            }
            PresenceState::Leave => {
                // The leave stands even after a join of this batch: the user
                // may have been present before it (a client removing someone
                // it never had does no harm).
                self.joined.remove(&user);
                self.typing.remove(&user);
                self.truncated |= !insert_bounded(&mut self.left, user);
            }
            PresenceState::Typing => {
                // Typing is advisory: beyond the bound it is dropped, not flagged.
                insert_bounded(&mut self.typing, user);
            }
        }
    }

    /// Something to send: a change kept, or one only counted.
    fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty() && self.typing.is_empty() && !self.truncated
    }

    /// A batch period for `members` local members has passed by flush `flush`.
    fn period_over(&self, flush: u64, members: usize) -> bool {
        self.taken_at.is_none_or(|t| flush.saturating_sub(t) >= presence_period(members))
    }
}

/// How often the gateway flushes presence ([`Hub::take_presence`]).
pub const PRESENCE_INTERVAL: Duration = Duration::from_secs(1);

/// Presence deliveries one room may cost a node per flush: a batch goes to
/// every local member, so a room with more members than this gets one every
/// few flushes (15,000 members: every third). Its presence then costs the
/// node the same per second, and per join, whatever its size.
pub const PRESENCE_DELIVERIES_PER_FLUSH: usize = 5_000;

/// Deliveries a small room may spend per flush on presence changes sent one
/// by one (each costs one per local member; the first is always allowed);
/// further changes wait for its next batch. A quiet room's changes show at
/// once (a room of 2: 50 a second), and a storm (a node restarts and all its
/// clients come back) costs each room about two deliveries per member per
/// second instead of one per member per join.
pub const PRESENCE_AT_ONCE: usize = 100;

/// Flushes between two presence batches of a room with `members` local members.
pub fn presence_period(members: usize) -> u64 {
    members.div_ceil(PRESENCE_DELIVERIES_PER_FLUSH).max(1) as u64
}

/// One big room's presence batch and its members when it was taken
/// ([`Hub::take_presence`]): [`Hub::deliver_presence`] queues it to a slice
/// of them at a time, so a batch to a huge room can be spread over time.
pub struct PresenceFlush {
    room: RoomName,
    frame: Frame,
    members: Vec<Arc<Membership>>,
}

impl PresenceFlush {
    /// Members it is for.
    pub fn members(&self) -> usize {
        self.members.len()
    }
}

/// Inserts unless the set is full; false when `user` was not kept.
fn insert_bounded(set: &mut BTreeSet<UserName>, user: UserName) -> bool {
    if set.len() < PRESENCE_BATCH_NAMES || set.contains(&user) {
        set.insert(user);
        true
    } else {
        false
    }
}

/// A room's local members by session. Most rooms on a node hold one (a
/// private conversation, a connection's own room): that one is kept inline,
/// a map only from the second on.
#[derive(Default)]
enum Members {
    #[default]
    Empty,
    One(Arc<Membership>),
    // Boxed so the common case stays one pointer wide in every room.
    #[allow(clippy::box_collection)]
    Many(Box<HashMap<Arc<str>, Arc<Membership>>>),
}

impl Members {
    fn contains(&self, session: &str) -> bool {
        match self {
            Members::Empty => false,
            Members::One(m) => &**m.client().session() == session,
            Members::Many(map) => map.contains_key(session),
        }
    }

    fn len(&self) -> usize {
        match self {
            Members::Empty => 0,
            Members::One(_) => 1,
            Members::Many(map) => map.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds a member whose session is not in yet.
    fn insert(&mut self, member: Arc<Membership>) {
        match std::mem::take(self) {
            Members::Empty => *self = Members::One(member),
            Members::One(one) => {
                let mut map = HashMap::with_capacity(2);
                map.insert(one.client().session().clone(), one);
                map.insert(member.client().session().clone(), member);
                *self = Members::Many(Box::new(map));
            }
            Members::Many(mut map) => {
                map.insert(member.client().session().clone(), member);
                *self = Members::Many(map);
            }
        }
    }

    /// Removes the session's member; false if it was not in.
    fn remove(&mut self, session: &str) -> bool {
        match self {
            Members::Empty => false,
            Members::One(m) if &**m.client().session() == session => {
                *self = Members::Empty;
                true
            }
            Members::One(_) => false,
            Members::Many(map) => {
                let removed = map.remove(session).is_some();
                if map.len() <= 1 {
                    let last = map.drain().next();
                    *self = last.map_or(Members::Empty, |(_, m)| Members::One(m));
                }
                removed
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Arc<Membership>> {
        let (one, many) = match self {
            Members::Empty => (None, None),
            Members::One(m) => (Some(m), None),
            Members::Many(map) => (None, Some(map.values())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// The local members of one room and the newest message seen live.
#[derive(Default)]
struct Room {
    members: Members,
    /// Presence held back for the next batch (see [`Hub::take_presence`]),
    /// the last batch's flush and a small room's budget; allocated by the
    /// first change that needs it, freed after a quiet period.
    pending: Mutex<Option<Box<PendingPresence>>>,
    /// Members cluster-wide, as last heard (a join's member page, a batch's
    /// count): a room big across the cluster batches even where few of its
    /// members are local.
    known_count: AtomicU64,
    /// Epoch and sequence of the newest live message; a syncing member may go
    /// live once its cursor has reached it.
    last: Mutex<Option<(Epoch, Seq)>>,
    /// The newest message this node has handed to anyone in the room (live,
    /// from history, or as a publish's ack): what the lost-write check
    /// compares with Redis.
    witness: Mutex<Option<Witness>>,
}

impl Room {
    /// Presence changes wait and their batch is due at flush `flush`.
    fn presence_due(&self, flush: u64) -> bool {
        let members = self.members.len();
        self.pending.lock().as_ref().is_some_and(|p| !p.is_empty() && p.period_over(flush, members))
    }

    /// Remembers `seen` if it is newer than the current witness. A witness of
    /// another epoch replaces it: every source reads the current epoch.
    fn witness(&self, seen: Witness) {
        let mut witness = self.witness.lock();
        let newer = match &*witness {
            Some(w) => w.epoch != seen.epoch || seen.seq > w.seq,
            None => true,
        };
        if newer {
            *witness = Some(seen);
        }
    }

    /// True when a live message shows that Redis handed out a sequence
    /// number again: it is below the newest live one of its epoch (the bus
    /// never goes back), or it names another message at the witness's
    /// position. (The same message again is a duplicate, dropped as such.)
    fn reuses_seq(&self, epoch: &Epoch, message: &StoredMessage) -> bool {
        let behind_live =
            matches!(&*self.last.lock(), Some((e, s)) if e == epoch && message.seq < *s);
        let other_message = matches!(&*self.witness.lock(), Some(w) if &w.epoch == epoch
            && w.seq == message.seq
            && (w.id.as_ref() != Some(&message.id) || w.user.as_ref() != Some(&message.user)));
        behind_live || other_message
    }
}

/// One independently locked part of the hub's rooms.
type Shard = RwLock<HashMap<RoomName, Box<Room>>>;

/// Node-local rooms and fan-out. Cheap to share (`Arc<Hub>`).
pub struct Hub {
    /// Rooms are boxed: a table of rooms inline would hold its spare slots
    /// at a room's size.
    shards: Box<[Shard]>,
    hasher: RandomState,
    stats: HubStats,
    batch_above: usize,
    /// Presence flushes so far ([`Hub::take_presence`]): the clock of batches.
    presence_flushes: AtomicU64,
}

/// Rooms with more local members than this get presence in batches by default.
pub const PRESENCE_BATCH_ABOVE: usize = 200;

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    /// An empty hub batching presence in rooms above [`PRESENCE_BATCH_ABOVE`] local members.
    pub fn new() -> Self {
        Self::with_presence_batch_above(PRESENCE_BATCH_ABOVE)
    }

    /// An empty hub batching presence in rooms with more than `members` local
    /// members: each presence event would cost one delivery per member, so a
    /// join storm in a big room would be quadratic; batched, it costs one
    /// delivery per member per flush.
    pub fn with_presence_batch_above(members: usize) -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            stats: HubStats::default(),
            batch_above: members,
            presence_flushes: AtomicU64::new(0),
        }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &HubStats {
        &self.stats
    }

    fn shard(&self, room: &RoomName) -> &Shard {
        let index = self.hasher.hash_one(room.as_str()) as usize % self.shards.len();
        &self.shards[index]
    }

    /// Adds the client to the room in state [`SyncState::Joining`]. Refused if
    /// the client is already a member or the room holds `max_members`.
    pub fn join(
        &self,
        room: &RoomName,
        client: &Arc<Client>,
        max_members: usize,
    ) -> Result<Arc<Membership>, JoinRefused> {
        let mut shard = self.shard(room).write();
        let entry = shard.entry(room.clone()).or_default();
        if entry.members.contains(client.session()) {
            return Err(JoinRefused::AlreadyMember);
        }
        if entry.members.len() >= max_members {
            return Err(JoinRefused::Full);
        }
        let membership = Arc::new(Membership::new(client.clone(), room.clone()));
        entry.members.insert(membership.clone());
        Ok(membership)
    }

    /// Removes the client from the room; an empty room is dropped.
    pub fn leave(&self, room: &RoomName, session: &str) -> bool {
        let mut shard = self.shard(room).write();
        let Some(entry) = shard.get_mut(room) else { return false };
        let removed = entry.members.remove(session);
        if entry.members.is_empty() {
            shard.remove(room);
        }
        removed
    }

    /// Number of rooms with local members.
    pub fn room_count(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Switches a syncing member to live if its cursor has reached every
    /// message seen live in the room. Returns false when it must read history
    /// again first. Runs under the shard's write lock, so no fan-out of the
    /// room can slip between the check and the switch.
    pub fn try_go_live(&self, membership: &Membership) -> bool {
        let shard = self.shard(membership.room()).write();
        let Some(room) = shard.get(membership.room()) else { return true };
        let last = room.last.lock();
        let mut cursor = membership.lock();
        let caught_up = match (&*last, &cursor.epoch) {
            (None, _) => true,
            // Live traffic of another epoch is nothing to wait for: the
            // member's epoch comes from history, the source of truth, and if
            // live traffic is of a newer epoch still, the next live message
            // fails the epoch check in fan-out and catch-up runs again.
            (Some((epoch, seq)), Some(mine)) => epoch != mine || *seq <= cursor.seq,
            (Some(_), None) => false,
        };
        if caught_up {
            cursor.state = SyncState::Live;
        }
        caught_up
    }

    /// Queues `joined` and moves the member from `Joining` to `Syncing` at
    /// `seq`, under the member's lock: fan-out sends a member nothing before
    /// `joined` and, from the moment it is queued, every presence event. A
    /// full queue evicts the client (1013); returns false then.
    pub fn admit(&self, membership: &Membership, joined: Frame, epoch: Epoch, seq: Seq) -> bool {
        let mut cursor = membership.lock();
        match membership.client().try_push(joined) {
            Ok(()) => {
                *cursor = Cursor { epoch: Some(epoch), seq, state: SyncState::Syncing };
                true
            }
            Err(PushError::Full) => {
                self.evict(membership.client());
                false
            }
            Err(PushError::Closed) => false,
        }
    }

    /// The newest message this node has handed out in the room, for the
    /// broker's lost-write check.
    pub fn witness(&self, room: &RoomName) -> Option<Witness> {
        self.shard(room).read().get(room).and_then(|r| r.witness.lock().clone())
    }

    /// Records that a message was handed out outside the live fan-out
    /// (catch-up from history, a publish's ack).
    pub fn saw(&self, room: &RoomName, seen: Witness) {
        if let Some(r) = self.shard(room).read().get(room) {
            r.witness(seen);
        }
    }

    /// Hands one room event to the local members. Called by the broker in
    /// channel order; never blocks.
    pub fn deliver(&self, envelope: Envelope) {
        match envelope.event {
            BusEvent::Message { epoch, message } => {
                self.fan_out_message(&envelope.room, epoch, &message)
            }
            BusEvent::Reset { epoch } => self.reset(&envelope.room, &epoch),
            BusEvent::Presence { user, state } => {
                self.fan_out_presence(&envelope.room, user, state)
            }
        }
    }

    fn fan_out_message(&self, room_name: &RoomName, epoch: Epoch, message: &StoredMessage) {
        let shard = self.shard(room_name).read();
        let Some(room) = shard.get(room_name) else { return };
        if room.reuses_seq(&epoch, message) {
            // Redis came back behind what this node delivered and numbered
            // another message the same: deliver nothing more of this epoch
            // live. Catch-up shows Redis the witness, which moves the room
            // to a new epoch; members hear `recovered: false` there.
            HubStats::add(&self.stats.reused_seqs, 1);
            tracing::warn!(room = %room_name, epoch = %epoch, seq = message.seq, "sequence number reused: redis lost writes");
            self.resync_room(room);
            return;
        }
        *room.last.lock() = Some((epoch.clone(), message.seq));
        room.witness(Witness::of(&epoch, message));
        HubStats::add(&self.stats.messages, 1);
        let mut frame: Option<Frame> = None;
        let mut delivered = 0;
        for member in room.members.iter() {
            let client = member.client();
            if client.is_closing() {
                continue;
            }
            let mut cursor = member.lock();
            if cursor.state != SyncState::Live {
                continue;
            }
            if cursor.epoch.as_ref() != Some(&epoch) || message.seq > cursor.seq + 1 {
                // A gap or a new epoch: history has what this member missed.
                self.send_back(member, &mut cursor);
                continue;
            }
            if message.seq <= cursor.seq {
                continue;
            }
            let frame = frame.get_or_insert_with(|| Frame::message(room_name, &epoch, message));
            // The sender's ack, held for its own copy, leaves in the same write.
            let pushed = match member.release_ack(message.seq) {
                None => client.try_push(frame.clone()),
                Some(ack) => client.try_push_all([frame.clone(), ack]),
            };
            match pushed {
                Ok(()) => {
                    cursor.seq = message.seq;
                    delivered += 1;
                }
                Err(PushError::Full) => self.evict(client),
                Err(PushError::Closed) => {}
            }
        }
        HubStats::add(&self.stats.deliveries, delivered);
    }

    fn fan_out_presence(&self, room_name: &RoomName, user: UserName, state: PresenceState) {
        let shard = self.shard(room_name).read();
        let Some(room) = shard.get(room_name) else { return };
        // Each join and leave is announced once cluster-wide, so counting them
        // keeps the room's size current between member pages.
        let cluster_wide = match state {
            PresenceState::Join => room.known_count.fetch_add(1, Ordering::Relaxed) + 1,
            PresenceState::Leave => {
                let step = |n: u64| Some(n.saturating_sub(1));
                let before =
                    room.known_count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, step);
                before.unwrap_or_default().saturating_sub(1)
            }
            PresenceState::Typing => room.known_count.load(Ordering::Relaxed),
        };
        let big = room.members.len() > self.batch_above || cluster_wide > self.batch_above as u64;
        let mut pending = room.pending.lock();
        let at_once = match pending.as_deref() {
            // Big: always batched. A room of one costs one delivery: never held.
            _ if big => false,
            None if room.members.len() <= 1 => true,
            // Once a change is held, later ones are too (kept in order).
            Some(p) if !p.is_empty() => false,
            Some(p) if p.spent > 0 && p.spent + room.members.len() > PRESENCE_AT_ONCE => false,
            _ => {
                pending.get_or_insert_default().spent += room.members.len();
                true
            }
        };
        if !at_once {
            pending.get_or_insert_default().record(user, state);
            return;
        }
        drop(pending);
        let frame = ServerFrame::Presence { room: room_name.clone(), user, state }.encode();
        self.fan_out_event(room, frame);
    }

    /// Records how many members the room has cluster-wide (from a join's
    /// member page): a room above the batching threshold anywhere batches here.
    pub fn note_member_count(&self, room: &RoomName, count: u64) {
        if let Some(r) = self.shard(room).read().get(room) {
            r.known_count.store(count, Ordering::Relaxed);
        }
    }

    /// Rooms whose held-back presence changes the next [`Hub::take_presence`]
    /// takes a batch of (the gateway reads their member counts first).
    pub fn rooms_with_pending_presence(&self) -> Vec<RoomName> {
        let next = self.presence_flushes.load(Ordering::Relaxed) + 1;
        let mut rooms = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            rooms
                .extend(shard.iter().filter(|(_, r)| r.presence_due(next)).map(|(n, _)| n.clone()));
        }
        rooms
    }

    /// One presence flush: takes each room's held-back presence changes that
    /// are due (see [`presence_period`]) as one bounded `presence_batch`
    /// carrying the room's cluster-wide member count (`count(room)`, else the
    /// last one heard), with the room's members as they are now, and starts a
    /// new burst allowance for small rooms. The gateway calls it every
    /// [`PRESENCE_INTERVAL`] and hands each batch out a slice of members at a
    /// time.
    pub fn take_presence(&self, count: impl Fn(&RoomName) -> Option<u64>) -> Vec<PresenceFlush> {
        let flush = self.presence_flushes.fetch_add(1, Ordering::Relaxed) + 1;
        let mut flushes = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            for (name, room) in shard.iter() {
                let pending = {
                    let mut pending = room.pending.lock();
                    let Some(batch) = pending.as_mut() else { continue };
                    if !batch.period_over(flush, room.members.len()) {
                        continue;
                    }
                    if batch.is_empty() {
                        // Quiet for a whole period: the room forgets it (memory).
                        *pending = None;
                        continue;
                    }
                    let taken_at = Some(flush);
                    std::mem::replace(
                        &mut **batch,
                        PendingPresence { taken_at, ..Default::default() },
                    )
                };
                let member_count = match count(name) {
                    Some(n) => {
                        room.known_count.store(n, Ordering::Relaxed);
                        n
                    }
                    None => room.known_count.load(Ordering::Relaxed),
                };
                let frame = ServerFrame::PresenceBatch {
                    room: name.clone(),
                    joined: pending.joined.into_iter().collect(),
                    left: pending.left.into_iter().collect(),
                    typing: pending.typing.into_iter().collect(),
                    member_count,
                    truncated: pending.truncated,
                }
                .encode();
                let members = room.members.iter().cloned().collect();
                flushes.push(PresenceFlush { room: name.clone(), frame, members });
            }
        }
        flushes
    }

    /// Queues a taken batch to the members in `range` of its snapshot (clamped
    /// to it). A member that left the room since is skipped; one that joined
    /// since read its member page after these changes and needs no batch.
    pub fn deliver_presence(&self, flush: &PresenceFlush, range: Range<usize>) {
        let end = range.end.min(flush.members.len());
        let start = range.start.min(end);
        let shard = self.shard(&flush.room).read();
        let Some(room) = shard.get(&flush.room) else { return };
        let still_in = flush.members[start..end]
            .iter()
            .filter(|m| room.members.contains(m.client().session()));
        self.fan_out_to(still_in, &flush.frame);
    }

    /// Queues an unsequenced event to every member that has been told `joined`.
    fn fan_out_event(&self, room: &Room, frame: Frame) {
        self.fan_out_to(room.members.iter(), &frame);
    }

    fn fan_out_to<'a>(&self, members: impl Iterator<Item = &'a Arc<Membership>>, frame: &Frame) {
        let mut delivered = 0;
        for member in members {
            if member.lock().state == SyncState::Joining {
                continue;
            }
            match member.client().try_push(frame.clone()) {
                Ok(()) => delivered += 1,
                Err(PushError::Full) => self.evict(member.client()),
                Err(PushError::Closed) => {}
            }
        }
        HubStats::add(&self.stats.deliveries, delivered);
    }

    /// Closes a slow consumer with 1013 and counts it (once per client): its
    /// queue overflowed, or its connection could not write for the write timeout.
    pub fn evict(&self, client: &Client) {
        if !client.is_closing() {
            HubStats::add(&self.stats.evictions, 1);
            tracing::info!(session = %client.session(), user = %client.user(), "evicting slow consumer");
        }
        client.close(CloseCode::TryAgainLater);
    }

    /// The room moved to a new epoch (a lost-write reset, announced on the
    /// bus): members of any other epoch catch up, which tells them
    /// `recovered: false` at the new one.
    fn reset(&self, room_name: &RoomName, epoch: &Epoch) {
        let shard = self.shard(room_name).read();
        let Some(room) = shard.get(room_name) else { return };
        HubStats::add(&self.stats.epoch_resets, 1);
        for member in room.members.iter() {
            let mut cursor = member.lock();
            if cursor.state != SyncState::Joining && cursor.epoch.as_ref() != Some(epoch) {
                self.send_back(member, &mut cursor);
            }
        }
    }

    /// Events of the room were dropped before reaching the hub: its live
    /// members catch up from history.
    pub fn resync(&self, room: &RoomName) {
        if let Some(room) = self.shard(room).read().get(room) {
            self.resync_room(room);
        }
    }

    /// Sends every live member of the room back to syncing.
    fn resync_room(&self, room: &Room) {
        for member in room.members.iter() {
            let mut cursor = member.lock();
            if cursor.state == SyncState::Live {
                self.send_back(member, &mut cursor);
            }
        }
    }

    /// Sends a member back to syncing (under its cursor's lock): its
    /// connection catches up from history. An ack held for the member's own
    /// copy waits no longer; the copy comes from history.
    fn send_back(&self, member: &Membership, cursor: &mut Cursor) {
        cursor.state = SyncState::Syncing;
        HubStats::add(&self.stats.resyncs, 1);
        member.client().request_resync();
        if let Some(ack) = member.release_ack(Seq::MAX)
            && member.client().try_push(ack) == Err(PushError::Full)
        {
            self.evict(member.client());
        }
    }

    /// The bus came back after an outage: every live member may have missed
    /// messages, so all fall back to syncing and catch up from history.
    pub fn resync_all(&self) {
        for shard in self.shards.iter() {
            let shard = shard.read();
            for room in shard.values() {
                self.resync_room(room);
            }
        }
    }
}

/// Why [`Hub::join`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRefused {
    /// The client is already in the room.
    AlreadyMember,
    /// The room is at its member limit.
    Full,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{ClientConfig, Outbox};
    use palaver_protocol::ClientMessageId;
    use tokio_util::sync::CancellationToken;

    fn room() -> RoomName {
        RoomName::parse("lobby").expect("valid")
    }

    fn client(session: &str, frames: usize) -> (Arc<Client>, Outbox) {
        Client::new(
            Arc::from(session),
            UserName::parse("ann").expect("valid"),
            ClientConfig { queue_frames: frames, queue_bytes: 1 << 20 },
            CancellationToken::new(),
        )
    }

    /// A presence event of `user` in the test room.
    fn presence(user: &str, state: PresenceState) -> Envelope {
        Envelope {
            room: room(),
            event: BusEvent::Presence { user: UserName::parse(user).expect("valid"), state },
            trace: None,
        }
    }

    fn message(epoch: &str, seq: Seq) -> Envelope {
        Envelope {
            room: room(),
            event: BusEvent::Message {
                epoch: Epoch::new(epoch),
                message: StoredMessage {
                    seq,
                    id: ClientMessageId::parse(&format!("m{seq}")).expect("valid"),
                    user: UserName::parse("bob").expect("valid"),
                    text: "hi".into(),
                    ts: 0,
                },
            },
            trace: None,
        }
    }

    fn seqs(outbox: &mut Outbox) -> Vec<Seq> {
        std::iter::from_fn(|| outbox.try_recv())
            .filter_map(|f| match ServerFrame::decode(f.as_str()) {
                Ok(ServerFrame::Message { seq, .. }) => Some(seq),
                _ => None,
            })
            .collect()
    }

    /// One presence flush handed to every member at once (the gateway spreads
    /// it in slices).
    fn flush_presence(hub: &Hub, count: impl Fn(&RoomName) -> Option<u64>) {
        for flush in hub.take_presence(count) {
            hub.deliver_presence(&flush, 0..flush.members());
        }
    }

    fn live_member(hub: &Hub, session: &str, frames: usize) -> (Arc<Membership>, Outbox) {
        let (c, out) = client(session, frames);
        let m = hub.join(&room(), &c, usize::MAX).expect("joins");
        m.set_cursor(Epoch::new("e"), 0, SyncState::Syncing);
        assert!(hub.try_go_live(&m));
        (m, out)
    }

    #[test]
    fn live_members_get_each_message_once_in_order() {
        let hub = Hub::new();
        let (_a, mut out_a) = live_member(&hub, "a", 16);
        let (_b, mut out_b) = live_member(&hub, "b", 16);
        for seq in [1, 2, 2, 3] {
            hub.deliver(message("e", seq));
        }
        assert_eq!(seqs(&mut out_a), vec![1, 2, 3]);
        assert_eq!(seqs(&mut out_b), vec![1, 2, 3]);
        assert_eq!(HubStats::get(&hub.stats().deliveries), 6);
    }

    /// The kinds of frames in the order they were queued.
    fn kinds(outbox: &mut Outbox) -> Vec<&'static str> {
        std::iter::from_fn(|| outbox.try_recv())
            .map(|f| match ServerFrame::decode(f.as_str()) {
                Ok(ServerFrame::Message { .. }) => "message",
                Ok(ServerFrame::Ack { .. }) => "ack",
                Ok(ServerFrame::Presence { .. }) => "presence",
                _ => "other",
            })
            .collect()
    }

    fn ack_frame(seq: Seq) -> Frame {
        ServerFrame::Ack {
            id: ClientMessageId::parse(&format!("m{seq}")).expect("valid"),
            room: room(),
            epoch: Epoch::new("e"),
            seq,
            duplicate: false,
        }
        .encode()
    }

    #[test]
    fn a_held_ack_follows_the_senders_own_copy() {
        let hub = Hub::new();
        let (m, mut out) = live_member(&hub, "a", 16);
        let mut released = m.hold_ack(&Epoch::new("e"), 2, ack_frame(2)).expect("held");
        // An earlier message does not release it.
        hub.deliver(message("e", 1));
        assert_eq!(kinds(&mut out), vec!["message"]);
        assert!(released.try_recv().is_err(), "still held");
        hub.deliver(message("e", 2));
        assert_eq!(kinds(&mut out), vec!["message", "ack"]);
        assert!(released.try_recv().is_ok(), "the holder hears it was queued");
        assert_eq!(m.take_ack(), None, "nothing left to send");
    }

    #[test]
    fn an_ack_is_not_held_when_its_copy_is_queued_or_will_come_from_history() {
        let hub = Hub::new();
        let (m, mut out) = live_member(&hub, "a", 16);
        hub.deliver(message("e", 1));
        // The copy is already queued (memory mode delivers before the ack).
        assert!(m.hold_ack(&Epoch::new("e"), 1, ack_frame(1)).is_err());
        // Another epoch: the copy will not come live.
        assert!(m.hold_ack(&Epoch::new("f"), 2, ack_frame(2)).is_err());
        // A held ack whose copy is lost in a gap is queued at once; the copy
        // comes from history.
        let mut released = m.hold_ack(&Epoch::new("e"), 2, ack_frame(2)).expect("held");
        hub.deliver(message("e", 3));
        assert_eq!(kinds(&mut out), vec!["message", "ack"]);
        assert!(released.try_recv().is_ok());
        assert_eq!(m.cursor().state, SyncState::Syncing);
        // Not live: nothing is held.
        assert!(m.hold_ack(&Epoch::new("e"), 4, ack_frame(4)).is_err());
    }

    #[test]
    fn a_held_ack_can_be_taken_back() {
        let hub = Hub::new();
        let (m, _out) = live_member(&hub, "a", 16);
        let _released = m.hold_ack(&Epoch::new("e"), 1, ack_frame(1)).expect("held");
        assert!(m.take_ack().is_some());
        assert_eq!(m.take_ack(), None);
    }

    #[test]
    fn gap_or_new_epoch_sends_member_back_to_syncing() {
        let hub = Hub::new();
        let (m, mut out) = live_member(&hub, "a", 16);
        hub.deliver(message("e", 1));
        hub.deliver(message("e", 3));
        assert_eq!(seqs(&mut out), vec![1]);
        assert_eq!(m.cursor().state, SyncState::Syncing);
        // Not live again until the cursor reaches what was seen live.
        assert!(!hub.try_go_live(&m));
        m.advance(3);
        assert!(hub.try_go_live(&m));
        hub.deliver(message("f", 1));
        assert_eq!(m.cursor().state, SyncState::Syncing);
        // History says the room now has epoch "g": the stale live view of "f"
        // does not hold the member back.
        m.set_cursor(Epoch::new("g"), 0, SyncState::Syncing);
        assert!(hub.try_go_live(&m));
    }

    #[test]
    fn slow_consumer_is_evicted_and_others_keep_receiving() {
        let hub = Hub::new();
        let (slow, _slow_out) = live_member(&hub, "slow", 2);
        let (_fast, mut fast_out) = live_member(&hub, "fast", 64);
        for seq in 1..=10 {
            hub.deliver(message("e", seq));
        }
        assert!(slow.client().is_closing());
        assert_eq!(slow.client().close_code(), Some(1013));
        assert_eq!(seqs(&mut fast_out), (1..=10).collect::<Vec<_>>());
        assert_eq!(HubStats::get(&hub.stats().evictions), 1);
    }

    #[test]
    fn joining_members_receive_nothing_and_rooms_are_isolated() {
        let hub = Hub::new();
        let (c, mut out) = client("a", 16);
        let _m = hub.join(&room(), &c, usize::MAX).expect("joins");
        hub.deliver(message("e", 1));
        assert!(out.try_recv().is_none());
        let other = RoomName::parse("other").expect("valid");
        let (c2, mut out2) = client("b", 16);
        let m2 = hub.join(&other, &c2, usize::MAX).expect("joins");
        m2.set_cursor(Epoch::new("e"), 0, SyncState::Syncing);
        assert!(hub.try_go_live(&m2));
        hub.deliver(message("e", 2));
        assert!(out2.try_recv().is_none());
    }

    #[test]
    fn member_limit_and_cleanup() {
        let hub = Hub::new();
        let (a, _oa) = client("a", 4);
        let (b, _ob) = client("b", 4);
        hub.join(&room(), &a, 1).expect("first fits");
        assert_eq!(hub.join(&room(), &a, 5).err(), Some(JoinRefused::AlreadyMember));
        assert_eq!(hub.join(&room(), &b, 1).err(), Some(JoinRefused::Full));
        assert!(hub.leave(&room(), "a"));
        assert_eq!(hub.room_count(), 0);
    }

    #[test]
    fn a_room_grows_from_one_member_and_shrinks_back() {
        let hub = Hub::new();
        let (_a, mut out_a) = live_member(&hub, "a", 16);
        let (_b, mut out_b) = live_member(&hub, "b", 16);
        let (_c, mut out_c) = live_member(&hub, "c", 16);
        hub.deliver(message("e", 1));
        assert!(hub.leave(&room(), "a"));
        assert!(!hub.leave(&room(), "a"), "not a member any more");
        assert!(hub.leave(&room(), "c"));
        hub.deliver(message("e", 2));
        assert_eq!(seqs(&mut out_a), vec![1]);
        assert_eq!(seqs(&mut out_b), vec![1, 2]);
        assert_eq!(seqs(&mut out_c), vec![1]);
        let (b, _ob) = client("b", 4);
        assert_eq!(hub.join(&room(), &b, 5).err(), Some(JoinRefused::AlreadyMember));
        assert!(hub.leave(&room(), "b"));
        assert_eq!(hub.room_count(), 0);
    }

    #[test]
    fn presence_in_big_rooms_is_batched() {
        let hub = Hub::with_presence_batch_above(1);
        let (_a, mut out_a) = live_member(&hub, "a", 16);
        // One member: events go out one by one.
        hub.deliver(presence("x", PresenceState::Join));
        assert!(out_a.try_recv().is_some());
        let (_b, mut out_b) = live_member(&hub, "b", 16);
        // Two members (> 1): held back and coalesced.
        hub.deliver(presence("x", PresenceState::Leave));
        hub.deliver(presence("y", PresenceState::Join));
        hub.deliver(presence("z", PresenceState::Join));
        hub.deliver(presence("z", PresenceState::Leave));
        assert!(out_a.try_recv().is_none());
        assert_eq!(hub.rooms_with_pending_presence(), vec![room()]);
        flush_presence(&hub, |_| Some(7));
        for out in [&mut out_a, &mut out_b] {
            let frame = out.try_recv().expect("one batch");
            match ServerFrame::decode(frame.as_str()).expect("decodes") {
                ServerFrame::PresenceBatch { joined, left, member_count, truncated, .. } => {
                    let names =
                        |v: Vec<UserName>| v.iter().map(|u| u.to_string()).collect::<Vec<_>>();
                    assert_eq!(names(joined), vec!["y"]);
                    assert_eq!(names(left), vec!["x", "z"]);
                    assert_eq!((member_count, truncated), (7, false));
                }
                other => panic!("expected a batch, got {other:?}"),
            }
            assert!(out.try_recv().is_none());
        }
        flush_presence(&hub, |_| Some(7));
        assert!(out_a.try_recv().is_none());
        assert!(hub.rooms_with_pending_presence().is_empty());
    }

    /// The users of a `presence_batch` frame's `joined`, and its count.
    fn batch_joined(frame: Frame) -> (Vec<String>, u64) {
        match ServerFrame::decode(frame.as_str()).expect("decodes") {
            ServerFrame::PresenceBatch { joined, member_count, .. } => {
                (joined.iter().map(|u| u.to_string()).collect(), member_count)
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn a_small_room_spends_a_budget_at_once_and_holds_the_rest_for_the_batch() {
        let hub = Hub::new();
        let (_a, mut out) = live_member(&hub, "a", 64);
        let (_b, _out_b) = live_member(&hub, "b", 64);
        let burst = PRESENCE_AT_ONCE / 2;
        let users: Vec<String> = (0..burst + 3).map(|i| format!("u{i:03}")).collect();
        for user in &users {
            hub.deliver(presence(user, PresenceState::Join));
        }
        assert_eq!(kinds(&mut out), vec!["presence"; burst], "one by one, two deliveries each");
        flush_presence(&hub, |_| Some(9));
        let (joined, count) = batch_joined(out.try_recv().expect("the rest in one batch"));
        assert_eq!(joined, users[burst..]);
        assert_eq!(count, 9);
        // A new flush period: one by one again.
        hub.deliver(presence("late", PresenceState::Join));
        assert_eq!(kinds(&mut out), vec!["presence"]);
        // A quiet period frees the room's presence state.
        flush_presence(&hub, |_| None);
        flush_presence(&hub, |_| None);
        assert!(hub.shard(&room()).read().get(&room()).expect("room").pending.lock().is_none());
    }

    #[test]
    fn bigger_rooms_get_batches_less_often() {
        assert_eq!(presence_period(0), 1);
        assert_eq!(presence_period(PRESENCE_DELIVERIES_PER_FLUSH), 1);
        assert_eq!(presence_period(PRESENCE_DELIVERIES_PER_FLUSH + 1), 2);
        assert_eq!(presence_period(15_000), 3);
        // Per flush a room costs about the same deliveries whatever its size.
        for members in [6_000, 15_000, 200_000] {
            let per_flush = members as f64 / presence_period(members) as f64;
            assert!(per_flush <= PRESENCE_DELIVERIES_PER_FLUSH as f64, "{members}: {per_flush}");
            assert!(
                per_flush > PRESENCE_DELIVERIES_PER_FLUSH as f64 / 2.0,
                "{members}: {per_flush}"
            );
        }
    }

    #[test]
    fn a_big_room_batches_every_few_flushes() {
        let hub = Hub::with_presence_batch_above(1);
        let mut members: Vec<_> = Vec::new();
        for i in 0..=PRESENCE_DELIVERIES_PER_FLUSH {
            let (c, out) = client(&format!("m{i}"), 8);
            let m = hub.join(&room(), &c, usize::MAX).expect("joins");
            m.set_cursor(Epoch::new("e"), 0, SyncState::Syncing);
            assert!(hub.try_go_live(&m));
            members.push((m, out));
        }
        let out = &mut members[0].1;
        hub.deliver(presence("x", PresenceState::Join));
        flush_presence(&hub, |_| None);
        assert_eq!(batch_joined(out.try_recv().expect("first batch at once")).0, vec!["x"]);
        hub.deliver(presence("y", PresenceState::Join));
        assert!(hub.rooms_with_pending_presence().is_empty(), "two flushes apart");
        flush_presence(&hub, |_| None);
        assert!(out.try_recv().is_none(), "held for the next period");
        assert_eq!(hub.rooms_with_pending_presence(), vec![room()]);
        flush_presence(&hub, |_| None);
        assert_eq!(batch_joined(out.try_recv().expect("second batch")).0, vec!["y"]);
    }

    #[test]
    fn a_taken_batch_reaches_each_member_once_slice_by_slice() {
        let hub = Hub::with_presence_batch_above(1);
        let mut outs: Vec<_> = (0..5).map(|i| live_member(&hub, &format!("m{i}"), 16)).collect();
        hub.deliver(presence("x", PresenceState::Join));
        let flushes = hub.take_presence(|_| Some(5));
        assert_eq!(flushes.len(), 1);
        let flush = &flushes[0];
        assert_eq!(flush.members(), 5);
        // A member who leaves before its slice gets nothing and breaks nothing.
        let (gone, mut gone_out) = outs.pop().expect("five");
        assert!(hub.leave(&room(), gone.client().session()));
        hub.deliver_presence(flush, 0..2);
        hub.deliver_presence(flush, 2..4);
        hub.deliver_presence(flush, 4..99);
        assert!(gone_out.try_recv().is_none(), "left before its slice: nothing");
        let received = outs.iter_mut().filter_map(|(_, out)| out.try_recv()).count();
        assert_eq!(received, 4);
        assert!(outs.iter_mut().all(|(_, out)| out.try_recv().is_none()), "once each");
    }

    #[test]
    fn a_join_storm_batch_is_bounded_and_says_so() {
        let hub = Hub::with_presence_batch_above(1);
        let (_a, mut out) = live_member(&hub, "a", 16);
        let (_b, _out_b) = live_member(&hub, "b", 16);
        for i in 0..10 * PRESENCE_BATCH_NAMES {
            hub.deliver(presence(&format!("u{i:05}"), PresenceState::Join));
        }
        hub.deliver(presence("u00000", PresenceState::Typing));
        // Nothing is counted here: the last heard count stands in.
        hub.note_member_count(&room(), 1_002);
        flush_presence(&hub, |_| None);
        let frame = out.try_recv().expect("one batch");
        assert!(out.try_recv().is_none(), "one frame for the whole storm");
        match ServerFrame::decode(frame.as_str()).expect("decodes") {
            ServerFrame::PresenceBatch { joined, member_count, truncated, typing, .. } => {
                assert_eq!(joined.len(), PRESENCE_BATCH_NAMES);
                assert_eq!(typing.len(), 1);
                assert!(truncated);
                assert_eq!(member_count, 1_002);
            }
            other => panic!("expected a batch, got {other:?}"),
        }
    }

    #[test]
    fn a_room_big_across_the_cluster_batches_on_a_node_with_few_members() {
        let hub = Hub::with_presence_batch_above(10);
        let (_a, mut out) = live_member(&hub, "a", 16);
        let join = presence("x", PresenceState::Join);
        hub.deliver(join.clone());
        assert!(out.try_recv().is_some(), "small everywhere: one presence per change");
        hub.note_member_count(&room(), 5_000);
        hub.deliver(join);
        assert!(out.try_recv().is_none(), "big cluster-wide: held for the batch");
        flush_presence(&hub, |_| Some(5_001));
        assert!(out.try_recv().is_some());
    }

    #[test]
    fn resync_all_moves_live_members_back() {
        let hub = Hub::new();
        let (m, _out) = live_member(&hub, "a", 4);
        hub.resync_all();
        assert_eq!(m.cursor().state, SyncState::Syncing);
    }

    fn message_by(epoch: &str, seq: Seq, id: &str) -> Envelope {
        let mut envelope = message(epoch, seq);
        if let BusEvent::Message { message, .. } = &mut envelope.event {
            message.id = ClientMessageId::parse(id).expect("valid");
        }
        envelope
    }

    #[test]
    fn a_reused_sequence_number_is_not_delivered_and_resyncs_the_room() {
        let hub = Hub::new();
        let (m, mut out) = live_member(&hub, "a", 16);
        for seq in 1..=3 {
            hub.deliver(message("e", seq));
        }
        assert_eq!(seqs(&mut out), vec![1, 2, 3]);
        let witness = hub.witness(&room()).expect("a witness");
        assert_eq!((witness.seq, witness.id.expect("id").as_str()), (3, "m3"));
        // Redis came back behind: seq 3 again, another message.
        hub.deliver(message_by("e", 3, "other"));
        assert!(seqs(&mut out).is_empty());
        assert_eq!(m.cursor().state, SyncState::Syncing);
        assert_eq!(HubStats::get(&hub.stats().reused_seqs), 1);
        // Or a seq below the newest live one.
        m.set_cursor(Epoch::new("e"), 3, SyncState::Syncing);
        assert!(hub.try_go_live(&m));
        hub.deliver(message("e", 2));
        assert!(seqs(&mut out).is_empty());
        assert_eq!(m.cursor().state, SyncState::Syncing);
        assert_eq!(HubStats::get(&hub.stats().reused_seqs), 2);
    }

    #[test]
    fn a_reset_sends_members_of_other_epochs_to_catch_up() {
        let hub = Hub::new();
        let (old, _o) = live_member(&hub, "a", 16);
        let (new, _n) = live_member(&hub, "b", 16);
        new.set_cursor(Epoch::new("e2"), 0, SyncState::Live);
        let (c, _oc) = client("c", 16);
        let joining = hub.join(&room(), &c, usize::MAX).expect("joins");
        hub.deliver(Envelope {
            room: room(),
            event: BusEvent::Reset { epoch: Epoch::new("e2") },
            trace: None,
        });
        assert_eq!(old.cursor().state, SyncState::Syncing);
        assert_eq!(new.cursor().state, SyncState::Live);
        assert_eq!(joining.cursor().state, SyncState::Joining);
        assert_eq!(HubStats::get(&hub.stats().epoch_resets), 1);
    }

    #[test]
    fn the_witness_is_the_newest_message_handed_out() {
        let hub = Hub::new();
        let (_m, _out) = live_member(&hub, "a", 16);
        hub.deliver(message("e", 1));
        let w = |seq| Witness { epoch: Epoch::new("e"), seq, id: None, user: None };
        hub.saw(&room(), w(5));
        hub.saw(&room(), w(4));
        assert_eq!(hub.witness(&room()).expect("witness").seq, 5);
        hub.saw(&room(), Witness { epoch: Epoch::new("f"), ..w(1) });
        assert_eq!(hub.witness(&room()).expect("witness").epoch, Epoch::new("f"));
    }

    #[test]
    fn presence_never_precedes_joined_and_follows_it() {
        let hub = Hub::new();
        let (c, mut out) = client("a", 16);
        let m = hub.join(&room(), &c, usize::MAX).expect("joins");
        hub.deliver(presence("x", PresenceState::Join));
        assert!(out.try_recv().is_none(), "nothing before joined");
        let joined = ServerFrame::Left { room: room() }.encode();
        assert!(hub.admit(&m, joined, Epoch::new("e"), 0));
        hub.deliver(presence("x", PresenceState::Join));
        let kinds: Vec<String> = std::iter::from_fn(|| out.try_recv())
            .map(|f| f.as_str().split('"').nth(3).unwrap_or_default().to_owned())
            .collect();
        assert_eq!(kinds, vec!["left", "presence"], "joined first, then presence");
        assert_eq!(m.cursor().state, SyncState::Syncing);
    }
}
