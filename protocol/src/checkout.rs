//! Checkout: a buyer's cart turned into one order per seller, all reserved or none.

use crate::ids::{CheckoutId, PaymentId, UserId};
use crate::orders::Order;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a checkout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CheckoutStatus {
    /// Its lines are being reserved (a request in flight, or one cut off that a retry with the
    /// same `Idempotency-Key`, or the sweep after `checkout_timeout_ms`, finishes).
    Reserving,
    /// Every line is reserved and its orders exist.
    Open,
    /// A line could not be reserved: nothing is held and no order exists.
    Failed,
}

impl CheckoutStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckoutStatus::Reserving => "RESERVING",
            CheckoutStatus::Open => "OPEN",
            CheckoutStatus::Failed => "FAILED",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        [CheckoutStatus::Reserving, CheckoutStatus::Open, CheckoutStatus::Failed]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// A checkout as its buyer sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Checkout {
    /// The checkout's id.
    pub id: CheckoutId,
    /// Who checked out.
    pub buyer_id: UserId,
    /// Where it is; a checkout answered to a client is `OPEN`.
    pub status: CheckoutStatus,
    /// One order per seller, in seller-id order, each with its lines, as they are now.
    pub orders: Vec<Order>,
    /// The orders' amounts together.
    pub total: i64,
    /// The one currency of every line.
    pub currency: String,
    /// When the orders' reservation hold ends (each order still ORDERED then is cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The one payment of its orders, once paid with `POST /payments {checkoutId}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_parse_back() {
        for status in [CheckoutStatus::Reserving, CheckoutStatus::Open, CheckoutStatus::Failed] {
            assert_eq!(CheckoutStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{}\"", status.as_str()));
        }
    }
}
