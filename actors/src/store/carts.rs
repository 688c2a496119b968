//! Cart rows: one per buyer who has ever put something in a cart, the lines as JSON (a cart is
//! read and written whole, by its user entity only).

use super::{timestamp, LongText, Store, StoreError, Tx, Write};
use bazaar_protocol::cart::CartItem;
use chrono::{DateTime, Utc};

/// A cart as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CartRecord {
    /// The lines, oldest first.
    pub items: Vec<CartItem>,
    /// The row version; 0 when the buyer has no row yet.
    pub version: i64,
}

/// Loads `user_id`'s cart (empty, version 0, when there is none).
pub async fn load(store: &Store, user_id: &str) -> Result<CartRecord, StoreError> {
    // MySQL keeps the lines as MEDIUMTEXT, which its driver reports as a blob: read through LongText.
    let row: Option<(LongText, i64)> = super::query_as(store, "SELECT items, version FROM carts WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(store.reader())
        .await?;
    match row {
        None => Ok(CartRecord::default()),
        Some((LongText(items), version)) => Ok(CartRecord {
            items: serde_json::from_str(&items).map_err(|e| StoreError::Corrupt(format!("cart of {user_id}: {e}")))?,
            version,
        }),
    }
}

/// Writes `items` as `user_id`'s cart over the row at `version` (0: none yet); a row written
/// meanwhile by another owner of the entity is [`StoreError::VersionConflict`] (or `Duplicate`).
pub fn save(
    tx: &mut Tx,
    user_id: &str,
    items: &[CartItem],
    version: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let body = serde_json::to_string(items).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if version == 0 {
        let write = Write::new("INSERT INTO carts (user_id, items, updated_at, version) VALUES ($1, $2, $3, 1)")
            .bind(user_id)
            .bind(body)
            .bind(timestamp::encode(now));
        tx.defer(write);
        return Ok(());
    }
    let write = Write::new(
        "UPDATE carts SET items = $1, updated_at = $2, version = version + 1 WHERE user_id = $3 AND version = $4",
    )
    .bind(body)
    .bind(timestamp::encode(now))
    .bind(user_id)
    .bind(version)
    .expect_one();
    tx.defer(write);
    Ok(())
}
