//! Memory-broker publish cost: sequence, store in the ring, hand to the inbox.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use palaver_broker::{Broker, Draft, Inbox, MemoryBroker};
use palaver_protocol::{ClientMessageId, Envelope, RoomName, UserName};

struct Discard;

impl Inbox for Discard {
    fn deliver(&self, envelope: Envelope) {
        std::hint::black_box(envelope);
    }
    fn bus_state(&self, _up: bool) {}
}

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let broker = MemoryBroker::new(Arc::new(Discard), 1000);
    let room = RoomName::parse("lobby").expect("valid");
    let user = UserName::parse("ann").expect("valid");
    let mut n = 0u64;
    c.bench_function("memory_publish", |b| {
        b.iter(|| {
            n += 1;
            let draft = Draft {
                id: ClientMessageId::parse(&format!("m{n}")).expect("valid"),
                user: user.clone(),
                text: "hello there, how is everyone today?".into(),
                trace: None,
                witness: None,
            };
            rt.block_on(broker.publish(&room, draft)).expect("publish")
        })
    });
}

criterion_group!(benches, publish);
criterion_main!(benches);
