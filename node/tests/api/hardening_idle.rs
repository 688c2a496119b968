//! A node at rest: it costs nothing (no busy wake-ups, no write transactions when nothing
//! changed), and its database files are its owner's only.

use crate::support::{cpu_time, eventually, series_total, TestNode, EVENT_DEADLINE};
use std::time::{Duration, Instant};

/// How long the idle node is watched.
const WINDOW: Duration = Duration::from_secs(3);
/// The most of one core the idle node may use in the window. The goal is 1 % for a release
/// build; a debug build runs the same timers (heartbeats, saga and relay looks, this test's own
/// scrapes) several times slower, and the machine's other work steals ticks, so the debug limit
/// is three times that. The busy loop this guards against used 45–95 % of a core.
const MAX_SHARE_OF_A_CORE: f64 = 0.03;

/// The store's batch commits so far (one per write transaction that reached `COMMIT`).
async fn commits(node: &TestNode) -> f64 {
    series_total(&node.get("/metrics").await.text, "bazaar_store_batch_commands_count")
}

#[tokio::test]
async fn an_idle_node_uses_almost_no_cpu_and_writes_nothing() {
    let node = TestNode::spawn().await;
    // Some traffic first, so the relay, the saga and the entities have all had work and gone back
    // to waiting: the idle state after use, not only after start.
    let (_, product, buyer) = node.seller_product_buyer(500, 5).await;
    let order = buyer.place_order(product["id"].as_str().unwrap(), 1).await;
    buyer.pay_ok(order["id"].as_str().unwrap(), "tok_ok").await;
    buyer.wait_for_order_status(order["id"].as_str().unwrap(), "PAID", EVENT_DEADLINE).await;
    // Settled: the last commits of that traffic (the saga's offset) are behind us.
    eventually(EVENT_DEADLINE, "the store to stop committing", || async {
        let before = commits(&node).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let after = commits(&node).await;
        if after == before {
            Ok(())
        } else {
            Err(format!("{} commits in 700 ms", after - before))
        }
    })
    .await;

    let pid = node.pid();
    // The signups above hashed passwords: a reading that cannot see work would prove nothing.
    assert!(cpu_time(pid) > Duration::ZERO, "the CPU reading sees the node's earlier work");
    let (commits_before, cpu_before, started) = (commits(&node).await, cpu_time(pid), Instant::now());
    tokio::time::sleep(WINDOW).await;
    let (cpu_after, elapsed, commits_after) = (cpu_time(pid), started.elapsed(), commits(&node).await);

    let share = (cpu_after - cpu_before).as_secs_f64() / elapsed.as_secs_f64();
    eprintln!("idle node: {:.2} % of a core over {elapsed:?}", share * 100.0);
    assert!(share < MAX_SHARE_OF_A_CORE, "the idle node used {:.1} % of a core over {elapsed:?}", share * 100.0);
    assert_eq!(commits_after - commits_before, 0.0, "the idle node committed write transactions");
}

#[cfg(unix)]
#[tokio::test]
async fn the_database_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    if crate::common::database_server().is_some() {
        // The database is a server's; no file of it lives in the data directory.
        return;
    }
    let node = TestNode::spawn().await;
    // A write, so the write-ahead log and its index exist too.
    node.seller_product_buyer(500, 1).await;
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(node.data_dir()).expect("the data directory") {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("bazaar.db") {
            let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
            seen.push((name, format!("{mode:o}")));
        }
    }
    seen.sort();
    let expected: Vec<(String, String)> =
        ["bazaar.db", "bazaar.db-shm", "bazaar.db-wal"].iter().map(|name| (name.to_string(), "600".into())).collect();
    assert_eq!(seen, expected, "password and refresh-token hashes live in these files");
}
