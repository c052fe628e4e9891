//! `fanout`: clients in rooms, a few of them sending at a fixed rate; measures
//! delivered messages per second, end-to-end latency, loss, duplicates and
//! order, and what it cost the server.
//!
//! Accounting: a *group* is the set of clients that should see one another's
//! messages: a room (palaver) or a server node (raw: the seed hub has one room
//! per process). Every ready client of a group receives every message sent to
//! it, its sender included, so `expected = Σ sent[group] × ready[group]`.
//! Receivers classify each arrival per stream (room `seq` for palaver, the
//! sender's counter for raw; see `order`), count unique arrivals, and record
//! latency as receive time minus the send time stamped in the text.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures_util::{Sink, Stream, StreamExt};
use serde::Serialize;
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep},
};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{Common, FanoutArgs, Protocol},
    client::{self, Dialer, Opened},
    clock::Clock,
    counter::ShardedCounter,
    latency::{LatencySink, Recorder},
    order::{Arrival, OrderCounts, SeqTracker},
    paced::{self, SendOutcome},
    procstat::Pid,
    progress::Progress,
    report::{self, Checks, ConnectSummary, LatencySummary, ProcUsage, ProcWindow},
    stamp::Stamp,
    swarm, window,
    wire::{self, ServerEvent},
};

/// Most messages one sender writes per wake-up before flushing.
const MAX_BATCH: u64 = 1024;
/// Setup traffic (presence) has drained when no such frame arrived for this long.
const SETTLE_QUIET: Duration = Duration::from_millis(300);
/// Longest wait for setup traffic to drain.
const SETTLE_MAX: Duration = Duration::from_secs(15);

/// State every client task of a run shares.
struct Shared {
    protocol: Protocol,
    clock: Clock,
    run: u32,
    payload: usize,
    rate: f64,
    senders: usize,
    duration: Duration,
    rooms: Vec<String>,
    /// Group of each client.
    group_of: Vec<usize>,
    stop: CancellationToken,
    start: watch::Receiver<Option<Instant>>,
    /// Unique deliveries of this run's messages.
    delivered: ShardedCounter,
    /// Frames other than messages and acks (presence, mostly from setup).
    other_frames: ShardedCounter,
    sent: ShardedCounter,
    group_sent: Vec<AtomicU64>,
    /// Sends the server refused with an `error` frame, per group.
    group_rejected: Vec<AtomicU64>,
    /// Prefix of this run's message ids (`<run>-`), to tell our refused sends.
    id_prefix: String,
    senders_done: AtomicUsize,
    latency: Arc<LatencySink>,
    lag: Arc<LatencySink>,
}

/// What one client saw, merged into the report at the end.
#[derive(Default)]
struct ClientOutcome {
    counts: OrderCounts,
    unfilled: u64,
    foreign: u64,
    acks: u64,
    rejected: u64,
    other: u64,
    errors: BTreeMap<String, u64>,
    ended: Option<String>,
    last_delivery_nanos: u64,
    sent: u64,
    send_error: Option<String>,
}

/// The receive side of one client.
struct Receiver {
    index: usize,
    group: usize,
    room_seq: SeqTracker,
    by_sender: Vec<SeqTracker>,
    out: ClientOutcome,
    latency: Recorder,
}

impl Receiver {
    fn new(shared: &Shared, index: usize, joined_seq: u64) -> Self {
        let streams = if shared.protocol == Protocol::Raw { shared.senders } else { 0 };
        Receiver {
            index,
            group: shared.group_of[index],
            room_seq: SeqTracker::after(joined_seq),
            by_sender: vec![SeqTracker::after(0); streams],
            out: ClientOutcome::default(),
            latency: shared.latency.recorder(index),
        }
    }

    fn on_text(&mut self, frame: &str, shared: &Shared) {
        match shared.protocol {
            Protocol::Palaver => match wire::scan(frame) {
                Some(ServerEvent::Message { seq, text }) => {
                    // Every message occupies a seq, ours or not, so order is judged on all.
                    let arrival = self.room_seq.observe(seq);
                    self.delivery(Stamp::parse(&text), arrival, shared);
                }
                Some(ServerEvent::Ack) => self.out.acks += 1,
                Some(ServerEvent::Error { code, reference }) => {
                    *self.out.errors.entry(code.to_owned()).or_default() += 1;
                    if reference.is_some_and(|r| r.starts_with(&shared.id_prefix)) {
                        self.out.rejected += 1;
                        shared.group_rejected[self.group].fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => {
                    self.out.other += 1;
                    shared.other_frames.add(self.index, 1);
                }
            },
            Protocol::Raw => {
                let stamp = Stamp::parse(frame).filter(|s| s.run == shared.run);
                let tracker =
                    stamp.and_then(|s| Some((s, self.by_sender.get_mut(s.sender as usize)?)));
                let Some((stamp, tracker)) = tracker else {
                    self.out.foreign += 1;
                    return;
                };
                let arrival = tracker.observe(stamp.n);
                self.delivery(Some(stamp), arrival, shared);
            }
        }
    }

    fn delivery(&mut self, stamp: Option<Stamp>, arrival: Arrival, shared: &Shared) {
        let Some(stamp) = stamp.filter(|s| s.run == shared.run) else {
            self.out.foreign += 1;
            return;
        };
        self.out.counts.count(arrival);
        if arrival == Arrival::Duplicate {
            return;
        }
        let now = shared.clock.now_nanos();
        self.latency.record_nanos(now.saturating_sub(stamp.sent_nanos));
        self.out.last_delivery_nanos = now;
        shared.delivered.add(self.index, 1);
    }

    fn finish(mut self) -> ClientOutcome {
        self.latency.flush();
        self.out.unfilled =
            self.room_seq.missing() + self.by_sender.iter().map(SeqTracker::missing).sum::<u64>();
        self.out
    }
}

/// Reads frames until the run stops (`None`) or the connection ends on its own (`Some(why)`).
async fn receive<R>(stream: &mut R, rx: &mut Receiver, shared: &Shared) -> Option<String>
where
    R: Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    let stop = shared.stop.cancelled();
    tokio::pin!(stop);
    loop {
        let item = tokio::select! {
            biased;
            () = &mut stop => return None,
            item = stream.next() => item,
        };
        match item {
            Some(Ok(Message::Text(text))) => rx.on_text(text.as_str(), shared),
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_),
            )) => {}
            other => return Some(client::ended_reason(other.as_ref())),
        }
    }
}

/// Publishes on schedule from the start signal until the end of the run
/// (see [`paced`]); senders are phased evenly so they do not all fire at once.
async fn send<K>(sink: &mut K, sender: usize, shared: &Shared) -> SendOutcome
where
    K: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let schedule = paced::Schedule {
        start: &shared.start,
        stop: &shared.stop,
        duration: shared.duration,
        rate: shared.rate,
        phase: sender as f64 / shared.senders as f64,
        max_batch: MAX_BATCH,
        run: shared.run,
        sender,
        payload: shared.payload,
        clock: &shared.clock,
    };
    let group = shared.group_of[sender];
    let room = &shared.rooms[group % shared.rooms.len()];
    let mut lag = shared.lag.recorder(sender);
    let mut id = String::with_capacity(32);
    let outcome = paced::send(
        sink,
        schedule,
        &mut lag,
        |text, n| match shared.protocol {
            Protocol::Palaver => {
                id.clear();
                let _ = write!(id, "{:08x}-{sender}-{n}", shared.run);
                let mut frame = String::with_capacity(text.len() + room.len() + id.len() + 48);
                wire::write_send(&mut frame, room, &id, text);
                frame
            }
            Protocol::Raw => text.to_owned(),
        },
        |batch| {
            shared.sent.add(sender, batch);
            shared.group_sent[group].fetch_add(batch, Ordering::Relaxed);
        },
    )
    .await;
    shared.senders_done.fetch_add(1, Ordering::Relaxed);
    outcome
}

/// One client's life after it is open: receive (and send, for senders)
/// until the run stops, then close politely.
async fn client(shared: Arc<Shared>, index: usize, opened: Opened) -> ClientOutcome {
    let (mut sink, mut stream) = opened.ws.split();
    let mut rx = Receiver::new(&shared, index, opened.joined_seq);
    let (ended, sent) = if index < shared.senders {
        let (ended, sent) =
            tokio::join!(receive(&mut stream, &mut rx, &shared), send(&mut sink, index, &shared));
        (ended, Some(sent))
    } else {
        (receive(&mut stream, &mut rx, &shared).await, None)
    };
    if ended.is_none() {
        client::close(&mut sink, &mut stream).await;
    }
    let mut out = rx.finish();
    out.ended = ended;
    if let Some(sent) = sent {
        out.sent = sent.sent;
        out.send_error = sent.error;
    }
    out
}

/// Run parameters echoed in the report.
#[derive(Debug, Serialize)]
pub struct FanoutConfig {
    urls: Vec<String>,
    clients: usize,
    rooms: usize,
    senders: usize,
    rate_per_sender: f64,
    payload_bytes: usize,
    duration_secs: f64,
    grace_secs: f64,
    workers: usize,
    source_ips: u32,
}

/// Message counts, loss and throughput.
#[derive(Debug, Default, Serialize)]
pub struct MessageSummary {
    /// Target publish rate of all ready senders together, msgs/s.
    pub target_rate: f64,
    /// Messages written and flushed by senders.
    pub sent: u64,
    /// `sent` over the sending window.
    pub send_rate: f64,
    /// Senders whose socket failed.
    pub send_errors: u64,
    /// `ack` frames received (palaver).
    pub acks: u64,
    /// Sends the server refused with an `error` frame (palaver); they are not expected to arrive.
    pub rejected: u64,
    /// `error` frames received, by code (palaver).
    pub server_errors: BTreeMap<String, u64>,
    /// Deliveries that should have happened: (sent - rejected) x receivers, per group.
    pub expected: u64,
    /// Unique deliveries of this run's messages.
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// `lost / expected`.
    pub loss_ratio: f64,
    /// Deliveries of a message a receiver already had.
    pub duplicates: u64,
    /// Deliveries that filled a gap (arrived after a later one).
    pub out_of_order: u64,
    /// Stream numbers skipped and never filled, summed over receivers.
    pub skipped_unfilled: u64,
    /// Message frames that were not this run's.
    pub foreign: u64,
    /// Other frames (presence, ...) received.
    pub other_frames: u64,
    /// `received` over the delivery window.
    pub delivered_per_sec: f64,
    /// From the start of sending to the last delivery, in seconds (at least the send duration).
    pub delivery_window_secs: f64,
    /// Time spent waiting for stragglers after sending stopped, in seconds.
    pub grace_used_secs: f64,
}

/// The server and the loadgen's own CPU and memory over the measurement.
#[derive(Debug, Serialize)]
pub struct ServerCost {
    /// Per server process.
    pub processes: Vec<ProcUsage>,
    /// All servers' CPU seconds.
    pub cpu_secs: f64,
    /// All servers' CPU seconds per million deliveries.
    pub cpu_secs_per_million_deliveries: f64,
}

/// The `fanout` report.
#[derive(Debug, Serialize)]
pub struct FanoutReport {
    mode: &'static str,
    protocol: Protocol,
    tags: BTreeMap<String, String>,
    config: FanoutConfig,
    connect: ConnectSummary,
    messages: MessageSummary,
    latency_us: LatencySummary,
    send_lag_us: LatencySummary,
    disconnects: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    servers: Option<ServerCost>,
    loadgen: ProcUsage,
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Checks>,
    warnings: Vec<String>,
}

impl FanoutReport {
    /// Whether every requested check passed (true when none were requested).
    pub fn passed(&self) -> bool {
        self.checks.as_ref().is_none_or(|c| c.passed)
    }

    /// The human-readable table.
    pub fn render(&self) -> String {
        let m = &self.messages;
        let c = &self.config;
        let mut rows = vec![(
            "load".into(),
            format!(
                "{} clients, {} rooms, {} senders x {}/s, {} B text, {:.1} s (+{:.1} s grace), {:?}",
                report::count(c.clients as u64),
                c.rooms,
                c.senders,
                c.rate_per_sender,
                c.payload_bytes,
                c.duration_secs,
                c.grace_secs,
                self.protocol
            ),
        )];
        report::connect_rows(&self.connect, &mut rows);
        rows.push((
            "sent".into(),
            format!(
                "{} ({} of target {}){}{}",
                report::count(m.sent),
                report::rate(m.send_rate),
                report::rate(m.target_rate),
                if m.acks > 0 {
                    format!(", {} acks", report::count(m.acks))
                } else {
                    String::new()
                },
                if m.rejected > 0 {
                    format!(", {} refused", report::count(m.rejected))
                } else {
                    String::new()
                }
            ),
        ));
        rows.push((
            "deliveries".into(),
            format!(
                "{} of {} expected, lost {} ({:.4}%)",
                report::count(m.received),
                report::count(m.expected),
                report::count(m.lost),
                m.loss_ratio * 100.0
            ),
        ));
        rows.push((
            "  anomalies".into(),
            format!(
                "{} duplicates, {} out of order, {} skipped, {} foreign",
                m.duplicates, m.out_of_order, m.skipped_unfilled, m.foreign
            ),
        ));
        for (code, n) in &m.server_errors {
            rows.push(("  server error".into(), format!("{}  {code}", report::count(*n))));
        }
        rows.push((
            "throughput".into(),
            format!(
                "{} delivered over {:.2} s (grace used {:.2} s)",
                report::rate(m.delivered_per_sec),
                m.delivery_window_secs,
                m.grace_used_secs
            ),
        ));
        rows.push(("latency".into(), report::latency_line(&self.latency_us)));
        rows.push((
            "send lag".into(),
            format!(
                "p99 {}  max {}",
                report::micros(self.send_lag_us.p99),
                report::micros(self.send_lag_us.max)
            ),
        ));
        for (why, n) in &self.disconnects {
            rows.push(("disconnected".into(), format!("{}  {why}", report::count(*n))));
        }
        let servers = self.servers.as_ref().map_or(&[][..], |s| &s.processes[..]);
        report::usage_rows(servers, &self.loadgen, c.workers, &mut rows);
        if let Some(s) = &self.servers {
            rows.push((
                "server cost".into(),
                format!("{:.3} CPU-s per million deliveries", s.cpu_secs_per_million_deliveries),
            ));
        }
        if let Some(checks) = &self.checks {
            let verdict =
                if checks.passed { "PASS".to_owned() } else { checks.failures.join("; ") };
            rows.push(("checks".into(), verdict));
        }
        for w in &self.warnings {
            rows.push(("warning".into(), w.clone()));
        }
        report::table("palaver-loadgen fanout", &rows)
    }
}

/// Runs `fanout`.
pub async fn run(
    common: &Common,
    args: &FanoutArgs,
    workers: usize,
    progress: &Progress,
) -> anyhow::Result<FanoutReport> {
    let mut targets = Vec::new();
    for url in &common.urls {
        targets.push(client::resolve(url).await?);
    }
    let dialer = Arc::new(Dialer::new(common, targets, args.clients)?);
    let raw = common.protocol == Protocol::Raw;
    let rooms = if raw { 1 } else { args.rooms };
    let run_tag: u32 = rand::random();
    let room_names: Vec<String> = (0..rooms).map(|r| format!("lg-{r}")).collect();
    let group_of: Vec<usize> =
        (0..args.clients).map(|i| if raw { dialer.target_of(i) } else { i % rooms }).collect();
    let groups = if raw { common.urls.len() } else { rooms };
    let (start_tx, start_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        protocol: common.protocol,
        clock: Clock::new(),
        run: run_tag,
        payload: args.payload,
        rate: args.rate,
        senders: args.senders,
        duration: args.duration,
        rooms: room_names.clone(),
        group_of,
        stop: CancellationToken::new(),
        start: start_rx,
        delivered: ShardedCounter::default(),
        other_frames: ShardedCounter::default(),
        sent: ShardedCounter::default(),
        group_sent: (0..groups).map(|_| AtomicU64::new(0)).collect(),
        group_rejected: (0..groups).map(|_| AtomicU64::new(0)).collect(),
        id_prefix: format!("{run_tag:08x}-"),
        senders_done: AtomicUsize::new(0),
        latency: LatencySink::new(workers * 4),
        lag: LatencySink::new(4),
    });
    let _stop_on_exit = shared.stop.clone().drop_guard();

    // Open every client.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let body_shared = shared.clone();
    let mut tasks = swarm::launch(
        args.clients,
        dialer.clone(),
        common.connect_concurrency,
        |i| (!raw).then(|| room_names[i % rooms].clone()),
        move |i, opened| client(body_shared.clone(), i, opened),
        events_tx,
    );
    let (connect, ready) = swarm::collect(args.clients, &mut events, progress).await;
    let ready_count = connect.ok;
    if ready_count == 0 {
        anyhow::bail!(
            "no client could connect: {}",
            connect.first_error.clone().unwrap_or_else(|| "unknown error".into())
        );
    }
    let mut members = vec![0u64; groups];
    for (i, ok) in ready.iter().enumerate() {
        if *ok {
            members[shared.group_of[i]] += 1;
        }
    }
    let ready_senders = ready[..args.senders].iter().filter(|r| **r).count();
    let mut warnings = Vec::new();

    // Joins fan presence out to everyone in the room; let it drain before measuring.
    if !raw && !settle(&shared.other_frames, progress).await {
        warnings.push(format!("setup traffic was still arriving after {SETTLE_MAX:?}"));
    }

    // Measure.
    let mut pids: Vec<Pid> = common.server_pids.iter().map(|&p| Pid::Other(p)).collect();
    pids.push(Pid::Current);
    let window = ProcWindow::start(&pids);
    let start = Instant::now() + Duration::from_millis(20);
    start_tx.send_replace(Some(start));
    let expected_now = || -> u64 {
        (0..groups)
            .map(|g| {
                let sent = shared.group_sent[g].load(Ordering::Relaxed);
                let rejected = shared.group_rejected[g].load(Ordering::Relaxed);
                sent.saturating_sub(rejected) * members[g]
            })
            .sum()
    };
    let watch = window::Watch {
        sent: &shared.sent,
        delivered: &shared.delivered,
        senders_done: &shared.senders_done,
        senders: ready_senders,
    };
    let window::Window { send_secs, grace_used } =
        window::run(progress, watch, start, args.duration, args.grace, expected_now).await;
    let mut usage = window.finish();
    let loadgen = usage.pop().unwrap_or_default();

    // Stop everyone and gather what they saw.
    progress.spinner("closing");
    shared.stop.cancel();
    let mut total = ClientOutcome::default();
    let mut disconnects: BTreeMap<String, u64> = BTreeMap::new();
    let mut send_errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok(Some(out)) = joined else { continue };
        total.counts.merge(&out.counts);
        total.unfilled += out.unfilled;
        total.foreign += out.foreign;
        total.acks += out.acks;
        total.rejected += out.rejected;
        total.other += out.other;
        total.sent += out.sent;
        total.last_delivery_nanos = total.last_delivery_nanos.max(out.last_delivery_nanos);
        for (code, n) in out.errors {
            *total.errors.entry(code).or_default() += n;
        }
        if let Some(why) = out.ended {
            *disconnects.entry(why).or_default() += 1;
        }
        if out.send_error.is_some() {
            send_errors += 1;
        }
    }
    progress.finish();

    // Every task has ended: the counters are final.
    let expected = expected_now();
    let received = total.counts.unique;
    let (lost, loss_ratio) = report::loss(expected, received);
    let start_nanos = shared.clock.nanos_at(start.into_std());
    let delivery_secs = (total.last_delivery_nanos.saturating_sub(start_nanos) as f64 / 1e9)
        .max(args.duration.as_secs_f64());
    let messages = MessageSummary {
        target_rate: ready_senders as f64 * args.rate,
        sent: total.sent,
        send_rate: total.sent as f64 / send_secs,
        send_errors,
        acks: total.acks,
        rejected: total.rejected,
        server_errors: total.errors,
        expected,
        received,
        lost,
        loss_ratio,
        duplicates: total.counts.duplicates,
        out_of_order: total.counts.out_of_order,
        skipped_unfilled: total.unfilled,
        foreign: total.foreign,
        other_frames: total.other,
        delivered_per_sec: report::ratio(received as f64, delivery_secs),
        delivery_window_secs: delivery_secs,
        grace_used_secs: grace_used,
    };
    let latency_us = LatencySummary::from_micros_histogram(&shared.latency.merged());
    let send_lag_us = LatencySummary::from_micros_histogram(&shared.lag.merged());
    let servers = (!usage.is_empty()).then(|| {
        let cpu_secs = usage.iter().map(|u| u.cpu_secs).sum();
        ServerCost {
            cpu_secs_per_million_deliveries: report::cpu_per_million(cpu_secs, received),
            cpu_secs,
            processes: usage,
        }
    });
    if send_errors > 0 {
        warnings.push(format!("{send_errors} senders' connections failed while sending"));
    }
    if messages.rejected > 0 {
        warnings.push(format!(
            "the server refused {} sends (see server errors; palaver's --rate-limit?)",
            messages.rejected
        ));
    }
    if connect.failed > 0 {
        warnings.push(format!("{} clients failed to connect", connect.failed));
    }
    if messages.send_rate < 0.98 * messages.target_rate {
        warnings.push(format!(
            "senders reached only {:.1}% of the target rate (server push-back or loadgen overload)",
            100.0 * report::ratio(messages.send_rate, messages.target_rate)
        ));
    }
    if loadgen.cpu_cores > 0.9 * workers as f64 {
        warnings.push(format!(
            "the loadgen used {:.2} of its {workers} worker cores: it may be the bottleneck",
            loadgen.cpu_cores
        ));
    }
    let checks = evaluate(args, &messages, &latency_us);
    Ok(FanoutReport {
        mode: "fanout",
        protocol: common.protocol,
        tags: report::tags(&common.tags),
        config: FanoutConfig {
            urls: common.urls.clone(),
            clients: args.clients,
            rooms,
            senders: args.senders,
            rate_per_sender: args.rate,
            payload_bytes: args.payload,
            duration_secs: args.duration.as_secs_f64(),
            grace_secs: args.grace.as_secs_f64(),
            workers,
            source_ips: dialer.source_ips(),
        },
        connect,
        messages,
        latency_us,
        send_lag_us,
        disconnects,
        servers,
        loadgen,
        checks,
        warnings,
    })
}

/// Waits until no setup frame has arrived for a short while; false on timeout.
pub(crate) async fn settle(frames: &ShardedCounter, progress: &Progress) -> bool {
    progress.spinner("settling");
    let deadline = Instant::now() + SETTLE_MAX;
    let mut last = frames.get();
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        sleep(Duration::from_millis(50)).await;
        let now = frames.get();
        if now != last {
            last = now;
            quiet_since = Instant::now();
            progress.message(format!("{} setup frames", report::count(now)));
        } else if quiet_since.elapsed() >= SETTLE_QUIET {
            return true;
        }
    }
    false
}

/// Applies the requested checks; `None` when none were requested.
fn evaluate(args: &FanoutArgs, m: &MessageSummary, latency: &LatencySummary) -> Option<Checks> {
    if args.max_p99.is_none() && args.max_loss_ratio.is_none() && args.min_send_ratio.is_none() {
        return None;
    }
    let mut failures = Vec::new();
    if let Some(max) = args.max_p99 {
        let max_us = max.as_micros() as f64;
        if latency.count == 0 || latency.p99 > max_us {
            failures.push(format!(
                "p99 {} > {}",
                report::micros(latency.p99),
                report::micros(max_us)
            ));
        }
    }
    if let Some(max) = args.max_loss_ratio {
        if m.loss_ratio > max || m.expected == 0 {
            failures.push(format!("loss {:.6} > {max}", m.loss_ratio));
        }
        // A refused send is a message that never reached anyone.
        let refused = report::ratio(m.rejected as f64, m.sent as f64);
        if refused > max {
            failures.push(format!("{} sends refused ({refused:.6} > {max})", m.rejected));
        }
    }
    if let Some(min) = args.min_send_ratio {
        let achieved = report::ratio(m.send_rate, m.target_rate);
        if achieved < min {
            failures.push(format!("send rate {:.3} of target < {min}", achieved));
        }
    }
    Some(Checks { passed: failures.is_empty(), failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(protocol: Protocol, senders: usize) -> Shared {
        let (_tx, rx) = watch::channel(None);
        Shared {
            protocol,
            clock: Clock::new(),
            run: 0xabcd,
            payload: 64,
            rate: 1.0,
            senders,
            duration: Duration::from_secs(1),
            rooms: vec!["lg-0".into()],
            group_of: vec![0; 4],
            stop: CancellationToken::new(),
            start: rx,
            delivered: ShardedCounter::default(),
            other_frames: ShardedCounter::default(),
            sent: ShardedCounter::default(),
            group_sent: vec![AtomicU64::new(0)],
            group_rejected: vec![AtomicU64::new(0)],
            id_prefix: "0000abcd-".into(),
            senders_done: AtomicUsize::new(0),
            latency: LatencySink::new(1),
            lag: LatencySink::new(1),
        }
    }

    fn text(run: u32, sender: u32, n: u64) -> String {
        let mut t = String::new();
        Stamp { run, sender, n, sent_nanos: Clock::new().now_nanos() }.write(&mut t, 40);
        t
    }

    fn message(seq: u64, text: &str) -> String {
        format!(
            r#"{{"type":"message","room":"lg-0","epoch":"e","seq":{seq},"id":"x","user":"lg1","text":"{text}","ts":1}}"#
        )
    }

    #[test]
    fn palaver_receiver_accounts_by_seq() {
        let s = shared(Protocol::Palaver, 1);
        let mut rx = Receiver::new(&s, 0, 10);
        for seq in [11, 13, 12, 12, 14] {
            rx.on_text(&message(seq, &text(0xabcd, 0, seq)), &s);
        }
        rx.on_text(&message(15, "hello"), &s); // someone else's message
        rx.on_text(&message(16, &text(0x1234, 0, 1)), &s); // another run's
        rx.on_text(r#"{"type":"ack","id":"x","room":"lg-0","seq":11,"duplicate":false}"#, &s);
        rx.on_text(r#"{"type":"presence","room":"lg-0","user":"lg2","state":"join"}"#, &s);
        rx.on_text(
            r#"{"type":"error","code":"rate_limited","message":"m","ref":"0000abcd-0-9","retryable":true}"#,
            &s,
        );
        rx.on_text(r#"{"type":"error","code":"bad_json","message":"m","retryable":false}"#, &s);
        let out = rx.finish();
        assert_eq!(out.counts, OrderCounts { unique: 4, duplicates: 1, out_of_order: 1 });
        assert_eq!(out.foreign, 2);
        assert_eq!(out.acks, 1);
        assert_eq!(out.other, 1);
        assert_eq!(out.errors.get("rate_limited"), Some(&1));
        assert_eq!(out.errors.get("bad_json"), Some(&1));
        assert_eq!(out.rejected, 1);
        assert_eq!(s.group_rejected[0].load(Ordering::Relaxed), 1);
        assert_eq!(out.unfilled, 0);
        assert_eq!(s.delivered.get(), 4);
        assert_eq!(s.latency.merged().len(), 4);
    }

    #[test]
    fn raw_receiver_accounts_per_sender() {
        let s = shared(Protocol::Raw, 2);
        let mut rx = Receiver::new(&s, 1, 0);
        for (sender, n) in [(0, 1), (1, 1), (0, 3), (1, 2), (0, 2), (1, 2), (5, 1)] {
            rx.on_text(&text(0xabcd, sender, n), &s);
        }
        rx.on_text("not a stamp", &s);
        let out = rx.finish();
        // Sender 5 does not exist: foreign, like the garbage frame.
        assert_eq!(out.counts, OrderCounts { unique: 5, duplicates: 1, out_of_order: 1 });
        assert_eq!(out.foreign, 2);
        assert_eq!(s.delivered.get(), 5);
    }

    #[test]
    fn unfilled_gaps_are_reported() {
        let s = shared(Protocol::Palaver, 1);
        let mut rx = Receiver::new(&s, 0, 0);
        rx.on_text(&message(1, &text(0xabcd, 0, 1)), &s);
        rx.on_text(&message(4, &text(0xabcd, 0, 4)), &s);
        assert_eq!(rx.finish().unfilled, 2);
    }

    #[test]
    fn checks() {
        let args = |p99: Option<u64>, loss: Option<f64>, send: Option<f64>| FanoutArgs {
            clients: 1,
            rooms: 1,
            senders: 1,
            rate: 1.0,
            payload: 1,
            duration: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            max_p99: p99.map(Duration::from_millis),
            max_loss_ratio: loss,
            min_send_ratio: send,
        };
        let m = MessageSummary {
            expected: 100,
            received: 99,
            lost: 1,
            loss_ratio: 0.01,
            send_rate: 9.0,
            target_rate: 10.0,
            ..MessageSummary::default()
        };
        let l = LatencySummary { count: 10, p99: 50_000.0, ..LatencySummary::default() };
        assert!(evaluate(&args(None, None, None), &m, &l).is_none());
        assert!(evaluate(&args(Some(100), None, None), &m, &l).is_some_and(|c| c.passed));
        assert!(evaluate(&args(Some(10), None, None), &m, &l).is_some_and(|c| !c.passed));
        let c = evaluate(&args(Some(100), Some(0.0), Some(0.95)), &m, &l).expect("checks");
        assert_eq!(c.failures.len(), 2, "{:?}", c.failures);
        assert!(evaluate(&args(None, Some(0.02), Some(0.9)), &m, &l).is_some_and(|c| c.passed));
    }
}
