//! Frames the server sends, and [`Frame`], an encoded frame shared by reference.
//!
//! A message is encoded once per node and the same bytes are queued to every
//! member, so `Frame` is a cheaply clonable handle to immutable UTF-8 JSON.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    codes::ErrorCode,
    message::{Epoch, Seq, StoredMessage},
    names::{ClientMessageId, RoomName, UserName},
};

/// What happened to a member, in `presence` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceState {
    /// The user's first connection joined the room.
    Join,
    /// The user's last connection left the room (or its node's entry expired).
    Leave,
    /// The user is typing (ephemeral; clients hide it after a few seconds).
    Typing,
}

/// Every frame the server sends. Field names are the wire names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// First frame on every connection.
    Welcome {
        /// This connection's session id.
        session: String,
        /// The node serving the connection.
        node: String,
        /// The identity the server gave the connection.
        user: UserName,
        /// Protocol version.
        protocol: u32,
    },
    /// The join succeeded. Replayed messages (if `since` was given) follow, then live ones.
    Joined {
        /// Joined room.
        room: RoomName,
        /// The room's current history epoch.
        epoch: Epoch,
        /// The room's latest sequence number when the join happened.
        seq: Seq,
        /// Users present in the room, on every node.
        members: Vec<UserName>,
        /// True when every message after the client's `since` will be replayed
        /// (or there was no `since`); false when some are gone or the epoch changed.
        recovered: bool,
    },
    /// The leave succeeded.
    Left {
        /// Left room.
        room: RoomName,
    },
    /// A chat message (live or replayed), in sequence order per room.
    Message {
        /// Room it belongs to.
        room: RoomName,
        /// History epoch of `seq`.
        epoch: Epoch,
        /// Sequence number.
        seq: Seq,
        /// Sender's client message id.
        id: ClientMessageId,
        /// Sender.
        user: UserName,
        /// Text.
        text: String,
        /// Server time in ms since the Unix epoch.
        ts: u64,
    },
    /// A member joined, left or is typing.
    Presence {
        /// Room.
        room: RoomName,
        /// Who.
        user: UserName,
        /// What.
        state: PresenceState,
    },
    /// Presence changes of a big room, coalesced (sent at most once a second
    /// instead of one `presence` per change). Apply `joined`, then `left`.
    PresenceBatch {
        /// Room.
        room: RoomName,
        /// Users whose first connection joined since the last batch.
        joined: Vec<UserName>,
        /// Users whose last connection left since the last batch.
        left: Vec<UserName>,
        /// Users who were typing.
        typing: Vec<UserName>,
    },
    /// The server sequenced the client's `send`.
    Ack {
        /// The client's message id.
        id: ClientMessageId,
        /// Room.
        room: RoomName,
        /// Epoch of `seq` (a lost-write reset can move the room to a new
        /// epoch between two sends).
        epoch: Epoch,
        /// Assigned sequence number.
        seq: Seq,
        /// True when this id was already sequenced earlier and no new message was created.
        duplicate: bool,
    },
    /// A page of history, ascending by sequence.
    History {
        /// Room.
        room: RoomName,
        /// History epoch of the messages.
        epoch: Epoch,
        /// The messages.
        messages: Vec<HistoryItem>,
        /// True when older (for `before`) or newer (for `after`) messages remain.
        more: bool,
    },
    /// Reply to an application-level `ping`.
    Pong,
    /// A request was refused; the connection stays open.
    Error {
        /// Stable code from `docs/protocol.md`.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// The request's `id` (or `type`) this error refers to.
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none", default)]
        reference: Option<String>,
        /// Whether the same request may succeed later.
        retryable: bool,
    },
}

/// A message inside a `history` page (the room and epoch are on the page).
pub type HistoryItem = StoredMessage;

impl ServerFrame {
    /// Builds an `error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> Self {
        ServerFrame::Error { code, message: message.into(), reference, retryable: code.retryable() }
    }

    /// Encodes the frame as JSON.
    pub fn encode(&self) -> Frame {
        Frame(Bytes::from(serde_json::to_vec(self).expect("server frames always serialise")))
    }

    /// Decodes a server frame (used by clients: tests, the load generator).
    pub fn decode(text: &str) -> Result<ServerFrame, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// An encoded server frame: immutable UTF-8 JSON behind a reference count, so
/// one encoding is shared by every recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame(Bytes);

#[derive(Serialize)]
struct MessageFrameRef<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a RoomName,
    epoch: &'a Epoch,
    seq: Seq,
    id: &'a ClientMessageId,
    user: &'a UserName,
    text: &'a str,
    ts: u64,
}

impl Frame {
    /// Encodes a `message` frame without cloning the message.
    pub fn message(room: &RoomName, epoch: &Epoch, msg: &StoredMessage) -> Frame {
        let frame = MessageFrameRef {
            kind: "message",
            room,
            epoch,
            seq: msg.seq,
            id: &msg.id,
            user: &msg.user,
            text: &msg.text,
            ts: msg.ts,
        };
        Frame(Bytes::from(serde_json::to_vec(&frame).expect("message frames always serialise")))
    }

    /// The frame's JSON text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("frames are built from serde_json output")
    }

    /// The frame's bytes (valid UTF-8).
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }

    /// Length in bytes, for queue accounting.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the frame is empty (never, for frames built here).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredMessage {
        StoredMessage {
            seq: 3,
            id: ClientMessageId::parse("c-1").expect("valid"),
            user: UserName::parse("ann").expect("valid"),
            text: "hi \"there\" <b>".into(),
            ts: 1_700_000_000_000,
        }
    }

    #[test]
    fn message_frame_matches_enum_encoding() {
        let room = RoomName::parse("lobby").expect("valid");
        let epoch = Epoch::new("e1");
        let msg = sample();
        let fast = Frame::message(&room, &epoch, &msg);
        let slow = ServerFrame::Message {
            room,
            epoch,
            seq: msg.seq,
            id: msg.id.clone(),
            user: msg.user.clone(),
            text: msg.text.clone(),
            ts: msg.ts,
        };
        assert_eq!(ServerFrame::decode(fast.as_str()).expect("decodes"), slow);
        assert_eq!(fast, slow.encode());
    }

    #[test]
    fn error_frame_wire_shape() {
        let f = ServerFrame::error(ErrorCode::NotJoined, "join first", Some("c-2".into())).encode();
        assert_eq!(
            f.as_str(),
            r#"{"type":"error","code":"not_joined","message":"join first","ref":"c-2","retryable":false}"#
        );
    }
}
