//! The payment entity: asks the gateway (without blocking its mailbox, so reads stay fast while a
//! slow gateway thinks), records the outcome, refunds (in part or in full), and reconciles with
//! what the gateway recorded when a provider's notification says something changed.
//!
//! A charge the payment stopped waiting for (`gateway_timeout`) is not declined blindly: the
//! gateway is asked what it recorded ([`PaymentGateway::settle_abandoned`]), and when it cannot
//! tell the payment stays REQUESTED and the saga asks again with the same idempotency key.
//!
//! A refund is decided and committed first (`refundedAmount` grows; REFUNDED once it reaches the
//! amount; event `PaymentRefunded` with this refund's amount), with retries on version conflicts
//! that never touch the gateway; the saga then follows the event and asks the gateway to give
//! that amount back ([`RefundAtGateway`]), once per event (processed-events table), as charges
//! follow `PaymentRequested`. A crash between the two steps redelivers the event, so the money
//! still goes back; only a crash between the gateway's answer and the mark asks the gateway
//! twice, under the same idempotency key (one per event), which the gateway answers without
//! refunding again. A refund found at the gateway by reconciliation is committed with its event
//! already marked done, so the saga never asks the gateway to give it back a second time.
//!
//! [`PaymentGateway::settle_abandoned`]: crate::payment_gateway::PaymentGateway::settle_abandoned

use crate::attempt::Attempt;
use crate::entity::{Ctx, Entity, EntityRef};
use crate::idempotency::{self, Earlier, IdempotencyKey};
use crate::payment_gateway::{
    judge, ChargeRecord, ChargeRequest, ChargeState, Charged, GatewayError, LookupRequest, RefundRequest,
};
use crate::store::{self, payments, payments::PaymentRecord, Lookup, StoreError};
use crate::with_retries;
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::payments::{Payment, PaymentStatus};
use bazaar_protocol::{EventId, OrderId, PaymentId, UserId};
use chrono::Utc;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

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
    /// A refund asked for more than the payment has left to give back.
    #[error("payment {payment} has {left} left to refund")]
    RefundExceedsPayment { payment: PaymentId, left: i64 },
    #[error("the idempotency key was used for a different request")]
    IdempotencyMismatch,
    #[error("payment service unavailable")]
    Unavailable,
}

type Reply<T> = RpcReplyPort<Result<T, PaymentError>>;

/// What came back from asking the gateway.
#[derive(Debug, Clone)]
pub enum GatewayAnswer {
    /// The money moved.
    Approved,
    /// The card was refused (or the charge can never be approved), with the reason to show.
    Declined(String),
    /// It could not be asked, or could not yet tell what happened: the payment stays REQUESTED
    /// and the saga asks again (with the same idempotency key).
    Failed,
}

/// Counts a payment whose money and bazaar's record disagree in a way no retry mends, for an
/// alert (`bazaar_payments_needing_operator_total`): the log line says which payment.
fn needs_operator(reason: &'static str) {
    metrics::counter!("bazaar_payments_needing_operator_total", "reason" => reason).increment(1);
}

/// The reason a payment is declined with when the gateway recorded a charge for its order that
/// is not this charge (another amount): final, so the saga stops asking.
pub const AMOUNT_MISMATCH: &str = "gateway_amount_mismatch";

impl GatewayAnswer {
    /// Reads a gateway's outcome for payment `id`.
    fn from_outcome(id: &PaymentId, outcome: Result<Charged, GatewayError>) -> Self {
        match outcome {
            Ok(charged) => {
                info!(payment_id = %id, reference = %charged.reference, "gateway approved the charge");
                GatewayAnswer::Approved
            }
            Err(GatewayError::Declined(reason)) => GatewayAnswer::Declined(reason),
            Err(GatewayError::Mismatch(why)) => {
                // Money may have moved under this order at another amount: an operator must look.
                error!(payment_id = %id, %why, "gateway charge does not match the payment; declined");
                needs_operator("amount_mismatch");
                GatewayAnswer::Declined(AMOUNT_MISMATCH.to_owned())
            }
            Err(e @ (GatewayError::Unavailable(_) | GatewayError::UnknownOutcome(_))) => {
                warn!(payment_id = %id, reason = %e, "gateway charge undecided; the saga asks again");
                GatewayAnswer::Failed
            }
        }
    }
}

/// Messages a payment entity accepts. Local-only: entities never cross nodes.
pub enum PaymentMsg {
    /// Reads the payment for the order's buyer or seller.
    Get { viewer: UserId, reply: Reply<Payment> },
    /// Charges a REQUESTED payment (delivered by event `cause`); replies once it is decided.
    Charge { cause: EventId, reply: Reply<()> },
    /// The gateway's answer to the charge in flight.
    Answered(GatewayAnswer),
    /// Refunds (part of) an APPROVED payment for the order's seller (commits the decision only).
    Refund(RefundPayment, Reply<Payment>),
    /// Gives a refund's money back at the gateway (delivered by event `cause`).
    GatewayRefund { cause: EventId, amount: Option<i64>, reply: Reply<()> },
    /// Asks the gateway what it recorded and brings the payment in line with it.
    Reconcile { reference: Option<String>, reply: Reply<Payment> },
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

/// Refunds (part of) an APPROVED payment for the order's seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundPayment {
    pub by: UserId,
    /// How much to give back; `None`: all that is left.
    pub amount: Option<i64>,
    /// The caller's `Idempotency-Key`: a retry with it answers the payment as it is and gives
    /// nothing back again.
    pub idempotency: Option<IdempotencyKey>,
}
crate::request!(RefundPayment, PaymentState, "payment.refund", Result<Payment, PaymentError>, |self, reply| PaymentMsg::Refund(self, reply));

/// Gives a refund's money back at the gateway, once per event `cause`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefundAtGateway {
    pub cause: EventId,
    /// The event's refund amount; `None` (events from before partial refunds): all of it.
    pub amount: Option<i64>,
}
crate::request!(RefundAtGateway, PaymentState, "payment.refund_at_gateway", Result<(), PaymentError>, |self, reply| PaymentMsg::GatewayRefund { cause: self.cause, amount: self.amount, reply });

/// Asks the gateway what it recorded for the payment and brings the payment in line with it: a
/// provider's notification said something changed (`reference`: the charge it named).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcilePayment {
    pub reference: Option<String>,
}
crate::request!(ReconcilePayment, PaymentState, "payment.reconcile", Result<Payment, PaymentError>, |self, reply| PaymentMsg::Reconcile { reference: self.reference, reply });

crate::remote_requests!(PaymentState: GetPayment, ChargePayment, RefundPayment, RefundAtGateway, ReconcilePayment);

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
    /// The payment, if `viewer` is its buyer (all of it) or the seller of one of its orders (the
    /// shares of that seller's orders only).
    pub fn visible_to(&self, viewer: &UserId) -> Result<Payment, PaymentError> {
        let record = self.record.as_ref().ok_or(PaymentError::NotFound)?;
        if &record.buyer_id == viewer {
            Ok(record.payment.clone())
        } else if record.payment.orders.iter().any(|share| &share.seller_id == viewer) {
            Ok(record.payment.seen_by_seller(viewer))
        } else {
            Err(PaymentError::NotFound)
        }
    }

    /// Decides the payment after the gateway's answer; `None` when it stays as it is.
    pub fn decide(&self, answer: &GatewayAnswer) -> Option<(Payment, Event)> {
        let current = &self.record.as_ref()?.payment;
        if current.status != PaymentStatus::Requested {
            return None;
        }
        match answer {
            GatewayAnswer::Approved => {
                let next = Payment { status: PaymentStatus::Approved, reason: None, ..current.clone() };
                Some((next.clone(), Event::PaymentApproved { payment: next }))
            }
            GatewayAnswer::Declined(reason) => {
                let next = Payment { status: PaymentStatus::Declined, reason: Some(reason.clone()), ..current.clone() };
                Some((next.clone(), Event::PaymentDeclined { payment: next }))
            }
            GatewayAnswer::Failed => None,
        }
    }

    /// Decides a refund of `amount` (`None`: all that is left of the seller's share) by `by`:
    /// the payment after it, what this refund gives back, and the order whose share it is. A
    /// seller refunds their own order's share only (a checkout's payment has one per seller); the
    /// payment stays APPROVED until nothing is left of any share.
    pub fn refund(&self, by: &UserId, amount: Option<i64>) -> Result<(Payment, i64, OrderId), PaymentError> {
        let record = self.record.as_ref().ok_or(PaymentError::NotFound)?;
        if by == &record.buyer_id {
            return Err(PaymentError::Forbidden);
        }
        let current = &record.payment;
        let share = current.orders.iter().find(|share| &share.seller_id == by).ok_or(PaymentError::NotFound)?;
        // A refund made at the provider that names no share still leaves less of the charge.
        let left = share.refundable().min(current.refundable());
        if !current.status.may_become(PaymentStatus::Refunded) || left <= 0 {
            let status = if left <= 0 { PaymentStatus::Refunded } else { current.status };
            return Err(PaymentError::NotRefundable(current.id.clone(), status.as_str().to_owned()));
        }
        // The edge refuses amounts under 1; anything else over what is left is the conflict.
        let given = amount.unwrap_or(left);
        if given > left || given < 1 {
            return Err(PaymentError::RefundExceedsPayment { payment: current.id.clone(), left });
        }
        Ok((refunded_by(current, Some(&share.order_id), given), given, share.order_id.clone()))
    }

    /// Decides what the gateway's record changes: a REQUESTED payment is approved or declined as
    /// the record says; an APPROVED one takes the refunds made at the provider that bazaar has not
    /// recorded (the event of which needs nothing more from the gateway). A record for another
    /// order is never taken.
    pub fn reconcile(&self, found: &ChargeRecord) -> Option<(Payment, Event)> {
        let current = &self.record.as_ref()?.payment;
        if found.order_id != current.reference() {
            warn!(payment_id = %self.id, reference = %found.reference, "gateway record is for another order; ignored");
            return None;
        }
        match current.status {
            PaymentStatus::Requested => {
                let answer =
                    GatewayAnswer::from_outcome(&current.id, judge(found, current.reference(), current.amount));
                self.decide(&answer)
            }
            PaymentStatus::Approved => {
                let charged = found.state == ChargeState::Charged && found.amount == current.amount;
                let given = found.refunded.min(current.amount) - current.refunded_amount;
                if !charged || given < 1 {
                    return None;
                }
                // Whose share a refund made at the provider gives back is known only when there
                // is one share. For a checkout's payment it is recorded against the charge alone
                // (so no seller can then refund more than the charge has left), and an operator
                // must say whose it was; it is found once, so it is counted once.
                let share = match current.orders.as_slice() {
                    [share] => Some(&share.order_id),
                    _ => {
                        error!(payment_id = %self.id, reference = %found.reference, given, "a refund made at the provider for a checkout's payment names no order; an operator must attribute it");
                        needs_operator("refund_unattributed");
                        None
                    }
                };
                let next = refunded_by(current, share, given);
                let event = Event::PaymentRefunded {
                    payment: next.clone(),
                    amount: Some(given),
                    at_provider: true,
                    order_id: None,
                };
                Some((next, event))
            }
            PaymentStatus::Declined => {
                if found.state == ChargeState::Charged && found.refunded < found.amount {
                    error!(payment_id = %self.id, reference = %found.reference, "gateway holds a charge for a declined payment; an operator must give it back");
                    needs_operator("charged_after_decline");
                }
                None
            }
            PaymentStatus::Refunded => None,
        }
    }

    async fn reload(&mut self, ctx: &Ctx) -> Result<(), StoreError> {
        self.record = payments::load(&ctx.store, self.id.as_str()).await?;
        Ok(())
    }

    async fn commit_change(&mut self, next: Payment, event: Event, ctx: &Ctx) -> Result<(), Attempt<PaymentError>> {
        let record = self.record.as_ref().ok_or(Attempt::Refused(PaymentError::NotFound))?;
        let now = Utc::now();
        let mut tx = ctx.store.begin().await?;
        payments::update(&mut tx, &next, record.version, now)?;
        store::append_events(&mut tx, &[Envelope::new(next.id.as_str(), record.version + 1, now, event)])?;
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

    /// Commits the refund decision (with the caller's idempotency key, in one transaction). The
    /// gateway is not asked here: this runs again after a version conflict, and the saga's step
    /// that follows `PaymentRefunded` asks it, once.
    async fn try_refund(&mut self, cmd: &RefundPayment, ctx: &Ctx) -> Result<Payment, Attempt<PaymentError>> {
        let record = self.record.as_ref().ok_or(Attempt::Refused(PaymentError::NotFound))?;
        let now = Utc::now();
        let mut tx = ctx.store.begin().await?;
        if let Some(key) = &cmd.idempotency {
            match idempotency::check(&mut tx, key, Lookup::Read).await? {
                Earlier::Nothing => {}
                Earlier::Mismatch => return Err(Attempt::Refused(PaymentError::IdempotencyMismatch)),
                // The retry of a refund already made: the payment as it is, nothing given again.
                Earlier::Done(_) => return self.visible_to(&cmd.by).map_err(Attempt::Refused),
            }
        }
        let (next, given, order) = self.refund(&cmd.by, cmd.amount).map_err(Attempt::Refused)?;
        payments::update(&mut tx, &next, record.version, now)?;
        let event = Event::PaymentRefunded {
            payment: next.clone(),
            amount: Some(given),
            at_provider: false,
            order_id: Some(order),
        };
        store::append_events(&mut tx, &[Envelope::new(next.id.as_str(), record.version + 1, now, event)])?;
        if let Some(key) = &cmd.idempotency {
            idempotency::record(&mut tx, key, next.id.as_str(), now)?;
        }
        ctx.store.commit(tx).await?;
        if let Some(record) = self.record.as_mut() {
            record.payment = next.clone();
            record.version += 1;
        }
        Ok(next.seen_by_seller(&cmd.by))
    }

    /// Refunds for the seller, deciding again after lost races.
    async fn refund_command(&mut self, cmd: &RefundPayment, ctx: &Ctx) -> Result<Payment, PaymentError> {
        with_retries!(self, ctx, PaymentError::Unavailable, self.try_refund(cmd, ctx))
    }

    /// Commits one change the gateway's record calls for; a refund found there is marked given
    /// back at the gateway in the same transaction, so the saga never asks for it again.
    async fn try_reconcile(&mut self, found: &ChargeRecord, ctx: &Ctx) -> Result<bool, Attempt<PaymentError>> {
        let Some((next, event)) = self.reconcile(found) else { return Ok(false) };
        let record = self.record.as_ref().ok_or(Attempt::Refused(PaymentError::NotFound))?;
        let now = Utc::now();
        let already_given = matches!(event, Event::PaymentRefunded { .. });
        let envelope = Envelope::new(next.id.as_str(), record.version + 1, now, event);
        let mut tx = ctx.store.begin().await?;
        payments::update(&mut tx, &next, record.version, now)?;
        if already_given {
            store::mark_processed(&mut tx, GATEWAY_REFUNDS, envelope.id.as_str(), Lookup::Read).await?;
        }
        store::append_events(&mut tx, &[envelope])?;
        ctx.store.commit(tx).await?;
        info!(payment_id = %self.id, status = next.status.as_str(), refunded = next.refunded_amount, "payment reconciled with the gateway");
        if let Some(record) = self.record.as_mut() {
            record.payment = next;
            record.version += 1;
        }
        Ok(true)
    }

    /// Asks the gateway what it recorded (by the notified `reference`, or by order) and applies
    /// it: a decision first, then any refunds; replies with the payment as it then is.
    async fn reconcile_command(&mut self, reference: Option<&str>, ctx: &Ctx) -> Result<Payment, PaymentError> {
        if self.record.is_none() && self.reload(ctx).await.is_err() {
            return Err(PaymentError::Unavailable);
        }
        let Some(record) = &self.record else { return Err(PaymentError::NotFound) };
        let request = LookupRequest { payment_id: self.id.as_str(), order_id: record.payment.reference(), reference };
        let found = match tokio::time::timeout(ctx.settings.gateway_timeout, ctx.gateway.lookup(request)).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                warn!(payment_id = %self.id, reason = %e, "gateway lookup failed");
                return Err(PaymentError::Unavailable);
            }
            Err(_) => {
                warn!(payment_id = %self.id, "gateway lookup timed out");
                return Err(PaymentError::Unavailable);
            }
        };
        if let Some(found) = found {
            // A decision, then the refunds the record holds: two changes at most.
            for _ in 0..2 {
                if !with_retries!(self, ctx, PaymentError::Unavailable, self.try_reconcile(&found, ctx))? {
                    break;
                }
            }
        }
        self.record.as_ref().map(|r| r.payment.clone()).ok_or(PaymentError::NotFound)
    }

    /// Asks the gateway to give back the refund of event `cause` (`amount`; `None`: all of it),
    /// unless that event was already followed; marks it followed once the gateway answered.
    async fn refund_at_gateway(&self, cause: &EventId, amount: Option<i64>, ctx: &Ctx) -> Result<(), PaymentError> {
        let storage = |e: StoreError| {
            warn!(payment_id = %self.id, reason = %e, "storage failed");
            PaymentError::Unavailable
        };
        let Some(record) = &self.record else { return Err(PaymentError::Unavailable) };
        match record.payment.status {
            PaymentStatus::Refunded | PaymentStatus::Approved if record.payment.refunded_amount > 0 => {}
            PaymentStatus::Requested | PaymentStatus::Approved | PaymentStatus::Declined | PaymentStatus::Refunded => {
                // The event is only ever appended with a row that records the refund, so this is
                // a stale read; try again after a reload rather than refund an unrefunded payment.
                return Err(PaymentError::Unavailable);
            }
        }
        if store::is_processed(&ctx.store, GATEWAY_REFUNDS, cause.as_str()).await.map_err(storage)? {
            return Ok(());
        }
        // One key per refund event: a redelivered event repeats the request, never the refund.
        let idempotency_key = format!("refund-{cause}");
        let request = RefundRequest {
            payment_id: self.id.as_str(),
            order_id: record.payment.reference(),
            // The whole payment in one refund is sent as "all of it", as it always was.
            amount: amount.filter(|given| *given < record.payment.amount),
            reason: "refunded by the seller",
            idempotency_key: &idempotency_key,
        };
        match ctx.gateway.refund(request).await {
            Ok(()) => {}
            Err(GatewayError::Declined(reason)) => {
                // The gateway will never take it (asking again gives the same answer): the money
                // stays where it is and an operator must look; the saga moves on.
                error!(payment_id = %self.id, %reason, "gateway refused the refund for good");
                needs_operator("refund_refused");
            }
            Err(e @ (GatewayError::Unavailable(_) | GatewayError::UnknownOutcome(_) | GatewayError::Mismatch(_))) => {
                warn!(payment_id = %self.id, reason = %e, "gateway refund failed");
                return Err(PaymentError::Unavailable);
            }
        }
        let mut tx = ctx.store.begin().await.map_err(storage)?;
        store::mark_processed(&mut tx, GATEWAY_REFUNDS, cause.as_str(), Lookup::Read).await.map_err(storage)?;
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
                order_id: record.payment.reference(),
                customer: record.buyer_id.as_str(),
                token: &record.token,
                amount: record.payment.amount,
                currency: &record.currency,
                idempotency_key: &idempotency_key,
            };
            let outcome = match tokio::time::timeout(timeout, gateway.charge(request)).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    // The gateway may have charged: ask what it recorded, never decline blindly.
                    warn!(payment_id = %id, "gateway did not answer the charge in time; asking what it recorded");
                    tokio::time::timeout(timeout, gateway.settle_abandoned(request)).await.unwrap_or_else(|_| {
                        Err(GatewayError::UnknownOutcome(
                            "the gateway answered neither the charge nor the lookup".into(),
                        ))
                    })
                }
            };
            myself.send(PaymentMsg::Answered(GatewayAnswer::from_outcome(id, outcome)));
        });
    }
}

/// The payment after `given` more is given back of order `order`'s share (`None`: of the charge,
/// no share named): REFUNDED once nothing is left of it.
fn refunded_by(current: &Payment, order: Option<&OrderId>, given: i64) -> Payment {
    let refunded_amount = current.refunded_amount + given;
    let status = if refunded_amount >= current.amount { PaymentStatus::Refunded } else { PaymentStatus::Approved };
    let mut orders = current.orders.clone();
    if let Some(share) = orders.iter_mut().find(|share| Some(&share.order_id) == order) {
        share.refunded_amount += given;
    }
    Payment { status, refunded_amount, orders, ..current.clone() }
}

impl Entity for PaymentState {
    const KIND: &'static str = "payment";
    type Msg = PaymentMsg;

    async fn load(id: &str, ctx: &Ctx) -> Result<Self, StoreError> {
        Ok(Self { id: id.into(), record: payments::load(&ctx.store, id).await?, waiting: Vec::new() })
    }

    // The saga deliveries waiting for a charge in flight stay: the charge still answers them.
    async fn refresh(&mut self, id: &str, ctx: &Ctx) -> Result<(), StoreError> {
        self.record = payments::load(&ctx.store, id).await?;
        Ok(())
    }

    async fn handle(&mut self, msg: PaymentMsg, ctx: &Ctx, myself: &EntityRef<Self>) {
        match msg {
            PaymentMsg::Get { viewer, reply } => {
                let _ = reply.send(self.visible_to(&viewer));
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
                    // Why a buyer's payment failed is the first thing support asks: the line names
                    // the order, the payment and the gateway's code (never the card token).
                    if let (GatewayAnswer::Declined(code), PaymentStatus::Declined) = (&answer, record.payment.status) {
                        info!(
                            order_id = %record.payment.reference(),
                            payment_id = %self.id,
                            decline_code = %code,
                            "payment declined"
                        );
                    }
                }
                for reply in self.waiting.drain(..) {
                    let _ = reply.send(outcome.clone());
                }
            }
            PaymentMsg::Refund(cmd, reply) => {
                let _ = reply.send(self.refund_command(&cmd, ctx).await);
            }
            PaymentMsg::GatewayRefund { cause, amount, reply } => {
                // The refund may have been committed by this entity's twin on another node during
                // a view change: read the row again first, so the refund is seen.
                let outcome = match self.reload(ctx).await {
                    Err(_) => Err(PaymentError::Unavailable),
                    Ok(()) => self.refund_at_gateway(&cause, amount, ctx).await,
                };
                let _ = reply.send(outcome);
            }
            PaymentMsg::Reconcile { reference, reply } => {
                let _ = reply.send(self.reconcile_command(reference.as_deref(), ctx).await);
            }
        }
    }

    fn exists(&self) -> bool {
        self.record.is_some()
    }

    // The gateway answers a charge once; refusing its answer would leave the payment REQUESTED
    // and its waiting deliveries unanswered.
    fn handle_unread(msg: &PaymentMsg) -> bool {
        matches!(msg, PaymentMsg::Answered(_))
    }

    fn refuse(msg: PaymentMsg) {
        match msg {
            PaymentMsg::Get { reply, .. } | PaymentMsg::Refund(_, reply) | PaymentMsg::Reconcile { reply, .. } => {
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
    use crate::region::test_support::ctx as test_ctx;
    use crate::region::RegionRef;
    use bazaar_protocol::payments::PaymentShare;
    use std::time::Duration;

    fn state(status: PaymentStatus) -> PaymentState {
        PaymentState {
            id: "pay1".into(),
            waiting: Vec::new(),
            record: Some(PaymentRecord {
                payment: Payment {
                    id: "pay1".into(),
                    order_id: Some("o1".into()),
                    checkout_id: None,
                    amount: 10,
                    status,
                    reason: None,
                    refunded_amount: 0,
                    orders: vec![PaymentShare {
                        order_id: "o1".into(),
                        seller_id: "seller".into(),
                        amount: 10,
                        refunded_amount: 0,
                    }],
                },
                buyer_id: "buyer".into(),
                seller_id: "seller".into(),
                currency: "KRW".into(),
                token: "tok_ok".into(),
                version: 1,
            }),
        }
    }

    #[test]
    fn a_charge_that_matches_no_amount_is_declined_for_good_not_asked_again() {
        let mismatch = GatewayAnswer::from_outcome(&"pay1".into(), Err(GatewayError::Mismatch("4 units".into())));
        let (next, event) = state(PaymentStatus::Requested).decide(&mismatch).unwrap();
        assert_eq!((next.status, next.reason.as_deref()), (PaymentStatus::Declined, Some(AMOUNT_MISMATCH)));
        assert!(matches!(event, Event::PaymentDeclined { .. }));
        let unknown = GatewayAnswer::from_outcome(&"pay1".into(), Err(GatewayError::UnknownOutcome("later".into())));
        assert!(state(PaymentStatus::Requested).decide(&unknown).is_none());
    }

    fn record(state: ChargeState, refunded: i64) -> ChargeRecord {
        ChargeRecord { reference: "pk".into(), order_id: "o1".into(), amount: 10, refunded, state }
    }

    #[test]
    fn reconciling_approves_a_charged_payment_then_takes_refunds_made_at_the_provider() {
        let (approved, event) = state(PaymentStatus::Requested).reconcile(&record(ChargeState::Charged, 4)).unwrap();
        assert_eq!(approved.status, PaymentStatus::Approved);
        assert!(matches!(event, Event::PaymentApproved { .. }));
        let (partly, event) = state(PaymentStatus::Approved).reconcile(&record(ChargeState::Charged, 4)).unwrap();
        assert_eq!((partly.status, partly.refunded_amount), (PaymentStatus::Approved, 4));
        assert!(matches!(event, Event::PaymentRefunded { amount: Some(4), .. }));
        let (all, _) = state(PaymentStatus::Approved).reconcile(&record(ChargeState::Charged, 10)).unwrap();
        assert_eq!((all.status, all.refunded_amount), (PaymentStatus::Refunded, 10));
        // Nothing new, another order, or a record that is not a charge: nothing changes.
        assert!(state(PaymentStatus::Approved).reconcile(&record(ChargeState::Charged, 0)).is_none());
        let other = ChargeRecord { order_id: "o2".into(), ..record(ChargeState::Charged, 10) };
        assert!(state(PaymentStatus::Approved).reconcile(&other).is_none());
        assert!(state(PaymentStatus::Requested).reconcile(&other).is_none());
        assert!(state(PaymentStatus::Requested).reconcile(&record(ChargeState::Pending("x".into()), 0)).is_none());
        assert!(state(PaymentStatus::Declined).reconcile(&record(ChargeState::Charged, 0)).is_none());
        let (declined, _) =
            state(PaymentStatus::Requested).reconcile(&record(ChargeState::Declined("expired".into()), 0)).unwrap();
        assert_eq!((declined.status, declined.reason.as_deref()), (PaymentStatus::Declined, Some("expired")));
    }

    #[test]
    fn partial_refunds_add_up_to_the_amount_and_never_past_it() {
        let mut entity = state(PaymentStatus::Approved);
        let (first, given, _) = entity.refund(&"seller".into(), Some(3)).unwrap();
        assert_eq!((first.status, first.refunded_amount, given), (PaymentStatus::Approved, 3, 3));
        entity.record.as_mut().unwrap().payment = first;
        assert_eq!(
            entity.refund(&"seller".into(), Some(8)),
            Err(PaymentError::RefundExceedsPayment { payment: "pay1".into(), left: 7 })
        );
        let (rest, given, order) = entity.refund(&"seller".into(), None).unwrap();
        assert_eq!(order, OrderId::from("o1"));
        assert_eq!((rest.status, rest.refunded_amount, given), (PaymentStatus::Refunded, 10, 7));
        entity.record.as_mut().unwrap().payment = rest;
        assert!(matches!(entity.refund(&"seller".into(), Some(1)), Err(PaymentError::NotRefundable(..))));
    }

    /// A checkout's payment of 30: seller s1's order o1 (10) and seller s2's order o2 (20).
    fn checkout_payment(status: PaymentStatus) -> PaymentState {
        let mut entity = state(status);
        let record = entity.record.as_mut().unwrap();
        record.seller_id = "".into();
        record.payment.order_id = None;
        record.payment.checkout_id = Some("c1".into());
        record.payment.amount = 30;
        record.payment.orders = vec![
            PaymentShare { order_id: "o1".into(), seller_id: "s1".into(), amount: 10, refunded_amount: 0 },
            PaymentShare { order_id: "o2".into(), seller_id: "s2".into(), amount: 20, refunded_amount: 0 },
        ];
        entity
    }

    #[test]
    fn each_seller_refunds_only_their_own_share_and_the_payment_is_refunded_when_all_are() {
        let mut entity = checkout_payment(PaymentStatus::Approved);
        let (after, given, order) = entity.refund(&"s1".into(), Some(4)).unwrap();
        assert_eq!((given, order.as_str(), after.refunded_amount, after.status), (4, "o1", 4, PaymentStatus::Approved));
        entity.record.as_mut().unwrap().payment = after;
        // Never past the seller's own share, though the payment has more left.
        assert_eq!(
            entity.refund(&"s1".into(), Some(7)),
            Err(PaymentError::RefundExceedsPayment { payment: "pay1".into(), left: 6 })
        );
        let (after, given, order) = entity.refund(&"s2".into(), None).unwrap();
        assert_eq!((given, order.as_str(), after.status), (20, "o2", PaymentStatus::Approved));
        assert!(after.refunded_in_full(&"o2".into()) && !after.refunded_in_full(&"o1".into()));
        entity.record.as_mut().unwrap().payment = after;
        assert!(matches!(entity.refund(&"s2".into(), Some(1)), Err(PaymentError::NotRefundable(..))));
        let (last, given, _) = entity.refund(&"s1".into(), None).unwrap();
        assert_eq!((given, last.refunded_amount, last.status), (6, 30, PaymentStatus::Refunded));
        // Nobody but its sellers refunds; the buyer is told so.
        assert_eq!(entity.refund(&"buyer".into(), None), Err(PaymentError::Forbidden));
        assert_eq!(entity.refund(&"s3".into(), None), Err(PaymentError::NotFound));
    }

    #[test]
    fn a_seller_sees_only_their_own_share_and_the_buyer_all_of_them() {
        let entity = checkout_payment(PaymentStatus::Approved);
        assert_eq!(entity.visible_to(&"buyer".into()).unwrap().orders.len(), 2);
        let seen = entity.visible_to(&"s2".into()).unwrap();
        assert_eq!(seen.orders.iter().map(|s| s.order_id.as_str()).collect::<Vec<_>>(), ["o2"]);
        assert_eq!(entity.visible_to(&"s3".into()), Err(PaymentError::NotFound));
    }

    #[test]
    fn a_refund_made_at_the_provider_for_a_checkouts_payment_is_not_guessed_onto_a_share() {
        let mut entity = checkout_payment(PaymentStatus::Approved);
        let found = ChargeRecord {
            reference: "pk".into(),
            order_id: "c1".into(),
            amount: 30,
            refunded: 25,
            state: ChargeState::Charged,
        };
        let (next, event) = entity.reconcile(&found).unwrap();
        assert_eq!((next.refunded_amount, next.status), (25, PaymentStatus::Approved));
        assert!(next.orders.iter().all(|share| share.refunded_amount == 0), "no share is guessed");
        assert!(matches!(event, Event::PaymentRefunded { order_id: None, at_provider: true, .. }));
        entity.record.as_mut().unwrap().payment = next;
        // Found once: the same record again changes nothing.
        assert!(entity.reconcile(&found).is_none());
        // No seller gets back more than the charge has left.
        assert_eq!(
            entity.refund(&"s2".into(), Some(6)),
            Err(PaymentError::RefundExceedsPayment { payment: "pay1".into(), left: 5 })
        );
        assert_eq!(entity.refund(&"s2".into(), None).unwrap().1, 5, "all that is left of the charge");
        // The charge itself is still found by the checkout's id.
        let (approved, _) = checkout_payment(PaymentStatus::Requested).reconcile(&found).unwrap();
        assert_eq!(approved.status, PaymentStatus::Approved);
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
        assert_eq!(state(PaymentStatus::Approved).refund(&"buyer".into(), None), Err(PaymentError::Forbidden));
        assert_eq!(state(PaymentStatus::Approved).refund(&"stranger".into(), None), Err(PaymentError::NotFound));
        assert_eq!(
            state(PaymentStatus::Approved).refund(&"seller".into(), None).unwrap().0.status,
            PaymentStatus::Refunded
        );
        assert!(matches!(
            state(PaymentStatus::Declined).refund(&"seller".into(), None),
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
        payments::insert(&mut tx, &record, now).unwrap();
        store.commit(tx).await.unwrap();
        payments::record_charge(&store, "pay1", 10, "approved", now).await.unwrap();
        // Another writer moves the row on under the entity's feet: its first commit conflicts.
        let mut tx = store.begin().await.unwrap();
        payments::update(&mut tx, &record.payment, 1, now).unwrap();
        store.commit(tx).await.unwrap();

        let full = RefundPayment { by: "seller".into(), amount: None, idempotency: None };
        let refunded = entity.refund_command(&full, &ctx).await.unwrap();
        assert_eq!(refunded.status, PaymentStatus::Refunded);
        let stored = payments::load(&store, "pay1").await.unwrap().unwrap();
        assert_eq!((stored.payment.status, stored.version), (PaymentStatus::Refunded, 3));
        // The decision is committed; deciding it again after the conflict asked the gateway nothing.
        assert_eq!(payments::refund_requests(&store, "pay1").await.unwrap(), 0);

        // The saga follows the event, and after a crash delivers it again: one request.
        let region = RegionRef::<PaymentState>::spawn(ctx).await.unwrap();
        let cause = EventId::generate();
        for _ in 0..2 {
            region.ask("pay1", RefundAtGateway { cause: cause.clone(), amount: Some(10) }).await.unwrap().unwrap();
        }
        assert_eq!(payments::refund_requests(&store, "pay1").await.unwrap(), 1);
        // A second refund is refused without a word to the gateway.
        assert!(matches!(
            region.ask("pay1", RefundPayment { by: "seller".into(), amount: None, idempotency: None }).await.unwrap(),
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
        payments::insert(&mut tx, &record, Utc::now()).unwrap();
        store.commit(tx).await.unwrap();
        payments::record_charge(&store, "pay1", 10, "approved", Utc::now()).await.unwrap();
        let region = RegionRef::<PaymentState>::spawn(ctx).await.unwrap();
        let answer = region.ask("pay1", RefundAtGateway { cause: EventId::generate(), amount: None }).await.unwrap();
        assert_eq!(answer, Err(PaymentError::Unavailable));
        assert_eq!(payments::refund_requests(&store, "pay1").await.unwrap(), 0);
    }
}
