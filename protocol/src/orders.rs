//! Orders: the placing body, the order view, and the status machine the API allows.

use crate::ids::{CheckoutId, EventId, OrderId, PaymentId, ProductId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `POST /orders`: raw fields, validated by the front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrderRequest {
    /// What to buy.
    pub product_id: String,
    /// How many units, at least 1.
    pub quantity: i64,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Ordered,
    PaymentPending,
    Paid,
    Refunded,
    Cancelled,
}

impl OrderStatus {
    /// Every status, for listings and tests.
    pub const ALL: [OrderStatus; 5] = [
        OrderStatus::Ordered,
        OrderStatus::PaymentPending,
        OrderStatus::Paid,
        OrderStatus::Refunded,
        OrderStatus::Cancelled,
    ];

    /// Whether the API allows going from `self` to `next`:
    /// ORDERED → PAYMENT_PENDING → PAID → REFUNDED, and CANCELLED from ORDERED or PAYMENT_PENDING.
    pub fn may_become(self, next: OrderStatus) -> bool {
        use OrderStatus::*;
        matches!(
            (self, next),
            (Ordered, PaymentPending)
                | (Ordered, Cancelled)
                | (PaymentPending, Paid)
                | (PaymentPending, Cancelled)
                | (Paid, Refunded)
        )
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Ordered => "ORDERED",
            OrderStatus::PaymentPending => "PAYMENT_PENDING",
            OrderStatus::Paid => "PAID",
            OrderStatus::Refunded => "REFUNDED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One product of an order: what it costs is fixed when the order is placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    /// What was ordered.
    pub product_id: ProductId,
    /// How many units.
    pub quantity: u32,
    /// The product's price when the order was placed.
    pub unit_price: i64,
    /// `unitPrice` × `quantity`.
    pub amount: i64,
}

/// An order as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Order {
    /// The order's id.
    pub id: OrderId,
    /// Who ordered.
    pub buyer_id: UserId,
    /// Who sells.
    pub seller_id: UserId,
    /// What was ordered: the first line's product (an order placed with `POST /orders` has one
    /// line; one made by a checkout has one line per product of its seller).
    pub product_id: ProductId,
    /// The units of every line together.
    pub quantity: u32,
    /// What the order costs: its lines' amounts together.
    pub amount: i64,
    /// The amount's currency.
    pub currency: String,
    /// Where the order is.
    pub status: OrderStatus,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When its reservation hold ends: an order still ORDERED (no payment requested) then is
    /// cancelled by the system (reason `reservation_expired`) and its stock released. Absent on
    /// orders placed before holds existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The payment that is paying (or paid) for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// What it holds, in product-id order. Read [`Order::items`], not this: events written before
    /// lines existed have none.
    #[serde(default)]
    // Always sent, though read with a default.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub lines: Vec<OrderLine>,
    /// The checkout that made it, if it was made by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<CheckoutId>,
}

impl Order {
    /// The order's lines: those recorded, or for an order from before lines existed the one line
    /// its product, quantity and amount make.
    pub fn items(&self) -> Vec<OrderLine> {
        if !self.lines.is_empty() {
            return self.lines.clone();
        }
        let unit_price = if self.quantity == 0 { 0 } else { self.amount / i64::from(self.quantity) };
        vec![OrderLine {
            product_id: self.product_id.clone(),
            quantity: self.quantity,
            unit_price,
            amount: self.amount,
        }]
    }
}

/// Who made a change of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChangedBy {
    Buyer,
    Seller,
    /// bazaar itself or the payment provider: a hold that ended, a charge's outcome, a refund
    /// found at the provider.
    System,
}

/// One change of an order, as its timeline shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    /// The stored event's id (unique; the same in the event log).
    pub id: EventId,
    /// The event's type: `OrderPlaced`, `PaymentRequested`, `PaymentApproved`, `PaymentDeclined`,
    /// `OrderPaid`, `PaymentRefunded`, `OrderRefunded` or `OrderCancelled`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// Who made it.
    pub by: ChangedBy,
    /// The order's status after it.
    pub status: OrderStatus,
    /// Why, where the event says: a cancellation's or a decline's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Money moved by it: the charge's amount for a payment's request and approval, what a refund
    /// gave back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// The payment it concerns, for payment events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
}

/// `GET /orders/{id}/events`: every change of an order, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrderTimeline {
    /// The order.
    pub order_id: OrderId,
    /// Its changes, oldest first.
    pub events: Vec<OrderEvent>,
    /// Whether changes past `order_timeline_max_events` were left out (the newest ones).
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_leaves_a_final_status() {
        for next in OrderStatus::ALL {
            assert!(!OrderStatus::Cancelled.may_become(next));
            assert!(!OrderStatus::Refunded.may_become(next));
        }
    }

    #[test]
    fn wire_names_parse_back() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{}\"", status.as_str()));
        }
    }
}
