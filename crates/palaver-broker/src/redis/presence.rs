//! Cluster-wide presence: entries with an expiry, kept alive by their node.
//!
//! Per room, Redis holds a ZSET of users scored by the latest expiry of their
//! entries, and per (room, user) a ZSET of entries (`node/session`) scored by
//! expiry. Expiry is judged by the Redis clock (`TIME` in the scripts), so
//! node clocks do not matter.
//!
//! * **Join/leave** touch one user: O(log N) in the room's size N (plus the
//!   user's expired entries they prune). A user's `join` is announced by the
//!   call that adds them to the room set, their `leave` by the call that
//!   removes them, so each is announced exactly once cluster-wide, whichever
//!   node or path does it.
//! * **Members**: a page is a lex range of the room's roster (a ZSET of the
//!   same users, every score 0) checked against the presence set, and the
//!   count one `ZCOUNT` of live users: O(log N + page), whatever the room's size.
//! * **Refresh**: every `presence_ttl / 3` this node extends its own entries,
//!   one script call per room (batched) and all calls pipelined: O(local
//!   entries) per tick, up to 64 calls in flight at once. Entries found missing
//!   (swept during a long pause, or lost in an empty Redis restart) are
//!   joined again and their users re-announced.
//! * **Sweep**: on the same tick this node sweeps the rooms it is subscribed
//!   to: one call lists the users whose latest expiry passed (their node
//!   died), a second (only if there are any) removes them and publishes a
//!   `leave` envelope from inside the script, every key passed as `KEYS` (a
//!   Redis Cluster refuses keys a script builds itself). A sweep that finds
//!   nothing costs one O(log N) call; every subscribed node sweeps, but only
//!   the one whose script removes a user announces it.
//!
//! Calls for many rooms are sent concurrently on the multiplexed connection
//! (which pipelines them on the wire), not as one `MULTI`-less pipeline: on
//! a Cluster each room's call must go to its own shard.
//!
//! A crashed node's users are announced gone within `presence_ttl` plus one
//! tick; key TTLs (three times `presence_ttl`) clean up rooms nobody sweeps.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures_util::{FutureExt, future::join_all};
use palaver_protocol::{PresenceState, RoomName, UserName};
use parking_lot::Mutex;
use redis::{ScriptInvocation, Value};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    Core,
    keys::{RoomKeys, leave_envelope_parts, presence_entry},
    scripts::{integer, text},
    stats::add,
};
use crate::broker::{BrokerError, MembersPage};

/// Most entries refreshed by one script call.
const REFRESH_BATCH: usize = 200;
/// Most script calls in flight at once.
const IN_FLIGHT: usize = 64;
/// Most expired users one sweep call removes (the rest go next tick).
const SWEEP_BATCH: usize = 100;

/// One local connection's presence in a room: the user and the session id.
type Session = (UserName, Arc<str>);

/// This node's live entries, the ones it keeps refreshing.
pub(crate) struct LocalPresence {
    entries: Mutex<HashMap<RoomName, HashSet<Session>>>,
    /// Leaves take it shared; re-joining lost entries takes it exclusively, so
    /// a leave in flight is never undone by a refresh that saw the entry
    /// before it was removed.
    rejoin: RwLock<()>,
}

impl LocalPresence {
    /// No entries.
    pub fn new() -> Self {
        LocalPresence { entries: Mutex::new(HashMap::new()), rejoin: RwLock::new(()) }
    }

    fn insert(&self, room: &RoomName, user: &UserName, session: &str) {
        self.entries
            .lock()
            .entry(room.clone())
            .or_default()
            .insert((user.clone(), Arc::from(session)));
    }

    fn remove(&self, room: &RoomName, user: &UserName, session: &str) {
        let mut entries = self.entries.lock();
        if let Some(sessions) = entries.get_mut(room) {
            sessions.remove(&(user.clone(), Arc::from(session)));
            if sessions.is_empty() {
                entries.remove(room);
            }
        }
    }

    fn contains(&self, room: &RoomName, user: &UserName, session: &Arc<str>) -> bool {
        self.entries
            .lock()
            .get(room)
            .is_some_and(|sessions| sessions.contains(&(user.clone(), session.clone())))
    }

    fn snapshot(&self) -> Vec<(RoomName, Vec<Session>)> {
        self.entries
            .lock()
            .iter()
            .map(|(room, sessions)| (room.clone(), sessions.iter().cloned().collect()))
            .collect()
    }
}

impl Core {
    fn ttl_ms(&self) -> u64 {
        self.config.presence_ttl.as_millis() as u64
    }

    fn key_ttl_ms(&self) -> u64 {
        self.ttl_ms() * 3
    }

    /// Adds a presence entry in Redis; true when the user's join is to be announced.
    async fn join_entry(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError> {
        let keys = RoomKeys::new(&self.config.prefix, room);
        let mut invocation = self.scripts.presence_join.prepare_invoke();
        invocation
            .key(&keys.presence)
            .key(keys.presence_user(user))
            .key(&keys.roster)
            .arg(user.as_str())
            .arg(presence_entry(&self.config.node_id, session))
            .arg(self.ttl_ms())
            .arg(self.key_ttl_ms());
        let added: i64 = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(added == 1)
    }

    /// See [`crate::Broker::presence_join`].
    pub(crate) async fn presence_join(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError> {
        let announce = self.join_entry(room, user, session).await?;
        self.presence.insert(room, user, session);
        Ok(announce)
    }

    /// See [`crate::Broker::presence_leave`].
    pub(crate) async fn presence_leave(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError> {
        let _no_rejoin = self.presence.rejoin.read().await;
        // Forget it first: if Redis fails now, the entry expires on its own
        // and a sweep announces the leave.
        self.presence.remove(room, user, session);
        let keys = RoomKeys::new(&self.config.prefix, room);
        let mut invocation = self.scripts.presence_leave.prepare_invoke();
        invocation
            .key(&keys.presence)
            .key(keys.presence_user(user))
            .key(&keys.roster)
            .arg(user.as_str())
            .arg(presence_entry(&self.config.node_id, session));
        let removed: i64 = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(removed == 1)
    }

    /// See [`crate::Broker::members_page`]; concurrent reads of the same
    /// page share one fetch.
    pub(crate) async fn members_page(
        self: &Arc<Self>,
        room: &RoomName,
        after: Option<&UserName>,
        limit: usize,
    ) -> Result<MembersPage, BrokerError> {
        let core = self.clone();
        let key = (room.clone(), after.cloned(), limit.max(1));
        let fetch = key.clone();
        let (result, shared) = self
            .member_reads
            .run(key, move || {
                async move { core.fetch_members_page(&fetch.0, fetch.1.as_ref(), fetch.2).await }
                    .boxed()
            })
            .await;
        if shared {
            add(&self.stats.single_flight_hits, 1);
        }
        result
    }

    async fn fetch_members_page(
        &self,
        room: &RoomName,
        after: Option<&UserName>,
        limit: usize,
    ) -> Result<MembersPage, BrokerError> {
        let keys = RoomKeys::new(&self.config.prefix, room);
        let start = after.map_or_else(|| "-".to_owned(), |user| format!("({user}"));
        let mut invocation = self.scripts.presence_page.prepare_invoke();
        invocation.key(&keys.presence).key(&keys.roster).arg(start).arg(limit);
        let (count, more, names): (u64, u8, Vec<String>) = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let members = names
            .iter()
            .filter_map(|name| match UserName::parse(name) {
                Ok(user) => Some(user),
                Err(e) => {
                    warn!(room = %room, error = %e, "skipped invalid user in presence");
                    None
                }
            })
            .collect();
        Ok(MembersPage { members, more: more == 1, count })
    }

    /// Extends this node's entries; re-joins the ones Redis no longer has.
    async fn refresh(&self) -> Result<(), BrokerError> {
        let snapshot = self.presence.snapshot();
        let mut calls = Vec::new();
        for (room, sessions) in &snapshot {
            let keys = RoomKeys::new(&self.config.prefix, room);
            for batch in sessions.chunks(REFRESH_BATCH) {
                let mut invocation = self.scripts.presence_refresh.prepare_invoke();
                invocation
                    .key(&keys.presence)
                    .key(&keys.roster)
                    .arg(self.ttl_ms())
                    .arg(self.key_ttl_ms());
                for (user, session) in batch {
                    invocation
                        .key(keys.presence_user(user))
                        .arg(user.as_str())
                        .arg(presence_entry(&self.config.node_id, session));
                }
                calls.push((room, batch, invocation));
            }
        }
        let invocations: Vec<&ScriptInvocation<'_>> = calls.iter().map(|c| &c.2).collect();
        let replies = self.invoke_all(&invocations).await?;
        let mut lost = Vec::new();
        for ((room, batch, _), reply) in calls.iter().zip(replies) {
            let Value::Array(indexes) = reply else { continue };
            for index in indexes.iter().filter_map(integer) {
                if let Some((user, session)) = batch.get((index as usize).wrapping_sub(1)) {
                    lost.push(((*room).clone(), user.clone(), session.clone()));
                }
            }
        }
        if !lost.is_empty() {
            self.rejoin(lost).await;
        }
        Ok(())
    }

    /// Joins again entries that vanished from Redis while their sessions are
    /// still here, announcing users who thereby reappear.
    async fn rejoin(&self, lost: Vec<(RoomName, UserName, Arc<str>)>) {
        let _exclusive = self.presence.rejoin.write().await;
        for (room, user, session) in lost {
            if !self.presence.contains(&room, &user, &session) {
                continue; // left meanwhile
            }
            match self.join_entry(&room, &user, &session).await {
                Ok(true) => {
                    info!(room = %room, user = %user, "presence entry restored");
                    if let Err(e) = self.signal(&room, &user, PresenceState::Join, None).await {
                        warn!(room = %room, user = %user, error = %e, "announcing presence failed");
                    }
                }
                Ok(false) => debug!(room = %room, user = %user, "presence entry restored"),
                Err(e) => {
                    warn!(room = %room, user = %user, error = %e, "restoring presence failed")
                }
            }
        }
    }

    /// Removes expired users from the rooms this node is subscribed to.
    async fn sweep(&self) -> Result<u64, BrokerError> {
        let rooms = self.bus.rooms();
        let keys: Vec<RoomKeys> =
            rooms.iter().map(|room| RoomKeys::new(&self.config.prefix, room)).collect();
        let listings: Vec<ScriptInvocation<'_>> = keys
            .iter()
            .map(|keys| {
                let mut invocation = self.scripts.presence_expired.prepare_invoke();
                invocation.key(&keys.presence).arg(SWEEP_BATCH);
                invocation
            })
            .collect();
        let expired = self.invoke_all(&listings.iter().collect::<Vec<_>>()).await?;
        let mut sweeps = Vec::new();
        for ((room, keys), users) in rooms.iter().zip(&keys).zip(&expired) {
            let Value::Array(users) = users else { continue };
            let users: Vec<UserName> =
                users.iter().filter_map(text).filter_map(|u| UserName::parse(u).ok()).collect();
            if users.is_empty() {
                continue;
            }
            let [head, tail] = leave_envelope_parts(room);
            let mut invocation = self.scripts.presence_sweep.prepare_invoke();
            invocation.key(&keys.presence).key(&keys.roster).arg(&keys.channel).arg(head).arg(tail);
            for user in &users {
                invocation.key(keys.presence_user(user)).arg(user.as_str());
            }
            sweeps.push(invocation);
        }
        let replies = self.invoke_all(&sweeps.iter().collect::<Vec<_>>()).await?;
        Ok(replies.iter().filter_map(integer).sum())
    }

    /// Runs script calls concurrently (at most [`IN_FLIGHT`] at once); each
    /// goes to its room's shard and loads its script if Redis lacks it.
    /// Fails if any call failed.
    async fn invoke_all(
        &self,
        invocations: &[&ScriptInvocation<'_>],
    ) -> Result<Vec<Value>, BrokerError> {
        let mut replies = Vec::with_capacity(invocations.len());
        for chunk in invocations.chunks(IN_FLIGHT) {
            let mut calls = Vec::with_capacity(chunk.len());
            for invocation in chunk {
                calls.push(self.command(move |mut conn| async move {
                    invocation.invoke_async::<Value>(&mut conn).await
                }));
            }
            for reply in join_all(calls).await {
                replies.push(reply?);
            }
        }
        Ok(replies)
    }
}

/// Refreshes and sweeps every `presence_ttl / 3` until `shutdown`.
pub(crate) async fn maintain(core: Arc<Core>, shutdown: CancellationToken) {
    let period = (core.config.presence_ttl / 3).max(Duration::from_millis(50));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        // During an outage the bus supervisor already says so, loudly, once.
        let loud = core.bus.is_up();
        if let Err(e) = core.refresh().await {
            if loud {
                warn!(node = %core.config.node_id, error = %e, "presence refresh failed");
            } else {
                debug!(node = %core.config.node_id, error = %e, "presence refresh failed");
            }
        }
        match core.sweep().await {
            Ok(0) => {}
            Ok(gone) => {
                add(&core.stats.presence_expired, gone);
                info!(node = %core.config.node_id, users = gone, "expired presence swept");
            }
            Err(e) if loud => {
                warn!(node = %core.config.node_id, error = %e, "presence sweep failed")
            }
            Err(e) => debug!(node = %core.config.node_id, error = %e, "presence sweep failed"),
        }
    }
}
