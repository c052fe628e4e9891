//! The broker: what must be agreed across nodes.
//!
//! A [`Broker`] sequences each room's messages (gap-free per
//! [`Epoch`](palaver_protocol::Epoch)), keeps their history, tracks
//! cluster-wide presence and carries room events to every subscribed node's
//! [`Inbox`]. It knows nothing of sockets: the gateway hands it
//! an inbox (the hub) and calls it from connection tasks.
//!
//! Backends: [`memory::MemoryBroker`] (single node, the default) and
//! [`redis::RedisBroker`] (cluster of nodes sharing one Redis).

pub mod broker;
pub mod memory;
pub mod redis;
pub mod util;

pub use self::redis::{RedisBroker, RedisConfig, RedisStats, RedisStatsSnapshot};
pub use broker::{Broker, BrokerError, Draft, Evidence, HistoryPage, Inbox, Published, RoomHead};
pub use memory::MemoryBroker;
