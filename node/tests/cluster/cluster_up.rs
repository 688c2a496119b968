//! `bazaar cluster up`: one command starts every node of the config, and one signal stops them.

use crate::support::*;
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn cluster_up_starts_every_node_and_a_signal_stops_them_all() {
    let cluster = Cluster::configure(3, &[]);
    let mut up = tokio::process::Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .args(["cluster", "up", "--config"])
        .arg(cluster.config_path())
        .envs(database_env(&cluster.data_dir()).await)
        // In the real-backends run: Kafka and Redis too, as a production cluster.
        .envs(server_env(cluster.data_dir().parent().expect("the cluster directory")))
        .env("BAZAAR_CLUSTER_COOKIE", COOKIE)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("bazaar cluster up starts");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let deadline = Instant::now() + READY_DEADLINE;
    while !printed.iter().any(|line: &String| line.starts_with("cluster ready: 3 nodes")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) => printed.push(line),
            other => panic!("no ready line from cluster up ({other:?}); printed so far: {printed:?}"),
        }
    }
    for name in ["n1", "n2", "n3"] {
        assert!(printed.iter().any(|l| l.starts_with(&format!("node {name} ready"))), "{printed:?}");
        assert!(cluster.data_dir().join("logs").join(format!("{name}.log")).exists(), "{name} has a log file");
    }
    cluster.wait_until_members_up(&[0, 1, 2], &[0, 1, 2], MEMBERSHIP_DEADLINE).await;
    walkthrough(&cluster).await;

    let pid = up.id().expect("cluster up is running").to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait())
        .await
        .expect("cluster up stops within 30 s")
        .expect("cluster up exit status");
    assert!(status.success(), "cluster up exited with {status}");
    while let Ok(Ok(Some(line))) = tokio::time::timeout(Duration::from_secs(1), lines.next_line()).await {
        printed.push(line);
    }
    for (index, name) in ["n1", "n2", "n3"].iter().enumerate() {
        assert!(printed.iter().any(|l| l.starts_with(&format!("node {name} stopped"))), "{printed:?}");
        assert!(
            cluster.api(index).try_send(reqwest::Method::GET, "/healthz", None, None, &[]).await.is_err(),
            "{name} still answers after the stop"
        );
    }
}

/// The README's walkthrough across the three nodes: a seller lists on n1, a buyer orders and pays
/// on n2 and the saga marks the order PAID (read on n3), then the two chat from sockets on
/// different nodes.
async fn walkthrough(cluster: &Cluster) {
    let (n1, n2, n3) = (cluster.api(0), cluster.api(1), cluster.api(2));
    let seller = n1.signup_and_login(Role::Seller).await;
    let buyer = n2.signup_and_login(Role::Buyer).await;
    let product = n1.list_product(&seller, 12_000, 5).await;
    let order = n2.place_order(&buyer, product["id"].as_str().unwrap(), 2).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    n2.pay(&buyer, &order_id).await;
    eventually(EVENT_DEADLINE, "the order to be PAID", || async {
        let read = n3.get(&format!("/orders/{order_id}"), Some(&buyer.token)).await.expect(200);
        if read["status"] == "PAID" {
            Ok(())
        } else {
            Err(format!("order: {read}"))
        }
    })
    .await;
    let stock = n3.get(&format!("/products/{}", product["id"].as_str().unwrap()), None).await.expect(200);
    assert_eq!(stock["stock"], 3, "two of five units sold: {stock}");

    let room = n3.post("/chat/rooms", Some(&buyer.token), &json!({"peerId": seller.id})).await.expect(201);
    let room_id = room["id"].as_str().unwrap().to_owned();
    let mut buyer_ws = n1.ws_connect(&buyer.token, TokenIn::Header).await;
    let mut seller_ws = n2.ws_connect(&seller.token, TokenIn::Header).await;
    assert_eq!(buyer_ws.join_or_error(&room_id, None).await["type"], "joined");
    assert_eq!(seller_ws.join_or_error(&room_id, None).await["type"], "joined");
    let ack = buyer_ws.send_message(&room_id, "is it still available?", "walkthrough-1").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    let received = seller_ws.messages(&room_id, 1).await;
    assert_eq!(received[0]["text"], "is it still available?", "the seller on n2 gets it: {received:?}");
}
