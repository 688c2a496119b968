//! Logins and signups under attack: a flood of password work stays bounded in memory and never
//! delays the probes; limits count per client address, per address and e-mail, and per node; and
//! a revoked session's access tokens stop working at once.

use crate::support::*;
use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde_json::json;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The resident memory of a process, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address is this machine).
fn client_from(source: &str) -> reqwest::Client {
    http_client_builder().local_address(source.parse::<IpAddr>().ok()).build().expect("an HTTP client")
}

async fn post_from(client: &reqwest::Client, node: &TestNode, path: &str, body: serde_json::Value) -> Reply {
    let url = format!("{}{path}", node.api.base());
    send_request(client, Method::POST, &url, None, Body::Json(body), &[]).await.expect("the node answers")
}

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_logins_and_signups_keeps_memory_bounded_and_the_probes_quick() {
    // The per-address limit is raised by the harness and the node-wide one here, so the flood
    // reaches the password pool itself: the bound under test is the pool's.
    let node = TestNode::spawn_with(&[("BAZAAR_AUTH_ATTEMPTS_PER_SECOND", "1000000")]).await;
    let pid = node.pid();
    assert_eq!(node.get("/healthz").await.status, 200);
    let before = rss_bytes(pid);

    let flooding = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(before));
    let slowest_probe_ms = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (flooding, peak, slowest) = (flooding.clone(), peak.clone(), slowest_probe_ms.clone());
        let api = node.api.clone();
        tokio::spawn(async move {
            while flooding.load(Ordering::SeqCst) {
                peak.fetch_max(rss_bytes(pid), Ordering::SeqCst);
                let started = Instant::now();
                let probe = tokio::time::timeout(Duration::from_secs(5), api.get("/healthz")).await;
                let took = started.elapsed();
                assert!(matches!(&probe, Ok(reply) if reply.status == 200), "/healthz failed under the flood");
                slowest.fetch_max(took.as_millis() as u64, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    let check = |reply: &Reply, allowed: &[u16]| {
        assert!(allowed.contains(&reply.status), "unexpected {}: {}", reply.status, reply.text);
        if reply.status == 503 {
            assert_eq!(reply.code(), "unavailable");
            assert!(reply.header("retry-after").is_some(), "a 503 says when to come back");
        }
    };
    let logins: Vec<Reply> = stream::iter(0..600)
        .map(|n| {
            let api = node.api.clone();
            async move {
                api.post("/auth/login", json!({"email": format!("nobody-{n}@example.com"), "password": "x"})).await
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    for reply in &logins {
        check(reply, &[401, 503]);
    }
    let signups: Vec<Reply> = stream::iter(0..300)
        .map(|_| {
            let api = node.api.clone();
            async move {
                api.post("/auth/signup", json!({"email": unique_email(), "password": PASSWORD, "role": "BUYER"})).await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for reply in &signups {
        check(reply, &[201, 503]);
    }
    flooding.store(false, Ordering::SeqCst);
    watcher.await.expect("the probe watcher");

    eprintln!("rss before {} MiB, peak {} MiB", before / MIB, peak.load(Ordering::SeqCst) / MIB);
    let refused = logins.iter().chain(&signups).filter(|r| r.status == 503).count();
    assert!(refused > 0, "128 logins at once cannot all fit the pool and its queue");
    assert!(logins.iter().any(|r| r.status == 401) && signups.iter().any(|r| r.status == 201), "some got through");
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak < 1024 * MIB, "the node peaked at {} MiB", peak / MIB);
    let slowest = slowest_probe_ms.load(Ordering::SeqCst);
    assert!(slowest < 1000, "/healthz took {slowest} ms under the flood");

    // The memory of the burst goes back: within 10 s the node is near where it started.
    let deadline = Instant::now() + Duration::from_secs(10);
    let settled = loop {
        let now = rss_bytes(pid);
        if now <= before + 48 * MIB || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("rss settled {} MiB", settled / MIB);
    assert!(
        settled <= before + 48 * MIB,
        "RSS went from {} MiB to a peak of {} MiB and stayed at {} MiB",
        before / MIB,
        peak / MIB,
        settled / MIB
    );
}

#[tokio::test]
async fn logins_and_signups_are_limited_per_client_address() {
    let node = TestNode::spawn_with(&[("BAZAAR_AUTH_ATTEMPTS_PER_MINUTE_PER_CLIENT", "4")]).await;
    let here = client_from("127.0.0.1");
    for _ in 0..2 {
        let body = json!({"email": unique_email(), "password": PASSWORD, "role": "SELLER"});
        assert_eq!(post_from(&here, &node, "/auth/signup", body).await.status, 201);
        let body = json!({"email": unique_email(), "password": "wrong"});
        assert_eq!(post_from(&here, &node, "/auth/login", body).await.status, 401);
    }
    let over = post_from(
        &here,
        &node,
        "/auth/signup",
        json!({"email": unique_email(), "password": PASSWORD, "role": "BUYER"}),
    )
    .await;
    over.expect_code(429, "rate_limited");
    let wait: u64 = over.header("retry-after").and_then(|s| s.parse().ok()).expect("a Retry-After in seconds");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    post_from(&here, &node, "/auth/login", json!({"email": unique_email(), "password": "x"}))
        .await
        .expect_code(429, "rate_limited");
    // Another address is another client.
    let elsewhere = client_from("127.0.0.2");
    let body = json!({"email": unique_email(), "password": PASSWORD, "role": "BUYER"});
    assert_eq!(post_from(&elsewhere, &node, "/auth/signup", body).await.status, 201);
}

#[tokio::test]
async fn past_the_node_wide_rate_logins_get_503_with_retry_after() {
    let node = TestNode::spawn_with(&[("BAZAAR_AUTH_ATTEMPTS_PER_SECOND", "3")]).await;
    let replies: Vec<Reply> = stream::iter(0..12)
        .map(|n| {
            let api = node.api.clone();
            async move { api.post("/auth/login", json!({"email": format!("n{n}@example.com"), "password": "x"})).await }
        })
        .buffer_unordered(12)
        .collect()
        .await;
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(refused.len() >= 6, "12 at once against 3 a second: {} refused", refused.len());
    for reply in refused {
        reply.expect_code(503, "unavailable");
        assert!(reply.header("retry-after").is_some());
    }
    assert!(replies.iter().all(|r| r.status == 401 || r.status == 503));
}

#[tokio::test]
async fn wrong_passwords_from_one_address_do_not_lock_the_owner_out() {
    let node = TestNode::spawn().await;
    let owner = node.signup(Role::Buyer).await;
    let attacker = client_from("127.0.0.2");
    let mut limited = false;
    for _ in 0..15 {
        let reply =
            post_from(&attacker, &node, "/auth/login", json!({"email": owner.email, "password": "guess"})).await;
        assert!(reply.status == 401 || reply.status == 429, "{}", reply.text);
        limited |= reply.status == 429;
    }
    assert!(limited, "15 guesses a minute from one address are limited");
    let mine = client_from("127.0.0.1");
    let reply = post_from(&mine, &node, "/auth/login", json!({"email": owner.email, "password": PASSWORD})).await;
    assert_eq!(reply.status, 200, "the owner, from their own address, still gets in: {}", reply.text);
}

#[tokio::test]
async fn logging_out_ends_the_access_token_at_once_and_after_a_restart() {
    let mut node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    let mut other_session = user.clone();
    other_session.login().await;
    assert_eq!(user.get("/auth/me").await.status, 200);
    let out = user.post("/auth/logout", json!({"refreshToken": user.refresh_token})).await;
    assert_eq!(out.status, 204, "{}", out.text);
    user.get("/auth/me").await.expect_code(401, "unauthorized");
    assert_eq!(other_session.get("/auth/me").await.status, 200, "only the session logged out ends");
    node.restart().await;
    user.get("/auth/me").await.expect_code(401, "unauthorized");
    assert_eq!(other_session.get("/auth/me").await.status, 200);
}

#[tokio::test]
async fn a_reused_refresh_token_ends_every_access_token_of_its_session() {
    let node = TestNode::spawn().await;
    let first = node.signup(Role::Buyer).await;
    let rotated = node.post("/auth/refresh", json!({"refreshToken": first.refresh_token})).await.expect(200);
    let mut second = first.clone();
    second.access_token = rotated["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(second.get("/auth/me").await.status, 200);
    // The spent token comes back: someone copied it.
    node.post("/auth/refresh", json!({"refreshToken": first.refresh_token})).await.expect_code(401, "unauthorized");
    first.get("/auth/me").await.expect_code(401, "unauthorized");
    second.get("/auth/me").await.expect_code(401, "unauthorized");
}
