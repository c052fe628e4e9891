//! The adapter that lets the broker deliver into the hub without either
//! knowing the other, and carries control orders to the node's connections.

use std::sync::Arc;

use palaver_broker::{Control, Inbox};
use palaver_hub::Hub;
use palaver_protocol::{Envelope, RoomName};

use crate::registry::Registry;

/// Delivers bus events to the local hub, and control orders to the
/// registry of connections.
pub(crate) struct HubInbox {
    /// Local rooms and fan-out.
    pub(crate) hub: Arc<Hub>,
    /// Local connections by user.
    pub(crate) registry: Arc<Registry>,
}

impl Inbox for HubInbox {
    fn deliver(&self, envelope: Envelope) {
        // The envelope carries a trace context only when the publishing node
        // exports traces: then the fan-out joins that trace, one span per
        // event per node (not per member). Otherwise there is no span at all.
        let Some(parent) = &envelope.trace else {
            self.hub.deliver(envelope);
            return;
        };
        let span = tracing::info_span!("deliver", room = %envelope.room);
        crate::telemetry::set_remote_parent(&span, parent);
        let _entered = span.enter();
        self.hub.deliver(envelope);
    }

    fn lost(&self, room: &RoomName) {
        self.hub.resync(room);
    }

    fn bus_state(&self, up: bool) {
        if up {
            // Whatever was published while the bus was down is in history:
            // every member catches up from there.
            self.hub.resync_all();
        }
    }

    fn control(&self, order: Control) {
        match order {
            Control::Disconnect { user, code, reason } => {
                let closed = self.registry.disconnect(&user, code, &reason);
                tracing::info!(user = %user, code, closed, "disconnect ordered");
            }
        }
    }
}
