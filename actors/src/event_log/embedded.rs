//! The embedded event log: the `event_log` table of the database, one partition holding every
//! topic in commit order. The relay moves events from the outbox into it in one transaction.

use super::{EventLog, LogError, LogRecord, Partition};
use crate::store::{embedded_log, Store};
use bazaar_protocol::events::Envelope;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The one partition's topic name.
pub const TOPIC: &str = "events";

/// The event log in the database.
pub struct EmbeddedLog {
    store: Store,
    appended: Arc<Notify>,
    partition: Partition,
}

impl EmbeddedLog {
    /// A log in `store`; `appended` wakes readers waiting in [`EventLog::fetch`] (the relay and,
    /// in a cluster, the router notify it when events are published anywhere).
    pub fn new(store: Store, appended: Arc<Notify>) -> Self {
        Self { store, appended, partition: Partition { topic: TOPIC.into(), index: 0 } }
    }
}

impl EventLog for EmbeddedLog {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn partitions_of(&self, _topics: &[&str]) -> Vec<Partition> {
        vec![self.partition.clone()]
    }

    fn exclusive_relay(&self) -> bool {
        false
    }

    fn relay<'a>(&'a self, store: &'a Store, limit: u32) -> BoxFuture<'a, Result<Vec<Arc<Envelope>>, LogError>> {
        async move { Ok(embedded_log::relay_batch(store, limit).await?.into_iter().map(|r| r.envelope).collect()) }
            .boxed()
    }

    fn fetch<'a>(
        &'a self,
        _partition: &'a Partition,
        from: i64,
        limit: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<LogRecord>, LogError>> {
        async move {
            let limit = limit.min(u32::MAX as usize) as u32;
            let mut records = embedded_log::read(&self.store, from - 1, limit).await?;
            if records.is_empty() && !wait.is_zero() {
                let _ = tokio::time::timeout(wait, self.appended.notified()).await;
                records = embedded_log::read(&self.store, from - 1, limit).await?;
            }
            Ok(records.into_iter().map(|r| LogRecord { offset: r.position, envelope: r.envelope }).collect())
        }
        .boxed()
    }
}
