//! The embedded event log: the `event_log` table of the database, one partition holding every
//! topic in commit order. The relay moves events from the outbox into it in one transaction.
//!
//! What this node's relay appended is also kept in memory ([`Tail`]), so the consumers that follow
//! the log closely (the saga, the socket feed, the webhook dispatcher) read it from there rather
//! than with a query each after every relay.

use super::{EventLog, LogError, LogRecord, Partition};
use crate::store::{embedded_log, Store};
use bazaar_protocol::events::Envelope;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The one partition's topic name.
pub const TOPIC: &str = "events";

/// Who appends to the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appenders {
    /// Only this node's relay (a node running alone): a reader that has caught up with the tail
    /// can only be given more by the relay, which wakes it, so it waits without a query first.
    ThisNode,
    /// Every node's relay (a cluster on one database): a reader past the tail reads the table.
    AnyNode,
}

/// The newest records this node's relay appended, as one run of consecutive positions. Positions
/// are unique, so such a run is everything the log holds between its ends: a read that starts
/// inside it is answered from memory, and one that starts elsewhere reads the table.
struct Tail {
    records: VecDeque<LogRecord>,
    /// The most records it keeps (`relay_batch`: a relay round's worth, which is what consumers
    /// that keep up read after each round); one further behind reads the table.
    capacity: usize,
    /// When the last batch came in.
    extended: Option<Instant>,
}

/// How long the tail outlives the last relay that appended to it. Readers that keep up have read
/// it by then; an idle node gives its memory back (the footprint benchmark measured 3 MiB kept
/// after a burst by a tail that stayed).
const TAIL_IDLE_RELEASE: Duration = Duration::from_secs(1);

impl Tail {
    fn new(capacity: usize) -> Self {
        Self { records: VecDeque::new(), capacity: capacity.max(1), extended: None }
    }

    /// Empties the tail, memory and all, once `idle` has passed since its last batch.
    fn release_if_idle(&mut self, idle: Duration) {
        if self.extended.is_some_and(|at| at.elapsed() >= idle) {
            self.records = VecDeque::new();
            self.extended = None;
        }
    }

    /// Adds a relayed batch (in position order). A position that does not follow the last one (a
    /// gap left by a relay that rolled back, or another node's records in between) starts the run
    /// again from it.
    fn extend(&mut self, batch: &[LogRecord]) {
        for record in batch {
            if self.records.back().is_some_and(|last| last.offset + 1 != record.offset) {
                self.records.clear();
            }
            self.records.push_back(record.clone());
        }
        let excess = self.records.len().saturating_sub(self.capacity);
        self.records.drain(..excess);
        self.extended = Some(Instant::now());
    }

    /// Up to `limit` records from position `from` on, when the run holds `from`.
    fn read(&self, from: i64, limit: usize) -> Option<Vec<LogRecord>> {
        let first = self.records.front()?.offset;
        let last = self.records.back()?.offset;
        if from < first || from > last {
            return None;
        }
        let skip = usize::try_from(from - first).ok()?;
        Some(self.records.iter().skip(skip).take(limit).cloned().collect())
    }

    /// The position right after the run.
    fn next(&self) -> Option<i64> {
        self.records.back().map(|last| last.offset + 1)
    }
}

/// The event log in the database.
pub struct EmbeddedLog {
    store: Store,
    appended: Arc<Notify>,
    partition: Partition,
    appenders: Appenders,
    tail: Mutex<Tail>,
}

impl EmbeddedLog {
    /// A log in `store`; `appended` wakes readers waiting in [`EventLog::fetch`] (the relay and,
    /// in a cluster, the router notify it when events are published anywhere). The newest
    /// `tail_records` records this node relays are kept in memory for the readers.
    pub fn new(store: Store, appended: Arc<Notify>, appenders: Appenders, tail_records: usize) -> Self {
        Self {
            store,
            appended,
            partition: Partition { topic: TOPIC.into(), index: 0 },
            appenders,
            tail: Mutex::new(Tail::new(tail_records)),
        }
    }

    /// The tail. A panic while it was held cannot leave it wrong: a run cut short between two
    /// records is still a run of consecutive positions.
    fn tail(&self) -> MutexGuard<'_, Tail> {
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_tail(&self, from: i64, limit: usize) -> Option<Vec<LogRecord>> {
        if limit == 0 {
            return None;
        }
        self.tail().read(from, limit)
    }

    /// Whether a reader at `from` has read everything: only this node appends, and `from` is
    /// right after what its relay appended.
    fn caught_up(&self, from: i64) -> bool {
        self.appenders == Appenders::ThisNode && self.tail().next() == Some(from)
    }

    async fn read_table(&self, from: i64, limit: u32) -> Result<Vec<LogRecord>, LogError> {
        let records = embedded_log::read(&self.store, from - 1, limit).await?;
        Ok(records.into_iter().map(logged).collect())
    }
}

/// A row of the table as a record of the log.
fn logged(row: embedded_log::LogRecord) -> LogRecord {
    LogRecord { offset: row.position, envelope: row.envelope }
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
        async move {
            let logged: Vec<LogRecord> =
                embedded_log::relay_batch(store, limit).await?.into_iter().map(logged).collect();
            let mut tail = self.tail();
            if logged.is_empty() {
                tail.release_if_idle(TAIL_IDLE_RELEASE);
            } else {
                // Committed: readers may see it, from memory.
                tail.extend(&logged);
                drop(tail);
                self.appended.notify_waiters();
            }
            Ok(logged.into_iter().map(|r| r.envelope).collect())
        }
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
            let table_limit = limit.min(u32::MAX as usize) as u32;
            // Listening before the first look: a relay between the look and the wait wakes it.
            let appended = self.appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            if let Some(records) = self.read_tail(from, limit) {
                return Ok(records);
            }
            if !self.caught_up(from) {
                let records = self.read_table(from, table_limit).await?;
                if !records.is_empty() || wait.is_zero() {
                    return Ok(records);
                }
            }
            if !wait.is_zero() {
                let _ = tokio::time::timeout(wait, appended).await;
            }
            if let Some(records) = self.read_tail(from, limit) {
                return Ok(records);
            }
            self.read_table(from, table_limit).await
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_store;
    use crate::store::{append_events, query};
    use bazaar_protocol::events::{Event, StockChanged};

    fn record(offset: i64) -> LogRecord {
        let event =
            Event::StockChanged(StockChanged { product_id: "p".to_owned().into(), stock: 1, delta: 0, order_id: None });
        LogRecord { offset, envelope: Arc::new(Envelope::new("p", offset, chrono::Utc::now(), event)) }
    }

    fn offsets(records: Option<Vec<LogRecord>>) -> Option<Vec<i64>> {
        records.map(|records| records.iter().map(|r| r.offset).collect())
    }

    #[test]
    fn the_tail_answers_only_inside_one_run_of_consecutive_positions() {
        let mut tail = Tail::new(64);
        assert_eq!(offsets(tail.read(1, 10)), None);
        tail.extend(&[record(5), record(6)]);
        tail.extend(&[record(7)]);
        assert_eq!(offsets(tail.read(5, 10)), Some(vec![5, 6, 7]));
        assert_eq!(offsets(tail.read(6, 1)), Some(vec![6]));
        // Before the run, and after it: the table's to answer.
        assert_eq!(offsets(tail.read(4, 10)), None);
        assert_eq!(offsets(tail.read(8, 10)), None);
        assert_eq!(tail.next(), Some(8));
        // A gap (9 is another node's, or was never used) starts the run again after it.
        tail.extend(&[record(10), record(11), record(13)]);
        assert_eq!(offsets(tail.read(7, 10)), None);
        assert_eq!(offsets(tail.read(10, 10)), None);
        assert_eq!(offsets(tail.read(13, 10)), Some(vec![13]));
        // Bounded: the oldest records leave first.
        let many: Vec<LogRecord> = (14..14 + 64).map(record).collect();
        tail.extend(&many);
        assert_eq!(offsets(tail.read(13, 1)), None);
        assert_eq!(offsets(tail.read(14, 1)), Some(vec![14]));
        assert_eq!(tail.records.len(), 64);
        // Kept while relays come; given back once they stop.
        tail.release_if_idle(Duration::from_secs(60));
        assert_eq!(tail.records.len(), 64);
        tail.release_if_idle(Duration::ZERO);
        assert_eq!(offsets(tail.read(14, 1)), None);
        assert_eq!(tail.next(), None);
    }

    async fn relayed(store: &Store, log: &EmbeddedLog, seq: i64) -> LogRecord {
        let event = Event::StockChanged(StockChanged {
            product_id: "p".to_owned().into(),
            stock: seq,
            delta: 0,
            order_id: None,
        });
        let mut tx = store.begin().await.unwrap();
        append_events(&mut tx, &[Envelope::new("p", seq, chrono::Utc::now(), event)]).unwrap();
        store.commit(tx).await.unwrap();
        log.relay(store, 100).await.unwrap();
        let partition = log.partitions_of(&[]).remove(0);
        log.fetch(&partition, 0, 1_000, Duration::ZERO).await.unwrap().pop().expect("the relayed record")
    }

    /// What the relay appended is read from memory: the same records after the table lost them
    /// (deleted here to tell the two apart), and the reader at the end is woken by the next relay.
    #[tokio::test]
    async fn a_reader_inside_or_at_the_end_of_the_tail_is_answered_from_memory() {
        let (store, _db) = fresh_store().await;
        let log = Arc::new(EmbeddedLog::new(store.clone(), Arc::new(Notify::new()), Appenders::ThisNode, 100));
        let partition = log.partitions_of(&[]).remove(0);
        let first = relayed(&store, &log, 1).await;
        let mut tx = store.begin().await.unwrap();
        query(&store, "DELETE FROM event_log").execute(tx.conn().await.unwrap()).await.unwrap();
        store.commit(tx).await.unwrap();
        let again = log.fetch(&partition, first.offset, 10, Duration::ZERO).await.unwrap();
        assert_eq!(again.iter().map(|r| r.envelope.seq).collect::<Vec<_>>(), [1]);
        let waiting = {
            let (log, partition) = (log.clone(), partition.clone());
            tokio::spawn(async move { log.fetch(&partition, first.offset + 1, 10, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let mut tx = store.begin().await.unwrap();
        let event =
            Event::StockChanged(StockChanged { product_id: "p".to_owned().into(), stock: 2, delta: 0, order_id: None });
        append_events(&mut tx, &[Envelope::new("p", 2, chrono::Utc::now(), event)]).unwrap();
        store.commit(tx).await.unwrap();
        log.relay(&store, 100).await.unwrap();
        let arrived = waiting.await.unwrap().unwrap();
        assert_eq!(arrived.iter().map(|r| r.envelope.seq).collect::<Vec<_>>(), [2]);
        assert!(started.elapsed() < Duration::from_secs(5), "woken by the relay");
    }

    /// A record outside the tail (one another node appended) is read from the table.
    #[tokio::test]
    async fn a_reader_past_the_tail_reads_what_another_node_appended() {
        let (store, _db) = fresh_store().await;
        let here = EmbeddedLog::new(store.clone(), Arc::new(Notify::new()), Appenders::AnyNode, 100);
        let other = EmbeddedLog::new(store.clone(), Arc::new(Notify::new()), Appenders::AnyNode, 100);
        let partition = here.partitions_of(&[]).remove(0);
        let mine = relayed(&store, &here, 1).await;
        let theirs = relayed(&store, &other, 2).await;
        assert_eq!(theirs.offset, mine.offset + 1);
        let read = here.fetch(&partition, mine.offset + 1, 10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(read.iter().map(|r| r.envelope.seq).collect::<Vec<_>>(), [2]);
    }
}
