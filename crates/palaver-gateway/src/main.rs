//! `palaver`: one Palaver gateway node (`palaver token ...` mints an access
//! token; `palaver publish|history|disconnect ...` call a node's server API).

use clap::Parser;
use palaver_gateway::{Config, telemetry::Telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if palaver_gateway::mint::requested() {
        return palaver_gateway::mint::run();
    }
    if palaver_gateway::cli::requested() {
        return palaver_gateway::cli::run().await;
    }
    let mut config = Config::parse();
    // Resolved here so logs, traces and the node agree on one id.
    let node_id = config.resolve_node_id();
    let telemetry = Telemetry::init(&config, &node_id)?;
    let result = palaver_gateway::run(config).await;
    // Flush the last spans (the shutdown's) before the process goes.
    telemetry.shutdown();
    result
}
