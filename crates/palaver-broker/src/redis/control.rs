//! The node-control channel: orders for every node (disconnect a user), as
//! opposed to a room's events.
//!
//! | channel | carries |
//! |---------|---------|
//! | `{prefix}:control` | JSON [`Control`] orders |
//!
//! On a Redis Cluster it is a sharded channel like the rooms' (one shard
//! carries it, instead of every node of the cluster).
//!
//! Every node's pub/sub connection subscribes to it on every (re)connect,
//! whatever rooms it serves, and the publishing node receives its own order
//! the same way as the others: one path for everyone. Delivery is Redis
//! pub/sub's: a node whose bus is down while an order is published misses it
//! (the publish reports how many nodes received it).

use std::time::Duration;

use tokio::time::timeout;
use tracing::warn;

use super::{Core, pubsub::Sink, stats::add};
use crate::{broker::BrokerError, cluster::Control};

/// The control channel's name under `prefix`.
pub(crate) fn channel(prefix: &str) -> String {
    format!("{prefix}:control")
}

/// Whether a pub/sub channel name is the control channel (no allocation:
/// this runs for every bus message).
pub(crate) fn is_control(prefix: &str, channel: &str) -> bool {
    channel.strip_prefix(prefix) == Some(":control")
}

/// Subscribes a fresh pub/sub connection to the control channel.
pub(crate) async fn subscribe(
    prefix: &str,
    sink: &Sink,
    limit: Duration,
) -> Result<(), BrokerError> {
    match timeout(limit, sink.subscribe(channel(prefix))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(BrokerError::Unavailable(format!("subscribe control: {e}"))),
        Err(_) => Err(BrokerError::Unavailable("subscribe control timed out".into())),
    }
}

impl Core {
    /// See [`crate::Broker::control`]: `(S)PUBLISH`es the order; Redis answers
    /// how many nodes' connections received it.
    pub(crate) async fn publish_control(&self, order: &Control) -> Result<u64, BrokerError> {
        let payload = order.to_json();
        let channel = channel(&self.config.prefix);
        let publish = self.publish_command();
        let receivers: i64 = self
            .command(|mut conn| async move {
                redis::cmd(publish).arg(channel).arg(payload).query_async(&mut conn).await
            })
            .await?;
        Ok(receivers.max(0) as u64)
    }

    /// Hands one control payload to the inbox; drops (and counts) anything
    /// that is not an order this node understands.
    pub(crate) fn receive_control(&self, payload: &[u8]) {
        match serde_json::from_slice::<Control>(payload) {
            Ok(order) => self.inbox.control(order),
            Err(e) => {
                add(&self.stats.parse_errors, 1);
                warn!(error = %e, "dropped unparsable control order");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_channel_is_recognised_and_distinct_from_rooms() {
        assert!(is_control("palaver", &channel("palaver")));
        assert!(!is_control("palaver", "palaver:room:{control}"));
        assert!(!is_control("other", &channel("palaver")));
    }
}
