//! Redis as a cache in front of SQL: the login limit counted across nodes, the visibility rule
//! served from cached relations, and nothing failing while Redis is gone. Each test runs its own
//! `redis-server` (installed by scripts/test.sh) on a free loopback port.

use crate::support::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A throwaway redis-server on loopback.
struct Redis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = Redis { port, dir: tempfile::tempdir().unwrap(), child: None };
        redis.restart();
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port and waits until it answers PING.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test.sh installs it: apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers() {
            assert!(Instant::now() < deadline, "redis-server did not answer PING");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok() && stream.read(&mut reply).is_ok_and(|n| reply[..n].starts_with(b"+PONG"))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn login_status(node: &TestNode, email: &str) -> Reply {
    node.post("/auth/login", json!({"email": email, "password": "not-the-password"})).await
}

/// Four attempts through one node, the fifth through another: limited only if they share a count.
async fn the_fifth_attempt_across_nodes_is_limited(first: &TestNode, second: &TestNode) {
    let email = unique_email();
    for _ in 0..4 {
        assert_eq!(login_status(first, &email).await.status, 401);
    }
    let fifth = login_status(second, &email).await;
    fifth.expect_error(429, "rate_limited");
    assert!(fifth.header("retry-after").is_some(), "a Retry-After header");
}

#[tokio::test]
async fn login_attempts_are_counted_across_nodes_through_redis() {
    let redis = Redis::start();
    let env = [("BAZAAR_REDIS_URL", redis.url()), ("BAZAAR_LOGIN_ATTEMPTS_PER_MINUTE", "4".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (first, second) = (TestNode::spawn_with(&env).await, TestNode::spawn_with(&env).await);
    the_fifth_attempt_across_nodes_is_limited(&first, &second).await;
}

#[tokio::test]
async fn nothing_fails_while_redis_is_gone_and_the_cache_returns_with_it() {
    let mut redis = Redis::start();
    let env = [("BAZAAR_REDIS_URL", redis.url()), ("BAZAAR_LOGIN_ATTEMPTS_PER_MINUTE", "4".to_owned())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (node, other) = (TestNode::spawn_with(&env).await, TestNode::spawn_with(&env).await);
    let (seller, product, buyer) = node.seller_product_buyer(100, 1000).await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    let order = buyer.place_order(&product_id, 1).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    buyer.pay_ok(&order_id, "tok_ok").await;
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;
    let profile_path = format!("/auth/user/{}", buyer.id);
    seller.get(&profile_path).await.expect(200);
    seller.get(&profile_path).await.expect(200);
    // The relation and the profile came from Redis the second time.
    let scrape = node.get("/metrics").await.text;
    let hits: f64 = scrape
        .lines()
        .filter(|line| line.starts_with("bazaar_cache_requests_total{") && line.contains("outcome=\"hit\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(hits >= 2.0, "cache hits: {hits}\n{scrape}");

    // Load from four clients while Redis dies under it: every request still succeeds, from SQL,
    // without waiting on Redis for long.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|client| {
            let (seller, buyer, stop) = (seller.clone(), buyer.clone(), stop.clone());
            let (profile_path, product_id, order_id) = (profile_path.clone(), product_id.clone(), order_id.clone());
            tokio::spawn(async move {
                let (mut requests, mut slowest) = (0, Duration::ZERO);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && requests < 2000 {
                    let started = Instant::now();
                    seller.get(&profile_path).await.expect(200);
                    buyer.get(&format!("/auth/user/{}", seller.id)).await.expect(200);
                    buyer.get(&format!("/orders/{order_id}")).await.expect(200);
                    buyer.post_order(&product_id, 1, &format!("load-{client}-{requests}")).await.expect(201);
                    slowest = slowest.max(started.elapsed());
                    requests += 1;
                }
                (requests, slowest)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in load {
        let (requests, slowest) = client.await.expect("every request of the load succeeded");
        assert!(requests > 0);
        assert!(slowest < Duration::from_secs(2), "a round of requests took {slowest:?} without Redis");
    }
    // The login limit still holds, counted on each node.
    let email = unique_email();
    for _ in 0..4 {
        assert_eq!(login_status(&node, &email).await.status, 401);
    }
    login_status(&node, &email).await.expect_error(429, "rate_limited");

    redis.restart();
    // Back: counting is shared between the nodes again (the client reconnects by itself).
    eventually(EVENT_DEADLINE, "the nodes to count logins in Redis again", || async {
        let email = unique_email();
        for _ in 0..4 {
            login_status(&node, &email).await;
        }
        match login_status(&other, &email).await.status {
            429 => Ok(()),
            status => Err(format!("fifth attempt on the other node: HTTP {status}")),
        }
    })
    .await;
    seller.get(&profile_path).await.expect(200);
}
