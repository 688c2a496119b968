//! `bazaar demo`: fills a running node through its API and prints logins that work; run twice, it
//! adds nothing twice.

use crate::support::*;
use reqwest::Method;
use serde_json::json;

async fn demo(node: &TestNode) -> std::process::Output {
    let run =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_bazaar")).args(["demo", "--url", &node.api.base()]).output();
    tokio::time::timeout(std::time::Duration::from_secs(60), run).await.expect("demo finishes").expect("demo runs")
}

#[tokio::test]
async fn demo_fills_a_fresh_node_and_its_printed_logins_work() {
    let node = TestNode::spawn().await;
    let first = demo(&node).await;
    let printed = String::from_utf8_lossy(&first.stdout).into_owned();
    assert!(first.status.success(), "demo failed: {printed} {}", String::from_utf8_lossy(&first.stderr));

    // Every printed login works, with the role it was printed with.
    let logins: Vec<(String, String, String)> = printed
        .lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                [role, email, "password", password] => {
                    Some((role.to_string(), email.to_string(), password.to_string()))
                }
                _ => None,
            }
        })
        .collect();
    assert_eq!(logins.len(), 3, "two sellers and a buyer: {printed}");
    let mut buyer_token = None;
    for (role, email, password) in &logins {
        let tokens = node.post("/auth/login", json!({"email": email, "password": password})).await.expect(200);
        let token = tokens["accessToken"].as_str().unwrap().to_owned();
        let me = node.send(Method::GET, "/auth/me", Some(&token), Body::None, &[]).await.expect(200);
        assert_eq!(me["role"], role.as_str(), "{me}");
        if role == "BUYER" {
            buyer_token = Some(token);
        }
    }
    let products = node.get("/products?limit=100").await.expect(200);
    assert_eq!(products["items"].as_array().unwrap().len(), 6, "{products}");
    let orders =
        node.send(Method::GET, "/orders?role=buyer", buyer_token.as_deref(), Body::None, &[]).await.expect(200);
    let orders = orders["items"].as_array().unwrap();
    assert_eq!(orders.len(), 1, "{orders:?}");
    assert_eq!(orders[0]["status"], "PAID", "{orders:?}");

    // Again: the same accounts, no second copy of anything.
    let second = demo(&node).await;
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let products = node.get("/products?limit=100").await.expect(200);
    assert_eq!(products["items"].as_array().unwrap().len(), 6, "nothing listed twice: {products}");
}

#[tokio::test]
async fn demo_without_a_node_says_so_and_fails() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .args(["demo", "--url", "http://127.0.0.1:1"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .await
        .expect("demo runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no bazaar node answers at http://127.0.0.1:1"), "{stderr}");
    assert!(!stderr.to_lowercase().contains("stack backtrace"), "{stderr}");
}
