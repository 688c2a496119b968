//! `bazaar cluster up`: one command starts every node of the config, and one signal stops them.

use crate::support::*;
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
