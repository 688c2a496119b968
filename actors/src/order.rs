//! The order entity: an order's status machine. It starts the payment (so at most one payment is
//! ever live for an order) and settles the payment's outcome that the saga delivers.

use crate::attempt::Attempt;
use crate::entity::{Ctx, Entity, EntityRef};
use crate::idempotency::{self, Earlier, IdempotencyKey};
use crate::store::{self, orders, payments, payments::PaymentRecord, Lookup, StoreError};
use crate::with_retries;
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::orders::{Order, OrderStatus, OrderTimeline};
use bazaar_protocol::payments::{Payment, PaymentShare, PaymentStatus};
use bazaar_protocol::{EventId, OrderId, PaymentId, UserId};
use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use tracing::warn;

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum OrderError {
    /// Unknown, or not the caller's: existence is not revealed.
    #[error("order not found")]
    NotFound,
    #[error("order {0} is {1}")]
    NotCancellable(OrderId, String),
    #[error("order {0} is {1}")]
    NotPayable(OrderId, String),
    #[error("the idempotency key was used for a different request")]
    IdempotencyMismatch,
    #[error("storage unavailable")]
    Unavailable,
}

type Reply<T> = RpcReplyPort<Result<T, OrderError>>;

/// A buyer's request to pay the order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestPayment {
    /// The id the new payment gets.
    pub payment_id: PaymentId,
    pub buyer_id: UserId,
    /// The card token to charge.
    pub token: String,
    pub idempotency: IdempotencyKey,
}

/// Messages an order entity accepts. Local-only: entities never cross nodes.
pub enum OrderMsg {
    /// Reads the order for its buyer or seller.
    Get { viewer: UserId, reply: Reply<Order> },
    /// Reads the order's timeline for its buyer or seller.
    Timeline { viewer: UserId, reply: Reply<OrderTimeline> },
    /// Tells which payment pays the order, if any (for a provider's notification, which names
    /// only the order).
    PaymentOf { reply: Reply<Option<PaymentId>> },
    /// Cancels an ORDERED order for its buyer or seller.
    Cancel { by: UserId, reply: Reply<Order> },
    /// Starts paying the order; replies with the payment.
    RequestPayment(RequestPayment, Reply<Payment>),
    /// Applies a payment's outcome (approved or declined) delivered by event `cause`.
    PaymentDecided { payment: Payment, cause: EventId, reply: Reply<()> },
    /// Applies a refund delivered by event `cause`.
    PaymentRefunded { payment: Payment, cause: EventId, reply: Reply<()> },
    /// Cancels the order if its reservation hold has ended while it is still ORDERED; replies
    /// whether it did.
    Expire { reply: Reply<bool> },
    /// Reads the stored order again: its checkout's payment moved it.
    Reread { reply: Reply<Order> },
}

/// Reads the order for its buyer or seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetOrder {
    pub viewer: UserId,
}
crate::request!(read GetOrder, OrderState, "order.get", Result<Order, OrderError>, |self, reply| OrderMsg::Get { viewer: self.viewer, reply });

/// Reads the order's timeline (its events and its payment's) for its buyer or seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetOrderTimeline {
    pub viewer: UserId,
}
crate::request!(read GetOrderTimeline, OrderState, "order.timeline", Result<OrderTimeline, OrderError>, |self, reply| OrderMsg::Timeline { viewer: self.viewer, reply });

/// Tells which payment pays the order, if any; unknown orders are `NotFound`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentOfOrder;
crate::request!(read PaymentOfOrder, OrderState, "order.payment_of", Result<Option<PaymentId>, OrderError>, |self, reply| OrderMsg::PaymentOf { reply });

/// Cancels an ORDERED order for its buyer or seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CancelOrder {
    pub by: UserId,
}
crate::request!(CancelOrder, OrderState, "order.cancel", Result<Order, OrderError>, |self, reply| OrderMsg::Cancel { by: self.by, reply });

crate::request!(RequestPayment, OrderState, "order.request_payment", Result<Payment, OrderError>, |self, reply| OrderMsg::RequestPayment(self, reply));

/// Applies a payment's outcome delivered by event `cause`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettlePayment {
    pub payment: Payment,
    pub cause: EventId,
}
crate::request!(SettlePayment, OrderState, "order.settle_payment", Result<(), OrderError>, |self, reply| OrderMsg::PaymentDecided { payment: self.payment, cause: self.cause, reply });

/// Applies a refund delivered by event `cause`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SettleRefund {
    pub payment: Payment,
    pub cause: EventId,
}
crate::request!(SettleRefund, OrderState, "order.settle_refund", Result<(), OrderError>, |self, reply| OrderMsg::PaymentRefunded { payment: self.payment, cause: self.cause, reply });

/// Cancels the order if its reservation hold has ended while it is still ORDERED (the hold
/// sweep's request, sent to whichever node owns the order); replies whether it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExpireOrder;
crate::request!(ExpireOrder, OrderState, "order.expire", Result<bool, OrderError>, |self, reply| OrderMsg::Expire { reply });

/// Reads the stored order again: the payment of its checkout moved it to PAYMENT_PENDING in the
/// transaction that made the payment (one transaction for all of a checkout's orders).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RereadOrder;
crate::request!(RereadOrder, OrderState, "order.reread", Result<Order, OrderError>, |self, reply| OrderMsg::Reread { reply });

crate::remote_requests!(OrderState: GetOrder, GetOrderTimeline, PaymentOfOrder, CancelOrder, RequestPayment, SettlePayment, SettleRefund, ExpireOrder, RereadOrder);

/// The `OrderCancelled` reason of an order whose reservation hold ended unpaid.
pub const RESERVATION_EXPIRED: &str = "reservation_expired";

/// The order entity's state.
pub struct OrderState {
    id: OrderId,
    order: Option<Order>,
    version: i64,
}

fn moved(order: &Order, next: OrderStatus, now: DateTime<Utc>) -> Order {
    debug_assert!(order.status.may_become(next), "{:?} -> {:?}", order.status, next);
    Order { status: next, updated_at: now, ..order.clone() }
}

/// The ORDERED `order` waiting for payment `payment_id`; `None` when it is not ORDERED (so not
/// payable). Paying an order, and paying the orders of a checkout together, both start here.
pub fn awaiting_payment(order: &Order, payment_id: &PaymentId, now: DateTime<Utc>) -> Option<Order> {
    if order.status != OrderStatus::Ordered {
        return None;
    }
    let mut pending = moved(order, OrderStatus::PaymentPending, now);
    pending.payment_id = Some(payment_id.clone());
    Some(pending)
}

/// `order`'s share of the payment that pays it: all of its amount, nothing given back yet.
pub fn share_of(order: &Order) -> PaymentShare {
    PaymentShare {
        order_id: order.id.clone(),
        seller_id: order.seller_id.clone(),
        amount: order.amount,
        refunded_amount: 0,
    }
}

impl OrderState {
    /// The order, if `viewer` is its buyer or seller.
    pub fn visible_to(&self, viewer: &UserId) -> Result<&Order, OrderError> {
        self.order
            .as_ref()
            .filter(|order| &order.buyer_id == viewer || &order.seller_id == viewer)
            .ok_or(OrderError::NotFound)
    }

    /// Decides a cancellation by `by`.
    pub fn cancel(&self, by: &UserId, now: DateTime<Utc>) -> Result<Order, OrderError> {
        let order = self.visible_to(by)?;
        if !order.status.may_become(OrderStatus::Cancelled) || order.status != OrderStatus::Ordered {
            return Err(OrderError::NotCancellable(order.id.clone(), order.status.as_str().to_owned()));
        }
        Ok(moved(order, OrderStatus::Cancelled, now))
    }

    /// Decides whether the reservation hold has ended at `now`: the cancelled order, or nothing
    /// while the hold lasts, for an order without a hold, and once a payment was requested (a
    /// payment in flight decides the order itself: approved it is PAID, declined or timed out it
    /// is cancelled and the stock released then).
    pub fn expire(&self, now: DateTime<Utc>) -> Option<Order> {
        let order = self.order.as_ref()?;
        let ended = order.expires_at.is_some_and(|at| at <= now);
        (order.status == OrderStatus::Ordered && ended).then(|| moved(order, OrderStatus::Cancelled, now))
    }

    /// Decides the start of a payment: the order waiting for it, and the payment requested.
    pub fn start_payment(
        &self,
        cmd: &RequestPayment,
        now: DateTime<Utc>,
    ) -> Result<(Order, PaymentRecord), OrderError> {
        let order = self.order.as_ref().filter(|order| order.buyer_id == cmd.buyer_id).ok_or(OrderError::NotFound)?;
        let pending = awaiting_payment(order, &cmd.payment_id, now)
            .ok_or_else(|| OrderError::NotPayable(order.id.clone(), order.status.as_str().to_owned()))?;
        let payment = PaymentRecord {
            payment: Payment {
                id: cmd.payment_id.clone(),
                order_id: Some(order.id.clone()),
                checkout_id: None,
                amount: order.amount,
                status: PaymentStatus::Requested,
                reason: None,
                refunded_amount: 0,
                orders: vec![share_of(order)],
            },
            buyer_id: order.buyer_id.clone(),
            seller_id: order.seller_id.clone(),
            currency: order.currency.clone(),
            token: cmd.token.clone(),
            version: 1,
        };
        Ok((pending, payment))
    }

    /// Decides what a payment outcome does to the order, or nothing when it no longer applies
    /// (a redelivered event, or a payment that is not this order's current one).
    pub fn settle(&self, payment: &Payment, now: DateTime<Utc>) -> Option<(Order, Event)> {
        let order = self.order.as_ref()?;
        if order.status != OrderStatus::PaymentPending || order.payment_id.as_ref() != Some(&payment.id) {
            return None;
        }
        match payment.status {
            PaymentStatus::Approved => {
                let paid = moved(order, OrderStatus::Paid, now);
                Some((paid.clone(), Event::OrderPaid { order: paid }))
            }
            PaymentStatus::Declined => {
                let cancelled = moved(order, OrderStatus::Cancelled, now);
                let reason = payment.reason.clone().unwrap_or_else(|| "payment_declined".into());
                Some((cancelled.clone(), Event::OrderCancelled { order: cancelled, reason }))
            }
            PaymentStatus::Requested | PaymentStatus::Refunded => None,
        }
    }

    /// Decides what a refund does to the order: PAID → REFUNDED; or, when the refund arrives
    /// before the approval it follows (a redelivery, two owners during a view change), PAYMENT_PENDING
    /// → PAID → REFUNDED, since a refunded payment was approved; nothing when it already did or
    /// the payment is not this order's. The changes come in the order they are to be written.
    pub fn refund(&self, payment: &Payment, now: DateTime<Utc>) -> Vec<(Order, Event)> {
        let Some(order) = self.order.as_ref() else { return Vec::new() };
        // A checkout's payment may be refunded seller by seller: the order is REFUNDED once its
        // own share is given back in full.
        if order.payment_id.as_ref() != Some(&payment.id) || !payment.refunded_in_full(&order.id) {
            return Vec::new();
        }
        match order.status {
            OrderStatus::Paid => {
                let refunded = moved(order, OrderStatus::Refunded, now);
                vec![(refunded.clone(), Event::OrderRefunded { order: refunded })]
            }
            OrderStatus::PaymentPending => {
                let paid = moved(order, OrderStatus::Paid, now);
                let refunded = moved(&paid, OrderStatus::Refunded, now);
                vec![
                    (paid.clone(), Event::OrderPaid { order: paid }),
                    (refunded.clone(), Event::OrderRefunded { order: refunded }),
                ]
            }
            OrderStatus::Ordered | OrderStatus::Cancelled | OrderStatus::Refunded => Vec::new(),
        }
    }

    async fn reload(&mut self, ctx: &Ctx) -> Result<(), StoreError> {
        *self = Self::load(self.id.as_str(), ctx).await?;
        Ok(())
    }

    /// Reads the order again if memory does not know `payment` as its payment: a checkout's
    /// payment moves the order in storage, not here, so an outcome or a refund of it may reach
    /// a copy read before.
    async fn read_if_unaware_of(&mut self, payment: &PaymentId, ctx: &Ctx) -> Result<(), StoreError> {
        let unaware = self.order.as_ref().is_none_or(|order| order.payment_id.as_ref() != Some(payment));
        if unaware {
            self.reload(ctx).await?;
        }
        Ok(())
    }

    async fn commit_change(
        &mut self,
        next: Order,
        event: Event,
        cause: Option<(&EventId, Lookup)>,
        ctx: &Ctx,
    ) -> Result<(), Attempt<OrderError>> {
        self.commit_changes(vec![(next, event)], cause, ctx).await
    }

    /// Writes `changes` in order, one version each, in one transaction; with a `cause`, once for it
    /// (looked up as its [`Lookup`] says).
    async fn commit_changes(
        &mut self,
        changes: Vec<(Order, Event)>,
        cause: Option<(&EventId, Lookup)>,
        ctx: &Ctx,
    ) -> Result<(), Attempt<OrderError>> {
        let mut tx = ctx.store.begin().await?;
        if let Some((cause, lookup)) = cause {
            // One event may settle several orders (a checkout's payment): done is per order.
            let key = format!("{cause}/{}", self.id);
            if !store::mark_processed(&mut tx, "order", &key, lookup).await? {
                return Ok(());
            }
        }
        let mut version = self.version;
        let mut last = None;
        for (next, event) in changes {
            orders::update(&mut tx, &next, version)?;
            version += 1;
            let envelope = Envelope::new(next.id.as_str(), version, next.updated_at, event);
            store::append_events(&mut tx, &[envelope])?;
            last = Some(next);
        }
        ctx.store.commit(tx).await?;
        if let Some(next) = last {
            self.order = Some(next);
            self.version = version;
        }
        Ok(())
    }

    async fn try_cancel(&mut self, by: &UserId, ctx: &Ctx) -> Result<Order, Attempt<OrderError>> {
        let next = self.cancel(by, Utc::now()).map_err(Attempt::Refused)?;
        let reason = if &next.buyer_id == by { "cancelled_by_buyer" } else { "cancelled_by_seller" };
        let event = Event::OrderCancelled { order: next.clone(), reason: reason.into() };
        self.commit_change(next.clone(), event, None, ctx).await?;
        Ok(next)
    }

    async fn try_expire(&mut self, ctx: &Ctx) -> Result<bool, Attempt<OrderError>> {
        let Some(next) = self.expire(Utc::now()) else { return Ok(false) };
        let event = Event::OrderCancelled { order: next.clone(), reason: RESERVATION_EXPIRED.into() };
        self.commit_change(next, event, None, ctx).await?;
        Ok(true)
    }

    async fn try_request_payment(
        &mut self,
        cmd: &RequestPayment,
        lookup: Lookup,
        ctx: &Ctx,
    ) -> Result<Payment, Attempt<OrderError>> {
        let now = Utc::now();
        let decided = self.start_payment(cmd, now);
        let mut tx = ctx.store.begin().await?;
        let key = &cmd.idempotency;
        match idempotency::check(&mut tx, key, idempotency::lookup_after(lookup, &decided)).await? {
            Earlier::Nothing => {}
            Earlier::Mismatch => return Err(Attempt::Refused(OrderError::IdempotencyMismatch)),
            Earlier::Done(payment_id) => {
                let record = payments::load_in(&mut tx, &payment_id)
                    .await?
                    .ok_or_else(|| Attempt::Store(StoreError::Corrupt("idempotency record without payment".into())))?;
                return Ok(record.payment);
            }
        }
        let (pending, payment) = decided.map_err(Attempt::Refused)?;
        orders::update(&mut tx, &pending, self.version)?;
        payments::insert(&mut tx, &payment, now)?;
        idempotency::record(&mut tx, key, payment.payment.id.as_str(), now)?;
        let requested = Envelope::new(
            payment.payment.id.as_str(),
            1,
            now,
            Event::PaymentRequested {
                payment: payment.payment.clone(),
                order: pending.clone(),
                more_orders: Vec::new(),
            },
        );
        store::append_events(&mut tx, &[requested])?;
        ctx.store.commit(tx).await?;
        self.order = Some(pending);
        self.version += 1;
        Ok(payment.payment)
    }

    async fn try_settle(
        &mut self,
        payment: &Payment,
        cause: &EventId,
        lookup: Lookup,
        ctx: &Ctx,
    ) -> Result<(), Attempt<OrderError>> {
        match self.settle(payment, Utc::now()) {
            Some((next, event)) => self.commit_change(next, event, Some((cause, lookup)), ctx).await,
            None => Ok(()),
        }
    }

    async fn try_refund(
        &mut self,
        payment: &Payment,
        cause: &EventId,
        lookup: Lookup,
        ctx: &Ctx,
    ) -> Result<(), Attempt<OrderError>> {
        let changes = self.refund(payment, Utc::now());
        if changes.is_empty() {
            return Ok(());
        }
        self.commit_changes(changes, Some((cause, lookup)), ctx).await
    }
}

impl Entity for OrderState {
    const KIND: &'static str = "order";
    type Msg = OrderMsg;

    async fn load(id: &str, ctx: &Ctx) -> Result<Self, StoreError> {
        let found = orders::load(&ctx.store, id).await?;
        let version = found.as_ref().map_or(0, |(_, v)| *v);
        Ok(Self { id: id.into(), order: found.map(|(o, _)| o), version })
    }

    async fn handle(&mut self, msg: OrderMsg, ctx: &Ctx, _myself: &EntityRef<Self>) {
        match msg {
            OrderMsg::Get { viewer, reply } => {
                let _ = reply.send(self.visible_to(&viewer).cloned());
            }
            OrderMsg::Timeline { viewer, reply } => match self.visible_to(&viewer) {
                Err(refused) => {
                    let _ = reply.send(Err(refused));
                }
                Ok(order) => {
                    // The read is a few indexed rows but still a round trip: off the mailbox, so
                    // commands to the order never wait behind it.
                    let (store, order, max) =
                        (ctx.store.clone(), order.clone(), ctx.settings.order_timeline_max_events);
                    tokio::spawn(async move {
                        let read = crate::order_timeline::read(&store, &order, max).await;
                        let _ = reply.send(read.map_err(|error| {
                            warn!(order_id = %order.id, %error, "order timeline unreadable");
                            OrderError::Unavailable
                        }));
                    });
                }
            },
            OrderMsg::PaymentOf { reply } => {
                let _ = reply.send(self.order.as_ref().map(|o| o.payment_id.clone()).ok_or(OrderError::NotFound));
            }
            OrderMsg::Cancel { by, reply } => {
                let _ = reply.send(with_retries!(self, ctx, OrderError::Unavailable, self.try_cancel(&by, ctx)));
            }
            OrderMsg::RequestPayment(cmd, reply) => {
                let _ = reply.send(with_retries!(self, ctx, OrderError::Unavailable, |lookup| self
                    .try_request_payment(&cmd, lookup, ctx)));
            }
            OrderMsg::PaymentDecided { payment, cause, reply } => {
                if self.read_if_unaware_of(&payment.id, ctx).await.is_err() {
                    let _ = reply.send(Err(OrderError::Unavailable));
                    return;
                }
                if self.order.is_none() {
                    warn!(order_id = %self.id, payment_id = %payment.id, "payment outcome for an unknown order");
                }
                let _ = reply.send(with_retries!(self, ctx, OrderError::Unavailable, |lookup| self
                    .try_settle(&payment, &cause, lookup, ctx)));
            }
            OrderMsg::PaymentRefunded { payment, cause, reply } => {
                if self.read_if_unaware_of(&payment.id, ctx).await.is_err() {
                    let _ = reply.send(Err(OrderError::Unavailable));
                    return;
                }
                let _ = reply.send(with_retries!(self, ctx, OrderError::Unavailable, |lookup| self
                    .try_refund(&payment, &cause, lookup, ctx)));
            }
            OrderMsg::Expire { reply } => {
                let _ = reply.send(with_retries!(self, ctx, OrderError::Unavailable, self.try_expire(ctx)));
            }
            OrderMsg::Reread { reply } => {
                let outcome = match self.reload(ctx).await {
                    Ok(()) => self.order.clone().ok_or(OrderError::NotFound),
                    Err(_) => Err(OrderError::Unavailable),
                };
                let _ = reply.send(outcome);
            }
        }
    }

    fn exists(&self) -> bool {
        self.order.is_some()
    }

    fn refuse(msg: OrderMsg) {
        match msg {
            OrderMsg::Get { reply, .. } | OrderMsg::Cancel { reply, .. } => {
                let _ = reply.send(Err(OrderError::Unavailable));
            }
            OrderMsg::RequestPayment(_, reply) => {
                let _ = reply.send(Err(OrderError::Unavailable));
            }
            OrderMsg::PaymentDecided { reply, .. } | OrderMsg::PaymentRefunded { reply, .. } => {
                let _ = reply.send(Err(OrderError::Unavailable));
            }
            OrderMsg::Expire { reply } => {
                let _ = reply.send(Err(OrderError::Unavailable));
            }
            OrderMsg::Reread { reply } => {
                let _ = reply.send(Err(OrderError::Unavailable));
            }
            OrderMsg::PaymentOf { reply } => {
                let _ = reply.send(Err(OrderError::Unavailable));
            }
            OrderMsg::Timeline { reply, .. } => {
                let _ = reply.send(Err(OrderError::Unavailable));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(status: OrderStatus) -> OrderState {
        let now = Utc::now();
        OrderState {
            id: "o1".into(),
            version: 1,
            order: Some(Order {
                id: "o1".into(),
                buyer_id: "buyer".into(),
                seller_id: "seller".into(),
                product_id: "p1".into(),
                quantity: 2,
                amount: 200,
                currency: "KRW".into(),
                status,
                created_at: now,
                updated_at: now,
                expires_at: Some(now + chrono::Duration::minutes(15)),
                payment_id: Some("pay1".into()),
                lines: Vec::new(),
                checkout_id: None,
            }),
        }
    }

    fn payment(status: PaymentStatus) -> Payment {
        let refunded_amount = if status == PaymentStatus::Refunded { 200 } else { 0 };
        Payment {
            id: "pay1".into(),
            order_id: Some("o1".into()),
            checkout_id: None,
            amount: 200,
            status,
            reason: None,
            refunded_amount,
            orders: vec![PaymentShare {
                order_id: "o1".into(),
                seller_id: "seller".into(),
                amount: 200,
                refunded_amount,
            }],
        }
    }

    fn request(buyer: &str) -> RequestPayment {
        RequestPayment {
            payment_id: "pay2".into(),
            buyer_id: buyer.into(),
            token: "tok_ok".into(),
            idempotency: IdempotencyKey { user_id: buyer.into(), key: "k".into(), request_hash: "h".into() },
        }
    }

    #[test]
    fn only_an_ordered_order_can_be_cancelled() {
        for status in OrderStatus::ALL {
            let result = order(status).cancel(&"buyer".into(), Utc::now());
            assert_eq!(result.is_ok(), status == OrderStatus::Ordered, "{status:?}");
        }
    }

    #[test]
    fn strangers_cannot_see_or_cancel_an_order() {
        let state = order(OrderStatus::Ordered);
        assert_eq!(state.visible_to(&"stranger".into()), Err(OrderError::NotFound));
        assert_eq!(state.cancel(&"stranger".into(), Utc::now()), Err(OrderError::NotFound));
        assert!(state.visible_to(&"seller".into()).is_ok());
    }

    #[test]
    fn only_the_buyer_may_pay_and_only_once() {
        let state = order(OrderStatus::Ordered);
        assert_eq!(state.start_payment(&request("seller"), Utc::now()).unwrap_err(), OrderError::NotFound);
        let (pending, payment) = state.start_payment(&request("buyer"), Utc::now()).unwrap();
        assert_eq!(pending.status, OrderStatus::PaymentPending);
        assert_eq!(payment.payment.amount, 200);
        let paying = order(OrderStatus::PaymentPending);
        assert!(matches!(paying.start_payment(&request("buyer"), Utc::now()), Err(OrderError::NotPayable(..))));
    }

    #[test]
    fn a_payment_outcome_settles_a_pending_order_once() {
        let state = order(OrderStatus::PaymentPending);
        let (paid, _) = state.settle(&payment(PaymentStatus::Approved), Utc::now()).unwrap();
        assert_eq!(paid.status, OrderStatus::Paid);
        let (cancelled, event) = state.settle(&payment(PaymentStatus::Declined), Utc::now()).unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert!(matches!(event, Event::OrderCancelled { .. }));
        assert!(order(OrderStatus::Paid).settle(&payment(PaymentStatus::Approved), Utc::now()).is_none());
    }

    #[test]
    fn only_an_ordered_order_whose_hold_ended_expires() {
        let now = Utc::now();
        let later = now + chrono::Duration::minutes(16);
        for status in OrderStatus::ALL {
            let state = order(status);
            assert!(state.expire(now).is_none(), "{status:?} within its hold");
            let expired = state.expire(later);
            assert_eq!(expired.is_some(), status == OrderStatus::Ordered, "{status:?} after its hold");
        }
        let expired = order(OrderStatus::Ordered).expire(later).unwrap();
        assert_eq!((expired.status, expired.updated_at), (OrderStatus::Cancelled, later));
        let mut without_hold = order(OrderStatus::Ordered);
        without_hold.order.as_mut().unwrap().expires_at = None;
        assert!(without_hold.expire(later).is_none(), "an order from before holds keeps its stock");
    }

    #[test]
    fn a_refund_moves_a_paid_order_to_refunded() {
        let changes = order(OrderStatus::Paid).refund(&payment(PaymentStatus::Refunded), Utc::now());
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].0.status, OrderStatus::Refunded);
        assert!(matches!(changes[0].1, Event::OrderRefunded { .. }));
    }

    #[test]
    fn a_refund_before_its_settlement_pays_then_refunds_the_order() {
        // SettleRefund first: the order is still waiting for the approval it never saw.
        let state = order(OrderStatus::PaymentPending);
        let changes = state.refund(&payment(PaymentStatus::Refunded), Utc::now());
        let statuses: Vec<_> = changes.iter().map(|(o, _)| o.status).collect();
        assert_eq!(statuses, [OrderStatus::Paid, OrderStatus::Refunded]);
        assert!(matches!(changes[0].1, Event::OrderPaid { .. }));
        assert!(matches!(changes[1].1, Event::OrderRefunded { .. }));
        // Then the late SettlePayment: the order is past it and stays REFUNDED.
        let after = OrderState { order: Some(changes[1].0.clone()), ..order(OrderStatus::Refunded) };
        assert!(after.settle(&payment(PaymentStatus::Approved), Utc::now()).is_none());
        assert_eq!(after.order.as_ref().map(|o| o.status), Some(OrderStatus::Refunded));
    }

    #[test]
    fn a_refund_never_touches_an_order_it_does_not_concern() {
        for status in [OrderStatus::Ordered, OrderStatus::Cancelled, OrderStatus::Refunded] {
            assert!(order(status).refund(&payment(PaymentStatus::Refunded), Utc::now()).is_empty(), "{status:?}");
        }
        let other = Payment { id: "pay9".into(), ..payment(PaymentStatus::Refunded) };
        assert!(order(OrderStatus::Paid).refund(&other, Utc::now()).is_empty());
        // Only a refunded payment refunds.
        assert!(order(OrderStatus::Paid).refund(&payment(PaymentStatus::Approved), Utc::now()).is_empty());
    }
}
