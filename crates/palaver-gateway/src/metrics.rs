//! `GET /metrics`: the node's counters in the Prometheus text format.
//!
//! The message path only ever does relaxed atomic adds: counters that already
//! exist ([`ConnectionStats`], [`palaver_hub::HubStats`], the
//! Redis broker's [`palaver_broker::RedisStats`]) stay where they are, and the
//! few this module adds ([`Metrics`]) are atomics too, histograms included
//! ([`AtomicHistogram`]: one add per bucket, count and sum, no lock). A scrape
//! reads everything once and encodes it with `prometheus-client`, through a
//! throwaway registry holding one [`Collector`]; nothing is registered for the
//! life of the process, so no lock or map sits between a connection and its
//! counters.
//!
//! Every metric is listed, with what to watch, in `docs/operations.md`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use palaver_broker::{RedisBroker, broker::SharedBroker};
use palaver_hub::{Hub, HubStats};
use palaver_protocol::{CloseCode, ErrorCode};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::socket::ABNORMAL;

/// Close codes with their own label value; anything else is `other`.
const CLOSE_CODES: [CloseCode; CloseCode::ALL.len()] = CloseCode::ALL;
/// Upper bounds of the write-batch histogram, in frames. A connection
/// flushes at most 64 frames at once, so the `+Inf` bucket above 63 holds
/// exactly the full batches: clients whose queue was at least that deep.
const BATCH_BOUNDS: [u64; 7] = [1, 2, 4, 8, 16, 32, 63];
/// Upper bounds of the broker latency histograms, in microseconds (100 µs to 2.5 s).
const LATENCY_BOUNDS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000,
];

/// The broker calls timed by [`crate::metered_broker::MeteredBroker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BrokerOp {
    /// `publish`: sequence, store and send one message.
    Publish,
    /// `signal`: a presence or typing event.
    Signal,
    /// `subscribe`: the first local member of a room subscribes the node.
    Subscribe,
    /// `unsubscribe`: the last local member left.
    Unsubscribe,
    /// `head`: where a room's history stands.
    Head,
    /// `history`: a page of history (catch-up replays and client requests).
    History,
    /// `presence_join`.
    PresenceJoin,
    /// `presence_leave`.
    PresenceLeave,
    /// `members`: the room's users across the cluster.
    Members,
    /// `report`: this node's numbers for the cluster directory.
    Report,
    /// `nodes`: every live node's report (server API `/stats`).
    Nodes,
    /// `rooms`: a page of active rooms (server API `/rooms`).
    Rooms,
    /// `control`: an order to every node (server API disconnect).
    Control,
}

impl BrokerOp {
    /// Every operation, in label order.
    pub(crate) const ALL: [BrokerOp; 13] = [
        BrokerOp::Publish,
        BrokerOp::Signal,
        BrokerOp::Subscribe,
        BrokerOp::Unsubscribe,
        BrokerOp::Head,
        BrokerOp::History,
        BrokerOp::PresenceJoin,
        BrokerOp::PresenceLeave,
        BrokerOp::Members,
        BrokerOp::Report,
        BrokerOp::Nodes,
        BrokerOp::Rooms,
        BrokerOp::Control,
    ];

    /// The `op` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BrokerOp::Publish => "publish",
            BrokerOp::Signal => "signal",
            BrokerOp::Subscribe => "subscribe",
            BrokerOp::Unsubscribe => "unsubscribe",
            BrokerOp::Head => "head",
            BrokerOp::History => "history",
            BrokerOp::PresenceJoin => "presence_join",
            BrokerOp::PresenceLeave => "presence_leave",
            BrokerOp::Members => "members",
            BrokerOp::Report => "report",
            BrokerOp::Nodes => "nodes",
            BrokerOp::Rooms => "rooms",
            BrokerOp::Control => "control",
        }
    }
}

/// A histogram made of atomics: fixed bucket bounds, one counter per bucket
/// (not cumulative; the encoder sums them), a count and a sum.
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    bounds: &'static [u64],
    /// One per bound, plus the overflow bucket.
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram over `bounds` (ascending, inclusive upper bounds).
    pub(crate) fn new(bounds: &'static [u64]) -> Self {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub(crate) fn observe(&self, value: u64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Number of values recorded.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Encodes the histogram, dividing bounds and sum by `scale` (1e6 turns
    /// microseconds into seconds).
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::MetricEncoder<'_>,
        scale: f64,
    ) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .map(|b| *b as f64 / scale)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        // Read the count as the buckets' total so the exposition is consistent
        // even while observations race with the scrape.
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum.load(Ordering::Relaxed) as f64 / scale;
        encoder
            .encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
    }
}

/// Per broker operation: latency and failures.
#[derive(Debug)]
pub(crate) struct BrokerOpStats {
    /// Call duration, microseconds.
    pub(crate) latency: AtomicHistogram,
    /// Calls that returned an error.
    pub(crate) errors: AtomicU64,
}

/// The counters this module adds to the node (the rest already exist
/// elsewhere and are read at scrape time). One per node, in an `Arc`.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// One per close code, then `1006` (the peer vanished), `other`, `none`.
    closes: [AtomicU64; CLOSE_CODES.len() + 3],
    refused: [AtomicU64; Refusal::ALL.len()],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    write_batches: AtomicHistogram,
    broker: [BrokerOpStats; BrokerOp::ALL.len()],
    /// Publishes that stored a new message.
    pub(crate) published: AtomicU64,
    /// Publishes answered as duplicates (idempotent retries).
    pub(crate) duplicates: AtomicU64,
    /// Messages returned by history reads (replayed or requested).
    pub(crate) history_messages: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            closes: std::array::from_fn(|_| AtomicU64::new(0)),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            write_batches: AtomicHistogram::new(&BATCH_BOUNDS),
            broker: std::array::from_fn(|_| BrokerOpStats {
                latency: AtomicHistogram::new(&LATENCY_BOUNDS_US),
                errors: AtomicU64::new(0),
            }),
            published: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            history_messages: AtomicU64::new(0),
        }
    }
}

/// Why an upgrade was refused before it became a connection (the `reason`
/// label of `upgrades_refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 429: the client IP opens connections too fast.
    Rate,
    /// 429: the client IP holds too many connections.
    Connections,
    /// 403: the page's origin is not allowed.
    Origin,
    /// 401: the URL token is invalid or expired.
    Auth,
    /// 400: the guest name breaks the rules.
    Name,
}

impl Refusal {
    /// Every reason, in label order: `Refusal::ALL[r as usize] == r`.
    pub(crate) const ALL: [Refusal; 5] =
        [Refusal::Rate, Refusal::Connections, Refusal::Origin, Refusal::Auth, Refusal::Name];

    /// The `reason` label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Rate => "rate",
            Refusal::Connections => "connections",
            Refusal::Origin => "origin",
            Refusal::Auth => "auth",
            Refusal::Name => "name",
        }
    }
}

impl Metrics {
    /// Counts an upgrade refused with an HTTP error.
    pub(crate) fn upgrade_refused(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a finished connection by the close code it ended with.
    pub(crate) fn connection_closed(&self, code: Option<u16>) {
        let slot = match code {
            None => CLOSE_CODES.len() + 2,
            Some(ABNORMAL) => CLOSE_CODES.len(),
            Some(code) => {
                CLOSE_CODES.iter().position(|c| c.code() == code).unwrap_or(CLOSE_CODES.len() + 1)
            }
        };
        self.closes[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an `error` frame sent to a client.
    pub(crate) fn error_frame(&self, code: ErrorCode) {
        // `ErrorCode::ALL[c as usize] == c` (a protocol test checks it).
        self.errors[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Records how many frames one socket flush carried.
    pub(crate) fn write_batch(&self, frames: usize) {
        self.write_batches.observe(frames as u64);
    }

    /// The latency and error counters of one broker operation.
    pub(crate) fn broker_op(&self, op: BrokerOp) -> &BrokerOpStats {
        &self.broker[op as usize]
    }

    /// Records a broker call's duration and outcome.
    pub(crate) fn broker_call(&self, op: BrokerOp, elapsed: Duration, ok: bool) {
        let stats = self.broker_op(op);
        stats.latency.observe(elapsed.as_micros().min(u64::MAX as u128) as u64);
        if !ok {
            stats.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Connection counters (exported as metrics).
#[derive(Debug, Default)]
pub(crate) struct ConnectionStats {
    /// Connections currently open.
    pub(crate) open: AtomicU64,
    /// Connections accepted since start.
    pub(crate) total: AtomicU64,
    /// Frames received from clients.
    pub(crate) frames_in: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// `GET /metrics`: Prometheus text (0.0.4), or OpenMetrics when the scraper
/// asks for it in `Accept`.
pub(crate) async fn scrape(State(scrape): State<Scrape>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let mut registry = Registry::with_prefix("palaver");
    registry.register_collector(Box::new(NodeCollector(scrape)));
    let mut body = String::with_capacity(16 * 1024);
    let (encoded, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut body, &registry),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut body, &registry),
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

/// What a scrape reads: the node's counters, and the parts whose state it
/// reports, taken from the node state when the request comes in.
#[derive(Clone)]
pub(crate) struct Scrape {
    /// This node's id (a label of `build_info`).
    pub(crate) node_id: String,
    /// Whether `/readyz` reports ready, at the request.
    pub(crate) ready: bool,
    /// The counters this module adds.
    pub(crate) metrics: Arc<Metrics>,
    /// Connection counters.
    pub(crate) stats: Arc<ConnectionStats>,
    /// Rooms and fan-out counters.
    pub(crate) hub: Arc<Hub>,
    /// Whether the bus is up.
    pub(crate) broker: SharedBroker,
    /// The Redis broker's counters, when clustered.
    pub(crate) redis: Option<Arc<RedisBroker>>,
}

/// Reads every counter of the node at scrape time.
struct NodeCollector(Scrape);

impl std::fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCollector").field("node", &self.0.node_id).finish()
    }
}

/// Writes one unlabelled counter.
fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let metric = ConstCounter::new(v);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes one unlabelled gauge.
fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let metric = ConstGauge::new(v);
    metric.encode(e.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let app = &self.0;
        let metrics = &app.metrics;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);

        {
            let mut info = e.encode_descriptor(
                "build_info",
                "Always 1; labels name the version and this node's id.",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("version", env!("CARGO_PKG_VERSION")), ("node", app.node_id.as_str())];
            ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;
        }
        gauge(&mut e, "ready", "1 while /readyz reports ready, else 0.", i64::from(app.ready))?;
        gauge(
            &mut e,
            "bus_up",
            "1 while the broker can serve traffic (Redis reachable), else 0.",
            i64::from(app.broker.is_ready()),
        )?;

        // Connections.
        gauge(
            &mut e,
            "connections",
            "WebSocket connections open now.",
            to_i64(get(&app.stats.open)),
        )?;
        counter(
            &mut e,
            "connections_opened",
            "WebSocket connections accepted since start.",
            get(&app.stats.total),
        )?;
        {
            let mut family = e.encode_descriptor(
                "connection_closes",
                "Connections ended, by the close code they ended with.",
                None,
                MetricType::Counter,
            )?;
            let labels = CLOSE_CODES.iter().map(|c| c.code().to_string()).chain([
                ABNORMAL.to_string(),
                "other".to_owned(),
                "none".to_owned(),
            ]);
            for (label, count) in labels.zip(&metrics.closes) {
                let labels = [("code", label.as_str())];
                ConstCounter::new(get(count)).encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = e.encode_descriptor(
                "upgrades_refused",
                "WebSocket upgrades refused before the connection opened (429, 403, 401, 400).",
                None,
                MetricType::Counter,
            )?;
            for (reason, count) in Refusal::ALL.iter().zip(&metrics.refused) {
                let labels = [("reason", reason.as_str())];
                ConstCounter::new(get(count)).encode(family.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "rooms",
            "Rooms with at least one member on this node.",
            to_i64(app.hub.room_count() as u64),
        )?;

        // Traffic.
        counter(
            &mut e,
            "frames_received",
            "Frames received from clients (every text frame, valid or not).",
            get(&app.stats.frames_in),
        )?;
        {
            let mut family = e.encode_descriptor(
                "error_frames",
                "error frames sent to clients, by error code.",
                None,
                MetricType::Counter,
            )?;
            // Every code, zeros included, so rates work from the start.
            for (code, count) in ErrorCode::ALL.iter().zip(&metrics.errors) {
                let labels = [("code", code.as_str())];
                ConstCounter::new(get(count)).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "messages_published",
            "Messages published through this node, by its clients and its server API (new ones; duplicates excluded).",
            get(&metrics.published),
        )?;
        counter(
            &mut e,
            "messages_duplicate",
            "Sends answered with the original ack (a retried message id).",
            get(&metrics.duplicates),
        )?;
        let hub = app.hub.stats();
        counter(
            &mut e,
            "hub_messages",
            "Messages fanned out by this node's hub, once per message (presence and typing are not counted).",
            HubStats::get(&hub.messages),
        )?;
        counter(
            &mut e,
            "deliveries",
            "Frames queued to local members by fan-out (one per member per event).",
            HubStats::get(&hub.deliveries),
        )?;
        counter(
            &mut e,
            "slow_consumer_evictions",
            "Clients closed with 1013 because their send queue overflowed.",
            HubStats::get(&hub.evictions),
        )?;
        counter(
            &mut e,
            "resyncs",
            "Memberships sent back to catching up from history (gap, new epoch, bus outage).",
            HubStats::get(&hub.resyncs),
        )?;
        counter(
            &mut e,
            "reused_seqs",
            "Live messages that reused a sequence number already delivered in their epoch (Redis lost writes).",
            HubStats::get(&hub.reused_seqs),
        )?;
        counter(
            &mut e,
            "epoch_resets",
            "Lost-write epoch resets announced for rooms with local members.",
            HubStats::get(&hub.epoch_resets),
        )?;
        {
            let histogram = &metrics.write_batches;
            let mut encoder = e.encode_descriptor(
                "write_batch_frames",
                "Frames written per socket flush; the bucket above 63 counts full batches (64), i.e. backed-up clients.",
                None,
                MetricType::Histogram,
            )?;
            histogram.encode(&mut encoder, 1.0)?;
        }

        // Broker.
        {
            let mut family = e.encode_descriptor(
                "broker_request_duration_seconds",
                "Duration of broker calls (a Redis round trip when clustered), by operation.",
                None,
                MetricType::Histogram,
            )?;
            for op in BrokerOp::ALL {
                let labels = [("op", op.as_str())];
                let mut encoder = family.encode_family(&labels)?;
                metrics.broker_op(op).latency.encode(&mut encoder, 1e6)?;
            }
        }
        {
            let mut family = e.encode_descriptor(
                "broker_errors",
                "Broker calls that failed (clients got `unavailable` or `internal`), by operation.",
                None,
                MetricType::Counter,
            )?;
            for op in BrokerOp::ALL {
                let labels = [("op", op.as_str())];
                let errors = get(&metrics.broker_op(op).errors);
                ConstCounter::new(errors).encode(family.encode_family(&labels)?)?;
            }
        }
        counter(
            &mut e,
            "history_reads",
            "History pages read (catch-up replays after join/resync and client history requests).",
            metrics.broker_op(BrokerOp::History).latency.count(),
        )?;
        counter(
            &mut e,
            "history_messages_read",
            "Messages returned by history reads.",
            get(&metrics.history_messages),
        )?;

        // Redis backend.
        if let Some(redis) = &app.redis {
            let s = redis.stats().snapshot();
            for (name, help, value) in [
                (
                    "redis_reconnects",
                    "Pub/sub connections re-established after a loss.",
                    s.reconnects,
                ),
                // Publishes and duplicates are counted once, for both brokers:
                // messages_published and messages_duplicate.
                (
                    "redis_publish_batches",
                    "Publish script calls (publishes share calls under load).",
                    s.publish_batches,
                ),
                (
                    "redis_delivery_overflows",
                    "Bus events dropped because their room's delivery worker was full (members resync).",
                    s.delivery_overflows,
                ),
                ("redis_signals", "Presence and typing events published.", s.signals),
                (
                    "redis_bus_events",
                    "Envelopes received from Redis pub/sub and handed to the hub.",
                    s.delivered,
                ),
                (
                    "redis_parse_errors",
                    "Bus payloads that were not valid envelopes (dropped).",
                    s.parse_errors,
                ),
                ("redis_history_reads", "Head/history reads that went to Redis.", s.history_reads),
                (
                    "redis_single_flight_hits",
                    "Head/history requests served by another caller's read.",
                    s.single_flight_hits,
                ),
                (
                    "redis_presence_expired",
                    "Users removed from presence by this node's sweeps (their node died).",
                    s.presence_expired,
                ),
                (
                    "redis_command_errors",
                    "Redis commands that failed (timeouts, lost connections, script errors).",
                    s.command_errors,
                ),
                (
                    "redis_resubscribes",
                    "Redis Cluster: rooms re-subscribed after their slot moved (members resync).",
                    s.resubscribes,
                ),
            ] {
                counter(&mut e, name, help, value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_inclusive_upper_bound() {
        let h = AtomicHistogram::new(&BATCH_BOUNDS);
        for v in [1, 1, 2, 3, 63, 64, 64] {
            h.observe(v);
        }
        let buckets: Vec<u64> = h.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        assert_eq!(buckets, vec![2, 1, 1, 0, 0, 0, 1, 2]);
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum.load(Ordering::Relaxed), 198);
    }

    #[test]
    fn close_and_error_codes_land_in_their_slots() {
        let m = Metrics::default();
        m.connection_closed(Some(1001));
        m.connection_closed(Some(1001));
        m.connection_closed(Some(4321));
        m.connection_closed(None);
        m.connection_closed(Some(ABNORMAL));
        m.connection_closed(Some(ABNORMAL));
        let counts: Vec<u64> = m.closes.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        assert_eq!(counts[1], 2);
        assert_eq!(counts[2], 0, "a reset is not 1002");
        assert_eq!(counts[CLOSE_CODES.len()], 2);
        assert_eq!(counts[CLOSE_CODES.len() + 1], 1);
        assert_eq!(counts[CLOSE_CODES.len() + 2], 1);

        for (i, reason) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(reason as usize, i, "{reason:?} out of place");
        }
        m.upgrade_refused(Refusal::Origin);
        assert_eq!(m.refused[Refusal::Origin as usize].load(Ordering::Relaxed), 1);

        m.error_frame(ErrorCode::NotJoined);
        for code in ErrorCode::ALL {
            let count = &m.errors[code as usize];
            let expected = u64::from(code == ErrorCode::NotJoined);
            assert_eq!(count.load(Ordering::Relaxed), expected);
        }
    }
}
