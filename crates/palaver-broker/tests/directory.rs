//! The Redis broker's cluster-wide answers for the server API — node reports,
//! active rooms, control orders — with two brokers ("nodes") sharing a real
//! `redis-server`.

// Each test binary uses part of the helpers.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use palaver_broker::{Broker, Control, NodeReport};
use support::{RedisServer, eventually, node_with, room, user};

fn report(node: &str, connections: u64) -> NodeReport {
    NodeReport { node: node.into(), connections, rooms: 0, at_ms: 1 }
}

#[tokio::test]
async fn nodes_report_and_dead_nodes_drop_out() {
    let server = RedisServer::start();
    let short = |c: &mut palaver_broker::RedisConfig| c.report_ttl = Duration::from_millis(500);
    let (a, b) = (node_with(&server, "a", short).await, node_with(&server, "b", short).await);
    a.broker.report(report("a", 3)).await.expect("report a");
    b.broker.report(report("b", 4)).await.expect("report b");
    let cluster = a.broker.nodes().await.expect("nodes");
    assert_eq!(cluster.nodes, vec![report("a", 3), report("b", 4)]);
    assert_eq!(cluster.rooms, 0);
    // b stops reporting (as if it died); a keeps going.
    eventually("b's report expired", 10, || {
        let broker = a.broker.clone();
        async move {
            broker.report(report("a", 5)).await.expect("report a");
            broker.nodes().await.expect("nodes").nodes == vec![report("a", 5)]
        }
    })
    .await;
}

#[tokio::test]
async fn rooms_merge_every_node_and_page_by_name() {
    let server = RedisServer::start();
    let (a, b) = (node_with(&server, "a", |_| {}).await, node_with(&server, "b", |_| {}).await);
    for name in ["r1", "r2", "r3"] {
        a.broker.subscribe(&room(name)).await.expect("subscribe");
        a.broker.presence_join(&room(name), &user("ann"), "s1").await.expect("join");
    }
    for name in ["r2", "r4"] {
        b.broker.subscribe(&room(name)).await.expect("subscribe");
        b.broker.presence_join(&room(name), &user("bob"), "s2").await.expect("join");
    }
    a.broker.report(report("a", 1)).await.expect("report a");
    b.broker.report(report("b", 1)).await.expect("report b");
    let page = b.broker.rooms(None, 3).await.expect("rooms");
    let listed: Vec<(String, u64)> =
        page.rooms.iter().map(|r| (r.room.to_string(), r.members)).collect();
    assert_eq!(listed, vec![("r1".into(), 1), ("r2".into(), 2), ("r3".into(), 1)]);
    assert!(page.more);
    assert_eq!(a.broker.nodes().await.expect("nodes").rooms, 4, "r2 counts once");
    let rest = a.broker.rooms(Some(&room("r3")), 3).await.expect("rooms");
    assert_eq!(rest.rooms.iter().map(|r| r.room.as_str()).collect::<Vec<_>>(), vec!["r4"]);
    assert!(!rest.more);

    // A room a node left disappears from its list at its next report.
    a.broker.unsubscribe(&room("r1")).await;
    a.broker.report(report("a", 1)).await.expect("report a");
    let page = a.broker.rooms(None, 10).await.expect("rooms");
    assert_eq!(page.rooms.first().map(|r| r.room.as_str()), Some("r2"));

    // Redis restarted empty: the next report writes the list whole again.
    let mut conn = server.client().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.expect("flush");
    a.broker.report(report("a", 1)).await.expect("report a");
    let page = b.broker.rooms(None, 10).await.expect("rooms");
    assert_eq!(page.rooms.len(), 2, "{page:?}");
}

#[tokio::test]
async fn control_orders_reach_every_node() {
    let server = RedisServer::start();
    let (a, b) = (node_with(&server, "a", |_| {}).await, node_with(&server, "b", |_| {}).await);
    let order = Control::Disconnect { user: user("ann"), code: 4002, reason: "bye".into() };
    let reached = a.broker.control(order.clone()).await.expect("control");
    assert_eq!(reached, 2);
    for node in [&a, &b] {
        let inbox = node.inbox.clone();
        eventually("the order arrived", 10, || {
            let got = inbox.controls();
            async move { !got.is_empty() }
        })
        .await;
        assert_eq!(node.inbox.controls(), vec![order.clone()]);
    }
}
