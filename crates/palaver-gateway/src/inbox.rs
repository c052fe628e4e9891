//! The adapter that lets the broker deliver into the hub without either
//! knowing the other.

use std::sync::Arc;

use palaver_broker::Inbox;
use palaver_hub::Hub;
use palaver_protocol::Envelope;

/// Delivers bus events to the local hub.
pub struct HubInbox(pub Arc<Hub>);

impl Inbox for HubInbox {
    fn deliver(&self, envelope: Envelope) {
        self.0.deliver(envelope);
    }

    fn bus_state(&self, up: bool) {
        if up {
            // Whatever was published while the bus was down is in history:
            // every member catches up from there.
            self.0.resync_all();
        }
    }
}
