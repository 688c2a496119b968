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
async fn node_on(emulator: &TossEmulator) -> TestNode {
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
