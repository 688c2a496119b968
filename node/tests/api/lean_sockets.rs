//! Small sockets (issue 11): a socket's buffers grow for a large frame and are given back after
//! it, and the socket goes on carrying chat both ways.

use crate::support::*;
use futures_util::future::join_all;
use serde_json::json;
use std::time::Duration;

/// The node's resident memory, from `/proc/PID/status`, in bytes.
fn rss_of(node: &TestNode) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).expect("the node's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// Buffers given back so far, from `/metrics`.
async fn released(node: &TestNode) -> f64 {
    series_total(&node.get("/metrics").await.text, "bazaar_ws_buffers_released_total")
}

#[tokio::test]
async fn a_socket_that_sent_large_frames_still_carries_chat_both_ways_and_gives_its_buffer_back() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let room = buyer.open_room(&seller).await["id"].as_str().expect("a room id").to_owned();
    let mut buyer_ws = buyer.ws_connect().await;
    let mut seller_ws = seller.ws_connect().await;
    buyer_ws.join(&room).await;
    seller_ws.join(&room).await;
    let before = released(&node).await;

    // Under the soft limit (64 KiB) but far over the 4 KiB read buffer: read and answered.
    let long_text = "가".repeat(20_000);
    buyer_ws.send_json(&json!({"type": "send", "room": room, "text": long_text, "clientMsgId": "long"})).await;
    let error = buyer_ws.next_of_type("error").await;
    assert_eq!(error["code"], "invalid", "a 20,000-character text is over the chat limit: {error}");
    // Over the soft limit, under the hard one (1 MiB): refused with an error frame, socket open.
    buyer_ws.send_text(&"x".repeat(700_000)).await;
    let error = buyer_ws.next_of_type("error").await;
    assert_eq!(error["code"], "payload_too_large", "{error}");

    let ack = buyer_ws.send_message(&room, "after the large frames", "c-1").await;
    assert_eq!(ack["seq"], 1, "{ack}");
    let message = seller_ws.next_of_type("message").await;
    assert_eq!(message["text"], "after the large frames");
    seller_ws.send_message(&room, "and back", "s-1").await;
    let message = buyer_ws.next_matching("the seller's message", |frame| frame["text"] == "and back").await;
    assert_eq!(message["seq"], 2);
    // Both large frames grew the buyer's read buffer; each was given back (one rebuild may
    // cover both when the second arrived before the first was handled).
    let given_back = released(&node).await - before;
    assert!(given_back >= 1.0, "the grown buffers were kept: {given_back} given back");
}

#[tokio::test]
async fn the_node_gives_back_the_memory_that_large_frames_from_200_sockets_took() {
    let node = TestNode::spawn_with(&[("BAZAAR_WS_MAX_CONNECTIONS_PER_USER", "1000")]).await;
    let user = node.signup(Role::Buyer).await;
    let mut sockets = Vec::new();
    for _ in 0..200 {
        sockets.push(user.ws_connect().await);
    }
    // The sockets and the first frames' code paths settle before the baseline is read.
    sockets[0].send_text(&"w".repeat(300_000)).await;
    assert_eq!(sockets[0].next_of_type("error").await["code"], "payload_too_large");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_of(&node);

    // 200 frames of 300 KB (over the soft limit, under the hard one): 60 MB that a socket keeping
    // its grown buffer would hold until it closes. Eight sockets at a time.
    let frame = "z".repeat(300_000);
    for batch in sockets.chunks_mut(8) {
        join_all(batch.iter_mut().map(|ws| async {
            ws.send_text(&frame).await;
            let error = ws.next_of_type("error").await;
            assert_eq!(error["code"], "payload_too_large", "{error}");
        }))
        .await;
    }
    // Every socket is still open and holds what it needs for small frames only.
    let allowed = 20 << 20;
    let grown = eventually(Duration::from_secs(10), "the node's memory to fall back", || async {
        let grown = rss_of(&node).saturating_sub(before);
        if grown <= allowed {
            Ok(grown)
        } else {
            Err(format!("RSS is {} MiB over what it was before the large frames", grown >> 20))
        }
    })
    .await;
    eprintln!("RSS after 200 large frames: {} KiB over before", grown >> 10);
    for ws in sockets.iter_mut().step_by(20) {
        ws.send_text("not json").await;
        assert_eq!(ws.next_of_type("error").await["code"], "bad_request", "the socket still answers");
    }
}
