//! Node configuration: one clap struct, from flags or `PALAVER_*` environment variables.

use std::{net::SocketAddr, time::Duration};

use clap::Parser;

/// Configuration of one gateway node. Every flag has an environment variable.
#[derive(Debug, Clone, Parser)]
#[command(name = "palaver", version, about = "Palaver chat gateway node")]
pub struct Config {
    /// Address to listen on (use port 0 for an ephemeral port).
    #[arg(long, env = "PALAVER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// This node's id, shown in `welcome` and logs (default: random).
    #[arg(long, env = "PALAVER_NODE_ID")]
    pub node_id: Option<String>,

    /// Redis URL; when set, the node joins the cluster through Redis. Unset: single node, in-memory.
    #[arg(long, env = "PALAVER_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel, to share one Redis between clusters.
    #[arg(long, env = "PALAVER_REDIS_PREFIX", default_value = "palaver")]
    pub redis_prefix: String,

    /// Messages of history kept per room.
    #[arg(long, env = "PALAVER_HISTORY_SIZE", default_value_t = 1000)]
    pub history_size: usize,

    /// Idle rooms' history expires after this long (Redis backend).
    #[arg(long, env = "PALAVER_HISTORY_TTL", default_value = "7days", value_parser = humantime::parse_duration)]
    pub history_ttl: Duration,

    /// Presence entries of a node that stopped refreshing them expire after this long (Redis backend).
    #[arg(long, env = "PALAVER_PRESENCE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub presence_ttl: Duration,

    /// Frames a client's send queue holds before the client is evicted as a slow consumer.
    #[arg(long, env = "PALAVER_QUEUE_FRAMES", default_value_t = 256)]
    pub queue_frames: usize,

    /// Bytes a client's send queue holds before the client is evicted as a slow consumer.
    #[arg(long, env = "PALAVER_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub queue_bytes: usize,

    /// Interval between server pings.
    #[arg(long, env = "PALAVER_PING_INTERVAL", default_value = "25s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// A client silent (no frame, not even a pong) for this long is closed with 4000.
    #[arg(long, env = "PALAVER_READ_DEADLINE", default_value = "60s", value_parser = humantime::parse_duration)]
    pub read_deadline: Duration,

    /// A write (or flush) to a client taking longer than this closes the connection.
    #[arg(long, env = "PALAVER_WRITE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Largest frame a client may send, in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "PALAVER_MAX_FRAME", default_value_t = 16 * 1024)]
    pub max_frame: usize,

    /// Longest message text, in characters.
    #[arg(long, env = "PALAVER_MAX_TEXT", default_value_t = 4000)]
    pub max_text: usize,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "PALAVER_MAX_ROOMS", default_value_t = 64)]
    pub max_rooms: usize,

    /// Local members one room may hold on this node.
    #[arg(long, env = "PALAVER_MAX_ROOM_MEMBERS", default_value_t = 100_000)]
    pub max_room_members: usize,

    /// Size of each connection's socket read buffer, in bytes (allocated per connection).
    #[arg(long, env = "PALAVER_READ_BUFFER", default_value_t = 4096)]
    pub read_buffer: usize,

    /// On shutdown, how long to wait for clients' queues to drain before exiting.
    #[arg(long, env = "PALAVER_SHUTDOWN_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_deadline: Duration,

    /// Log format: `text` or `json`. Levels come from `RUST_LOG` (default `info`).
    #[arg(long, env = "PALAVER_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
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
    }

    #[test]
    fn durations_parse_human_units() {
        let config =
            Config::try_parse_from(["palaver", "--ping-interval", "250ms"]).expect("parses");
        assert_eq!(config.ping_interval, Duration::from_millis(250));
    }
}
