//! End-to-end tests of the security features against real `palaver`
//! processes: token authentication (URL and first frame), guest marking,
//! private rooms (one node and a Redis cluster), origin checks, per-connection
//! and per-IP rate limits, and hostile clients at the socket level.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use futures_util::{SinkExt, StreamExt, stream};
use jsonwebtoken::{EncodingKey, Header};
use palaver_protocol::{ErrorCode, PresenceState, ServerFrame};
use palaver_tests::{
    Node, PATIENCE, RedisServer, WsClient,
    client::Ended,
    node::{binary, http_get},
    raw::{self, RawEnd, op},
};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt, net::TcpStream};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "security-test-secret";
/// Long enough to be sure nothing is coming, in tests that assert silence.
const QUIET: Duration = Duration::from_millis(500);

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs()
}

fn sign(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::default(), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("sign")
}

fn claims(sub: &str, name: &str, rooms: &[&str]) -> Value {
    json!({"sub": sub, "name": name, "exp": now() + 600, "rooms": rooms})
}

fn token(sub: &str, name: &str, rooms: &[&str]) -> String {
    sign(SECRET, &claims(sub, name, rooms))
}

/// `claims` with one field replaced (or removed, with `Value::Null`).
fn with(mut claims: Value, key: &str, value: Value) -> Value {
    let object = claims.as_object_mut().expect("claims are an object");
    if value.is_null() {
        object.remove(key);
    } else {
        object.insert(key.to_owned(), value);
    }
    claims
}

fn token_url(node: &Node, token: &str) -> String {
    format!("ws://{}/ws?token={token}", node.addr)
}

fn user(welcome: &ServerFrame) -> String {
    match welcome {
        ServerFrame::Welcome { user, .. } => user.to_string(),
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn error_code(client: &mut WsClient) -> (ErrorCode, Option<String>) {
    match client.expect(|f| matches!(f, ServerFrame::Error { .. })).await {
        ServerFrame::Error { code, reference, .. } => (code, reference),
        _ => unreachable!(),
    }
}

fn members(joined: &ServerFrame) -> Vec<String> {
    match joined {
        ServerFrame::Joined { members, .. } => members.iter().map(|m| m.to_string()).collect(),
        other => panic!("expected joined, got {other:?}"),
    }
}

/// `from` posts to `room` and `to` receives it: the node still serves chat.
async fn still_chatting(from: &mut WsClient, to: &mut WsClient, room: &str, id: &str) {
    let text = format!("still here {id}");
    from.say(room, id, &text).await;
    let wanted = text.clone();
    to.expect(move |f| matches!(f, ServerFrame::Message { text, .. } if *text == wanted)).await;
}

async fn chatting_pair(node: &Node) -> (WsClient, WsClient) {
    let mut ann = WsClient::connect(&node.ws_url("ann")).await;
    ann.join("lobby").await;
    let mut bob = WsClient::connect(&node.ws_url("bob")).await;
    bob.join("lobby").await;
    (ann, bob)
}

async fn status(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> u16 {
    raw::upgrade_status(addr, target, headers).await.expect("an HTTP response")
}

#[tokio::test]
async fn url_tokens_are_checked_before_the_upgrade() {
    let node = Node::start(&[
        "--auth",
        "token",
        "--jwt-secret",
        SECRET,
        "--jwt-audience",
        "chat",
        "--jwt-issuer",
        "idp",
    ]);
    let good =
        with(with(claims("u-alice", "Alice", &[]), "aud", json!("chat")), "iss", json!("idp"));
    let alice = WsClient::connect(&token_url(&node, &sign(SECRET, &good))).await;
    assert_eq!(user(&alice.welcome), "Alice");

    let body = sign(SECRET, &good);
    let payload = body.split('.').nth(1).expect("three parts");
    let refused = [
        ("expired", sign(SECRET, &with(good.clone(), "exp", json!(now() - 3600)))),
        ("wrongly signed", sign("another-secret", &good)),
        ("wrong audience", sign(SECRET, &with(good.clone(), "aud", json!("other")))),
        ("no audience", sign(SECRET, &with(good.clone(), "aud", Value::Null))),
        ("wrong issuer", sign(SECRET, &with(good.clone(), "iss", json!("evil")))),
        ("no subject", sign(SECRET, &with(good.clone(), "sub", Value::Null))),
        ("marked name", sign(SECRET, &with(good.clone(), "name", json!("~Alice")))),
        ("bad rooms", sign(SECRET, &with(good.clone(), "rooms", json!(["a b"])))),
        // {"alg":"none"}: unsigned.
        ("unsigned", format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")),
        ("garbage", "not-a-token".to_owned()),
    ];
    for (why, token) in refused {
        assert_eq!(status(node.addr, &format!("/ws?token={token}"), &[]).await, 401, "{why}");
    }
    let bearer = format!("Bearer {}", sign(SECRET, &good));
    assert_eq!(status(node.addr, "/ws", &[("Authorization", &bearer)]).await, 101);
}

#[tokio::test]
async fn a_token_can_come_in_the_first_frame() {
    let node = Node::start(&["--auth", "token", "--jwt-secret", SECRET, "--auth-timeout", "1s"]);
    let url = format!("ws://{}/ws", node.addr);

    let mut alice = WsClient::connect_unwelcomed(&url).await;
    alice.send_json(json!({"type":"auth","token": token("u-alice", "Alice", &[])})).await;
    assert_eq!(user(alice.read_welcome().await), "Alice");
    alice.join("lobby").await;
    // Only as the first frame.
    alice.send_json(json!({"type":"auth","token": token("u-bob", "Bob", &[])})).await;
    assert_eq!(error_code(&mut alice).await.0, ErrorCode::InvalidField);

    let expired = sign(SECRET, &with(claims("u-x", "X", &[]), "exp", json!(now() - 3600)));
    let mut late = WsClient::connect_unwelcomed(&url).await;
    late.send_json(json!({"type":"auth","token": expired})).await;
    assert_eq!(late.ended(PATIENCE).await, Ended::Closed(4001));

    let mut forged = WsClient::connect_unwelcomed(&url).await;
    let forgery = sign("guessed", &claims("u-alice", "Alice", &["*"]));
    forged.send_json(json!({"type":"auth","token": forgery})).await;
    assert_eq!(forged.ended(PATIENCE).await, Ended::Closed(4001));

    let mut eager = WsClient::connect_unwelcomed(&url).await;
    eager.send_json(json!({"type":"join","room":"lobby"})).await;
    assert_eq!(eager.ended(PATIENCE).await, Ended::Closed(4001));

    let mut silent = WsClient::connect_unwelcomed(&url).await;
    assert_eq!(silent.ended(PATIENCE).await, Ended::Closed(4001));

    // None of that disturbed Alice.
    alice.say("lobby", "a1", "fine").await;
}

#[tokio::test]
async fn guests_cannot_pass_for_token_users() {
    // Token mode: no guests at all. A nickname alone is not let in.
    let strict = Node::start(&["--auth", "token", "--jwt-secret", SECRET, "--auth-timeout", "1s"]);
    let mut impostor = WsClient::connect_unwelcomed(&strict.ws_url("Alice")).await;
    impostor.send_json(json!({"type":"join","room":"lobby"})).await;
    assert_eq!(impostor.ended(PATIENCE).await, Ended::Closed(4001));

    // Guest mode beside tokens: guests' names carry the `~` mark.
    let mixed = Node::start(&["--jwt-secret", SECRET]);
    let mut alice = WsClient::connect(&token_url(&mixed, &token("u-alice", "Alice", &[]))).await;
    assert_eq!(user(&alice.welcome), "Alice");
    let mut guest = WsClient::connect(&mixed.ws_url("Alice")).await;
    assert_eq!(user(&guest.welcome), "~Alice");
    assert_eq!(status(mixed.addr, "/ws?name=~Alice", &[]).await, 400);
    assert_eq!(status(mixed.addr, "/ws?name=%7EAlice", &[]).await, 400);
    alice.join("lobby").await;
    assert_eq!(members(&guest.join("lobby").await), ["Alice", "~Alice"]);
    guest.say("lobby", "g1", "it is me, Alice").await;
    match alice.expect(|f| matches!(f, ServerFrame::Message { .. })).await {
        ServerFrame::Message { user, .. } => assert_eq!(user.as_str(), "~Alice"),
        _ => unreachable!(),
    }

    // Guest mode without tokens: nobody is verified, names stay as chosen.
    let open = Node::start(&[]);
    assert_eq!(user(&WsClient::connect(&open.ws_url("Alice")).await.welcome), "Alice");
    assert_eq!(status(open.addr, "/ws?name=~Alice", &[]).await, 400);
    let unverifiable = token("u-alice", "Alice", &[]);
    assert_eq!(status(open.addr, &format!("/ws?token={unverifiable}"), &[]).await, 401);
}

/// Asserts `outsider` is refused everything about `room` with `forbidden`.
async fn refused_everything(outsider: &mut WsClient, room: &str) {
    let attempts = [
        (json!({"type":"join","room":room}), "join"),
        (json!({"type":"history","room":room,"limit":10}), "history"),
        (json!({"type":"members","room":room}), "members"),
        (json!({"type":"members","room":room,"limit":0}), "members"),
        (json!({"type":"send","room":room,"id":"o-1","text":"let me in"}), "o-1"),
        (json!({"type":"typing","room":room}), "typing"),
        (json!({"type":"leave","room":room}), "leave"),
        (json!({"type":"join","room":room,"since":{"epoch":"x","seq":0}}), "join"),
    ];
    for (frame, reference) in attempts {
        outsider.send_json(frame).await;
        assert_eq!(error_code(outsider).await, (ErrorCode::Forbidden, Some(reference.into())));
    }
}

#[tokio::test]
async fn private_rooms_give_the_unentitled_nothing() {
    let node = Node::start(&["--jwt-secret", SECRET, "--private-rooms", "team-*,staff"]);
    let mut alice = WsClient::connect(&token_url(&node, &token("u-a", "Alice", &["team-*"]))).await;
    assert_eq!(members(&alice.join("team-a").await), ["Alice"]);
    alice.say("team-a", "s1", "secret plans").await;

    let mut bob = WsClient::connect(&token_url(&node, &token("u-b", "Bob", &["lobby"]))).await;
    let mut eve = WsClient::connect(&node.ws_url("eve")).await;
    refused_everything(&mut bob, "team-a").await;
    refused_everything(&mut eve, "team-a").await;
    refused_everything(&mut alice, "staff").await;

    // Live traffic does not reach them either, and they left no trace.
    alice.say("team-a", "s2", "more secrets").await;
    assert_eq!(bob.try_next(QUIET).await, None);
    assert_eq!(eve.try_next(QUIET).await, None);
    alice.send_json(json!({"type":"history","room":"team-a"})).await;
    match alice.expect(|f| matches!(f, ServerFrame::History { .. })).await {
        ServerFrame::History { messages, .. } => assert_eq!(messages.len(), 2),
        _ => unreachable!(),
    }
    alice.clear();
    assert_eq!(alice.try_next(QUIET).await, None, "no presence from refused users");

    // A granted user gets everything, and everyone keeps the public rooms.
    let mut carol = WsClient::connect(&token_url(&node, &token("u-c", "Carol", &["*"]))).await;
    assert_eq!(members(&carol.join("team-a").await), ["Alice", "Carol"]);
    alice.expect(|f| matches!(f, ServerFrame::Presence { user, state: PresenceState::Join, .. } if user.as_str() == "Carol")).await;
    carol.send_json(json!({"type":"history","room":"team-a"})).await;
    match carol.expect(|f| matches!(f, ServerFrame::History { .. })).await {
        ServerFrame::History { messages, .. } => assert_eq!(messages.len(), 2),
        _ => unreachable!(),
    }
    carol.join("staff").await;
    eve.join("lobby").await;
    bob.join("lobby").await;
    still_chatting(&mut eve, &mut bob, "lobby", "e1").await;
}

#[tokio::test]
async fn private_rooms_hold_on_every_node_of_a_cluster() {
    let redis = RedisServer::start();
    let url = redis.url();
    let args = ["--redis-url", &url, "--jwt-secret", SECRET, "--private-rooms", "team-*"];
    let (a, b) = (Node::start(&args), Node::start(&args));
    let mut alice = WsClient::connect(&token_url(&a, &token("u-a", "Alice", &["team-*"]))).await;
    alice.join("team-a").await;
    let mut bob = WsClient::connect(&token_url(&b, &token("u-b", "Bob", &[]))).await;
    refused_everything(&mut bob, "team-a").await;
    let mut carol = WsClient::connect(&token_url(&b, &token("u-c", "Carol", &["team-a"]))).await;
    assert_eq!(members(&carol.join("team-a").await), ["Alice", "Carol"]);
    still_chatting(&mut alice, &mut carol, "team-a", "x1").await;
    still_chatting(&mut carol, &mut alice, "team-a", "x2").await;
    assert_eq!(bob.try_next(QUIET).await, None);
}

#[tokio::test]
async fn cross_origin_upgrades_need_an_allowed_origin() {
    let node = Node::start(&[]);
    let same = format!("http://{}", node.addr);
    assert_eq!(status(node.addr, "/ws", &[]).await, 101, "no Origin: not a browser");
    assert_eq!(status(node.addr, "/ws", &[("Origin", &same)]).await, 101, "same origin");
    assert_eq!(status(node.addr, "/ws", &[("Origin", "https://evil.example")]).await, 403);
    assert_eq!(status(node.addr, "/ws", &[("Origin", "null")]).await, 403);

    let listed = Node::start(&["--allowed-origins", "https://app.example,https://*.corp.example"]);
    for (origin, want) in [
        ("https://app.example", 101),
        ("https://chat.corp.example", 101),
        ("http://app.example", 403),
        ("https://evil.example", 403),
        ("https://corp.example.evil.example", 403),
    ] {
        assert_eq!(status(listed.addr, "/ws", &[("Origin", origin)]).await, want, "{origin}");
    }
    let any = Node::start(&["--allowed-origins", "*"]);
    assert_eq!(status(any.addr, "/ws", &[("Origin", "https://evil.example")]).await, 101);
    // Refusals are counted by reason.
    let (_, metrics) = palaver_tests::node::http_get(node.addr, "/metrics").await.expect("metrics");
    assert!(
        metrics.lines().any(|l| l == r#"palaver_upgrades_refused_total{reason="origin"} 2"#),
        "origin refusals not counted:\n{metrics}"
    );
}

#[tokio::test]
async fn a_flooding_client_is_refused_then_closed_while_others_keep_chatting() {
    let node = Node::start(&["--rate-limit", "20/s", "--rate-burst", "40", "--rate-strikes", "50"]);
    let (mut ann, mut bob) = chatting_pair(&node).await;

    let (ws, _) = tokio_tungstenite::connect_async(node.ws_url("flood")).await.expect("connect");
    let (mut sink, mut source) = ws.split();
    let reader = tokio::spawn(async move {
        let (mut limited, mut retryable) = (0, true);
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Text(text) => {
                    if let Ok(ServerFrame::Error {
                        code: ErrorCode::RateLimited,
                        retryable: r,
                        ..
                    }) = ServerFrame::decode(&text)
                    {
                        limited += 1;
                        retryable &= r;
                    }
                }
                Message::Close(frame) => {
                    return (limited, retryable, frame.map(|f| u16::from(f.code)));
                }
                _ => {}
            }
        }
        (limited, retryable, None)
    });
    let flooding = tokio::spawn(async move {
        let join = json!({"type":"join","room":"lobby"}).to_string();
        let _ = sink.send(Message::Text(join.into())).await;
        for i in 0..5000 {
            let frame = json!({"type":"send","room":"lobby","id":format!("f{i}"),"text":"spam"});
            if sink.send(Message::Text(frame.to_string().into())).await.is_err() {
                break;
            }
        }
    });
    // The room keeps working for everyone else throughout.
    for i in 0..10 {
        still_chatting(&mut ann, &mut bob, "lobby", &format!("a{i}")).await;
    }
    let (limited, retryable, code) =
        tokio::time::timeout(PATIENCE, reader).await.expect("flooder closed").expect("reader");
    assert!(limited > 0, "the flooder was told to slow down");
    assert!(retryable, "rate_limited is retryable");
    assert_eq!(code, Some(1008));
    let _ = flooding.await;
    still_chatting(&mut bob, &mut ann, "lobby", "b-after").await;
}

#[tokio::test]
async fn websocket_ping_floods_count_against_the_rate_too() {
    let node = Node::start(&["--rate-limit", "20/s", "--rate-burst", "40", "--rate-strikes", "50"]);
    let (mut ann, mut bob) = chatting_pair(&node).await;
    let mut flood = raw_ws(&node, "pinger").await;
    let pings: Vec<u8> = (0..500).flat_map(|_| raw::frame(op::PING, true, b"hi")).collect();
    flood.write_all(&pings).await.expect("write");
    assert_eq!(raw::ended(&mut flood, PATIENCE).await, RawEnd::Closed(1008));
    still_chatting(&mut ann, &mut bob, "lobby", "after-pings").await;
}

#[tokio::test]
async fn the_existing_limits_hold() {
    let node = Node::start(&["--max-rooms", "2", "--max-room-members", "2", "--max-text", "10"]);
    let mut a = WsClient::connect(&node.ws_url("a")).await;
    a.join("r1").await;
    a.join("r2").await;
    a.send_json(json!({"type":"join","room":"r3"})).await;
    assert_eq!(error_code(&mut a).await.0, ErrorCode::TooManyRooms);
    let mut b = WsClient::connect(&node.ws_url("b")).await;
    b.join("r1").await;
    let mut c = WsClient::connect(&node.ws_url("c")).await;
    c.send_json(json!({"type":"join","room":"r1"})).await;
    assert_eq!(error_code(&mut c).await.0, ErrorCode::RoomFull);
    a.send_json(json!({"type":"send","room":"r1","id":"t1","text":"é".repeat(11)})).await;
    assert_eq!(error_code(&mut a).await, (ErrorCode::TextTooLong, Some("t1".into())));
    a.say("r1", "t2", &"é".repeat(10)).await;
    let long_name = "n".repeat(33);
    assert_eq!(status(node.addr, &format!("/ws?name={long_name}"), &[]).await, 400);
    assert_eq!(status(node.addr, &format!("/ws?name={}", &long_name[1..]), &[]).await, 101);
}

#[tokio::test]
async fn open_connections_per_ip_are_capped() {
    let node = Node::start(&["--max-conns-per-ip", "3"]);
    let mut clients = Vec::new();
    for name in ["a", "b", "c"] {
        clients.push(WsClient::connect(&node.ws_url(name)).await);
    }
    assert_eq!(status(node.addr, "/ws?name=d", &[]).await, 429);
    clients.pop().expect("three clients").close().await;
    let deadline = Instant::now() + PATIENCE;
    while status(node.addr, "/ws?name=d", &[]).await != 101 {
        assert!(Instant::now() < deadline, "a freed slot is never given back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_attempts_from_one_ip_are_refused_without_harm() {
    let (rate, burst) = (5, 20);
    let node = Node::start(&[
        "--conn-rate-per-ip",
        &format!("{rate}/s"),
        "--conn-burst-per-ip",
        &burst.to_string(),
        "--max-conns-per-ip",
        "100",
    ]);
    let (mut ann, mut bob) = chatting_pair(&node).await;
    let addr = node.addr;
    let started = Instant::now();
    let statuses: Vec<u16> = tokio::time::timeout(
        Duration::from_secs(120),
        stream::iter(0..10_000)
            .map(|_| async move { raw::upgrade_status(addr, "/ws?name=x", &[]).await.unwrap_or(0) })
            .buffer_unordered(64)
            .collect(),
    )
    .await
    .expect("10,000 attempts within two minutes");
    let elapsed = started.elapsed().as_secs() + 1;
    let admitted = statuses.iter().filter(|&&s| s == 101).count() as u64;
    let refused = statuses.iter().filter(|&&s| s == 429).count() as u64;
    assert_eq!(admitted + refused, 10_000, "every attempt got 101 or 429");
    assert!(admitted <= burst + rate * elapsed, "{admitted} admitted in {elapsed}s");
    assert!(refused >= 10_000 - burst - rate * elapsed);
    still_chatting(&mut ann, &mut bob, "lobby", "after-storm").await;
    assert_eq!(http_get(node.addr, "/healthz").await.expect("healthz").0, 200);
}

#[tokio::test]
async fn a_connection_ends_when_its_token_expires() {
    let node = Node::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    let short = sign(SECRET, &with(claims("u-a", "Alice", &[]), "exp", json!(now() + 2)));
    let mut alice = WsClient::connect(&token_url(&node, &short)).await;
    alice.join("lobby").await;
    assert_eq!(alice.ended(PATIENCE).await, Ended::Closed(4001));
}

fn fixture(name: &str) -> String {
    format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn mint(args: &[&str]) -> String {
    let out = Command::new(binary()).arg("token").args(args).output().expect("run palaver token");
    assert!(out.status.success(), "palaver token failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 token").trim().to_owned()
}

#[tokio::test]
async fn palaver_token_mints_tokens_the_nodes_accept() {
    let node =
        Node::start(&["--auth", "token", "--jwt-secret", SECRET, "--private-rooms", "team-*"]);
    let token = mint(&[
        "--secret",
        SECRET,
        "--sub",
        "alice",
        "--name",
        "Alice",
        "--rooms",
        "team-*,lobby",
        "--ttl",
        "1h",
    ]);
    let mut alice = WsClient::connect(&token_url(&node, &token)).await;
    assert_eq!(user(&alice.welcome), "Alice");
    alice.join("team-x").await;

    // Public keys: ES256 and RS256, signed with the private halves.
    for (public, private) in
        [("es256-public.pem", "es256-private.pem"), ("rs256-public.pem", "rs256-private.pem")]
    {
        let keyed = Node::start(&["--auth", "token", "--jwt-public-key", &fixture(public)]);
        let token = mint(&["--private-key", &fixture(private), "--sub", "bob", "--name", "Bob"]);
        assert_eq!(user(&WsClient::connect(&token_url(&keyed, &token)).await.welcome), "Bob");
        // The classic confusion: HS256 "signed" with the public key as secret.
        let pem = std::fs::read_to_string(fixture(public)).expect("fixture");
        let confused = sign(&pem, &claims("mallory", "Bob", &["*"]));
        assert_eq!(status(keyed.addr, &format!("/ws?token={confused}"), &[]).await, 401);
        let hs = mint(&["--secret", SECRET, "--sub", "bob"]);
        assert_eq!(status(keyed.addr, &format!("/ws?token={hs}"), &[]).await, 401);
    }
}

/// Connects a raw upgraded socket (101 checked), for frames built by hand.
async fn raw_ws(node: &Node, name: &str) -> TcpStream {
    let (status, stream) =
        raw::upgrade(node.addr, &format!("/ws?name={name}"), &[]).await.expect("upgrade");
    assert_eq!(status, 101);
    stream
}

async fn raw_close_code(node: &Node, bytes: &[u8]) -> RawEnd {
    let mut stream = raw_ws(node, "raw").await;
    stream.write_all(bytes).await.expect("write");
    raw::ended(&mut stream, PATIENCE).await
}

#[tokio::test]
async fn hostile_frames_are_closed_with_documented_codes_and_harm_no_one() {
    let node = Node::start(&["--max-frame", "4096"]);
    let (mut ann, mut bob) = chatting_pair(&node).await;
    let chunk = vec![b'x'; 3000];
    let mut fragmented = raw::frame(op::TEXT, false, &chunk);
    for _ in 0..3 {
        fragmented.extend(raw::frame(op::CONTINUATION, false, &chunk));
    }
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("announces 2^40 bytes", raw::frame_header(op::TEXT, true, 0, true, 1 << 40), 1009),
        ("oversized frame", raw::frame(op::TEXT, true, &[b'x'; 5000]), 1009),
        ("fragments summing past the limit", fragmented, 1009),
        ("invalid UTF-8", raw::frame(op::TEXT, true, b"{\"type\":\"\xff\xfe\"}"), 1007),
        ("unmasked client frame", raw::frame_with(op::TEXT, true, 0, false, b"{}"), 1002),
        ("reserved opcode", raw::frame(0x3, true, b"x"), 1002),
        ("reserved bits", raw::frame_with(op::TEXT, true, 0b100, true, b"{}"), 1002),
        ("long ping", raw::frame(op::PING, true, &[0; 200]), 1002),
        ("fragmented ping", raw::frame(op::PING, false, b"p"), 1002),
        ("continuation out of nowhere", raw::frame(op::CONTINUATION, true, b"x"), 1002),
        (
            "new message inside a fragmented one",
            {
                let mut b = raw::frame(op::TEXT, false, b"{\"type\":");
                b.extend(raw::frame(op::TEXT, true, b"\"ping\"}"));
                b
            },
            1002,
        ),
    ];
    for (what, bytes, code) in cases {
        assert_eq!(raw_close_code(&node, &bytes).await, RawEnd::Closed(code), "{what}");
        still_chatting(&mut ann, &mut bob, "lobby", &format!("after-{}", what.replace(' ', "-")))
            .await;
    }
}

#[tokio::test]
async fn hostile_content_is_refused_or_carried_verbatim() {
    let node = Node::start(&[]);
    let (mut ann, mut bob) = chatting_pair(&node).await;
    // Deep nesting: refused by the decoder's recursion limit or skipped unread, never recursed.
    for deep in [
        format!(r#"{{"type":"join","room":"a","since":{}"#, "[".repeat(8000)),
        format!(r#"{{"type":"join","x":{}{}}}"#, "[".repeat(4000), "]".repeat(4000)),
        format!(r#"{{"type":"send","room":"lobby","id":"d","text":{}"#, "{\"a\":".repeat(1500)),
    ] {
        ann.send_raw(Message::Text(deep.into())).await;
        ann.expect(|f| matches!(f, ServerFrame::Error { .. })).await;
    }
    let refused: [(String, ErrorCode); 10] = [
        // Too large to be a number at all.
        (r#"{"type":"history","room":"lobby","before":1e400}"#.into(), ErrorCode::BadJson),
        (r#"{"type":"history","room":"lobby","before":1.5}"#.into(), ErrorCode::InvalidField),
        (
            r#"{"type":"history","room":"lobby","after":18446744073709551616}"#.into(),
            ErrorCode::InvalidField,
        ),
        (r#"{"type":"history","room":"lobby","before":-1}"#.into(), ErrorCode::InvalidField),
        (r#"{"type":"history","room":"lobby","limit":4294967296}"#.into(), ErrorCode::InvalidField),
        (
            r#"{"type":"send","room":"lobby","id":"n1","text":"\u0000\u0000"}"#.into(),
            ErrorCode::EmptyText,
        ),
        (r#"{"type":"join","room":"<script>"}"#.into(), ErrorCode::InvalidRoom),
        (r#"{"type":"join","room":"a\u0000b"}"#.into(), ErrorCode::InvalidRoom),
        (
            r#"{"type":"send","room":"lobby","id":"has space","text":"x"}"#.into(),
            ErrorCode::InvalidId,
        ),
        ("\u{0}".into(), ErrorCode::BadJson),
    ];
    for (frame, code) in refused {
        ann.send_raw(Message::Text(frame.clone().into())).await;
        assert_eq!(error_code(&mut ann).await.0, code, "{frame:.80}");
    }
    // Extreme but valid numbers are answered, not trusted.
    ann.send_json(json!({"type":"history","room":"lobby","after":u64::MAX})).await;
    ann.expect(|f| matches!(f, ServerFrame::History { messages, .. } if messages.is_empty())).await;
    let mut resumer = WsClient::connect(&node.ws_url("resumer")).await;
    resumer
        .send_json(json!({"type":"join","room":"lobby","since":{"epoch":"x","seq":u64::MAX}}))
        .await;
    resumer.expect(|f| matches!(f, ServerFrame::Joined { recovered: false, .. })).await;

    // Markup travels as text inside JSON strings, byte for byte; NULs and
    // terminal escapes are stripped.
    let markup = r#"<script>alert("x")</script><img src=x onerror=alert(1)>"#;
    ann.say("lobby", "<b>id</b>", markup).await;
    bob.expect(|f| matches!(f, ServerFrame::Message { text, id, .. } if text == markup && id.as_str() == "<b>id</b>")).await;
    ann.say("lobby", "ctl", "a\u{0}b\u{1b}[2Jc\u{202e}d").await;
    bob.expect(|f| matches!(f, ServerFrame::Message { text, .. } if text == "ab[2Jcd")).await;
    for name in ["%3Cscript%3E", "a%00b", "%E2%80%AEevil", "", "%20", "%FF"] {
        assert_eq!(status(node.addr, &format!("/ws?name={name}"), &[]).await, 400, "{name}");
    }
    still_chatting(&mut ann, &mut bob, "lobby", "content-done").await;
}

#[tokio::test]
async fn half_open_and_trickling_clients_are_cut_off() {
    let node = Node::start(&["--header-timeout", "1s"]);
    let (mut ann, mut bob) = chatting_pair(&node).await;

    // TCP connects that never send a request: closed after the header timeout.
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(node.addr).await.expect("connect"));
    }
    still_chatting(&mut ann, &mut bob, "lobby", "among-idlers").await;
    for stream in &mut idle {
        assert!(raw::closed_by_server(stream, PATIENCE).await, "idle socket left open");
    }

    // A request head trickled byte by byte never completes in time.
    let mut slow = TcpStream::connect(node.addr).await.expect("connect");
    let request = raw::upgrade_request(node.addr, "/ws?name=slow", &[]);
    let trickle = async {
        for byte in request.as_bytes() {
            if slow.write_all(&[*byte]).await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut = tokio::time::timeout(PATIENCE, trickle).await;
    assert_eq!(cut, Ok(true), "a trickled request head was cut off");

    // A request with no end of head, then silence.
    let mut partial = TcpStream::connect(node.addr).await.expect("connect");
    partial.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    assert!(raw::closed_by_server(&mut partial, PATIENCE).await);

    // Not even HTTP.
    let mut garbage = TcpStream::connect(node.addr).await.expect("connect");
    garbage
        .write_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 hello\r\n\r\n")
        .await
        .expect("write");
    assert!(raw::closed_by_server(&mut garbage, PATIENCE).await);

    still_chatting(&mut bob, &mut ann, "lobby", "after-the-silent").await;
}

#[tokio::test]
async fn upgraded_then_silent_clients_are_closed() {
    let node = Node::start(&["--read-deadline", "1s", "--ping-interval", "300ms"]);
    // Never answers pings: closed by the read deadline.
    let mut mute = raw_ws(&node, "mute").await;
    assert_eq!(raw::ended(&mut mute, PATIENCE).await, RawEnd::Closed(4000));
    // In token mode, silence before the auth frame ends at the auth timeout.
    let strict = Node::start(&["--auth", "token", "--jwt-secret", SECRET, "--auth-timeout", "1s"]);
    let (status, mut unauthenticated) =
        raw::upgrade(strict.addr, "/ws", &[]).await.expect("upgrade");
    assert_eq!(status, 101);
    assert_eq!(raw::ended(&mut unauthenticated, PATIENCE).await, RawEnd::Closed(4001));
}
