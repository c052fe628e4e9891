//! One connected client as the hub sees it: identity, a bounded send queue and
//! a way to close it.
//!
//! The queue is bounded twice, in frames and in bytes, so neither many small
//! frames nor a few large ones let one slow reader hold unbounded memory.
//! Every frame counts against both bounds, whoever queues it:
//! - fan-out only ever `try_push`es: a full queue evicts the client instead
//!   of blocking the room;
//! - the client's own connection task (replies, history replay) `push`es
//!   into at most half of each bound and waits for room beyond that. Waiting
//!   there is backpressure on that client's requests alone, and the other half
//!   stays free for room traffic, so a client that reads is never evicted
//!   by its own replies or catch-up, and one that never reads holds at most
//!   the queue's bound (its write timeout then evicts it).
//!
//! The queue is a `VecDeque` behind a mutex rather than a tokio channel: an
//! idle connection's queue then costs no allocation at all (a bounded tokio
//! channel allocates its channel state and a 32-slot block up front, ~1.5 KiB
//! per connection), and the buffer is released again after a burst. There is
//! one consumer (the write task) and the lock is held for a push or a pop only.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
};

use palaver_protocol::{CloseCode, Frame, UserName};
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Queue bounds for each client.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Maximum frames waiting for the write task.
    pub queue_frames: usize,
    /// Maximum bytes waiting for the write task.
    pub queue_bytes: usize,
}

impl ClientConfig {
    /// Frames the client's own connection task may have queued (half the bound).
    pub fn own_frames(&self) -> usize {
        self.queue_frames.max(1).div_ceil(2)
    }

    /// Bytes the client's own connection task may have queued (half the
    /// bound): replies are cut to fit (history pages), or wait for room.
    pub fn own_bytes(&self) -> usize {
        self.queue_bytes / 2
    }
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

/// A drained queue keeping more than this many slots gives them back: none,
/// so an idle connection holds no queue buffer (a busy one pays an
/// allocation per burst, next to the write's syscall).
const KEEP_SLOTS: usize = 0;

/// Frames waiting for the write task, and their total size.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// A [`Client::push`] is waiting for room (there is one such producer).
    waiting: bool,
}

impl Queue {
    /// Whether `len` more bytes fit within `frames` frames and `bytes` bytes.
    /// An empty queue takes any one frame, so an oversized one cannot wait forever.
    fn fits(&self, len: usize, frames: usize, bytes: usize) -> bool {
        self.frames.is_empty() || (self.frames.len() < frames && self.bytes + len <= bytes)
    }
}

/// The queue shared by the client's producers and its write task.
struct Shared {
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
    /// The share of both bounds [`Client::push`] may fill.
    own_frames: usize,
    own_bytes: usize,
    /// Wakes the write task when a frame is queued.
    queued: Notify,
    /// Wakes a waiting [`Client::push`] when a frame leaves the queue.
    drained: Notify,
}

impl Shared {
    fn pop(&self) -> Option<Frame> {
        let mut queue = self.queue.lock();
        let frame = queue.frames.pop_front()?;
        queue.bytes -= frame.len();
        if queue.frames.is_empty() && queue.frames.capacity() > KEEP_SLOTS {
            queue.frames = VecDeque::new();
        }
        let wake = std::mem::take(&mut queue.waiting);
        drop(queue);
        if wake {
            self.drained.notify_one();
        }
        Some(frame)
    }
}

/// A connected client: the sending half of its queue plus its close signal.
pub struct Client {
    session: Arc<str>,
    user: UserName,
    shared: Arc<Shared>,
    close_code: AtomicU16,
    /// Mirrors `closing` for the fan-out's per-member check: a token's
    /// `is_cancelled` takes a lock, this is one atomic load.
    closed: AtomicBool,
    closing: CancellationToken,
    resync: Notify,
}

/// The receiving half of a client's queue, owned by its write task.
pub struct Outbox {
    shared: Arc<Shared>,
    client: std::sync::Weak<Client>,
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            max_frames: config.queue_frames.max(1),
            max_bytes: config.queue_bytes,
            own_frames: config.own_frames(),
            own_bytes: config.own_bytes(),
            queued: Notify::new(),
            drained: Notify::new(),
        });
        let client = Arc::new(Client {
            session,
            user,
            shared: shared.clone(),
            close_code: AtomicU16::new(0),
            closed: AtomicBool::new(false),
            closing,
            resync: Notify::new(),
        });
        (client.clone(), Outbox { shared, client: Arc::downgrade(&client) })
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
        self.try_push_all([frame])
    }

    /// Queues frames together without waiting (all or none): the write task
    /// is woken once and finds them all, so they leave in one write.
    pub fn try_push_all<const N: usize>(&self, frames: [Frame; N]) -> Result<(), PushError> {
        if self.is_closing() {
            return Err(PushError::Closed);
        }
        let shared = &self.shared;
        let len: usize = frames.iter().map(Frame::len).sum();
        let mut queue = shared.queue.lock();
        if queue.frames.len() + N > shared.max_frames || queue.bytes + len > shared.max_bytes {
            return Err(PushError::Full);
        }
        queue.bytes += len;
        queue.frames.extend(frames);
        drop(queue);
        shared.queued.notify_one();
        Ok(())
    }

    /// Queues a frame, waiting for room in the queue; used by the client's own
    /// connection task (replies, history replay), never by fan-out. The frame
    /// must fit within half of each bound (or the queue be empty): the other
    /// half is kept for room traffic, so a client that reads is not evicted
    /// because of its own replies. While it waits, that connection's requests
    /// wait with it (backpressure); a writer that makes no progress ends the
    /// wait by closing the client.
    pub async fn push(&self, frame: Frame) -> Result<(), PushError> {
        let shared = &self.shared;
        let (frames, bytes) = (shared.own_frames, shared.own_bytes);
        loop {
            if self.closing.is_cancelled() {
                return Err(PushError::Closed);
            }
            {
                let mut queue = shared.queue.lock();
                if queue.fits(frame.len(), frames, bytes) {
                    queue.bytes += frame.len();
                    queue.frames.push_back(frame);
                    drop(queue);
                    shared.queued.notify_one();
                    return Ok(());
                }
                queue.waiting = true;
            }
            // Set under the lock, `waiting` makes the next pop notify, and
            // `notify_one` keeps a permit: a pop before this wait is not missed.
            tokio::select! {
                () = shared.drained.notified() => {}
                () = self.closing.cancelled() => return Err(PushError::Closed),
            }
        }
    }

    /// Asks the connection to close with `code`. The first code wins.
    pub fn close(&self, code: CloseCode) {
        self.close_with(code.code());
    }

    /// Like [`Client::close`] with any close code, e.g. an application code
    /// (4000–4999) an operator chose when disconnecting the user.
    pub fn close_with(&self, code: u16) {
        tracing::debug!(code, "close requested");
        let _ = self.close_code.compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.closed.store(true, Ordering::Release);
        self.closing.cancel();
        // The write task waits on the queue, not on the token (cheaper per wake).
        self.shared.queued.notify_one();
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

    /// Whether [`Client::close`] was called. (A node shutdown cancels
    /// `closing` first; its write task calls `close` right after.)
    pub fn is_closing(&self) -> bool {
        self.closed.load(Ordering::Acquire)
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
        self.shared.queue.lock().bytes
    }
}

impl Outbox {
    /// Next frame, waiting for one; `None` once the client is closing (what
    /// is still queued can be drained with [`Outbox::try_recv`]).
    pub async fn recv(&mut self) -> Option<Frame> {
        loop {
            if self.client.upgrade().is_none_or(|c| c.is_closing()) {
                return None;
            }
            if let Some(frame) = self.shared.pop() {
                return Some(frame);
            }
            // A push (or close) between the pop and this wait left a permit:
            // no lost wake-up.
            self.shared.queued.notified().await;
        }
    }

    /// Next frame if one is queued now (for batching before a flush).
    pub fn try_recv(&mut self) -> Option<Frame> {
        self.shared.pop()
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

    #[tokio::test]
    async fn push_waits_for_the_writer_and_recv_waits_for_a_frame() {
        let (c, mut out) = client(1, 1 << 20);
        c.push(frame()).await.expect("room for one");
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.push(frame()).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert!(out.recv().await.is_some());
        assert_eq!(waiting.await.expect("task"), Ok(()));
        assert!(out.recv().await.is_some());
        c.close(CloseCode::Normal);
        assert!(out.recv().await.is_none());
        assert_eq!(c.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn push_takes_half_of_the_bytes_and_leaves_the_rest_to_fan_out() {
        let len = frame().len();
        let (c, mut out) = client(100, len * 4);
        c.push(frame()).await.expect("fits in half");
        c.push(frame()).await.expect("fits in half");
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.push(frame()).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "past half the bytes, push waits");
        // Fan-out still has the other half.
        assert_eq!(c.try_push(frame()), Ok(()));
        assert_eq!(c.try_push(frame()), Ok(()));
        assert_eq!(c.try_push(frame()), Err(PushError::Full));
        while c.queued_bytes() > len {
            out.try_recv().expect("queued");
        }
        assert_eq!(waiting.await.expect("task"), Ok(()));
    }

    #[tokio::test]
    async fn an_oversized_frame_goes_into_an_empty_queue() {
        let (c, mut out) = client(100, 10);
        c.push(frame()).await.expect("an empty queue takes any one frame");
        let closing = c.clone();
        let waiting = tokio::spawn(async move { closing.push(frame()).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        out.try_recv().expect("queued");
        assert_eq!(waiting.await.expect("task"), Ok(()));
        c.close(CloseCode::TryAgainLater);
        assert_eq!(c.push(frame()).await, Err(PushError::Closed));
    }

    #[test]
    fn a_drained_queue_gives_its_buffer_back() {
        let (c, mut out) = client(1000, 1 << 30);
        for _ in 0..100 {
            c.try_push(frame()).expect("fits");
        }
        while out.try_recv().is_some() {}
        assert_eq!(c.shared.queue.lock().frames.capacity(), 0);
    }
}
