//! The node: HTTP routes, the accept loop and graceful shutdown.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use anyhow::Context;
use axum::{
    Router,
    extract::{ConnectInfo, Query, State, WebSocketUpgrade},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use palaver_broker::{Broker, MemoryBroker, RedisBroker, RedisConfig};
use palaver_hub::Hub;

use crate::{
    config::Config,
    inbox::HubInbox,
    node::{Backend, Node},
    registry::Registry,
    web,
};

/// Builds the broker the config asks for.
async fn backend(
    config: &Config,
    node_id: &str,
    hub: &Arc<Hub>,
    registry: &Arc<Registry>,
) -> anyhow::Result<Backend> {
    let inbox = Arc::new(HubInbox { hub: hub.clone(), registry: registry.clone() });
    let (url, cluster) = match (&config.redis_url, &config.redis_cluster) {
        (Some(url), _) => (url, false),
        (None, Some(seeds)) => (seeds, true),
        (None, None) => {
            let broker = Arc::new(MemoryBroker::new(inbox, config.history_size));
            return Ok(Backend { broker, redis: None });
        }
    };
    let mut redis = RedisConfig::new(url.clone(), node_id);
    redis.cluster = cluster;
    redis.prefix = config.redis_prefix.clone();
    redis.history_max = config.history_size;
    redis.room_ttl = config.history_ttl;
    redis.presence_ttl = config.presence_ttl;
    redis.publish_linger = config.publish_linger;
    redis.report_ttl = crate::directory::REPORT_EVERY * 3;
    let redis = RedisBroker::connect(redis, inbox).await.context("redis broker")?;
    if !redis.is_ready() {
        tracing::warn!(cluster, "redis is not reachable yet; starting not ready");
    }
    Ok(Backend { broker: redis.clone(), redis: Some(redis) })
}

/// The HTTP routes of a node: WebSocket, probes, metrics, the web chat, and
/// the server API unless it has a listener of its own.
pub(crate) fn router(app: Arc<Node>) -> Router {
    let router = Router::new()
        .route("/ws", get(upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::scrape))
        .merge(web::routes());
    let router = match (crate::api::routes(&app), app.config.api_listen) {
        (Some(api), None) => router.merge(api),
        _ => router,
    };
    router.with_state(app)
}

/// The routes of the `--api-listen` listener: the server API and `/healthz`.
fn api_router(app: Arc<Node>) -> Option<Router> {
    let api = crate::api::routes(&app)?;
    Some(api.route("/healthz", get(|| async { "ok" })).with_state(app))
}

async fn readyz(State(app): State<Arc<Node>>) -> Response {
    if app.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn upgrade(
    State(app): State<Arc<Node>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
    ws: WebSocketUpgrade,
) -> Response {
    if app.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    // Per-IP limits, origin, token or guest name: refused here with 429/403/401/400.
    let admission = match app.security.admit(peer, &headers, &params) {
        Ok(admission) => admission,
        Err(refusal) => {
            app.metrics.upgrade_refused(refusal.metric_reason());
            return refusal.into_response();
        }
    };
    let config = &app.config;
    let tracker = app.connections.clone();
    ws.read_buffer_size(config.read_buffer)
        // Frames fed in one batch accumulate up to this size and go out in one
        // write at the flush (0 would write every frame on its own).
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(config.queue_bytes.saturating_mul(2).max(config.max_frame * 4))
        .max_message_size(config.max_frame)
        .max_frame_size(config.max_frame)
        .on_upgrade(move |socket| {
            tracker.track_future(crate::auth::serve(Box::new(socket), app, admission))
        })
}

/// Bytes of frames gathered before tungstenite writes to the socket; the write
/// task flushes after each batch anyway. Grows only under load.
const WRITE_BUFFER: usize = 16 * 1024;

/// Runs a node until SIGINT/SIGTERM, then shuts down gracefully.
pub async fn run(mut config: Config) -> anyhow::Result<()> {
    crate::security::check(&config)?;
    let node_id = config.resolve_node_id();
    let hub = Arc::new(Hub::with_presence_batch_above(config.presence_batch_above));
    let registry = Arc::new(Registry::default());
    let backend = backend(&config, &node_id, &hub, &registry).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let api_listener = match config.api_listen {
        Some(api) => Some(
            tokio::net::TcpListener::bind(api)
                .await
                .with_context(|| format!("cannot listen on {api} (--api-listen)"))?,
        ),
        None => None,
    };
    let app = Arc::new(Node::new(config, node_id.clone(), hub, registry, backend));
    // The line tests and scripts wait for; keep its shape (` api=` is added
    // only with --api-listen).
    match &api_listener {
        Some(api) => {
            let api = api.local_addr()?;
            println!("palaver listening on http://{addr} node={node_id} api=http://{api}");
            tracing::info!(%addr, %api, node = %node_id, "listening");
        }
        None => {
            println!("palaver listening on http://{addr} node={node_id}");
            tracing::info!(%addr, node = %node_id, "listening");
        }
    }

    tokio::spawn(crate::presence_flush::run(
        app.hub.clone(),
        app.broker.clone(),
        app.shutdown.clone(),
    ));
    tokio::spawn(crate::directory::report(app.reporter(), app.shutdown.clone()));
    let signal_app = app.clone();
    tokio::spawn(async move {
        crate::shutdown::signal().await;
        signal_app.begin_shutdown();
    });
    // Like `axum::serve`, plus a deadline on request heads and the peer address.
    let header_timeout = app.config.header_timeout;
    let api = api_listener.zip(api_router(app.clone())).map(|(listener, router)| {
        tokio::spawn(crate::http::serve(listener, router, header_timeout, app.shutdown.clone()))
    });
    crate::http::serve(listener, router(app.clone()), header_timeout, app.shutdown.clone()).await;
    if let Some(api) = api {
        let _ = api.await;
    }

    // Accepting has stopped; every connection was told to close with 1001.
    app.connections.close();
    let deadline = app.config.shutdown_deadline;
    if tokio::time::timeout(deadline, app.connections.wait()).await.is_err() {
        tracing::warn!(
            ?deadline,
            left = app.connections.len(),
            "shutdown deadline passed; exiting anyway"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
