//! `chat`: many small rooms in which every member sends, the traffic real chat
//! has. Fan-out (one big room) measures the cost per *delivery*; this mode
//! measures the cost per *message*: gateway and redis-server CPU per message
//! sent, end-to-end latency, and loss, duplicates and order per room.
//!
//! Layout: room `r` has members `r x M .. r x M + M - 1` (client indices);
//! member `m` of room `r` connects to node `(r + m) mod N`, so with several
//! nodes a room's members sit on different nodes and every message crosses
//! the broker. Each client joins its room, then sends at its own rate from a
//! random phase (so the clients do not fire together).
//!
//! Accounting, per receiving member (see [`Ledger`]): a message is identified
//! by its sender and the sender's counter in the stamp, so "exactly once" is
//! judged on content, not on the server's numbering; order is judged twice,
//! on the room's `seq` (gap-free, increasing) and on each sender's counter
//! (a sender's messages in the order it sent them). A message of this run
//! from a client of another room is *misrouted*. Every ready member receives
//! every accepted message of its room, its own included, so
//! `expected = Σ_rooms (sent - refused) x ready members`.

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
    time::Instant,
};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_util::sync::CancellationToken;

use crate::{
    cli::{ChatArgs, Common, Protocol},
    client::{self, Dialer, Opened},
    clock::Clock,
    counter::ShardedCounter,
    fanout::settle,
    latency::{LatencySink, Recorder},
    order::{Arrival, OrderCounts, SeqTracker},
    paced::{self, SendOutcome},
    procstat::{self, Pid},
    progress::Progress,
    report::{self, Checks, ConnectSummary, LatencySummary, ProcUsage, ProcWindow},
    stamp::Stamp,
    swarm, window,
    wire::{self, ServerEvent},
};

/// Most messages one client writes per wake-up before flushing.
const MAX_BATCH: u64 = 256;
/// Send lag p99 above which the run is flagged: on a quiet machine it is ~2 ms,
/// so more means the loadgen (or its core) was busy and the figures are suspect.
const SEND_LAG_WARNING_US: f64 = 10_000.0;

/// Where client `i` sits: its room and its member slot in that room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seat {
    /// Room index.
    pub room: usize,
    /// Member slot within the room, from 0.
    pub member: usize,
}

impl Seat {
    /// The seat of client `i` with `members` per room.
    pub fn of(i: usize, members: usize) -> Seat {
        Seat { room: i / members, member: i % members }
    }

    /// The node this seat connects to: `(room + member) mod nodes`.
    pub fn node(self, nodes: usize) -> usize {
        (self.room + self.member) % nodes.max(1)
    }
}

/// What one frame meant to a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A new message of this run, sent at this Unix time (nanoseconds).
    Delivery {
        /// The stamp's send time.
        sent_nanos: u64,
    },
    /// A message already received (or misrouted, or not this run's): no latency sample.
    Nothing,
    /// The server refused one of this run's sends.
    Refused,
}

/// One member's view of its room: loss, duplicate and order accounting.
#[derive(Debug, Clone)]
pub struct Ledger {
    run: u32,
    /// Client index of the room's member 0.
    first: usize,
    id_prefix: String,
    room_seq: SeqTracker,
    /// Per room member: that sender's message counter.
    by_sender: Vec<SeqTracker>,
    /// Unique / duplicate / late arrivals by message identity (sender, counter).
    pub counts: OrderCounts,
    /// Room `seq`s that arrived below a later one (late) or twice.
    pub seq_out_of_order: u64,
    /// Room `seq`s delivered again.
    pub seq_duplicates: u64,
    /// This run's messages from clients of another room.
    pub misrouted: u64,
    /// Message frames that are not this run's.
    pub foreign: u64,
    /// `ack` frames.
    pub acks: u64,
    /// This run's sends refused with an `error` frame.
    pub refused: u64,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Other frames (presence, ...).
    pub other: u64,
}

/// Final counts of one member, merged into the report.
#[derive(Debug, Clone, Default)]
pub struct LedgerTotals {
    /// As [`Ledger::counts`].
    pub counts: OrderCounts,
    /// Room `seq`s skipped and never filled.
    pub seq_unfilled: u64,
    /// Sender counters skipped and never filled (lost messages seen as gaps).
    pub sender_unfilled: u64,
    /// Room `seq`s that arrived late (see [`Ledger::seq_out_of_order`]).
    pub seq_out_of_order: u64,
    /// Room `seq`s delivered again.
    pub seq_duplicates: u64,
    /// This run's messages from clients of another room.
    pub misrouted: u64,
    /// Message frames that are not this run's.
    pub foreign: u64,
    /// `ack` frames.
    pub acks: u64,
    /// This run's sends refused with an `error` frame.
    pub refused: u64,
    /// `error` frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Other frames (presence, ...).
    pub other: u64,
}

impl LedgerTotals {
    /// Deliveries that broke exactly-once or order.
    pub fn anomalies(&self) -> u64 {
        self.counts.duplicates
            + self.counts.out_of_order
            + self.seq_out_of_order
            + self.seq_duplicates
            + self.misrouted
    }

    /// Adds another member's totals.
    pub fn merge(&mut self, o: &LedgerTotals) {
        self.counts.merge(&o.counts);
        self.seq_unfilled += o.seq_unfilled;
        self.sender_unfilled += o.sender_unfilled;
        self.seq_out_of_order += o.seq_out_of_order;
        self.seq_duplicates += o.seq_duplicates;
        self.misrouted += o.misrouted;
        self.foreign += o.foreign;
        self.acks += o.acks;
        self.refused += o.refused;
        self.other += o.other;
        for (code, n) in &o.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
    }
}

impl Ledger {
    /// The ledger of a member of the room whose member 0 is client `first`,
    /// joined when the room's head was `joined_seq`.
    pub fn new(run: u32, first: usize, members: usize, joined_seq: u64) -> Self {
        Ledger {
            run,
            first,
            id_prefix: format!("{run:08x}-"),
            room_seq: SeqTracker::after(joined_seq),
            by_sender: vec![SeqTracker::after(0); members],
            counts: OrderCounts::default(),
            seq_out_of_order: 0,
            seq_duplicates: 0,
            misrouted: 0,
            foreign: 0,
            acks: 0,
            refused: 0,
            errors: BTreeMap::new(),
            other: 0,
        }
    }

    /// Accounts one text frame.
    pub fn on_text(&mut self, frame: &str) -> Seen {
        match wire::scan(frame) {
            Some(ServerEvent::Message { seq, text }) => {
                // Every message occupies a seq, ours or not: order is judged on all.
                match self.room_seq.observe(seq) {
                    Arrival::Late => self.seq_out_of_order += 1,
                    Arrival::Duplicate => self.seq_duplicates += 1,
                    Arrival::InOrder | Arrival::Skipped(_) => {}
                }
                let Some(stamp) = Stamp::parse(&text).filter(|s| s.run == self.run) else {
                    self.foreign += 1;
                    return Seen::Nothing;
                };
                let slot = (stamp.sender as usize).checked_sub(self.first);
                let Some(tracker) = slot.and_then(|s| self.by_sender.get_mut(s)) else {
                    self.misrouted += 1;
                    return Seen::Nothing;
                };
                let arrival = tracker.observe(stamp.n);
                self.counts.count(arrival);
                if arrival == Arrival::Duplicate {
                    return Seen::Nothing;
                }
                Seen::Delivery { sent_nanos: stamp.sent_nanos }
            }
            Some(ServerEvent::Ack) => {
                self.acks += 1;
                Seen::Nothing
            }
            Some(ServerEvent::Error { code, reference }) => {
                *self.errors.entry(code.to_owned()).or_default() += 1;
                if reference.is_some_and(|r| r.starts_with(&self.id_prefix)) {
                    self.refused += 1;
                    return Seen::Refused;
                }
                Seen::Nothing
            }
            _ => {
                self.other += 1;
                Seen::Nothing
            }
        }
    }

    /// The final counts (gaps still open now count as unfilled).
    pub fn finish(self) -> LedgerTotals {
        LedgerTotals {
            counts: self.counts,
            seq_unfilled: self.room_seq.missing(),
            sender_unfilled: self.by_sender.iter().map(SeqTracker::missing).sum(),
            seq_out_of_order: self.seq_out_of_order,
            seq_duplicates: self.seq_duplicates,
            misrouted: self.misrouted,
            foreign: self.foreign,
            acks: self.acks,
            refused: self.refused,
            errors: self.errors,
            other: self.other,
        }
    }
}

/// State every client task of a run shares.
struct Shared {
    clock: Clock,
    run: u32,
    members: usize,
    payload: usize,
    rate: f64,
    duration: Duration,
    rooms: Vec<String>,
    stop: CancellationToken,
    start: watch::Receiver<Option<Instant>>,
    /// Unique deliveries of this run's messages.
    delivered: ShardedCounter,
    /// Frames other than messages, acks and errors (presence, mostly from setup).
    other_frames: ShardedCounter,
    sent: ShardedCounter,
    room_sent: Vec<AtomicU64>,
    room_refused: Vec<AtomicU64>,
    senders_done: AtomicUsize,
    latency: Arc<LatencySink>,
    lag: Arc<LatencySink>,
}

/// What one client saw and did, merged into the report at the end.
struct ClientOutcome {
    room: usize,
    ledger: LedgerTotals,
    last_delivery_nanos: u64,
    ended: Option<String>,
    sent: u64,
    send_error: bool,
}

/// Reads frames until the run stops (`None`) or the connection ends on its own (`Some(why)`).
async fn receive<R>(
    stream: &mut R,
    ledger: &mut Ledger,
    index: usize,
    room: usize,
    latency: &mut Recorder,
    last_delivery: &mut u64,
    shared: &Shared,
) -> Option<String>
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
            Some(Ok(Message::Text(text))) => {
                let other = ledger.other;
                match ledger.on_text(text.as_str()) {
                    Seen::Delivery { sent_nanos } => {
                        let now = shared.clock.now_nanos();
                        latency.record_nanos(now.saturating_sub(sent_nanos));
                        *last_delivery = now;
                        shared.delivered.add(index, 1);
                    }
                    Seen::Refused => {
                        shared.room_refused[room].fetch_add(1, Ordering::Relaxed);
                    }
                    Seen::Nothing if ledger.other > other => shared.other_frames.add(index, 1),
                    Seen::Nothing => {}
                }
            }
            Some(Ok(
                Message::Ping(_) | Message::Pong(_) | Message::Binary(_) | Message::Frame(_),
            )) => {}
            other => return Some(client::ended_reason(other.as_ref())),
        }
    }
}

/// Sends on schedule from the start signal until the end of the run (see
/// [`paced`]), the phase drawn at random within one period.
async fn send<K>(sink: &mut K, index: usize, room: usize, shared: &Shared) -> SendOutcome
where
    K: Sink<Message, Error = tungstenite::Error> + Unpin,
{
    let schedule = paced::Schedule {
        start: &shared.start,
        stop: &shared.stop,
        duration: shared.duration,
        rate: shared.rate,
        phase: rand::random::<f64>(),
        max_batch: MAX_BATCH,
        run: shared.run,
        sender: index,
        payload: shared.payload,
        clock: &shared.clock,
    };
    let room_name = &shared.rooms[room];
    let mut lag = shared.lag.recorder(index);
    let mut id = String::with_capacity(32);
    let outcome = paced::send(
        sink,
        schedule,
        &mut lag,
        |text, n| {
            id.clear();
            let _ = write!(id, "{:08x}-{index}-{n}", shared.run);
            let mut frame = String::with_capacity(text.len() + room_name.len() + id.len() + 48);
            wire::write_send(&mut frame, room_name, &id, text);
            frame
        },
        |batch| {
            shared.sent.add(index, batch);
            shared.room_sent[room].fetch_add(batch, Ordering::Relaxed);
        },
    )
    .await;
    shared.senders_done.fetch_add(1, Ordering::Relaxed);
    outcome
}

/// One client's life after it joined: receive and send until the run stops,
/// then close politely.
async fn client(shared: Arc<Shared>, index: usize, opened: Opened) -> ClientOutcome {
    let seat = Seat::of(index, shared.members);
    let first = seat.room * shared.members;
    let mut ledger = Ledger::new(shared.run, first, shared.members, opened.joined_seq);
    let mut latency = shared.latency.recorder(index);
    let mut last_delivery_nanos = 0;
    let (mut sink, mut stream) = opened.ws.split();
    let (ended, sent) = tokio::join!(
        receive(
            &mut stream,
            &mut ledger,
            index,
            seat.room,
            &mut latency,
            &mut last_delivery_nanos,
            &shared
        ),
        send(&mut sink, index, seat.room, &shared)
    );
    if ended.is_none() {
        client::close(&mut sink, &mut stream).await;
    }
    latency.flush();
    ClientOutcome {
        room: seat.room,
        ledger: ledger.finish(),
        last_delivery_nanos,
        ended,
        sent: sent.sent,
        send_error: sent.error.is_some(),
    }
}

/// Run parameters echoed in the report.
#[derive(Debug, Serialize)]
pub struct ChatConfig {
    urls: Vec<String>,
    rooms: usize,
    members: usize,
    clients: usize,
    rate_per_client: f64,
    payload_bytes: usize,
    duration_secs: f64,
    grace_secs: f64,
    workers: usize,
    source_ips: u32,
}

/// Message counts, loss, order and throughput.
#[derive(Debug, Default, Serialize)]
pub struct ChatMessages {
    /// Offered load: ready clients x rate, msgs/s.
    pub target_rate: f64,
    /// Messages written and flushed by clients.
    pub sent: u64,
    /// `sent` over the sending window: the offered load achieved, msgs/s.
    pub send_rate: f64,
    /// Clients whose socket failed while sending.
    pub send_errors: u64,
    /// `ack` frames received.
    pub acks: u64,
    /// Sends the server refused with an `error` frame; they are not expected to arrive.
    pub rejected: u64,
    /// `error` frames received, by code.
    pub server_errors: BTreeMap<String, u64>,
    /// Deliveries that should have happened: Σ rooms (sent - refused) x ready members.
    pub expected: u64,
    /// Unique deliveries of this run's messages.
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// `lost / expected`.
    pub loss_ratio: f64,
    /// Deliveries of a message (sender, counter) a member already had.
    pub duplicates: u64,
    /// New deliveries that arrived after a later message of the same sender.
    pub out_of_order: u64,
    /// Room `seq`s that arrived after a later one.
    pub seq_out_of_order: u64,
    /// Room `seq`s delivered twice.
    pub seq_duplicates: u64,
    /// Room `seq`s skipped and never filled, summed over members.
    pub seq_unfilled: u64,
    /// This run's messages delivered to a member of another room.
    pub misrouted: u64,
    /// Message frames that were not this run's.
    pub foreign: u64,
    /// Other frames (presence, ...) received.
    pub other_frames: u64,
    /// Rooms in which some member missed some message.
    pub rooms_with_loss: u64,
    /// Rooms with a duplicate, out-of-order or misrouted delivery.
    pub rooms_with_anomalies: u64,
    /// Deliveries per second over the delivery window.
    pub deliveries_per_sec: f64,
    /// Messages per second delivered to their whole room: deliveries/s divided
    /// by the receivers per accepted message (`expected / (sent - rejected)`).
    pub delivered_msgs_per_sec: f64,
    /// From the start of sending to the last delivery, in seconds (at least the send duration).
    pub delivery_window_secs: f64,
    /// Time spent waiting for stragglers after sending stopped, in seconds.
    pub grace_used_secs: f64,
}

/// CPU and memory of a group of processes (the gateways, or Redis) over the measurement.
#[derive(Debug, Serialize)]
pub struct ProcessCost {
    /// Per process.
    pub processes: Vec<ProcUsage>,
    /// Their CPU seconds together.
    pub cpu_secs: f64,
    /// Cores they kept busy together.
    pub cpu_cores: f64,
    /// CPU microseconds per message sent.
    pub cpu_us_per_message: f64,
    /// CPU microseconds per delivery.
    pub cpu_us_per_delivery: f64,
    /// RSS at the end, KiB, summed.
    pub rss_kib_end: u64,
}

impl ProcessCost {
    fn of(processes: Vec<ProcUsage>, secs: f64, sent: u64, deliveries: u64) -> Self {
        let cpu_secs: f64 = processes.iter().map(|p| p.cpu_secs).sum();
        ProcessCost {
            cpu_cores: report::ratio(cpu_secs, secs),
            cpu_us_per_message: report::ratio(cpu_secs * 1e6, sent as f64),
            cpu_us_per_delivery: report::ratio(cpu_secs * 1e6, deliveries as f64),
            rss_kib_end: processes.iter().map(|p| p.rss_kib_end).sum(),
            cpu_secs,
            processes,
        }
    }
}

/// The `chat` report.
#[derive(Debug, Serialize)]
pub struct ChatReport {
    mode: &'static str,
    protocol: Protocol,
    tags: BTreeMap<String, String>,
    config: ChatConfig,
    connect: ConnectSummary,
    messages: ChatMessages,
    latency_us: LatencySummary,
    send_lag_us: LatencySummary,
    disconnects: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateways: Option<ProcessCost>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<ProcessCost>,
    loadgen: ProcUsage,
    loadgen_cpu_us_per_message: f64,
    /// The machine's 1-minute load average when measuring began and ended.
    load_average: [Option<f64>; 2],
    #[serde(skip_serializing_if = "Option::is_none")]
    checks: Option<Checks>,
    warnings: Vec<String>,
}

impl ChatReport {
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
                "{} rooms x {} members on {} nodes, {}/s each, {} B text, {:.1} s (+{:.1} s grace)",
                report::count(c.rooms as u64),
                c.members,
                c.urls.len(),
                c.rate_per_client,
                c.payload_bytes,
                c.duration_secs,
                c.grace_secs,
            ),
        )];
        report::connect_rows(&self.connect, &mut rows);
        rows.push((
            "sent".into(),
            format!(
                "{} ({} of target {}), {} acks, {} refused",
                report::count(m.sent),
                report::rate(m.send_rate),
                report::rate(m.target_rate),
                report::count(m.acks),
                report::count(m.rejected)
            ),
        ));
        rows.push((
            "deliveries".into(),
            format!(
                "{} of {} expected, lost {} ({:.4}%) in {} rooms",
                report::count(m.received),
                report::count(m.expected),
                report::count(m.lost),
                m.loss_ratio * 100.0,
                m.rooms_with_loss
            ),
        ));
        rows.push((
            "  anomalies".into(),
            format!(
                "{} duplicates, {} out of order, seq: {} late {} repeated {} unfilled, {} misrouted, {} foreign",
                m.duplicates,
                m.out_of_order,
                m.seq_out_of_order,
                m.seq_duplicates,
                m.seq_unfilled,
                m.misrouted,
                m.foreign
            ),
        ));
        for (code, n) in &m.server_errors {
            rows.push(("  server error".into(), format!("{}  {code}", report::count(*n))));
        }
        rows.push((
            "throughput".into(),
            format!(
                "{} msgs delivered, {} deliveries over {:.2} s (grace used {:.2} s)",
                report::rate(m.delivered_msgs_per_sec),
                report::rate(m.deliveries_per_sec),
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
        for (name, cost) in [("gateways", &self.gateways), ("redis", &self.redis)] {
            if let Some(cost) = cost {
                rows.push((
                    name.into(),
                    format!(
                        "{:.1} µs CPU per message ({:.2} cores, {:.2} CPU-s), RSS {}",
                        cost.cpu_us_per_message,
                        cost.cpu_cores,
                        cost.cpu_secs,
                        report::kib(cost.rss_kib_end)
                    ),
                ));
                for p in cost.processes.iter().filter_map(|p| p.error.as_ref().map(|e| (p, e))) {
                    rows.push((
                        format!("  pid {}", p.0.pid.unwrap_or(0)),
                        format!("unreadable: {}", p.1),
                    ));
                }
            }
        }
        rows.push((
            "loadgen".into(),
            format!(
                "{:.1} µs CPU per message ({:.2} of {} worker cores), RSS {}",
                self.loadgen_cpu_us_per_message,
                self.loadgen.cpu_cores,
                c.workers,
                report::kib(self.loadgen.rss_kib_end)
            ),
        ));
        if let [Some(before), Some(after)] = self.load_average {
            rows.push(("load average".into(), format!("{before:.2} -> {after:.2} (1 min)")));
        }
        if let Some(checks) = &self.checks {
            let verdict =
                if checks.passed { "PASS".to_owned() } else { checks.failures.join("; ") };
            rows.push(("checks".into(), verdict));
        }
        for w in &self.warnings {
            rows.push(("warning".into(), w.clone()));
        }
        report::table("palaver-loadgen chat", &rows)
    }
}

/// Runs `chat`.
pub async fn run(
    common: &Common,
    args: &ChatArgs,
    workers: usize,
    progress: &Progress,
) -> anyhow::Result<ChatReport> {
    let mut targets = Vec::new();
    for url in &common.urls {
        targets.push(client::resolve(url).await?);
    }
    let nodes = targets.len();
    let clients = args.rooms * args.members;
    let placement = (0..clients).map(|i| Seat::of(i, args.members).node(nodes)).collect();
    let dialer = Arc::new(Dialer::new(common, targets, clients)?.with_placement(placement));
    let run_tag: u32 = rand::random();
    let room_names: Vec<String> = (0..args.rooms).map(|r| format!("chat-{r}")).collect();
    let (start_tx, start_rx) = watch::channel(None);
    let shared = Arc::new(Shared {
        clock: Clock::new(),
        run: run_tag,
        members: args.members,
        payload: args.payload,
        rate: args.rate,
        duration: args.duration,
        rooms: room_names.clone(),
        stop: CancellationToken::new(),
        start: start_rx,
        delivered: ShardedCounter::default(),
        other_frames: ShardedCounter::default(),
        sent: ShardedCounter::default(),
        room_sent: (0..args.rooms).map(|_| AtomicU64::new(0)).collect(),
        room_refused: (0..args.rooms).map(|_| AtomicU64::new(0)).collect(),
        senders_done: AtomicUsize::new(0),
        latency: LatencySink::new(workers * 4),
        lag: LatencySink::new(4),
    });
    let _stop_on_exit = shared.stop.clone().drop_guard();

    // Open and join every client.
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let body_shared = shared.clone();
    let members = args.members;
    let mut tasks = swarm::launch(
        clients,
        dialer.clone(),
        common.connect_concurrency,
        |i| Some(room_names[Seat::of(i, members).room].clone()),
        move |i, opened| client(body_shared.clone(), i, opened),
        events_tx,
    );
    let (connect, ready) = swarm::collect(clients, &mut events, progress).await;
    let ready_count = connect.ok as usize;
    if ready_count == 0 {
        anyhow::bail!(
            "no client could connect: {}",
            connect.first_error.clone().unwrap_or_else(|| "unknown error".into())
        );
    }
    let mut room_ready = vec![0u64; args.rooms];
    for (i, ok) in ready.iter().enumerate() {
        if *ok {
            room_ready[Seat::of(i, members).room] += 1;
        }
    }
    let mut warnings = Vec::new();

    // Joins fan presence out to the room; let it drain before measuring.
    if !settle(&shared.other_frames, progress).await {
        warnings.push("setup traffic was still arriving when measuring began".to_owned());
    }

    // Measure: gateways, then Redis, then the loadgen itself.
    let mut pids: Vec<Pid> = common.server_pids.iter().map(|&p| Pid::Other(p)).collect();
    pids.extend(args.redis_pid.map(Pid::Other));
    pids.push(Pid::Current);
    let load_before = procstat::load_average();
    let window = ProcWindow::start(&pids);
    let window_started = Instant::now();
    let start = Instant::now() + Duration::from_millis(20);
    start_tx.send_replace(Some(start));
    let expected_now = || -> u64 {
        (0..args.rooms)
            .map(|r| {
                let sent = shared.room_sent[r].load(Ordering::Relaxed);
                let refused = shared.room_refused[r].load(Ordering::Relaxed);
                sent.saturating_sub(refused) * room_ready[r]
            })
            .sum()
    };
    let watch = window::Watch {
        sent: &shared.sent,
        delivered: &shared.delivered,
        senders_done: &shared.senders_done,
        senders: ready_count,
    };
    let window::Window { send_secs, grace_used } =
        window::run(progress, watch, start, args.duration, args.grace, expected_now).await;
    let mut usage = window.finish();
    let window_secs = window_started.elapsed().as_secs_f64();
    let load_after = procstat::load_average();
    let loadgen = usage.pop().unwrap_or_default();
    let redis_usage = args.redis_pid.and_then(|_| usage.pop());
    let gateway_usage = usage;

    // Stop everyone and gather what they saw.
    progress.spinner("closing");
    shared.stop.cancel();
    let mut total = LedgerTotals::default();
    let mut room_received = vec![0u64; args.rooms];
    let mut room_anomalies = vec![0u64; args.rooms];
    let mut disconnects: BTreeMap<String, u64> = BTreeMap::new();
    let mut send_errors = 0;
    let mut sent = 0;
    let mut last_delivery_nanos = 0;
    while let Some(joined) = tasks.join_next().await {
        let Ok(Some(out)) = joined else { continue };
        total.merge(&out.ledger);
        room_received[out.room] += out.ledger.counts.unique;
        room_anomalies[out.room] += out.ledger.anomalies();
        sent += out.sent;
        last_delivery_nanos = last_delivery_nanos.max(out.last_delivery_nanos);
        if let Some(why) = out.ended {
            *disconnects.entry(why).or_default() += 1;
        }
        if out.send_error {
            send_errors += 1;
        }
    }
    progress.finish();

    // Every task has ended: the counters are final.
    let expected = expected_now();
    let received = total.counts.unique;
    let (lost, loss_ratio) = report::loss(expected, received);
    let rooms_with_loss = (0..args.rooms)
        .filter(|&r| {
            let accepted = shared.room_sent[r]
                .load(Ordering::Relaxed)
                .saturating_sub(shared.room_refused[r].load(Ordering::Relaxed));
            room_received[r] < accepted * room_ready[r]
        })
        .count() as u64;
    let rooms_with_anomalies = room_anomalies.iter().filter(|&&n| n > 0).count() as u64;
    let start_nanos = shared.clock.nanos_at(start.into_std());
    let delivery_secs = (last_delivery_nanos.saturating_sub(start_nanos) as f64 / 1e9)
        .max(args.duration.as_secs_f64());
    let accepted = sent.saturating_sub(total.refused);
    let deliveries_per_sec = report::ratio(received as f64, delivery_secs);
    let messages = ChatMessages {
        target_rate: ready_count as f64 * args.rate,
        sent,
        send_rate: sent as f64 / send_secs,
        send_errors,
        acks: total.acks,
        rejected: total.refused,
        server_errors: total.errors.clone(),
        expected,
        received,
        lost,
        loss_ratio,
        duplicates: total.counts.duplicates,
        out_of_order: total.counts.out_of_order,
        seq_out_of_order: total.seq_out_of_order,
        seq_duplicates: total.seq_duplicates,
        seq_unfilled: total.seq_unfilled,
        misrouted: total.misrouted,
        foreign: total.foreign,
        other_frames: total.other,
        rooms_with_loss,
        rooms_with_anomalies,
        deliveries_per_sec,
        delivered_msgs_per_sec: report::ratio(
            deliveries_per_sec * accepted as f64,
            expected as f64,
        ),
        delivery_window_secs: delivery_secs,
        grace_used_secs: grace_used,
    };
    let latency_us = LatencySummary::from_micros_histogram(&shared.latency.merged());
    let send_lag_us = LatencySummary::from_micros_histogram(&shared.lag.merged());
    let gateways = (!gateway_usage.is_empty())
        .then(|| ProcessCost::of(gateway_usage, window_secs, sent, received));
    let redis = redis_usage.map(|u| ProcessCost::of(vec![u], window_secs, sent, received));
    if send_errors > 0 {
        warnings.push(format!("{send_errors} clients' connections failed while sending"));
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
            "clients reached only {:.1}% of the target rate (server push-back or loadgen overload)",
            100.0 * report::ratio(messages.send_rate, messages.target_rate)
        ));
    }
    if send_lag_us.p99 > SEND_LAG_WARNING_US {
        warnings.push(format!(
            "send lag p99 {}: the loadgen fell behind its schedule (busy machine?); compare with care",
            report::micros(send_lag_us.p99)
        ));
    }
    if loadgen.cpu_cores > 0.9 * workers as f64 {
        warnings.push(format!(
            "the loadgen used {:.2} of its {workers} worker cores: it may be the bottleneck",
            loadgen.cpu_cores
        ));
    }
    let checks = evaluate(args, &messages, &latency_us);
    Ok(ChatReport {
        mode: "chat",
        protocol: common.protocol,
        tags: report::tags(&common.tags),
        config: ChatConfig {
            urls: common.urls.clone(),
            rooms: args.rooms,
            members: args.members,
            clients,
            rate_per_client: args.rate,
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
        gateways,
        redis,
        loadgen_cpu_us_per_message: report::ratio(loadgen.cpu_secs * 1e6, sent as f64),
        loadgen,
        load_average: [load_before, load_after],
        checks,
        warnings,
    })
}

/// Applies the requested checks; `None` when none were requested.
fn evaluate(args: &ChatArgs, m: &ChatMessages, latency: &LatencySummary) -> Option<Checks> {
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
        let anomalies =
            m.duplicates + m.out_of_order + m.seq_out_of_order + m.seq_duplicates + m.misrouted;
        if anomalies > 0 {
            failures.push(format!("{anomalies} duplicate, out-of-order or misrouted deliveries"));
        }
    }
    if let Some(min) = args.min_send_ratio {
        let achieved = report::ratio(m.send_rate, m.target_rate);
        if achieved < min {
            failures.push(format!("send rate {achieved:.3} of target < {min}"));
        }
    }
    Some(Checks { passed: failures.is_empty(), failures })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: u32 = 0xabcd;

    /// A message frame of room seq `seq` carrying sender `sender`'s message `n`.
    fn message(seq: u64, run: u32, sender: u32, n: u64) -> String {
        let mut text = String::new();
        Stamp { run, sender, n, sent_nanos: 1_000 + n }.write(&mut text, 40);
        format!(
            r#"{{"type":"message","room":"chat-1","epoch":"e","seq":{seq},"id":"x","user":"lg2","text":"{text}","ts":1}}"#
        )
    }

    /// The ledger of a member of room 1 (clients 2 and 3), joined at seq 10.
    fn ledger() -> Ledger {
        Ledger::new(RUN, 2, 2, 10)
    }

    #[test]
    fn seats_spread_a_room_over_nodes() {
        assert_eq!(Seat::of(0, 2), Seat { room: 0, member: 0 });
        assert_eq!(Seat::of(7, 2), Seat { room: 3, member: 1 });
        // Room 3's members on 3 nodes: (3+0)%3 and (3+1)%3.
        assert_eq!((Seat::of(6, 2).node(3), Seat::of(7, 2).node(3)), (0, 1));
        // With as many nodes as members, no room has two members on one node.
        for room in 0..10 {
            let nodes: Vec<usize> = (0..3).map(|m| Seat { room, member: m }.node(3)).collect();
            assert!(nodes[0] != nodes[1] && nodes[1] != nodes[2] && nodes[0] != nodes[2]);
        }
        assert_eq!(Seat::of(5, 1).node(1), 0);
    }

    #[test]
    fn clean_room_counts_every_message_once() {
        let mut l = ledger();
        let frames = [(11, 2, 1), (12, 3, 1), (13, 2, 2), (14, 3, 2)];
        for (seq, sender, n) in frames {
            assert_eq!(
                l.on_text(&message(seq, RUN, sender, n)),
                Seen::Delivery { sent_nanos: 1_000 + n }
            );
        }
        let t = l.finish();
        assert_eq!(t.counts, OrderCounts { unique: 4, duplicates: 0, out_of_order: 0 });
        assert_eq!(t.anomalies(), 0);
        assert_eq!((t.seq_unfilled, t.sender_unfilled), (0, 0));
    }

    #[test]
    fn duplicates_and_reorders_are_told_apart() {
        let mut l = ledger();
        l.on_text(&message(11, RUN, 2, 1));
        l.on_text(&message(13, RUN, 2, 3)); // seq 12 and sender 2's n=2 skipped...
        assert_eq!(l.on_text(&message(12, RUN, 2, 2)), Seen::Delivery { sent_nanos: 1_002 });
        // ...then filled, late in both orders.
        assert_eq!(l.on_text(&message(12, RUN, 2, 2)), Seen::Nothing); // same frame again
        // The same message re-sequenced under a new seq is still a duplicate.
        assert_eq!(l.on_text(&message(14, RUN, 2, 3)), Seen::Nothing);
        let t = l.finish();
        assert_eq!(t.counts, OrderCounts { unique: 3, duplicates: 2, out_of_order: 1 });
        assert_eq!((t.seq_out_of_order, t.seq_duplicates), (1, 1));
        assert_eq!(t.anomalies(), 5);
    }

    #[test]
    fn gaps_left_open_are_loss() {
        let mut l = ledger();
        l.on_text(&message(11, RUN, 3, 1));
        l.on_text(&message(14, RUN, 3, 4));
        let t = l.finish();
        assert_eq!(t.counts.unique, 2);
        assert_eq!((t.seq_unfilled, t.sender_unfilled), (2, 2));
        assert_eq!(t.anomalies(), 0);
    }

    #[test]
    fn other_rooms_runs_and_frames() {
        let mut l = ledger();
        // Client 5 belongs to room 2: misrouted. Client 1 to room 0.
        assert_eq!(l.on_text(&message(11, RUN, 5, 1)), Seen::Nothing);
        assert_eq!(l.on_text(&message(12, RUN, 1, 1)), Seen::Nothing);
        // Another run's message and a human's occupy seqs but are foreign.
        l.on_text(&message(13, 0x1234, 2, 1));
        let human = r#"{"type":"message","room":"chat-1","epoch":"e","seq":14,"id":"h","user":"ann","text":"hi","ts":1}"#;
        l.on_text(human);
        // Ours again, in order after all of them.
        assert!(matches!(l.on_text(&message(15, RUN, 2, 1)), Seen::Delivery { .. }));
        l.on_text(r#"{"type":"ack","id":"x","room":"chat-1","seq":15,"duplicate":false}"#);
        l.on_text(r#"{"type":"presence","room":"chat-1","user":"lg3","state":"join"}"#);
        assert_eq!(
            l.on_text(r#"{"type":"error","code":"rate_limited","message":"m","ref":"0000abcd-2-9","retryable":true}"#),
            Seen::Refused
        );
        l.on_text(r#"{"type":"error","code":"bad_json","message":"m","retryable":false}"#);
        let t = l.finish();
        assert_eq!(t.misrouted, 2);
        assert_eq!(t.foreign, 2);
        assert_eq!(t.counts.unique, 1);
        assert_eq!((t.acks, t.other, t.refused), (1, 1, 1));
        assert_eq!(t.errors.get("rate_limited"), Some(&1));
        assert_eq!(t.errors.get("bad_json"), Some(&1));
        assert_eq!(t.seq_unfilled, 0);
        assert_eq!(t.anomalies(), 2);
    }

    #[test]
    fn totals_merge() {
        let mut a = ledger();
        a.on_text(&message(11, RUN, 2, 1));
        a.on_text(&message(11, RUN, 2, 1));
        let a = a.finish();
        let mut total = LedgerTotals::default();
        total.merge(&a);
        total.merge(&a);
        assert_eq!(total.counts, OrderCounts { unique: 2, duplicates: 2, out_of_order: 0 });
        assert_eq!(total.seq_duplicates, 2);
    }

    #[test]
    fn checks_include_exactly_once() {
        let args = |loss: Option<f64>| ChatArgs {
            rooms: 1,
            members: 2,
            rate: 1.0,
            payload: 1,
            duration: Duration::from_secs(1),
            grace: Duration::from_secs(1),
            redis_pid: None,
            max_p99: Some(Duration::from_millis(100)),
            max_loss_ratio: loss,
            min_send_ratio: None,
        };
        let l = LatencySummary { count: 10, p99: 50_000.0, ..LatencySummary::default() };
        let clean = || ChatMessages { expected: 100, received: 100, ..ChatMessages::default() };
        assert!(evaluate(&args(Some(0.0)), &clean(), &l).is_some_and(|c| c.passed));
        let reordered = ChatMessages { seq_out_of_order: 1, ..clean() };
        let c = evaluate(&args(Some(0.0)), &reordered, &l).expect("checks");
        assert_eq!(c.failures.len(), 1, "{:?}", c.failures);
        // Without the loss check, order is reported but not checked.
        assert!(evaluate(&args(None), &reordered, &l).is_some_and(|c| c.passed));
        let slow = LatencySummary { p99: 150_000.0, ..l };
        assert!(evaluate(&args(None), &clean(), &slow).is_some_and(|c| !c.passed));
    }
}
