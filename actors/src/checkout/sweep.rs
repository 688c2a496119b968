//! The checkout sweep: finds checkouts whose request was cut off half-way (still RESERVING, or
//! RELEASING with lines perhaps still held) and has not moved for `checkout_timeout`, gives them
//! up and releases their lines, so a crash mid-checkout never keeps stock from other buyers. In a
//! cluster one node sweeps (the rendezvous owner of [`ROLE`]); two sweepers during a view change
//! are harmless, since each step is idempotent and each phase change is decided once.

use super::entity::{AbandonCheckout, TouchCheckout};
use crate::cluster::ClusterView;
use crate::regions::Regions;
use crate::store::checkouts::{self, Phase};
use crate::store::Store;
use chrono::Utc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

/// The cluster role of the one node that sweeps.
pub const ROLE: &str = "checkouts";
/// Checkouts looked at per round.
const PAGE: u32 = 100;

/// Starts the sweep, which looks every `timeout` / 2 (at most every 10 s); it stops when
/// `shutdown` turns true.
pub fn spawn(
    store: Store,
    regions: Regions,
    view: Option<Arc<ClusterView>>,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let every = (timeout / 2).min(Duration::from_secs(10));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
            if view.as_ref().is_none_or(|view| view.leads(ROLE)) {
                sweep(&store, &regions, timeout).await;
            }
        }
    })
}

/// Gives up one page of stalled checkouts.
pub async fn sweep(store: &Store, regions: &Regions, timeout: Duration) {
    let Ok(age) = chrono::Duration::from_std(timeout) else { return };
    let before = Utc::now() - age;
    let stalled = match checkouts::stalled(store, before, PAGE).await {
        Ok(stalled) => stalled,
        Err(e) => {
            warn!(reason = %e, "stalled checkouts unreadable; retrying");
            return;
        }
    };
    for id in stalled {
        let record = match regions.checkouts.ask(&id, AbandonCheckout { before }).await {
            Ok(Ok(record)) => record,
            Ok(Err(e)) => {
                warn!(checkout_id = %id, reason = %e, "stalled checkout not given up; retrying");
                continue;
            }
            Err(e) => {
                warn!(checkout_id = %id, reason = %e, "stalled checkout not given up; retrying");
                continue;
            }
        };
        if record.phase == Phase::Releasing {
            let deadline = tokio::time::Instant::now() + timeout;
            if super::release(regions, &record, deadline).await {
                metrics::counter!("bazaar_checkouts_given_up_total").increment(1);
                info!(checkout_id = %id, "stalled checkout given up; its lines released");
            } else {
                // To the back of the queue, so one checkout that cannot be released yet never
                // keeps the sweep from the others.
                let _ = regions.checkouts.ask(&id, TouchCheckout).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkout::entity::{GetCheckout, OpenCheckout, Opened};
    use crate::checkout::plan::{plan, CartPick};
    use crate::checkout::{finish, CheckoutRefused};
    use crate::idempotency::IdempotencyKey;
    use crate::product::{GetProduct, ListProduct, NewProduct, ProductError, ReserveLine};
    use crate::region::test_support::ctx;
    use crate::region::RegionRef;
    use crate::store::checkouts::Failure;
    use bazaar_protocol::values::Quantity;
    use bazaar_protocol::{CheckoutId, ProductId, UserId};

    #[tokio::test]
    async fn a_checkout_cut_off_half_way_is_given_up_its_lines_released_and_never_reserved_later() {
        let (ctx, _db) = ctx(Duration::from_secs(60)).await;
        let store = ctx.store.clone();
        let regions = Regions {
            users: RegionRef::spawn(ctx.clone()).await.unwrap(),
            products: RegionRef::spawn(ctx.clone()).await.unwrap(),
            orders: RegionRef::spawn(ctx.clone()).await.unwrap(),
            payments: RegionRef::spawn(ctx.clone()).await.unwrap(),
            rooms: RegionRef::spawn(ctx.clone()).await.unwrap(),
            checkouts: RegionRef::spawn(ctx.clone()).await.unwrap(),
        };
        let (lamp, cup) = (ProductId::generate(), ProductId::generate());
        for (id, seller) in [(&lamp, "s1"), (&cup, "s2")] {
            let new = NewProduct {
                seller_id: seller.into(),
                name: "thing".into(),
                description: String::new(),
                price: 1_000,
                currency: "KRW".into(),
                stock: 5,
            };
            regions.products.ask(id.as_str(), ListProduct(new)).await.unwrap().unwrap();
        }
        let picks = [
            CartPick { product_id: lamp.clone(), seller_id: "s1".into(), quantity: 2 },
            CartPick { product_id: cup.clone(), seller_id: "s2".into(), quantity: 1 },
        ];
        let buyer = UserId::from("buyer");
        let idempotency = IdempotencyKey { user_id: "buyer".into(), key: "k".into(), request_hash: "h".into() };
        let open = OpenCheckout { buyer_id: buyer.clone(), plan: plan(&picks), idempotency };
        let id = CheckoutId::generate();
        let Opened::Here(record) = regions.checkouts.ask(id.as_str(), open).await.unwrap().unwrap() else {
            panic!("a new checkout")
        };
        // The request reserved the lamp, then its node died.
        let lamp_line = record.plan.iter().find(|line| line.product_id == lamp).unwrap().clone();
        let reserve = ReserveLine { order_id: lamp_line.order_id.clone(), quantity: Quantity::try_from(2).unwrap() };
        regions.products.ask(lamp.as_str(), reserve.clone()).await.unwrap().unwrap();
        let stock = |id: ProductId| {
            let products = regions.products.clone();
            async move { products.ask(id.as_str(), GetProduct).await.unwrap().unwrap().stock }
        };
        assert_eq!(stock(lamp.clone()).await, 3);

        // Within the timeout the sweep leaves it alone; past it, gives it up.
        sweep(&store, &regions, Duration::from_secs(3600)).await;
        let kept = regions.checkouts.ask(id.as_str(), GetCheckout { viewer: buyer.clone() }).await.unwrap().unwrap();
        assert_eq!(kept.phase, Phase::Reserving);
        // A retry carrying it on touches it: the timeout counts from the retry, not the start.
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        regions.checkouts.ask(id.as_str(), TouchCheckout).await.unwrap().unwrap();
        sweep(&store, &regions, Duration::from_secs(1)).await;
        let kept = regions.checkouts.ask(id.as_str(), GetCheckout { viewer: buyer.clone() }).await.unwrap().unwrap();
        assert_eq!(kept.phase, Phase::Reserving, "a checkout a retry just touched is not given up");
        sweep(&store, &regions, Duration::ZERO).await;
        let given_up =
            regions.checkouts.ask(id.as_str(), GetCheckout { viewer: buyer.clone() }).await.unwrap().unwrap();
        assert_eq!((given_up.phase, given_up.failure.clone()), (Phase::Failed, Some(Failure::TimedOut)));
        assert_eq!((stock(lamp.clone()).await, stock(cup.clone()).await), (5, 5), "every line given back");

        // The cut-off request's late steps take nothing, and a retry answers the failure.
        let late = regions.products.ask(lamp.as_str(), reserve).await.unwrap();
        assert_eq!(late, Err(ProductError::Withdrawn));
        let cup_line = given_up.plan.iter().find(|line| line.product_id == cup).unwrap();
        let reserve = ReserveLine { order_id: cup_line.order_id.clone(), quantity: Quantity::try_from(1).unwrap() };
        assert_eq!(regions.products.ask(cup.as_str(), reserve).await.unwrap(), Err(ProductError::Withdrawn));
        assert_eq!((stock(lamp).await, stock(cup).await), (5, 5));
        let retried = finish(&regions, given_up, tokio::time::Instant::now() + Duration::from_secs(5)).await;
        assert_eq!(retried.unwrap_err(), CheckoutRefused::TimedOut);
        assert!(checkouts::stalled(&store, Utc::now(), 10).await.unwrap().is_empty(), "nothing left to sweep");
    }
}
