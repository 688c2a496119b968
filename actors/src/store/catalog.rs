//! Product rows and stock reservations.

use super::{query, query_scalar, timestamp, Store, StoreError, Tx, Write};
use bazaar_protocol::catalog::Product;
use bazaar_protocol::Page;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

fn from_row(row: &AnyRow) -> Result<(Product, i64), StoreError> {
    Ok((
        Product {
            id: row.try_get::<String, _>("id")?.into(),
            seller_id: row.try_get::<String, _>("seller_id")?.into(),
            name: row.try_get("name")?,
            description: row.try_get("description")?,
            price: row.try_get("price")?,
            currency: row.try_get("currency")?,
            stock: row.try_get("stock")?,
        },
        row.try_get("version")?,
    ))
}

/// Loads a product and its version.
pub async fn load(store: &Store, id: &str) -> Result<Option<(Product, i64)>, StoreError> {
    let row = query(store, "SELECT * FROM products WHERE id = $1").bind(id).fetch_optional(store.reader()).await?;
    row.as_ref().map(from_row).transpose()
}

/// Lists products in creation order, optionally of one seller.
pub async fn list(
    store: &Store,
    seller_id: Option<&str>,
    limit: u32,
    cursor: Option<&str>,
) -> Result<Page<Product>, StoreError> {
    let rows = query(
        store,
        "SELECT * FROM products WHERE ($1 IS NULL OR seller_id = $2) AND ($3 IS NULL OR id > $4) ORDER BY id LIMIT $5",
    )
    .bind(seller_id)
    .bind(seller_id)
    .bind(cursor)
    .bind(cursor)
    .bind(i64::from(limit) + 1)
    .fetch_all(store.reader())
    .await?;
    let mut items = rows.iter().map(|r| from_row(r).map(|(p, _)| p)).collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if items.len() > limit as usize {
        items.truncate(limit as usize);
        items.last().map(|p| p.id.0.clone())
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

/// Inserts a new product at version 1.
pub fn insert(tx: &mut Tx, product: &Product, now: DateTime<Utc>) -> Result<(), StoreError> {
    let write = Write::new(
        "INSERT INTO products (id, seller_id, name, description, price, currency, stock, created_at, version)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1)",
    )
    .bind(product.id.as_str())
    .bind(product.seller_id.as_str())
    .bind(&product.name)
    .bind(&product.description)
    .bind(product.price)
    .bind(&product.currency)
    .bind(product.stock)
    .bind(timestamp::encode(now));
    tx.defer(write);
    Ok(())
}

/// Writes a product's new state if it is still at `version`.
pub fn update(tx: &mut Tx, product: &Product, version: i64) -> Result<(), StoreError> {
    let write = Write::new(
        "UPDATE products SET name = $1, description = $2, price = $3, stock = $4, version = version + 1
         WHERE id = $5 AND version = $6",
    )
    .bind(&product.name)
    .bind(&product.description)
    .bind(product.price)
    .bind(product.stock)
    .bind(product.id.as_str())
    .bind(version)
    .expect_one();
    tx.defer(write);
    Ok(())
}

/// Records that `order_id` holds `quantity` units of `product_id`, reserved at `unit_price`.
pub fn reserve(
    tx: &mut Tx,
    order_id: &str,
    product_id: &str,
    quantity: u32,
    unit_price: i64,
) -> Result<(), StoreError> {
    let write = Write::new(
        "INSERT INTO reservations (order_id, product_id, quantity, released, unit_price) VALUES ($1, $2, $3, 0, $4)",
    )
    .bind(order_id)
    .bind(product_id)
    .bind(i64::from(quantity))
    .bind(unit_price);
    tx.defer(write);
    Ok(())
}

/// A line's reservation as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub quantity: i64,
    pub released: bool,
    /// The price it was reserved at; `None` for reservations from before checkout existed.
    pub unit_price: Option<i64>,
}

/// The reservation of `order_id`'s line of `product_id`, if one was ever recorded.
pub async fn reservation(tx: &mut Tx, order_id: &str, product_id: &str) -> Result<Option<Reservation>, StoreError> {
    let row: Option<(i64, i64, Option<i64>)> = super::query_as(
        tx,
        "SELECT quantity, released, unit_price FROM reservations WHERE order_id = $1 AND product_id = $2",
    )
    .bind(order_id)
    .bind(product_id)
    .fetch_optional(tx.read().await?)
    .await?;
    Ok(row.map(|(quantity, released, unit_price)| Reservation { quantity, released: released != 0, unit_price }))
}

/// Records that `order_id`'s line of `product_id` is given up before it was ever reserved, so a
/// reservation that arrives after this (a retried request overtaken by its compensation) is
/// refused rather than taking stock nobody would give back.
pub fn forgo(tx: &mut Tx, order_id: &str, product_id: &str) -> Result<(), StoreError> {
    let write = Write::new("INSERT INTO reservations (order_id, product_id, quantity, released) VALUES ($1, $2, 0, 1)")
        .bind(order_id)
        .bind(product_id);
    tx.defer(write);
    Ok(())
}

/// The units of `product_id` that orders hold and have not given back yet.
pub async fn reserved(tx: &mut Tx, product_id: &str) -> Result<i64, StoreError> {
    // PostgreSQL sums BIGINT as NUMERIC, which the `Any` driver cannot read as an i64.
    let units: i64 = query_scalar(
        tx,
        "SELECT CAST(COALESCE(SUM(quantity), 0) AS BIGINT) FROM reservations WHERE product_id = $1 AND released = 0",
    )
    .bind(product_id)
    .fetch_one(tx.read().await?)
    .await?;
    Ok(units)
}

/// Marks the reservation of `order_id`'s line of `product_id` released; returns its quantity the
/// first time, `None` after (or when it was never reserved).
pub async fn release(tx: &mut Tx, order_id: &str, product_id: &str) -> Result<Option<i64>, StoreError> {
    // Not `UPDATE ... RETURNING`, which MySQL lacks: the update locks the row (a second release
    // waits, then finds it released and changes nothing), and the quantity read after it in the
    // same transaction is the one it released.
    let released =
        query(tx, "UPDATE reservations SET released = 1 WHERE order_id = $1 AND product_id = $2 AND released = 0")
            .bind(order_id)
            .bind(product_id)
            .execute(tx.conn().await?)
            .await?;
    if released.rows_affected() != 1 {
        return Ok(None);
    }
    let quantity: i64 = query_scalar(tx, "SELECT quantity FROM reservations WHERE order_id = $1 AND product_id = $2")
        .bind(order_id)
        .bind(product_id)
        .fetch_one(tx.conn().await?)
        .await?;
    Ok(Some(quantity))
}
