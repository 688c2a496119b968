//! Issue 9, findings 5 and 9: one buyer's gateway never stalls another's payment, a backlog left
//! by a crash drains at the gateway's pace, and a refund settles its order once.

use crate::support::*;
use futures_util::stream::{self, StreamExt};
use serde_json::Value;
use std::time::{Duration, Instant};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// More than the 512 events the saga used to keep in one ordered window, so a window over the
/// whole log is full of stuck charges when the unrelated payment comes.
const STUCK_ORDERS: usize = 600;
/// Requests a buyer keeps in flight while setting up (under the per-user limit of 64).
const SETUP_CONCURRENCY: usize = 32;

/// Places `count` orders of one unit and pays each with `token`; returns (order id, payment id)s.
async fn place_and_pay(buyer: &TestUser, product_id: &str, count: usize, token: &str) -> Vec<(String, String)> {
    stream::iter(0..count)
        .map(|_| async move {
            let order_id = id_of(&buyer.place_order(product_id, 1).await);
            let payment_id = id_of(&buyer.pay_ok(&order_id, token).await);
            (order_id, payment_id)
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await
}

/// Polls the order every 10 ms until it is `status`; the time it took.
async fn time_until_status(buyer: &TestUser, order_id: &str, status: &str, deadline: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let reply = buyer.get(&format!("/orders/{order_id}")).await;
        if reply.status == 200 && reply.json["status"] == status {
            return started.elapsed();
        }
        assert!(started.elapsed() < deadline, "order {order_id} not {status} within {deadline:?}: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_buyer_paying_with_a_working_card_is_paid_within_a_second_while_600_other_charges_hang() {
    // The stuck charges hang far longer than the test: only their being in flight matters.
    let node =
        TestNode::spawn_with(&[("BAZAAR_GATEWAY_TIMEOUT_MS", "60000"), ("BAZAAR_SQLITE_SYNCHRONOUS", "normal")]).await;
    let (_, product, stuck_buyer) = node.seller_product_buyer(100, STUCK_ORDERS as i64).await;
    let stuck = place_and_pay(&stuck_buyer, &id_of(&product), STUCK_ORDERS, "tok_timeout").await;
    assert_eq!(stuck.len(), STUCK_ORDERS);

    let (_, other_product, buyer) = node.seller_product_buyer(100, 1).await;
    let order_id = id_of(&buyer.place_order(&id_of(&other_product), 1).await);
    buyer.pay_ok(&order_id, "tok_ok").await;
    let took = time_until_status(&buyer, &order_id, "PAID", Duration::from_secs(20)).await;
    eprintln!("tok_ok paid {took:?} after its payment was accepted, {STUCK_ORDERS} charges hanging");
    assert!(took < Duration::from_secs(1), "a tok_ok payment took {took:?} behind {STUCK_ORDERS} hanging charges");

    // And the hanging ones are still hanging: they were in flight the whole time.
    let (order_id, _) = &stuck[0];
    let still = stuck_buyer.get(&format!("/orders/{order_id}")).await.expect(200);
    assert_eq!(still["status"], "PAYMENT_PENDING", "{still}");
}

#[tokio::test]
async fn after_a_crash_a_backlog_of_hanging_charges_drains_at_the_gateways_pace_and_each_is_decided_once() {
    const ORDERS: usize = 1_100;
    let timeout = Duration::from_millis(3_000);
    // Until the crash the charges hang for a minute, so every one of them is still in flight
    // when the node dies; after it they time out in three seconds.
    let node_env = [("BAZAAR_GATEWAY_TIMEOUT_MS", "60000"), ("BAZAAR_SQLITE_SYNCHRONOUS", "normal")];
    let mut node = TestNode::spawn_with(&node_env).await;
    let (_, product, mut buyer) = node.seller_product_buyer(100, ORDERS as i64).await;
    let product_id = id_of(&product);
    let orders = place_and_pay(&buyer, &product_id, ORDERS, "tok_timeout").await;
    node.kill9().await;
    node.set_env("BAZAAR_GATEWAY_TIMEOUT_MS", &timeout.as_millis().to_string());
    node.restart().await;
    buyer.login().await;
    let restarted = Instant::now();

    // Every charge runs at once after the restart, so all are decided one gateway timeout later,
    // plus, for each, a lookup of what the gateway recorded (a timed-out charge is asked, not
    // declined blindly) and the write of its outcome: 7.2 s in all measured alone on PostgreSQL
    // in a debug build, 9.3 s in a loaded test run. A window of 512 in log order needed three
    // timeouts before those (over 14 s measured), which this bound still tells apart.
    let bound = timeout * 3 + Duration::from_secs(2);
    eventually(bound + Duration::from_secs(10), "every order to leave PAYMENT_PENDING", || async {
        let pending = buyer.get("/orders?status=PAYMENT_PENDING&limit=1").await.expect(200);
        match pending["items"].as_array().map(Vec::len) {
            Some(0) => Ok(()),
            _ => Err(format!("still pending after {:?}: {pending}", restarted.elapsed())),
        }
    })
    .await;
    let drained = restarted.elapsed();
    eprintln!("{ORDERS} hanging charges drained {drained:?} after the restart (gateway timeout {timeout:?})");
    assert!(drained < bound, "{ORDERS} timed-out charges took {drained:?} to drain; bound {bound:?}");

    // Each decided once: declined for the timeout, its order cancelled, its unit back once.
    for (order_id, payment_id) in orders.iter().step_by(37) {
        let payment = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
        assert_eq!(
            (payment["status"].as_str(), payment["reason"].as_str()),
            (Some("DECLINED"), Some("gateway_timeout"))
        );
        let order = buyer.get(&format!("/orders/{order_id}")).await.expect(200);
        assert_eq!(order["status"], "CANCELLED", "{order}");
    }
    let cancelled = buyer.list_all("/orders?status=CANCELLED&limit=100").await;
    assert_eq!(cancelled.len(), ORDERS);
    buyer.wait_for_stock(&product_id, ORDERS as i64).await;
}

#[tokio::test]
async fn a_refund_settles_the_order_once_and_returns_the_stock_once() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(100, 5).await;
    let product_id = id_of(&product);
    let order_id = id_of(&buyer.place_order(&product_id, 2).await);
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_ok").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    // Two refunds raced: one wins, the other is refused, and nothing is given back twice.
    let path = format!("/payments/{payment_id}/refund");
    let (first, second) = tokio::join!(seller.post_empty(&path), seller.post_empty(&path));
    let mut statuses = [first.status, second.status];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{} / {}", first.text, second.text);
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 5).await;
    assert_eq!(buyer.get(&format!("/payments/{payment_id}")).await.expect(200)["status"], "REFUNDED");
}
