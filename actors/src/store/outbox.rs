//! The outbox as a relay to an outside log reads it: look at what is pending without moving it,
//! then forget what the log has acknowledged.

use super::{query_as, LongText, OnBackend, Store, StoreError};

/// Up to `limit` pending events, oldest first: (outbox position, event JSON).
pub async fn pending(store: &Store, limit: u32) -> Result<Vec<(i64, String)>, StoreError> {
    let rows: Vec<(i64, LongText)> = query_as(
        store,
        "SELECT o.position, e.body FROM outbox o JOIN events e ON e.id = o.event_id ORDER BY o.position LIMIT $1",
    )
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    Ok(rows.into_iter().map(|(position, LongText(body))| (position, body)).collect())
}

/// Removes the outbox rows at `positions` (events the log now holds).
pub async fn forget(store: &Store, positions: &[i64]) -> Result<(), StoreError> {
    if positions.is_empty() {
        return Ok(());
    }
    let mut sql = String::from("DELETE FROM outbox WHERE position IN (");
    super::push_placeholders(&mut sql, 1, positions.len());
    sql.push(')');
    let sql = store.backend().spell(&sql);
    let mut delete = sqlx::query(&sql);
    for position in positions {
        delete = delete.bind(*position);
    }
    let mut tx = store.begin().await?;
    delete.execute(tx.conn().await?).await?;
    store.commit(tx).await?;
    Ok(())
}
