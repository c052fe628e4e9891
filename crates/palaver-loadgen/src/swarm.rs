//! Launching many clients with bounded connection concurrency, and gathering
//! how their setup went.
//!
//! Each client is one task: it waits for a connection slot, opens, reports
//! the outcome on a channel, frees the slot, then runs its mode's body until
//! the run's stop signal. The coordinator reads the channel to know when
//! every client is either ready or failed.

use std::{collections::BTreeMap, future::Future, sync::Arc, time::Duration};

use tokio::{
    sync::{Semaphore, mpsc},
    task::JoinSet,
    time::Instant,
};

use crate::{
    client::{DialError, Dialer, Opened},
    latency::new_histogram,
    progress::Progress,
    report::{ConnectSummary, LatencySummary},
};

/// One client's setup outcome.
pub enum Setup {
    /// Open (and joined, for palaver).
    Ready {
        /// Client index.
        client: usize,
        /// Time it took.
        elapsed: Duration,
    },
    /// Could not be opened.
    Failed {
        /// Client index.
        client: usize,
        /// Why.
        error: DialError,
    },
}

/// Spawns `n` clients. `room_of(i)` names the room client `i` joins (palaver);
/// `body(i, opened)` is its work once open. Setup outcomes go to `events`.
pub fn launch<B, F, R>(
    n: usize,
    dialer: Arc<Dialer>,
    concurrency: usize,
    room_of: impl Fn(usize) -> Option<String>,
    body: B,
    events: mpsc::UnboundedSender<Setup>,
) -> JoinSet<Option<R>>
where
    B: Fn(usize, Opened) -> F + Send + Sync + 'static,
    F: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let body = Arc::new(body);
    let mut tasks = JoinSet::new();
    for client in 0..n {
        let (slots, dialer, body, events) =
            (slots.clone(), dialer.clone(), body.clone(), events.clone());
        let room = room_of(client);
        tasks.spawn(async move {
            let opened = {
                let _slot = slots.acquire_owned().await.ok()?;
                dialer.open(client, room.as_deref()).await
            };
            match opened {
                Ok(opened) => {
                    let _ = events.send(Setup::Ready { client, elapsed: opened.elapsed });
                    Some(body(client, opened).await)
                }
                Err(error) => {
                    let _ = events.send(Setup::Failed { client, error });
                    None
                }
            }
        });
    }
    tasks
}

/// Reads `n` setup outcomes; returns the summary and which clients are ready.
pub async fn collect(
    n: usize,
    events: &mut mpsc::UnboundedReceiver<Setup>,
    progress: &Progress,
) -> (ConnectSummary, Vec<bool>) {
    collect_with(n, events, progress, |_| {}).await
}

/// [`collect`], calling `on_ready(count)` each time one more client is ready.
pub async fn collect_with(
    n: usize,
    events: &mut mpsc::UnboundedReceiver<Setup>,
    progress: &Progress,
    mut on_ready: impl FnMut(u64),
) -> (ConnectSummary, Vec<bool>) {
    let started = Instant::now();
    let mut ready = vec![false; n];
    let mut latency = new_histogram();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_error = None;
    let mut last_ready = started;
    let mut ready_count = 0;
    progress.phase("connecting", n as u64);
    for _ in 0..n {
        let Some(event) = events.recv().await else { break };
        match event {
            Setup::Ready { client, elapsed } => {
                ready[client] = true;
                latency.saturating_record((elapsed.as_micros() as u64).max(1));
                last_ready = Instant::now();
                ready_count += 1;
                on_ready(ready_count);
            }
            Setup::Failed { client, error } => {
                *failures.entry(error.kind.clone()).or_default() += 1;
                first_error.get_or_insert_with(|| format!("client {client}: {}", error.detail));
            }
        }
        progress.inc(1);
    }
    let ok = ready.iter().filter(|r| **r).count() as u64;
    let secs = last_ready.duration_since(started).as_secs_f64();
    let summary = ConnectSummary {
        attempted: n as u64,
        ok,
        failed: n as u64 - ok,
        failures,
        first_error,
        secs,
        per_sec: if secs > 0.0 { ok as f64 / secs } else { 0.0 },
        latency_ms: LatencySummary::from_micros_histogram(&latency).in_millis(),
    };
    (summary, ready)
}
