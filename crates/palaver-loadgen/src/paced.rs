//! The paced sender both sending workloads share (fan-out and chat): from
//! the start signal until the end of the run, message `n` (from 0) is due at
//! `start + phase + n / rate`. Whatever is due is written as one batch and
//! flushed once; lateness against the schedule is recorded.

use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    latency::Recorder,
    stamp::{MAX_HEADER_LEN, Stamp},
};

/// One sender's schedule and what its messages carry.
pub struct Schedule<'a> {
    /// Set to the run's start instant when sending begins.
    pub start: &'a watch::Receiver<Option<Instant>>,
    /// Cancelled when the run stops early.
    pub stop: &'a CancellationToken,
    /// How long to send from the start.
    pub duration: Duration,
    /// Messages per second.
    pub rate: f64,
    /// Offset of message 0 after the start, as a fraction of one period.
    pub phase: f64,
    /// Most messages written before one flush.
    pub max_batch: u64,
    /// The run's tag, stamped into every message.
    pub run: u32,
    /// This sender's index, stamped into every message.
    pub sender: usize,
    /// Bytes of each message's text.
    pub payload: usize,
    /// The clock the stamps read.
    pub clock: &'a Clock,
}

/// What a sender did.
pub struct SendOutcome {
    /// Messages flushed.
    pub sent: u64,
    /// Why sending stopped early, if it did.
    pub error: Option<String>,
}

/// Sends on `schedule`: `frame(text, n)` turns message `n`'s stamped text
/// into the frame written, and `flushed(batch)` counts each batch once it is
/// flushed (only then is it on its way).
pub async fn send<K>(
    sink: &mut K,
    schedule: Schedule<'_>,
    lag: &mut Recorder,
    mut frame: impl FnMut(&str, u64) -> String,
    mut flushed: impl FnMut(u64),
) -> SendOutcome
where
    K: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let mut outcome = SendOutcome { sent: 0, error: None };
    let mut start = schedule.start.clone();
    let start = tokio::select! {
        started = start.wait_for(Option::is_some) => started.ok().and_then(|s| *s),
        () = schedule.stop.cancelled() => None,
    };
    let Some(start) = start else { return outcome };
    let end = start + schedule.duration;
    let period = 1e9 / schedule.rate;
    let phase = period * schedule.phase;
    let due = |n: u64| start + Duration::from_nanos((phase + n as f64 * period) as u64);
    let mut text = String::with_capacity(schedule.payload.max(MAX_HEADER_LEN));
    let mut n = 0u64;
    'run: loop {
        let next = due(n);
        if next >= end {
            break;
        }
        tokio::select! {
            biased;
            () = schedule.stop.cancelled() => break,
            () = sleep_until(next) => {}
        }
        let now = Instant::now();
        let mut batch = 0;
        while batch < schedule.max_batch {
            let at = due(n);
            if at > now || at >= end {
                break;
            }
            n += 1;
            text.clear();
            let stamp = Stamp {
                run: schedule.run,
                sender: schedule.sender as u32,
                n,
                sent_nanos: schedule.clock.now_nanos(),
            };
            stamp.write(&mut text, schedule.payload);
            if let Err(e) = sink.feed(Message::Text(frame(&text, n).into())).await {
                outcome.error = Some(e.to_string());
                break 'run;
            }
            lag.record_nanos(now.saturating_duration_since(at).as_nanos() as u64);
            batch += 1;
        }
        if let Err(e) = sink.flush().await {
            outcome.error = Some(e.to_string());
            break;
        }
        outcome.sent += batch;
        flushed(batch);
    }
    outcome
}
