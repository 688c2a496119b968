//! Partial refunds with the simulated gateway: `POST /payments/{id}/refund` with `{amount}` and an
//! `Idempotency-Key`, refunds that add up until the charge is used up (never past it, also when
//! sent at once), stock back and the order REFUNDED only with the last one; the webhook route
//! with a gateway that takes no notifications; and a charge the gateway took but never answered.

use crate::support::*;
use serde_json::{json, Value};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// A seller, a buyer, the product (stock 3) and the buyer's PAID order of one unit at 10,000,
/// with its payment id.
async fn paid(node: &TestNode) -> (TestUser, TestUser, String, String, String) {
    let (seller, product, buyer) = node.seller_product_buyer(10_000, 3).await;
    let product_id = id_of(&product);
    let order_id = id_of(&buyer.place_order(&product_id, 1).await);
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_visa").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    assert_eq!(buyer.stock_of(&product_id).await, 2);
    (seller, buyer, product_id, order_id, payment_id)
}

/// A refund of `amount` with an idempotency key.
async fn refund(seller: &TestUser, payment_id: &str, amount: i64, key: &str) -> Reply {
    seller.post_with_key(&format!("/payments/{payment_id}/refund"), json!({ "amount": amount }), key).await
}

/// Waits until the saga has given `refunds` refunds of the payment back at the gateway (the step
/// before the order's), then checks the order is still PAID with its stock still out: a partial
/// refund moves neither.
async fn still_paid(
    node: &TestNode,
    buyer: &TestUser,
    payment_id: &str,
    refunds: usize,
    order_id: &str,
    product_id: &str,
) {
    eventually(EVENT_DEADLINE, "the refunds to be given back at the gateway", || async {
        let given = node
            .log_tail(100_000)
            .lines()
            .filter(|line| line.contains("payment refunded at the gateway") && line.contains(payment_id))
            .count();
        if given >= refunds {
            Ok(())
        } else {
            Err(format!("{given} given back"))
        }
    })
    .await;
    let order = buyer.get(&format!("/orders/{order_id}")).await.expect(200);
    assert_eq!(order["status"], "PAID", "{order}");
    assert_eq!(buyer.stock_of(product_id).await, 2);
}

#[tokio::test]
async fn partial_refunds_add_up_and_only_the_last_refunds_the_order_and_returns_the_stock() {
    let node = TestNode::spawn().await;
    let (seller, buyer, product_id, order_id, payment_id) = paid(&node).await;

    let first = refund(&seller, &payment_id, 3_000, &unique_key()).await.expect(200);
    assert_eq!((first["status"].as_str(), first["refundedAmount"].as_i64()), (Some("APPROVED"), Some(3_000)));
    let second = refund(&seller, &payment_id, 2_000, &unique_key()).await.expect(200);
    assert_eq!((second["status"].as_str(), second["refundedAmount"].as_i64()), (Some("APPROVED"), Some(5_000)));
    // Both partial refunds went through the saga in the payment's lane; the payment reads as
    // the refunds made it, and the order is untouched.
    let seen = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!((seen["status"].as_str(), seen["refundedAmount"].as_i64()), (Some("APPROVED"), Some(5_000)));
    still_paid(&node, &buyer, &payment_id, 2, &order_id, &product_id).await;

    // No body: all that is left.
    let last = seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    assert_eq!((last["status"].as_str(), last["refundedAmount"].as_i64()), (Some("REFUNDED"), Some(10_000)));
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
    // Used up: nothing is left to refund.
    refund(&seller, &payment_id, 1, &unique_key()).await.expect_error(409, "payment_not_refundable");
    seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect_error(409, "payment_not_refundable");
}

#[tokio::test]
async fn a_refund_past_what_is_left_is_a_conflict_and_bad_amounts_are_refused() {
    let node = TestNode::spawn().await;
    let (seller, buyer, product_id, order_id, payment_id) = paid(&node).await;
    let path = format!("/payments/{payment_id}/refund");
    refund(&seller, &payment_id, 10_001, &unique_key()).await.expect_error(409, "refund_exceeds_payment");
    refund(&seller, &payment_id, 6_000, &unique_key()).await.expect(200);
    let over = refund(&seller, &payment_id, 4_001, &unique_key()).await;
    over.expect_code(409, "refund_exceeds_payment");
    assert!(over.message().contains("4000"), "{}", over.text);

    refund(&seller, &payment_id, 0, &unique_key()).await.expect_error(422, "invalid");
    refund(&seller, &payment_id, -5, &unique_key()).await.expect_error(422, "invalid");
    seller.post_with_key(&path, json!({"amount": "lots"}), &unique_key()).await.expect_error(400, "bad_request");
    seller
        .post_with_key(&path, json!({"amount": 1, "extra": true}), &unique_key())
        .await
        .expect_error(400, "bad_request");
    // A partial refund must carry a key: its retry could otherwise give back twice.
    seller.post(&path, json!({"amount": 1})).await.expect_error(400, "bad_request");
    // The buyer may not refund, in part or in full.
    refund(&buyer, &payment_id, 1, &unique_key()).await.expect_error(403, "forbidden");

    let seen = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!((seen["status"].as_str(), seen["refundedAmount"].as_i64()), (Some("APPROVED"), Some(6_000)));
    still_paid(&node, &buyer, &payment_id, 1, &order_id, &product_id).await;
}

#[tokio::test]
async fn a_retried_partial_refund_with_the_same_key_gives_back_once() {
    let node = TestNode::spawn().await;
    let (seller, buyer, product_id, order_id, payment_id) = paid(&node).await;
    let key = unique_key();
    let first = refund(&seller, &payment_id, 4_000, &key).await.expect(200);
    assert_eq!(first["refundedAmount"], 4_000);
    for _ in 0..3 {
        let again = refund(&seller, &payment_id, 4_000, &key).await.expect(200);
        assert_eq!((again["id"].as_str(), again["refundedAmount"].as_i64()), (Some(payment_id.as_str()), Some(4_000)));
    }
    refund(&seller, &payment_id, 1_000, &key).await.expect_error(409, "idempotency_mismatch");
    // Keys are the caller's: the same key from the same seller for another amount is a mismatch,
    // and the payment has given back 4,000 once.
    let seen = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!(seen["refundedAmount"], 4_000);
    still_paid(&node, &buyer, &payment_id, 1, &order_id, &product_id).await;
    // What is left is 6,000, exactly.
    refund(&seller, &payment_id, 6_001, &unique_key()).await.expect_error(409, "refund_exceeds_payment");
    refund(&seller, &payment_id, 6_000, &unique_key()).await.expect(200);
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
}

#[tokio::test]
async fn concurrent_partial_refunds_never_give_back_more_than_the_charge() {
    let node = TestNode::spawn().await;
    let (seller, buyer, product_id, order_id, payment_id) = paid(&node).await;
    // Ten refunds of 3,000 at once on a 10,000 charge: three fit, the others are refused.
    let replies = futures_util::future::join_all((0..10).map(|_| {
        let seller = &seller;
        let payment_id = &payment_id;
        async move { refund(seller, payment_id, 3_000, &unique_key()).await }
    }))
    .await;
    let accepted: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    let refused = replies.iter().filter(|r| (r.status, r.code()) == (409, "refund_exceeds_payment")).count();
    assert_eq!((accepted.len(), refused), (3, 7), "{replies:?}");
    let mut totals: Vec<i64> = accepted.iter().map(|r| r.json["refundedAmount"].as_i64().unwrap()).collect();
    totals.sort_unstable();
    assert_eq!(totals, [3_000, 6_000, 9_000], "each refund saw the ones before it");
    let seen = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!((seen["status"].as_str(), seen["refundedAmount"].as_i64()), (Some("APPROVED"), Some(9_000)));
    still_paid(&node, &buyer, &payment_id, 3, &order_id, &product_id).await;
    // The last 1,000 ends it; the stock comes back once.
    let last = seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    assert_eq!((last["status"].as_str(), last["refundedAmount"].as_i64()), (Some("REFUNDED"), Some(10_000)));
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
}

#[tokio::test]
async fn the_webhook_route_is_not_found_with_the_simulated_gateway() {
    let node = TestNode::spawn().await;
    let body = json!({"eventType": "PAYMENT_STATUS_CHANGED", "data": {"orderId": "order-123", "status": "DONE"}});
    for gateway in ["toss", "simulated", "other"] {
        node.post(&format!("/payments/webhooks/{gateway}"), body.clone()).await.expect_error(404, "not_found");
    }
}

#[tokio::test]
async fn a_charge_the_gateway_took_but_never_answered_is_approved_after_the_timeout_not_declined() {
    // `tok_lost` charges, then never answers: past the payment's wait the gateway is asked what
    // it recorded, and the charge it took stands.
    let node = TestNode::spawn_with(&[("BAZAAR_GATEWAY_TIMEOUT_MS", "500")]).await;
    let (_, product, buyer) = node.seller_product_buyer(10_000, 3).await;
    let product_id = id_of(&product);
    let order_id = id_of(&buyer.place_order(&product_id, 1).await);
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_lost").await);
    let approved = buyer.wait_for_payment_status(&payment_id, "APPROVED", EVENT_DEADLINE).await;
    assert!(approved.get("reason").is_none_or(Value::is_null), "{approved}");
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    assert_eq!(buyer.stock_of(&product_id).await, 2);

    // A charge that never reached the gateway is still declined with gateway_timeout.
    let other = id_of(&buyer.place_order(&product_id, 1).await);
    let payment = id_of(&buyer.pay_ok(&other, "tok_timeout").await);
    let declined = buyer.wait_for_payment_status(&payment, "DECLINED", EVENT_DEADLINE).await;
    assert_eq!(declined["reason"], "gateway_timeout");
}
