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
///
/// Written as an internally tagged object (`"kind"` beside the fields); read
/// through [`RawEvent`], because serde reads an internally tagged enum by
/// first copying the whole object into a generic tree, which was most of the
/// cost of reading an envelope off the bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", try_from = "RawEvent")]
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

/// A [`BusEvent`] as read: the tag and every variant's fields, each optional.
#[derive(Deserialize)]
struct RawEvent {
    kind: Kind,
    epoch: Option<Epoch>,
    message: Option<StoredMessage>,
    user: Option<UserName>,
    state: Option<PresenceState>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Message,
    Reset,
    Presence,
}

impl TryFrom<RawEvent> for BusEvent {
    type Error = String;

    fn try_from(raw: RawEvent) -> Result<Self, String> {
        let missing = |field: &str| format!("missing field `{field}`");
        Ok(match raw.kind {
            Kind::Message => BusEvent::Message {
                epoch: raw.epoch.ok_or_else(|| missing("epoch"))?,
                message: raw.message.ok_or_else(|| missing("message"))?,
            },
            Kind::Reset => BusEvent::Reset { epoch: raw.epoch.ok_or_else(|| missing("epoch"))? },
            Kind::Presence => BusEvent::Presence {
                user: raw.user.ok_or_else(|| missing("user"))?,
                state: raw.state.ok_or_else(|| missing("state"))?,
            },
        })
    }
}

impl Envelope {
    /// Serialises the envelope for the bus.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("envelopes always serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::ClientMessageId;

    fn read(json: &str) -> Result<Envelope, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn every_event_round_trips() {
        let room = RoomName::parse("lobby").expect("valid");
        let events = [
            BusEvent::Message {
                epoch: Epoch::new("e1"),
                message: StoredMessage {
                    seq: 7,
                    id: ClientMessageId::parse("c-1").expect("valid"),
                    user: UserName::parse("ann").expect("valid"),
                    text: "hi \"you\"".into(),
                    ts: 17,
                },
            },
            BusEvent::Reset { epoch: Epoch::new("e2") },
            BusEvent::Presence {
                user: UserName::parse("bob").expect("valid"),
                state: PresenceState::Join,
            },
        ];
        for event in events {
            for trace in [None, Some("00-ab-cd-01".to_owned())] {
                let envelope = Envelope { room: room.clone(), event: event.clone(), trace };
                assert_eq!(read(&envelope.to_json()).expect("reads back"), envelope);
            }
        }
    }

    #[test]
    fn fields_in_any_order_and_unknown_ones_are_read() {
        let json = r#"{"event":{"epoch":"e","x":1,"kind":"reset"},"room":"r","future":true}"#;
        assert_eq!(read(json).expect("reads").event, BusEvent::Reset { epoch: Epoch::new("e") });
    }

    #[test]
    fn a_malformed_event_is_an_error() {
        for (json, why) in [
            (r#"{"room":"r","event":{"kind":"message","epoch":"e"}}"#, "missing field `message`"),
            (r#"{"room":"r","event":{"kind":"reset"}}"#, "missing field `epoch`"),
            (r#"{"room":"r","event":{"kind":"presence","user":"u"}}"#, "missing field `state`"),
            (r#"{"room":"r","event":{"kind":"nope","epoch":"e"}}"#, "unknown variant"),
            (r#"{"room":"r","event":{"epoch":"e"}}"#, "missing field `kind`"),
            (
                r#"{"room":"r","event":{"kind":"presence","user":"<x>","state":"join"}}"#,
                "not allowed",
            ),
        ] {
            let err = read(json).expect_err(json).to_string();
            assert!(err.contains(why), "{json}: {err}");
        }
    }
}
