//! Payment rows and the simulated gateway's ledger of charges.

use super::{
    corrupt, query, query_as, query_scalar, timestamp, Backend, LongText, OnBackend, Store, StoreError, Tx, Write,
};
use bazaar_protocol::payments::{Payment, PaymentShare, PaymentStatus};
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
    /// The order's seller; empty for a checkout's payment, whose sellers are in its shares.
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
    let reference: String = row.try_get("order_id")?;
    let checkout_id: Option<String> = row.try_get("checkout_id")?;
    let seller_id: UserId = row.try_get::<String, _>("seller_id")?.into();
    let amount: i64 = row.try_get("amount")?;
    let refunded_amount: i64 = row.try_get("refunded_amount")?;
    // MySQL keeps the shares as MEDIUMTEXT, which its driver reports as a blob: read through LongText.
    let orders = match row.try_get::<Option<LongText>, _>("shares")? {
        Some(LongText(text)) => serde_json::from_str(&text).map_err(|e| corrupt("payment shares", &e.to_string()))?,
        // A payment from before shares: its one order is all of it.
        None => vec![PaymentShare {
            order_id: reference.as_str().into(),
            seller_id: seller_id.clone(),
            amount,
            refunded_amount,
        }],
    };
    Ok(PaymentRecord {
        payment: Payment {
            id: row.try_get::<String, _>("id")?.into(),
            // A checkout's payment keeps the checkout's id in order_id (the gateway's reference).
            order_id: checkout_id.is_none().then(|| reference.into()),
            checkout_id: checkout_id.map(Into::into),
            amount,
            status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("payment status", &status))?,
            reason: row.try_get("reason")?,
            refunded_amount,
            orders,
        },
        buyer_id: row.try_get::<String, _>("buyer_id")?.into(),
        seller_id,
        currency: row.try_get("currency")?,
        token: row.try_get("token")?,
        version: row.try_get("version")?,
    })
}

/// Loads a payment.
pub async fn load(store: &Store, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
    load_with(store.backend(), store.reader(), id).await
}

/// Loads a payment inside a transaction (to answer an idempotent retry).
pub async fn load_in(tx: &mut Tx, id: &str) -> Result<Option<PaymentRecord>, StoreError> {
    load_with(tx.backend(), tx.read().await?, id).await
}

async fn load_with<'e>(
    backend: Backend,
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: &str,
) -> Result<Option<PaymentRecord>, StoreError> {
    let row = query(&backend, "SELECT * FROM payments WHERE id = $1").bind(id).fetch_optional(executor).await?;
    row.as_ref().map(from_row).transpose()
}

/// Inserts a new payment at version 1.
pub fn insert(tx: &mut Tx, record: &PaymentRecord, now: DateTime<Utc>) -> Result<(), StoreError> {
    let write = Write::new(
        "INSERT INTO payments (id, order_id, buyer_id, seller_id, amount, currency, token, status, reason,
                               created_at, updated_at, refunded_amount, checkout_id, shares, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 1)",
    )
    .bind(record.payment.id.as_str())
    .bind(record.payment.reference())
    .bind(record.buyer_id.as_str())
    .bind(record.seller_id.as_str())
    .bind(record.payment.amount)
    .bind(&record.currency)
    .bind(&record.token)
    .bind(record.payment.status.as_str())
    .bind(&record.payment.reason)
    .bind(timestamp::encode(now))
    .bind(timestamp::encode(now))
    .bind(record.payment.refunded_amount)
    .bind(record.payment.checkout_id.as_ref().map(|id| id.as_str()))
    .bind(shares(&record.payment)?);
    tx.defer(write);
    Ok(())
}

fn shares(payment: &Payment) -> Result<String, StoreError> {
    serde_json::to_string(&payment.orders).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Writes a payment's new status and refunded amount if it is still at `version`.
pub fn update(tx: &mut Tx, payment: &Payment, version: i64, now: DateTime<Utc>) -> Result<(), StoreError> {
    let write = Write::new(
        "UPDATE payments SET status = $1, reason = $2, updated_at = $3, refunded_amount = $4, shares = $5,
                             version = version + 1
         WHERE id = $6 AND version = $7",
    )
    .bind(payment.status.as_str())
    .bind(&payment.reason)
    .bind(timestamp::encode(now))
    .bind(payment.refunded_amount)
    .bind(shares(payment)?)
    .bind(payment.id.as_str())
    .bind(version)
    .expect_one();
    tx.defer(write);
    Ok(())
}

/// What the gateway answered for a payment before, if it was asked.
pub async fn find_charge(store: &Store, payment_id: &str) -> Result<Option<String>, StoreError> {
    Ok(query_scalar(store, "SELECT outcome FROM gateway_charges WHERE payment_id = $1")
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
    // One deferred insert (one call on SQLite); an answer recorded first by someone else breaks
    // the key, and that answer is read back instead, through the write connection: it may be in
    // the batch not committed yet.
    let mut tx = store.begin().await?;
    tx.defer(
        Write::new(
            "INSERT INTO gateway_charges (payment_id, amount, outcome, refunded, at) VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(payment_id)
        .bind(amount)
        .bind(outcome)
        .bind(timestamp::encode(now)),
    );
    match store.commit(tx).await {
        Ok(()) => Ok(outcome.to_owned()),
        Err(StoreError::Duplicate) => {
            let mut tx = store.begin().await?;
            let first: Option<String> =
                query_scalar(store, "SELECT outcome FROM gateway_charges WHERE payment_id = $1")
                    .bind(payment_id)
                    .fetch_optional(tx.read().await?)
                    .await?;
            store.commit(tx).await?;
            first.ok_or_else(|| StoreError::Corrupt(format!("the charge of {payment_id} is recorded and not found")))
        }
        Err(e) => Err(e),
    }
}

/// A charge in the simulated gateway's ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerCharge {
    /// What was charged.
    pub amount: i64,
    /// `approved`, or the decline reason.
    pub outcome: String,
    /// What has been given back of it.
    pub refunded_amount: i64,
}

/// The ledger's charge of a payment, if it was charged (or declined).
pub async fn ledger_charge(store: &Store, payment_id: &str) -> Result<Option<LedgerCharge>, StoreError> {
    let row: Option<(i64, String, i64)> =
        query_as(store, "SELECT amount, outcome, refunded_amount FROM gateway_charges WHERE payment_id = $1")
            .bind(payment_id)
            .fetch_optional(store.reader())
            .await?;
    Ok(row.map(|(amount, outcome, refunded_amount)| LedgerCharge { amount, outcome, refunded_amount }))
}

/// Every charge in the simulated gateway's ledger, by payment id: what a fault run compares with
/// the payments (a charge for a payment the API never shows is as much a finding as a double one).
pub async fn ledger_charges(store: &Store) -> Result<Vec<(String, LedgerCharge)>, StoreError> {
    let rows: Vec<(String, i64, String, i64)> =
        query_as(store, "SELECT payment_id, amount, outcome, refunded_amount FROM gateway_charges ORDER BY payment_id")
            .fetch_all(store.reader())
            .await?;
    Ok(rows
        .into_iter()
        .map(|(id, amount, outcome, refunded_amount)| (id, LedgerCharge { amount, outcome, refunded_amount }))
        .collect())
}

/// What the ledger did with one refund request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerRefund {
    /// Gave back this much (or had already, under this idempotency key).
    Refunded(i64),
    /// No approved charge for the payment: nothing to give back.
    NotCharged,
    /// More than the charge has left was asked for; nothing was given back.
    ExceedsCharge { left: i64 },
}

/// Records a refund request at the gateway: gives back `amount` (`None`: all that is left) of the
/// payment's charge once per `idempotency_key`, never more than was charged. The `refunded`
/// column counts every request received, so a count over the number of refunds is the evidence
/// of a duplicate request (what the refund path is built never to send).
pub async fn refund_charge(
    store: &Store,
    payment_id: &str,
    idempotency_key: &str,
    amount: Option<i64>,
    now: DateTime<Utc>,
) -> Result<LedgerRefund, StoreError> {
    let mut tx = store.begin().await?;
    query(store, "UPDATE gateway_charges SET refunded = refunded + 1 WHERE payment_id = $1")
        .bind(payment_id)
        .execute(tx.conn().await?)
        .await?;
    let earlier: Option<i64> = query_scalar(store, "SELECT amount FROM gateway_refunds WHERE idempotency_key = $1")
        .bind(idempotency_key)
        .fetch_optional(tx.conn().await?)
        .await?;
    let charge: Option<(i64, String, i64)> =
        query_as(store, "SELECT amount, outcome, refunded_amount FROM gateway_charges WHERE payment_id = $1")
            .bind(payment_id)
            .fetch_optional(tx.conn().await?)
            .await?;
    let outcome = match (earlier, charge) {
        (Some(given), _) => LedgerRefund::Refunded(given),
        (None, Some((charged, outcome, refunded))) if outcome == "approved" => {
            let left = charged - refunded;
            let wanted = amount.unwrap_or(left);
            if wanted > left || wanted <= 0 {
                LedgerRefund::ExceedsCharge { left }
            } else {
                query(
                    store,
                    "INSERT INTO gateway_refunds (idempotency_key, payment_id, amount, at) VALUES ($1, $2, $3, $4)",
                )
                .bind(idempotency_key)
                .bind(payment_id)
                .bind(wanted)
                .bind(timestamp::encode(now))
                .execute(tx.conn().await?)
                .await?;
                query(store, "UPDATE gateway_charges SET refunded_amount = refunded_amount + $1 WHERE payment_id = $2")
                    .bind(wanted)
                    .bind(payment_id)
                    .execute(tx.conn().await?)
                    .await?;
                LedgerRefund::Refunded(wanted)
            }
        }
        (None, Some(_) | None) => LedgerRefund::NotCharged,
    };
    store.commit(tx).await?;
    Ok(outcome)
}

/// How many refund requests the gateway received for a payment (0 when none, or never charged).
pub async fn refund_requests(store: &Store, payment_id: &str) -> Result<i64, StoreError> {
    let count: Option<i64> = query_scalar(store, "SELECT refunded FROM gateway_charges WHERE payment_id = $1")
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

    #[tokio::test]
    async fn the_ledger_gives_back_each_refund_once_and_never_more_than_was_charged() {
        let (store, _dir) = fresh_store().await;
        let now = Utc::now();
        record_charge(&store, "p1", 10, "approved", now).await.unwrap();
        assert_eq!(refund_charge(&store, "p1", "r1", Some(4), now).await.unwrap(), LedgerRefund::Refunded(4));
        // The same key again: the first answer, nothing more given back.
        assert_eq!(refund_charge(&store, "p1", "r1", Some(4), now).await.unwrap(), LedgerRefund::Refunded(4));
        assert_eq!(
            refund_charge(&store, "p1", "r2", Some(7), now).await.unwrap(),
            LedgerRefund::ExceedsCharge { left: 6 }
        );
        assert_eq!(refund_charge(&store, "p1", "r3", None, now).await.unwrap(), LedgerRefund::Refunded(6));
        let charge = ledger_charge(&store, "p1").await.unwrap().unwrap();
        assert_eq!((charge.amount, charge.refunded_amount), (10, 10));
        assert_eq!(refund_requests(&store, "p1").await.unwrap(), 4);
        assert_eq!(refund_charge(&store, "p9", "r4", None, now).await.unwrap(), LedgerRefund::NotCharged);
    }
}
