//! `POST /checkout`: a cart over several sellers becomes one order per seller with its lines,
//! every line reserved or none; a retry with the same key finds the same checkout; checkouts
//! racing for the last units never oversell and never leave a line held; each order of a
//! checkout is cancelled (by hand or by its hold) on its own, giving back every line.

use crate::support::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

fn orders_of(checkout: &Value) -> &Vec<Value> {
    checkout["orders"].as_array().unwrap_or_else(|| panic!("no orders in {checkout}"))
}

/// `(productId, quantity, unitPrice, amount)` of each line of an order.
fn lines(order: &Value) -> Vec<(String, i64, i64, i64)> {
    order["lines"]
        .as_array()
        .unwrap_or_else(|| panic!("no lines in {order}"))
        .iter()
        .map(|line| {
            (
                line["productId"].as_str().unwrap().to_owned(),
                line["quantity"].as_i64().unwrap(),
                line["unitPrice"].as_i64().unwrap(),
                line["amount"].as_i64().unwrap(),
            )
        })
        .collect()
}

async fn add(buyer: &TestUser, product: &str, quantity: i64) {
    buyer.put(&format!("/cart/items/{product}"), json!({"quantity": quantity})).await.expect(200);
}

async fn check_out(buyer: &TestUser, key: &str) -> Reply {
    buyer.send(Method::POST, "/checkout", Body::None, &[("idempotency-key", key)]).await
}

#[tokio::test]
async fn a_cart_over_three_sellers_checks_out_into_three_orders_and_a_retry_finds_the_same_checkout() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let sellers = [node.signup(Role::Seller).await, node.signup(Role::Seller).await, node.signup(Role::Seller).await];
    let lamp = id_of(&sellers[0].list_product(9_900, 5).await);
    let cup = id_of(&sellers[0].list_product(1_200, 4).await);
    let rug = id_of(&sellers[1].list_product(50_000, 2).await);
    let pen = id_of(&sellers[2].list_product(700, 10).await);
    add(&buyer, &lamp, 2).await;
    add(&buyer, &cup, 3).await;
    add(&buyer, &rug, 1).await;
    add(&buyer, &pen, 10).await;

    let key = unique_key();
    let checkout = check_out(&buyer, &key).await.expect(201);
    assert_eq!(checkout["status"], "OPEN", "{checkout}");
    assert_eq!(checkout["currency"], "KRW");
    assert_eq!(checkout["total"], 19_800 + 3_600 + 50_000 + 7_000);
    assert!(checkout["expiresAt"].is_string(), "{checkout}");
    let orders = orders_of(&checkout);
    let by_seller: BTreeMap<String, &Value> =
        orders.iter().map(|order| (order["sellerId"].as_str().unwrap().to_owned(), order)).collect();
    assert_eq!(by_seller.len(), 3, "one order per seller: {checkout}");
    let mut first = vec![(lamp.clone(), 2, 9_900, 19_800), (cup.clone(), 3, 1_200, 3_600)];
    first.sort();
    assert_eq!(lines(by_seller[&sellers[0].id]), first, "lines in product order");
    assert_eq!(by_seller[&sellers[0].id]["amount"], 23_400);
    assert_eq!(lines(by_seller[&sellers[1].id]), [(rug.clone(), 1, 50_000, 50_000)]);
    assert_eq!(lines(by_seller[&sellers[2].id]), [(pen.clone(), 10, 700, 7_000)]);
    for order in orders {
        assert_eq!(
            (&order["status"], &order["checkoutId"], &order["buyerId"]),
            (&json!("ORDERED"), &checkout["id"], &json!(buyer.id))
        );
        assert_eq!(order["expiresAt"], checkout["expiresAt"]);
    }
    // Every line is reserved, and the checked-out products left the cart.
    assert_eq!(
        (
            sellers[0].stock_of(&lamp).await,
            sellers[0].stock_of(&cup).await,
            sellers[1].stock_of(&rug).await,
            sellers[2].stock_of(&pen).await
        ),
        (3, 1, 1, 0)
    );
    assert_eq!(buyer.get("/cart").await.expect(200)["items"], json!([]));

    // The same key again: the same checkout, though the cart is empty now.
    let again = check_out(&buyer, &key).await.expect(200);
    assert_eq!((&again["id"], again["orders"].as_array().map(Vec::len)), (&checkout["id"], Some(3)));
    let read = buyer.get(&format!("/checkouts/{}", id_of(&checkout))).await.expect(200);
    assert_eq!(read, checkout, "read back as made");
    // Nobody else sees it; a new key finds an empty cart.
    let stranger = node.signup(Role::Buyer).await;
    stranger.get(&format!("/checkouts/{}", id_of(&checkout))).await.expect_error(404, "not_found");
    check_out(&buyer, &unique_key()).await.expect_error(422, "cart_empty");

    // Each seller sees their own order with its lines; the timeline starts with the placement.
    let seen = sellers[0].get(&format!("/orders/{}", id_of(by_seller[&sellers[0].id]))).await.expect(200);
    assert_eq!(lines(&seen), first);
    let rug_order = id_of(by_seller[&sellers[1].id]);
    sellers[0].get(&format!("/orders/{rug_order}")).await.expect_error(404, "not_found");
    let timeline = buyer.get(&format!("/orders/{rug_order}/events")).await.expect(200);
    assert_eq!(timeline["events"][0]["type"], "OrderPlaced", "{timeline}");

    // One seller cancels: every line of that order comes back, the other orders stand.
    let first_order = id_of(by_seller[&sellers[0].id]);
    sellers[0].post_empty(&format!("/orders/{first_order}/cancel")).await.expect(200);
    sellers[0].wait_for_stock(&lamp, 5).await;
    sellers[0].wait_for_stock(&cup, 4).await;
    let read = buyer.get(&format!("/checkouts/{}", id_of(&checkout))).await.expect(200);
    let statuses: BTreeMap<String, String> = orders_of(&read)
        .iter()
        .map(|o| (o["sellerId"].as_str().unwrap().to_owned(), o["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(statuses[&sellers[0].id], "CANCELLED");
    assert_eq!((statuses[&sellers[1].id].as_str(), statuses[&sellers[2].id].as_str()), ("ORDERED", "ORDERED"));
    assert_eq!(sellers[1].stock_of(&rug).await, 1, "the rug stays reserved");
}

#[tokio::test]
async fn checkouts_racing_for_the_last_units_never_oversell_and_never_leave_a_line_held() {
    let node = TestNode::spawn().await;
    let (a, b, c) = (node.signup(Role::Seller).await, node.signup(Role::Seller).await, node.signup(Role::Seller).await);
    let scarce = id_of(&a.list_product(1_000, 3).await);
    let scarcer = id_of(&b.list_product(2_000, 2).await);
    let plenty = id_of(&c.list_product(500, 100).await);
    let mut buyers = Vec::new();
    for _ in 0..8 {
        let buyer = node.signup(Role::Buyer).await;
        add(&buyer, &plenty, 5).await;
        add(&buyer, &scarce, 1).await;
        add(&buyer, &scarcer, 1).await;
        buyers.push(buyer);
    }
    let answers = futures_util::future::join_all(buyers.iter().map(|buyer| check_out(buyer, "race"))).await;
    let mut opened = 0;
    for answer in &answers {
        match answer.status {
            201 => opened += 1,
            409 => {
                answer.expect_error(409, "out_of_stock");
                let named = answer.json["error"]["products"].as_array().expect("the products short are named");
                assert!(named.iter().all(|p| p == &json!(scarce) || p == &json!(scarcer)), "{}", answer.text);
                assert!(!named.is_empty());
            }
            other => panic!("unexpected {other}: {}", answer.text),
        }
    }
    assert_eq!(opened, 2, "the scarcer product has two units");
    // The failed checkouts gave back what they had taken before they answered.
    assert_eq!((a.stock_of(&scarce).await, b.stock_of(&scarcer).await, c.stock_of(&plenty).await), (1, 0, 90));
    // A failed checkout is answered the same way again, and holds nothing.
    let failed = answers.iter().position(|a| a.status == 409).unwrap();
    check_out(&buyers[failed], "race").await.expect_error(409, "out_of_stock");
    assert_eq!(c.stock_of(&plenty).await, 90);
    // The losers still have their carts, and once stock is back can check out.
    b.patch(&format!("/products/{scarcer}"), json!({"stock": 1})).await.expect(200);
    let cart = buyers[failed].get("/cart").await.expect(200);
    assert_eq!(cart["items"].as_array().map(Vec::len), Some(3), "{cart}");
    check_out(&buyers[failed], &unique_key()).await.expect(201);
    assert_eq!((a.stock_of(&scarce).await, b.stock_of(&scarcer).await, c.stock_of(&plenty).await), (0, 0, 85));
}

#[tokio::test]
async fn bad_checkouts_are_refused_clearly_and_hold_nothing() {
    let node = TestNode::spawn().await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 5).await;
    let product = id_of(&product);
    check_out(&buyer, &unique_key()).await.expect_error(422, "cart_empty");
    add(&buyer, &product, 2).await;
    buyer.post_empty("/checkout").await.expect_error_naming(400, "bad_request", "Idempotency-Key");
    seller
        .send(Method::POST, "/checkout", Body::None, &[("idempotency-key", "k")])
        .await
        .expect_error(403, "forbidden");
    let dollars = seller
        .post("/products", json!({"name": "Import", "price": 10, "currency": "USD", "stock": 5, "description": ""}))
        .await
        .expect(201);
    add(&buyer, &id_of(&dollars), 1).await;
    check_out(&buyer, &unique_key()).await.expect_error(422, "mixed_currencies");
    assert_eq!((seller.stock_of(&product).await, seller.stock_of(&id_of(&dollars)).await), (5, 5));
    buyer.delete(&format!("/cart/items/{}", id_of(&dollars))).await.expect(200);
    add(&buyer, &product, 6).await;
    let short = check_out(&buyer, &unique_key()).await;
    short.expect_error(409, "out_of_stock");
    assert_eq!(short.json["error"]["products"], json!([product]));
    assert!(short.message().contains(&product), "{}", short.text);
    buyer.get("/checkouts/nope").await.expect_error(404, "not_found");
}

#[tokio::test]
async fn each_order_of_a_checkout_left_unpaid_expires_and_gives_back_every_line() {
    let node = TestNode::spawn_with(&[("BAZAAR_RESERVATION_HOLD_SECS", "2")]).await;
    let buyer = node.signup(Role::Buyer).await;
    let (a, b) = (node.signup(Role::Seller).await, node.signup(Role::Seller).await);
    let one = id_of(&a.list_product(100, 3).await);
    let two = id_of(&a.list_product(200, 3).await);
    let three = id_of(&b.list_product(300, 3).await);
    for product in [&one, &two, &three] {
        add(&buyer, product, 3).await;
    }
    let checkout = check_out(&buyer, &unique_key()).await.expect(201);
    assert_eq!((a.stock_of(&one).await, a.stock_of(&two).await, b.stock_of(&three).await), (0, 0, 0));
    for order in orders_of(&checkout) {
        buyer.wait_for_order_status(&id_of(order), "CANCELLED", EVENT_DEADLINE).await;
    }
    a.wait_for_stock(&one, 3).await;
    a.wait_for_stock(&two, 3).await;
    b.wait_for_stock(&three, 3).await;
}
