//! Who belongs to the cluster: a node with the wrong cookie never does, and a listed node started
//! later joins while clients keep working.

use crate::support::{eventually, member_entities, member_status, Api, Cluster, Role, User, MEMBERSHIP_DEADLINE};
use rand::Rng;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cookie_never_joins() {
    let mut cluster = Cluster::start(3, 2, &[]).await;
    cluster.start_nodes(&[2], "another-cookie-that-does-not-match").await;
    let (n1, n2, n3) = (cluster.api(0), cluster.api(1), cluster.api(2));

    // Peers dial every second, so three seconds give the outsider several tries.
    let window = Duration::from_secs(3);
    let started = Instant::now();
    let mut rounds = 0;
    while started.elapsed() < window || rounds < 3 {
        for node in [&n1, &n2] {
            let view = node.cluster_view().await.unwrap();
            assert_eq!(member_status(&view, "n3").as_deref(), Some("down"), "{} lists the outsider: {view}", node.name);
            let peer = if node.name == "n1" { "n2" } else { "n1" };
            assert_eq!(member_status(&view, peer).as_deref(), Some("up"), "{} lost its peer: {view}", node.name);
        }
        let view = n3.cluster_view().await.unwrap();
        for name in ["n1", "n2"] {
            assert_eq!(member_status(&view, name).as_deref(), Some("down"), "the outsider lists {name}: {view}");
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No entity was placed on the outsider.
    let view = n1.cluster_view().await.unwrap();
    assert_eq!(member_entities(&view, "n3"), Some(0), "no entities on the outsider: {view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_under_load_without_client_errors() {
    let mut cluster = Cluster::start(4, 3, &[]).await;
    let started: Vec<Api> = (0..3).map(|i| cluster.api(i)).collect();
    let n1 = &started[0];
    let mut seller = n1.signup(Role::Seller).await;
    n1.login(&mut seller).await;
    const STOCK: i64 = 1_000_000;
    let mut products = Vec::new();
    for _ in 0..8 {
        products.push(n1.list_product(&seller, 700, STOCK).await["id"].as_str().unwrap().to_owned());
    }
    let mut buyers = Vec::new();
    for i in 0..4 {
        buyers.push(started[i % 3].signup_and_login(Role::Buyer).await);
    }

    let clock = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for buyer in buyers.clone() {
        let (nodes, products, stop, acked, failures) =
            (started.clone(), products.clone(), stop.clone(), acked.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut placed: Vec<(String, String, i64)> = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let (node, product, quantity) = {
                    let mut rng = rand::thread_rng();
                    (
                        nodes[rng.gen_range(0..nodes.len())].clone(),
                        products[rng.gen_range(0..products.len())].clone(),
                        rng.gen_range(1..=3),
                    )
                };
                let fail = |what: String| {
                    failures.lock().unwrap().push(format!("at {:?}: {what}", clock.elapsed()));
                };
                let body = json!({"productId": product, "quantity": quantity});
                let key = crate::support::unique_key();
                let reply = node
                    .try_send(
                        reqwest::Method::POST,
                        "/orders",
                        Some(&buyer.token),
                        Some(&body),
                        &[("idempotency-key", &key)],
                    )
                    .await;
                match reply {
                    Ok(r) if r.status == 201 => {
                        placed.push((r.json["id"].as_str().unwrap_or_default().to_owned(), product.clone(), quantity));
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) if r.status == 409 && r.code() == "out_of_stock" => {}
                    Ok(r) => fail(format!("POST /orders via {}: HTTP {} {}", node.name, r.status, r.text)),
                    Err(e) => fail(format!("POST /orders via {}: {e}", node.name)),
                }
                let path = format!("/products/{product}");
                match node.try_send(reqwest::Method::GET, &path, None, None, &[]).await {
                    Ok(r) if r.status == 200 && r.json["id"] == product.as_str() => {}
                    Ok(r) => fail(format!("GET {path} via {}: HTTP {} {}", node.name, r.status, r.text)),
                    Err(e) => fail(format!("GET {path} via {}: {e}", node.name)),
                }
                if let Some((order_id, _, _)) = placed.last() {
                    let path = format!("/orders/{order_id}");
                    match node.try_send(reqwest::Method::GET, &path, Some(&buyer.token), None, &[]).await {
                        Ok(r) if r.status == 200 && r.json["id"] == order_id.as_str() => {}
                        Ok(r) => fail(format!("GET {path} via {}: HTTP {} {}", node.name, r.status, r.text)),
                        Err(e) => fail(format!("GET {path} via {}: {e}", node.name)),
                    }
                }
            }
            placed
        }));
    }

    // Let the load run a while, then start n4 in the middle of it.
    eventually(Duration::from_secs(20), "the load to get going", || async {
        let count = acked.load(Ordering::SeqCst);
        if clock.elapsed() >= Duration::from_secs(2) && count >= 8 {
            Ok(())
        } else {
            Err(format!("{count} orders acknowledged after {:?}", clock.elapsed()))
        }
    })
    .await;
    let n4_started_at = clock.elapsed();
    cluster.start_node(3).await;
    cluster.wait_until_members_up(&[0, 1, 2, 3], &[0, 1, 2, 3], MEMBERSHIP_DEADLINE).await;
    let n4_up_at = clock.elapsed();
    // Keep the load on for a while after the join, while ownership moves to n4.
    let acked_at_join = acked.load(Ordering::SeqCst);
    eventually(Duration::from_secs(20), "the load to go on after the join", || async {
        let count = acked.load(Ordering::SeqCst);
        if clock.elapsed() >= n4_up_at + Duration::from_secs(3) && count >= acked_at_join + 8 {
            Ok(())
        } else {
            Err(format!("{} orders acknowledged since the join", count - acked_at_join))
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut placed = Vec::new();
    for task in tasks {
        placed.push(task.await.expect("a load task"));
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    assert!(
        failures.is_empty(),
        "{} requests failed while n4 joined (n4 started at {n4_started_at:?}, up everywhere at {n4_up_at:?}): {failures:#?}",
        failures.len()
    );

    // n4 serves: it reads every product and order the way the others do, and takes new orders.
    let n4 = cluster.api(3);
    for product in &products {
        let path = format!("/products/{product}");
        let via_n1 = n1.get(&path, None).await.expect(200);
        let via_n4 = n4.get(&path, None).await.expect(200);
        assert_eq!(via_n4, via_n1, "GET {path} via n4 and n1 differ");
        let reserved: i64 =
            placed.iter().flatten().filter(|(_, p, _)| p == product).map(|(_, _, quantity)| quantity).sum();
        assert_eq!(
            via_n1["stock"].as_i64(),
            Some(STOCK - reserved),
            "{path}: the stock is the initial stock less every acknowledged order's quantity"
        );
    }
    for (buyer, orders) in buyers.iter().zip(&placed) {
        assert_each_listed_once(&n4, buyer, orders.iter().map(|(id, _, _)| id.clone()).collect()).await;
    }
    let order = n4.place_order(&buyers[0], &products[0], 1).await;
    for node in &started {
        let read = node.get(&format!("/orders/{}", order["id"].as_str().unwrap()), Some(&buyers[0].token)).await;
        assert_eq!(read.expect(200), order, "an order placed through n4 reads the same through {}", node.name);
    }
    let view = n4.cluster_view().await.unwrap();
    assert_eq!(view["members"].as_array().map(Vec::len), Some(4), "n4 lists four members: {view}");
    // n4 takes its share: after some traffic it holds entities.
    eventually(Duration::from_secs(10), "n4 to hold entities after new traffic", || async {
        n1.list_product(&seller, 500, 5).await;
        for product in &products {
            n4.get(&format!("/products/{product}"), None).await.expect(200);
        }
        let view = n1.cluster_view().await?;
        match member_entities(&view, "n4") {
            Some(count) if count > 0 => Ok(()),
            _ => Err(view.to_string()),
        }
    })
    .await;
    eprintln!(
        "{} orders acknowledged; n4 started at {n4_started_at:?}, up everywhere at {n4_up_at:?}",
        placed.iter().map(Vec::len).sum::<usize>()
    );
}

/// Asserts that the buyer's order list (read through `node`) holds each of `expected` exactly once.
async fn assert_each_listed_once(node: &Api, buyer: &User, expected: Vec<String>) {
    let listed: Vec<Value> = node.list_all("/orders?role=buyer&limit=50", Some(&buyer.token)).await;
    let ids: Vec<String> = listed.iter().map(|o| o["id"].as_str().unwrap_or_default().to_owned()).collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "the order list via {} has duplicates: {ids:?}", node.name);
    let expected: std::collections::BTreeSet<&String> = expected.iter().collect();
    assert_eq!(unique, expected, "the order list via {} is exactly the acknowledged orders", node.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_actor_frameworks_session_chatter_stays_out_of_the_default_log() {
    // ractor_cluster says "TCP Session opened" and "Node Session ... is authenticated" at info for
    // every peer link; an operator reads our own lines (membership changes) instead.
    let cluster = Cluster::start(2, 2, &[]).await;
    for index in 0..2 {
        let log = cluster.log_tail(index, 100_000);
        let framework: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(" ractor") && !line.contains(" WARN ") && !line.contains(" ERROR "))
            .collect();
        assert!(framework.is_empty(), "{}: {framework:#?}", cluster.name(index));
        assert!(log.contains("serving"), "the node's own lines are there: {log}");
    }
}
