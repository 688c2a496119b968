//! Reading back the events an entity committed (the events table keeps every one): what an
//! order's timeline is made of.

use super::{query_scalar, LongText, Store, StoreError};
use bazaar_protocol::events::Envelope;

/// The first `limit` events of entity `entity_id` on `topic`, oldest (lowest version) first.
/// Served by the `events_by_entity` index.
pub async fn of_entity(store: &Store, topic: &str, entity_id: &str, limit: usize) -> Result<Vec<Envelope>, StoreError> {
    // MySQL keeps bodies as MEDIUMTEXT, which its driver reports as a blob: read through LongText.
    let bodies: Vec<LongText> =
        query_scalar(store, "SELECT body FROM events WHERE entity_id = $1 AND topic = $2 ORDER BY seq, id LIMIT $3")
            .bind(entity_id)
            .bind(topic)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(store.reader())
            .await?;
    bodies
        .iter()
        .map(|LongText(body)| serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("stored event: {e}"))))
        .collect()
}
