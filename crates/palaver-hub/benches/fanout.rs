//! Fan-out cost: one message to 1, 100 and 10,000 live members of a room.
//! Queues are drained between iterations so each measures enqueueing only.

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use palaver_hub::{Client, ClientConfig, Hub, Outbox, SyncState};
use palaver_protocol::{
    BusEvent, ClientMessageId, Envelope, Epoch, RoomName, StoredMessage, UserName,
};
use tokio_util::sync::CancellationToken;

fn fanout(c: &mut Criterion) {
    let room = RoomName::parse("lobby").expect("valid");
    let epoch = Epoch::new("e");
    let mut group = c.benchmark_group("hub_fanout");
    for members in [1usize, 100, 10_000] {
        let hub = Hub::new();
        let mut outboxes: Vec<Outbox> = Vec::with_capacity(members);
        for i in 0..members {
            let (client, outbox) = Client::new(
                Arc::from(format!("s{i}")),
                UserName::parse("user").expect("valid"),
                ClientConfig::default(),
                CancellationToken::new(),
            );
            let m = hub.join(&room, &client, usize::MAX).expect("joins");
            m.set_cursor(epoch.clone(), 0, SyncState::Syncing);
            assert!(hub.try_go_live(&m));
            outboxes.push(outbox);
        }
        let mut seq = 0;
        group.throughput(criterion::Throughput::Elements(members as u64));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                seq += 1;
                hub.deliver(Envelope {
                    room: room.clone(),
                    event: BusEvent::Message {
                        epoch: epoch.clone(),
                        message: StoredMessage {
                            seq,
                            id: ClientMessageId::parse("m").expect("valid"),
                            user: UserName::parse("bob").expect("valid"),
                            text: "hello there, how is everyone today?".into(),
                            ts: 0,
                        },
                    },
                    trace: None,
                });
                for outbox in &mut outboxes {
                    while outbox.try_recv().is_some() {}
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
