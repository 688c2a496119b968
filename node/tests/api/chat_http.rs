//! Chat over HTTP: opening rooms, listing them, and reading history.

use crate::support::*;
use serde_json::{json, Value};

fn seqs(items: &[Value]) -> Vec<i64> {
    items.iter().map(|item| item["seq"].as_i64().expect("a message has a seq")).collect()
}

/// A buyer and a seller with a room that holds `count` messages posted over the WebSocket.
async fn room_with_messages(node: &TestNode, count: usize) -> (TestUser, TestUser, String) {
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let room = buyer.open_room(&seller).await;
    let room_id = room["id"].as_str().expect("a room id").to_owned();
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    for n in 1..=count {
        ws.send_message(&room_id, &format!("message {n}"), &format!("c-{n}")).await;
    }
    ws.close().await;
    (buyer, seller, room_id)
}

#[tokio::test]
async fn a_buyer_opens_a_room_and_the_seller_gets_the_same_one() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let created = buyer.post("/chat/rooms", json!({"peerId": seller.id})).await.expect(201);
    assert_eq!(created["members"], json!([buyer.id, seller.id]), "buyer first");
    let at = created["createdAt"].as_str().expect("createdAt");
    chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    // One room per pair, from either side, still buyer first.
    let from_seller = seller.post("/chat/rooms", json!({"peerId": buyer.id})).await.expect(200);
    assert_eq!(from_seller["id"], created["id"]);
    assert_eq!(from_seller["members"], json!([buyer.id, seller.id]));
    let again = buyer.post("/chat/rooms", json!({"peerId": seller.id})).await.expect(200);
    assert_eq!(again["id"], created["id"]);
}

#[tokio::test]
async fn a_room_between_two_of_one_role_is_invalid() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let other_buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let other_seller = node.signup(Role::Seller).await;
    buyer.post("/chat/rooms", json!({"peerId": other_buyer.id})).await.expect_error(422, "invalid");
    seller.post("/chat/rooms", json!({"peerId": other_seller.id})).await.expect_error(422, "invalid");
}

#[tokio::test]
async fn a_room_with_oneself_is_invalid() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.post("/chat/rooms", json!({"peerId": buyer.id})).await.expect_error(422, "invalid");
}

#[tokio::test]
async fn a_room_with_an_unknown_peer_is_not_found() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    buyer.post("/chat/rooms", json!({"peerId": uuid::Uuid::now_v7().to_string()})).await.expect_error(404, "not_found");
}

#[tokio::test]
async fn opening_a_room_needs_a_token_and_a_peer() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    node.post("/chat/rooms", json!({"peerId": seller.id})).await.expect_error(401, "unauthorized");
    buyer.post("/chat/rooms", json!({})).await.expect_error_naming(400, "bad_request", "peerId");
}

#[tokio::test]
async fn listing_rooms_shows_only_the_callers_rooms_with_the_last_message() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = room_with_messages(&node, 2).await;
    let outsider = node.signup(Role::Buyer).await;
    let outsider_room = outsider.open_room(&seller).await;

    let rooms = buyer.get("/chat/rooms").await.expect(200);
    let items = rooms["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{rooms}");
    assert_eq!(items[0]["id"], room_id.as_str());
    let last = &items[0]["lastMessage"];
    assert_eq!(last["seq"], 2, "{rooms}");
    assert_eq!(last["text"], "message 2");
    assert_eq!(last["from"], buyer.id.as_str());

    let seller_rooms = seller.get("/chat/rooms").await.expect(200);
    let mut seller_ids: Vec<&str> =
        seller_rooms["items"].as_array().expect("items").iter().map(|room| room["id"].as_str().unwrap()).collect();
    seller_ids.sort();
    let mut expected = vec![room_id.as_str(), outsider_room["id"].as_str().unwrap()];
    expected.sort();
    assert_eq!(seller_ids, expected);
    node.get("/chat/rooms").await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn history_is_newest_first_and_pages_backwards() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = room_with_messages(&node, 5).await;
    let path = format!("/chat/rooms/{room_id}/messages");

    let all = seller.get(&path).await.expect(200);
    let items = all["items"].as_array().expect("items").clone();
    assert_eq!(seqs(&items), [5, 4, 3, 2, 1]);
    assert!(all["nextBefore"].is_null(), "{all}");
    let first = &items[4];
    assert_eq!(first["text"], "message 1");
    assert_eq!(first["from"], buyer.id.as_str());
    assert_eq!(first["room"], room_id.as_str());
    assert!(first["id"].is_string() && first["sentAt"].is_string(), "{first}");

    let page = buyer.get(&format!("{path}?limit=2")).await.expect(200);
    assert_eq!(seqs(page["items"].as_array().unwrap()), [5, 4]);
    assert_eq!(page["nextBefore"], 4);
    let page = buyer.get(&format!("{path}?limit=2&before=4")).await.expect(200);
    assert_eq!(seqs(page["items"].as_array().unwrap()), [3, 2]);
    assert_eq!(page["nextBefore"], 2);
    let page = buyer.get(&format!("{path}?limit=2&before=2")).await.expect(200);
    assert_eq!(seqs(page["items"].as_array().unwrap()), [1]);
    assert!(page["nextBefore"].is_null(), "the last page: {page}");
}

#[tokio::test]
async fn a_history_limit_above_the_maximum_is_clamped_not_refused() {
    let node = TestNode::spawn().await;
    let (buyer, _, room_id) = room_with_messages(&node, 3).await;
    let page = buyer.get(&format!("/chat/rooms/{room_id}/messages?limit=100000")).await.expect(200);
    assert_eq!(seqs(page["items"].as_array().unwrap()), [3, 2, 1]);
    buyer.get(&format!("/chat/rooms/{room_id}/messages?limit=many")).await.expect_error(400, "bad_request");
}

#[tokio::test]
async fn history_is_forbidden_to_non_members() {
    let node = TestNode::spawn().await;
    let (_, _, room_id) = room_with_messages(&node, 1).await;
    let outsider = node.signup(Role::Seller).await;
    outsider.get(&format!("/chat/rooms/{room_id}/messages")).await.expect_error(403, "forbidden");
    node.get(&format!("/chat/rooms/{room_id}/messages")).await.expect_error(401, "unauthorized");
}

#[tokio::test]
async fn the_history_of_an_unknown_room_is_refused() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let reply = buyer.get(&format!("/chat/rooms/{}/messages", uuid::Uuid::now_v7())).await;
    // Either answer keeps the room's existence private; anything else is wrong.
    assert!(
        (reply.status, reply.code()) == (403, "forbidden") || (reply.status, reply.code()) == (404, "not_found"),
        "HTTP {} {}",
        reply.status,
        reply.text
    );
}

#[tokio::test]
async fn a_room_without_messages_lists_no_last_message() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    buyer.open_room(&seller).await;
    let rooms = seller.get("/chat/rooms").await.expect(200);
    let room = &rooms["items"][0];
    assert!(room.get("lastMessage").is_none_or(Value::is_null), "{rooms}");
    assert_eq!(room["members"], json!([buyer.id, seller.id]));
}

#[tokio::test]
async fn history_before_the_first_message_is_empty() {
    let node = TestNode::spawn().await;
    let (buyer, _, room_id) = room_with_messages(&node, 2).await;
    let page = buyer.get(&format!("/chat/rooms/{room_id}/messages?before=1")).await.expect(200);
    assert_eq!(page["items"], json!([]));
    assert!(page["nextBefore"].is_null(), "{page}");
}

#[tokio::test]
async fn a_full_last_page_of_history_has_no_next_before() {
    let node = TestNode::spawn().await;
    let (buyer, _, room_id) = room_with_messages(&node, 2).await;
    let page = buyer.get(&format!("/chat/rooms/{room_id}/messages?limit=2")).await.expect(200);
    assert_eq!(seqs(page["items"].as_array().unwrap()), [2, 1]);
    assert!(page["nextBefore"].is_null(), "seq 1 is the oldest, so this is the last page: {page}");
}
