//! Hibernating entities, seen from outside: an entity idle for `hibernate_after_secs` gives up its
//! task and mailbox but keeps its state in memory; clients must not be able to tell (the same
//! answers before, while and after it sleeps, and after a restart).

use crate::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Waits until every product and order in memory hibernated (none active, at least one kept).
async fn until_hibernated(node: &TestNode) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let scrape = node.get("/metrics").await.text;
        let active: f64 = ["product", "order"]
            .iter()
            .map(|kind| series_value(&scrape, "bazaar_entities_active", &[&format!("kind=\"{kind}\"")]))
            .sum();
        let live = series_value(&scrape, "bazaar_entities_live", &["kind=\"product\""]);
        if active == 0.0 && live >= 1.0 {
            return;
        }
        assert!(Instant::now() < deadline, "entities never hibernated: active {active}, live products {live}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn hibernating_node_env() -> [(&'static str, &'static str); 1] {
    [("BAZAAR_HIBERNATE_AFTER_SECS", "1")]
}

#[tokio::test]
async fn a_hibernated_product_and_order_answer_as_active_ones_do_and_keep_working() {
    let node = TestNode::spawn_with(&hibernating_node_env()).await;
    let (seller, product, buyer) = node.seller_product_buyer(1_500, 4).await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    let order = buyer.place_order(&product_id, 1).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let awake_product = node.get(&format!("/products/{product_id}")).await.expect(200);
    let awake_order = buyer.get(&format!("/orders/{order_id}")).await.expect(200);

    until_hibernated(&node).await;
    let scrape = node.get("/metrics").await.text;
    assert!(series_value(&scrape, "bazaar_entity_hibernations_total", &["kind=\"product\""]) >= 1.0);
    assert_eq!(node.get(&format!("/products/{product_id}")).await.expect(200), awake_product);
    until_hibernated(&node).await;
    assert_eq!(buyer.get(&format!("/orders/{order_id}")).await.expect(200), awake_order);
    let woken = node.get("/metrics").await.text;
    assert!(series_value(&woken, "bazaar_entity_wakes_total", &["kind=\"order\""]) >= 1.0, "{woken}");

    // Woken entities take commands as before: pay, change the price, order again.
    until_hibernated(&node).await;
    buyer.pay_ok(&order_id, "tok_ok").await;
    buyer.wait_for_order_status(&order_id, "PAID", Duration::from_secs(10)).await;
    until_hibernated(&node).await;
    seller.patch(&format!("/products/{product_id}"), json!({"price": 1_700})).await.expect(200);
    until_hibernated(&node).await;
    let second = buyer.place_order(&product_id, 2).await;
    assert_eq!(second["amount"], 3_400, "the order saw the new price: {second}");
    until_hibernated(&node).await;
    let listed = node.get(&format!("/products/{product_id}")).await.expect(200);
    assert_eq!((listed["stock"].as_i64(), listed["price"].as_i64()), (Some(1), Some(1_700)), "{listed}");
}

#[tokio::test]
async fn what_a_hibernated_entity_answers_is_what_the_database_answers_after_a_restart() {
    let mut node = TestNode::spawn_with(&hibernating_node_env()).await;
    let (mut seller, product, mut buyer) = node.seller_product_buyer(900, 6).await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    let order_id = buyer.place_order(&product_id, 2).await["id"].as_str().unwrap().to_owned();
    seller.patch(&format!("/products/{product_id}"), json!({"name": "renamed lamp"})).await.expect(200);
    until_hibernated(&node).await;
    let sleeping_product: Value = node.get(&format!("/products/{product_id}")).await.expect(200);
    until_hibernated(&node).await;
    let sleeping_order: Value = buyer.get(&format!("/orders/{order_id}")).await.expect(200);

    node.restart().await;
    buyer.login().await;
    seller.login().await;
    assert_eq!(node.get(&format!("/products/{product_id}")).await.expect(200), sleeping_product);
    assert_eq!(buyer.get(&format!("/orders/{order_id}")).await.expect(200), sleeping_order);
    assert_eq!(sleeping_product["stock"], 4);
    assert_eq!(sleeping_product["name"], "renamed lamp");
}
