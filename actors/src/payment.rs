//! The payment entity: asks the gateway (without blocking its mailbox, so reads stay fast while a
//! slow gateway thinks), records the outcome, and refunds.
//!
//! A refund is decided and committed first (REFUNDED, event `PaymentRefunded`), with retries on
//! version conflicts that never touch the gateway; the saga then follows the event and asks the
//! gateway to give the money back ([`RefundAtGateway`]), once per event (processed-events table),
//! as charges follow `PaymentRequested`. A crash between the two steps redelivers the event, so
//! the money still goes back; only a crash between the gateway's answer and the mark asks the
//! gateway twice, which a gateway idempotent by payment id absorbs.

use crate::attempt::Attempt;
use crate::entity::{Ctx, Entity, EntityRef};
use crate::payment_gateway::{ChargeRequest, GatewayError, RefundRequest};
use crate::store::{self, payments, payments::PaymentRecord, StoreError};
use crate::with_retries;
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::payments::{Payment, PaymentStatus};
use bazaar_protocol::{EventId, PaymentId, UserId};
use chrono::Utc;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

/// Why a payment command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum PaymentError {
    /// Unknown, or not the caller's: existence is not revealed.
    #[error("payment not found")]
    NotFound,
    #[error("only the order's seller may refund it")]
    Forbidden,
    #[error("payment {0} is {1}")]
    NotRefundable(PaymentId, String),
    #[error("payment service unavailable")]
    Unavailable,
}

type Reply<T> = RpcReplyPort<Result<T, PaymentError>>;

/// What came back from asking the gateway.
#[derive(Debug, Clone)]
pub enum GatewayAnswer {
    /// The money moved.
    Approved,
    /// The card was refused, with the reason to show.
    Declined(String),
    /// It did not answer in time: the payment is declined with `gateway_timeout`.
    TimedOut,
    /// It could not be asked, or could not yet tell what happened: the payment stays REQUESTED
    /// and the saga asks again (with the same idempotency key).
    Failed,
}

/// Messages a payment entity accepts. Local-only: entities never cross nodes.
pub enum PaymentMsg {
    /// Reads the payment for the order's buyer or seller.
    Get { viewer: UserId, reply: Reply<Payment> },
    /// Charges a REQUESTED payment (delivered by event `cause`); replies once it is decided.
    Charge { cause: EventId, reply: Reply<()> },
    /// The gateway's answer to the charge in flight.
    Answered(GatewayAnswer),
    /// Refunds an APPROVED payment for the order's seller (commits the decision only).
    Refund { by: UserId, reply: Reply<Payment> },
    /// Gives a REFUNDED payment's money back at the gateway (delivered by event `cause`).
    GatewayRefund { cause: EventId, reply: Reply<()> },
}

/// Reads the payment for the order's buyer or seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetPayment {
    pub viewer: UserId,
}
crate::request!(read GetPayment, PaymentState, "payment.get", Result<Payment, PaymentError>, |self, reply| PaymentMsg::Get { viewer: self.viewer, reply });

/// Charges a REQUESTED payment (delivered by event `cause`); answered once it is decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChargePayment {
    pub cause: EventId,
}
crate::request!(ChargePayment, PaymentState, "payment.charge", Result<(), PaymentError>, |self, reply| PaymentMsg::Charge { cause: self.cause, reply });

/// Refunds an APPROVED payment for the order's seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    pub by: UserId,
}
crate::request!(RefundPayment, PaymentState, "payment.refund", Result<Payment, PaymentError>, |self, reply| PaymentMsg::Refund { by: self.by, reply });

/// Gives a REFUNDED payment's money back at the gateway, once per event `cause`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundAtGateway {
    pub cause: EventId,
}
crate::request!(RefundAtGateway, PaymentState, "payment.refund_at_gateway", Result<(), PaymentError>, |self, reply| PaymentMsg::GatewayRefund { cause: self.cause, reply });

crate::remote_requests!(PaymentState: GetPayment, ChargePayment, RefundPayment, RefundAtGateway);

/// The consumer name under which gateway refunds are marked done, per event.
const GATEWAY_REFUNDS: &str = "payment.refund_at_gateway";

/// The payment entity's state.
pub struct PaymentState {
    id: PaymentId,
    record: Option<PaymentRecord>,
    /// Saga deliveries waiting for the charge in flight; non-empty means a charge is in flight.
    waiting: Vec<Reply<()>>,
}

impl PaymentState {
    /// The payment, if `viewer` is the order's buyer or seller.
    pub fn visible_to(&self, viewer: &UserId) -> Result<&Payment, PaymentError> {
        match &self.record {
            Some(r) if &r.buyer_id == viewer || &r.seller_id == viewer => Ok(&r.payment),
            _ => Err(PaymentError::NotFound),
        }
    }

    /// Decides the payment after the gateway's answer; `None` when it stays as it is.
    pub fn decide(&self, answer: &GatewayAnswer) -> Option<(Payment, Event)> {
        let current = &self.record.as_ref()?.payment;
        if current.status != PaymentStatus::Requested {
            return None;
        }
        let (status, reason) = match answer {
            GatewayAnswer::Approved => (PaymentStatus::Approved, None),
            GatewayAnswer::Declined(reason) => (PaymentStatus::Declined, Some(reason.clone())),
            GatewayAnswer::TimedOut => (PaymentStatus::Declined, Some("gateway_timeout".to_owned())),
            GatewayAnswer::Failed => return None,
        };
        let next = Payment { status, reason, ..current.clone() };
        let event = match status {
            PaymentStatus::Approved => Event::PaymentApproved { payment: next.clone() },
            _ => Event::PaymentDeclined { payment: next.clone() },
        };
        Some((next, event))
    }

    /// Decides a refund by `by`.
    pub fn refund(&self, by: &UserId) -> Result<Payment, PaymentError> {
        let record = self.record.as_ref().ok_or(PaymentError::NotFound)?;
        if by == &record.buyer_id {
            return Err(PaymentError::Forbidden);
        }
        if by != &record.seller_id {
            return Err(PaymentError::NotFound);
        }
        let current = &record.payment;
        if !current.status.may_become(PaymentStatus::Refunded) {
            return Err(PaymentError::NotRefundable(current.id.clone(), current.status.as_str().to_owned()));
        }
        Ok(Payment { status: PaymentStatus::Refunded, ..current.clone() })
    }

    async fn reload(&mut self, ctx: &Ctx) -> Result<(), StoreError> {
        self.record = payments::load(&ctx.store, self.id.as_str()).await?;
        Ok(())
    }

    async fn commit_change(&mut self, next: Payment, event: Event, ctx: &Ctx) -> Result<(), Attempt<PaymentError>> {
        let record = self.record.as_ref().ok_or(Attempt::Refused(PaymentError::NotFound))?;
        let now = Utc::now();
        let mut tx = ctx.store.begin().await?;
        payments::update(&mut tx, &next, record.version, now).await?;
        store::append_events(&mut tx, &[Envelope::new(next.id.as_str(), record.version + 1, now, event)]).await?;
        ctx.store.commit(tx).await?;
        if let Some(record) = self.record.as_mut() {
            record.payment = next;
            record.version += 1;
        }
        Ok(())
    }

    async fn try_decide(&mut self, answer: &GatewayAnswer, ctx: &Ctx) -> Result<(), Attempt<PaymentError>> {
        match self.decide(answer) {
            Some((next, event)) => self.commit_change(next, event, ctx).await,
            None => Ok(()),
        }
    }

    /// Commits the refund decision. The gateway is not asked here: this runs again after a
    /// version conflict, and the saga's step that follows `PaymentRefunded` asks it, once.
    async fn try_refund(&mut self, by: &UserId, ctx: &Ctx) -> Result<Payment, Attempt<PaymentError>> {
        let next = self.refund(by).map_err(Attempt::Refused)?;
        self.commit_change(next.clone(), Event::PaymentRefunded { payment: next.clone() }, ctx).await?;
        Ok(next)
    }

    /// Refunds for the seller, deciding again after lost races.
    async fn refund_command(&mut self, by: &UserId, ctx: &Ctx) -> Result<Payment, PaymentError> {
        with_retries!(self, ctx, PaymentError::Unavailable, self.try_refund(by, ctx))
    }

    /// Asks the gateway to give the money back for the refund event `cause`, unless that event
    /// was already followed; marks it followed once the gateway answered.
    async fn refund_at_gateway(&self, cause: &EventId, ctx: &Ctx) -> Result<(), PaymentError> {
        let storage = |e: StoreError| {
            warn!(payment_id = %self.id, reason = %e, "storage failed");
            PaymentError::Unavailable
        };
        match self.record.as_ref().map(|r| r.payment.status) {
            Some(PaymentStatus::Refunded) => {}
            None | Some(PaymentStatus::Requested | PaymentStatus::Approved | PaymentStatus::Declined) => {
                // The event is only ever appended with the REFUNDED row, so this is a stale
                // read; try again after a reload rather than refund an unrefunded payment.
                return Err(PaymentError::Unavailable);
            }
        }
        if store::is_processed(&ctx.store, GATEWAY_REFUNDS, cause.as_str()).await.map_err(storage)? {
            return Ok(());
        }
        let Some(record) = &self.record else { return Err(PaymentError::Unavailable) };
        // One key per refund event: a redelivered event repeats the request, never the refund.
        let idempotency_key = format!("refund-{cause}");
        let request = RefundRequest {
            payment_id: self.id.as_str(),
            order_id: record.payment.order_id.as_str(),
            amount: None,
            reason: "refunded by the seller",
            idempotency_key: &idempotency_key,
        };
        if let Err(e) = ctx.gateway.refund(request).await {
            warn!(payment_id = %self.id, reason = %e, "gateway refund failed");
            return Err(PaymentError::Unavailable);
        }
        let mut tx = ctx.store.begin().await.map_err(storage)?;
        store::mark_processed(&mut tx, GATEWAY_REFUNDS, cause.as_str()).await.map_err(storage)?;
        ctx.store.commit(tx).await.map_err(storage)?;
        info!(payment_id = %self.id, "payment refunded at the gateway");
        Ok(())
    }

    fn start_charge(&mut self, ctx: &Ctx, myself: &EntityRef<Self>) {
        let Some(record) = &self.record else { return };
        let gateway = ctx.gateway.clone();
        let timeout = ctx.settings.gateway_timeout;
        let record = record.clone();
        let myself = myself.clone();
        // The gateway may take seconds (or never answer): ask it off the actor, so the payment
        // keeps answering reads, and come back with a message.
        tokio::spawn(async move {
            let id = &record.payment.id;
            // The same key for every attempt of this payment's charge, on any node, after any
            // restart: the gateway charges it once.
            let idempotency_key = format!("charge-{id}");
            let request = ChargeRequest {
                payment_id: id.as_str(),
                order_id: record.payment.order_id.as_str(),
                customer: record.buyer_id.as_str(),
                token: &record.token,
                amount: record.payment.amount,
                currency: &record.currency,
                idempotency_key: &idempotency_key,
            };
            let answer = match tokio::time::timeout(timeout, gateway.charge(request)).await {
                Ok(Ok(charged)) => {
                    info!(payment_id = %id, reference = %charged.reference, "gateway approved the charge");
                    GatewayAnswer::Approved
                }
                Ok(Err(GatewayError::Declined(reason))) => GatewayAnswer::Declined(reason),
                Ok(Err(e @ (GatewayError::Unavailable(_) | GatewayError::UnknownOutcome(_)))) => {
                    warn!(payment_id = %id, reason = %e, "gateway charge undecided; the saga asks again");
                    GatewayAnswer::Failed
                }
                Err(_) => GatewayAnswer::TimedOut,
            };
            myself.send(PaymentMsg::Answered(answer));
        });
    }
}

impl Entity for PaymentState {
    const KIND: &'static str = "payment";
    type Msg = PaymentMsg;

    async fn load(id: &str, ctx: &Ctx) -> Result<Self, StoreError> {
        Ok(Self { id: id.into(), record: payments::load(&ctx.store, id).await?, waiting: Vec::new() })
    }

    async fn handle(&mut self, msg: PaymentMsg, ctx: &Ctx, myself: &EntityRef<Self>) {
        match msg {
            PaymentMsg::Get { viewer, reply } => {
                let _ = reply.send(self.visible_to(&viewer).cloned());
            }
            PaymentMsg::Charge { cause: _, reply } => match &self.record {
                None => {
                    warn!(payment_id = %self.id, "charge for an unknown payment");
                    let _ = reply.send(Ok(()));
                }
                Some(record) if record.payment.status != PaymentStatus::Requested => {
                    let _ = reply.send(Ok(()));
                }
                Some(_) => {
                    if self.waiting.is_empty() {
                        self.start_charge(ctx, myself);
                    }
                    self.waiting.push(reply);
                }
            },
            PaymentMsg::Answered(answer) => {
                let outcome = if matches!(answer, GatewayAnswer::Failed) {
                    Err(PaymentError::Unavailable)
                } else {
                    with_retries!(self, ctx, PaymentError::Unavailable, self.try_decide(&answer, ctx))
                };
                if let Some(record) = &self.record {
                    info!(payment_id = %self.id, status = record.payment.status.as_str(), "payment decided");
                }
                for reply in self.waiting.drain(..) {
                    let _ = reply.send(outcome.clone());
                }
            }
            PaymentMsg::Refund { by, reply } => {
                let _ = reply.send(self.refund_command(&by, ctx).await);
            }
            PaymentMsg::GatewayRefund { cause, reply } => {
                let refunded = self.record.as_ref().is_some_and(|r| r.payment.status == PaymentStatus::Refunded);
                // The refund may have been committed by this entity's twin on another node during
                // a view change: read the row again before deciding it is not refunded.
                let outcome = match refunded {
                    false if self.reload(ctx).await.is_err() => Err(PaymentError::Unavailable),
                    _ => self.refund_at_gateway(&cause, ctx).await,
                };
                let _ = reply.send(outcome);
            }
        }
    }

    fn exists(&self) -> bool {
        self.record.is_some()
    }

    fn refuse(msg: PaymentMsg) {
        match msg {
            PaymentMsg::Get { reply, .. } | PaymentMsg::Refund { reply, .. } => {
                let _ = reply.send(Err(PaymentError::Unavailable));
            }
            PaymentMsg::Charge { reply, .. } | PaymentMsg::GatewayRefund { reply, .. } => {
                let _ = reply.send(Err(PaymentError::Unavailable));
            }
            PaymentMsg::Answered(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::test_support::ctx as test_ctx;
    use crate::entity::RegionRef;
    use std::time::Duration;

    fn state(status: PaymentStatus) -> PaymentState {
        PaymentState {
            id: "pay1".into(),
            waiting: Vec::new(),
            record: Some(PaymentRecord {
                payment: Payment { id: "pay1".into(), order_id: "o1".into(), amount: 10, status, reason: None },
                buyer_id: "buyer".into(),
                seller_id: "seller".into(),
                currency: "KRW".into(),
                token: "tok_ok".into(),
                version: 1,
            }),
        }
    }

    #[test]
    fn a_timeout_declines_with_gateway_timeout() {
        let (next, event) = state(PaymentStatus::Requested).decide(&GatewayAnswer::TimedOut).unwrap();
        assert_eq!(next.status, PaymentStatus::Declined);
        assert_eq!(next.reason.as_deref(), Some("gateway_timeout"));
        assert!(matches!(event, Event::PaymentDeclined { .. }));
    }

    #[test]
    fn a_decided_payment_is_never_decided_again() {
        for status in [PaymentStatus::Approved, PaymentStatus::Declined, PaymentStatus::Refunded] {
            let answer = GatewayAnswer::Approved;
            assert!(state(status).decide(&answer).is_none());
        }
        assert!(state(PaymentStatus::Requested).decide(&GatewayAnswer::Failed).is_none());
    }

    #[test]
    fn only_the_seller_refunds_and_only_an_approved_payment() {
        assert_eq!(state(PaymentStatus::Approved).refund(&"buyer".into()), Err(PaymentError::Forbidden));
        assert_eq!(state(PaymentStatus::Approved).refund(&"stranger".into()), Err(PaymentError::NotFound));
        assert_eq!(state(PaymentStatus::Approved).refund(&"seller".into()).unwrap().status, PaymentStatus::Refunded);
        assert!(matches!(
            state(PaymentStatus::Declined).refund(&"seller".into()),
            Err(PaymentError::NotRefundable(..))
        ));
    }

    #[tokio::test]
    async fn a_refund_that_loses_a_race_asks_the_gateway_once() {
        let (ctx, _db) = test_ctx(Duration::from_secs(60)).await;
        let store = ctx.store.clone();
        let now = Utc::now();
        let mut entity = state(PaymentStatus::Approved);
        let record = entity.record.clone().unwrap();
        let mut tx = store.begin().await.unwrap();
        payments::insert(&mut tx, &record, now).await.unwrap();
        store.commit(tx).await.unwrap();
        payments::record_charge(&store, "pay1", 10, "approved", now).await.unwrap();
        // Another writer moves the row on under the entity's feet: its first commit conflicts.
        let mut tx = store.begin().await.unwrap();
        payments::update(&mut tx, &record.payment, 1, now).await.unwrap();
        store.commit(tx).await.unwrap();

        let refunded = entity.refund_command(&"seller".into(), &ctx).await.unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        let stored = payments::load(&store, "pay1").await.unwrap().unwrap();
        assert_eq!((stored.payment.status, stored.version), (PaymentStatus::Refunded, 3));
        // The decision is committed; deciding it again after the conflict asked the gateway nothing.
        assert_eq!(payments::refund_requests(&store, "pay1").await.unwrap(), 0);

        // The saga follows the event, and after a crash delivers it again: one request.
        let region = RegionRef::<PaymentState>::spawn(ctx).await.unwrap();
        let cause = EventId::generate();
        for _ in 0..2 {
            region.ask("pay1", RefundAtGateway { cause: cause.clone() }).await.unwrap().unwrap();
        }
        assert_eq!(payments::refund_requests(&store, "pay1").await.unwrap(), 1);
        // A second refund is refused without a word to the gateway.
        assert!(matches!(
            region.ask("pay1", RefundPayment { by: "seller".into() }).await.unwrap(),
            Err(PaymentError::NotRefundable(..))
        ));
        assert_eq!(payments::refund_requests(&store, "pay1").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_gateway_is_never_asked_to_refund_a_payment_that_is_not_refunded() {
        let (ctx, _db) = test_ctx(Duration::from_secs(60)).await;
        let store = ctx.store.clone();
        let record = state(PaymentStatus::Approved).record.unwrap();
        let mut tx = store.begin().await.unwrap();
        payments::insert(&mut tx, &record, Utc::now()).await.unwrap();
        store.commit(tx).await.unwrap();
        payments::record_charge(&store, "pay1", 10, "approved", Utc::now()).await.unwrap();
        let region = RegionRef::<PaymentState>::spawn(ctx).await.unwrap();
        let answer = region.ask("pay1", RefundAtGateway { cause: EventId::generate() }).await.unwrap();
        assert_eq!(answer, Err(PaymentError::Unavailable));
        assert_eq!(payments::refund_requests(&store, "pay1").await.unwrap(), 0);
    }
}
