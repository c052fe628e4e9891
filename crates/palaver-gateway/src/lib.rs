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

mod access;
mod api;
mod app;
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
mod origin;
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
