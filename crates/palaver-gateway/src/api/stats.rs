//! `GET /api/v1/stats`: connections and rooms per node and cluster-wide.
//!
//! Each node reports its numbers to the broker every
//! [`REPORT_EVERY`](crate::directory::REPORT_EVERY); this node's own entry is replaced by its live
//! numbers, so a single node is always exact and others are at most one
//! report old.

use axum::{Json, extract::State};
use palaver_broker::NodeReport;
use serde::Serialize;

use super::{error::ApiError, state::Api};
use crate::directory;

/// The cluster's totals.
#[derive(Debug, Serialize)]
pub(crate) struct Totals {
    /// Live nodes.
    nodes: u64,
    /// WebSocket connections on all of them.
    connections: u64,
    /// Distinct rooms with members on some node.
    rooms: u64,
}

/// The stats answer.
#[derive(Debug, Serialize)]
pub(crate) struct StatsReply {
    /// The node that answered.
    node: String,
    cluster: Totals,
    /// Every live node's latest report, by node id.
    nodes: Vec<NodeReport>,
}

/// `GET /api/v1/stats`.
pub(crate) async fn stats(State(app): State<Api>) -> Result<Json<StatsReply>, ApiError> {
    let cluster = app.broker.nodes().await?;
    let mut nodes = cluster.nodes;
    let local = directory::local_report(&app.reporter);
    nodes.retain(|n| n.node != local.node);
    nodes.push(local);
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let cluster = Totals {
        nodes: nodes.len() as u64,
        connections: nodes.iter().map(|n| n.connections).sum(),
        rooms: cluster.rooms,
    };
    Ok(Json(StatsReply { node: app.reporter.node_id.clone(), cluster, nodes }))
}
