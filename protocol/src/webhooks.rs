//! Outbound webhooks: the endpoints a seller (or the operator, by configuration) registers, the
//! deliveries of events to them and each attempt of a delivery. The body a receiver gets is the
//! event's [`crate::events::Envelope`] as the log carries it, signed as `Bazaar-Signature`
//! describes (see docs/API.md, "Webhooks").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The event types a seller's endpoint may ask for: the changes of its products, orders and their
/// payments. `*` in a request asks for all of them.
pub const SELLER_EVENTS: [&str; 10] = [
    "ProductListed",
    "StockChanged",
    "OrderPlaced",
    "OrderCancelled",
    "OrderPaid",
    "OrderRefunded",
    "PaymentRequested",
    "PaymentApproved",
    "PaymentDeclined",
    "PaymentRefunded",
];

/// The event types the operator's endpoint may ask for: new accounts, and every seller's. Chat
/// is left out: its traffic belongs on the WebSocket.
pub const OPERATOR_EVENTS: [&str; SELLER_EVENTS.len() + 1] = {
    let mut all = ["UserRegistered"; SELLER_EVENTS.len() + 1];
    let mut i = 0;
    while i < SELLER_EVENTS.len() {
        all[i + 1] = SELLER_EVENTS[i];
        i += 1;
    }
    all
};

/// `POST /webhooks`: raw, checked by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhookRequest {
    /// Where to post: `http://` or `https://`, at most 2,048 characters, no credentials. A host
    /// that is or resolves to a loopback, private, link-local or otherwise internal address is
    /// refused (422 `url_not_allowed`) unless `webhook_allow_private_addresses` is set.
    pub url: String,
    /// The event types to receive (see [`SELLER_EVENTS`]), or `["*"]` for all of them.
    pub events: Vec<String>,
}

/// An endpoint as its owner sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    /// The endpoint's id.
    pub id: String,
    /// Where deliveries are posted.
    pub url: String,
    /// The event types it receives, spelled out (never `*`).
    pub events: Vec<String>,
    /// When it was registered; only events decided from then on are delivered to it.
    pub created_at: DateTime<Utc>,
    /// The signing secret (`whsec_...`): shown only in the answer to the registration and to a
    /// rotation, never again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeliveryStatus {
    /// Not yet answered with a 2xx; tried again at `nextAttemptAt`.
    Pending,
    /// A 2xx answered it.
    Delivered,
    /// No 2xx within `webhook_retry_for`; re-send it to try again.
    Failed,
}

impl DeliveryStatus {
    /// The spelling stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::Delivered => "DELIVERED",
            DeliveryStatus::Failed => "FAILED",
        }
    }

    /// The status spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "PENDING" => Some(DeliveryStatus::Pending),
            "DELIVERED" => Some(DeliveryStatus::Delivered),
            "FAILED" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// One try of a delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    /// When it was sent.
    pub at: DateTime<Utc>,
    /// The receiver's HTTP status; absent when none came (refused, timed out, address refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Why it failed without a status (or with a status that is not 2xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the try took, in milliseconds.
    pub duration_ms: u64,
}

/// One event's delivery to one endpoint, with its attempts (the most recent
/// `webhook_attempts_shown`, newest last).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    /// The delivery's id (`Bazaar-Delivery-Id`).
    pub id: String,
    /// The endpoint.
    pub endpoint_id: String,
    /// The event delivered (`id` of the body; `Bazaar-Event-Id`): receivers de-duplicate by it.
    pub event_id: String,
    /// Its type.
    pub event_type: String,
    /// Where the delivery is.
    pub status: DeliveryStatus,
    /// How many tries were made.
    pub attempt_count: u32,
    /// When the next try is due (PENDING only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the delivery was created (the event reached the endpoint's node).
    pub created_at: DateTime<Utc>,
    /// The tries, oldest first.
    pub attempts: Vec<DeliveryAttempt>,
}
