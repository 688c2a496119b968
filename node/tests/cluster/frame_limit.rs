//! The frame limit between nodes: a routed request larger than `cluster_max_frame_bytes` is
//! refused at the sending node with 413, and the session between the nodes survives it.

use crate::support::{member_status, Api, Cluster, Role};
use reqwest::Method;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_frame_limit_is_refused_at_the_sender_and_the_session_survives() {
    let cluster = Cluster::start(3, 3, &[("BAZAAR_CLUSTER_MAX_FRAME_BYTES", "4096")]).await;
    let nodes: Vec<Api> = (0..3).map(|i| cluster.api(i)).collect();
    let seller = nodes[0].signup_and_login(Role::Seller).await;
    let product = nodes[0].list_product(&seller, 2_500, 10).await;
    let path = format!("/products/{}", product["id"].as_str().unwrap());

    // About 6 KB of UTF-8: over the 4096-byte frame limit, well under the 64 KiB body limit.
    let description = "é".repeat(3000);
    let mut answers = Vec::new();
    for node in &nodes {
        let reply = node.patch(&path, &seller.token, &json!({"description": description})).await;
        answers.push((node.name.clone(), reply));
    }
    let accepted: Vec<&String> = answers.iter().filter(|(_, r)| r.status == 200).map(|(name, _)| name).collect();
    let summary: Vec<String> =
        answers.iter().map(|(name, r)| format!("{name}: HTTP {} {}", r.status, r.code())).collect();
    assert_eq!(accepted.len(), 1, "exactly the owner accepts the large PATCH, the others refuse it: {summary:?}");
    for (name, reply) in &answers {
        if reply.status == 200 {
            assert_eq!(reply.json["description"], description.as_str(), "the owner {name} stores the description");
        } else {
            reply.expect_code(413, "payload_too_large");
        }
    }

    // The sessions between the nodes survived: everyone is still up, and routed requests work.
    for node in &nodes {
        let view = node.cluster_view().await.unwrap();
        for name in ["n1", "n2", "n3"] {
            assert_eq!(
                member_status(&view, name).as_deref(),
                Some("up"),
                "{name} via {} after the refused frames: {view}",
                node.name
            );
        }
    }
    // Small routed requests still cross the sessions both ways.
    let small = nodes[2].list_product(&seller, 100, 1).await;
    let small_path = format!("/products/{}", small["id"].as_str().unwrap());
    for node in &nodes {
        let read = node.get(&small_path, None).await.expect(200);
        assert_eq!(read, small, "GET {small_path} via {} after the refusals", node.name);
    }
    for (i, node) in nodes.iter().enumerate() {
        let price = 3_000 + i as i64;
        let patched = node.patch(&small_path, &seller.token, &json!({"price": price})).await.expect(200);
        assert_eq!(patched["price"], price, "a small routed PATCH via {} applies", node.name);
    }

    // The product with the large description reads the same from every node: the request is
    // small, and the owner accepted the description.
    let mut reads = Vec::new();
    for node in &nodes {
        let reply = node.send(Method::GET, &path, None, None, &[]).await;
        reads.push(format!("{}: HTTP {} {}", node.name, reply.status, reply.code()));
        if reply.status == 200 {
            assert_eq!(reply.json["description"], description.as_str(), "GET {path} via {}", node.name);
        }
    }
    assert!(reads.iter().all(|r| r.contains("HTTP 200")), "GET {path} (a 6 KB product) from every node: {reads:?}");
}
