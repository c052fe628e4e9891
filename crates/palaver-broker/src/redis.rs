//! The cluster broker: stateless gateway nodes sharing one Redis or one
//! Redis Cluster.
//!
//! Redis holds everything nodes must agree on (sequence numbers, history,
//! idempotency, presence) and carries room events between nodes over pub/sub.
//! Each publish is one Lua script that sequences, stores and `PUBLISH`es, so
//! every subscriber sees a room's messages in sequence order and Redis is
//! touched once per message, never once per delivery.
//!
//! # One Redis or a Redis Cluster
//!
//! The same keys, scripts and channels serve both. Every key and the channel
//! of a room share the hash tag `{<room>}`, so a room lives on one slot and its
//! scripts stay atomic on one shard; every script gets all its keys as `KEYS`.
//! On a Cluster the room channels (and the control channel) are *sharded*
//! channels (`SPUBLISH`/`SSUBSCRIBE`, Redis 7): a message travels only within
//! its shard, where classic `PUBLISH` would be broadcast to every node of the
//! cluster. A single Redis keeps classic `PUBLISH`/`SUBSCRIBE` (any Redis ≥ 6).
//! The directory's keys share the tag `{nodes}` (one slot, low traffic).
//!
//! # Key layout
//!
//! `{prefix}` defaults to `palaver`. The room name sits in braces: room names
//! may contain `:` but never braces, so one room's keys can never be mistaken
//! for another's (the braces also make them a Redis Cluster hash tag).
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `{prefix}:room:{<room>}:meta` | hash | `epoch` (16 hex digits), `seq` (latest sequence number), `lu`/`li` (user and id at `seq`), `rt` (last TTL refresh), `reset_at` (last lost-write reset) |
//! | `{prefix}:room:{<room>}:stream` | stream | history, entry id `<seq>-1`, fields `u` user, `i` client id, `t` text, `ts` ms; `MAXLEN ~ history_max` |
//! | `{prefix}:room:{<room>}:ids` | zset | idempotency: member `"<id> <user>"`, score seq; trimmed to the last `history_max` seqs |
//! | `{prefix}:room:{<room>}:presence` | zset | member user, score latest expiry (ms, Redis clock) of the user's entries |
//! | `{prefix}:room:{<room>}:roster` | zset | the users of `presence`, score 0 (read by lex range for member pages) |
//! | `{prefix}:room:{<room>}:presence:<user>` | zset | member `<node>/<session>`, score expiry (ms) |
//!
//! | channel | carries |
//! |---------|---------|
//! | `{prefix}:room:{<room>}` | JSON [`Envelope`]s: messages (in seq order) and presence events (sharded channel on a Cluster) |
//! | `{prefix}:control` | JSON [`Control`](crate::Control) orders for every node (`control`; sharded channel on a Cluster) |
//!
//! The cluster directory (live nodes, their reports and active rooms) has
//! its own keys, listed in `directory`.
//!
//! The three history keys share one TTL (`room_ttl`, default 7 days) that
//! publishes refresh once half has passed (reads too, when less than half is
//! left); an idle room expires whole. If a room's `meta` is missing (expired,
//! evicted, Redis restarted empty) the next publish or read starts a new epoch and
//! sequence numbers restart at 1, which tells resuming clients their
//! positions no longer apply. Presence keys expire `3 × presence_ttl` after
//! their last refresh.
//!
//! # Modules
//!
//! - `keys`: names and the pre-encoded envelope pieces the scripts splice.
//! - `scripts`: the Lua scripts and decoding of their replies.
//! - `connections`: command connections (deadpool-redis) with a deadline per command.
//! - `pubsub`: refcounted subscriptions, the reconnecting supervisor, the reader.
//! - `workers`: parse and fan out bus events on one worker per core, by room.
//! - `publisher`: publishes batched into one script call.
//! - `history`: head and history reads, coalesced by `flight`.
//! - `presence`: cluster-wide presence with expiring entries.
//! - `stats`: counters for metrics ([`RedisStats`]).
//! - `control`: the node-control channel (server API orders to every node).
//! - `directory`: node reports and the index of active rooms (server API).

mod connections;
mod control;
mod directory;
mod flight;
mod history;
mod keys;
mod presence;
mod publisher;
mod pubsub;
mod scripts;
mod stats;
mod workers;

use std::{fmt, future::Future, sync::Arc, time::Duration};

use async_trait::async_trait;
use palaver_protocol::{BusEvent, Envelope, HistoryQuery, PresenceState, RoomName, UserName};
use parking_lot::Mutex;
use redis::RedisResult;
use tokio::{
    sync::{Semaphore, oneshot},
    task::JoinSet,
    time::timeout,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::stats::{RedisStats, RedisStatsSnapshot};
use self::{
    connections::{CommandPool, Conn},
    directory::Directory,
    flight::SingleFlight,
    history::Read,
    keys::{RoomKeys, envelope_head},
    presence::LocalPresence,
    publisher::Publisher,
    pubsub::Bus,
    scripts::Scripts,
    stats::add,
    workers::Workers,
};
use crate::{
    broker::{
        Broker, BrokerError, Draft, Evidence, HistoryPage, Inbox, MembersPage, Published, RoomHead,
    },
    cluster::{ClusterReport, Control, NodeReport, RoomsPage},
    util::new_epoch,
};

/// Settings of the Redis broker; [`RedisConfig::new`] fills in the defaults.
///
/// Its `Debug` output hides the URL's credentials, so the config can be logged.
#[derive(Clone)]
pub struct RedisConfig {
    /// Redis URL, e.g. `redis://127.0.0.1:6379/0`; with `cluster`, the
    /// comma-separated URLs of one or more nodes of the Redis Cluster (seeds:
    /// the rest of the cluster is discovered from them), e.g.
    /// `redis://10.0.0.1:7000,redis://10.0.0.2:7000`.
    pub url: String,
    /// `url` names a Redis Cluster. Default false.
    pub cluster: bool,
    /// Namespace of every key and channel, so several deployments can share a Redis.
    pub prefix: String,
    /// This node's id; it owns the presence entries it creates.
    pub node_id: String,
    /// Messages kept per room (stream `MAXLEN ~`), which is also the
    /// idempotency window. Default 1000.
    pub history_max: usize,
    /// A room whose history is untouched this long expires. Default 7 days.
    pub room_ttl: Duration,
    /// A presence entry not refreshed this long is dead; the node refreshes
    /// its own every third of it. Default 30 s.
    pub presence_ttl: Duration,
    /// Deadline of every Redis command, connecting included; past it the
    /// call fails with [`BrokerError::Unavailable`]. Default 2 s.
    pub command_timeout: Duration,
    /// Most head/history reads in flight to Redis at once. Default 64.
    pub max_concurrent_reads: usize,
    /// Multiplexed command connections (each carries concurrent commands). Default 4.
    pub connections: usize,
    /// How long a publish waits for others to share its script call (0: a
    /// lone publish goes at once; under load batches form anyway). Default 0.
    pub publish_linger: Duration,
    /// How often the pub/sub connection is pinged to detect a silent failure. Default 1 s.
    pub heartbeat: Duration,
    /// After a lost-write reset of a room, evidence from clients cannot reset
    /// it again for this long (a client could otherwise claim messages that
    /// never existed and reset a room at will). Default 10 s.
    pub reset_cooldown: Duration,
    /// A node's report (and its list of active rooms) expires this long
    /// after it was written, so dead nodes leave the directory. The gateway
    /// reports every third of it. Default 6 s.
    pub report_ttl: Duration,
    /// Cancelling it stops the broker's background tasks (dropping the broker does too).
    pub shutdown: CancellationToken,
}

impl RedisConfig {
    /// A config with every default, for `url` and this node's `node_id`.
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            cluster: false,
            prefix: "palaver".into(),
            node_id: node_id.into(),
            history_max: 1000,
            room_ttl: Duration::from_secs(7 * 24 * 3600),
            presence_ttl: Duration::from_secs(30),
            command_timeout: Duration::from_secs(2),
            max_concurrent_reads: 64,
            connections: 4,
            publish_linger: Duration::ZERO,
            heartbeat: Duration::from_secs(1),
            reset_cooldown: Duration::from_secs(10),
            report_ttl: Duration::from_secs(6),
            shutdown: CancellationToken::new(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact(&self.url))
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .field("history_max", &self.history_max)
            .field("room_ttl", &self.room_ttl)
            .field("presence_ttl", &self.presence_ttl)
            .field("command_timeout", &self.command_timeout)
            .field("max_concurrent_reads", &self.max_concurrent_reads)
            .field("connections", &self.connections)
            .field("publish_linger", &self.publish_linger)
            .field("heartbeat", &self.heartbeat)
            .field("reset_cooldown", &self.reset_cooldown)
            .field("report_ttl", &self.report_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Where Redis is, as the config says.
    fn target(&self) -> Result<Target, BrokerError> {
        if !self.cluster {
            return Ok(Target::Single(self.url.clone()));
        }
        let seeds: Vec<String> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(str::to_owned)
            .collect();
        if seeds.is_empty() {
            return Err(BrokerError::Unavailable("redis cluster: no seed URL".into()));
        }
        // A brace in the prefix would become the keys' hash tag instead of the room.
        if self.prefix.contains(['{', '}']) {
            return Err(BrokerError::Unavailable("redis prefix must not contain braces".into()));
        }
        Ok(Target::Cluster(seeds))
    }
}

/// Where Redis is.
pub(crate) enum Target {
    /// One Redis (or a proxy in front of several), by URL.
    Single(String),
    /// A Redis Cluster, by the URLs of some of its nodes.
    Cluster(Vec<String>),
}

/// The URL(s) with any `user:password@` replaced by `***@`.
fn redact(urls: &str) -> String {
    let one = |url: &str| match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    };
    urls.split(',').map(one).collect::<Vec<_>>().join(",")
}

/// Identical reads (room, kind, evidence) share one Redis call.
type ReadKey = (RoomName, Read, Option<Evidence>);
/// What identifies one member-page read: room, cursor, limit.
type MembersKey = (RoomName, Option<UserName>, usize);

/// State shared by the broker handle and its background tasks (which must
/// not keep the handle itself alive, or dropping it would stop nothing).
struct Core {
    config: RedisConfig,
    /// On a Redis Cluster: room and control channels are sharded channels.
    sharded: bool,
    inbox: Arc<dyn Inbox>,
    commands: CommandPool,
    scripts: Scripts,
    bus: Bus,
    publisher: Publisher,
    presence: LocalPresence,
    reads: Arc<SingleFlight<ReadKey, HistoryPage>>,
    /// A join storm into a big room reads the same first page once per
    /// joining client without this; with it, about once per round trip.
    member_reads: Arc<SingleFlight<MembersKey, MembersPage>>,
    read_permits: Semaphore,
    stats: Arc<RedisStats>,
    /// Parse and fan out bus events off the reader, one worker per core.
    workers: Workers,
    directory: Directory,
}

impl Core {
    /// Runs one command, counting failures.
    async fn command<T, F, Fut>(&self, command: F) -> Result<T, BrokerError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let result = self.commands.run(command).await;
        if result.is_err() {
            add(&self.stats.command_errors, 1);
        }
        result
    }

    /// Starts a [`READ`](scripts::READ) invocation: its three keys and its
    /// first ten arguments (the epoch and witness rules, see `scripts`).
    fn read_invocation<'a>(
        &'a self,
        room: &RoomName,
        keys: &RoomKeys,
        evidence: Option<&Evidence>,
    ) -> redis::ScriptInvocation<'a> {
        let mut invocation = self.scripts.read.prepare_invoke();
        invocation
            .key(&keys.meta)
            .key(&keys.stream)
            .key(&keys.ids)
            .arg(new_epoch().as_str())
            .arg(self.config.room_ttl.as_millis() as u64);
        match evidence {
            Some(Evidence { witness, from_client }) => invocation
                .arg(witness.epoch.as_str())
                .arg(witness.seq)
                .arg(witness.id.as_ref().map_or("", |id| id.as_str()))
                .arg(witness.user.as_ref().map_or("", |user| user.as_str()))
                .arg(if *from_client { "1" } else { "0" }),
            None => invocation.arg("").arg(0).arg("").arg("").arg("0"),
        };
        invocation
            .arg(&keys.channel)
            .arg(envelope_head(room))
            .arg(self.config.reset_cooldown.as_millis() as u64);
        invocation
    }

    /// `SPUBLISH` on a Cluster, else `PUBLISH`.
    fn publish_command(&self) -> &'static str {
        if self.sharded { "SPUBLISH" } else { "PUBLISH" }
    }

    async fn signal(
        &self,
        room: &RoomName,
        user: &UserName,
        state: PresenceState,
        trace: Option<String>,
    ) -> Result<(), BrokerError> {
        let payload = Envelope {
            room: room.clone(),
            event: BusEvent::Presence { user: user.clone(), state },
            trace,
        }
        .to_json();
        let channel = keys::channel(&self.config.prefix, room);
        let publish = self.publish_command();
        let _receivers: i64 = self
            .command(|mut conn| async move {
                redis::cmd(publish).arg(channel).arg(payload).query_async(&mut conn).await
            })
            .await?;
        add(&self.stats.signals, 1);
        Ok(())
    }
}

/// [`Broker`] backed by Redis, for a cluster of gateway nodes.
///
/// Created with [`RedisBroker::connect`]; its background tasks (the pub/sub
/// supervisor and the presence refresher) run until the config's `shutdown`
/// token is cancelled, [`RedisBroker::close`] is called, or it is dropped.
pub struct RedisBroker {
    core: Arc<Core>,
    shutdown: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

impl RedisBroker {
    /// Starts the broker on the current tokio runtime.
    ///
    /// Fails only on a config that cannot work (an invalid URL). If Redis is
    /// unreachable the broker still starts, not ready, and keeps connecting
    /// in the background: a node must not crash-loop because Redis is late.
    /// Returns after the first connection attempt (or `command_timeout`), so
    /// with a healthy Redis the broker is ready on return.
    pub async fn connect(
        config: RedisConfig,
        inbox: Arc<dyn Inbox>,
    ) -> Result<Arc<RedisBroker>, BrokerError> {
        let target = config.target()?;
        let sharded = matches!(target, Target::Cluster(_));
        let client = pubsub::BusClient::new(&target, config.command_timeout)?;
        let commands = CommandPool::new(&target, config.connections, config.command_timeout)?;
        let shutdown = config.shutdown.child_token();
        let (publisher, pending) = Publisher::new();
        let stats = Arc::new(RedisStats::default());
        let mut tasks = JoinSet::new();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let workers = Workers::start(
            cores,
            &config.prefix,
            inbox.clone(),
            stats.clone(),
            &mut tasks,
            &shutdown,
        );
        let core = Arc::new(Core {
            inbox,
            commands,
            sharded,
            scripts: Scripts::new(sharded),
            bus: Bus::new(config.prefix.clone(), config.command_timeout),
            publisher,
            presence: LocalPresence::new(),
            reads: SingleFlight::new(),
            member_reads: SingleFlight::new(),
            read_permits: Semaphore::new(config.max_concurrent_reads.max(1)),
            stats,
            workers,
            directory: Directory::default(),
            config: RedisConfig {
                history_max: config.history_max.max(1),
                presence_ttl: config.presence_ttl.max(Duration::from_millis(100)),
                ..config
            },
        });
        let (first_attempt, attempted) = oneshot::channel();
        tasks.spawn(pubsub::supervise(core.clone(), client, shutdown.clone(), first_attempt));
        tasks.spawn(presence::maintain(core.clone(), shutdown.clone()));
        tasks.spawn(publisher::run(core.clone(), pending, shutdown.clone()));
        let _ = timeout(core.config.command_timeout, attempted).await;
        info!(
            node = %core.config.node_id,
            prefix = %core.config.prefix,
            cluster = sharded,
            ready = core.bus.is_up(),
            "redis broker started"
        );
        Ok(Arc::new(RedisBroker { core, shutdown, tasks: Mutex::new(tasks) }))
    }

    /// The broker's counters, for metrics.
    pub fn stats(&self) -> &RedisStats {
        &self.core.stats
    }

    /// Stops the background tasks and waits for them. Presence entries this
    /// node still holds are not removed; they expire and are swept.
    pub async fn close(&self) {
        self.shutdown.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock());
        while let Some(result) = tasks.join_next().await {
            if let Err(e) = result
                && e.is_panic()
            {
                warn!(node = %self.core.config.node_id, error = %e, "broker task panicked");
            }
        }
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        // The JoinSet aborts whatever is left when it drops.
        self.shutdown.cancel();
    }
}

#[async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Published, BrokerError> {
        self.core.publish(room, draft).await
    }

    async fn signal(
        &self,
        room: &RoomName,
        user: &UserName,
        state: PresenceState,
        trace: Option<String>,
    ) -> Result<(), BrokerError> {
        self.core.signal(room, user, state, trace).await
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        self.core.bus.subscribe(room).await
    }

    async fn unsubscribe(&self, room: &RoomName) {
        self.core.bus.unsubscribe(room).await
    }

    async fn head(
        &self,
        room: &RoomName,
        evidence: Option<Evidence>,
    ) -> Result<RoomHead, BrokerError> {
        Ok(self.core.read(room, Read::Head, evidence).await?.head)
    }

    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
        evidence: Option<Evidence>,
    ) -> Result<HistoryPage, BrokerError> {
        self.core.read(room, query.into(), evidence).await
    }

    async fn presence_join(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError> {
        self.core.presence_join(room, user, session).await
    }

    async fn presence_leave(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError> {
        self.core.presence_leave(room, user, session).await
    }

    async fn members_page(
        &self,
        room: &RoomName,
        after: Option<&UserName>,
        limit: usize,
    ) -> Result<MembersPage, BrokerError> {
        self.core.members_page(room, after, limit).await
    }

    fn is_ready(&self) -> bool {
        self.core.bus.is_up()
    }

    async fn report(&self, report: NodeReport) -> Result<(), BrokerError> {
        self.core.report(&report).await
    }

    async fn nodes(&self) -> Result<ClusterReport, BrokerError> {
        self.core.nodes().await
    }

    async fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<RoomsPage, BrokerError> {
        self.core.rooms(after, limit).await
    }

    async fn control(&self, order: Control) -> Result<u64, BrokerError> {
        self.core.publish_control(&order).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_credentials() {
        let config = RedisConfig::new("redis://user:s3cret@redis.internal:6379/0", "n1");
        let shown = format!("{config:?}");
        assert!(shown.contains("redis://***@redis.internal:6379/0"), "{shown}");
        assert!(!shown.contains("s3cret"));
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("redis://a:x@h1:7000,redis://h2:7001,redis://:y@h3:7002"),
            "redis://***@h1:7000,redis://h2:7001,redis://***@h3:7002"
        );
    }

    #[test]
    fn cluster_seeds_parse() {
        let mut config = RedisConfig::new(" redis://h1:7000, ,redis://h2:7001", "n1");
        assert!(matches!(config.target(), Ok(Target::Single(_))));
        config.cluster = true;
        let Ok(Target::Cluster(seeds)) = config.target() else { panic!("a cluster") };
        assert_eq!(seeds, ["redis://h1:7000", "redis://h2:7001"]);
        config.prefix = "a{b}".into();
        assert!(config.target().is_err(), "a brace would be the hash tag");
        config.prefix = "palaver".into();
        config.url = " , ".into();
        assert!(config.target().is_err());
    }
}
