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
    AsyncConnectionConfig, ErrorKind, RedisError, RedisResult, aio::MultiplexedConnection,
};
use tokio::time::{Instant, timeout_at};

use crate::broker::BrokerError;

/// Round-robin lanes of multiplexed connections.
pub(crate) struct CommandPool {
    pool: Pool,
    lanes: Box<[Lane]>,
    next: AtomicUsize,
    timeout: Duration,
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

impl CommandPool {
    /// A pool of `lanes` connections to `url`; connects lazily.
    pub fn new(url: &str, lanes: usize, timeout: Duration) -> Result<Self, BrokerError> {
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
        Ok(CommandPool { pool, lanes, next: AtomicUsize::new(0), timeout })
    }

    /// Runs one command (or pipeline, or script) within the command timeout.
    pub async fn run<T, F, Fut>(&self, command: F) -> Result<T, BrokerError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let deadline = Instant::now() + self.timeout;
        let leased = match timeout_at(deadline, self.lease()).await {
            Ok(leased) => leased?,
            Err(_) => return Err(BrokerError::Unavailable("redis connect timed out".into())),
        };
        match timeout_at(deadline, command(leased.conn.clone())).await {
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
    pub fn reset(&self) {
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
