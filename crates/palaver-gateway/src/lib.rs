//! The Palaver gateway node: the `palaver` binary's library.
//!
//! Its modules form layers; each imports only from layers below it (the
//! test `tests/layers.rs` fails on any import cycle, and
//! `docs/architecture.md` draws the layers):
//!
//! 1. Leaves, no I/O: `config` (one clap struct) and what it names:
//!    `access` (private rooms), `origin`, `ratelimit` budgets,
//!    `identity`, `token` (JWT verification), `api::keys`; also
//!    `registry` (connections by user), `web`, `shutdown` (signals).
//! 2. `metrics` (counters; the broker is wrapped in a `metered_broker`),
//!    `telemetry` (logs and traces), `socket` (the upgraded socket and its
//!    closing handshake), `security` (the admission policy), `inbox`
//!    (broker events into the hub), `directory` (this node's report).
//! 3. `node`: the node state, built once; tasks get narrow handles to it.
//! 4. `auth` (the handshake after the upgrade), `connection` (a read task
//!    and a write task per socket), `session` (one connection's requests).
//! 5. `server` (routes, accept loop, shutdown), `http`, `api` (the
//!    server API for applications' backends); `cli` and `mint` (the
//!    binary's subcommands).

mod access;
mod api;
mod auth;
pub mod cli;
mod config;
mod connection;
mod directory;
mod http;
mod identity;
mod inbox;
mod metered_broker;
mod metrics;
pub mod mint;
mod node;
mod origin;
mod presence_flush;
mod ratelimit;
mod registry;
mod security;
mod server;
mod session;
mod shutdown;
mod socket;
pub mod telemetry;
mod token;
mod web;

pub use config::Config;
pub use server::run;
