//! One WebSocket connection: a read pump and a write pump, two futures polled
//! by the connection's one task, joined by the client's bounded queue.
//!
//! The read pump decodes frames, enforces the read deadline and runs the
//! session's requests; the write pump drains the
//! queue into the socket, batching whatever is queued into one flush, sends
//! pings, and enforces the write timeout. Either one ending closes the client,
//! which ends the other. A write that times out means the client is not
//! reading: it is evicted as a slow consumer (1013, counted), like a client
//! whose queue overflows; meanwhile its queue's bound has paused its requests.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use palaver_hub::{Client, Outbox};
use palaver_protocol::{CloseCode, ErrorCode, Frame};
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use crate::{
    identity::{Identity, new_session_id},
    metrics::{Metrics, bump},
    node::Node,
    ratelimit::{Verdict, frame_reference},
    security::Security,
    session::Session,
    socket::{ABNORMAL, LINGER, Socket, linger},
};

/// Frames written per flush at most, so one busy client cannot starve pings.
const MAX_BATCH: usize = 64;

/// Serves one upgraded, authenticated socket until it closes.
pub(crate) async fn serve(socket: Socket, app: Arc<Node>, identity: Identity) {
    let session_id = new_session_id();
    let Identity { user, grants, expires, .. } = identity;
    let span =
        tracing::info_span!("connection", session = %session_id, user = %user, node = %app.node_id);
    bump(&app.stats.total);
    app.stats.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(parent: &span, "connected");
    let (client, outbox) =
        Client::new(Arc::from(session_id), user, app.client_config, app.shutdown.child_token());
    app.registry.register(&client);
    let (sink, stream) = socket.split();
    let mut session = Session::new(app.clone(), client.clone(), grants);
    let reading = async {
        // Work that runs once per connection (or per request) is boxed: an
        // async fn's state is as large as its largest await point, and every
        // idle connection would otherwise carry the biggest request's state.
        Box::pin(session.welcome()).await;
        let open = read_pump(stream, &mut session, &client, &app, expires).await;
        Box::pin(session.depart_all()).await;
        open
    }
    .instrument(span.clone());
    // Both pumps are polled by this one task: a second task per connection
    // would cost its own allocation, and a wake-up per queued frame would
    // cross tasks. The read pump waits for room in the queue, the write
    // pump drains it, so neither can stall the other. The write pump is not
    // instrumented: entering the span on every poll of the hottest future
    // costs more than the few events it logs (they carry the session).
    // Reading first: what a request queues in this poll (an ack beside the
    // sender's own copy) leaves in the write pump's same batch.
    let (open, ()) = tokio::join!(biased; reading, write_pump(sink, outbox, &client, &app));
    if let Some(stream) = open {
        Box::pin(linger(stream, app.config.write_timeout.min(LINGER))).await;
    }
    app.registry.unregister(&client);
    // Counted before the gauge drops, so whoever sees the connection gone
    // also sees why it went.
    app.metrics.connection_closed(client.close_code());
    app.stats.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    tracing::debug!(parent: &span, code = client.close_code(), "disconnected");
}

/// Reads frames until the client goes, is closed, its token expires, or the
/// node shuts down. Returns the stream when it is still healthy enough to
/// linger on.
async fn read_pump(
    mut stream: SplitStream<Socket>,
    session: &mut Session,
    client: &Client,
    app: &Node,
    expires: Option<SystemTime>,
) -> Option<SplitStream<Socket>> {
    let deadline = app.config.read_deadline;
    let mut silent_until = Instant::now() + deadline;
    let mut budget = Security::frame_budget(&app.config);
    // The token's end is the connection's end: the client comes back with a
    // fresh token and resumes with `since`, losing nothing. One timer serves
    // both deadlines (each costs memory in every idle connection).
    let token_ends =
        expires.map(|at| Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default());
    loop {
        if token_ends.is_some_and(|end| end <= Instant::now()) {
            tracing::info!("token expired; closing");
            client.close(CloseCode::Unauthorized);
            return Some(stream);
        }
        let wake = token_ends.map_or(silent_until, |end| end.min(silent_until));
        let next = tokio::select! {
            biased;
            () = client.closing().cancelled() => {
                // A node shutdown cancels the token without a code: 1001.
                client.close(CloseCode::GoingAway);
                return Some(stream);
            }
            () = client.resync_requested() => {
                Box::pin(session.catch_up_all()).await;
                continue;
            }
            () = sleep_until(wake) => {
                if Instant::now() < silent_until {
                    continue; // the token's end: checked at the top of the loop
                }
                tracing::info!(deadline = ?deadline, "closing a silent peer");
                client.close(CloseCode::HeartbeatTimeout);
                return Some(stream);
            }
            next = stream.next() => next,
        };
        silent_until = Instant::now() + deadline;
        if let Some(Ok(Message::Text(_) | Message::Binary(_) | Message::Ping(_))) = &next {
            match budget.check() {
                Verdict::Admit => {}
                // The frame is dropped unread; data frames are told why, pings just count.
                Verdict::Refuse => {
                    let reference = match &next {
                        Some(Ok(Message::Text(text))) => frame_reference(text.as_str()),
                        _ => None,
                    };
                    if !matches!(next, Some(Ok(Message::Ping(_)))) {
                        let message = "too many frames; slow down";
                        Box::pin(session.refuse(ErrorCode::RateLimited, message, reference)).await;
                    }
                    continue;
                }
                Verdict::Abuse => {
                    tracing::info!("sustained flooding; closing 1008");
                    client.close(CloseCode::PolicyViolation);
                    return Some(stream);
                }
            }
        }
        match next {
            None => {
                client.close(CloseCode::Normal);
                return None;
            }
            Some(Err(e)) => {
                let Some(code) = close_code_for(e) else {
                    // Not a protocol violation, and no one to send a close frame to.
                    tracing::info!("connection reset without a closing handshake");
                    client.close_with(ABNORMAL);
                    return None;
                };
                tracing::info!(code = code.code(), "read failed; closing");
                client.close(code);
                return Some(stream);
            }
            Some(Ok(Message::Text(text))) => Box::pin(session.handle_text(text.as_str())).await,
            Some(Ok(Message::Binary(_))) => {
                let message = "binary frames are not supported; send JSON text";
                Box::pin(session.refuse(ErrorCode::BinaryNotSupported, message, None)).await
            }
            // Any frame proves the peer alive; tungstenite answers pings itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) => {
                client.close(CloseCode::Normal);
                return None;
            }
        }
    }
}

/// Maps a read error to the close code the client gets; `None` when the
/// peer vanished (a TCP reset, or EOF without a close frame).
fn close_code_for(error: axum::Error) -> Option<CloseCode> {
    use tungstenite::error::{CapacityError, Error, ProtocolError};
    Some(match error.into_inner().downcast::<Error>() {
        Ok(e) => match *e {
            Error::Io(_) | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                return None;
            }
            Error::Capacity(CapacityError::MessageTooLong { .. }) => CloseCode::TooBig,
            Error::Capacity(_) => CloseCode::TooBig,
            Error::Utf8(_) => CloseCode::InvalidPayload,
            Error::Protocol(_) => CloseCode::ProtocolError,
            _ => CloseCode::Normal,
        },
        Err(_) => CloseCode::Normal,
    })
}

/// Drains the client's queue into the socket until the client closes, then
/// sends the close frame.
async fn write_pump(
    mut sink: SplitSink<Socket, Message>,
    mut outbox: Outbox,
    client: &Client,
    app: &Node,
) {
    let write_timeout = app.config.write_timeout;
    let write_delay = app.config.write_delay;
    let every = app.config.ping_interval;
    // One inline timer, re-armed after each ping (an `Interval` would box its own).
    let ping = tokio::time::sleep(every);
    tokio::pin!(ping);
    let healthy = loop {
        // Writes are boxed: their state (timeouts, sink futures) would
        // otherwise sit in every idle connection's task.
        let written = tokio::select! {
            biased;
            frame = outbox.recv() => {
                let Some(frame) = frame else { break true };
                Box::pin(async {
                    if !write_delay.is_zero() {
                        // Coalesce: what fan-out queues meanwhile goes out in this write.
                        tokio::time::sleep(write_delay).await;
                    }
                    write_batch(&mut sink, &mut outbox, frame, write_timeout, &app.metrics).await
                })
                .await
            }
            () = &mut ping => {
                ping.as_mut().reset(Instant::now() + every);
                Box::pin(within(write_timeout, sink.send(Message::Ping(Default::default())))).await
            }
        };
        match written {
            Ok(()) => {}
            Err(WriteFailure::TimedOut) => {
                tracing::info!(session = %client.session(), user = %client.user(), "write timed out; evicting");
                app.hub.evict(client);
                break false;
            }
            Err(WriteFailure::Failed) => {
                // The socket refused the write: the peer vanished (reset, or
                // gone after a FIN) without a closing handshake, unless a
                // close was already under way (its code stands).
                tracing::info!(session = %client.session(), user = %client.user(), "write failed; dropping the connection");
                client.close_with(ABNORMAL);
                break false;
            }
        }
    };
    // Make sure the read task stops too, whoever ended first. A close that
    // came from the node's shutdown token carries no code: it is 1001.
    client.close(if app.shutdown.is_cancelled() {
        CloseCode::GoingAway
    } else {
        CloseCode::Normal
    });
    if healthy {
        Box::pin(close_socket(sink, outbox, client, app)).await;
    }
}

/// Drains what is queued (unless the client is being evicted) and sends the
/// close frame, or, when the peer closed first, the echo of its close frame
/// (RFC 6455 §5.5.1).
async fn close_socket(
    mut sink: SplitSink<Socket, Message>,
    mut outbox: Outbox,
    client: &Client,
    app: &Node,
) {
    let write_timeout = app.config.write_timeout;
    let code = client.close_code().unwrap_or(CloseCode::GoingAway.code());
    if code == ABNORMAL {
        return; // the peer is gone: nothing to drain, and 1006 is never sent
    }
    if code != CloseCode::TryAgainLater.code() {
        // Graceful: deliver what is already queued (shutdown drains within its deadline).
        while let Some(frame) = outbox.try_recv() {
            match write_batch(&mut sink, &mut outbox, frame, write_timeout, &app.metrics).await {
                Ok(()) => {}
                Err(WriteFailure::TimedOut) => return,
                // E.g. the peer closed first: nothing more may be sent but the echo.
                Err(WriteFailure::Failed) => break,
            }
        }
    }
    // An operator's disconnect carries its own reason; every other close a fixed one.
    let reason = match app.registry.farewell(client.session()) {
        Some(reason) => Utf8Bytes::from(&*reason),
        None => Utf8Bytes::from_static(reason_for(code)),
    };
    let close = Message::Close(Some(CloseFrame { code, reason }));
    let _ = timeout(write_timeout, async {
        // After the peer's close, tungstenite has queued the echo and refuses
        // another close frame; closing the sink flushes the echo either way.
        let _ = sink.send(close).await;
        sink.close().await
    })
    .await;
}

/// Writes `first` and whatever else is queued (up to a batch), then flushes
/// once. The batch size is recorded: full batches mean a backed-up client.
async fn write_batch(
    sink: &mut SplitSink<Socket, Message>,
    outbox: &mut Outbox,
    first: Frame,
    write_timeout: Duration,
    metrics: &Metrics,
) -> Result<(), WriteFailure> {
    within(write_timeout, async {
        sink.feed(text(first)).await?;
        let mut frames = 1;
        while frames < MAX_BATCH {
            let Some(frame) = outbox.try_recv() else { break };
            sink.feed(text(frame)).await?;
            frames += 1;
        }
        metrics.write_batch(frames);
        sink.flush().await
    })
    .await
}

/// Why a socket write did not complete.
enum WriteFailure {
    /// The socket or the WebSocket refused it (reset, closed, peer closed first).
    Failed,
    /// It did not complete within the write timeout: the client is not reading.
    TimedOut,
}

/// Runs a socket write under the write timeout.
async fn within(
    limit: Duration,
    write: impl Future<Output = Result<(), axum::Error>>,
) -> Result<(), WriteFailure> {
    match timeout(limit, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "write failed");
            Err(WriteFailure::Failed)
        }
        Err(_) => {
            tracing::debug!(timeout = ?limit, "write timed out");
            Err(WriteFailure::TimedOut)
        }
    }
}

fn text(frame: Frame) -> Message {
    Message::Text(Utf8Bytes::try_from(frame.bytes().clone()).expect("frames are UTF-8 JSON"))
}

fn reason_for(code: u16) -> &'static str {
    CloseCode::from_code(code).map_or("", CloseCode::reason)
}
