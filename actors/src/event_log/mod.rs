//! The event log: where the outbox relay publishes committed events and where consumers (the
//! saga) read them, partition by partition, from an offset they keep in SQL.
//!
//! Two implementations behind [`EventLog`]: [`embedded::EmbeddedLog`], a table in the database
//! (one partition, the default: no servers needed), and [`kafka::KafkaLog`], the topics
//! `bazaar.users`, `bazaar.orders`, `bazaar.payments` and `bazaar.chat` on Kafka, keyed by entity
//! id. Everything above this trait is the same code on both, and the tests in `tests` run
//! against both.

pub mod embedded;
pub mod kafka;
pub mod partitioner;
#[cfg(test)]
mod tests;

use crate::store::{Store, StoreError};
use bazaar_protocol::events::Envelope;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;

/// One partition of a topic: the unit that is consumed in order and assigned to one node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Partition {
    /// The topic as the log names it (with any configured prefix).
    pub topic: String,
    /// The partition number.
    pub index: i32,
}

impl Partition {
    /// How consumers name it in `consumer_offsets` and in role elections.
    pub fn key(&self, consumer: &str) -> String {
        format!("{consumer}@{}/{}", self.topic, self.index)
    }
}

/// One published event with its offset in its partition.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// Strictly increasing within the partition; a consumer resumes after it.
    pub offset: i64,
    /// The event.
    pub envelope: Arc<Envelope>,
}

/// Why the log could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database (the embedded log, or the outbox) failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// The broker failed or is unreachable.
    #[error("kafka: {0}")]
    Kafka(String),
    /// The broker did not answer in time.
    #[error("kafka: no answer within {0:?}")]
    Timeout(Duration),
    /// A record could not be read back as an event.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// Where events are published and read.
pub trait EventLog: Send + Sync + 'static {
    /// `embedded` or `kafka`, for logs and `/cluster`.
    fn kind(&self) -> &'static str;

    /// The partitions that carry events of any of `topics` (bare names such as `bazaar.orders`).
    fn partitions_of(&self, topics: &[&str]) -> Vec<Partition>;

    /// Whether only one node of a cluster may relay at a time. The embedded log moves events out
    /// of the outbox in the transaction that appends them, so relays on several nodes cannot
    /// publish one event twice; a broker is written outside that transaction, so two relays
    /// could, and out of order.
    fn exclusive_relay(&self) -> bool;

    /// Publishes up to `limit` events from the outbox, in outbox order, and removes them from it
    /// once the log holds them; returns what it published (empty: the outbox was empty).
    /// A crash between publishing and removing publishes those events again (consumers
    /// de-duplicate by event id); nothing is ever removed unpublished.
    fn relay<'a>(&'a self, store: &'a Store, limit: u32) -> BoxFuture<'a, Result<Vec<Arc<Envelope>>, LogError>>;

    /// Reads up to `limit` records of `partition` from offset `from` on, waiting up to `wait`
    /// for the first one to arrive.
    fn fetch<'a>(
        &'a self,
        partition: &'a Partition,
        from: i64,
        limit: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<LogRecord>, LogError>>;
}

fn parse(body: &[u8]) -> Result<Arc<Envelope>, LogError> {
    serde_json::from_slice(body).map(Arc::new).map_err(|e| LogError::Corrupt(format!("event body: {e}")))
}
