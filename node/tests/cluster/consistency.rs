//! Every node serves the whole API: an entity written through one node reads the same through the
//! others, wherever it lives.

use crate::support::{eventually, member_status, Cluster, Role, EVENT_DEADLINE};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_created_through_one_node_read_the_same_through_the_others() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let nodes: Vec<_> = (0..3).map(|i| cluster.api(i)).collect();
    let (n1, n2, n3) = (&nodes[0], &nodes[1], &nodes[2]);

    // Sign up through one node and log in through another.
    let mut seller = n2.signup(Role::Seller).await;
    n3.login(&mut seller).await;
    let mut buyer = n3.signup(Role::Buyer).await;
    n1.login(&mut buyer).await;
    for user in [&seller, &buyer] {
        let mut seen = Vec::new();
        for node in &nodes {
            let me = node.get("/auth/me", Some(&user.token)).await.expect(200);
            assert_eq!(me["id"], user.id.as_str(), "GET /auth/me via {}: {me}", node.name);
            assert_eq!(me["email"], user.email.as_str(), "GET /auth/me via {}: {me}", node.name);
            seen.push(me);
        }
        assert!(seen.windows(2).all(|w| w[0] == w[1]), "GET /auth/me differs between nodes: {seen:?}");
    }

    // Enough products that rendezvous hashing spreads them over more than one node.
    let mut products = Vec::new();
    for i in 0..12 {
        products.push(n1.list_product(&seller, 1_000 + i, 50).await);
    }
    for created in &products {
        let path = format!("/products/{}", created["id"].as_str().expect("a product id"));
        for node in &nodes {
            let read = node.get(&path, None).await.expect(200);
            assert_eq!(&read, created, "GET {path} via {} differs from what POST /products returned", node.name);
        }
    }
    let listing = format!("/products?sellerId={}&limit=5", seller.id);
    let listed: Vec<Vec<Value>> =
        futures_util::future::join_all(nodes.iter().map(|n| n.list_all(&listing, None))).await;
    assert_eq!(listed[0].len(), 12, "the seller's listing via n1 has every product: {:?}", listed[0]);
    assert_eq!(listed[0], listed[1], "the product listing via n1 and n2 differ");
    assert_eq!(listed[0], listed[2], "the product listing via n1 and n3 differ");

    // Orders and payments through n1; read and settled through all three.
    let mut orders = Vec::new();
    let mut payments = Vec::new();
    for product in products.iter().take(3) {
        let order = n1.place_order(&buyer, product["id"].as_str().unwrap(), 2).await;
        let order_path = format!("/orders/{}", order["id"].as_str().unwrap());
        for node in [n2, n3] {
            let read = node.get(&order_path, Some(&buyer.token)).await.expect(200);
            // Nothing has paid it yet, so every node must answer the very order n1 returned.
            assert_eq!(read, order, "GET {order_path} via {} differs from what POST /orders returned", node.name);
        }
        let payment = n1.pay(&buyer, order["id"].as_str().unwrap()).await;
        assert_eq!(payment["orderId"], order["id"], "the payment names its order: {payment}");
        orders.push(order);
        payments.push(payment);
    }
    for (order, payment) in orders.iter().zip(&payments) {
        let order_path = format!("/orders/{}", order["id"].as_str().unwrap());
        let payment_path = format!("/payments/{}", payment["id"].as_str().unwrap());
        // Whichever node is polled, the order reaches PAID and the payment APPROVED.
        for node in &nodes {
            eventually(EVENT_DEADLINE, &format!("{order_path} to be PAID via {}", node.name), || async {
                let reply = node.get(&order_path, Some(&buyer.token)).await;
                if reply.status == 200 && reply.json["status"] == "PAID" {
                    Ok(())
                } else {
                    Err(format!("HTTP {} {}", reply.status, reply.text))
                }
            })
            .await;
        }
        let seen_orders: Vec<Value> = futures_util::future::join_all(
            nodes.iter().map(|n| async { n.get(&order_path, Some(&buyer.token)).await.expect(200) }),
        )
        .await;
        assert!(seen_orders.windows(2).all(|w| w[0] == w[1]), "{order_path} differs between nodes: {seen_orders:?}");
        assert_eq!(seen_orders[0]["paymentId"], payment["id"], "the paid order names its payment: {}", seen_orders[0]);
        let seen_payments: Vec<Value> = futures_util::future::join_all(
            nodes.iter().map(|n| async { n.get(&payment_path, Some(&buyer.token)).await.expect(200) }),
        )
        .await;
        assert!(
            seen_payments.windows(2).all(|w| w[0] == w[1]),
            "{payment_path} differs between nodes: {seen_payments:?}"
        );
        assert_eq!(seen_payments[0]["status"], "APPROVED", "a paid order's payment: {}", seen_payments[0]);
        // The seller sees the same order as the buyer, through any node.
        let as_seller = n2.get(&order_path, Some(&seller.token)).await.expect(200);
        assert_eq!(as_seller, seen_orders[0], "the seller reads {order_path} like the buyer does");
        // Its timeline, asked of the order's owner through any node, reads the same story (the
        // order's events and its payment's, which may live on another node).
        let timeline_path = format!("{order_path}/events");
        let timelines: Vec<Value> = futures_util::future::join_all(
            nodes.iter().map(|n| async { n.get(&timeline_path, Some(&buyer.token)).await.expect(200) }),
        )
        .await;
        assert!(timelines.windows(2).all(|w| w[0] == w[1]), "{timeline_path} differs between nodes: {timelines:?}");
        let kinds: Vec<&str> =
            timelines[0]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["OrderPlaced", "PaymentRequested", "PaymentApproved", "OrderPaid"], "{}", timelines[0]);
    }
    for (product, order) in products.iter().zip(&orders) {
        let path = format!("/products/{}", product["id"].as_str().unwrap());
        for node in &nodes {
            let stock = node.get(&path, None).await.expect(200)["stock"].as_i64();
            assert_eq!(stock, Some(50 - order["quantity"].as_i64().unwrap()), "stock of {path} via {}", node.name);
        }
    }
    // A cart filled through two nodes (the buyer's entity lives on one of the three, the products
    // on several) reads the same, priced, through all three.
    for (via, product) in [n2, n3, n2].into_iter().zip(products.iter().skip(3)) {
        let path = format!("/cart/items/{}", product["id"].as_str().unwrap());
        let body = serde_json::json!({"quantity": 2});
        via.send(reqwest::Method::PUT, &path, Some(&buyer.token), Some(&body), &[]).await.expect(200);
    }
    let carts: Vec<Value> = futures_util::future::join_all(
        nodes.iter().map(|n| async { n.get("/cart", Some(&buyer.token)).await.expect(200) }),
    )
    .await;
    assert!(carts.windows(2).all(|w| w[0] == w[1]), "the cart differs between nodes: {carts:?}");
    let priced: Vec<i64> =
        carts[0]["items"].as_array().unwrap().iter().map(|l| l["amount"].as_i64().unwrap()).collect();
    let expected: Vec<i64> = products.iter().skip(3).take(3).map(|p| 2 * p["price"].as_i64().unwrap()).collect();
    assert_eq!(priced, expected, "{}", carts[0]);
    let order_lists: Vec<Vec<Value>> = futures_util::future::join_all(
        nodes.iter().map(|n| n.list_all("/orders?role=buyer&limit=2", Some(&buyer.token))),
    )
    .await;
    assert_eq!(order_lists[0].len(), 3, "the buyer's order list via n1: {:?}", order_lists[0]);
    assert!(
        order_lists.windows(2).all(|w| w[0] == w[1]),
        "the buyer's order list differs between nodes: {order_lists:?}"
    );

    // The membership view: three members up everywhere, and the traffic spread over nodes.
    for node in &nodes {
        let view = node.cluster_view().await.unwrap();
        assert_eq!(view["self"], node.name.as_str(), "GET /cluster names the node it asked: {view}");
        let members = view["members"].as_array().expect("members is a list");
        assert_eq!(members.len(), 3, "GET /cluster via {} lists three members: {view}", node.name);
        for name in ["n1", "n2", "n3"] {
            assert_eq!(member_status(&view, name).as_deref(), Some("up"), "{name} via {}: {view}", node.name);
        }
    }
    let view = n1.cluster_view().await.unwrap();
    let shards = view["shards"].as_object().expect("shards is an object");
    let mut holding = std::collections::BTreeSet::new();
    for per_node in shards.values() {
        for (node, count) in per_node.as_object().expect("shards map kinds to nodes") {
            if count.as_i64().unwrap_or(0) > 0 {
                holding.insert(node.clone());
            }
        }
    }
    assert!(holding.len() >= 2, "after 12 products, 3 orders and 3 payments the entities sit on one node: {view}");
}
