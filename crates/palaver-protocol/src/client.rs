//! Frames a client sends, and the decoder that validates them.
//!
//! Decoding is one pass: the JSON is read into a flat struct of optional
//! fields, then the `type` picks which fields are required. This keeps error
//! reporting precise (`bad_json` vs `unknown_type` vs `missing_field`) without
//! parsing twice, and ignores unknown fields so newer clients still work.

use serde::Deserialize;

use crate::{
    codes::ErrorCode,
    limits::{DEFAULT_HISTORY_LIMIT, DEFAULT_MEMBERS_LIMIT, Limits, MAX_MEMBERS_LIMIT},
    message::{Seq, Since},
    names::{ClientMessageId, NameError, RoomName, UserName},
};

/// A validated request from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientFrame {
    /// Join a room; with `since`, replay what was missed after it.
    Join {
        /// Room to join.
        room: RoomName,
        /// Where the client left off, if it is resuming.
        since: Option<Since>,
    },
    /// Leave a room.
    Leave {
        /// Room to leave.
        room: RoomName,
    },
    /// Post a message to a joined room.
    Send {
        /// Target room.
        room: RoomName,
        /// Message text (control characters other than newline and tab stripped).
        text: String,
        /// Client message id; a retry with the same id is acknowledged, not duplicated.
        id: ClientMessageId,
    },
    /// Tell the room the user is typing.
    Typing {
        /// Room the user is typing in.
        room: RoomName,
    },
    /// Read a page of the room's history.
    History {
        /// Room to read.
        room: RoomName,
        /// Which page.
        query: HistoryQuery,
    },
    /// Read a page of the room's members (users present cluster-wide), by name.
    Members {
        /// Room to read.
        room: RoomName,
        /// Exclusive lower bound: the last user of the previous page.
        after: Option<UserName>,
        /// At most this many users.
        limit: u32,
    },
    /// Authenticate with a token (the alternative to `?token=` on the URL).
    Auth {
        /// The bearer token.
        token: String,
    },
    /// Application-level ping; answered with `pong` (for clients that cannot see WebSocket pings).
    Ping,
}

/// Which page of history to read. Messages are always returned in ascending order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The latest `limit` messages with a sequence below `before` (or the latest overall).
    Before {
        /// Exclusive upper bound; `None` means the newest message.
        before: Option<Seq>,
        /// At most this many messages.
        limit: u32,
    },
    /// The earliest `limit` messages with a sequence above `after` (gap filling).
    After {
        /// Exclusive lower bound.
        after: Seq,
        /// At most this many messages.
        limit: u32,
    },
}

/// A refused frame: the code and message for the `error` reply, and the client's
/// id (or frame type) it refers to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct DecodeError {
    /// Stable error code.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// The request's `id` if it had a readable one, else its `type`.
    pub reference: Option<String>,
    /// The valid room a room request names, when a later field is what failed:
    /// a private room must be refused (`forbidden`) before its fields are judged.
    pub room: Option<RoomName>,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>, reference: Option<String>) -> Self {
        DecodeError { code, message: message.into(), reference, room: None }
    }
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    room: Option<String>,
    text: Option<String>,
    id: Option<String>,
    since: Option<Since>,
    before: Option<Seq>,
    after: Option<RawAfter>,
    limit: Option<u32>,
    token: Option<String>,
}

/// `after` is a sequence number in `history` and a user name in `members`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAfter {
    Seq(Seq),
    User(String),
}

impl ClientFrame {
    /// Decodes and validates one text frame.
    pub fn decode(text: &str, limits: &Limits) -> Result<ClientFrame, DecodeError> {
        let raw: RawFrame = serde_json::from_str(text).map_err(|e| {
            let code = match e.classify() {
                serde_json::error::Category::Data => ErrorCode::InvalidField,
                _ => ErrorCode::BadJson,
            };
            DecodeError::new(code, e.to_string(), None)
        })?;
        let kind = raw
            .kind
            .as_deref()
            .ok_or_else(|| DecodeError::new(ErrorCode::UnknownType, "missing \"type\"", None))?;
        let reference = Some(raw.id.clone().unwrap_or_else(|| kind.to_owned()));
        let named = matches!(kind, "join" | "leave" | "typing" | "send" | "history" | "members")
            .then(|| raw.room.as_deref().and_then(|r| RoomName::parse(r).ok()))
            .flatten();
        let fail = |code, msg: String| DecodeError {
            room: named.clone(),
            ..DecodeError::new(code, msg, reference.clone())
        };
        let room = || -> Result<RoomName, DecodeError> {
            let room = raw
                .room
                .as_deref()
                .ok_or_else(|| fail(ErrorCode::MissingField, "missing \"room\"".into()))?;
            RoomName::parse(room).map_err(|e| fail(ErrorCode::InvalidRoom, format!("room {e}")))
        };
        match kind {
            "join" => Ok(ClientFrame::Join { room: room()?, since: raw.since.clone() }),
            "leave" => Ok(ClientFrame::Leave { room: room()? }),
            "typing" => Ok(ClientFrame::Typing { room: room()? }),
            "send" => {
                let room = room()?;
                let id = raw
                    .id
                    .as_deref()
                    .ok_or_else(|| fail(ErrorCode::MissingField, "missing \"id\"".into()))?;
                let id = ClientMessageId::parse(id)
                    .map_err(|e: NameError| fail(ErrorCode::InvalidId, format!("id {e}")))?;
                let text = raw
                    .text
                    .as_deref()
                    .ok_or_else(|| fail(ErrorCode::MissingField, "missing \"text\"".into()))?;
                let text = check_text(text, limits).map_err(|(code, msg)| fail(code, msg))?;
                Ok(ClientFrame::Send { room, text, id })
            }
            "history" => {
                let room = room()?;
                let limit = raw.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
                if limit == 0 || limit > limits.max_history {
                    return Err(fail(
                        ErrorCode::InvalidField,
                        format!("limit must be between 1 and {}", limits.max_history),
                    ));
                }
                let query = match (raw.before, raw.after) {
                    (Some(_), Some(_)) => {
                        return Err(fail(
                            ErrorCode::InvalidField,
                            "give \"before\" or \"after\", not both".into(),
                        ));
                    }
                    (before, None) => HistoryQuery::Before { before, limit },
                    (None, Some(RawAfter::Seq(after))) => HistoryQuery::After { after, limit },
                    (None, Some(RawAfter::User(_))) => {
                        return Err(fail(
                            ErrorCode::InvalidField,
                            "\"after\" must be a sequence number".into(),
                        ));
                    }
                };
                Ok(ClientFrame::History { room, query })
            }
            "members" => {
                let room = room()?;
                let limit = raw.limit.unwrap_or(DEFAULT_MEMBERS_LIMIT);
                if limit == 0 || limit > MAX_MEMBERS_LIMIT {
                    return Err(fail(
                        ErrorCode::InvalidField,
                        format!("limit must be between 1 and {MAX_MEMBERS_LIMIT}"),
                    ));
                }
                let after = match &raw.after {
                    None => None,
                    Some(RawAfter::User(user)) => Some(
                        UserName::parse(user)
                            .map_err(|e| fail(ErrorCode::InvalidField, format!("after {e}")))?,
                    ),
                    Some(RawAfter::Seq(_)) => {
                        return Err(fail(
                            ErrorCode::InvalidField,
                            "\"after\" must be a user name".into(),
                        ));
                    }
                };
                Ok(ClientFrame::Members { room, after, limit })
            }
            "auth" => {
                let token = raw
                    .token
                    .ok_or_else(|| fail(ErrorCode::MissingField, "missing \"token\"".into()))?;
                Ok(ClientFrame::Auth { token })
            }
            "ping" => Ok(ClientFrame::Ping),
            other => {
                Err(fail(ErrorCode::UnknownType, format!("unknown type {:?}", truncate(other, 32))))
            }
        }
    }

    /// The room this frame addresses, if any.
    pub fn room(&self) -> Option<&RoomName> {
        match self {
            ClientFrame::Join { room, .. }
            | ClientFrame::Leave { room }
            | ClientFrame::Send { room, .. }
            | ClientFrame::Typing { room }
            | ClientFrame::History { room, .. }
            | ClientFrame::Members { room, .. } => Some(room),
            ClientFrame::Auth { .. } | ClientFrame::Ping => None,
        }
    }
}

/// A message text as `send` stores it: control characters stripped
/// ([`clean_text`]), then non-empty and within `limits.max_text_chars`; else
/// the error code and message. The server API checks its texts the same way.
pub fn check_text(text: &str, limits: &Limits) -> Result<String, (ErrorCode, String)> {
    let text = clean_text(text);
    if text.trim().is_empty() {
        return Err((ErrorCode::EmptyText, "text is empty".into()));
    }
    if text.chars().count() > limits.max_text_chars {
        let message = format!("text must be at most {} characters", limits.max_text_chars);
        return Err((ErrorCode::TextTooLong, message));
    }
    Ok(text)
}

/// Strips control characters other than newline and tab (NUL, escape
/// sequences, bidi controls stay out of other people's screens and logs).
pub fn clean_text(text: &str) -> String {
    // Nearly every text has nothing to strip: one copy, not a push per char.
    // Printable ASCII is checked bytewise with no UTF-8 decoding and no early
    // exit, which the compiler turns into a vector loop.
    let printable_ascii = |b: u8| (b.wrapping_sub(b' ') < 95) | (b == b'\n') | (b == b'\t');
    if text.bytes().fold(true, |all, b| all & printable_ascii(b)) {
        return text.to_owned();
    }
    let keep = |c: char| c == '\n' || c == '\t' || !(c.is_control() || is_bidi_control(c));
    if text.chars().all(keep) {
        return text.to_owned();
    }
    text.chars().filter(|&c| keep(c)).collect()
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<ClientFrame, DecodeError> {
        ClientFrame::decode(s, &Limits::default())
    }

    #[test]
    fn decodes_send() {
        let f = decode(r#"{"type":"send","room":"lobby","text":"hi","id":"c-1","extra":1}"#);
        assert_eq!(
            f,
            Ok(ClientFrame::Send {
                room: RoomName::parse("lobby").expect("valid"),
                text: "hi".into(),
                id: ClientMessageId::parse("c-1").expect("valid"),
            })
        );
    }

    #[test]
    fn decodes_join_with_since() {
        let f = decode(r#"{"type":"join","room":"a","since":{"epoch":"e1","seq":7}}"#)
            .expect("valid join");
        match f {
            ClientFrame::Join { since: Some(s), .. } => assert_eq!(s.seq, 7),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn error_codes() {
        let code = |s: &str| decode(s).expect_err("must fail").code;
        assert_eq!(code("{"), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidField);
        assert_eq!(code(r#"{"room":"a"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"dance"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"join"}"#), ErrorCode::MissingField);
        assert_eq!(code(r#"{"type":"join","room":"a b"}"#), ErrorCode::InvalidRoom);
        assert_eq!(code(r#"{"type":"join","room":5}"#), ErrorCode::InvalidField);
        assert_eq!(code(r#"{"type":"send","room":"a","text":"x"}"#), ErrorCode::MissingField);
        assert_eq!(
            code(r#"{"type":"send","room":"a","text":"\u0000\u0007","id":"1"}"#),
            ErrorCode::EmptyText
        );
        assert_eq!(
            code(r#"{"type":"history","room":"a","limit":100000}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"history","room":"a","before":99999999999999999999999}"#),
            ErrorCode::InvalidField
        );
        let deep = format!(r#"{{"type":"join","x":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000));
        // Deep nesting in an ignored field is skipped without recursion, then the frame is judged.
        assert_eq!(code(&deep), ErrorCode::MissingField);
        let deep_since =
            format!(r#"{{"type":"join","room":"a","since":{}"#, "{\"a\":".repeat(10_000));
        assert!(decode(&deep_since).is_err());
    }

    #[test]
    fn decodes_members() {
        let room = RoomName::parse("big").expect("valid");
        assert_eq!(
            decode(r#"{"type":"members","room":"big"}"#),
            Ok(ClientFrame::Members { room: room.clone(), after: None, limit: 100 })
        );
        assert_eq!(
            decode(r#"{"type":"members","room":"big","after":"ann","limit":5}"#),
            Ok(ClientFrame::Members {
                room,
                after: Some(UserName::parse("ann").expect("valid")),
                limit: 5,
            })
        );
        let code = |s: &str| decode(s).expect_err("must fail").code;
        assert_eq!(code(r#"{"type":"members"}"#), ErrorCode::MissingField);
        assert_eq!(code(r#"{"type":"members","room":"big","limit":0}"#), ErrorCode::InvalidField);
        assert_eq!(
            code(r#"{"type":"members","room":"big","limit":1001}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(code(r#"{"type":"members","room":"big","after":7}"#), ErrorCode::InvalidField);
        assert_eq!(
            code(r#"{"type":"members","room":"big","after":"a<b"}"#),
            ErrorCode::InvalidField
        );
        assert_eq!(
            code(r#"{"type":"history","room":"big","after":"ann"}"#),
            ErrorCode::InvalidField
        );
        let e = decode(r#"{"type":"members","room":"big","limit":0}"#).expect_err("bad limit");
        assert_eq!(e.room.map(|r| r.to_string()).as_deref(), Some("big"));
    }

    #[test]
    fn error_reference_is_id_or_type() {
        let e = decode(r#"{"type":"send","room":"a","text":"","id":"m9"}"#).expect_err("empty");
        assert_eq!(e.reference.as_deref(), Some("m9"));
        let e = decode(r#"{"type":"leave"}"#).expect_err("no room");
        assert_eq!(e.reference.as_deref(), Some("leave"));
    }

    #[test]
    fn field_errors_name_the_room_they_concern() {
        let room = |s: &str| decode(s).expect_err("must fail").room.map(|r| r.to_string());
        assert_eq!(room(r#"{"type":"history","room":"a","limit":0}"#).as_deref(), Some("a"));
        assert_eq!(
            room(r#"{"type":"send","room":"a","id":"x y","text":"t"}"#).as_deref(),
            Some("a")
        );
        assert_eq!(room(r#"{"type":"send","room":"a","id":"1","text":" "}"#).as_deref(), Some("a"));
        assert_eq!(room(r#"{"type":"history","room":"a b","limit":0}"#), None);
        assert_eq!(room(r#"{"type":"dance","room":"a"}"#), None);
    }

    #[test]
    fn blank_texts_are_empty() {
        for blank in [" ", "\n\t", "\u{3000}\u{a0}", "\u{0} \u{1b}"] {
            let frame = serde_json::json!({"type":"send","room":"a","text":blank,"id":"1"});
            let code = decode(&frame.to_string()).expect_err("blank").code;
            assert_eq!(code, ErrorCode::EmptyText, "{blank:?}");
        }
        let frame = r#"{"type":"send","room":"a","text":" a  b ","id":"1"}"#;
        assert!(matches!(decode(frame), Ok(ClientFrame::Send { text, .. }) if text == " a  b "));
    }

    #[test]
    fn text_is_cleaned() {
        assert_eq!(clean_text("a\u{0}b\u{1b}[31mc\nd\u{202E}"), "ab[31mc\nd");
        // Nothing to strip: the text as it is (tabs, newlines, any script, emoji).
        let clean = "tab\there\nnew line, 日本語, ğüş, 👋🏽";
        assert_eq!(clean_text(clean), clean);
        // C1 controls are stripped too.
        assert_eq!(clean_text("a\u{85}b\u{9f}"), "ab");
        // Plain ASCII keeps every printable byte and loses DEL, CR and the rest.
        let printable: String = (b' '..=b'~').map(char::from).collect();
        assert_eq!(clean_text(&printable), printable);
        assert_eq!(clean_text("a\u{7f}b\rc\u{1}d"), "abcd");
    }

    #[test]
    fn text_length_limit() {
        let long = "é".repeat(4001);
        let frame = format!(r#"{{"type":"send","room":"a","text":"{long}","id":"1"}}"#);
        assert_eq!(decode(&frame).expect_err("too long").code, ErrorCode::TextTooLong);
    }
}
