//! Chat across nodes: sockets on different nodes share one room, one sequence and one presence,
//! and order pushes reach the buyer's socket wherever it is connected.

use crate::support::{eventually, Cluster, Role, TokenIn, EVENT_DEADLINE, FRAME_DEADLINE};
use serde_json::{json, Value};

/// Whether `frame` is a presence frame of `room` listing every id in `users`.
fn presence_lists(frame: &Value, room: &str, users: &[&str]) -> bool {
    frame["type"] == "presence"
        && frame["room"] == room
        && frame["online"].as_array().is_some_and(|online| users.iter().all(|u| online.iter().any(|o| o == u)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_between_sockets_on_different_nodes() {
    let cluster = Cluster::start(3, 3, &[]).await;
    let (n1, n2, n3) = (cluster.api(0), cluster.api(1), cluster.api(2));
    let buyer = n1.signup_and_login(Role::Buyer).await;
    let seller = n2.signup_and_login(Role::Seller).await;

    // One room per pair, the same from either side and through any node.
    let room = n3.post("/chat/rooms", Some(&buyer.token), &json!({"peerId": seller.id})).await.expect(201);
    assert_eq!(room["members"], json!([buyer.id, seller.id]), "a room lists the buyer first: {room}");
    let room_id = room["id"].as_str().expect("a room id").to_owned();
    let again = n2.post("/chat/rooms", Some(&seller.token), &json!({"peerId": buyer.id})).await.expect(200);
    assert_eq!(again["id"], room_id.as_str(), "the seller opening the pair's room through n2 gets the same room");

    let mut buyer_ws = n1.ws_connect(&buyer.token, TokenIn::Query).await;
    let mut seller_ws = n2.ws_connect(&seller.token, TokenIn::Header).await;
    let joined = buyer_ws.join_or_error(&room_id, None).await;
    assert_eq!(joined["type"], "joined", "the buyer joins on n1: {joined}");
    assert_eq!(joined["lastSeq"], 0, "a new room has no messages: {joined}");
    let joined = seller_ws.join_or_error(&room_id, None).await;
    assert_eq!(joined["type"], "joined", "the seller joins on n2: {joined}");

    // Presence spans nodes: each side eventually sees both members online.
    let both = [buyer.id.as_str(), seller.id.as_str()];
    for ws in [&mut buyer_ws, &mut seller_ws] {
        ws.next_matching_within("presence listing both members", FRAME_DEADLINE, |f| {
            presence_lists(f, &room_id, &both)
        })
        .await;
    }

    // Alternate senders; each ack carries the next seq of the room.
    let script: Vec<(bool, String, String)> = (1..=6)
        .map(|i| {
            let from_buyer = i % 2 == 1;
            let text = format!("{} says hello #{i} é中", if from_buyer { "buyer" } else { "seller" });
            (from_buyer, text, format!("cmid-{i}-{}", uuid::Uuid::new_v4()))
        })
        .collect();
    for (index, (from_buyer, text, client_msg_id)) in script.iter().enumerate() {
        let ws = if *from_buyer { &mut buyer_ws } else { &mut seller_ws };
        let ack = ws.send_message(&room_id, text, client_msg_id).await;
        assert_eq!(ack["seq"], index as i64 + 1, "the ack of message {} carries its seq: {ack}", index + 1);
    }
    let on_n1 = buyer_ws.messages(&room_id, script.len()).await;
    let on_n2 = seller_ws.messages(&room_id, script.len()).await;
    for (socket, received) in [("buyer on n1", &on_n1), ("seller on n2", &on_n2)] {
        let seqs: Vec<i64> = received.iter().map(|m| m["seq"].as_i64().unwrap_or(-1)).collect();
        assert_eq!(seqs, (1..=6).collect::<Vec<i64>>(), "the {socket} receives seq 1..6 in order: {received:?}");
        for (message, (from_buyer, text, _)) in received.iter().zip(&script) {
            let author = if *from_buyer { &buyer.id } else { &seller.id };
            assert_eq!(message["text"], text.as_str(), "the {socket} receives the text unchanged: {message}");
            assert_eq!(message["from"], author.as_str(), "the {socket} sees the author: {message}");
        }
    }
    let ids = |frames: &[Value]| frames.iter().map(|m| m["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(&on_n1), ids(&on_n2), "both sockets receive the same messages");

    // A resent clientMsgId is acked with its original seq and creates nothing: the next new
    // message is seq 7, and no frame comes in between.
    let (_, last_text, last_id) = &script[5];
    let ack = seller_ws.send_message(&room_id, last_text, last_id).await;
    assert_eq!(ack["seq"], 6, "a resent clientMsgId is acked with its original seq: {ack}");
    let ack = buyer_ws.send_message(&room_id, "one more", "cmid-7").await;
    assert_eq!(ack["seq"], 7, "the message after a resend takes the next seq: {ack}");
    for ws in [&mut buyer_ws, &mut seller_ws] {
        let next = ws.messages(&room_id, 1).await.remove(0);
        assert_eq!(
            (next["seq"].as_i64(), next["text"].as_str()),
            (Some(7), Some("one more")),
            "after a resend: {next}"
        );
    }

    // A socket on a third node replays the whole room.
    let mut replay_ws = n3.ws_connect(&buyer.token, TokenIn::Header).await;
    let joined = replay_ws.join_or_error(&room_id, Some(0)).await;
    assert_eq!(joined["lastSeq"], 7, "joining on n3 reports the room's last seq: {joined}");
    let replayed = replay_ws.messages(&room_id, 7).await;
    let seqs: Vec<i64> = replayed.iter().map(|m| m["seq"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<i64>>(), "the replay on n3 is seq 1..7 in order: {replayed:?}");
    assert_eq!(ids(&replayed[..6]), ids(&on_n1), "the replay carries the same messages as the live stream");
    let history = n3.get(&format!("/chat/rooms/{room_id}/messages?limit=200"), Some(&seller.token)).await.expect(200);
    let items = history["items"].as_array().expect("history items");
    let history_seqs: Vec<i64> = items.iter().map(|m| m["seq"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(history_seqs, (1..=7).rev().collect::<Vec<i64>>(), "the history via n3, newest first: {history}");

    // An order paid through n2 pushes its status to the buyer's sockets on n1 and n3.
    let product = n2.list_product(&seller, 5_000, 4).await;
    let order = n2.place_order(&buyer, product["id"].as_str().unwrap(), 1).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    n2.pay(&buyer, &order_id).await;
    let path = format!("/orders/{order_id}");
    eventually(EVENT_DEADLINE, "the order to be PAID", || async {
        let reply = n2.get(&path, Some(&buyer.token)).await;
        if reply.json["status"] == "PAID" {
            Ok(())
        } else {
            Err(format!("HTTP {} {}", reply.status, reply.text))
        }
    })
    .await;
    for ws in [&mut buyer_ws, &mut replay_ws] {
        let push = ws
            .next_matching_within("order push of PAID", EVENT_DEADLINE, |f| {
                f["type"] == "order" && f["order"]["id"] == order_id.as_str() && f["order"]["status"] == "PAID"
            })
            .await;
        assert_eq!(push["order"]["buyerId"], buyer.id.as_str(), "the pushed order is the buyer's own: {push}");
    }
}
