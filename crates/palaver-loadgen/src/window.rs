//! The measuring window every sending workload shares: the sending phase
//! (progress shown), a short wait for blocked senders, then the grace period
//! in which deliveries still in flight may arrive.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use tokio::time::{Instant, sleep};

use crate::{counter::ShardedCounter, progress::Progress, report};

/// What the window measured.
pub struct Window {
    /// Seconds spent sending (at most the configured duration).
    pub send_secs: f64,
    /// Seconds of grace used before every expected delivery arrived (or it ran out).
    pub grace_used: f64,
}

/// What a window watches.
pub struct Watch<'a> {
    /// Messages sent so far.
    pub sent: &'a ShardedCounter,
    /// Deliveries so far.
    pub delivered: &'a ShardedCounter,
    /// Senders that stopped on their own.
    pub senders_done: &'a AtomicUsize,
    /// Senders that started.
    pub senders: usize,
}

/// Runs the sending phase from `start` for `duration`, then the grace period;
/// `expected` says how many deliveries the messages sent so far should cause.
pub async fn run(
    progress: &Progress,
    watch: Watch<'_>,
    start: Instant,
    duration: Duration,
    grace: Duration,
    expected: impl Fn() -> u64,
) -> Window {
    let end = start + duration;
    progress.phase("sending", duration.as_millis() as u64);
    while Instant::now() < end {
        sleep(Duration::from_millis(100)).await;
        let elapsed = Instant::now().saturating_duration_since(start);
        progress.set_position(elapsed.as_millis() as u64);
        progress.message(format!(
            "sent {}  delivered {}/{}",
            report::count(watch.sent.get()),
            report::count(watch.delivered.get()),
            report::count(expected())
        ));
    }
    // Senders stop on their own at `end`; a blocked one gets a short while.
    let senders_deadline = Instant::now() + Duration::from_secs(5);
    while watch.senders_done.load(Ordering::Relaxed) < watch.senders
        && Instant::now() < senders_deadline
    {
        sleep(Duration::from_millis(10)).await;
    }
    let send_secs = Instant::now().saturating_duration_since(start).as_secs_f64();
    let send_secs = send_secs.min(duration.as_secs_f64()).max(1e-9);
    let grace_started = Instant::now();
    let grace_end = grace_started + grace;
    progress.spinner("grace");
    while watch.delivered.get() < expected() && Instant::now() < grace_end {
        progress.message(format!(
            "waiting for {} deliveries",
            report::count(expected().saturating_sub(watch.delivered.get()))
        ));
        sleep(Duration::from_millis(10)).await;
    }
    Window { send_secs, grace_used: grace_started.elapsed().as_secs_f64() }
}
