//! A session revoked through one node (logout) is revoked on every node: its access token stops
//! working on the node that revoked it at once, and on the others within the sync interval.

use crate::support::{eventually, Cluster, Role, PASSWORD};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_logged_out_through_one_node_is_refused_by_every_node() {
    let cluster = Cluster::start(3, 3, &[("BAZAAR_REVOCATION_SYNC_MS", "100")]).await;
    let nodes: Vec<_> = (0..3).map(|i| cluster.api(i)).collect();
    let user = nodes[0].signup(Role::Buyer).await;
    let pair =
        nodes[0].post("/auth/login", None, &json!({"email": user.email, "password": PASSWORD})).await.expect(200);
    let access = pair["accessToken"].as_str().expect("an access token").to_owned();
    let refresh = pair["refreshToken"].as_str().expect("a refresh token").to_owned();
    for node in &nodes {
        node.get("/auth/me", Some(&access)).await.expect(200);
    }
    nodes[1].post("/auth/logout", Some(&access), &json!({"refreshToken": refresh})).await.expect(204);
    nodes[1].get("/auth/me", Some(&access)).await.expect_code(401, "unauthorized");
    eventually(Duration::from_secs(5), "every node refuses the logged-out session's token", || {
        let (nodes, access) = (&nodes, &access);
        async move {
            for node in nodes {
                let status = node.get("/auth/me", Some(access)).await.status;
                if status != 401 {
                    return Err(format!("{} answered {status}", node.name));
                }
            }
            Ok(())
        }
    })
    .await;
}
