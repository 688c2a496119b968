//! The reservation hold sweep: cancels orders that stayed ORDERED (no payment requested) past
//! their hold, so an unpaid order cannot keep its stock from every other buyer forever.
//!
//! The hold is durable: each order carries its `expires_at`, and the sweep finds overdue orders
//! with a query (an index of ORDERED orders by expiry), so a restart, a crash or a new owner
//! finds them all again. The sweep only asks; each order entity decides (it is still ORDERED and
//! its hold has ended) and commits the cancellation under its version check, and the
//! `OrderCancelled` event releases the stock and reaches the buyer's sockets like any other
//! cancellation. In a cluster one node sweeps (the rendezvous owner of [`ROLE`]); two sweepers
//! during a view change are harmless, since an order is cancelled at most once.

use crate::cluster::ClusterView;
use crate::order::ExpireOrder;
use crate::regions::Regions;
use crate::store::{orders, Store};
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The cluster role of the one node that sweeps.
pub const ROLE: &str = "reservations";
/// Overdue orders read per look; a full page means more are due, so the sweep looks again at once.
const PAGE: u32 = 200;
/// Orders expired at once: a backlog after downtime drains quickly without flooding the writer.
const CONCURRENCY: usize = 16;
/// The longest the sweep sleeps, so a node that became the sweeper late starts within this.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// The pause after a look that left an overdue order in place (its entity failed or saw the hold
/// differently): the next look retries it without spinning.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Starts the sweep; it stops when `shutdown` turns true.
pub fn spawn(
    store: Store,
    regions: Regions,
    view: Option<Arc<ClusterView>>,
    hold: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = if view.as_ref().is_none_or(|view| view.leads(ROLE)) {
                sweep(&store, &regions, hold).await
            } else {
                // Leadership moves with the view; looking at it is a read of memory.
                RETRY_AFTER
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    })
}

/// Expires one page of overdue orders; returns how long to wait before the next look.
async fn sweep(store: &Store, regions: &Regions, hold: Duration) -> Duration {
    let due = match orders::overdue(store, Utc::now(), PAGE).await {
        Ok(due) => due,
        Err(e) => {
            warn!(reason = %e, "overdue orders unreadable; retrying");
            return RETRY_AFTER;
        }
    };
    let page_was_full = due.len() == PAGE as usize;
    let asks: Vec<_> = due
        .into_iter()
        .map(|order_id| {
            let ask = regions.orders.ask(&order_id, ExpireOrder);
            async move { (order_id, ask.await) }
        })
        .collect();
    let outcomes: Vec<_> = stream::iter(asks).buffer_unordered(CONCURRENCY).collect().await;
    let mut left = false;
    for (order_id, outcome) in outcomes {
        match outcome {
            Ok(Ok(true)) => {
                metrics::counter!("bazaar_reservations_expired_total").increment(1);
                info!(%order_id, "reservation hold ended unpaid; order cancelled");
            }
            Ok(Ok(false)) => left = true,
            Ok(Err(e)) => {
                warn!(%order_id, reason = %e, "order not expired; retrying");
                left = true;
            }
            Err(e) => {
                warn!(%order_id, reason = %e, "order not expired; retrying");
                left = true;
            }
        }
    }
    if page_was_full && !left {
        return Duration::ZERO;
    }
    if left {
        return RETRY_AFTER;
    }
    match orders::next_expiry(store).await {
        Ok(next) => next_look(next, Utc::now(), hold),
        Err(e) => {
            warn!(reason = %e, "next order expiry unreadable; retrying");
            RETRY_AFTER
        }
    }
}

/// How long to sleep before the next look, given the earliest hold that is still running.
///
/// Never longer than `hold`: an order placed after this look ends its hold at least `hold`
/// from now (placement adds `hold` to its own clock), so a look within `hold` misses none, with
/// no need for placement to wake the sweep, which may run on another node.
pub fn next_look(next: Option<DateTime<Utc>>, now: DateTime<Utc>, hold: Duration) -> Duration {
    let cap = hold.min(MAX_SLEEP);
    match next {
        // A little after the hold ends, so the entity (on its own clock) agrees it has.
        Some(at) => (at - now).to_std().unwrap_or(Duration::ZERO).saturating_add(Duration::from_millis(20)).min(cap),
        None => cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_wakes_when_the_earliest_hold_ends_and_never_sleeps_past_one_hold() {
        let now = Utc::now();
        let hold = Duration::from_secs(900);
        assert_eq!(next_look(Some(now + chrono::Duration::seconds(5)), now, hold), Duration::from_millis(5_020));
        assert_eq!(next_look(Some(now - chrono::Duration::seconds(5)), now, hold), Duration::from_millis(20));
        assert_eq!(next_look(None, now, hold), MAX_SLEEP, "long holds still look every minute");
        let short = Duration::from_secs(2);
        assert_eq!(next_look(None, now, short), short, "an order placed now is due within one hold");
        assert_eq!(next_look(Some(now + chrono::Duration::seconds(30)), now, short), short);
    }
}
