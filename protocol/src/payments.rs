//! Payments: the request body, the payment view and its status machine.

use crate::ids::{CheckoutId, OrderId, PaymentId, UserId};
use serde::{Deserialize, Serialize};

/// `POST /payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    /// The order to pay (or `checkoutId`: exactly one of the two).
    // Left out when absent: the body is the idempotency fingerprint, and `{orderId, method}` must
    // hash as it did before checkout payments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The checkout whose orders to pay with one charge (or `orderId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<String>,
    /// How to pay.
    pub method: PaymentMethod,
}

/// A means of payment; only tokenised cards for now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PaymentMethod {
    /// Must be `card`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The card token from the payment provider.
    pub token: String,
}

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Requested,
    Approved,
    Declined,
    Refunded,
}

impl PaymentStatus {
    /// Every status, for tests.
    pub const ALL: [PaymentStatus; 4] =
        [PaymentStatus::Requested, PaymentStatus::Approved, PaymentStatus::Declined, PaymentStatus::Refunded];

    /// Whether the API allows going from `self` to `next`:
    /// REQUESTED → APPROVED → REFUNDED, or REQUESTED → DECLINED.
    pub fn may_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!((self, next), (Requested, Approved) | (Requested, Declined) | (Approved, Refunded))
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Requested => "REQUESTED",
            PaymentStatus::Approved => "APPROVED",
            PaymentStatus::Declined => "DECLINED",
            PaymentStatus::Refunded => "REFUNDED",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// A payment as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// The payment's id.
    pub id: PaymentId,
    /// The order it pays; absent on a checkout's payment, which pays the `orders` below.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<OrderId>,
    /// The checkout whose orders it pays, with one charge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_id: Option<CheckoutId>,
    /// The amount charged, in the order's currency.
    pub amount: i64,
    /// Where it is.
    pub status: PaymentStatus,
    /// Why it was declined (`card_declined`, `gateway_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How much of `amount` has been given back so far: the payment stays APPROVED while this
    /// is under `amount` and becomes REFUNDED when it reaches it. Absent (0) in events written
    /// before partial refunds existed.
    #[serde(default)]
    // Always sent, though read with a default.
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub refunded_amount: i64,
    /// Each order it pays, with its part of the amount and of what was given back: one for an
    /// order's payment, one per seller for a checkout's (a seller sees only their own). Absent
    /// in events written before checkout payments existed (the payment's one order).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub orders: Vec<PaymentShare>,
}

/// One order's part of a payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PaymentShare {
    pub order_id: OrderId,
    /// The order's seller: the one who may refund this share.
    pub seller_id: UserId,
    /// The order's amount: what this share was charged.
    pub amount: i64,
    /// How much of this share was given back; at most `amount`.
    pub refunded_amount: i64,
}

impl PaymentShare {
    /// What may still be given back of this share.
    pub fn refundable(&self) -> i64 {
        self.amount - self.refunded_amount
    }
}

impl Payment {
    /// What may still be given back.
    pub fn refundable(&self) -> i64 {
        self.amount - self.refunded_amount
    }

    /// The id the gateway knows the charge by: the order's, or the checkout's for a checkout's
    /// payment.
    pub fn reference(&self) -> &str {
        match (&self.order_id, &self.checkout_id) {
            (Some(order), _) => order.as_str(),
            (None, Some(checkout)) => checkout.as_str(),
            (None, None) => self.id.as_str(),
        }
    }

    /// The orders it pays.
    pub fn order_ids(&self) -> Vec<OrderId> {
        if self.orders.is_empty() {
            return self.order_id.iter().cloned().collect();
        }
        self.orders.iter().map(|share| share.order_id.clone()).collect()
    }

    /// Whether order `order`'s part has been given back in full (for payments from before shares:
    /// whether the payment is REFUNDED).
    pub fn refunded_in_full(&self, order: &OrderId) -> bool {
        match self.orders.iter().find(|share| &share.order_id == order) {
            Some(share) => share.refunded_amount >= share.amount,
            None => self.orders.is_empty() && self.status == PaymentStatus::Refunded,
        }
    }

    /// The payment as seller `seller` sees it: of a checkout's payment, only the shares of their
    /// own orders, and the amount, what was given back and the status of those shares alone (what
    /// the other sellers sold and refunded is none of theirs). An order's payment as it is.
    pub fn seen_by_seller(&self, seller: &UserId) -> Payment {
        if self.checkout_id.is_none() {
            return self.clone();
        }
        let orders: Vec<PaymentShare> =
            self.orders.iter().filter(|share| &share.seller_id == seller).cloned().collect();
        let amount = orders.iter().map(|share| share.amount).sum();
        let refunded_amount = orders.iter().map(|share| share.refunded_amount).sum();
        let used_up = !orders.is_empty() && orders.iter().all(|share| share.refundable() <= 0);
        let status = match self.status {
            PaymentStatus::Approved | PaymentStatus::Refunded if used_up => PaymentStatus::Refunded,
            PaymentStatus::Approved | PaymentStatus::Refunded => PaymentStatus::Approved,
            status => status,
        };
        Payment { amount, refunded_amount, status, orders, ..self.clone() }
    }
}

/// `POST /payments/{id}/refund`'s optional body: no body, an empty body or `{}` refunds all that
/// is left.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefundRequest {
    /// How much to give back, in the payment's currency; absent: all that is left.
    #[serde(default)]
    pub amount: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_payments_body_reads_as_it_did_before_checkout_payments() {
        // The body is the idempotency fingerprint: a retry across the upgrade must hash the same.
        let body = PaymentRequest {
            order_id: Some("o1".into()),
            checkout_id: None,
            method: PaymentMethod { kind: "card".into(), token: "tok".into() },
        };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"orderId":"o1","method":{"type":"card","token":"tok"}}"#);
    }

    #[test]
    fn a_seller_sees_only_their_part_of_a_checkouts_payment() {
        let share = |order: &str, seller: &str, amount, refunded_amount| PaymentShare {
            order_id: order.into(),
            seller_id: seller.into(),
            amount,
            refunded_amount,
        };
        let payment = Payment {
            id: "pay".into(),
            order_id: None,
            checkout_id: Some("c".into()),
            amount: 30,
            status: PaymentStatus::Approved,
            reason: None,
            refunded_amount: 24,
            orders: vec![share("o1", "s1", 10, 4), share("o2", "s2", 20, 20)],
        };
        let first = payment.seen_by_seller(&"s1".into());
        assert_eq!((first.amount, first.refunded_amount, first.status), (10, 4, PaymentStatus::Approved));
        let second = payment.seen_by_seller(&"s2".into());
        assert_eq!((second.amount, second.refunded_amount, second.status), (20, 20, PaymentStatus::Refunded));
        assert_eq!(second.orders, [share("o2", "s2", 20, 20)]);
        // An order's own payment is the seller's whole.
        let own = Payment { checkout_id: None, order_id: Some("o1".into()), ..payment.clone() };
        assert_eq!(own.seen_by_seller(&"s1".into()), own);
    }
}
