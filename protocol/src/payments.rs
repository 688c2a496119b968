//! Payments: the request body, the payment view and its status machine.

use crate::ids::{OrderId, PaymentId};
use serde::{Deserialize, Serialize};

/// `POST /payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequest {
    /// The order to pay.
    pub order_id: String,
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
    /// The order it pays.
    pub order_id: OrderId,
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
}

impl Payment {
    /// What may still be given back.
    pub fn refundable(&self) -> i64 {
        self.amount - self.refunded_amount
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
