//! Paying a checkout: one payment, one charge at the gateway, for every order of the checkout
//! still ORDERED; each order's share of it is the order's own amount, refunded by its own seller.
//!
//! The checkout entity starts the payment in one transaction: every order it pays moves to
//! PAYMENT_PENDING (each under its own version check, so an order cancelled or expired at the same
//! moment either is left out or makes the transaction decide again), the payment is recorded with
//! one share per order, and `PaymentRequested` is appended; from there the saga charges it and
//! settles each order as it settles an order's own payment. The order entities are then told to
//! read their row again ([`RereadOrder`]); one that is not told in time (a crash) still reads it
//! before it settles the payment's outcome.
//!
//! [`RereadOrder`]: crate::order::RereadOrder

use crate::order::{awaiting_payment, share_of};
use crate::store::checkouts::{CheckoutRecord, Phase};
use crate::store::payments::PaymentRecord;
use bazaar_protocol::orders::Order;
use bazaar_protocol::payments::{Payment, PaymentStatus};
use bazaar_protocol::{PaymentId, UserId};
use chrono::{DateTime, Utc};

/// Why a checkout cannot be paid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unpayable {
    /// Not the caller's checkout: existence is not revealed.
    #[error("checkout not found")]
    NotYours,
    /// Not open, paid before, or nothing left ORDERED: the reason, for the buyer.
    #[error("{0}")]
    Refused(String),
}

/// Decides the payment of `checkout` by `buyer` with card `token`, given its orders as stored
/// now (`current`): the orders it pays (now PAYMENT_PENDING), and the payment. Orders no longer
/// ORDERED (cancelled, expired, paid on their own) are left out; none left is refused.
pub fn decide(
    checkout: &CheckoutRecord,
    current: &[Order],
    payment_id: &PaymentId,
    buyer: &UserId,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(Vec<Order>, PaymentRecord), Unpayable> {
    if &checkout.buyer_id != buyer {
        return Err(Unpayable::NotYours);
    }
    if checkout.phase != Phase::Open {
        let status = checkout.phase.status().as_str();
        return Err(Unpayable::Refused(format!("checkout {} is {status}", checkout.id)));
    }
    if let Some(paid_by) = &checkout.payment_id {
        return Err(Unpayable::Refused(format!("checkout {} is paid by payment {paid_by}", checkout.id)));
    }
    let pending: Vec<Order> = current.iter().filter_map(|order| awaiting_payment(order, payment_id, now)).collect();
    if pending.is_empty() {
        return Err(Unpayable::Refused(format!("checkout {} has no order left to pay", checkout.id)));
    }
    let amount = pending
        .iter()
        .try_fold(0i64, |sum, order| sum.checked_add(order.amount))
        .ok_or_else(|| Unpayable::Refused(format!("checkout {} is too large to pay at once", checkout.id)))?;
    let payment = PaymentRecord {
        payment: Payment {
            id: payment_id.clone(),
            order_id: None,
            checkout_id: Some(checkout.id.clone()),
            amount,
            status: PaymentStatus::Requested,
            reason: None,
            refunded_amount: 0,
            orders: current.iter().filter(|order| pending.iter().any(|p| p.id == order.id)).map(share_of).collect(),
        },
        buyer_id: buyer.clone(),
        // A checkout's payment has a seller per share.
        seller_id: UserId::from(""),
        currency: checkout.currency.clone(),
        token: token.to_owned(),
        version: 1,
    };
    Ok((pending, payment))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_protocol::orders::OrderStatus;
    use bazaar_protocol::CheckoutId;

    fn order(id: &str, seller: &str, amount: i64, status: OrderStatus) -> Order {
        let now = Utc::now();
        Order {
            id: id.into(),
            buyer_id: "buyer".into(),
            seller_id: seller.into(),
            product_id: "p".into(),
            quantity: 1,
            amount,
            currency: "KRW".into(),
            status,
            created_at: now,
            updated_at: now,
            expires_at: None,
            payment_id: None,
            lines: Vec::new(),
            checkout_id: Some("c1".into()),
        }
    }

    fn open(orders: Vec<Order>) -> CheckoutRecord {
        let now = Utc::now();
        CheckoutRecord {
            phase: Phase::Open,
            total: orders.iter().map(|o| o.amount).sum(),
            currency: "KRW".into(),
            orders,
            ..CheckoutRecord::reserving(CheckoutId::from("c1"), "buyer".into(), Vec::new(), now)
        }
    }

    #[test]
    fn one_payment_pays_every_order_still_ordered_each_its_own_share() {
        let orders = vec![
            order("o1", "s1", 100, OrderStatus::Ordered),
            order("o2", "s2", 250, OrderStatus::Cancelled),
            order("o3", "s3", 30, OrderStatus::Ordered),
        ];
        let checkout = open(orders.clone());
        let (pending, payment) =
            decide(&checkout, &orders, &"pay1".into(), &"buyer".into(), "tok", Utc::now()).unwrap();
        let ids: Vec<&str> = pending.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["o1", "o3"]);
        assert!(pending.iter().all(|o| o.status == OrderStatus::PaymentPending && o.payment_id == Some("pay1".into())));
        assert_eq!(payment.payment.amount, 130);
        assert_eq!(payment.payment.reference(), "c1");
        let shares: Vec<(&str, &str, i64)> =
            payment.payment.orders.iter().map(|s| (s.order_id.as_str(), s.seller_id.as_str(), s.amount)).collect();
        assert_eq!(shares, [("o1", "s1", 100), ("o3", "s3", 30)]);
    }

    #[test]
    fn a_checkout_with_nothing_left_to_pay_or_not_the_callers_is_refused() {
        let orders = vec![order("o1", "s1", 100, OrderStatus::Paid)];
        let checkout = open(orders.clone());
        let now = Utc::now();
        assert!(matches!(
            decide(&checkout, &orders, &"pay1".into(), &"buyer".into(), "tok", now),
            Err(Unpayable::Refused(_))
        ));
        assert_eq!(
            decide(&checkout, &orders, &"pay1".into(), &"other".into(), "tok", now).unwrap_err(),
            Unpayable::NotYours
        );
        let paid = CheckoutRecord {
            payment_id: Some("pay0".into()),
            ..open(vec![order("o1", "s1", 1, OrderStatus::Ordered)])
        };
        assert!(matches!(
            decide(&paid, &paid.orders, &"pay1".into(), &"buyer".into(), "tok", now),
            Err(Unpayable::Refused(_))
        ));
    }
}
