//! The saga consumer: reads the event log (every partition that carries payments and orders) and
//! drives the steps that follow an event — charge a requested payment, settle the order when the
//! payment is decided, give stock back when an order is cancelled or refunded.
//!
//! Events are dispatched in log order (so one entity sees its events in order) and handled
//! concurrently (so a slow gateway holds back nothing but the offset). The offset only moves past
//! an event once its step has committed; after a crash the steps after it are delivered again, and
//! each entity applies a redelivered event at most once (processed-events table, state checks).

use crate::cluster::ClusterView;
use crate::entity::CallError;
use crate::log::{EventLog, LogRecord, Partition};
use crate::order::{SettlePayment, SettleRefund};
use crate::payment::ChargePayment;
use crate::product::ReleaseStock;
use crate::regions::Regions;
use crate::store::{self, Store};
use bazaar_protocol::events::{topics, Envelope, Event};
use futures_util::future::{BoxFuture, OptionFuture};
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

/// The consumer's name in `consumer_offsets`.
pub const CONSUMER: &str = "saga";
/// How many events may be in flight at once.
const WINDOW: usize = 512;

type Step = BoxFuture<'static, Result<(), String>>;

fn flat<T, E: std::fmt::Display>(answer: Result<Result<T, E>, CallError>) -> Result<(), String> {
    match answer {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends the step that follows `envelope` (now, so steps reach entities in log order) and returns
/// its completion; `None` when the event needs no step.
fn dispatch(regions: &Regions, envelope: &Envelope, charge_timeout: Duration) -> Option<Step> {
    let cause = envelope.id.clone();
    let step: Step = match &envelope.event {
        Event::PaymentRequested { payment, .. } => {
            regions.payments.ask_within(payment.id.as_str(), charge_timeout, ChargePayment { cause }).map(flat).boxed()
        }
        Event::PaymentApproved { payment } | Event::PaymentDeclined { payment } => regions
            .orders
            .ask(payment.order_id.as_str(), SettlePayment { payment: payment.clone(), cause })
            .map(flat)
            .boxed(),
        Event::PaymentRefunded { payment } => regions
            .orders
            .ask(payment.order_id.as_str(), SettleRefund { payment: payment.clone(), cause })
            .map(flat)
            .boxed(),
        Event::OrderCancelled { order, .. } | Event::OrderRefunded { order } => {
            let order_id = order.id.clone();
            regions.products.ask(order.product_id.as_str(), ReleaseStock { order_id, cause }).map(flat).boxed()
        }
        _ => return None,
    };
    Some(step)
}

/// Runs the step for one record until it succeeds (or shutdown); resolves to the offset after it.
fn apply(
    regions: Regions,
    record: LogRecord,
    charge_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) -> BoxFuture<'static, i64> {
    let Some(first) = dispatch(&regions, &record.envelope, charge_timeout) else {
        return futures_util::future::ready(record.offset + 1).boxed();
    };
    async move {
        let mut outcome = first.await;
        let mut delay = Duration::from_millis(100);
        while let Err(reason) = outcome {
            let envelope = &record.envelope;
            warn!(event_id = %envelope.id, kind = envelope.event.type_name(), %reason, "saga step failed; retrying");
            metrics::counter!("bazaar_saga_retries_total").increment(1);
            if *shutdown.borrow() {
                // Not acknowledged: the step is delivered again after the restart.
                return std::future::pending().await;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            outcome = match dispatch(&regions, envelope, charge_timeout) {
                Some(step) => step.await,
                None => Ok(()),
            };
        }
        record.offset + 1
    }
    .boxed()
}

/// The topics whose events have a step.
const TOPICS: [&str; 2] = [topics::PAYMENTS, topics::ORDERS];

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
    charge_timeout: Duration,
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
                charge_timeout,
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
    charge_timeout: Duration,
}

impl Consumer {
    fn leading(&self) -> bool {
        self.view.as_ref().is_none_or(|view| view.leads(&self.key))
    }

    /// The offset of the next record to read, as last saved.
    async fn saved_offset(&self) -> i64 {
        match store::log::load_offset(&self.store, &self.key).await {
            Ok(next) => next,
            Err(e) => {
                warn!(consumer = %self.key, reason = %e, "saga offset unreadable; starting from the beginning");
                0
            }
        }
    }

    async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Offsets are those of the next record to read.
        let mut committed = self.saved_offset().await;
        let mut read_upto = committed;
        let mut saved = committed;
        let mut saved_at = Instant::now();
        let mut inflight = FuturesOrdered::new();
        let mut following = false;
        let mut failures = 0u32;
        let mut fetching = None;
        loop {
            let leading = self.leading();
            if !leading {
                following = true;
            } else if following && inflight.is_empty() {
                // Just took the partition over: another node may have moved the offset meanwhile.
                let position = self.saved_offset().await;
                committed = committed.max(position);
                saved = saved.max(position);
                read_upto = read_upto.max(committed);
                following = false;
            }
            // Saving after every event would double the writes; a redelivery after a crash is
            // harmless, so the offset is saved at most every 200 ms or when idle.
            if committed != saved && (inflight.is_empty() || saved_at.elapsed() > Duration::from_millis(200)) {
                if let Err(e) = store::log::save_offset(&self.store, &self.key, committed).await {
                    warn!(consumer = %self.key, reason = %e, "saga offset not saved");
                } else {
                    saved = committed;
                    saved_at = Instant::now();
                }
            }
            if *shutdown.borrow() {
                break;
            }
            let room = WINDOW - inflight.len();
            if fetching.is_none() && leading && !following && room > 0 {
                // A read that waits (up to 500 ms) for records to arrive. It is kept across turns
                // of the loop, not restarted when a step completes, so a busy partition still reads.
                fetching = Some(self.log.fetch(&self.partition, read_upto, room, Duration::from_millis(500)));
            }
            tokio::select! {
                Some(next) = inflight.next(), if !inflight.is_empty() => committed = next,
                Some(fetched) = OptionFuture::from(fetching.as_mut()) => {
                    fetching = None;
                    match fetched {
                        Ok(records) => {
                            failures = 0;
                            for record in records {
                                read_upto = record.offset + 1;
                                inflight.push_back(apply(self.regions.clone(), record, self.charge_timeout, shutdown.clone()));
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
                _ = tokio::time::sleep(Duration::from_millis(500)), if fetching.is_none() && inflight.is_empty() => {}
                _ = shutdown.changed() => {}
            }
        }
        if committed != saved {
            let _ = store::log::save_offset(&self.store, &self.key, committed).await;
        }
    }
}
