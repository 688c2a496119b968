//! The saga consumer: reads the event log (every partition that carries payments and orders) and
//! drives the steps that follow an event — charge a requested payment, settle the order when the
//! payment is decided, refund at the gateway and settle the order when a payment is refunded, give
//! stock back when an order is cancelled or refunded.
//!
//! Order is kept per entity only: each record goes into the lane of its envelope's entity (the
//! Kafka record key), a lane runs its steps one after another in log order, each retried until it
//! succeeds before the next one of that entity starts, and lanes run side by side (up to
//! `max_in_flight` records read and not yet done). So one buyer whose gateway never answers holds
//! back nothing but its own payment and the saved offset. The offset saved is the lowest one not
//! yet completed: after a crash nothing uncompleted is skipped, and what completed after it is
//! delivered again, which each entity applies at most once (processed-events table, state checks).

use crate::cluster::ClusterView;
use crate::entity::Request;
use crate::event_log::{EventLog, LogRecord, Partition};
use crate::order::{OrderError, OrderState, SettlePayment, SettleRefund};
use crate::payment::{ChargePayment, RefundAtGateway};
use crate::product::ReleaseStock;
use crate::region::CallError;
use crate::regions::Regions;
use crate::store::{self, Store};
use bazaar_protocol::events::{topics, Envelope, Event};
use bazaar_protocol::OrderId;
use futures_util::future::{BoxFuture, OptionFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

/// The consumer's name in `consumer_offsets`.
pub const CONSUMER: &str = "saga";

/// One step that follows an event, sent to the entity it concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Ask the gateway to charge a requested payment.
    Charge,
    /// Settle the order with the payment's outcome.
    SettlePayment,
    /// Give the money back at the gateway (the refund decision is already committed).
    RefundAtGateway,
    /// Move the paid order to REFUNDED.
    SettleRefund,
    /// Give the order's units back to its product.
    ReleaseStock,
}

/// The steps that follow an event, in the order they run; empty when it needs none.
fn steps(event: &Event) -> &'static [Step] {
    match event {
        Event::PaymentRequested { .. } => &[Step::Charge],
        Event::PaymentApproved { .. } | Event::PaymentDeclined { .. } => &[Step::SettlePayment],
        // The money goes back before the order says REFUNDED, so a refunded order always means
        // refunded money.
        Event::PaymentRefunded { .. } => &[Step::RefundAtGateway, Step::SettleRefund],
        Event::OrderCancelled { .. } | Event::OrderRefunded { .. } => &[Step::ReleaseStock],
        Event::UserRegistered { .. }
        | Event::ProductListed { .. }
        | Event::StockChanged { .. }
        | Event::OrderPlaced { .. }
        | Event::OrderPaid { .. }
        | Event::ChatRoomOpened { .. }
        | Event::ChatMessagePosted { .. } => &[],
    }
}

fn flat<T, E: std::fmt::Display>(answer: Result<Result<T, E>, CallError>) -> Result<(), String> {
    match answer {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Resolves when every one of `steps` has (the first failure, if any).
fn all_done(
    steps: Vec<impl std::future::Future<Output = Result<(), String>> + Send + 'static>,
) -> BoxFuture<'static, Result<(), String>> {
    futures_util::future::join_all(steps)
        .map(|outcomes| outcomes.into_iter().collect::<Result<Vec<()>, String>>().map(|_| ()))
        .boxed()
}

/// Sends `request()` to each of `orders`; resolves when all have answered.
fn each_order<Q>(
    regions: &Regions,
    orders: Vec<OrderId>,
    request: impl Fn() -> Q,
) -> BoxFuture<'static, Result<(), String>>
where
    Q: Request<OrderState, Reply = Result<(), OrderError>>,
{
    all_done(orders.into_iter().map(|order| regions.orders.ask(order.as_str(), request()).map(flat)).collect())
}

/// Sends one step of `envelope` to its entity and resolves when that entity answered.
fn send(
    regions: &Regions,
    envelope: &Envelope,
    step: Step,
    charge_timeout: Duration,
) -> BoxFuture<'static, Result<(), String>> {
    let cause = envelope.id.clone();
    match (&envelope.event, step) {
        (Event::PaymentRequested { payment, .. }, Step::Charge) => {
            regions.payments.ask_within(payment.id.as_str(), charge_timeout, ChargePayment { cause }).map(flat).boxed()
        }
        // A checkout's payment settles each of its orders; the step is done when all are.
        (Event::PaymentApproved { payment } | Event::PaymentDeclined { payment }, Step::SettlePayment) => {
            each_order(regions, payment.order_ids(), || SettlePayment {
                payment: payment.clone(),
                cause: cause.clone(),
            })
        }
        (Event::PaymentRefunded { payment, amount, .. }, Step::RefundAtGateway) => regions
            .payments
            .ask_within(payment.id.as_str(), charge_timeout, RefundAtGateway { cause, amount: *amount })
            .map(flat)
            .boxed(),
        (Event::PaymentRefunded { payment, order_id, .. }, Step::SettleRefund) => {
            // The order whose share was given back; a refund that names none (from before
            // checkout payments, or found at the provider) goes to every order of the payment,
            // each of which checks its own share.
            let orders = match order_id {
                Some(order) => vec![order.clone()],
                None => payment.order_ids(),
            };
            each_order(regions, orders, || SettleRefund { payment: payment.clone(), cause: cause.clone() })
        }
        (Event::OrderCancelled { order, .. } | Event::OrderRefunded { order }, Step::ReleaseStock) => {
            // Each line's units go back to its own product; the step is done when all have.
            let releases: Vec<_> = order
                .items()
                .into_iter()
                .map(|line| {
                    let release = ReleaseStock { order_id: order.id.clone(), cause: cause.clone() };
                    regions.products.ask(line.product_id.as_str(), release).map(flat)
                })
                .collect();
            all_done(releases)
        }
        (event, step) => {
            // `steps` never pairs them so; a mistake here must not stall the lane forever.
            warn!(kind = event.type_name(), ?step, "saga step does not apply to this event; skipped");
            futures_util::future::ready(Ok(())).boxed()
        }
    }
}

/// Runs the steps of one record, each until it succeeds (or shutdown), one after another;
/// resolves to the record's lane and offset.
fn apply(
    regions: Regions,
    record: LogRecord,
    charge_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) -> BoxFuture<'static, (String, i64)> {
    async move {
        let envelope = &record.envelope;
        for &step in steps(&envelope.event) {
            let mut delay = Duration::from_millis(100);
            while let Err(reason) = send(&regions, envelope, step, charge_timeout).await {
                warn!(event_id = %envelope.id, kind = envelope.event.type_name(), ?step, %reason, "saga step failed; retrying");
                metrics::counter!("bazaar_saga_retries_total").increment(1);
                if *shutdown.borrow() {
                    // Not acknowledged: the step is delivered again after the restart.
                    return std::future::pending().await;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        (envelope.entity_id.clone(), record.offset)
    }
    .boxed()
}

/// Which records are read and not yet done, lane by lane, and the offset that may be saved.
/// Plain bookkeeping, free of I/O: the consumer starts whatever it returns.
#[derive(Debug)]
pub(crate) struct Lanes<T> {
    /// Per entity with a step running: the records queued behind the running one, in log order.
    /// A key is present exactly while its lane is busy.
    queued: HashMap<String, VecDeque<(i64, T)>>,
    /// Offsets read and not yet completed.
    open: BTreeSet<i64>,
    /// The offset after the last record read.
    read_upto: i64,
}

impl<T> Lanes<T> {
    /// Empty lanes that read on from `next` (the saved offset).
    pub(crate) fn new(next: i64) -> Self {
        Self { queued: HashMap::new(), open: BTreeSet::new(), read_upto: next }
    }

    /// Takes a record read at `offset` that needs no step.
    pub(crate) fn skip(&mut self, offset: i64) {
        self.read_upto = self.read_upto.max(offset + 1);
    }

    /// Takes a record read at `offset` for entity `key`; returns it when it may start now (its
    /// lane was idle), or keeps it queued behind the lane's running record.
    pub(crate) fn push(&mut self, key: &str, offset: i64, item: T) -> Option<T> {
        self.read_upto = self.read_upto.max(offset + 1);
        self.open.insert(offset);
        match self.queued.get_mut(key) {
            Some(queue) => {
                queue.push_back((offset, item));
                None
            }
            None => {
                self.queued.insert(key.to_owned(), VecDeque::new());
                Some(item)
            }
        }
    }

    /// Marks the running record of lane `key` (at `offset`) done; returns the lane's next
    /// record, which starts now.
    pub(crate) fn complete(&mut self, key: &str, offset: i64) -> Option<T> {
        self.open.remove(&offset);
        let queue = self.queued.get_mut(key)?;
        match queue.pop_front() {
            Some((_, next)) => Some(next),
            None => {
                self.queued.remove(key);
                // A burst grows the map to thousands of lanes, and a map keeps its capacity: give
                // it back once the burst is over (the slack avoids shrinking at every step).
                if self.queued.capacity() > 4 * self.queued.len() + 256 {
                    self.queued.shrink_to_fit();
                }
                None
            }
        }
    }

    /// The offset to save: the lowest one not completed, or the next to read when all are.
    pub(crate) fn committed(&self) -> i64 {
        self.open.first().copied().unwrap_or(self.read_upto)
    }

    /// The offset of the next record to read.
    pub(crate) fn read_upto(&self) -> i64 {
        self.read_upto
    }

    /// How many records are read and not yet completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.open.len()
    }

    /// Moves an idle reader on to `position` (another node moved the offset meanwhile).
    pub(crate) fn resume_at(&mut self, position: i64) {
        debug_assert!(self.open.is_empty());
        self.read_upto = self.read_upto.max(position);
    }
}

/// The topics whose events have a step.
const TOPICS: [&str; 2] = [topics::PAYMENTS, topics::ORDERS];

/// How the saga runs.
#[derive(Debug, Clone, Copy)]
pub struct SagaSettings {
    /// How long one charge (or gateway refund) may take before it is asked again.
    pub charge_timeout: Duration,
    /// Most records read and not yet done, per partition; reading pauses at it.
    pub max_in_flight: usize,
}

/// Starts the saga: one consumer per partition of the log that carries its topics. In a cluster
/// each partition is consumed by one node, its rendezvous owner among the live members (Kafka
/// consumer groups without a group coordinator); the offset lives in SQL, so a new owner resumes
/// where the last one stopped. Two owners during a view change are harmless: every step is
/// idempotent. Each consumer stops when `shutdown` turns true, saving its offset.
pub fn spawn(
    store: Store,
    log: Arc<dyn EventLog>,
    regions: Regions,
    view: Option<Arc<ClusterView>>,
    settings: SagaSettings,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    log.partitions_of(&TOPICS)
        .into_iter()
        .map(|partition| {
            let consumer = Consumer {
                store: store.clone(),
                log: log.clone(),
                regions: regions.clone(),
                view: view.clone(),
                key: partition.key(CONSUMER),
                partition,
                settings,
            };
            tokio::spawn(consumer.run(shutdown.clone()))
        })
        .collect()
}

/// The saga's reader of one partition.
struct Consumer {
    store: Store,
    log: Arc<dyn EventLog>,
    regions: Regions,
    view: Option<Arc<ClusterView>>,
    partition: Partition,
    /// Its name in `consumer_offsets` and in the cluster's role election.
    key: String,
    settings: SagaSettings,
}

impl Consumer {
    fn leading(&self) -> bool {
        self.view.as_ref().is_none_or(|view| view.leads(&self.key))
    }

    /// The offset of the next record to read, as last saved.
    async fn saved_offset(&self) -> i64 {
        match store::embedded_log::load_offset(&self.store, &self.key).await {
            Ok(next) => next,
            Err(e) => {
                warn!(consumer = %self.key, reason = %e, "saga offset unreadable; starting from the beginning");
                0
            }
        }
    }

    fn start(&self, record: LogRecord, shutdown: &watch::Receiver<bool>) -> BoxFuture<'static, (String, i64)> {
        apply(self.regions.clone(), record, self.settings.charge_timeout, shutdown.clone())
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Offsets are those of the next record to read.
        let mut saved = self.saved_offset().await;
        let mut lanes = Lanes::<LogRecord>::new(saved);
        let mut saved_at = Instant::now();
        let mut running: FuturesUnordered<BoxFuture<'static, (String, i64)>> = FuturesUnordered::new();
        let mut following = false;
        let mut failures = 0u32;
        let mut fetching = None;
        loop {
            let leading = self.leading();
            if !leading {
                following = true;
            } else if following && lanes.in_flight() == 0 {
                // Just took the partition over: another node may have moved the offset meanwhile.
                let position = self.saved_offset().await;
                lanes.resume_at(position);
                saved = saved.max(position);
                following = false;
            }
            let committed = lanes.committed();
            // Saving after every event would double the writes; a redelivery after a crash is
            // harmless, so the offset is saved at most every 200 ms or when idle.
            if committed > saved && (lanes.in_flight() == 0 || saved_at.elapsed() > Duration::from_millis(200)) {
                if let Err(e) = store::embedded_log::save_offset(&self.store, &self.key, committed).await {
                    warn!(consumer = %self.key, reason = %e, "saga offset not saved");
                } else {
                    saved = committed;
                    saved_at = Instant::now();
                }
            }
            if *shutdown.borrow() {
                break;
            }
            let room = self.settings.max_in_flight.saturating_sub(lanes.in_flight());
            if fetching.is_none() && leading && !following && room > 0 {
                // A read that waits (up to 500 ms) for records to arrive. It is kept across turns
                // of the loop, not restarted when a step completes, so a busy partition still reads.
                fetching = Some(self.log.fetch(&self.partition, lanes.read_upto(), room, Duration::from_millis(500)));
            }
            tokio::select! {
                Some((key, offset)) = running.next(), if !running.is_empty() => {
                    if let Some(next) = lanes.complete(&key, offset) {
                        running.push(self.start(next, &shutdown));
                    }
                }
                Some(fetched) = OptionFuture::from(fetching.as_mut()) => {
                    fetching = None;
                    match fetched {
                        Ok(records) => {
                            failures = 0;
                            for record in records {
                                if steps(&record.envelope.event).is_empty() {
                                    lanes.skip(record.offset);
                                    continue;
                                }
                                let key = record.envelope.entity_id.clone();
                                if let Some(record) = lanes.push(&key, record.offset, record) {
                                    running.push(self.start(record, &shutdown));
                                }
                            }
                        }
                        Err(e) => {
                            failures += 1;
                            if failures == 1 || failures.is_multiple_of(50) {
                                warn!(consumer = %self.key, reason = %e, "event log unreadable; retrying");
                            }
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                // Paused (full, or following): wake now and then to look at the view again.
                _ = tokio::time::sleep(Duration::from_millis(500)), if fetching.is_none() => {}
                _ = shutdown.changed() => {}
            }
        }
        let committed = lanes.committed();
        if committed > saved {
            let _ = store::embedded_log::save_offset(&self.store, &self.key, committed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_entitys_records_run_one_after_another_in_log_order() {
        let mut lanes = Lanes::new(0);
        assert_eq!(lanes.push("a", 0, "a0"), Some("a0"));
        assert_eq!(lanes.push("a", 1, "a1"), None);
        assert_eq!(lanes.push("a", 2, "a2"), None);
        assert_eq!(lanes.complete("a", 0), Some("a1"));
        assert_eq!(lanes.complete("a", 1), Some("a2"));
        assert_eq!(lanes.complete("a", 2), None);
        // The lane is idle again: its next record starts at once.
        assert_eq!(lanes.push("a", 3, "a3"), Some("a3"));
    }

    #[test]
    fn other_entities_never_wait_behind_a_stuck_one() {
        let mut lanes = Lanes::new(0);
        assert_eq!(lanes.push("slow", 0, 0), Some(0));
        for offset in 1..1_000 {
            let key = format!("fast{offset}");
            assert_eq!(lanes.push(&key, offset, offset), Some(offset), "record {offset} waited");
        }
        assert_eq!(lanes.push("slow", 1_000, 1_000), None, "the slow entity's next record waits for it");
        assert_eq!(lanes.in_flight(), 1_001);
    }

    #[test]
    fn the_saved_offset_is_the_lowest_one_not_completed() {
        let mut lanes = Lanes::new(10);
        assert_eq!(lanes.committed(), 10);
        lanes.push("slow", 10, ());
        lanes.skip(11);
        lanes.push("b", 12, ());
        lanes.push("c", 13, ());
        lanes.complete("c", 13);
        lanes.complete("b", 12);
        // Everything after 10 is done, but 10 is not: a crash must deliver 10 again.
        assert_eq!(lanes.committed(), 10);
        assert_eq!(lanes.read_upto(), 14);
        lanes.complete("slow", 10);
        assert_eq!(lanes.committed(), 14);
        assert_eq!(lanes.in_flight(), 0);
    }

    #[test]
    fn records_without_a_step_move_the_offset_only_past_completed_ones() {
        let mut lanes = Lanes::new(0);
        lanes.push("a", 0, ());
        lanes.skip(1);
        lanes.skip(2);
        assert_eq!(lanes.committed(), 0);
        lanes.complete("a", 0);
        assert_eq!(lanes.committed(), 3);
    }

    #[test]
    fn a_takeover_resumes_from_the_offset_another_node_saved() {
        let mut lanes: Lanes<()> = Lanes::new(5);
        lanes.resume_at(40);
        assert_eq!((lanes.read_upto(), lanes.committed()), (40, 40));
        // Never backwards.
        lanes.resume_at(7);
        assert_eq!(lanes.read_upto(), 40);
    }

    #[test]
    fn a_refund_follows_its_payment_decision_in_the_same_lane() {
        use bazaar_protocol::payments::{Payment, PaymentStatus};
        let payment = Payment {
            id: "pay1".into(),
            order_id: Some("o1".into()),
            checkout_id: None,
            amount: 1,
            status: PaymentStatus::Approved,
            reason: None,
            refunded_amount: 0,
            orders: Vec::new(),
        };
        let approved =
            Envelope::new("pay1", 2, chrono::Utc::now(), Event::PaymentApproved { payment: payment.clone() });
        let refunded = Envelope::new(
            "pay1",
            3,
            chrono::Utc::now(),
            Event::PaymentRefunded { payment, amount: None, at_provider: false, order_id: None },
        );
        // Both are the payment's events, so they share its lane: the refund's steps cannot start
        // before the settlement of the approval completed.
        assert_eq!(approved.entity_id, refunded.entity_id);
        let mut lanes = Lanes::new(0);
        assert!(lanes.push(&approved.entity_id, 0, steps(&approved.event)).is_some());
        assert_eq!(lanes.push(&refunded.entity_id, 1, steps(&refunded.event)), None);
        assert_eq!(lanes.complete(&approved.entity_id, 0), Some(&[Step::RefundAtGateway, Step::SettleRefund][..]));
    }
}
