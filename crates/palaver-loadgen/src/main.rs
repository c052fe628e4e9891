//! `palaver-loadgen`: load, latency and loss measurement for Palaver, and for
//! the seed's Go chat hub as a baseline (`--protocol raw`).
//!
//! Modes: `fanout` (throughput, end-to-end latency, loss, duplicates, order,
//! server cost), `chat` (many small rooms, every member sending: gateway and
//! Redis CPU per message, latency, loss and order per room), `idle` (server memory per idle connection), `connect-storm`
//! (connections per second and where connecting fails), and `summarize`
//! (JSON-lines reports to markdown tables). Each measuring mode prints a
//! table, or one JSON object with `--json`; a progress bar goes to stderr.
//!
//! Map of the crate:
//! - `cli`: the command line; `client`: opening one client; `swarm`:
//!   opening many with bounded concurrency.
//! - `fanout`, `chat`, `idle`, `storm`: the modes; `summary`: `summarize`.
//! - `wire`: Palaver frames written and scanned; `stamp`: the send stamp in
//!   every message text; `order`: loss/duplicate/order accounting.
//! - `latency`: sharded histograms; `counter`: sharded live counters;
//!   `clock`: the shared monotonic wall clock.
//! - `procstat`: CPU and memory from `/proc`; `report`: report pieces and
//!   formatting; `progress`: the progress bar.

mod chat;
mod cli;
mod client;
mod clock;
mod counter;
mod fanout;
mod idle;
mod latency;
mod order;
mod paced;
mod procstat;
mod progress;
mod report;
mod stamp;
mod storm;
mod summary;
mod swarm;
mod window;
mod wire;

use std::process::ExitCode;

use clap::Parser;

use crate::{
    cli::{Cli, Mode},
    progress::Progress,
};

/// Exit status when the run worked but a requested check failed.
const CHECK_FAILED: u8 = 3;
/// File descriptors kept for everything that is not a client socket.
const SPARE_FDS: u64 = 64;

/// A finished measurement, ready to print.
struct Outcome {
    json: String,
    text: String,
    passed: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Mode::Summarize(args) = &cli.mode {
        return match summary::run(&args.files) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    warn_about_fd_limit(&cli);
    let workers = cli
        .common
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&cli, workers)) {
        Ok(outcome) => {
            if cli.common.json {
                println!("{}", outcome.json);
            } else {
                print!("{}", outcome.text);
            }
            if outcome.passed { ExitCode::SUCCESS } else { ExitCode::from(CHECK_FAILED) }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen mode until it finishes or Ctrl-C.
async fn run(cli: &Cli, workers: usize) -> anyhow::Result<Outcome> {
    let progress = Progress::new(!cli.common.quiet);
    let common = &cli.common;
    let work = async {
        match &cli.mode {
            Mode::Fanout(args) => {
                let r = fanout::run(common, args, workers, &progress).await?;
                Ok(Outcome {
                    json: serde_json::to_string(&r)?,
                    text: r.render(),
                    passed: r.passed(),
                })
            }
            Mode::Chat(args) => {
                let r = chat::run(common, args, workers, &progress).await?;
                Ok(Outcome {
                    json: serde_json::to_string(&r)?,
                    text: r.render(),
                    passed: r.passed(),
                })
            }
            Mode::Idle(args) => {
                let r = idle::run(common, args, workers, &progress).await?;
                Ok(Outcome { json: serde_json::to_string(&r)?, text: r.render(), passed: true })
            }
            Mode::ConnectStorm(args) => {
                let r = storm::run(common, args, workers, &progress).await?;
                Ok(Outcome { json: serde_json::to_string(&r)?, text: r.render(), passed: true })
            }
            Mode::Summarize(_) => anyhow::bail!("summarize runs without a runtime"),
        }
    };
    tokio::select! {
        outcome = work => {
            progress.finish();
            outcome
        }
        _ = tokio::signal::ctrl_c() => {
            progress.finish();
            anyhow::bail!("interrupted")
        }
    }
}

/// Raises the soft open-file limit to the hard one, and warns when even that
/// is too low for the clients asked for.
fn warn_about_fd_limit(cli: &Cli) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            eprintln!("warning: cannot raise the open-file limit: {e}");
            return;
        }
    };
    let wanted = match &cli.mode {
        Mode::Fanout(a) => a.clients,
        Mode::Chat(a) => a.rooms * a.members,
        Mode::Idle(a) => a.clients,
        Mode::ConnectStorm(a) => a.max,
        Mode::Summarize(_) => 0,
    } as u64;
    if wanted + SPARE_FDS > limit {
        eprintln!(
            "warning: the open-file limit is {limit}; {wanted} clients need about {} (raise the hard limit: ulimit -Hn)",
            wanted + SPARE_FDS
        );
    }
}
