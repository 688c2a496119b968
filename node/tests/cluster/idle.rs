//! An idle cluster costs nothing: every node of three stays near zero CPU and commits nothing.

use crate::common::{cpu_time, series_total};
use crate::support::{eventually, Cluster, EVENT_DEADLINE};
use std::time::{Duration, Instant};

/// How long the idle cluster is watched.
const WINDOW: Duration = Duration::from_secs(3);
/// The most of one core each idle node may use: 1 % is the goal for a release build; a debug
/// build runs the same timers (heartbeats to two peers, the relays' and sagas' looks) several
/// times slower, next to other tests, hence three times that.
const MAX_SHARE_OF_A_CORE: f64 = 0.03;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_three_node_cluster_uses_almost_no_cpu_and_writes_nothing() {
    // The default heartbeat, not the harness's faster one: the cost of an idle cluster as deployed.
    let cluster = Cluster::start(
        3,
        3,
        &[("BAZAAR_CLUSTER_HEARTBEAT_MS", "250"), ("BAZAAR_CLUSTER_HEARTBEAT_TIMEOUT_MS", "1500")],
    )
    .await;
    let apis: Vec<_> = (0..3).map(|i| cluster.api(i)).collect();
    // One write, so every node's relay and saga have had something to do before going idle.
    apis[0].signup_and_login(crate::support::Role::Buyer).await;
    let commits = || async {
        let mut total = 0.0;
        for api in &apis {
            total += series_total(&api.get("/metrics", None).await.text, "bazaar_store_batch_commands_count");
        }
        total
    };
    eventually(EVENT_DEADLINE, "the nodes to stop committing", || async {
        let before = commits().await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let after = commits().await;
        if after == before {
            Ok(())
        } else {
            Err(format!("{} commits in 700 ms", after - before))
        }
    })
    .await;

    let pids: Vec<u32> = (0..3).map(|i| cluster.pid(i)).collect();
    let commits_before = commits().await;
    let cpu_before: Vec<Duration> = pids.iter().map(|&pid| cpu_time(pid)).collect();
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let cpu_after: Vec<Duration> = pids.iter().map(|&pid| cpu_time(pid)).collect();
    let elapsed = started.elapsed();
    let commits_after = commits().await;

    for (index, (before, after)) in cpu_before.iter().zip(&cpu_after).enumerate() {
        let share = (*after - *before).as_secs_f64() / elapsed.as_secs_f64();
        eprintln!("idle node {}: {:.2} % of a core over {elapsed:?}", cluster.name(index), share * 100.0);
        assert!(
            share < MAX_SHARE_OF_A_CORE,
            "idle node {} used {:.1} % of a core over {elapsed:?}",
            cluster.name(index),
            share * 100.0
        );
    }
    assert_eq!(commits_after - commits_before, 0.0, "the idle cluster committed write transactions");
}
