//! Malformed requests: each gets the documented status and a JSON error, never a 5xx.

use crate::support::*;
use reqwest::Method;
use serde_json::json;

fn raw_json(bytes: impl Into<Vec<u8>>) -> Body {
    Body::Raw { content_type: Some("application/json".to_owned()), bytes: bytes.into() }
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_bad_request() {
    let node = TestNode::spawn().await;
    for bytes in [
        &b"hello"[..],
        b"{\"email\": \"a@b.com\", ",
        b"",
        b"[]",
        b"null",
        b"\"a string\"",
        b"{\"email\": \"a\xff\xfe@b.com\", \"password\": \"12345678\", \"role\": \"BUYER\"}",
    ] {
        let reply = node.send(Method::POST, "/auth/signup", None, raw_json(bytes), &[]).await;
        assert_eq!(
            (reply.status, reply.code()),
            (400, "bad_request"),
            "for {:?}: HTTP {} {}",
            String::from_utf8_lossy(bytes),
            reply.status,
            reply.text
        );
    }
}

#[tokio::test]
async fn a_body_sent_as_plain_text_is_unsupported_media_type() {
    let node = TestNode::spawn().await;
    let reply = node
        .send(
            Method::POST,
            "/auth/login",
            None,
            Body::Raw { content_type: Some("text/plain".to_owned()), bytes: b"email=a@b.com".to_vec() },
            &[],
        )
        .await;
    // Refused unread: a body declared as anything but JSON is never parsed as JSON.
    reply.expect_error(415, "unsupported_media_type");
}

#[tokio::test]
async fn a_field_of_the_wrong_type_is_a_bad_request_naming_it() {
    let node = TestNode::spawn().await;
    for (body, field) in [
        (json!({"email": 42, "password": PASSWORD, "role": "BUYER"}), "email"),
        (json!({"email": unique_email(), "password": ["x"], "role": "BUYER"}), "password"),
        (json!({"email": unique_email(), "password": PASSWORD, "role": null}), "role"),
        (json!({"email": unique_email(), "password": PASSWORD, "role": "BUYER", "name": 7}), "name"),
    ] {
        node.post("/auth/signup", body).await.expect_error_naming(400, "bad_request", field);
    }
}

#[tokio::test]
async fn a_number_too_large_for_its_field_is_refused_naming_it() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 3).await;
    let body =
        format!(r#"{{"productId": "{}", "quantity": 99999999999999999999999}}"#, product["id"].as_str().unwrap());
    let reply = buyer.send(Method::POST, "/orders", raw_json(body), &[("idempotency-key", &unique_key())]).await;
    // Out of any integer's range is arguably a type error, arguably an invalid value; both name it.
    assert!(
        matches!((reply.status, reply.code()), (400, "bad_request") | (422, "invalid")),
        "HTTP {} {}",
        reply.status,
        reply.text
    );
    assert!(reply.message().contains("quantity"), "{}", reply.text);
    assert_eq!(buyer.stock_of(product["id"].as_str().unwrap()).await, 3);
}

#[tokio::test]
async fn a_body_over_the_limit_is_payload_too_large() {
    let node = TestNode::spawn_with(&[("BAZAAR_BODY_LIMIT_BYTES", "4096")]).await;
    let seller = node.signup(Role::Seller).await;
    let big = "d".repeat(5_000);
    seller
        .post("/products", json!({"name": "Big", "price": 1, "stock": 1, "description": big}))
        .await
        .expect_error(413, "payload_too_large");
    node.post("/auth/signup", json!({"email": unique_email(), "password": PASSWORD, "role": "BUYER", "name": big}))
        .await
        .expect_error(413, "payload_too_large");
    // Just under the limit is fine.
    seller
        .post("/products", json!({"name": "Fits", "price": 1, "stock": 1, "description": "d".repeat(3_000)}))
        .await
        .expect(201);
}

#[tokio::test]
async fn the_default_body_limit_is_64_kib() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    seller
        .post("/products", json!({"name": "Big", "price": 1, "stock": 1, "description": "d".repeat(70 * 1024)}))
        .await
        .expect_error(413, "payload_too_large");
}

#[tokio::test]
async fn deeply_nested_json_is_refused_without_harm() {
    let node = TestNode::spawn().await;
    // Deep enough to overflow a naive recursive parser, small enough to pass the 64 KiB limit.
    let array = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let object = format!(r#"{{"email":{}1{}}}"#, r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    for (path, nested) in [("/auth/login", array), ("/auth/signup", object)] {
        node.send(Method::POST, path, None, raw_json(nested), &[]).await.expect_error(400, "bad_request");
    }
    assert_eq!(node.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn odd_ids_in_paths_are_not_found() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let long = "x".repeat(4_000);
    for id in ["%E2%9C%93", "..%2F..%2Fetc%2Fpasswd", "%00", "'%20OR%201=1--", long.as_str()] {
        for path in
            [format!("/products/{id}"), format!("/orders/{id}"), format!("/payments/{id}"), format!("/auth/user/{id}")]
        {
            let reply = buyer.get(&path).await;
            assert_eq!(
                (reply.status, reply.code()),
                (404, "not_found"),
                "{path}: HTTP {} {}",
                reply.status,
                reply.text
            );
        }
    }
}

#[tokio::test]
async fn an_absurd_idempotency_key_is_a_client_error_or_accepted() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 3).await;
    let product_id = product["id"].as_str().unwrap();
    for key in ["".to_owned(), " ".to_owned(), "k".repeat(5_000), "%F0%9F%94%91\"".to_owned()] {
        let reply = buyer
            .send(
                Method::POST,
                "/orders",
                Body::Json(json!({"productId": product_id, "quantity": 1})),
                &[("idempotency-key", key.as_str())],
            )
            .await;
        assert!(
            reply.status == 201 || ((400..500).contains(&reply.status) && !reply.code().is_empty()),
            "key {:?}: HTTP {} {}",
            key.chars().take(20).collect::<String>(),
            reply.status,
            reply.text
        );
    }
}

#[tokio::test]
async fn a_null_where_an_object_is_expected_is_a_bad_request() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 3).await;
    let order = buyer.place_order(product["id"].as_str().unwrap(), 1).await;
    buyer
        .post_with_key("/payments", json!({"orderId": order["id"], "method": null}), &unique_key())
        .await
        .expect_error_naming(400, "bad_request", "method");
}

#[tokio::test]
async fn a_nul_character_in_any_string_is_invalid_and_never_a_server_error() {
    // PostgreSQL text cannot hold U+0000; every backend answers the same, before storage.
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(100, 5).await;
    let order = buyer.place_order(product["id"].as_str().unwrap(), 1).await;
    let nul = "a\u{0}b";
    let refused = [
        buyer.post_with_key("/orders", json!({"productId": nul, "quantity": 1}), &unique_key()).await,
        buyer
            .post_with_key(
                "/payments",
                json!({"orderId": order["id"], "method": {"type": "card", "token": nul}}),
                &unique_key(),
            )
            .await,
        buyer.post("/chat/rooms", json!({"peerId": nul})).await,
        seller.post("/products", json!({"name": nul, "price": 100, "stock": 1})).await,
        node.post("/auth/login", json!({"email": format!("{nul}@example.com"), "password": PASSWORD})).await,
    ];
    for reply in refused {
        reply.expect_error(422, "invalid");
    }
    // The order is untouched and still payable.
    buyer.pay_ok(order["id"].as_str().unwrap(), "tok_ok").await;
}
