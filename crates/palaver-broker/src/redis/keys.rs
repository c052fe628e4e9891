//! Key and channel names, and the pre-encoded envelope pieces Lua splices.
//!
//! Every name the Redis backend uses is built here, so the layout documented
//! in the parent module is the only one in the code. The scripts publish
//! envelopes themselves (that is what makes channel order equal sequence
//! order), but only Rust knows how to encode them; so Rust encodes everything
//! except the parts only the script knows (the epoch, the sequence number, the
//! expired user) and the script concatenates.

use palaver_protocol::{RoomName, UserName};
use serde::Serialize;

use crate::broker::Draft;

/// The keys and channel of one room.
#[derive(Debug, Clone)]
pub(crate) struct RoomKeys {
    /// The room's state: hash of `epoch`, `seq`, `lu`/`li` (user and id of
    /// the message at `seq`), `reset_at` (see `scripts`).
    pub meta: String,
    /// History stream; entry ids are `<seq>-1`.
    pub stream: String,
    /// Idempotency index: ZSET of `"<id> <user>"` scored by seq (the
    /// publish script builds the member; ids never contain a space, so the
    /// first space separates the two unambiguously).
    pub ids: String,
    /// Presence: ZSET of user scored by the latest expiry of their entries.
    pub presence: String,
    /// Roster: ZSET of the users in `presence`, every score 0, so a page of
    /// members is a lex range read.
    pub roster: String,
    /// Prefix of the per-user presence entry ZSETs (`presence_user_prefix + user`).
    pub presence_user_prefix: String,
    /// Pub/sub channel of the room's envelopes.
    pub channel: String,
}

impl RoomKeys {
    /// The names of `room`'s keys under `prefix`.
    pub fn new(prefix: &str, room: &RoomName) -> Self {
        let base = channel(prefix, room);
        RoomKeys {
            meta: concat(&[&base, ":meta"]),
            stream: concat(&[&base, ":stream"]),
            ids: concat(&[&base, ":ids"]),
            presence: concat(&[&base, ":presence"]),
            presence_user_prefix: concat(&[&base, ":presence:"]),
            roster: concat(&[&base, ":roster"]),
            channel: base,
        }
    }

    /// The ZSET of one user's presence entries in this room.
    pub fn presence_user(&self, user: &UserName) -> String {
        concat(&[&self.presence_user_prefix, user.as_str()])
    }
}

/// `parts` joined, in one allocation: every publish names four keys, and
/// `format!`'s machinery cost more than the rest of building the call.
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}

/// The room's channel, which is also the common prefix of its keys.
pub(crate) fn channel(prefix: &str, room: &RoomName) -> String {
    // Braces delimit the room: room names may contain `:` but never `{`/`}`,
    // so no room's keys can collide with another's (and, as a hash tag, a
    // room's keys would share one Redis Cluster slot).
    concat(&[prefix, ":room:{", room.as_str(), "}"])
}

/// The room name inside one of our channel names (`None` for a foreign channel).
pub(crate) fn room_in_channel<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
    channel.strip_prefix(prefix)?.strip_prefix(":room:{")?.strip_suffix('}')
}

/// Member of a user's presence ZSET: which node holds which session.
pub(crate) fn presence_entry(node: &str, session: &str) -> String {
    format!("{node}/{session}")
}

fn json<T: Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).expect("names and strings always serialise")
}

/// The start of every envelope of the room, up to the event's kind: the
/// scripts append `message","epoch":"<epoch>","message":{"seq":<seq>` and
/// the [`message_envelope_tail`], or `reset","epoch":"<epoch>"}}`.
pub(crate) fn envelope_head(room: &RoomName) -> String {
    format!("{{\"room\":{},\"event\":{{\"kind\":\"", json(room))
}

/// What follows the sequence number in a message envelope:
/// `head + "message\",\"epoch\":\"" + epoch + "\",\"message\":{\"seq\":" + seq + tail`
/// is exactly `Envelope::to_json()` of the `BusEvent::Message`.
pub(crate) fn message_envelope_tail(draft: &Draft, ts: u64) -> String {
    let trace = match &draft.trace {
        Some(trace) => format!(",\"trace\":{}", json(trace)),
        None => String::new(),
    };
    format!(
        ",\"id\":{},\"user\":{},\"text\":{},\"ts\":{ts}}}}}{trace}}}",
        json(&draft.id),
        json(&draft.user),
        json(&draft.text),
    )
}

/// A presence-leave envelope split around the user, which the sweep script
/// fills in with `cjson.encode(user)`.
pub(crate) fn leave_envelope_parts(room: &RoomName) -> [String; 2] {
    [
        format!("{{\"room\":{},\"event\":{{\"kind\":\"presence\",\"user\":", json(room)),
        ",\"state\":\"leave\"}}".to_owned(),
    ]
}

#[cfg(test)]
mod tests {
    use palaver_protocol::{
        BusEvent, ClientMessageId, Envelope, Epoch, PresenceState, StoredMessage,
    };

    use super::*;

    fn draft(trace: Option<&str>) -> Draft {
        Draft {
            id: ClientMessageId::parse("c-1\"x").expect("valid"),
            user: UserName::parse("Zoë 2").expect("valid"),
            text: "hi \"there\"\n\\ <b> \u{1F600}".into(),
            trace: trace.map(str::to_owned),
            witness: None,
        }
    }

    #[test]
    fn spliced_message_equals_serde_encoding() {
        let room = RoomName::parse("team:eng.ops").expect("valid");
        for trace in [None, Some("00-abc-def-01")] {
            let d = draft(trace);
            let spliced = format!(
                "{}message\",\"epoch\":\"{}\",\"message\":{{\"seq\":{}{}",
                envelope_head(&room),
                "0123abcd",
                42,
                message_envelope_tail(&d, 1_700_000_000_123)
            );
            let expected = Envelope {
                room: room.clone(),
                event: BusEvent::Message {
                    epoch: Epoch::new("0123abcd"),
                    message: StoredMessage {
                        seq: 42,
                        id: d.id.clone(),
                        user: d.user.clone(),
                        text: d.text.clone(),
                        ts: 1_700_000_000_123,
                    },
                },
                trace: d.trace.clone(),
            };
            assert_eq!(spliced, expected.to_json());
        }
    }

    #[test]
    fn spliced_reset_equals_serde_encoding() {
        let room = RoomName::parse("team:eng.ops").expect("valid");
        let spliced = format!("{}reset\",\"epoch\":\"{}\"}}}}", envelope_head(&room), "00ff");
        let expected =
            Envelope { room, event: BusEvent::Reset { epoch: Epoch::new("00ff") }, trace: None };
        assert_eq!(spliced, expected.to_json());
    }

    #[test]
    fn spliced_leave_equals_serde_encoding() {
        let room = RoomName::parse("lobby").expect("valid");
        let user = UserName::parse("ann b").expect("valid");
        let [head, tail] = leave_envelope_parts(&room);
        let spliced = format!("{head}{}{tail}", json(&user));
        let expected = Envelope {
            room,
            event: BusEvent::Presence { user, state: PresenceState::Leave },
            trace: None,
        };
        assert_eq!(spliced, expected.to_json());
    }

    #[test]
    fn channel_maps_back_to_room() {
        let room = RoomName::parse("a:b").expect("valid");
        let keys = RoomKeys::new("palaver", &room);
        assert_eq!(keys.channel, "palaver:room:{a:b}");
        assert_eq!(keys.meta, "palaver:room:{a:b}:meta");
        assert_eq!(room_in_channel("palaver", &keys.channel), Some(room.as_str()));
        assert_eq!(room_in_channel("other", &keys.channel), None);
        assert_eq!(room_in_channel("palaver", "palaver:room:lobby"), None);
        // Room `x` with user `seq` vs room `x:presence`: distinct keys.
        let x = RoomKeys::new("p", &RoomName::parse("x").expect("valid"));
        let xp = RoomKeys::new("p", &RoomName::parse("x:presence").expect("valid"));
        assert_ne!(x.presence_user(&UserName::parse("meta").expect("valid")), xp.meta);
    }
}
