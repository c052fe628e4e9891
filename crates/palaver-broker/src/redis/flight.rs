//! Single-flight for reads: identical concurrent reads share one Redis call.
//!
//! After a node restart or a load balancer move, thousands of clients rejoin
//! the same rooms within a second and ask for the same head and history.
//! Callers with the same key share one fetch, but never one that started
//! before they called: a caller that arrives while a fetch is in flight joins
//! the *next* fetch, which starts as soon as the current one ends. So a shared
//! result is never older than the caller's request (a client that subscribed
//! and then read history cannot miss a message published in between), and
//! each key has at most two fetches outstanding: about one Redis call per
//! round trip per key, however many callers.
//!
//! Fetches run as their own tasks, so a caller that gives up (its client
//! disconnected) neither cancels the fetch for the others nor leaves a stale
//! entry behind.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use parking_lot::Mutex;

use crate::broker::BrokerError;

type Flight<T> = Shared<BoxFuture<'static, Result<T, BrokerError>>>;

/// Coalesces concurrent fetches by key.
pub(crate) struct SingleFlight<K, T: Clone> {
    slots: Mutex<HashMap<K, Slot<T>>>,
    ids: AtomicU64,
}

/// The fetch in progress for a key, and the one queued behind it.
struct Slot<T: Clone> {
    running: Option<(u64, Flight<T>)>,
    queued: Option<(u64, Flight<T>)>,
}

impl<K, T> SingleFlight<K, T>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    /// An empty coalescer.
    pub fn new() -> Arc<Self> {
        Arc::new(SingleFlight { slots: Mutex::new(HashMap::new()), ids: AtomicU64::new(0) })
    }

    /// Runs `fetch` for `key`, or joins a fetch for the same key that has not
    /// started yet. Returns the result and whether it was shared (joined).
    pub async fn run<F>(self: &Arc<Self>, key: K, fetch: F) -> (Result<T, BrokerError>, bool)
    where
        F: FnOnce() -> BoxFuture<'static, Result<T, BrokerError>> + Send + 'static,
    {
        let (flight, joined) = {
            let mut slots = self.slots.lock();
            let slot = slots.entry(key.clone()).or_insert(Slot { running: None, queued: None });
            match &slot.queued {
                Some((_, flight)) => (flight.clone(), true),
                None => {
                    let id = self.ids.fetch_add(1, Ordering::Relaxed);
                    let previous = slot.running.as_ref().map(|(_, flight)| flight.clone());
                    let flight = self.start(key, id, previous, fetch);
                    if slot.running.is_some() {
                        slot.queued = Some((id, flight.clone()));
                    } else {
                        slot.running = Some((id, flight.clone()));
                    }
                    (flight, false)
                }
            }
        };
        (flight.await, joined)
    }

    /// Spawns the fetch (after `previous`, if any). Called with the slot map
    /// locked, so the task cannot look at its slot before it is recorded.
    fn start<F>(
        self: &Arc<Self>,
        key: K,
        id: u64,
        previous: Option<Flight<T>>,
        fetch: F,
    ) -> Flight<T>
    where
        F: FnOnce() -> BoxFuture<'static, Result<T, BrokerError>> + Send + 'static,
    {
        let this = self.clone();
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            this.promote(&key, id);
            let result = fetch().await;
            this.finish(&key, id);
            result
        });
        async move {
            task.await.unwrap_or_else(|e| Err(BrokerError::Unavailable(format!("read task: {e}"))))
        }
        .boxed()
        .shared()
    }

    /// The queued fetch `id` is starting: from now on, newcomers queue behind it.
    fn promote(&self, key: &K, id: u64) {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get_mut(key)
            && slot.queued.as_ref().is_some_and(|(queued, _)| *queued == id)
        {
            slot.running = slot.queued.take();
        }
    }

    /// The fetch `id` is done: forget it, and the key if nothing else waits.
    fn finish(&self, key: &K, id: u64) {
        let mut slots = self.slots.lock();
        if let Some(slot) = slots.get_mut(key) {
            if slot.running.as_ref().is_some_and(|(running, _)| *running == id) {
                slot.running = None;
            }
            if slot.running.is_none() && slot.queued.is_none() {
                slots.remove(key);
            }
        }
    }

    /// Keys with a fetch outstanding (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicUsize, time::Duration};

    use tokio::sync::Semaphore;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_at_most_two_fetches() {
        let flights = SingleFlight::<&'static str, u64>::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, calls, gate) = (flights.clone(), calls.clone(), gate.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run("room", move || {
                        async move {
                            let n = calls.fetch_add(1, Ordering::SeqCst) as u64;
                            gate.acquire().await.expect("open").forget();
                            Ok(n)
                        }
                        .boxed()
                    })
                    .await
            }));
        }
        // Let every caller register while the first fetch is stuck, then release.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        gate.add_permits(10);
        let mut joined = 0;
        for task in tasks {
            let (result, shared) = task.await.expect("no panic");
            assert!(result.expect("ok") <= 1);
            joined += usize::from(shared);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(joined, 48);
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn abandoned_fetch_still_cleans_up() {
        let flights = SingleFlight::<u8, u8>::new();
        let slow = flights.run(2, || {
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(1)
            }
            .boxed()
        });
        assert!(tokio::time::timeout(Duration::from_millis(1), slow).await.is_err());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(flights.len(), 0);
        let (again, shared) = flights.run(2, || async { Ok(2) }.boxed()).await;
        assert_eq!((again.expect("ok"), shared), (2, false));
    }
}
