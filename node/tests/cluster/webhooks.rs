//! Webhooks on a cluster: an endpoint registered through one node gets the events decided on
//! any node, once each, and a delivery in flight on the sending node when it is killed is sent
//! again by the node that takes the role over.

use crate::common::series_total;
use crate::support::{eventually, Cluster, Role};
use crate::webhook_receiver::{signed_by, Answer, Receiver};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_the_receiver_from_every_node_and_survive_the_sender_being_killed() {
    let mut cluster = Cluster::start(
        3,
        3,
        &[
            ("BAZAAR_WEBHOOK_ALLOW_PRIVATE_ADDRESSES", "true"),
            ("BAZAAR_WEBHOOK_RETRY_BASE_MS", "200"),
            ("BAZAAR_WEBHOOK_RETRY_MAX_MS", "400"),
            ("BAZAAR_WEBHOOK_POLL_MS", "100"),
            // Long enough to find and kill the sender before its attempt times out.
            ("BAZAAR_WEBHOOK_TIMEOUT_MS", "8000"),
        ],
    )
    .await;
    let receiver = Receiver::start().await;
    receiver.plan(&[Answer::Never]);
    let apis: Vec<_> = (0..3).map(|i| cluster.api(i)).collect();
    let seller = apis[0].signup_and_login(Role::Seller).await;
    let buyer = apis[1].signup_and_login(Role::Buyer).await;
    let endpoint = apis[0]
        .post("/webhooks", Some(&seller.token), &json!({"url": receiver.url(), "events": ["OrderPlaced"]}))
        .await
        .expect(201);
    let secret = endpoint["secret"].as_str().unwrap().to_owned();
    let product = apis[2].list_product(&seller, 1_000, 10).await;
    let product_id = product["id"].as_str().unwrap().to_owned();
    apis[1].place_order(&buyer, &product_id, 1).await;

    // The first attempt hangs at the receiver; the node holding it is the sender.
    let first = receiver.wait_for(1, DEADLINE).await;
    let sender = eventually(DEADLINE, "the sending node to show its attempt", || async {
        for (index, api) in apis.iter().enumerate() {
            let scrape = api.get("/metrics", None).await.text;
            if series_total(&scrape, "bazaar_webhook_attempts_in_flight") >= 1.0 {
                return Ok(index);
            }
        }
        Err("no node shows an attempt in flight".to_owned())
    })
    .await;
    cluster.kill9(sender).await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != sender).collect();

    let again = receiver.wait_for(2, DEADLINE).await;
    assert_eq!(again[1].event_id(), first[0].event_id(), "the delivery cut off is sent again");
    // By another node, as a first attempt: the killed one never recorded its own.
    assert_eq!(again[1].header("bazaar-attempt"), "1");
    assert!(signed_by(&again[1], &secret));

    // Orders placed through each survivor arrive too, once each.
    for &node in &survivors {
        apis[node].place_order(&buyer, &product_id, 1).await;
    }
    receiver.wait_for(4, DEADLINE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut per_event: BTreeMap<String, usize> = BTreeMap::new();
    for request in receiver.received() {
        assert!(signed_by(&request, &secret));
        *per_event.entry(request.event_id()).or_default() += 1;
    }
    let counts: Vec<usize> = per_event.values().copied().collect();
    assert_eq!(per_event.len(), 3, "{per_event:?}");
    assert_eq!(per_event[&first[0].event_id()], 2, "{per_event:?}");
    assert_eq!(counts.iter().filter(|c| **c == 1).count(), 2, "each later event once: {per_event:?}");
}
