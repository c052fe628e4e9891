//! The stored chat message, its per-room sequence number and the history epoch.

use std::{fmt, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::names::{ClientMessageId, UserName};

/// A room's sequence number. Gap-free and strictly increasing within an [`Epoch`];
/// the first message of an epoch has sequence 1, so 0 means "nothing yet".
pub type Seq = u64;

/// Identifies one incarnation of a room's history. It changes whenever the
/// history is recreated (memory backend restarted, Redis lost the room's data),
/// which tells a resuming client that its sequence numbers no longer apply.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Epoch(Arc<str>);

impl Epoch {
    /// Wraps an epoch string received from a client or a store.
    pub fn new(s: impl Into<Arc<str>>) -> Self {
        Epoch(s.into())
    }

    /// The epoch as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

/// Where a resuming client left off: the last sequence it saw, in which epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// The epoch the client's `seq` belongs to.
    pub epoch: Epoch,
    /// The last sequence number the client received.
    pub seq: Seq,
    /// The `id` of the message the client holds at `seq`. Optional (older
    /// clients omit it); with it the server can tell a Redis that came back
    /// behind (and reused `seq` for another message) from a continuous room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<ClientMessageId>,
}

impl Since {
    /// What the client's position says it holds, for the lost-write check.
    pub fn witness(&self) -> Witness {
        Witness { epoch: self.epoch.clone(), seq: self.seq, id: self.id.clone(), user: None }
    }
}

/// A message someone holds (a node delivered it, a client received it): its
/// position and, when known, its identity. Redis can come back *behind* what
/// was delivered (an `everysec` AOF, a snapshot, a lagging replica promoted)
/// and then hand the same sequence numbers to other messages; comparing a
/// witness with what Redis stores at its `seq` detects that, whether or not
/// the room's head has since passed it. Writes are lost as a suffix, so the
/// newest message one holds is the one worth checking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Witness {
    /// Epoch of the message.
    pub epoch: Epoch,
    /// Its sequence number (0: holds nothing, only a position).
    pub seq: Seq,
    /// Its client message id, when known.
    pub id: Option<ClientMessageId>,
    /// Its sender, when known.
    pub user: Option<UserName>,
}

impl Witness {
    /// The witness of a message one holds in full.
    pub fn of(epoch: &Epoch, message: &StoredMessage) -> Self {
        Witness {
            epoch: epoch.clone(),
            seq: message.seq,
            id: Some(message.id.clone()),
            user: Some(message.user.clone()),
        }
    }
}

/// One chat message as sequenced and stored by the broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Position in the room's order.
    pub seq: Seq,
    /// The sender's client message id (unique per sender and room within the history window).
    pub id: ClientMessageId,
    /// Who sent it.
    pub user: UserName,
    /// The text, validated and with control characters stripped.
    pub text: String,
    /// Server time the broker sequenced it, in milliseconds since the Unix epoch.
    pub ts: u64,
}
