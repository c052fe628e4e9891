//! What the server API asks of the cluster as a whole: each node's report
//! (connections, rooms), the index of active rooms, and control orders that
//! every node carries out (disconnect a user).
//!
//! These are value types only; each backend implements the matching
//! [`Broker`](crate::Broker) methods (`report`, `nodes`, `rooms`, `control`).

use palaver_protocol::{RoomName, UserName};
use serde::{Deserialize, Serialize};

/// Most rooms one [`Broker::rooms`](crate::Broker::rooms) page returns,
/// whatever the caller asks for: a page costs O(nodes × limit).
pub const MAX_ROOMS_PAGE: usize = 1000;

/// One node's numbers, as it last announced them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's id.
    pub node: String,
    /// WebSocket connections open on the node.
    pub connections: u64,
    /// Rooms with at least one member on the node.
    pub rooms: u64,
    /// When the node made the report (ms since the Unix epoch, its clock).
    pub at_ms: u64,
}

/// The cluster as the directory sees it: every live node's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterReport {
    /// The latest report of every live node, sorted by node id.
    pub nodes: Vec<NodeReport>,
    /// Distinct rooms with members on some node (a room served by two
    /// nodes counts once).
    pub rooms: u64,
}

/// An active room: members somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSummary {
    /// The room.
    pub room: RoomName,
    /// Users present in it across the cluster.
    pub members: u64,
}

/// A page of active rooms, ascending by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsPage {
    /// Rooms after the cursor, at most the page size.
    pub rooms: Vec<RoomSummary>,
    /// True when more rooms follow the last one.
    pub more: bool,
}

/// An order every node carries out for its own connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// Close every connection of `user` with this close code and reason.
    Disconnect {
        /// Whose connections.
        user: UserName,
        /// WebSocket close code sent to them.
        code: u16,
        /// Close reason (at most 123 bytes, the close frame's room).
        reason: String,
    },
}

impl Control {
    /// Serialises the order for the bus.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("orders always serialise")
    }
}
