//! The product catalog: listing, reading and changing products.

use crate::ids::{ProductId, UserId};
use serde::{Deserialize, Serialize};

/// `POST /products`: raw fields, validated by the front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateProduct {
    /// 1 to 200 characters.
    pub name: String,
    /// In the smallest currency unit, at least 0.
    pub price: i64,
    /// Three upper-case letters; defaults to the node's configured currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// Units on hand, at least 0.
    pub stock: i64,
    /// Free text, up to 5000 characters.
    #[serde(default)]
    pub description: Option<String>,
}

/// `PATCH /products/{id}`: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PatchProduct {
    /// A new price.
    #[serde(default)]
    pub price: Option<i64>,
    /// A new count of units on hand (reserved units are already subtracted from it).
    #[serde(default)]
    pub stock: Option<i64>,
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new description.
    #[serde(default)]
    pub description: Option<String>,
}

/// A product as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// The product's id.
    pub id: ProductId,
    /// The seller who listed it.
    pub seller_id: UserId,
    /// Its name.
    pub name: String,
    /// Its description (empty when none was given).
    pub description: String,
    /// Unit price in the smallest currency unit.
    pub price: i64,
    /// The price's currency.
    pub currency: String,
    /// Units available to order now.
    pub stock: i64,
}
