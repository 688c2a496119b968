//! Webhook rows: endpoints, one delivery per event and endpoint, and each attempt of a delivery.
//! Timestamps are the fixed-width text of [`timestamp`], so "due by now" is a text comparison
//! an index serves.

use super::{query, query_as, query_scalar, timestamp, LongText, Store, StoreError};
use bazaar_protocol::webhooks::{DeliveryAttempt, DeliveryStatus};
use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::Row;

/// An endpoint as stored (its secrets included: they sign every delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    pub id: String,
    /// The seller's id, or [`OPERATOR`].
    pub owner_id: String,
    pub url: String,
    /// The event types it receives.
    pub events: Vec<String>,
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_until`.
    pub previous_secret: Option<String>,
    pub previous_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// The owner of the endpoint configured by the operator.
pub const OPERATOR: &str = "operator";

fn endpoint_from(row: &AnyRow) -> Result<EndpointRow, StoreError> {
    let events: String = row.try_get("events")?;
    let previous_until: Option<String> = row.try_get("previous_until")?;
    Ok(EndpointRow {
        id: row.try_get("id")?,
        owner_id: row.try_get("owner_id")?,
        url: row.try_get("url")?,
        events: events.split(',').filter(|e| !e.is_empty()).map(str::to_owned).collect(),
        secret: row.try_get("secret")?,
        previous_secret: row.try_get("previous_secret")?,
        previous_until: previous_until.as_deref().map(timestamp::decode).transpose()?,
        created_at: timestamp::column(row, "created_at")?,
    })
}

/// Registers `endpoint` unless its owner has `max_per_owner` live endpoints already (`false`).
pub async fn insert_endpoint(store: &Store, endpoint: &EndpointRow, max_per_owner: usize) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let live: i64 =
        query_scalar(store, "SELECT COUNT(*) FROM webhook_endpoints WHERE owner_id = $1 AND deleted_at IS NULL")
            .bind(&endpoint.owner_id)
            .fetch_one(tx.conn().await?)
            .await?;
    if live >= max_per_owner as i64 {
        return Ok(false);
    }
    query(
        store,
        "INSERT INTO webhook_endpoints (id, owner_id, url, events, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&endpoint.id)
    .bind(&endpoint.owner_id)
    .bind(&endpoint.url)
    .bind(endpoint.events.join(","))
    .bind(&endpoint.secret)
    .bind(timestamp::encode(endpoint.created_at))
    .execute(tx.conn().await?)
    .await?;
    store.commit(tx).await?;
    Ok(true)
}

/// Writes the operator's endpoint as configured (created the first time, its URL, events and
/// secret replaced on every start), keeping its id and so its deliveries.
pub async fn configure_operator(store: &Store, endpoint: &EndpointRow) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    // Insert first, then update: nodes starting together all get past the insert.
    query(
        store,
        "INSERT INTO webhook_endpoints (id, owner_id, url, events, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(&endpoint.id)
    .bind(&endpoint.owner_id)
    .bind(&endpoint.url)
    .bind(endpoint.events.join(","))
    .bind(&endpoint.secret)
    .bind(timestamp::encode(endpoint.created_at))
    .execute(tx.conn().await?)
    .await?;
    query(store, "UPDATE webhook_endpoints SET url = $1, events = $2, secret = $3, deleted_at = NULL WHERE id = $4")
        .bind(&endpoint.url)
        .bind(endpoint.events.join(","))
        .bind(&endpoint.secret)
        .bind(&endpoint.id)
        .execute(tx.conn().await?)
        .await?;
    store.commit(tx).await?;
    Ok(())
}

/// Stops the operator's endpoint (no longer configured); its deliveries stay readable.
pub async fn retire_operator(store: &Store, id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let done = query(store, "UPDATE webhook_endpoints SET deleted_at = $1 WHERE id = $2 AND deleted_at IS NULL")
        .bind(timestamp::encode(now))
        .bind(id)
        .execute(tx.conn().await?)
        .await?;
    if done.rows_affected() == 1 {
        stop_pending(&mut tx, id).await?;
    }
    store.commit(tx).await?;
    Ok(())
}

/// Ends the PENDING deliveries of a deleted endpoint (FAILED, never sent), so neither the
/// sender's look at due deliveries nor the purge keeps passing over them.
async fn stop_pending(tx: &mut super::Tx, endpoint_id: &str) -> Result<(), StoreError> {
    query(
        tx,
        "UPDATE webhook_deliveries SET status = 'FAILED', next_attempt_at = NULL WHERE endpoint_id = $1 AND status = 'PENDING'",
    )
    .bind(endpoint_id)
    .execute(tx.conn().await?)
    .await?;
    Ok(())
}

/// `owner_id`'s live endpoints, oldest first.
pub async fn endpoints_of(store: &Store, owner_id: &str) -> Result<Vec<EndpointRow>, StoreError> {
    let rows = query(
        store,
        "SELECT id, owner_id, url, events, secret, previous_secret, previous_until, created_at \
         FROM webhook_endpoints WHERE owner_id = $1 AND deleted_at IS NULL ORDER BY created_at, id",
    )
    .bind(owner_id)
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(endpoint_from).collect()
}

/// Every live endpoint (what the dispatcher matches events against).
pub async fn live_endpoints(store: &Store) -> Result<Vec<EndpointRow>, StoreError> {
    let rows = query(
        store,
        "SELECT id, owner_id, url, events, secret, previous_secret, previous_until, created_at \
         FROM webhook_endpoints WHERE deleted_at IS NULL",
    )
    .fetch_all(store.reader())
    .await?;
    rows.iter().map(endpoint_from).collect()
}

/// The live endpoint `id`, whoever owns it.
pub async fn endpoint(store: &Store, id: &str) -> Result<Option<EndpointRow>, StoreError> {
    let row = query(
        store,
        "SELECT id, owner_id, url, events, secret, previous_secret, previous_until, created_at \
         FROM webhook_endpoints WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(store.reader())
    .await?;
    row.as_ref().map(endpoint_from).transpose()
}

/// Deletes `owner_id`'s endpoint `id`; `false` when it has none such. Its pending deliveries
/// are never sent (the sender reads live endpoints only).
pub async fn delete_endpoint(store: &Store, owner_id: &str, id: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let done = query(
        store,
        "UPDATE webhook_endpoints SET deleted_at = $1 WHERE id = $2 AND owner_id = $3 AND deleted_at IS NULL",
    )
    .bind(timestamp::encode(now))
    .bind(id)
    .bind(owner_id)
    .execute(tx.conn().await?)
    .await?;
    let deleted = done.rows_affected() == 1;
    if deleted {
        stop_pending(&mut tx, id).await?;
    }
    store.commit(tx).await?;
    Ok(deleted)
}

/// Gives `owner_id`'s endpoint `id` the secret `next`; the one it replaces keeps signing (as a
/// second signature) until `previous_until`. `false` when it has no such endpoint.
pub async fn rotate_secret(
    store: &Store,
    owner_id: &str,
    id: &str,
    next: &str,
    previous_until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let done = query(
        store,
        "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $1, secret = $2 \
         WHERE id = $3 AND owner_id = $4 AND deleted_at IS NULL",
    )
    .bind(timestamp::encode(previous_until))
    .bind(next)
    .bind(id)
    .bind(owner_id)
    .execute(tx.conn().await?)
    .await?;
    store.commit(tx).await?;
    Ok(done.rows_affected() == 1)
}

/// A delivery to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    /// The event's envelope as JSON: the body posted.
    pub body: String,
    pub created_at: DateTime<Utc>,
}

/// Creates `deliveries` (due now), in one transaction; one that exists already (the same event
/// for the same endpoint, read again after a crash or a takeover) is left as it is.
pub async fn insert_deliveries(store: &Store, deliveries: &[NewDelivery]) -> Result<(), StoreError> {
    if deliveries.is_empty() {
        return Ok(());
    }
    let mut tx = store.begin().await?;
    for delivery in deliveries {
        let created = timestamp::encode(delivery.created_at);
        query(
            store,
            "INSERT INTO webhook_deliveries \
             (id, endpoint_id, event_id, event_type, body, status, attempt_count, next_attempt_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, 'PENDING', 0, $6, $7) ON CONFLICT (endpoint_id, event_id) DO NOTHING",
        )
        .bind(&delivery.id)
        .bind(&delivery.endpoint_id)
        .bind(&delivery.event_id)
        .bind(&delivery.event_type)
        .bind(&delivery.body)
        .bind(created.clone())
        .bind(created)
        .execute(tx.conn().await?)
        .await?;
    }
    store.commit(tx).await?;
    Ok(())
}

/// A delivery that is due, with what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueDelivery {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub body: String,
    pub attempt_count: u32,
    pub created_at: DateTime<Utc>,
    /// The due time as stored: the claim compares against it.
    pub due_at: String,
}

/// A due delivery's columns: id, endpoint, event id and type, body, attempts, created, due.
type DueRow = (String, String, String, String, LongText, i64, String, String);

/// Up to `limit` endpoints with PENDING deliveries due by `now`, the one waiting longest first
/// (so one endpoint's backlog never hides the others').
pub async fn due_endpoints(store: &Store, now: DateTime<Utc>, limit: u32) -> Result<Vec<String>, StoreError> {
    let ids = query_scalar(
        store,
        "SELECT endpoint_id FROM webhook_deliveries WHERE status = 'PENDING' AND next_attempt_at <= $1 \
         GROUP BY endpoint_id ORDER BY MIN(next_attempt_at) LIMIT $2",
    )
    .bind(timestamp::encode(now))
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    Ok(ids)
}

/// Up to `limit` PENDING deliveries of `endpoint_id` due by `now`, the most overdue first.
pub async fn due(
    store: &Store,
    endpoint_id: &str,
    now: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<DueDelivery>, StoreError> {
    let rows: Vec<DueRow> = query_as(
        store,
        "SELECT id, endpoint_id, event_id, event_type, body, attempt_count, created_at, next_attempt_at \
         FROM webhook_deliveries WHERE endpoint_id = $1 AND status = 'PENDING' AND next_attempt_at <= $2 \
         ORDER BY next_attempt_at LIMIT $3",
    )
    .bind(endpoint_id)
    .bind(timestamp::encode(now))
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.into_iter()
        .map(|(id, endpoint_id, event_id, event_type, LongText(body), attempts, created_at, due_at)| {
            Ok(DueDelivery {
                id,
                endpoint_id,
                event_id,
                event_type,
                body,
                attempt_count: u32::try_from(attempts).unwrap_or(u32::MAX),
                created_at: timestamp::decode(&created_at)?,
                due_at,
            })
        })
        .collect()
}

/// Takes `delivery` for one attempt: moves its due time to `lease_until`, so no other sender
/// (another node after a view change) takes it meanwhile, and a sender killed mid-attempt leaves
/// it due again then. Answers the claim (the due time it set), or `None` when someone else
/// took it first.
pub async fn claim(
    store: &Store,
    delivery: &DueDelivery,
    lease_until: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let lease = timestamp::encode(lease_until);
    let mut tx = store.begin().await?;
    let done = query(
        store,
        "UPDATE webhook_deliveries SET next_attempt_at = $1 \
         WHERE id = $2 AND status = 'PENDING' AND next_attempt_at = $3",
    )
    .bind(lease.clone())
    .bind(&delivery.id)
    .bind(&delivery.due_at)
    .execute(tx.conn().await?)
    .await?;
    store.commit(tx).await?;
    Ok((done.rows_affected() == 1).then_some(lease))
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    /// A 2xx came back.
    Delivered,
    /// Try again then.
    RetryAt(DateTime<Utc>),
    /// Out of time: no more tries.
    Failed,
}

/// Records attempt number `n` (1-based) of `delivery_id`, made under `claim`, and what follows
/// it. A delivery re-sent meanwhile (its due time is no longer the claim's) keeps its new due
/// time and is sent again; the attempt is logged either way.
pub async fn record_attempt(
    store: &Store,
    delivery_id: &str,
    claim: &str,
    n: u32,
    attempt: &DeliveryAttempt,
    after: AfterAttempt,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    query(
        store,
        "INSERT INTO webhook_attempts (delivery_id, n, at, status_code, error, duration_ms) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (delivery_id, n) DO NOTHING",
    )
    .bind(delivery_id)
    .bind(i64::from(n))
    .bind(timestamp::encode(attempt.at))
    .bind(attempt.status_code.map(i64::from))
    .bind(attempt.error.clone())
    .bind(i64::try_from(attempt.duration_ms).unwrap_or(i64::MAX))
    .execute(tx.conn().await?)
    .await?;
    let (status, next) = match after {
        AfterAttempt::Delivered => (DeliveryStatus::Delivered, None),
        AfterAttempt::RetryAt(at) => (DeliveryStatus::Pending, Some(timestamp::encode(at))),
        AfterAttempt::Failed => (DeliveryStatus::Failed, None),
    };
    query(store, "UPDATE webhook_deliveries SET attempt_count = $1 WHERE id = $2 AND attempt_count < $3")
        .bind(i64::from(n))
        .bind(delivery_id)
        .bind(i64::from(n))
        .execute(tx.conn().await?)
        .await?;
    query(
        store,
        "UPDATE webhook_deliveries SET status = $1, next_attempt_at = $2 \
         WHERE id = $3 AND status = 'PENDING' AND next_attempt_at = $4",
    )
    .bind(status.as_str())
    .bind(next)
    .bind(delivery_id)
    .bind(claim)
    .execute(tx.conn().await?)
    .await?;
    store.commit(tx).await?;
    Ok(())
}

/// A delivery as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: String,
    pub endpoint_id: String,
    pub event_id: String,
    pub event_type: String,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A listed delivery's columns: id, endpoint, event id and type, status, attempts, due, created.
type ListedRow = (String, String, String, String, String, i64, Option<String>, String);

/// Up to `limit` deliveries of `endpoint_id`, newest first, before the delivery `before`.
pub async fn deliveries_of(
    store: &Store,
    endpoint_id: &str,
    before: Option<&str>,
    limit: u32,
) -> Result<Vec<DeliveryRow>, StoreError> {
    let rows: Vec<ListedRow> = query_as(
        store,
        "SELECT id, endpoint_id, event_id, event_type, status, attempt_count, next_attempt_at, created_at \
         FROM webhook_deliveries WHERE endpoint_id = $1 AND ($2 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(endpoint_id)
    .bind(before)
    .bind(before)
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    rows.into_iter()
        .map(|(id, endpoint_id, event_id, event_type, status, attempts, next, created_at)| {
            let status = DeliveryStatus::parse(&status)
                .ok_or_else(|| StoreError::Corrupt(format!("delivery {id}: status {status}")))?;
            Ok(DeliveryRow {
                status,
                attempt_count: u32::try_from(attempts).unwrap_or(u32::MAX),
                // A PENDING delivery's due time is shown; the others have none.
                next_attempt_at: match status {
                    DeliveryStatus::Pending => next.as_deref().map(timestamp::decode).transpose()?,
                    _ => None,
                },
                created_at: timestamp::decode(&created_at)?,
                id,
                endpoint_id,
                event_id,
                event_type,
            })
        })
        .collect()
}

/// The last `limit` attempts of `delivery_id`, oldest first.
pub async fn attempts_of(store: &Store, delivery_id: &str, limit: u32) -> Result<Vec<DeliveryAttempt>, StoreError> {
    let rows: Vec<(String, Option<i64>, Option<String>, i64)> = query_as(
        store,
        "SELECT at, status_code, error, duration_ms FROM webhook_attempts WHERE delivery_id = $1 \
         ORDER BY n DESC LIMIT $2",
    )
    .bind(delivery_id)
    .bind(i64::from(limit))
    .fetch_all(store.reader())
    .await?;
    let mut attempts = rows
        .into_iter()
        .map(|(at, status_code, error, duration_ms)| {
            Ok(DeliveryAttempt {
                at: timestamp::decode(&at)?,
                status_code: status_code.and_then(|code| u16::try_from(code).ok()),
                error,
                duration_ms: u64::try_from(duration_ms).unwrap_or(0),
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    attempts.reverse();
    Ok(attempts)
}

/// Makes `endpoint_id`'s delivery `delivery_id` due again now, whatever its status (a re-send);
/// `false` when the endpoint has no such delivery.
pub async fn resend(
    store: &Store,
    endpoint_id: &str,
    delivery_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    let done = query(
        store,
        "UPDATE webhook_deliveries SET status = 'PENDING', next_attempt_at = $1 WHERE id = $2 AND endpoint_id = $3",
    )
    .bind(timestamp::encode(now))
    .bind(delivery_id)
    .bind(endpoint_id)
    .execute(tx.conn().await?)
    .await?;
    store.commit(tx).await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes the finished deliveries (and their attempts) created before `before`, a chunk per
/// transaction so the node's writer is never held long; answers how many.
pub async fn purge(store: &Store, before: DateTime<Utc>) -> Result<u64, StoreError> {
    const CHUNK: i64 = 500;
    let mut purged = 0;
    loop {
        let ids: Vec<String> = query_scalar(
            store,
            "SELECT id FROM webhook_deliveries WHERE created_at < $1 AND status <> 'PENDING' ORDER BY created_at LIMIT $2",
        )
        .bind(timestamp::encode(before))
        .bind(CHUNK)
        .fetch_all(store.reader())
        .await?;
        if ids.is_empty() {
            return Ok(purged);
        }
        let mut tx = store.begin().await?;
        for id in &ids {
            query(store, "DELETE FROM webhook_attempts WHERE delivery_id = $1")
                .bind(id)
                .execute(tx.conn().await?)
                .await?;
            query(store, "DELETE FROM webhook_deliveries WHERE id = $1").bind(id).execute(tx.conn().await?).await?;
        }
        store.commit(tx).await?;
        purged += ids.len() as u64;
        if (ids.len() as i64) < CHUNK {
            return Ok(purged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::fresh_store;

    fn endpoint(id: &str, owner: &str, at: DateTime<Utc>) -> EndpointRow {
        EndpointRow {
            id: id.into(),
            owner_id: owner.into(),
            url: "https://hooks.example.com/".into(),
            events: vec!["OrderPlaced".into()],
            secret: "whsec_x".into(),
            previous_secret: None,
            previous_until: None,
            created_at: at,
        }
    }

    fn delivery(endpoint_id: &str, n: usize, at: DateTime<Utc>) -> NewDelivery {
        NewDelivery {
            id: format!("{endpoint_id}-{n:04}"),
            endpoint_id: endpoint_id.into(),
            event_id: format!("event-{n}"),
            event_type: "OrderPlaced".into(),
            body: "{}".into(),
            created_at: at,
        }
    }

    #[tokio::test]
    async fn a_backlog_never_hides_another_endpoint_and_claims_records_and_deletes_behave() {
        let (store, _db) = fresh_store().await;
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert!(insert_endpoint(&store, &endpoint("busy", "s1", t0), 10).await.unwrap());
        assert!(insert_endpoint(&store, &endpoint("quiet", "s2", t0), 10).await.unwrap());
        assert!(!insert_endpoint(&store, &endpoint("third", "s1", t0), 1).await.unwrap(), "the limit counts");
        let backlog: Vec<NewDelivery> = (0..200).map(|n| delivery("busy", n, t0)).collect();
        insert_deliveries(&store, &backlog).await.unwrap();
        let later = t0 + chrono::Duration::seconds(5);
        insert_deliveries(&store, &[delivery("quiet", 0, later)]).await.unwrap();
        // The same event for the same endpoint again (a re-read log) changes nothing.
        insert_deliveries(&store, &backlog[..3]).await.unwrap();

        let now = t0 + chrono::Duration::seconds(60);
        assert_eq!(due_endpoints(&store, now, 10).await.unwrap(), ["busy", "quiet"]);
        assert_eq!(due(&store, "busy", now, 1000).await.unwrap().len(), 200);

        // A claim takes a delivery out of the due set until its lease; a second claim fails.
        let first = due(&store, "quiet", now, 1).await.unwrap().remove(0);
        let lease = now + chrono::Duration::seconds(10);
        let claim = claim(&store, &first, lease).await.unwrap().expect("claimed");
        assert_eq!(super::claim(&store, &first, lease).await.unwrap(), None);
        assert_eq!(due_endpoints(&store, now, 10).await.unwrap(), ["busy"]);
        // A re-send during the attempt wins over the attempt's outcome.
        assert!(resend(&store, "quiet", &first.id, now).await.unwrap());
        let failed =
            DeliveryAttempt { at: now, status_code: Some(500), error: Some("HTTP 500".into()), duration_ms: 3 };
        record_attempt(&store, &first.id, &claim, 1, &failed, AfterAttempt::RetryAt(now + chrono::Duration::hours(1)))
            .await
            .unwrap();
        let listed = deliveries_of(&store, "quiet", None, 10).await.unwrap();
        assert_eq!((listed[0].status, listed[0].attempt_count), (DeliveryStatus::Pending, 1));
        assert_eq!(listed[0].next_attempt_at, Some(now));
        assert_eq!(attempts_of(&store, &first.id, 25).await.unwrap(), [failed]);

        // Deleting an endpoint ends its pending deliveries; the purge takes finished old ones.
        assert!(delete_endpoint(&store, "s1", "busy", now).await.unwrap());
        assert!(!delete_endpoint(&store, "s2", "busy", now).await.unwrap());
        assert_eq!(due_endpoints(&store, now, 10).await.unwrap(), ["quiet"]);
        assert_eq!(purge(&store, now).await.unwrap(), 200);
        assert_eq!(deliveries_of(&store, "busy", None, 10).await.unwrap(), []);
    }
}
