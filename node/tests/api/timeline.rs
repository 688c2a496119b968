//! `GET /orders/{id}/events`: an order's timeline read back from the stored events of the order
//! and its payment, in order, with who made each change; only for the order's buyer and seller;
//! bounded by `order_timeline_max_events`.

use crate::support::*;
use serde_json::{json, Value};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// The timeline's entries as `[type, by, status]`, for comparing whole stories at once.
fn story(timeline: &Value) -> Vec<[String; 3]> {
    let field = |entry: &Value, name: &str| entry[name].as_str().unwrap_or("?").to_owned();
    timeline["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {timeline}"))
        .iter()
        .map(|entry| [field(entry, "type"), field(entry, "by"), field(entry, "status")])
        .collect()
}

fn expected(rows: &[[&str; 3]]) -> Vec<[String; 3]> {
    rows.iter().map(|row| row.map(str::to_owned)).collect()
}

#[tokio::test]
async fn the_timeline_of_a_refunded_order_reads_in_order_for_its_buyer_and_its_seller() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(10_000, 3).await;
    let order_id = id_of(&buyer.place_order(&id_of(&product), 1).await);
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_visa").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let path = format!("/payments/{payment_id}/refund");
    seller.post_with_key(&path, json!({"amount": 3_000}), &unique_key()).await.expect(200);
    seller.post_empty(&path).await.expect(200);
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;

    let timeline = buyer.get(&format!("/orders/{order_id}/events")).await.expect(200);
    assert_eq!(timeline["orderId"], order_id.as_str());
    assert_eq!(timeline["truncated"], false);
    assert_eq!(
        story(&timeline),
        expected(&[
            ["OrderPlaced", "BUYER", "ORDERED"],
            ["PaymentRequested", "BUYER", "PAYMENT_PENDING"],
            ["PaymentApproved", "SYSTEM", "PAYMENT_PENDING"],
            ["OrderPaid", "SYSTEM", "PAID"],
            ["PaymentRefunded", "SELLER", "PAID"],
            ["PaymentRefunded", "SELLER", "PAID"],
            ["OrderRefunded", "SELLER", "REFUNDED"],
        ]),
        "{timeline}"
    );
    let events = timeline["events"].as_array().unwrap();
    let amounts: Vec<Option<i64>> = events.iter().map(|e| e["amount"].as_i64()).collect();
    assert_eq!(amounts, [Some(10_000), Some(10_000), Some(10_000), None, Some(3_000), Some(7_000), None]);
    for event in events {
        let of_payment = event["type"].as_str().unwrap().starts_with("Payment");
        let expected = if of_payment { json!(payment_id) } else { Value::Null };
        assert_eq!(event["paymentId"], expected, "only payment events name the payment: {timeline}");
    }
    let times: Vec<&str> = events.iter().map(|e| e["at"].as_str().unwrap()).collect();
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "every entry is its own event: {timeline}");
    assert!(times.iter().all(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{times:?}");

    // The seller reads the same story; anyone else is told the order does not exist.
    let seen_by_seller = seller.get(&format!("/orders/{order_id}/events")).await.expect(200);
    assert_eq!(seen_by_seller, timeline);
    let stranger = node.signup(Role::Buyer).await;
    stranger.get(&format!("/orders/{order_id}/events")).await.expect_error(404, "not_found");
    buyer.get("/orders/no-such-order/events").await.expect_error(404, "not_found");
    node.get(&format!("/orders/{order_id}/events")).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn cancellations_and_declines_say_who_and_why() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(500, 5).await;
    let product_id = id_of(&product);

    let by_buyer = id_of(&buyer.place_order(&product_id, 1).await);
    buyer.post_empty(&format!("/orders/{by_buyer}/cancel")).await.expect(200);
    let by_seller = id_of(&buyer.place_order(&product_id, 1).await);
    seller.post_empty(&format!("/orders/{by_seller}/cancel")).await.expect(200);
    let declined = id_of(&buyer.place_order(&product_id, 1).await);
    buyer.pay_ok(&declined, "tok_decline").await;
    buyer.wait_for_order_status(&declined, "CANCELLED", EVENT_DEADLINE).await;

    for (order_id, who, reason) in
        [(&by_buyer, "BUYER", "cancelled_by_buyer"), (&by_seller, "SELLER", "cancelled_by_seller")]
    {
        let timeline = seller.get(&format!("/orders/{order_id}/events")).await.expect(200);
        assert_eq!(
            story(&timeline),
            expected(&[["OrderPlaced", "BUYER", "ORDERED"], ["OrderCancelled", who, "CANCELLED"]]),
            "{timeline}"
        );
        assert_eq!(timeline["events"][1]["reason"], reason, "{timeline}");
    }
    let timeline = buyer.get(&format!("/orders/{declined}/events")).await.expect(200);
    assert_eq!(
        story(&timeline),
        expected(&[
            ["OrderPlaced", "BUYER", "ORDERED"],
            ["PaymentRequested", "BUYER", "PAYMENT_PENDING"],
            ["PaymentDeclined", "SYSTEM", "PAYMENT_PENDING"],
            ["OrderCancelled", "SYSTEM", "CANCELLED"],
        ]),
        "{timeline}"
    );
    assert_eq!(timeline["events"][2]["reason"], "card_declined", "{timeline}");
    assert_eq!(timeline["events"][3]["reason"], "card_declined", "{timeline}");
}

#[tokio::test]
async fn a_timeline_longer_than_the_limit_keeps_the_oldest_and_says_so() {
    let node = TestNode::spawn_with(&[("BAZAAR_ORDER_TIMELINE_MAX_EVENTS", "3")]).await;
    let (_seller, product, buyer) = node.seller_product_buyer(700, 2).await;
    let order_id = id_of(&buyer.place_order(&id_of(&product), 1).await);
    buyer.pay_ok(&order_id, "tok_visa").await;
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let timeline = buyer.get(&format!("/orders/{order_id}/events")).await.expect(200);
    assert_eq!(timeline["truncated"], true, "{timeline}");
    let kinds: Vec<&str> = timeline["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["OrderPlaced", "PaymentRequested", "PaymentApproved"]);
}
