//! The broker: what must be agreed across nodes.
//!
//! A [`Broker`] sequences each room's messages (gap-free per
//! [`Epoch`](palaver_protocol::Epoch)), keeps their history, tracks
//! cluster-wide presence and carries room events to every subscribed node's
//! [`Inbox`], and answers the server API's cluster-wide questions
//! ([`cluster`]: node reports, active rooms, control orders). It knows
//! nothing of sockets: the gateway hands it an inbox (the hub) and calls it
//! from connection tasks.
//!
//! Backends: [`memory::MemoryBroker`] (single node, the default) and
//! [`redis::RedisBroker`] (cluster of nodes sharing one Redis).

pub mod broker;
pub mod cluster;
pub mod memory;
pub mod redis;
pub mod util;

pub use self::redis::{RedisBroker, RedisConfig, RedisStats, RedisStatsSnapshot};
pub use broker::{
    Broker, BrokerError, Draft, Evidence, HistoryPage, Inbox, MembersPage, Published, RoomHead,
};
pub use cluster::{ClusterReport, Control, NodeReport, RoomSummary, RoomsPage};
pub use memory::MemoryBroker;
