//! A node killed with SIGKILL under load: the survivors take over its entities quickly, clients
//! that retry with the same Idempotency-Key lose nothing and duplicate nothing, and the node
//! rejoins when restarted.

use crate::support::{eventually, member_entities, member_status, unique_key, Api, Cluster, Role, User};
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Retries of one request after a 503 or a broken connection, and the pause between them.
const RETRIES: usize = 20;
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long after the kill every product must be readable through a survivor.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(2);
const STOCK: i64 = 100_000;

/// The nodes a load client may use: all three, or the survivors once n2 is dead.
#[derive(Clone)]
struct Targets {
    nodes: Vec<Api>,
    n2_dead: Arc<AtomicBool>,
    /// Requests sent again after a 503 or a broken connection, for the report.
    retried: Arc<AtomicUsize>,
}

impl Targets {
    fn pick(&self) -> Api {
        let mut rng = rand::thread_rng();
        if self.n2_dead.load(Ordering::SeqCst) {
            self.nodes[[0, 2][rng.gen_range(0..2)]].clone()
        } else {
            self.nodes[rng.gen_range(0..3)].clone()
        }
    }

    /// POSTs `body` with `key`, retrying with the same key on 503 and on connection errors, each
    /// time through a node picked afresh; returns the 2xx body or why it gave up.
    async fn keyed_post(&self, token: &str, path: &str, body: &Value, key: &str) -> Result<Value, String> {
        let mut last = String::new();
        for _ in 0..=RETRIES {
            let node = self.pick();
            match node.try_send(Method::POST, path, Some(token), Some(body), &[("idempotency-key", key)]).await {
                Ok(reply) if reply.is_success() => return Ok(reply.json),
                Ok(reply) if reply.status == 503 => last = format!("via {}: HTTP 503 {}", node.name, reply.text),
                Ok(reply) => {
                    return Err(format!("POST {path} {body} via {}: HTTP {} {}", node.name, reply.status, reply.text))
                }
                Err(e) => last = e,
            }
            self.retried.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(format!("POST {path} {body} failed {} times; last: {last}", RETRIES + 1))
    }
}

/// One order the load saw acknowledged, and its acknowledged payment.
#[derive(Debug, Clone)]
struct Acked {
    order_id: String,
    product_id: String,
    quantity: i64,
    payment_id: String,
}

/// Orders and pays in a loop as `buyer` until `stop`; returns what was acknowledged and what failed.
async fn buy_until_stopped(
    targets: Targets,
    buyer: User,
    products: Vec<String>,
    stop: Arc<AtomicBool>,
    paid: Arc<AtomicUsize>,
) -> (Vec<Acked>, Vec<String>) {
    let mut acked = Vec::new();
    let mut errors = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let (product_id, quantity) = {
            let mut rng = rand::thread_rng();
            (products[rng.gen_range(0..products.len())].clone(), rng.gen_range(1..=3))
        };
        let body = json!({"productId": product_id, "quantity": quantity});
        let order = match targets.keyed_post(&buyer.token, "/orders", &body, &unique_key()).await {
            Ok(order) => order,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let Some(order_id) = order["id"].as_str().map(str::to_owned) else {
            errors.push(format!("an acknowledged order without an id: {order}"));
            continue;
        };
        let body = json!({"orderId": order_id, "method": {"type": "card", "token": "tok_visa"}});
        let payment = match targets.keyed_post(&buyer.token, "/payments", &body, &unique_key()).await {
            Ok(payment) => payment,
            Err(e) => {
                errors.push(e);
                // The order stays acknowledged (and unpaid): the checks below will say so.
                acked.push(Acked { order_id, product_id, quantity, payment_id: String::new() });
                continue;
            }
        };
        let payment_id = payment["id"].as_str().unwrap_or_default().to_owned();
        if payment["orderId"] != order_id.as_str() {
            errors.push(format!("payment {payment} does not name order {order_id}"));
        }
        acked.push(Acked { order_id, product_id, quantity, payment_id });
        paid.fetch_add(1, Ordering::SeqCst);
    }
    (acked, errors)
}

/// The `shards` count of `kind` on `node` in a `/cluster` view.
fn shard_count(view: &Value, kind: &str, node: &str) -> i64 {
    view["shards"][kind][node].as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_node_under_load_loses_nothing_and_fails_over() {
    let mut cluster = Cluster::start(3, 3, &[]).await;
    let nodes: Vec<Api> = (0..3).map(|i| cluster.api(i)).collect();
    let (n1, n3) = (nodes[0].clone(), nodes[2].clone());
    let seller = n1.signup_and_login(Role::Seller).await;
    // Enough products that n2 owns some of them, so the kill takes entities with it.
    let mut products: Vec<String> = Vec::new();
    while products.len() < 12 || shard_count(&n1.cluster_view().await.unwrap(), "product", "n2") == 0 {
        assert!(products.len() < 40, "40 products and none lives on n2: {}", n1.cluster_view().await.unwrap());
        products.push(n1.list_product(&seller, 900, STOCK).await["id"].as_str().unwrap().to_owned());
    }
    let mut buyers = Vec::new();
    for i in 0..4 {
        buyers.push(nodes[i % 3].signup_and_login(Role::Buyer).await);
    }

    let targets = Targets {
        nodes: nodes.clone(),
        n2_dead: Arc::new(AtomicBool::new(false)),
        retried: Arc::new(AtomicUsize::new(0)),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let paid = Arc::new(AtomicUsize::new(0));
    let clock = Instant::now();
    let tasks: Vec<_> = buyers
        .iter()
        .map(|buyer| {
            tokio::spawn(buy_until_stopped(
                targets.clone(),
                buyer.clone(),
                products.clone(),
                stop.clone(),
                paid.clone(),
            ))
        })
        .collect();

    eventually(Duration::from_secs(20), "the load to get going", || async {
        let count = paid.load(Ordering::SeqCst);
        if clock.elapsed() >= Duration::from_secs(2) && count >= 4 {
            Ok(())
        } else {
            Err(format!("{count} payments acknowledged after {:?}", clock.elapsed()))
        }
    })
    .await;
    let killed_at = Instant::now();
    cluster.kill9(1).await;
    targets.n2_dead.store(true, Ordering::SeqCst);

    // Failover: a full round of reads of every product through n1 succeeds within the deadline.
    let mut rounds = 0;
    loop {
        rounds += 1;
        let mut failed = Vec::new();
        for product in &products {
            let path = format!("/products/{product}");
            let left = (killed_at + FAILOVER_DEADLINE).saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(
                left + Duration::from_millis(200),
                n1.try_send(Method::GET, &path, None, None, &[]),
            );
            match read.await {
                Ok(Ok(reply)) if reply.status == 200 && reply.json["id"] == product.as_str() => {}
                Ok(Ok(reply)) => failed.push(format!("{path}: HTTP {} {}", reply.status, reply.text)),
                Ok(Err(e)) => failed.push(format!("{path}: {e}")),
                Err(_) => failed.push(format!("{path}: no answer before the deadline")),
            }
        }
        let took = killed_at.elapsed();
        if failed.is_empty() {
            eprintln!("every product read through n1 {took:?} after the kill (round {rounds})");
            assert!(
                took <= FAILOVER_DEADLINE,
                "reading every product through n1 first succeeded {took:?} after the kill (round {rounds})"
            );
            break;
        }
        assert!(took <= FAILOVER_DEADLINE, "{took:?} after the kill, reads through n1 still fail: {failed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Keep the load on the survivors for a while, then collect what was acknowledged.
    let paid_at_kill = paid.load(Ordering::SeqCst);
    eventually(Duration::from_secs(20), "the load to go on after the kill", || async {
        let count = paid.load(Ordering::SeqCst);
        if killed_at.elapsed() >= Duration::from_secs(4) && count >= paid_at_kill + 4 {
            Ok(())
        } else {
            Err(format!("{} payments acknowledged since the kill", count - paid_at_kill))
        }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut acked_by_buyer = Vec::new();
    let mut errors = Vec::new();
    for task in tasks {
        let (acked, failed) = task.await.expect("a load task");
        acked_by_buyer.push(acked);
        errors.extend(failed);
    }
    assert!(errors.is_empty(), "{} requests gave up despite retries: {errors:#?}", errors.len());
    let all: Vec<&Acked> = acked_by_buyer.iter().flatten().collect();
    eprintln!(
        "{} orders acknowledged ({} before the kill), {} requests retried",
        all.len(),
        paid_at_kill,
        targets.retried.load(Ordering::SeqCst)
    );

    // Every acknowledged order exists exactly once in its buyer's list, and nothing else does.
    for (buyer, acked) in buyers.iter().zip(&acked_by_buyer) {
        let listed = n1.list_all("/orders?role=buyer&limit=50", Some(&buyer.token)).await;
        let ids: Vec<String> = listed.iter().map(|o| o["id"].as_str().unwrap_or_default().to_owned()).collect();
        let unique: BTreeSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "a buyer's order list has duplicates: {ids:?}");
        let expected: BTreeSet<&String> = acked.iter().map(|a| &a.order_id).collect();
        assert_eq!(unique, expected, "a buyer's order list is exactly the acknowledged orders");
    }

    // Every order ends PAID with exactly the acknowledged payment.
    let mut pending: BTreeMap<String, (&Acked, &User)> = BTreeMap::new();
    for (buyer, acked) in buyers.iter().zip(&acked_by_buyer) {
        for a in acked {
            pending.insert(a.order_id.clone(), (a, buyer));
        }
    }
    let settle_started = Instant::now();
    let mut polls = 0usize;
    while !pending.is_empty() {
        let mut last = String::new();
        let ids: Vec<String> = pending.keys().cloned().collect();
        for order_id in ids {
            let (a, buyer) = pending[&order_id];
            polls += 1;
            let node = if polls.is_multiple_of(2) { &n1 } else { &n3 };
            let reply = node.get(&format!("/orders/{order_id}"), Some(&buyer.token)).await;
            if reply.status == 200 && reply.json["status"] == "PAID" {
                assert_eq!(
                    reply.json["paymentId"],
                    a.payment_id.as_str(),
                    "order {order_id} is paid by another payment"
                );
                let payment = node.get(&format!("/payments/{}", a.payment_id), Some(&buyer.token)).await.expect(200);
                assert_eq!(payment["status"], "APPROVED", "the payment of a PAID order: {payment}");
                pending.remove(&order_id);
            } else {
                last = format!("order {order_id} via {}: HTTP {} {}", node.name, reply.status, reply.text);
            }
        }
        if pending.is_empty() {
            break;
        }
        assert!(
            settle_started.elapsed() <= Duration::from_secs(15),
            "{} of {} acknowledged orders are not PAID after 15 s; last: {last}",
            pending.len(),
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // No double reservation: each stock fell by exactly the quantities of its PAID orders.
    for product in &products {
        let sold: i64 = all.iter().filter(|a| &a.product_id == product).map(|a| a.quantity).sum();
        for node in [&n1, &n3] {
            let stock = node.get(&format!("/products/{product}"), None).await.expect(200)["stock"].as_i64();
            assert_eq!(stock, Some(STOCK - sold), "the stock of {product} via {} after {sold} sold", node.name);
        }
    }

    // A restarted n2 rejoins and takes its share of entities again.
    cluster.start_node(1).await;
    let ready_at = Instant::now();
    eventually(Duration::from_secs(10), "n1 to list the restarted n2 as up", || async {
        let view = n1.cluster_view().await?;
        if member_status(&view, "n2").as_deref() == Some("up") {
            Ok(())
        } else {
            Err(view.to_string())
        }
    })
    .await;
    cluster.wait_until_members_up(&[0, 1, 2], &[0, 1, 2], Duration::from_secs(10)).await;
    let rejoined_after = ready_at.elapsed();
    let n2 = cluster.api(1);
    eventually(Duration::from_secs(10), "the restarted n2 to hold entities after new traffic", || async {
        n1.list_product(&seller, 500, 5).await;
        for product in &products {
            n2.get(&format!("/products/{product}"), None).await.expect(200);
        }
        let view = n1.cluster_view().await?;
        match member_entities(&view, "n2") {
            Some(count) if count > 0 => Ok(()),
            _ => Err(format!("(rejoined after {rejoined_after:?}) {view}")),
        }
    })
    .await;
}
