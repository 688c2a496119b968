//! A checkout's decisions as plain functions: which lines go into which order, and the orders
//! its reserved lines make.

use crate::product::ReservedLine;
use crate::store::checkouts::{Failure, PlannedLine};
use bazaar_protocol::orders::{Order, OrderLine, OrderStatus};
use bazaar_protocol::{CheckoutId, OrderId, ProductId, UserId};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// One line of the cart to check out, with its product's seller (which never changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CartPick {
    pub product_id: ProductId,
    pub seller_id: UserId,
    pub quantity: u32,
}

/// The lines to reserve, in product-id order (every checkout takes its products in the same
/// order, so two checkouts never wait on each other's products crosswise), each with the order it
/// goes into: one new order per seller.
pub fn plan(picks: &[CartPick]) -> Vec<PlannedLine> {
    let mut order_of: BTreeMap<&UserId, OrderId> = BTreeMap::new();
    for pick in picks {
        order_of.entry(&pick.seller_id).or_insert_with(OrderId::generate);
    }
    let mut lines: Vec<PlannedLine> = picks
        .iter()
        .map(|pick| PlannedLine {
            product_id: pick.product_id.clone(),
            seller_id: pick.seller_id.clone(),
            quantity: pick.quantity,
            order_id: order_of[&pick.seller_id].clone(),
        })
        .collect();
    lines.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    lines.dedup_by(|a, b| a.product_id == b.product_id);
    lines
}

/// The orders that `reserved` (every planned line, reserved, in plan order) make, in seller-id
/// order, with their total and currency; or why they cannot be made.
pub fn orders(
    checkout: &CheckoutId,
    buyer: &UserId,
    plan: &[PlannedLine],
    reserved: &[ReservedLine],
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<(Vec<Order>, i64, String), Failure> {
    let currency = reserved.first().map(|line| line.currency.clone()).unwrap_or_default();
    if reserved.iter().any(|line| line.currency != currency) {
        return Err(Failure::MixedCurrencies);
    }
    let mut by_order: BTreeMap<(&UserId, &OrderId), Vec<OrderLine>> = BTreeMap::new();
    for (planned, line) in plan.iter().zip(reserved) {
        let amount = line.unit_price.checked_mul(i64::from(line.quantity)).ok_or(Failure::TooLarge)?;
        by_order.entry((&planned.seller_id, &planned.order_id)).or_default().push(OrderLine {
            product_id: planned.product_id.clone(),
            quantity: line.quantity,
            unit_price: line.unit_price,
            amount,
        });
    }
    let mut orders = Vec::with_capacity(by_order.len());
    let mut total: i64 = 0;
    for ((seller, order_id), lines) in by_order {
        let amount = lines.iter().try_fold(0i64, |sum, line| sum.checked_add(line.amount)).ok_or(Failure::TooLarge)?;
        total = total.checked_add(amount).ok_or(Failure::TooLarge)?;
        let quantity =
            lines.iter().try_fold(0u32, |sum, line| sum.checked_add(line.quantity)).ok_or(Failure::TooLarge)?;
        orders.push(Order {
            id: order_id.clone(),
            buyer_id: buyer.clone(),
            seller_id: seller.clone(),
            product_id: lines[0].product_id.clone(),
            quantity,
            amount,
            currency: currency.clone(),
            status: OrderStatus::Ordered,
            created_at: now,
            updated_at: now,
            expires_at,
            payment_id: None,
            lines,
            checkout_id: Some(checkout.clone()),
        });
    }
    Ok((orders, total, currency))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(product: &str, seller: &str, quantity: u32) -> CartPick {
        CartPick { product_id: product.into(), seller_id: seller.into(), quantity }
    }

    fn reserved(line: &PlannedLine, unit_price: i64, currency: &str) -> ReservedLine {
        ReservedLine {
            product_id: line.product_id.clone(),
            seller_id: line.seller_id.clone(),
            quantity: line.quantity,
            unit_price,
            currency: currency.into(),
        }
    }

    #[test]
    fn lines_are_taken_in_product_order_with_one_order_per_seller() {
        let lines = plan(&[pick("p3", "s2", 1), pick("p1", "s1", 2), pick("p2", "s2", 3), pick("p1", "s1", 9)]);
        let products: Vec<_> = lines.iter().map(|l| l.product_id.as_str()).collect();
        assert_eq!(products, ["p1", "p2", "p3"], "sorted, each product once");
        assert_eq!(lines[1].order_id, lines[2].order_id, "one seller, one order");
        assert_ne!(lines[0].order_id, lines[1].order_id);
        assert_eq!(lines[0].quantity, 2, "the first line of a product counts");
    }

    #[test]
    fn reserved_lines_make_an_order_per_seller_with_their_amounts() {
        let lines = plan(&[pick("p1", "s2", 2), pick("p2", "s1", 1), pick("p3", "s2", 3)]);
        let taken: Vec<_> = lines.iter().map(|l| reserved(l, 100 * l.quantity as i64, "KRW")).collect();
        let now = Utc::now();
        let (orders, total, currency) =
            super::orders(&"c1".into(), &"buyer".into(), &lines, &taken, now, Some(now)).unwrap();
        assert_eq!(currency, "KRW");
        let sellers: Vec<_> = orders.iter().map(|o| o.seller_id.as_str()).collect();
        assert_eq!(sellers, ["s1", "s2"]);
        assert_eq!(orders[1].lines.len(), 2);
        assert_eq!(orders[1].amount, 200 * 2 + 300 * 3);
        assert_eq!(orders[1].quantity, 5);
        assert_eq!(total, orders[0].amount + orders[1].amount);
        assert!(orders.iter().all(|o| o.checkout_id == Some("c1".into()) && o.status == OrderStatus::Ordered));
    }

    #[test]
    fn mixed_currencies_and_overflowing_totals_make_no_orders() {
        let lines = plan(&[pick("p1", "s1", 1), pick("p2", "s2", 1)]);
        let now = Utc::now();
        let mixed = [reserved(&lines[0], 1, "KRW"), reserved(&lines[1], 1, "USD")];
        let made = super::orders(&"c".into(), &"b".into(), &lines, &mixed, now, None);
        assert_eq!(made.unwrap_err(), Failure::MixedCurrencies);
        let huge = [reserved(&lines[0], i64::MAX / 2 + 1, "KRW"), reserved(&lines[1], i64::MAX / 2 + 1, "KRW")];
        let made = super::orders(&"c".into(), &"b".into(), &lines, &huge, now, None);
        assert_eq!(made.unwrap_err(), Failure::TooLarge);
    }
}
