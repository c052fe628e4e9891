//! CPU time and memory of a process, read from `/proc`.
//!
//! CPU is `utime + stime` from `/proc/<pid>/stat` (in clock ticks, converted
//! with the tick rate from the auxiliary vector, so no `sysconf` and no unsafe
//! code), or, for short windows, the threads' `schedstat` run time in ns;
//! memory is `VmRSS` and `VmHWM` from `/proc/<pid>/status`.

use std::{fs, io, sync::OnceLock};

/// Which process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// The load generator itself.
    Current,
    /// Another process.
    Other(u32),
}

impl Pid {
    fn dir(self) -> String {
        match self {
            Pid::Current => "/proc/self".to_owned(),
            Pid::Other(pid) => format!("/proc/{pid}"),
        }
    }
}

/// One reading of a process's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time so far, in seconds.
    pub cpu_secs: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
    /// Peak resident set size, in KiB.
    pub hwm_kib: u64,
}

/// Reads the process's CPU time and memory now.
pub fn sample(pid: Pid) -> io::Result<ProcSample> {
    let dir = pid.dir();
    let stat = fs::read_to_string(format!("{dir}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable stat"))?;
    let status = fs::read_to_string(format!("{dir}/status"))?;
    Ok(ProcSample {
        cpu_secs: ticks as f64 / ticks_per_second() as f64,
        rss_kib: parse_status_kib(&status, "VmRSS:").unwrap_or(0),
        hwm_kib: parse_status_kib(&status, "VmHWM:").unwrap_or(0),
    })
}

/// CPU time the process's threads have run so far, in seconds, summed from
/// `/proc/<pid>/task/*/schedstat` (nanoseconds): precise enough for windows
/// of tens of milliseconds, where `stat`'s 10 ms ticks are not. Threads that
/// have exited are not counted, so only differences over a window in which
/// the process keeps its threads are meaningful.
pub fn thread_cpu_secs(pid: Pid) -> io::Result<f64> {
    let mut nanos: u64 = 0;
    for task in fs::read_dir(format!("{}/task", pid.dir()))? {
        // A thread that exits between the listing and the read is skipped.
        if let Ok(line) = fs::read_to_string(task?.path().join("schedstat")) {
            nanos += parse_schedstat_ns(&line).unwrap_or(0);
        }
    }
    Ok(nanos as f64 / 1e9)
}

/// The first field of a `schedstat` line: time spent on a CPU, in ns.
pub fn parse_schedstat_ns(line: &str) -> Option<u64> {
    line.split_ascii_whitespace().next()?.parse().ok()
}

/// The machine's 1-minute load average (`/proc/loadavg`): on a shared
/// machine, a reading to judge a measurement by.
pub fn load_average() -> Option<f64> {
    parse_loadavg(&fs::read_to_string("/proc/loadavg").ok()?)
}

/// The first field of a `/proc/loadavg` line.
pub fn parse_loadavg(line: &str) -> Option<f64> {
    line.split_ascii_whitespace().next()?.parse().ok()
}

/// `utime + stime` in clock ticks from a `/proc/<pid>/stat` line.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line such as `VmRSS:   1234 kB` from `/proc/<pid>/status`.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_ascii_whitespace().next()?.parse().ok()
}

/// Clock ticks per second (`AT_CLKTCK` from `/proc/self/auxv`; 100 if unreadable).
pub fn ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        fs::read("/proc/self/auxv")
            .ok()
            .and_then(|auxv| auxv_value(&auxv, AT_CLKTCK))
            .unwrap_or(100)
    })
}

const AT_CLKTCK: u64 = 17;

/// Looks a key up in a 64-bit native-endian auxiliary vector.
fn auxv_value(auxv: &[u8], key: u64) -> Option<u64> {
    auxv.chunks_exact(16).find_map(|pair| {
        let k = u64::from_ne_bytes(pair[..8].try_into().ok()?);
        let v = u64::from_ne_bytes(pair[8..].try_into().ok()?);
        (k == key && v > 0).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_name() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    150 25 0 0 20 0 9 0 12345 1000000 250 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(175));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_lines() {
        let status = "Name:\tpalaver\nVmHWM:\t  20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status_kib(status, "VmRSS:"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmHWM:"), Some(20480));
        assert_eq!(parse_status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn loadavg_line() {
        assert_eq!(parse_loadavg("6.33 7.10 7.11 3/512 31272\n"), Some(6.33));
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn auxv_lookup() {
        let mut auxv = Vec::new();
        for (k, v) in [(6u64, 4096u64), (17, 100), (0, 0)] {
            auxv.extend_from_slice(&k.to_ne_bytes());
            auxv.extend_from_slice(&v.to_ne_bytes());
        }
        assert_eq!(auxv_value(&auxv, AT_CLKTCK), Some(100));
        assert_eq!(auxv_value(&auxv, 99), None);
    }

    #[test]
    fn schedstat_line() {
        assert_eq!(parse_schedstat_ns("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat_ns(""), None);
    }

    #[test]
    fn thread_cpu_grows_with_work() {
        let before = thread_cpu_secs(Pid::Current).expect("own task entries");
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = thread_cpu_secs(Pid::Current).expect("own task entries") - before;
        // 30 ms of spinning shows (the thread may be preempted, never credited more).
        assert!(spent > 0.001 && spent < 10.0, "{spent}");
    }

    #[test]
    fn reads_itself() {
        let s = sample(Pid::Current).expect("own /proc entry");
        assert!(s.rss_kib > 0);
        assert!(s.cpu_secs >= 0.0);
        assert!(ticks_per_second() > 0);
    }
}
