//! A client's membership in one room and its delivery cursor.

use std::sync::Arc;

use palaver_protocol::{Epoch, Frame, RoomName, Seq};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::client::Client;

/// Where a member stands in the room's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    /// Added to the room, `joined` not yet sent: receives nothing.
    Joining,
    /// `joined` sent; messages come from history, live ones are skipped
    /// (they are in history too). Presence events are delivered.
    Syncing,
    /// Receives live messages as long as they arrive gap-free.
    Live,
}

/// The last message a member received, and whether it is live.
#[derive(Debug, Clone)]
pub struct Cursor {
    /// Epoch of `seq`; `None` until the join has read the room's head.
    pub epoch: Option<Epoch>,
    /// Last sequence number queued to the member.
    pub seq: Seq,
    /// Delivery state.
    pub state: SyncState,
}

/// A sender's ack waiting for the sender's own copy of its message.
struct HeldAck {
    seq: Seq,
    frame: Frame,
    released: oneshot::Sender<()>,
}

/// One client in one room.
pub struct Membership {
    client: Arc<Client>,
    room: RoomName,
    cursor: Mutex<Cursor>,
    /// Boxed: an idle membership pays a pointer for it, not the whole ack.
    held_ack: Mutex<Option<Box<HeldAck>>>,
}

impl Membership {
    pub(crate) fn new(client: Arc<Client>, room: RoomName) -> Self {
        Membership {
            client,
            room,
            cursor: Mutex::new(Cursor { epoch: None, seq: 0, state: SyncState::Joining }),
            held_ack: Mutex::new(None),
        }
    }

    /// The member.
    pub fn client(&self) -> &Arc<Client> {
        &self.client
    }

    /// The room.
    pub fn room(&self) -> &RoomName {
        &self.room
    }

    /// A copy of the cursor.
    pub fn cursor(&self) -> Cursor {
        self.cursor.lock().clone()
    }

    /// Moves the cursor (the connection does this while catching up).
    pub fn set_cursor(&self, epoch: Epoch, seq: Seq, state: SyncState) {
        *self.cursor.lock() = Cursor { epoch: Some(epoch), seq, state };
    }

    /// Records that `seq` was queued during catch-up.
    pub fn advance(&self, seq: Seq) {
        let mut cursor = self.cursor.lock();
        cursor.seq = cursor.seq.max(seq);
    }

    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, Cursor> {
        self.cursor.lock()
    }

    /// Holds the ack of this member's message `seq` of `epoch` until the live
    /// fan-out queues the member's own copy of it, and queues both together:
    /// one write to the sender instead of two when the copy comes back over
    /// the bus. The receiver fires once the fan-out has taken the ack to queue
    /// it (or the held ack is dropped with the membership). Gives the ack back
    /// when the copy is already queued or will not come live (the member is
    /// catching up, or the room is in another epoch): send it now.
    pub fn hold_ack(
        &self,
        epoch: &Epoch,
        seq: Seq,
        frame: Frame,
    ) -> Result<oneshot::Receiver<()>, Frame> {
        let cursor = self.cursor.lock();
        let waits = cursor.state == SyncState::Live
            && cursor.epoch.as_ref() == Some(epoch)
            && cursor.seq < seq;
        if !waits {
            return Err(frame);
        }
        let (released, receiver) = oneshot::channel();
        // One request at a time per connection: at most one ack is held.
        *self.held_ack.lock() = Some(Box::new(HeldAck { seq, frame, released }));
        drop(cursor);
        Ok(receiver)
    }

    /// Takes a held ack back (its copy did not come in time): `None` when the
    /// fan-out has queued it meanwhile.
    pub fn take_ack(&self) -> Option<Frame> {
        self.held_ack.lock().take().map(|held| held.frame)
    }

    /// The held ack once the member's cursor has reached `seq` (call under
    /// the cursor's lock, after queuing message `seq`; `Seq::MAX` releases it
    /// whatever it waits for). The holder is told it was released.
    pub(crate) fn release_ack(&self, seq: Seq) -> Option<Frame> {
        let mut held = self.held_ack.lock();
        if held.as_ref().is_none_or(|h| h.seq > seq) {
            return None;
        }
        let held = held.take()?;
        let _ = held.released.send(());
        Some(held.frame)
    }
}
