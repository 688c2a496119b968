//! The saga consumer: reads the event log and drives the steps that follow an event — charge a
//! requested payment, settle the order when the payment is decided, give stock back when an order
//! is cancelled or refunded.
//!
//! Events are dispatched in log order (so one entity sees its events in order) and handled
//! concurrently (so a slow gateway holds back nothing but the offset). The offset only moves past
//! an event once its step has committed; after a crash the steps after it are delivered again, and
//! each entity applies a redelivered event at most once (processed-events table, state checks).

use crate::cluster::ClusterView;
use crate::entity::CallError;
use crate::order::{SettlePayment, SettleRefund};
use crate::payment::ChargePayment;
use crate::product::ReleaseStock;
use crate::regions::Regions;
use crate::store::{log, log::LogRecord, Store};
use bazaar_protocol::events::{Envelope, Event};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
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

/// Runs the step for one record until it succeeds (or shutdown); resolves to the record's position.
fn apply(
    regions: Regions,
    record: LogRecord,
    charge_timeout: Duration,
    shutdown: watch::Receiver<bool>,
) -> BoxFuture<'static, i64> {
    let Some(first) = dispatch(&regions, &record.envelope, charge_timeout) else {
        return futures_util::future::ready(record.position).boxed();
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
        record.position
    }
    .boxed()
}

/// Starts the saga consumer; it stops when `shutdown` turns true, saving its offset.
/// In a cluster only the node that leads the `saga` role consumes (the rendezvous owner of the
/// role among the live members); the offset lives in SQL, so a new leader resumes where the last
/// one stopped. Two leaders during a view change are harmless: every step is idempotent.
pub fn spawn(
    store: Store,
    regions: Regions,
    view: Option<Arc<ClusterView>>,
    appended: Arc<Notify>,
    charge_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut committed = match log::load_offset(&store, CONSUMER).await {
            Ok(position) => position,
            Err(e) => {
                warn!(reason = %e, "saga offset unreadable; starting from the beginning");
                0
            }
        };
        let mut read_upto = committed;
        let mut saved = committed;
        let mut saved_at = Instant::now();
        let mut inflight = FuturesOrdered::new();
        let mut more = true;
        let mut following = false;
        loop {
            let leading = view.as_ref().is_none_or(|view| view.leads(CONSUMER));
            if !leading {
                following = true;
            } else if following && inflight.is_empty() {
                // Just became the leader: another node may have moved the offset meanwhile.
                if let Ok(position) = log::load_offset(&store, CONSUMER).await {
                    committed = committed.max(position);
                    saved = saved.max(position);
                    read_upto = read_upto.max(committed);
                }
                following = false;
            }
            if leading && !following && more && inflight.len() < WINDOW {
                match log::read(&store, read_upto, (WINDOW - inflight.len()) as u32).await {
                    Ok(records) => {
                        more = records.len() == WINDOW - inflight.len();
                        for record in records {
                            read_upto = record.position;
                            inflight.push_back(apply(regions.clone(), record, charge_timeout, shutdown.clone()));
                        }
                    }
                    Err(e) => warn!(reason = %e, "event log unreadable; retrying"),
                }
            }
            // Saving after every event would double the writes; a redelivery after a crash is
            // harmless, so the offset is saved at most every 200 ms or when idle.
            if committed != saved && (inflight.is_empty() || saved_at.elapsed() > Duration::from_millis(200)) {
                if let Err(e) = log::save_offset(&store, CONSUMER, committed).await {
                    warn!(reason = %e, "saga offset not saved");
                } else {
                    saved = committed;
                    saved_at = Instant::now();
                }
            }
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                Some(position) = inflight.next(), if !inflight.is_empty() => {
                    committed = position;
                    more = true;
                }
                _ = appended.notified() => more = true,
                _ = tokio::time::sleep(Duration::from_millis(500)) => more = true,
                _ = shutdown.changed() => {}
            }
        }
        if committed != saved {
            let _ = log::save_offset(&store, CONSUMER, committed).await;
        }
    })
}
