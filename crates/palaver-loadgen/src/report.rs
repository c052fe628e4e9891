//! Report building blocks shared by every mode: latency summaries, process
//! usage, connection summaries, checks, the arithmetic behind them, and the
//! human-readable formatting. Each mode's report is a serde struct printed
//! either as JSON (one object) or as a two-column table.

use std::{collections::BTreeMap, fmt::Write, time::Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::procstat::{self, Pid, ProcSample};

/// Percentiles of one latency distribution. The unit is in the field name
/// that holds it (`latency_us`, `latency_ms`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl LatencySummary {
    /// Summarises a histogram of microseconds (in microseconds).
    pub fn from_micros_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            count: h.len(),
            p50: h.value_at_quantile(0.50) as f64,
            p90: h.value_at_quantile(0.90) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
            mean: h.mean(),
        }
    }

    /// The same summary in milliseconds.
    pub fn in_millis(&self) -> Self {
        let ms = |v: f64| v / 1000.0;
        LatencySummary {
            count: self.count,
            p50: ms(self.p50),
            p90: ms(self.p90),
            p99: ms(self.p99),
            p999: ms(self.p999),
            max: ms(self.max),
            mean: ms(self.mean),
        }
    }
}

/// How opening the clients went.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectSummary {
    /// Clients tried.
    pub attempted: u64,
    /// Clients ready (connected; welcomed and joined for palaver).
    pub ok: u64,
    /// Clients that failed.
    pub failed: u64,
    /// Failures by kind (`stage: cause`).
    pub failures: BTreeMap<String, u64>,
    /// The first failure's full text.
    pub first_error: Option<String>,
    /// From the first attempt to the last client ready, in seconds.
    pub secs: f64,
    /// Ready clients per second over `secs`.
    pub per_sec: f64,
    /// Time to ready per client, in milliseconds.
    pub latency_ms: LatencySummary,
}

/// CPU and memory of one process over a measurement window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProcUsage {
    /// The process (absent for the loadgen itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// RSS at the start of the window, KiB.
    pub rss_kib_start: u64,
    /// RSS at the end, KiB.
    pub rss_kib_end: u64,
    /// Peak RSS over the process's life, KiB.
    pub hwm_kib: u64,
    /// CPU seconds (user + system) used in the window.
    pub cpu_secs: f64,
    /// `cpu_secs` over the window's length: cores kept busy on average.
    pub cpu_cores: f64,
    /// Why the process could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Samples of several processes at the start of a window.
pub struct ProcWindow {
    started: Instant,
    starts: Vec<(Pid, Result<ProcSample, String>)>,
}

impl ProcWindow {
    /// Samples every process now.
    pub fn start(pids: &[Pid]) -> Self {
        let starts =
            pids.iter().map(|&p| (p, procstat::sample(p).map_err(|e| e.to_string()))).collect();
        ProcWindow { started: Instant::now(), starts }
    }

    /// Samples again and reports each process's usage over the window.
    pub fn finish(&self) -> Vec<ProcUsage> {
        let secs = self.started.elapsed().as_secs_f64();
        self.starts
            .iter()
            .map(|(pid, start)| {
                let id = match pid {
                    Pid::Current => None,
                    Pid::Other(p) => Some(*p),
                };
                let end = procstat::sample(*pid).map_err(|e| e.to_string());
                match (start, &end) {
                    (Ok(a), Ok(b)) => usage(id, a, b, secs),
                    (Err(e), _) | (_, Err(e)) => {
                        ProcUsage { pid: id, error: Some(e.clone()), ..ProcUsage::default() }
                    }
                }
            })
            .collect()
    }
}

/// Usage between two samples taken `secs` apart.
pub fn usage(pid: Option<u32>, start: &ProcSample, end: &ProcSample, secs: f64) -> ProcUsage {
    let cpu_secs = (end.cpu_secs - start.cpu_secs).max(0.0);
    ProcUsage {
        pid,
        rss_kib_start: start.rss_kib,
        rss_kib_end: end.rss_kib,
        hwm_kib: end.hwm_kib,
        cpu_secs,
        cpu_cores: ratio(cpu_secs, secs),
        error: None,
    }
}

/// Results of the optional pass/fail checks.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checks {
    /// True when every requested check passed.
    pub passed: bool,
    /// One line per failed check.
    pub failures: Vec<String>,
}

/// `a / b`, or 0 when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// Lost deliveries and their share of the expected ones. Unique arrivals
/// above the expected count (not possible in a correct run) count as no loss.
pub fn loss(expected: u64, unique: u64) -> (u64, f64) {
    let lost = expected.saturating_sub(unique);
    (lost, ratio(lost as f64, expected as f64))
}

/// CPU seconds per million deliveries.
pub fn cpu_per_million(cpu_secs: f64, deliveries: u64) -> f64 {
    ratio(cpu_secs * 1e6, deliveries as f64)
}

/// Bytes of growth per connection between two RSS readings in KiB.
pub fn bytes_per_connection(before_kib: u64, after_kib: u64, connections: u64) -> f64 {
    ratio((after_kib as f64 - before_kib as f64) * 1024.0, connections as f64)
}

/// `1234567` -> `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|g| std::str::from_utf8(g).expect("digits are ASCII"))
        .collect();
    groups.join(",")
}

/// A rate, rounded, with thousands separators.
pub fn rate(per_sec: f64) -> String {
    format!("{}/s", count(per_sec.max(0.0).round() as u64))
}

/// Microseconds, printed in the unit that reads best.
pub fn micros(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// KiB, printed as MiB or GiB when large.
pub fn kib(k: u64) -> String {
    let k = k as f64;
    if k >= 1024.0 * 1024.0 {
        format!("{:.2} GiB", k / (1024.0 * 1024.0))
    } else if k >= 1024.0 {
        format!("{:.1} MiB", k / 1024.0)
    } else {
        format!("{k:.0} KiB")
    }
}

/// A latency summary on one line.
pub fn latency_line(l: &LatencySummary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        micros(l.p50),
        micros(l.p90),
        micros(l.p99),
        micros(l.p999),
        micros(l.max)
    )
}

/// A connection summary on one line, plus a line per failure kind.
pub fn connect_rows(c: &ConnectSummary, rows: &mut Vec<(String, String)>) {
    rows.push((
        "connect".into(),
        format!(
            "{}/{} ok in {:.2} s ({})  time-to-ready p50 {:.1} ms p99 {:.1} ms",
            count(c.ok),
            count(c.attempted),
            c.secs,
            rate(c.per_sec),
            c.latency_ms.p50,
            c.latency_ms.p99
        ),
    ));
    for (kind, n) in &c.failures {
        rows.push(("  failed".into(), format!("{}  {kind}", count(*n))));
    }
    if let Some(e) = &c.first_error {
        rows.push(("  first error".into(), e.clone()));
    }
}

/// Process usage rows: one per server, one for the loadgen.
pub fn usage_rows(
    servers: &[ProcUsage],
    loadgen: &ProcUsage,
    workers: usize,
    rows: &mut Vec<(String, String)>,
) {
    for s in servers {
        let name = format!("server {}", s.pid.unwrap_or(0));
        match &s.error {
            Some(e) => rows.push((name, format!("unreadable: {e}"))),
            None => rows.push((
                name,
                format!(
                    "RSS {} -> {} (peak {})  CPU {:.2} s ({:.2} cores)",
                    kib(s.rss_kib_start),
                    kib(s.rss_kib_end),
                    kib(s.hwm_kib),
                    s.cpu_secs,
                    s.cpu_cores
                ),
            )),
        }
    }
    rows.push((
        "loadgen".into(),
        format!(
            "CPU {:.2} s ({:.2} of {workers} worker cores)  RSS {}",
            loadgen.cpu_secs,
            loadgen.cpu_cores,
            kib(loadgen.rss_kib_end)
        ),
    ));
}

/// Renders rows as an aligned two-column table.
pub fn table(title: &str, rows: &[(String, String)]) -> String {
    let width = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
    let mut out = format!("{title}\n");
    for (k, v) in rows {
        let _ = writeln!(out, "  {k:<width$}  {v}");
    }
    out
}

/// The tags given with `--tag`, as a JSON-friendly map.
pub fn tags(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::new_histogram;

    #[test]
    fn loss_math() {
        assert_eq!(loss(1000, 1000), (0, 0.0));
        assert_eq!(loss(1000, 990), (10, 0.01));
        assert_eq!(loss(0, 0), (0, 0.0));
        // More unique arrivals than expected is reported as no loss, not negative.
        assert_eq!(loss(10, 12), (0, 0.0));
    }

    #[test]
    fn cost_and_memory_math() {
        assert!((cpu_per_million(2.0, 4_000_000) - 0.5).abs() < 1e-12);
        assert_eq!(cpu_per_million(1.0, 0), 0.0);
        assert_eq!(bytes_per_connection(1000, 2000, 1024), 1000.0);
        assert_eq!(bytes_per_connection(2000, 1000, 1024), -1000.0);
        assert_eq!(bytes_per_connection(1, 2, 0), 0.0);
    }

    #[test]
    fn usage_between_samples() {
        let a = ProcSample { cpu_secs: 1.0, rss_kib: 100, hwm_kib: 100 };
        let b = ProcSample { cpu_secs: 3.0, rss_kib: 150, hwm_kib: 200 };
        let u = usage(Some(7), &a, &b, 4.0);
        assert_eq!(u.cpu_secs, 2.0);
        assert_eq!(u.cpu_cores, 0.5);
        assert_eq!((u.rss_kib_start, u.rss_kib_end, u.hwm_kib), (100, 150, 200));
    }

    #[test]
    fn latency_summary_from_histogram() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).expect("in range");
        }
        let s = LatencySummary::from_micros_histogram(&h);
        assert_eq!(s.count, 10_000);
        assert!((s.p50 - 5000.0).abs() <= 5.0, "{}", s.p50);
        assert!((s.p99 - 9900.0).abs() <= 10.0, "{}", s.p99);
        assert!((s.p999 - 9990.0).abs() <= 10.0, "{}", s.p999);
        assert!((s.max - 10_000.0).abs() <= 10.0, "{}", s.max);
        let ms = s.in_millis();
        assert!((ms.p50 - 5.0).abs() < 0.01);
        assert_eq!(LatencySummary::from_micros_histogram(&new_histogram()).count, 0);
    }

    #[test]
    fn formatting() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(rate(1234.6), "1,235/s");
        assert_eq!(micros(850.0), "850 µs");
        assert_eq!(micros(1500.0), "1.50 ms");
        assert_eq!(micros(2_500_000.0), "2.50 s");
        assert_eq!(kib(512), "512 KiB");
        assert_eq!(kib(2048), "2.0 MiB");
        let t = table("T", &[("a".into(), "1".into()), ("long".into(), "2".into())]);
        assert_eq!(t, "T\n  a     1\n  long  2\n");
    }
}
