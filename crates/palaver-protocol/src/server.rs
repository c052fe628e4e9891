//! Frames the server sends, and [`Frame`], an encoded frame shared by reference.
//!
//! A message is encoded once per node and the same bytes are queued to every
//! member, so `Frame` is a cheaply clonable handle to immutable UTF-8 JSON.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::{
    client::HistoryQuery,
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
        /// Users present in the room on every node: all of them in a small
        /// room, else the first [`crate::limits::JOINED_MEMBERS`] by name.
        members: Vec<UserName>,
        /// Users present in the room on every node.
        #[serde(default)]
        member_count: u64,
        /// True when `members` is only the first page (read on with `members`).
        #[serde(default)]
        members_more: bool,
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
    /// Each list holds at most [`crate::limits::PRESENCE_BATCH_NAMES`] users.
    PresenceBatch {
        /// Room.
        room: RoomName,
        /// Users whose first connection joined since the last batch.
        joined: Vec<UserName>,
        /// Users whose last connection left since the last batch.
        left: Vec<UserName>,
        /// Users who were typing.
        typing: Vec<UserName>,
        /// Users present in the room on every node when the batch was sent.
        #[serde(default)]
        member_count: u64,
        /// True when more changed than the lists hold: a client that keeps
        /// the whole member list reads it again with `members`.
        #[serde(default)]
        truncated: bool,
    },
    /// A page of the room's members, ascending by name.
    Members {
        /// Room.
        room: RoomName,
        /// Users present in the room on some node.
        members: Vec<UserName>,
        /// True when users named after the last one remain.
        more: bool,
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

#[derive(Serialize)]
struct HistoryFrameRef<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    room: &'a RoomName,
    epoch: &'a Epoch,
    messages: &'a [StoredMessage],
    more: bool,
}

/// Counts what serde_json writes, to size an encoding without making it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn encoded_len(value: &impl Serialize) -> usize {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).expect("server frames always serialise");
    counter.0
}

impl Frame {
    /// Encodes the `history` page answering `query`, cut to at most
    /// `max_bytes` when the messages would not fit: a `before` page keeps its
    /// newest messages, an `after` page its oldest, and a cut page says
    /// `more: true`, so the client pages on from it. At least one message is
    /// kept, so paging always makes progress.
    pub fn history(
        room: &RoomName,
        epoch: &Epoch,
        messages: &[StoredMessage],
        more: bool,
        query: &HistoryQuery,
        max_bytes: usize,
    ) -> Frame {
        // `"more":false` is the longer of the two endings.
        let empty = HistoryFrameRef { kind: "history", room, epoch, messages: &[], more: false };
        let mut total = encoded_len(&empty);
        let keep_newest = matches!(query, HistoryQuery::Before { .. });
        let mut ordered: Box<dyn Iterator<Item = &StoredMessage>> =
            if keep_newest { Box::new(messages.iter().rev()) } else { Box::new(messages.iter()) };
        let mut kept = 0;
        for message in &mut ordered {
            // A comma between messages.
            let len = encoded_len(message) + usize::from(kept > 0);
            if kept > 0 && total + len > max_bytes {
                break;
            }
            total += len;
            kept += 1;
        }
        let page = if keep_newest { &messages[messages.len() - kept..] } else { &messages[..kept] };
        let more = more || kept < messages.len();
        let frame = HistoryFrameRef { kind: "history", room, epoch, messages: page, more };
        Frame(Bytes::from(serde_json::to_vec(&frame).expect("history frames always serialise")))
    }

    /// The length [`Frame::message`] would encode to, without encoding it.
    pub fn message_len(room: &RoomName, epoch: &Epoch, msg: &StoredMessage) -> usize {
        encoded_len(&MessageFrameRef {
            kind: "message",
            room,
            epoch,
            seq: msg.seq,
            id: &msg.id,
            user: &msg.user,
            text: &msg.text,
            ts: msg.ts,
        })
    }

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
        assert_eq!(Frame::message_len(&room_of(&slow), &Epoch::new("e1"), &msg), fast.len());
    }

    fn page(count: u64) -> Vec<StoredMessage> {
        (1..=count).map(|seq| StoredMessage { seq, text: "x".repeat(100), ..sample() }).collect()
    }

    fn history(
        messages: &[StoredMessage],
        query: HistoryQuery,
        max: usize,
    ) -> (Vec<u64>, bool, usize) {
        let (room, epoch) = (RoomName::parse("lobby").expect("valid"), Epoch::new("e1"));
        let frame = Frame::history(&room, &epoch, messages, false, &query, max);
        match ServerFrame::decode(frame.as_str()).expect("decodes") {
            ServerFrame::History { messages, more, .. } => {
                (messages.iter().map(|m| m.seq).collect(), more, frame.len())
            }
            other => panic!("not a history page: {other:?}"),
        }
    }

    #[test]
    fn history_pages_are_cut_to_their_budget() {
        let messages = page(10);
        let before = HistoryQuery::Before { before: None, limit: 10 };
        let after = HistoryQuery::After { after: 0, limit: 10 };
        let (all, more, whole) = history(&messages, before, usize::MAX);
        assert_eq!((all, more), ((1..=10).collect(), false));
        // The uncut page is byte for byte the enum's encoding.
        let (room, epoch) = (RoomName::parse("lobby").expect("valid"), Epoch::new("e1"));
        let frame = Frame::history(&room, &epoch, &messages, false, &before, usize::MAX);
        let slow = ServerFrame::History { room, epoch, messages: messages.clone(), more: false };
        assert_eq!(frame, slow.encode());
        assert_eq!(history(&messages, before, whole), ((1..=10).collect(), false, whole));

        let (newest, more, len) = history(&messages, before, whole / 2);
        assert!(more && len <= whole / 2 && newest.len() < 10);
        assert_eq!(newest, ((11 - newest.len() as u64)..=10).collect::<Vec<_>>());
        let (oldest, more, len) = history(&messages, after, whole / 2);
        assert!(more && len <= whole / 2);
        assert_eq!(oldest, (1..=oldest.len() as u64).collect::<Vec<_>>());
        // Never empty: one message, however small the budget.
        assert_eq!(history(&messages, before, 1).0, [10]);
        assert_eq!(history(&messages, after, 1).0, [1]);
    }

    fn room_of(frame: &ServerFrame) -> RoomName {
        match frame {
            ServerFrame::Message { room, .. } => room.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn members_wire_shape() {
        let room = RoomName::parse("big").expect("valid");
        let ann = UserName::parse("ann").expect("valid");
        let joined = ServerFrame::Joined {
            room: room.clone(),
            epoch: Epoch::new("e"),
            seq: 4,
            members: vec![ann.clone()],
            member_count: 250,
            members_more: true,
            recovered: true,
        };
        assert_eq!(
            joined.encode().as_str(),
            r#"{"type":"joined","room":"big","epoch":"e","seq":4,"members":["ann"],"member_count":250,"members_more":true,"recovered":true}"#
        );
        // A frame from before `member_count` still decodes.
        let old =
            r#"{"type":"joined","room":"big","epoch":"e","seq":4,"members":[],"recovered":true}"#;
        assert!(matches!(
            ServerFrame::decode(old),
            Ok(ServerFrame::Joined { member_count: 0, members_more: false, .. })
        ));
        let page = ServerFrame::Members { room, members: vec![ann], more: false };
        assert_eq!(
            page.encode().as_str(),
            r#"{"type":"members","room":"big","members":["ann"],"more":false}"#
        );
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
