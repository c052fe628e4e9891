//! Property tests: server frames survive encode/decode, client frames built
//! from valid parts decode to the same request, and no input makes the
//! decoder panic.

use palaver_protocol::{
    ClientFrame, ClientMessageId, Epoch, ErrorCode, Frame, HistoryQuery, Limits, PresenceState,
    RoomName, ServerFrame, Since, StoredMessage, UserName,
};
use proptest::prelude::*;
use serde_json::json;

fn room() -> impl Strategy<Value = RoomName> {
    "[A-Za-z0-9_.:-]{1,64}".prop_map(|s| RoomName::parse(&s).expect("matches the rules"))
}

fn user() -> impl Strategy<Value = UserName> {
    "[\\p{L}0-9_.-][\\p{L}0-9 _.-]{0,30}[\\p{L}0-9_.-]"
        .prop_filter_map("valid user", |s| UserName::parse(&s).ok())
}

fn id() -> impl Strategy<Value = ClientMessageId> {
    "[!-~]{1,64}".prop_map(|s| ClientMessageId::parse(&s).expect("matches the rules"))
}

fn epoch() -> impl Strategy<Value = Epoch> {
    "[0-9a-f]{16}".prop_map(Epoch::new)
}

fn stored() -> impl Strategy<Value = StoredMessage> {
    (any::<u64>(), id(), user(), any::<String>(), any::<u64>())
        .prop_map(|(seq, id, user, text, ts)| StoredMessage { seq, id, user, text, ts })
}

fn server_frame() -> impl Strategy<Value = ServerFrame> {
    prop_oneof![
        (room(), epoch(), stored()).prop_map(|(room, epoch, m)| ServerFrame::Message {
            room,
            epoch,
            seq: m.seq,
            id: m.id,
            user: m.user,
            text: m.text,
            ts: m.ts
        }),
        (room(), epoch(), any::<u64>(), prop::collection::vec(user(), 0..5), any::<bool>())
            .prop_map(|(room, epoch, seq, members, recovered)| ServerFrame::Joined {
                room,
                epoch,
                seq,
                member_count: members.len() as u64 + u64::from(recovered),
                members_more: recovered,
                members,
                recovered
            }),
        (room(), prop::collection::vec(user(), 0..5), any::<bool>())
            .prop_map(|(room, members, more)| ServerFrame::Members { room, members, more }),
        (
            room(),
            prop::collection::vec(user(), 0..3),
            prop::collection::vec(user(), 0..3),
            any::<u64>(),
            any::<bool>()
        )
            .prop_map(|(room, joined, left, member_count, truncated)| {
                ServerFrame::PresenceBatch {
                    room,
                    typing: left.iter().take(1).cloned().collect(),
                    joined,
                    left,
                    member_count,
                    truncated,
                }
            }),
        (id(), room(), any::<u64>(), any::<bool>()).prop_map(|(id, room, seq, duplicate)| {
            ServerFrame::Ack { id, room, epoch: Epoch::new("e"), seq, duplicate }
        }),
        (room(), user(), prop_oneof![Just(PresenceState::Join), Just(PresenceState::Leave)])
            .prop_map(|(room, user, state)| ServerFrame::Presence { room, user, state }),
        (room(), epoch(), prop::collection::vec(stored(), 0..4), any::<bool>()).prop_map(
            |(room, epoch, messages, more)| ServerFrame::History { room, epoch, messages, more }
        ),
        (any::<String>(), proptest::option::of("[a-z]{1,8}")).prop_map(|(message, reference)| {
            ServerFrame::error(ErrorCode::InvalidField, message, reference)
        }),
    ]
}

proptest! {
    #[test]
    fn server_frames_round_trip(frame in server_frame()) {
        let encoded = frame.encode();
        prop_assert_eq!(ServerFrame::decode(encoded.as_str()).expect("decodes"), frame);
    }

    #[test]
    fn message_fast_path_equals_enum(room in room(), epoch in epoch(), m in stored()) {
        let fast = Frame::message(&room, &epoch, &m);
        let slow = ServerFrame::Message {
            room, epoch, seq: m.seq, id: m.id, user: m.user, text: m.text, ts: m.ts,
        }.encode();
        prop_assert_eq!(fast, slow);
    }

    #[test]
    fn client_frames_round_trip(
        room in room(),
        id in id(),
        text in "[^\\p{C}]{1,200}",
        since in proptest::option::of((epoch(), any::<u64>())),
        before in proptest::option::of(any::<u64>()),
        limit in 1u32..=200,
    ) {
        let limits = Limits::default();
        let join = match &since {
            Some((e, s)) => json!({"type":"join","room":room,"since":{"epoch":e,"seq":s}}),
            None => json!({"type":"join","room":room}),
        };
        prop_assert_eq!(
            ClientFrame::decode(&join.to_string(), &limits).expect("valid join"),
            ClientFrame::Join { room: room.clone(), since: since.map(|(epoch, seq)| Since { epoch, seq, id: None }) }
        );
        prop_assume!(!text.trim().is_empty());
        let send = json!({"type":"send","room":room,"id":id,"text":text});
        prop_assert_eq!(
            ClientFrame::decode(&send.to_string(), &limits).expect("valid send"),
            ClientFrame::Send { room: room.clone(), text: text.clone(), id: id.clone() }
        );
        let history = match before {
            Some(b) => json!({"type":"history","room":room,"before":b,"limit":limit}),
            None => json!({"type":"history","room":room,"limit":limit}),
        };
        prop_assert_eq!(
            ClientFrame::decode(&history.to_string(), &limits).expect("valid history"),
            ClientFrame::History { room, query: HistoryQuery::Before { before, limit } }
        );
    }

    #[test]
    fn decoder_never_panics_on_arbitrary_text(s in any::<String>()) {
        let _ = ClientFrame::decode(&s, &Limits::default());
    }

    #[test]
    fn decoder_never_panics_on_json_like_noise(
        s in r#"\{("(type|room|text|id|since|before|after|limit|token|epoch|seq)"|[\[\]{}:,0-9."a-z\\-])*\}?"#
    ) {
        let _ = ClientFrame::decode(&s, &Limits::default());
    }
}
