//! Command connections: a few multiplexed connections, created by a
//! `deadpool-redis` pool and kept checked out.
//!
//! A multiplexed connection carries any number of concurrent commands, so a
//! handful of them ("lanes", round-robin) is enough, and a command only clones
//! a handle. They are kept checked out rather than returned to the pool after
//! each command because `deadpool-redis` checks a returned connection with
//! `UNWATCH` + `PING` before handing it out again, which would double the round
//! trips of every publish. A lane whose connection fails or times out is
//! emptied and refilled from the pool by the next command that lands on it.
//!
//! On a Redis Cluster there is one [`ClusterConnection`] instead: it keeps a
//! multiplexed connection per node itself, routes each command by its first
//! key's slot, follows `MOVED`/`ASK` and refreshes the slot map, so a lane
//! per node would add nothing. Commands get a [`Conn`], which is either.
//!
//! Every command is bounded by one deadline (connecting included), so when
//! Redis is gone callers get [`BrokerError::Unavailable`] quickly instead of
//! piling up.

use std::{
    future::Future,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use deadpool_redis::{Connection, Manager, Pool, PoolError, Runtime};
use parking_lot::Mutex;
use redis::{
    AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
};
use tokio::time::{Instant, timeout_at};

use super::Target;
use crate::broker::BrokerError;

/// The connection a command runs on: to one Redis, or to a Redis Cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    /// One multiplexed connection to a single Redis.
    Single(MultiplexedConnection),
    /// The cluster connection (routes by slot).
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Command connections to one Redis or to a Redis Cluster.
pub(crate) enum CommandPool {
    Single(SinglePool),
    Cluster(Box<ClusterPool>),
}

/// Round-robin lanes of multiplexed connections.
pub(crate) struct SinglePool {
    pool: Pool,
    lanes: Box<[Lane]>,
    next: AtomicUsize,
    timeout: Duration,
}

/// The one cluster connection, created on first use and kept.
pub(crate) struct ClusterPool {
    client: ClusterClient,
    conn: Mutex<Option<ClusterConnection>>,
    connect: tokio::sync::Mutex<()>,
    timeout: Duration,
}

/// A cluster client for `seeds`, with the command deadline on connecting
/// and on every response.
pub(crate) fn cluster_builder(seeds: &[String], timeout: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.iter().map(String::as_str))
        .connection_timeout(timeout)
        .response_timeout(timeout)
}

impl CommandPool {
    /// Connections to `target`; connects lazily.
    pub fn new(target: &Target, lanes: usize, timeout: Duration) -> Result<Self, BrokerError> {
        match target {
            Target::Single(url) => Ok(CommandPool::Single(SinglePool::new(url, lanes, timeout)?)),
            Target::Cluster(seeds) => {
                let client = cluster_builder(seeds, timeout)
                    .build()
                    .map_err(|e| BrokerError::Unavailable(format!("invalid redis cluster: {e}")))?;
                Ok(CommandPool::Cluster(Box::new(ClusterPool {
                    client,
                    conn: Mutex::new(None),
                    connect: tokio::sync::Mutex::new(()),
                    timeout,
                })))
            }
        }
    }

    /// Runs one command (or script) within the command timeout.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, BrokerError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match self {
            CommandPool::Single(pool) => pool.run(command).await,
            CommandPool::Cluster(pool) => pool.run(command).await,
        }
    }

    /// See [`SinglePool::reset`]; a cluster connection reconnects per node by itself.
    pub fn reset(&self) {
        if let CommandPool::Single(pool) = self {
            pool.reset();
        }
    }
}

impl ClusterPool {
    async fn run<T, F, Fut>(&self, command: F) -> Result<T, BrokerError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let conn = match timeout_at(deadline, self.connection()).await {
            Ok(conn) => conn?,
            Err(_) => return Err(BrokerError::Unavailable("redis connect timed out".into())),
        };
        match timeout_at(deadline, command(Conn::Cluster(conn))).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(broker_error(&error)),
            Err(_) => Err(BrokerError::Unavailable("redis command timed out".into())),
        }
    }

    async fn connection(&self) -> Result<ClusterConnection, BrokerError> {
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(conn);
        }
        let _connect = self.connect.lock().await;
        if let Some(conn) = self.conn.lock().clone() {
            return Ok(conn);
        }
        let conn = self
            .client
            .get_async_connection()
            .await
            .map_err(|e| BrokerError::Unavailable(format!("redis cluster connect: {e}")))?;
        *self.conn.lock() = Some(conn.clone());
        Ok(conn)
    }
}

/// One slot holding a checked-out connection, tagged with a generation so a
/// failure reported late cannot discard its replacement.
struct Lane {
    slot: Mutex<Option<(u64, Connection)>>,
    refill: tokio::sync::Mutex<()>,
    generation: AtomicU64,
}

/// A connection handle lent to one command.
struct Leased {
    lane: usize,
    generation: u64,
    conn: MultiplexedConnection,
}

impl SinglePool {
    /// A pool of `lanes` connections to `url`; connects lazily.
    fn new(url: &str, lanes: usize, timeout: Duration) -> Result<Self, BrokerError> {
        let lanes = lanes.max(1);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let manager = Manager::new_with_config(url, config)
            .map_err(|e| BrokerError::Unavailable(format!("invalid redis url: {e}")))?;
        let pool = Pool::builder(manager)
            .max_size(lanes)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| BrokerError::Unavailable(format!("redis pool: {e}")))?;
        let lanes = (0..lanes)
            .map(|_| Lane {
                slot: Mutex::new(None),
                refill: tokio::sync::Mutex::new(()),
                generation: AtomicU64::new(0),
            })
            .collect();
        Ok(SinglePool { pool, lanes, next: AtomicUsize::new(0), timeout })
    }

    async fn run<T, F, Fut>(&self, command: F) -> Result<T, BrokerError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let leased = match timeout_at(deadline, self.lease()).await {
            Ok(leased) => leased?,
            Err(_) => return Err(BrokerError::Unavailable("redis connect timed out".into())),
        };
        match timeout_at(deadline, command(Conn::Single(leased.conn.clone()))).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                if is_connection_error(&error) {
                    self.discard(&leased);
                }
                Err(broker_error(&error))
            }
            Err(_) => {
                // A silent connection (half-open socket, stalled server) is
                // replaced rather than trusted again.
                self.discard(&leased);
                Err(BrokerError::Unavailable("redis command timed out".into()))
            }
        }
    }

    async fn lease(&self) -> Result<Leased, BrokerError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        let lane = &self.lanes[index];
        if let Some(leased) = lane.current(index) {
            return Ok(leased);
        }
        // One refill per lane at a time; the others wait and reuse it.
        let _refill = lane.refill.lock().await;
        if let Some(leased) = lane.current(index) {
            return Ok(leased);
        }
        let conn = self.pool.get().await.map_err(pool_error)?;
        let generation = lane.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = MultiplexedConnection::clone(&conn);
        *lane.slot.lock() = Some((generation, conn));
        Ok(Leased { lane: index, generation, conn: handle })
    }

    /// Drops every connection: the pub/sub connection to the same Redis just
    /// died, so these almost surely did too, and the next commands should
    /// connect afresh rather than fail once per lane on a dead socket.
    fn reset(&self) {
        for lane in self.lanes.iter() {
            if let Some((_, conn)) = lane.slot.lock().take() {
                drop(Connection::take(conn));
            }
        }
    }

    fn discard(&self, leased: &Leased) {
        let mut slot = self.lanes[leased.lane].slot.lock();
        if slot.as_ref().is_some_and(|(generation, _)| *generation == leased.generation)
            && let Some((_, conn)) = slot.take()
        {
            // Detach it from the pool so it is dropped, not recycled.
            drop(Connection::take(conn));
        }
    }
}

impl Lane {
    fn current(&self, index: usize) -> Option<Leased> {
        self.slot.lock().as_ref().map(|(generation, conn)| Leased {
            lane: index,
            generation: *generation,
            conn: MultiplexedConnection::clone(conn),
        })
    }
}

/// Whether the error means the connection itself is unusable.
fn is_connection_error(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_timeout()
        || error.is_unrecoverable_error()
}

/// Maps a Redis error: replies this node cannot decode are `Corrupt`,
/// everything else (connection trouble, a loading or read-only server, a
/// failed script) is `Unavailable`, which clients may retry.
pub(crate) fn broker_error(error: &RedisError) -> BrokerError {
    match error.kind() {
        ErrorKind::Parse | ErrorKind::UnexpectedReturnType => {
            BrokerError::Corrupt(error.to_string())
        }
        _ => BrokerError::Unavailable(error.to_string()),
    }
}

fn pool_error(error: PoolError) -> BrokerError {
    BrokerError::Unavailable(format!("redis connect: {error}"))
}
