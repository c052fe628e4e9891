//! The cluster directory: which nodes are alive, what each last reported,
//! and which rooms have members on some node — what the server API's
//! `/stats` and `/rooms` read.
//!
//! | key | type | holds |
//! |-----|------|-------|
//! | `{prefix}:nodes` | zset | node id -> expiry of its report (ms, Redis clock) |
//! | `{prefix}:node:{<node>}` | string | the node's latest [`NodeReport`] (JSON), `PX report_ttl` |
//! | `{prefix}:node:{<node>}:rooms` | zset | rooms with local members (all scores 0, read by lex), `PX report_ttl` |
//! | `{prefix}:nodes:union` | zset | scratch key of the distinct-rooms count, deleted by the same script |
//!
//! Each node writes only its own keys, with one script per report (every
//! third of `report_ttl`); its room list is rewritten only when it changed
//! (or Redis lost it), else just kept alive. A node that dies stops
//! reporting and drops out within `report_ttl`. A page of rooms reads at most
//! `limit + 1` names per live node (`ZRANGEBYLEX`) and one `ZCOUNT` of the
//! presence set per returned room: O(nodes × limit), never O(rooms).

use std::sync::LazyLock;

use palaver_protocol::RoomName;
use parking_lot::Mutex;
use redis::{Script, Value};
use tracing::warn;

use super::{
    Core,
    scripts::{integer, text},
};
use crate::{
    broker::BrokerError,
    cluster::{ClusterReport, MAX_ROOMS_PAGE, NodeReport, RoomSummary, RoomsPage},
};

/// Shared prologue: the Redis clock in ms, and the live nodes.
/// KEYS[1]: the nodes zset.
const LIVE_NODES: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nodes = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
"#;

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

/// The live nodes' reports, and how many distinct rooms their lists hold
/// (a union into a scratch key: O(active rooms), for dashboards).
///
/// KEYS: nodes zset, scratch key. ARGV: key prefix of reports (`{prefix}:node:{`).
/// Returns `{distinct rooms, report JSON, ...}`.
static NODES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LIVE_NODES}{}",
        r#"
local out = {0}
local lists = {}
for _, node in ipairs(nodes) do
  local report = redis.call('GET', ARGV[1] .. node .. '}')
  if report then
    out[#out + 1] = report
  end
  lists[#lists + 1] = ARGV[1] .. node .. '}:rooms'
end
if #lists > 0 then
  out[1] = redis.call('ZUNIONSTORE', KEYS[2], #lists, unpack(lists))
  redis.call('DEL', KEYS[2])
end
return out
"#
    ))
});

/// One page of active rooms with their cluster-wide member counts.
///
/// KEYS: nodes zset. ARGV: key prefix of reports (`{prefix}:node:{`), room
/// key head and presence tail (`{prefix}:room:{`, `}:presence`), cursor
/// (`''` for the start), limit.
/// Returns `{more (0|1), room, members, room, members, ...}`.
static ROOMS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{LIVE_NODES}{}",
        r#"
local min = '-'
if ARGV[4] ~= '' then
  min = '(' .. ARGV[4]
end
local limit = tonumber(ARGV[5])
local seen, names = {}, {}
for _, node in ipairs(nodes) do
  local rooms = redis.call('ZRANGEBYLEX', ARGV[1] .. node .. '}:rooms', min, '+', 'LIMIT', 0, limit + 1)
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
local live = '(' .. string.format('%d', now)
for i = 1, math.min(#names, limit) do
  out[#out + 1] = names[i]
  out[#out + 1] = redis.call('ZCOUNT', ARGV[2] .. names[i] .. ARGV[3], live, '+inf')
end
return out
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
    format!("{prefix}:nodes")
}

/// Common head of every node's keys: `{prefix}:node:{` (then the id and `}`).
fn node_key_head(prefix: &str) -> String {
    format!("{prefix}:node:{{")
}

/// The head and tail around a room name that make its presence key.
fn presence_key_parts(prefix: &str) -> (String, &'static str) {
    (format!("{prefix}:room:{{"), "}:presence")
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
        let node_key = format!("{}{}}}", node_key_head(prefix), self.config.node_id);
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

    /// See [`crate::Broker::nodes`].
    pub(crate) async fn nodes(&self) -> Result<ClusterReport, BrokerError> {
        let prefix = &self.config.prefix;
        let nodes_key = nodes_key(prefix);
        let mut invocation = NODES.prepare_invoke();
        invocation.key(&nodes_key).key(format!("{nodes_key}:union")).arg(node_key_head(prefix));
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
        let (head, tail) = presence_key_parts(prefix);
        let mut invocation = ROOMS.prepare_invoke();
        invocation
            .key(nodes_key(prefix))
            .arg(node_key_head(prefix))
            .arg(head)
            .arg(tail)
            .arg(after.map_or("", RoomName::as_str))
            .arg(limit);
        let reply: Value = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        decode_rooms(&reply)
    }
}

fn decode_rooms(reply: &Value) -> Result<RoomsPage, BrokerError> {
    let corrupt = || BrokerError::Corrupt("unexpected rooms reply".into());
    let Value::Array(items) = reply else { return Err(corrupt()) };
    let (more, pairs) = items.split_first().ok_or_else(corrupt)?;
    let more = integer(more).ok_or_else(corrupt)? == 1;
    let mut rooms = Vec::with_capacity(pairs.len() / 2);
    for pair in pairs.chunks(2) {
        let [name, members] = pair else { return Err(corrupt()) };
        let name = text(name).ok_or_else(corrupt)?;
        let members = integer(members).ok_or_else(corrupt)?;
        match RoomName::parse(name) {
            Ok(room) => rooms.push(RoomSummary { room, members }),
            Err(e) => warn!(room = name, error = %e, "skipped invalid room in the directory"),
        }
    }
    Ok(RoomsPage { rooms, more })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::keys::RoomKeys;

    #[test]
    fn presence_key_parts_match_the_room_layout() {
        let room = RoomName::parse("a:b.c").expect("valid");
        let (head, tail) = presence_key_parts("p");
        assert_eq!(format!("{head}{room}{tail}"), RoomKeys::new("p", &room).presence);
    }

    #[test]
    fn rooms_reply_decodes() {
        let reply =
            Value::Array(vec![Value::Int(1), Value::BulkString(b"lobby".to_vec()), Value::Int(3)]);
        let page = decode_rooms(&reply).expect("decodes");
        assert!(page.more);
        assert_eq!(page.rooms[0].room.as_str(), "lobby");
        assert_eq!(page.rooms[0].members, 3);
        assert!(decode_rooms(&Value::Array(vec![])).is_err());
    }
}
