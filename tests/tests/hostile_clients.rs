//! End-to-end tests of what hostile (or merely unusual) clients get, against
//! real `palaver` processes over real sockets: replies bounded by the
//! client's queue (memory under clients that never read), history pages cut
//! to fit it, the closing handshake, the request head limit, and the order
//! and edges of validation that `docs/protocol.md` documents.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use palaver_protocol::{ErrorCode, ServerFrame};
use palaver_tests::{
    Node, PATIENCE, WsClient,
    node::http_get,
    prometheus,
    raw::{self, RawEnd, op},
};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::{CloseFrame, frame::coding::CloseCode},
};

const SECRET: &str = "hostile-test-secret";

/// `--queue-bytes` of the queue tests: the client's own frames get half.
const QUEUE_BYTES: usize = 256 * 1024;

/// Posts `count` messages of `chars` characters each to `room`.
async fn fill(client: &mut WsClient, room: &str, count: usize, chars: usize) {
    let text = "x".repeat(chars);
    for i in 0..count {
        client.say(room, &format!("fill-{i}"), &text).await;
        client.clear();
    }
}

async fn slow_consumer_evictions(node: &Node) -> f64 {
    let (_, body) = http_get(node.addr, "/metrics").await.expect("metrics");
    let metrics = prometheus::parse(&body).expect("well-formed metrics");
    metrics.value("palaver_slow_consumer_evictions_total", &[])
}

async fn error_code(client: &mut WsClient) -> (ErrorCode, Option<String>) {
    match client.expect(|f| matches!(f, ServerFrame::Error { .. })).await {
        ServerFrame::Error { code, reference, .. } => (code, reference),
        _ => unreachable!(),
    }
}

async fn raw_ws(node: &Node, name: &str) -> TcpStream {
    let (status, stream) =
        raw::upgrade(node.addr, &format!("/ws?name={name}"), &[]).await.expect("upgrade");
    assert_eq!(status, 101);
    stream
}

/// The next text frame from a raw socket, as JSON (pings skipped).
async fn next_json(stream: &mut TcpStream) -> Value {
    loop {
        let (opcode, payload) = tokio::time::timeout(PATIENCE, raw::read_frame(stream))
            .await
            .expect("a frame")
            .expect("read");
        match opcode {
            op::TEXT => return serde_json::from_slice(&payload).expect("JSON"),
            op::PING | op::PONG => continue,
            other => panic!("unexpected opcode {other}"),
        }
    }
}

#[tokio::test]
async fn clients_that_flood_requests_and_never_read_stay_bounded_and_are_evicted() {
    let node = Node::start(&["--queue-bytes", &QUEUE_BYTES.to_string(), "--write-timeout", "2s"]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("big").await;
    // 100 messages of 4,000 characters: an unbounded reply would be ~420 KB.
    fill(&mut ann, "big", 100, 4000).await;
    let before = node.peak_memory().expect("VmHWM in /proc (Linux)");

    // Each asks for 200 such pages (~80 MB of replies) and never reads.
    let mut hostile = Vec::new();
    for i in 0..2 {
        let (status, mut stream) =
            raw::upgrade_with_receive_buffer(node.addr, &format!("/ws?name=h{i}"), 4096)
                .await
                .expect("upgrade");
        assert_eq!(status, 101);
        let mut burst = raw::frame(op::TEXT, true, br#"{"type":"join","room":"big"}"#);
        for _ in 0..200 {
            let history = br#"{"type":"history","room":"big","limit":100}"#;
            burst.extend(raw::frame(op::TEXT, true, history));
        }
        stream.write_all(&burst).await.expect("write the burst");
        hostile.push(stream);
    }
    // Each is a slow consumer, closed with 1013 and counted like room traffic's.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while slow_consumer_evictions(&node).await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "non-reading clients were never evicted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = node.peak_memory().expect("VmHWM").saturating_sub(before);
    assert!(grown < 24 << 20, "peak memory grew by {} MiB for two clients", grown >> 20);
    // Nobody else noticed.
    ann.say("big", "after", "still here").await;
}

#[tokio::test]
async fn members_catching_up_without_reading_hold_no_more_than_their_queue() {
    // Ann reads nothing until the end (no pongs either): a generous read
    // deadline keeps a slow, loaded machine from closing her before then.
    let queue = QUEUE_BYTES.to_string();
    let node =
        Node::start(&["--queue-bytes", &queue, "--write-timeout", "2s", "--read-deadline", "600s"]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    let epoch = match ann.join("big").await {
        ServerFrame::Joined { epoch, .. } => epoch,
        _ => unreachable!(),
    };
    // ~4 MB of history to replay to each: more than the kernel's socket
    // buffers take, so every one of them backs up.
    fill(&mut ann, "big", 1000, 4000).await;
    let before = node.peak_memory().expect("VmHWM in /proc (Linux)");
    let join = json!({"type":"join","room":"big","since":{"epoch":epoch.as_str(),"seq":0}});
    let mut resumers = Vec::new();
    for i in 0..60 {
        let (status, mut stream) =
            raw::upgrade_with_receive_buffer(node.addr, &format!("/ws?name=r{i}"), 4096)
                .await
                .expect("upgrade");
        assert_eq!(status, 101);
        let frame = raw::frame(op::TEXT, true, join.to_string().as_bytes());
        stream.write_all(&frame).await.expect("write the join");
        resumers.push(stream);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while slow_consumer_evictions(&node).await < 60.0 {
        assert!(tokio::time::Instant::now() < deadline, "non-reading members were never evicted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let grown = node.peak_memory().expect("VmHWM").saturating_sub(before);
    eprintln!("peak memory grew by {} MiB for 60 members", grown >> 20);
    // Each holds at most its queue, a catch-up page of about half of it, and
    // what the socket's write buffer took before the peer stopped reading
    // (bounded at twice the queue): 7 to 21 MiB measured, by scheduling.
    let bound = 60 * 4 * QUEUE_BYTES;
    assert!(grown < bound as u64, "peak memory grew by {} MiB for 60 members", grown >> 20);
    ann.say("big", "after", "still here").await;
}

#[tokio::test]
async fn a_reading_client_gets_every_reply_to_pipelined_requests() {
    let node = Node::start(&["--queue-bytes", &QUEUE_BYTES.to_string()]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("big").await;
    fill(&mut ann, "big", 100, 4000).await;
    // Far more than the queue holds, asked at once: the requests wait for the
    // replies to be read (backpressure), nobody is evicted.
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join("big").await;
    let (ws, mut pages) = (bob.raw(), 0);
    let burst: Vec<Result<Message, _>> = (0..60)
        .map(|_| Ok(Message::Text(json!({"type":"history","room":"big"}).to_string().into())))
        .collect();
    ws.send_all(&mut futures_util::stream::iter(burst)).await.expect("send the burst");
    while pages < 60 {
        bob.expect(|f| matches!(f, ServerFrame::History { .. })).await;
        pages += 1;
    }
    bob.send_json(json!({"type":"ping"})).await;
    bob.expect(|f| matches!(f, ServerFrame::Pong)).await;
}

#[tokio::test]
async fn a_member_catching_up_more_than_its_queue_holds_gets_everything() {
    let node = Node::start(&["--queue-bytes", "65536", "--queue-frames", "16"]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    let epoch = match ann.join("big").await {
        ServerFrame::Joined { epoch, .. } => epoch,
        _ => unreachable!(),
    };
    fill(&mut ann, "big", 100, 4000).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.send_json(json!({"type":"join","room":"big","since":{"epoch":epoch.as_str(),"seq":0}}))
        .await;
    bob.expect(|f| matches!(f, ServerFrame::Joined { recovered: true, .. })).await;
    let got: Vec<u64> = bob.messages("big", 100).await.into_iter().map(|(seq, _)| seq).collect();
    assert_eq!(got, (1..=100).collect::<Vec<_>>());
    ann.say("big", "live", "and live").await;
    assert_eq!(bob.messages("big", 1).await[0].1, "and live");
}

/// Pages through the whole history of `room` with `limit` 200 in one
/// direction; every page must fit `budget` bytes.
async fn page_all(client: &mut WsClient, room: &str, forward: bool, budget: usize) -> Vec<u64> {
    let mut seqs: Vec<u64> = Vec::new();
    let mut pages = 0;
    loop {
        let request = match (forward, seqs.first(), seqs.last()) {
            (true, _, last) => {
                json!({"type":"history","room":room,"limit":200,"after":last.copied().unwrap_or(0)})
            }
            (false, None, _) => json!({"type":"history","room":room,"limit":200}),
            (false, Some(first), _) => {
                json!({"type":"history","room":room,"limit":200,"before":first})
            }
        };
        client.send_json(request).await;
        let page = client.expect(|f| matches!(f, ServerFrame::History { .. })).await;
        let size = page.encode().len();
        assert!(size <= budget, "a {size}-byte page for a {budget}-byte budget");
        let ServerFrame::History { messages, more, .. } = page else { unreachable!() };
        assert!(!messages.is_empty());
        let got = messages.iter().map(|m| m.seq);
        if forward {
            seqs.extend(got);
        } else {
            seqs.splice(0..0, got);
        }
        pages += 1;
        if !more {
            break;
        }
    }
    assert!(pages > 1, "the page was not cut");
    seqs
}

#[tokio::test]
async fn a_long_history_page_is_cut_to_fit_the_queue_and_pages_on() {
    let node = Node::start(&["--queue-bytes", &QUEUE_BYTES.to_string()]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("big").await;
    // 200 messages of 4,000 characters: ~820 KB in one page if uncut.
    fill(&mut ann, "big", 200, 4000).await;
    let mut reader = WsClient::connect(&node.ws_url("reader")).await;
    reader.join("big").await;
    let all: Vec<u64> = (1..=200).collect();
    assert_eq!(page_all(&mut reader, "big", false, QUEUE_BYTES / 2).await, all);
    assert_eq!(page_all(&mut reader, "big", true, QUEUE_BYTES / 2).await, all);
    // Short pages are not cut.
    reader.send_json(json!({"type":"history","room":"big","limit":5})).await;
    match reader.expect(|f| matches!(f, ServerFrame::History { .. })).await {
        ServerFrame::History { messages, more, .. } => {
            assert_eq!(
                messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
                [196, 197, 198, 199, 200]
            );
            assert!(more);
        }
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_normal_close_is_answered_with_a_close_frame() {
    let node = Node::start(&[]);
    // By hand: the close frame with 1000 is echoed (RFC 6455 §5.5.1).
    let mut stream = raw_ws(&node, "raw").await;
    assert_eq!(next_json(&mut stream).await["type"], "welcome");
    stream.write_all(&raw::frame(op::CLOSE, true, &1000u16.to_be_bytes())).await.expect("write");
    assert_eq!(raw::ended(&mut stream, PATIENCE).await, RawEnd::Closed(1000));

    // And a WebSocket library sees a clean close, not 1006.
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("lobby").await;
    let ws = ann.raw();
    ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "bye".into() }))
        .await
        .expect("send close");
    let reply = tokio::time::timeout(PATIENCE, ws.next()).await.expect("a reply in time");
    match reply {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the close reply, got {other:?}"),
    }
}

/// An upgrade request whose head is exactly `len` bytes.
fn head_of(node: &Node, len: usize) -> String {
    let bare = raw::upgrade_request(node.addr, "/ws?name=big", &[("X-Pad", "")]);
    raw::upgrade_request(node.addr, "/ws?name=big", &[("X-Pad", &"p".repeat(len - bare.len()))])
}

async fn head_status(node: &Node, head: &str, piece: usize) -> u16 {
    let mut stream = TcpStream::connect(node.addr).await.expect("connect");
    for chunk in head.as_bytes().chunks(piece) {
        if stream.write_all(chunk).await.is_err() {
            break; // refused before the end; the status is waiting
        }
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 1024];
        while !response.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn request_heads_over_64_kib_are_refused_however_they_arrive() {
    let node = Node::start(&[]);
    for len in [71_683, 112_663] {
        let head = head_of(&node, len);
        assert_eq!(head.len(), len);
        assert_eq!(head_status(&node, &head, len).await, 431, "{len} bytes in one write");
        assert_eq!(head_status(&node, &head, 1024).await, 431, "{len} bytes in 1 KiB pieces");
    }
    let fits = head_of(&node, 64 * 1024);
    assert_eq!(head_status(&node, &fits, fits.len()).await, 101, "exactly 64 KiB");
    assert_eq!(head_status(&node, &fits, 1024).await, 101, "exactly 64 KiB in pieces");
}

#[tokio::test]
async fn blank_texts_are_refused_and_inner_spaces_kept() {
    let node = Node::start(&[]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("lobby").await;
    for (i, blank) in ["   ", " \n\t ", "\u{3000}\u{a0}", "\u{0}  \u{1b}"].into_iter().enumerate() {
        let id = format!("b{i}");
        ann.send_json(json!({"type":"send","room":"lobby","id":id,"text":blank})).await;
        assert_eq!(error_code(&mut ann).await, (ErrorCode::EmptyText, Some(id)), "{blank:?}");
    }
    ann.say("lobby", "kept", "  two  spaces  ").await;
    assert_eq!(ann.messages("lobby", 1).await[0].1, "  two  spaces  ");
}

#[tokio::test]
async fn private_rooms_are_refused_before_their_fields_are_judged() {
    let node = Node::start(&["--jwt-secret", SECRET, "--private-rooms", "team-*"]);
    let mut eve = WsClient::connect(&node.ws_url("eve")).await;
    let forbidden = [
        (json!({"type":"history","room":"team-a","limit":0}), "history"),
        (json!({"type":"history","room":"team-a","limit":201}), "history"),
        (json!({"type":"history","room":"team-a","before":1,"after":2}), "history"),
        (json!({"type":"send","room":"team-a","id":"has space","text":"x"}), "has space"),
        (json!({"type":"send","room":"team-a","id":"e1","text":"   "}), "e1"),
        (json!({"type":"send","room":"team-a","id":"e2"}), "e2"),
    ];
    for (frame, reference) in forbidden {
        eve.send_json(frame.clone()).await;
        assert_eq!(
            error_code(&mut eve).await,
            (ErrorCode::Forbidden, Some(reference.into())),
            "{frame}"
        );
    }
    // Public rooms still get the field errors, and a room that is no name stays invalid_room.
    eve.send_json(json!({"type":"history","room":"lobby","limit":0})).await;
    assert_eq!(error_code(&mut eve).await.0, ErrorCode::InvalidField);
    eve.send_json(json!({"type":"history","room":"team a","limit":0})).await;
    assert_eq!(error_code(&mut eve).await.0, ErrorCode::InvalidRoom);
}

#[tokio::test]
async fn a_fragmented_message_counts_once_for_the_rate_limit() {
    let node = Node::start(&["--rate-limit", "1/s", "--rate-burst", "2", "--rate-strikes", "50"]);
    let mut stream = raw_ws(&node, "fragments").await;
    assert_eq!(next_json(&mut stream).await["type"], "welcome");
    let mut message = raw::frame(op::TEXT, false, br#"{"type":"#);
    for _ in 0..50_000 {
        message.extend(raw::frame(op::CONTINUATION, false, b""));
    }
    message.extend(raw::frame(op::CONTINUATION, true, br#""ping"}"#));
    stream.write_all(&message).await.expect("write");
    assert_eq!(next_json(&mut stream).await["type"], "pong");
    // The budget had room for two messages: one is left.
    stream.write_all(&raw::frame(op::TEXT, true, br#"{"type":"ping"}"#)).await.expect("write");
    assert_eq!(next_json(&mut stream).await["type"], "pong");
}

#[tokio::test]
async fn a_message_that_never_ends_is_closed_by_the_read_deadline() {
    let node = Node::start(&["--read-deadline", "1s", "--ping-interval", "10s"]);
    let mut stream = raw_ws(&node, "endless").await;
    assert_eq!(next_json(&mut stream).await["type"], "welcome");
    stream.write_all(&raw::frame(op::TEXT, false, b"{")).await.expect("write");
    let (mut read, mut write) = stream.into_split();
    let feeding = tokio::spawn(async move {
        // Empty fragments as fast as the socket takes them, until refused.
        let fragments: Vec<u8> =
            (0..1000).flat_map(|_| raw::frame(op::CONTINUATION, false, b"")).collect();
        while write.write_all(&fragments).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            use tokio::io::AsyncReadExt;
            let mut head = [0u8; 2];
            if read.read_exact(&mut head).await.is_err() {
                return None;
            }
            let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
            if read.read_exact(&mut payload).await.is_err() {
                return None;
            }
            if head[0] & 0x0f == op::CLOSE {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    })
    .await
    .expect("closed in time");
    feeding.abort();
    assert_eq!(ended, Some(4000));
}
