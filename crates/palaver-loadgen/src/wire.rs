//! The few Palaver frames the load generator writes, and a fast reader for the
//! frames it receives.
//!
//! Receivers see every delivery, so reading them is the loadgen's hot path:
//! instead of decoding whole `ServerFrame`s, [`scan`] finds the frame `type`
//! and, for `message`, the `seq` and `text` values by scanning for their keys.
//! That is sound for frames the server encodes: keys are fixed, and a quote
//! inside any string value is escaped, so `"seq":` or `"text":"` can only
//! match a real key. A text containing escapes falls back to `serde_json`.

use std::{borrow::Cow, fmt::Write};

use serde::Deserialize;

/// What a server frame is, with the fields the accounting needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent<'a> {
    /// A chat message: its room sequence number and text.
    Message {
        /// Room sequence number.
        seq: u64,
        /// Message text (unescaped).
        text: Cow<'a, str>,
    },
    /// The server sequenced one of our sends.
    Ack,
    /// The first frame of a connection.
    Welcome,
    /// A join succeeded; `seq` is the room's head at that moment.
    Joined {
        /// The room's latest sequence number.
        seq: u64,
    },
    /// A refused request, with its stable code.
    Error {
        /// The `code` field.
        code: &'a str,
        /// The `ref` field: the refused request's `id` (or its type).
        reference: Option<&'a str>,
    },
    /// Presence, typing, pong, history, left...: counted, not examined.
    Other,
}

/// Reads a server frame; `None` when it is not a JSON object with a `type`.
pub fn scan(frame: &str) -> Option<ServerEvent<'_>> {
    match string_field(frame, "\"type\":\"")? {
        "message" => {
            let seq = number_field(frame, "\"seq\":")?;
            let text = text_field(frame)?;
            Some(ServerEvent::Message { seq, text })
        }
        "ack" => Some(ServerEvent::Ack),
        "welcome" => Some(ServerEvent::Welcome),
        "joined" => Some(ServerEvent::Joined { seq: number_field(frame, "\"seq\":")? }),
        "error" => Some(ServerEvent::Error {
            code: string_field(frame, "\"code\":\"")?,
            reference: string_field(frame, "\"ref\":\""),
        }),
        _ => Some(ServerEvent::Other),
    }
}

/// The value of a string field without escapes, found by its `"key":"` prefix.
fn string_field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let start = frame.find(key)? + key.len();
    let rest = &frame[start..];
    let end = rest.find(['"', '\\'])?;
    (rest.as_bytes()[end] == b'"').then(|| &rest[..end])
}

/// The value of an unsigned integer field, found by its `"key":` prefix.
fn number_field(frame: &str, key: &str) -> Option<u64> {
    let start = frame.find(key)? + key.len();
    let rest = &frame[start..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The `text` field, borrowed when it has no escapes.
fn text_field(frame: &str) -> Option<Cow<'_, str>> {
    const KEY: &str = "\"text\":\"";
    let start = frame.find(KEY)? + KEY.len();
    let rest = &frame[start..];
    let end = rest.find(['"', '\\'])?;
    if rest.as_bytes()[end] == b'"' {
        return Some(Cow::Borrowed(&rest[..end]));
    }
    #[derive(Deserialize)]
    struct TextOnly<'a> {
        #[serde(borrow)]
        text: Cow<'a, str>,
    }
    serde_json::from_str::<TextOnly>(frame).ok().map(|t| t.text)
}

/// Appends a `join` frame to `out`.
pub fn write_join(out: &mut String, room: &str) {
    // Writing to a String cannot fail; room names are generated, never need escaping.
    let _ = write!(out, r#"{{"type":"join","room":"{room}"}}"#);
}

/// Appends a `send` frame to `out`; `text` must need no JSON escaping (stamps don't).
pub fn write_send(out: &mut String, room: &str, id: &str, text: &str) {
    let _ = write!(out, r#"{{"type":"send","room":"{room}","id":"{id}","text":"{text}"}}"#);
}

#[cfg(test)]
mod tests {
    use super::*;
    use palaver_protocol::{
        ClientFrame, ClientMessageId, Epoch, ErrorCode, Frame, Limits, RoomName, ServerFrame,
        StoredMessage, UserName,
    };

    fn message_frame(text: &str, seq: u64) -> Frame {
        let msg = StoredMessage {
            seq,
            id: ClientMessageId::parse("a\"b").expect("valid id"),
            user: UserName::parse("lg1").expect("valid user"),
            text: text.into(),
            ts: 1,
        };
        Frame::message(&RoomName::parse("lg-0").expect("valid"), &Epoch::new("e\"1"), &msg)
    }

    #[test]
    fn scans_messages_the_server_encodes() {
        let frame = message_frame("0000000a:1:2:3:xxx", 42);
        assert_eq!(
            scan(frame.as_str()),
            Some(ServerEvent::Message { seq: 42, text: Cow::Borrowed("0000000a:1:2:3:xxx") })
        );
    }

    #[test]
    fn escaped_text_falls_back_to_serde() {
        let frame = message_frame("say \"seq\":9 \\ \"text\":\"no\"", 7);
        assert_eq!(
            scan(frame.as_str()),
            Some(ServerEvent::Message {
                seq: 7,
                text: Cow::Owned("say \"seq\":9 \\ \"text\":\"no\"".into())
            })
        );
    }

    #[test]
    fn scans_control_frames() {
        let welcome = ServerFrame::Welcome {
            session: "s".into(),
            node: "n".into(),
            user: UserName::parse("lg0").expect("valid"),
            protocol: 1,
        };
        assert_eq!(scan(welcome.encode().as_str()), Some(ServerEvent::Welcome));
        let joined = ServerFrame::Joined {
            room: RoomName::parse("r").expect("valid"),
            epoch: Epoch::new("e"),
            seq: 12,
            members: vec![],
            member_count: 0,
            members_more: false,
            recovered: true,
        };
        assert_eq!(scan(joined.encode().as_str()), Some(ServerEvent::Joined { seq: 12 }));
        let error = ServerFrame::error(ErrorCode::RateLimited, "slow", Some("0000000a-1-2".into()));
        assert_eq!(
            scan(error.encode().as_str()),
            Some(ServerEvent::Error { code: "rate_limited", reference: Some("0000000a-1-2") })
        );
        let error = ServerFrame::error(ErrorCode::BadJson, "bad", None);
        assert_eq!(
            scan(error.encode().as_str()),
            Some(ServerEvent::Error { code: "bad_json", reference: None })
        );
        assert_eq!(scan(ServerFrame::Pong.encode().as_str()), Some(ServerEvent::Other));
        let ack = ServerFrame::Ack {
            id: ClientMessageId::parse("x").expect("valid"),
            room: RoomName::parse("r").expect("valid"),
            epoch: palaver_protocol::Epoch::new("e"),
            seq: 1,
            duplicate: false,
        };
        assert_eq!(scan(ack.encode().as_str()), Some(ServerEvent::Ack));
    }

    #[test]
    fn rejects_garbage() {
        for frame in ["", "hello", "{}", r#"{"type":5}"#, r#"{"type":"message","seq":"x"}"#] {
            assert_eq!(scan(frame), None, "{frame}");
        }
    }

    #[test]
    fn written_frames_are_valid_client_frames() {
        let mut out = String::new();
        write_join(&mut out, "lg-3");
        assert!(matches!(
            ClientFrame::decode(&out, &Limits::default()),
            Ok(ClientFrame::Join { since: None, .. })
        ));
        out.clear();
        write_send(&mut out, "lg-3", "0000000a-1-2", "0000000a:1:2:3:xx");
        match ClientFrame::decode(&out, &Limits::default()) {
            Ok(ClientFrame::Send { room, text, id }) => {
                assert_eq!(room.as_str(), "lg-3");
                assert_eq!(id.as_str(), "0000000a-1-2");
                assert_eq!(text, "0000000a:1:2:3:xx");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
