//! `summarize`: turns JSON-lines reports (as `scripts/bench.sh` collects
//! them) into markdown tables, one section per `bench` tag, so the table in
//! `docs/benchmarks.md` is produced, not transcribed.
//!
//! Reports are read as untyped JSON, so files from older loadgen versions
//! still print (missing fields show as `-`).

use std::{collections::BTreeSet, fmt::Write, fs, path::PathBuf};

use anyhow::Context;
use serde_json::Value;

/// Reads the files and renders every section.
pub fn run(files: &[PathBuf]) -> anyhow::Result<String> {
    let mut reports = Vec::new();
    for file in files {
        let text =
            fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", file.display(), n + 1))?;
            reports.push(value);
        }
    }
    Ok(render(&reports))
}

/// Renders reports grouped by their `bench` tag (or mode), in order of first appearance.
pub fn render(reports: &[Value]) -> String {
    let mut sections: Vec<(String, Vec<&Value>)> = Vec::new();
    for r in reports {
        let name = r
            .pointer("/tags/bench")
            .and_then(Value::as_str)
            .or_else(|| r.get("mode").and_then(Value::as_str))
            .unwrap_or("other")
            .to_owned();
        match sections.iter_mut().find(|(n, _)| *n == name) {
            Some((_, rs)) => rs.push(r),
            None => sections.push((name, vec![r])),
        }
    }
    let mut out = String::new();
    for (name, rs) in sections {
        let _ = writeln!(out, "### {name}\n");
        // One table per mode inside a section.
        for mode in ["fanout", "chat", "idle", "connect_storm"] {
            let of_mode: Vec<&Value> =
                rs.iter().copied().filter(|r| str_at(r, "/mode") == mode).collect();
            if of_mode.is_empty() {
                continue;
            }
            out.push_str(&match mode {
                "fanout" => fanout_table(&of_mode),
                "chat" => chat_table(&of_mode),
                "idle" => idle_table(&of_mode),
                _ => storm_table(&of_mode),
            });
            out.push('\n');
        }
    }
    out
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn num_at(v: &Value, pointer: &str) -> Option<f64> {
    v.pointer(pointer).and_then(Value::as_f64)
}

/// A number with `decimals`, or `-` when absent.
fn num(v: &Value, pointer: &str, decimals: usize) -> String {
    num_at(v, pointer).map_or_else(|| "-".to_owned(), |x| format!("{x:.decimals$}"))
}

/// A count with thousands separators, or `-`.
fn count(v: &Value, pointer: &str) -> String {
    num_at(v, pointer).map_or_else(|| "-".to_owned(), |x| crate::report::count(x.round() as u64))
}

/// Microseconds shown as milliseconds.
fn ms(v: &Value, pointer: &str) -> String {
    num_at(v, pointer).map_or_else(|| "-".to_owned(), |x| format!("{:.2}", x / 1000.0))
}

/// Tag keys (other than `bench`) present in any report, as leading columns.
fn tag_columns(reports: &[&Value]) -> Vec<String> {
    let mut keys = BTreeSet::new();
    for r in reports {
        if let Some(tags) = r.get("tags").and_then(Value::as_object) {
            keys.extend(tags.keys().filter(|k| *k != "bench").cloned());
        }
    }
    keys.into_iter().collect()
}

fn table(headers: &[String], rows: &[Vec<String>]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    let _ = writeln!(out, "|{}", headers.iter().map(|_| "---|").collect::<String>());
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

fn with_tags(tags: &[String], r: &Value, mut rest: Vec<String>) -> Vec<String> {
    let mut row: Vec<String> = tags
        .iter()
        .map(|k| r.pointer(&format!("/tags/{k}")).and_then(Value::as_str).unwrap_or("-").to_owned())
        .collect();
    row.append(&mut rest);
    row
}

fn headers(tags: &[String], rest: &[&str]) -> Vec<String> {
    tags.iter().cloned().chain(rest.iter().map(|s| (*s).to_owned())).collect()
}

fn fanout_table(reports: &[&Value]) -> String {
    let tags = tag_columns(reports);
    let heads = headers(
        &tags,
        &[
            "clients",
            "senders x rate",
            "target deliveries/s",
            "delivered/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "lost",
            "dup/ooo",
            "server CPU-s per M",
            "server cores",
            "loadgen cores",
            "check",
        ],
    );
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let target = num_at(r, "/messages/target_rate").unwrap_or(0.0)
                * num_at(r, "/connect/ok").unwrap_or(0.0)
                / num_at(r, "/config/rooms").unwrap_or(1.0).max(1.0);
            let server_cores: f64 = r
                .pointer("/servers/processes")
                .and_then(Value::as_array)
                .map_or(0.0, |ps| ps.iter().filter_map(|p| num_at(p, "/cpu_cores")).sum());
            let check = match r.pointer("/checks/passed").and_then(Value::as_bool) {
                Some(true) => "pass",
                Some(false) => "FAIL",
                None => "-",
            };
            with_tags(
                &tags,
                r,
                vec![
                    count(r, "/config/clients"),
                    format!(
                        "{} x {}",
                        num(r, "/config/senders", 0),
                        num_at(r, "/config/rate_per_sender").map_or("-".into(), |x| x.to_string())
                    ),
                    crate::report::count(target.round() as u64),
                    count(r, "/messages/delivered_per_sec"),
                    ms(r, "/latency_us/p50"),
                    ms(r, "/latency_us/p99"),
                    ms(r, "/latency_us/p999"),
                    ms(r, "/latency_us/max"),
                    count(r, "/messages/lost"),
                    format!(
                        "{}/{}",
                        count(r, "/messages/duplicates"),
                        count(r, "/messages/out_of_order")
                    ),
                    num(r, "/servers/cpu_secs_per_million_deliveries", 3),
                    if r.pointer("/servers").is_some() {
                        format!("{server_cores:.2}")
                    } else {
                        "-".into()
                    },
                    num(r, "/loadgen/cpu_cores", 2),
                    check.to_owned(),
                ],
            )
        })
        .collect();
    let mut out = table(&heads, &rows);
    // The capacity answer: the best passing run per combination of tags.
    let mut best: Vec<(Vec<String>, f64)> = Vec::new();
    for r in reports.iter().filter(|r| r.pointer("/checks/passed") == Some(&Value::Bool(true))) {
        let key = with_tags(&tags, r, Vec::new());
        let rate = num_at(r, "/messages/delivered_per_sec").unwrap_or(0.0);
        match best.iter_mut().find(|(k, _)| *k == key) {
            Some((_, b)) => *b = b.max(rate),
            None => best.push((key, rate)),
        }
    }
    for (key, rate) in best {
        let label = if key.is_empty() { "all".to_owned() } else { key.join(", ") };
        let _ = writeln!(
            out,
            "\nHighest passing delivered/s ({label}): {}",
            crate::report::count(rate.round() as u64)
        );
    }
    out
}

/// `pass`, `FAIL` or `-` from a report's checks.
fn verdict(r: &Value) -> String {
    match r.pointer("/checks/passed").and_then(Value::as_bool) {
        Some(true) => "pass",
        Some(false) => "FAIL",
        None => "-",
    }
    .to_owned()
}

fn chat_table(reports: &[&Value]) -> String {
    let tags = tag_columns(reports);
    let heads = headers(
        &tags,
        &[
            "nodes",
            "rooms x members",
            "offered msgs/s",
            "sent msgs/s",
            "delivered msgs/s",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "lost",
            "dup/ooo/misrouted",
            "gateway µs/msg",
            "redis µs/msg",
            "gateway cores",
            "redis cores",
            "loadgen cores",
            "send lag p99 ms",
            "check",
        ],
    );
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let nodes = r.pointer("/config/urls").and_then(Value::as_array).map(Vec::len);
            let anomalies = ["duplicates", "out_of_order", "seq_out_of_order", "seq_duplicates"]
                .iter()
                .map(|f| num_at(r, &format!("/messages/{f}")).unwrap_or(0.0))
                .sum::<f64>();
            with_tags(
                &tags,
                r,
                vec![
                    nodes.map_or("-".into(), |n| n.to_string()),
                    format!("{} x {}", count(r, "/config/rooms"), num(r, "/config/members", 0)),
                    count(r, "/messages/target_rate"),
                    count(r, "/messages/send_rate"),
                    count(r, "/messages/delivered_msgs_per_sec"),
                    count(r, "/messages/deliveries_per_sec"),
                    ms(r, "/latency_us/p50"),
                    ms(r, "/latency_us/p99"),
                    ms(r, "/latency_us/max"),
                    count(r, "/messages/lost"),
                    format!(
                        "{}/{}",
                        crate::report::count(anomalies.round() as u64),
                        count(r, "/messages/misrouted")
                    ),
                    num(r, "/gateways/cpu_us_per_message", 1),
                    num(r, "/redis/cpu_us_per_message", 1),
                    num(r, "/gateways/cpu_cores", 2),
                    num(r, "/redis/cpu_cores", 2),
                    num(r, "/loadgen/cpu_cores", 2),
                    ms(r, "/send_lag_us/p99"),
                    verdict(r),
                ],
            )
        })
        .collect();
    let mut out = table(&heads, &rows);
    // The knee: the highest passing offered rate per combination of tags other than the rate.
    let knee_tags: Vec<String> = tags.iter().filter(|t| *t != "rate").cloned().collect();
    let mut best: Vec<(Vec<String>, f64, f64)> = Vec::new();
    for r in reports.iter().filter(|r| r.pointer("/checks/passed") == Some(&Value::Bool(true))) {
        let key = with_tags(&knee_tags, r, Vec::new());
        let rate = num_at(r, "/messages/delivered_msgs_per_sec").unwrap_or(0.0);
        let p99 = num_at(r, "/latency_us/p99").unwrap_or(0.0);
        match best.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, b, p)) if rate > *b => (*b, *p) = (rate, p99),
            Some(_) => {}
            None => best.push((key, rate, p99)),
        }
    }
    for (key, rate, p99) in best {
        let label = if key.is_empty() { "all".to_owned() } else { key.join(", ") };
        let _ = writeln!(
            out,
            "\nKnee ({label}): {} msgs/s delivered with p99 {:.2} ms and no loss",
            crate::report::count(rate.round() as u64),
            p99 / 1000.0
        );
    }
    out
}

fn idle_table(reports: &[&Value]) -> String {
    let tags = tag_columns(reports);
    let heads = headers(
        &tags,
        &[
            "connections",
            "rooms",
            "server RSS before MiB",
            "server RSS after MiB",
            "per connection KiB",
            "loadgen per connection KiB",
            "settled",
            "connect + join s",
            "server CPU µs per join at 1k / 5k / 15k",
        ],
    );
    // The join windows ending at 1k, 5k and 15k ready clients (see idle's `join_cpu`).
    let join_cpu = |r: &Value| -> String {
        let Some(points) = r.pointer("/join_cpu").and_then(Value::as_array) else {
            return "-".into();
        };
        let at = |members: f64| {
            points
                .iter()
                .find(|p| num_at(p, "/members") == Some(members))
                .and_then(|p| num_at(p, "/cpu_us_per_join"))
                .map_or("-".into(), |us| format!("{us:.0}"))
        };
        format!("{} / {} / {}", at(1000.0), at(5000.0), at(15000.0))
    };
    let mib = |r: &Value, field: &str| -> String {
        let total: Option<f64> = r
            .pointer("/servers")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
            .map(|s| s.iter().filter_map(|p| num_at(p, field)).sum());
        total.map_or("-".into(), |k| format!("{:.1}", k / 1024.0))
    };
    let kib = |r: &Value, pointer: &str| {
        num_at(r, pointer).map_or("-".into(), |b| format!("{:.2}", b / 1024.0))
    };
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            with_tags(
                &tags,
                r,
                vec![
                    count(r, "/connections"),
                    count(r, "/config/rooms"),
                    mib(r, "/rss_kib_before"),
                    mib(r, "/rss_kib_after"),
                    kib(r, "/bytes_per_connection"),
                    kib(r, "/loadgen_bytes_per_connection"),
                    r.get("settled")
                        .and_then(Value::as_bool)
                        .map_or("-", |s| if s { "yes" } else { "no" })
                        .to_owned(),
                    num(r, "/connect/secs", 2),
                    join_cpu(r),
                ],
            )
        })
        .collect();
    table(&heads, &rows)
}

fn storm_table(reports: &[&Value]) -> String {
    let tags = tag_columns(reports);
    let heads = headers(
        &tags,
        &["opened", "attempted", "connections/s", "peak/s", "p99 ms", "stopped", "first failure"],
    );
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            with_tags(
                &tags,
                r,
                vec![
                    count(r, "/opened"),
                    count(r, "/attempted"),
                    count(r, "/per_sec"),
                    count(r, "/peak_per_sec"),
                    num(r, "/latency_ms/p99", 1),
                    str_at(r, "/stopped_because").to_owned(),
                    r.pointer("/first_failure/kind")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_owned(),
                ],
            )
        })
        .collect();
    table(&heads, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fanout(server: &str, rate: f64, delivered: f64, passed: bool) -> Value {
        json!({
            "mode": "fanout",
            "tags": {"bench": "capacity", "server": server},
            "config": {"clients": 1000, "rooms": 1, "senders": 10, "rate_per_sender": rate},
            "connect": {"ok": 1000},
            "messages": {"target_rate": 10.0 * rate, "delivered_per_sec": delivered, "lost": 0,
                         "duplicates": 0, "out_of_order": 0},
            "latency_us": {"p50": 500.0, "p99": 2500.0, "p999": 4000.0, "max": 9000.0},
            "servers": {"processes": [{"cpu_cores": 0.5}], "cpu_secs_per_million_deliveries": 1.25},
            "loadgen": {"cpu_cores": 0.4},
            "checks": {"passed": passed, "failures": []}
        })
    }

    #[test]
    fn fanout_section_with_best_passing_rate() {
        let reports = vec![
            fanout("palaver", 10.0, 100_000.0, true),
            fanout("palaver", 20.0, 199_000.0, true),
            fanout("palaver", 50.0, 300_000.0, false),
            fanout("seed-go", 10.0, 99_000.0, true),
        ];
        let out = render(&reports);
        assert!(out.starts_with("### capacity\n"), "{out}");
        assert!(out.contains("| server | clients | senders x rate |"), "{out}");
        assert!(
            out.contains("| palaver | 1,000 | 10 x 20 | 200,000 | 199,000 | 0.50 | 2.50 |"),
            "{out}"
        );
        assert!(out.contains("| 1.250 | 0.50 | 0.40 | FAIL |"), "{out}");
        assert!(out.contains("Highest passing delivered/s (palaver): 199,000"), "{out}");
        assert!(out.contains("Highest passing delivered/s (seed-go): 99,000"), "{out}");
    }

    fn chat(setup: &str, rate: u64, delivered: f64, p99: f64, passed: bool) -> Value {
        json!({
            "mode": "chat",
            "tags": {"bench": "chat", "setup": setup, "rate": rate.to_string()},
            "config": {"urls": ["a", "b"], "rooms": 1000, "members": 2},
            "messages": {"target_rate": rate, "send_rate": rate, "delivered_msgs_per_sec": delivered,
                         "deliveries_per_sec": 2.0 * delivered, "lost": 0, "duplicates": 0,
                         "out_of_order": 0, "seq_out_of_order": 1, "seq_duplicates": 0, "misrouted": 0},
            "latency_us": {"p50": 500.0, "p99": p99, "max": 9000.0},
            "gateways": {"cpu_us_per_message": 92.25, "cpu_cores": 0.37},
            "redis": {"cpu_us_per_message": 110.0, "cpu_cores": 0.44},
            "loadgen": {"cpu_cores": 0.4},
            "send_lag_us": {"p99": 2000.0},
            "checks": {"passed": passed, "failures": []}
        })
    }

    #[test]
    fn chat_section_with_knee() {
        let reports = vec![
            chat("redis-3", 4000, 3990.0, 8000.0, true),
            chat("redis-3", 10000, 9950.0, 40000.0, true),
            chat("redis-3", 20000, 15000.0, 900000.0, false),
            chat("memory", 4000, 4000.0, 5000.0, true),
        ];
        let out = render(&reports);
        assert!(out.starts_with("### chat\n"), "{out}");
        assert!(out.contains("| rate | setup | nodes | rooms x members |"), "{out}");
        assert!(
            out.contains("| 4000 | redis-3 | 2 | 1,000 x 2 | 4,000 | 4,000 | 3,990 | 7,980 | 0.50 | 8.00 | 9.00 | 0 | 1/0 | 92.2 | 110.0 | 0.37 | 0.44 | 0.40 | 2.00 | pass |"),
            "{out}"
        );
        assert!(out.contains("Knee (redis-3): 9,950 msgs/s delivered with p99 40.00 ms"), "{out}");
        assert!(out.contains("Knee (memory): 4,000 msgs/s"), "{out}");
    }

    #[test]
    fn idle_and_storm_sections() {
        let idle = json!({
            "mode": "idle", "tags": {"bench": "idle", "server": "palaver"},
            "config": {"rooms": 10}, "connections": 1000, "settled": true,
            "servers": [{"rss_kib_before": 10240, "rss_kib_after": 20480}],
            "bytes_per_connection": 10485.76, "loadgen_bytes_per_connection": 20480.0,
            "connect": {"secs": 1.5},
            "join_cpu": [{"members": 1000, "cpu_us_per_join": 80.4}, {"members": 5000, "cpu_us_per_join": 90.0}]
        });
        let storm = json!({
            "mode": "connect_storm", "tags": {}, "opened": 5000, "attempted": 5001,
            "per_sec": 2500.4, "peak_per_sec": 2700, "latency_ms": {"p99": 3.25},
            "stopped_because": "failures", "first_failure": {"kind": "tcp: ECONNREFUSED"}
        });
        let out = render(&[idle, storm]);
        assert!(out.contains("### idle\n"), "{out}");
        assert!(
            out.contains(
                "| palaver | 1,000 | 10 | 10.0 | 20.0 | 10.24 | 20.00 | yes | 1.50 | 80 / 90 / - |"
            ),
            "{out}"
        );
        assert!(out.contains("### connect_storm\n"), "{out}");
        assert!(
            out.contains("| 5,000 | 5,001 | 2,500 | 2,700 | 3.2 | failures | tcp: ECONNREFUSED |"),
            "{out}"
        );
    }
}
