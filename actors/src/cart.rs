//! A buyer's cart as plain functions: setting and removing lines within the cart's limit. The
//! user entity keeps the cart and calls these; the front end prices the lines when it shows them.

use bazaar_protocol::cart::CartItem;
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
}
