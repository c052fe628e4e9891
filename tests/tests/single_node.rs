//! End-to-end tests of one node without Redis: real `palaver` process, real
//! WebSocket clients.

use std::time::Duration;

use futures_util::SinkExt;
use palaver_protocol::{ErrorCode, PresenceState, ServerFrame};
use palaver_tests::{Node, PATIENCE, WsClient, client::Ended, node::http_get};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

fn seqs(messages: &[(u64, String)]) -> Vec<u64> {
    messages.iter().map(|(s, _)| *s).collect()
}

async fn error_code(client: &mut WsClient) -> (ErrorCode, Option<String>) {
    match client.expect(|f| matches!(f, ServerFrame::Error { .. })).await {
        ServerFrame::Error { code, reference, .. } => (code, reference),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn broadcast_reaches_every_member_once_in_order_and_no_other_room() {
    let node = Node::start(&[]);
    let mut members = Vec::new();
    for name in ["ann", "bob", "cy"] {
        let mut c = WsClient::connect(&node.ws_url(name)).await;
        c.join("lobby").await;
        members.push(c);
    }
    let mut outsider = WsClient::connect(&node.ws_url("dee")).await;
    outsider.join("elsewhere").await;

    for i in 0..20 {
        let sender = i % 3;
        members[sender].say("lobby", &format!("m{i}"), &format!("hello {i}")).await;
    }
    for member in &mut members {
        let got = member.messages("lobby", 20).await;
        assert_eq!(seqs(&got), (1..=20).collect::<Vec<_>>());
        assert_eq!(got[7].1, "hello 7");
    }
    // Nothing from lobby leaks into the other room, and no duplicates follow.
    assert!(outsider.try_next(Duration::from_millis(300)).await.is_none());
    for member in &mut members {
        while let Some(frame) = member.try_next(Duration::from_millis(100)).await {
            assert!(!matches!(frame, ServerFrame::Message { .. }), "duplicate: {frame:?}");
        }
    }
}

#[tokio::test]
async fn reconnect_with_since_gets_exactly_the_missed_messages() {
    let node = Node::start(&[]);
    let mut sender = WsClient::connect(&node.ws_url("ann")).await;
    sender.join("lobby").await;
    let mut reader = WsClient::connect(&node.ws_url("bob")).await;
    let epoch = match reader.join("lobby").await {
        ServerFrame::Joined { epoch, .. } => epoch,
        _ => unreachable!(),
    };
    for i in 1..=5 {
        sender.say("lobby", &format!("a{i}"), "before").await;
    }
    assert_eq!(seqs(&reader.messages("lobby", 5).await), vec![1, 2, 3, 4, 5]);
    reader.close().await;

    for i in 6..=12 {
        sender.say("lobby", &format!("a{i}"), "missed").await;
    }
    let mut back = WsClient::connect(&node.ws_url("bob")).await;
    back.send_json(json!({"type":"join","room":"lobby","since":{"epoch":epoch,"seq":5}})).await;
    match back.next().await {
        ServerFrame::Joined { recovered, seq, .. } => assert!(recovered && seq == 12),
        other => panic!("expected joined, got {other:?}"),
    }
    assert_eq!(seqs(&back.messages("lobby", 7).await), (6..=12).collect::<Vec<_>>());
    sender.say("lobby", "a13", "live").await;
    assert_eq!(seqs(&back.messages("lobby", 1).await), vec![13]);

    // A stale epoch is reported, never silently replayed.
    let mut stale = WsClient::connect(&node.ws_url("cy")).await;
    stale.send_json(json!({"type":"join","room":"lobby","since":{"epoch":"gone","seq":3}})).await;
    match stale.next().await {
        ServerFrame::Joined { recovered, .. } => assert!(!recovered),
        other => panic!("expected joined, got {other:?}"),
    }
}

#[tokio::test]
async fn history_pages_backwards_and_forwards() {
    let node = Node::start(&["--history-size", "30"]);
    let mut c = WsClient::connect(&node.ws_url("ann")).await;
    c.join("lobby").await;
    for i in 1..=40 {
        c.say("lobby", &format!("h{i}"), &format!("n{i}")).await;
    }
    let page = |frame: ServerFrame| match frame {
        ServerFrame::History { messages, more, .. } => {
            (messages.iter().map(|m| m.seq).collect::<Vec<_>>(), more)
        }
        other => panic!("expected history, got {other:?}"),
    };
    let is_history = |f: &ServerFrame| matches!(f, ServerFrame::History { .. });
    c.send_json(json!({"type":"history","room":"lobby","limit":10})).await;
    assert_eq!(page(c.expect(is_history).await), ((31..=40).collect(), true));
    c.send_json(json!({"type":"history","room":"lobby","before":31,"limit":10})).await;
    assert_eq!(page(c.expect(is_history).await), ((21..=30).collect(), true));
    // Only the last 30 are kept: paging ends at 11.
    c.send_json(json!({"type":"history","room":"lobby","before":21,"limit":50})).await;
    assert_eq!(page(c.expect(is_history).await), ((11..=20).collect(), false));
    c.send_json(json!({"type":"history","room":"lobby","after":35,"limit":3})).await;
    assert_eq!(page(c.expect(is_history).await), (vec![36, 37, 38], true));
}

#[tokio::test]
async fn idempotent_send_acks_the_original_and_stores_once() {
    let node = Node::start(&[]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("lobby").await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join("lobby").await;
    let first = ann.say("lobby", "same-id", "once").await;
    ann.send_json(json!({"type":"send","room":"lobby","id":"same-id","text":"once"})).await;
    match ann.expect(|f| matches!(f, ServerFrame::Ack { .. })).await {
        ServerFrame::Ack { seq, duplicate, .. } => assert_eq!((seq, duplicate), (first, true)),
        _ => unreachable!(),
    }
    let next = ann.say("lobby", "other-id", "twice").await;
    assert_eq!(next, first + 1);
    assert_eq!(seqs(&bob.messages("lobby", 2).await), vec![first, first + 1]);
}

#[tokio::test]
async fn presence_typing_and_leave() {
    let node = Node::start(&[]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("lobby").await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    match bob.join("lobby").await {
        ServerFrame::Joined { members, .. } => {
            let names: Vec<&str> = members.iter().map(|m| m.as_str()).collect();
            assert_eq!(names, vec!["ann", "bob"]);
        }
        _ => unreachable!(),
    }
    let presence = |user: &'static str, state: PresenceState| move |f: &ServerFrame| matches!(f, ServerFrame::Presence { user: u, state: s, .. } if u.as_str() == user && *s == state);
    ann.expect(presence("bob", PresenceState::Join)).await;
    bob.send_json(json!({"type":"typing","room":"lobby"})).await;
    ann.expect(presence("bob", PresenceState::Typing)).await;
    bob.send_json(json!({"type":"leave","room":"lobby"})).await;
    bob.expect(|f| matches!(f, ServerFrame::Left { .. })).await;
    ann.expect(presence("bob", PresenceState::Leave)).await;
    // After leaving, bob gets nothing from the room and may not post to it.
    ann.say("lobby", "x1", "still here?").await;
    bob.send_json(json!({"type":"send","room":"lobby","id":"b1","text":"hi"})).await;
    assert_eq!(error_code(&mut bob).await, (ErrorCode::NotJoined, Some("b1".into())));
    // Disconnecting is a leave too.
    let mut cy = WsClient::connect(&node.ws_url("cy")).await;
    cy.join("lobby").await;
    ann.expect(presence("cy", PresenceState::Join)).await;
    cy.close().await;
    ann.expect(presence("cy", PresenceState::Leave)).await;
}

#[tokio::test]
async fn silent_peer_is_closed_after_the_read_deadline() {
    let node = Node::start(&["--ping-interval", "200ms", "--read-deadline", "1s"]);
    let mut alive = WsClient::connect(&node.ws_url("alive")).await;
    let mut silent = WsClient::connect(&node.ws_url("silent")).await;
    // The silent client does not read, so it never answers a ping. The alive one
    // keeps reading (tungstenite answers pings while reading).
    let alive_reader = tokio::spawn(async move {
        let quiet = alive.try_next(Duration::from_millis(2500)).await;
        (alive, quiet)
    });
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(silent.ended(PATIENCE).await, Ended::Closed(4000));
    let (mut alive, quiet) = alive_reader.await.expect("reader task");
    assert!(quiet.is_none());
    // The ponging client is still served.
    alive.send_json(json!({"type":"ping"})).await;
    alive.expect(|f| matches!(f, ServerFrame::Pong)).await;
}

// The reader has a thread of its own: on one thread the sender's loop could
// run ahead of it by more than its queue and socket buffers hold, and the
// reader would be the slow consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_evicted_while_others_receive_everything() {
    let node = Node::start(&["--queue-frames", "32", "--queue-bytes", "262144"]);
    let mut sender = WsClient::connect(&node.ws_url("ann")).await;
    sender.join("lobby").await;
    let mut reader = WsClient::connect(&node.ws_url("bob")).await;
    reader.join("lobby").await;
    let mut slow = WsClient::connect(&node.ws_url("slow")).await;
    slow.join("lobby").await;

    // Big messages fill the slow client's socket buffers, then its queue.
    let text = "x".repeat(3500);
    let total = 3000;
    let reading = tokio::spawn(async move {
        let got = reader.messages("lobby", total).await;
        seqs(&got)
    });
    for i in 0..total {
        sender.say("lobby", &format!("s{i}"), &text).await;
        sender.clear();
    }
    let got = reading.await.expect("reader task");
    assert_eq!(got, (1..=total as u64).collect::<Vec<_>>());
    assert_eq!(slow.ended(PATIENCE).await, Ended::Closed(1013));
}

#[tokio::test]
async fn bad_input_gets_documented_errors_and_the_server_keeps_serving() {
    let node = Node::start(&["--max-frame", "4096"]);
    let mut watcher = WsClient::connect(&node.ws_url("watcher")).await;
    watcher.join("lobby").await;
    let mut c = WsClient::connect(&node.ws_url("mallory")).await;

    c.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(error_code(&mut c).await.0, ErrorCode::BinaryNotSupported);
    c.send_raw(Message::Text("{not json".into())).await;
    assert_eq!(error_code(&mut c).await.0, ErrorCode::BadJson);
    c.send_json(json!({"type":"explode","room":"lobby"})).await;
    assert_eq!(error_code(&mut c).await, (ErrorCode::UnknownType, Some("explode".into())));
    c.send_json(json!({"type":"send","room":"lobby","id":"m1"})).await;
    assert_eq!(error_code(&mut c).await, (ErrorCode::MissingField, Some("m1".into())));
    c.send_json(json!({"type":"join","room":"no spaces allowed"})).await;
    assert_eq!(error_code(&mut c).await.0, ErrorCode::InvalidRoom);
    c.send_json(json!({"type":"send","room":"lobby","id":"m2","text":"hi"})).await;
    assert_eq!(error_code(&mut c).await, (ErrorCode::NotJoined, Some("m2".into())));
    c.send_json(json!({"type":"history","room":"lobby","limit":-1})).await;
    assert_eq!(error_code(&mut c).await.0, ErrorCode::InvalidField);

    // Still usable after all that.
    c.join("lobby").await;
    c.say("lobby", "ok1", "fine").await;
    assert_eq!(watcher.messages("lobby", 1).await[0].1, "fine");

    // Invalid UTF-8 in a text frame: close 1007.
    let mut u = WsClient::connect(&node.ws_url("utf")).await;
    u.raw()
        .send(Message::Frame(tokio_tungstenite::tungstenite::protocol::frame::Frame::message(
            vec![0x22, 0xff, 0xfe, 0x22],
            tokio_tungstenite::tungstenite::protocol::frame::coding::OpCode::Data(
                tokio_tungstenite::tungstenite::protocol::frame::coding::Data::Text,
            ),
            true,
        )))
        .await
        .expect("send raw frame");
    assert_eq!(u.ended(PATIENCE).await, Ended::Closed(1007));

    // Oversized frame: close 1009.
    let mut big = WsClient::connect(&node.ws_url("big")).await;
    big.send_raw(Message::Text("x".repeat(8192).into())).await;
    assert_eq!(big.ended(PATIENCE).await, Ended::Closed(1009));

    // Others never noticed.
    c.say("lobby", "ok2", "after the abuse").await;
    assert_eq!(watcher.messages("lobby", 1).await[0].1, "after the abuse");
    let (status, _) = http_get(node.addr, "/healthz").await.expect("healthz");
    assert_eq!(status, 200);
}

#[tokio::test]
async fn graceful_shutdown_closes_clients_with_1001_and_exits_zero() {
    let mut node = Node::start(&["--shutdown-deadline", "3s"]);
    let (status, _) = http_get(node.addr, "/readyz").await.expect("readyz");
    assert_eq!(status, 200);
    let mut clients = Vec::new();
    for name in ["ann", "bob", "cy"] {
        let mut c = WsClient::connect(&node.ws_url(name)).await;
        c.join("lobby").await;
        clients.push(c);
    }
    let pid = node.pid();
    palaver_tests::node::signal(pid, "TERM");
    for c in &mut clients {
        assert_eq!(c.ended(PATIENCE).await, Ended::Closed(1001));
    }
    let status = tokio::task::spawn_blocking(move || node.wait(Duration::from_secs(8)))
        .await
        .expect("wait task")
        .expect("exited within the deadline");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn serves_the_web_ui_and_health_endpoints() {
    let node = Node::start(&[]);
    let (status, body) = http_get(node.addr, "/").await.expect("index");
    assert_eq!(status, 200);
    assert!(body.contains("app.js"));
    let (status, _) = http_get(node.addr, "/app.js").await.expect("app.js");
    assert_eq!(status, 200);
    let (status, body) = http_get(node.addr, "/palaver-client.js").await.expect("the client");
    assert_eq!(status, 200);
    assert!(body.contains("export {"), "an ES module");
    let (status, body) = http_get(node.addr, "/healthz").await.expect("healthz");
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _) = http_get(node.addr, "/ws?name=%3Cscript%3E").await.expect("bad name");
    assert_eq!(status, 400);
}
