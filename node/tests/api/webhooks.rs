//! Outbound webhooks through the real binary: registration and its refusals, deliveries to a
//! receiver on loopback (allowed by setting) that checks every signature itself, retries after
//! 500s, a node killed mid-delivery, re-sends, rotation, and giving up after `retry_for`.

use crate::support::*;
use crate::webhook_receiver::{signed_by, Answer, Received, Receiver};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// A node whose sellers may register loopback receivers, retrying quickly.
async fn node_with(extra: &[(&str, &str)]) -> TestNode {
    let mut env = vec![
        ("BAZAAR_WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true"),
        ("BAZAAR_WEBHOOK_RETRY_BASE_MS", "200"),
        ("BAZAAR_WEBHOOK_RETRY_MAX_MS", "400"),
        ("BAZAAR_WEBHOOK_POLL_MS", "100"),
    ];
    env.extend_from_slice(extra);
    TestNode::spawn_with(&env).await
}

async fn register(seller: &TestUser, url: &str, events: &[&str]) -> Value {
    seller.post("/webhooks", json!({"url": url, "events": events})).await.expect(201)
}

async fn deliveries(seller: &TestUser, endpoint: &str) -> Vec<Value> {
    seller.list_all(&format!("/webhooks/{endpoint}/deliveries")).await
}

#[tokio::test]
async fn a_seller_registers_lists_rotates_and_deletes_endpoints_and_nobody_else_can() {
    let node = node_with(&[]).await;
    let seller = node.signup(Role::Seller).await;
    let other = node.signup(Role::Seller).await;
    let buyer = node.signup(Role::Buyer).await;
    let receiver = Receiver::start().await;

    let endpoint = register(&seller, &receiver.url(), &["OrderPaid", "OrderPlaced", "OrderPaid"]).await;
    let id = id_of(&endpoint);
    let secret = endpoint["secret"].as_str().expect("the secret, once").to_owned();
    assert!(secret.starts_with("whsec_") && secret.len() > 40, "{secret}");
    assert_eq!(endpoint["events"], json!(["OrderPlaced", "OrderPaid"]));
    assert_eq!(endpoint["url"], receiver.url());

    let listed = seller.get("/webhooks").await.expect(200);
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(listed["items"][0].get("secret").is_none(), "a listing never shows the secret: {listed}");
    assert_eq!(other.get("/webhooks").await.expect(200)["items"], json!([]));

    buyer.post("/webhooks", json!({"url": receiver.url(), "events": ["*"]})).await.expect_error(403, "forbidden");
    buyer.get("/webhooks").await.expect_error(403, "forbidden");
    other.delete(&format!("/webhooks/{id}")).await.expect_error(404, "not_found");
    other.post_empty(&format!("/webhooks/{id}/rotate-secret")).await.expect_error(404, "not_found");
    other.get(&format!("/webhooks/{id}/deliveries")).await.expect_error(404, "not_found");

    let rotated = seller.post_empty(&format!("/webhooks/{id}/rotate-secret")).await.expect(200);
    let next = rotated["secret"].as_str().expect("the new secret").to_owned();
    assert!(next.starts_with("whsec_") && next != secret);

    assert_eq!(seller.delete(&format!("/webhooks/{id}")).await.status, 204);
    assert_eq!(seller.get("/webhooks").await.expect(200)["items"], json!([]));
    seller.delete(&format!("/webhooks/{id}")).await.expect_error(404, "not_found");
    seller.get(&format!("/webhooks/{id}/deliveries")).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn internal_addresses_and_malformed_endpoints_are_refused_with_clear_errors() {
    // The default: no private addresses.
    let node = TestNode::spawn_with(&[("BAZAAR_WEBHOOK_MAX_ENDPOINTS", "2")]).await;
    let seller = node.signup(Role::Seller).await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
    ] {
        let reply = seller.post("/webhooks", json!({"url": url, "events": ["*"]})).await;
        reply.expect_error(422, "url_not_allowed");
        assert!(reply.message().contains("address"), "{url}: {}", reply.text);
    }
    for (body, field) in [
        (json!({"url": "ftp://example.com/", "events": ["*"]}), "url"),
        (json!({"url": "https://user:pw@example.com/", "events": ["*"]}), "url"),
        (json!({"url": "not a url", "events": ["*"]}), "url"),
        (json!({"url": format!("https://example.com/{}", "a".repeat(3000)), "events": ["*"]}), "url"),
        (json!({"url": "https://93.184.216.34/", "events": []}), "events"),
        (json!({"url": "https://93.184.216.34/", "events": ["UserRegistered"]}), "events"),
    ] {
        seller.post("/webhooks", body).await.expect_error_naming(422, "invalid", field);
    }
    seller.post("/webhooks", json!({"url": "https://93.184.216.34/"})).await.expect_error_naming(
        400,
        "bad_request",
        "events",
    );
    seller
        .post("/webhooks", json!({"url": "https://93.184.216.34/", "events": ["*"], "extra": 1}))
        .await
        .expect_error_naming(400, "bad_request", "extra");

    // A public address literal needs no resolver; the limit counts live endpoints only.
    let first = register(&seller, "https://93.184.216.34/a", &["*"]).await;
    register(&seller, "https://93.184.216.34/b", &["*"]).await;
    seller
        .post("/webhooks", json!({"url": "https://93.184.216.34/c", "events": ["*"]}))
        .await
        .expect_error(409, "too_many_webhooks");
    assert_eq!(seller.delete(&format!("/webhooks/{}", id_of(&first))).await.status, 204);
    register(&seller, "https://93.184.216.34/c", &["*"]).await;
}

#[tokio::test]
async fn each_event_reaches_the_endpoint_that_asked_for_it_once_and_signed() {
    let node = node_with(&[]).await;
    let (seller, product, buyer) = node.seller_product_buyer(5_000, 3).await;
    let stranger = node.signup(Role::Seller).await;
    let (mine, theirs) = (Receiver::start().await, Receiver::start().await);
    let endpoint = register(&seller, &mine.url(), &["OrderPlaced", "OrderPaid", "PaymentApproved"]).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    register(&stranger, &theirs.url(), &["*"]).await;

    let order_id = id_of(&buyer.place_order(&id_of(&product), 1).await);
    buyer.pay_ok(&order_id, "tok_visa").await;
    buyer.wait_for_order_status(&order_id, "PAID", EVENT_DEADLINE).await;

    let received = mine.wait_for(3, EVENT_DEADLINE).await;
    // Nothing more comes: each event once.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let received_later = mine.received();
    assert_eq!(received_later.len(), 3, "{:?}", received_later.iter().map(Received::event_type).collect::<Vec<_>>());
    let types: BTreeSet<String> = received.iter().map(Received::event_type).collect();
    assert_eq!(types, BTreeSet::from(["OrderPaid", "OrderPlaced", "PaymentApproved"].map(String::from)));
    let ids: BTreeSet<String> = received.iter().map(Received::event_id).collect();
    assert_eq!(ids.len(), 3);
    for request in &received {
        assert!(
            signed_by(request, &secret),
            "signature of {}: {}",
            request.event_type(),
            request.header("bazaar-signature")
        );
        assert!(!signed_by(request, "whsec_someone_else"));
        assert_eq!(request.header("bazaar-event-id"), request.event_id());
        assert_eq!(request.header("bazaar-event-type"), request.event_type());
        assert_eq!(request.header("bazaar-attempt"), "1");
        assert_eq!(request.header("content-type"), "application/json");
        let body = request.json();
        assert!(body["at"].is_string() && body["data"].is_object(), "{body}");
    }
    let paid = received.iter().find(|r| r.event_type() == "OrderPaid").unwrap().json();
    assert_eq!(paid["data"]["order"]["id"], order_id.as_str());
    assert_eq!(paid["data"]["order"]["sellerId"], seller.id.as_str());
    // A tampered body no longer verifies.
    let mut tampered = received[0].clone();
    tampered.body.extend_from_slice(b" ");
    assert!(!signed_by(&tampered, &secret));

    assert!(theirs.received().is_empty(), "another seller's endpoint got this seller's events");
    let log = deliveries(&seller, &id_of(&endpoint)).await;
    assert_eq!(log.len(), 3, "{log:?}");
    for delivery in &log {
        assert_eq!(delivery["status"], "DELIVERED", "{delivery}");
        assert_eq!(delivery["attemptCount"], 1);
        assert_eq!(delivery["attempts"][0]["statusCode"], 200);
        assert!(delivery.get("nextAttemptAt").is_none());
        assert!(ids.contains(delivery["eventId"].as_str().unwrap()));
    }
}

#[tokio::test]
async fn a_delivery_answered_500_is_retried_with_backoff_until_it_is_taken() {
    let node = node_with(&[]).await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 3).await;
    let receiver = Receiver::start().await;
    receiver.plan(&[Answer::Status(500), Answer::Status(503)]);
    let endpoint = register(&seller, &receiver.url(), &["OrderPlaced"]).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    buyer.place_order(&id_of(&product), 1).await;

    let received = receiver.wait_for(3, EVENT_DEADLINE).await;
    let ids: BTreeSet<String> = received.iter().map(Received::event_id).collect();
    assert_eq!(ids.len(), 1, "one event, tried three times");
    let attempts: Vec<&str> = received.iter().map(|r| r.header("bazaar-attempt")).collect();
    assert_eq!(attempts, ["1", "2", "3"]);
    assert!(received.iter().all(|r| signed_by(r, &secret)));
    let delivery_ids: BTreeSet<&str> = received.iter().map(|r| r.header("bazaar-delivery-id")).collect();
    assert_eq!(delivery_ids.len(), 1);

    let log = eventually(EVENT_DEADLINE, "the delivery to read DELIVERED", || async {
        let log = deliveries(&seller, &id_of(&endpoint)).await;
        match log.first() {
            Some(d) if d["status"] == "DELIVERED" => Ok(log),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["attemptCount"], 3);
    let codes: Vec<i64> =
        log[0]["attempts"].as_array().unwrap().iter().map(|a| a["statusCode"].as_i64().unwrap()).collect();
    assert_eq!(codes, [500, 503, 200]);
    assert_eq!(log[0]["attempts"][0]["error"], "HTTP 500");
}

#[tokio::test]
async fn a_delivery_in_flight_when_the_node_is_killed_is_sent_again_after_the_restart() {
    // The attempt's timeout outlasts the kill: what comes after is the restarted node's send.
    let mut node = node_with(&[("BAZAAR_WEBHOOK_TIMEOUT_MS", "4000")]).await;
    let (mut seller, product, buyer) = node.seller_product_buyer(1_000, 3).await;
    let receiver = Receiver::start().await;
    receiver.plan(&[Answer::Never]);
    let endpoint = register(&seller, &receiver.url(), &["OrderPlaced"]).await;
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    buyer.place_order(&id_of(&product), 1).await;

    // The first attempt is in the receiver's hands, unanswered, when the node dies.
    let first = receiver.wait_for(1, EVENT_DEADLINE).await;
    node.kill9().await;
    node.restart().await;
    seller.login().await;

    let received = receiver.wait_for(2, EVENT_DEADLINE).await;
    assert_eq!(received[1].event_id(), first[0].event_id(), "the same event, sent again");
    assert_eq!(received[1].header("bazaar-delivery-id"), first[0].header("bazaar-delivery-id"));
    // A first attempt again: the killed node never recorded its own (a timeout would say 2).
    assert_eq!(received[1].header("bazaar-attempt"), "1");
    assert!(signed_by(&received[1], &secret));
    eventually(EVENT_DEADLINE, "the delivery to read DELIVERED", || async {
        let log = deliveries(&seller, &id_of(&endpoint)).await;
        match log.as_slice() {
            [only] if only["status"] == "DELIVERED" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn a_delivery_is_resent_on_request_and_a_rotated_out_secret_still_signs_for_a_while() {
    let node = node_with(&[]).await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 3).await;
    let receiver = Receiver::start().await;
    let endpoint = register(&seller, &receiver.url(), &["OrderPlaced"]).await;
    let id = id_of(&endpoint);
    let old = endpoint["secret"].as_str().unwrap().to_owned();
    buyer.place_order(&id_of(&product), 1).await;
    let first = receiver.wait_for(1, EVENT_DEADLINE).await;

    let new = seller.post_empty(&format!("/webhooks/{id}/rotate-secret")).await.expect(200)["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    let delivery = eventually(EVENT_DEADLINE, "the delivery to be listed as DELIVERED", || async {
        match deliveries(&seller, &id).await.first() {
            Some(d) if d["status"] == "DELIVERED" => Ok(id_of(d)),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(seller.post_empty(&format!("/webhooks/{id}/deliveries/{delivery}/resend")).await.status, 202);
    let again = receiver.wait_for(2, EVENT_DEADLINE).await;
    assert_eq!(again[1].event_id(), first[0].event_id());
    // Both secrets sign while they overlap: the receiver may switch when it likes.
    assert!(signed_by(&again[1], &new) && signed_by(&again[1], &old), "{}", again[1].header("bazaar-signature"));
    assert_eq!(again[1].header("bazaar-signature").matches("v1=").count(), 2);

    seller.post_empty(&format!("/webhooks/{id}/deliveries/nope/resend")).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn a_delivery_never_taken_fails_after_retry_for_and_can_still_be_resent() {
    let node = node_with(&[("BAZAAR_WEBHOOK_RETRY_FOR_SECS", "1")]).await;
    let (seller, product, buyer) = node.seller_product_buyer(1_000, 3).await;
    let receiver = Receiver::start().await;
    receiver.plan(&[Answer::Status(500); 50]);
    let endpoint = register(&seller, &receiver.url(), &["OrderPlaced"]).await;
    let id = id_of(&endpoint);
    buyer.place_order(&id_of(&product), 1).await;

    let failed = eventually(EVENT_DEADLINE, "the delivery to be FAILED", || async {
        match deliveries(&seller, &id).await.first() {
            Some(d) if d["status"] == "FAILED" => Ok(d.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let tries = failed["attemptCount"].as_i64().unwrap();
    assert!((2..=10).contains(&tries), "{failed}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(receiver.received().len() as i64, tries, "no try after FAILED");

    let delivery = id_of(&failed);
    assert_eq!(seller.post_empty(&format!("/webhooks/{id}/deliveries/{delivery}/resend")).await.status, 202);
    receiver.wait_for(tries as usize + 1, EVENT_DEADLINE).await;
}

#[tokio::test]
async fn the_operators_endpoint_gets_every_sellers_events_and_new_accounts_signed_with_its_secret() {
    let operator = Receiver::start().await;
    let secret = "operator-secret-of-at-least-24-chars";
    // The operator's own URL is trusted: loopback, with the address rule left on.
    let node = TestNode::spawn_with(&[
        ("BAZAAR_WEBHOOK_OPERATOR_URL", &operator.url()),
        ("BAZAAR_WEBHOOK_OPERATOR_SECRET", secret),
        ("BAZAAR_WEBHOOK_OPERATOR_EVENTS", "UserRegistered, OrderPlaced"),
        ("BAZAAR_WEBHOOK_POLL_MS", "100"),
    ])
    .await;
    let (_, product, buyer) = node.seller_product_buyer(1_000, 5).await;
    let other = node.signup(Role::Seller).await;
    let theirs = other.list_product(2_000, 5).await;
    let first = id_of(&buyer.place_order(&id_of(&product), 1).await);
    let second = id_of(&buyer.place_order(&id_of(&theirs), 1).await);

    // Three accounts (two sellers, one buyer) and two orders of two sellers.
    let received = operator.wait_for(5, EVENT_DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let received_later = operator.received();
    assert_eq!(received_later.len(), 5, "{:?}", received_later.iter().map(Received::event_type).collect::<Vec<_>>());
    assert!(received.iter().all(|r| signed_by(r, secret)));
    let accounts = received.iter().filter(|r| r.event_type() == "UserRegistered").count();
    assert_eq!(accounts, 3);
    let orders: BTreeSet<String> = received
        .iter()
        .filter(|r| r.event_type() == "OrderPlaced")
        .map(|r| r.json()["data"]["order"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(orders, BTreeSet::from([first, second]));
    // Not an endpoint of any seller's: no seller sees or deletes it.
    assert_eq!(other.get("/webhooks").await.expect(200)["items"], json!([]));
    other.delete("/webhooks/operator").await.expect_error(404, "not_found");
}

#[tokio::test]
async fn each_seller_of_a_checkout_is_sent_its_payment_with_only_their_own_share() {
    let node = node_with(&[]).await;
    let buyer = node.signup(Role::Buyer).await;
    let (first, second) = (node.signup(Role::Seller).await, node.signup(Role::Seller).await);
    let (first_inbox, second_inbox) = (Receiver::start().await, Receiver::start().await);
    let wanted = ["PaymentRequested", "PaymentApproved", "PaymentRefunded"];
    register(&first, &first_inbox.url(), &wanted).await;
    register(&second, &second_inbox.url(), &wanted).await;
    for (seller, price) in [(&first, 1_000), (&second, 2_000)] {
        let product = id_of(&seller.list_product(price, 5).await);
        buyer.put(&format!("/cart/items/{product}"), json!({"quantity": 1})).await.expect(200);
    }
    let checkout = buyer
        .send(reqwest::Method::POST, "/checkout", Body::None, &[("idempotency-key", &unique_key())])
        .await
        .expect(201);
    let body = json!({"checkoutId": id_of(&checkout), "method": {"type": "card", "token": "tok_visa"}});
    let payment_id = id_of(&buyer.post_with_key("/payments", body, &unique_key()).await.expect(202));
    buyer.wait_for_payment_status(&payment_id, "APPROVED", EVENT_DEADLINE).await;
    // The second seller refunds theirs: only the second seller hears of it.
    second.post_empty(&format!("/payments/{payment_id}/refund")).await.expect(200);

    for (seller, inbox, count) in [(&first, &first_inbox, 2), (&second, &second_inbox, 3)] {
        let received = inbox.wait_for(count, EVENT_DEADLINE).await;
        for request in &received {
            let body = request.json();
            let shares = body["data"]["payment"]["orders"].as_array().unwrap_or_else(|| panic!("{body}")).clone();
            assert_eq!(shares.len(), 1, "{}: {body}", request.event_type());
            assert_eq!(shares[0]["sellerId"], seller.id.as_str(), "{body}");
            if request.event_type() == "PaymentRequested" {
                assert_eq!(body["data"]["order"]["sellerId"], seller.id.as_str(), "{body}");
                assert!(body["data"].get("moreOrders").is_none(), "{body}");
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(first_inbox.received().len(), 2, "the first seller is not told of the second's refund");
}
