//! Node-wide state shared by every connection.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::extract::FromRef;
use palaver_broker::{RedisBroker, broker::SharedBroker};
use palaver_hub::{ClientConfig, Hub};
use palaver_protocol::Limits;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    directory::Reporter,
    metered_broker::MeteredBroker,
    metrics::{ConnectionStats, Metrics, Scrape},
    registry::Registry,
    security::Security,
};

/// Everything a connection needs from its node. One per process, in an `Arc`.
pub(crate) struct Node {
    /// The node's configuration.
    pub(crate) config: Config,
    /// This node's id.
    pub(crate) node_id: String,
    /// Local rooms and fan-out.
    pub(crate) hub: Arc<Hub>,
    /// Sequencing, history, presence and the bus.
    pub(crate) broker: SharedBroker,
    /// The Redis broker when clustered (its stats feed metrics).
    pub(crate) redis: Option<Arc<RedisBroker>>,
    /// Validation limits derived from the config.
    pub(crate) limits: Limits,
    /// Per-client queue bounds derived from the config.
    pub(crate) client_config: ClientConfig,
    /// Cancelled once, when the node starts shutting down.
    pub(crate) shutdown: CancellationToken,
    /// Owns every connection task, so shutdown can wait for them.
    pub(crate) connections: TaskTracker,
    /// Connection counters.
    pub(crate) stats: Arc<ConnectionStats>,
    /// Counters and histograms served at `/metrics` (with `stats` and the hub's).
    pub(crate) metrics: Arc<Metrics>,
    /// Auth, private rooms, origins and rate limits, from the config.
    pub(crate) security: Security,
    /// Open connections by user (for the server API's disconnect).
    pub(crate) registry: Arc<Registry>,
    accepting: AtomicBool,
}

/// The broker the config asks for: Redis when `--redis-url` or `--redis-cluster` is set,
/// else memory.
pub(crate) struct Backend {
    /// The broker every connection uses.
    pub(crate) broker: SharedBroker,
    /// The Redis broker itself, when clustered (for its stats).
    pub(crate) redis: Option<Arc<RedisBroker>>,
}

impl Node {
    /// Builds the node state.
    pub(crate) fn new(
        config: Config,
        node_id: String,
        hub: Arc<Hub>,
        registry: Arc<Registry>,
        backend: Backend,
    ) -> Self {
        let limits = Limits { max_text_chars: config.max_text, ..Limits::default() };
        let client_config =
            ClientConfig { queue_frames: config.queue_frames, queue_bytes: config.queue_bytes };
        let metrics = Arc::new(Metrics::default());
        let security = Security::from_config(&config);
        Node {
            config,
            node_id,
            hub,
            broker: MeteredBroker::wrap(backend.broker, metrics.clone()),
            redis: backend.redis,
            limits,
            client_config,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            stats: Arc::default(),
            metrics,
            security,
            registry,
            accepting: AtomicBool::new(true),
        }
    }

    /// Ready for new traffic: not shutting down and the broker is reachable.
    pub(crate) fn is_ready(&self) -> bool {
        self.accepting.load(Ordering::Acquire) && self.broker.is_ready()
    }

    /// What the directory reporter reads.
    pub(crate) fn reporter(&self) -> Reporter {
        Reporter {
            node_id: self.node_id.clone(),
            stats: self.stats.clone(),
            hub: self.hub.clone(),
            broker: self.broker.clone(),
        }
    }

    /// Starts shutdown: readiness goes false first, then every task is told.
    pub(crate) fn begin_shutdown(&self) {
        self.accepting.store(false, Ordering::Release);
        self.shutdown.cancel();
    }
}

/// `/metrics` reads only its counters and a few states, not the whole node.
impl FromRef<Arc<Node>> for Scrape {
    fn from_ref(app: &Arc<Node>) -> Scrape {
        Scrape {
            node_id: app.node_id.clone(),
            ready: app.is_ready(),
            metrics: app.metrics.clone(),
            stats: app.stats.clone(),
            hub: app.hub.clone(),
            broker: app.broker.clone(),
            redis: app.redis.clone(),
        }
    }
}
