//! The command line: one clap struct of options shared by every mode, and one
//! per mode.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Load, latency and loss measurement for Palaver (and the seed's chat hub).
#[derive(Debug, Parser)]
#[command(name = "palaver-loadgen", version, about, long_about = None)]
pub struct Cli {
    /// Options every mode shares.
    #[command(flatten)]
    pub common: Common,
    /// What to measure.
    #[command(subcommand)]
    pub mode: Mode,
}

/// Options every mode shares (accepted before or after the mode name).
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// WebSocket URL of a server node; repeat it (or give a comma-separated list) to spread
    /// clients round-robin over several nodes.
    #[arg(
        long = "url",
        global = true,
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:8080/ws"
    )]
    pub urls: Vec<String>,

    /// Wire protocol: `palaver` (welcome, join, send/message with seq) or `raw`
    /// (the seed's hub: every text frame is broadcast as is to everyone).
    #[arg(long, global = true, value_enum, default_value_t = Protocol::Palaver)]
    pub protocol: Protocol,

    /// Runtime worker threads (default: number of CPUs).
    #[arg(long, global = true)]
    pub workers: Option<usize>,

    /// PID of a server process to sample for RSS and CPU time; repeat (or comma-separate)
    /// for several nodes.
    #[arg(long = "server-pid", global = true, value_delimiter = ',')]
    pub server_pids: Vec<u32>,

    /// Print one JSON object on stdout instead of the table.
    #[arg(long, global = true)]
    pub json: bool,

    /// No progress bar (it is also off when stderr is not a terminal).
    #[arg(long, global = true)]
    pub quiet: bool,

    /// Connection attempts in flight at once.
    #[arg(long, global = true, default_value_t = 64)]
    pub connect_concurrency: usize,

    /// Give up on one connection (TCP, upgrade, welcome and join) after this long.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,

    /// Bind client sockets to 127.0.0.2 .. 127.0.0.(1+K), round-robin, to get past one
    /// source address's ~28k ephemeral ports. 0: automatic (one address per 10,000
    /// clients when the target is loopback, none otherwise); 1: no binding.
    #[arg(long, global = true, default_value_t = 0)]
    pub source_ips: u32,

    /// `key=value` copied into the JSON report's `tags` (for scripts and `summarize`).
    #[arg(long = "tag", global = true, value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
}

/// Which server protocol the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Palaver protocol v1.
    Palaver,
    /// The classic gorilla chat example: one room, frames broadcast verbatim.
    Raw,
}

/// The measurement to run.
#[derive(Debug, Clone, Subcommand)]
pub enum Mode {
    /// Clients in rooms, some sending at a fixed rate: throughput, latency, loss.
    Fanout(FanoutArgs),
    /// Many small rooms in which every member sends: cost per message, latency, loss.
    Chat(ChatArgs),
    /// Idle connections, each joined to a room: server memory per connection.
    Idle(IdleArgs),
    /// Open connections as fast as possible until one fails or a cap: connections/s.
    ConnectStorm(StormArgs),
    /// Print JSON-lines reports (e.g. from scripts/bench.sh) as markdown tables.
    Summarize(SummarizeArgs),
}

/// Options of `fanout`.
#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Connected clients; every one receives.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Rooms; client i joins room i % rooms (palaver only).
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Clients that also send: the first S, so they spread over rooms and URLs.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Messages per second each sender publishes.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Message text size in bytes (the stamp header is never cut, so it is a minimum of ~20-60).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// How long senders publish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// After sending stops, wait at most this long for the remaining deliveries.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Check: fail (exit status 3) if the p99 latency is above this.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_p99: Option<Duration>,
    /// Check: fail (exit status 3) if lost/expected deliveries is above this (0 = no loss).
    #[arg(long)]
    pub max_loss_ratio: Option<f64>,
    /// Check: fail (exit status 3) if senders achieved less than this fraction of the target rate.
    #[arg(long)]
    pub min_send_ratio: Option<f64>,
}

/// Options of `chat` (palaver only).
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// Rooms; room r's members are clients r x members .. r x members + members - 1.
    #[arg(long, default_value_t = 1000)]
    pub rooms: usize,
    /// Members per room; every member sends. Member m of room r connects to
    /// node (r + m) mod N, so with N > 1 the members of a room sit on different nodes.
    #[arg(long, default_value_t = 2)]
    pub members: usize,
    /// Messages per second each client sends (total offered = rooms x members x rate).
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// Message text size in bytes (the stamp header is never cut, so it is a minimum of ~20-60).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// How long clients send.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// After sending stops, wait at most this long for the remaining deliveries.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// PID of the redis-server to sample too (its CPU per message is reported).
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Check: fail (exit status 3) if the p99 latency is above this.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub max_p99: Option<Duration>,
    /// Check: fail (exit status 3) if lost/expected deliveries is above this; the
    /// check also fails on any duplicate, out-of-order or misrouted delivery.
    #[arg(long)]
    pub max_loss_ratio: Option<f64>,
    /// Check: fail (exit status 3) if clients achieved less than this fraction of the target rate.
    #[arg(long)]
    pub min_send_ratio: Option<f64>,
}

/// Options of `idle`.
#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    /// Connections to hold.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Rooms (palaver); 0: one room per 100 clients. One huge room makes every join
    /// fan a presence event and a member list out to everyone already in it.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// The server's RSS has settled when it moved less than 0.5% over this window.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub settle_window: Duration,
    /// Stop waiting for the RSS to settle after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub settle_timeout: Duration,
    /// Keep the connections open this much longer after measuring.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
}

/// Options of `connect-storm`.
#[derive(Debug, Clone, Args)]
pub struct StormArgs {
    /// Stop after this many open connections.
    #[arg(long, default_value_t = 50_000)]
    pub max: usize,
    /// Stop after this many failed attempts.
    #[arg(long, default_value_t = 1)]
    pub max_failures: usize,
    /// Stop opening connections after this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Keep the connections open this much longer after the storm.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
}

/// Options of `summarize`.
#[derive(Debug, Clone, Args)]
pub struct SummarizeArgs {
    /// JSON-lines files of reports (one `--json` report per line).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

/// Largest raw-mode text: the seed reads at most 512 bytes per message.
pub const RAW_MAX_PAYLOAD: usize = 500;

impl Cli {
    /// Rejects option combinations that cannot produce a meaningful run.
    pub fn validate(&self) -> Result<(), String> {
        if self.common.urls.is_empty() {
            return Err("give at least one --url".into());
        }
        if self.common.connect_concurrency == 0 {
            return Err("--connect-concurrency must be at least 1".into());
        }
        if self.common.workers == Some(0) {
            return Err("--workers must be at least 1".into());
        }
        match &self.mode {
            Mode::Fanout(f) => {
                if f.clients == 0 || f.rooms == 0 {
                    return Err("--clients and --rooms must be at least 1".into());
                }
                if f.senders > f.clients {
                    return Err("--senders cannot exceed --clients".into());
                }
                if !(f.rate.is_finite() && f.rate > 0.0) {
                    return Err("--rate must be a positive number".into());
                }
                if f.duration.is_zero() {
                    return Err("--duration must be positive".into());
                }
                if self.common.protocol == Protocol::Raw && f.payload > RAW_MAX_PAYLOAD {
                    return Err(format!(
                        "--payload {} is over {RAW_MAX_PAYLOAD}: the seed closes clients that send over 512 bytes",
                        f.payload
                    ));
                }
            }
            Mode::Chat(c) => {
                if self.common.protocol != Protocol::Palaver {
                    return Err("chat needs --protocol palaver (it uses rooms)".into());
                }
                if c.rooms == 0 || c.members == 0 {
                    return Err("--rooms and --members must be at least 1".into());
                }
                if !(c.rate.is_finite() && c.rate > 0.0) {
                    return Err("--rate must be a positive number".into());
                }
                if c.duration.is_zero() {
                    return Err("--duration must be positive".into());
                }
            }
            Mode::Idle(i) if i.clients == 0 => return Err("--clients must be at least 1".into()),
            Mode::ConnectStorm(s) if s.max == 0 || s.max_failures == 0 => {
                return Err("--max and --max-failures must be at least 1".into());
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        cli.validate()?;
        Ok(cli)
    }

    #[test]
    fn global_options_after_the_mode() {
        let cli = parse(&[
            "palaver-loadgen",
            "fanout",
            "--url",
            "ws://a/ws",
            "--url",
            "ws://b/ws",
            "--json",
            "--tag",
            "bench=x",
            "--rate",
            "2.5",
        ])
        .expect("valid");
        assert_eq!(cli.common.urls, vec!["ws://a/ws", "ws://b/ws"]);
        assert!(cli.common.json);
        assert_eq!(cli.common.tags, vec![("bench".to_owned(), "x".to_owned())]);
        match cli.mode {
            Mode::Fanout(f) => {
                assert_eq!(f.rate, 2.5);
                assert_eq!(f.clients, 1000);
                assert_eq!(f.grace, Duration::from_secs(5));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn rejects_bad_combinations() {
        assert!(parse(&["palaver-loadgen", "fanout", "--senders", "5", "--clients", "2"]).is_err());
        assert!(parse(&["palaver-loadgen", "fanout", "--rate", "0"]).is_err());
        assert!(
            parse(&["palaver-loadgen", "--protocol", "raw", "fanout", "--payload", "600"]).is_err()
        );
        assert!(parse(&["palaver-loadgen", "fanout", "--tag", "novalue"]).is_err());
        assert!(parse(&["palaver-loadgen", "connect-storm", "--max", "0"]).is_err());
        assert!(parse(&["palaver-loadgen", "chat", "--members", "0"]).is_err());
        assert!(parse(&["palaver-loadgen", "--protocol", "raw", "chat"]).is_err());
    }

    #[test]
    fn chat_takes_several_urls_and_pids() {
        let cli = parse(&[
            "palaver-loadgen",
            "chat",
            "--url",
            "ws://a/ws,ws://b/ws",
            "--url",
            "ws://c/ws",
            "--server-pid",
            "10,11",
            "--server-pid",
            "12",
            "--redis-pid",
            "13",
        ])
        .expect("valid");
        assert_eq!(cli.common.urls, vec!["ws://a/ws", "ws://b/ws", "ws://c/ws"]);
        assert_eq!(cli.common.server_pids, vec![10, 11, 12]);
        match cli.mode {
            Mode::Chat(c) => {
                assert_eq!((c.rooms, c.members, c.payload), (1000, 2, 100));
                assert_eq!(c.redis_pid, Some(13));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
