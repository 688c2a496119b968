//! Idempotency rows: which request a caller's key was used for and what it created. The rule
//! that reads them is [`crate::idempotency`]'s.

use super::{query, query_as, query_scalar, timestamp, Backend, OnBackend, Store, StoreError, Tx, Write};
use chrono::{DateTime, Utc};

/// A record that a request with an idempotency key was carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The hash of the request it answered.
    pub request_hash: String,
    /// The id of the entity it created.
    pub result_id: String,
}

/// Looks up `user_id`'s `key` inside the caller's transaction.
pub async fn find_in(tx: &mut Tx, user_id: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
    record(tx.backend(), tx.read().await?, user_id, key).await
}

/// Looks up `user_id`'s `key` outside any transaction.
pub async fn find(store: &Store, user_id: &str, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
    record(store.backend(), store.reader(), user_id, key).await
}

async fn record<'e>(
    backend: Backend,
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    user_id: &str,
    key: &str,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    let row: Option<(String, String)> =
        query_as(&backend, "SELECT request_hash, result_id FROM idempotency WHERE user_id = $1 AND \"key\" = $2")
            .bind(user_id)
            .bind(key)
            .fetch_optional(executor)
            .await?;
    Ok(row.map(|(request_hash, result_id)| IdempotencyRecord { request_hash, result_id }))
}

/// Stores a record of `user_id`'s `key`, used for the request hashed `request_hash`, inside the
/// caller's transaction.
pub fn insert(
    tx: &mut Tx,
    (user_id, key, request_hash): (&str, &str, &str),
    result_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let write = Write::new(
        "INSERT INTO idempotency (user_id, \"key\", request_hash, result_id, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(user_id)
    .bind(key)
    .bind(request_hash)
    .bind(result_id)
    .bind(timestamp::encode(now));
    tx.defer(write);
    Ok(())
}

/// Forgets records older than `cutoff`; returns how many.
pub async fn delete_before(store: &Store, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    // Looked at through the read pool first: an idle node writes nothing when nothing expired.
    let due: Option<i64> = query_scalar(store, "SELECT 1 FROM idempotency WHERE created_at < $1 LIMIT 1")
        .bind(timestamp::encode(cutoff))
        .fetch_optional(store.reader())
        .await?;
    if due.is_none() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    let done = query(store, "DELETE FROM idempotency WHERE created_at < $1")
        .bind(timestamp::encode(cutoff))
        .execute(tx.conn().await?)
        .await?;
    store.commit(tx).await?;
    Ok(done.rows_affected())
}
