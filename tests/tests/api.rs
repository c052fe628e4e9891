//! The server API over real HTTP against real nodes: two gateways sharing a
//! real `redis-server`, WebSocket members on both. Every answer is checked
//! against docs/openapi.yaml by the test client.

use std::time::Duration;

use palaver_protocol::ServerFrame;
use palaver_tests::{
    ApiClient, Node, PATIENCE, RedisServer, WsClient, api::SPEC, client::Ended, node::http_get,
    raw::upgrade_status,
};
use serde_json::{Value, json};

const KEY: &str = "test-key-0123456789abcdef";
const NEXT_KEY: &str = "next-key-0123456789abcdef";

fn cluster(redis: &RedisServer, extra: &[&str]) -> (Node, Node) {
    let url = redis.url();
    let start = |id: &str| {
        let mut args = vec!["--redis-url", &url, "--node-id", id, "--api-key", KEY];
        args.extend_from_slice(extra);
        Node::start(&args)
    };
    (start("a"), start("b"))
}

/// Polls `check` on fresh answers until it holds (the directory is refreshed
/// every 2 s); never a timing assertion.
async fn eventually(api: &ApiClient, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = api.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        if check(&answer.body) {
            return answer.body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path} never matched: {}", answer.body);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_on_a_reach_members_on_both_nodes_in_order() {
    let redis = RedisServer::start();
    let (a, b) = cluster(&redis, &[]);
    let mut ann = WsClient::connect(&a.ws_url("ann")).await;
    let mut bob = WsClient::connect(&b.ws_url("bob")).await;
    ann.join("lobby").await;
    bob.join("lobby").await;

    let api = ApiClient::new(a.addr, Some(KEY));
    for i in 1..=20u64 {
        let answer = api
            .post(
                "/api/v1/rooms/lobby/messages",
                &json!({"text": format!("deploy {i}"), "id": format!("d-{i}")}),
            )
            .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(
            (answer.body["seq"].as_u64(), answer.body["duplicate"].as_bool()),
            (Some(i), Some(false))
        );
    }
    let expected: Vec<(u64, String)> = (1..=20).map(|i| (i, format!("deploy {i}"))).collect();
    assert_eq!(ann.messages("lobby", 20).await, expected);
    assert_eq!(bob.messages("lobby", 20).await, expected);

    // The default sender is the reserved `system`; a caller may name another.
    let as_bot = json!({"text": "build green", "id": "b-1", "user": "ci bot"});
    assert_eq!(api.post("/api/v1/rooms/lobby/messages", &as_bot).await.status, 200);
    let message = bob.expect(|f| matches!(f, ServerFrame::Message { seq: 21, .. })).await;
    let ServerFrame::Message { user, .. } = message else { unreachable!() };
    assert_eq!(user.as_str(), "ci bot");

    // History through the other node's API: the same messages, pages both ways.
    let other = ApiClient::new(b.addr, Some(KEY));
    let page = other.get("/api/v1/rooms/lobby/history?limit=2").await.body;
    let seqs = |page: &Value| -> Vec<u64> {
        page["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["seq"].as_u64())
            .collect()
    };
    assert_eq!((seqs(&page), page["more"].as_bool()), (vec![20, 21], Some(true)));
    assert_eq!(page["messages"][0]["user"], "system");
    let page = other.get("/api/v1/rooms/lobby/history?after=18&limit=10").await.body;
    assert_eq!((seqs(&page), page["more"].as_bool()), (vec![19, 20, 21], Some(false)));
    let page = other.get("/api/v1/rooms/lobby/history?before=3").await.body;
    assert_eq!(seqs(&page), vec![1, 2]);
}

#[tokio::test]
async fn retries_are_idempotent_on_any_node() {
    let redis = RedisServer::start();
    let (a, b) = cluster(&redis, &[]);
    let mut watcher = WsClient::connect(&b.ws_url("watcher")).await;
    watcher.join("ops").await;
    let message = json!({"text": "restarting db", "id": "op-7"});
    let first =
        ApiClient::new(a.addr, Some(KEY)).post("/api/v1/rooms/ops/messages", &message).await;
    let again =
        ApiClient::new(a.addr, Some(KEY)).post("/api/v1/rooms/ops/messages", &message).await;
    let elsewhere =
        ApiClient::new(b.addr, Some(KEY)).post("/api/v1/rooms/ops/messages", &message).await;
    assert_eq!(first.body["duplicate"], false);
    for retry in [&again, &elsewhere] {
        assert_eq!(retry.status, 200);
        assert_eq!(
            (&retry.body["seq"], &retry.body["duplicate"]),
            (&first.body["seq"], &json!(true))
        );
        assert_eq!(retry.body["epoch"], first.body["epoch"]);
    }
    // The same id from another user is another message.
    let from_bot = json!({"text": "restarting db", "id": "op-7", "user": "bot"});
    let other =
        ApiClient::new(b.addr, Some(KEY)).post("/api/v1/rooms/ops/messages", &from_bot).await;
    assert_eq!((other.body["seq"].as_u64(), &other.body["duplicate"]), (Some(2), &json!(false)));
    // Stored and delivered once each: the next message the watcher gets after
    // 1 and 2 is a new one, 3.
    let next = json!({"text": "done", "id": "op-8"});
    let third = ApiClient::new(a.addr, Some(KEY)).post("/api/v1/rooms/ops/messages", &next).await;
    assert_eq!(third.body["seq"], 3);
    let seqs: Vec<u64> = watcher.messages("ops", 3).await.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let history = ApiClient::new(a.addr, Some(KEY)).get("/api/v1/rooms/ops/history").await;
    assert_eq!(history.body["messages"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn disconnect_requested_on_a_closes_the_users_sockets_on_every_node() {
    let redis = RedisServer::start();
    let (a, b) = cluster(&redis, &[]);
    let mut ann_b1 = WsClient::connect(&b.ws_url("ann")).await;
    let mut ann_b2 = WsClient::connect(&b.ws_url("ann")).await;
    let mut ann_a = WsClient::connect(&a.ws_url("ann")).await;
    let mut bob = WsClient::connect(&b.ws_url("bob")).await;
    ann_b1.join("lobby").await; // in a room or not, every connection goes
    bob.join("lobby").await;

    let api = ApiClient::new(a.addr, Some(KEY));
    let answer = api.post("/api/v1/users/ann/disconnect", &json!({"reason": "spamming"})).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, json!({"user": "ann", "nodes": 2}));
    for ann in [&mut ann_b1, &mut ann_b2, &mut ann_a] {
        assert_eq!(ann.ended(PATIENCE).await, Ended::Closed(4002));
    }
    // Bob stays, and sees ann leave.
    let left = bob
        .expect(|f| matches!(f, ServerFrame::Presence { user, .. } if user.as_str() == "ann"))
        .await;
    assert!(matches!(
        left,
        ServerFrame::Presence { state: palaver_protocol::PresenceState::Leave, .. }
    ));
    bob.send_json(json!({"type": "ping"})).await;
    bob.expect(|f| matches!(f, ServerFrame::Pong)).await;

    // An application close code.
    let mut ann = WsClient::connect(&b.ws_url("ann")).await;
    let answer = api.post("/api/v1/users/ann/disconnect", &json!({"code": 4100})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(ann.ended(PATIENCE).await, Ended::Closed(4100));
    let refused = api.post("/api/v1/users/ann/disconnect", &json!({"code": 1011})).await;
    assert_eq!((refused.status, refused.code()), (400, "invalid_field"));
}

#[tokio::test]
async fn members_rooms_and_stats_span_the_cluster() {
    let redis = RedisServer::start();
    let (a, b) = cluster(&redis, &[]);
    let mut ann = WsClient::connect(&a.ws_url("ann")).await;
    let mut bob = WsClient::connect(&b.ws_url("bob")).await;
    let mut cy = WsClient::connect(&b.ws_url("cy")).await;
    ann.join("lobby").await;
    bob.join("lobby").await;
    bob.join("ops").await;
    cy.join("lobby").await;

    let api = ApiClient::new(a.addr, Some(KEY));
    let members = api.get("/api/v1/rooms/lobby/members").await.body;
    assert_eq!(
        members,
        json!({"room": "lobby", "members": ["ann", "bob", "cy"], "more": false, "count": 3})
    );
    let first = api.get("/api/v1/rooms/lobby/members?limit=2").await.body;
    assert_eq!((&first["members"], &first["more"]), (&json!(["ann", "bob"]), &json!(true)));
    assert_eq!(first["count"], 3, "the count is the room's, not the page's");
    let rest = api.get("/api/v1/rooms/lobby/members?after=bob&limit=2").await.body;
    assert_eq!((&rest["members"], &rest["more"]), (&json!(["cy"]), &json!(false)));

    let rooms =
        eventually(&api, "/api/v1/rooms", |body| body["rooms"].as_array().map(Vec::len) == Some(2))
            .await;
    assert_eq!(
        rooms,
        json!({"rooms": [{"room": "lobby", "members": 3}, {"room": "ops", "members": 1}], "more": false})
    );
    let page = api.get("/api/v1/rooms?limit=1").await.body;
    assert_eq!((&page["rooms"][0]["room"], &page["more"]), (&json!("lobby"), &json!(true)));
    let page = api.get("/api/v1/rooms?after=lobby").await.body;
    assert_eq!(page["rooms"], json!([{"room": "ops", "members": 1}]));

    let stats = eventually(&api, "/api/v1/stats", |body| body["cluster"]["connections"] == 3).await;
    assert_eq!(stats["node"], "a");
    assert_eq!(stats["cluster"]["nodes"], 2);
    assert_eq!(stats["cluster"]["rooms"], 2, "lobby is on both nodes and counts once");
    let per_node: Vec<(String, u64, u64)> = stats["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default().to_owned(),
                n["connections"].as_u64().unwrap_or(0),
                n["rooms"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(per_node, vec![("a".into(), 1, 1), ("b".into(), 2, 2)]);
}

#[tokio::test]
async fn keys_rotation_and_the_api_switch() {
    // A single node, two keys at once (rotation), a small budget.
    let node = Node::start_with_env(
        "127.0.0.1:0",
        &["--api-rate", "1/m", "--api-burst", "3"],
        &[("PALAVER_API_KEY", &format!("{KEY},{NEXT_KEY}"))],
    );
    let old = ApiClient::new(node.addr, Some(KEY));
    let new = ApiClient::new(node.addr, Some(NEXT_KEY));
    assert_eq!(old.get("/api/v1/stats").await.status, 200);
    assert_eq!(new.get("/api/v1/stats").await.status, 200);
    for wrong in [Some("test-key-0123456789abcdeX"), Some("test-key"), None] {
        let answer = ApiClient::new(node.addr, wrong).get("/api/v1/stats").await;
        assert_eq!((answer.status, answer.code()), (401, "unauthorized"), "{wrong:?}");
        assert!(answer.headers.iter().any(|(k, _)| k == "www-authenticate"));
    }
    // Each key has its own budget; over it: 429 with Retry-After.
    assert_eq!(old.get("/api/v1/stats").await.status, 200);
    assert_eq!(old.get("/api/v1/stats").await.status, 200);
    let over = old.get("/api/v1/stats").await;
    assert_eq!((over.status, over.code()), (429, "rate_limited"));
    assert!(over.headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
    assert_eq!(new.get("/api/v1/stats").await.status, 200);
    // The spec is served as checked in, without a key.
    let (status, served) = http_get(node.addr, "/api/v1/openapi.yaml").await.expect("spec");
    assert_eq!((status, served.as_str()), (200, SPEC));

    // No key configured: no API at all.
    let off = Node::start(&[]);
    assert_eq!(http_get(off.addr, "/api/v1/stats").await.expect("get").0, 404);
    assert_eq!(http_get(off.addr, "/api/v1/openapi.yaml").await.expect("get").0, 404);

    // --api-listen: the API on its own address only.
    let apart = Node::start(&["--api-key", KEY, "--api-listen", "127.0.0.1:0"]);
    let api_addr = apart.api.expect("an API address on the listening line");
    assert_eq!(http_get(apart.addr, "/api/v1/openapi.yaml").await.expect("get").0, 404);
    assert_eq!(ApiClient::new(api_addr, Some(KEY)).get("/api/v1/stats").await.status, 200);
    assert_eq!(http_get(api_addr, "/healthz").await.expect("get").0, 200);
}

#[tokio::test]
async fn bad_input_gets_the_protocols_codes_and_hurts_nobody() {
    let node = Node::start(&["--api-key", KEY, "--max-text", "10"]);
    let api = ApiClient::new(node.addr, Some(KEY));
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("lobby").await;
    let publish = |room: &str| format!("/api/v1/rooms/{room}/messages");
    let cases: Vec<(String, Vec<u8>, u16, &str)> = vec![
        (publish("lob%20by"), br#"{"text":"x","id":"1"}"#.to_vec(), 400, "invalid_room"),
        (publish(&"r".repeat(65)), br#"{"text":"x","id":"1"}"#.to_vec(), 400, "invalid_room"),
        (publish("lobby"), b"{not json".to_vec(), 400, "bad_json"),
        (publish("lobby"), b"".to_vec(), 400, "bad_json"),
        (publish("lobby"), br#"[1,2]"#.to_vec(), 400, "invalid_field"),
        (publish("lobby"), br#"{"text":5,"id":"1"}"#.to_vec(), 400, "invalid_field"),
        (publish("lobby"), br#"{"id":"1"}"#.to_vec(), 400, "missing_field"),
        (publish("lobby"), br#"{"text":"x"}"#.to_vec(), 400, "missing_field"),
        (publish("lobby"), br#"{"text":"x","id":"has space"}"#.to_vec(), 400, "invalid_id"),
        (publish("lobby"), br#"{"text":"\u0000\u0007 ","id":"1"}"#.to_vec(), 400, "empty_text"),
        (publish("lobby"), br#"{"text":"01234567890","id":"1"}"#.to_vec(), 400, "text_too_long"),
        (
            publish("lobby"),
            br#"{"text":"x","id":"1","user":"<script>"}"#.to_vec(),
            400,
            "invalid_user",
        ),
        (publish("lobby"), vec![b'['; 100_000], 413, "too_large"),
        ("/api/v1/users/%3Cb%3E/disconnect".into(), b"".to_vec(), 400, "invalid_user"),
        ("/api/v1/users/ann/disconnect".into(), br#"{"reason":5}"#.to_vec(), 400, "invalid_field"),
    ];
    for (path, body, status, code) in &cases {
        let answer = api.send("POST", path, Some(body)).await;
        assert_eq!((answer.status, answer.code()), (*status, *code), "POST {path}");
    }
    let gets = [
        ("/api/v1/rooms/lobby/history?limit=0", "invalid_field"),
        ("/api/v1/rooms/lobby/history?limit=201", "invalid_field"),
        ("/api/v1/rooms/lobby/history?before=-1", "invalid_field"),
        ("/api/v1/rooms/lobby/history?before=18446744073709551616", "invalid_field"),
        ("/api/v1/rooms/lobby/history?before=2&after=1", "invalid_field"),
        ("/api/v1/rooms/lobby/members?after=%3Cb%3E", "invalid_field"),
        ("/api/v1/rooms?after=no%20spaces", "invalid_room"),
        ("/api/v1/rooms?limit=1001", "invalid_field"),
    ];
    for (path, code) in gets {
        let answer = api.get(path).await;
        assert_eq!((answer.status, answer.code()), (400, code), "GET {path}");
    }
    let unknown = api.raw("GET", "/api/v1/nothing", None).await;
    assert_eq!((unknown.status, unknown.code()), (404, "not_found"));
    let wrong_method = api.raw("DELETE", "/api/v1/stats", None).await;
    assert_eq!((wrong_method.status, wrong_method.code()), (405, "method_not_allowed"));

    // None of it reached the room; the node still serves it.
    let ok = api.post(&publish("lobby"), &json!({"text": "still here", "id": "ok"})).await;
    assert_eq!(ok.body["seq"], 1);
    assert_eq!(ann.messages("lobby", 1).await, vec![(1, "still here".to_owned())]);
}

#[tokio::test]
async fn guests_cannot_take_the_api_users_name() {
    let node = Node::start(&["--api-key", KEY]);
    for name in ["system", "System", "%20SYSTEM"] {
        let target = format!("/ws?name={name}");
        let status = upgrade_status(node.addr, &target, &[]).await.expect("upgrade");
        assert_eq!(status, 400, "{name}");
    }
    assert_eq!(upgrade_status(node.addr, "/ws?name=systems", &[]).await.expect("upgrade"), 101);
}

/// Runs `palaver <args>` to completion: (success, stdout, stderr).
fn palaver(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(palaver_tests::node::binary())
        .args(args)
        .env_remove("PALAVER_API_KEY")
        .output()
        .expect("run palaver");
    let text = |b: Vec<u8>| String::from_utf8(b).expect("UTF-8 output");
    (out.status.success(), text(out.stdout), text(out.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_reads_history_and_disconnects() {
    let redis = RedisServer::start();
    let (a, b) = cluster(&redis, &[]);
    let mut zoe = WsClient::connect(&b.ws_url("Zo%C3%AB%202")).await;
    zoe.join("ops").await;
    let url = format!("http://{}", a.addr);
    let base = ["--url", url.as_str(), "--api-key", KEY];
    let run = |command: &str, rest: &[&str]| {
        let mut args = vec![command];
        args.extend_from_slice(&base);
        args.extend_from_slice(rest);
        palaver(&args)
    };

    let (ok, out, err) = run("publish", &["ops", "deploy 42 finished", "--id", "deploy-42"]);
    assert!(ok, "{err}");
    let published: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!((&published["seq"], &published["duplicate"]), (&json!(1), &json!(false)));
    assert_eq!(zoe.messages("ops", 1).await, vec![(1, "deploy 42 finished".to_owned())]);
    let (_, out, _) = run("publish", &["ops", "deploy 42 finished", "--id", "deploy-42"]);
    assert_eq!(serde_json::from_str::<Value>(&out).expect("JSON")["duplicate"], true);

    let (ok, out, err) = run("history", &["ops", "--limit", "5"]);
    assert!(ok, "{err}");
    let page: Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(page["messages"][0]["text"], "deploy 42 finished");

    let (ok, _, err) = run("disconnect", &["Zoë 2", "--reason", "maintenance"]);
    assert!(ok, "{err}");
    assert_eq!(zoe.ended(PATIENCE).await, Ended::Closed(4002));

    // Errors carry the API's code, on stderr, with a failing exit status.
    let (ok, _, err) = run("publish", &["no spaces allowed", "x"]);
    assert!(!ok && err.contains("invalid_room"), "{err}");
    let (ok, _, err) =
        palaver(&["history", "ops", "--url", &url, "--api-key", "wrong-key-0123456789"]);
    assert!(!ok && err.contains("unauthorized"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_publish_is_one_trace_with_the_fan_out_on_every_node() {
    use palaver_tests::otlp::OtlpReceiver;
    let receiver = OtlpReceiver::start().await;
    let redis = RedisServer::start();
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let url = redis.url();
    let start = |id: &str| {
        let args = ["--redis-url", url.as_str(), "--node-id", id, "--api-key", KEY];
        Node::start_with_env("127.0.0.1:0", &args, &env)
    };
    let (a, b) = (start("api-a"), start("api-b"));
    let mut bob = WsClient::connect(&b.ws_url("bob")).await;
    bob.join("traced").await;
    let api = ApiClient::new(a.addr, Some(KEY));
    let answer = api.post("/api/v1/rooms/traced/messages", &json!({"text": "t", "id": "t1"})).await;
    assert_eq!(answer.status, 200);
    assert_eq!(bob.messages("traced", 1).await[0].1, "t");

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let spans = receiver.spans();
        let publish = spans.iter().find(|s| s.name == "publish" && s.instance == "api-a");
        let delivered_on_b = publish.is_some_and(|publish| {
            spans.iter().any(|s| {
                s.name == "deliver"
                    && s.instance == "api-b"
                    && s.trace_id == publish.trace_id
                    && s.parent_span_id == publish.span_id
            })
        });
        if delivered_on_b {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no publish span on api-a with a deliver child on api-b: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_single_node_disconnects_locally() {
    let node = Node::start(&["--api-key", KEY]);
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    let api = ApiClient::new(node.addr, Some(KEY));
    let answer = api.send("POST", "/api/v1/users/ann/disconnect", None).await;
    assert_eq!(answer.body, json!({"user": "ann", "nodes": 1}));
    assert_eq!(ann.ended(PATIENCE).await, Ended::Closed(4002));
    let stats = eventually(&api, "/api/v1/stats", |b| b["cluster"]["connections"] == 0).await;
    assert_eq!(stats["cluster"]["nodes"], 1);
}
