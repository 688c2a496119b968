//! The payment entity: asks the gateway (without blocking its mailbox, so reads stay fast while a
//! slow gateway thinks), records the outcome, and refunds.

use crate::attempt::Attempt;
use crate::entity::{Ctx, Entity, EntityMsg, EntityRef};
use crate::payment_gateway::ChargeOutcome;
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
    /// It decided.
    Decided(ChargeOutcome),
    /// It did not answer in time: the payment is declined with `gateway_timeout`.
    TimedOut,
    /// It could not be asked; try again later.
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
    /// Refunds an APPROVED payment for the order's seller.
    Refund { by: UserId, reply: Reply<Payment> },
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

crate::remote_requests!(PaymentState: GetPayment, ChargePayment, RefundPayment);

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
            GatewayAnswer::Decided(ChargeOutcome::Approved) => (PaymentStatus::Approved, None),
            GatewayAnswer::Decided(ChargeOutcome::Declined(reason)) => (PaymentStatus::Declined, Some(reason.clone())),
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

    async fn try_refund(&mut self, by: &UserId, ctx: &Ctx) -> Result<Payment, Attempt<PaymentError>> {
        let next = self.refund(by).map_err(Attempt::Refused)?;
        if let Err(e) = ctx.gateway.refund(self.id.as_str()).await {
            warn!(payment_id = %self.id, reason = %e, "gateway refund failed");
            return Err(Attempt::Refused(PaymentError::Unavailable));
        }
        self.commit_change(next.clone(), Event::PaymentRefunded { payment: next.clone() }, ctx).await?;
        Ok(next)
    }

    fn start_charge(&mut self, ctx: &Ctx, myself: &EntityRef<Self>) {
        let Some(record) = &self.record else { return };
        let gateway = ctx.gateway.clone();
        let timeout = ctx.settings.gateway_timeout;
        let (id, token, amount) = (record.payment.id.clone(), record.token.clone(), record.payment.amount);
        let myself = myself.clone();
        // The gateway may take seconds (or never answer): ask it off the actor, so the payment
        // keeps answering reads, and come back with a message.
        tokio::spawn(async move {
            let answer = match tokio::time::timeout(timeout, gateway.charge(id.as_str(), &token, amount)).await {
                Ok(Ok(outcome)) => GatewayAnswer::Decided(outcome),
                Ok(Err(e)) => {
                    warn!(payment_id = %id, reason = %e, "gateway charge failed");
                    GatewayAnswer::Failed
                }
                Err(_) => GatewayAnswer::TimedOut,
            };
            let _ = myself.send_message(EntityMsg::Command(PaymentMsg::Answered(answer)));
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
                let _ = reply.send(with_retries!(self, ctx, PaymentError::Unavailable, self.try_refund(&by, ctx)));
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
            PaymentMsg::Charge { reply, .. } => {
                let _ = reply.send(Err(PaymentError::Unavailable));
            }
            PaymentMsg::Answered(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let answer = GatewayAnswer::Decided(ChargeOutcome::Approved);
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
}
