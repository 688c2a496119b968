//! `bazaar cluster up`: one command starts every node of the config, and one signal stops them; a
//! node that dies is started again while the others serve, and one that cannot start says why on
//! the terminal.

use crate::support::*;
use serde_json::json;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// `bazaar cluster up` on `cluster`'s config with `flags`, its stdout piped (and its stderr too
/// when `stderr` is true).
async fn cluster_up(cluster: &Cluster, flags: &[&str], stderr: bool) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_bazaar"))
        .args(["cluster", "up", "--config"])
        .arg(cluster.config_path())
        .args(flags)
        .envs(database_env(&cluster.data_dir()).await)
        // In the real-backends run: Kafka and Redis too, as a production cluster.
        .envs(server_env(cluster.data_dir().parent().expect("the cluster directory")))
        .env("BAZAAR_CLUSTER_COOKIE", COOKIE)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(if stderr { Stdio::piped() } else { Stdio::null() })
        .kill_on_drop(true)
        .spawn()
        .expect("bazaar cluster up starts")
}

/// Reads `lines` into `printed` until a new one starts with `prefix`, or panics at `deadline`.
async fn read_until<R: tokio::io::AsyncBufRead + Unpin>(
    lines: &mut tokio::io::Lines<R>,
    printed: &mut Vec<String>,
    prefix: &str,
    deadline: Instant,
) {
    let from = printed.len();
    let seen = |printed: &Vec<String>| printed[from..].iter().any(|line| line.starts_with(prefix));
    while !seen(printed) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, lines.next_line()).await {
            Ok(Ok(Some(line))) => printed.push(line),
            other => panic!("no line starting {prefix:?} ({other:?}); printed so far: {printed:?}"),
        }
    }
}

/// The pid `cluster up` printed in node `name`'s latest ready line.
fn ready_pid(printed: &[String], name: &str) -> String {
    let line = printed
        .iter()
        .rev()
        .find(|l| l.starts_with(&format!("node {name} ready")))
        .unwrap_or_else(|| panic!("no ready line for {name}: {printed:?}"));
    let pid = line.split("(pid ").nth(1).and_then(|rest| rest.split(',').next());
    pid.unwrap_or_else(|| panic!("no pid in {line:?}")).to_owned()
}

#[tokio::test]
async fn cluster_up_starts_every_node_and_a_signal_stops_them_all() {
    let cluster = Cluster::configure(3, &[]);
    let mut up = cluster_up(&cluster, &[], false).await;
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    read_until(&mut lines, &mut printed, "cluster ready: 3 nodes", Instant::now() + READY_DEADLINE).await;
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

#[tokio::test]
async fn a_node_killed_under_cluster_up_is_started_again_while_the_others_keep_serving() {
    let cluster = Cluster::configure(3, &[]);
    let mut up = cluster_up(&cluster, &["--restart-delay-ms", "300"], false).await;
    let mut lines = BufReader::new(up.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    read_until(&mut lines, &mut printed, "cluster ready: 3 nodes", Instant::now() + READY_DEADLINE).await;
    cluster.wait_until_members_up(&[0, 1, 2], &[0, 1, 2], MEMBERSHIP_DEADLINE).await;
    let seller = cluster.api(0).signup_and_login(Role::Seller).await;
    let product = cluster.api(0).list_product(&seller, 5_000, 4).await;
    let product_path = format!("/products/{}", product["id"].as_str().unwrap());

    let killed = std::process::Command::new("kill").args(["-KILL", &ready_pid(&printed, "n2")]).status();
    assert!(killed.expect("kill runs").success());
    read_until(&mut lines, &mut printed, "node n2 exited", Instant::now() + Duration::from_secs(10)).await;
    // While n2 is down, the survivors answer (once the heartbeat has dropped n2, if n2 owned the
    // product: until then a read routed to it is 503), and cluster up itself is still running.
    for survivor in [0, 2] {
        let read = eventually(MEMBERSHIP_DEADLINE, "a survivor to serve the product", || async {
            let read = cluster.api(survivor).get(&product_path, None).await;
            match read.status {
                200 => Ok(read.json),
                503 => Err(read.text),
                other => panic!("a survivor answered {other}: {}", read.text),
            }
        })
        .await;
        assert_eq!(read["stock"], 4, "{read}");
    }
    assert!(up.try_wait().expect("cluster up's status").is_none(), "cluster up stopped with a node: {printed:?}");

    read_until(&mut lines, &mut printed, "node n2 ready", Instant::now() + READY_DEADLINE).await;
    cluster.wait_until_members_up(&[0, 1, 2], &[0, 1, 2], MEMBERSHIP_DEADLINE).await;
    let read = cluster.api(1).get(&product_path, None).await.expect(200);
    assert_eq!(read["id"], product["id"], "the restarted node serves again: {read}");

    let pid = up.id().expect("cluster up is running").to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs").success());
    let status = tokio::time::timeout(Duration::from_secs(30), up.wait()).await.expect("cluster up stops");
    assert!(status.expect("cluster up exit status").success());
}

#[tokio::test]
async fn a_node_that_cannot_start_shows_its_error_on_the_terminal_and_cluster_up_gives_up() {
    let cluster = Cluster::configure(2, &[]);
    // n2's HTTP port is taken, so n2 fails at startup every time.
    let _taken = std::net::TcpListener::bind(cluster.specs()[1].http_addr).expect("n2's port is free to take");
    for run in 1..=2 {
        let up = cluster_up(&cluster, &["--restart-delay-ms", "100", "--max-start-failures", "2"], true).await;
        let output = tokio::time::timeout(READY_DEADLINE, up.wait_with_output())
            .await
            .expect("cluster up gives up by itself")
            .expect("cluster up's output");
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!output.status.success(), "run {run}: cluster up succeeded: {stdout}");
        assert!(stderr.contains("node n2 failed to start"), "run {run}: {stderr}");
        // The node's own error, from its log, is on the terminal, and no backtrace is.
        let port = cluster.specs()[1].http_addr.port().to_string();
        assert!(stderr.contains("  | ") && stderr.contains(&port), "run {run}: n2's error is not shown: {stderr}");
        assert!(stderr.contains("failed to start 2 times in a row"), "run {run}: {stderr}");
        assert!(!stderr.to_lowercase().contains("stack backtrace"), "run {run}: {stderr}");
        assert!(stdout.contains("node n1 stopped"), "run {run}: the other node is stopped too: {stdout}");
    }
    // The second run kept the first run's logs.
    let logs = cluster.data_dir().join("logs");
    assert!(logs.join("n2.log").exists() && logs.join("n2.log.1").exists(), "earlier logs are kept");
}
