//! A peer that stops answering without closing its connections (here: SIGSTOP) is noticed by the
//! heartbeat alone: ractor_cluster keeps its session and its process-group entries.

use crate::support::{eventually, member_status, Cluster, Role, MEMBERSHIP_DEADLINE};
use std::time::{Duration, Instant};

fn signal(pid: u32, name: &str) {
    let sent = std::process::Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status();
    assert!(sent.expect("kill runs").success(), "SIG{name} to {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_dropped_by_the_heartbeat_and_rejoins_when_it_answers_again() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let (n1, n3) = (cluster.api(0), cluster.api(2));
    let seller = n1.signup_and_login(Role::Seller).await;
    let mut products = Vec::new();
    for _ in 0..12 {
        products.push(n1.list_product(&seller, 100, 10).await["id"].as_str().unwrap().to_owned());
    }

    let pid = cluster.pid(1);
    signal(pid, "STOP");
    let silent_since = Instant::now();
    for observer in [&n1, &n3] {
        eventually(MEMBERSHIP_DEADLINE, &format!("{} to see n2 down", observer.name), || async {
            let view = observer.cluster_view().await?;
            match member_status(&view, "n2").as_deref() {
                Some("down") => Ok(()),
                other => Err(format!("n2 is {other:?}: {view}")),
            }
        })
        .await;
    }
    // The heartbeat timeout is 600 ms in these tests; allow for a loaded machine.
    assert!(silent_since.elapsed() < Duration::from_secs(5), "noticed after {:?}", silent_since.elapsed());
    // Its entities are served by the others now, without waiting on the silent node.
    let started = Instant::now();
    for product in &products {
        let reply = n1.get(&format!("/products/{product}"), None).await;
        assert_eq!(reply.status, 200, "{product} through n1: {}", reply.text);
    }
    assert!(started.elapsed() < Duration::from_secs(2), "reads took {:?}", started.elapsed());

    signal(pid, "CONT");
    eventually(MEMBERSHIP_DEADLINE, "n2 to be up again on n1", || async {
        let view = n1.cluster_view().await?;
        match member_status(&view, "n2").as_deref() {
            Some("up") => Ok(()),
            other => Err(format!("n2 is {other:?}")),
        }
    })
    .await;
    let n2 = cluster.api(1);
    for product in &products {
        assert_eq!(n2.get(&format!("/products/{product}"), None).await.status, 200);
    }
}
