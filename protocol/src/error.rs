//! Stable error codes and the JSON error body every failed request carries.

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code; each maps to exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    EmailTaken,
    IdempotencyMismatch,
    OutOfStock,
    OrderNotCancellable,
    OrderNotPayable,
    PaymentNotRefundable,
    /// A partial refund asked for more than the payment has left to give back.
    RefundExceedsPayment,
    /// A new product in a cart that holds `cart_max_items` already.
    CartFull,
    /// A seller who has `webhook_max_endpoints` endpoints already registered another.
    TooManyWebhooks,
    /// A checkout of a cart with no lines (or only lines whose products are gone).
    CartEmpty,
    /// A checkout of a cart whose products are priced in more than one currency: one charge
    /// has one currency.
    MixedCurrencies,
    /// A webhook URL whose host is (or resolves to) an address deliveries may not go to.
    UrlNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
    Invalid,
    RateLimited,
    Unavailable,
    Internal,
    /// The request's body did not arrive in time (`http_body_read_timeout_ms`).
    RequestTimeout,
}

impl ErrorCode {
    /// The HTTP status that goes with this code.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict
            | ErrorCode::EmailTaken
            | ErrorCode::IdempotencyMismatch
            | ErrorCode::OutOfStock
            | ErrorCode::OrderNotCancellable
            | ErrorCode::OrderNotPayable
            | ErrorCode::PaymentNotRefundable
            | ErrorCode::RefundExceedsPayment
            | ErrorCode::CartFull
            | ErrorCode::TooManyWebhooks => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::Invalid | ErrorCode::UrlNotAllowed | ErrorCode::CartEmpty | ErrorCode::MixedCurrencies => 422,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
            ErrorCode::RequestTimeout => 408,
        }
    }

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::EmailTaken => "email_taken",
            ErrorCode::IdempotencyMismatch => "idempotency_mismatch",
            ErrorCode::OutOfStock => "out_of_stock",
            ErrorCode::OrderNotCancellable => "order_not_cancellable",
            ErrorCode::OrderNotPayable => "order_not_payable",
            ErrorCode::PaymentNotRefundable => "payment_not_refundable",
            ErrorCode::RefundExceedsPayment => "refund_exceeds_payment",
            ErrorCode::CartFull => "cart_full",
            ErrorCode::TooManyWebhooks => "too_many_webhooks",
            ErrorCode::UrlNotAllowed => "url_not_allowed",
            ErrorCode::CartEmpty => "cart_empty",
            ErrorCode::MixedCurrencies => "mixed_currencies",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Invalid => "invalid",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::RequestTimeout => "request_timeout",
        }
    }
}

/// The body of every error response: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// The code and the human-readable explanation.
    pub error: ErrorDetail,
}

/// What went wrong, for machines (`code`) and people (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence for people; never internals.
    pub message: String,
    /// The products a refusal concerns, for machines: those a checkout could not reserve
    /// (`out_of_stock`). Absent on every other error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub products: Option<Vec<String>>,
}

impl ErrorBody {
    /// Builds the body for a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code, message: message.into(), products: None } }
    }

    /// Names the products the refusal concerns.
    pub fn with_products(mut self, products: Vec<String>) -> Self {
        self.error.products = Some(products);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_name_matches_serde() {
        for code in [ErrorCode::OutOfStock, ErrorCode::BadRequest, ErrorCode::PaymentNotRefundable] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
