//! A Redis that comes back *behind* what its clients already received (an RDB
//! snapshot, `appendfsync everysec`, a lagging replica promoted) must never
//! make one (epoch, seq) name two messages, and must tell every member that
//! lost messages `recovered: false`.
//!
//! Real `palaver` processes share a private `redis-server` that the tests
//! snapshot, kill with SIGKILL and restart from what it persisted.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use palaver_protocol::{ErrorCode, ServerFrame};
use palaver_tests::{Node, PATIENCE, RedisServer, WsClient, cluster, node::http_get};
use serde_json::json;
use tokio::task::JoinHandle;

const ROOM: &str = "lobby";
/// Text of the message that ends each scenario: every member waits for it.
const FINAL: &str = "final";

async fn ready(node: &Node) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while http_get(node.addr, "/readyz").await.map(|(s, _)| s).unwrap_or(0) != 200 {
        assert!(tokio::time::Instant::now() < deadline, "{} never became ready", node.id);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What one client received, in order: every message (live or replayed)
/// and every `joined`.
#[derive(Debug, Default, Clone)]
struct Ledger {
    events: Vec<Seen>,
}

#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// (epoch, seq) -> the message's identity (user, id).
    Message {
        epoch: String,
        seq: u64,
        user: String,
        id: String,
        text: String,
    },
    Joined {
        epoch: String,
        seq: u64,
        recovered: bool,
    },
}

impl Ledger {
    fn record(&mut self, frame: &ServerFrame) {
        match frame {
            ServerFrame::Message { room, epoch, seq, id, user, text, .. }
                if room.as_str() == ROOM =>
            {
                self.events.push(Seen::Message {
                    epoch: epoch.to_string(),
                    seq: *seq,
                    user: user.to_string(),
                    id: id.to_string(),
                    text: text.clone(),
                })
            }
            ServerFrame::Joined { room, epoch, seq, recovered, .. } if room.as_str() == ROOM => {
                self.events.push(Seen::Joined {
                    epoch: epoch.to_string(),
                    seq: *seq,
                    recovered: *recovered,
                })
            }
            _ => {}
        }
    }

    fn messages(&self) -> impl Iterator<Item = (&str, u64, (&str, &str))> {
        self.events.iter().filter_map(|e| match e {
            Seen::Message { epoch, seq, user, id, .. } => {
                Some((epoch.as_str(), *seq, (user.as_str(), id.as_str())))
            }
            Seen::Joined { .. } => None,
        })
    }

    /// The newest message held, as `since` with its id.
    fn since(&self) -> serde_json::Value {
        let (epoch, seq, (_, id)) = self.messages().last().expect("holds a message");
        json!({"epoch": epoch, "seq": seq, "id": id})
    }

    fn has_final(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Seen::Message { text, .. } if text == FINAL))
    }

    fn count(&self) -> usize {
        self.messages().count()
    }

    /// The two promises, for this client: no (epoch, seq) names two messages,
    /// and within an epoch sequence numbers only go forwards.
    fn assert_consistent(&self, who: &str) {
        let mut named: HashMap<(&str, u64), (&str, &str)> = HashMap::new();
        let mut last: HashMap<&str, u64> = HashMap::new();
        for (epoch, seq, identity) in self.messages() {
            if let Some(before) = named.insert((epoch, seq), identity) {
                assert_eq!(
                    before, identity,
                    "{who}: ({epoch}, {seq}) named two messages\n{:#?}",
                    self.events
                );
            }
            let previous = last.insert(epoch, seq).unwrap_or(0);
            assert!(seq > previous, "{who}: seq went from {previous} to {seq} in epoch {epoch}");
        }
    }

    /// Messages this client holds that the room's final history does not
    /// (another message at that seq, or none): what Redis lost of its view.
    fn lost(&self, history: &HashMap<u64, (String, String)>) -> Vec<(String, u64)> {
        self.messages()
            .filter(|(_, seq, (user, id))| {
                history.get(seq).is_none_or(|(u, i)| (u.as_str(), i.as_str()) != (*user, *id))
            })
            .map(|(epoch, seq, _)| (epoch.to_owned(), seq))
            .collect()
    }

    /// True when, after the first lost message, the client was told
    /// `recovered: false` at an epoch other than that message's.
    fn told_after(&self, lost: &(String, u64)) -> bool {
        let at = self
            .events
            .iter()
            .position(|e| matches!(e, Seen::Message { epoch, seq, .. } if (epoch, seq) == (&lost.0, &lost.1)))
            .expect("lost message is in the ledger");
        self.events[at..]
            .iter()
            .any(|e| matches!(e, Seen::Joined { epoch, recovered: false, .. } if *epoch != lost.0))
    }
}

/// A member that stays connected and records everything until it has seen
/// [`FINAL`].
fn stay(mut client: WsClient, who: String) -> JoinHandle<Ledger> {
    tokio::spawn(async move {
        let mut ledger = Ledger::default();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ledger.has_final() {
            assert!(Instant::now() < deadline, "{who} never saw the final message: {ledger:#?}");
            if let Some(frame) = client.try_next(Duration::from_millis(200)).await {
                ledger.record(&frame);
            }
        }
        ledger
    })
}

/// Joins (with `since` if given) and returns the client with its ledger.
async fn member(url: &str, since: Option<serde_json::Value>) -> (WsClient, Ledger) {
    let mut client = WsClient::connect(url).await;
    let mut join = json!({"type":"join","room":ROOM});
    if let Some(since) = since {
        join["since"] = since;
    }
    client.send_json(join).await;
    let mut ledger = Ledger::default();
    let joined = client.expect(|f| matches!(f, ServerFrame::Joined { .. })).await;
    ledger.record(&joined);
    (client, ledger)
}

/// Sends until acknowledged, retrying (same id) while the cluster is
/// unavailable. Records what the client reads on the way.
async fn send(client: &mut WsClient, ledger: &mut Ledger, id: &str, text: &str) {
    let deadline = Instant::now() + PATIENCE * 3;
    loop {
        assert!(Instant::now() < deadline, "send {id} never acknowledged");
        client.send_json(json!({"type":"send","room":ROOM,"id":id,"text":text})).await;
        loop {
            let frame = client.next().await;
            ledger.record(&frame);
            match frame {
                ServerFrame::Ack { id: acked, .. } if acked.as_str() == id => return,
                ServerFrame::Error { code: ErrorCode::Unavailable, .. } => break,
                ServerFrame::Error { code, message, .. } => panic!("send {id}: {code:?} {message}"),
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads frames into the ledger until it holds `count` messages.
async fn read_until(client: &mut WsClient, ledger: &mut Ledger, count: usize) {
    while ledger.count() < count {
        let frame = client.next().await;
        ledger.record(&frame);
    }
}

/// The room's history as Redis holds it now: seq -> (user, id).
async fn final_history(node: &Node) -> HashMap<u64, (String, String)> {
    let mut reader = WsClient::connect(&node.ws_url("auditor")).await;
    reader.join(ROOM).await;
    let mut history = HashMap::new();
    let mut after = 0;
    loop {
        reader.send_json(json!({"type":"history","room":ROOM,"after":after,"limit":100})).await;
        let ServerFrame::History { messages, more, .. } =
            reader.expect(|f| matches!(f, ServerFrame::History { .. })).await
        else {
            unreachable!()
        };
        for m in &messages {
            history.insert(m.seq, (m.user.to_string(), m.id.to_string()));
            after = after.max(m.seq);
        }
        if !more || messages.is_empty() {
            return history;
        }
    }
}

/// Redis restarted from a snapshot taken `lost` acknowledged messages ago.
/// Stayers on every node stay connected; a reconnecting client resumes with
/// `since` (and its message id) through another node after fresh traffic
/// from a node that knew nothing has already pushed the head past it.
async fn restart_behind(lost: usize) {
    let mut redis = RedisServer::start();
    let nodes = cluster(&redis, 4, &[]);
    // n3 has no member in the room until after the restart: it knows nothing.
    let mut stayers = Vec::new();
    for (i, node) in nodes[..3].iter().enumerate() {
        stayers.push(member(&node.ws_url(&format!("stay{i}")), None).await);
    }
    let (mut writer, mut writer_ledger) = member(&nodes[1].ws_url("writer"), None).await;
    let (mut mover, mut mover_ledger) = member(&nodes[0].ws_url("mover"), None).await;
    let (mut legacy, mut legacy_ledger) = member(&nodes[2].ws_url("legacy"), None).await;

    for i in 1..=5 {
        send(&mut writer, &mut writer_ledger, &format!("w{i}"), "kept").await;
    }
    redis.snapshot();
    let total = 5 + lost;
    for i in 6..=total {
        send(&mut writer, &mut writer_ledger, &format!("w{i}"), "lost").await;
    }
    for (client, ledger) in stayers.iter_mut() {
        read_until(client, ledger, total).await;
    }
    read_until(&mut mover, &mut mover_ledger, total).await;
    read_until(&mut legacy, &mut legacy_ledger, total).await;
    mover.close().await;
    legacy.close().await;
    let stayers: Vec<JoinHandle<Ledger>> = stayers
        .into_iter()
        .enumerate()
        .map(|(i, (client, ledger))| {
            let task = stay(client, format!("stay{i}"));
            // The ledger so far travels with the task's result below.
            tokio::spawn(async move {
                let mut tail = task.await.expect("stayer");
                let mut all = ledger;
                all.events.append(&mut tail.events);
                all
            })
        })
        .collect();

    // Redis dies and comes back from the snapshot: the last `lost` messages
    // are gone, while epoch and seq say nothing happened.
    redis.crash();
    redis.restart();
    ready(&nodes[3]).await;
    // A node that knew nothing sends more than was lost, as fast as it can.
    let (mut fresh, mut fresh_ledger) = member(&nodes[3].ws_url("fresh"), None).await;
    for i in 1..=lost + 3 {
        send(&mut fresh, &mut fresh_ledger, &format!("f{i}"), "after").await;
    }
    // The mover comes back through another node, past the head by numbers.
    let (mover2, mut mover2_ledger) =
        member(&nodes[2].ws_url("mover"), Some(mover_ledger.since())).await;
    match mover2_ledger.events.last() {
        Some(Seen::Joined { recovered, epoch, .. }) => {
            assert!(!recovered, "a client that lost messages must not be told recovered");
            let Some((old, _, _)) = mover_ledger.messages().last() else { unreachable!() };
            assert_ne!(epoch, old, "the room must move to a new epoch");
        }
        other => panic!("expected joined, got {other:?}"),
    }
    let mover_task = stay(mover2, "mover".into());

    for node in &nodes {
        ready(node).await;
    }
    send(&mut writer, &mut writer_ledger, "final", FINAL).await;
    let mut ledgers: Vec<(String, Ledger)> = Vec::new();
    for (i, task) in stayers.into_iter().enumerate() {
        ledgers.push((format!("stay{i}"), task.await.expect("stayer")));
    }
    mover_ledger.events.append(&mut mover2_ledger.events);
    mover_ledger.events.append(&mut mover_task.await.expect("mover").events);
    ledgers.push(("mover".into(), mover_ledger));
    read_until_final(&mut fresh, &mut fresh_ledger).await;
    ledgers.push(("fresh".into(), fresh_ledger));
    read_until_final(&mut writer, &mut writer_ledger).await;
    ledgers.push(("writer".into(), writer_ledger));

    // An old client (no id in `since`) resuming now is told too: the room
    // is in a new epoch.
    let mut since = legacy_ledger.since();
    since.as_object_mut().expect("object").remove("id");
    let (_legacy2, legacy2) = member(&nodes[3].ws_url("legacy"), Some(since)).await;
    assert!(matches!(legacy2.events.last(), Some(Seen::Joined { recovered: false, .. })));

    let history = final_history(&nodes[0]).await;
    for (who, ledger) in &ledgers {
        ledger.assert_consistent(who);
        let lost_here = ledger.lost(&history);
        if let Some(first) = lost_here.first() {
            assert!(
                ledger.told_after(first),
                "{who} lost {lost_here:?} and was never told recovered: false\n{:#?}",
                ledger.events
            );
        }
    }
    // Every stayer held the lost messages, so each was told.
    for (who, ledger) in &ledgers[..3] {
        assert!(!ledger.lost(&history).is_empty(), "{who} should have held lost messages");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_from_a_snapshot_one_message_behind() {
    restart_behind(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_back_from_a_snapshot_many_messages_behind() {
    restart_behind(40).await;
}

/// `appendfsync everysec` under load, as a bounded soak: Redis is killed
/// (SIGKILL) and its AOF rolled back to what it held ~0.5 s earlier — what a
/// machine crash leaves of an `everysec` AOF (a process kill alone loses
/// nothing: the kernel still has the writes). However much the crash loses,
/// no client sees two messages under one (epoch, seq), and every client that
/// lost messages is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everysec_aof_crash_under_load() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "everysec"]);
    let nodes = cluster(&redis, 3, &[]);
    let mut senders = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..6 {
        let node = &nodes[i % 3];
        let (client, ledger) = member(&node.ws_url(&format!("u{i}")), None).await;
        if i < 3 {
            senders.push((client, ledger, i));
        } else {
            listeners.push(stay(client, format!("u{i}")));
        }
    }
    // Each sender talks for a while; Redis is killed in the middle of it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sending: Vec<JoinHandle<(String, Ledger)>> = senders
        .into_iter()
        .map(|(mut client, mut ledger, i)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    send(&mut client, &mut ledger, &format!("s{i}-{n}"), "load").await;
                    tokio::time::sleep(Duration::from_millis(15)).await;
                }
                if i == 0 {
                    send(&mut client, &mut ledger, "final", FINAL).await;
                }
                read_until_final(&mut client, &mut ledger).await;
                (format!("sender{i}"), ledger)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    redis.checkpoint();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.crash_to_checkpoint();
    for node in &nodes {
        ready(node).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ledgers = Vec::new();
    for task in sending {
        ledgers.push(task.await.expect("sender"));
    }
    for (i, task) in listeners.into_iter().enumerate() {
        ledgers.push((format!("listener{i}"), task.await.expect("listener")));
    }
    let history = final_history(&nodes[0]).await;
    let mut losers = 0;
    for (who, ledger) in &ledgers {
        ledger.assert_consistent(who);
        let lost = ledger.lost(&history);
        if let Some(first) = lost.first() {
            losers += 1;
            assert!(ledger.told_after(first), "{who} lost {lost:?} silently\n{:#?}", ledger.events);
        }
    }
    // Not vacuous: the rollback did take acknowledged messages away.
    assert!(losers > 0, "the crash lost nothing; the scenario did not happen");
}

async fn read_until_final(client: &mut WsClient, ledger: &mut Ledger) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ledger.has_final() {
        assert!(Instant::now() < deadline, "never saw the final message");
        if let Some(frame) = client.try_next(Duration::from_millis(200)).await {
            ledger.record(&frame);
        }
    }
}
