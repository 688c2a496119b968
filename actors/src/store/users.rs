//! User rows.

use super::{corrupt, query, query_scalar, timestamp, Store, StoreError, Tx};
use bazaar_protocol::auth::UserView;
use bazaar_protocol::values::Role;
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

/// A user as stored, with the secret it may never show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// The public profile.
    pub view: UserView,
    /// The Argon2id PHC string.
    pub password_hash: String,
    /// The row version.
    pub version: i64,
}

fn from_row(row: &AnyRow) -> Result<UserRecord, StoreError> {
    let role: String = row.try_get("role")?;
    Ok(UserRecord {
        view: UserView {
            id: row.try_get::<String, _>("id")?.into(),
            email: row.try_get("email")?,
            role: Role::parse(&role).map_err(|_| corrupt("role", &role))?,
            name: row.try_get("name")?,
        },
        password_hash: row.try_get("password_hash")?,
        version: row.try_get("version")?,
    })
}

/// Loads a user by id.
pub async fn load(store: &Store, id: &str) -> Result<Option<UserRecord>, StoreError> {
    let row = query(store, "SELECT * FROM users WHERE id = $1").bind(id).fetch_optional(store.reader()).await?;
    row.as_ref().map(from_row).transpose()
}

/// Finds a user by normalised e-mail, for login.
pub async fn find_by_email(store: &Store, email: &str) -> Result<Option<UserRecord>, StoreError> {
    let row = query(store, "SELECT * FROM users WHERE email = $1").bind(email).fetch_optional(store.reader()).await?;
    row.as_ref().map(from_row).transpose()
}

/// Inserts a new user; [`StoreError::Duplicate`] when the e-mail is taken.
pub async fn insert(tx: &mut Tx, user: &UserRecord, now: DateTime<Utc>) -> Result<(), StoreError> {
    query(tx,
        "INSERT INTO users (id, email, password_hash, role, name, created_at, version) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(user.view.id.as_str())
    .bind(&user.view.email)
    .bind(&user.password_hash)
    .bind(user.view.role.as_str())
    .bind(&user.view.name)
    .bind(timestamp::encode(now))
    .bind(user.version)
    .execute(tx.conn().await?)
    .await?;
    Ok(())
}

/// Whether `buyer` has at least one order from `seller` that reached PAID (the visibility rule).
pub async fn has_paid_order(store: &Store, buyer: &str, seller: &str) -> Result<bool, StoreError> {
    let found: Option<i64> = query_scalar(
        store,
        "SELECT 1 FROM orders WHERE buyer_id = $1 AND seller_id = $2 AND paid_at IS NOT NULL LIMIT 1",
    )
    .bind(buyer)
    .bind(seller)
    .fetch_optional(store.reader())
    .await?;
    Ok(found.is_some())
}
