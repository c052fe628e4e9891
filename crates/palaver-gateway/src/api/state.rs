//! What the API's handlers use of their node, extracted per request (axum's
//! `FromRef`), rather than the whole node state.

use std::sync::Arc;

use axum::extract::FromRef;
use palaver_broker::broker::SharedBroker;
use palaver_hub::Hub;
use palaver_protocol::Limits;

use crate::{directory::Reporter, node::Node};

/// The handlers' handle: validation limits, the hub (witnesses), the broker,
/// and this node's own report (for `/stats`).
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) limits: Limits,
    pub(crate) hub: Arc<Hub>,
    pub(crate) broker: SharedBroker,
    pub(crate) reporter: Reporter,
}

impl FromRef<Arc<Node>> for Api {
    fn from_ref(node: &Arc<Node>) -> Api {
        Api {
            limits: node.limits.clone(),
            hub: node.hub.clone(),
            broker: node.broker.clone(),
            reporter: node.reporter(),
        }
    }
}
