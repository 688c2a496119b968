//! The fault suite's short form (issue 13, benches/README.md "Fault runs"): `bazaar-bench faults`
//! drives a 3-node cluster of the real binary for a minute while every node fault of the
//! default schedule is applied in turn (a node cut off, a majority/minority split, a bridge, a
//! pause past the heartbeat timeout, a kill and restart, a cut-off node while another is killed),
//! and the checker must find no acknowledged write lost or doubled, no double charge, no illegal
//! status path, no seq gap, no changed retry and no order left pending.
//!
//! It runs on whatever the pass of the test command provides: the shared SQLite file and the
//! embedded log, or PostgreSQL (or MariaDB), Kafka and Redis, each node of the run in a database
//! and under topic names of its own. Backend restarts are in the long form, which starts servers of
//! its own: the servers of a pass are shared by every test running beside this one.

use std::path::Path;
use std::time::Duration;

/// The run's own bound: its minute, the setup, the heal and the settling, on a loaded machine.
const RUN_DEADLINE: Duration = Duration::from_secs(300);

/// The backend environment of this pass for the run's nodes (the same variables the node tests read).
async fn backend_env(scope: &str) -> Vec<(String, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let mut env = Vec::new();
    if let Some(admin) = var("TEST_MYSQL_URL").or_else(|| var("TEST_POSTGRES_URL")) {
        let name = format!("f_{scope}");
        let url = bazaar_actors::store::backend::create_database(&admin, &name)
            .await
            .unwrap_or_else(|e| panic!("creating database {name} on {admin}: {e}"));
        env.push(("BAZAAR_DATABASE_URL".to_owned(), url));
    }
    if let Some(brokers) = var("TEST_KAFKA_BROKERS") {
        env.push(("BAZAAR_KAFKA_BROKERS".to_owned(), brokers));
        env.push(("BAZAAR_KAFKA_TOPIC_PREFIX".to_owned(), format!("faults-{scope}.")));
        env.push(("BAZAAR_KAFKA_PARTITIONS".to_owned(), "2".to_owned()));
    }
    if let Some(redis) = var("TEST_REDIS_URL") {
        env.push(("BAZAAR_REDIS_URL".to_owned(), redis));
    }
    env
}

#[tokio::test]
async fn a_short_fault_run_under_every_node_fault_loses_and_doubles_nothing() {
    let bench = Path::new(env!("CARGO_BIN_EXE_bazaar-bench"));
    let bazaar = bench.with_file_name("bazaar");
    assert!(
        bazaar.is_file(),
        "no bazaar binary at {} (the workspace's test run builds it; or `cargo build -p bazaar-node`)",
        bazaar.display()
    );
    let dir = tempfile::Builder::new().prefix("bazaar-faults-").tempdir().expect("a temporary directory");
    let scope = uuid::Uuid::new_v4().simple().to_string();
    let mut command = tokio::process::Command::new(bench);
    command
        .arg("faults")
        .arg("--bazaar")
        .arg(&bazaar)
        .arg("--results")
        .arg(dir.path())
        .args(["--seconds", "60", "--clients", "4", "--hold-ms", "4000", "--quiet-ms", "3000"])
        .envs(backend_env(&scope).await)
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("the fault run did not end within {RUN_DEADLINE:?}"))
        .expect("bazaar-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(output.status.success(), "the fault run failed ({}):\n{stdout}\n{stderr}", output.status);
    assert!(stdout.contains("\nno violations\n"), "the checker's verdict is missing:\n{stdout}\n{stderr}");
    // Every kind of the default schedule was applied at least once.
    for fault in ["isolate", "pause", "kill", "split", "bridge", "isolate+kill"] {
        assert!(stdout.contains(&format!("| {fault} | ")), "{fault} was never applied:\n{stdout}\n{stderr}");
    }
    let history = std::fs::read_to_string(dir.path().join("faults").join("history.jsonl")).expect("the history");
    assert!(history.lines().count() > 100, "too few operations for a run: {}", history.lines().count());
}
