//! The Lua scripts, and decoding of what they return.
//!
//! Each operation that must be atomic is one script, run by SHA
//! (`redis::Script` sends `EVALSHA` and falls back to loading the script when
//! Redis answers `NOSCRIPT`, e.g. after a restart). Presence scripts read the
//! clock with `TIME` so every node judges expiry by the same clock.
//!
//! A room's state is one hash, `meta`: `epoch`, `seq` (the head), `lu`/`li`
//! (user and id of the message at `seq`) and `reset_at` (Redis ms of the last
//! lost-write reset). [`ROOM_STATE`], shared by [`PUBLISH`] and [`READ`],
//! applies two rules:
//!
//! - **Epoch rule**: without `epoch` and `seq` the room's data was lost (TTL,
//!   eviction, an empty restart): a new epoch starts (the random one the
//!   caller passed), `seq` 0, stream and idempotency index deleted; sequence
//!   numbers restart at 1 under the new epoch and never go backwards within one.
//! - **Witness rule**: Redis can come back *behind* what it acknowledged (an
//!   `everysec` AOF, an RDB snapshot, a promoted replica that lagged) with
//!   `epoch` and `seq` intact but the last writes gone, and would then number
//!   other messages with the lost sequence numbers. The caller shows the
//!   newest message it holds (epoch, seq, id, user); if Redis no longer holds
//!   it — `seq` beyond the head, or another message stored at `seq` — the room
//!   moves to a new epoch in the same script (every node agrees), keeping its
//!   history and counter, and the reset is published on the room's channel
//!   so every node resyncs its members. Evidence a client brought resets a
//!   room at most once per cooldown.
//!
//! [`PUBLISH`] takes a batch: every publish a node has waiting when the
//! previous batch returns goes in one `EVALSHA`, so the script's fixed cost
//! (the call, argument parsing) is shared.

use palaver_protocol::{ClientMessageId, Epoch, Seq, StoredMessage, UserName};
use redis::{Script, Value};

use crate::broker::{BrokerError, RoomHead};

/// The shared prologue: `room_state(meta, stream, ids, new_epoch, ttl,
/// witness epoch ('' none), seq, id ('' unknown), user ('' unknown),
/// from_client, channel, envelope head, cooldown ms)` returns `epoch, seq,
/// fresh, lost, refreshed` (`refreshed`: the `rt` field, the sender's clock in
/// ms when a publish last refreshed the TTLs). `lost` is true when the witness's message is gone but a
/// client's evidence could not reset the room (cooldown); when it reset the
/// room, `epoch` is the new one.
const ROOM_STATE: &str = r#"
local function stored_at(stream, seq)
  local id = string.format('%d-1', seq)
  local entry = redis.call('XRANGE', stream, id, id)[1]
  if not entry then return nil, nil end
  local u, i
  local f = entry[2]
  for k = 1, #f, 2 do
    if f[k] == 'u' then u = f[k + 1] elseif f[k] == 'i' then i = f[k + 1] end
  end
  return u, i
end

local function room_state(meta, stream, ids, new_epoch, ttl, wepoch, wseq, wid, wuser,
                          from_client, channel, head, cooldown)
  local m = redis.call('HMGET', meta, 'epoch', 'seq', 'lu', 'li', 'rt')
  local epoch, seq = m[1], tonumber(m[2])
  if not epoch or not seq then
    redis.call('DEL', meta, stream, ids)
    redis.call('HSET', meta, 'epoch', new_epoch, 'seq', 0)
    redis.call('PEXPIRE', meta, ttl)
    return new_epoch, 0, true, false, 0
  end
  local refreshed = tonumber(m[5] or '0')
  if wepoch ~= epoch then return epoch, seq, false, false, refreshed end
  wseq = tonumber(wseq)
  local lost = wseq > seq
  if not lost and wseq > 0 and (wid ~= '' or wuser ~= '') then
    local u, i = m[3], m[4]
    if wseq < seq then u, i = stored_at(stream, wseq) end
    -- No entry below the head: trimmed, nothing to compare.
    if u then lost = (wid ~= '' and i ~= wid) or (wuser ~= '' and u ~= wuser) end
  end
  if not lost then return epoch, seq, false, false, refreshed end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local last = tonumber(redis.call('HGET', meta, 'reset_at') or '0')
  if from_client == '1' and now - last < tonumber(cooldown) then
    return epoch, seq, false, true, refreshed
  end
  redis.call('HSET', meta, 'epoch', new_epoch, 'reset_at', now)
  redis.call('PUBLISH', channel, head .. 'reset","epoch":"' .. new_epoch .. '"}}')
  return new_epoch, seq, false, false, refreshed
end
"#;

/// Sequences, stores and publishes a batch of messages (each may be a
/// duplicate), in order.
///
/// KEYS: per message, its room's meta, stream, ids.
/// ARGV: new epoch, room ttl ms, history max, then per message 11 values:
/// channel, envelope head, envelope tail, user, id, text, ts, witness epoch,
/// seq, id, user (`''` when none).
/// Returns per message `{duplicate (0|1), seq (string), epoch}`.
pub(crate) const PUBLISH: &str = r#"
local ttl = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local meta, stream, ids = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local a = 3 + 11 * i
  local channel, head, tail = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local user, id = ARGV[a + 4], ARGV[a + 5]
  local epoch, seq, fresh, _, refreshed = room_state(meta, stream, ids, ARGV[1], ttl,
    ARGV[a + 8], ARGV[a + 9], ARGV[a + 10], ARGV[a + 11], '0', channel, head, 0)
  local member = id .. ' ' .. user
  -- Formatted once: a Lua number passed to redis.call is formatted as %.14g.
  local seqs = string.format('%d', seq + 1)
  if redis.call('ZADD', ids, 'NX', seqs, member) == 0 then
    out[i + 1] = {1, redis.call('ZSCORE', ids, member), epoch}
  else
    seq = seq + 1
    local ts = ARGV[a + 7]
    redis.call('XADD', stream, 'MAXLEN', '~', max, seqs .. '-1',
      'u', user, 'i', id, 't', ARGV[a + 6], 'ts', ts)
    -- TTLs: set with new keys, then refreshed once half has passed (judged
    -- by the senders' clocks, so no extra call per message).
    if fresh or seq == 1 or tonumber(ts) - refreshed > ttl / 2 then
      redis.call('HSET', meta, 'seq', seqs, 'lu', user, 'li', id, 'rt', ts)
      redis.call('PEXPIRE', meta, ttl)
      redis.call('PEXPIRE', stream, ttl)
      redis.call('PEXPIRE', ids, ttl)
    else
      redis.call('HSET', meta, 'seq', seqs, 'lu', user, 'li', id)
    end
    -- The index is trimmed to the history window every 64 messages, not each.
    if seq % 64 == 0 then
      redis.call('ZREMRANGEBYSCORE', ids, '-inf', seq - max)
    end
    redis.call('PUBLISH', channel,
      head .. 'message","epoch":"' .. epoch .. '","message":{"seq":' .. seqs .. tail)
    out[i + 1] = {0, seqs, epoch}
  end
end
return out
"#;

/// Reads where a room stands and, optionally, one page of its stream.
///
/// KEYS: meta, stream, ids.
/// ARGV: new epoch, room ttl ms, witness epoch, seq, id, user, from client
/// (`1`|`0`), channel, envelope head, cooldown ms, mode (`head` | `rev` |
/// `fwd`), bound stream id, count. Reads keep an active room alive: TTLs
/// are refreshed when less than half remains.
/// Returns `{epoch, head (string), first stream id or false, entries, lost (0|1)}`.
pub(crate) const READ: &str = r#"
local ttl = tonumber(ARGV[2])
local epoch, head, fresh, lost = room_state(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ttl,
  ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
if not fresh and redis.call('PTTL', KEYS[1]) < ttl / 2 then
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local first = false
if oldest[1] then
  first = oldest[1][1]
end
local page = {}
if ARGV[11] == 'rev' then
  page = redis.call('XREVRANGE', KEYS[2], ARGV[12], '-', 'COUNT', ARGV[13])
elseif ARGV[11] == 'fwd' then
  page = redis.call('XRANGE', KEYS[2], ARGV[12], '+', 'COUNT', ARGV[13])
end
return {epoch, string.format('%d', head), first, page, lost and 1 or 0}
"#;

/// Shared prologue of the presence scripts: the Redis clock in ms.
const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// Adds one presence entry.
///
/// KEYS: room presence set, user entry set, room roster.
/// ARGV: user, entry, ttl ms, key ttl ms.
/// Returns 1 when the user was added to the room's presence set (their
/// `join` is to be announced), else 0.
pub(crate) const PRESENCE_JOIN: &str = r#"
local expiry = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], expiry, ARGV[2])
local added = redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[1])
redis.call('ZADD', KEYS[3], 0, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return added
"#;

/// Removes one presence entry.
///
/// KEYS: room presence set, user entry set, room roster. ARGV: user, entry.
/// Returns 1 when the user was removed from the room's presence set (their
/// `leave` is to be announced), else 0. Whoever removes a user from the set
/// announces it, so each leave is announced once cluster-wide.
pub(crate) const PRESENCE_LEAVE: &str = r#"
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
local latest = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if latest[1] then
  redis.call('ZADD', KEYS[1], 'XX', latest[2], ARGV[1])
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;

/// A page of users with a live entry, by name, and how many there are.
///
/// KEYS: room presence set, room roster. ARGV: lex start (`-` or `(<user>`),
/// limit. The roster (every score 0) is read by lex range and each user is
/// checked live in the presence set, so a page costs O(log N + limit) plus
/// any expired users not swept yet; the count is one `ZCOUNT`, O(log N).
/// Returns `{count, more (0/1), users}`.
pub(crate) const PRESENCE_PAGE: &str = r#"
local live = '(' .. string.format('%d', now)
local count = redis.call('ZCOUNT', KEYS[1], live, '+inf')
local limit = tonumber(ARGV[2])
local users = {}
local start = ARGV[1]
while #users <= limit do
  local batch = redis.call('ZRANGEBYLEX', KEYS[2], start, '+', 'LIMIT', 0, limit + 1 - #users)
  if #batch == 0 then break end
  for _, user in ipairs(batch) do
    local expiry = redis.call('ZSCORE', KEYS[1], user)
    if expiry and tonumber(expiry) > now then users[#users + 1] = user end
  end
  start = '(' .. batch[#batch]
end
local more = 0
if #users > limit then
  more = 1
  users[limit + 1] = nil
end
return {count, more, users}
"#;

/// Extends this node's entries in one room.
///
/// KEYS: room presence set, room roster, then one user entry set per entry.
/// ARGV: ttl ms, key ttl ms, then (user, entry) per entry.
/// Only existing entries are extended (a swept entry is not resurrected here);
/// their users are (re)written to the roster, which heals rooms joined before
/// the roster existed. Returns the 1-based indexes of entries that were missing.
pub(crate) const PRESENCE_REFRESH: &str = r#"
local expiry = now + tonumber(ARGV[1])
local lost = {}
for i = 3, #KEYS do
  local user = ARGV[2 * i - 3]
  local entry = ARGV[2 * i - 2]
  if redis.call('ZSCORE', KEYS[i], entry) then
    redis.call('ZADD', KEYS[i], expiry, entry)
    redis.call('ZADD', KEYS[1], 'XX', 'GT', expiry, user)
    redis.call('ZADD', KEYS[2], 0, user)
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    lost[#lost + 1] = i - 2
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return lost
"#;

/// The users of a room whose latest expiry has passed (the candidates of
/// [`PRESENCE_SWEEP`]): O(log N) when nothing expired.
///
/// KEYS: room presence set. ARGV: batch size.
pub(crate) const PRESENCE_EXPIRED: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[1])
"#;

/// Removes expired entries of the given users and announces those who are gone.
///
/// KEYS: room presence set, room roster, then each candidate's entry set.
/// ARGV: channel, leave envelope head and tail, then each candidate user
/// (as [`PRESENCE_EXPIRED`] listed them; each is checked again here, so a
/// user who refreshed meanwhile stays). Every key is declared, as a Redis
/// Cluster requires (they share the room's hash tag).
/// Returns the number of users removed (each announced once, by this call).
pub(crate) const PRESENCE_SWEEP: &str = r#"
local gone = 0
for i = 3, #KEYS do
  local user = ARGV[i + 1]
  local ukey = KEYS[i]
  local expiry = redis.call('ZSCORE', KEYS[1], user)
  if expiry and tonumber(expiry) <= now then
    redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now)
    local latest = redis.call('ZRANGE', ukey, -1, -1, 'WITHSCORES')
    if latest[1] then
      redis.call('ZADD', KEYS[1], latest[2], user)
    else
      redis.call('DEL', ukey)
      redis.call('ZREM', KEYS[1], user)
      redis.call('ZREM', KEYS[2], user)
      redis.call('PUBLISH', ARGV[1], ARGV[2] .. cjson.encode(user) .. ARGV[3])
      gone = gone + 1
    end
  end
end
return gone
"#;

/// The compiled scripts (SHA computed once, at startup).
pub(crate) struct Scripts {
    /// See [`PUBLISH`].
    pub publish: Script,
    /// See [`READ`].
    pub read: Script,
    /// See [`PRESENCE_JOIN`].
    pub presence_join: Script,
    /// See [`PRESENCE_LEAVE`].
    pub presence_leave: Script,
    /// See [`PRESENCE_PAGE`].
    pub presence_page: Script,
    /// See [`PRESENCE_REFRESH`].
    pub presence_refresh: Script,
    /// See [`PRESENCE_EXPIRED`].
    pub presence_expired: Script,
    /// See [`PRESENCE_SWEEP`].
    pub presence_sweep: Script,
}

impl Scripts {
    /// Compiles every script with its prologue. `sharded` (on a Redis
    /// Cluster): the scripts publish with `SPUBLISH`, on the room's shard.
    pub fn new(sharded: bool) -> Self {
        let command = |source: String| {
            if sharded {
                source.replace("redis.call('PUBLISH'", "redis.call('SPUBLISH'")
            } else {
                source
            }
        };
        let epoch = |body: &str| Script::new(&command(format!("{ROOM_STATE}{body}")));
        let clock = |body: &str| Script::new(&command(format!("{NOW}{body}")));
        Scripts {
            publish: epoch(PUBLISH),
            read: epoch(READ),
            presence_join: clock(PRESENCE_JOIN),
            presence_leave: clock(PRESENCE_LEAVE),
            presence_page: clock(PRESENCE_PAGE),
            presence_refresh: clock(PRESENCE_REFRESH),
            presence_expired: clock(PRESENCE_EXPIRED),
            presence_sweep: clock(PRESENCE_SWEEP),
        }
    }
}

fn corrupt(what: &str) -> BrokerError {
    BrokerError::Corrupt(format!("unexpected reply: {what}"))
}

/// A bulk or simple string reply as text.
pub(crate) fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// An integer sent as an integer or as a decimal string.
pub(crate) fn integer(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// The sequence number of a stream id `<seq>-<n>`.
pub(crate) fn seq_of_stream_id(id: &str) -> Option<Seq> {
    id.split_once('-')?.0.parse().ok()
}

/// What [`PUBLISH`] returned.
pub(crate) struct PublishReply {
    /// True when the (user, id) had been sequenced already.
    pub duplicate: bool,
    /// The message's sequence number.
    pub seq: Seq,
    /// The room's epoch.
    pub epoch: Epoch,
}

/// Decodes [`PUBLISH`]'s reply: one entry per message of the batch.
pub(crate) fn decode_publish_batch(
    value: &Value,
    count: usize,
) -> Result<Vec<PublishReply>, BrokerError> {
    let Value::Array(items) = value else { return Err(corrupt("publish: not an array")) };
    if items.len() != count {
        return Err(corrupt("publish: batch length"));
    }
    items.iter().map(decode_publish).collect()
}

/// Decodes one message's entry of [`PUBLISH`]'s reply.
fn decode_publish(value: &Value) -> Result<PublishReply, BrokerError> {
    let Value::Array(items) = value else { return Err(corrupt("publish: not an array")) };
    let [duplicate, seq, epoch] = items.as_slice() else {
        return Err(corrupt("publish: wrong length"));
    };
    Ok(PublishReply {
        duplicate: integer(duplicate).ok_or_else(|| corrupt("publish: duplicate"))? == 1,
        seq: integer(seq).ok_or_else(|| corrupt("publish: seq"))?,
        epoch: Epoch::new(text(epoch).ok_or_else(|| corrupt("publish: epoch"))?),
    })
}

/// What [`READ`] returned: the head and the raw page, newest-first for `rev`.
pub(crate) struct ReadReply {
    /// Where the room stands.
    pub head: RoomHead,
    /// The page's messages in the order the stream command returned them.
    pub messages: Vec<StoredMessage>,
}

/// Decodes [`READ`]'s reply.
pub(crate) fn decode_read(value: &Value) -> Result<ReadReply, BrokerError> {
    let Value::Array(items) = value else { return Err(corrupt("read: not an array")) };
    let [epoch, head, first, page, lost] = items.as_slice() else {
        return Err(corrupt("read: wrong length"));
    };
    let lost = integer(lost).ok_or_else(|| corrupt("read: lost"))? == 1;
    let epoch = Epoch::new(text(epoch).ok_or_else(|| corrupt("read: epoch"))?);
    let head = integer(head).ok_or_else(|| corrupt("read: head"))?;
    let first = match first {
        Value::Nil => head + 1,
        other => text(other).and_then(seq_of_stream_id).ok_or_else(|| corrupt("read: first id"))?,
    };
    let Value::Array(entries) = page else { return Err(corrupt("read: page")) };
    let messages = entries.iter().map(decode_entry).collect::<Result<_, _>>()?;
    Ok(ReadReply { head: RoomHead { epoch, head, first, lost }, messages })
}

/// Decodes one stream entry `[id, [field, value, ...]]`.
fn decode_entry(value: &Value) -> Result<StoredMessage, BrokerError> {
    let Value::Array(entry) = value else { return Err(corrupt("entry: not an array")) };
    let [id, Value::Array(fields)] = entry.as_slice() else {
        return Err(corrupt("entry: shape"));
    };
    let seq = text(id).and_then(seq_of_stream_id).ok_or_else(|| corrupt("entry: id"))?;
    let (mut user, mut client_id, mut body, mut ts) = (None, None, None, None);
    for pair in fields.chunks_exact(2) {
        let value = &pair[1];
        match text(&pair[0]) {
            Some("u") => user = text(value).and_then(|s| UserName::parse(s).ok()),
            Some("i") => client_id = text(value).and_then(|s| ClientMessageId::parse(s).ok()),
            Some("t") => body = text(value).map(str::to_owned),
            Some("ts") => ts = integer(value),
            _ => {}
        }
    }
    Ok(StoredMessage {
        seq,
        id: client_id.ok_or_else(|| corrupt("entry: id field"))?,
        user: user.ok_or_else(|| corrupt("entry: user field"))?,
        text: body.ok_or_else(|| corrupt("entry: text field"))?,
        ts: ts.ok_or_else(|| corrupt("entry: ts field"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn decodes_read_reply() {
        let entry = |seq: &str, id: &str| {
            Value::Array(vec![
                bulk(&format!("{seq}-1")),
                Value::Array(vec![
                    bulk("u"),
                    bulk("ann"),
                    bulk("i"),
                    bulk(id),
                    bulk("t"),
                    bulk("hi"),
                    bulk("ts"),
                    bulk("17"),
                ]),
            ])
        };
        let reply = Value::Array(vec![
            bulk("e1"),
            bulk("9"),
            bulk("3-1"),
            Value::Array(vec![entry("8", "a"), entry("9", "b")]),
            Value::Int(0),
        ]);
        let read = decode_read(&reply).expect("decodes");
        assert_eq!(read.head, RoomHead::new(Epoch::new("e1"), 9, 3));
        assert_eq!(read.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![8, 9]);
        assert_eq!(read.messages[1].id.as_str(), "b");

        let empty = Value::Array(vec![
            bulk("e1"),
            bulk("0"),
            Value::Nil,
            Value::Array(vec![]),
            Value::Int(1),
        ]);
        assert!(decode_read(&empty).expect("decodes").head.lost);
        assert_eq!(decode_read(&empty).expect("decodes").head.first, 1);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(decode_read(&Value::Nil), Err(BrokerError::Corrupt(_))));
        assert!(decode_publish(&Value::Array(vec![Value::Int(0)])).is_err());
        let bad_user = Value::Array(vec![
            bulk("e"),
            bulk("1"),
            bulk("1-1"),
            Value::Array(vec![Value::Array(vec![
                bulk("1-1"),
                Value::Array(vec![bulk("u"), bulk("<x>")]),
            ])]),
            Value::Int(0),
        ]);
        assert!(decode_read(&bad_user).is_err());
    }

    #[test]
    fn publish_reply() {
        let reply = Value::Array(vec![Value::Int(1), bulk("12"), bulk("e")]);
        let p = decode_publish(&reply).expect("decodes");
        assert!(p.duplicate);
        assert_eq!((p.seq, p.epoch.as_str()), (12, "e"));
    }
}
