//! Hot-path codec costs: decoding a `send` and encoding a `message` frame once per node.

use criterion::{Criterion, criterion_group, criterion_main};
use palaver_protocol::{
    ClientFrame, ClientMessageId, Epoch, Frame, Limits, RoomName, StoredMessage, UserName,
};

fn codec(c: &mut Criterion) {
    let limits = Limits::default();
    let send = r#"{"type":"send","room":"lobby","text":"hello there, how is everyone today?","id":"c-1234"}"#;
    c.bench_function("decode_send", |b| {
        b.iter(|| ClientFrame::decode(std::hint::black_box(send), &limits).expect("valid"))
    });
    let room = RoomName::parse("lobby").expect("valid");
    let epoch = Epoch::new("0123456789abcdef");
    let msg = StoredMessage {
        seq: 123_456,
        id: ClientMessageId::parse("c-1234").expect("valid"),
        user: UserName::parse("ann").expect("valid"),
        text: "hello there, how is everyone today?".into(),
        ts: 1_700_000_000_000,
    };
    c.bench_function("encode_message", |b| {
        b.iter(|| Frame::message(&room, &epoch, std::hint::black_box(&msg)))
    });
}

criterion_group!(benches, codec);
criterion_main!(benches);
