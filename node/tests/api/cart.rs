//! `/cart`: a buyer's cart kept by the buyer's entity, its lines priced as each product is now,
//! its totals per currency (exact past what an i64 holds); the bad input it refuses; and a cart
//! that survives a restart.

use crate::support::*;
use serde_json::{json, Value};

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// `(productId, quantity, unitPrice, amount, available)` of each line.
fn lines(cart: &Value) -> Vec<(String, i64, i64, i64, bool)> {
    cart["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {cart}"))
        .iter()
        .map(|line| {
            (
                line["productId"].as_str().unwrap().to_owned(),
                line["quantity"].as_i64().unwrap(),
                line["unitPrice"].as_i64().unwrap(),
                line["amount"].as_i64().unwrap(),
                line["available"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_cart_over_several_sellers_is_priced_as_of_now_and_survives_a_restart() {
    let mut node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let first_seller = node.signup(Role::Seller).await;
    let second_seller = node.signup(Role::Seller).await;
    let lamp = id_of(&first_seller.list_product(9_900, 5).await);
    let cup = id_of(&first_seller.list_product(1_200, 1).await);
    let rug = id_of(&second_seller.list_product(50_000, 2).await);

    let empty = buyer.get("/cart").await.expect(200);
    assert_eq!(empty, json!({"items": [], "totals": []}));

    buyer.put(&format!("/cart/items/{lamp}"), json!({"quantity": 2})).await.expect(200);
    buyer.put(&format!("/cart/items/{cup}"), json!({"quantity": 3})).await.expect(200);
    let cart = buyer.put(&format!("/cart/items/{rug}"), json!({"quantity": 1})).await.expect(200);
    assert_eq!(
        lines(&cart),
        [
            (lamp.clone(), 2, 9_900, 19_800, true),
            // Three cups wanted, one in stock: shown, not reserved, flagged.
            (cup.clone(), 3, 1_200, 3_600, false),
            (rug.clone(), 1, 50_000, 50_000, true),
        ]
    );
    assert_eq!(cart["totals"], json!([{"currency": "KRW", "amount": 73_400}]));
    let sellers: Vec<&str> =
        cart["items"].as_array().unwrap().iter().map(|l| l["sellerId"].as_str().unwrap()).collect();
    assert_eq!(sellers, [first_seller.id.as_str(), first_seller.id.as_str(), second_seller.id.as_str()]);

    // A new quantity replaces the old one in place; the same PUT again changes nothing.
    buyer.put(&format!("/cart/items/{lamp}"), json!({"quantity": 1})).await.expect(200);
    let again = buyer.put(&format!("/cart/items/{lamp}"), json!({"quantity": 1})).await.expect(200);
    assert_eq!(lines(&again)[0], (lamp.clone(), 1, 9_900, 9_900, true));
    assert_eq!(again["items"].as_array().unwrap().len(), 3);

    // Prices are the product's now, not when the line was added.
    first_seller.patch(&format!("/products/{lamp}"), json!({"price": 8_000})).await.expect(200);
    let repriced = buyer.get("/cart").await.expect(200);
    assert_eq!(lines(&repriced)[0], (lamp.clone(), 1, 8_000, 8_000, true));
    assert_eq!(repriced["totals"][0]["amount"], 8_000 + 3_600 + 50_000);

    // Taking a line out, twice: the second finds nothing to take and answers the same cart.
    let without_cup = buyer.delete(&format!("/cart/items/{cup}")).await.expect(200);
    assert_eq!(buyer.delete(&format!("/cart/items/{cup}")).await.expect(200), without_cup);
    let ids: Vec<String> = lines(&without_cup).into_iter().map(|line| line.0).collect();
    assert_eq!(ids, [lamp.clone(), rug.clone()]);

    // The cart is stored, not only held in memory.
    node.restart().await;
    let mut buyer = buyer;
    buyer.login().await;
    assert_eq!(buyer.get("/cart").await.expect(200), without_cup);
}

#[tokio::test]
async fn carts_refuse_sellers_unknown_products_bad_quantities_and_a_product_past_the_limit() {
    let node = TestNode::spawn_with(&[("BAZAAR_CART_MAX_ITEMS", "2")]).await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 10).await;
    let product_id = id_of(&product);
    let path = format!("/cart/items/{product_id}");

    // Only buyers have a cart.
    seller.get("/cart").await.expect_error(403, "forbidden");
    seller.put(&path, json!({"quantity": 1})).await.expect_error(403, "forbidden");
    seller.delete(&path).await.expect_error(403, "forbidden");
    node.get("/cart").await.expect_error(401, "unauthorized");

    buyer.put("/cart/items/no-such-product", json!({"quantity": 1})).await.expect_error(404, "not_found");
    for quantity in [json!(0), json!(-1), json!(1_000_001)] {
        buyer.put(&path, json!({ "quantity": quantity })).await.expect_error(422, "invalid");
    }
    for body in [json!({}), json!({"quantity": "two"}), json!({"quantity": 1, "price": 1}), json!("1")] {
        buyer.put(&path, body).await.expect_error(400, "bad_request");
    }
    buyer
        .send(
            reqwest::Method::PUT,
            &path,
            Body::Raw { content_type: Some("text/plain".into()), bytes: b"{\"quantity\":1}".to_vec() },
            &[],
        )
        .await
        .expect_error(415, "unsupported_media_type");
    assert_eq!(buyer.get("/cart").await.expect(200)["items"], json!([]), "nothing refused was kept");

    // Two products fit; a third is refused, while the lines there still change.
    let second = id_of(&seller.list_product(500, 10).await);
    let third = id_of(&seller.list_product(700, 10).await);
    buyer.put(&path, json!({"quantity": 1})).await.expect(200);
    buyer.put(&format!("/cart/items/{second}"), json!({"quantity": 1})).await.expect(200);
    let full = buyer.put(&format!("/cart/items/{third}"), json!({"quantity": 1})).await;
    full.expect_code(409, "cart_full");
    assert!(full.message().contains('2'), "the message names the limit: {}", full.text);
    let changed = buyer.put(&path, json!({"quantity": 4})).await.expect(200);
    assert_eq!(changed["items"][0]["quantity"], 4);
    buyer.delete(&format!("/cart/items/{second}")).await.expect(200);
    buyer.put(&format!("/cart/items/{third}"), json!({"quantity": 1})).await.expect(200);

    // One buyer's cart is not another's.
    let other = node.signup(Role::Buyer).await;
    assert_eq!(other.get("/cart").await.expect(200)["items"], json!([]));
}

#[tokio::test]
async fn a_total_past_what_an_i64_holds_is_shown_exactly() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let buyer = node.signup(Role::Buyer).await;
    // Each line is 10^12 × 10^6 = 10^18 (the largest a line can be); ten of them pass i64::MAX
    // (about 9.2 × 10^18).
    for _ in 0..10 {
        let product = id_of(&seller.list_product(1_000_000_000_000, 1).await);
        buyer.put(&format!("/cart/items/{product}"), json!({"quantity": 1_000_000})).await.expect(200);
    }
    let cart = buyer.get("/cart").await.expect(200);
    assert!(lines(&cart).iter().all(|line| line.3 == 1_000_000_000_000_000_000), "{cart}");
    assert_eq!(cart["totals"][0]["amount"].as_u64(), Some(10_000_000_000_000_000_000), "{cart}");
}
