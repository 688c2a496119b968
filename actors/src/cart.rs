//! A buyer's cart as plain functions: setting and removing lines within the cart's limit, and
//! pricing the lines against the products as they are now. The user entity keeps the cart and
//! calls the first two; the front end reads the products and calls [`priced`].

use bazaar_protocol::cart::{Cart, CartItem, CartLine, CartTotal};
use bazaar_protocol::catalog::Product;
use bazaar_protocol::values::Quantity;
use bazaar_protocol::ProductId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Why a cart change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CartError {
    /// A new line would pass `cart_max_items`.
    #[error("the cart holds at most {0} products")]
    Full(usize),
}

/// The lines after setting `product`'s quantity to `quantity`: a line already there keeps its
/// place and its `addedAt`; a new one goes last, if the cart has room for it (`max` lines).
pub fn set_item(
    items: &[CartItem],
    product: &ProductId,
    quantity: Quantity,
    max: usize,
    now: DateTime<Utc>,
) -> Result<Vec<CartItem>, CartError> {
    let mut next = items.to_vec();
    match next.iter().position(|item| &item.product_id == product) {
        Some(at) => next[at].quantity = quantity.get(),
        None if next.len() >= max => return Err(CartError::Full(max)),
        None => next.push(CartItem { product_id: product.clone(), quantity: quantity.get(), added_at: now }),
    }
    Ok(next)
}

/// The lines without `product`'s; `None` when it had none (nothing to write).
pub fn remove_item(items: &[CartItem], product: &ProductId) -> Option<Vec<CartItem>> {
    let at = items.iter().position(|item| &item.product_id == product)?;
    let mut next = items.to_vec();
    next.remove(at);
    Some(next)
}

/// The cart of `items`, each priced by its product as it is now (`products[i]` for `items[i]`;
/// `None`: the product is gone and so is its line), with the totals per currency.
pub fn priced(items: Vec<CartItem>, products: Vec<Option<Product>>) -> Cart {
    let mut lines = Vec::with_capacity(items.len());
    let mut totals: Vec<CartTotal> = Vec::new();
    for (item, product) in items.into_iter().zip(products) {
        let Some(product) = product else { continue };
        // At most MAX_PRICE × 10^6 = 10^18: a line always fits an i64, and a total (at most
        // 1,000 lines) an i128.
        let amount = product.price.saturating_mul(i64::from(item.quantity));
        match totals.iter_mut().find(|total| total.currency == product.currency) {
            Some(total) => total.amount += i128::from(amount),
            None => totals.push(CartTotal { currency: product.currency.clone(), amount: i128::from(amount) }),
        }
        lines.push(CartLine {
            available: product.stock >= i64::from(item.quantity),
            product_id: item.product_id,
            seller_id: product.seller_id,
            name: product.name,
            quantity: item.quantity,
            unit_price: product.price,
            currency: product.currency,
            amount,
            stock: product.stock,
            added_at: item.added_at,
        });
    }
    Cart { items: lines, totals }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantity(n: i64) -> Quantity {
        Quantity::try_from(n).unwrap()
    }

    #[test]
    fn setting_a_line_adds_it_last_or_changes_it_in_place() {
        let t0 = Utc::now();
        let t1 = t0 + chrono::Duration::seconds(5);
        let one = set_item(&[], &"p1".into(), quantity(2), 10, t0).unwrap();
        let two = set_item(&one, &"p2".into(), quantity(1), 10, t1).unwrap();
        let changed = set_item(&two, &"p1".into(), quantity(7), 10, t1).unwrap();
        let lines: Vec<(&str, u32)> = changed.iter().map(|i| (i.product_id.as_str(), i.quantity)).collect();
        assert_eq!(lines, [("p1", 7), ("p2", 1)]);
        assert_eq!(changed[0].added_at, t0, "a changed quantity keeps when the line was added");
    }

    #[test]
    fn a_full_cart_takes_no_new_product_but_still_changes_its_lines() {
        let now = Utc::now();
        let full =
            set_item(&set_item(&[], &"p1".into(), quantity(1), 2, now).unwrap(), &"p2".into(), quantity(1), 2, now)
                .unwrap();
        assert_eq!(set_item(&full, &"p3".into(), quantity(1), 2, now), Err(CartError::Full(2)));
        assert_eq!(set_item(&full, &"p2".into(), quantity(4), 2, now).unwrap()[1].quantity, 4);
    }

    #[test]
    fn removing_a_line_keeps_the_others_in_order_and_an_absent_one_changes_nothing() {
        let now = Utc::now();
        let mut items = Vec::new();
        for id in ["p1", "p2", "p3"] {
            items = set_item(&items, &id.into(), quantity(1), 10, now).unwrap();
        }
        let left = remove_item(&items, &"p2".into()).unwrap();
        let ids: Vec<&str> = left.iter().map(|i| i.product_id.as_str()).collect();
        assert_eq!(ids, ["p1", "p3"]);
        assert_eq!(remove_item(&left, &"p2".into()), None);
    }

    fn product(id: &str, price: i64, currency: &str, stock: i64) -> Product {
        Product {
            id: id.into(),
            seller_id: "s1".into(),
            name: id.to_uppercase(),
            description: String::new(),
            price,
            currency: currency.into(),
            stock,
        }
    }

    #[test]
    fn lines_are_priced_now_totalled_per_currency_and_a_gone_product_drops_its_line() {
        let now = Utc::now();
        let mut items = Vec::new();
        for (id, n) in [("p1", 2), ("p2", 5), ("p3", 1), ("p4", 1)] {
            items = set_item(&items, &id.into(), quantity(n), 10, now).unwrap();
        }
        let products = vec![
            Some(product("p1", 1_000, "KRW", 9)),
            Some(product("p2", 300, "KRW", 4)),
            None,
            Some(product("p4", 7, "USD", 1)),
        ];
        let cart = priced(items, products);
        let lines: Vec<(&str, i64, bool)> =
            cart.items.iter().map(|l| (l.product_id.as_str(), l.amount, l.available)).collect();
        assert_eq!(lines, [("p1", 2_000, true), ("p2", 1_500, false), ("p4", 7, true)]);
        let totals: Vec<(&str, i128)> = cart.totals.iter().map(|t| (t.currency.as_str(), t.amount)).collect();
        assert_eq!(totals, [("KRW", 3_500), ("USD", 7)]);
    }

    #[test]
    fn a_total_may_pass_what_an_i64_holds() {
        let now = Utc::now();
        let mut items = Vec::new();
        let mut products = Vec::new();
        for i in 0..10 {
            let id = format!("p{i}");
            items = set_item(&items, &id.as_str().into(), quantity(1_000_000), 10, now).unwrap();
            products.push(Some(product(&id, 1_000_000_000_000, "KRW", 0)));
        }
        assert_eq!(priced(items, products).totals[0].amount, 10_000_000_000_000_000_000);
    }
}
