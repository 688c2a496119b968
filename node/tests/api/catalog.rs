//! The catalog: `/products`.

use crate::support::*;
use futures_util::future::join_all;
use serde_json::{json, Value};
use std::collections::HashSet;

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(|item| item["id"].as_str().expect("an item has an id").to_owned()).collect()
}

#[tokio::test]
async fn a_seller_lists_a_product_and_anyone_reads_it() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let product = seller
        .post(
            "/products",
            json!({"name": "Kimchi fridge", "price": 12000, "currency": "KRW", "stock": 3, "description": "cold"}),
        )
        .await
        .expect(201);
    let id = product["id"].as_str().expect("an id");
    assert_eq!(product["sellerId"], seller.id.as_str());
    assert_eq!(product["name"], "Kimchi fridge");
    assert_eq!(product["description"], "cold");
    assert_eq!(product["price"], 12000);
    assert_eq!(product["currency"], "KRW");
    assert_eq!(product["stock"], 3);
    // Reading needs no account at all.
    let read = node.get(&format!("/products/{id}")).await.expect(200);
    assert_eq!(read, product);
}

#[tokio::test]
async fn optional_product_fields_get_defaults() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let product = seller.post("/products", json!({"name": "Plain", "price": 0, "stock": 0})).await.expect(201);
    assert_eq!(product["description"], "", "{product}");
    let currency = product["currency"].as_str().expect("a currency");
    assert!(currency.len() == 3 && currency.chars().all(|c| c.is_ascii_uppercase()), "{product}");
}

#[tokio::test]
async fn a_buyer_may_not_list_products() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.post("/products", json!({"name": "Nope", "price": 1, "stock": 1})).await.expect_error(403, "forbidden");
}

#[tokio::test]
async fn listing_a_product_without_a_token_is_unauthorized() {
    let node = TestNode::spawn().await;
    node.post("/products", json!({"name": "Nope", "price": 1, "stock": 1})).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn a_negative_price_or_stock_is_invalid_and_named() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    seller
        .post("/products", json!({"name": "Bad", "price": -1, "stock": 1}))
        .await
        .expect_error_naming(422, "invalid", "price");
    seller
        .post("/products", json!({"name": "Bad", "price": 1, "stock": -1}))
        .await
        .expect_error_naming(422, "invalid", "stock");
}

#[tokio::test]
async fn a_price_beyond_the_maximum_is_invalid() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    // Well-typed (fits an i64) but large enough that price × quantity could overflow.
    seller
        .post("/products", json!({"name": "Bad", "price": 4_611_686_018_427_387_904_i64, "stock": 1}))
        .await
        .expect_error_naming(422, "invalid", "price");
}

#[tokio::test]
async fn a_malformed_currency_or_an_empty_name_is_invalid() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    seller
        .post("/products", json!({"name": "Bad", "price": 1, "stock": 1, "currency": "won"}))
        .await
        .expect_error_naming(422, "invalid", "currency");
    seller
        .post("/products", json!({"name": "   ", "price": 1, "stock": 1}))
        .await
        .expect_error_naming(422, "invalid", "name");
}

#[tokio::test]
async fn a_missing_or_mistyped_product_field_is_a_bad_request_naming_it() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    seller.post("/products", json!({"price": 1, "stock": 1})).await.expect_error_naming(400, "bad_request", "name");
    seller.post("/products", json!({"name": "Bad", "price": "1000", "stock": 1})).await.expect_error_naming(
        400,
        "bad_request",
        "price",
    );
    seller.post("/products", json!({"name": "Bad", "price": 1.5, "stock": 1})).await.expect_error_naming(
        400,
        "bad_request",
        "price",
    );
}

#[tokio::test]
async fn an_unknown_product_is_not_found() {
    let node = TestNode::spawn().await;
    node.get(&format!("/products/{}", uuid::Uuid::now_v7())).await.expect_error(404, "not_found");
    node.get("/products/not-even-an-id").await.expect_error(404, "not_found");
}

#[tokio::test]
async fn its_seller_patches_a_product() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let product = seller.list_product(1000, 5).await;
    let path = format!("/products/{}", product["id"].as_str().unwrap());
    let patched = seller
        .patch(&path, json!({"price": 1500, "stock": 7, "name": "Renamed", "description": "new"}))
        .await
        .expect(200);
    assert_eq!(patched["price"], 1500);
    assert_eq!(patched["stock"], 7);
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(patched["description"], "new");
    assert_eq!(patched["id"], product["id"]);
    assert_eq!(node.get(&path).await.expect(200), patched);
    // Fields left out stay as they were.
    let price_only = seller.patch(&path, json!({"price": 99})).await.expect(200);
    assert_eq!(price_only["price"], 99);
    assert_eq!(price_only["stock"], 7);
    assert_eq!(price_only["name"], "Renamed");
}

#[tokio::test]
async fn another_seller_may_not_patch_a_product() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let rival = node.signup(Role::Seller).await;
    let buyer = node.signup(Role::Buyer).await;
    let product = seller.list_product(1000, 5).await;
    let path = format!("/products/{}", product["id"].as_str().unwrap());
    rival.patch(&path, json!({"price": 1})).await.expect_error(403, "forbidden");
    buyer.patch(&path, json!({"price": 1})).await.expect_error(403, "forbidden");
    node.send(reqwest::Method::PATCH, &path, None, Body::Json(json!({"price": 1})), &[])
        .await
        .expect_error(401, "unauthorized");
    assert_eq!(node.get(&path).await.expect(200)["price"], 1000);
}

#[tokio::test]
async fn patching_an_unknown_product_is_not_found() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    seller
        .patch(&format!("/products/{}", uuid::Uuid::now_v7()), json!({"price": 1}))
        .await
        .expect_error(404, "not_found");
}

#[tokio::test]
async fn patching_a_negative_price_is_invalid() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let product = seller.list_product(1000, 5).await;
    let path = format!("/products/{}", product["id"].as_str().unwrap());
    seller.patch(&path, json!({"price": -5})).await.expect_error_naming(422, "invalid", "price");
    seller.patch(&path, json!({"stock": -5})).await.expect_error_naming(422, "invalid", "stock");
    seller.patch(&path, json!({"stock": "many"})).await.expect_error_naming(400, "bad_request", "stock");
    assert_eq!(node.get(&path).await.expect(200)["price"], 1000);
}

#[tokio::test]
async fn product_listings_page_with_a_cursor_and_filter_by_seller() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let other = node.signup(Role::Seller).await;
    let mine: Vec<Value> = join_all((0..25).map(|_| seller.list_product(100, 1))).await;
    other.list_product(100, 1).await;

    let first = node.get(&format!("/products?sellerId={}", seller.id)).await.expect(200);
    let first_items = first["items"].as_array().expect("items").clone();
    assert_eq!(first_items.len(), 20, "the default page holds 20");
    let cursor = first["nextCursor"].as_str().expect("a cursor after a full page");
    let second = node.get(&format!("/products?sellerId={}&cursor={}", seller.id, enc(cursor))).await.expect(200);
    let second_items = second["items"].as_array().expect("items").clone();
    assert_eq!(second_items.len(), 5);
    assert!(second["nextCursor"].is_null(), "the last page: {second}");

    let seen: Vec<String> = ids(&first_items).into_iter().chain(ids(&second_items)).collect();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 25, "no product twice across pages");
    let expected: HashSet<String> = ids(&mine).into_iter().collect();
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
    for item in first_items.iter().chain(&second_items) {
        assert_eq!(item["sellerId"], seller.id.as_str());
    }
}

#[tokio::test]
async fn a_small_limit_pages_through_everything() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    join_all((0..7).map(|_| seller.list_product(100, 1))).await;
    let page = node.get(&format!("/products?sellerId={}&limit=3", seller.id)).await.expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    let all = seller.list_all(&format!("/products?sellerId={}&limit=3", seller.id)).await;
    assert_eq!(ids(&all).into_iter().collect::<HashSet<_>>().len(), 7);
    assert_eq!(all.len(), 7);
}

#[tokio::test]
async fn a_limit_above_one_hundred_is_clamped() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    for _ in 0..6 {
        join_all((0..18).map(|_| seller.list_product(100, 1))).await;
    }
    let page = node.get(&format!("/products?sellerId={}&limit=1000", seller.id)).await.expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 100);
    assert!(page["nextCursor"].is_string(), "8 more remain");
}

#[tokio::test]
async fn a_limit_that_is_not_a_number_is_a_bad_request() {
    let node = TestNode::spawn().await;
    node.get("/products?limit=lots").await.expect_error_naming(400, "bad_request", "limit");
}

#[tokio::test]
async fn a_garbage_cursor_is_refused_without_a_server_error() {
    let node = TestNode::spawn().await;
    let reply = node.get("/products?cursor=%FF%00garbage").await;
    assert!((400..500).contains(&reply.status) || reply.status == 200, "HTTP {} {}", reply.status, reply.text);
    if reply.status != 200 {
        assert!(!reply.code().is_empty(), "{}", reply.text);
    }
}

#[tokio::test]
async fn unicode_names_survive_a_round_trip() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let name = "김치 냉장고 🥬 — «frigo» 𝔘𝔫𝔦𝔠𝔬𝔡𝔢";
    let product = seller
        .post("/products", json!({"name": name, "price": 1, "stock": 1, "description": "줄\n바꿈\t\"quoted\""}))
        .await
        .expect(201);
    let read = node.get(&format!("/products/{}", product["id"].as_str().unwrap())).await.expect(200);
    assert_eq!(read["name"], name);
    assert_eq!(read["description"], "줄\n바꿈\t\"quoted\"");
}

#[tokio::test]
async fn a_full_last_page_has_no_next_cursor() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    join_all((0..3).map(|_| seller.list_product(100, 1))).await;
    // Exactly `limit` items and nothing after them: that page is the last one.
    let page = node.get(&format!("/products?sellerId={}&limit=3", seller.id)).await.expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert!(page["nextCursor"].is_null(), "the last page: {page}");
}
