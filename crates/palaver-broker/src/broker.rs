//! The [`Broker`] trait every backend implements, and its value types.

use std::sync::Arc;

use async_trait::async_trait;
use palaver_protocol::{
    ClientMessageId, Envelope, Epoch, HistoryQuery, PresenceState, RoomName, Seq, StoredMessage,
    UserName, Witness,
};

use crate::cluster::{ClusterReport, Control, NodeReport, RoomsPage};

/// Where a broker delivers the events of subscribed rooms (the node's hub).
///
/// `deliver` is called in channel order for each room, from the broker's own
/// task; it must not block (the hub only does `try_send`s).
pub trait Inbox: Send + Sync + 'static {
    /// One event of a subscribed room.
    fn deliver(&self, envelope: Envelope);
    /// Events of the room were dropped (the node could not keep up): its
    /// members recover them from history.
    fn lost(&self, room: &RoomName);
    /// The bus connection was lost (`false`) or is back with every room
    /// re-subscribed (`true`). Events published in between were not delivered;
    /// the inbox recovers them from history.
    fn bus_state(&self, up: bool);

    /// A control order for this node (e.g. disconnect a user's connections).
    /// Like `deliver`, it must not block.
    fn control(&self, _order: Control) {}
}

/// A message to sequence: everything but the sequence number and timestamp.
#[derive(Debug, Clone)]
pub struct Draft {
    /// The sender's client message id (idempotency key, with `user`).
    pub id: ClientMessageId,
    /// The sender.
    pub user: UserName,
    /// Validated text.
    pub text: String,
    /// W3C `traceparent` of the publishing span.
    pub trace: Option<String>,
    /// The newest message the publishing node holds in the room: if Redis
    /// no longer has it, the room moves to a new epoch before this message
    /// is numbered, so no sequence number names two messages.
    pub witness: Option<Witness>,
}

/// A message someone holds, shown to the store on a read so it can tell
/// whether it lost writes (see [`Witness`]).
///
/// When the store no longer has the witness's message in the current epoch,
/// it moves the room to a new epoch (announced on the bus to every node) and
/// the read reports the new one. A client's word can be false, so evidence
/// from a client resets a room at most once per cooldown (it cannot be used
/// to reset a room over and over); the node's own evidence always does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Evidence {
    /// What is held.
    pub witness: Witness,
    /// True when a client claims it (its `since`), false when this node
    /// delivered it.
    pub from_client: bool,
}

impl Evidence {
    /// Evidence of this node's own.
    pub fn node(witness: Witness) -> Self {
        Evidence { witness, from_client: false }
    }

    /// Evidence a client brought.
    pub fn client(witness: Witness) -> Self {
        Evidence { witness, from_client: true }
    }
}

/// The outcome of a publish.
#[derive(Debug, Clone)]
pub struct Published {
    /// The room's epoch.
    pub epoch: Epoch,
    /// The message's sequence number (the original one for a duplicate).
    pub seq: Seq,
    /// True when this (user, id) was already sequenced; nothing new was stored or sent.
    pub duplicate: bool,
}

/// Where a room's history stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomHead {
    /// Current epoch.
    pub epoch: Epoch,
    /// Latest sequence number (0 when the room has no messages).
    pub head: Seq,
    /// Oldest sequence number still retained (`head + 1` when none are).
    pub first: Seq,
    /// True when the read's [`Evidence`] names a message of `epoch` that the
    /// store does not hold (only when a reset was refused by the cooldown:
    /// otherwise `epoch` is already the new one). Whoever holds it cannot
    /// resume in this epoch.
    pub lost: bool,
}

impl RoomHead {
    /// A head with nothing lost.
    pub fn new(epoch: Epoch, head: Seq, first: Seq) -> Self {
        RoomHead { epoch, head, first, lost: false }
    }
}

/// A page of history plus where the room stands.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// Epoch, head and retention of the room when the page was read.
    pub head: RoomHead,
    /// Messages, ascending by sequence.
    pub messages: Vec<StoredMessage>,
    /// True when more messages lie beyond the page in the direction read.
    pub more: bool,
}

/// A page of a room's members (users present on some node), ascending by
/// name, with the room's member count: what `joined` and `members` carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembersPage {
    /// Users named after the page's cursor, at most the page's limit.
    pub members: Vec<UserName>,
    /// True when users named after the last one remain.
    pub more: bool,
    /// Users present in the room, cluster-wide.
    pub count: u64,
}

/// Broker failures. `Unavailable` is retryable and reaches clients as the
/// `unavailable` error code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The backing store or bus cannot be reached right now.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The store returned something this node cannot understand.
    #[error("broker data corrupt: {0}")]
    Corrupt(String),
}

/// Shared handle to a broker.
pub type SharedBroker = Arc<dyn Broker>;

/// Sequencing, history, presence and the bus for one room namespace.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Assigns the room's next sequence number, appends the message to history
    /// and publishes it to every subscribed node, atomically: subscribers see
    /// messages in sequence order. A repeated (user, id) within the history
    /// window returns the original sequence with `duplicate: true`.
    async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Published, BrokerError>;

    /// Publishes an ephemeral presence event (not sequenced, not stored).
    async fn signal(
        &self,
        room: &RoomName,
        user: &UserName,
        state: PresenceState,
        trace: Option<String>,
    ) -> Result<(), BrokerError>;

    /// Adds one local interest in the room; the first one subscribes this node
    /// to the room's channel. Returns once live events will be delivered.
    async fn subscribe(&self, room: &RoomName) -> Result<(), BrokerError>;

    /// Drops one local interest; the last one unsubscribes the node.
    async fn unsubscribe(&self, room: &RoomName);

    /// Reads where the room's history stands. With `evidence`, first checks
    /// that the store still holds that message (see [`Evidence`]).
    async fn head(
        &self,
        room: &RoomName,
        evidence: Option<Evidence>,
    ) -> Result<RoomHead, BrokerError>;

    /// Reads a page of history, checking `evidence` first as [`Broker::head`] does.
    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
        evidence: Option<Evidence>,
    ) -> Result<HistoryPage, BrokerError>;

    /// Records one connection of `user` in the room; true when it is the
    /// user's first in the room across the cluster.
    async fn presence_join(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError>;

    /// Removes one connection of `user`; true when it was the user's last.
    async fn presence_leave(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError>;

    /// Users present in the room across the cluster named after `after`,
    /// ascending, at most `limit` (at least 1), and how many are present in
    /// all: O(log N + limit) in the room's size N, so a join in a big room
    /// costs no more than one in a small one.
    async fn members_page(
        &self,
        room: &RoomName,
        after: Option<&UserName>,
        limit: usize,
    ) -> Result<MembersPage, BrokerError>;

    /// How many users are present in the room across the cluster, O(log N).
    async fn member_count(&self, room: &RoomName) -> Result<u64, BrokerError> {
        Ok(self.members_page(room, None, 1).await?.count)
    }

    /// Whether the broker can serve traffic now (for `/readyz`).
    fn is_ready(&self) -> bool;

    // The server API's view of the cluster (see [`crate::cluster`]).

    /// Announces this node's numbers; the gateway calls it periodically. In
    /// Redis the report (and this node's list of active rooms) expires unless
    /// refreshed, so a dead node drops out of [`Broker::nodes`] on its own.
    async fn report(&self, report: NodeReport) -> Result<(), BrokerError>;

    /// Every live node's latest report, and the distinct active rooms.
    async fn nodes(&self) -> Result<ClusterReport, BrokerError>;

    /// Active rooms (members on some node) named after `after`, ascending,
    /// at most `limit` (capped at [`crate::cluster::MAX_ROOMS_PAGE`]).
    async fn rooms(&self, after: Option<&RoomName>, limit: usize)
    -> Result<RoomsPage, BrokerError>;

    /// Carries an order to every node's inbox (this one's included). Returns
    /// how many nodes received it.
    async fn control(&self, order: Control) -> Result<u64, BrokerError>;
}
