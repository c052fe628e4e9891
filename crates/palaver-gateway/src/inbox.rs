//! The adapter that lets the broker deliver into the hub without either
//! knowing the other.

use std::sync::Arc;

use palaver_broker::Inbox;
use palaver_hub::Hub;
use palaver_protocol::{Envelope, RoomName};

/// Delivers bus events to the local hub.
pub struct HubInbox(pub Arc<Hub>);

impl Inbox for HubInbox {
    fn deliver(&self, envelope: Envelope) {
        // The envelope carries a trace context only when the publishing node
        // exports traces: then the fan-out joins that trace, one span per
        // event per node (not per member). Otherwise there is no span at all.
        let Some(parent) = &envelope.trace else {
            self.0.deliver(envelope);
            return;
        };
        let span = tracing::info_span!("deliver", room = %envelope.room);
        crate::telemetry::set_remote_parent(&span, parent);
        let _entered = span.enter();
        self.0.deliver(envelope);
    }

    fn lost(&self, room: &RoomName) {
        self.0.resync(room);
    }

    fn bus_state(&self, up: bool) {
        if up {
            // Whatever was published while the bus was down is in history:
            // every member catches up from there.
            self.0.resync_all();
        }
    }
}
