//! Reserved stock: an order left unpaid gives its stock back when its hold ends, durably (a
//! restart does not forget it), and never an order whose payment was requested in time; and
//! units that come back never take the stock past its maximum.

use crate::support::{Role, TestNode, EVENT_DEADLINE};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// The hold these tests run with, in seconds: short, so an expiry happens within a test.
const HOLD_SECS: &str = "2";

fn at(order: &Value, field: &str) -> DateTime<Utc> {
    let text = order[field].as_str().unwrap_or_else(|| panic!("the order has no {field}: {order}"));
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{field} {text:?} is not RFC 3339: {e}")).to_utc()
}

fn id(value: &Value) -> &str {
    value["id"].as_str().expect("an id")
}

/// Waits until the wall clock has passed `deadline` (the hold is a wall-clock time).
async fn until(deadline: DateTime<Utc>) {
    if let Ok(left) = (deadline - Utc::now()).to_std() {
        tokio::time::sleep(left).await;
    }
}

async fn hold_node(extra: &[(&str, &str)]) -> TestNode {
    let mut env = vec![("BAZAAR_RESERVATION_HOLD_SECS", HOLD_SECS)];
    env.extend_from_slice(extra);
    TestNode::spawn_with(&env).await
}

#[tokio::test]
async fn an_order_left_unpaid_is_cancelled_when_its_hold_ends_and_the_next_buyer_gets_the_stock() {
    let node = hold_node(&[]).await;
    let (seller, product, hoarder) = node.seller_product_buyer(1_000, 3).await;
    let product_id = id(&product);
    let mut socket = hoarder.ws_connect().await;

    let order = hoarder.place_order(product_id, 3).await;
    // The hold is on the order, from its placement.
    let (placed, expires) = (at(&order, "createdAt"), at(&order, "expiresAt"));
    assert_eq!(expires - placed, chrono::Duration::seconds(2), "expiresAt is createdAt + the hold: {order}");
    let fetched = hoarder.get(&format!("/orders/{}", id(&order))).await.expect(200);
    assert_eq!(fetched["expiresAt"], order["expiresAt"], "GET shows the same hold");

    let other = node.signup(Role::Buyer).await;
    other.post_order(product_id, 1, "first-try").await.expect_code(409, "out_of_stock");

    let cancelled = hoarder.wait_for_order_status(id(&order), "CANCELLED", EVENT_DEADLINE).await;
    assert!(at(&cancelled, "updatedAt") >= expires, "cancelled before its hold ended: {cancelled}");
    let frame = socket
        .next_matching_within("an order frame for the expired order", EVENT_DEADLINE, |frame| {
            frame["type"] == "order" && frame["order"]["id"] == order["id"] && frame["order"]["status"] == "CANCELLED"
        })
        .await;
    assert_eq!(frame["order"]["expiresAt"], order["expiresAt"], "{frame}");
    seller.wait_for_stock(product_id, 3).await;
    let bought = other.place_order(product_id, 3).await;
    assert_eq!(bought["status"], "ORDERED");
}

#[tokio::test]
async fn an_order_whose_payment_was_requested_in_time_keeps_its_stock() {
    // A gateway that never answers keeps one payment in flight well past the hold.
    let node = hold_node(&[("BAZAAR_GATEWAY_TIMEOUT_MS", "15000")]).await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 10).await;
    let product_id = id(&product);
    let paid = buyer.place_order(product_id, 2).await;
    let in_flight = buyer.place_order(product_id, 3).await;
    let unpaid = buyer.place_order(product_id, 1).await;
    buyer.pay_ok(id(&paid), "tok_ok").await;
    buyer.pay_ok(id(&in_flight), "tok_timeout").await;
    buyer.wait_for_order_status(id(&paid), "PAID", EVENT_DEADLINE).await;

    // The unpaid order placed last expiring shows the sweep has passed the other two's holds.
    buyer.wait_for_order_status(id(&unpaid), "CANCELLED", EVENT_DEADLINE).await;
    until(at(&in_flight, "expiresAt")).await;
    let still_paid = buyer.get(&format!("/orders/{}", id(&paid))).await.expect(200);
    assert_eq!(still_paid["status"], "PAID", "{still_paid}");
    let pending = buyer.get(&format!("/orders/{}", id(&in_flight))).await.expect(200);
    assert_eq!(pending["status"], "PAYMENT_PENDING", "the payment in flight decides this order: {pending}");
    seller.wait_for_stock(product_id, 5).await;
}

#[tokio::test]
async fn an_order_whose_hold_ended_while_the_node_was_down_is_expired_after_the_restart() {
    let mut node = hold_node(&[]).await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 4).await;
    let product_id = id(&product);
    let order = buyer.place_order(product_id, 4).await;
    node.kill9().await;
    // Down for the whole hold: only the stored expiry can tell the restarted node.
    until(at(&order, "expiresAt")).await;
    node.restart().await;

    let cancelled = buyer.wait_for_order_status(id(&order), "CANCELLED", EVENT_DEADLINE).await;
    assert_eq!(cancelled["expiresAt"], order["expiresAt"]);
    seller.wait_for_stock(product_id, 4).await;
}

#[tokio::test]
async fn stock_set_while_units_are_reserved_never_exceeds_the_maximum_once_they_come_back() {
    const MAX_STOCK: i64 = 1_000_000_000;
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 5).await;
    let product_id = id(&product);
    let order = buyer.place_order(product_id, 3).await;
    let path = format!("/products/{product_id}");

    let refused = seller.patch(&path, serde_json::json!({"stock": MAX_STOCK})).await;
    refused.expect_code(422, "invalid");
    assert!(refused.text.contains("999999997"), "the error says what stock would do: {}", refused.text);
    assert_eq!(seller.stock_of(product_id).await, 2, "a refused change changes nothing");

    let most = seller.patch(&path, serde_json::json!({"stock": MAX_STOCK - 3})).await.expect(200);
    assert_eq!(most["stock"], MAX_STOCK - 3);
    buyer.post_empty(&format!("/orders/{}/cancel", id(&order))).await.expect(200);
    seller.wait_for_stock(product_id, MAX_STOCK).await;
}
