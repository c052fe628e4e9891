//! Head and history reads: one [`READ`](super::scripts::READ) script call per
//! read, coalesced by [`SingleFlight`](super::flight::SingleFlight) and
//! bounded by a semaphore.
//!
//! Pages are read straight off the stream by id: sequence `s` is stream id
//! `s-1`, so "before" is an `XREVRANGE` from `(before-1)-1` down and "after"
//! an `XRANGE` from `(after+1)-0` up. One extra entry is fetched to learn
//! whether more lie beyond the page.

use std::sync::Arc;

use futures_util::FutureExt;
use palaver_protocol::{HistoryQuery, RoomName, Seq};
use tokio::time::timeout;

use super::{
    Core,
    keys::RoomKeys,
    scripts::{ReadReply, decode_read},
    stats::add,
};
use crate::broker::{BrokerError, Evidence, HistoryPage};

/// One kind of read; with the room, the single-flight key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Read {
    /// Only where the room stands.
    Head,
    /// See [`HistoryQuery::Before`].
    Before {
        /// Exclusive upper bound; `None` for the newest.
        before: Option<Seq>,
        /// Page size.
        limit: u32,
    },
    /// See [`HistoryQuery::After`].
    After {
        /// Exclusive lower bound.
        after: Seq,
        /// Page size.
        limit: u32,
    },
}

impl From<HistoryQuery> for Read {
    fn from(query: HistoryQuery) -> Self {
        match query {
            HistoryQuery::Before { before, limit } => Read::Before { before, limit },
            HistoryQuery::After { after, limit } => Read::After { after, limit },
        }
    }
}

impl Read {
    /// The script's mode, bound stream id and entry count.
    fn script_args(self) -> (&'static str, String, u64) {
        match self {
            Read::Head => ("head", String::new(), 0),
            Read::Before { before, limit } => {
                let bound = match before {
                    None => "+".to_owned(),
                    Some(0) => "0-0".to_owned(),
                    Some(before) => format!("{}-1", before - 1),
                };
                ("rev", bound, u64::from(limit) + 1)
            }
            Read::After { after, limit } => {
                ("fwd", format!("{}-0", after.saturating_add(1)), u64::from(limit) + 1)
            }
        }
    }

    /// Turns the script's reply into an ascending page.
    fn page(self, reply: ReadReply) -> HistoryPage {
        let ReadReply { head, mut messages } = reply;
        let more = match self {
            Read::Head => false,
            Read::Before { limit, .. } => {
                // Newest first: the extra entry is the oldest, at the end.
                let more = messages.len() > limit as usize;
                messages.truncate(limit as usize);
                messages.reverse();
                more
            }
            Read::After { limit, .. } => {
                let more = messages.len() > limit as usize;
                messages.truncate(limit as usize);
                more
            }
        };
        HistoryPage { head, messages, more }
    }
}

impl Core {
    /// Reads a page (or just the head), sharing the call with identical
    /// concurrent reads.
    pub(crate) async fn read(
        self: &Arc<Self>,
        room: &RoomName,
        read: Read,
        evidence: Option<Evidence>,
    ) -> Result<HistoryPage, BrokerError> {
        let core = self.clone();
        let fetch_room = room.clone();
        let fetch_evidence = evidence.clone();
        let (result, shared) = self
            .reads
            .run((room.clone(), read, evidence), move || {
                async move { core.fetch(&fetch_room, read, fetch_evidence.as_ref()).await }.boxed()
            })
            .await;
        if shared {
            add(&self.stats.single_flight_hits, 1);
        }
        result
    }

    /// One read from Redis, within the concurrency bound.
    async fn fetch(
        &self,
        room: &RoomName,
        read: Read,
        evidence: Option<&Evidence>,
    ) -> Result<HistoryPage, BrokerError> {
        let _permit = match timeout(self.config.command_timeout, self.read_permits.acquire()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(BrokerError::Unavailable("broker closed".into())),
            Err(_) => return Err(BrokerError::Unavailable("too many history reads".into())),
        };
        add(&self.stats.history_reads, 1);
        let keys = RoomKeys::new(&self.config.prefix, room);
        let (mode, bound, count) = read.script_args();
        let mut invocation = self.room_invocation(&self.scripts.read, room, &keys, evidence);
        invocation.arg(mode).arg(bound).arg(count);
        let reply: redis::Value = self
            .command(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
        Ok(read.page(decode_read(&reply)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        let args = |read: Read| {
            let (mode, bound, count) = read.script_args();
            (mode, bound, count)
        };
        assert_eq!(args(Read::Before { before: None, limit: 5 }), ("rev", "+".into(), 6));
        assert_eq!(args(Read::Before { before: Some(10), limit: 2 }), ("rev", "9-1".into(), 3));
        assert_eq!(args(Read::Before { before: Some(0), limit: 2 }), ("rev", "0-0".into(), 3));
        assert_eq!(args(Read::After { after: 4, limit: 2 }), ("fwd", "5-0".into(), 3));
        assert_eq!(
            args(Read::After { after: u64::MAX, limit: 1 }),
            ("fwd", format!("{}-0", u64::MAX), 2)
        );
    }
}
