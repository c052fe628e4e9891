//! `connect-storm`: open connections as fast as the concurrency bound allows,
//! holding each one open, until an attempt fails (or `--max-failures` do), a
//! cap is reached, or time runs out. Reports connections per second and where
//! and why it failed.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde::Serialize;
use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{Common, Protocol, StormArgs},
    client::{self, DialError, Dialer},
    latency::new_histogram,
    procstat::Pid,
    progress::Progress,
    report::{self, LatencySummary, ProcUsage, ProcWindow},
};

/// The first failed attempt.
#[derive(Debug, Clone, Serialize)]
pub struct FirstFailure {
    /// Attempt index.
    pub attempt: usize,
    /// Connections open when it failed.
    pub open: u64,
    /// Seconds after the storm began.
    pub after_secs: f64,
    /// Failure kind.
    pub kind: String,
    /// Full error text.
    pub detail: String,
}

/// Why the storm stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// `--max` connections are open.
    Cap,
    /// `--max-failures` attempts failed.
    Failures,
    /// `--duration` passed.
    Time,
}

/// The `connect-storm` report.
#[derive(Debug, Serialize)]
pub struct StormReport {
    mode: &'static str,
    protocol: Protocol,
    tags: BTreeMap<String, String>,
    config: StormConfig,
    stopped_because: StopReason,
    attempted: u64,
    opened: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    first_failure: Option<FirstFailure>,
    /// From the first attempt to the last success, seconds.
    secs: f64,
    /// `opened / secs`.
    per_sec: f64,
    /// Best one-second bucket.
    peak_per_sec: u64,
    /// Successes in each second of the storm.
    timeline: Vec<u64>,
    /// Time to ready per connection, milliseconds.
    latency_ms: LatencySummary,
    servers: Vec<ProcUsage>,
    /// Server RSS growth per open connection, bytes (all servers).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_bytes_per_connection: Option<f64>,
    loadgen: ProcUsage,
    /// Connections that ended on their own before the storm was over.
    disconnects: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct StormConfig {
    urls: Vec<String>,
    max: usize,
    max_failures: usize,
    concurrency: usize,
    duration_secs: f64,
    workers: usize,
    source_ips: u32,
}

impl StormReport {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut rows = vec![
            (
                "storm".into(),
                format!(
                    "{} opened of {} attempts in {:.2} s: {} (peak {}/s), stopped: {:?}",
                    report::count(self.opened),
                    report::count(self.attempted),
                    self.secs,
                    report::rate(self.per_sec),
                    report::count(self.peak_per_sec),
                    self.stopped_because
                ),
            ),
            (
                "time to ready".into(),
                format!(
                    "p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
                    self.latency_ms.p50, self.latency_ms.p99, self.latency_ms.max
                ),
            ),
        ];
        if let Some(f) = &self.first_failure {
            rows.push((
                "first failure".into(),
                format!(
                    "attempt {} with {} open, after {:.2} s: {} ({})",
                    f.attempt,
                    report::count(f.open),
                    f.after_secs,
                    f.kind,
                    f.detail
                ),
            ));
        }
        for (kind, n) in &self.failures {
            rows.push(("  failed".into(), format!("{}  {kind}", report::count(*n))));
        }
        report::usage_rows(&self.servers, &self.loadgen, self.config.workers, &mut rows);
        if let Some(b) = self.server_bytes_per_connection {
            rows.push(("server memory".into(), format!("{b:.0} B per open connection")));
        }
        for (why, n) in &self.disconnects {
            rows.push(("disconnected".into(), format!("{}  {why}", report::count(*n))));
        }
        report::table("palaver-loadgen connect-storm", &rows)
    }
}

/// One attempt's outcome, sent as soon as it is known.
struct Attempt {
    index: usize,
    at: Instant,
    result: Result<Duration, DialError>,
}

/// Runs `connect-storm`.
pub async fn run(
    common: &Common,
    args: &StormArgs,
    workers: usize,
    progress: &Progress,
) -> anyhow::Result<StormReport> {
    let mut targets = Vec::new();
    for url in &common.urls {
        targets.push(client::resolve(url).await?);
    }
    let dialer = Arc::new(Dialer::new(common, targets, args.max)?);
    let mut pids: Vec<Pid> = common.server_pids.iter().map(|&p| Pid::Other(p)).collect();
    pids.push(Pid::Current);
    let window = ProcWindow::start(&pids);
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let slots = Arc::new(Semaphore::new(common.connect_concurrency));
    let (tx, mut rx) = mpsc::unbounded_channel::<Attempt>();
    let mut tasks: JoinSet<Option<String>> = JoinSet::new();

    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tally = Tally::new(started);
    let mut launched = 0usize;
    progress.phase("storm", args.max as u64);
    let stopped_because = loop {
        if tally.opened as usize >= args.max {
            break StopReason::Cap;
        }
        if tally.failed as usize >= args.max_failures {
            break StopReason::Failures;
        }
        if Instant::now() >= deadline {
            break StopReason::Time;
        }
        // Never more attempts in flight than could still be needed.
        if launched >= args.max + args.max_failures - 1 {
            match rx.recv().await {
                Some(a) => tally.add(a),
                None => break StopReason::Cap,
            }
            continue;
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot?,
            Some(a) = rx.recv() => {
                tally.add(a);
                progress.set_position(tally.opened);
                continue;
            }
        };
        let (dialer, tx, stop) = (dialer.clone(), tx.clone(), stop.clone());
        let index = launched;
        launched += 1;
        tasks.spawn(async move {
            let opened = dialer.open(index, None).await;
            drop(slot);
            let at = Instant::now();
            match opened {
                Ok(opened) => {
                    let _ = tx.send(Attempt { index, at, result: Ok(opened.elapsed) });
                    client::hold(opened.ws, stop).await
                }
                Err(e) => {
                    let _ = tx.send(Attempt { index, at, result: Err(e) });
                    None
                }
            }
        });
    };
    // Attempts in flight still count.
    while tally.seen < launched {
        match rx.recv().await {
            Some(a) => tally.add(a),
            None => break,
        }
    }
    let mut usage = window.finish();
    let loadgen = usage.pop().unwrap_or_default();
    let opened = tally.opened;
    let server_bytes_per_connection = (!usage.is_empty()).then(|| {
        let before: u64 = usage.iter().map(|u| u.rss_kib_start).sum();
        let after: u64 = usage.iter().map(|u| u.rss_kib_end).sum();
        report::bytes_per_connection(before, after, opened)
    });
    if !args.hold.is_zero() {
        progress.spinner("holding");
        tokio::time::sleep(args.hold).await;
    }
    progress.spinner("closing");
    stop.cancel();
    let mut disconnects: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Some(why)) = joined {
            *disconnects.entry(why).or_default() += 1;
        }
    }
    progress.finish();
    let secs = tally.last_success.duration_since(started).as_secs_f64();
    Ok(StormReport {
        mode: "connect_storm",
        protocol: common.protocol,
        tags: report::tags(&common.tags),
        config: StormConfig {
            urls: common.urls.clone(),
            max: args.max,
            max_failures: args.max_failures,
            concurrency: common.connect_concurrency,
            duration_secs: args.duration.as_secs_f64(),
            workers,
            source_ips: dialer.source_ips(),
        },
        stopped_because,
        attempted: launched as u64,
        opened,
        failed: tally.failed,
        failures: tally.failures,
        first_failure: tally.first_failure,
        secs,
        per_sec: report::ratio(opened as f64, secs),
        peak_per_sec: tally.timeline.iter().copied().max().unwrap_or(0),
        timeline: tally.timeline,
        latency_ms: LatencySummary::from_micros_histogram(&tally.latency).in_millis(),
        servers: usage,
        server_bytes_per_connection,
        loadgen,
        disconnects,
    })
}

/// Running counts of the storm's attempts.
struct Tally {
    started: Instant,
    seen: usize,
    opened: u64,
    failed: u64,
    failures: BTreeMap<String, u64>,
    first_failure: Option<FirstFailure>,
    timeline: Vec<u64>,
    latency: hdrhistogram::Histogram<u64>,
    last_success: Instant,
}

impl Tally {
    fn new(started: Instant) -> Self {
        Tally {
            started,
            seen: 0,
            opened: 0,
            failed: 0,
            failures: BTreeMap::new(),
            first_failure: None,
            timeline: Vec::new(),
            latency: new_histogram(),
            last_success: started,
        }
    }

    fn add(&mut self, attempt: Attempt) {
        self.seen += 1;
        let after = attempt.at.saturating_duration_since(self.started);
        match attempt.result {
            Ok(elapsed) => {
                self.opened += 1;
                self.last_success = self.last_success.max(attempt.at);
                let second = after.as_secs() as usize;
                if self.timeline.len() <= second {
                    self.timeline.resize(second + 1, 0);
                }
                self.timeline[second] += 1;
                self.latency.saturating_record((elapsed.as_micros() as u64).max(1));
            }
            Err(e) => {
                self.failed += 1;
                *self.failures.entry(e.kind.clone()).or_default() += 1;
                let open = self.opened;
                self.first_failure.get_or_insert(FirstFailure {
                    attempt: attempt.index,
                    open,
                    after_secs: after.as_secs_f64(),
                    kind: e.kind,
                    detail: e.detail,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_buckets_successes_and_keeps_the_first_failure() {
        let t0 = Instant::now();
        let mut t = Tally::new(t0);
        let ok = |index, ms| Attempt {
            index,
            at: t0 + Duration::from_millis(ms),
            result: Ok(Duration::from_millis(1)),
        };
        t.add(ok(0, 100));
        t.add(ok(1, 900));
        t.add(ok(2, 1500));
        let fail = |index, kind: &str| Attempt {
            index,
            at: t0 + Duration::from_millis(1600),
            result: Err(DialError { kind: kind.into(), detail: "d".into() }),
        };
        t.add(fail(3, "tcp: EMFILE"));
        t.add(fail(4, "tcp: ECONNREFUSED"));
        assert_eq!(t.timeline, vec![2, 1]);
        assert_eq!((t.opened, t.failed, t.seen), (3, 2, 5));
        let first = t.first_failure.expect("recorded");
        assert_eq!((first.attempt, first.open, first.kind.as_str()), (3, 3, "tcp: EMFILE"));
        assert_eq!(t.last_success, t0 + Duration::from_millis(1500));
    }
}
