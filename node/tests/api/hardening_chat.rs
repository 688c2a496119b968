//! Issue 9, findings 6 and 8: a join's replay of any length arrives whole and in order without
//! dropping the socket, and `GET /chat/rooms` is paged.

use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Raised frame limits: the test posts a long backlog through one socket, quickly.
const FAST_CHAT: [(&str, &str); 3] = [
    ("BAZAAR_WS_MESSAGES_PER_SECOND", "100000"),
    ("BAZAAR_WS_BURST", "100000"),
    ("BAZAAR_SQLITE_SYNCHRONOUS", "normal"),
];
/// Messages in the room: far more than the 256 frames a client's send queue holds.
const BACKLOG: i64 = 2_000;
/// Sends in flight on the posting socket before it reads their acks (under its send queue).
const POST_BATCH: i64 = 100;

/// A text of some weight (about 300 bytes), so the backlog is far larger than socket buffers.
fn text_of(seq: i64) -> String {
    format!("message {seq} {}", "x".repeat(300))
}

/// Posts `count` messages through `ws` (not joined, so it only gets acks), `POST_BATCH` at a time.
async fn post_many(ws: &mut WsClient, room_id: &str, first: i64, count: i64) {
    post_many_of(ws, room_id, first, count, text_of).await;
}

/// [`post_many`] with texts from `text`.
async fn post_many_of(ws: &mut WsClient, room_id: &str, first: i64, count: i64, text: fn(i64) -> String) {
    let mut next = first;
    while next < first + count {
        let batch = POST_BATCH.min(first + count - next);
        for seq in next..next + batch {
            let frame = json!({"type": "send", "room": room_id, "text": text(seq), "clientMsgId": format!("m{seq}")});
            ws.send_json(&frame).await;
        }
        for _ in 0..batch {
            let ack = ws.next_matching("an ack", |f| f["type"] == "ack" || f["type"] == "error").await;
            assert_eq!(ack["type"], "ack", "{ack}");
        }
        next += batch;
    }
}

/// A room with `BACKLOG` messages, its two members, and the buyer's posting socket.
async fn room_with_backlog(node: &TestNode) -> (TestUser, TestUser, String, WsClient) {
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let room_id = buyer.open_room(&seller).await["id"].as_str().expect("a room id").to_owned();
    let mut poster = buyer.ws_connect().await;
    post_many(&mut poster, &room_id, 1, BACKLOG).await;
    (buyer, seller, room_id, poster)
}

/// Reads `count` message frames of `room_id` and checks they are seqs `first..first+count`.
async fn expect_seqs(ws: &mut WsClient, room_id: &str, first: i64, count: i64) {
    for expected in first..first + count {
        let frame = ws
            .next_matching_within(&format!("message seq {expected}"), Duration::from_secs(20), |f| {
                f["type"] == "message" && f["room"] == room_id
            })
            .await;
        assert_eq!(frame["seq"].as_i64(), Some(expected), "out of order or missing: {frame}");
        assert_eq!(frame["text"].as_str(), Some(text_of(expected).as_str()));
    }
}

fn join_since(room_id: &str, since: i64) -> Value {
    json!({"type": "join", "room": room_id, "since": since})
}

#[tokio::test]
async fn a_join_since_zero_replays_all_2000_messages_in_order_and_the_socket_stays_open() {
    let node = TestNode::spawn_with(&FAST_CHAT).await;
    let (_buyer, seller, room_id, mut poster) = room_with_backlog(&node).await;

    let mut reader = seller.ws_connect().await;
    reader.send_json(&join_since(&room_id, 0)).await;
    let joined = reader.next_of_type("joined").await;
    assert_eq!(joined["lastSeq"].as_i64(), Some(BACKLOG));
    expect_seqs(&mut reader, &room_id, 1, BACKLOG).await;

    // Still open and live: the next message arrives as the next seq.
    post_many(&mut poster, &room_id, BACKLOG + 1, 1).await;
    expect_seqs(&mut reader, &room_id, BACKLOG + 1, 1).await;
}

#[tokio::test]
async fn a_join_since_1700_replays_exactly_the_last_300_then_live_messages_follow() {
    let node = TestNode::spawn_with(&FAST_CHAT).await;
    let (_buyer, seller, room_id, mut poster) = room_with_backlog(&node).await;

    let mut reader = seller.ws_connect().await;
    reader.send_json(&join_since(&room_id, 1_700)).await;
    reader.next_of_type("joined").await;
    expect_seqs(&mut reader, &room_id, 1_701, 300).await;
    post_many(&mut poster, &room_id, BACKLOG + 1, 1).await;
    // The frame after the 300 is the live one: nothing before 1701, nothing twice.
    expect_seqs(&mut reader, &room_id, BACKLOG + 1, 1).await;
    reader.drain_for(Duration::from_millis(300)).await;
    let extra: Vec<_> = reader.take_backlog().into_iter().filter(|f| f["type"] == "message").collect();
    assert!(extra.is_empty(), "frames after the replay and the live message: {extra:?}");
}

#[tokio::test]
async fn messages_posted_during_a_replay_arrive_once_and_in_order_after_it() {
    let node = TestNode::spawn_with(&FAST_CHAT).await;
    let (_buyer, seller, room_id, mut poster) = room_with_backlog(&node).await;

    let mut reader = seller.ws_connect().await;
    reader.send_json(&join_since(&room_id, 0)).await;
    reader.next_of_type("joined").await;
    // The reader has taken nothing of the replay yet, so the server is still sending it (its
    // queue and the socket's buffers hold far less than 2,000 messages of 300 bytes) while the
    // new messages are committed.
    post_many(&mut poster, &room_id, BACKLOG + 1, 20).await;
    expect_seqs(&mut reader, &room_id, 1, BACKLOG + 20).await;
    reader.drain_for(Duration::from_millis(300)).await;
    let extra: Vec<_> = reader.take_backlog().into_iter().filter(|f| f["type"] == "message").collect();
    assert!(extra.is_empty(), "duplicated or extra messages: {extra:?}");
}

#[tokio::test]
async fn the_room_list_is_paged_newest_first_with_each_rooms_last_message() {
    let node = TestNode::spawn().await;
    let buyer = node.signup(Role::Buyer).await;
    let mut room_ids = Vec::new();
    for _ in 0..5 {
        let seller = node.signup(Role::Seller).await;
        room_ids.push(buyer.open_room(&seller).await["id"].as_str().expect("a room id").to_owned());
    }
    // A last message in two of them.
    let mut ws = buyer.ws_connect().await;
    ws.send_message(&room_ids[1], "hello one", "c1").await;
    ws.send_message(&room_ids[3], "first", "c2").await;
    ws.send_message(&room_ids[3], "hello three", "c3").await;

    let first = buyer.get("/chat/rooms?limit=2").await.expect(200);
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2), "{first}");
    assert!(first["nextCursor"].is_string(), "more rooms than a page: {first}");

    let rooms = buyer.list_all("/chat/rooms?limit=2").await;
    let listed: Vec<&str> = rooms.iter().map(|r| r["id"].as_str().expect("a room id")).collect();
    // Newest first, each once, all of them.
    let newest_first: Vec<&str> = room_ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    let last_of = |id: &str| rooms.iter().find(|r| r["id"] == id).map(|r| r["lastMessage"].clone());
    assert_eq!(last_of(&room_ids[1]).unwrap()["text"], "hello one");
    assert_eq!(last_of(&room_ids[3]).unwrap()["text"], "hello three");
    assert_eq!(last_of(&room_ids[3]).unwrap()["seq"], 2);
    assert!(last_of(&room_ids[0]).unwrap().is_null());

    // The default page holds them all; a cursor from nowhere shows nothing, and bad limits say why.
    let all = buyer.get("/chat/rooms").await.expect(200);
    assert_eq!(all["items"].as_array().map(Vec::len), Some(5));
    assert!(all["nextCursor"].is_null());
    let nowhere = buyer.get("/chat/rooms?cursor=garbage").await.expect(200);
    assert_eq!(nowhere["items"].as_array().map(Vec::len), Some(0));
    buyer.get("/chat/rooms?limit=many").await.expect_error(400, "bad_request");
}

/// The node's peak resident memory so far, in KiB (`VmHWM`).
fn peak_rss_kib(node: &TestNode) -> u64 {
    let pid = node.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the node's /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line")
}

/// Messages in the room whose replays are measured: 16 MB of text.
const LARGE_BACKLOG: i64 = 4_000;

/// A text near the 4,000-character limit.
fn long_text_of(seq: i64) -> String {
    format!("{seq:>6} {}", "y".repeat(3_900))
}

#[tokio::test]
async fn four_replays_of_a_16_mb_backlog_at_once_add_memory_independent_of_it() {
    let node = TestNode::spawn_with(&FAST_CHAT).await;
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let room_id = buyer.open_room(&seller).await["id"].as_str().expect("a room id").to_owned();
    let mut poster = buyer.ws_connect().await;
    post_many_of(&mut poster, &room_id, 1, LARGE_BACKLOG, long_text_of).await;

    let before = peak_rss_kib(&node);
    let mut readers = Vec::new();
    for _ in 0..4 {
        let mut reader = seller.ws_connect().await;
        reader.send_json(&join_since(&room_id, 0)).await;
        readers.push(reader);
    }
    let room = room_id.as_str();
    futures_util::future::join_all(readers.iter_mut().map(|reader| async move {
        reader.next_of_type("joined").await;
        for expected in 1..=LARGE_BACKLOG {
            let frame = reader
                .next_matching_within("a replayed message", Duration::from_secs(20), |f| f["type"] == "message")
                .await;
            assert_eq!(frame["seq"].as_i64(), Some(expected));
            assert_eq!(frame["room"], room);
        }
    }))
    .await;
    let grown_mib = peak_rss_kib(&node).saturating_sub(before) / 1024;
    // Measured in a debug build: loading the backlog whole raised the peak by 101 MiB (48 MiB
    // for half this backlog: it grows with it); paging holds a page and the send queue per
    // join, and raised it by 26 MiB (23 MiB for half).
    assert!(grown_mib < 40, "four replays of a 16 MB backlog raised the peak memory by {grown_mib} MiB");
    eprintln!("four replays of a 16 MB backlog raised the peak memory by {grown_mib} MiB");
}
