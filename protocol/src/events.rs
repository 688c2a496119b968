//! Events: what entities decided, as the JSON envelope that the outbox, the embedded log and
//! Kafka carry (`{"id","type","entityId","seq","at","data"}`).

use crate::auth::UserView;
use crate::catalog::Product;
use crate::chat::{ChatMessage, Room};
use crate::ids::{EventId, OrderId, ProductId, UserId};
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
        /// A checkout's payment: the other orders it pays, each now PAYMENT_PENDING as `order`
        /// is; absent for an order's own payment.
        #[serde(default, rename = "moreOrders", skip_serializing_if = "Vec::is_empty")]
        more_orders: Vec<Order>,
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
        /// The order whose share this refund gives back (its seller asked); absent in events
        /// from before checkout payments, and for a refund found at the provider.
        #[serde(default, rename = "orderId", skip_serializing_if = "Option::is_none")]
        order_id: Option<OrderId>,
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
    /// The sellers the event concerns, when the event alone says: a product's or an order's
    /// seller, each seller a checkout's payment pays (for a refund, the one whose share it gave
    /// back). `None` when the event does not carry them (a stock change, payments from before
    /// checkout payments).
    pub fn sellers(&self) -> Option<Vec<UserId>> {
        match self {
            Event::ProductListed { product } => Some(vec![product.seller_id.clone()]),
            Event::OrderPlaced { order }
            | Event::OrderCancelled { order, .. }
            | Event::OrderPaid { order }
            | Event::OrderRefunded { order } => Some(vec![order.seller_id.clone()]),
            Event::PaymentRequested { order, more_orders, .. } => {
                Some(std::iter::once(order).chain(more_orders).map(|o| o.seller_id.clone()).collect())
            }
            Event::PaymentApproved { payment } | Event::PaymentDeclined { payment } => {
                (!payment.orders.is_empty()).then(|| payment.orders.iter().map(|s| s.seller_id.clone()).collect())
            }
            Event::PaymentRefunded { payment, order_id, .. } => {
                let shares = payment.orders.iter().filter(|s| order_id.as_ref().is_none_or(|o| o == &s.order_id));
                let sellers: Vec<UserId> = shares.map(|s| s.seller_id.clone()).collect();
                (!sellers.is_empty()).then_some(sellers)
            }
            Event::StockChanged(_)
            | Event::UserRegistered { .. }
            | Event::ChatRoomOpened { .. }
            | Event::ChatMessagePosted { .. } => None,
        }
    }

    /// The event as seller `seller` may see it: of a checkout's payment, only the shares and the
    /// order of that seller (the other sellers' orders are none of theirs); `None` for every other
    /// event, which a seller sees as it is (so it is not copied for each seller).
    pub fn seen_by_seller(&self, seller: &UserId) -> Option<Event> {
        let shared = |payment: &Payment| payment.checkout_id.is_some();
        Some(match self {
            Event::PaymentRequested { payment, order, more_orders } if shared(payment) => {
                let mine = std::iter::once(order).chain(more_orders).find(|o| &o.seller_id == seller).unwrap_or(order);
                Event::PaymentRequested {
                    payment: payment.seen_by_seller(seller),
                    order: mine.clone(),
                    more_orders: Vec::new(),
                }
            }
            Event::PaymentApproved { payment } if shared(payment) => {
                Event::PaymentApproved { payment: payment.seen_by_seller(seller) }
            }
            Event::PaymentDeclined { payment } if shared(payment) => {
                Event::PaymentDeclined { payment: payment.seen_by_seller(seller) }
            }
            Event::PaymentRefunded { payment, amount, at_provider, order_id } if shared(payment) => {
                Event::PaymentRefunded {
                    payment: payment.seen_by_seller(seller),
                    amount: *amount,
                    at_provider: *at_provider,
                    order_id: order_id.clone(),
                }
            }
            // An order's own payment, and every other event, hide nothing from its seller.
            Event::PaymentRequested { .. }
            | Event::PaymentApproved { .. }
            | Event::PaymentDeclined { .. }
            | Event::PaymentRefunded { .. }
            | Event::UserRegistered { .. }
            | Event::ProductListed { .. }
            | Event::StockChanged(_)
            | Event::OrderPlaced { .. }
            | Event::OrderCancelled { .. }
            | Event::OrderPaid { .. }
            | Event::OrderRefunded { .. }
            | Event::ChatRoomOpened { .. }
            | Event::ChatMessagePosted { .. } => return None,
        })
    }

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

    fn order(id: &str, seller: &str) -> Order {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Order {
            id: id.into(),
            buyer_id: "b".into(),
            seller_id: seller.into(),
            product_id: "p".into(),
            quantity: 1,
            amount: 10,
            currency: "KRW".into(),
            status: crate::orders::OrderStatus::PaymentPending,
            created_at: at,
            updated_at: at,
            expires_at: None,
            payment_id: Some("pay".into()),
            lines: Vec::new(),
            checkout_id: Some("c".into()),
        }
    }

    fn checkout_payment() -> Payment {
        let share = |order: &str, seller: &str| crate::payments::PaymentShare {
            order_id: order.into(),
            seller_id: seller.into(),
            amount: 10,
            refunded_amount: 0,
        };
        Payment {
            id: "pay".into(),
            order_id: None,
            checkout_id: Some("c".into()),
            amount: 20,
            status: crate::payments::PaymentStatus::Requested,
            reason: None,
            refunded_amount: 0,
            orders: vec![share("o1", "s1"), share("o2", "s2")],
        }
    }

    #[test]
    fn a_checkouts_payment_concerns_each_seller_and_shows_each_only_their_own_part() {
        let requested = Event::PaymentRequested {
            payment: checkout_payment(),
            order: order("o1", "s1"),
            more_orders: vec![order("o2", "s2")],
        };
        assert_eq!(requested.sellers(), Some(vec!["s1".into(), "s2".into()]));
        let Some(Event::PaymentRequested { payment, order, more_orders }) = requested.seen_by_seller(&"s2".into())
        else {
            unreachable!()
        };
        assert_eq!((order.id.as_str(), more_orders.len()), ("o2", 0));
        assert_eq!(payment.orders.iter().map(|s| s.seller_id.as_str()).collect::<Vec<_>>(), ["s2"]);

        let refunded = Event::PaymentRefunded {
            payment: checkout_payment(),
            amount: Some(3),
            at_provider: false,
            order_id: Some("o2".into()),
        };
        assert_eq!(refunded.sellers(), Some(vec!["s2".into()]), "a refund concerns the seller who gave it");
        let approved = Event::PaymentApproved { payment: checkout_payment() };
        assert_eq!(approved.sellers().map(|s| s.len()), Some(2));
        // A payment from before shares does not say: its order is looked up.
        let old = Event::PaymentApproved { payment: Payment { orders: Vec::new(), ..checkout_payment() } };
        assert_eq!(old.sellers(), None);
        // An order's own payment hides nothing from its seller: nothing to narrow.
        let own = Event::PaymentApproved { payment: Payment { checkout_id: None, ..checkout_payment() } };
        assert_eq!(own.seen_by_seller(&"s1".into()), None);
    }
}
