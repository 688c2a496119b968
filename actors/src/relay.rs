//! The outbox relay: moves committed events from the outbox into the event log (embedded or
//! Kafka), in commit order, then wakes the consumers and hands the events to this node's live
//! subscribers and to every other node.

use crate::cache::Cache;
use crate::cluster::router::RouterMsg;
use crate::cluster::ClusterView;
use crate::event_log::EventLog;
use crate::store::Store;
use bazaar_protocol::events::Envelope;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The cluster role of the one relay, when the log needs a single one.
pub const ROLE: &str = "relay";

/// Starts the relay; it stops when `shutdown` turns true, after draining what is committed.
/// In a cluster each published event also goes, once, to every other node's router, for the
/// sockets connected there and for the saga wherever it runs.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    store: Store,
    log: Arc<dyn EventLog>,
    view: Option<Arc<ClusterView>>,
    cache: Cache,
    batch: u32,
    appended: Arc<Notify>,
    live: broadcast::Sender<Arc<Envelope>>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let committed = store.commit_signal();
    let cache_updates = Arc::new(tokio::sync::Semaphore::new(1));
    // A relay that is the only one in the cluster hears of other nodes' commits from them: each
    // node that commits events while another relays tells that one (`OutboxQueued`). The poll
    // is only a safety net for a message lost in a view change, so it can be slow; it used to be
    // 10 ms, a hundred outbox reads a second on an idle cluster.
    let exclusive = log.exclusive_relay() && view.is_some();
    let idle_poll = Duration::from_secs(1);
    tokio::spawn(async move {
        let mut failing_since: Option<Instant> = None;
        let mut last_warning: Option<Instant> = None;
        let mut delay = Duration::from_millis(100);
        loop {
            if exclusive && !view.as_ref().is_some_and(|view| view.leads(ROLE)) {
                if *shutdown.borrow() {
                    break;
                }
                tokio::select! {
                    _ = committed.notified() => {
                        if let Some(leader) = view.as_ref().and_then(|view| view.leader_router(ROLE)) {
                            let me = view.as_ref().map(|view| view.self_name().to_owned()).unwrap_or_default();
                            let _ = leader.send_message(RouterMsg::OutboxQueued(me));
                        }
                    }
                    // Leadership moves only with the view; looking at it is a read of memory.
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            match log.relay(&store, batch).await {
                Ok(records) if !records.is_empty() => {
                    if let Some(since) = failing_since.take() {
                        info!(after = ?since.elapsed(), "event log reachable again; relaying");
                        delay = Duration::from_millis(100);
                    }
                    // One stored permit for a reader between looks, and every reader waiting now.
                    appended.notify_one();
                    appended.notify_waiters();
                    metrics::counter!("bazaar_outbox_relayed_total").increment(records.len() as u64);
                    let now = chrono::Utc::now();
                    // The cache follows the log off the relay's path, so a slow or absent Redis
                    // never delays delivery; one update at a time, and a batch that finds the
                    // previous one still running is skipped (a cache entry it would have written
                    // is filled by the next read that misses).
                    if let Ok(permit) = cache_updates.clone().try_acquire_owned() {
                        let events = records.clone();
                        let cache = cache.clone();
                        tokio::spawn(async move {
                            for event in events {
                                cache.apply(&event).await;
                            }
                            drop(permit);
                        });
                    }
                    for envelope in records {
                        let lag = (now - envelope.at).num_microseconds().unwrap_or(0) as f64 / 1e6;
                        metrics::histogram!("bazaar_relay_lag_seconds").record(lag.max(0.0));
                        if let Some(view) = &view {
                            let text = serde_json::to_string(&*envelope).unwrap_or_default();
                            view.broadcast(&text, RouterMsg::Publish);
                        }
                        // No receiver is fine: nobody on this node is listening right now.
                        let _ = live.send(envelope);
                    }
                    // A full batch means more may be waiting: go again before sleeping.
                    continue;
                }
                Ok(_) => {
                    failing_since = None;
                }
                Err(e) => {
                    // Committed events wait in the outbox until the log is back; commands go on.
                    metrics::counter!("bazaar_relay_failures_total").increment(1);
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                        warn!(reason = %e, failing_for = ?since.elapsed(), "outbox relay failed; retrying");
                        last_warning = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = committed.notified() => {}
                _ = tokio::time::sleep(idle_poll) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}
