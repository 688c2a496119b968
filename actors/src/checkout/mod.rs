//! Checkout: a buyer's cart becomes one order per seller, every line reserved or none.
//!
//! The steps, each idempotent, so a retry, a second node or the sweep can run them again:
//! 1. The checkout entity records the plan (every line, and the order it goes into) with the
//!    idempotency key, RESERVING ([`entity::OpenCheckout`]).
//! 2. Each line is reserved at its product, in product-id order ([`ReserveLine`], keyed by order
//!    and product, so reserving twice reserves once, and never after it was given up).
//! 3. All reserved: the checkout entity creates the orders and opens, in one transaction
//!    ([`entity::CompleteCheckout`]). A line short: it fails (RELEASING), every line is given up
//!    ([`ForgoLine`]: its units back if it was taken), then it is FAILED.
//!
//! Once open, the checkout's orders may be paid together with one charge ([`pay`]).
//!
//! A request cut off half-way (a crash, a timeout) leaves the checkout RESERVING or RELEASING:
//! a retry with the same key carries on from step 2, and the [`sweep`] gives up a checkout that
//! has not moved for `checkout_timeout` (its lines released). The entity decides each phase
//! change once, so whichever of them comes first wins and the others follow: a checkout never
//! both opens and releases its stock.

pub mod entity;
pub mod pay;
pub mod plan;
pub mod sweep;

use crate::order::RereadOrder;
use crate::product::{ForgoLine, ProductError, ReserveLine, ReservedLine};
use crate::region::CallError;
use crate::regions::Regions;
use crate::store::checkouts::{Failure, PlannedLine};
use crate::user::RemoveCartItems;
use bazaar_protocol::payments::Payment;
use bazaar_protocol::values::Quantity;
use bazaar_protocol::{CheckoutId, ProductId, UserId};
use entity::{
    CheckoutError, CheckoutReleased, CompleteCheckout, FailCheckout, GetCheckout, OpenCheckout, Opened, PayCheckout,
    TouchCheckout,
};
use plan::CartPick;
use std::time::Duration;
use tokio::time::Instant;
use tracing::warn;

pub use crate::store::checkouts::{CheckoutRecord, Phase};
pub use entity::CheckoutState;

/// Why a checkout did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckoutRefused {
    /// These products have too few units (or are gone); nothing is held.
    #[error("not enough stock for {}", names(.0))]
    Short(Vec<ProductId>),
    #[error("the cart's products are priced in more than one currency")]
    MixedCurrencies,
    #[error("the checkout's total is too large")]
    TooLarge,
    #[error("the checkout was cut off and given up; nothing is held")]
    TimedOut,
    #[error(transparent)]
    Checkout(#[from] CheckoutError),
    /// A step could not be taken in time: the checkout carries on with a retry (same key).
    #[error("checkout unavailable")]
    Unavailable,
}

fn names(products: &[ProductId]) -> String {
    products.iter().map(ProductId::as_str).collect::<Vec<_>>().join(", ")
}

impl From<&Failure> for CheckoutRefused {
    fn from(failure: &Failure) -> Self {
        match failure {
            Failure::Short(products) => CheckoutRefused::Short(products.clone()),
            Failure::MixedCurrencies => CheckoutRefused::MixedCurrencies,
            Failure::TooLarge => CheckoutRefused::TooLarge,
            Failure::TimedOut => CheckoutRefused::TimedOut,
        }
    }
}

fn refusal(record: &CheckoutRecord) -> CheckoutRefused {
    record.failure.as_ref().map_or(CheckoutRefused::Unavailable, CheckoutRefused::from)
}

fn answer<T>(asked: Result<Result<T, CheckoutError>, CallError>) -> Result<T, CheckoutRefused> {
    match asked {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(CheckoutError::Unavailable)) | Err(_) => Err(CheckoutRefused::Unavailable),
        Ok(Err(refused)) => Err(refused.into()),
    }
}

/// Checks out `picks` for `buyer` under `idempotency`: the open checkout and whether this call
/// opened it (false: a retry found it).
pub async fn check_out(
    regions: &Regions,
    buyer: &UserId,
    picks: &[CartPick],
    idempotency: crate::idempotency::IdempotencyKey,
    timeout: Duration,
) -> Result<(CheckoutRecord, bool), CheckoutRefused> {
    let deadline = Instant::now() + timeout;
    let id = CheckoutId::generate();
    let open = OpenCheckout { buyer_id: buyer.clone(), plan: plan::plan(picks), idempotency };
    let record = match answer(regions.checkouts.ask(id.as_str(), open.clone()).await)? {
        Opened::Here(record) => record,
        Opened::Earlier(earlier) => match answer(regions.checkouts.ask(earlier.as_str(), open).await)? {
            Opened::Here(record) => record,
            Opened::Earlier(_) => return Err(CheckoutRefused::Unavailable),
        },
    };
    let created = record.id == id;
    Ok((finish(regions, record, deadline).await?, created))
}

/// Carries on the checkout `id` of `buyer` (a retry of the request that made it): its answer is
/// the one that request would have had.
pub async fn resume(
    regions: &Regions,
    id: &str,
    buyer: &UserId,
    timeout: Duration,
) -> Result<CheckoutRecord, CheckoutRefused> {
    let deadline = Instant::now() + timeout;
    let mut record = answer(regions.checkouts.ask(id, GetCheckout { viewer: buyer.clone() }).await)?;
    if record.phase == Phase::Reserving {
        // The sweep's timeout counts from here: it must not give up the checkout this retry is
        // carrying on.
        record = answer(regions.checkouts.ask(id, TouchCheckout).await)?;
    }
    finish(regions, record, deadline).await
}

/// Carries `record` on to OPEN or FAILED by `deadline`.
pub async fn finish(
    regions: &Regions,
    record: CheckoutRecord,
    deadline: Instant,
) -> Result<CheckoutRecord, CheckoutRefused> {
    match record.phase {
        Phase::Open => {
            // The request that opened it may have been cut off before it emptied the cart.
            clear_cart(regions, &record).await;
            return Ok(record);
        }
        Phase::Failed => return Err(refusal(&record)),
        Phase::Releasing => {
            release(regions, &record, deadline).await;
            return Err(refusal(&record));
        }
        Phase::Reserving => {}
    }
    let mut reserved: Vec<ReservedLine> = Vec::with_capacity(record.plan.len());
    let mut short = Vec::new();
    for line in &record.plan {
        match reserve(regions, line, deadline).await {
            Reservation::Taken(taken) => reserved.push(taken),
            Reservation::Short => short.push(line.product_id.clone()),
            // Left RESERVING: a retry with the same key, or the sweep, finishes it.
            Reservation::Late => return Err(CheckoutRefused::Unavailable),
        }
    }
    let id = record.id.as_str();
    let next = if short.is_empty() {
        answer(regions.checkouts.ask(id, CompleteCheckout { reserved }).await)?
    } else {
        answer(regions.checkouts.ask(id, FailCheckout { failure: Failure::Short(short) }).await)?
    };
    match next.phase {
        Phase::Open => {
            clear_cart(regions, &next).await;
            Ok(next)
        }
        Phase::Releasing | Phase::Failed => {
            release(regions, &next, deadline).await;
            Err(refusal(&next))
        }
        Phase::Reserving => Err(CheckoutRefused::Unavailable),
    }
}

enum Reservation {
    Taken(ReservedLine),
    Short,
    Late,
}

/// The pause before asking again, doubling from 50 ms to 1 s.
fn backoff(delay: Duration) -> Duration {
    (delay * 2).min(Duration::from_secs(1))
}

async fn reserve(regions: &Regions, line: &PlannedLine, deadline: Instant) -> Reservation {
    let Ok(quantity) = Quantity::try_from(i64::from(line.quantity)) else { return Reservation::Short };
    let mut delay = Duration::from_millis(50);
    loop {
        let ask = ReserveLine { order_id: line.order_id.clone(), quantity };
        let reason = match regions.products.ask(line.product_id.as_str(), ask).await {
            Ok(Ok(taken)) => return Reservation::Taken(taken),
            Ok(Err(ProductError::OutOfStock | ProductError::NotFound | ProductError::Withdrawn)) => {
                return Reservation::Short
            }
            Ok(Err(other)) => other.to_string(),
            Err(call) => call.to_string(),
        };
        if Instant::now() + delay >= deadline {
            warn!(product_id = %line.product_id, order_id = %line.order_id, %reason, "checkout line not reserved in time");
            return Reservation::Late;
        }
        tokio::time::sleep(delay).await;
        delay = backoff(delay);
    }
}

/// Gives up every line of a failed checkout, then marks it FAILED; whatever is left undone by
/// `deadline` the sweep does later.
pub async fn release(regions: &Regions, record: &CheckoutRecord, deadline: Instant) -> bool {
    for line in &record.plan {
        let mut delay = Duration::from_millis(50);
        loop {
            let forgo = ForgoLine { order_id: line.order_id.clone() };
            let reason = match regions.products.ask(line.product_id.as_str(), forgo).await {
                // A product that is gone holds nothing.
                Ok(Ok(())) | Ok(Err(ProductError::NotFound)) => break,
                Ok(Err(other)) => other.to_string(),
                Err(call) => call.to_string(),
            };
            if Instant::now() + delay >= deadline {
                warn!(checkout_id = %record.id, product_id = %line.product_id, %reason, "checkout line not given up yet; the sweep retries");
                return false;
            }
            tokio::time::sleep(delay).await;
            delay = backoff(delay);
        }
    }
    matches!(regions.checkouts.ask(record.id.as_str(), CheckoutReleased).await, Ok(Ok(_)))
}

/// Pays the orders of checkout `id` still ORDERED with one payment (see [`pay`]): the payment,
/// REQUESTED (the saga charges it), or the one a retry with the same key made. Each order it pays
/// is told to read its row again before the answer, so reading it next shows PAYMENT_PENDING.
pub async fn pay_checkout(regions: &Regions, id: &str, cmd: PayCheckout) -> Result<Payment, CheckoutError> {
    let payment = match regions.checkouts.ask(id, cmd).await {
        Ok(answer) => answer?,
        Err(_) => return Err(CheckoutError::Unavailable),
    };
    let rereads = payment.order_ids().into_iter().map(|order| async move {
        if let Err(reason) = regions.orders.ask(order.as_str(), RereadOrder).await.map_err(|e| e.to_string()) {
            // It reads the row again before it settles the payment anyway.
            warn!(order_id = %order, %reason, "order not told of its checkout's payment");
        }
    });
    futures_util::future::join_all(rereads).await;
    Ok(payment)
}

/// Takes the checked-out products out of the buyer's cart. A failure leaves them there (the
/// buyer sees them and can remove them); the orders stand either way.
async fn clear_cart(regions: &Regions, record: &CheckoutRecord) {
    let products = record.plan.iter().map(|line| line.product_id.clone()).collect();
    if let Err(reason) = regions
        .users
        .ask(record.buyer_id.as_str(), RemoveCartItems { products })
        .await
        .map_err(|e| e.to_string())
        .and_then(|answer| answer.map(|_| ()).map_err(|e| e.to_string()))
    {
        warn!(checkout_id = %record.id, %reason, "checked-out products left in the cart");
    }
}
