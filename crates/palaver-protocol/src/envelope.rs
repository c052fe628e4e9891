//! The envelope that carries room events across the cluster bus.
//!
//! Sequenced chat messages and ephemeral events (presence, typing) travel on the
//! same per-room channel, so a node needs one subscription per room. The
//! envelope also carries the W3C trace context of the publish, so the fan-out
//! on every node joins the sender's trace.

use serde::{Deserialize, Serialize};

use crate::{
    message::{Epoch, StoredMessage},
    names::{RoomName, UserName},
    server::PresenceState,
};

/// One event on a room's channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The room the event belongs to.
    pub room: RoomName,
    /// What happened.
    pub event: BusEvent,
    /// W3C `traceparent` of the span that published the event, if tracing is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// The payload of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusEvent {
    /// A sequenced, stored chat message.
    Message {
        /// Epoch of the message's sequence number.
        epoch: Epoch,
        /// The message.
        message: StoredMessage,
    },
    /// The room moved to a new epoch because Redis was found behind what had
    /// been delivered (lost writes): every node sends its members back to
    /// catch-up, which tells them `recovered: false` at the new epoch.
    Reset {
        /// The room's new epoch.
        epoch: Epoch,
    },
    /// A presence change or typing notice (not sequenced, not stored).
    Presence {
        /// Who.
        user: UserName,
        /// What.
        state: PresenceState,
    },
}

impl Envelope {
    /// Serialises the envelope for the bus.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("envelopes always serialise")
    }
}
