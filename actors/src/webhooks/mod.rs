//! Signed outbound webhooks. A seller registers endpoints ([`Webhooks`], the front end's way in);
//! the [`dispatch`] consumer reads the event log and writes one delivery per event and endpoint
//! that asked for it (a unique key per pair, so reading the log again after a crash or a
//! takeover delivers nothing twice); the [`sender`] posts due deliveries, signed
//! ([`signature`]), to addresses that passed [`address`], and retries with backoff until one
//! answers 2xx or `retry_for` has passed. Every attempt is logged and any delivery can be sent
//! again. Deliveries live in SQL, so they survive restarts, and in a cluster one node sends
//! (the rendezvous owner of [`sender::ROLE`]): at least once, with the event id to de-duplicate.

pub mod address;
pub mod dispatch;
pub mod sender;
pub mod signature;

use crate::store::webhooks::{self as rows, EndpointRow};
use crate::store::{Store, StoreError};
use bazaar_protocol::webhooks::{CreateWebhookRequest, WebhookDelivery, WebhookEndpoint, SELLER_EVENTS};
use bazaar_protocol::Page;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The endpoint the operator configures, which receives events of every seller.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorEndpoint {
    /// Where to post. Trusted: it is not held to the public-address rule.
    pub url: String,
    /// The signing secret.
    pub secret: String,
    /// The event types it receives.
    pub events: Vec<String>,
}

/// How webhooks behave (README, "Webhooks").
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// How long a delivery is retried before it is FAILED (`webhook_retry_for_secs`).
    pub retry_for: Duration,
    /// The wait before the first retry; it doubles with each one (`webhook_retry_base_ms`).
    pub retry_base: Duration,
    /// The longest wait between two tries (`webhook_retry_max_ms`).
    pub retry_max: Duration,
    /// How long one attempt may take, connection included (`webhook_timeout_ms`).
    pub timeout: Duration,
    /// Whether URLs may point at loopback, private and link-local addresses.
    pub allow_private: bool,
    /// The most live endpoints one seller has.
    pub max_endpoints: usize,
    /// Attempts in flight at once.
    pub max_in_flight: usize,
    /// How often the sender looks for due deliveries when nothing woke it.
    pub poll: Duration,
    /// How long a rotated-out secret still signs (a second `v1`).
    pub secret_overlap: Duration,
    /// How long finished deliveries and their attempts are kept.
    pub retention: Duration,
    /// The operator's endpoint, if configured.
    pub operator: Option<OperatorEndpoint>,
}

impl std::fmt::Debug for OperatorEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorEndpoint")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .finish()
    }
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(3 * 24 * 3600),
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            timeout: Duration::from_secs(10),
            allow_private: false,
            max_endpoints: 10,
            max_in_flight: 64,
            poll: Duration::from_secs(1),
            secret_overlap: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            operator: None,
        }
    }
}

/// The id of the operator's endpoint.
pub const OPERATOR_ENDPOINT_ID: &str = "operator";

/// The attempts shown with each delivery, the most recent.
pub const ATTEMPTS_SHOWN: u32 = 25;

/// Why a webhook request was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// No such endpoint or delivery of this seller's.
    #[error("webhook not found")]
    NotFound,
    /// The seller has `max_endpoints` already.
    #[error("a seller registers at most {0} webhook endpoints")]
    TooMany(usize),
    /// The URL's host is internal.
    #[error("{0}")]
    UrlNotAllowed(String),
    /// A field is out of shape.
    #[error("{0}")]
    Invalid(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The webhooks of this node's store, for the front end.
#[derive(Clone)]
pub struct Webhooks {
    store: Store,
    settings: Arc<WebhookSettings>,
    /// Wakes this node's sender (a re-send is due now).
    wake: Arc<Notify>,
}

/// The event types a request names, spelled out: `*` is every seller event; each must be one
/// of them, at least one, duplicates dropped (the order of [`SELLER_EVENTS`]).
pub fn event_types(requested: &[String]) -> Result<Vec<String>, WebhookError> {
    if requested.is_empty() {
        return Err(WebhookError::Invalid("events: name at least one event type, or \"*\" for all".into()));
    }
    if requested.len() > 2 * SELLER_EVENTS.len() {
        return Err(WebhookError::Invalid(format!("events: at most {} entries", 2 * SELLER_EVENTS.len())));
    }
    if let Some(unknown) = requested.iter().find(|e| *e != "*" && !SELLER_EVENTS.contains(&e.as_str())) {
        return Err(WebhookError::Invalid(format!(
            "events: {unknown:?} is not an event type; one of {}, or \"*\"",
            SELLER_EVENTS.join(", ")
        )));
    }
    let all = requested.iter().any(|e| e == "*");
    Ok(SELLER_EVENTS
        .iter()
        .filter(|known| all || requested.iter().any(|e| e == *known))
        .map(|e| (*e).to_owned())
        .collect())
}

fn view(row: &EndpointRow, with_secret: bool) -> WebhookEndpoint {
    WebhookEndpoint {
        id: row.id.clone(),
        url: row.url.clone(),
        events: row.events.clone(),
        created_at: row.created_at,
        secret: with_secret.then(|| row.secret.clone()),
    }
}

impl Webhooks {
    /// Webhooks kept in `store`, waking `wake` when a delivery becomes due.
    pub fn new(store: Store, settings: Arc<WebhookSettings>, wake: Arc<Notify>) -> Self {
        Self { store, settings, wake }
    }

    /// Registers an endpoint for `owner`; the answer is the only one that shows its secret.
    /// It receives the events decided from its registration on.
    pub async fn register(&self, owner: &str, request: CreateWebhookRequest) -> Result<WebhookEndpoint, WebhookError> {
        let events = event_types(&request.events)?;
        let url = address::check(&request.url, self.settings.allow_private, self.settings.timeout).await.map_err(
            |refusal| match refusal {
                address::UrlRefusal::NotAllowed(why) => WebhookError::UrlNotAllowed(format!("url: {why}")),
                address::UrlRefusal::Malformed(why) => WebhookError::Invalid(format!("url: {why}")),
            },
        )?;
        let row = EndpointRow {
            id: uuid::Uuid::now_v7().to_string(),
            owner_id: owner.to_owned(),
            url: url.to_string(),
            events,
            secret: signature::new_secret(),
            previous_secret: None,
            previous_until: None,
            // Read after the address check (which may wait on DNS), just before the row is
            // written: events decided from the answer on are the endpoint's.
            created_at: Utc::now(),
        };
        if !rows::insert_endpoint(&self.store, &row, self.settings.max_endpoints).await? {
            return Err(WebhookError::TooMany(self.settings.max_endpoints));
        }
        Ok(view(&row, true))
    }

    /// `owner`'s endpoints, oldest first, without their secrets.
    pub async fn list(&self, owner: &str) -> Result<Vec<WebhookEndpoint>, WebhookError> {
        Ok(rows::endpoints_of(&self.store, owner).await?.iter().map(|row| view(row, false)).collect())
    }

    /// Deletes `owner`'s endpoint `id`: nothing more is sent to it.
    pub async fn delete(&self, owner: &str, id: &str, now: DateTime<Utc>) -> Result<(), WebhookError> {
        match rows::delete_endpoint(&self.store, owner, id, now).await? {
            true => Ok(()),
            false => Err(WebhookError::NotFound),
        }
    }

    /// Gives `owner`'s endpoint `id` a new secret, shown in this answer only; the old one keeps
    /// signing, as a second signature, for `secret_overlap`.
    pub async fn rotate(&self, owner: &str, id: &str, now: DateTime<Utc>) -> Result<WebhookEndpoint, WebhookError> {
        let next = signature::new_secret();
        let until = chrono::Duration::from_std(self.settings.secret_overlap)
            .ok()
            .and_then(|overlap| now.checked_add_signed(overlap))
            .unwrap_or(now);
        if !rows::rotate_secret(&self.store, owner, id, &next, until).await? {
            return Err(WebhookError::NotFound);
        }
        let row = self.owned(owner, id).await?;
        Ok(view(&row, true))
    }

    async fn owned(&self, owner: &str, id: &str) -> Result<EndpointRow, WebhookError> {
        match rows::endpoint(&self.store, id).await? {
            Some(row) if row.owner_id == owner => Ok(row),
            _ => Err(WebhookError::NotFound),
        }
    }

    /// A page of the deliveries to `owner`'s endpoint `id`, newest first, each with its last
    /// [`ATTEMPTS_SHOWN`] attempts.
    pub async fn deliveries(
        &self,
        owner: &str,
        id: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Page<WebhookDelivery>, WebhookError> {
        self.owned(owner, id).await?;
        let mut found = rows::deliveries_of(&self.store, id, cursor, limit + 1).await?;
        let more = found.len() > limit as usize;
        found.truncate(limit as usize);
        let mut items = Vec::with_capacity(found.len());
        for row in found {
            let attempts = rows::attempts_of(&self.store, &row.id, ATTEMPTS_SHOWN).await?;
            items.push(WebhookDelivery {
                id: row.id,
                endpoint_id: row.endpoint_id,
                event_id: row.event_id,
                event_type: row.event_type,
                status: row.status,
                attempt_count: row.attempt_count,
                next_attempt_at: row.next_attempt_at,
                created_at: row.created_at,
                attempts,
            });
        }
        let next_cursor = if more { items.last().map(|d| d.id.clone()) } else { None };
        Ok(Page { items, next_cursor })
    }

    /// Makes delivery `delivery_id` of `owner`'s endpoint `id` due now, whatever it is (a
    /// delivered one is sent again, with the same event id).
    pub async fn resend(
        &self,
        owner: &str,
        id: &str,
        delivery_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), WebhookError> {
        self.owned(owner, id).await?;
        if !rows::resend(&self.store, id, delivery_id, now).await? {
            return Err(WebhookError::NotFound);
        }
        self.wake.notify_one();
        Ok(())
    }
}

/// Writes (or retires) the operator's endpoint as configured; run once at startup.
pub async fn configure_operator(
    store: &Store,
    settings: &WebhookSettings,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    match &settings.operator {
        Some(operator) => {
            let row = EndpointRow {
                id: OPERATOR_ENDPOINT_ID.to_owned(),
                owner_id: rows::OPERATOR.to_owned(),
                url: operator.url.clone(),
                events: operator.events.clone(),
                secret: operator.secret.clone(),
                previous_secret: None,
                previous_until: None,
                created_at: now,
            };
            rows::configure_operator(store, &row).await
        }
        None => rows::retire_operator(store, OPERATOR_ENDPOINT_ID, now).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn event_types_are_spelled_out_checked_and_deduplicated() {
        assert_eq!(event_types(&names(&["*"])).unwrap().len(), SELLER_EVENTS.len());
        assert_eq!(
            event_types(&names(&["OrderPaid", "OrderPlaced", "OrderPaid"])).unwrap(),
            names(&["OrderPlaced", "OrderPaid"])
        );
        assert!(matches!(event_types(&[]), Err(WebhookError::Invalid(_))));
        assert!(matches!(event_types(&names(&["UserRegistered"])), Err(WebhookError::Invalid(_))));
        assert!(matches!(event_types(&names(&["orderpaid"])), Err(WebhookError::Invalid(_))));
    }
}
