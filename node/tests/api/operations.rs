//! Operations: probes, metrics, cluster view, and how unknown routes and methods are answered.

use crate::support::*;
use reqwest::Method;

#[tokio::test]
async fn health_and_readiness_answer_200() {
    let node = TestNode::spawn().await;
    assert_eq!(node.get("/healthz").await.status, 200);
    // Readiness may lag the ready line by a moment (joining the cluster), so poll it.
    eventually(EVENT_DEADLINE, "/readyz to be 200", || async {
        let reply = node.get("/readyz").await;
        match reply.status {
            200 => Ok(()),
            _ => Err(format!("HTTP {} {}", reply.status, reply.text)),
        }
    })
    .await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_bazaar_series() {
    let node = TestNode::spawn().await;
    // Some traffic first, so request counters exist.
    node.signup(Role::Buyer).await;
    let reply = node.get("/metrics").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.contains("bazaar_"), "{}", reply.text);
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "content-type {content_type}");
}

#[tokio::test]
async fn the_cluster_view_lists_the_node_itself() {
    let node = TestNode::spawn().await;
    let cluster = node.get("/cluster").await.expect(200);
    assert_eq!(cluster["self"], node.name.as_str(), "{cluster}");
    let members = cluster["members"].as_array().expect("members");
    let me = members
        .iter()
        .find(|member| member["name"] == node.name.as_str())
        .unwrap_or_else(|| panic!("the node is not among its members: {cluster}"));
    assert!(me["httpAddr"].is_string(), "{me}");
    assert!(me["status"].is_string(), "{me}");
    assert!(me["entities"].is_number(), "{me}");
    assert!(cluster["shards"].is_object(), "{cluster}");
}

#[tokio::test]
async fn an_unknown_route_is_not_found_with_a_json_body() {
    let node = TestNode::spawn().await;
    for path in ["/nope", "/products/x/y/z", "/auth", "/orders/x/refund"] {
        node.get(path).await.expect_error(404, "not_found");
    }
}

#[tokio::test]
async fn a_wrong_method_on_a_known_path_is_method_not_allowed() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Seller).await;
    for (method, path) in [
        (Method::DELETE, "/products".to_owned()),
        (Method::PUT, "/auth/login".to_owned()),
        (Method::GET, "/auth/signup".to_owned()),
        (Method::DELETE, format!("/orders/{}", uuid::Uuid::now_v7())),
        (Method::GET, format!("/orders/{}/cancel", uuid::Uuid::now_v7())),
        (Method::POST, "/healthz".to_owned()),
    ] {
        let reply = user.send(method.clone(), &path, Body::None, &[]).await;
        assert_eq!(
            (reply.status, reply.code()),
            (405, "method_not_allowed"),
            "{method} {path}: HTTP {} {}",
            reply.status,
            reply.text
        );
        assert!(!reply.message().is_empty(), "{}", reply.text);
    }
}

#[tokio::test]
async fn error_bodies_are_json_with_code_and_message() {
    let node = TestNode::spawn().await;
    let reply = node.get("/auth/me").await;
    reply.expect_error(401, "unauthorized");
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("application/json"), "content-type {content_type}");
    let keys: Vec<&String> = reply.json.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["error"], "{}", reply.text);
}
