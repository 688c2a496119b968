//! `POST /payments {checkoutId}`: one payment and one charge for every order of a checkout; each
//! seller's order becomes PAID; each seller refunds their own order, in part or in full, as a
//! partial refund of that charge, never past their order; the order's timeline shows its own
//! refunds only; a declined card cancels every order; an order cancelled before is left out.

use crate::support::*;
use crate::toss::node_on;
use crate::toss_emulator::TossEmulator;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

async fn add(buyer: &TestUser, product: &str, quantity: i64) {
    buyer.put(&format!("/cart/items/{product}"), json!({"quantity": quantity})).await.expect(200);
}

/// Three sellers, a buyer whose cart holds one product of each (at 10,000, 20,000 and 30,000,
/// stock 5 each), checked out: the checkout, the sellers and the products.
async fn checked_out(node: &TestNode) -> (TestUser, Value, Vec<TestUser>, Vec<String>) {
    let buyer = node.signup(Role::Buyer).await;
    let mut sellers = Vec::new();
    let mut products = Vec::new();
    for price in [10_000, 20_000, 30_000] {
        let seller = node.signup(Role::Seller).await;
        let product = id_of(&seller.list_product(price, 5).await);
        add(&buyer, &product, 1).await;
        sellers.push(seller);
        products.push(product);
    }
    let checkout =
        buyer.send(Method::POST, "/checkout", Body::None, &[("idempotency-key", &unique_key())]).await.expect(201);
    (buyer, checkout, sellers, products)
}

async fn pay_checkout(buyer: &TestUser, checkout: &str, token: &str, key: &str) -> Reply {
    buyer
        .post_with_key("/payments", json!({"checkoutId": checkout, "method": {"type": "card", "token": token}}), key)
        .await
}

/// Each order of `checkout` by seller id.
fn order_of_seller(checkout: &Value) -> BTreeMap<String, String> {
    checkout["orders"]
        .as_array()
        .expect("orders")
        .iter()
        .map(|o| (o["sellerId"].as_str().unwrap().to_owned(), id_of(o)))
        .collect()
}

/// `(orderId, sellerId, amount, refundedAmount)` of each share of a payment.
fn shares(payment: &Value) -> Vec<(String, String, i64, i64)> {
    payment["orders"]
        .as_array()
        .unwrap_or_else(|| panic!("no shares in {payment}"))
        .iter()
        .map(|s| {
            (
                s["orderId"].as_str().unwrap().to_owned(),
                s["sellerId"].as_str().unwrap().to_owned(),
                s["amount"].as_i64().unwrap(),
                s["refundedAmount"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn refund(seller: &TestUser, payment: &str, amount: i64) -> Reply {
    seller.post_with_key(&format!("/payments/{payment}/refund"), json!({ "amount": amount }), &unique_key()).await
}

#[tokio::test]
async fn one_payment_pays_every_order_of_a_checkout_and_each_seller_refunds_only_their_own() {
    let node = TestNode::spawn().await;
    let (buyer, checkout, sellers, products) = checked_out(&node).await;
    let checkout_id = id_of(&checkout);
    let orders = order_of_seller(&checkout);

    let key = unique_key();
    let payment = pay_checkout(&buyer, &checkout_id, "tok_visa", &key).await.expect(202);
    assert_eq!((&payment["checkoutId"], &payment["amount"]), (&json!(checkout_id), &json!(60_000)), "{payment}");
    assert!(payment.get("orderId").is_none(), "{payment}");
    assert_eq!(shares(&payment).len(), 3);
    let payment_id = id_of(&payment);
    // Every order waits for it at once, then each becomes PAID.
    for order in orders.values() {
        let seen = buyer.get(&format!("/orders/{order}")).await.expect(200);
        assert!(matches!(seen["status"].as_str(), Some("PAYMENT_PENDING" | "PAID")), "{seen}");
        assert_eq!(seen["paymentId"], json!(payment_id));
    }
    for order in orders.values() {
        buyer.wait_for_order_status(order, "PAID", EVENT_DEADLINE).await;
    }
    buyer.wait_for_payment_status(&payment_id, "APPROVED", EVENT_DEADLINE).await;
    // The same key again: the same payment; another key: nothing is left to pay.
    let again = pay_checkout(&buyer, &checkout_id, "tok_visa", &key).await;
    assert_eq!(id_of(&again.json), payment_id, "{}", again.text);
    pay_checkout(&buyer, &checkout_id, "tok_visa", &unique_key()).await.expect_error(409, "order_not_payable");
    let read = buyer.get(&format!("/checkouts/{checkout_id}")).await.expect(200);
    assert_eq!(read["paymentId"], json!(payment_id), "{read}");

    // Each seller sees their own share only; the buyer sees all of them.
    let (first, second, third) = (&sellers[0], &sellers[1], &sellers[2]);
    let seen = first.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!(shares(&seen), [(orders[&first.id].clone(), first.id.clone(), 10_000, 0)]);
    assert_eq!(seen["amount"], 10_000, "a seller sees their own part of the charge: {seen}");
    // The visibility rule: a PAID order of the checkout lets its seller read the buyer.
    third.get(&format!("/auth/user/{}", buyer.id)).await.expect(200);

    // A seller refunds part of their own order, then never more than is left of it.
    let part = refund(first, &payment_id, 4_000).await.expect(200);
    assert_eq!((part["status"].as_str(), part["refundedAmount"].as_i64()), (Some("APPROVED"), Some(4_000)));
    assert_eq!(shares(&part), [(orders[&first.id].clone(), first.id.clone(), 10_000, 4_000)]);
    let over = refund(first, &payment_id, 6_001).await;
    over.expect_error(409, "refund_exceeds_payment");
    assert!(over.message().contains("6000"), "{}", over.text);
    // Another seller refunds all of theirs: their order alone is REFUNDED, its unit back.
    let all = second.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    // The seller's view is their own part: the other seller's refund and sales are not in it.
    assert_eq!(
        (all["status"].as_str(), all["amount"].as_i64(), all["refundedAmount"].as_i64()),
        (Some("REFUNDED"), Some(20_000), Some(20_000))
    );
    let whole = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!((whole["status"].as_str(), whole["refundedAmount"].as_i64()), (Some("APPROVED"), Some(24_000)));
    buyer.wait_for_order_status(&orders[&second.id], "REFUNDED", EVENT_DEADLINE).await;
    second.wait_for_stock(&products[1], 5).await;
    refund(second, &payment_id, 1).await.expect_error(409, "payment_not_refundable");
    for (seller, product) in [(first, &products[0]), (third, &products[2])] {
        let order = buyer.get(&format!("/orders/{}", orders[&seller.id])).await.expect(200);
        assert_eq!(order["status"], "PAID", "{order}");
        assert_eq!(seller.stock_of(product).await, 4);
    }
    // The buyer cannot refund; a stranger finds nothing.
    buyer.post_empty(&format!("/payments/{payment_id}/refund")).await.expect_error(403, "forbidden");
    let stranger = node.signup(Role::Seller).await;
    stranger.get(&format!("/payments/{payment_id}")).await.expect_error(404, "not_found");

    // The refunded order's timeline reads in order and holds its own refund only.
    let timeline = buyer.get(&format!("/orders/{}/events", orders[&second.id])).await.expect(200);
    let kinds: Vec<&str> = timeline["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["OrderPlaced", "PaymentRequested", "PaymentApproved", "OrderPaid", "PaymentRefunded", "OrderRefunded"],
        "{timeline}"
    );
    let amounts: Vec<&Value> = timeline["events"].as_array().unwrap().iter().map(|e| &e["amount"]).collect();
    assert_eq!((amounts[1], amounts[4]), (&json!(20_000), &json!(20_000)), "each order's own share: {timeline}");
    let first_timeline = buyer.get(&format!("/orders/{}/events", orders[&first.id])).await.expect(200);
    let refunds: Vec<&Value> = first_timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "PaymentRefunded")
        .map(|e| &e["amount"])
        .collect();
    assert_eq!(refunds, [&json!(4_000)], "{first_timeline}");

    // The last seller's refund and the rest of the first's use the charge up: REFUNDED.
    third.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    let last = first.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    assert_eq!((last["status"].as_str(), last["refundedAmount"].as_i64()), (Some("REFUNDED"), Some(10_000)));
    let whole = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!((whole["status"].as_str(), whole["refundedAmount"].as_i64()), (Some("REFUNDED"), Some(60_000)));
    for order in orders.values() {
        buyer.wait_for_order_status(order, "REFUNDED", EVENT_DEADLINE).await;
    }
}

#[tokio::test]
async fn a_declined_card_cancels_every_order_and_an_order_cancelled_before_is_left_out() {
    let node = TestNode::spawn().await;
    let (buyer, checkout, sellers, products) = checked_out(&node).await;
    let orders = order_of_seller(&checkout);
    let payment = pay_checkout(&buyer, &id_of(&checkout), "tok_decline", &unique_key()).await.expect(202);
    buyer.wait_for_payment_status(&id_of(&payment), "DECLINED", EVENT_DEADLINE).await;
    for (seller, product) in sellers.iter().zip(&products) {
        buyer.wait_for_order_status(&orders[&seller.id], "CANCELLED", EVENT_DEADLINE).await;
        seller.wait_for_stock(product, 5).await;
    }

    // Another checkout, one of whose orders its seller cancels first: the payment is for the rest.
    let (buyer, checkout, sellers, _) = checked_out(&node).await;
    let orders = order_of_seller(&checkout);
    sellers[1].post_empty(&format!("/orders/{}/cancel", orders[&sellers[1].id])).await.expect(200);
    let payment = pay_checkout(&buyer, &id_of(&checkout), "tok_visa", &unique_key()).await.expect(202);
    assert_eq!(payment["amount"], 40_000, "{payment}");
    let paid: Vec<String> = shares(&payment).into_iter().map(|(order, ..)| order).collect();
    assert_eq!(paid.len(), 2);
    assert!(!paid.contains(&orders[&sellers[1].id]));
    for order in &paid {
        buyer.wait_for_order_status(order, "PAID", EVENT_DEADLINE).await;
    }
    let cancelled = buyer.get(&format!("/orders/{}", orders[&sellers[1].id])).await.expect(200);
    assert_eq!(cancelled["status"], "CANCELLED");

    // Bad requests: both ids, neither, someone else's checkout.
    let both =
        json!({"orderId": paid[0], "checkoutId": id_of(&checkout), "method": {"type": "card", "token": "tok_visa"}});
    buyer.post_with_key("/payments", both, &unique_key()).await.expect_error_naming(400, "bad_request", "checkoutId");
    let neither = json!({"method": {"type": "card", "token": "tok_visa"}});
    buyer.post_with_key("/payments", neither, &unique_key()).await.expect_error_naming(400, "bad_request", "orderId");
    let other = node.signup(Role::Buyer).await;
    pay_checkout(&other, &id_of(&checkout), "tok_visa", &unique_key()).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn a_checkout_is_one_toss_charge_and_each_sellers_refund_a_partial_cancel_of_it() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (buyer, checkout, sellers, _) = checked_out(&node).await;
    let checkout_id = id_of(&checkout);
    let orders = order_of_seller(&checkout);
    let billing_key = emulator.issue_billing_key(&buyer.id);
    let payment_id = id_of(&pay_checkout(&buyer, &checkout_id, &billing_key, &unique_key()).await.expect(202));
    for order in orders.values() {
        buyer.wait_for_order_status(order, "PAID", EVENT_DEADLINE).await;
    }
    // One charge at Toss for the whole checkout, under the checkout's id.
    let charges = emulator.payments_of(&checkout_id);
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!((charges[0].status, charges[0].total_amount), ("DONE", 60_000));
    for order in orders.values() {
        assert!(emulator.payments_of(order).is_empty(), "no charge per order");
    }

    // Each seller's refund is a partial cancel of that one charge.
    refund(&sellers[0], &payment_id, 3_000).await.expect(200);
    sellers[2].post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    buyer.wait_for_order_status(&orders[&sellers[2].id], "REFUNDED", EVENT_DEADLINE).await;
    eventually(EVENT_DEADLINE, "both refunds to reach Toss", || async {
        let charge = &emulator.payments_of(&checkout_id)[0];
        let mut cancels = charge.cancels.clone();
        cancels.sort();
        if cancels == [3_000, 30_000] && charge.balance_amount == 27_000 {
            Ok(())
        } else {
            Err(format!("{charge:?}"))
        }
    })
    .await;
    // A refund past a seller's own order never reaches Toss.
    refund(&sellers[1], &payment_id, 20_001).await.expect_error(409, "refund_exceeds_payment");
    assert_eq!(emulator.payments_of(&checkout_id)[0].cancels.len(), 2);
    let order = buyer.get(&format!("/orders/{}", orders[&sellers[1].id])).await.expect(200);
    assert_eq!(order["status"], "PAID");
    assert_eq!(emulator.violations(), Vec::<String>::new());
}
