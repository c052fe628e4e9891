//! The Palaver gateway node: the `palaver` binary's library.
//!
//! It wires the pieces: [`config`] (one clap struct), the broker (memory or
//! Redis) and the hub through [`inbox`], the HTTP and WebSocket routes in
//! [`server`], and one [`connection`] (a read task and a write task) per
//! socket, whose requests a [`session`] handles.

pub mod app;
pub mod config;
pub mod connection;
pub mod identity;
pub mod inbox;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod web;

pub use config::Config;
pub use server::run;
