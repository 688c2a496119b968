//! Chat brokered by Kafka: each node's socket hub reads the chat topic itself, so a node whose
//! cluster sessions are cut while Kafka stays up still delivers every message of a room to its
//! sockets, once each and in seq order.
//!
//! Every session between two nodes runs through a TCP link of the test's own (one per ordered
//! pair: each node's config file names its peers at the links' ports), so cutting a node's links
//! leaves the node itself, its database and its broker running, and the other two connected.
//! Runs on the real-backends pass (scripts/test.sh sets `TEST_KAFKA_BROKERS`); skipped without it.

use crate::support::{eventually, member_status, Cluster, Role, TokenIn, WsClient, COOKIE, MEMBERSHIP_DEADLINE};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A TCP relay from a port of its own to one node's cluster port, which the test cuts (every
/// connection through it is closed and new ones are closed as soon as accepted) and heals.
struct Link {
    up: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Link {
    async fn open(port: u16, target: SocketAddr) -> Link {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("the link's port is free");
        let (up, up_rx) = watch::channel(true);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*up_rx.borrow() {
                    continue;
                }
                let mut up_rx = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up_rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Link { up, task }
    }

    fn set(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.set(false);
        self.task.abort();
    }
}

/// Waits until `observer` lists `node` with `status` (`up` or `down`).
async fn wait_for_status(cluster: &Cluster, observer: usize, node: usize, status: &str) {
    let (api, name) = (cluster.api(observer), cluster.name(node).to_owned());
    eventually(MEMBERSHIP_DEADLINE, &format!("{} to list {name} {status}", api.name), || async {
        let view = api.cluster_view().await?;
        match member_status(&view, &name) {
            Some(seen) if seen == status => Ok(()),
            other => Err(format!("{name} is {other:?}: {view}")),
        }
    })
    .await;
}

/// The seqs of the room's `message` frames the socket gets: `count` of them, then nothing more
/// for a moment (a duplicate would arrive right behind its first copy).
async fn seqs_received(ws: &mut WsClient, room: &str, count: usize) -> Vec<i64> {
    let mut seqs: Vec<i64> = ws.messages(room, count).await.iter().map(|m| m["seq"].as_i64().unwrap_or(-1)).collect();
    ws.drain_for(Duration::from_millis(1500)).await;
    let extra = ws.take_backlog().into_iter().filter(|f| f["type"] == "message" && f["room"] == room);
    seqs.extend(extra.map(|m| m["seq"].as_i64().unwrap_or(-1)));
    seqs
}

/// Posts `texts` from `ws` and returns their seqs, from the acks.
async fn post_all(ws: &mut WsClient, room: &str, texts: &[String]) -> Vec<i64> {
    let mut seqs = Vec::new();
    for text in texts {
        let ack = ws.send_message(room, text, &format!("cmid-{}", uuid::Uuid::new_v4())).await;
        seqs.push(ack["seq"].as_i64().expect("an ack carries the seq"));
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_its_peers_still_gets_every_message_of_the_room_from_kafka() {
    if std::env::var("TEST_KAFKA_BROKERS").map_or(true, |v| v.trim().is_empty()) {
        eprintln!("skipped: TEST_KAFKA_BROKERS is unset (the real-backends pass of scripts/test.sh sets it)");
        return;
    }
    let mut cluster = Cluster::configure(3, &[]);
    let base = std::fs::read_to_string(cluster.config_path()).expect("the cluster config");
    let targets: Vec<SocketAddr> =
        cluster.specs().iter().map(|s| s.cluster_addr.parse().expect("an ip:port cluster address")).collect();
    // links[i][j]: how node i reaches node j.
    let ports = crate::support::free_ports(6);
    let mut links: Vec<Vec<Option<(u16, Link)>>> = (0..3).map(|_| (0..3).map(|_| None).collect()).collect();
    let mut next_port = ports.into_iter();
    for (i, row) in links.iter_mut().enumerate() {
        for (j, slot) in row.iter_mut().enumerate() {
            if i != j {
                let port = next_port.next().expect("six ports");
                *slot = Some((port, Link::open(port, targets[j]).await));
            }
        }
    }
    for (i, row) in links.iter().enumerate() {
        let mut toml = base.clone();
        for (j, slot) in row.iter().enumerate() {
            if let Some((port, _)) = slot {
                let own = format!("cluster_addr = \"{}\"", targets[j]);
                assert!(toml.contains(&own), "the config names {}'s cluster address", cluster.name(j));
                toml = toml.replace(&own, &format!("cluster_addr = \"127.0.0.1:{port}\""));
            }
        }
        cluster.set_node_config(i, &toml);
    }
    cluster.start_nodes(&[0, 1, 2], COOKIE).await;
    cluster.wait_until_members_up(&[0, 1, 2], &[0, 1, 2], MEMBERSHIP_DEADLINE).await;

    let (a, b) = (cluster.api(0), cluster.api(1));
    let buyer = a.signup_and_login(Role::Buyer).await;
    let seller = b.signup_and_login(Role::Seller).await;
    let room = b.post("/chat/rooms", Some(&seller.token), &json!({"peerId": buyer.id})).await.expect(201);
    let room = room["id"].as_str().expect("a room id").to_owned();
    let mut buyer_ws = a.ws_connect(&buyer.token, TokenIn::Header).await;
    let mut seller_ws = b.ws_connect(&seller.token, TokenIn::Header).await;
    for ws in [&mut buyer_ws, &mut seller_ws] {
        let joined: Value = ws.join_or_error(&room, None).await;
        assert_eq!(joined["type"], "joined", "{joined}");
    }
    let before: Vec<String> = (1..=3).map(|i| format!("before the cut #{i}")).collect();
    assert_eq!(post_all(&mut seller_ws, &room, &before).await, vec![1, 2, 3]);
    assert_eq!(seqs_received(&mut buyer_ws, &room, 3).await, vec![1, 2, 3], "with every link up");

    // Cut every session of n1: its links to n2 and n3 and theirs to it. Kafka stays up.
    let set_n1 = |up: bool| {
        for (i, row) in links.iter().enumerate() {
            for (j, slot) in row.iter().enumerate() {
                if let Some((_, link)) = slot {
                    if i == 0 || j == 0 {
                        link.set(up);
                    }
                }
            }
        }
    };
    set_n1(false);
    for (observer, node) in [(0, 1), (0, 2), (1, 0), (2, 0)] {
        wait_for_status(&cluster, observer, node, "down").await;
    }
    let during: Vec<String> = (1..=20).map(|i| format!("during the cut #{i}")).collect();
    let posted = post_all(&mut seller_ws, &room, &during).await;
    assert_eq!(posted, (4..=23).collect::<Vec<i64>>(), "n2 and n3 go on without n1");
    assert_eq!(
        seqs_received(&mut buyer_ws, &room, during.len()).await,
        posted,
        "the socket on the cut-off node gets every message, in order, once"
    );

    set_n1(true);
    cluster.wait_until_members_up(&[0, 1, 2], &[0, 1, 2], MEMBERSHIP_DEADLINE).await;
    let after: Vec<String> = (1..=5).map(|i| format!("after healing #{i}")).collect();
    let posted = post_all(&mut seller_ws, &room, &after).await;
    assert_eq!(posted, (24..=28).collect::<Vec<i64>>());
    assert_eq!(
        seqs_received(&mut buyer_ws, &room, after.len()).await,
        posted,
        "healed, both paths deliver again and the socket still gets each message once"
    );
    assert_eq!(
        seqs_received(&mut seller_ws, &room, 28).await,
        (1..=28).collect::<Vec<i64>>(),
        "the sender's own socket got every message once"
    );
}
