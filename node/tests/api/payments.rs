//! Payments: the simulated gateway's outcomes, idempotency, visibility and refunds.

use crate::support::*;
use serde_json::{json, Value};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// A seller, a buyer, and an ORDERED order of one unit from a product with `stock` units.
async fn ordered(node: &TestNode, stock: i64) -> (TestUser, TestUser, String, String) {
    let (seller, product, buyer) = node.seller_product_buyer(5_000, stock).await;
    let product_id = id_of(&product);
    let order = buyer.place_order(&product_id, 1).await;
    (seller, buyer, product_id, id_of(&order))
}

#[tokio::test]
async fn a_good_card_pays_the_order() {
    let node = TestNode::spawn().await;
    let (seller, buyer, product_id, order_id) = ordered(&node, 3).await;
    let payment = buyer.pay(&order_id, "tok_visa", &unique_key()).await.expect(202);
    assert_eq!(payment["orderId"], order_id.as_str());
    assert_eq!(payment["amount"], 5_000);
    let status = payment["status"].as_str().expect("a status");
    assert!(status == "REQUESTED" || status == "APPROVED", "{payment}");
    let payment_id = id_of(&payment);

    let order = buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    assert_eq!(order["paymentId"], payment_id.as_str());
    let decided = buyer.wait_for_payment_status(&payment_id, "APPROVED", EVENT_DEADLINE).await;
    assert!(decided.get("reason").is_none_or(Value::is_null), "{decided}");
    // The seller sees the same payment.
    let seen = seller.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!(seen["status"], "APPROVED");
    assert_eq!(seen["orderId"], order_id.as_str());
    // A sale keeps its units out of stock.
    assert_eq!(buyer.stock_of(&product_id).await, 2);
}

#[tokio::test]
async fn a_declined_card_cancels_the_order_and_releases_the_stock() {
    let node = TestNode::spawn().await;
    let (_, buyer, product_id, order_id) = ordered(&node, 3).await;
    buyer.wait_for_stock(&product_id, 2).await;
    let payment = buyer.pay_ok(&order_id, "tok_decline").await;
    let declined = buyer.wait_for_payment_status(&id_of(&payment), "DECLINED", EVENT_DEADLINE).await;
    assert_eq!(declined["reason"], "card_declined");
    buyer.wait_for_order_status(&order_id, "CANCELLED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
}

#[tokio::test]
async fn a_gateway_timeout_declines_the_payment_and_cancels_the_order() {
    let node = TestNode::spawn_with(&[("BAZAAR_GATEWAY_TIMEOUT_MS", "1500")]).await;
    let (_, buyer, product_id, order_id) = ordered(&node, 3).await;
    let payment = buyer.pay_ok(&order_id, "tok_timeout").await;
    assert_eq!(payment["status"], "REQUESTED", "nothing is decided before the timeout");
    let declined = buyer.wait_for_payment_status(&id_of(&payment), "DECLINED", EVENT_DEADLINE).await;
    assert_eq!(declined["reason"], "gateway_timeout");
    buyer.wait_for_order_status(&order_id, "CANCELLED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
}

#[tokio::test]
async fn a_slow_gateway_approves_after_a_while() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    let payment = buyer.pay_ok(&order_id, "tok_slow").await;
    assert_eq!(payment["status"], "REQUESTED", "tok_slow takes about a second");
    let pending = buyer.get(&format!("/orders/{order_id}")).await.expect(200);
    assert!(
        pending["status"] == "PAYMENT_PENDING" || pending["status"] == "ORDERED",
        "before the gateway answers: {pending}"
    );
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    buyer.wait_for_payment_status(&id_of(&payment), "APPROVED", EVENT_DEADLINE).await;
}

#[tokio::test]
async fn a_payment_without_an_idempotency_key_is_a_bad_request() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    buyer
        .post("/payments", json!({"orderId": order_id, "method": {"type": "card", "token": "tok_visa"}}))
        .await
        .expect_error(400, "bad_request");
    let order = buyer.get(&format!("/orders/{order_id}")).await.expect(200);
    assert_eq!(order["status"], "ORDERED");
}

#[tokio::test]
async fn a_malformed_payment_body_is_a_bad_request_naming_the_field() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    for (body, field) in [
        (json!({"method": {"type": "card", "token": "tok_visa"}}), "orderId"),
        (json!({"orderId": order_id}), "method"),
        (json!({"orderId": order_id, "method": {"type": "card"}}), "token"),
        (json!({"orderId": order_id, "method": "card"}), "method"),
    ] {
        buyer.post_with_key("/payments", body, &unique_key()).await.expect_error_naming(400, "bad_request", field);
    }
}

#[tokio::test]
async fn a_seller_may_not_pay() {
    let node = TestNode::spawn().await;
    let (seller, _, _, order_id) = ordered(&node, 3).await;
    seller.pay(&order_id, "tok_visa", &unique_key()).await.expect_error(403, "forbidden");
}

#[tokio::test]
async fn another_buyer_paying_an_order_gets_not_found() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    let stranger = node.signup(Role::Buyer).await;
    stranger.pay(&order_id, "tok_visa", &unique_key()).await.expect_error(404, "not_found");
    let order = buyer.get(&format!("/orders/{order_id}")).await.expect(200);
    assert_eq!(order["status"], "ORDERED");
}

#[tokio::test]
async fn paying_an_unknown_order_is_not_found() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.pay(&uuid::Uuid::now_v7().to_string(), "tok_visa", &unique_key()).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn paying_without_a_token_is_unauthorized() {
    let node = TestNode::spawn().await;
    let (_, _, _, order_id) = ordered(&node, 3).await;
    node.send(
        reqwest::Method::POST,
        "/payments",
        None,
        Body::Json(json!({"orderId": order_id, "method": {"type": "card", "token": "tok_visa"}})),
        &[("idempotency-key", "k")],
    )
    .await
    .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn paying_a_cancelled_order_is_a_conflict() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    buyer.post_empty(&format!("/orders/{order_id}/cancel")).await.expect(200);
    buyer.pay(&order_id, "tok_visa", &unique_key()).await.expect_error(409, "order_not_payable");
}

#[tokio::test]
async fn paying_a_paid_order_again_with_a_new_key_is_a_conflict() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    buyer.pay_ok(&order_id, "tok_visa").await;
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    buyer.pay(&order_id, "tok_visa", &unique_key()).await.expect_error(409, "order_not_payable");
}

#[tokio::test]
async fn retrying_a_payment_with_the_same_key_returns_the_same_payment() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    let key = unique_key();
    let first = buyer.pay(&order_id, "tok_visa", &key).await.expect(202);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    // After the decision the retry answers with the final state of the same payment.
    let retry = buyer.pay(&order_id, "tok_visa", &key).await;
    assert!(retry.status == 202 || retry.status == 200, "HTTP {} {}", retry.status, retry.text);
    assert_eq!(retry.json["id"], first["id"]);
    assert_eq!(retry.json["status"], "APPROVED", "{}", retry.text);
}

#[tokio::test]
async fn reusing_a_payment_key_for_another_body_is_an_idempotency_mismatch() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    let key = unique_key();
    buyer.pay(&order_id, "tok_slow", &key).await.expect(202);
    buyer.pay(&order_id, "tok_visa", &key).await.expect_error(409, "idempotency_mismatch");
}

#[tokio::test]
async fn a_payment_is_hidden_from_strangers() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    let payment = buyer.pay_ok(&order_id, "tok_visa").await;
    let path = format!("/payments/{}", id_of(&payment));
    let stranger_buyer = node.signup(Role::Buyer).await;
    let stranger_seller = node.signup(Role::Seller).await;
    stranger_buyer.get(&path).await.expect_error(404, "not_found");
    stranger_seller.get(&path).await.expect_error(404, "not_found");
    node.get(&path).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn an_unknown_payment_is_not_found() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.get(&format!("/payments/{}", uuid::Uuid::now_v7())).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn the_seller_refunds_an_approved_payment_and_the_stock_returns() {
    let node = TestNode::spawn().await;
    let (seller, buyer, product_id, order_id) = ordered(&node, 3).await;
    let payment = buyer.pay_ok(&order_id, "tok_visa").await;
    let payment_id = id_of(&payment);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let refunded = seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    assert_eq!(refunded["status"], "REFUNDED");
    assert_eq!(refunded["id"], payment_id.as_str());
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
    // A refunded order is final.
    buyer.post_empty(&format!("/orders/{order_id}/cancel")).await.expect_error(409, "order_not_cancellable");
    buyer.pay(&order_id, "tok_visa", &unique_key()).await.expect_error(409, "order_not_payable");
}

#[tokio::test]
async fn refunding_twice_is_not_refundable() {
    let node = TestNode::spawn().await;
    let (seller, buyer, product_id, order_id) = ordered(&node, 3).await;
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_visa").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let path = format!("/payments/{payment_id}/refund");
    seller.post_empty(&path).await.expect(200);
    seller.post_empty(&path).await.expect_error(409, "payment_not_refundable");
    buyer.wait_for_stock(&product_id, 3).await;
}

#[tokio::test]
async fn refunding_a_declined_payment_is_not_refundable() {
    let node = TestNode::spawn().await;
    let (seller, buyer, _, order_id) = ordered(&node, 3).await;
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_decline").await);
    buyer.wait_for_payment_status(&payment_id, "DECLINED", EVENT_DEADLINE).await;
    seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect_error(409, "payment_not_refundable");
}

#[tokio::test]
async fn refunding_a_requested_payment_is_not_refundable() {
    let node = TestNode::spawn().await;
    let (seller, buyer, _, order_id) = ordered(&node, 3).await;
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_timeout").await);
    // The default gateway timeout (5 s) keeps it REQUESTED for now.
    seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect_error(409, "payment_not_refundable");
}

#[tokio::test]
async fn the_buyer_may_not_refund() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_visa").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    buyer.post_empty(&format!("/payments/{payment_id}/refund")).await.expect_error(403, "forbidden");
    assert_eq!(buyer.get(&format!("/payments/{payment_id}")).await.expect(200)["status"], "APPROVED");
}

#[tokio::test]
async fn a_stranger_refunding_gets_not_found() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_visa").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let stranger = node.signup(Role::Seller).await;
    stranger.post_empty(&format!("/payments/{payment_id}/refund")).await.expect_error(404, "not_found");
    node.send(reqwest::Method::POST, &format!("/payments/{payment_id}/refund"), None, Body::None, &[])
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn refunding_an_unknown_payment_is_not_found() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    seller.post_empty(&format!("/payments/{}/refund", uuid::Uuid::now_v7())).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn retrying_a_declined_payment_with_its_key_returns_the_decline() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    let key = unique_key();
    let first = buyer.pay(&order_id, "tok_decline", &key).await.expect(202);
    buyer.wait_for_order_status(&order_id, "CANCELLED", EVENT_DEADLINE).await;
    let retry = buyer.pay(&order_id, "tok_decline", &key).await;
    assert!(retry.status == 202 || retry.status == 200, "HTTP {} {}", retry.status, retry.text);
    assert_eq!(retry.json["id"], first["id"]);
    assert_eq!(retry.json["status"], "DECLINED");
    assert_eq!(retry.json["reason"], "card_declined");
    // A new attempt is refused: the order is final.
    buyer.pay(&order_id, "tok_visa", &unique_key()).await.expect_error(409, "order_not_payable");
}

#[tokio::test]
async fn a_refund_keeps_the_buyers_profile_visible_to_the_seller() {
    let node = TestNode::spawn().await;
    let (seller, buyer, _, order_id) = ordered(&node, 3).await;
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_visa").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    // The rule asks whether an order ever reached PAID, not whether it is PAID now.
    seller.get(&format!("/auth/user/{}", buyer.id)).await.expect(200);
}

#[tokio::test]
async fn a_refund_is_pushed_to_the_buyers_socket() {
    let node = TestNode::spawn().await;
    let (seller, buyer, _, order_id) = ordered(&node, 3).await;
    let mut ws = buyer.ws_connect().await;
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_visa").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    ws.try_next_matching(EVENT_DEADLINE, |frame| {
        frame["type"] == "order" && frame["order"]["id"] == order_id.as_str() && frame["order"]["status"] == "REFUNDED"
    })
    .await
    .unwrap_or_else(|| panic!("no REFUNDED push; frames seen: {:?}", ws.backlog()));
}

#[tokio::test]
async fn a_payment_method_other_than_card_is_invalid() {
    let node = TestNode::spawn().await;
    let (_, buyer, _, order_id) = ordered(&node, 3).await;
    buyer
        .post_with_key(
            "/payments",
            json!({"orderId": order_id, "method": {"type": "bank_transfer", "token": "tok_visa"}}),
            &unique_key(),
        )
        .await
        .expect_error_naming(422, "invalid", "type");
    let order = buyer.get(&format!("/orders/{order_id}")).await.expect(200);
    assert_eq!(order["status"], "ORDERED");
}
