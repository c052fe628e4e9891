//! The cluster directory: which nodes are alive, what each last reported,
//! and which rooms have members on some node — what the server API's
//! `/stats` and `/rooms` read.
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `{prefix}:{nodes}` | zset | node id -> expiry of its report (ms, Redis clock) |
//! | `{prefix}:{nodes}:node:{<node>}` | string | the node's latest [`NodeReport`] (JSON), `PX report_ttl` |
//! | `{prefix}:{nodes}:node:{<node>}:rooms` | zset | rooms with local members (all scores 0, read by lex), `PX report_ttl` |
//! | `{prefix}:{nodes}:union` | zset | scratch key of the distinct-rooms count, deleted by the same script |
//!
//! Every directory key carries the hash tag `{nodes}` (the first braces of a
//! key are its tag), so on a Redis Cluster they share one slot and a script
//! may read several; the braces around the node id only delimit it.
//!
//! Each node writes only its own keys, with one script per report (every
//! third of `report_ttl`); its room list is rewritten only when it changed
//! (or Redis lost it), else just kept alive. A node that dies stops
//! reporting and drops out within `report_ttl`. Reads are two steps, since a
//! script must be given every key it touches: the live nodes first, then
//! their keys. A page of rooms reads at most `limit + 1` names per live node
//! (`ZRANGEBYLEX`) and then one `ZCOUNT` of the presence set per returned
//! room (each on the room's own shard, concurrently): O(nodes × limit),
//! never O(rooms).

use std::sync::LazyLock;

use palaver_protocol::RoomName;
use parking_lot::Mutex;
use redis::{Script, Value};
use tracing::warn;

use futures_util::{StreamExt, stream};

use super::{
    Core,
    keys::RoomKeys,
    scripts::{integer, text},
};
use crate::{
    broker::BrokerError,
    cluster::{ClusterReport, MAX_ROOMS_PAGE, NodeReport, RoomSummary, RoomsPage},
};

/// The Redis clock in ms.
const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// The live nodes. KEYS: the nodes zset. Returns their ids.
static LIVE_NODES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{}",
        r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
"#
    ))
});

/// Records one node's report and keeps (or rewrites) its room list.
///
/// KEYS: nodes zset, report key, rooms key.
/// ARGV: node id, report JSON, ttl ms, `1` to replace the room list (rooms
/// follow) or `0` to keep it, `1` if the node has rooms, then the rooms.
/// Returns 0 when asked to keep a list Redis no longer has (send it again).
static REPORT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
if ARGV[4] == '0' and ARGV[5] == '1' and redis.call('EXISTS', KEYS[3]) == 0 then
  return 0
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
if ARGV[4] == '1' then
  redis.call('DEL', KEYS[3])
  local batch = {}
  for i = 6, #ARGV do
    batch[#batch + 1] = 0
    batch[#batch + 1] = ARGV[i]
    if #batch >= 2000 then
      redis.call('ZADD', KEYS[3], unpack(batch))
      batch = {}
    end
  end
  if #batch > 0 then
    redis.call('ZADD', KEYS[3], unpack(batch))
  end
end
redis.call('PEXPIRE', KEYS[3], ttl)
return 1
"#,
    )
});

/// The given nodes' reports, and how many distinct rooms their lists hold
/// (a union into a scratch key: O(active rooms), for dashboards).
///
/// KEYS: scratch key, then each node's report key and rooms key.
/// Returns `{distinct rooms, report JSON, ...}` (missing reports skipped).
static NODES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {0}
local lists = {}
for i = 2, #KEYS, 2 do
  local report = redis.call('GET', KEYS[i])
  if report then
    out[#out + 1] = report
  end
  lists[#lists + 1] = KEYS[i + 1]
end
if #lists > 0 then
  out[1] = redis.call('ZUNIONSTORE', KEYS[1], #lists, unpack(lists))
  redis.call('DEL', KEYS[1])
end
return out
"#,
    )
});

/// One page of the names of active rooms.
///
/// KEYS: the rooms key of each live node. ARGV: cursor (`''` for the start), limit.
/// Returns `{more (0|1), room, room, ...}`.
static ROOMS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local min = '-'
if ARGV[1] ~= '' then
  min = '(' .. ARGV[1]
end
local limit = tonumber(ARGV[2])
local seen, names = {}, {}
for _, rooms_key in ipairs(KEYS) do
  local rooms = redis.call('ZRANGEBYLEX', rooms_key, min, '+', 'LIMIT', 0, limit + 1)
  for _, room in ipairs(rooms) do
    if not seen[room] then
      seen[room] = true
      names[#names + 1] = room
    end
  end
end
table.sort(names)
local out = {0}
if #names > limit then
  out[1] = 1
end
for i = 1, math.min(#names, limit) do
  out[#out + 1] = names[i]
end
return out
"#,
    )
});

/// How many users of a room are live. KEYS: the room's presence set.
static MEMBER_COUNT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{NOW}{}",
        r#"
return redis.call('ZCOUNT', KEYS[1], '(' .. string.format('%d', now), '+inf')
"#
    ))
});

/// What this node last wrote as its room list (sorted), so an unchanged
/// list costs one `PEXPIRE`, not a rewrite.
#[derive(Default)]
pub(crate) struct Directory {
    last_rooms: Mutex<Option<Vec<RoomName>>>,
}

/// The cluster-wide nodes zset.
fn nodes_key(prefix: &str) -> String {
    format!("{prefix}:{{nodes}}")
}

/// A node's report key (its rooms key adds `:rooms`).
fn node_key(prefix: &str, node: &str) -> String {
    format!("{prefix}:{{nodes}}:node:{{{node}}}")
}

/// The scratch key of the distinct-rooms count.
fn union_key(prefix: &str) -> String {
    format!("{prefix}:{{nodes}}:union")
}

impl Core {
    /// See [`crate::Broker::report`]. The room list is this node's subscribed rooms.
    pub(crate) async fn report(&self, report: &NodeReport) -> Result<(), BrokerError> {
        let mut rooms = self.bus.rooms();
        rooms.sort_unstable();
        let changed = self.directory.last_rooms.lock().as_ref() != Some(&rooms);
        if !self.write_report(report, &rooms, changed).await? {
            // Redis lost the list (restart, eviction): write it whole.
            self.write_report(report, &rooms, true).await?;
        }
        *self.directory.last_rooms.lock() = Some(rooms);
        Ok(())
    }

    async fn write_report(
        &self,
        report: &NodeReport,
        rooms: &[RoomName],
        replace: bool,
    ) -> Result<bool, BrokerError> {
        let prefix = &self.config.prefix;
        let node_key = node_key(prefix, &self.config.node_id);
        let json = serde_json::to_string(report).expect("reports always serialise");
        let mut invocation = REPORT.prepare_invoke();
        invocation
            .key(nodes_key(prefix))
            .key(&node_key)
            .key(format!("{node_key}:rooms"))
            .arg(&self.config.node_id)
            .arg(json)
            .arg(self.config.report_ttl.as_millis() as u64)
            .arg(if replace { "1" } else { "0" })
            .arg(if rooms.is_empty() { "0" } else { "1" });
        if replace {
            for room in rooms {
                invocation.arg(room.as_str());
            }
        }
        let written: i64 = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(written == 1)
    }

    /// The ids of the nodes whose report has not expired.
    async fn live_nodes(&self) -> Result<Vec<String>, BrokerError> {
        let mut invocation = LIVE_NODES.prepare_invoke();
        invocation.key(nodes_key(&self.config.prefix));
        self.command(|mut conn| async move { invocation.invoke_async(&mut conn).await }).await
    }

    /// See [`crate::Broker::nodes`].
    pub(crate) async fn nodes(&self) -> Result<ClusterReport, BrokerError> {
        let prefix = &self.config.prefix;
        let live = self.live_nodes().await?;
        let mut invocation = NODES.prepare_invoke();
        invocation.key(union_key(prefix));
        for node in &live {
            let key = node_key(prefix, node);
            invocation.key(&key).key(format!("{key}:rooms"));
        }
        let reply: Vec<Value> = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let corrupt = || BrokerError::Corrupt("unexpected nodes reply".into());
        let (rooms, reports) = reply.split_first().ok_or_else(corrupt)?;
        let rooms = integer(rooms).ok_or_else(corrupt)?;
        let mut nodes: Vec<NodeReport> = reports
            .iter()
            .filter_map(text)
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(report) => Some(report),
                Err(e) => {
                    warn!(error = %e, "skipped unreadable node report");
                    None
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        Ok(ClusterReport { nodes, rooms })
    }

    /// See [`crate::Broker::rooms`].
    pub(crate) async fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<RoomsPage, BrokerError> {
        let prefix = &self.config.prefix;
        let limit = limit.clamp(1, MAX_ROOMS_PAGE);
        let live = self.live_nodes().await?;
        if live.is_empty() {
            return Ok(RoomsPage { rooms: Vec::new(), more: false });
        }
        let mut invocation = ROOMS.prepare_invoke();
        for node in &live {
            invocation.key(format!("{}:rooms", node_key(prefix, node)));
        }
        invocation.arg(after.map_or("", RoomName::as_str)).arg(limit);
        let reply: Value = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        let (names, more) = decode_rooms(&reply)?;
        // Each count runs on the room's own shard.
        let presence_keys: Vec<String> =
            names.iter().map(|room| RoomKeys::new(prefix, room).presence).collect();
        let counts = stream::iter(presence_keys)
            .map(|key| async move {
                let mut invocation = MEMBER_COUNT.prepare_invoke();
                invocation.key(key);
                self.command(move |mut conn| async move {
                    invocation.invoke_async::<u64>(&mut conn).await
                })
                .await
            })
            .buffered(COUNTS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await;
        let rooms = names
            .into_iter()
            .zip(counts)
            .map(|(room, members)| Ok(RoomSummary { room, members: members? }))
            .collect::<Result<_, BrokerError>>()?;
        Ok(RoomsPage { rooms, more })
    }
}

/// Most member counts in flight at once while listing rooms.
const COUNTS_IN_FLIGHT: usize = 64;

/// The names of a [`ROOMS`] reply (invalid ones skipped) and whether more follow.
fn decode_rooms(reply: &Value) -> Result<(Vec<RoomName>, bool), BrokerError> {
    let corrupt = || BrokerError::Corrupt("unexpected rooms reply".into());
    let Value::Array(items) = reply else { return Err(corrupt()) };
    let (more, names) = items.split_first().ok_or_else(corrupt)?;
    let more = integer(more).ok_or_else(corrupt)? == 1;
    let mut rooms = Vec::with_capacity(names.len());
    for name in names {
        let name = text(name).ok_or_else(corrupt)?;
        match RoomName::parse(name) {
            Ok(room) => rooms.push(room),
            Err(e) => warn!(room = name, error = %e, "skipped invalid room in the directory"),
        }
    }
    Ok((rooms, more))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_keys_share_one_slot() {
        let slot = |key: &str| redis::cluster_routing::Slot::for_key(key);
        let nodes = slot(&nodes_key("p"));
        assert_eq!(slot(&node_key("p", "n1")), nodes);
        assert_eq!(slot(&format!("{}:rooms", node_key("p", "n-2"))), nodes);
        assert_eq!(slot(&union_key("p")), nodes);
    }

    #[test]
    fn rooms_reply_decodes() {
        let reply = Value::Array(vec![
            Value::Int(1),
            Value::BulkString(b"lobby".to_vec()),
            Value::BulkString(b"<bad>".to_vec()),
        ]);
        let (rooms, more) = decode_rooms(&reply).expect("decodes");
        assert!(more);
        assert_eq!(rooms.iter().map(RoomName::as_str).collect::<Vec<_>>(), ["lobby"]);
        assert!(decode_rooms(&Value::Array(vec![])).is_err());
    }
}
