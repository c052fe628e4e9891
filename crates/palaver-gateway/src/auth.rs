//! The handshake after the upgrade: the first-frame `auth` a connection
//! without a URL token must send, and the admitted socket's way into its
//! connection (the IP slot is held throughout).

use std::{sync::Arc, time::Duration};

use axum::extract::ws::Message;
use palaver_protocol::{ClientFrame, CloseCode, Limits};
use tokio::time::{Instant, timeout_at};

use crate::{
    identity::Identity,
    node::Node,
    security::{Admission, Credentials},
    socket::{self, Socket},
    token::{AuthError, Verifier},
};

/// Serves an admitted, upgraded socket: authenticates it by its first frame
/// if needed, then runs the connection. The IP slot is held throughout.
pub(crate) async fn serve(mut socket: Socket, app: Arc<Node>, admission: Admission) {
    let Admission { credentials, slot } = admission;
    let identity = match credentials {
        Credentials::Known(identity) => identity,
        Credentials::AwaitFrame => {
            let verifier = app.security.verifier.as_ref();
            let awaited = tokio::select! {
                awaited = await_auth_frame(
                    &mut socket,
                    verifier,
                    app.config.auth_timeout,
                    &app.limits,
                ) => awaited,
                () = app.shutdown.cancelled() => {
                    socket::close(socket, CloseCode::GoingAway, CloseCode::GoingAway.reason()).await;
                    return;
                }
            };
            match awaited {
                Ok(identity) => identity,
                Err(e) => {
                    tracing::info!(ip = %slot.key(), reason = %e, "authentication failed; closing 4001");
                    refuse(socket, &e).await;
                    return;
                }
            }
        }
    };
    if let Some(subject) = &identity.subject {
        tracing::debug!(sub = %subject, user = %identity.user, "authenticated");
    }
    crate::connection::serve(socket, app, identity).await;
    drop(slot);
}

/// Reads the `auth` frame a connection without a URL token must send first,
/// within `limit`. WebSocket pings may come before it; anything else fails.
pub(crate) async fn await_auth_frame(
    socket: &mut Socket,
    verifier: Option<&Verifier>,
    limit: Duration,
    limits: &Limits,
) -> Result<Identity, AuthError> {
    let deadline = Instant::now() + limit;
    loop {
        let message = match timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(AuthError::TimedOut),
            Ok(None | Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => {
                return Err(AuthError::Disconnected);
            }
            Ok(Some(Ok(message))) => message,
        };
        match message {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(text) => {
                return match ClientFrame::decode(text.as_str(), limits) {
                    Ok(ClientFrame::Auth { token }) => {
                        verifier.ok_or(AuthError::NotConfigured)?.verify(&token)
                    }
                    _ => Err(AuthError::Missing),
                };
            }
            _ => return Err(AuthError::Missing),
        }
    }
}

/// Closes a connection that failed to authenticate with 4001.
pub(crate) async fn refuse(socket: Socket, error: &AuthError) {
    if *error != AuthError::Disconnected {
        socket::close(socket, CloseCode::Unauthorized, error.reason()).await;
    }
}
