//! The WebSocket at `/ws`: chat frames, presence, order pushes, and the frames that get refused.

use crate::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Error as WsError;

/// A buyer, a seller and their room's id.
async fn pair_with_room(node: &TestNode) -> (TestUser, TestUser, String) {
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let room = buyer.open_room(&seller).await;
    (buyer, seller, room["id"].as_str().expect("a room id").to_owned())
}

/// A buyer and a seller with their room, each with a socket that joined it (buyer first).
async fn both_joined(node: &TestNode) -> (TestUser, TestUser, String, WsClient, WsClient) {
    let (buyer, seller, room_id) = pair_with_room(node).await;
    let mut buyer_ws = buyer.ws_connect().await;
    let mut seller_ws = seller.ws_connect().await;
    buyer_ws.join(&room_id).await;
    seller_ws.join(&room_id).await;
    (buyer, seller, room_id, buyer_ws, seller_ws)
}

fn online(frame: &Value) -> BTreeSet<String> {
    frame["online"]
        .as_array()
        .expect("presence lists who is online")
        .iter()
        .map(|id| id.as_str().expect("user ids").to_owned())
        .collect()
}

#[track_caller]
fn assert_refused_with_401(result: Result<WsClient, WsError>) {
    match result {
        Err(WsError::Http(response)) => assert_eq!(response.status().as_u16(), 401),
        Err(other) => panic!("expected an HTTP 401 refusal, got {other}"),
        Ok(_) => panic!("the upgrade was accepted without a valid token"),
    }
}

#[tokio::test]
async fn an_upgrade_without_a_valid_token_is_refused_with_401() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    assert_refused_with_401(node.api.try_ws_connect(None, None).await);
    assert_refused_with_401(node.api.try_ws_connect(Some("garbage"), None).await);
    assert_refused_with_401(node.api.try_ws_connect(None, Some("garbage")).await);
    // A refresh token is not an access token.
    assert_refused_with_401(node.api.try_ws_connect(Some(&user.refresh_token), None).await);
}

#[tokio::test]
async fn the_token_may_come_as_a_query_parameter() {
    let node = TestNode::spawn().await;
    let (buyer, _, room_id) = pair_with_room(&node).await;
    let mut ws = node.api.try_ws_connect(None, Some(&buyer.access_token)).await.expect("a browser-style upgrade");
    let joined = ws.join(&room_id).await;
    assert_eq!(joined["lastSeq"], 0);
}

#[tokio::test]
async fn a_message_reaches_every_joined_member_and_the_sender_gets_an_ack() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id, mut buyer_ws, mut seller_ws) = both_joined(&node).await;

    let ack = buyer_ws.send_message(&room_id, "안녕하세요", "c-1").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    for ws in [&mut buyer_ws, &mut seller_ws] {
        let message = ws.next_of_type("message").await;
        assert_eq!(message["room"], room_id.as_str());
        assert_eq!(message["seq"], 1);
        assert_eq!(message["from"], buyer.id.as_str());
        assert_eq!(message["text"], "안녕하세요");
        assert!(message["id"].is_string(), "{message}");
        let sent_at = message["sentAt"].as_str().expect("sentAt");
        chrono::DateTime::parse_from_rfc3339(sent_at).expect("RFC 3339");
    }

    let ack = seller_ws.send_message(&room_id, "reply", "s-1").await;
    assert_eq!(ack["seq"], 2, "seqs are per room and gapless: {ack}");
    let message = buyer_ws.next_of_type("message").await;
    assert_eq!((message["seq"].clone(), message["from"].clone()), (json!(2), json!(seller.id)));
}

#[tokio::test]
async fn joined_reports_the_rooms_last_seq() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = pair_with_room(&node).await;
    let mut buyer_ws = buyer.ws_connect().await;
    buyer_ws.join(&room_id).await;
    for n in 0..3 {
        buyer_ws.send_message(&room_id, "hello", &format!("c-{n}")).await;
    }
    let mut seller_ws = seller.ws_connect().await;
    let joined = seller_ws.join(&room_id).await;
    assert_eq!(joined["lastSeq"], 3);
}

#[tokio::test]
async fn resending_a_client_msg_id_acks_the_original_seq_without_a_second_message() {
    let node = TestNode::spawn().await;
    let (buyer, _seller, room_id, mut buyer_ws, mut seller_ws) = both_joined(&node).await;
    let first = buyer_ws.send_message(&room_id, "once", "dup-1").await;
    let again = buyer_ws.send_message(&room_id, "once", "dup-1").await;
    assert_eq!(first["seq"], again["seq"]);
    seller_ws.next_of_type("message").await;
    // The resend must not reach members as a second message.
    assert!(
        seller_ws.try_next_of_type("message", Duration::from_millis(700)).await.is_none(),
        "a resend was delivered again"
    );
    let history = buyer.history(&room_id).await;
    assert_eq!(history.len(), 1, "{history:?}");
    // A new id after the resend takes the next seq, so nothing was burnt.
    let next = buyer_ws.send_message(&room_id, "twice", "dup-2").await;
    assert_eq!(next["seq"], 2);
}

#[tokio::test]
async fn a_resend_on_a_new_connection_is_still_deduplicated() {
    let node = TestNode::spawn().await;
    let (buyer, _, room_id) = pair_with_room(&node).await;
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    let first = ws.send_message(&room_id, "flaky network", "retry-1").await;
    ws.close().await;
    // A client that lost its connection before the ack resends on a fresh socket.
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    let again = ws.send_message(&room_id, "flaky network", "retry-1").await;
    assert_eq!(first["seq"], again["seq"]);
    assert_eq!(buyer.history(&room_id).await.len(), 1);
}

#[tokio::test]
async fn joining_with_since_replays_newer_messages_after_joined() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = pair_with_room(&node).await;
    let mut buyer_ws = buyer.ws_connect().await;
    buyer_ws.join(&room_id).await;
    for n in 1..=4 {
        buyer_ws.send_message(&room_id, &format!("m{n}"), &format!("c-{n}")).await;
    }
    let mut seller_ws = seller.ws_connect().await;
    seller_ws.send_json(&json!({"type": "join", "room": room_id, "since": 2})).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let frame = seller_ws
            .next_json_with_timeout(FRAME_DEADLINE)
            .await
            .unwrap_or_else(|| panic!("the replay stopped after {seen:?}"));
        match frame["type"].as_str() {
            Some("joined") => seen.push(format!("joined {}", frame["lastSeq"])),
            Some("message") => seen.push(format!("message {} {}", frame["seq"], frame["text"])),
            _ => {}
        }
    }
    assert_eq!(
        seen,
        ["joined 4", "message 3 \"m3\"", "message 4 \"m4\""],
        "joined first, then exactly the messages after `since`, in order"
    );
    // Live messages follow the replay.
    buyer_ws.send_message(&room_id, "m5", "c-5").await;
    let live = seller_ws.next_of_type("message").await;
    assert_eq!(live["seq"], 5);
}

#[tokio::test]
async fn joining_without_since_replays_nothing() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = pair_with_room(&node).await;
    let mut buyer_ws = buyer.ws_connect().await;
    buyer_ws.join(&room_id).await;
    buyer_ws.send_message(&room_id, "old", "c-1").await;
    let mut seller_ws = seller.ws_connect().await;
    seller_ws.join(&room_id).await;
    assert!(
        seller_ws.try_next_of_type("message", Duration::from_millis(500)).await.is_none(),
        "a plain join streams only new messages"
    );
}

#[tokio::test]
async fn presence_lists_who_is_online_as_members_come_and_go() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = pair_with_room(&node).await;
    let mut buyer_ws = buyer.ws_connect().await;
    buyer_ws.join(&room_id).await;
    let mut seller_ws = seller.ws_connect().await;
    seller_ws.join(&room_id).await;
    let both: BTreeSet<String> = [buyer.id.clone(), seller.id.clone()].into();
    let frame = buyer_ws
        .next_matching("presence with both members", |frame| {
            frame["type"] == "presence" && frame["room"] == room_id && online(frame) == both
        })
        .await;
    assert_eq!(frame["room"], room_id.as_str());
    // A disconnect counts as leaving.
    drop(seller_ws);
    let only_buyer: BTreeSet<String> = [buyer.id.clone()].into();
    buyer_ws
        .next_matching("presence without the seller", |frame| {
            frame["type"] == "presence" && online(frame) == only_buyer
        })
        .await;
}

#[tokio::test]
async fn leaving_a_room_updates_presence_and_stops_its_messages() {
    let node = TestNode::spawn().await;
    let (buyer, _seller, room_id, mut buyer_ws, mut seller_ws) = both_joined(&node).await;
    seller_ws.send_json(&json!({"type": "leave", "room": room_id})).await;
    let only_buyer: BTreeSet<String> = [buyer.id.clone()].into();
    buyer_ws
        .next_matching("presence after the leave", |frame| frame["type"] == "presence" && online(frame) == only_buyer)
        .await;
    buyer_ws.send_message(&room_id, "anyone?", "c-1").await;
    assert!(
        seller_ws.try_next_of_type("message", Duration::from_millis(700)).await.is_none(),
        "a member who left still got a message"
    );
}

#[tokio::test]
async fn typing_and_read_reach_the_other_member() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id, mut buyer_ws, mut seller_ws) = both_joined(&node).await;
    buyer_ws.send_message(&room_id, "hi", "c-1").await;
    buyer_ws.send_json(&json!({"type": "typing", "room": room_id})).await;
    let typing = seller_ws.next_of_type("typing").await;
    assert_eq!(typing["room"], room_id.as_str());
    assert_eq!(typing["from"], buyer.id.as_str());
    seller_ws.send_json(&json!({"type": "read", "room": room_id, "seq": 1})).await;
    let read = buyer_ws.next_of_type("read").await;
    assert_eq!(read["room"], room_id.as_str());
    assert_eq!(read["from"], seller.id.as_str());
    assert_eq!(read["seq"], 1);
}

#[tokio::test]
async fn messages_stay_in_their_room() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let first_buyer = node.signup(Role::Buyer).await;
    let second_buyer = node.signup(Role::Buyer).await;
    let first_room = first_buyer.open_room(&seller).await["id"].as_str().unwrap().to_owned();
    let second_room = second_buyer.open_room(&seller).await["id"].as_str().unwrap().to_owned();
    let mut first_ws = first_buyer.ws_connect().await;
    first_ws.join(&first_room).await;
    let mut second_ws = second_buyer.ws_connect().await;
    second_ws.join(&second_room).await;
    let ack = second_ws.send_message(&second_room, "private", "c-1").await;
    assert_eq!(ack["seq"], 1, "each room counts from 1");
    assert!(
        first_ws.try_next_of_type("message", Duration::from_millis(700)).await.is_none(),
        "a message crossed into another room"
    );
}

#[tokio::test]
async fn a_bad_json_frame_gets_an_error_and_the_socket_stays_usable() {
    let node = TestNode::spawn().await;
    let (buyer, _, room_id) = pair_with_room(&node).await;
    let mut ws = buyer.ws_connect().await;
    for bad in [
        "{not json",
        "[]",
        "42",
        r#"{"type":"dance"}"#,
        r#"{"type":"send","room":"x"}"#,
        r#"{"type":"join"}"#,
        r#"{"type":"read","room":"x","seq":"one"}"#,
    ] {
        ws.send_text(bad).await;
        let error = ws.next_of_type("error").await;
        assert_eq!(error["code"], "bad_request", "for {bad}: {error}");
        assert!(error["message"].is_string(), "{error}");
    }
    ws.join(&room_id).await;
    ws.send_message(&room_id, "still here", "c-1").await;
}

#[tokio::test]
async fn a_text_over_4000_characters_is_invalid_but_4000_are_fine() {
    let node = TestNode::spawn().await;
    let (buyer, _, room_id) = pair_with_room(&node).await;
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    // Characters, not bytes: 4000 Hangul syllables are 12000 bytes of UTF-8.
    let longest = "한".repeat(4000);
    let ack = ws.send_message(&room_id, &longest, "c-long").await;
    assert_eq!(ack["seq"], 1);
    ws.send_json(&json!({"type": "send", "room": room_id, "text": "x".repeat(4001), "clientMsgId": "c-over"})).await;
    let error = ws.next_of_type("error").await;
    assert_eq!(error["code"], "invalid", "{error}");
    ws.send_json(&json!({"type": "send", "room": room_id, "text": "", "clientMsgId": "c-empty"})).await;
    let error = ws.next_of_type("error").await;
    assert_eq!(error["code"], "invalid", "{error}");
    let ack = ws.send_message(&room_id, "after", "c-after").await;
    assert_eq!(ack["seq"], 2, "refused texts take no seq");
}

#[tokio::test]
async fn an_oversized_frame_is_refused_and_the_socket_stays_open() {
    let node = TestNode::spawn_with(&[("BAZAAR_WS_MAX_FRAME_BYTES", "8192")]).await;
    let (buyer, _, room_id) = pair_with_room(&node).await;
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    let padding = "p".repeat(10_000);
    ws.send_json(&json!({"type": "send", "room": room_id, "text": "hi", "clientMsgId": "big", "padding": padding}))
        .await;
    let error = ws.next_of_type("error").await;
    assert_eq!(error["code"], "payload_too_large", "{error}");
    let ack = ws.send_message(&room_id, "small", "c-small").await;
    assert_eq!(ack["seq"], 1, "the oversized frame posted nothing");
}

#[tokio::test]
async fn sending_to_a_room_one_is_not_in_is_forbidden_and_the_socket_stays_open() {
    let node = TestNode::spawn().await;
    let (_, _, their_room) = pair_with_room(&node).await;
    let (buyer, _, my_room) = pair_with_room(&node).await;
    let mut ws = buyer.ws_connect().await;
    ws.send_json(&json!({"type": "send", "room": their_room, "text": "intrude", "clientMsgId": "c-1"})).await;
    let error = ws.next_of_type("error").await;
    assert_eq!(error["code"], "forbidden", "{error}");
    ws.join(&my_room).await;
    ws.send_message(&my_room, "mine", "c-2").await;
}

#[tokio::test]
async fn joining_a_room_one_is_not_in_closes_with_4403() {
    let node = TestNode::spawn().await;
    let (_, _, their_room) = pair_with_room(&node).await;
    let outsider = node.signup(Role::Buyer).await;
    let mut ws = outsider.ws_connect().await;
    ws.send_json(&json!({"type": "join", "room": their_room})).await;
    ws.expect_close_code(4403, FRAME_DEADLINE).await;
}

#[tokio::test]
async fn flooding_closes_with_4429() {
    let node = TestNode::spawn_with(&[("BAZAAR_WS_MESSAGES_PER_SECOND", "5"), ("BAZAAR_WS_BURST", "10")]).await;
    let (buyer, _, room_id) = pair_with_room(&node).await;
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    let typing = json!({"type": "typing", "room": room_id}).to_string();
    for _ in 0..60 {
        // The close can land while the flood is still going out; stop sending then.
        if !ws.try_send_text(&typing).await {
            break;
        }
    }
    ws.expect_close_code(4429, FRAME_DEADLINE).await;
}

#[tokio::test]
async fn a_paced_client_is_not_taken_for_a_flood() {
    let node = TestNode::spawn_with(&[("BAZAAR_WS_MESSAGES_PER_SECOND", "5"), ("BAZAAR_WS_BURST", "10")]).await;
    let (buyer, _, room_id) = pair_with_room(&node).await;
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    // Eight frames, each acked before the next: within the burst, so nothing may be refused.
    for n in 0..8 {
        ws.send_message(&room_id, "steady", &format!("c-{n}")).await;
    }
}

#[tokio::test]
async fn an_expired_token_closes_the_socket_with_4401() {
    let node = TestNode::spawn_with(&[("BAZAAR_ACCESS_TOKEN_TTL_SECS", "3")]).await;
    let (buyer, _, room_id) = pair_with_room(&node).await;
    let mut ws = buyer.ws_connect().await;
    ws.join(&room_id).await;
    ws.expect_close_code(4401, Duration::from_secs(12)).await;
}

#[tokio::test]
async fn order_status_changes_are_pushed_to_the_buyer() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(1_000, 3).await;
    let bystander = node.signup(Role::Buyer).await;
    let mut ws = buyer.ws_connect().await;
    let mut bystander_ws = bystander.ws_connect().await;
    let order = buyer.place_order(product["id"].as_str().unwrap(), 1).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    buyer.pay_ok(&order_id, "tok_visa").await;
    let pushed = ws
        .try_next_matching(EVENT_DEADLINE, |frame| {
            frame["type"] == "order" && frame["order"]["id"] == order_id.as_str() && frame["order"]["status"] == "PAID"
        })
        .await
        .unwrap_or_else(|| panic!("no PAID push; frames seen: {:?}", ws.backlog()));
    assert_eq!(pushed["order"]["buyerId"], buyer.id.as_str());
    bystander_ws.drain_for(Duration::from_millis(300)).await;
    assert!(
        bystander_ws.take_backlog().iter().all(|frame| frame["type"] != "order"),
        "another user's order was pushed to a bystander"
    );
}

#[tokio::test]
async fn a_cancelled_order_is_pushed_to_the_buyer() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(1_000, 3).await;
    let mut ws = buyer.ws_connect().await;
    let order = buyer.place_order(product["id"].as_str().unwrap(), 1).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    buyer.pay_ok(&order_id, "tok_decline").await;
    ws.try_next_matching(EVENT_DEADLINE, |frame| {
        frame["type"] == "order" && frame["order"]["id"] == order_id.as_str() && frame["order"]["status"] == "CANCELLED"
    })
    .await
    .unwrap_or_else(|| panic!("no CANCELLED push; frames seen: {:?}", ws.backlog()));
}

#[tokio::test]
async fn a_sender_cannot_pose_as_someone_else() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id, mut buyer_ws, mut seller_ws) = both_joined(&node).await;
    // Extra fields are the client's words, never the server's facts.
    buyer_ws
        .send_json(&json!({"type": "send", "room": room_id, "text": "it is me", "clientMsgId": "c-1", "from": seller.id, "seq": 99}))
        .await;
    let message = seller_ws.next_of_type("message").await;
    assert_eq!(message["from"], buyer.id.as_str(), "{message}");
    assert_eq!(message["seq"], 1, "{message}");
}

#[tokio::test]
async fn every_socket_of_a_member_gets_the_message() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = pair_with_room(&node).await;
    let mut phone = buyer.ws_connect().await;
    let mut laptop = buyer.ws_connect().await;
    phone.join(&room_id).await;
    laptop.join(&room_id).await;
    let mut seller_ws = seller.ws_connect().await;
    seller_ws.join(&room_id).await;
    seller_ws.send_message(&room_id, "to both", "c-1").await;
    for ws in [&mut phone, &mut laptop] {
        let message = ws.next_of_type("message").await;
        assert_eq!(message["text"], "to both");
    }
}

#[tokio::test]
async fn a_member_with_another_socket_stays_online_when_one_closes() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = pair_with_room(&node).await;
    let mut seller_ws = seller.ws_connect().await;
    seller_ws.join(&room_id).await;
    let mut phone = buyer.ws_connect().await;
    let mut laptop = buyer.ws_connect().await;
    phone.join(&room_id).await;
    laptop.join(&room_id).await;
    let both: BTreeSet<String> = [buyer.id.clone(), seller.id.clone()].into();
    seller_ws.next_matching("presence with both", |f| f["type"] == "presence" && online(f) == both).await;
    drop(phone);
    // Whatever presence follows must still show the buyer, who is online on the laptop.
    seller_ws.drain_for(Duration::from_millis(700)).await;
    let last_presence = seller_ws.take_backlog().into_iter().rfind(|f| f["type"] == "presence");
    if let Some(frame) = last_presence {
        assert_eq!(online(&frame), both, "the buyer vanished although a socket is still joined: {frame}");
    }
    laptop.send_message(&room_id, "still here", "c-1").await;
}

#[tokio::test]
async fn an_expired_token_cannot_open_a_socket() {
    let node = TestNode::spawn_with(&[("BAZAAR_ACCESS_TOKEN_TTL_SECS", "1")]).await;
    let buyer = node.signup(Role::Buyer).await;
    eventually(Duration::from_secs(10), "the token to expire", || async {
        match buyer.get("/auth/me").await.status {
            401 => Ok(()),
            other => Err(format!("HTTP {other}")),
        }
    })
    .await;
    assert_refused_with_401(node.api.try_ws_connect(Some(&buyer.access_token), None).await);
    assert_refused_with_401(node.api.try_ws_connect(None, Some(&buyer.access_token)).await);
}

#[tokio::test]
async fn joining_twice_still_delivers_each_message_once() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = pair_with_room(&node).await;
    let mut buyer_ws = buyer.ws_connect().await;
    buyer_ws.join(&room_id).await;
    buyer_ws.join(&room_id).await;
    let mut seller_ws = seller.ws_connect().await;
    seller_ws.join(&room_id).await;
    seller_ws.send_message(&room_id, "once", "c-1").await;
    buyer_ws.next_of_type("message").await;
    assert!(
        buyer_ws.try_next_of_type("message", Duration::from_millis(500)).await.is_none(),
        "a double join doubled the delivery"
    );
}

#[tokio::test]
async fn joining_a_room_that_does_not_exist_closes_with_4403() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let mut ws = buyer.ws_connect().await;
    ws.send_json(&json!({"type": "join", "room": uuid::Uuid::now_v7().to_string()})).await;
    ws.expect_close_code(4403, FRAME_DEADLINE).await;
}

#[tokio::test]
async fn joining_with_since_beyond_the_last_seq_replays_nothing() {
    let node = TestNode::spawn().await;
    let (buyer, seller, room_id) = pair_with_room(&node).await;
    let mut buyer_ws = buyer.ws_connect().await;
    buyer_ws.join(&room_id).await;
    buyer_ws.send_message(&room_id, "one", "c-1").await;
    let mut seller_ws = seller.ws_connect().await;
    seller_ws.send_json(&json!({"type": "join", "room": room_id, "since": 50})).await;
    let joined = seller_ws.next_of_type("joined").await;
    assert_eq!(joined["lastSeq"], 1);
    assert!(seller_ws.try_next_of_type("message", Duration::from_millis(500)).await.is_none());
}
