//! Checkout across the cluster: the products of a cart live on different nodes, checkouts race
//! for the last units through every node, and still none oversells, none leaves a line held, and
//! a retry through another node finds the same checkout; one payment through yet another node
//! pays the orders wherever they live, and each seller refunds their own through their own node.

use crate::support::{eventually, Cluster, Role, EVENT_DEADLINE};
use reqwest::Method;
use serde_json::{json, Value};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_through_every_node_never_oversell_and_a_retry_elsewhere_finds_the_same_checkout() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let nodes: Vec<_> = (0..3).map(|i| cluster.api(i)).collect();
    let sellers = [
        nodes[0].signup_and_login(Role::Seller).await,
        nodes[1].signup_and_login(Role::Seller).await,
        nodes[2].signup_and_login(Role::Seller).await,
    ];
    // Nine products over three sellers: rendezvous hashing spreads them over the nodes.
    let mut products = Vec::new();
    for (i, seller) in sellers.iter().enumerate() {
        for _ in 0..3 {
            products.push(id_of(&nodes[i].list_product(seller, 1_000, 100).await));
        }
    }
    let scarce = id_of(&nodes[1].list_product(&sellers[1], 5_000, 2).await);
    let mut buyers = Vec::new();
    for i in 0..6 {
        let node = &nodes[i % 3];
        let buyer = node.signup_and_login(Role::Buyer).await;
        for product in products.iter().chain([&scarce]) {
            let path = format!("/cart/items/{product}");
            node.send(Method::PUT, &path, Some(&buyer.token), Some(&json!({"quantity": 1})), &[]).await.expect(200);
        }
        buyers.push(buyer);
    }

    let checkouts = buyers.iter().enumerate().map(|(i, buyer)| {
        let node = nodes[i % 3].clone();
        let token = buyer.token.clone();
        async move { node.send(Method::POST, "/checkout", Some(&token), None, &[("idempotency-key", "once")]).await }
    });
    let answers = futures_util::future::join_all(checkouts).await;
    let opened: Vec<usize> = (0..answers.len()).filter(|&i| answers[i].status == 201).collect();
    assert_eq!(
        opened.len(),
        2,
        "two units of the scarce product: {:?}",
        answers.iter().map(|a| &a.text).collect::<Vec<_>>()
    );
    for answer in answers.iter().filter(|a| a.status != 201) {
        answer.expect_code(409, "out_of_stock");
        assert_eq!(answer.json["error"]["products"], json!([scarce]), "{}", answer.text);
    }
    for answer in opened.iter().map(|&i| &answers[i]) {
        assert_eq!(answer.json["orders"].as_array().map(Vec::len), Some(3), "one order per seller: {}", answer.text);
        assert_eq!(answer.json["total"], 9 * 1_000 + 5_000);
    }
    // Through every node, every product shows exactly the two checkouts' units gone.
    for node in &nodes {
        for product in &products {
            let read = node.get(&format!("/products/{product}"), None).await.expect(200);
            assert_eq!(read["stock"], 98, "{product} via {}: {read}", node.name);
        }
        assert_eq!(node.get(&format!("/products/{scarce}"), None).await.expect(200)["stock"], 0);
    }

    // A retry through another node: the same checkout, read the same through all three.
    let first = opened[0];
    let elsewhere = &nodes[(first + 1) % 3];
    let token = &buyers[first].token;
    let again =
        elsewhere.send(Method::POST, "/checkout", Some(token), None, &[("idempotency-key", "once")]).await.expect(200);
    assert_eq!(again["id"], answers[first].json["id"]);
    let path = format!("/checkouts/{}", id_of(&again));
    for node in &nodes {
        assert_eq!(node.get(&path, Some(token)).await.expect(200), answers[first].json, "{path} via {}", node.name);
    }
    // One payment for the checkout through a third node: every order, wherever it lives, PAID.
    let paying = &nodes[(first + 2) % 3];
    let body = json!({"checkoutId": id_of(&again), "method": {"type": "card", "token": "tok_visa"}});
    let payment = paying
        .send(Method::POST, "/payments", Some(token), Some(&body), &[("idempotency-key", "pay")])
        .await
        .expect(202);
    assert_eq!(payment["amount"], 9 * 1_000 + 5_000, "{payment}");
    let payment_id = id_of(&payment);
    let orders: Vec<(String, String)> = again["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (id_of(o), o["sellerId"].as_str().unwrap().to_owned()))
        .collect();
    let status_everywhere = |order: String, wanted: &'static str| {
        let nodes = nodes.clone();
        let token = token.clone();
        async move {
            eventually(EVENT_DEADLINE, &format!("order {order} to be {wanted} on every node"), || async {
                for node in &nodes {
                    let read = node.get(&format!("/orders/{order}"), Some(&token)).await.expect(200);
                    if read["status"] != wanted {
                        return Err(format!("{} via {}", read["status"], node.name));
                    }
                }
                Ok(())
            })
            .await
        }
    };
    for (order, _) in &orders {
        status_everywhere(order.clone(), "PAID").await;
    }
    // The retry through another node answers the same payment.
    let retried =
        nodes[first % 3].send(Method::POST, "/payments", Some(token), Some(&body), &[("idempotency-key", "pay")]).await;
    assert_eq!(retried.json["id"], json!(payment_id), "{}", retried.text);

    // Each seller refunds their own order through their own node: each order REFUNDED alone.
    for (i, seller) in sellers.iter().enumerate() {
        let (order, _) = orders.iter().find(|(_, s)| s == &seller.id).expect("an order per seller");
        let path = format!("/payments/{payment_id}/refund");
        let refunded = nodes[i].send(Method::POST, &path, Some(&seller.token), None, &[]).await.expect(200);
        let own = refunded["orders"].as_array().unwrap();
        assert_eq!(own.len(), 1, "a seller sees their own share: {refunded}");
        status_everywhere(order.clone(), "REFUNDED").await;
    }
    let done = nodes[first % 3].get(&format!("/payments/{payment_id}"), Some(token)).await.expect(200);
    assert_eq!((done["status"].as_str(), done["refundedAmount"].as_i64()), (Some("REFUNDED"), Some(14_000)));
}
