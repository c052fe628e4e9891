//! The Palaver gateway node: the `palaver` binary's library.
//!
//! It wires the pieces: [`config`] (one clap struct), the broker (memory or
//! Redis) and the hub through [`inbox`], the HTTP and WebSocket routes in
//! [`server`], and one [`connection`] (a read task and a write task) per
//! socket, whose requests a [`session`] handles. [`metrics`] serves
//! `/metrics` (the broker is wrapped in a [`metered_broker`]) and
//! [`telemetry`] sets up logs and OpenTelemetry traces. [`security`] admits
//! connections ([`auth`], [`origin`], [`ratelimit`]) and [`access`] keeps
//! private rooms private. [`api`] is the server API for applications'
//! backends (publish, history, members, rooms, disconnect, stats), with
//! [`registry`] (connections by user) and [`directory`] (this node's report
//! to the cluster) behind it; [`cli`] is its command-line client.

pub mod access;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod connection;
pub mod directory;
pub mod http;
pub mod identity;
pub mod inbox;
pub mod metered_broker;
pub mod metrics;
pub mod mint;
pub mod origin;
pub mod ratelimit;
pub mod registry;
pub mod security;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod socket;
pub mod telemetry;
pub mod token;
pub mod web;

pub use config::Config;
pub use server::run;
