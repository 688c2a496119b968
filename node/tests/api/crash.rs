//! Crashes: SIGKILL the node between acknowledged writes, restart it on the same data directory,
//! and check that every acknowledged write is there exactly once and unfinished sagas finish.
//!
//! Users log in again after each restart: whether access tokens outlive a restart is a
//! configuration matter (the signing secret), not what these tests are about.

use crate::support::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

async fn relogin(users: &mut [&mut TestUser]) {
    for user in users.iter_mut() {
        user.login().await;
    }
}

#[tokio::test]
async fn acknowledged_orders_payments_and_messages_survive_a_sigkill() {
    let mut node = TestNode::spawn().await;
    let (mut seller, product, mut buyer) = node.seller_product_buyer(2_000, 10).await;
    let product_id = id_of(&product);
    let keys = ["crash-k1", "crash-k2", "crash-k3"];
    let mut orders = Vec::new();
    for key in keys {
        orders.push(buyer.post_order(&product_id, 1, key).await.expect(201));
    }
    let paid_id = id_of(&orders[0]);
    let payment = buyer.pay_ok(&paid_id, "tok_visa").await;
    buyer.wait_for_order_status(&paid_id, "PAID", EVENT_DEADLINE).await;
    let room_id = id_of(&buyer.open_room(&seller).await);
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    for n in 1..=3 {
        let ack = ws.send_message(&room_id, &format!("before crash {n}"), &format!("c-{n}")).await;
        assert_eq!(ack["seq"], n);
    }

    node.kill9().await;
    node.restart().await;
    relogin(&mut [&mut buyer, &mut seller]).await;

    let listed = buyer.list_all("/orders").await;
    let listed_ids: Vec<String> = listed.iter().map(id_of).collect();
    let expected: BTreeSet<String> = orders.iter().map(id_of).collect();
    assert_eq!(listed_ids.len(), 3, "each order exactly once: {listed_ids:?}");
    assert_eq!(listed_ids.into_iter().collect::<BTreeSet<_>>(), expected);
    assert_eq!(seller.list_all("/orders?role=seller").await.len(), 3);

    let paid = buyer.get(&format!("/orders/{paid_id}")).await.expect(200);
    assert_eq!(paid["status"], "PAID");
    assert_eq!(paid["paymentId"], payment["id"]);
    let payment_now = seller.get(&format!("/payments/{}", id_of(&payment))).await.expect(200);
    assert_eq!(payment_now["status"], "APPROVED");

    let history = buyer.history(&room_id).await;
    let texts: Vec<&str> = history.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["before crash 3", "before crash 2", "before crash 1"]);
    let message_ids: BTreeSet<&str> = history.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(message_ids.len(), 3);

    // Idempotency keys are durable too.
    let retried = buyer.post_order(&product_id, 1, keys[1]).await;
    assert!(retried.status == 200 || retried.status == 201, "HTTP {} {}", retried.status, retried.text);
    assert_eq!(retried.json["id"], orders[1]["id"]);
    buyer.wait_for_stock(&product_id, 7).await;

    // The room carries on from where it was, and a resent clientMsgId is still known.
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    let resent = ws.send_message(&room_id, "before crash 3", "c-3").await;
    assert_eq!(resent["seq"], 3);
    let next = ws.send_message(&room_id, "after crash", "c-4").await;
    assert_eq!(next["seq"], 4);
}

#[tokio::test]
async fn a_payment_pending_at_the_crash_is_approved_after_the_restart() {
    let mut node = TestNode::spawn().await;
    let (_, product, mut buyer) = node.seller_product_buyer(2_000, 5).await;
    let order_id = id_of(&buyer.place_order(&id_of(&product), 1).await);
    let key = unique_key();
    // tok_slow answers after about a second, so the kill lands while the saga is in flight.
    let payment = buyer.pay(&order_id, "tok_slow", &key).await.expect(202);
    node.kill9().await;
    node.restart().await;
    buyer.login().await;

    let order = buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    assert_eq!(order["paymentId"], payment["id"]);
    buyer.wait_for_payment_status(&id_of(&payment), "APPROVED", EVENT_DEADLINE).await;
    let retry = buyer.pay(&order_id, "tok_slow", &key).await;
    assert_eq!(retry.json["id"], payment["id"], "{}", retry.text);
    buyer.wait_for_stock(&id_of(&product), 4).await;
}

#[tokio::test]
async fn a_gateway_timeout_pending_at_the_crash_still_cancels_after_the_restart() {
    let mut node = TestNode::spawn_with(&[("BAZAAR_GATEWAY_TIMEOUT_MS", "1500")]).await;
    let (_, product, mut buyer) = node.seller_product_buyer(2_000, 5).await;
    let product_id = id_of(&product);
    let order_id = id_of(&buyer.place_order(&product_id, 2).await);
    let payment = buyer.pay_ok(&order_id, "tok_timeout").await;
    node.kill9().await;
    node.restart().await;
    buyer.login().await;

    let declined = buyer.wait_for_payment_status(&id_of(&payment), "DECLINED", EVENT_DEADLINE).await;
    assert_eq!(declined["reason"], "gateway_timeout");
    buyer.wait_for_order_status(&order_id, "CANCELLED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 5).await;
}

#[tokio::test]
async fn writes_between_repeated_crashes_are_all_kept_once() {
    let mut node = TestNode::spawn().await;
    let (mut seller, product, mut buyer) = node.seller_product_buyer(100, 20).await;
    let product_id = id_of(&product);
    let room_id = id_of(&buyer.open_room(&seller).await);
    let mut placed = BTreeSet::new();
    for round in 0..3 {
        for n in 0..2 {
            let order = buyer.post_order(&product_id, 1, &format!("round-{round}-{n}")).await.expect(201);
            placed.insert(id_of(&order));
        }
        let mut ws = buyer.ws_connect().await;
        ws.join(&room_id).await;
        let ack = ws.send_message(&room_id, &format!("round {round}"), &format!("r-{round}")).await;
        assert_eq!(ack["seq"], round + 1, "seqs stay gapless across restarts");
        node.kill9().await;
        node.restart().await;
        relogin(&mut [&mut buyer, &mut seller]).await;
    }
    let listed: Vec<String> = buyer.list_all("/orders").await.iter().map(id_of).collect();
    assert_eq!(listed.len(), 6, "{listed:?}");
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), placed);
    buyer.wait_for_stock(&product_id, 14).await;
    let history = seller.history(&room_id).await;
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 2, 1]);
}

#[tokio::test]
async fn a_cancel_and_a_refund_acknowledged_before_the_crash_stay_done() {
    let mut node = TestNode::spawn().await;
    let (mut seller, product, mut buyer) = node.seller_product_buyer(100, 10).await;
    let product_id = id_of(&product);
    let cancelled = id_of(&buyer.place_order(&product_id, 2).await);
    let refunded = id_of(&buyer.place_order(&product_id, 3).await);
    let payment_id = id_of(&buyer.pay_ok(&refunded, "tok_visa").await);
    buyer.wait_for_order_status(&refunded, "PAID", EVENT_DEADLINE).await;
    buyer.post_empty(&format!("/orders/{cancelled}/cancel")).await.expect(200);
    seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    node.kill9().await;
    node.restart().await;
    relogin(&mut [&mut buyer, &mut seller]).await;

    buyer.wait_for_order_status(&cancelled, "CANCELLED", EVENT_DEADLINE).await;
    buyer.wait_for_order_status(&refunded, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_payment_status(&payment_id, "REFUNDED", EVENT_DEADLINE).await;
    // Released exactly once each: replaying the log must not release again.
    buyer.wait_for_stock(&product_id, 10).await;
    let probe = buyer.place_order(&product_id, 10).await;
    assert_eq!(probe["quantity"], 10);
    buyer.post_order(&product_id, 1, &unique_key()).await.expect_error(409, "out_of_stock");
}

#[tokio::test]
async fn accounts_and_products_survive_a_sigkill() {
    let mut node = TestNode::spawn().await;
    let (mut seller, product, buyer) = node.seller_product_buyer(4_321, 9).await;
    seller.patch(&format!("/products/{}", id_of(&product)), serde_json::json!({"price": 5_000})).await.expect(200);
    node.kill9().await;
    node.restart().await;
    seller.login().await;
    let read = node.get(&format!("/products/{}", id_of(&product))).await.expect(200);
    assert_eq!(read["price"], 5_000);
    assert_eq!(read["stock"], 9);
    // The e-mail is still taken, and the password still works.
    node.post("/auth/signup", serde_json::json!({"email": buyer.email, "password": PASSWORD, "role": "BUYER"}))
        .await
        .expect_error(409, "email_taken");
    let me = seller.get("/auth/me").await.expect(200);
    assert_eq!(me["id"], seller.id.as_str());
}

#[tokio::test]
async fn tokens_issued_before_a_restart_still_work_after_it() {
    // The development signing secret lives in the data directory, so a restart logs nobody out.
    let mut node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    node.restart().await;
    user.get("/auth/me").await.expect(200);
    node.post("/auth/refresh", serde_json::json!({"refreshToken": user.refresh_token})).await.expect(200);
}

#[tokio::test]
async fn orders_in_flight_at_the_crash_are_kept_once_or_not_at_all() {
    let mut node = TestNode::spawn().await;
    let (_, product, mut buyer) = node.seller_product_buyer(100, 100).await;
    let product_id = id_of(&product);
    let keys: Vec<String> = (0..30).map(|n| format!("inflight-{n}")).collect();
    // Counted as the client sees them: a reservation visible in the stock may still be waiting
    // for its 201 when the kill lands, so the stock alone cannot say five were acknowledged.
    let answered = Arc::new(AtomicUsize::new(0));
    let storm = {
        let (buyer, product_id, keys, answered) = (buyer.clone(), product_id.clone(), keys.clone(), answered.clone());
        tokio::spawn(async move {
            let body = serde_json::json!({"productId": product_id, "quantity": 1});
            futures_util::future::join_all(keys.iter().map(|key| {
                let (buyer, body, answered) = (&buyer, body.clone(), &answered);
                async move {
                    let headers = [("idempotency-key", key.as_str())];
                    let token = Some(buyer.access_token.as_str());
                    let outcome =
                        buyer.api.try_send(reqwest::Method::POST, "/orders", token, Body::Json(body), &headers).await;
                    if outcome.as_ref().is_ok_and(|reply| reply.status == 201) {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    outcome
                }
            }))
            .await
        })
    };
    // Kill once some orders are acknowledged, so the rest are cut off at random points.
    eventually(EVENT_DEADLINE, "some orders to be acknowledged", || async {
        match answered.load(Ordering::SeqCst) {
            n if n >= 5 => Ok(()),
            n => Err(format!("{n} acknowledged so far")),
        }
    })
    .await;
    node.kill9().await;
    let outcomes = storm.await.expect("the order storm task");
    let acknowledged: Vec<(usize, String)> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(n, outcome)| match outcome {
            Ok(reply) if reply.status == 201 => Some((n, id_of(&reply.json))),
            _ => None,
        })
        .collect();
    assert!(acknowledged.len() >= 5, "{} acknowledged", acknowledged.len());
    node.restart().await;
    buyer.login().await;

    let listed: BTreeSet<String> = buyer.list_all("/orders").await.iter().map(id_of).collect();
    for (_, id) in &acknowledged {
        assert!(listed.contains(id), "acknowledged order {id} was lost");
    }
    // No reservation without an order, and none lost: the stock matches the orders that exist.
    buyer.wait_for_stock(&product_id, 100 - listed.len() as i64).await;

    // Retrying every key completes the set: known keys give their order, cut-off ones a new one.
    for (n, key) in keys.iter().enumerate() {
        let retry = buyer.post_order(&product_id, 1, key).await;
        assert!(retry.status == 200 || retry.status == 201, "key {key}: HTTP {} {}", retry.status, retry.text);
        if let Some((_, id)) = acknowledged.iter().find(|(m, _)| *m == n) {
            assert_eq!(retry.json["id"], id.as_str(), "key {key} changed its order");
        }
    }
    let all: Vec<String> = buyer.list_all("/orders").await.iter().map(id_of).collect();
    assert_eq!(all.len(), 30, "one order per key");
    buyer.wait_for_stock(&product_id, 70).await;
}

#[tokio::test]
async fn chat_messages_in_flight_at_the_crash_are_kept_once_or_not_at_all() {
    let mut node =
        TestNode::spawn_with(&[("BAZAAR_WS_BURST", "1000"), ("BAZAAR_WS_MESSAGES_PER_SECOND", "1000")]).await;
    let (mut buyer, seller) = (node.signup(Role::Buyer).await, node.signup(Role::Seller).await);
    let room_id = id_of(&buyer.open_room(&seller).await);
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    for n in 0..30 {
        ws.send_json(&serde_json::json!({"type": "send", "room": room_id, "text": format!("burst {n}"), "clientMsgId": format!("b-{n}")}))
            .await;
    }
    // Take acks until a handful arrived, then pull the plug with the rest in flight.
    let mut acked: Vec<(String, i64)> = Vec::new();
    while acked.len() < 5 {
        let ack = ws.next_of_type("ack").await;
        acked.push((ack["clientMsgId"].as_str().unwrap().to_owned(), ack["seq"].as_i64().unwrap()));
    }
    node.kill9().await;
    node.restart().await;
    buyer.login().await;

    let history = buyer.history(&room_id).await;
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = (1..=history.len() as i64).rev().collect();
    assert_eq!(seqs, expected, "gapless after the crash");
    for (client_msg_id, seq) in &acked {
        let text = format!("burst {}", &client_msg_id[2..]);
        let found: Vec<&Value> = history.iter().filter(|m| m["text"] == text.as_str()).collect();
        assert_eq!(found.len(), 1, "acknowledged {client_msg_id} kept exactly once: {found:?}");
        assert_eq!(found[0]["seq"], *seq);
    }

    // Resending everything fills the gaps without duplicating what survived.
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    for n in 0..30 {
        let ack = ws.send_message(&room_id, &format!("burst {n}"), &format!("b-{n}")).await;
        if let Some((_, seq)) = acked.iter().find(|(id, _)| *id == format!("b-{n}")) {
            assert_eq!(ack["seq"], *seq);
        }
    }
    let history = buyer.history(&room_id).await;
    assert_eq!(history.len(), 30, "one message per clientMsgId");
    let texts: BTreeSet<&str> = history.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts.len(), 30);
}

#[tokio::test]
async fn a_spent_refresh_token_stays_spent_across_a_crash() {
    let mut node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    let spent = user.refresh_token.clone();
    let next = node.post("/auth/refresh", serde_json::json!({"refreshToken": spent})).await.expect(200);
    node.kill9().await;
    node.restart().await;
    // Replaying the spent token after the restart is still theft, and still revokes the family.
    node.post("/auth/refresh", serde_json::json!({"refreshToken": spent})).await.expect_error(401, "unauthorized");
    node.post("/auth/refresh", serde_json::json!({"refreshToken": next["refreshToken"]}))
        .await
        .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn a_checkouts_payment_in_flight_at_the_crash_pays_every_order_after_the_restart() {
    let mut node = TestNode::spawn().await;
    let mut buyer = node.signup(Role::Buyer).await;
    let mut products = Vec::new();
    for price in [1_000, 2_000] {
        let seller = node.signup(Role::Seller).await;
        let product = id_of(&seller.list_product(price, 5).await);
        buyer.put(&format!("/cart/items/{product}"), serde_json::json!({"quantity": 1})).await.expect(200);
        products.push(product);
    }
    let checkout = buyer
        .send(reqwest::Method::POST, "/checkout", Body::None, &[("idempotency-key", &unique_key())])
        .await
        .expect(201);
    let orders: Vec<String> = checkout["orders"].as_array().unwrap().iter().map(id_of).collect();
    let key = unique_key();
    let body = serde_json::json!({"checkoutId": id_of(&checkout), "method": {"type": "card", "token": "tok_slow"}});
    // tok_slow answers after about a second: the kill lands while the one charge is in flight.
    let payment = buyer.post_with_key("/payments", body.clone(), &key).await.expect(202);
    node.kill9().await;
    node.restart().await;
    buyer.login().await;

    for order in &orders {
        let read = buyer.wait_for_order_status(order, "PAID", EVENT_DEADLINE).await;
        assert_eq!(read["paymentId"], payment["id"]);
    }
    let approved = buyer.wait_for_payment_status(&id_of(&payment), "APPROVED", EVENT_DEADLINE).await;
    assert_eq!(approved["amount"], 3_000);
    // The retry after the restart answers the same payment; the stock of both is taken once.
    let retry = buyer.post_with_key("/payments", body, &key).await;
    assert_eq!(retry.json["id"], payment["id"], "{}", retry.text);
    for product in &products {
        assert_eq!(buyer.stock_of(product).await, 4);
    }
}
