//! The outbox relay: moves committed events from the outbox into the event log, in commit order,
//! then wakes the consumers and hands the events to this node's live subscribers.

use crate::cache::Cache;
use crate::cluster::router::RouterMsg;
use crate::cluster::ClusterView;
use crate::store::{log, Store};
use bazaar_protocol::events::Envelope;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tracing::warn;

/// Starts the relay; it stops when `shutdown` turns true, after draining what is committed.
/// In a cluster each published event also goes, once, to every other node's router, for the
/// sockets connected there and for the saga wherever it runs.
pub fn spawn(
    store: Store,
    view: Option<Arc<ClusterView>>,
    cache: Cache,
    batch: u32,
    appended: Arc<Notify>,
    live: broadcast::Sender<Arc<Envelope>>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let committed = store.commit_signal();
    let cache_updates = Arc::new(tokio::sync::Semaphore::new(1));
    tokio::spawn(async move {
        loop {
            match log::relay_batch(&store, batch).await {
                Ok(records) if !records.is_empty() => {
                    appended.notify_one();
                    metrics::counter!("bazaar_outbox_relayed_total").increment(records.len() as u64);
                    let now = chrono::Utc::now();
                    // The cache follows the log off the relay's path, so a slow or absent Redis
                    // never delays delivery; one update at a time, and a batch that finds the
                    // previous one still running is skipped (a cache entry it would have written
                    // is filled by the next read that misses).
                    if let Ok(permit) = cache_updates.clone().try_acquire_owned() {
                        let events: Vec<Arc<Envelope>> = records.iter().map(|r| r.envelope.clone()).collect();
                        let cache = cache.clone();
                        tokio::spawn(async move {
                            for event in events {
                                cache.apply(&event).await;
                            }
                            drop(permit);
                        });
                    }
                    for record in records {
                        let lag = (now - record.envelope.at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                        metrics::histogram!("bazaar_relay_lag_seconds").record(lag.max(0.0));
                        if let Some(view) = &view {
                            let text = serde_json::to_string(&*record.envelope).unwrap_or_default();
                            view.broadcast(&text, RouterMsg::Publish);
                        }
                        // No receiver is fine: nobody on this node is listening right now.
                        let _ = live.send(record.envelope);
                    }
                    // A full batch means more may be waiting: go again before sleeping.
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(reason = %e, "outbox relay failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = committed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}
