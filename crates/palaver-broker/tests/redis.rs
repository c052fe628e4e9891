//! The Redis broker against a real `redis-server`, with two or three brokers
//! ("nodes") sharing it.

mod support;

use std::{collections::BTreeSet, time::Duration};

use futures_util::future::join_all;
use palaver_broker::{Broker, BrokerError, Draft, RedisBroker};
use palaver_protocol::{BusEvent, HistoryQuery, PresenceState, RoomName, UserName};
use support::{RedisServer, draft, eventually, node, node_with, room, user};

/// Every member of a room, read two at a time so that paging is exercised;
/// checks each page's count against what the pages add up to.
async fn members(broker: &RedisBroker, room: &RoomName) -> Result<Vec<UserName>, BrokerError> {
    let mut all: Vec<UserName> = Vec::new();
    let mut counts = BTreeSet::new();
    loop {
        let page = broker.members_page(room, all.last(), 2).await?;
        assert!(page.members.len() <= 2);
        counts.insert(page.count);
        all.extend(page.members);
        if !page.more {
            break;
        }
    }
    if counts.len() == 1 {
        assert_eq!(counts.first().copied(), Some(all.len() as u64), "count matches the pages");
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_sequence_order_on_every_node() {
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a").await, node(&server, "b").await);
    let lobby = room("lobby");
    assert!(a.broker.is_ready() && b.broker.is_ready());
    a.broker.subscribe(&lobby).await.expect("subscribe a");
    b.broker.subscribe(&lobby).await.expect("subscribe b");

    // Both nodes publish concurrently.
    let from = |node: &support::Node, who: &'static str| {
        let broker = node.broker.clone();
        let lobby = lobby.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..40 {
                let p = broker.publish(&lobby, draft(who, &format!("{who}-{i}"))).await;
                let p = p.expect("publish");
                assert!(!p.duplicate);
                seqs.push(p.seq);
            }
            seqs
        })
    };
    let (ta, tb) = (from(&a, "ann"), from(&b, "bob"));
    let mut all: Vec<u64> = ta.await.expect("ann publishes");
    all.extend(tb.await.expect("bob publishes"));
    all.sort_unstable();
    assert_eq!(all, (1..=80).collect::<Vec<_>>(), "gap-free, no duplicates");

    for node in [&a, &b] {
        let inbox = node.inbox.clone();
        let lobby = lobby.clone();
        eventually("all 80 messages delivered", 10, || {
            let n = inbox.seqs(&lobby).len();
            async move { n == 80 }
        })
        .await;
    }
    let on_a = a.inbox.seqs(&lobby);
    assert_eq!(on_a, b.inbox.seqs(&lobby), "both nodes see the same order");
    let seqs: Vec<u64> = on_a.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (1..=80).collect::<Vec<_>>(), "channel order is sequence order");
    assert_eq!(on_a.iter().map(|(e, _)| e).collect::<BTreeSet<_>>().len(), 1, "one epoch");

    // The trace context travels with the envelope.
    let traced = Draft { trace: Some("00-trace-span-01".into()), ..draft("ann", "traced") };
    let p = a.broker.publish(&lobby, traced).await.expect("publish");
    let inbox = b.inbox.clone();
    eventually("traced message delivered", 10, || {
        let found = inbox.events().iter().any(|e| {
            matches!(&e.event, BusEvent::Message { message, .. } if message.seq == p.seq)
                && e.trace.as_deref() == Some("00-trace-span-01")
        });
        async move { found }
    })
    .await;
    let stats = a.broker.stats().snapshot();
    assert_eq!((stats.publishes, stats.parse_errors), (41, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_is_idempotent_across_nodes() {
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a").await, node(&server, "b").await);
    let lobby = room("lobby");
    a.broker.subscribe(&lobby).await.expect("subscribe");

    let first = a.broker.publish(&lobby, draft("ann", "x")).await.expect("publish");
    let again = b.broker.publish(&lobby, draft("ann", "x")).await.expect("publish");
    let other = b.broker.publish(&lobby, draft("bob", "x")).await.expect("publish");
    assert_eq!((first.seq, first.duplicate), (1, false));
    assert_eq!((again.seq, again.duplicate), (1, true));
    assert_eq!(again.epoch, first.epoch);
    assert_eq!((other.seq, other.duplicate), (2, false));

    let inbox = a.inbox.clone();
    eventually("two messages delivered", 10, || {
        let n = inbox.seqs(&lobby).len();
        async move { n == 2 }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.inbox.seqs(&lobby).len(), 2, "the duplicate was not published");
    assert_eq!(b.broker.stats().snapshot().duplicates, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_history_pages() {
    let server = RedisServer::start();
    let a = node(&server, "a").await;
    let lobby = room("lobby");

    // A room nobody wrote to gets a stable epoch that its first message keeps.
    let empty = a.broker.head(&lobby, None).await.expect("head");
    assert_eq!((empty.head, empty.first), (0, 1));
    assert_eq!(a.broker.head(&lobby, None).await.expect("head"), empty);
    let page = a
        .broker
        .history(&lobby, HistoryQuery::Before { before: None, limit: 10 }, None)
        .await
        .expect("history");
    assert!(page.messages.is_empty() && !page.more);

    for i in 1..=10 {
        let p = a.broker.publish(&lobby, draft("ann", &format!("m{i}"))).await.expect("publish");
        assert_eq!((p.seq, &p.epoch), (i, &empty.epoch));
    }
    let head = a.broker.head(&lobby, None).await.expect("head");
    assert_eq!((head.head, head.first, &head.epoch), (10, 1, &empty.epoch));

    let read = |query| {
        let broker = a.broker.clone();
        let lobby = lobby.clone();
        async move {
            let page = broker.history(&lobby, query, None).await.expect("history");
            assert_eq!(page.head.head, 10);
            (page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), page.more)
        }
    };
    use HistoryQuery::{After, Before};
    assert_eq!(read(Before { before: None, limit: 3 }).await, (vec![8, 9, 10], true));
    assert_eq!(read(Before { before: Some(8), limit: 3 }).await, (vec![5, 6, 7], true));
    assert_eq!(read(Before { before: Some(4), limit: 10 }).await, (vec![1, 2, 3], false));
    assert_eq!(read(Before { before: Some(1), limit: 10 }).await, (vec![], false));
    assert_eq!(read(Before { before: Some(99), limit: 2 }).await, (vec![9, 10], true));
    assert_eq!(read(After { after: 0, limit: 4 }).await, (vec![1, 2, 3, 4], true));
    assert_eq!(read(After { after: 7, limit: 3 }).await, (vec![8, 9, 10], false));
    assert_eq!(read(After { after: 10, limit: 3 }).await, (vec![], false));

    let page =
        a.broker.history(&lobby, Before { before: None, limit: 1 }, None).await.expect("history");
    let m = &page.messages[0];
    assert_eq!((m.id.as_str(), m.user.as_str(), m.text.as_str()), ("m10", "ann", "text of m10"));
    assert!(m.ts > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_window_trims_messages_and_ids() {
    let server = RedisServer::start();
    let a = node_with(&server, "a", |c| c.history_max = 5).await;
    let lobby = room("lobby");
    for i in 1..=300 {
        a.broker.publish(&lobby, draft("ann", &format!("m{i}"))).await.expect("publish");
    }
    let head = a.broker.head(&lobby, None).await.expect("head");
    // MAXLEN ~ trims whole stream nodes: at least 5 kept, far fewer than 300.
    assert_eq!(head.head, 300);
    assert!(head.first > 1 && head.first <= 296, "first = {}", head.first);
    let page = a
        .broker
        .history(&lobby, HistoryQuery::After { after: 0, limit: 1000 }, None)
        .await
        .expect("history");
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (head.first..=300).collect::<Vec<_>>());
    // Ids older than the window are forgotten; recent ones are not.
    let old = a.broker.publish(&lobby, draft("ann", "m1")).await.expect("publish");
    assert_eq!((old.seq, old.duplicate), (301, false));
    let recent = a.broker.publish(&lobby, draft("ann", "m299")).await.expect("publish");
    assert_eq!((recent.seq, recent.duplicate), (299, true));
}

#[tokio::test]
async fn identical_concurrent_reads_share_one_call() {
    // Current-thread runtime: every caller registers before any read completes.
    let server = RedisServer::start();
    let a = node(&server, "a").await;
    let lobby = room("lobby");
    a.broker.publish(&lobby, draft("ann", "m1")).await.expect("publish");
    let before = a.broker.stats().snapshot();
    let query = HistoryQuery::Before { before: None, limit: 50 };
    let pages = join_all((0..50).map(|_| a.broker.history(&lobby, query, None))).await;
    for page in &pages {
        let page = page.as_ref().expect("history");
        assert_eq!(page.messages.len(), 1);
    }
    let after = a.broker.stats().snapshot();
    // Typically one read in flight and one queued behind it for all the
    // others (2 + 48); allow a little slack for scheduling.
    let reads = after.history_reads - before.history_reads;
    let hits = after.single_flight_hits - before.single_flight_hits;
    assert_eq!(reads + hits, 50);
    assert!(reads <= 4, "{reads} reads for 50 identical requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_refcounted() {
    let server = RedisServer::start();
    let a = node(&server, "a").await;
    let lobby = room("lobby");
    a.broker.subscribe(&lobby).await.expect("subscribe");
    a.broker.subscribe(&lobby).await.expect("subscribe");
    assert_eq!(server.numsub("lobby").await, 1);
    a.broker.unsubscribe(&lobby).await;
    assert_eq!(server.numsub("lobby").await, 1, "one interest left");
    a.broker.unsubscribe(&lobby).await;
    eventually("unsubscribed on last leave", 5, || async { server.numsub("lobby").await == 0 })
        .await;
    a.broker.unsubscribe(&lobby).await; // unbalanced: ignored

    // Concurrent joins and leaves of one room settle on the right state.
    let churn = (0..20).map(|_| {
        let broker = a.broker.clone();
        let lobby = lobby.clone();
        async move {
            for _ in 0..10 {
                broker.subscribe(&lobby).await.expect("subscribe");
                tokio::task::yield_now().await;
                broker.unsubscribe(&lobby).await;
            }
        }
    });
    for done in join_all(churn.map(tokio::spawn)).await {
        done.expect("no panic");
    }
    assert_eq!(server.numsub("lobby").await, 0);
    a.broker.subscribe(&lobby).await.expect("subscribe");
    assert_eq!(server.numsub("lobby").await, 1);

    // And live events flow after subscribe returns.
    let b = node(&server, "b").await;
    b.broker.publish(&lobby, draft("bob", "hi")).await.expect("publish");
    let inbox = a.inbox.clone();
    eventually("message delivered", 5, || {
        let n = inbox.seqs(&lobby).len();
        async move { n == 1 }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_nodes_and_expiry_of_a_dead_node() {
    let server = RedisServer::start();
    let ttl = |c: &mut palaver_broker::RedisConfig| c.presence_ttl = Duration::from_secs(1);
    let a = node_with(&server, "a", ttl).await;
    let b = node_with(&server, "b", ttl).await;
    let lobby = room("lobby");
    let (ann, bob, carol) = (user("ann"), user("bob"), user("carol"));

    assert!(a.broker.presence_join(&lobby, &ann, "s1").await.expect("join"));
    assert!(!b.broker.presence_join(&lobby, &ann, "s2").await.expect("join"), "not ann's first");
    assert!(b.broker.presence_join(&lobby, &bob, "s3").await.expect("join"));
    assert_eq!(members(&a.broker, &lobby).await.expect("members"), vec![ann.clone(), bob.clone()]);
    assert!(!a.broker.presence_leave(&lobby, &ann, "s1").await.expect("leave"), "s2 remains");
    assert_eq!(members(&b.broker, &lobby).await.expect("members"), vec![ann.clone(), bob.clone()]);
    assert!(b.broker.presence_leave(&lobby, &ann, "s2").await.expect("leave"), "ann's last");
    assert!(!b.broker.presence_leave(&lobby, &ann, "s2").await.expect("leave"), "already gone");
    assert_eq!(members(&a.broker, &lobby).await.expect("members"), vec![bob.clone()]);

    // A third node's user, then the node dies without leaving.
    a.broker.subscribe(&lobby).await.expect("subscribe");
    b.broker.subscribe(&lobby).await.expect("subscribe");
    let c = node_with(&server, "c", ttl).await;
    assert!(c.broker.presence_join(&lobby, &carol, "s4").await.expect("join"));
    // Refreshes keep live entries well past the ttl.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let present = members(&a.broker, &lobby).await.expect("members");
    assert_eq!(present, vec![bob.clone(), carol.clone()]);
    c.broker.close().await;
    drop(c);

    let broker = a.broker.clone();
    eventually("carol expires", 10, || {
        let broker = broker.clone();
        let lobby = lobby.clone();
        async move { members(&broker, &lobby).await.expect("members") == vec![user("bob")] }
    })
    .await;
    let leave = ("carol".to_owned(), PresenceState::Leave);
    for inbox in [a.inbox.clone(), b.inbox.clone()] {
        let lobby = lobby.clone();
        let leave = leave.clone();
        eventually("carol's leave announced", 10, move || {
            let seen = inbox.presence(&lobby).contains(&leave);
            async move { seen }
        })
        .await;
    }
    // Both nodes sweep, but the leave is announced once.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for inbox in [&a.inbox, &b.inbox] {
        let leaves = inbox.presence(&lobby).iter().filter(|e| **e == leave).count();
        assert_eq!(leaves, 1);
    }
    let swept =
        a.broker.stats().snapshot().presence_expired + b.broker.stats().snapshot().presence_expired;
    assert_eq!(swept, 1);
    // Bob, whose node is alive, is still there.
    assert_eq!(members(&b.broker, &lobby).await.expect("members"), vec![bob]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_redis_restart() {
    let mut server = RedisServer::start();
    let a = node_with(&server, "a", |c| c.presence_ttl = Duration::from_secs(1)).await;
    let lobby = room("lobby");
    a.broker.subscribe(&lobby).await.expect("subscribe");
    assert!(a.broker.presence_join(&lobby, &user("ann"), "s1").await.expect("join"));
    let before = a.broker.publish(&lobby, draft("ann", "m1")).await.expect("publish");
    a.broker.publish(&lobby, draft("ann", "m2")).await.expect("publish");
    assert_eq!(a.inbox.states(), vec![true]);

    server.stop();
    let broker = a.broker.clone();
    eventually("not ready", 10, || {
        let ready = broker.is_ready();
        async move { !ready }
    })
    .await;
    let failed = a.broker.publish(&lobby, draft("ann", "m3")).await;
    assert!(matches!(failed, Err(BrokerError::Unavailable(_))), "{failed:?}");
    assert!(matches!(a.broker.head(&lobby, None).await, Err(BrokerError::Unavailable(_))));
    assert!(matches!(a.broker.subscribe(&room("other")).await, Err(BrokerError::Unavailable(_))));
    let inbox = a.inbox.clone();
    eventually("bus down reported", 10, || {
        let states = inbox.states();
        async move { states == vec![true, false] }
    })
    .await;

    server.restart();
    eventually("ready again", 15, || {
        let ready = broker.is_ready();
        async move { ready }
    })
    .await;
    let inbox = a.inbox.clone();
    eventually("bus up reported", 10, || {
        let states = inbox.states();
        async move { states == vec![true, false, true] }
    })
    .await;
    assert_eq!(server.numsub("lobby").await, 1, "re-subscribed");
    assert!(a.broker.stats().snapshot().reconnects >= 1);

    // The restarted Redis is empty: a new epoch, and sequence numbers restart at 1.
    let after = a.broker.publish(&lobby, draft("ann", "m3")).await.expect("publish");
    assert_eq!(after.seq, 1);
    assert_ne!(after.epoch, before.epoch);
    let inbox = a.inbox.clone();
    let epoch = after.epoch.to_string();
    eventually("live delivery after reconnect", 10, || {
        let got = inbox.seqs(&lobby).contains(&(epoch.clone(), 1));
        async move { got }
    })
    .await;

    // The node puts its presence back (and announces it) on its next refresh.
    eventually("presence restored", 10, || async {
        members(&a.broker, &lobby).await.map(|m| m == vec![user("ann")]).unwrap_or(false)
    })
    .await;
    let inbox = a.inbox.clone();
    eventually("restored presence announced", 10, || {
        let seen = inbox.presence(&lobby).contains(&("ann".to_owned(), PresenceState::Join));
        async move { seen }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_before_redis_and_connects_later() {
    let mut server = RedisServer::reserve();
    let a = node(&server, "a").await;
    assert!(!a.broker.is_ready());
    let lobby = room("lobby");
    let failed = a.broker.publish(&lobby, draft("ann", "m1")).await;
    assert!(matches!(failed, Err(BrokerError::Unavailable(_))), "{failed:?}");

    server.restart();
    let broker = a.broker.clone();
    eventually("ready once redis is up", 15, || {
        let ready = broker.is_ready();
        async move { ready }
    })
    .await;
    a.broker.subscribe(&lobby).await.expect("subscribe");
    let p = a.broker.publish(&lobby, draft("ann", "m1")).await.expect("publish");
    assert_eq!(p.seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_subscribed_nodes_and_garbage_is_counted() {
    let server = RedisServer::start();
    let (a, b) = (node(&server, "a").await, node(&server, "b").await);
    let lobby = room("lobby");
    a.broker.subscribe(&lobby).await.expect("subscribe");
    b.broker.signal(&lobby, &user("bob"), PresenceState::Typing, None).await.expect("signal");

    let _: i64 = redis::cmd("PUBLISH")
        .arg("palaver:room:{lobby}")
        .arg("not json")
        .query_async(&mut server.client().await)
        .await
        .expect("publish garbage");
    let inbox = a.inbox.clone();
    let broker = a.broker.clone();
    eventually("typing delivered and garbage counted", 10, || {
        let typing = inbox.presence(&lobby) == vec![("bob".to_owned(), PresenceState::Typing)];
        let counted = broker.stats().snapshot().parse_errors == 1;
        async move { typing && counted }
    })
    .await;
    assert!(a.broker.is_ready(), "a bad payload does not hurt the bus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_on_cancel_and_on_drop() {
    let server = RedisServer::start();
    let lobby = room("lobby");
    let token = tokio_util::sync::CancellationToken::new();
    let child = token.clone();
    let a = node_with(&server, "a", |c| c.shutdown = child).await;
    let b = node(&server, "b").await;
    a.broker.subscribe(&lobby).await.expect("subscribe");
    b.broker.subscribe(&lobby).await.expect("subscribe");
    assert_eq!(server.numsub("lobby").await, 2);

    // Cancelling the token passed in the config stops the node's bus.
    token.cancel();
    eventually("a left the bus", 5, || async { server.numsub("lobby").await == 1 }).await;
    assert!(!a.broker.is_ready());

    // So does dropping the broker.
    drop(b);
    eventually("b left the bus", 5, || async { server.numsub("lobby").await == 0 }).await;
}

/// The witness rule: a reader or publisher that holds a message Redis no
/// longer has (beyond the head, or another message at its seq) moves the
/// room to a new epoch, announced to every node; a client's word does so at
/// most once per cooldown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_redis_does_not_hold_resets_the_epoch_once() {
    use palaver_broker::Evidence;
    use palaver_protocol::{ClientMessageId, Witness};

    let server = RedisServer::start();
    let (a, b) = (node(&server, "a").await, node(&server, "b").await);
    let lobby = room("lobby");
    b.broker.subscribe(&lobby).await.expect("subscribe");
    for i in 1..=3 {
        a.broker.publish(&lobby, draft("ann", &format!("m{i}"))).await.expect("publish");
    }
    let e1 = a.broker.head(&lobby, None).await.expect("head").epoch;
    let witness = |seq, id: &str, who: &str| Witness {
        epoch: e1.clone(),
        seq,
        id: Some(ClientMessageId::parse(id).expect("valid")),
        user: Some(user(who)),
    };

    // What Redis holds passes, and so does a position without identity.
    for held in
        [witness(3, "m3", "ann"), Witness { id: None, user: None, ..witness(2, "m2", "ann") }]
    {
        let head = a.broker.head(&lobby, Some(Evidence::node(held))).await.expect("head");
        assert_eq!((head.epoch.clone(), head.head, head.lost), (e1.clone(), 3, false));
    }
    // Another message at seq 3 (what a Redis back from a snapshot does): reset.
    let head = a.broker.head(&lobby, Some(Evidence::node(witness(3, "m9", "ann")))).await;
    let e2 = head.expect("head").epoch;
    assert_ne!(e2, e1, "a new epoch");
    let inbox = b.inbox.clone();
    let announced = e2.clone();
    eventually("the reset reaches the other node", 10, || {
        let seen = inbox
            .events()
            .iter()
            .any(|e| matches!(&e.event, BusEvent::Reset { epoch } if *epoch == announced));
        async move { seen }
    })
    .await;
    // History and numbering carry on in the new epoch.
    let next = a.broker.publish(&lobby, draft("ann", "m4")).await.expect("publish");
    assert_eq!((next.epoch.clone(), next.seq), (e2.clone(), 4));

    // A client claiming seq 9 of the new epoch (beyond the head) within the
    // cooldown: it is told its message is lost, the room is not reset again.
    let claim = Witness { epoch: e2.clone(), seq: 9, id: None, user: None };
    let head = a.broker.head(&lobby, Some(Evidence::client(claim.clone()))).await.expect("head");
    assert_eq!((head.epoch.clone(), head.lost), (e2.clone(), true));
    // The node's own evidence is never held back.
    let head = a.broker.head(&lobby, Some(Evidence::node(claim))).await.expect("head");
    assert_ne!(head.epoch, e2);
    assert!(!head.lost);
    // A publish carrying evidence of a lost message numbers after the reset.
    let stale = Witness { epoch: head.epoch.clone(), seq: 50, id: None, user: None };
    let published = a
        .broker
        .publish(&lobby, Draft { witness: Some(stale), ..draft("ann", "m5") })
        .await
        .expect("publish");
    assert_ne!(published.epoch, head.epoch);
    assert_eq!(published.seq, 5);
}

/// Concurrent publishes share script calls (batches), each room keeps its
/// own gap-free numbering, and every key of a room carries the room TTL from
/// its first message on, so an idle room expires whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_batch_and_every_key_expires() {
    let server = RedisServer::start();
    let a = node_with(&server, "a", |c| c.room_ttl = Duration::from_secs(60)).await;
    let rooms: Vec<_> = (0..20).map(|i| room(&format!("r{i}"))).collect();
    let publishes = join_all((0..400).map(|n| {
        let broker = a.broker.clone();
        let room = rooms[n % rooms.len()].clone();
        async move { (n % 20, broker.publish(&room, draft("ann", &format!("m{n}"))).await) }
    }))
    .await;
    let mut per_room: Vec<Vec<u64>> = vec![Vec::new(); rooms.len()];
    for (r, published) in publishes {
        per_room[r].push(published.expect("publish").seq);
    }
    for seqs in &mut per_room {
        seqs.sort_unstable();
        assert_eq!(*seqs, (1..=20).collect::<Vec<_>>(), "gap-free per room");
    }
    let stats = a.broker.stats().snapshot();
    assert_eq!(stats.publishes, 400);
    assert!(stats.publish_batches < 400, "concurrent publishes share calls: {stats:?}");
    for key in ["meta", "stream", "ids"] {
        let name = format!("palaver:room:{{r3}}:{key}");
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&name)
            .query_async(&mut server.client().await)
            .await
            .expect("PTTL");
        assert!(ttl > 50_000 && ttl <= 60_000, "{name} ttl {ttl}");
    }
}

/// With a linger, publishes that arrive one after another (not together)
/// still share a script call, in order and gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linger_lets_publishes_spread_in_time_share_a_call() {
    let server = RedisServer::start();
    let a = node_with(&server, "a", |c| c.publish_linger = Duration::from_millis(300)).await;
    let lobby = room("lobby");
    let mut publishes = Vec::new();
    for n in 0..5 {
        let (broker, lobby) = (a.broker.clone(), lobby.clone());
        publishes.push(tokio::spawn(async move {
            broker.publish(&lobby, draft("ann", &format!("m{n}"))).await
        }));
        // Far less than the linger: each joins the first one's call.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seqs = Vec::new();
    for publish in publishes {
        seqs.push(publish.await.expect("task").expect("publish").seq);
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5], "in the order they were sent");
    let stats = a.broker.stats().snapshot();
    assert_eq!(stats.publishes, 5);
    assert_eq!(stats.publish_batches, 1, "one call for all: {stats:?}");
}
