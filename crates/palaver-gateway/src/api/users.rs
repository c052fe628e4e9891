//! The user routes: disconnect every connection of a user on every node.
//!
//! The order travels as a broker control order (in a cluster, the Redis
//! `{prefix}:control` channel every node subscribes to; alone, straight to
//! this node's inbox), and each node closes its own connections of the user.

use axum::{
    Json,
    body::Bytes,
    extract::{
        Path, State,
        rejection::{BytesRejection, PathRejection},
    },
};
use palaver_broker::Control;
use palaver_protocol::{CloseCode, ErrorCode, UserName, client::clean_text};
use serde::{Deserialize, Serialize};

use super::{error::ApiError, input, state::Api};

/// Longest close reason: a close frame's payload is 125 bytes, two of them the code.
const MAX_REASON: usize = 123;

/// `POST /users/{user}/disconnect` body; every field optional.
#[derive(Deserialize)]
struct DisconnectRequest {
    code: Option<u64>,
    reason: Option<String>,
}

/// What a disconnect did.
#[derive(Debug, Serialize)]
pub(crate) struct DisconnectReply {
    user: UserName,
    /// Nodes that received the order (each closes its own connections of the user).
    nodes: u64,
}

/// Close codes an operator may choose: a normal close, a policy violation,
/// or an application code.
fn allowed(code: u64) -> bool {
    matches!(code, 1000 | 1008 | 4000..=4999)
}

/// `POST /api/v1/users/{user}/disconnect`.
pub(crate) async fn disconnect(
    State(app): State<Api>,
    user: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DisconnectReply>, ApiError> {
    let user = input::user(user)?;
    let request: DisconnectRequest = input::json(body, true)?;
    let code = match request.code {
        None => CloseCode::Disconnected.code(),
        Some(code) if allowed(code) => code as u16,
        Some(_) => {
            return Err(ApiError::protocol(
                ErrorCode::InvalidField,
                "code must be 1000, 1008 or 4000-4999",
            ));
        }
    };
    let reason = match request.reason {
        None => CloseCode::Disconnected.reason().to_owned(),
        Some(reason) => clean_text(&reason),
    };
    if reason.len() > MAX_REASON {
        return Err(ApiError::protocol(
            ErrorCode::InvalidField,
            format!("reason must be at most {MAX_REASON} bytes"),
        ));
    }
    let order = Control::Disconnect { user: user.clone(), code, reason };
    let nodes = app.broker.control(order).await?;
    tracing::info!(user = %user, code, nodes, "disconnect requested");
    Ok(Json(DisconnectReply { user, nodes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_close_codes() {
        assert!(allowed(1000) && allowed(1008) && allowed(4000) && allowed(4999));
        assert!(!allowed(1001) && !allowed(1005) && !allowed(3000) && !allowed(5000));
    }
}
