//! End-to-end tests of a cluster: several real `palaver` processes sharing one
//! real `redis-server` (private, on an ephemeral port, so tests can stop it).
//! The tests that do not stop Redis run against a Redis Cluster too
//! (3 masters + 3 replicas), as `<test>::one_redis` and `<test>::redis_cluster`.

use std::{sync::Arc, time::Duration};

use palaver_protocol::{Epoch, ErrorCode, PresenceState, ServerFrame};
use palaver_tests::{Node, PATIENCE, RedisBackend, RedisServer, WsClient, cluster, node::http_get};
use serde_json::json;
use tokio::sync::Barrier;

/// Runs an `async fn(&dyn RedisBackend)` test body against one Redis and
/// against a Redis Cluster.
macro_rules! on_redis_and_cluster {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn one_redis() {
                super::$body(&palaver_tests::RedisServer::start()).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis_cluster() {
                super::$body(&palaver_tests::RedisCluster::start(3)).await
            }
        }
    };
}

on_redis_and_cluster!(every_client_on_every_node_gets_every_message_once_in_order);
on_redis_and_cluster!(a_client_moved_to_another_node_mid_stream_misses_nothing);
on_redis_and_cluster!(killed_node_clients_resume_elsewhere_and_its_presence_expires);
on_redis_and_cluster!(idempotent_retry_through_another_node_is_one_message);

fn seqs(messages: &[(u64, String)]) -> Vec<u64> {
    messages.iter().map(|(s, _)| *s).collect()
}

fn epoch_of(frame: &ServerFrame) -> Epoch {
    match frame {
        ServerFrame::Joined { epoch, .. } => epoch.clone(),
        other => panic!("expected joined, got {other:?}"),
    }
}

async fn ready(node: &Node, want: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = http_get(node.addr, "/readyz").await.map(|(s, _)| s).unwrap_or(0);
        if (status == 200) == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "/readyz never became {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn every_client_on_every_node_gets_every_message_once_in_order(redis: &dyn RedisBackend) {
    let nodes = cluster(redis, 3, &[]);
    let (clients, senders, per_sender) = (30, 10, 20);
    let total = senders * per_sender;
    let barrier = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let url = nodes[i % 3].ws_url(&format!("u{i}"));
        let node_id = nodes[i % 3].id.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = WsClient::connect(&url).await;
            assert!(matches!(&c.welcome, ServerFrame::Welcome { node, .. } if *node == node_id));
            c.join("lobby").await;
            barrier.wait().await;
            if i < senders {
                for n in 0..per_sender {
                    c.say("lobby", &format!("u{i}-{n}"), &format!("from {i}: {n}")).await;
                }
            }
            seqs(&c.messages("lobby", total).await)
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("client task"), (1..=total as u64).collect::<Vec<_>>());
    }
}

#[tokio::test]
async fn rooms_are_isolated_and_the_last_local_leave_unsubscribes() {
    let redis = RedisServer::start();
    let nodes = cluster(&redis, 2, &[]);
    let mut a = WsClient::connect(&nodes[0].ws_url("ann")).await;
    a.join("alpha").await;
    let mut b = WsClient::connect(&nodes[1].ws_url("bob")).await;
    b.join("beta").await;
    let mut a2 = WsClient::connect(&nodes[1].ws_url("al")).await;
    a2.join("alpha").await;
    assert_eq!(redis.numsub("palaver:room:{alpha}"), 2);
    assert_eq!(redis.numsub("palaver:room:{beta}"), 1);

    a.say("alpha", "m1", "for alpha only").await;
    assert_eq!(a2.messages("alpha", 1).await[0].1, "for alpha only");
    // Bob may still hear his own arrival in beta (presence travels the bus
    // after `joined`); nothing of alpha may reach him.
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(300);
    let left = || quiet_until.saturating_duration_since(tokio::time::Instant::now());
    while let Some(frame) = b.try_next(left()).await {
        let text = frame.encode();
        assert!(!text.as_str().contains("alpha"), "beta must not see alpha's traffic: {text:?}");
        if tokio::time::Instant::now() >= quiet_until {
            break;
        }
    }

    a2.send_json(json!({"type":"leave","room":"alpha"})).await;
    a2.expect(|f| matches!(f, ServerFrame::Left { .. })).await;
    wait_for(|| redis.numsub("palaver:room:{alpha}") == 1).await;
    a.close().await;
    wait_for(|| redis.numsub("palaver:room:{alpha}") == 0).await;
    assert_eq!(redis.numsub("palaver:room:{beta}"), 1);
}

async fn wait_for(mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "condition not reached in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_client_moved_to_another_node_mid_stream_misses_nothing(redis: &dyn RedisBackend) {
    let nodes = cluster(redis, 3, &[]);
    let mut sender = WsClient::connect(&nodes[2].ws_url("ann")).await;
    sender.join("lobby").await;
    let mut mover = WsClient::connect(&nodes[0].ws_url("bob")).await;
    let epoch = epoch_of(&mover.join("lobby").await);
    for i in 1..=10 {
        sender.say("lobby", &format!("a{i}"), "first half").await;
    }
    let mut seen = seqs(&mover.messages("lobby", 4).await);
    mover.close().await;
    for i in 11..=20 {
        sender.say("lobby", &format!("a{i}"), "second half").await;
    }
    let last = *seen.last().expect("saw some");
    let mut moved = WsClient::connect(&nodes[1].ws_url("bob")).await;
    moved.send_json(json!({"type":"join","room":"lobby","since":{"epoch":epoch,"seq":last}})).await;
    match moved.expect(|f| matches!(f, ServerFrame::Joined { .. })).await {
        ServerFrame::Joined { recovered, .. } => assert!(recovered),
        _ => unreachable!(),
    }
    seen.extend(seqs(&moved.messages("lobby", 20 - last as usize).await));
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    sender.say("lobby", "a21", "live again").await;
    assert_eq!(seqs(&moved.messages("lobby", 1).await), vec![21]);
}

async fn killed_node_clients_resume_elsewhere_and_its_presence_expires(redis: &dyn RedisBackend) {
    let mut nodes = cluster(redis, 2, &["--presence-ttl", "2s"]);
    let mut watcher = WsClient::connect(&nodes[1].ws_url("watcher")).await;
    watcher.join("lobby").await;
    let mut ghost = WsClient::connect(&nodes[0].ws_url("ghost")).await;
    ghost.join("lobby").await;
    let mut victim = WsClient::connect(&nodes[0].ws_url("victim")).await;
    let epoch = epoch_of(&victim.join("lobby").await);
    for i in 1..=5 {
        watcher.say("lobby", &format!("w{i}"), "before").await;
    }
    assert_eq!(seqs(&victim.messages("lobby", 5).await), vec![1, 2, 3, 4, 5]);

    nodes[0].kill();
    for i in 6..=10 {
        watcher.say("lobby", &format!("w{i}"), "while moving").await;
    }
    let mut resumed = WsClient::connect(&nodes[1].ws_url("victim")).await;
    resumed.send_json(json!({"type":"join","room":"lobby","since":{"epoch":epoch,"seq":5}})).await;
    match resumed.expect(|f| matches!(f, ServerFrame::Joined { .. })).await {
        ServerFrame::Joined { recovered, .. } => assert!(recovered),
        _ => unreachable!(),
    }
    assert_eq!(seqs(&resumed.messages("lobby", 5).await), vec![6, 7, 8, 9, 10]);

    // The dead node's entries expire: the watcher is told the ghost left.
    watcher
        .expect(|f| {
            matches!(f, ServerFrame::Presence { user, state: PresenceState::Leave, .. } if user.as_str() == "ghost")
        })
        .await;
    let mut late = WsClient::connect(&nodes[1].ws_url("late")).await;
    match late.join("lobby").await {
        ServerFrame::Joined { members, .. } => {
            let names: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
            assert_eq!(names, vec!["late", "victim", "watcher"]);
        }
        _ => unreachable!(),
    }
    drop(ghost);
}

#[tokio::test]
async fn redis_outage_is_retryable_and_everyone_converges_afterwards() {
    let mut redis = RedisServer::start();
    let nodes = cluster(&redis, 2, &[]);
    let mut a = WsClient::connect(&nodes[0].ws_url("ann")).await;
    a.join("lobby").await;
    let mut b = WsClient::connect(&nodes[1].ws_url("bob")).await;
    b.join("lobby").await;
    for i in 1..=3 {
        a.say("lobby", &format!("a{i}"), "before the outage").await;
    }

    redis.stop_keeping_data();
    ready(&nodes[0], false).await;
    a.send_json(json!({"type":"send","room":"lobby","id":"a4","text":"during"})).await;
    match a.expect(|f| matches!(f, ServerFrame::Error { .. })).await {
        ServerFrame::Error { code, retryable, reference, .. } => {
            assert_eq!(
                (code, retryable, reference.as_deref()),
                (ErrorCode::Unavailable, true, Some("a4"))
            );
        }
        _ => unreachable!(),
    }

    redis.restart();
    ready(&nodes[0], true).await;
    ready(&nodes[1], true).await;
    // The client retries the refused send with the same id; then traffic flows from both sides.
    a.say("lobby", "a4", "during").await;
    b.say("lobby", "b5", "after").await;
    for c in [&mut a, &mut b] {
        assert_eq!(seqs(&c.messages("lobby", 5).await), vec![1, 2, 3, 4, 5]);
    }
}

#[tokio::test]
async fn redis_restarted_empty_starts_a_new_epoch_and_says_so() {
    let mut redis = RedisServer::start();
    let nodes = cluster(&redis, 2, &[]);
    let mut a = WsClient::connect(&nodes[0].ws_url("ann")).await;
    let old = epoch_of(&a.join("lobby").await);
    let mut b = WsClient::connect(&nodes[1].ws_url("bob")).await;
    b.join("lobby").await;
    for i in 1..=3 {
        a.say("lobby", &format!("a{i}"), "old epoch").await;
    }
    assert_eq!(seqs(&b.messages("lobby", 3).await), vec![1, 2, 3]);

    redis.stop_losing_data();
    redis.restart();
    ready(&nodes[0], true).await;
    ready(&nodes[1], true).await;
    // Connected members are told, unprompted, that continuity was lost.
    for c in [&mut a, &mut b] {
        match c.expect(|f| matches!(f, ServerFrame::Joined { .. })).await {
            ServerFrame::Joined { recovered, epoch, .. } => assert!(!recovered && epoch != old),
            _ => unreachable!(),
        }
    }
    // A client resuming with the old epoch is told too.
    let mut c = WsClient::connect(&nodes[1].ws_url("cy")).await;
    c.send_json(json!({"type":"join","room":"lobby","since":{"epoch":old,"seq":3}})).await;
    let new = match c.expect(|f| matches!(f, ServerFrame::Joined { .. })).await {
        ServerFrame::Joined { recovered, epoch, .. } => {
            assert!(!recovered);
            epoch
        }
        _ => unreachable!(),
    };
    assert_ne!(new, old);
    // New messages flow, numbered from 1 in the new epoch.
    a.say("lobby", "n1", "new epoch").await;
    for client in [&mut a, &mut b, &mut c] {
        assert_eq!(seqs(&client.messages("lobby", 1).await), vec![1]);
    }
}

async fn idempotent_retry_through_another_node_is_one_message(redis: &dyn RedisBackend) {
    let nodes = cluster(redis, 2, &[]);
    let mut watcher = WsClient::connect(&nodes[1].ws_url("watcher")).await;
    watcher.join("lobby").await;
    let mut first = WsClient::connect(&nodes[0].ws_url("ann")).await;
    first.join("lobby").await;
    let seq = first.say("lobby", "retry-me", "exactly once").await;
    first.close().await;
    let mut retry = WsClient::connect(&nodes[1].ws_url("ann")).await;
    retry.join("lobby").await;
    retry
        .send_json(json!({"type":"send","room":"lobby","id":"retry-me","text":"exactly once"}))
        .await;
    match retry.expect(|f| matches!(f, ServerFrame::Ack { .. })).await {
        ServerFrame::Ack { seq: s, duplicate, .. } => assert_eq!((s, duplicate), (seq, true)),
        _ => unreachable!(),
    }
    retry.say("lobby", "next", "second").await;
    assert_eq!(seqs(&watcher.messages("lobby", 2).await), vec![seq, seq + 1]);
}
