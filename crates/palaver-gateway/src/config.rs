//! Node configuration: one clap struct, from flags or `PALAVER_*` environment variables.

use std::{net::SocketAddr, time::Duration};

use axum::http::HeaderName;
use clap::Parser;

use crate::{
    access::RoomPatterns,
    api::keys::ApiKey,
    ratelimit::Rate,
    token::{AuthMode, PublicKey, Secret},
};

/// Configuration of one gateway node. Every flag has an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "palaver",
    version,
    about = "Palaver chat gateway node",
    after_help = "Mint an access token: palaver token --help\nCall a node's server API: palaver publish|history|disconnect --help"
)]
pub struct Config {
    /// Address to listen on (use port 0 for an ephemeral port).
    #[arg(long, env = "PALAVER_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// This node's id, shown in `welcome` and logs (default: random).
    #[arg(long, env = "PALAVER_NODE_ID")]
    pub(crate) node_id: Option<String>,

    /// Redis URL; when set, the node joins the cluster through Redis. Unset: single node, in-memory.
    #[arg(long, env = "PALAVER_REDIS_URL", conflicts_with = "redis_cluster")]
    pub(crate) redis_url: Option<String>,

    /// Redis Cluster instead of one Redis: comma-separated URLs of one or more
    /// of its nodes (seeds), e.g. `redis://10.0.0.1:7000,redis://10.0.0.2:7000`.
    #[arg(long, env = "PALAVER_REDIS_CLUSTER")]
    pub(crate) redis_cluster: Option<String>,

    /// Prefix of every Redis key and channel, to share one Redis between clusters.
    #[arg(long, env = "PALAVER_REDIS_PREFIX", default_value = "palaver")]
    pub(crate) redis_prefix: String,

    /// Messages of history kept per room.
    #[arg(long, env = "PALAVER_HISTORY_SIZE", default_value_t = 1000)]
    pub(crate) history_size: usize,

    /// Idle rooms' history expires after this long (Redis backend).
    #[arg(long, env = "PALAVER_HISTORY_TTL", default_value = "7days", value_parser = humantime::parse_duration)]
    pub(crate) history_ttl: Duration,

    /// Presence entries of a node that stopped refreshing them expire after this long (Redis backend).
    #[arg(long, env = "PALAVER_PRESENCE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) presence_ttl: Duration,

    /// How long a publish may wait for others to share its Redis call (Redis
    /// backend; 0: never wait, a lone publish goes at once). Batches cut the
    /// per-message cost in redis-server and on the gateway, for this much
    /// added latency at most.
    #[arg(long, env = "PALAVER_PUBLISH_LINGER", default_value = "0ms", value_parser = humantime::parse_duration)]
    pub(crate) publish_linger: Duration,

    /// Frames a client's send queue holds before the client is evicted as a slow consumer.
    #[arg(long, env = "PALAVER_QUEUE_FRAMES", default_value_t = 256)]
    pub(crate) queue_frames: usize,

    /// Bytes a client's send queue holds before the client is evicted as a slow consumer.
    #[arg(long, env = "PALAVER_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub(crate) queue_bytes: usize,

    /// Interval between server pings.
    #[arg(long, env = "PALAVER_PING_INTERVAL", default_value = "25s", value_parser = humantime::parse_duration)]
    pub(crate) ping_interval: Duration,

    /// A client silent (no frame, not even a pong) for this long is closed with 4000.
    #[arg(long, env = "PALAVER_READ_DEADLINE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) read_deadline: Duration,

    /// A write (or flush) to a client taking longer than this closes the connection.
    #[arg(long, env = "PALAVER_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) write_timeout: Duration,

    /// How long a client's write task waits after the first queued frame
    /// before writing, to send what arrives meanwhile in the same syscall.
    /// 0 writes at once; a few ms cut CPU per delivery in busy rooms.
    #[arg(long, env = "PALAVER_WRITE_DELAY", default_value = "0ms", value_parser = humantime::parse_duration)]
    pub(crate) write_delay: Duration,

    /// Largest frame a client may send, in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "PALAVER_MAX_FRAME", default_value_t = 16 * 1024)]
    pub(crate) max_frame: usize,

    /// Longest message text, in characters.
    #[arg(long, env = "PALAVER_MAX_TEXT", default_value_t = 4000)]
    pub(crate) max_text: usize,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "PALAVER_MAX_ROOMS", default_value_t = 64)]
    pub(crate) max_rooms: usize,

    /// Local members one room may hold on this node.
    #[arg(long, env = "PALAVER_MAX_ROOM_MEMBERS", default_value_t = 100_000)]
    pub(crate) max_room_members: usize,

    /// Rooms with more members than this (on this node, or cluster-wide as
    /// last counted) get presence changes coalesced into one bounded
    /// `presence_batch` per second instead of one `presence` each.
    #[arg(long, env = "PALAVER_PRESENCE_BATCH_ABOVE", default_value_t = 200)]
    pub(crate) presence_batch_above: usize,

    /// Size of each connection's socket read buffer, in bytes (allocated by a
    /// read, released when the connection is idle; larger frames grow it
    /// temporarily).
    #[arg(long, env = "PALAVER_READ_BUFFER", default_value_t = 512)]
    pub(crate) read_buffer: usize,

    /// On shutdown, how long to wait for clients' queues to drain before exiting.
    #[arg(long, env = "PALAVER_SHUTDOWN_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) shutdown_deadline: Duration,

    /// Who may connect: `guest` (nicknames from `?name=`; tokens too when a
    /// key is set, and then guests' names get the `~` mark) or `token` (a
    /// valid token is required).
    #[arg(long, env = "PALAVER_AUTH", value_enum, default_value = "guest")]
    pub(crate) auth: AuthMode,

    /// Shared secret for HS256/384/512 tokens (prefer the environment variable).
    #[arg(long, env = "PALAVER_JWT_SECRET", hide_env_values = true)]
    pub(crate) jwt_secret: Option<Secret>,

    /// PEM public key file for RS*/PS*, ES256/384 or EdDSA tokens.
    #[arg(long, env = "PALAVER_JWT_PUBLIC_KEY", value_parser = PublicKey::load)]
    pub(crate) jwt_public_key: Option<PublicKey>,

    /// Required token audience (`aud`). Unset: tokens must not carry one.
    #[arg(long, env = "PALAVER_JWT_AUDIENCE")]
    pub(crate) jwt_audience: Option<String>,

    /// Required token issuer (`iss`). Unset: any issuer.
    #[arg(long, env = "PALAVER_JWT_ISSUER")]
    pub(crate) jwt_issuer: Option<String>,

    /// Clock skew tolerated on a token's `exp` and `nbf`; a connection closes
    /// (4001) this long after its token's `exp`.
    #[arg(long, env = "PALAVER_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) jwt_leeway: Duration,

    /// In token mode, how long a connection without `?token=` has to send its `auth` frame.
    #[arg(long, env = "PALAVER_AUTH_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) auth_timeout: Duration,

    /// Private rooms, comma-separated names or patterns (`team-*,staff`): only
    /// tokens whose `rooms` claim grants them may enter.
    #[arg(long, env = "PALAVER_PRIVATE_ROOMS", default_value = "")]
    pub(crate) private_rooms: RoomPatterns,

    /// Web origins allowed to open a WebSocket, comma-separated
    /// (`https://chat.example.com`, `https://*.example.com`, `*` for any).
    /// Same-origin pages and clients without `Origin` are always allowed.
    #[arg(long, env = "PALAVER_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub(crate) allowed_origins: Vec<String>,

    /// Open WebSocket connections per client IP (IPv6: per /64); 0 = no limit.
    #[arg(long, env = "PALAVER_MAX_CONNS_PER_IP", default_value_t = 1000)]
    pub(crate) max_conns_per_ip: u32,

    /// New WebSocket connections per client IP (`50/s`, `600/m`, `off`).
    #[arg(long, env = "PALAVER_CONN_RATE_PER_IP", default_value = "50/s")]
    pub(crate) conn_rate_per_ip: Rate,

    /// Burst of new connections per client IP above the rate.
    #[arg(long, env = "PALAVER_CONN_BURST_PER_IP", default_value_t = 200)]
    pub(crate) conn_burst_per_ip: u32,

    /// Take the client IP from this header's last address (set only behind a
    /// proxy that writes it, e.g. `X-Forwarded-For`).
    #[arg(long, env = "PALAVER_CLIENT_IP_HEADER")]
    pub(crate) client_ip_header: Option<HeaderName>,

    /// Frames per connection (`20/s`, `off`); over it: `rate_limited` errors.
    #[arg(long, env = "PALAVER_RATE_LIMIT", default_value = "20/s")]
    pub(crate) rate_limit: Rate,

    /// Burst of frames per connection above the rate.
    #[arg(long, env = "PALAVER_RATE_BURST", default_value_t = 40)]
    pub(crate) rate_burst: u32,

    /// More `rate_limited` refusals than this within `--rate-strike-window`
    /// closes the connection with 1008; 0 = never.
    #[arg(long, env = "PALAVER_RATE_STRIKES", default_value_t = 50)]
    pub(crate) rate_strikes: u32,

    /// Window over which `--rate-strikes` are counted.
    #[arg(long, env = "PALAVER_RATE_STRIKE_WINDOW", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) rate_strike_window: Duration,

    /// A client must send each HTTP request head (the upgrade included)
    /// within this long of connecting (or of its previous request).
    #[arg(long, env = "PALAVER_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) header_timeout: Duration,

    /// Server API keys (`Authorization: Bearer KEY`), comma-separated; several
    /// at once for rotation, each at least 16 characters. None: the API is off.
    #[arg(
        long = "api-key",
        env = "PALAVER_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) api_keys: Vec<ApiKey>,

    /// Serve the server API on this address instead of `--listen` (keep it
    /// off the public load balancer). Unset: on `--listen`.
    #[arg(long, env = "PALAVER_API_LISTEN")]
    pub(crate) api_listen: Option<SocketAddr>,

    /// Server API requests per key (`100/s`, `off`); over it: 429 `rate_limited`.
    #[arg(long, env = "PALAVER_API_RATE", default_value = "100/s")]
    pub(crate) api_rate: Rate,

    /// Burst of API requests per key above the rate.
    #[arg(long, env = "PALAVER_API_BURST", default_value_t = 200)]
    pub(crate) api_burst: u32,

    /// Log format: `text` or `json`. Levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "PALAVER_LOG_FORMAT", default_value = "text")]
    pub(crate) log_format: LogFormat,

    /// Which spans are exported as OpenTelemetry traces (an `EnvFilter`
    /// directive, independent of `RUST_LOG`). Export itself is switched on by
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_TRACES_EXPORTER=otlp`.
    #[arg(long, env = "PALAVER_TRACE_FILTER", default_value = "info")]
    pub(crate) trace_filter: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Config {
    /// The node id, drawing a random one if none was configured.
    pub fn resolve_node_id(&mut self) -> String {
        self.node_id
            .get_or_insert_with(|| format!("node-{:06x}", rand::random::<u32>() & 0xff_ffff))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::try_parse_from(["palaver"]).expect("defaults parse");
        assert_eq!(config.queue_frames, 256);
        assert_eq!(config.queue_bytes, 1 << 20);
        assert_eq!(config.ping_interval, Duration::from_secs(25));
        assert_eq!(config.read_deadline, Duration::from_secs(60));
        assert_eq!(config.write_timeout, Duration::from_secs(10));
        assert_eq!(config.max_frame, 16 * 1024);
        assert_eq!(config.history_size, 1000);
        assert_eq!(config.shutdown_deadline, Duration::from_secs(10));
        assert_eq!(config.auth, AuthMode::Guest);
        assert_eq!(config.auth_timeout, Duration::from_secs(5));
        assert_eq!(config.max_conns_per_ip, 1000);
        assert_eq!(config.rate_limit, "20/s".parse().expect("rate"));
        assert_eq!(config.rate_burst, 40);
        assert_eq!(config.header_timeout, Duration::from_secs(10));
        assert!(config.private_rooms.is_empty() && config.allowed_origins.is_empty());
        assert!(config.api_keys.is_empty() && config.api_listen.is_none());
        assert_eq!(config.api_rate, "100/s".parse().expect("rate"));
    }

    #[test]
    fn several_api_keys_for_rotation() {
        let config = Config::try_parse_from([
            "palaver",
            "--api-key",
            "old-key-0123456789,new-key-0123456789",
        ])
        .expect("parses");
        assert_eq!(config.api_keys.len(), 2);
        assert!(Config::try_parse_from(["palaver", "--api-key", "short"]).is_err());
    }

    #[test]
    fn durations_parse_human_units() {
        let config =
            Config::try_parse_from(["palaver", "--ping-interval", "250ms"]).expect("parses");
        assert_eq!(config.ping_interval, Duration::from_millis(250));
    }
}
