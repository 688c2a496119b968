//! The `toss` payment gateway, driven through the real binary against the in-process emulator of
//! Toss's documented endpoints ([`crate::toss_emulator`]): every request's path, Basic auth,
//! Idempotency-Key and body are checked there, and whatever the faults (a slow answer, a 5xx, an
//! answer lost after charging), each payment is charged exactly once.

use crate::support::*;
use crate::toss_emulator::{Fault, Seen, TossEmulator, SECRET_KEY};
use serde_json::Value;
use std::time::Duration;

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// A node charging through the emulator; each request to Toss may take 500 ms.
pub(crate) async fn node_on(emulator: &TossEmulator) -> TestNode {
    TestNode::spawn_with(&[
        ("BAZAAR_GATEWAY", "toss"),
        ("BAZAAR_TOSS_API_URL", &emulator.url()),
        ("BAZAAR_TOSS_SECRET_KEY", SECRET_KEY),
        ("BAZAAR_TOSS_TIMEOUT_MS", "500"),
        ("BAZAAR_GATEWAY_TIMEOUT_MS", "3000"),
    ])
    .await
}

/// A seller, a buyer and the buyer's ORDERED order of one unit at 5,000.
async fn ordered(node: &TestNode) -> (TestUser, TestUser, String, String) {
    let (seller, product, buyer) = node.seller_product_buyer(5_000, 3).await;
    let product_id = id_of(&product);
    let order = buyer.place_order(&product_id, 1).await;
    (seller, buyer, product_id, id_of(&order))
}

/// The requests to one path.
fn requests_to(emulator: &TossEmulator, method: &str, path: &str) -> Vec<Seen> {
    emulator.seen().into_iter().filter(|s| s.method == method && s.path == path).collect()
}

/// Asserts that every request to `path` carried one and the same Idempotency-Key.
fn one_key_for_all(requests: &[Seen]) {
    let keys: Vec<_> = requests.iter().map(|s| s.idempotency_key.clone()).collect();
    assert!(!keys.is_empty() && keys.iter().all(|k| k.is_some() && *k == keys[0]), "{keys:?}");
}

#[tokio::test]
async fn a_toss_charge_sends_the_billing_key_customer_and_order_and_pays_the_order() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (_, buyer, product_id, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    let payment = buyer.pay_ok(&order_id, &billing_key).await;
    buyer.wait_for_payment_status(&id_of(&payment), "APPROVED", EVENT_DEADLINE).await;
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    assert_eq!(buyer.stock_of(&product_id).await, 2);

    let charges = emulator.payments_of(&order_id);
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!((charges[0].status, charges[0].total_amount), ("DONE", 5_000));
    assert_eq!(charges[0].customer_key, buyer.id);
    let posts = requests_to(&emulator, "POST", &format!("/v1/billing/{billing_key}"));
    assert_eq!(posts.len(), 1);
    assert_eq!(posts[0].body["orderId"], order_id.as_str());
    assert_eq!(posts[0].body["customerKey"], buyer.id.as_str());
    assert_eq!(posts[0].body["amount"], 5_000);
    one_key_for_all(&posts);
    assert_eq!(emulator.violations(), Vec::<String>::new());
    // The key never reaches the log.
    assert!(!node.log_tail(10_000).contains(SECRET_KEY));
}

#[tokio::test]
async fn a_card_toss_refuses_declines_the_payment_with_tosss_reason_and_cancels_the_order() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (_, buyer, product_id, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_declining_billing_key(&buyer.id);
    let payment = buyer.pay_ok(&order_id, &billing_key).await;
    let declined = buyer.wait_for_payment_status(&id_of(&payment), "DECLINED", EVENT_DEADLINE).await;
    assert_eq!(declined["reason"], "reject_card_payment");
    buyer.wait_for_order_status(&order_id, "CANCELLED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
    assert_eq!(requests_to(&emulator, "POST", &format!("/v1/billing/{billing_key}")).len(), 1);
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_charge_answered_too_slowly_is_looked_up_by_order_id_and_approved_once() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (_, buyer, _, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    // Charged at once, answered after the node's 500 ms have run out.
    emulator.fault_next_charges(&[Fault::Slow(Duration::from_secs(2))]);
    let payment = buyer.pay_ok(&order_id, &billing_key).await;
    let approved = buyer.wait_for_payment_status(&id_of(&payment), "APPROVED", EVENT_DEADLINE).await;
    assert!(approved.get("reason").is_none_or(Value::is_null), "{approved}");
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    assert_eq!(emulator.payments_of(&order_id).len(), 1);
    assert!(!requests_to(&emulator, "GET", &format!("/v1/payments/orders/{order_id}")).is_empty());
    one_key_for_all(&requests_to(&emulator, "POST", &format!("/v1/billing/{billing_key}")));
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_charge_whose_answer_is_lost_after_charging_is_reconciled_and_charged_once() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (_, buyer, _, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    emulator.fault_next_charges(&[Fault::LoseResponse]);
    let payment = buyer.pay_ok(&order_id, &billing_key).await;
    buyer.wait_for_payment_status(&id_of(&payment), "APPROVED", EVENT_DEADLINE).await;
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let charges = emulator.payments_of(&order_id);
    assert_eq!(charges.len(), 1, "{charges:?}");
    assert_eq!(charges[0].status, "DONE");
    assert!(!requests_to(&emulator, "GET", &format!("/v1/payments/orders/{order_id}")).is_empty());
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn server_errors_leave_the_payment_requested_and_the_retry_with_the_same_key_charges_once() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (_, buyer, _, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    emulator.fault_next_charges(&[Fault::ServerError, Fault::ServerError]);
    let payment = buyer.pay_ok(&order_id, &billing_key).await;
    buyer.wait_for_payment_status(&id_of(&payment), "APPROVED", EVENT_DEADLINE).await;
    let posts = requests_to(&emulator, "POST", &format!("/v1/billing/{billing_key}"));
    assert!(posts.len() >= 3, "two 5xx, then the charge: {posts:?}");
    one_key_for_all(&posts);
    assert_eq!(emulator.payments_of(&order_id).len(), 1);
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_refund_cancels_the_whole_toss_payment_once_even_when_the_cancels_answer_is_lost() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (seller, buyer, product_id, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    let payment_id = id_of(&buyer.pay_ok(&order_id, &billing_key).await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;

    emulator.fault_next_cancels(&[Fault::LoseResponse]);
    seller.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
    let charges = emulator.payments_of(&order_id);
    assert_eq!(charges.len(), 1);
    assert_eq!((charges[0].status, charges[0].balance_amount), ("CANCELED", 0));
    assert_eq!(charges[0].cancels, [5_000], "given back once, in full");
    let cancels = requests_to(&emulator, "POST", &format!("/v1/payments/{}/cancel", charges[0].payment_key));
    assert!(!cancels.is_empty());
    one_key_for_all(&cancels);
    // After the lost answer the node asked Toss again, and found the payment cancelled.
    assert!(requests_to(&emulator, "GET", &format!("/v1/payments/orders/{order_id}")).len() >= 2);
    assert!(cancels.iter().all(|c| c.body["cancelReason"].is_string() && c.body.get("cancelAmount").is_none()));
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn the_toss_gateway_refuses_to_start_without_its_secret_key() {
    let emulator = TossEmulator::start().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .arg("config")
        .env("BAZAAR_GATEWAY", "toss")
        .env("BAZAAR_TOSS_API_URL", emulator.url())
        .env_remove("BAZAAR_TOSS_SECRET_KEY")
        .output()
        .await
        .expect("running bazaar config");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("BAZAAR_TOSS_SECRET_KEY"), "{output:?}");
}

/// A node on the emulator and a PAID order of one unit at 5,000 (stock 3), with its payment id.
async fn paid_through_toss(emulator: &TossEmulator) -> (TestNode, TestUser, TestUser, String, String, String) {
    let node = node_on(emulator).await;
    let (seller, buyer, product_id, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    let payment_id = id_of(&buyer.pay_ok(&order_id, &billing_key).await);
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    (node, seller, buyer, product_id, order_id, payment_id)
}

/// Waits until Toss's payment for the order has given back `cancelled` in all.
async fn wait_for_toss_cancels(emulator: &TossEmulator, order_id: &str, cancelled: i64) {
    eventually(EVENT_DEADLINE, "toss to have cancelled the refunds", || async {
        let charges = emulator.payments_of(order_id);
        let given: i64 = charges.iter().flat_map(|c| c.cancels.iter()).sum();
        if given == cancelled {
            Ok(())
        } else {
            Err(format!("{charges:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn partial_refunds_cancel_those_amounts_at_toss_and_only_the_last_refunds_the_order() {
    let emulator = TossEmulator::start().await;
    let (_node, seller, buyer, product_id, order_id, payment_id) = paid_through_toss(&emulator).await;
    let path = format!("/payments/{payment_id}/refund");
    let first = seller.post_with_key(&path, serde_json::json!({"amount": 1_500}), "refund-a").await.expect(200);
    assert_eq!((first["status"].as_str(), first["refundedAmount"].as_i64()), (Some("APPROVED"), Some(1_500)));
    // Retried with its key: nothing more is given back.
    seller.post_with_key(&path, serde_json::json!({"amount": 1_500}), "refund-a").await.expect(200);
    wait_for_toss_cancels(&emulator, &order_id, 1_500).await;
    seller
        .post_with_key(&path, serde_json::json!({"amount": 3_501}), "refund-b")
        .await
        .expect_error(409, "refund_exceeds_payment");
    seller.post_with_key(&path, serde_json::json!({"amount": 2_000}), "refund-c").await.expect(200);
    wait_for_toss_cancels(&emulator, &order_id, 3_500).await;
    let charge = &emulator.payments_of(&order_id)[0];
    assert_eq!(
        (charge.status, charge.balance_amount, charge.cancels.clone()),
        ("PARTIAL_CANCELED", 1_500, vec![1_500, 2_000])
    );
    let order = buyer.get(&format!("/orders/{order_id}")).await.expect(200);
    assert_eq!(order["status"], "PAID");
    assert_eq!(buyer.stock_of(&product_id).await, 2);

    let last = seller.post_empty(&path).await.expect(200);
    assert_eq!((last["status"].as_str(), last["refundedAmount"].as_i64()), (Some("REFUNDED"), Some(5_000)));
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
    let charge = &emulator.payments_of(&order_id)[0];
    assert_eq!(
        (charge.status, charge.balance_amount, charge.cancels.clone()),
        ("CANCELED", 0, vec![1_500, 2_000, 1_500])
    );
    let cancels = requests_to(&emulator, "POST", &format!("/v1/payments/{}/cancel", charge.payment_key));
    assert!(
        cancels.iter().all(|c| c.body["cancelAmount"].is_i64()),
        "every partial refund names its amount: {cancels:?}"
    );
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn concurrent_partial_refunds_through_toss_never_cancel_more_than_the_charge() {
    let emulator = TossEmulator::start().await;
    let (_node, seller, _buyer, _, order_id, payment_id) = paid_through_toss(&emulator).await;
    let path = format!("/payments/{payment_id}/refund");
    let replies = futures_util::future::join_all((0..8).map(|i| {
        let (seller, path) = (&seller, &path);
        async move { seller.post_with_key(path, serde_json::json!({"amount": 2_000}), &format!("race-{i}")).await }
    }))
    .await;
    assert_eq!(replies.iter().filter(|r| r.status == 200).count(), 2, "{replies:?}");
    assert!(replies.iter().all(|r| r.status == 200 || r.code() == "refund_exceeds_payment"), "{replies:?}");
    wait_for_toss_cancels(&emulator, &order_id, 4_000).await;
    let charge = &emulator.payments_of(&order_id)[0];
    assert_eq!((charge.balance_amount, charge.cancels.clone()), (1_000, vec![2_000, 2_000]));
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_bare_4xx_after_toss_charged_is_looked_up_and_approved_not_declined() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (_, buyer, _, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    // Toss charged; a proxy answered 400 with its own page (no Toss error code).
    emulator.fault_next_charges(&[Fault::BareRefusalAfterCharging]);
    let payment_id = id_of(&buyer.pay_ok(&order_id, &billing_key).await);
    let approved = buyer.wait_for_payment_status(&payment_id, "APPROVED", EVENT_DEADLINE).await;
    assert!(approved.get("reason").is_none_or(Value::is_null), "{approved}");
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    assert_eq!(emulator.payments_of(&order_id).len(), 1);
    assert!(!requests_to(&emulator, "GET", &format!("/v1/payments/orders/{order_id}")).is_empty());
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn a_charge_toss_recorded_at_another_amount_is_declined_once_and_not_asked_forever() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (_, buyer, product_id, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    emulator.fault_next_charges(&[Fault::ChargeMore(1)]);
    let payment_id = id_of(&buyer.pay_ok(&order_id, &billing_key).await);
    let declined = buyer.wait_for_payment_status(&payment_id, "DECLINED", EVENT_DEADLINE).await;
    assert_eq!(declined["reason"], "gateway_amount_mismatch");
    buyer.wait_for_order_status(&order_id, "CANCELLED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
    // Decided on the first answer: the charge was sent once and never again.
    assert_eq!(requests_to(&emulator, "POST", &format!("/v1/billing/{billing_key}")).len(), 1);
    assert!(node.log_tail(10_000).contains("does not match"));
}

#[tokio::test]
async fn a_webhook_approves_a_charge_whose_answer_was_lost_while_toss_lookups_fail_and_duplicates_are_harmless() {
    let emulator = TossEmulator::start().await;
    let node = node_on(&emulator).await;
    let (_, buyer, _, order_id) = ordered(&node).await;
    let billing_key = emulator.issue_billing_key(&buyer.id);
    // Charged, answer lost; then every retry and lookup by order number fails: only the
    // webhook (looked up by its payment key) can tell bazaar.
    emulator.fault_next_charges(&[Fault::LoseResponse]);
    emulator.set_outage(true);
    let payment_id = id_of(&buyer.pay_ok(&order_id, &billing_key).await);
    eventually(EVENT_DEADLINE, "the node to retry the charge", || async {
        let posts = requests_to(&emulator, "POST", &format!("/v1/billing/{billing_key}")).len();
        if posts >= 2 {
            Ok(())
        } else {
            Err(format!("{posts} charge requests"))
        }
    })
    .await;
    let waiting = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!(waiting["status"], "REQUESTED");

    let webhook = emulator.webhook(&order_id);
    for _ in 0..3 {
        let answer = node.post("/payments/webhooks/toss", webhook.clone()).await.expect(200);
        assert_eq!(answer["received"], true);
    }
    buyer.wait_for_payment_status(&payment_id, "APPROVED", EVENT_DEADLINE).await;
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let charges = emulator.payments_of(&order_id);
    assert_eq!(charges.len(), 1, "{charges:?}");
    let by_key = requests_to(&emulator, "GET", &format!("/v1/payments/{}", charges[0].payment_key));
    assert!(!by_key.is_empty(), "the webhook was checked with toss");
    one_key_for_all(&requests_to(&emulator, "POST", &format!("/v1/billing/{billing_key}")));
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn refunds_made_at_toss_arrive_by_webhook_once_and_stale_or_forged_webhooks_change_nothing() {
    let emulator = TossEmulator::start().await;
    let (node, _seller, buyer, product_id, order_id, payment_id) = paid_through_toss(&emulator).await;
    let stale = emulator.webhook(&order_id);
    let payment_key = emulator.payments_of(&order_id)[0].payment_key.clone();

    // Toss's dashboard gives back 2,000: the webhook brings it to bazaar, and bazaar asks Toss
    // to cancel nothing more.
    emulator.cancel_outside(&order_id, 2_000);
    let fresh = emulator.webhook(&order_id);
    node.post("/payments/webhooks/toss", fresh.clone()).await.expect(200);
    let seen = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!((seen["status"].as_str(), seen["refundedAmount"].as_i64()), (Some("APPROVED"), Some(2_000)));
    // Again, and an older copy that still says DONE: nothing changes.
    node.post("/payments/webhooks/toss", fresh).await.expect(200);
    node.post("/payments/webhooks/toss", stale).await.expect(200);
    // A forged notice: another payment key, a status Toss never recorded.
    let mut forged = emulator.webhook(&order_id);
    forged["data"]["paymentKey"] = "tpk_forged".into();
    forged["data"]["status"] = "CANCELED".into();
    node.post("/payments/webhooks/toss", forged).await.expect(200);
    let seen = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!((seen["status"].as_str(), seen["refundedAmount"].as_i64()), (Some("APPROVED"), Some(2_000)));
    assert_eq!(buyer.get(&format!("/orders/{order_id}")).await.expect(200)["status"], "PAID");

    // The rest is given back at Toss: the payment and the order are refunded, the stock returns.
    emulator.cancel_outside(&order_id, 3_000);
    node.post("/payments/webhooks/toss", emulator.webhook(&order_id)).await.expect(200);
    buyer.wait_for_order_status(&order_id, "REFUNDED", EVENT_DEADLINE).await;
    buyer.wait_for_stock(&product_id, 3).await;
    let seen = buyer.get(&format!("/payments/{payment_id}")).await.expect(200);
    assert_eq!((seen["status"].as_str(), seen["refundedAmount"].as_i64()), (Some("REFUNDED"), Some(5_000)));
    assert_eq!(emulator.payments_of(&order_id)[0].cancels, [2_000, 3_000]);
    let cancels = requests_to(&emulator, "POST", &format!("/v1/payments/{payment_key}/cancel"));
    assert!(cancels.is_empty(), "bazaar never cancels what toss already gave back: {cancels:?}");
    assert_eq!(emulator.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn malformed_and_oversized_webhooks_are_refused_with_json_and_unknown_orders_are_acknowledged() {
    let emulator = TossEmulator::start().await;
    let node = TestNode::spawn_with(&[
        ("BAZAAR_GATEWAY", "toss"),
        ("BAZAAR_TOSS_API_URL", &emulator.url()),
        ("BAZAAR_TOSS_SECRET_KEY", SECRET_KEY),
        ("BAZAAR_TOSS_TIMEOUT_MS", "500"),
        ("BAZAAR_GATEWAY_TIMEOUT_MS", "3000"),
        ("BAZAAR_WEBHOOK_BODY_LIMIT_BYTES", "2048"),
    ])
    .await;
    let path = "/payments/webhooks/toss";
    let raw = |bytes: &[u8]| Body::Raw { content_type: Some("application/json".into()), bytes: bytes.to_vec() };
    for bytes in [&b"not json"[..], b"{}", br#"{"eventType":"PAYMENT_STATUS_CHANGED","data":{"orderId":"../x"}}"#] {
        node.send(reqwest::Method::POST, path, None, raw(bytes), &[]).await.expect_error(400, "bad_request");
    }
    let big = serde_json::json!({"eventType": "PAYMENT_STATUS_CHANGED", "data": {"orderId": "x".repeat(4096)}});
    node.post(path, big).await.expect_error(413, "payload_too_large");
    // Understood but not bazaar's, or nothing to do: 200, so Toss stops retrying.
    let unknown = serde_json::json!({"eventType": "PAYMENT_STATUS_CHANGED", "data": {"orderId": "order-unknown-1"}});
    node.post(path, unknown).await.expect(200);
    let other = serde_json::json!({"eventType": "DEPOSIT_CALLBACK", "data": {"orderId": "order-unknown-1"}});
    node.post(path, other).await.expect(200);
    node.post("/payments/webhooks/simulated", serde_json::json!({})).await.expect_error(404, "not_found");
    // Nothing here was asked of Toss but nothing was: no order of bazaar's was named.
    assert!(emulator.seen().is_empty(), "{:?}", emulator.seen());
}

#[tokio::test]
async fn a_flood_of_webhooks_from_one_address_is_refused_with_429_before_toss_is_asked() {
    let emulator = TossEmulator::start().await;
    let node = TestNode::spawn_with(&[
        ("BAZAAR_GATEWAY", "toss"),
        ("BAZAAR_TOSS_API_URL", &emulator.url()),
        ("BAZAAR_TOSS_SECRET_KEY", SECRET_KEY),
        ("BAZAAR_WEBHOOK_NOTICES_PER_MINUTE", "3"),
    ])
    .await;
    let path = "/payments/webhooks/toss";
    let notice = serde_json::json!({"eventType": "PAYMENT_STATUS_CHANGED", "data": {"orderId": "order-unknown-1"}});
    for _ in 0..3 {
        node.post(path, notice.clone()).await.expect(200);
    }
    // Malformed, or too large to read, a notice past the sender's budget is refused before its
    // body is read.
    let oversized = serde_json::json!({"eventType": "PAYMENT_STATUS_CHANGED", "data": {"orderId": "x".repeat(70_000)}});
    for body in [notice.clone(), serde_json::json!({}), oversized] {
        let refused = node.post(path, body).await;
        let retry_after: u64 = refused.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        refused.expect_error(429, "rate_limited");
    }
    assert!(emulator.seen().is_empty(), "{:?}", emulator.seen());
}

#[tokio::test]
async fn a_refund_toss_refuses_for_good_is_given_up_and_the_next_refund_still_goes_through() {
    let emulator = TossEmulator::start().await;
    let (node, seller, _buyer, _, order_id, payment_id) = paid_through_toss(&emulator).await;
    // 3,000 given back at Toss's dashboard, unknown to bazaar (no webhook came): Toss has 2,000 left.
    emulator.cancel_outside(&order_id, 3_000);
    let path = format!("/payments/{payment_id}/refund");
    // bazaar believes 5,000 is left and takes the refund; Toss refuses it (NOT_CANCELABLE_AMOUNT).
    seller.post_with_key(&path, serde_json::json!({"amount": 2_500}), "too-much").await.expect(200);
    eventually(EVENT_DEADLINE, "the refusal to be given up", || async {
        let log = node.log_tail(2_000);
        if log.contains("toss refused the refund for good") {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    // An operator's alert can see it: the counter of payments that need one.
    eventually(EVENT_DEADLINE, "the refusal to be counted", || async {
        let scrape = node.get("/metrics").await.text;
        if scrape.lines().any(|l| l == r#"bazaar_payments_needing_operator_total{reason="refund_refused"} 1"#) {
            Ok(())
        } else {
            Err(scrape.lines().filter(|l| l.contains("needing_operator")).collect::<Vec<_>>().join("\n"))
        }
    })
    .await;
    // The payment's lane is not stuck on it: a later refund reaches Toss.
    seller.post_with_key(&path, serde_json::json!({"amount": 1_000}), "fits").await.expect(200);
    wait_for_toss_cancels(&emulator, &order_id, 4_000).await;
    let charge = &emulator.payments_of(&order_id)[0];
    assert_eq!((charge.balance_amount, charge.cancels.clone()), (1_000, vec![3_000, 1_000]));
    // The refused one was sent once, not retried without end.
    let cancels = requests_to(&emulator, "POST", &format!("/v1/payments/{}/cancel", charge.payment_key));
    let refused = cancels.iter().filter(|c| c.body["cancelAmount"] == 2_500).count();
    assert_eq!(refused, 1, "{cancels:?}");
    assert_eq!(emulator.violations(), Vec::<String>::new());
}
