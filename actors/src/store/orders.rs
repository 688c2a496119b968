//! Order rows.

use super::{corrupt, query, query_scalar, timestamp, Backend, LongText, OnBackend, Store, StoreError, Tx, Write};
use bazaar_protocol::orders::{Order, OrderLine, OrderStatus};
use bazaar_protocol::Page;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

fn from_row(row: &AnyRow) -> Result<(Order, i64), StoreError> {
    let status: String = row.try_get("status")?;
    // MySQL keeps the lines as MEDIUMTEXT, which its driver reports as a blob: read through LongText.
    let lines: Vec<OrderLine> = match row.try_get::<Option<LongText>, _>("order_lines")? {
        None => Vec::new(),
        Some(LongText(text)) => serde_json::from_str(&text).map_err(|e| corrupt("order lines", &e.to_string()))?,
    };
    Ok((
        Order {
            id: row.try_get::<String, _>("id")?.into(),
            buyer_id: row.try_get::<String, _>("buyer_id")?.into(),
            seller_id: row.try_get::<String, _>("seller_id")?.into(),
            product_id: row.try_get::<String, _>("product_id")?.into(),
            quantity: row.try_get::<i64, _>("quantity")? as u32,
            amount: row.try_get("amount")?,
            currency: row.try_get("currency")?,
            status: OrderStatus::parse(&status).ok_or_else(|| corrupt("order status", &status))?,
            created_at: timestamp::column(row, "created_at")?,
            updated_at: timestamp::column(row, "updated_at")?,
            expires_at: row
                .try_get::<Option<String>, _>("expires_at")?
                .as_deref()
                .map(timestamp::decode)
                .transpose()?,
            payment_id: row.try_get::<Option<String>, _>("payment_id")?.map(Into::into),
            lines,
            checkout_id: row.try_get::<Option<String>, _>("checkout_id")?.map(Into::into),
        },
        row.try_get("version")?,
    ))
}

/// Loads an order and its version.
pub async fn load(store: &Store, id: &str) -> Result<Option<(Order, i64)>, StoreError> {
    load_with(store.backend(), store.reader(), id).await
}

/// Loads an order inside a transaction (to answer an idempotent retry).
pub async fn load_in(tx: &mut Tx, id: &str) -> Result<Option<Order>, StoreError> {
    Ok(load_with(tx.backend(), tx.read().await?, id).await?.map(|(order, _)| order))
}

/// Loads an order and its version inside a transaction (to change it there).
pub async fn load_versioned_in(tx: &mut Tx, id: &str) -> Result<Option<(Order, i64)>, StoreError> {
    load_with(tx.backend(), tx.read().await?, id).await
}

async fn load_with<'e>(
    backend: Backend,
    executor: impl sqlx::Executor<'e, Database = sqlx::Any>,
    id: &str,
) -> Result<Option<(Order, i64)>, StoreError> {
    let row = query(&backend, "SELECT * FROM orders WHERE id = $1").bind(id).fetch_optional(executor).await?;
    row.as_ref().map(from_row).transpose()
}

/// Which side of the orders a listing shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Orders the user placed.
    Buyer,
    /// Orders of the user's products.
    Seller,
}

/// Lists a user's orders, newest first.
pub async fn list(
    store: &Store,
    user_id: &str,
    side: Side,
    status: Option<OrderStatus>,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Page<Order>, StoreError> {
    let sql = match side {
        Side::Buyer => "SELECT * FROM orders WHERE buyer_id = $1 AND ($2 IS NULL OR status = $3) AND ($4 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6",
        Side::Seller => "SELECT * FROM orders WHERE seller_id = $1 AND ($2 IS NULL OR status = $3) AND ($4 IS NULL OR id < $5) ORDER BY id DESC LIMIT $6",
    };
    let status = status.map(OrderStatus::as_str);
    let rows = query(store, sql)
        .bind(user_id)
        .bind(status)
        .bind(status)
        .bind(cursor)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(store.reader())
        .await?;
    let mut items = rows.iter().map(|r| from_row(r).map(|(o, _)| o)).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|o| o.id.0.clone())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Inserts a new order at version 1.
pub fn insert(tx: &mut Tx, order: &Order) -> Result<(), StoreError> {
    let write = Write::new(
        "INSERT INTO orders (id, buyer_id, seller_id, product_id, quantity, amount, currency, status, payment_id,
                             paid_at, created_at, updated_at, expires_at, order_lines, checkout_id, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, $10, $11, $12, $13, $14, 1)",
    )
    .bind(order.id.as_str())
    .bind(order.buyer_id.as_str())
    .bind(order.seller_id.as_str())
    .bind(order.product_id.as_str())
    .bind(i64::from(order.quantity))
    .bind(order.amount)
    .bind(&order.currency)
    .bind(order.status.as_str())
    .bind(order.payment_id.as_ref().map(|p| p.as_str()))
    .bind(timestamp::encode(order.created_at))
    .bind(timestamp::encode(order.updated_at))
    .bind(order.expires_at.map(timestamp::encode))
    .bind(serde_json::to_string(&order.lines).map_err(|e| StoreError::Corrupt(e.to_string()))?)
    .bind(order.checkout_id.as_ref().map(|c| c.as_str()));
    tx.defer(write);
    Ok(())
}

/// Up to `limit` ids of ORDERED orders whose hold ended at or before `now`, earliest first.
pub async fn overdue(store: &Store, now: DateTime<Utc>, limit: u32) -> Result<Vec<String>, StoreError> {
    Ok(query_scalar(
        store,
        "SELECT id FROM orders WHERE status = 'ORDERED' AND expires_at IS NOT NULL AND expires_at <= $1
         ORDER BY expires_at LIMIT $2",
    )
    .bind(timestamp::encode(now))
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?)
}

/// When the earliest hold of an ORDERED order ends, if any order is waiting for payment.
pub async fn next_expiry(store: &Store) -> Result<Option<DateTime<Utc>>, StoreError> {
    let at: Option<String> =
        query_scalar(store, "SELECT MIN(expires_at) FROM orders WHERE status = 'ORDERED' AND expires_at IS NOT NULL")
            .fetch_one(store.reader())
            .await?;
    at.as_deref().map(timestamp::decode).transpose()
}

/// Writes an order's new status if it is still at `version`; remembers when it first became PAID.
pub fn update(tx: &mut Tx, order: &Order, version: i64) -> Result<(), StoreError> {
    let write = Write::new(
        "UPDATE orders SET status = $1, payment_id = $2, updated_at = $3,
                paid_at = COALESCE(paid_at, CASE WHEN $4 = 'PAID' THEN $5 END), version = version + 1
         WHERE id = $6 AND version = $7",
    )
    .bind(order.status.as_str())
    .bind(order.payment_id.as_ref().map(|p| p.as_str()))
    .bind(timestamp::encode(order.updated_at))
    .bind(order.status.as_str())
    .bind(timestamp::encode(order.updated_at))
    .bind(order.id.as_str())
    .bind(version)
    .expect_one();
    tx.defer(write);
    Ok(())
}
