//! A client's membership in one room and its delivery cursor.

use std::sync::Arc;

use palaver_protocol::{Epoch, RoomName, Seq};
use parking_lot::Mutex;

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

/// One client in one room.
pub struct Membership {
    client: Arc<Client>,
    room: RoomName,
    cursor: Mutex<Cursor>,
}

impl Membership {
    pub(crate) fn new(client: Arc<Client>, room: RoomName) -> Self {
        Membership {
            client,
            room,
            cursor: Mutex::new(Cursor { epoch: None, seq: 0, state: SyncState::Joining }),
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
}
