//! A [`Broker`] decorator that times every call into the real broker and
//! counts failures, publishes and history reads, so neither the sessions nor
//! the backends carry metrics code.

use std::{sync::Arc, time::Instant};

use async_trait::async_trait;
use palaver_broker::{
    Broker, BrokerError, ClusterReport, Control, Draft, Evidence, HistoryPage, MembersPage,
    NodeReport, Published, RoomHead, RoomsPage, broker::SharedBroker,
};
use palaver_protocol::{HistoryQuery, PresenceState, RoomName, UserName};

use crate::metrics::{BrokerOp, Metrics};

/// Wraps the node's broker; every call is forwarded unchanged.
pub(crate) struct MeteredBroker {
    inner: SharedBroker,
    metrics: Arc<Metrics>,
}

impl MeteredBroker {
    /// Wraps `inner`, recording into `metrics`.
    pub(crate) fn wrap(inner: SharedBroker, metrics: Arc<Metrics>) -> SharedBroker {
        Arc::new(MeteredBroker { inner, metrics })
    }

    /// Runs one call into the real broker, recording its latency and outcome.
    async fn timed<T>(
        &self,
        op: BrokerOp,
        call: impl Future<Output = Result<T, BrokerError>>,
    ) -> Result<T, BrokerError> {
        let start = Instant::now();
        let result = call.await;
        self.metrics.broker_call(op, start.elapsed(), result.is_ok());
        result
    }
}

#[async_trait]
impl Broker for MeteredBroker {
    async fn publish(&self, room: &RoomName, draft: Draft) -> Result<Published, BrokerError> {
        let result = self.timed(BrokerOp::Publish, self.inner.publish(room, draft)).await;
        if let Ok(published) = &result {
            let counter = if published.duplicate {
                &self.metrics.duplicates
            } else {
                &self.metrics.published
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn signal(
        &self,
        room: &RoomName,
        user: &UserName,
        state: PresenceState,
        trace: Option<String>,
    ) -> Result<(), BrokerError> {
        self.timed(BrokerOp::Signal, self.inner.signal(room, user, state, trace)).await
    }

    async fn subscribe(&self, room: &RoomName) -> Result<(), BrokerError> {
        self.timed(BrokerOp::Subscribe, self.inner.subscribe(room)).await
    }

    async fn unsubscribe(&self, room: &RoomName) {
        let start = Instant::now();
        self.inner.unsubscribe(room).await;
        self.metrics.broker_call(BrokerOp::Unsubscribe, start.elapsed(), true);
    }

    async fn head(
        &self,
        room: &RoomName,
        evidence: Option<Evidence>,
    ) -> Result<RoomHead, BrokerError> {
        self.timed(BrokerOp::Head, self.inner.head(room, evidence)).await
    }

    async fn history(
        &self,
        room: &RoomName,
        query: HistoryQuery,
        evidence: Option<Evidence>,
    ) -> Result<HistoryPage, BrokerError> {
        let result = self.timed(BrokerOp::History, self.inner.history(room, query, evidence)).await;
        if let Ok(page) = &result {
            self.metrics
                .history_messages
                .fetch_add(page.messages.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        result
    }

    async fn presence_join(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError> {
        self.timed(BrokerOp::PresenceJoin, self.inner.presence_join(room, user, session)).await
    }

    async fn presence_leave(
        &self,
        room: &RoomName,
        user: &UserName,
        session: &str,
    ) -> Result<bool, BrokerError> {
        self.timed(BrokerOp::PresenceLeave, self.inner.presence_leave(room, user, session)).await
    }

    async fn members_page(
        &self,
        room: &RoomName,
        after: Option<&UserName>,
        limit: usize,
    ) -> Result<MembersPage, BrokerError> {
        self.timed(BrokerOp::Members, self.inner.members_page(room, after, limit)).await
    }

    fn is_ready(&self) -> bool {
        self.inner.is_ready()
    }

    async fn report(&self, report: NodeReport) -> Result<(), BrokerError> {
        self.timed(BrokerOp::Report, self.inner.report(report)).await
    }

    async fn nodes(&self) -> Result<ClusterReport, BrokerError> {
        self.timed(BrokerOp::Nodes, self.inner.nodes()).await
    }

    async fn rooms(
        &self,
        after: Option<&RoomName>,
        limit: usize,
    ) -> Result<RoomsPage, BrokerError> {
        self.timed(BrokerOp::Rooms, self.inner.rooms(after, limit)).await
    }

    async fn control(&self, order: Control) -> Result<u64, BrokerError> {
        self.timed(BrokerOp::Control, self.inner.control(order)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palaver_broker::{Inbox, MemoryBroker};
    use palaver_protocol::{ClientMessageId, Envelope};

    struct Nowhere;
    impl Inbox for Nowhere {
        fn deliver(&self, _: Envelope) {}
        fn lost(&self, _: &RoomName) {}
        fn bus_state(&self, _: bool) {}
    }

    #[tokio::test]
    async fn counts_publishes_duplicates_and_history() {
        let metrics = Arc::new(Metrics::default());
        let broker = MeteredBroker::wrap(
            Arc::new(MemoryBroker::new(Arc::new(Nowhere), 100)),
            metrics.clone(),
        );
        let room = RoomName::parse("lobby").expect("valid room");
        let draft = Draft {
            id: ClientMessageId::parse("m1").expect("valid id"),
            user: UserName::parse("ann").expect("valid user"),
            text: "hi".into(),
            trace: None,
            witness: None,
        };
        broker.publish(&room, draft.clone()).await.expect("publish");
        broker.publish(&room, draft).await.expect("duplicate publish");
        let page = broker
            .history(&room, HistoryQuery::After { after: 0, limit: 10 }, None)
            .await
            .expect("history");
        assert_eq!(page.messages.len(), 1);
        let get = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(get(&metrics.published), 1);
        assert_eq!(get(&metrics.duplicates), 1);
        assert_eq!(get(&metrics.history_messages), 1);
        assert_eq!(metrics.broker_op(BrokerOp::Publish).latency.count(), 2);
        assert_eq!(metrics.broker_op(BrokerOp::History).latency.count(), 1);
    }
}
