//! The Lua scripts, and decoding of what they return.
//!
//! Each operation that must be atomic is one script, run by SHA
//! (`redis::Script` sends `EVALSHA` and falls back to loading the script when
//! Redis answers `NOSCRIPT`, e.g. after a restart). Presence scripts read the
//! clock with `TIME` so every node judges expiry by the same clock.
//!
//! The epoch rule, shared by [`PUBLISH`] and [`READ`]: a room's `epoch` and
//! `seq` keys exist together or not at all. If either is missing the room's
//! data was lost (TTL, eviction, an empty restart), so the script starts a new
//! epoch (the random one the caller passed), sets `seq` to 0 and deletes the
//! stream and idempotency index; sequence numbers then restart at 1 under a
//! new epoch and never go backwards within one.
//!
//! The witness rule, shared by [`PUBLISH`] and [`READ`] after the epoch rule:
//! Redis can come back *behind* what it acknowledged (an `everysec` AOF, an
//! RDB snapshot, a promoted replica that lagged) with `epoch` and `seq` intact
//! but the last writes gone, and would then number other messages with the
//! lost sequence numbers. The caller shows the newest message it holds (epoch,
//! seq, id, user); if Redis no longer holds it — `seq` beyond the head, or
//! another message stored at `seq` — the room moves to a new epoch in the
//! same script (every node agrees), keeping its history and counter, and the
//! reset is published on the room's channel so every node resyncs its
//! members. Evidence a client brought resets a room at most once per cooldown.

use palaver_protocol::{ClientMessageId, Epoch, Seq, StoredMessage, UserName};
use redis::{Script, Value};

use crate::broker::{BrokerError, RoomHead};

/// Shared prologue: the epoch rule. Expects `KEYS` = epoch, seq, stream, ids
/// and `ARGV[1]` = new epoch, `ARGV[2]` = room ttl (ms).
/// Leaves `epoch` set and `fresh` true when it created the epoch.
const ENSURE_EPOCH: &str = r#"
local epoch = redis.call('GET', KEYS[1])
local fresh = false
if (not epoch) or redis.call('EXISTS', KEYS[2]) == 0 then
  epoch = ARGV[1]
  fresh = true
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('SET', KEYS[1], epoch, 'PX', ARGV[2])
  redis.call('SET', KEYS[2], 0, 'PX', ARGV[2])
end
"#;

/// Shared second prologue: the witness rule. Expects `KEYS[5]` = the reset
/// cooldown marker and `ARGV[3..10]` = witness epoch (`''`: none), seq, id
/// (`''`: unknown), user (`''`: unknown), from a client (`1`|`0`), channel,
/// reset envelope head, cooldown ms. Leaves `lost` true when the witness's
/// message is gone, and `epoch` the new one when it reset the room.
const CHECK_WITNESS: &str = r#"
local lost = false
if ARGV[3] == epoch then
  local wseq = tonumber(ARGV[4])
  lost = wseq > tonumber(redis.call('GET', KEYS[2]))
  if not lost and wseq > 0 and (ARGV[5] ~= '' or ARGV[6] ~= '') then
    local id = string.format('%d-1', wseq)
    local entry = redis.call('XRANGE', KEYS[3], id, id)[1]
    -- No entry at or below the head: trimmed, nothing to compare.
    if entry then
      local f = entry[2]
      for i = 1, #f, 2 do
        if (f[i] == 'i' and ARGV[5] ~= '' and f[i + 1] ~= ARGV[5])
          or (f[i] == 'u' and ARGV[6] ~= '' and f[i + 1] ~= ARGV[6]) then
          lost = true
        end
      end
    end
  end
  if lost and (ARGV[7] == '0' or redis.call('EXISTS', KEYS[5]) == 0) then
    epoch = ARGV[1]
    redis.call('SET', KEYS[1], epoch, 'PX', ARGV[2])
    redis.call('PEXPIRE', KEYS[2], ARGV[2])
    redis.call('SET', KEYS[5], '1', 'PX', ARGV[10])
    redis.call('PUBLISH', ARGV[8], ARGV[9] .. epoch .. '"}}')
    lost = false
  end
end
"#;

/// Sequences, stores and publishes one message (or reports a duplicate).
///
/// KEYS: epoch, seq, stream, ids, reset.
/// ARGV: new epoch, room ttl ms, witness (8 values, see [`CHECK_WITNESS`]),
/// history max, idempotency member, user, id, text, ts, envelope part 1..3.
/// Returns `{duplicate (0|1), seq (string), epoch}`.
pub(crate) const PUBLISH: &str = r#"
local dup = redis.call('ZSCORE', KEYS[4], ARGV[12])
if dup then
  return {1, dup, epoch}
end
local seq = redis.call('INCR', KEYS[2])
local seqs = string.format('%d', seq)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[11], seqs .. '-1',
  'u', ARGV[13], 'i', ARGV[14], 't', ARGV[15], 'ts', ARGV[16])
redis.call('ZADD', KEYS[4], seqs, ARGV[12])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', seq - tonumber(ARGV[11]))
for i = 1, 4 do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
redis.call('PUBLISH', ARGV[8], ARGV[17] .. epoch .. ARGV[18] .. seqs .. ARGV[19])
return {0, seqs, epoch}
"#;

/// Reads where a room stands and, optionally, one page of its stream.
///
/// KEYS: epoch, seq, stream, ids, reset.
/// ARGV: new epoch, room ttl ms, witness (8 values, see [`CHECK_WITNESS`]),
/// mode (`head` | `rev` | `fwd`), bound stream id, count. Reads keep an
/// active room alive: TTLs are refreshed when less than half remains (so a
/// read writes at most once per half TTL).
/// Returns `{epoch, head (string), first stream id or false, entries, lost (0|1)}`.
pub(crate) const READ: &str = r#"
if not fresh and redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) / 2 then
  for i = 1, 4 do
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
local head = redis.call('GET', KEYS[2])
local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
local first = false
if oldest[1] then
  first = oldest[1][1]
end
local page = {}
if ARGV[11] == 'rev' then
  page = redis.call('XREVRANGE', KEYS[3], ARGV[12], '-', 'COUNT', ARGV[13])
elseif ARGV[11] == 'fwd' then
  page = redis.call('XRANGE', KEYS[3], ARGV[12], '+', 'COUNT', ARGV[13])
end
return {epoch, head, first, page, lost and 1 or 0}
"#;

/// Shared prologue of the presence scripts: the Redis clock in ms.
const NOW: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// Adds one presence entry.
///
/// KEYS: room presence set, user entry set. ARGV: user, entry, ttl ms, key ttl ms.
/// Returns 1 when the user was added to the room's presence set (their
/// `join` is to be announced), else 0.
pub(crate) const PRESENCE_JOIN: &str = r#"
local expiry = now + tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], expiry, ARGV[2])
local added = redis.call('ZADD', KEYS[1], 'GT', expiry, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return added
"#;

/// Removes one presence entry.
///
/// KEYS: room presence set, user entry set. ARGV: user, entry.
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
return redis.call('ZREM', KEYS[1], ARGV[1])
"#;

/// Users with a live entry.
///
/// KEYS: room presence set. Returns the users (unsorted).
pub(crate) const PRESENCE_MEMBERS: &str = r#"
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%d', now), '+inf')
"#;

/// Extends this node's entries in one room.
///
/// KEYS: room presence set, then one user entry set per entry.
/// ARGV: ttl ms, key ttl ms, then (user, entry) per entry.
/// Only existing entries are extended (a swept entry is not resurrected here);
/// returns the 1-based indexes of entries that were missing.
pub(crate) const PRESENCE_REFRESH: &str = r#"
local expiry = now + tonumber(ARGV[1])
local lost = {}
for i = 2, #KEYS do
  local user = ARGV[2 * i - 1]
  local entry = ARGV[2 * i]
  if redis.call('ZSCORE', KEYS[i], entry) then
    redis.call('ZADD', KEYS[i], expiry, entry)
    redis.call('ZADD', KEYS[1], 'XX', 'GT', expiry, user)
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    lost[#lost + 1] = i - 1
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return lost
"#;

/// Removes expired entries of a room and announces users who are gone.
///
/// KEYS: room presence set. ARGV: user entry set prefix, channel, leave
/// envelope head and tail, batch size. Only users whose latest expiry has
/// passed are visited, so a sweep with nothing expired is O(log N).
/// Returns the number of users removed (each announced once, by this call).
pub(crate) const PRESENCE_SWEEP: &str = r#"
local users = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[5])
local gone = 0
for _, user in ipairs(users) do
  local ukey = ARGV[1] .. user
  redis.call('ZREMRANGEBYSCORE', ukey, '-inf', now)
  local latest = redis.call('ZRANGE', ukey, -1, -1, 'WITHSCORES')
  if latest[1] then
    redis.call('ZADD', KEYS[1], latest[2], user)
  else
    redis.call('DEL', ukey)
    redis.call('ZREM', KEYS[1], user)
    redis.call('PUBLISH', ARGV[2], ARGV[3] .. cjson.encode(user) .. ARGV[4])
    gone = gone + 1
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
    /// See [`PRESENCE_MEMBERS`].
    pub presence_members: Script,
    /// See [`PRESENCE_REFRESH`].
    pub presence_refresh: Script,
    /// See [`PRESENCE_SWEEP`].
    pub presence_sweep: Script,
}

impl Scripts {
    /// Compiles every script with its prologue.
    pub fn new() -> Self {
        let epoch = |body: &str| Script::new(&format!("{ENSURE_EPOCH}{CHECK_WITNESS}{body}"));
        let clock = |body: &str| Script::new(&format!("{NOW}{body}"));
        Scripts {
            publish: epoch(PUBLISH),
            read: epoch(READ),
            presence_join: clock(PRESENCE_JOIN),
            presence_leave: clock(PRESENCE_LEAVE),
            presence_members: clock(PRESENCE_MEMBERS),
            presence_refresh: clock(PRESENCE_REFRESH),
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

/// Decodes [`PUBLISH`]'s reply.
pub(crate) fn decode_publish(value: &Value) -> Result<PublishReply, BrokerError> {
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
