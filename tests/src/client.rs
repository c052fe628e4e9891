//! A real WebSocket client speaking the Palaver protocol, for tests.

use std::{collections::VecDeque, time::Duration};

use futures_util::{SinkExt, StreamExt};
use palaver_protocol::ServerFrame;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async_with_config,
    tungstenite::{Message, protocol::frame::coding::CloseCode},
};

use crate::PATIENCE;

/// What a client observed when the server ended the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// A close frame with this code.
    Closed(u16),
    /// The stream ended without a close frame (reset, EOF).
    Dropped,
}

/// A connected test client. `welcome` has been read already.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while looking for another one; served first, so nothing is lost.
    pending: VecDeque<ServerFrame>,
    /// The `welcome` frame.
    pub welcome: ServerFrame,
}

impl WsClient {
    /// Connects and reads `welcome`.
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _) = connect_async_with_config(url, None, true)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let mut client = WsClient { ws, pending: VecDeque::new(), welcome: ServerFrame::Pong };
        client.welcome = client.next().await;
        assert!(
            matches!(client.welcome, ServerFrame::Welcome { .. }),
            "first frame: {:?}",
            client.welcome
        );
        client
    }

    /// Connects without reading `welcome`: in token mode the server sends it
    /// only after an `auth` frame. [`WsClient::read_welcome`] reads it then.
    pub async fn connect_unwelcomed(url: &str) -> WsClient {
        let (ws, _) = connect_async_with_config(url, None, true)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        WsClient { ws, pending: VecDeque::new(), welcome: ServerFrame::Pong }
    }

    /// Reads `welcome` (for [`WsClient::connect_unwelcomed`]).
    pub async fn read_welcome(&mut self) -> &ServerFrame {
        self.welcome = self.next().await;
        assert!(matches!(self.welcome, ServerFrame::Welcome { .. }), "got {:?}", self.welcome);
        &self.welcome
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: Value) {
        self.send_raw(Message::Text(value.to_string().into())).await;
    }

    /// Sends any frame.
    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send frame");
    }

    /// `join` without `since`.
    pub async fn join(&mut self, room: &str) -> ServerFrame {
        self.send_json(json!({"type":"join","room":room})).await;
        self.expect(|f| matches!(f, ServerFrame::Joined { .. })).await
    }

    /// `send` and wait for its ack, skipping other frames; returns the ack's seq.
    pub async fn say(&mut self, room: &str, id: &str, text: &str) -> u64 {
        self.send_json(json!({"type":"send","room":room,"id":id,"text":text})).await;
        match self.expect(|f| matches!(f, ServerFrame::Ack { id: i, .. } if i.as_str() == id)).await
        {
            ServerFrame::Ack { seq, .. } => seq,
            _ => unreachable!(),
        }
    }

    /// Next server frame (text), within [`PATIENCE`]; pings are skipped.
    pub async fn next(&mut self) -> ServerFrame {
        self.try_next(PATIENCE).await.unwrap_or_else(|| panic!("no frame within {PATIENCE:?}"))
    }

    /// Next server frame within `limit`, or `None`.
    pub async fn try_next(&mut self, limit: Duration) -> Option<ServerFrame> {
        if let Some(frame) = self.pending.pop_front() {
            return Some(frame);
        }
        self.read(limit).await
    }

    async fn read(&mut self, limit: Duration) -> Option<ServerFrame> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let message = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match message {
                Ok(Message::Text(text)) => {
                    return Some(
                        ServerFrame::decode(&text)
                            .unwrap_or_else(|e| panic!("bad frame {text}: {e}")),
                    );
                }
                Ok(Message::Close(frame)) => panic!("closed unexpectedly: {frame:?}"),
                Ok(_) => continue,
                Err(e) => panic!("read error: {e}"),
            }
        }
    }

    /// The first frame (buffered or new) that matches; frames read on the way
    /// are kept for later calls, in order.
    pub async fn expect(&mut self, mut pred: impl FnMut(&ServerFrame) -> bool) -> ServerFrame {
        if let Some(i) = self.pending.iter().position(&mut pred) {
            return self.pending.remove(i).expect("index just found");
        }
        loop {
            let frame = self
                .read(PATIENCE)
                .await
                .unwrap_or_else(|| panic!("no matching frame within {PATIENCE:?}"));
            if pred(&frame) {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// Drops buffered frames (after a test has checked what it needed).
    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// Collects `message` frames of a room until `count` arrived; other frames are skipped.
    pub async fn messages(&mut self, room: &str, count: usize) -> Vec<(u64, String)> {
        let mut got = Vec::new();
        while got.len() < count {
            let frame = self
                .expect(|f| matches!(f, ServerFrame::Message { room: r, .. } if r.as_str() == room))
                .await;
            if let ServerFrame::Message { seq, text, .. } = frame {
                got.push((seq, text));
            }
        }
        got
    }

    /// Waits (reading and discarding frames) until the server ends the connection.
    pub async fn ended(&mut self, limit: Duration) -> Ended {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("connection still open after {limit:?}"),
                Ok(None) | Ok(Some(Err(_))) => return Ended::Dropped,
                Ok(Some(Ok(Message::Close(frame)))) => {
                    // Complete the closing handshake like a browser would.
                    let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.next()).await;
                    return Ended::Closed(frame.map_or(1005, |f| u16::from(f.code)));
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Closes normally.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The raw stream, for tests that misbehave on purpose.
    pub fn raw(&mut self) -> &mut WebSocketStream<MaybeTlsStream<TcpStream>> {
        &mut self.ws
    }
}

/// Close code as a number (re-exported for tests).
pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}
