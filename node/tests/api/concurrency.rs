//! Races: requests fired together must leave the same state a serial run could have left.

use crate::support::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

#[tokio::test]
async fn twenty_buyers_racing_for_five_units_get_exactly_five_orders() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let product_id = id_of(&seller.list_product(1_000, 5).await);
    let buyers = join_all((0..4).map(|_| node.signup(Role::Buyer))).await;
    let replies = join_all((0..20).map(|n| {
        let buyer = &buyers[n % buyers.len()];
        let key = format!("race-{n}");
        let product_id = product_id.clone();
        async move { buyer.post_order(&product_id, 1, &key).await }
    }))
    .await;
    let created: Vec<&Reply> = replies.iter().filter(|r| r.status == 201).collect();
    let refused: Vec<&Reply> = replies.iter().filter(|r| (r.status, r.code()) == (409, "out_of_stock")).collect();
    let summary: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    assert_eq!(created.len(), 5, "{summary:?}");
    assert_eq!(refused.len(), 15, "{summary:?}");
    let ids: HashSet<&str> = created.iter().map(|r| r.json["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 5, "five distinct orders");
    seller.wait_for_stock(&product_id, 0).await;
    assert_eq!(seller.list_all("/orders?role=seller").await.len(), 5);
}

#[tokio::test]
async fn concurrent_payments_with_different_keys_let_exactly_one_through() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(1_000, 3).await;
    let order_id = id_of(&buyer.place_order(&id_of(&product), 1).await);
    let replies = join_all((0..10).map(|n| {
        let buyer = &buyer;
        let order_id = order_id.clone();
        async move { buyer.pay(&order_id, "tok_visa", &format!("pay-{n}")).await }
    }))
    .await;
    let summary: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    let accepted: Vec<&Reply> = replies.iter().filter(|r| r.status == 202).collect();
    assert_eq!(accepted.len(), 1, "{summary:?}");
    assert_eq!(replies.iter().filter(|r| (r.status, r.code()) == (409, "order_not_payable")).count(), 9, "{summary:?}");
    let order = buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    assert_eq!(order["paymentId"], accepted[0].json["id"]);
}

#[tokio::test]
async fn concurrent_payments_with_one_key_share_one_payment() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(1_000, 3).await;
    let order_id = id_of(&buyer.place_order(&id_of(&product), 1).await);
    let replies = join_all((0..10).map(|_| buyer.pay(&order_id, "tok_visa", "one-key"))).await;
    let summary: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    assert!(replies.iter().all(|r| r.status == 202 || r.status == 200), "{summary:?}");
    let ids: HashSet<&str> = replies.iter().map(|r| r.json["id"].as_str().expect("a payment id")).collect();
    assert_eq!(ids.len(), 1, "one payment for one key: {ids:?}");
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
}

#[tokio::test]
async fn concurrent_orders_with_one_key_create_one_order() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(1_000, 10).await;
    let product_id = id_of(&product);
    let replies = join_all((0..10).map(|_| buyer.post_order(&product_id, 2, "same-key"))).await;
    let summary: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    assert!(replies.iter().all(|r| r.status == 201 || r.status == 200), "{summary:?}");
    let ids: HashSet<&str> = replies.iter().map(|r| r.json["id"].as_str().expect("an order id")).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    buyer.wait_for_stock(&product_id, 8).await;
    assert_eq!(buyer.list_all("/orders").await.len(), 1);
}

#[tokio::test]
async fn concurrent_cancels_release_the_stock_once() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 5).await;
    let product_id = id_of(&product);
    let order_id = id_of(&buyer.place_order(&product_id, 3).await);
    let path = format!("/orders/{order_id}/cancel");
    let replies = join_all((0..10).map(|n| {
        let who = if n % 2 == 0 { &buyer } else { &seller };
        let path = path.clone();
        async move { who.post_empty(&path).await }
    }))
    .await;
    let summary: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 1, "{summary:?}");
    assert_eq!(
        replies.iter().filter(|r| (r.status, r.code()) == (409, "order_not_cancellable")).count(),
        9,
        "{summary:?}"
    );
    buyer.wait_for_stock(&product_id, 5).await;
    // A double release would push the stock past what was listed; check after it could settle.
    let probe = buyer.place_order(&product_id, 5).await;
    buyer.wait_for_stock(&product_id, 0).await;
    assert_eq!(probe["quantity"], 5);
}

#[tokio::test]
async fn a_cancel_racing_a_payment_leaves_one_consistent_outcome() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(1_000, 50).await;
    let product_id = id_of(&product);
    for round in 0..5 {
        let order_id = id_of(&buyer.place_order(&product_id, 1).await);
        let cancel_path = format!("/orders/{order_id}/cancel");
        let key = format!("race-{round}");
        let (cancel, pay) = tokio::join!(buyer.post_empty(&cancel_path), buyer.pay(&order_id, "tok_visa", &key));
        match (cancel.status, pay.status) {
            (200, 409) => {
                pay.expect_error(409, "order_not_payable");
                buyer.wait_for_order_status(&order_id, "CANCELLED", EVENT_DEADLINE).await;
            }
            (409, 202) => {
                cancel.expect_error(409, "order_not_cancellable");
                buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
            }
            // Both winning would cancel an order whose payment then goes through.
            other => panic!("round {round}: cancel and pay answered {other:?}: {} / {}", cancel.text, pay.text),
        }
    }
    // Each round sold or released its unit; none leaked.
    let paid = buyer.list_all("/orders?status=PAID").await.len() as i64;
    buyer.wait_for_stock(&product_id, 50 - paid).await;
}

#[tokio::test]
async fn concurrent_senders_get_gapless_distinct_seqs() {
    let node = TestNode::spawn_with(&[("BAZAAR_WS_BURST", "1000"), ("BAZAAR_WS_MESSAGES_PER_SECOND", "1000")]).await;
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let room_id = id_of(&buyer.open_room(&seller).await);
    let mut buyer_ws = buyer.ws_connect().await;
    let mut seller_ws = seller.ws_connect().await;
    buyer_ws.join(&room_id).await;
    seller_ws.join(&room_id).await;

    async fn blast(ws: &mut WsClient, room_id: &str, prefix: &str) -> Vec<i64> {
        for n in 0..15 {
            ws.send_json(&json!({"type": "send", "room": room_id, "text": format!("{prefix} {n}"), "clientMsgId": format!("{prefix}-{n}")}))
                .await;
        }
        let mut seqs = Vec::new();
        for n in 0..15 {
            let id = format!("{prefix}-{n}");
            let ack = ws
                .next_matching(&format!("ack {id}"), |frame| {
                    frame["type"] == "ack" && frame["clientMsgId"] == id.as_str()
                })
                .await;
            seqs.push(ack["seq"].as_i64().expect("a seq"));
        }
        seqs
    }

    let (buyer_seqs, seller_seqs) =
        tokio::join!(blast(&mut buyer_ws, &room_id, "b"), blast(&mut seller_ws, &room_id, "s"));
    let all: BTreeSet<i64> = buyer_seqs.iter().chain(&seller_seqs).copied().collect();
    assert_eq!(all, (1..=30).collect::<BTreeSet<i64>>(), "{buyer_seqs:?} {seller_seqs:?}");
    // One sender's messages keep their order.
    assert!(buyer_seqs.windows(2).all(|w| w[0] < w[1]), "{buyer_seqs:?}");
    let history = buyer.history(&room_id).await;
    let seqs: Vec<i64> = history.iter().map(|m| m["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=30).rev().collect::<Vec<i64>>());
}

#[tokio::test]
async fn concurrent_signups_with_one_email_create_one_account() {
    let node = TestNode::spawn().await;
    let email = unique_email();
    let replies = join_all(
        (0..6).map(|_| node.post("/auth/signup", json!({"email": email, "password": PASSWORD, "role": "BUYER"}))),
    )
    .await;
    let summary: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    assert_eq!(replies.iter().filter(|r| r.status == 201).count(), 1, "{summary:?}");
    assert_eq!(replies.iter().filter(|r| (r.status, r.code()) == (409, "email_taken")).count(), 5, "{summary:?}");
}

#[tokio::test]
async fn concurrent_rooms_for_one_pair_are_one_room() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let replies = join_all((0..8).map(|n| {
        let (me, peer) = if n % 2 == 0 { (&buyer, &seller) } else { (&seller, &buyer) };
        async move { me.post("/chat/rooms", json!({"peerId": peer.id})).await }
    }))
    .await;
    let summary: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    assert_eq!(replies.iter().filter(|r| r.status == 201).count(), 1, "{summary:?}");
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 7, "{summary:?}");
    let ids: HashSet<&str> = replies.iter().map(|r| r.json["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
}

#[tokio::test]
async fn concurrent_refunds_return_the_stock_once() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 5).await;
    let product_id = id_of(&product);
    let order_id = id_of(&buyer.place_order(&product_id, 2).await);
    let payment_id = id_of(&buyer.pay_ok(&order_id, "tok_visa").await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let path = format!("/payments/{payment_id}/refund");
    let replies = join_all((0..8).map(|_| seller.post_empty(&path))).await;
    let summary: Vec<(u16, &str)> = replies.iter().map(|r| (r.status, r.code())).collect();
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 1, "{summary:?}");
    assert_eq!(
        replies.iter().filter(|r| (r.status, r.code()) == (409, "payment_not_refundable")).count(),
        7,
        "{summary:?}"
    );
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 5).await;
    // Five and not more: a second release would let a sixth unit be ordered.
    buyer.place_order(&product_id, 5).await;
    buyer.post_order(&product_id, 1, &unique_key()).await.expect_error(409, "out_of_stock");
}
