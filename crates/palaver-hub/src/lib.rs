//! The node-local hub: which local clients are in which room, and fan-out.
//!
//! The hub receives every event of the rooms this node is subscribed to (from
//! the broker, through [`Hub::deliver`]) and hands it to each local member's
//! bounded queue. It encodes a message once per node and shares the bytes;
//! it never waits on a client: a full queue evicts that client (close 1013)
//! and nobody else notices. Rooms are spread over independently locked shards,
//! so there is no global lock and no single actor on the fan-out path.
//!
//! Ordering and recovery rest on one mechanism, the member's [`Cursor`]: a
//! member is *live* only while the room's messages reach it gap-free; any gap,
//! epoch change or bus outage puts it back to *syncing*, and the connection
//! catches it up from the broker's history before it goes live again.

pub mod client;
pub mod hub;
pub mod membership;
pub mod stats;

pub use client::{Client, ClientConfig, Outbox};
pub use hub::{
    Hub, JoinRefused, PRESENCE_AT_ONCE, PRESENCE_DELIVERIES_PER_FLUSH, PRESENCE_INTERVAL,
    PresenceFlush, presence_period,
};
pub use membership::{Cursor, Membership, SyncState};
pub use stats::HubStats;
