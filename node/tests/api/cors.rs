//! CORS: pages of the origins `cors_allowed_origins` names may call the API; others get 403;
//! same-origin and non-browser requests never need an entry; none is allowed by default.

use crate::support::*;
use reqwest::Method;

const SHOP: &str = "https://shop.example";

#[tokio::test]
async fn a_listed_origin_gets_its_preflight_answered_and_the_cors_headers() {
    let node =
        TestNode::spawn_with(&[("BAZAAR_CORS_ALLOWED_ORIGINS", "https://shop.example, http://localhost:3000")]).await;
    let preflight = node
        .send(
            Method::OPTIONS,
            "/orders",
            None,
            Body::None,
            &[
                ("Origin", SHOP),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization, content-type, idempotency-key"),
            ],
        )
        .await;
    assert_eq!(preflight.status, 200, "{}", preflight.text);
    assert_eq!(preflight.header("access-control-allow-origin").as_deref(), Some(SHOP));
    let methods = preflight.header("access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "{methods}");

    let listed = node.send(Method::GET, "/products", None, Body::None, &[("Origin", SHOP)]).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    assert_eq!(listed.header("access-control-allow-origin").as_deref(), Some(SHOP));
    let exposed = listed.header("access-control-expose-headers").unwrap_or_default().to_lowercase();
    assert!(exposed.contains("x-request-id") && exposed.contains("retry-after"), "{exposed}");
}

#[tokio::test]
async fn an_origin_not_listed_is_refused_with_a_json_403() {
    let node = TestNode::spawn_with(&[("BAZAAR_CORS_ALLOWED_ORIGINS", SHOP)]).await;
    let refused = node.send(Method::GET, "/products", None, Body::None, &[("Origin", "https://evil.example")]).await;
    assert_eq!(refused.status, 403, "{}", refused.text);
    assert_eq!(refused.code(), "forbidden", "{}", refused.text);
    assert!(refused.header("access-control-allow-origin").is_none());
    assert!(refused.header("x-request-id").is_some(), "the refusal is logged with its id");
    let preflight = node
        .send(
            Method::OPTIONS,
            "/products",
            None,
            Body::None,
            &[("Origin", "https://evil.example"), ("Access-Control-Request-Method", "GET")],
        )
        .await;
    assert_eq!(preflight.status, 403, "{}", preflight.text);
}

#[tokio::test]
async fn same_origin_and_non_browser_requests_need_no_entry() {
    let node = TestNode::spawn_with(&[("BAZAAR_CORS_ALLOWED_ORIGINS", SHOP)]).await;
    let own = format!("http://{}", node.api.addr());
    let same = node.send(Method::GET, "/products", None, Body::None, &[("Origin", own.as_str())]).await;
    assert_eq!(same.status, 200, "{}", same.text);
    assert_eq!(node.get("/products").await.status, 200);
}

#[tokio::test]
async fn no_origin_is_allowed_by_default() {
    let node = TestNode::spawn().await;
    let reply = node.send(Method::GET, "/products", None, Body::None, &[("Origin", SHOP)]).await;
    // Served (a non-browser client may send any header), but without the header a browser needs.
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.header("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn a_malformed_origin_setting_stops_the_node() {
    for bad in ["*", "shop.example", "https://shop.example/app"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_bazaar"))
            .arg("config")
            .env("BAZAAR_CORS_ALLOWED_ORIGINS", bad)
            .output()
            .expect("bazaar config runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{bad} accepted");
        assert!(stderr.contains("cors_allowed_origins"), "{stderr}");
    }
}
