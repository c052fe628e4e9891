//! The upgraded socket and its closing handshake, shared by the handshake
//! (a refused socket) and the connection (a finished one).

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{Stream, StreamExt};
use palaver_protocol::CloseCode;
use tokio::time::timeout;

/// The upgraded socket, boxed once at the upgrade: passed by value through
/// several async fns, an inline `WebSocket` (~600 bytes of protocol state)
/// would be stored again in each one's state for the connection's lifetime.
pub(crate) type Socket = Box<WebSocket>;

/// The close code recorded, never sent (RFC 6455 §7.4.1 reserves it), for a
/// connection whose peer vanished without a closing handshake: a TCP reset,
/// or EOF without a close frame. Counted apart from 1002, which is for
/// clients that break the protocol.
pub(crate) const ABNORMAL: u16 = 1006;

/// Longest wait for the peer's close reply after our close frame.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Closes a socket that never became a connection, waiting briefly for the
/// peer's close reply so the close frame is not lost.
pub(crate) async fn close(mut socket: Socket, code: CloseCode, reason: &'static str) {
    let close = CloseFrame { code: code.code(), reason: Utf8Bytes::from_static(reason) };
    if timeout(LINGER, socket.send(Message::Close(Some(close)))).await.is_err() {
        return;
    }
    linger(socket, LINGER).await;
}

/// Completes the closing handshake: after our close frame, keep reading (and
/// discarding) until the peer's close or EOF, bounded by `limit`. Dropping the
/// socket earlier would make the kernel answer the peer's late frames (a
/// pong) with a reset, which destroys the close frame before the peer reads it.
pub(crate) async fn linger<S>(mut stream: S, limit: Duration)
where
    S: Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    let _ = timeout(limit, async {
        while let Some(Ok(message)) = stream.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
