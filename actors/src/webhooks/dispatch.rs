//! The dispatcher: a consumer of the event log (the partitions of orders and payments, and of
//! accounts when the operator's endpoint is configured) that turns each event into one
//! delivery per endpoint that asked for it. The deliveries of a batch are written before the
//! batch's offset is saved, and a delivery is unique per event and endpoint, so a crash or a
//! takeover between the two reads the batch again and creates nothing twice.
//!
//! Which endpoints: the operator's for every event type it lists; a seller's for the events of
//! its products, orders and their payments, found in the event itself or, for a stock change or
//! a payment's decision, from the stored product or order (remembered, since neither changes
//! seller). Only events decided at or after an endpoint's registration go to it.

use crate::cluster::ClusterView;
use crate::event_log::{EventLog, LogRecord, Partition};
use crate::store::webhooks::{self as rows, EndpointRow, NewDelivery, OPERATOR};
use crate::store::{self, Store, StoreError};
use bazaar_protocol::events::{topics, Envelope, Event};
use bazaar_protocol::webhooks::OPERATOR_EVENTS;
use bazaar_protocol::UserId;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::warn;

/// The consumer's name in `consumer_offsets` and in role elections.
pub const CONSUMER: &str = "webhooks";

/// Records read per batch.
const BATCH: usize = 500;

/// How long a read waits for records. A record wakes it at once, so this only sets how often an
/// idle dispatcher looks at the log (and at who leads its partition).
const IDLE_WAIT: Duration = Duration::from_secs(2);

/// How long a read waits while progress is not saved yet.
const UNSAVED_WAIT: Duration = Duration::from_millis(200);

/// Sellers remembered per kind before the memory is cleared.
const REMEMBERED: usize = 100_000;

/// Starts one dispatcher per partition of the topics that carry webhook events. In a cluster a
/// partition is read by its rendezvous owner among the live members, from the offset saved in
/// SQL; two readers during a view change create nothing twice.
pub fn spawn(
    store: Store,
    log: Arc<dyn EventLog>,
    view: Option<Arc<ClusterView>>,
    with_accounts: bool,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    let mut wanted = vec![topics::ORDERS, topics::PAYMENTS];
    if with_accounts {
        wanted.push(topics::USERS);
    }
    log.partitions_of(&wanted)
        .into_iter()
        .map(|partition| {
            let dispatcher = Dispatcher {
                store: store.clone(),
                log: log.clone(),
                view: view.clone(),
                key: partition.key(CONSUMER),
                partition,
                wake: wake.clone(),
                sellers: Sellers::default(),
            };
            tokio::spawn(dispatcher.run(shutdown.clone()))
        })
        .collect()
}

/// The endpoints `envelope` goes to, given the sellers it concerns.
pub fn recipients<'a>(endpoints: &'a [EndpointRow], envelope: &Envelope, sellers: &[UserId]) -> Vec<&'a EndpointRow> {
    let kind = envelope.event.type_name();
    endpoints
        .iter()
        .filter(|endpoint| endpoint.events.iter().any(|e| e == kind))
        .filter(|endpoint| envelope.at >= endpoint.created_at)
        .filter(|endpoint| endpoint.owner_id == OPERATOR || sellers.iter().any(|s| s.as_str() == endpoint.owner_id))
        .collect()
}

/// Sellers of products and orders, as read from the store.
#[derive(Default)]
struct Sellers {
    of_product: HashMap<String, String>,
    of_order: HashMap<String, String>,
}

impl Sellers {
    /// The sellers `event` concerns, reading the product or the order when the event does not
    /// say; none for an event of no seller (or whose row is gone).
    async fn of(&mut self, store: &Store, event: &Event) -> Result<Vec<UserId>, StoreError> {
        if let Some(sellers) = event.sellers() {
            return Ok(sellers);
        }
        Ok(self.looked_up(store, event).await?.map(UserId::from).into_iter().collect())
    }

    async fn looked_up(&mut self, store: &Store, event: &Event) -> Result<Option<String>, StoreError> {
        match event {
            Event::StockChanged(change) => {
                let id = change.product_id.as_str();
                if let Some(seller) = self.of_product.get(id) {
                    return Ok(Some(seller.clone()));
                }
                let found = store::catalog::load(store, id).await?.map(|(product, _)| product.seller_id.0);
                if let Some(seller) = &found {
                    remember(&mut self.of_product, id, seller);
                }
                Ok(found)
            }
            Event::PaymentApproved { payment }
            | Event::PaymentDeclined { payment }
            | Event::PaymentRefunded { payment, .. } => {
                let Some(id) = payment.order_id.as_ref().map(|id| id.as_str()) else { return Ok(None) };
                if let Some(seller) = self.of_order.get(id) {
                    return Ok(Some(seller.clone()));
                }
                let found = store::orders::load(store, id).await?.map(|(order, _)| order.seller_id.0);
                if let Some(seller) = &found {
                    remember(&mut self.of_order, id, seller);
                }
                Ok(found)
            }
            // Every other event names its seller itself, or concerns none.
            Event::UserRegistered { .. }
            | Event::ProductListed { .. }
            | Event::OrderPlaced { .. }
            | Event::OrderCancelled { .. }
            | Event::PaymentRequested { .. }
            | Event::OrderPaid { .. }
            | Event::OrderRefunded { .. }
            | Event::ChatRoomOpened { .. }
            | Event::ChatMessagePosted { .. } => Ok(None),
        }
    }
}

fn remember(memory: &mut HashMap<String, String>, id: &str, seller: &str) {
    if memory.len() >= REMEMBERED {
        memory.clear();
    }
    memory.insert(id.to_owned(), seller.to_owned());
}

/// The dispatcher of one partition.
struct Dispatcher {
    store: Store,
    log: Arc<dyn EventLog>,
    view: Option<Arc<ClusterView>>,
    partition: Partition,
    key: String,
    wake: Arc<Notify>,
    sellers: Sellers,
}

impl Dispatcher {
    fn leading(&self) -> bool {
        self.view.as_ref().is_none_or(|view| view.leads(&self.key))
    }

    /// The deliveries `records` make; the endpoints are read once per batch, and sellers only
    /// when some seller's endpoint wants the event's type.
    async fn deliveries(&mut self, records: &[LogRecord]) -> Result<Vec<NewDelivery>, StoreError> {
        // A batch of chat, say, needs no look at the endpoints.
        if !records.iter().any(|r| OPERATOR_EVENTS.contains(&r.envelope.event.type_name())) {
            return Ok(Vec::new());
        }
        let endpoints = rows::live_endpoints(&self.store).await?;
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let now = chrono::Utc::now();
        let mut deliveries = Vec::new();
        for record in records {
            let envelope = &record.envelope;
            let kind = envelope.event.type_name();
            let a_seller_wants = endpoints.iter().any(|e| e.owner_id != OPERATOR && e.events.iter().any(|t| t == kind));
            let sellers =
                if a_seller_wants { self.sellers.of(&self.store, &envelope.event).await? } else { Vec::new() };
            let to = recipients(&endpoints, envelope, &sellers);
            if to.is_empty() {
                continue;
            }
            let encode =
                |envelope: &Envelope| serde_json::to_string(envelope).map_err(|e| StoreError::Corrupt(e.to_string()));
            let whole = encode(envelope)?;
            for endpoint in to {
                // A seller gets only their own part of a checkout's payment.
                let narrowed = (endpoint.owner_id != OPERATOR)
                    .then(|| envelope.event.seen_by_seller(&UserId::from(endpoint.owner_id.as_str())))
                    .flatten();
                let body = match narrowed {
                    Some(event) => encode(&Envelope { event, ..(**envelope).clone() })?,
                    None => whole.clone(),
                };
                deliveries.push(NewDelivery {
                    id: uuid::Uuid::now_v7().to_string(),
                    endpoint_id: endpoint.id.clone(),
                    event_id: envelope.id.to_string(),
                    event_type: kind.to_owned(),
                    body,
                    created_at: now,
                });
            }
        }
        Ok(deliveries)
    }

    async fn save(&self, offset: i64) -> bool {
        match store::embedded_log::save_offset(&self.store, &self.key, offset).await {
            Ok(()) => true,
            Err(e) => {
                warn!(consumer = %self.key, reason = %e, "webhook offset not saved");
                false
            }
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // The offset of the next record to read; `None` until read from SQL (again after
        // another node led the partition). `saved` is what SQL holds: saving after every batch
        // would add a write per batch to the write path, and a batch read again after a crash
        // creates nothing twice, so it is saved at most every 200 ms, when idle and at shutdown.
        let mut next: Option<i64> = None;
        let mut saved = 0i64;
        let mut saved_at = Instant::now();
        let mut failures = 0u32;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if !self.leading() {
                next = None;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            let from = match next {
                Some(from) => from,
                None => match store::embedded_log::load_offset(&self.store, &self.key).await {
                    Ok(from) => {
                        saved = from;
                        from
                    }
                    Err(e) => {
                        warn!(consumer = %self.key, reason = %e, "webhook offset unreadable; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            next = Some(from);
            // Progress not yet saved is saved soon after the records stop (one short wait), so
            // an idle node has nothing left to write once its traffic settled.
            let wait = if from > saved { UNSAVED_WAIT } else { IDLE_WAIT };
            let fetched = tokio::select! {
                fetched = self.log.fetch(&self.partition, from, BATCH, wait) => fetched,
                _ = shutdown.changed() => continue,
            };
            let records = match fetched {
                Ok(records) => records,
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_multiple_of(50) {
                        warn!(consumer = %self.key, reason = %e, "event log unreadable; retrying");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            failures = 0;
            let Some(last) = records.last().map(|r| r.offset) else {
                if from > saved && self.save(from).await {
                    (saved, saved_at) = (from, Instant::now());
                }
                continue;
            };
            let written = match self.deliveries(&records).await {
                Ok(deliveries) => rows::insert_deliveries(&self.store, &deliveries).await.map(|()| deliveries.len()),
                Err(e) => Err(e),
            };
            match written {
                Ok(count) => {
                    if count > 0 {
                        metrics::counter!("bazaar_webhook_deliveries_created_total").increment(count as u64);
                        self.wake.notify_one();
                    }
                    next = Some(last + 1);
                    // Only ever past deliveries already written: a crash reads the rest again.
                    if saved_at.elapsed() >= Duration::from_millis(200) && self.save(last + 1).await {
                        (saved, saved_at) = (last + 1, Instant::now());
                    }
                }
                Err(e) => {
                    warn!(consumer = %self.key, reason = %e, "webhook deliveries not written; reading the batch again");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        if let Some(next) = next.filter(|next| *next > saved) {
            self.save(next).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_protocol::orders::{Order, OrderStatus};
    use chrono::{DateTime, Utc};

    fn endpoint(id: &str, owner: &str, events: &[&str], created_at: DateTime<Utc>) -> EndpointRow {
        EndpointRow {
            id: id.into(),
            owner_id: owner.into(),
            url: "https://hooks.example.com/".into(),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            secret: "whsec_x".into(),
            previous_secret: None,
            previous_until: None,
            created_at,
        }
    }

    fn placed(seller: &str, at: DateTime<Utc>) -> Envelope {
        let order = Order {
            id: "o1".into(),
            buyer_id: "b1".into(),
            seller_id: seller.into(),
            product_id: "p1".into(),
            quantity: 1,
            amount: 100,
            currency: "KRW".into(),
            status: OrderStatus::Ordered,
            created_at: at,
            updated_at: at,
            expires_at: None,
            payment_id: None,
            lines: Vec::new(),
            checkout_id: None,
        };
        Envelope::new("o1", 1, at, Event::OrderPlaced { order })
    }

    #[test]
    fn an_event_goes_to_its_sellers_endpoints_that_asked_for_it_and_to_the_operator() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let later = t0 + chrono::Duration::seconds(10);
        let endpoints = vec![
            endpoint("mine", "s1", &["OrderPlaced"], t0),
            endpoint("mine-other-type", "s1", &["OrderPaid"], t0),
            endpoint("theirs", "s2", &["OrderPlaced"], t0),
            endpoint("op", OPERATOR, &["OrderPlaced"], t0),
            endpoint("registered-after", "s1", &["OrderPlaced"], later),
        ];
        let envelope = placed("s1", t0 + chrono::Duration::seconds(1));
        let to: Vec<&str> = recipients(&endpoints, &envelope, &envelope.event.sellers().unwrap())
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(to, ["mine", "op"]);
        // An event of no known seller goes to the operator only.
        let to: Vec<&str> = recipients(&endpoints, &envelope, &[]).iter().map(|e| e.id.as_str()).collect();
        assert_eq!(to, ["op"]);
    }
}
