//! What an operator sees: `/metrics` in the Prometheus text format, moving
//! with traffic, and OpenTelemetry traces that follow one message across
//! nodes (send on one, fan-out on the others).

use std::time::Duration;

use palaver_protocol::{ErrorCode, ServerFrame};
use palaver_tests::{
    Node, PATIENCE, RedisServer, WsClient,
    node::http_get,
    otlp::{OtlpReceiver, SpanRecord},
    prometheus::{self, Exposition},
};
use serde_json::json;

async fn scrape(node: &Node) -> Exposition {
    let (status, body) = http_get(node.addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "{body}");
    prometheus::parse(&body).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{body}"))
}

/// Scrapes until `check` holds (counters are updated as frames flow).
async fn eventually(node: &Node, what: &str, check: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let metrics = scrape(node).await;
        if check(&metrics) {
            return metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "metrics never showed {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_parse_and_move_with_traffic() {
    let node = Node::start(&["--node-id", "metered"]);
    let before = scrape(&node).await;
    assert_eq!(
        before.value(
            "palaver_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("node", "metered")]
        ),
        1.0
    );
    assert_eq!(before.value("palaver_ready", &[]), 1.0);
    assert_eq!(before.value("palaver_connections", &[]), 0.0);
    assert_eq!(before.value("palaver_messages_published_total", &[]), 0.0);
    assert_eq!(before.value("palaver_error_frames_total", &[("code", "not_joined")]), 0.0);
    assert!(
        before.get("palaver_redis_reconnects_total", &[]).is_none(),
        "no Redis stats on a single node"
    );

    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    for i in 0..5 {
        ann.say("lobby", &format!("m{i}"), "hello").await;
    }
    assert_eq!(bob.messages("lobby", 5).await.len(), 5);
    // A retried id is a duplicate, not a new message.
    ann.say("lobby", "m0", "hello").await;
    // A refused request is an error frame with its code.
    ann.send_json(json!({"type":"send","room":"elsewhere","text":"x","id":"e1"})).await;
    match ann.expect(|f| matches!(f, ServerFrame::Error { .. })).await {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::NotJoined),
        _ => unreachable!(),
    }

    let during = eventually(&node, "the traffic", |m| {
        m.value("palaver_deliveries_total", &[]) >= 10.0
            && m.value("palaver_write_batch_frames_count", &[]) > 0.0
    })
    .await;
    assert_eq!(during.value("palaver_connections", &[]), 2.0);
    assert_eq!(during.value("palaver_connections_opened_total", &[]), 2.0);
    assert_eq!(during.value("palaver_rooms", &[]), 1.0);
    // 2 joins, 6 sends, 1 refused send.
    assert_eq!(during.value("palaver_frames_received_total", &[]), 9.0);
    assert_eq!(during.value("palaver_messages_published_total", &[]), 5.0);
    assert_eq!(during.value("palaver_messages_duplicate_total", &[]), 1.0);
    assert!(during.value("palaver_hub_messages_total", &[]) >= 5.0);
    assert_eq!(during.value("palaver_error_frames_total", &[("code", "not_joined")]), 1.0);
    assert_eq!(
        during.value("palaver_broker_request_duration_seconds_count", &[("op", "publish")]),
        6.0
    );
    assert!(
        during.value("palaver_broker_request_duration_seconds_sum", &[("op", "publish")]) > 0.0
    );
    assert_eq!(during.value("palaver_broker_errors_total", &[("op", "publish")]), 0.0);
    assert!(during.value("palaver_history_reads_total", &[]) >= 2.0, "each join catches up once");
    assert_eq!(during.value("palaver_slow_consumer_evictions_total", &[]), 0.0);
    let frames_written = during.value("palaver_write_batch_frames_sum", &[]);
    assert!(
        frames_written >= 20.0,
        "welcome, joined, messages and acks were written: {frames_written}"
    );

    bob.close().await;
    let after =
        eventually(&node, "bob's close", |m| m.value("palaver_connections", &[]) == 1.0).await;
    assert_eq!(after.value("palaver_connection_closes_total", &[("code", "1000")]), 1.0);
    assert_eq!(after.value("palaver_connection_closes_total", &[("code", "1001")]), 0.0);

    // OpenMetrics when asked for, same numbers.
    let response =
        raw_get(node.addr, "/metrics", "application/openmetrics-text;version=1.0.0").await;
    assert!(response.contains("application/openmetrics-text"), "{response}");
    assert!(response.trim_end().ends_with("# EOF"), "{response}");
}

/// A client whose TCP connection is reset mid-session (or cut without a close
/// frame) broke no protocol rule: it is counted under `1006`, not `1002`.
#[tokio::test]
async fn a_tcp_reset_is_counted_apart_from_protocol_errors() {
    let node = Node::start(&["--node-id", "resets"]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    let mut cid = WsClient::connect(&node.ws_url("cid")).await;
    for client in [&mut ann, &mut bob, &mut cid] {
        client.join("lobby").await;
    }
    ann.say("lobby", "m1", "hello").await;
    // SO_LINGER 0: closing the socket sends RST, not FIN, mid-session.
    match ann.raw().get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp.set_zero_linger().expect("SO_LINGER"),
        _ => unreachable!("the harness connects over plain TCP"),
    }
    drop(ann);
    // Bob's TCP connection ends (FIN) without a WebSocket close frame.
    drop(bob);
    let after =
        eventually(&node, "both gone", |m| m.value("palaver_connections", &[]) == 1.0).await;
    assert_eq!(after.value("palaver_connection_closes_total", &[("code", "1006")]), 2.0);
    assert_eq!(after.value("palaver_connection_closes_total", &[("code", "1002")]), 0.0);
    assert_eq!(after.value("palaver_connection_closes_total", &[("code", "1000")]), 0.0);

    // A real protocol violation still is 1002: an unmasked client frame.
    use tokio::io::AsyncWriteExt;
    match cid.raw().get_mut() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => {
            tcp.write_all(&[0x81, 0x02, b'h', b'i']).await.expect("write an unmasked frame");
        }
        _ => unreachable!("the harness connects over plain TCP"),
    }
    let after =
        eventually(&node, "cid's 1002", |m| m.value("palaver_connections", &[]) == 0.0).await;
    assert_eq!(after.value("palaver_connection_closes_total", &[("code", "1002")]), 1.0);
    assert_eq!(after.value("palaver_connection_closes_total", &[("code", "1006")]), 2.0);
}

/// GET with an `Accept` header; returns the whole response (head and body).
async fn raw_get(addr: std::net::SocketAddr, path: &str, accept: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read response");
    response
}

fn traced_node(redis: &RedisServer, id: &str, receiver: &OtlpReceiver) -> Node {
    let endpoint = receiver.endpoint();
    Node::start_with_env(
        "127.0.0.1:0",
        &["--redis-url", &redis.url(), "--node-id", id],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            // Export within a tenth of a second instead of the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_is_one_trace_from_sender_to_every_node() {
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let a = traced_node(&redis, "trace-a", &receiver);
    let b = traced_node(&redis, "trace-b", &receiver);
    let c = traced_node(&redis, "trace-c", &receiver);

    let mut ann = WsClient::connect(&a.ws_url("ann")).await;
    let mut bob = WsClient::connect(&b.ws_url("bob")).await;
    let mut cy = WsClient::connect(&c.ws_url("cy")).await;
    for client in [&mut ann, &mut bob, &mut cy] {
        client.join("traced").await;
    }
    ann.say("traced", "t1", "follow me").await;
    for client in [&mut bob, &mut cy] {
        assert_eq!(client.messages("traced", 1).await[0].1, "follow me");
    }

    // The publish span on A, and a deliver span on each node whose parent it is.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let (publish, delivers) = loop {
        let spans = receiver.spans();
        let publish =
            spans.iter().find(|s| s.name == "publish" && s.instance == "trace-a").cloned();
        if let Some(publish) = publish {
            let delivers: Vec<SpanRecord> = spans
                .iter()
                .filter(|s| s.name == "deliver" && s.trace_id == publish.trace_id)
                .cloned()
                .collect();
            let mut nodes: Vec<&str> = delivers.iter().map(|s| s.instance.as_str()).collect();
            nodes.sort();
            nodes.dedup();
            if nodes == ["trace-a", "trace-b", "trace-c"] {
                break (publish, delivers);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no publish on trace-a with deliver spans on every node in its trace; got {:#?}",
            receiver.spans()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(publish.trace_id.len(), 32, "{publish:?}");
    assert_ne!(publish.trace_id, "0".repeat(32));
    assert_eq!(publish.service, "palaver");
    for deliver in &delivers {
        assert_eq!(
            deliver.parent_span_id, publish.span_id,
            "deliver is a child of publish: {deliver:?}"
        );
        assert_eq!(deliver.service, "palaver");
    }
    // A message is its own trace, not part of the connection's.
    let connection = receiver
        .spans()
        .into_iter()
        .find(|s| s.name == "join" && s.instance == "trace-a")
        .expect("the join span was exported");
    assert_ne!(connection.trace_id, publish.trace_id);
}
