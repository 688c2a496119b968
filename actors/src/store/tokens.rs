//! Refresh-token families: rotation on every use, and revocation of the whole family when a
//! spent token comes back (someone copied it).

use super::{query, query_as, timestamp, Store, StoreError};
use chrono::{DateTime, Utc};

/// What presenting a refresh token led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was live; it is now spent and `user_id` may get a new pair in `family_id`.
    Rotated { user_id: String, family_id: String },
    /// Unknown, expired or revoked.
    Invalid,
    /// The token was already spent: its family `family_id` is now revoked.
    Reused { family_id: String },
}

/// Starts a new family with its first token (at login).
pub async fn start_family(
    store: &Store,
    family_id: &str,
    user_id: &str,
    token_hash: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    query(store, "INSERT INTO token_families (id, user_id, revoked, created_at) VALUES ($1, $2, 0, $3)")
        .bind(family_id)
        .bind(user_id)
        .bind(timestamp::encode(now))
        .execute(tx.conn().await?)
        .await?;
    insert_token(&mut tx, family_id, user_id, token_hash, expires_at).await?;
    store.commit(tx).await?;
    Ok(())
}

async fn insert_token(
    tx: &mut super::Tx,
    family_id: &str,
    user_id: &str,
    token_hash: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    query(
        tx,
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, expires_at, spent) VALUES ($1, $2, $3, $4, 0)",
    )
    .bind(token_hash)
    .bind(family_id)
    .bind(user_id)
    .bind(timestamp::encode(expires_at))
    .execute(tx.conn().await?)
    .await?;
    Ok(())
}

/// Spends `token_hash` and stores its successor `next_hash` in one transaction.
pub async fn rotate(
    store: &Store,
    token_hash: &str,
    next_hash: &str,
    next_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Rotation, StoreError> {
    let mut tx = store.begin().await?;
    let row: Option<(String, String, String, i64, i64)> = query_as(
        store,
        "SELECT t.family_id, t.user_id, t.expires_at, t.spent, f.revoked
         FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id WHERE t.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(tx.conn().await?)
    .await?;
    let Some((family_id, user_id, expires_at, spent, revoked)) = row else {
        return Ok(Rotation::Invalid);
    };
    if revoked != 0 {
        return Ok(Rotation::Invalid);
    }
    if spent == 0 && timestamp::decode(&expires_at)? <= now {
        return Ok(Rotation::Invalid);
    }
    // Spent only if still unspent: on PostgreSQL another node may be presenting the same token
    // right now (nothing locks the row read above), and the loser must see a reuse, not a second
    // successor.
    let spent_now = spent == 0
        && query(store, "UPDATE refresh_tokens SET spent = 1 WHERE token_hash = $1 AND spent = 0")
            .bind(token_hash)
            .execute(tx.conn().await?)
            .await?
            .rows_affected()
            == 1;
    if !spent_now {
        query(store, "UPDATE token_families SET revoked = 1, revoked_at = $1 WHERE id = $2")
            .bind(timestamp::encode(now))
            .bind(&family_id)
            .execute(tx.conn().await?)
            .await?;
        store.commit(tx).await?;
        return Ok(Rotation::Reused { family_id });
    }
    insert_token(&mut tx, &family_id, &user_id, next_hash, next_expires_at).await?;
    store.commit(tx).await?;
    Ok(Rotation::Rotated { user_id, family_id })
}

/// Revokes the family of `token_hash` if it belongs to `user_id`; returns the family's id, or
/// `None` when no such token is known.
pub async fn revoke_family_of(
    store: &Store,
    token_hash: &str,
    user_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let mut tx = store.begin().await?;
    let family: Option<(String,)> =
        query_as(store, "SELECT family_id FROM refresh_tokens WHERE token_hash = $1 AND user_id = $2")
            .bind(token_hash)
            .bind(user_id)
            .fetch_optional(tx.conn().await?)
            .await?;
    let Some((family_id,)) = family else { return Ok(None) };
    // A family revoked earlier keeps its first revocation time (the deny list counts from it).
    query(store, "UPDATE token_families SET revoked = 1, revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
        .bind(timestamp::encode(now))
        .bind(&family_id)
        .execute(tx.conn().await?)
        .await?;
    store.commit(tx).await?;
    Ok(Some(family_id))
}

/// The families revoked at or after `since`, with when: how every node learns of revocations
/// made on the others.
pub async fn revoked_since(store: &Store, since: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
    let rows: Vec<(String, String)> =
        query_as(store, "SELECT id, revoked_at FROM token_families WHERE revoked_at >= $1")
            .bind(timestamp::encode(since))
            .fetch_all(store.reader())
            .await?;
    rows.into_iter().map(|(id, at)| Ok((id, timestamp::decode(&at)?))).collect()
}
