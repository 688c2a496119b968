//! A buyer's cart: the body that sets a line, the lines as stored, and the cart as the buyer sees
//! it, priced as of now. A cart reserves nothing.

use crate::ids::{ProductId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `PUT /cart/items/{productId}`: raw, validated by the front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetCartItemRequest {
    /// How many units, 1 to 1,000,000; it replaces the line's quantity.
    pub quantity: i64,
}

/// A line as the cart keeps it: what and how many, no price (prices are read when shown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CartItem {
    /// The product.
    pub product_id: ProductId,
    /// How many units.
    pub quantity: u32,
    /// When the line was added (a changed quantity keeps it).
    pub added_at: DateTime<Utc>,
}

/// A line as the buyer sees it, priced as of now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CartLine {
    /// The product.
    pub product_id: ProductId,
    /// Its seller.
    pub seller_id: UserId,
    /// Its name now.
    pub name: String,
    /// How many units.
    pub quantity: u32,
    /// The unit price now.
    pub unit_price: i64,
    /// The price's currency.
    pub currency: String,
    /// `unitPrice × quantity`.
    pub amount: i64,
    /// Units the product has for sale now.
    pub stock: i64,
    /// Whether the stock covers the quantity now (nothing is reserved by a cart).
    pub available: bool,
    /// When the line was added.
    pub added_at: DateTime<Utc>,
}

/// What the lines in one currency add up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CartTotal {
    /// The currency.
    pub currency: String,
    /// The sum of the lines' amounts in it. Wider than a line's amount: up to 1,000 lines of at
    /// most 10^18 each.
    pub amount: i128,
}

/// `GET /cart`: the buyer's cart, oldest line first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Cart {
    /// The lines.
    pub items: Vec<CartLine>,
    /// The lines' sum per currency (one entry per currency present; none when empty).
    pub totals: Vec<CartTotal>,
}
