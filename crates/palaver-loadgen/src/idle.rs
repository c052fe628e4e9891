//! `idle`: hold N idle connections (each joined to a room, nobody sending)
//! and measure what they cost the server in memory.
//!
//! The server's RSS is read before the first connection and again once it
//! has settled (moved less than 0.5% over the settle window) with every
//! connection open: `(after - before) / connections` is the memory per idle
//! connection, allocator slack included, which is what an operator pays.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use serde::Serialize;
use tokio::{
    sync::mpsc,
    time::{Instant, sleep},
};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{Common, IdleArgs, Protocol},
    client::{self, Dialer, Opened},
    procstat::{self, Pid},
    progress::Progress,
    report::{self, ConnectSummary, ProcUsage, ProcWindow},
    swarm,
};

/// Clients per room when `--rooms 0`.
const CLIENTS_PER_ROOM: usize = 100;
/// RSS sampling interval while waiting for it to settle.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Server CPU is sampled each time this many more clients are ready: the
/// CPU per join at a room size is that of the last window of joins before it.
const JOIN_WINDOW: u64 = 1000;

/// Server CPU per join over the window of joins that ended at `members` ready clients.
#[derive(Debug, Clone, Serialize)]
pub struct JoinCpu {
    /// Clients ready (connected and joined) at the end of the window.
    pub members: u64,
    /// All servers' CPU over the window divided by its joins, µs.
    pub cpu_us_per_join: f64,
}

/// Turns cumulative (ready clients, server CPU seconds) samples, starting at
/// (0, cpu before the first connection), into CPU per join per window.
pub fn join_cpu(samples: &[(u64, f64)]) -> Vec<JoinCpu> {
    samples
        .windows(2)
        .map(|w| JoinCpu {
            members: w[1].0,
            cpu_us_per_join: (w[1].1 - w[0].1).max(0.0) * 1e6 / (w[1].0 - w[0].0).max(1) as f64,
        })
        .collect()
}

/// Sum of the servers' CPU seconds so far, per thread in ns (windows of a
/// thousand joins last tens of ms: `stat`'s ticks would be most of the
/// reading), else from `stat`; 0 for one that cannot be read.
fn servers_cpu(pids: &[Pid]) -> f64 {
    let cpu =
        |p: Pid| procstat::thread_cpu_secs(p).or_else(|_| procstat::sample(p).map(|s| s.cpu_secs));
    pids.iter().filter_map(|&p| cpu(p).ok()).sum()
}

/// Memory of one server before and after the connections.
#[derive(Debug, Serialize)]
pub struct ServerMemory {
    /// Process id.
    pub pid: u32,
    /// RSS before the first connection, KiB.
    pub rss_kib_before: u64,
    /// RSS with every connection open and settled, KiB.
    pub rss_kib_after: u64,
    /// Peak RSS, KiB.
    pub hwm_kib: u64,
    /// Growth per open connection, bytes.
    pub bytes_per_connection: f64,
}

/// The `idle` report.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    mode: &'static str,
    protocol: Protocol,
    tags: BTreeMap<String, String>,
    config: IdleConfig,
    connect: ConnectSummary,
    /// Open connections when memory was measured.
    connections: u64,
    settled: bool,
    settle_secs: f64,
    servers: Vec<ServerMemory>,
    /// All servers' growth per connection, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_per_connection: Option<f64>,
    /// The loadgen's own growth per connection, bytes.
    loadgen_bytes_per_connection: f64,
    /// Server CPU from the first connection to the measurement.
    server_cpu: Vec<ProcUsage>,
    /// Server CPU per join, every [`JOIN_WINDOW`] ready clients (a join storm
    /// when everyone is in one room: it should stay flat as the room grows).
    join_cpu: Vec<JoinCpu>,
    loadgen: ProcUsage,
    disconnects: BTreeMap<String, u64>,
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct IdleConfig {
    urls: Vec<String>,
    clients: usize,
    rooms: usize,
    workers: usize,
    source_ips: u32,
}

impl IdleReport {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut rows = vec![(
            "load".into(),
            format!(
                "{} idle clients in {} rooms, {:?}",
                report::count(self.config.clients as u64),
                self.config.rooms,
                self.protocol
            ),
        )];
        report::connect_rows(&self.connect, &mut rows);
        rows.push((
            "settled".into(),
            format!(
                "{} after {:.1} s with {} connections open",
                if self.settled { "yes" } else { "NO (timed out)" },
                self.settle_secs,
                report::count(self.connections)
            ),
        ));
        if !self.join_cpu.is_empty() {
            let points: Vec<String> = self
                .join_cpu
                .iter()
                .filter(|p| p.members == JOIN_WINDOW || p.members % 5000 == 0)
                .map(|p| format!("{}: {:.0} µs", report::count(p.members), p.cpu_us_per_join))
                .collect();
            rows.push(("server CPU per join".into(), points.join(", ")));
        }
        for s in &self.servers {
            rows.push((
                format!("server {}", s.pid),
                format!(
                    "RSS {} -> {} (peak {}): {:.0} B per connection",
                    report::kib(s.rss_kib_before),
                    report::kib(s.rss_kib_after),
                    report::kib(s.hwm_kib),
                    s.bytes_per_connection
                ),
            ));
        }
        if let Some(b) = self.bytes_per_connection {
            rows.push(("per connection".into(), format!("{b:.0} B ({:.2} KiB)", b / 1024.0)));
        }
        rows.push((
            "loadgen".into(),
            format!(
                "RSS {}, {:.0} B per connection, CPU {:.2} s",
                report::kib(self.loadgen.rss_kib_end),
                self.loadgen_bytes_per_connection,
                self.loadgen.cpu_secs
            ),
        ));
        for (why, n) in &self.disconnects {
            rows.push(("disconnected".into(), format!("{}  {why}", report::count(*n))));
        }
        for w in &self.warnings {
            rows.push(("warning".into(), w.clone()));
        }
        report::table("palaver-loadgen idle", &rows)
    }
}

/// Holds one connection open until stopped, counting it if the server drops it.
async fn hold(opened: Opened, stop: CancellationToken, dropped: Arc<AtomicU64>) -> Option<String> {
    let ended = client::hold(opened.ws, stop).await;
    if ended.is_some() {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
    ended
}

/// Runs `idle`.
pub async fn run(
    common: &Common,
    args: &IdleArgs,
    workers: usize,
    progress: &Progress,
) -> anyhow::Result<IdleReport> {
    let mut targets = Vec::new();
    for url in &common.urls {
        targets.push(client::resolve(url).await?);
    }
    let dialer = Arc::new(Dialer::new(common, targets, args.clients)?);
    let rooms = match (common.protocol, args.rooms) {
        (Protocol::Raw, _) => 1,
        (Protocol::Palaver, 0) => args.clients.div_ceil(CLIENTS_PER_ROOM),
        (Protocol::Palaver, r) => r,
    };
    let server_pids: Vec<Pid> = common.server_pids.iter().map(|&p| Pid::Other(p)).collect();
    let before: Vec<u64> = server_pids
        .iter()
        .map(|&p| procstat::sample(p).map(|s| s.rss_kib))
        .collect::<Result<_, _>>()?;
    let mut pids = server_pids.clone();
    pids.push(Pid::Current);
    let window = ProcWindow::start(&pids);

    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let body_stop = stop.clone();
    let dropped = Arc::new(AtomicU64::new(0));
    let body_dropped = dropped.clone();
    let raw = common.protocol == Protocol::Raw;
    let mut tasks = swarm::launch(
        args.clients,
        dialer.clone(),
        common.connect_concurrency,
        |i| (!raw).then(|| format!("lg-idle-{}", i % rooms)),
        move |_, opened| hold(opened, body_stop.clone(), body_dropped.clone()),
        events_tx,
    );
    let mut cpu_samples = vec![(0, servers_cpu(&server_pids))];
    let (connect, _) = swarm::collect_with(args.clients, &mut events, progress, |ready| {
        if !server_pids.is_empty() && ready % JOIN_WINDOW == 0 {
            cpu_samples.push((ready, servers_cpu(&server_pids)));
        }
    })
    .await;
    let join_cpu = join_cpu(&cpu_samples);
    if connect.ok == 0 {
        anyhow::bail!(
            "no client could connect: {}",
            connect.first_error.clone().unwrap_or_else(|| "unknown error".into())
        );
    }

    let mut warnings = Vec::new();
    progress.spinner("settling");
    let settle_started = Instant::now();
    let settled = if server_pids.is_empty() {
        warnings.push("no --server-pid: server memory not measured".into());
        sleep(args.settle_window).await;
        true
    } else {
        settle(&server_pids, args, progress).await
    };
    let settle_secs = settle_started.elapsed().as_secs_f64();
    let mut usage = window.finish();
    let loadgen = usage.pop().unwrap_or_default();
    let connections = connect.ok.saturating_sub(dropped.load(Ordering::Relaxed));
    let servers: Vec<ServerMemory> = server_pids
        .iter()
        .zip(&before)
        .zip(&usage)
        .map(|((pid, &before), u)| ServerMemory {
            pid: match pid {
                Pid::Other(p) => *p,
                Pid::Current => 0,
            },
            rss_kib_before: before,
            rss_kib_after: u.rss_kib_end,
            hwm_kib: u.hwm_kib,
            bytes_per_connection: report::bytes_per_connection(before, u.rss_kib_end, connections),
        })
        .collect();
    let bytes_per_connection = (!servers.is_empty()).then(|| {
        let before: u64 = servers.iter().map(|s| s.rss_kib_before).sum();
        let after: u64 = servers.iter().map(|s| s.rss_kib_after).sum();
        report::bytes_per_connection(before, after, connections)
    });
    let loadgen_bytes_per_connection =
        report::bytes_per_connection(loadgen.rss_kib_start, loadgen.rss_kib_end, connections);
    if !settled {
        warnings.push(format!("server RSS still moving after {:?}", args.settle_timeout));
    }
    if !args.hold.is_zero() {
        progress.spinner("holding");
        sleep(args.hold).await;
    }

    progress.spinner("closing");
    stop.cancel();
    let mut disconnects: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(Some(why))) = joined {
            *disconnects.entry(why).or_default() += 1;
        }
    }
    progress.finish();
    if !disconnects.is_empty() {
        warnings.push("some connections ended before the measurement finished".into());
    }
    Ok(IdleReport {
        mode: "idle",
        protocol: common.protocol,
        tags: report::tags(&common.tags),
        config: IdleConfig {
            urls: common.urls.clone(),
            clients: args.clients,
            rooms,
            workers,
            source_ips: dialer.source_ips(),
        },
        connect,
        connections,
        settled,
        settle_secs,
        servers,
        bytes_per_connection,
        loadgen_bytes_per_connection,
        server_cpu: usage,
        join_cpu,
        loadgen,
        disconnects,
        warnings,
    })
}

/// Samples the servers' total RSS until it moved less than 0.5% (or 256 KiB)
/// over the settle window; false if the timeout came first.
async fn settle(pids: &[Pid], args: &IdleArgs, progress: &Progress) -> bool {
    let deadline = Instant::now() + args.settle_timeout;
    let needed = (args.settle_window.as_millis() / SAMPLE_EVERY.as_millis()).max(2) as usize + 1;
    let mut samples: VecDeque<u64> = VecDeque::with_capacity(needed);
    while Instant::now() < deadline {
        let total: u64 =
            pids.iter().filter_map(|&p| procstat::sample(p).ok()).map(|s| s.rss_kib).sum();
        if samples.len() == needed {
            samples.pop_front();
        }
        samples.push_back(total);
        progress.message(format!("server RSS {}", report::kib(total)));
        if samples.len() == needed && is_settled(samples.iter().copied()) {
            return true;
        }
        sleep(SAMPLE_EVERY).await;
    }
    false
}

/// Whether RSS samples (KiB) stayed within 0.5% (or 256 KiB) of each other.
pub fn is_settled(samples: impl Iterator<Item = u64> + Clone) -> bool {
    let (Some(min), Some(max)) = (samples.clone().min(), samples.max()) else { return false };
    let tolerance = (max as f64 * 0.005).max(256.0);
    ((max - min) as f64) <= tolerance
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settling() {
        assert!(is_settled([100_000u64, 100_100, 100_200].into_iter()));
        assert!(!is_settled([100_000u64, 110_000, 120_000].into_iter()));
        // Small processes: 256 KiB of noise is still settled.
        assert!(is_settled([1000u64, 1200].into_iter()));
        assert!(!is_settled(std::iter::empty()));
    }

    #[test]
    fn cpu_per_join_per_window() {
        let points = join_cpu(&[(0, 1.0), (1000, 1.1), (2000, 1.3)]);
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].members, 1000);
        assert!((points[0].cpu_us_per_join - 100.0).abs() < 1e-6);
        assert!((points[1].cpu_us_per_join - 200.0).abs() < 1e-6);
        assert!(join_cpu(&[(0, 1.0)]).is_empty());
    }
}
