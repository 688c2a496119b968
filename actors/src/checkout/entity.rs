//! The checkout entity: the record of one checkout and its phase. It decides nothing about stock
//! (each product does, for its own line); it makes sure a checkout opens at most once (creating
//! its orders) or fails at most once, whichever of the requests and the sweep working on it gets
//! there first.

use crate::attempt::Attempt;
use crate::checkout::{pay, plan};
use crate::entity::{Ctx, Entity, EntityRef};
use crate::idempotency::{self, Earlier, IdempotencyKey};
use crate::product::ReservedLine;
use crate::store::checkouts::{self, CheckoutRecord, Failure, Phase, PlannedLine};
use crate::store::{self, orders, payments, Lookup, StoreError};
use crate::with_retries;
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::payments::Payment;
use bazaar_protocol::{CheckoutId, PaymentId, UserId};
use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

/// Why a checkout command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CheckoutError {
    /// Unknown, or not the caller's: existence is not revealed.
    #[error("checkout not found")]
    NotFound,
    #[error("the idempotency key was used for a different request")]
    IdempotencyMismatch,
    /// Paying it: it is not open, was paid before, or none of its orders is still ORDERED.
    #[error("{0}")]
    NotPayable(String),
    #[error("storage unavailable")]
    Unavailable,
}

type Reply<T> = RpcReplyPort<Result<T, CheckoutError>>;

/// What opening a checkout found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Opened {
    /// The checkout under this id: new, or the one a retry finds (in whatever phase).
    Here(CheckoutRecord),
    /// The key was used before, for the checkout with this id.
    Earlier(CheckoutId),
}

/// Records a new checkout of `plan` for `buyer_id`, RESERVING, or finds the one there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenCheckout {
    pub buyer_id: UserId,
    pub plan: Vec<PlannedLine>,
    pub idempotency: IdempotencyKey,
}

/// Opens a RESERVING checkout with its planned lines reserved as `reserved` (in plan order):
/// its orders are created, or it fails when they cannot be made (currencies, amounts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteCheckout {
    pub reserved: Vec<ReservedLine>,
}

/// Fails a RESERVING checkout: it moves to RELEASING (its lines are to be given up).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailCheckout {
    pub failure: Failure,
}

/// Records that every line of a RELEASING checkout was given up: it is FAILED.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckoutReleased;

/// The sweep's request: fails the checkout if it is RESERVING and has not moved since `before`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AbandonCheckout {
    pub before: DateTime<Utc>,
}

/// Marks a checkout still under way (RESERVING or RELEASING) as moving now: a retry carrying it
/// on, or a sweep whose release failed, so the sweep's timeout counts from this step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TouchCheckout;

/// Reads the checkout for its buyer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetCheckout {
    pub viewer: UserId,
}

/// Pays every order of the checkout still ORDERED with one payment (see [`crate::checkout::pay`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PayCheckout {
    /// The id the new payment gets.
    pub payment_id: PaymentId,
    pub buyer_id: UserId,
    /// The card token to charge.
    pub token: String,
    pub idempotency: IdempotencyKey,
}

/// Tells which payment pays the checkout, if any (for a provider's notification, which names
/// the checkout as its order).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PaymentOfCheckout;

/// Messages a checkout entity accepts. Local-only: entities never cross nodes.
pub enum CheckoutMsg {
    Open(OpenCheckout, Reply<Opened>),
    Complete(CompleteCheckout, Reply<CheckoutRecord>),
    Fail(FailCheckout, Reply<CheckoutRecord>),
    Released(Reply<CheckoutRecord>),
    Abandon(AbandonCheckout, Reply<CheckoutRecord>),
    Touch(Reply<CheckoutRecord>),
    Get(GetCheckout, Reply<CheckoutRecord>),
    Pay(PayCheckout, Reply<Payment>),
    PaymentOf(Reply<Option<PaymentId>>),
}

crate::request!(OpenCheckout, CheckoutState, "checkout.open", Result<Opened, CheckoutError>, |self, reply| CheckoutMsg::Open(self, reply));
crate::request!(CompleteCheckout, CheckoutState, "checkout.complete", Result<CheckoutRecord, CheckoutError>, |self, reply| CheckoutMsg::Complete(self, reply));
crate::request!(FailCheckout, CheckoutState, "checkout.fail", Result<CheckoutRecord, CheckoutError>, |self, reply| CheckoutMsg::Fail(self, reply));
crate::request!(CheckoutReleased, CheckoutState, "checkout.released", Result<CheckoutRecord, CheckoutError>, |self, reply| CheckoutMsg::Released(reply));
crate::request!(AbandonCheckout, CheckoutState, "checkout.abandon", Result<CheckoutRecord, CheckoutError>, |self, reply| CheckoutMsg::Abandon(self, reply));
crate::request!(TouchCheckout, CheckoutState, "checkout.touch", Result<CheckoutRecord, CheckoutError>, |self, reply| CheckoutMsg::Touch(reply));
crate::request!(read GetCheckout, CheckoutState, "checkout.get", Result<CheckoutRecord, CheckoutError>, |self, reply| CheckoutMsg::Get(self, reply));

crate::request!(PayCheckout, CheckoutState, "checkout.pay", Result<Payment, CheckoutError>, |self, reply| CheckoutMsg::Pay(self, reply));
crate::request!(read PaymentOfCheckout, CheckoutState, "checkout.payment_of", Result<Option<PaymentId>, CheckoutError>, |self, reply| CheckoutMsg::PaymentOf(reply));

crate::remote_requests!(CheckoutState: OpenCheckout, CompleteCheckout, FailCheckout, CheckoutReleased, AbandonCheckout, TouchCheckout, GetCheckout, PayCheckout, PaymentOfCheckout);

/// The checkout entity's state.
pub struct CheckoutState {
    id: CheckoutId,
    record: Option<CheckoutRecord>,
    version: i64,
}

impl CheckoutState {
    fn existing(&self) -> Result<&CheckoutRecord, CheckoutError> {
        self.record.as_ref().ok_or(CheckoutError::NotFound)
    }

    /// Decides what completing does: the open checkout and its orders, the failed one, or
    /// nothing (it is past RESERVING: the answer is the record as it is).
    pub fn complete(
        &self,
        reserved: &[ReservedLine],
        now: DateTime<Utc>,
        hold: std::time::Duration,
    ) -> Result<Option<CheckoutRecord>, CheckoutError> {
        let current = self.existing()?;
        if current.phase != Phase::Reserving {
            return Ok(None);
        }
        if reserved.len() != current.plan.len() {
            return Ok(Some(failed(current, Failure::Short(Vec::new()), now)));
        }
        // A hold too long for chrono is no hold at all (the orders wait for their buyer).
        let expires_at = chrono::Duration::from_std(hold).ok().and_then(|hold| now.checked_add_signed(hold));
        match plan::orders(&current.id, &current.buyer_id, &current.plan, reserved, now, expires_at) {
            Err(failure) => Ok(Some(failed(current, failure, now))),
            Ok((orders, total, currency)) => Ok(Some(CheckoutRecord {
                phase: Phase::Open,
                orders,
                total,
                currency,
                expires_at,
                updated_at: now,
                ..current.clone()
            })),
        }
    }

    async fn reload(&mut self, ctx: &Ctx) -> Result<(), StoreError> {
        *self = Self::load(self.id.as_str(), ctx).await?;
        Ok(())
    }

    async fn save(&mut self, next: CheckoutRecord, ctx: &Ctx) -> Result<CheckoutRecord, Attempt<CheckoutError>> {
        let mut tx = ctx.store.begin().await?;
        checkouts::update(&mut tx, &next, self.version)?;
        if next.phase == Phase::Open {
            let events: Vec<Envelope> = next
                .orders
                .iter()
                .map(|order| {
                    Envelope::new(order.id.as_str(), 1, next.updated_at, Event::OrderPlaced { order: order.clone() })
                })
                .collect();
            for order in &next.orders {
                orders::insert(&mut tx, order)?;
            }
            store::append_events(&mut tx, &events)?;
        }
        ctx.store.commit(tx).await?;
        self.record = Some(next.clone());
        self.version += 1;
        Ok(next)
    }

    async fn try_open(&mut self, cmd: &OpenCheckout, ctx: &Ctx) -> Result<Opened, Attempt<CheckoutError>> {
        if let Some(record) = &self.record {
            if record.buyer_id != cmd.buyer_id {
                return Err(Attempt::Refused(CheckoutError::NotFound));
            }
            return Ok(Opened::Here(record.clone()));
        }
        let mut tx = ctx.store.begin().await?;
        match idempotency::check(&mut tx, &cmd.idempotency, Lookup::Read).await? {
            Earlier::Nothing => {}
            Earlier::Mismatch => return Err(Attempt::Refused(CheckoutError::IdempotencyMismatch)),
            Earlier::Done(id) if id != self.id.as_str() => return Ok(Opened::Earlier(id.into())),
            Earlier::Done(_) => {
                return Err(Attempt::Store(StoreError::Corrupt("idempotency record without checkout".into())))
            }
        }
        let now = Utc::now();
        let record = CheckoutRecord::reserving(self.id.clone(), cmd.buyer_id.clone(), cmd.plan.clone(), now);
        checkouts::insert(&mut tx, &record)?;
        idempotency::record(&mut tx, &cmd.idempotency, self.id.as_str(), now)?;
        ctx.store.commit(tx).await?;
        self.record = Some(record.clone());
        self.version = 1;
        Ok(Opened::Here(record))
    }

    async fn try_complete(
        &mut self,
        cmd: &CompleteCheckout,
        ctx: &Ctx,
    ) -> Result<CheckoutRecord, Attempt<CheckoutError>> {
        let decided =
            self.complete(&cmd.reserved, Utc::now(), ctx.settings.reservation_hold).map_err(Attempt::Refused)?;
        match decided {
            None => Ok(self.existing().map_err(Attempt::Refused)?.clone()),
            Some(next) => self.save(next, ctx).await,
        }
    }

    async fn try_fail(&mut self, failure: &Failure, ctx: &Ctx) -> Result<CheckoutRecord, Attempt<CheckoutError>> {
        let current = self.existing().map_err(Attempt::Refused)?;
        if current.phase != Phase::Reserving {
            return Ok(current.clone());
        }
        let next = failed(current, failure.clone(), Utc::now());
        self.save(next, ctx).await
    }

    async fn try_released(&mut self, ctx: &Ctx) -> Result<CheckoutRecord, Attempt<CheckoutError>> {
        let current = self.existing().map_err(Attempt::Refused)?;
        if current.phase != Phase::Releasing {
            return Ok(current.clone());
        }
        let next = CheckoutRecord { phase: Phase::Failed, updated_at: Utc::now(), ..current.clone() };
        self.save(next, ctx).await
    }

    async fn try_abandon(
        &mut self,
        before: DateTime<Utc>,
        ctx: &Ctx,
    ) -> Result<CheckoutRecord, Attempt<CheckoutError>> {
        let current = self.existing().map_err(Attempt::Refused)?;
        if current.phase != Phase::Reserving || current.updated_at > before {
            return Ok(current.clone());
        }
        let next = failed(current, Failure::TimedOut, Utc::now());
        self.save(next, ctx).await
    }

    /// Starts the checkout's one payment in one transaction with its orders' move to
    /// PAYMENT_PENDING (each checked against its version), or answers the payment a retry with the
    /// same key made.
    async fn try_pay(&mut self, cmd: &PayCheckout, ctx: &Ctx) -> Result<Payment, Attempt<CheckoutError>> {
        let current = self.existing().map_err(Attempt::Refused)?;
        if current.buyer_id != cmd.buyer_id {
            return Err(Attempt::Refused(CheckoutError::NotFound));
        }
        let mut tx = ctx.store.begin().await?;
        match idempotency::check(&mut tx, &cmd.idempotency, Lookup::Read).await? {
            Earlier::Nothing => {}
            Earlier::Mismatch => return Err(Attempt::Refused(CheckoutError::IdempotencyMismatch)),
            Earlier::Done(payment_id) => {
                let record = payments::load_in(&mut tx, &payment_id)
                    .await?
                    .ok_or_else(|| Attempt::Store(StoreError::Corrupt("idempotency record without payment".into())))?;
                return Ok(record.payment);
            }
        }
        let mut stored = Vec::with_capacity(current.orders.len());
        for order in &current.orders {
            if let Some(found) = orders::load_versioned_in(&mut tx, order.id.as_str()).await? {
                stored.push(found);
            }
        }
        let now = Utc::now();
        let orders_now: Vec<_> = stored.iter().map(|(order, _)| order.clone()).collect();
        let decided = pay::decide(current, &orders_now, &cmd.payment_id, &cmd.buyer_id, &cmd.token, now);
        let (pending, payment) = decided.map_err(|refused| {
            Attempt::Refused(match refused {
                pay::Unpayable::NotYours => CheckoutError::NotFound,
                pay::Unpayable::Refused(why) => CheckoutError::NotPayable(why),
            })
        })?;
        for order in &pending {
            let version = stored.iter().find(|(o, _)| o.id == order.id).map_or(0, |(_, v)| *v);
            orders::update(&mut tx, order, version)?;
        }
        payments::insert(&mut tx, &payment, now)?;
        idempotency::record(&mut tx, &cmd.idempotency, payment.payment.id.as_str(), now)?;
        let mut pending = pending.into_iter();
        let first = pending.next().ok_or(Attempt::Refused(CheckoutError::Unavailable))?;
        let requested =
            Event::PaymentRequested { payment: payment.payment.clone(), order: first, more_orders: pending.collect() };
        store::append_events(&mut tx, &[Envelope::new(payment.payment.id.as_str(), 1, now, requested)])?;
        let next = CheckoutRecord { payment_id: Some(payment.payment.id.clone()), updated_at: now, ..current.clone() };
        checkouts::update(&mut tx, &next, self.version)?;
        ctx.store.commit(tx).await?;
        self.record = Some(next);
        self.version += 1;
        Ok(payment.payment)
    }

    async fn try_touch(&mut self, ctx: &Ctx) -> Result<CheckoutRecord, Attempt<CheckoutError>> {
        let current = self.existing().map_err(Attempt::Refused)?;
        if !matches!(current.phase, Phase::Reserving | Phase::Releasing) {
            return Ok(current.clone());
        }
        let next = CheckoutRecord { updated_at: Utc::now(), ..current.clone() };
        self.save(next, ctx).await
    }
}

/// `current` failed for `failure`: its lines are to be given up.
fn failed(current: &CheckoutRecord, failure: Failure, now: DateTime<Utc>) -> CheckoutRecord {
    CheckoutRecord { phase: Phase::Releasing, failure: Some(failure), updated_at: now, ..current.clone() }
}

impl Entity for CheckoutState {
    const KIND: &'static str = "checkout";
    type Msg = CheckoutMsg;

    async fn load(id: &str, ctx: &Ctx) -> Result<Self, StoreError> {
        let found = checkouts::load(&ctx.store, id).await?;
        let version = found.as_ref().map_or(0, |(_, v)| *v);
        Ok(Self { id: id.into(), record: found.map(|(record, _)| record), version })
    }

    async fn handle(&mut self, msg: CheckoutMsg, ctx: &Ctx, _myself: &EntityRef<Self>) {
        match msg {
            CheckoutMsg::Open(cmd, reply) => {
                let _ = reply.send(with_retries!(self, ctx, CheckoutError::Unavailable, self.try_open(&cmd, ctx)));
            }
            CheckoutMsg::Complete(cmd, reply) => {
                let _ = reply.send(with_retries!(self, ctx, CheckoutError::Unavailable, self.try_complete(&cmd, ctx)));
            }
            CheckoutMsg::Fail(cmd, reply) => {
                let _ =
                    reply.send(with_retries!(self, ctx, CheckoutError::Unavailable, self.try_fail(&cmd.failure, ctx)));
            }
            CheckoutMsg::Released(reply) => {
                let _ = reply.send(with_retries!(self, ctx, CheckoutError::Unavailable, self.try_released(ctx)));
            }
            CheckoutMsg::Abandon(cmd, reply) => {
                let _ =
                    reply.send(with_retries!(self, ctx, CheckoutError::Unavailable, self.try_abandon(cmd.before, ctx)));
            }
            CheckoutMsg::Touch(reply) => {
                let _ = reply.send(with_retries!(self, ctx, CheckoutError::Unavailable, self.try_touch(ctx)));
            }
            CheckoutMsg::Pay(cmd, reply) => {
                let _ = reply.send(with_retries!(self, ctx, CheckoutError::Unavailable, self.try_pay(&cmd, ctx)));
            }
            CheckoutMsg::PaymentOf(reply) => {
                let _ = reply.send(self.existing().map(|record| record.payment_id.clone()));
            }
            CheckoutMsg::Get(query, reply) => {
                let found = match &self.record {
                    Some(record) if record.buyer_id == query.viewer => Ok(record.clone()),
                    _ => Err(CheckoutError::NotFound),
                };
                let _ = reply.send(found);
            }
        }
    }

    fn exists(&self) -> bool {
        self.record.is_some()
    }

    fn refuse(msg: CheckoutMsg) {
        match msg {
            CheckoutMsg::Open(_, reply) => {
                let _ = reply.send(Err(CheckoutError::Unavailable));
            }
            CheckoutMsg::Complete(_, reply)
            | CheckoutMsg::Fail(_, reply)
            | CheckoutMsg::Released(reply)
            | CheckoutMsg::Abandon(_, reply)
            | CheckoutMsg::Touch(reply)
            | CheckoutMsg::Get(_, reply) => {
                let _ = reply.send(Err(CheckoutError::Unavailable));
            }
            CheckoutMsg::Pay(_, reply) => {
                let _ = reply.send(Err(CheckoutError::Unavailable));
            }
            CheckoutMsg::PaymentOf(reply) => {
                let _ = reply.send(Err(CheckoutError::Unavailable));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkout::plan::{plan, CartPick};
    use std::time::Duration;

    fn reserving() -> CheckoutState {
        let now = Utc::now();
        let picks = [
            CartPick { product_id: "p1".into(), seller_id: "s1".into(), quantity: 1 },
            CartPick { product_id: "p2".into(), seller_id: "s2".into(), quantity: 2 },
        ];
        let record = CheckoutRecord::reserving("c1".into(), "buyer".into(), plan(&picks), now);
        CheckoutState { id: "c1".into(), record: Some(record), version: 1 }
    }

    fn taken(state: &CheckoutState) -> Vec<ReservedLine> {
        reserved_at_1000(&state.record.as_ref().unwrap().plan)
    }

    /// Every line of `plan` reserved at 1,000 KRW a unit.
    fn reserved_at_1000(plan: &[PlannedLine]) -> Vec<ReservedLine> {
        plan.iter()
            .map(|line| ReservedLine {
                product_id: line.product_id.clone(),
                seller_id: line.seller_id.clone(),
                quantity: line.quantity,
                unit_price: 1_000,
                currency: "KRW".into(),
            })
            .collect()
    }

    #[test]
    fn a_reserving_checkout_opens_once_with_its_orders() {
        let state = reserving();
        let hold = Duration::from_secs(900);
        let open = state.complete(&taken(&state), Utc::now(), hold).unwrap().unwrap();
        assert_eq!(open.phase, Phase::Open);
        assert_eq!(open.orders.len(), 2);
        assert_eq!(open.total, 3_000);
        assert!(open.expires_at.is_some());
        let after = CheckoutState { record: Some(open), ..reserving() };
        assert!(after.complete(&taken(&after), Utc::now(), hold).unwrap().is_none(), "an open checkout stays as it is");
    }

    #[test]
    fn a_completion_missing_a_line_fails_the_checkout() {
        let state = reserving();
        let mut lines = taken(&state);
        lines.pop();
        let next = state.complete(&lines, Utc::now(), Duration::from_secs(900)).unwrap().unwrap();
        assert_eq!(next.phase, Phase::Releasing);
        assert!(next.orders.is_empty());
    }

    mod two_owners {
        //! A checkout's payment moves orders that are other entities, maybe live on other nodes:
        //! an order entity deciding on its own copy at the same moment must never also commit.
        use super::*;
        use crate::idempotency::IdempotencyKey;
        use crate::order::{CancelOrder, GetOrder, OrderError, OrderState};
        use crate::region::test_support::{ctx, ctx_over};
        use crate::region::RegionRef;
        use crate::store::{Durability, Store};
        use bazaar_protocol::orders::OrderStatus;

        fn key(key: &str) -> IdempotencyKey {
            IdempotencyKey { user_id: "buyer".into(), key: key.into(), request_hash: "h".into() }
        }

        /// An open checkout of two orders (sellers s1 and s2), made through the entity.
        async fn open_checkout(checkouts: &RegionRef<CheckoutState>, n: usize) -> CheckoutRecord {
            let picks = [
                CartPick { product_id: format!("p1-{n}").into(), seller_id: "s1".into(), quantity: 1 },
                CartPick { product_id: format!("p2-{n}").into(), seller_id: "s2".into(), quantity: 1 },
            ];
            let open =
                OpenCheckout { buyer_id: "buyer".into(), plan: plan(&picks), idempotency: key(&format!("co-{n}")) };
            let id = CheckoutId::generate();
            let Opened::Here(record) = checkouts.ask(id.as_str(), open).await.unwrap().unwrap() else { panic!("new") };
            let reserved = reserved_at_1000(&record.plan);
            checkouts.ask(id.as_str(), CompleteCheckout { reserved }).await.unwrap().unwrap()
        }

        fn pay(n: usize) -> PayCheckout {
            PayCheckout {
                payment_id: PaymentId::generate(),
                buyer_id: "buyer".into(),
                token: "tok_ok".into(),
                idempotency: key(&format!("pay-{n}")),
            }
        }

        #[tokio::test]
        async fn an_order_held_on_another_node_and_the_checkouts_payment_never_both_commit() {
            let (ctx_a, db) = ctx(Duration::from_secs(60)).await;
            let store_b = Store::open(db.url(), Durability::Normal).await.unwrap();
            let ctx_b = ctx_over(store_b.clone(), Duration::from_secs(60), Duration::from_secs(60));
            let checkouts = RegionRef::<CheckoutState>::spawn(ctx_a.clone()).await.unwrap();
            // Node B also believes it owns the orders (a view change in flight), and holds them.
            let orders_b = RegionRef::<OrderState>::spawn(ctx_b).await.unwrap();
            let buyer = UserId::from("buyer");

            // The payment commits first; B's copy still says ORDERED, and its cancel must lose.
            let record = open_checkout(&checkouts, 0).await;
            let first = record.orders[0].id.clone();
            let held = orders_b.ask(first.as_str(), GetOrder { viewer: buyer.clone() }).await.unwrap().unwrap();
            assert_eq!(held.status, OrderStatus::Ordered);
            let payment = checkouts.ask(record.id.as_str(), pay(0)).await.unwrap().unwrap();
            assert_eq!(payment.orders.len(), 2);
            let cancel = orders_b.ask(first.as_str(), CancelOrder { by: buyer.clone() }).await.unwrap();
            assert!(matches!(cancel, Err(OrderError::NotCancellable(..))), "{cancel:?}");
            let (stored, _) = orders::load(&store_b, first.as_str()).await.unwrap().unwrap();
            assert_eq!((stored.status, stored.payment_id), (OrderStatus::PaymentPending, Some(payment.id.clone())));

            // The cancel commits first: the payment leaves that order out and charges the rest.
            let record = open_checkout(&checkouts, 1).await;
            let first = record.orders[0].id.clone();
            orders_b.ask(first.as_str(), CancelOrder { by: buyer.clone() }).await.unwrap().unwrap();
            let payment = checkouts.ask(record.id.as_str(), pay(1)).await.unwrap().unwrap();
            let paid: Vec<&str> = payment.orders.iter().map(|share| share.order_id.as_str()).collect();
            assert_eq!(paid, [record.orders[1].id.as_str()]);
            assert_eq!(payment.amount, 1_000);

            // At the same moment, many times: each order is either cancelled or paid, never both.
            for n in 2..12 {
                let record = open_checkout(&checkouts, n).await;
                let first = record.orders[0].id.clone();
                orders_b.ask(first.as_str(), GetOrder { viewer: buyer.clone() }).await.unwrap().unwrap();
                let (paid, cancelled) = tokio::join!(
                    checkouts.ask(record.id.as_str(), pay(n)),
                    orders_b.ask(first.as_str(), CancelOrder { by: buyer.clone() })
                );
                let paid = paid.unwrap().unwrap();
                let cancelled = cancelled.unwrap().is_ok();
                let charged = paid.orders.iter().any(|share| share.order_id == first);
                assert!(cancelled != charged, "round {n}: cancelled {cancelled}, charged {charged}");
                let (stored, _) = orders::load(&store_b, first.as_str()).await.unwrap().unwrap();
                let expected = if charged { OrderStatus::PaymentPending } else { OrderStatus::Cancelled };
                assert_eq!(stored.status, expected, "round {n}");
            }
        }
    }
}
