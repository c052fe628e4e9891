//! One connected client as the hub sees it: identity, a bounded send queue and
//! a way to close it.
//!
//! The queue is bounded twice, in frames and in bytes, so neither many small
//! frames nor a few large ones let one slow reader hold unbounded memory.
//! Fan-out only ever `try_push`es: a full queue evicts the client instead of
//! blocking the room.

use std::sync::{
    Arc,
    atomic::{AtomicU16, AtomicUsize, Ordering},
};

use palaver_protocol::{CloseCode, Frame, UserName};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Queue bounds for each client.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Maximum frames waiting for the write task.
    pub queue_frames: usize,
    /// Maximum bytes waiting for the write task.
    pub queue_bytes: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { queue_frames: 256, queue_bytes: 1 << 20 }
    }
}

/// Why a push failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue is over one of its bounds: the client is too slow.
    Full,
    /// The client is closing; the frame is dropped.
    Closed,
}

/// A connected client: the sending half of its queue plus its close signal.
pub struct Client {
    session: Arc<str>,
    user: UserName,
    queue: mpsc::Sender<Frame>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    close_code: AtomicU16,
    closing: CancellationToken,
    resync: Notify,
}

/// The receiving half of a client's queue, owned by its write task.
pub struct Outbox {
    frames: mpsc::Receiver<Frame>,
    queued_bytes: Arc<AtomicUsize>,
}

impl Client {
    /// Creates a client and the outbox its write task drains. `closing` is
    /// cancelled when the client must go (eviction, shutdown, protocol close).
    pub fn new(
        session: Arc<str>,
        user: UserName,
        config: ClientConfig,
        closing: CancellationToken,
    ) -> (Arc<Client>, Outbox) {
        let (tx, rx) = mpsc::channel(config.queue_frames.max(1));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let client = Arc::new(Client {
            session,
            user,
            queue: tx,
            queued_bytes: queued_bytes.clone(),
            max_bytes: config.queue_bytes,
            close_code: AtomicU16::new(0),
            closing,
            resync: Notify::new(),
        });
        (client, Outbox { frames: rx, queued_bytes })
    }

    /// The session id (unique per connection).
    pub fn session(&self) -> &Arc<str> {
        &self.session
    }

    /// The user this connection speaks for.
    pub fn user(&self) -> &UserName {
        &self.user
    }

    /// Queues a frame without waiting; used by fan-out.
    pub fn try_push(&self, frame: Frame) -> Result<(), PushError> {
        if self.closing.is_cancelled() {
            return Err(PushError::Closed);
        }
        let len = frame.len();
        if self.queued_bytes.load(Ordering::Relaxed) + len > self.max_bytes {
            return Err(PushError::Full);
        }
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        self.queue.try_send(frame).map_err(|e| {
            self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            match e {
                mpsc::error::TrySendError::Full(_) => PushError::Full,
                mpsc::error::TrySendError::Closed(_) => PushError::Closed,
            }
        })
    }

    /// Queues a frame, waiting for room in the queue; used by the client's own
    /// connection task (replies, history replay), never by fan-out. Only the
    /// frame bound applies here: a replay waits for the writer instead of
    /// evicting its own client.
    pub async fn push(&self, frame: Frame) -> Result<(), PushError> {
        let len = frame.len();
        self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        tokio::select! {
            sent = self.queue.send(frame) => sent.map_err(|_| {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                PushError::Closed
            }),
            () = self.closing.cancelled() => {
                self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
                Err(PushError::Closed)
            }
        }
    }

    /// Asks the connection to close with `code`. The first code wins.
    pub fn close(&self, code: CloseCode) {
        tracing::debug!(code = code.code(), "close requested");
        let _ =
            self.close_code.compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire);
        self.closing.cancel();
    }

    /// The close code requested so far (`None` if the close came from the
    /// shared shutdown token rather than [`Client::close`]).
    pub fn close_code(&self) -> Option<u16> {
        match self.close_code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Cancelled when the client must go.
    pub fn closing(&self) -> &CancellationToken {
        &self.closing
    }

    /// Whether the client is closing.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    /// Tells the connection that one of its rooms needs catching up.
    pub fn request_resync(&self) {
        self.resync.notify_one();
    }

    /// Resolves when a room of this client needs catching up.
    pub async fn resync_requested(&self) {
        self.resync.notified().await;
    }

    /// Bytes currently queued (for metrics).
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Relaxed)
    }
}

impl Outbox {
    /// Next frame, waiting for one. `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Frame> {
        let frame = self.frames.recv().await?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }

    /// Next frame if one is queued now (for batching before a flush).
    pub fn try_recv(&mut self) -> Option<Frame> {
        let frame = self.frames.try_recv().ok()?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::Relaxed);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palaver_protocol::{ErrorCode, ServerFrame};

    fn client(frames: usize, bytes: usize) -> (Arc<Client>, Outbox) {
        Client::new(
            Arc::from("s1"),
            UserName::parse("ann").expect("valid"),
            ClientConfig { queue_frames: frames, queue_bytes: bytes },
            CancellationToken::new(),
        )
    }

    fn frame() -> Frame {
        ServerFrame::error(ErrorCode::Internal, "x", None).encode()
    }

    #[test]
    fn bounded_in_frames() {
        let (c, mut out) = client(2, 1 << 20);
        assert_eq!(c.try_push(frame()), Ok(()));
        assert_eq!(c.try_push(frame()), Ok(()));
        assert_eq!(c.try_push(frame()), Err(PushError::Full));
        assert!(out.try_recv().is_some());
        assert_eq!(c.try_push(frame()), Ok(()));
    }

    #[test]
    fn bounded_in_bytes() {
        let len = frame().len();
        let (c, mut out) = client(100, len * 2);
        assert_eq!(c.try_push(frame()), Ok(()));
        assert_eq!(c.try_push(frame()), Ok(()));
        assert_eq!(c.try_push(frame()), Err(PushError::Full));
        assert_eq!(c.queued_bytes(), len * 2);
        out.try_recv();
        assert_eq!(c.queued_bytes(), len);
    }

    #[test]
    fn first_close_code_wins() {
        let (c, _out) = client(2, 100);
        c.close(CloseCode::TryAgainLater);
        c.close(CloseCode::GoingAway);
        assert_eq!(c.close_code(), Some(1013));
        assert_eq!(c.try_push(frame()), Err(PushError::Closed));
    }
}
