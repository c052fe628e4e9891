//! What a connection asks for: join, leave, send, typing, history, members. One
//! `Session` per connection, driven by its read task.
//!
//! Joining and recovery share one path: a membership starts *syncing* at a
//! cursor (the client's `since`, or the room's head), [`Session::catch_up`]
//! replays history after the cursor, and the hub switches it to live once it
//! has reached everything seen live. Gaps, epoch changes and bus outages put
//! the membership back to syncing and the same catch-up runs again.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use palaver_broker::{BrokerError, Draft, Evidence, MembersPage, RoomHead};
use palaver_hub::{Client, Cursor, JoinRefused, Membership, SyncState};
use palaver_protocol::{
    ClientFrame, ClientMessageId, DecodeError, Epoch, ErrorCode, Frame, HistoryQuery,
    PROTOCOL_VERSION, PresenceState, RoomName, ServerFrame, Since, StoredMessage, UserName,
    Witness, limits::JOINED_MEMBERS,
};
use tokio::time::timeout;
use tracing::Instrument;

use crate::{access::RoomPatterns, metrics::bump, node::Node};

/// Messages read from history per round trip while catching up.
const CATCH_UP_PAGE: u32 = 200;
/// Typing notices forwarded per room per connection, at most one per this interval.
const TYPING_INTERVAL: Duration = Duration::from_secs(1);
/// How long an ack waits for the sender's own copy of the message to come
/// back over the bus, to share its write. Beyond it (a slow bus, a copy that
/// will come from history) the ack goes alone; it is never lost.
const ACK_HOLD: Duration = Duration::from_millis(50);

/// One connection's rooms and request handling.
pub(crate) struct Session {
    app: Arc<Node>,
    client: Arc<Client>,
    /// A list, not a map: a connection is in a few rooms (at most
    /// `--max-rooms`), mostly one, and an idle one holds one small allocation.
    rooms: Vec<Joined>,
    /// Private rooms this connection's token grants.
    grants: Arc<RoomPatterns>,
}

/// One room this connection is in.
struct Joined {
    membership: Arc<Membership>,
    /// When the last typing notice was forwarded.
    last_typing: Option<Instant>,
}

/// A request failed with a code the client is told.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }
}

impl From<BrokerError> for Refusal {
    fn from(e: BrokerError) -> Self {
        match e {
            BrokerError::Unavailable(_) => {
                Refusal::new(ErrorCode::Unavailable, "the cluster bus is unavailable; retry")
            }
            BrokerError::Corrupt(_) => Refusal::new(ErrorCode::Internal, "history is unreadable"),
        }
    }
}

impl Session {
    /// A session for a freshly accepted client.
    pub(crate) fn new(app: Arc<Node>, client: Arc<Client>, grants: Arc<RoomPatterns>) -> Self {
        Session { app, client, rooms: Vec::new(), grants }
    }

    /// Bytes of frames this connection's own requests may have queued.
    fn budget(&self) -> usize {
        self.app.client_config.own_bytes()
    }

    /// Messages read per catch-up page: as many as the budget holds at the
    /// longest text (ASCII), so even a page read before it is cut costs about
    /// one budget of memory, at most [`CATCH_UP_PAGE`].
    fn catch_up_page(&self) -> u32 {
        let longest = self.app.limits.max_text_chars + 256;
        (self.budget() / longest).clamp(1, CATCH_UP_PAGE as usize) as u32
    }

    /// Sends `welcome`.
    pub(crate) async fn welcome(&self) {
        self.reply(ServerFrame::Welcome {
            session: self.client.session().to_string(),
            node: self.app.node_id.clone(),
            user: self.client.user().clone(),
            protocol: PROTOCOL_VERSION,
        })
        .await;
    }

    async fn reply(&self, frame: ServerFrame) {
        self.push(frame.encode()).await;
    }

    async fn push(&self, frame: Frame) {
        // Fails only when the client is already closing; nothing left to tell it.
        let _ = self.client.push(frame).await;
    }

    /// Sends an `error` frame.
    pub(crate) async fn refuse(
        &self,
        code: ErrorCode,
        message: impl Into<String>,
        reference: Option<String>,
    ) {
        self.app.metrics.error_frame(code);
        self.reply(ServerFrame::error(code, message, reference)).await;
    }

    /// Handles one text frame.
    pub(crate) async fn handle_text(&mut self, text: &str) {
        bump(&self.app.stats.frames_in);
        match ClientFrame::decode(text, &self.app.limits) {
            Ok(frame) => self.handle(frame).await,
            // A private room is refused before its fields are judged.
            Err(DecodeError { room: Some(room), reference, .. }) if !self.allows(&room) => {
                self.refuse_private(&room, reference).await;
            }
            Err(e) => self.refuse(e.code, e.message, e.reference).await,
        }
    }

    fn allows(&self, room: &RoomName) -> bool {
        self.app.security.access.allows(&self.grants, room)
    }

    /// The same answer for every private room, joined by others or not: no
    /// members, history or presence of it reach this connection.
    async fn refuse_private(&self, room: &RoomName, reference: Option<String>) {
        self.refuse(ErrorCode::Forbidden, format!("{room} is private"), reference).await;
    }

    async fn handle(&mut self, frame: ClientFrame) {
        let reference = match &frame {
            ClientFrame::Send { id, .. } => Some(id.to_string()),
            other => Some(frame_type(other).to_owned()),
        };
        if let Some(room) = frame.room()
            && !self.allows(room)
        {
            self.refuse_private(room, reference).await;
            return;
        }
        let result = match frame {
            ClientFrame::Join { room, since } => self.join(room, since).await,
            ClientFrame::Leave { room } => self.leave(room).await,
            ClientFrame::Send { room, text, id } => self.send(room, text, id).await,
            ClientFrame::Typing { room } => self.typing(room).await,
            ClientFrame::History { room, query } => self.history(room, query).await,
            ClientFrame::Members { room, after, limit } => self.members(room, after, limit).await,
            ClientFrame::Ping => {
                self.reply(ServerFrame::Pong).await;
                Ok(())
            }
            ClientFrame::Auth { .. } => Err(Refusal::new(
                ErrorCode::InvalidField,
                "already admitted; auth is only a first frame",
            )),
        };
        if let Err(refusal) = result {
            self.refuse(refusal.code, refusal.message, reference).await;
        }
    }

    /// Where `room` is in [`Session::rooms`].
    fn position(&self, room: &RoomName) -> Option<usize> {
        self.rooms.iter().position(|j| j.membership.room() == room)
    }

    /// The room this request is about, or `not_joined`.
    fn require_joined(&mut self, room: &RoomName) -> Result<&mut Joined, Refusal> {
        match self.position(room) {
            Some(at) => Ok(&mut self.rooms[at]),
            None => Err(Refusal::new(ErrorCode::NotJoined, format!("join {room} first"))),
        }
    }

    async fn join(&mut self, room: RoomName, since: Option<Since>) -> Result<(), Refusal> {
        if self.position(&room).is_some() {
            // Already in: report where the room stands, nothing to replay.
            let head = self.app.broker.head(&room, None).await?;
            let page = self.app.broker.members_page(&room, None, JOINED_MEMBERS).await?;
            self.reply(joined(room, &head, page, true)).await;
            return Ok(());
        }
        if self.rooms.len() >= self.app.config.max_rooms {
            return Err(Refusal::new(
                ErrorCode::TooManyRooms,
                format!("at most {} rooms per connection", self.app.config.max_rooms),
            ));
        }
        let membership = self
            .app
            .hub
            .join(&room, &self.client, self.app.config.max_room_members)
            .map_err(|e| match e {
            JoinRefused::Full => Refusal::new(ErrorCode::RoomFull, "the room is full"),
            JoinRefused::AlreadyMember => Refusal::new(ErrorCode::Internal, "already a member"),
        })?;
        let span = tracing::info_span!("join", room = %room, resume = since.is_some());
        match self.enter(&membership, since).instrument(span).await {
            Ok(()) => {
                if self.rooms.is_empty() {
                    self.rooms.reserve_exact(1);
                }
                self.rooms.push(Joined { membership: membership.clone(), last_typing: None });
                self.catch_up(&membership).await;
                Ok(())
            }
            Err(e) => {
                self.app.hub.leave(&room, self.client.session());
                Err(e)
            }
        }
    }

    /// Subscribes, registers presence, and sends `joined` with the cursor set:
    /// after the client's `since` when it can be recovered, else at the head.
    async fn enter(&self, membership: &Membership, since: Option<Since>) -> Result<(), Refusal> {
        let room = membership.room();
        let broker = &self.app.broker;
        broker.subscribe(room).await?;
        tracing::debug!("subscribed");
        // A resuming client shows what it holds, so a Redis that came back
        // behind it is caught even if the head has passed it since; a fresh
        // join shows what this node holds.
        let evidence = match &since {
            Some(since) => Some(Evidence::client(since.witness())),
            None => self.app.hub.witness(room).map(Evidence::node),
        };
        let entered = async {
            let head = broker.head(room, evidence).await?;
            tracing::debug!(epoch = %head.epoch, seq = head.head, "read head");
            let user = self.client.user();
            if broker.presence_join(room, user, self.client.session()).await? {
                // Best effort: presence events are advisory, `members` is authoritative.
                let _ = broker.signal(room, user, PresenceState::Join, None).await;
            }
            // The first page only: a join costs the same in a room of any size.
            let page = broker.members_page(room, None, JOINED_MEMBERS).await?;
            tracing::debug!(members = page.count, "registered presence");
            Ok::<_, BrokerError>((head, page))
        }
        .await;
        let (head, page) = match entered {
            Ok(v) => v,
            Err(e) => {
                broker.unsubscribe(room).await;
                return Err(e.into());
            }
        };
        let (cursor, recovered) = resume_point(&head, since.as_ref());
        let epoch = head.epoch.clone();
        self.app.hub.note_member_count(room, page.count);
        let joined = joined(room.clone(), &head, page, recovered);
        // One step: no presence before `joined`, none lost after it.
        self.app.hub.admit(membership, joined.encode(), epoch, cursor);
        Ok(())
    }

    /// Replays history after the membership's cursor until it is live.
    /// On a broker failure the membership stays syncing; the bus coming back
    /// asks for another catch-up.
    async fn catch_up(&self, membership: &Membership) {
        if let Err(e) = self.try_catch_up(membership).await {
            tracing::warn!(room = %membership.room(), error = %e, "catch-up failed; waiting for the bus");
        }
    }

    async fn try_catch_up(&self, membership: &Membership) -> Result<(), BrokerError> {
        let room = membership.room();
        loop {
            let cursor = membership.cursor();
            if cursor.state != SyncState::Syncing || self.client.is_closing() {
                return Ok(());
            }
            let query = HistoryQuery::After { after: cursor.seq, limit: self.catch_up_page() };
            let evidence = self.evidence(room, &cursor);
            let mut page = self.app.broker.history(room, query, evidence).await?;
            // Hold no more of the page than the client's share of its queue
            // while it waits for the client to read: the rest is read again.
            let cut = keep_within(&mut page.messages, room, &page.head.epoch, self.budget());
            let head = &page.head;
            let continuous = cursor.epoch.as_ref() == Some(&head.epoch)
                && !head.lost
                && cursor.seq + 1 >= head.first
                && cursor.seq <= head.head;
            if !continuous {
                // The room's history was recreated or trimmed past the cursor:
                // say so explicitly and restart at the head.
                tracing::info!(room = %room, epoch = %head.epoch, "cannot recover; announcing a new start");
                membership.set_cursor(head.epoch.clone(), head.head, SyncState::Syncing);
                let page = self.app.broker.members_page(room, None, JOINED_MEMBERS).await?;
                self.reply(joined(room.clone(), head, page, false)).await;
                continue;
            }
            for message in &page.messages {
                self.push(Frame::message(room, &head.epoch, message)).await;
                membership.advance(message.seq);
            }
            if let Some(newest) = page.messages.last() {
                self.app.hub.saw(room, Witness::of(&head.epoch, newest));
            }
            if !page.more && !cut && self.app.hub.try_go_live(membership) {
                return Ok(());
            }
        }
    }

    /// What a catch-up shows the broker: the newest message this node handed
    /// out in the room, or the member's own position if that is newer (a
    /// position only: its seq must not lie beyond the head).
    fn evidence(&self, room: &RoomName, cursor: &Cursor) -> Option<Evidence> {
        let epoch = cursor.epoch.clone()?;
        let node = self.app.hub.witness(room);
        let witness = match node {
            Some(w) if w.epoch == epoch && w.seq >= cursor.seq => w,
            _ => Witness { epoch, seq: cursor.seq, id: None, user: None },
        };
        Some(Evidence::node(witness))
    }

    /// Catches up every membership the hub sent back to syncing.
    pub(crate) async fn catch_up_all(&self) {
        let syncing: Vec<Arc<Membership>> = self
            .rooms
            .iter()
            .map(|j| &j.membership)
            .filter(|m| m.cursor().state == SyncState::Syncing)
            .cloned()
            .collect();
        for membership in syncing {
            self.catch_up(&membership).await;
        }
    }

    async fn leave(&mut self, room: RoomName) -> Result<(), Refusal> {
        self.require_joined(&room)?;
        self.depart(&room).await;
        self.reply(ServerFrame::Left { room }).await;
        Ok(())
    }

    /// Removes the membership locally and from the cluster's presence.
    async fn depart(&mut self, room: &RoomName) {
        if let Some(at) = self.position(room) {
            self.rooms.swap_remove(at);
        }
        self.app.hub.leave(room, self.client.session());
        let broker = &self.app.broker;
        broker.unsubscribe(room).await;
        let user = self.client.user();
        match broker.presence_leave(room, user, self.client.session()).await {
            Ok(true) => {
                let _ = broker.signal(room, user, PresenceState::Leave, None).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(room = %room, error = %e, "presence leave failed; entry will expire")
            }
        }
    }

    /// Leaves every room (the connection is gone).
    pub(crate) async fn depart_all(&mut self) {
        let rooms: Vec<RoomName> = self.rooms.iter().map(|j| j.membership.room().clone()).collect();
        for room in rooms {
            self.depart(&room).await;
        }
    }

    async fn send(
        &mut self,
        room: RoomName,
        text: String,
        id: ClientMessageId,
    ) -> Result<(), Refusal> {
        self.require_joined(&room)?;
        // Each message is its own trace (publish here, deliver on every node),
        // linked to the connection's span rather than nested in it: a
        // long-lived connection would otherwise be one unbounded trace.
        let span = tracing::info_span!(
            parent: None, "publish",
            room = %room, id = %id, session = %self.client.session(), user = %self.client.user()
        );
        span.follows_from(tracing::Span::current());
        // The fan-out on every node joins this trace (None when not exporting).
        let trace = crate::telemetry::traceparent(&span);
        let user = self.client.user().clone();
        let witness = self.app.hub.witness(&room);
        let draft = Draft { id: id.clone(), user: user.clone(), text, trace, witness };
        let published = self.app.broker.publish(&room, draft).instrument(span).await?;
        // The sender will hold this message: it is evidence too.
        let seen = Witness {
            epoch: published.epoch.clone(),
            seq: published.seq,
            id: Some(id.clone()),
            user: Some(user),
        };
        self.app.hub.saw(&room, seen);
        let (epoch, seq, duplicate) = (published.epoch, published.seq, published.duplicate);
        let ack = ServerFrame::Ack { id, room: room.clone(), epoch: epoch.clone(), seq, duplicate };
        let ack = ack.encode();
        if duplicate {
            // No copy will come: the original's went out when it was first sent.
            self.push(ack).await;
            return Ok(());
        }
        // Over a bus the sender's own copy comes back beside this reply: the
        // ack waits for it (briefly) so both leave in one write.
        let membership = self.require_joined(&room)?.membership.clone();
        match membership.hold_ack(&epoch, seq, ack) {
            Err(ack) => self.push(ack).await,
            Ok(released) => {
                if timeout(ACK_HOLD, released).await.is_err()
                    && let Some(ack) = membership.take_ack()
                {
                    self.push(ack).await;
                }
            }
        }
        Ok(())
    }

    async fn typing(&mut self, room: RoomName) -> Result<(), Refusal> {
        let joined = self.require_joined(&room)?;
        let now = Instant::now();
        if joined.last_typing.is_some_and(|t| now.duration_since(t) < TYPING_INTERVAL) {
            return Ok(());
        }
        joined.last_typing = Some(now);
        self.app.broker.signal(&room, self.client.user(), PresenceState::Typing, None).await?;
        Ok(())
    }

    async fn history(&mut self, room: RoomName, query: HistoryQuery) -> Result<(), Refusal> {
        self.require_joined(&room)?;
        let page = self.app.broker.history(&room, query, None).await?;
        // Cut by bytes too, to the share of the queue a reply may take; a cut
        // page says `more` and the client pages on.
        let epoch = &page.head.epoch;
        let frame = Frame::history(&room, epoch, &page.messages, page.more, &query, self.budget());
        self.push(frame).await;
        Ok(())
    }

    async fn members(
        &mut self,
        room: RoomName,
        after: Option<UserName>,
        limit: u32,
    ) -> Result<(), Refusal> {
        self.require_joined(&room)?;
        let mut page = self.app.broker.members_page(&room, after.as_ref(), limit as usize).await?;
        // A page of long names is cut to the share of the queue a reply may take.
        let cut = keep_members_within(&mut page.members, self.budget().saturating_sub(128));
        let more = page.more || cut;
        self.reply(ServerFrame::Members { room, members: page.members, more }).await;
        Ok(())
    }
}

/// The `joined` frame: where the room stands and the first page of members.
fn joined(room: RoomName, head: &RoomHead, page: MembersPage, recovered: bool) -> ServerFrame {
    ServerFrame::Joined {
        room,
        epoch: head.epoch.clone(),
        seq: head.head,
        members: page.members,
        member_count: page.count,
        members_more: page.more,
        recovered,
    }
}

/// Keeps the members whose names fit in `budget` bytes of a reply (at least
/// one); true when it cut some.
fn keep_members_within(members: &mut Vec<UserName>, budget: usize) -> bool {
    let mut bytes = 0;
    // Each name costs its length plus quotes and a comma (no name needs escaping).
    let fit = members
        .iter()
        .position(|user| {
            bytes += user.as_str().len() + 3;
            bytes > budget
        })
        .unwrap_or(members.len())
        .max(1);
    let cut = fit < members.len();
    members.truncate(fit);
    cut
}

/// Where a joining member's cursor starts, and whether that recovers
/// everything after the client's `since`.
fn resume_point(head: &RoomHead, since: Option<&Since>) -> (u64, bool) {
    match since {
        None => (head.head, true),
        Some(since) => {
            let recoverable = since.epoch == head.epoch
                && !head.lost
                && since.seq <= head.head
                && since.seq + 1 >= head.first;
            if recoverable { (since.seq, true) } else { (head.head, false) }
        }
    }
}

/// Truncates catch-up messages to those whose frames fit in `budget` bytes
/// (at least one), releasing the rest; true when some were dropped.
fn keep_within(
    messages: &mut Vec<StoredMessage>,
    room: &RoomName,
    epoch: &Epoch,
    budget: usize,
) -> bool {
    let mut total = 0;
    let kept = messages
        .iter()
        .position(|m| {
            total += Frame::message_len(room, epoch, m);
            total > budget
        })
        .map_or(messages.len(), |over| over.max(1));
    let cut = kept < messages.len();
    if cut {
        messages.truncate(kept);
        messages.shrink_to_fit();
    }
    cut
}

fn frame_type(frame: &ClientFrame) -> &'static str {
    match frame {
        ClientFrame::Join { .. } => "join",
        ClientFrame::Leave { .. } => "leave",
        ClientFrame::Send { .. } => "send",
        ClientFrame::Typing { .. } => "typing",
        ClientFrame::History { .. } => "history",
        ClientFrame::Members { .. } => "members",
        ClientFrame::Auth { .. } => "auth",
        ClientFrame::Ping => "ping",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(epoch: &str, head: u64, first: u64) -> RoomHead {
        RoomHead::new(Epoch::new(epoch), head, first)
    }

    fn since(epoch: &str, seq: u64) -> Since {
        Since { epoch: Epoch::new(epoch), seq, id: None }
    }

    #[test]
    fn catch_up_pages_are_kept_within_the_budget() {
        let (room, epoch) = (RoomName::parse("r").expect("valid"), Epoch::new("e"));
        let message = |seq| StoredMessage {
            seq,
            id: ClientMessageId::parse("i").expect("valid"),
            user: palaver_protocol::UserName::parse("ann").expect("valid"),
            text: "x".repeat(100),
            ts: 0,
        };
        let page = || (1..=10).map(message).collect::<Vec<_>>();
        let one = Frame::message_len(&room, &epoch, &message(10));
        let mut all = page();
        assert!(!keep_within(&mut all, &room, &epoch, one * 10));
        assert_eq!(all.len(), 10);
        let mut some = page();
        assert!(keep_within(&mut some, &room, &epoch, one * 3 + 1));
        assert_eq!(some.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let mut first = page();
        assert!(keep_within(&mut first, &room, &epoch, 1));
        assert_eq!(first.len(), 1, "at least one, so catch-up makes progress");
    }

    #[test]
    fn resume_points() {
        let h = head("e", 100, 51);
        assert_eq!(resume_point(&h, None), (100, true));
        assert_eq!(resume_point(&h, Some(&since("e", 60))), (60, true));
        assert_eq!(resume_point(&h, Some(&since("e", 50))), (50, true));
        assert_eq!(resume_point(&h, Some(&since("e", 49))), (100, false));
        assert_eq!(resume_point(&h, Some(&since("e", 101))), (100, false));
        assert_eq!(resume_point(&h, Some(&since("other", 60))), (100, false));
        assert_eq!(resume_point(&head("e", 0, 1), Some(&since("e", 0))), (0, true));
        // The store reported the client's message gone: never recovered.
        let lost = RoomHead { lost: true, ..h };
        assert_eq!(resume_point(&lost, Some(&since("e", 60))), (100, false));
    }
}
