//! The Palaver wire protocol, version 1: JSON text frames over WebSocket.
//!
//! This crate owns every type that crosses a socket or the cluster bus, their
//! validation, and the stable error and close codes documented in
//! `docs/protocol.md`. It does no I/O, so the hub, the broker, the gateway,
//! the load generator and the tests all agree on one definition.

pub mod client;
pub mod codes;
pub mod envelope;
pub mod limits;
pub mod message;
pub mod names;
pub mod server;

pub use client::{ClientFrame, DecodeError, HistoryQuery, check_text};
pub use codes::{CloseCode, ErrorCode};
pub use envelope::{BusEvent, Envelope};
pub use limits::Limits;
pub use message::{Epoch, Seq, Since, StoredMessage, Witness};
pub use names::{ClientMessageId, NameError, RoomName, UserName};
pub use server::{Frame, PresenceState, ServerFrame};

/// Protocol version announced in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
