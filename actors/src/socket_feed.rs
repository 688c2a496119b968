//! The socket hub's own feed from Kafka: on a cluster whose event log is Kafka, each node reads
//! the topics whose events reach sockets (chat messages, order changes) for the sockets
//! connected to it, one task per partition, and hands each batch to its
//! [`SocketHub`](crate::socket_hub::SocketHub).
//!
//! The relay's direct broadcast to every node's router stays as the fast path; this feed is what
//! makes delivery independent of the cluster's sessions: a node cut off from its peers while
//! Kafka is up still receives every committed message. The hub de-duplicates what both paths
//! deliver (per-room seq for chat, event id for order pushes), so a socket sees each frame once.
//!
//! Each task keeps its partition's position in memory and starts at the partition's end: a node
//! that starts has no sockets yet, and a socket that joins with `since` gets its history from the
//! store, so nothing before the start is owed to anyone here. A batch is pushed before the next
//! is read (the hub answers once it has handed the batch to its sessions), so the feed never
//! runs ahead of the hub by more than one bounded batch per partition.

use crate::event_log::kafka::KafkaLog;
use crate::event_log::{EventLog, LogError, Partition};
use crate::socket_hub::{HubMsg, PUSHED_TOPICS};
use ractor::ActorRef;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// How the feed reads.
#[derive(Debug, Clone, Copy)]
pub struct FeedSettings {
    /// The most records one fetch of a partition returns (the broker's answer is also capped in
    /// bytes by the log).
    pub fetch_records: usize,
    /// How long an idle partition waits before it looks again, unless a publication on this
    /// node or a peer's wakes it first; bounds the delay of a message while the cluster's
    /// sessions are down.
    pub idle_poll: Duration,
    /// The longest pause between retries while the broker fails (the pause doubles from 100 ms).
    pub retry_max: Duration,
}

/// Starts one task per partition of the pushed topics; each stops when `shutdown` turns true.
pub fn spawn(
    log: Arc<KafkaLog>,
    hub: ActorRef<HubMsg>,
    settings: FeedSettings,
    shutdown: watch::Receiver<bool>,
) -> Vec<JoinHandle<()>> {
    log.partitions_of(&PUSHED_TOPICS)
        .into_iter()
        .map(|partition| {
            let (log, hub, shutdown) = (log.clone(), hub.clone(), shutdown.clone());
            tokio::spawn(follow(log, partition, hub, settings, shutdown))
        })
        .collect()
}

/// Waits out one retry pause (or shutdown); the next pause is twice as long, up to the cap.
/// False when the node is shutting down.
async fn pause(delay: &mut Duration, cap: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(*delay) => {}
        _ = shutdown.changed() => {}
    }
    *delay = (*delay * 2).min(cap.max(Duration::from_millis(100)));
    !*shutdown.borrow()
}

/// Logs a failure at most every ten seconds per partition, however fast the retries go.
fn report(e: &LogError, partition: &Partition, last_warning: &mut Option<Instant>, what: &str) {
    metrics::counter!("bazaar_socket_feed_failures_total").increment(1);
    if last_warning.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
        warn!(topic = %partition.topic, partition = partition.index, reason = %e, "{what}; retrying");
        *last_warning = Some(Instant::now());
    }
}

async fn follow(
    log: Arc<KafkaLog>,
    partition: Partition,
    hub: ActorRef<HubMsg>,
    settings: FeedSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let first_delay = Duration::from_millis(100);
    let mut delay = first_delay;
    let mut last_warning = None;
    let mut next = loop {
        if *shutdown.borrow() {
            return;
        }
        match log.end_offset(&partition).await {
            Ok(end) => break end,
            Err(e) => {
                report(&e, &partition, &mut last_warning, "socket feed cannot find the partition's end");
                if !pause(&mut delay, settings.retry_max, &mut shutdown).await {
                    return;
                }
            }
        }
    };
    info!(topic = %partition.topic, partition = partition.index, from = next, "socket feed started");
    let limit = settings.fetch_records.max(1);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let fetched = tokio::select! {
            fetched = log.fetch(&partition, next, limit, settings.idle_poll) => fetched,
            _ = shutdown.changed() => return,
        };
        match fetched {
            Ok(records) => {
                if last_warning.take().is_some() {
                    info!(topic = %partition.topic, partition = partition.index, "socket feed reading again");
                }
                delay = first_delay;
                let Some(last) = records.last().map(|r| r.offset) else { continue };
                next = last + 1;
                metrics::counter!("bazaar_socket_feed_records_total").increment(records.len() as u64);
                let events = records.into_iter().map(|r| r.envelope).collect();
                // Waiting for the answer is the back-pressure: one batch in the hub at a time.
                if ractor::call!(hub, |reply| HubMsg::Feed { events, reply }).is_err() {
                    return;
                }
            }
            Err(e) => {
                report(&e, &partition, &mut last_warning, "socket feed cannot read the partition");
                if !pause(&mut delay, settings.retry_max, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}
