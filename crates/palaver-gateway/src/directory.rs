//! This node's entry in the cluster directory: every [`REPORT_EVERY`] it
//! tells the broker how many connections and rooms it serves, so that any
//! node's `/api/v1/stats` and `/api/v1/rooms` can answer for the cluster.
//! (In Redis a report expires after three periods: a dead node drops out.)

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use palaver_broker::{NodeReport, broker::SharedBroker, util::now_ms};
use palaver_hub::Hub;
use tokio_util::sync::CancellationToken;

use crate::metrics::ConnectionStats;

/// How often a node reports; the Redis broker's `report_ttl` is three times this.
pub(crate) const REPORT_EVERY: Duration = Duration::from_secs(2);

/// What a report reads, and the broker it goes to.
#[derive(Clone)]
pub(crate) struct Reporter {
    /// This node's id.
    pub(crate) node_id: String,
    /// Open connections.
    pub(crate) stats: Arc<ConnectionStats>,
    /// Rooms with local members.
    pub(crate) hub: Arc<Hub>,
    /// Where reports go.
    pub(crate) broker: SharedBroker,
}

/// This node's numbers now.
pub(crate) fn local_report(app: &Reporter) -> NodeReport {
    NodeReport {
        node: app.node_id.clone(),
        connections: app.stats.open.load(Ordering::Relaxed),
        rooms: app.hub.room_count() as u64,
        at_ms: now_ms(),
    }
}

/// Reports every [`REPORT_EVERY`] until shutdown.
pub(crate) async fn report(app: Reporter, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Failures are the broker's to report (metrics, the bus supervisor's logs).
        if let Err(e) = app.broker.report(local_report(&app)).await {
            tracing::debug!(error = %e, "node report failed");
        }
    }
}
