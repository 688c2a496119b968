//! Payment rows and the simulated gateway's ledger of charges.

use super::{corrupt, expect_one, timestamp, Store, StoreError, Tx};
use bazaar_protocol::payments::{Payment, PaymentStatus};
use bazaar_protocol::UserId;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A payment as stored: the view plus who may see it and what to charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// What clients see.
    pub payment: Payment,
    /// The order's buyer.
    pub buyer_id: UserId,
    /// The order's seller.
    pub seller_id: UserId,
    /// The amount's currency.
    pub currency: String,
    /// The card token to charge (never published in events).
    pub token: String,
    /// The row version.
    pub version: i64,
}

fn from_row(row: &AnyRow) -> Result<PaymentRecord, StoreError> {
    let status: String = row.try_get("status")?;
    Ok(PaymentRecord {
        payment: Payment {
            id: row.try_get::<String, _>("id")?.into(),
            order_id: row.try_get::<String, _>("order_id")?.into(),
            amount: row.try_get("amount")?,
            status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payment status", &status))?,
            reason: row.try_get("reason")?,
        },
        buyer_id: row.try_get::<String, _>("buyer_id")?.into(),
        seller_id: row.try_get::<String, _>("seller_id")?.into(),
        currency: row.try_get("currency")?,
        token: row.try_get("token")?,
        version: row.try_get("version")?,
    })
}

/// Loads a payment.
pub async fn load(store: &Store, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
    load_with(store.reader(), id).await
}

/// Loads a payment inside a transaction (to answer an idempotent retry).
pub async fn load_in(tx: &mut Tx, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
    load_with(&mut **tx, id).await
}

async fn load_with<'e>(
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: &str,
) -> Result<Option<PaymentRecord>, StoreError> {
    let row = sqlx::query("SELECT * FROM payments WHERE id = $1").bind(id).fetch_optional(executor).await?;
    row.as_ref().map(from_row).transpose()
}

/// Inserts a new payment at version 1.
pub async fn insert(tx: &mut Tx, record: &PaymentRecord, now: DateTime<Utc>) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO payments (id, order_id, buyer_id, seller_id, amount, currency, token, status, reason,
                               created_at, updated_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 1)",
    )
    .bind(record.payment.id.as_str())
    .bind(record.payment.order_id.as_str())
    .bind(record.buyer_id.as_str())
    .bind(record.seller_id.as_str())
    .bind(record.payment.amount)
    .bind(&record.currency)
    .bind(&record.token)
    .bind(record.payment.status.as_str())
    .bind(&record.payment.reason)
    .bind(timestamp::encode(now))
    .bind(timestamp::encode(now))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes a payment's new status if it is still at `version`.
pub async fn update(tx: &mut Tx, payment: &Payment, version: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE payments SET status = $1, reason = $2, updated_at = $3, version = version + 1 WHERE id = $4 AND version = $5",
    )
    .bind(payment.status.as_str())
    .bind(&payment.reason)
    .bind(timestamp::encode(now))
    .bind(payment.id.as_str())
    .bind(version)
    .execute(&mut **tx)
    .await?;
    expect_one(done)
}

/// What the gateway answered for a payment before, if it was asked.
pub async fn find_charge(store: &Store, payment_id: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT outcome FROM gateway_charges WHERE payment_id = $1")
        .bind(payment_id)
        .fetch_optional(store.reader())
        .await?)
}

/// Records the gateway's answer for a payment; the first answer wins, and is returned.
pub async fn record_charge(
    store: &Store,
    payment_id: &str,
    amount: i64,
    outcome: &str,
    now: DateTime<Utc>,
) -> Result<String, StoreError> {
    let mut tx = store.begin().await?;
    sqlx::query(
        "INSERT INTO gateway_charges (payment_id, amount, outcome, refunded, at) VALUES ($1, $2, $3, 0, $4)
         ON CONFLICT DO NOTHING",
    )
    .bind(payment_id)
    .bind(amount)
    .bind(outcome)
    .bind(timestamp::encode(now))
    .execute(&mut *tx)
    .await?;
    let first: String = sqlx::query_scalar("SELECT outcome FROM gateway_charges WHERE payment_id = $1")
        .bind(payment_id)
        .fetch_one(&mut *tx)
        .await?;
    store.commit(tx).await?;
    Ok(first)
}

/// Records a refund request at the gateway. The money goes back once whatever the count; the
/// column counts the requests the gateway received for the payment, so a count over 1 is the
/// evidence of a duplicate request (what the refund path is built never to send).
pub async fn refund_charge(store: &Store, payment_id: &str) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    sqlx::query("UPDATE gateway_charges SET refunded = refunded + 1 WHERE payment_id = $1")
        .bind(payment_id)
        .execute(&mut *tx)
        .await?;
    store.commit(tx).await?;
    Ok(())
}

/// How many refund requests the gateway received for a payment (0 when none, or never charged).
pub async fn refund_requests(store: &Store, payment_id: &str) -> Result<i64, StoreError> {
    let count: Option<i64> = sqlx::query_scalar("SELECT refunded FROM gateway_charges WHERE payment_id = $1")
        .bind(payment_id)
        .fetch_optional(store.reader())
        .await?;
    Ok(count.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_store;

    #[tokio::test]
    async fn the_first_gateway_answer_wins() {
        let (store, _dir) = fresh_store().await;
        let now = Utc::now();
        assert_eq!(record_charge(&store, "p1", 10, "approved", now).await.unwrap(), "approved");
        assert_eq!(record_charge(&store, "p1", 10, "declined", now).await.unwrap(), "approved");
        assert_eq!(find_charge(&store, "p1").await.unwrap().as_deref(), Some("approved"));
    }
}
