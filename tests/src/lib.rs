//! Test harness: start real `palaver` nodes (and `redis-server`s) on ephemeral
//! ports and drive them with real WebSocket clients. Keeps the tests short.

pub mod api;
pub mod balancer;
pub mod browser;
pub mod client;
pub mod node;
pub mod otlp;
pub mod prometheus;
pub mod raw;
pub mod redis;
pub mod redis_cluster;

pub use api::ApiClient;
pub use client::WsClient;
pub use node::Node;
pub use redis::RedisServer;
pub use redis_cluster::RedisCluster;

/// Where the nodes' Redis is: one `redis-server` or a Redis Cluster, so one
/// test body can run against both.
pub trait RedisBackend {
    /// The node arguments that point at it.
    fn node_args(&self) -> Vec<String>;
}

impl RedisBackend for RedisServer {
    fn node_args(&self) -> Vec<String> {
        vec!["--redis-url".into(), self.url()]
    }
}

impl RedisBackend for RedisCluster {
    fn node_args(&self) -> Vec<String> {
        vec!["--redis-cluster".into(), self.seeds()]
    }
}

/// Starts `nodes` nodes `n0`, `n1`, … sharing `redis`, each with `extra` flags.
pub fn cluster(redis: &dyn RedisBackend, nodes: usize, extra: &[&str]) -> Vec<Node> {
    let backend = redis.node_args();
    (0..nodes)
        .map(|i| {
            let id = format!("n{i}");
            let mut args: Vec<&str> = backend.iter().map(String::as_str).collect();
            args.extend(["--node-id", &id]);
            args.extend_from_slice(extra);
            Node::start(&args)
        })
        .collect()
}

/// Generous bound for "eventually" in tests; never a performance assertion.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);
