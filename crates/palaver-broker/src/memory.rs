//! The single-node broker: sequencing, history and presence in process memory.
//!
//! Each room has its own mutex over a sequence counter and a bounded ring of
//! history; a publish sequences, stores and delivers under that one lock, so
//! the inbox sees each room's messages in sequence order without any global
//! lock. The epoch is drawn when the broker starts, so a restarted node
//! announces a new epoch and resuming clients learn that their sequence
//! numbers no longer apply (memory never loses writes, so a room's epoch never
//! changes while the node runs; one for all rooms says the same).
//!
//! A room costs nothing here until it is used: its log exists from its first
//! message (before that its head is the empty one), its presence from its
//! first member, and a room of one member keeps that member inline.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    ops::Bound,
    sync::Arc,
};

use async_trait::async_trait;
use palaver_protocol::{
    BusEvent, ClientMessageId, Envelope, Epoch, HistoryQuery, PresenceState, RoomName,
    StoredMessage, UserName, Witness,
};
use parking_lot::{Mutex, RwLock};

use crate::{
    broker::{
        Broker, BrokerError, Draft, Evidence, HistoryPage, Inbox, MembersPage, Published, RoomHead,
    },
    cluster::{ClusterReport, Control, MAX_ROOMS_PAGE, NodeReport, RoomSummary, RoomsPage},
    util::{new_epoch, now_ms},
};

/// In-process broker for a single node.
pub struct MemoryBroker {
    inbox: Arc<dyn Inbox>,
    capacity: usize,
    /// Every room's epoch: this broker's life.
    epoch: Epoch,
    /// Rooms that have had a message.
    rooms: RwLock<HashMap<RoomName, Arc<Mutex<RoomLog>>>>,
    /// Per room with members, each present user's connection count.
    presence: Mutex<HashMap<RoomName, Roster>>,
    /// The node's latest report: the whole "cluster".
    report: Mutex<Option<NodeReport>>,
}

/// One room's sequence, bounded history and idempotency index.
struct RoomLog {
    head: RoomHead,
    ring: VecDeque<StoredMessage>,
    ids: HashMap<(UserName, ClientMessageId), u64>,
}

impl RoomLog {
    /// A room without messages (no allocation until one is appended).
    fn new(epoch: Epoch) -> Self {
        RoomLog { head: RoomHead::new(epoch, 0, 1), ring: VecDeque::new(), ids: HashMap::new() }
    }

    fn append(&mut self, msg: StoredMessage, capacity: usize) {
        if self.ring.len() == capacity
            && let Some(old) = self.ring.pop_front()
        {
            self.ids.remove(&(old.user, old.id));
            self.head.first = old.seq + 1;
        }
        self.ids.insert((msg.user.clone(), msg.id.clone()), msg.seq);
        self.head.head = msg.seq;
        self.ring.push_back(msg);
    }

    /// Where the room stands for a reader showing `evidence`. Memory never
    /// loses writes, so a witness this log does not hold is a client's
    /// mistake: the head says `lost` and the epoch stays.
    fn head_for(&self, evidence: Option<&Evidence>) -> RoomHead {
        let lost = evidence.is_some_and(|e| !self.holds(&e.witness));
        RoomHead { lost, ..self.head.clone() }
    }

    /// False when the witness names a message of this epoch that is not the
    /// one stored at its position (or lies beyond the head).
    fn holds(&self, witness: &Witness) -> bool {
        if witness.epoch != self.head.epoch {
            return true;
        }
        if witness.seq > self.head.head {
            return false;
        }
        let Some(stored) =
            witness.seq.checked_sub(self.head.first).and_then(|i| self.ring.get(i as usize))
        else {
            return true; // trimmed (or seq 0): nothing to compare
        };
        witness.id.as_ref().is_none_or(|id| *id == stored.id)
            && witness.user.as_ref().is_none_or(|u| *u == stored.user)
    }

    fn page(&self, query: HistoryQuery, evidence: Option<&Evidence>) -> HistoryPage {
        let first = self.head.first;
        let index_of = |seq: u64| (seq.saturating_sub(first)) as usize;
        let (range, more) = match query {
            HistoryQuery::Before { before, limit } => {
                let end = before.map_or(self.ring.len(), |b| index_of(b).min(self.ring.len()));
                let start = end.saturating_sub(limit as usize);
                (start..end, start > 0)
            }
            HistoryQuery::After { after, limit } => {
                let start = index_of(after.saturating_add(1)).min(self.ring.len());
                let end = (start + limit as usize).min(self.ring.len());
                (start..end, end < self.ring.len())
            }
        };
        HistoryPage {
            head: self.head_for(evidence),
            messages: self.ring.range(range).cloned().collect(),
            more,
        }
    }
}

/// One room's present users, each with its connection count; ordered by
/// name so a page of members is a range read. A room of one user (a private
/// conversation, a connection's own room) keeps it inline: a B-tree's first
/// node is ~290 bytes.
enum Roster {
    One(UserName, usize),
    Many(BTreeMap<UserName, usize>),
}

impl Roster {
    /// Counts a connection of `user`; true when it is the user's first.
    fn join(&mut self, user: &UserName) -> bool {
        let count = match self {
            Roster::One(one, count) if one == user => count,
            Roster::One(one, count) => {
                *self = Roster::Many(BTreeMap::from([(one.clone(), *count), (user.clone(), 1)]));
                return true;
            }
            Roster::Many(many) => many.entry(user.clone()).or_insert(0),
        };
        *count += 1;
        *count == 1
    }

    /// Uncounts a connection of `user`; true when it was the user's last.
    /// The caller drops an empty roster.
    fn leave(&mut self, user: &UserName) -> bool {
        match self {
            Roster::One(one, count) if one == user => {
                *count -= 1;
                *count == 0
            }
            Roster::One(..) => false,
            Roster::Many(many) => {
                let Some(count) = many.get_mut(user) else { return false };
                *count -= 1;
                if *count > 0 {
                    return false;
                }
                many.remove(user);
                if many.len() == 1 {
                    let (user, count) = many.pop_first().expect("one left");
                    *self = Roster::One(user, count);
                }
                true
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Roster::One(_, count) => *count == 0,
            Roster::Many(many) => many.is_empty(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Roster::One(..) => 1,
            Roster::Many(many) => many.len(),
        }
    }

    /// Up to `limit` users after `after`, by name, and whether more follow.
    fn page(&self, after: Option<&UserName>, limit: usize) -> (Vec<UserName>, bool) {
        match self {
            Roster::One(user, _) => {
                let members = if after.is_none_or(|after| user > after) {
                    vec![user.clone()]
                } else {
                    Vec::new()
                };
                (members, false)
            }
            Roster::Many(many) => {
                let start = after.map_or(Bound::Unbounded, Bound::Excluded);
                let mut page = many.range::<UserName, _>((start, Bound::Unbounded)).map(|(u, _)| u);
                let members: Vec<UserName> = page.by_ref().take(limit).cloned().collect();
                (members, page.next().is_some())
            }
        }
    }
}

impl MemoryBroker {
    /// A broker keeping up to `capacity` messages of history per room.
    pub fn new(inbox: Arc<dyn Inbox>, capacity: usize) -> Self {
        MemoryBroker {
            inbox,
            capacity: capacity.max(1),
            epoch: new_epoch(),
            rooms: RwLock::new(HashMap::new()),
            presence: Mutex::new(HashMap::new()),
            report: Mutex::new(None),
        }
    }

    /// The room's log, created for a message.
    fn room(&self, room: &RoomName) -> Arc<Mutex<RoomLog>> {
        if let Some(log) = self.rooms.read().get(room) {
            return log.clone();
        }
        self.rooms
            .write()
            .entry(room.clone())
            .or_insert_with(|| Arc::new(Mutex::new(RoomLog::new(self.epoch.clone()))))
            .clone()
    }

    /// Reads the room's log, or the empty one of a room without messages
    /// (without creating it: reading an unused room costs nothing).
    fn read<T>(&self, room: &RoomName, read: impl FnOnce(&RoomLog) -> T) -> T {
        let log = self.rooms.read().get(room).cloned();
        match log {
            Some(log) => read(&log.lock()),
            None => read(&RoomLog::new(self.epoch.clone())),
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Published, BrokerError> {
        let log = self.room(room);
        let mut log = log.lock();
        let key = (draft.user, draft.id);
        if let Some(&seq) = log.ids.get(&key) {
            return Ok(Published { epoch: log.head.epoch.clone(), seq, duplicate: true });
        }
        let (user, id) = key;
        let message =
            StoredMessage { seq: log.head.head + 1, id, user, text: draft.text, ts: now_ms() };
        let seq = message.seq;
        let epoch = log.head.epoch.clone();
        log.append(message.clone(), self.capacity);
        // Delivered under the room lock: the next publish cannot overtake this one.
        self.inbox.deliver(Envelope {
            room: room.clone(),
            event: BusEvent::Message { epoch: epoch.clone(), message },
            trace: draft.trace,
        });
        Ok(Published { epoch, seq, duplicate: false })
    }

    async fn signal(
        &self,
        room: &RoomName,
        user: &UserName,
        state: PresenceState,
        trace: Option<String>,
    ) -> Result<(), BrokerError> {
        self.inbox.deliver(Envelope {
            room: room.clone(),
            event: BusEvent::Presence { user: user.clone(), state },
            trace,
        });
        Ok(())
    }

    async fn subscribe(&self, _room: &RoomName) -> Result<(), BrokerError> {
        // Every publish is delivered to the one local inbox; nothing to subscribe.
        Ok(())
    }

    async fn unsubscribe(&self, _room: &RoomName) {}

    async fn head(
        &self,
        room: &RoomName,
        evidence: Option<Evidence>,
    ) -> Result<RoomHead, BrokerError> {
        Ok(self.read(room, |log| log.head_for(evidence.as_ref())))
    }

    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
        evidence: Option<Evidence>,
    ) -> Result<HistoryPage, BrokerError> {
        Ok(self.read(room, |log| log.page(query, evidence.as_ref())))
    }

    async fn presence_join(
        &self,
        room: &RoomName,
        user: &UserName,
        _session: &str,
    ) -> Result<bool, BrokerError> {
        let mut presence = self.presence.lock();
        match presence.get_mut(room) {
            Some(roster) => Ok(roster.join(user)),
            None => {
                presence.insert(room.clone(), Roster::One(user.clone(), 1));
                Ok(true)
            }
        }
    }

    async fn presence_leave(
        &self,
        room: &RoomName,
        user: &UserName,
        _session: &str,
    ) -> Result<bool, BrokerError> {
        let mut presence = self.presence.lock();
        let Some(roster) = presence.get_mut(room) else { return Ok(false) };
        let last = roster.leave(user);
        if roster.is_empty() {
            presence.remove(room);
        }
        Ok(last)
    }

    async fn members_page(
        &self,
        room: &RoomName,
        after: Option<&UserName>,
        limit: usize,
    ) -> Result<MembersPage, BrokerError> {
        let presence = self.presence.lock();
        let Some(users) = presence.get(room) else { return Ok(MembersPage::default()) };
        let (members, more) = users.page(after, limit.max(1));
        Ok(MembersPage { members, more, count: users.len() as u64 })
    }

    fn is_ready(&self) -> bool {
        true
    }

    async fn report(&self, report: NodeReport) -> Result<(), BrokerError> {
        *self.report.lock() = Some(report);
        Ok(())
    }

    async fn nodes(&self) -> Result<ClusterReport, BrokerError> {
        let nodes = self.report.lock().iter().cloned().collect();
        Ok(ClusterReport { nodes, rooms: self.presence.lock().len() as u64 })
    }

    async fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<RoomsPage, BrokerError> {
        let limit = limit.clamp(1, MAX_ROOMS_PAGE);
        // One node's rooms: a scan of the presence map, O(rooms) per page.
        let mut rooms: Vec<RoomSummary> = self
            .presence
            .lock()
            .iter()
            .filter(|(room, _)| after.is_none_or(|after| *room > after))
            .map(|(room, users)| RoomSummary { room: room.clone(), members: users.len() as u64 })
            .collect();
        rooms.sort_unstable_by(|a, b| a.room.cmp(&b.room));
        let more = rooms.len() > limit;
        rooms.truncate(limit);
        Ok(RoomsPage { rooms, more })
    }

    async fn control(&self, order: Control) -> Result<u64, BrokerError> {
        self.inbox.control(order);
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Envelope>>);

    impl Inbox for Recorder {
        fn deliver(&self, envelope: Envelope) {
            self.0.lock().push(envelope);
        }
        fn lost(&self, _room: &RoomName) {}
        fn bus_state(&self, _up: bool) {}
    }

    fn draft(user: &str, id: &str) -> Draft {
        Draft {
            id: ClientMessageId::parse(id).expect("valid"),
            user: UserName::parse(user).expect("valid"),
            text: format!("text {id}"),
            trace: None,
            witness: None,
        }
    }

    fn room() -> RoomName {
        RoomName::parse("lobby").expect("valid")
    }

    #[tokio::test]
    async fn sequences_and_delivers_in_order() {
        let inbox = Arc::new(Recorder::default());
        let broker = MemoryBroker::new(inbox.clone(), 10);
        for i in 1..=5 {
            let p = broker.publish(&room(), draft("ann", &format!("m{i}"))).await.expect("ok");
            assert_eq!(p.seq, i);
            assert!(!p.duplicate);
        }
        let seqs: Vec<u64> = inbox
            .0
            .lock()
            .iter()
            .map(|e| match &e.event {
                BusEvent::Message { message, .. } => message.seq,
                _ => 0,
            })
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    }

    #[tokio::test]
    async fn idempotent_per_user_and_id() {
        let broker = MemoryBroker::new(Arc::new(Recorder::default()), 10);
        let a = broker.publish(&room(), draft("ann", "x")).await.expect("ok");
        let b = broker.publish(&room(), draft("ann", "x")).await.expect("ok");
        let c = broker.publish(&room(), draft("bob", "x")).await.expect("ok");
        assert_eq!((a.seq, b.seq, b.duplicate, c.seq), (1, 1, true, 2));
    }

    #[tokio::test]
    async fn ring_bounds_history_and_pages() {
        let broker = MemoryBroker::new(Arc::new(Recorder::default()), 5);
        for i in 1..=8 {
            broker.publish(&room(), draft("ann", &format!("m{i}"))).await.expect("ok");
        }
        let head = broker.head(&room(), None).await.expect("ok");
        assert_eq!((head.head, head.first), (8, 4));
        let seqs = |p: &HistoryPage| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
        let latest = broker
            .history(&room(), HistoryQuery::Before { before: None, limit: 2 }, None)
            .await
            .expect("ok");
        assert_eq!((seqs(&latest), latest.more), (vec![7, 8], true));
        let older = broker
            .history(&room(), HistoryQuery::Before { before: Some(7), limit: 10 }, None)
            .await
            .expect("ok");
        assert_eq!((seqs(&older), older.more), (vec![4, 5, 6], false));
        let after = broker
            .history(&room(), HistoryQuery::After { after: 5, limit: 2 }, None)
            .await
            .expect("ok");
        assert_eq!((seqs(&after), after.more), (vec![6, 7], true));
        let trimmed = broker
            .history(&room(), HistoryQuery::After { after: 1, limit: 100 }, None)
            .await
            .expect("ok");
        assert_eq!(seqs(&trimmed), vec![4, 5, 6, 7, 8]);
        // The evicted message's id is forgotten with it.
        let again = broker.publish(&room(), draft("ann", "m1")).await.expect("ok");
        assert!(!again.duplicate);
    }

    #[tokio::test]
    async fn presence_counts_connections_per_user() {
        let broker = MemoryBroker::new(Arc::new(Recorder::default()), 5);
        let ann = UserName::parse("ann").expect("valid");
        assert!(broker.presence_join(&room(), &ann, "s1").await.expect("ok"));
        assert!(!broker.presence_join(&room(), &ann, "s2").await.expect("ok"));
        let page = broker.members_page(&room(), None, 10).await.expect("ok");
        assert_eq!(page, MembersPage { members: vec![ann.clone()], more: false, count: 1 });
        assert!(!broker.presence_leave(&room(), &ann, "s1").await.expect("ok"));
        assert!(broker.presence_leave(&room(), &ann, "s2").await.expect("ok"));
        let page = broker.members_page(&room(), None, 10).await.expect("ok");
        assert_eq!(page, MembersPage::default());
    }

    async fn page(broker: &MemoryBroker, after: Option<&UserName>, limit: usize) -> MembersPage {
        broker.members_page(&room(), after, limit).await.expect("ok")
    }

    #[tokio::test]
    async fn a_room_grows_from_one_user_and_shrinks_back() {
        let broker = MemoryBroker::new(Arc::new(Recorder::default()), 5);
        let [ann, bob] = ["ann", "bob"].map(|u| UserName::parse(u).expect("valid"));
        assert!(broker.presence_join(&room(), &bob, "s1").await.expect("ok"));
        assert_eq!(page(&broker, None, 10).await.members, vec![bob.clone()]);
        assert!(page(&broker, Some(&bob), 10).await.members.is_empty());
        assert_eq!(page(&broker, Some(&ann), 10).await.members, vec![bob.clone()]);
        assert!(broker.presence_join(&room(), &ann, "s2").await.expect("ok"));
        assert!(!broker.presence_join(&room(), &bob, "s3").await.expect("ok"));
        let first = page(&broker, None, 1).await;
        assert_eq!((first.members, first.more, first.count), (vec![ann.clone()], true, 2));
        assert!(broker.presence_leave(&room(), &ann, "s2").await.expect("ok"));
        // bob is still in with two connections.
        assert!(!broker.presence_leave(&room(), &bob, "s1").await.expect("ok"));
        assert_eq!(
            page(&broker, None, 10).await,
            MembersPage { members: vec![bob.clone()], more: false, count: 1 }
        );
        assert!(!broker.presence_leave(&room(), &ann, "s2").await.expect("ok"));
        assert!(broker.presence_leave(&room(), &bob, "s3").await.expect("ok"));
        assert_eq!(page(&broker, None, 10).await, MembersPage::default());
        assert_eq!(broker.rooms(None, 10).await.expect("ok").rooms.len(), 0);
    }

    #[tokio::test]
    async fn reading_an_unused_room_creates_nothing_and_its_epoch_stays() {
        let broker = MemoryBroker::new(Arc::new(Recorder::default()), 5);
        let head = broker.head(&room(), None).await.expect("ok");
        assert_eq!((head.head, head.first, head.lost), (0, 1, false));
        let page = broker
            .history(&room(), HistoryQuery::After { after: 0, limit: 10 }, None)
            .await
            .expect("ok");
        assert!(page.messages.is_empty() && !page.more);
        assert!(broker.rooms.read().is_empty());
        let published = broker.publish(&room(), draft("ann", "m1")).await.expect("ok");
        assert_eq!(
            published.epoch, head.epoch,
            "a client that joined before the first message resumes"
        );
        assert_eq!(broker.head(&room(), None).await.expect("ok").head, 1);
    }

    #[tokio::test]
    async fn members_are_paged_by_name() {
        let broker = MemoryBroker::new(Arc::new(Recorder::default()), 5);
        let users: Vec<UserName> = ["cy", "ann", "bob", "dee", "eve"]
            .iter()
            .map(|u| UserName::parse(u).expect("valid"))
            .collect();
        for (i, user) in users.iter().enumerate() {
            broker.presence_join(&room(), user, &format!("s{i}")).await.expect("ok");
        }
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = broker.members_page(&room(), after.as_ref(), 2).await.expect("ok");
            assert_eq!(page.count, 5);
            assert!(page.members.len() <= 2);
            seen.extend(page.members.iter().map(|u| u.to_string()));
            after = page.members.last().cloned();
            if !page.more {
                break;
            }
        }
        assert_eq!(seen, ["ann", "bob", "cy", "dee", "eve"]);
    }

    #[tokio::test]
    async fn a_witness_it_does_not_hold_is_reported_lost() {
        use palaver_protocol::Witness;
        let broker = MemoryBroker::new(Arc::new(Recorder::default()), 10);
        for i in 1..=3 {
            broker.publish(&room(), draft("ann", &format!("m{i}"))).await.expect("ok");
        }
        let epoch = broker.head(&room(), None).await.expect("ok").epoch;
        let claim = |seq, id: &str| {
            Some(Evidence::client(Witness {
                epoch: epoch.clone(),
                seq,
                id: Some(ClientMessageId::parse(id).expect("valid")),
                user: None,
            }))
        };
        assert!(!broker.head(&room(), claim(3, "m3")).await.expect("ok").lost);
        assert!(broker.head(&room(), claim(3, "m9")).await.expect("ok").lost);
        assert!(broker.head(&room(), claim(4, "m4")).await.expect("ok").lost);
    }

    #[tokio::test]
    async fn rooms_page_by_name_with_member_counts() {
        let broker = MemoryBroker::new(Arc::new(Recorder::default()), 5);
        let users = ["ann", "bob"].map(|u| UserName::parse(u).expect("valid"));
        for (name, members) in [("c", 1), ("a", 2), ("b", 1)] {
            let room = RoomName::parse(name).expect("valid");
            for user in &users[..members] {
                broker.presence_join(&room, user, "s").await.expect("ok");
            }
        }
        let names = |page: &RoomsPage| {
            page.rooms.iter().map(|r| (r.room.to_string(), r.members)).collect::<Vec<_>>()
        };
        let first = broker.rooms(None, 2).await.expect("ok");
        assert_eq!(names(&first), vec![("a".into(), 2), ("b".into(), 1)]);
        assert!(first.more);
        let b = RoomName::parse("b").expect("valid");
        let rest = broker.rooms(Some(&b), 2).await.expect("ok");
        assert_eq!((names(&rest), rest.more), (vec![("c".into(), 1)], false));
    }
}
