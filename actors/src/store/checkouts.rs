//! Checkout rows: one per checkout, written by its checkout entity only (with a version check).
//! The row's status is a column (the sweep looks for checkouts left half-way); the rest of the
//! record is JSON, read and written whole.

use super::{query_as, query_scalar, timestamp, LongText, Store, StoreError, Tx, Write};
use bazaar_protocol::checkout::CheckoutStatus;
use bazaar_protocol::orders::Order;
use bazaar_protocol::{CheckoutId, OrderId, PaymentId, ProductId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a checkout is, as stored. `Releasing` is a failed checkout whose lines may still hold
/// stock: the sweep gives them back if the request that failed it could not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    Reserving,
    Releasing,
    Open,
    Failed,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Reserving => "RESERVING",
            Phase::Releasing => "RELEASING",
            Phase::Open => "OPEN",
            Phase::Failed => "FAILED",
        }
    }

    /// What the buyer sees.
    pub fn status(self) -> CheckoutStatus {
        match self {
            Phase::Reserving => CheckoutStatus::Reserving,
            Phase::Open => CheckoutStatus::Open,
            Phase::Releasing | Phase::Failed => CheckoutStatus::Failed,
        }
    }
}

/// One line the checkout is to reserve, and the order it goes into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedLine {
    pub product_id: ProductId,
    pub seller_id: UserId,
    pub quantity: u32,
    pub order_id: OrderId,
}

/// Why a checkout failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Failure {
    /// These products had too few units (or were gone).
    Short(Vec<ProductId>),
    /// The lines were priced in more than one currency.
    MixedCurrencies,
    /// The total does not fit an amount.
    TooLarge,
    /// Its request was cut off and nobody finished it within `checkout_timeout_ms`.
    TimedOut,
}

/// A checkout as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutRecord {
    pub id: CheckoutId,
    pub buyer_id: UserId,
    pub phase: Phase,
    /// The lines to reserve, in product-id order (the order they are reserved in).
    pub plan: Vec<PlannedLine>,
    /// The orders it made, in seller-id order, as they were made; once open.
    pub orders: Vec<Order>,
    pub total: i64,
    pub currency: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub failure: Option<Failure>,
    /// The one payment of its orders, once the buyer paid the checkout (absent in checkouts
    /// from before checkout payments).
    #[serde(default)]
    pub payment_id: Option<PaymentId>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl CheckoutRecord {
    /// A new checkout of `plan` for `buyer_id`, RESERVING, made at `now`.
    pub fn reserving(id: CheckoutId, buyer_id: UserId, plan: Vec<PlannedLine>, now: DateTime<Utc>) -> Self {
        CheckoutRecord {
            id,
            buyer_id,
            phase: Phase::Reserving,
            plan,
            orders: Vec::new(),
            total: 0,
            currency: String::new(),
            expires_at: None,
            failure: None,
            payment_id: None,
            created_at: now,
            updated_at: now,
        }
    }
}

fn body(record: &CheckoutRecord) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Loads a checkout and its version.
pub async fn load(store: &Store, id: &str) -> Result<Option<(CheckoutRecord, i64)>, StoreError> {
    // MySQL keeps the body as MEDIUMTEXT, which its driver reports as a blob: read through LongText.
    let row: Option<(LongText, i64)> = query_as(store, "SELECT body, version FROM checkouts WHERE id = $1")
        .bind(id)
        .fetch_optional(store.reader())
        .await?;
    row.map(|(LongText(body), version)| {
        let record = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt(format!("checkout {id}: {e}")))?;
        Ok((record, version))
    })
    .transpose()
}

/// Inserts a new checkout at version 1.
pub fn insert(tx: &mut Tx, record: &CheckoutRecord) -> Result<(), StoreError> {
    let write = Write::new(
        "INSERT INTO checkouts (id, buyer_id, status, body, created_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, 1)",
    )
    .bind(record.id.as_str())
    .bind(record.buyer_id.as_str())
    .bind(record.phase.as_str())
    .bind(body(record)?)
    .bind(timestamp::encode(record.created_at))
    .bind(timestamp::encode(record.updated_at));
    tx.defer(write);
    Ok(())
}

/// Writes a checkout's new state if it is still at `version`.
pub fn update(tx: &mut Tx, record: &CheckoutRecord, version: i64) -> Result<(), StoreError> {
    let write = Write::new(
        "UPDATE checkouts SET status = $1, body = $2, updated_at = $3, version = version + 1
         WHERE id = $4 AND version = $5",
    )
    .bind(record.phase.as_str())
    .bind(body(record)?)
    .bind(timestamp::encode(record.updated_at))
    .bind(record.id.as_str())
    .bind(version)
    .expect_one();
    tx.defer(write);
    Ok(())
}

/// Up to `limit` ids of checkouts left reserving or releasing since `before` or earlier, oldest first.
pub async fn stalled(store: &Store, before: DateTime<Utc>, limit: u32) -> Result<Vec<String>, StoreError> {
    Ok(query_scalar(
        store,
        "SELECT id FROM checkouts WHERE status IN ('RESERVING', 'RELEASING') AND updated_at <= $1
         ORDER BY updated_at LIMIT $2",
    )
    .bind(timestamp::encode(before))
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?)
}
