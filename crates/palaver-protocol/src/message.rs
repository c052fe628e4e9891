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
