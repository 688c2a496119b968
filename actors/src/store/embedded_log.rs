//! The outbox and the embedded event log.
//!
//! Committing a command puts its events in `outbox`. The relay moves them, in order, into
//! `event_log` (the embedded stand-in for Kafka) and deletes them from `outbox` in the same
//! transaction, so an event is in exactly one of the two at any moment. Consumers read the log by
//! position and store how far they got in `consumer_offsets`.
//!
//! Consumers trust that positions become visible in order: once they saw position N they never
//! look below it again. On SQLite one writer at a time makes that so; on PostgreSQL and MySQL,
//! where every node relays into one database, [`relay_batch`] serialises the relays itself.

use super::backend::LogAppend;
use super::{query_as, query_scalar, LongText, OnBackend, Store, StoreError, Write};
use bazaar_protocol::events::Envelope;
use std::sync::Arc;

/// One published event with its place in the log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The position in the log (strictly increasing).
    pub position: i64,
    /// The event.
    pub envelope: Arc<Envelope>,
}

fn parse(body: &str) -> Result<Arc<Envelope>, StoreError> {
    serde_json::from_str(body).map(Arc::new).map_err(|e| StoreError::Corrupt(format!("event body: {e}")))
}

/// The most events one relay statement carries: `relay_batch` is the operator's to set, and a
/// statement has a ceiling on its parameters (SQLite's is 32,766).
const ROWS_PER_STATEMENT: usize = 1_000;

/// Moves up to `limit` outbox events into the event log; returns them as appended.
pub async fn relay_batch(store: &Store, limit: u32) -> Result<Vec<LogRecord>, StoreError> {
    // An empty outbox is seen through the read pool, without a write transaction: the relay
    // looks often, and an idle node must write nothing (on a shared SQLite file an empty
    // `BEGIN IMMEDIATE` would also take the write lock from the other nodes).
    if !outbox_has_rows(store).await? {
        return Ok(Vec::new());
    }
    let mut tx = store.begin().await?;
    // SQLite: the batch's `BEGIN IMMEDIATE` already excludes every other writer.
    if let Some(lock) = store.backend().relay_lock() {
        // Two relays whose outbox rows do not overlap would otherwise run side by side, and the
        // one holding the lower log positions could commit last: a consumer that already read
        // past them would never see them. The lock (held to the batch's COMMIT) makes relays take
        // turns; reads of the log are not blocked by it. The outbox is read after it is taken,
        // so what the previous relay deleted is gone and no event is relayed twice.
        sqlx::query(lock).execute(tx.conn().await?).await?;
    }
    let pending_sql = "SELECT o.position, e.id, e.topic, e.body FROM outbox o JOIN events e ON e.id = o.event_id
         ORDER BY o.position LIMIT $1";
    let pending: Vec<(i64, String, String, LongText)> =
        query_as(store, pending_sql).bind(i64::from(limit)).fetch_all(tx.read().await?).await?;
    if pending.is_empty() {
        store.commit(tx).await?;
        return Ok(Vec::new());
    }
    // A crash between publishing and deleting cannot happen here (one transaction), but a log
    // that already holds an event (restored backup, manual replay) must not get it twice.
    let mut appended = Vec::with_capacity(pending.len());
    match store.backend().log_append() {
        LogAppend::Returning => {
            // One statement for up to ROWS_PER_STATEMENT events rather than one per event. The
            // positions are taken in the order of the rows, which is the outbox's; they are
            // sorted again because RETURNING promises no order.
            for chunk in pending.chunks(ROWS_PER_STATEMENT) {
                let mut sql = String::from("INSERT INTO event_log (topic, event_id) VALUES ");
                for index in 0..chunk.len() {
                    sql.push_str(if index == 0 { "(" } else { ", (" });
                    super::push_placeholders(&mut sql, index * 2 + 1, 2);
                    sql.push(')');
                }
                sql.push_str(" ON CONFLICT (event_id) DO NOTHING RETURNING position, event_id");
                let mut insert = sqlx::query_as::<_, (i64, String)>(&sql);
                for (_, event_id, topic, _) in chunk {
                    insert = insert.bind(topic).bind(event_id);
                }
                let mut logged = insert.fetch_all(tx.conn().await?).await?;
                logged.sort_unstable();
                let bodies: std::collections::HashMap<&str, &str> =
                    chunk.iter().map(|(_, id, _, LongText(body))| (id.as_str(), body.as_str())).collect();
                for (position, event_id) in logged {
                    let body = bodies.get(event_id.as_str()).ok_or_else(|| {
                        StoreError::Corrupt(format!("the log returned an event it was not given: {event_id}"))
                    })?;
                    appended.push(LogRecord { position, envelope: parse(body)? });
                }
            }
        }
        LogAppend::InsertId(sql) => {
            for (_, event_id, topic, LongText(body)) in &pending {
                let done = sqlx::query(sql).bind(topic).bind(event_id).execute(tx.conn().await?).await?;
                if let (1, Some(position)) = (done.rows_affected(), done.last_insert_id()) {
                    appended.push(LogRecord { position, envelope: parse(body)? });
                }
            }
        }
    }
    for chunk in pending.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from("DELETE FROM outbox WHERE position IN (");
        super::push_placeholders(&mut sql, 1, chunk.len());
        sql.push(')');
        let mut delete = Write::new(sql);
        for (outbox_position, ..) in chunk {
            delete = delete.bind(*outbox_position);
        }
        tx.defer(delete);
    }
    store.commit(tx).await?;
    Ok(appended)
}

/// Whether any event waits in the outbox (a read; false may be stale by one commit, which wakes
/// the relay again).
pub async fn outbox_has_rows(store: &Store) -> Result<bool, StoreError> {
    let row: Option<i64> = query_scalar(store, "SELECT 1 FROM outbox LIMIT 1").fetch_optional(store.reader()).await?;
    Ok(row.is_some())
}

/// How many events wait in the outbox.
pub async fn outbox_backlog(store: &Store) -> Result<i64, StoreError> {
    Ok(query_scalar(store, "SELECT COUNT(*) FROM outbox").fetch_one(store.reader()).await?)
}

/// Reads up to `limit` log records after `after`, in order.
pub async fn read(store: &Store, after: i64, limit: u32) -> Result<Vec<LogRecord>, StoreError> {
    let rows: Vec<(i64, LongText)> = query_as(
        store,
        "SELECT l.position, e.body FROM event_log l JOIN events e ON e.id = l.event_id
         WHERE l.position > $1 ORDER BY l.position LIMIT $2",
    )
    .bind(after)
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.into_iter().map(|(position, LongText(body))| Ok(LogRecord { position, envelope: parse(&body)? })).collect()
}

/// Where a consumer stopped (0 before its first event).
pub async fn load_offset(store: &Store, consumer: &str) -> Result<i64, StoreError> {
    let position: Option<i64> = query_scalar(store, "SELECT position FROM consumer_offsets WHERE consumer = $1")
        .bind(consumer)
        .fetch_optional(store.reader())
        .await?;
    Ok(position.unwrap_or(0))
}

/// Stores where a consumer got to (an offset only moves forward).
pub async fn save_offset(store: &Store, consumer: &str, position: i64) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    tx.defer(Write::new(store.backend().save_offset()).bind(consumer).bind(position));
    store.commit(tx).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_store;
    use crate::store::{append_events, Durability};
    use bazaar_protocol::auth::UserView;
    use bazaar_protocol::events::Event;
    use bazaar_protocol::values::Role;

    async fn record(store: &Store, n: usize) {
        let user =
            UserView { id: format!("u{n}").into(), email: format!("{n}@x.io"), role: Role::Buyer, name: "n".into() };
        let entity_id = user.id.as_str().to_owned();
        let event = Envelope::new(entity_id, 1, chrono::Utc::now(), Event::UserRegistered { user });
        let mut tx = store.begin().await.unwrap();
        append_events(&mut tx, &[event]).unwrap();
        store.commit(tx).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_nodes_writing_and_relaying_on_one_database_log_every_event_once() {
        let (first, database) = fresh_store().await;
        let second = Store::open(database.url(), Durability::Normal).await.unwrap();
        let writes = (0..200).map(|n| {
            let store = if n % 2 == 0 { first.clone() } else { second.clone() };
            tokio::spawn(async move {
                record(&store, n).await;
                relay_batch(&store, 7).await.unwrap();
            })
        });
        for write in futures_util::future::join_all(writes).await {
            write.unwrap();
        }
        while !relay_batch(&first, 100).await.unwrap().is_empty() {}
        let logged = read(&first, 0, 1_000).await.unwrap();
        assert_eq!(logged.len(), 200, "every event is in the log");
        assert_eq!(outbox_backlog(&first).await.unwrap(), 0);
        let mut ids: Vec<&str> = logged.iter().map(|record| record.envelope.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 200, "no event is logged twice");
        second.close().await;
    }
}
