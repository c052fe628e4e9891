//! End-to-end on a Redis Cluster (3 masters + 3 replicas spawned by the
//! harness), through topology changes under traffic: real `palaver` nodes,
//! real WebSocket clients, the room's slot resharded, a master added, a master
//! killed. Members keep receiving in order; what the move hides from the bus
//! is caught up from history; when the promoted replica lost writes, the room
//! moves to a new epoch and members are told (`joined` with `recovered: false`).

use std::{collections::HashMap, time::Duration};

use palaver_protocol::ServerFrame;
use palaver_tests::{Node, RedisCluster, WsClient, cluster as cluster_nodes};
use serde_json::json;

const ROOM: &str = "busy";

/// Sends `count` messages, each retried with the same id until acked (a
/// retry is idempotent); returns the acked (epoch, seq, id) in order.
async fn send_all(mut sender: WsClient, count: usize) -> Vec<(String, u64, String)> {
    let mut acked = Vec::new();
    for i in 0..count {
        let id = format!("s{i}");
        'retry: loop {
            sender.send_json(json!({"type":"send","room":ROOM,"id":id,"text":"x"})).await;
            loop {
                match sender.next().await {
                    ServerFrame::Ack { id: acked_id, seq, epoch, .. }
                        if acked_id.as_str() == id =>
                    {
                        acked.push((epoch.to_string(), seq, id.clone()));
                        break 'retry;
                    }
                    ServerFrame::Error { reference: Some(r), retryable, .. } if r == id => {
                        assert!(retryable, "a send failed for good");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue 'retry;
                    }
                    _ => {}
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    acked
}

/// What a member saw: each message as (epoch, seq, id), and each `joined`
/// after the first as its `recovered` flag.
#[derive(Default)]
struct Seen {
    messages: Vec<(String, u64, String)>,
    rejoins: Vec<bool>,
}

/// Reads `member`'s frames until it has seen `last` (epoch, seq).
async fn watch(mut member: WsClient, last: (String, u64)) -> Seen {
    let mut seen = Seen::default();
    loop {
        match member.next().await {
            ServerFrame::Message { epoch, seq, id, .. } => {
                let done = (epoch.to_string(), seq) == last;
                seen.messages.push((epoch.to_string(), seq, id.to_string()));
                if done {
                    return seen;
                }
            }
            ServerFrame::Joined { recovered, .. } => seen.rejoins.push(recovered),
            _ => {}
        }
    }
}

/// Joins a member on each node.
async fn members(nodes: &[Node]) -> Vec<WsClient> {
    let mut members = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut member = WsClient::connect(&node.ws_url(&format!("m{i}"))).await;
        member.join(ROOM).await;
        members.push(member);
    }
    members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_receive_everything_in_order_while_the_slot_moves_twice() {
    let cluster = std::sync::Arc::new(std::sync::Mutex::new(RedisCluster::start(3)));
    let nodes = cluster_nodes(&*cluster.lock().expect("cluster"), 3, &[]);
    let members = members(&nodes).await;
    let mut sender = WsClient::connect(&nodes[0].ws_url("ann")).await;
    sender.join(ROOM).await;
    let traffic = tokio::spawn(send_all(sender, 200));

    // Reshard the room's slot to another master, then onto a master added now.
    let mover = cluster.clone();
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(500));
        let mut cluster = mover.lock().expect("cluster");
        let slot = cluster.slot(&format!("palaver:room:{{{ROOM}}}"));
        let from = cluster.owner(slot);
        let to = cluster.masters().into_iter().find(|m| m.port != from).expect("another").port;
        cluster.move_slot(slot, to);
        let added = cluster.add_master();
        cluster.move_slot(slot, added);
        assert_eq!(cluster.owner(slot), added);
    })
    .await
    .expect("resharding");
    let acked = traffic.await.expect("sender");
    assert_eq!(acked.iter().map(|a| a.1).collect::<Vec<_>>(), (1..=200).collect::<Vec<_>>());
    let last = acked.last().map(|(e, s, _)| (e.clone(), *s)).expect("acked");
    for member in members {
        let seen = watch(member, last.clone()).await;
        assert_eq!(seen.messages, acked, "every message once, in order");
        assert!(seen.rejoins.is_empty(), "nothing was lost: no epoch change");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_traffic_loses_nobody_silently() {
    let cluster = std::sync::Arc::new(std::sync::Mutex::new(RedisCluster::start(3)));
    let nodes = cluster_nodes(&*cluster.lock().expect("cluster"), 3, &[]);
    let members = members(&nodes).await;
    let mut sender = WsClient::connect(&nodes[1].ws_url("ann")).await;
    sender.join(ROOM).await;
    let traffic = tokio::spawn(send_all(sender, 150));

    let killer = cluster.clone();
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(700));
        let mut cluster = killer.lock().expect("cluster");
        let master = cluster.owner(cluster.slot(&format!("palaver:room:{{{ROOM}}}")));
        cluster.kill_master(master);
    })
    .await
    .expect("failover");
    let acked = traffic.await.expect("sender");
    let last = acked.last().map(|(e, s, _)| (e.clone(), *s)).expect("acked");

    // No (epoch, seq) names two messages, across the sender and every member.
    let mut names: HashMap<(String, u64), String> = HashMap::new();
    let mut check = |(epoch, seq, id): &(String, u64, String)| {
        if let Some(other) = names.insert((epoch.clone(), *seq), id.clone()) {
            assert_eq!(&other, id, "({epoch}, {seq}) names two messages");
        }
    };
    acked.iter().for_each(&mut check);
    for member in members {
        let seen = watch(member, last.clone()).await;
        seen.messages.iter().for_each(&mut check);
        // In order and gap-free within an epoch; a new epoch only after being
        // told (`joined`, recovered: false).
        let epochs: Vec<&String> = seen.messages.iter().map(|m| &m.0).collect();
        let changes = epochs.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(seen.rejoins.iter().filter(|r| !**r).count() >= changes, "told of each epoch");
        for pair in seen.messages.windows(2) {
            if pair[0].0 == pair[1].0 {
                assert_eq!(pair[1].1, pair[0].1 + 1, "gap-free within an epoch");
            }
        }
        // Every message acked in the final epoch reached the member.
        let final_epoch = &last.0;
        let want: Vec<&(String, u64, String)> =
            acked.iter().filter(|a| &a.0 == final_epoch).collect();
        let got: Vec<&(String, u64, String)> =
            seen.messages.iter().filter(|m| &m.0 == final_epoch).collect();
        for message in &want {
            assert!(
                got.contains(message) || seen.rejoins.contains(&false),
                "{message:?} missed silently"
            );
        }
    }
}
