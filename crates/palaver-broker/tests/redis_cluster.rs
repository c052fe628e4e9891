//! The Redis broker on a real Redis Cluster (3 masters + 3 replicas spawned
//! by the harness): every operation, sharded pub/sub, and topology changes
//! under traffic (a slot resharded, a master killed, a lagging replica
//! promoted, a master added).

// Each test binary uses part of the helpers.
#[allow(dead_code)]
mod support;

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use palaver_broker::{Broker, Control, NodeReport, RedisBroker};
use palaver_protocol::{
    BusEvent, ClientMessageId, Epoch, HistoryQuery, PresenceState, RoomName, Witness,
};
use support::{RedisCluster, cluster_node, draft, eventually, key_slot, room, user};

/// `count` room names whose slots cover every master of `cluster`.
fn rooms_on_every_master(cluster: &RedisCluster, count: usize) -> Vec<RoomName> {
    // One snapshot of the slot map for both sides: a failover between two
    // reads would otherwise compare two different topologies.
    let slot_owners = cluster.slot_owners();
    let masters: HashSet<u16> = slot_owners.iter().copied().filter(|&p| p != 0).collect();
    assert_eq!(masters.len(), cluster.masters().len(), "every master serves slots");
    let rooms: Vec<RoomName> = (0..count).map(|i| room(&format!("r{i}"))).collect();
    let owners: HashSet<u16> =
        rooms.iter().map(|r| slot_owners[usize::from(slot_of(cluster, r))]).collect();
    assert_eq!(owners, masters, "pick more rooms");
    rooms
}

/// The slot of the room's keys (they share its hash tag).
fn slot_of(cluster: &RedisCluster, room: &RoomName) -> u16 {
    cluster.slot(&format!("palaver:room:{{{room}}}"))
}

fn owner_of(cluster: &RedisCluster, room: &RoomName) -> u16 {
    cluster.owner(slot_of(cluster, room))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_works_on_a_cluster() {
    let cluster = RedisCluster::start(3);
    let short = |c: &mut palaver_broker::RedisConfig| c.presence_ttl = Duration::from_millis(600);
    let a = cluster_node(&cluster, "a", short).await;
    let b = cluster_node(&cluster, "b", short).await;
    assert!(a.broker.is_ready() && b.broker.is_ready());
    let rooms = rooms_on_every_master(&cluster, 12);
    for r in &rooms {
        a.broker.subscribe(r).await.expect("subscribe a");
        b.broker.subscribe(r).await.expect("subscribe b");
    }
    // Sharded channels: on the room's shard only, no classic subscribers.
    let channel = format!("palaver:room:{{{}}}", rooms[0]);
    let owner = owner_of(&cluster, &rooms[0]);
    let shard = cluster.cli(owner, &["PUBSUB", "SHARDNUMSUB", &channel]);
    assert!(shard.lines().nth(1).is_some_and(|n| n.trim() == "2"), "{shard}");
    let classic = cluster.cli(owner, &["PUBSUB", "NUMSUB", &channel]);
    assert!(classic.lines().nth(1).is_some_and(|n| n.trim() == "0"), "{classic}");

    // Publishes to every room interleaved, concurrently (they batch, split by room).
    let ids: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    publish_to_each(&a.broker, &rooms, &ids).await;
    for r in &rooms {
        eventually("b receives every message in order", 10, || {
            let seqs: Vec<u64> = b.inbox.seqs(r).into_iter().map(|(_, s)| s).collect();
            async move { seqs == [1, 2, 3, 4, 5] }
        })
        .await;
    }
    // Idempotent send from the other node.
    let again = b.broker.publish(&rooms[3], draft("ann", "m2")).await.expect("publish");
    assert!(again.duplicate);
    // Head and history.
    let head = b.broker.head(&rooms[5], None).await.expect("head");
    assert_eq!((head.head, head.first), (5, 1));
    let page = b
        .broker
        .history(&rooms[5], HistoryQuery::After { after: 2, limit: 2 }, None)
        .await
        .expect("history");
    assert_eq!(page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), [3, 4]);
    assert!(page.more);

    // Presence: join on a, seen by b's members page; signals are sharded too.
    assert!(a.broker.presence_join(&rooms[7], &user("ann"), "s1").await.expect("join"));
    assert!(b.broker.presence_join(&rooms[7], &user("bob"), "s2").await.expect("join"));
    let members = b.broker.members_page(&rooms[7], None, 10).await.expect("members");
    assert_eq!(members.count, 2);
    a.broker.signal(&rooms[7], &user("ann"), PresenceState::Join, None).await.expect("signal");
    eventually("b sees the signal", 10, || {
        let seen = b.inbox.presence(&rooms[7]).contains(&("ann".into(), PresenceState::Join));
        async move { seen }
    })
    .await;
    assert!(b.broker.presence_leave(&rooms[7], &user("bob"), "s2").await.expect("leave"));

    // A node dies holding presence: the sweep (every key a KEYS) announces it.
    let c = cluster_node(&cluster, "c", short).await;
    c.broker.presence_join(&rooms[9], &user("cat"), "s3").await.expect("join");
    c.broker.close().await;
    drop(c);
    eventually("b announces cat's leave", 15, || {
        let seen = b.inbox.presence(&rooms[9]).contains(&("cat".into(), PresenceState::Leave));
        async move { seen }
    })
    .await;

    // Directory and control.
    let report = |node: &str| NodeReport { node: node.into(), connections: 1, rooms: 0, at_ms: 1 };
    a.broker.report(report("a")).await.expect("report");
    b.broker.report(report("b")).await.expect("report");
    let nodes = a.broker.nodes().await.expect("nodes");
    assert_eq!(nodes.nodes.len(), 2);
    assert_eq!(nodes.rooms, 12);
    let page = b.broker.rooms(None, 100).await.expect("rooms");
    assert_eq!(page.rooms.len(), 12);
    let r7 = page.rooms.iter().find(|s| s.room == rooms[7]).expect("r7 listed");
    assert_eq!(r7.members, 1, "ann is still in r7");
    let order = Control::Disconnect { user: user("ann"), code: 4000, reason: "test".into() };
    assert_eq!(a.broker.control(order).await.expect("control"), 2);
    eventually("both nodes receive the order", 10, || {
        let n = a.inbox.controls().len() + b.inbox.controls().len();
        async move { n == 2 }
    })
    .await;
}

/// Publishes each of `ids` to every room, all concurrently (they batch,
/// split by room); each must succeed.
async fn publish_to_each(broker: &Arc<RedisBroker>, rooms: &[RoomName], ids: &[String]) {
    let mut sends = Vec::new();
    for id in ids {
        for r in rooms {
            let (broker, r, id) = (broker.clone(), r.clone(), id.clone());
            sends.push(tokio::spawn(async move {
                broker.publish(&r, draft("ann", &id)).await.expect("publish")
            }));
        }
    }
    for send in sends {
        send.await.expect("task");
    }
}

/// The witness of ann's message `(epoch, seq, id)`.
fn witness_of((epoch, seq, id): &(Epoch, u64, String)) -> Witness {
    Witness {
        epoch: epoch.clone(),
        seq: *seq,
        id: Some(ClientMessageId::parse(id).expect("id")),
        user: Some(user("ann")),
    }
}

/// Publishes `count` messages to `room` from `broker`, retrying each until
/// Redis takes it (the same client id: a retry is idempotent). Returns the
/// (epoch, seq) of each, in order.
async fn publish_through(
    broker: Arc<RedisBroker>,
    room: RoomName,
    prefix: &'static str,
    count: usize,
) -> Vec<(Epoch, u64, String)> {
    let mut out = Vec::new();
    for i in 0..count {
        let id = format!("{prefix}{i}");
        loop {
            let mut message = draft("ann", &id);
            message.witness = out.last().map(witness_of);
            match broker.publish(&room, message).await {
                Ok(published) => {
                    out.push((published.epoch, published.seq, id));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    out
}

/// What a subscriber must see: every message in order, except where it was
/// told to catch up (`lost` or the bus going down and up); then history
/// fills the gap.
fn assert_in_order_or_told(node: &support::Node, room: &RoomName) {
    let seqs = node.inbox.seqs(room);
    let told = !node.inbox.lost().is_empty() || node.inbox.states().contains(&false);
    for pair in seqs.windows(2) {
        let ((e1, s1), (e2, s2)) = (&pair[0], &pair[1]);
        if e1 == e2 && *s2 != s1 + 1 {
            assert!(told, "gap {s1} -> {s2} without being told to catch up");
        }
        assert!(e1 != e2 || s2 > s1, "out of order: {s1} then {s2}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_a_resharded_slot_under_traffic() {
    let mut cluster = RedisCluster::start(3);
    let a = cluster_node(&cluster, "a", |_| {}).await;
    let b = cluster_node(&cluster, "b", |_| {}).await;
    let moving = room("moving");
    b.broker.subscribe(&moving).await.expect("subscribe");
    let slot = cluster.slot("palaver:room:{moving}");
    let from = cluster.owner(slot);
    let to = cluster.masters().into_iter().find(|m| m.port != from).expect("another").port;

    let traffic = tokio::spawn(publish_through(a.broker.clone(), moving.clone(), "x", 300));
    eventually("traffic flows", 10, || {
        let n = b.inbox.seqs(&moving).len();
        async move { n >= 20 }
    })
    .await;
    cluster.move_slot(slot, to);
    assert_eq!(cluster.owner(slot), to);
    // And once more onto a master added under traffic.
    let added = cluster.add_master();
    cluster.move_slot(slot, added);
    let published = traffic.await.expect("traffic");

    let last = published.last().expect("published").1;
    eventually("b receives the messages after the moves", 20, || {
        let seqs = b.inbox.seqs(&moving);
        async move { seqs.last().is_some_and(|(_, s)| *s == last) }
    })
    .await;
    assert_in_order_or_told(&b, &moving);
    // Each move ended the subscription on the old owner; it was restored on
    // the new one and the members were sent to catch up.
    assert!(b.broker.stats().snapshot().resubscribes >= 2, "{:?}", b.broker.stats().snapshot());
    assert!(b.inbox.lost().len() >= 2);
    let owner = cluster.owner(slot);
    let shard = cluster.cli(owner, &["PUBSUB", "SHARDNUMSUB", "palaver:room:{moving}"]);
    assert!(shard.lines().nth(1).is_some_and(|n| n.trim() == "1"), "on the new owner: {shard}");
    // Anything missed is in history, gap-free.
    let page = b
        .broker
        .history(&moving, HistoryQuery::After { after: 0, limit: 1000 }, None)
        .await
        .expect("history");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_over_and_subscribers_catch_up() {
    let mut cluster = RedisCluster::start(3);
    let a = cluster_node(&cluster, "a", |_| {}).await;
    let b = cluster_node(&cluster, "b", |_| {}).await;
    let victim = room("victim");
    b.broker.subscribe(&victim).await.expect("subscribe");
    let master = owner_of(&cluster, &victim);

    let traffic = tokio::spawn(publish_through(a.broker.clone(), victim.clone(), "y", 200));
    eventually("traffic flows", 10, || {
        let n = b.inbox.seqs(&victim).len();
        async move { n >= 20 }
    })
    .await;
    cluster.kill_master(master);
    let published = traffic.await.expect("traffic");
    assert_ne!(owner_of(&cluster, &victim), master);

    let (epoch, last, _) = published.last().expect("published").clone();
    eventually("b receives messages from the promoted replica", 30, || {
        let seqs = b.inbox.seqs(&victim);
        let epoch = epoch.to_string();
        async move { seqs.last().is_some_and(|(e, s)| *e == epoch && *s == last) }
    })
    .await;
    assert_in_order_or_told(&b, &victim);
    assert!(b.inbox.states().contains(&false), "the bus went down and came back");
    assert!(b.broker.stats().snapshot().reconnects >= 1);
    assert_unique(&published);
}

/// No (epoch, seq) names two messages.
fn assert_unique(published: &[(Epoch, u64, String)]) {
    let mut names: HashMap<(String, u64), &str> = HashMap::new();
    for (epoch, seq, id) in published {
        if let Some(other) = names.insert((epoch.to_string(), *seq), id) {
            assert_eq!(other, id, "({epoch}, {seq}) names two messages");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_replica_promoted_moves_the_room_to_a_new_epoch() {
    let mut cluster = RedisCluster::start(3);
    let a = cluster_node(&cluster, "a", |_| {}).await;
    let b = cluster_node(&cluster, "b", |_| {}).await;
    let lagging = room("lagging");
    b.broker.subscribe(&lagging).await.expect("subscribe");
    let master = owner_of(&cluster, &lagging);

    // Replicated writes, then writes only the master holds.
    let mut published = publish_through(a.broker.clone(), lagging.clone(), "z", 5).await;
    cluster.wait_replicated(master);
    cluster.detach_replica(master);
    let ahead = publish_through(a.broker.clone(), lagging.clone(), "w", 3).await;
    assert_eq!(ahead.iter().map(|p| p.1).collect::<Vec<_>>(), [6, 7, 8]);
    let before = ahead[0].0.clone();
    published.extend(ahead);
    cluster.kill_master(master);

    // The next publish shows its witness (w2 at seq 8): the promoted replica
    // does not hold it, so the room moves to a new epoch first.
    let after = publish_after(&a.broker, &lagging, published.last().expect("some")).await;
    assert_ne!(after.0, before, "a new epoch");
    published.push(after.clone());
    assert_unique(&published);
    eventually("b is told: a reset on the bus", 20, || {
        let reset = b.inbox.events().iter().any(|e| {
            e.room == lagging && matches!(&e.event, BusEvent::Reset { epoch } if *epoch == after.0)
        });
        async move { reset }
    })
    .await;
}

/// Publishes one more message with `last` as its witness, retrying until the
/// cluster takes it.
async fn publish_after(
    broker: &Arc<RedisBroker>,
    room: &RoomName,
    last: &(Epoch, u64, String),
) -> (Epoch, u64, String) {
    loop {
        let mut message = draft("ann", "after");
        message.witness = Some(witness_of(last));
        match broker.publish(room, message).await {
            Ok(p) => return (p.epoch, p.seq, "after".into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Share of each master in `counts` (by port), as fractions.
fn shares(counts: &HashMap<u16, u64>) -> Vec<f64> {
    let total: u64 = counts.values().sum();
    counts.values().map(|n| *n as f64 / total as f64).collect()
}

fn assert_even(what: &str, counts: &HashMap<u16, u64>) {
    assert_eq!(counts.len(), 3, "{what}: every master has some: {counts:?}");
    for share in shares(counts) {
        assert!((share - 1.0 / 3.0).abs() <= 0.05, "{what}: uneven spread {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_rooms_spread_evenly_over_three_masters() {
    let cluster = RedisCluster::start(3);
    let owners = cluster.slot_owners();
    assert_eq!(key_slot("palaver:room:{lobby}"), cluster.slot("palaver:room:{lobby}"));
    let owner = |name: &str| owners[key_slot(&format!("palaver:room:{{{name}}}")) as usize];
    // Short, numbered and patterned names alike.
    let patterns: Vec<(&str, Vec<String>)> = vec![
        ("room-N", (1..=1000).map(|i| format!("room-{i}")).collect()),
        ("N", (0..1000).map(|i| i.to_string()).collect()),
        ("team:eng-NNNN", (0..1000).map(|i| format!("team:eng-{i:04}")).collect()),
        (
            "two letters",
            (b'a'..=b'z')
                .flat_map(|a| (b'a'..=b'z').map(move |b| format!("{}{}", a as char, b as char)))
                .collect(),
        ),
    ];
    for (what, names) in &patterns {
        let mut rooms: HashMap<u16, u64> = HashMap::new();
        for name in names {
            *rooms.entry(owner(name)).or_default() += 1;
        }
        assert_even(what, &rooms);
    }

    // The publish load follows the rooms: every room's keys and channel
    // live on its slot, so each master runs its rooms' scripts.
    let masters: Vec<u16> = cluster.masters().iter().map(|m| m.port).collect();
    for port in &masters {
        assert_eq!(cluster.cli(*port, &["CONFIG", "RESETSTAT"]).trim(), "OK");
    }
    let a = cluster_node(&cluster, "a", |_| {}).await;
    let rooms: Vec<RoomName> = patterns[0].1.iter().map(|n| room(n)).collect();
    for round in 0..3 {
        publish_to_each(&a.broker, &rooms, &[format!("p{round}")]).await;
    }
    let mut calls: HashMap<u16, u64> = HashMap::new();
    for port in &masters {
        let stats = cluster.command_calls(*port);
        let scripts =
            stats.get("evalsha").copied().unwrap_or(0) + stats.get("eval").copied().unwrap_or(0);
        calls.insert(*port, scripts);
    }
    // One script run per message (the retries after `NOSCRIPT` counted once).
    let total = calls.values().sum::<u64>();
    assert_eq!(total, 3000, "one script run per message: {calls:?}");
    eprintln!("publish script calls per master: {calls:?}");
    assert_even("publish load (INFO commandstats)", &calls);
}
