//! A cluster the way it is deployed: three gateways and one Redis behind the
//! project's HAProxy config (`deploy/haproxy.cfg`), clients connecting only
//! to the balancer. Includes a rolling restart under steady traffic, and the
//! `deploy/local-cluster.sh` script. Skipped (with a message) when `haproxy`
//! is not installed; `.ci/run` installs it.

use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    net::{SocketAddr, TcpListener},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use palaver_protocol::{Epoch, ServerFrame};
use palaver_tests::{
    Node, PATIENCE, RedisServer, WsClient,
    balancer::{Balancer, haproxy_installed, repo_path},
    node::{binary, http_get},
};
use serde_json::json;
use tokio::{
    net::TcpStream,
    sync::{Barrier, mpsc, watch},
    time::{Instant, sleep, timeout},
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Fails the test (never skips it) when haproxy is missing.
fn require_haproxy() {
    assert!(
        haproxy_installed(),
        "haproxy is not installed: run scripts/test.sh (it installs it) or apt-get install haproxy"
    );
}

fn gateway_args(redis: &RedisServer, id: &str) -> Vec<String> {
    vec![
        "--client-ip-header".into(),
        "X-Forwarded-For".into(),
        "--redis-url".into(),
        redis.url(),
        "--node-id".into(),
        id.into(),
        "--shutdown-deadline".into(),
        "5s".into(),
    ]
}

fn start_gateway(redis: &RedisServer, listen: &str, id: &str) -> Node {
    let args = gateway_args(redis, id);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start_on(listen, &args)
}

fn addrs(nodes: &[Node]) -> [SocketAddr; 3] {
    [nodes[0].addr, nodes[1].addr, nodes[2].addr]
}

fn welcome_node(client: &WsClient) -> String {
    match &client.welcome {
        ServerFrame::Welcome { node, .. } => node.clone(),
        other => panic!("expected welcome, got {other:?}"),
    }
}

async fn ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(addr, "/readyz").await.map(|(s, _)| s).unwrap_or(0) != 200 {
        assert!(Instant::now() < deadline, "{addr} never became ready");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_through_the_balancer_reaches_every_client_on_every_node() {
    require_haproxy();
    let redis = RedisServer::start();
    let nodes: Vec<Node> =
        (1..=3).map(|i| start_gateway(&redis, "127.0.0.1:0", &format!("lb-{i}"))).collect();
    let balancer = Balancer::start(addrs(&nodes));

    let clients = 6;
    let per_client = 5;
    let total = (clients * per_client) as u64;
    // Connect one after another: least-connections spreads them over the nodes.
    let mut connected = Vec::new();
    for i in 0..clients {
        connected.push(WsClient::connect(&balancer.ws_url(&format!("c{i}"))).await);
    }
    let landed: BTreeSet<String> = connected.iter().map(welcome_node).collect();
    assert_eq!(
        landed,
        ["lb-1", "lb-2", "lb-3"].map(String::from).into(),
        "clients land on every node"
    );

    let barrier = Arc::new(Barrier::new(clients));
    let mut tasks = Vec::new();
    for (i, mut client) in connected.into_iter().enumerate() {
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            client.join("lobby").await;
            barrier.wait().await;
            for n in 0..per_client {
                client.say("lobby", &format!("c{i}-{n}"), &format!("from {i}: {n}")).await;
            }
            let seqs: Vec<u64> = client
                .messages("lobby", total as usize)
                .await
                .into_iter()
                .map(|(s, _)| s)
                .collect();
            seqs
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("client task"), (1..=total).collect::<Vec<_>>());
    }
}

/// Connects through the balancer (retrying while a node drains) and reads
/// `welcome`; returns the socket and the serving node.
async fn connect_via(url: &str) -> (Socket, String) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(Ok((mut ws, _))) = timeout(Duration::from_secs(2), connect_async(url)).await
            && let Ok(Some(Ok(Message::Text(text)))) = timeout(PATIENCE, ws.next()).await
            && let Ok(ServerFrame::Welcome { node, .. }) = ServerFrame::decode(&text)
        {
            return (ws, node);
        }
        assert!(Instant::now() < deadline, "cannot connect through the balancer");
        sleep(Duration::from_millis(50)).await;
    }
}

async fn send(ws: &mut Socket, value: serde_json::Value) -> bool {
    ws.send(Message::Text(value.to_string().into())).await.is_ok()
}

/// How one connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Close(u16),
    Dropped,
}

/// A reader that follows a room across restarts: on 1001 it reconnects through
/// the balancer and resumes with `since`. Returns every sequence number it
/// saw, the nodes it was served by, and how its connections ended.
async fn follow(
    url: String,
    room: &'static str,
    joined: mpsc::UnboundedSender<()>,
    mut total: watch::Receiver<Option<u64>>,
) -> (Vec<u64>, BTreeSet<String>, Vec<End>) {
    let mut since: Option<(Epoch, u64)> = None;
    let (mut seen, mut nodes, mut ends) = (Vec::new(), BTreeSet::new(), Vec::new());
    loop {
        let (mut ws, node) = connect_via(&url).await;
        nodes.insert(node);
        let join = match &since {
            None => json!({"type":"join","room":room}),
            Some((epoch, seq)) => {
                json!({"type":"join","room":room,"since":{"epoch":epoch,"seq":seq}})
            }
        };
        if !send(&mut ws, join).await {
            ends.push(End::Dropped);
            continue;
        }
        let end = loop {
            let done =
                matches!((*total.borrow(), &since), (Some(t), Some((_, last))) if *last >= t);
            if done {
                let _ = ws.close(None).await;
                return (seen, nodes, ends);
            }
            let next = tokio::select! {
                next = timeout(PATIENCE, ws.next()) => next,
                _ = total.changed() => continue,
            };
            let frame = match next {
                Err(_) => panic!("reader heard nothing for {PATIENCE:?}"),
                Ok(None) | Ok(Some(Err(_))) => break End::Dropped,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    break End::Close(frame.map_or(1005, |f| f.code.into()));
                }
                Ok(Some(Ok(Message::Text(text)))) => {
                    ServerFrame::decode(&text).expect("server frame")
                }
                Ok(Some(Ok(_))) => continue,
            };
            match frame {
                ServerFrame::Joined { epoch, seq, recovered, .. } => match &since {
                    None => {
                        assert_eq!(seq, 0, "readers join before the first message");
                        since = Some((epoch, 0));
                        let _ = joined.send(());
                    }
                    Some((known, _)) => {
                        assert!(recovered, "resume with since must recover");
                        assert_eq!(&epoch, known, "same epoch across the restart");
                    }
                },
                ServerFrame::Message { seq, epoch, .. } => {
                    let last = since.as_ref().map_or(0, |(_, s)| *s);
                    assert_eq!(seq, last + 1, "gap-free, duplicate-free sequence");
                    seen.push(seq);
                    since = Some((epoch, seq));
                }
                _ => {}
            }
        };
        ends.push(end);
    }
}

/// Sends `id` until it is acknowledged, reconnecting through the balancer as
/// needed (an id repeated after a reconnect is answered as a duplicate).
async fn send_until_acked(
    url: &str,
    ws: &mut Option<Socket>,
    room: &str,
    id: &str,
    restarts: &mut usize,
) -> u64 {
    let deadline = Instant::now() + PATIENCE * 2;
    loop {
        assert!(Instant::now() < deadline, "message {id} never acknowledged");
        if ws.is_none() {
            let (mut fresh, _) = connect_via(url).await;
            if !send(&mut fresh, json!({"type":"join","room":room})).await {
                continue;
            }
            *ws = Some(fresh);
        }
        let socket = ws.as_mut().expect("connected above");
        if !send(socket, json!({"type":"send","room":room,"id":id,"text":id})).await {
            *ws = None;
            *restarts += 1;
            continue;
        }
        loop {
            match timeout(PATIENCE, socket.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => match ServerFrame::decode(&text) {
                    Ok(ServerFrame::Ack { id: acked, seq, .. }) if acked.as_str() == id => {
                        return seq;
                    }
                    Ok(ServerFrame::Error { retryable: true, .. }) => {
                        sleep(Duration::from_millis(50)).await;
                        break;
                    }
                    Ok(ServerFrame::Error { code, message, .. }) => {
                        panic!("send refused: {code:?} {message}")
                    }
                    _ => {}
                },
                Ok(Some(Ok(_))) => {}
                _ => {
                    *ws = None;
                    *restarts += 1;
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_behind_the_balancer_loses_nothing() {
    require_haproxy();
    let redis = RedisServer::start();
    let mut nodes: Vec<Node> =
        (1..=3).map(|i| start_gateway(&redis, "127.0.0.1:0", &format!("roll-{i}"))).collect();
    let balancer = Balancer::start(addrs(&nodes));
    let room = "rolling";

    let (total_tx, total_rx) = watch::channel(None);
    let (joined_tx, mut joined_rx) = mpsc::unbounded_channel();
    let mut readers = Vec::new();
    for i in 0..6 {
        let url = balancer.ws_url(&format!("reader{i}"));
        readers.push(tokio::spawn(follow(url, room, joined_tx.clone(), total_rx.clone())));
    }
    // Every reader is in the room before traffic starts (they expect seq 1 first).
    for _ in 0..6 {
        timeout(PATIENCE, joined_rx.recv()).await.expect("readers join").expect("reader alive");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let sender_url = balancer.ws_url("sender");
    let sender = tokio::spawn(async move {
        let (mut ws, mut restarts, mut sent) = (None, 0usize, 0u64);
        // Steady traffic until the restarts are done, then a short tail.
        let mut tail = 20;
        while tail > 0 {
            if *stop_rx.borrow() {
                tail -= 1;
            }
            sent += 1;
            let seq =
                send_until_acked(&sender_url, &mut ws, room, &format!("m{sent}"), &mut restarts)
                    .await;
            assert_eq!(seq, sent, "one sender: ack seq = its count");
            // ~15 messages a second: steady, and under the per-connection rate limit.
            sleep(Duration::from_millis(60)).await;
        }
        (sent, restarts)
    });

    sleep(Duration::from_millis(500)).await;
    for (i, node) in nodes.iter_mut().enumerate() {
        let listen = node.addr.to_string();
        // Process control blocks: keep it off the runtime's other worker.
        let status = tokio::task::block_in_place(|| node.terminate(Duration::from_secs(15)))
            .expect("the node drains and exits");
        assert!(status.success(), "graceful shutdown exits 0: {status}");
        *node = tokio::task::block_in_place(|| {
            start_gateway(&redis, &listen, &format!("roll-{}", i + 1))
        });
        ready(node.addr).await;
        // Let the balancer see it up (rise 2 × 200 ms) and traffic flow to it.
        sleep(Duration::from_millis(800)).await;
    }
    stop_tx.send(true).expect("sender alive");
    let (total, sender_restarts) = sender.await.expect("sender task");
    assert!(sender_restarts >= 1, "the sender itself went through a restart");
    total_tx.send(Some(total)).expect("readers alive");

    let mut served_by = BTreeSet::new();
    for reader in readers {
        let (seen, nodes, ends) =
            timeout(PATIENCE * 3, reader).await.expect("reader finished").expect("reader task");
        assert_eq!(seen, (1..=total).collect::<Vec<_>>(), "complete, gap-free, in order");
        assert!(!ends.is_empty(), "every node restarted, so every reader was moved");
        assert!(ends.iter().all(|e| *e == End::Close(1001)), "drained with 1001: {ends:?}");
        served_by.extend(nodes);
    }
    assert_eq!(served_by, ["roll-1", "roll-2", "roll-3"].map(String::from).into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_script_starts_a_cluster_and_stops_it() {
    require_haproxy();
    // Held together while choosing, so the kernel cannot hand out one port twice.
    let listeners: [TcpListener; 6] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("free port"));
    let [lb, g1, g2, g3, redis, stats] =
        std::array::from_fn(|i| listeners[i].local_addr().expect("bound").port());
    drop(listeners);
    let dir = std::env::temp_dir().join(format!("palaver-local-cluster-{lb}"));
    let mut script = Command::new("bash")
        .arg(repo_path("deploy/local-cluster.sh"))
        .env("PALAVER_BIN", binary())
        .env("LB_PORT", lb.to_string())
        .env("GATEWAY_PORTS", format!("{g1} {g2} {g3}"))
        .env("REDIS_PORT", redis.to_string())
        .env("STATS_PORT", stats.to_string())
        .env("CLUSTER_DIR", &dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run deploy/local-cluster.sh");
    let stdout = script.stdout.take().expect("piped stdout");
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("script output");
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C stops everything") {
                return banner;
            }
        }
        panic!("the script ended before the cluster was up:\n{banner}");
    });
    let banner = timeout(Duration::from_secs(60), banner)
        .await
        .expect("cluster up in time")
        .expect("banner");
    assert!(banner.contains(&format!("http://127.0.0.1:{lb}")), "{banner}");

    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(WsClient::connect(&format!("ws://127.0.0.1:{lb}/ws?name=s{i}")).await);
    }
    let landed: BTreeSet<String> = clients.iter().map(welcome_node).collect();
    assert_eq!(landed, ["local-1", "local-2", "local-3"].map(String::from).into());
    clients[0].join("lobby").await;
    clients[1].join("lobby").await;
    clients[0].say("lobby", "hello", "over the balancer").await;
    assert_eq!(clients[1].messages("lobby", 1).await[0].1, "over the balancer");

    // SIGTERM: gateways drain (1001), then everything stops.
    palaver_tests::node::signal(script.id(), "TERM");
    for client in &mut clients {
        assert_eq!(client.ended(PATIENCE).await, palaver_tests::client::Ended::Closed(1001));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while script.try_wait().expect("script status").is_none() {
        assert!(Instant::now() < deadline, "the script did not stop");
        sleep(Duration::from_millis(50)).await;
    }
    for port in [lb, g1, g2, g3, redis] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still open after the script stopped"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
