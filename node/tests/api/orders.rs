//! Orders: placing with idempotency keys, reading, listing and cancelling.

use crate::support::*;
use serde_json::{json, Value};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

fn ids(items: &[Value]) -> Vec<String> {
    items.iter().map(id_of).collect()
}

#[tokio::test]
async fn placing_an_order_reserves_stock_and_returns_the_order() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(12_000, 3).await;
    let product_id = id_of(&product);
    let order = buyer.post_order(&product_id, 2, &unique_key()).await.expect(201);
    assert_eq!(order["status"], "ORDERED");
    assert_eq!(order["buyerId"], buyer.id.as_str());
    assert_eq!(order["sellerId"], seller.id.as_str());
    assert_eq!(order["productId"], product_id.as_str());
    assert_eq!(order["quantity"], 2);
    assert_eq!(order["amount"], 24_000);
    assert_eq!(order["currency"], "KRW");
    for field in ["createdAt", "updatedAt"] {
        let at = order[field].as_str().unwrap_or_else(|| panic!("{field}: {order}"));
        chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{field} is RFC 3339: {at}: {e}"));
    }
    assert!(order.get("paymentId").is_none_or(Value::is_null), "{order}");
    buyer.wait_for_stock(&product_id, 1).await;
}

#[tokio::test]
async fn an_order_without_an_idempotency_key_is_a_bad_request() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 3).await;
    let product_id = id_of(&product);
    buyer.post("/orders", json!({"productId": product_id, "quantity": 1})).await.expect_error(400, "bad_request");
    assert_eq!(buyer.stock_of(&product_id).await, 3);
}

#[tokio::test]
async fn a_seller_may_not_place_orders() {
    let node = TestNode::spawn().await;
    let (seller, product, _) = node.seller_product_buyer(100, 3).await;
    let other_seller = node.signup(Role::Seller).await;
    for who in [&seller, &other_seller] {
        who.post_order(&id_of(&product), 1, &unique_key()).await.expect_error(403, "forbidden");
    }
}

#[tokio::test]
async fn placing_an_order_without_a_token_is_unauthorized() {
    let node = TestNode::spawn().await;
    let (_, product, _) = node.seller_product_buyer(100, 3).await;
    node.send(
        reqwest::Method::POST,
        "/orders",
        None,
        Body::Json(json!({"productId": id_of(&product), "quantity": 1})),
        &[("idempotency-key", "k")],
    )
    .await
    .expect_error(401, "unauthorized");
}

#[tokio::test]
async fn ordering_an_unknown_product_is_not_found() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.post_order(&uuid::Uuid::now_v7().to_string(), 1, &unique_key()).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn a_quantity_of_zero_or_less_is_invalid_and_named() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 3).await;
    for quantity in [0, -1] {
        buyer
            .post_order(&id_of(&product), quantity, &unique_key())
            .await
            .expect_error_naming(422, "invalid", "quantity");
    }
    assert_eq!(buyer.stock_of(&id_of(&product)).await, 3);
}

#[tokio::test]
async fn a_mistyped_or_missing_order_field_is_a_bad_request_naming_it() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 3).await;
    let product_id = id_of(&product);
    for (body, field) in [
        (json!({"productId": product_id, "quantity": "2"}), "quantity"),
        (json!({"productId": product_id, "quantity": 1.5}), "quantity"),
        (json!({"productId": product_id}), "quantity"),
        (json!({"quantity": 1}), "productId"),
        (json!({"productId": 7, "quantity": 1}), "productId"),
    ] {
        buyer.post_with_key("/orders", body, &unique_key()).await.expect_error_naming(400, "bad_request", field);
    }
}

#[tokio::test]
async fn ordering_more_than_the_stock_is_out_of_stock() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 3).await;
    let product_id = id_of(&product);
    buyer.post_order(&product_id, 4, &unique_key()).await.expect_error(409, "out_of_stock");
    assert_eq!(buyer.stock_of(&product_id).await, 3);
    // Exactly the stock is fine, and then nothing is left.
    buyer.place_order(&product_id, 3).await;
    buyer.post_order(&product_id, 1, &unique_key()).await.expect_error(409, "out_of_stock");
    buyer.wait_for_stock(&product_id, 0).await;
}

#[tokio::test]
async fn retrying_an_order_with_the_same_key_returns_the_same_order() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let product_id = id_of(&product);
    let key = unique_key();
    let first = buyer.post_order(&product_id, 2, &key).await.expect(201);
    for _ in 0..3 {
        let again = buyer.post_order(&product_id, 2, &key).await;
        assert!(again.status == 200 || again.status == 201, "a retry: HTTP {} {}", again.status, again.text);
        assert_eq!(again.json["id"], first["id"]);
    }
    // Reserved once, not four times.
    buyer.wait_for_stock(&product_id, 3).await;
    let mine = buyer.list_all("/orders").await;
    assert_eq!(mine.len(), 1, "{mine:?}");
}

#[tokio::test]
async fn reusing_a_key_for_another_body_is_an_idempotency_mismatch() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let product_id = id_of(&product);
    let key = unique_key();
    buyer.post_order(&product_id, 1, &key).await.expect(201);
    buyer.post_order(&product_id, 2, &key).await.expect_error(409, "idempotency_mismatch");
    buyer.wait_for_stock(&product_id, 4).await;
}

#[tokio::test]
async fn idempotency_keys_are_scoped_to_the_caller() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let other = node.signup(Role::Buyer).await;
    let product_id = id_of(&product);
    let key = unique_key();
    let mine = buyer.post_order(&product_id, 1, &key).await.expect(201);
    let theirs = other.post_order(&product_id, 1, &key).await.expect(201);
    assert_ne!(mine["id"], theirs["id"]);
    assert_eq!(theirs["buyerId"], other.id.as_str());
    buyer.wait_for_stock(&product_id, 3).await;
}

#[tokio::test]
async fn an_order_is_visible_to_its_buyer_and_seller_only() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(100, 5).await;
    let order = buyer.place_order(&id_of(&product), 1).await;
    let path = format!("/orders/{}", id_of(&order));
    assert_eq!(buyer.get(&path).await.expect(200)["id"], order["id"]);
    assert_eq!(seller.get(&path).await.expect(200)["id"], order["id"]);
    // Strangers learn nothing, not even that the order exists.
    let stranger_buyer = node.signup(Role::Buyer).await;
    let stranger_seller = node.signup(Role::Seller).await;
    stranger_buyer.get(&path).await.expect_error(404, "not_found");
    stranger_seller.get(&path).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn an_unknown_order_is_not_found() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.get(&format!("/orders/{}", uuid::Uuid::now_v7())).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn reading_an_order_without_a_token_is_unauthorized() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let order = buyer.place_order(&id_of(&product), 1).await;
    node.get(&format!("/orders/{}", id_of(&order))).await.expect_error(401, "unauthorized");
    node.get("/orders").await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn listing_orders_shows_own_orders_newest_first() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 10).await;
    let other = node.signup(Role::Buyer).await;
    let product_id = id_of(&product);
    let mut placed = Vec::new();
    for _ in 0..3 {
        placed.push(id_of(&buyer.place_order(&product_id, 1).await));
    }
    other.place_order(&product_id, 1).await;
    let page = buyer.get("/orders").await.expect(200);
    let items = page["items"].as_array().expect("items").clone();
    placed.reverse();
    assert_eq!(ids(&items), placed, "own orders only, newest first");
    assert!(page["nextCursor"].is_null(), "{page}");
    for item in &items {
        assert_eq!(item["buyerId"], buyer.id.as_str());
    }
}

#[tokio::test]
async fn sellers_list_their_sales_with_role_seller() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(100, 10).await;
    let (other_seller, other_product, _) = node.seller_product_buyer(100, 10).await;
    let sold = buyer.place_order(&id_of(&product), 1).await;
    buyer.place_order(&id_of(&other_product), 1).await;
    let sales = seller.list_all("/orders?role=seller").await;
    assert_eq!(ids(&sales), vec![id_of(&sold)]);
    assert_eq!(sales[0]["sellerId"], seller.id.as_str());
    let other_sales = other_seller.list_all("/orders?role=seller").await;
    assert_eq!(other_sales.len(), 1);
    assert_ne!(other_sales[0]["id"], sold["id"]);
}

#[tokio::test]
async fn listing_orders_filters_by_status() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 10).await;
    let product_id = id_of(&product);
    let paid = buyer.place_order(&product_id, 1).await;
    let waiting = buyer.place_order(&product_id, 1).await;
    buyer.pay_ok(&id_of(&paid), "tok_visa").await;
    buyer.wait_for_order_status(&id_of(&paid), "PAID", EVENT_DEADLINE).await;
    let paid_list = buyer.list_all("/orders?status=PAID").await;
    assert_eq!(ids(&paid_list), vec![id_of(&paid)]);
    let ordered_list = buyer.list_all("/orders?status=ORDERED").await;
    assert_eq!(ids(&ordered_list), vec![id_of(&waiting)]);
}

#[tokio::test]
async fn listing_orders_pages_with_a_cursor() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 10).await;
    let mut placed = Vec::new();
    for _ in 0..5 {
        placed.push(id_of(&buyer.place_order(&id_of(&product), 1).await));
    }
    let first = buyer.get("/orders?limit=2").await.expect(200);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    assert!(first["nextCursor"].is_string(), "{first}");
    let all = buyer.list_all("/orders?limit=2").await;
    placed.reverse();
    assert_eq!(ids(&all), placed, "every order once, newest first, across pages");
}

#[tokio::test]
async fn a_bad_order_limit_is_a_bad_request() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.get("/orders?limit=ten").await.expect_error_naming(400, "bad_request", "limit");
}

#[tokio::test]
async fn the_buyer_cancels_an_order_and_the_stock_comes_back() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let product_id = id_of(&product);
    let order = buyer.place_order(&product_id, 2).await;
    buyer.wait_for_stock(&product_id, 3).await;
    let cancelled = buyer.post_empty(&format!("/orders/{}/cancel", id_of(&order))).await.expect(200);
    assert_eq!(cancelled["status"], "CANCELLED");
    assert_eq!(cancelled["id"], order["id"]);
    buyer.wait_for_stock(&product_id, 5).await;
    let read = buyer.get(&format!("/orders/{}", id_of(&order))).await.expect(200);
    assert_eq!(read["status"], "CANCELLED");
}

#[tokio::test]
async fn the_seller_may_cancel_an_order_too() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(100, 5).await;
    let order = buyer.place_order(&id_of(&product), 1).await;
    let cancelled = seller.post_empty(&format!("/orders/{}/cancel", id_of(&order))).await.expect(200);
    assert_eq!(cancelled["status"], "CANCELLED");
    buyer.wait_for_stock(&id_of(&product), 5).await;
}

#[tokio::test]
async fn cancelling_twice_is_a_conflict_and_releases_the_stock_once() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let product_id = id_of(&product);
    let order = buyer.place_order(&product_id, 2).await;
    let path = format!("/orders/{}/cancel", id_of(&order));
    buyer.post_empty(&path).await.expect(200);
    buyer.post_empty(&path).await.expect_error(409, "order_not_cancellable");
    buyer.wait_for_stock(&product_id, 5).await;
    // Give a wrongly repeated release the chance to show before looking again.
    let another = buyer.place_order(&product_id, 1).await;
    buyer.wait_for_stock(&product_id, 4).await;
    assert_eq!(another["status"], "ORDERED");
}

#[tokio::test]
async fn a_stranger_cancelling_an_order_gets_not_found() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let order = buyer.place_order(&id_of(&product), 1).await;
    let stranger = node.signup(Role::Buyer).await;
    stranger.post_empty(&format!("/orders/{}/cancel", id_of(&order))).await.expect_error(404, "not_found");
    let read = buyer.get(&format!("/orders/{}", id_of(&order))).await.expect(200);
    assert_eq!(read["status"], "ORDERED");
}

#[tokio::test]
async fn cancelling_an_unknown_order_is_not_found() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.post_empty(&format!("/orders/{}/cancel", uuid::Uuid::now_v7())).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn cancelling_a_paid_order_is_not_cancellable() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let order = buyer.place_order(&id_of(&product), 1).await;
    buyer.pay_ok(&id_of(&order), "tok_visa").await;
    buyer.wait_for_order_status(&id_of(&order), "PAID", EVENT_DEADLINE).await;
    buyer.post_empty(&format!("/orders/{}/cancel", id_of(&order))).await.expect_error(409, "order_not_cancellable");
    buyer.wait_for_stock(&id_of(&product), 4).await;
}

#[tokio::test]
async fn cancelling_while_the_payment_is_pending_is_not_cancellable() {
    // The default gateway timeout (5 s) keeps a `tok_timeout` payment pending long enough.
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let order = buyer.place_order(&id_of(&product), 1).await;
    buyer.pay_ok(&id_of(&order), "tok_timeout").await;
    buyer.wait_for_order_status(&id_of(&order), "PAYMENT_PENDING", std::time::Duration::from_secs(3)).await;
    buyer.post_empty(&format!("/orders/{}/cancel", id_of(&order))).await.expect_error(409, "order_not_cancellable");
}

#[tokio::test]
async fn a_quantity_above_one_million_is_invalid() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(1, 5).await;
    buyer.post_order(&id_of(&product), 1_000_001, &unique_key()).await.expect_error_naming(422, "invalid", "quantity");
}

#[tokio::test]
async fn retrying_the_key_of_a_cancelled_order_returns_it_and_reserves_nothing() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 5).await;
    let product_id = id_of(&product);
    let key = unique_key();
    let order = buyer.post_order(&product_id, 2, &key).await.expect(201);
    buyer.post_empty(&format!("/orders/{}/cancel", id_of(&order))).await.expect(200);
    buyer.wait_for_stock(&product_id, 5).await;
    // The key names that order for good: a retry must not place (and reserve) a new one.
    let retry = buyer.post_order(&product_id, 2, &key).await;
    assert!(retry.status == 200 || retry.status == 201, "HTTP {} {}", retry.status, retry.text);
    assert_eq!(retry.json["id"], order["id"]);
    assert_eq!(retry.json["status"], "CANCELLED", "{}", retry.text);
    assert_eq!(buyer.stock_of(&product_id).await, 5);
    assert_eq!(buyer.list_all("/orders").await.len(), 1);
}

#[tokio::test]
async fn patching_the_stock_sets_what_is_available_and_a_cancel_adds_back() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(100, 5).await;
    let product_id = id_of(&product);
    let order = buyer.place_order(&product_id, 2).await;
    buyer.wait_for_stock(&product_id, 3).await;
    // Reserved units are already out of `stock`, so the seller sets what is free to sell.
    seller.patch(&format!("/products/{product_id}"), json!({"stock": 10})).await.expect(200);
    assert_eq!(buyer.stock_of(&product_id).await, 10);
    buyer.post_empty(&format!("/orders/{}/cancel", id_of(&order))).await.expect(200);
    buyer.wait_for_stock(&product_id, 12).await;
}

#[tokio::test]
async fn restocking_a_sold_out_product_lets_orders_through_again() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(100, 1).await;
    let product_id = id_of(&product);
    buyer.place_order(&product_id, 1).await;
    buyer.post_order(&product_id, 1, &unique_key()).await.expect_error(409, "out_of_stock");
    seller.patch(&format!("/products/{product_id}"), json!({"stock": 2})).await.expect(200);
    buyer.place_order(&product_id, 2).await;
    buyer.wait_for_stock(&product_id, 0).await;
}

#[tokio::test]
async fn the_order_amount_is_price_times_quantity_at_ordering_time() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(5_000, 10).await;
    let product_id = id_of(&product);
    let order = buyer.place_order(&product_id, 3).await;
    assert_eq!(order["amount"], 15_000);
    // A later price change does not reprice a placed order or its payment.
    seller.patch(&format!("/products/{product_id}"), json!({"price": 9_999})).await.expect(200);
    let payment = buyer.pay_ok(&id_of(&order), "tok_visa").await;
    assert_eq!(payment["amount"], 15_000);
    let read = buyer.get(&format!("/orders/{}", id_of(&order))).await.expect(200);
    assert_eq!(read["amount"], 15_000);
}

#[tokio::test]
async fn a_full_last_page_of_orders_has_no_next_cursor() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 10).await;
    for _ in 0..2 {
        buyer.place_order(&id_of(&product), 1).await;
    }
    let page = buyer.get("/orders?limit=2").await.expect(200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(page["nextCursor"].is_null(), "the last page: {page}");
}
