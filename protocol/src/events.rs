//! Events: what entities decided, as the JSON envelope that the outbox, the embedded log and
//! Kafka carry (`{"id","type","entityId","seq","at","data"}`).

use crate::auth::UserView;
use crate::catalog::Product;
use crate::chat::{ChatMessage, Room};
use crate::ids::{EventId, OrderId, ProductId};
use crate::orders::Order;
use crate::payments::Payment;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One event with its metadata, as stored and published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Unique; consumers de-duplicate by it.
    pub id: EventId,
    /// The entity the event belongs to (the room for chat); the record key on Kafka.
    pub entity_id: String,
    /// The entity's version after this event, so one entity's events are ordered.
    pub seq: i64,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// The event's type and data.
    #[serde(flatten)]
    pub event: Event,
}

impl Envelope {
    /// Wraps an event of an entity at a version.
    pub fn new(entity_id: impl Into<String>, seq: i64, at: DateTime<Utc>, event: Event) -> Self {
        Self { id: EventId::generate(), entity_id: entity_id.into(), seq, at, event }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum Event {
    UserRegistered {
        user: UserView,
    },
    ProductListed {
        product: Product,
    },
    StockChanged(StockChanged),
    OrderPlaced {
        order: Order,
    },
    OrderCancelled {
        order: Order,
        reason: String,
    },
    PaymentRequested {
        payment: Payment,
        order: Order,
    },
    PaymentApproved {
        payment: Payment,
    },
    PaymentDeclined {
        payment: Payment,
    },
    PaymentRefunded {
        payment: Payment,
        /// What this refund gives back (the payment carries the total so far); absent in events
        /// written before partial refunds, which gave back the whole payment.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        amount: Option<i64>,
        /// The refund was made at the provider (its dashboard, say) and found there by
        /// reconciliation, not asked for through bazaar; absent (false) otherwise.
        #[serde(default, rename = "atProvider", skip_serializing_if = "std::ops::Not::not")]
        at_provider: bool,
    },
    OrderPaid {
        order: Order,
    },
    OrderRefunded {
        order: Order,
    },
    ChatRoomOpened {
        room: Room,
    },
    ChatMessagePosted {
        message: ChatMessage,
    },
}

/// A change of a product's stock and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockChanged {
    /// The product.
    pub product_id: ProductId,
    /// Units available after the change.
    pub stock: i64,
    /// The change (negative when reserved).
    pub delta: i64,
    /// The order that reserved or released the units, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
}

/// The event-log topics.
pub mod topics {
    /// Accounts.
    pub const USERS: &str = "bazaar.users";
    /// Orders, and the catalog whose stock they reserve.
    pub const ORDERS: &str = "bazaar.orders";
    /// Payments.
    pub const PAYMENTS: &str = "bazaar.payments";
    /// Chat rooms and messages.
    pub const CHAT: &str = "bazaar.chat";
    /// Every topic, for creating them at startup.
    pub const ALL: [&str; 4] = [USERS, ORDERS, PAYMENTS, CHAT];
}

impl Event {
    /// The type name on the wire (`OrderPlaced`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::UserRegistered { .. } => "UserRegistered",
            Event::ProductListed { .. } => "ProductListed",
            Event::StockChanged(_) => "StockChanged",
            Event::OrderPlaced { .. } => "OrderPlaced",
            Event::OrderCancelled { .. } => "OrderCancelled",
            Event::PaymentRequested { .. } => "PaymentRequested",
            Event::PaymentApproved { .. } => "PaymentApproved",
            Event::PaymentDeclined { .. } => "PaymentDeclined",
            Event::PaymentRefunded { .. } => "PaymentRefunded",
            Event::OrderPaid { .. } => "OrderPaid",
            Event::OrderRefunded { .. } => "OrderRefunded",
            Event::ChatRoomOpened { .. } => "ChatRoomOpened",
            Event::ChatMessagePosted { .. } => "ChatMessagePosted",
        }
    }

    /// The topic the event is published on.
    pub fn topic(&self) -> &'static str {
        match self {
            Event::UserRegistered { .. } => topics::USERS,
            Event::ProductListed { .. }
            | Event::StockChanged(_)
            | Event::OrderPlaced { .. }
            | Event::OrderCancelled { .. }
            | Event::OrderPaid { .. }
            | Event::OrderRefunded { .. } => topics::ORDERS,
            Event::PaymentRequested { .. }
            | Event::PaymentApproved { .. }
            | Event::PaymentDeclined { .. }
            | Event::PaymentRefunded { .. } => topics::PAYMENTS,
            Event::ChatRoomOpened { .. } | Event::ChatMessagePosted { .. } => topics::CHAT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_the_documented_shape() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let env = Envelope::new(
            "p1",
            2,
            at,
            Event::StockChanged(StockChanged { product_id: "p1".into(), stock: 4, delta: -1, order_id: None }),
        );
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["type"], "StockChanged");
        assert_eq!(json["entityId"], "p1");
        assert_eq!(json["seq"], 2);
        assert_eq!(json["data"]["stock"], 4);
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
    }
}
