//! `palaver-loadgen chat` end to end: a tiny run against a real memory-mode
//! `palaver`, and against two gateways over a real `redis-server`, checking
//! the accounting (every message delivered once, in order, to its whole room)
//! and that every process was sampled. No timing or performance assertions:
//! the latency check is set far above anything a healthy run shows.
//!
//! Needs the `palaver` binary (`cargo test --workspace` builds it) and
//! `redis-server` on the PATH.

use std::process::Command;

use palaver_tests::{Node, RedisServer};
use serde_json::Value;

const ROOMS: u64 = 20;
const MEMBERS: u64 = 2;
const RATE: u64 = 5;

/// Runs a 2 s chat workload against `nodes` and returns its JSON report.
fn chat(nodes: &[&Node], redis: Option<&RedisServer>) -> Value {
    let urls: Vec<String> = nodes.iter().map(|n| format!("ws://{}/ws", n.addr)).collect();
    let pids: Vec<String> = nodes.iter().map(|n| n.pid().to_string()).collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_palaver-loadgen"));
    cmd.args(["chat", "--json", "--quiet", "--workers", "2"])
        .args(["--rooms", &ROOMS.to_string(), "--members", &MEMBERS.to_string()])
        .args(["--rate", &RATE.to_string(), "--duration", "2s", "--grace", "10s"])
        .args(["--url", &urls.join(","), "--server-pid", &pids.join(",")])
        // Only to have the checks evaluated; 30 s is no performance bound.
        .args(["--max-loss-ratio", "0", "--max-p99", "30s"]);
    if let Some(redis) = redis {
        cmd.args(["--redis-pid", &redis_pid(redis).to_string()]);
    }
    let out = cmd.output().expect("run palaver-loadgen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "loadgen failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON report")
}

/// The pid of the redis-server listening on the test server's port.
fn redis_pid(redis: &RedisServer) -> u32 {
    let info = redis.command(&["INFO", "server"]).expect("INFO server");
    info.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
        .expect("process_id in INFO")
}

fn n(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} in {report}"))
}

/// Every accepted message reached both members of its room exactly once, in order.
fn assert_clean(report: &Value) {
    assert_eq!(report["mode"], "chat");
    assert_eq!(n(report, "/connect/ok"), ROOMS * MEMBERS, "{report}");
    assert_eq!(report.pointer("/checks/passed"), Some(&Value::Bool(true)), "{report}");
    let sent = n(report, "/messages/sent");
    assert!(sent > 0, "{report}");
    assert_eq!(n(report, "/messages/rejected"), 0, "{report}");
    assert_eq!(n(report, "/messages/expected"), sent * MEMBERS, "{report}");
    assert_eq!(n(report, "/messages/received"), sent * MEMBERS, "{report}");
    for field in [
        "lost",
        "duplicates",
        "out_of_order",
        "seq_out_of_order",
        "seq_duplicates",
        "seq_unfilled",
        "misrouted",
        "foreign",
        "rooms_with_loss",
        "rooms_with_anomalies",
        "send_errors",
    ] {
        assert_eq!(n(report, &format!("/messages/{field}")), 0, "{field}: {report}");
    }
    assert_eq!(n(report, "/latency_us/count"), sent * MEMBERS, "{report}");
}

/// Every sampled process was readable.
fn assert_sampled(report: &Value, pointer: &str, processes: usize) {
    let ps = report.pointer(pointer).and_then(Value::as_array).expect("processes");
    assert_eq!(ps.len(), processes, "{report}");
    assert!(ps.iter().all(|p| p.get("error").is_none()), "{report}");
}

#[test]
fn chat_against_a_memory_node() {
    let node = Node::start(&[]);
    let report = chat(&[&node], None);
    assert_clean(&report);
    assert_sampled(&report, "/gateways/processes", 1);
    assert!(report.get("redis").is_none(), "{report}");
}

#[test]
fn chat_across_two_gateways_over_redis() {
    let redis = RedisServer::start();
    let a = Node::start(&["--redis-url", &redis.url(), "--node-id", "a"]);
    let b = Node::start(&["--redis-url", &redis.url(), "--node-id", "b"]);
    let report = chat(&[&a, &b], Some(&redis));
    // Room r's members sit on nodes r % 2 and (r + 1) % 2: every message crossed Redis.
    assert_clean(&report);
    assert_sampled(&report, "/gateways/processes", 2);
    assert_sampled(&report, "/redis/processes", 1);
}
