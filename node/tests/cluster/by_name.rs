//! Peers named by DNS names, as on Kubernetes and compose, where a node keeps its name while its
//! IP address changes: every `cluster_addr` is a host name, resolved at each dial.

use crate::support::{member_status, Cluster, Role, COOKIE, MEMBERSHIP_DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_that_know_each_other_only_by_host_name_form_one_cluster_and_route_requests() {
    // n4 is listed under a name that never resolves (RFC 6761 reserves .invalid) and never runs:
    // its failing lookups must not hold up the dials and heartbeats among the other three.
    let host_of = |i: usize| if i == 3 { "bazaar-3.invalid".to_owned() } else { "localhost".to_owned() };
    let mut cluster = Cluster::configure_hosts(4, &[], host_of);
    let file = std::fs::read_to_string(cluster.config_path()).unwrap();
    assert_eq!(file.matches("cluster_addr = \"localhost:").count(), 3, "{file}");
    assert!(!file.contains("cluster_addr = \"127."), "{file}");

    cluster.start_nodes(&[0, 1, 2], COOKIE).await;
    cluster.wait_until_members_up(&[0, 1, 2], &[0, 1, 2], MEMBERSHIP_DEADLINE).await;
    let (n1, n2, n3) = (cluster.api(0), cluster.api(1), cluster.api(2));
    for api in [&n1, &n2, &n3] {
        let view = api.cluster_view().await.unwrap();
        let up = view["members"].as_array().unwrap().iter().filter(|m| m["status"] == "up").count();
        assert_eq!(up, 3, "{}: {view}", api.name);
        assert_eq!(member_status(&view, "n4").as_deref(), Some("down"), "{}: {view}", api.name);
    }

    // Products created through n1 are placed by hashing over the three members, so some live on
    // n2 and n3: n1 routed those requests to them. Each reads the same through every node.
    let seller = n1.signup_and_login(Role::Seller).await;
    let mut products = Vec::new();
    for i in 0..9 {
        products.push(n1.list_product(&seller, 1_000 + i, 5).await);
    }
    let view = n1.cluster_view().await.unwrap();
    let holders = view["shards"]["product"].as_object().map(|nodes| {
        nodes.iter().filter(|(_, count)| count.as_u64().unwrap_or(0) > 0).map(|(node, _)| node.clone()).collect()
    });
    let holders: Vec<String> = holders.unwrap_or_default();
    assert!(holders.len() >= 2, "9 products created through n1 all live on {holders:?}: {view}");
    assert!(holders.iter().any(|node| node != "n1"), "nothing was routed from n1: {view}");

    // Orders for one product through all three nodes: two of them route to its owner, which
    // decides all three against one stock.
    let buyer = n2.signup_and_login(Role::Buyer).await;
    let product_id = products[0]["id"].as_str().unwrap();
    for api in [&n1, &n2, &n3] {
        api.place_order(&buyer, product_id, 1).await;
    }
    for api in [&n1, &n2, &n3] {
        let read = api.get(&format!("/products/{product_id}"), None).await.expect(200);
        assert_eq!(read["stock"], 2, "via {}: {read}", api.name);
    }
}
