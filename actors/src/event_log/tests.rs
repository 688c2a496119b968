//! One suite for both implementations of [`EventLog`]: every test runs on the embedded log, and
//! on Kafka too when `TEST_KAFKA_BROKERS` names a broker (the test script starts one), each test
//! with topics of its own.

use super::embedded::{Appenders, EmbeddedLog};
use super::kafka::{KafkaConfig, KafkaLog, TOPICS};
use super::{EventLog, LogRecord, Partition};
use crate::store::test_support::fresh_store;
use crate::store::{append_events, outbox, Store};
use bazaar_protocol::events::{topics, Envelope, Event, StockChanged};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The logs to run a test on, each over `store`.
async fn logs(store: &Store) -> Vec<Arc<dyn EventLog>> {
    logs_notified(store, &Arc::new(Notify::new())).await
}

/// The logs to run a test on; `appended` is what the relay notifies after publishing.
async fn logs_notified(store: &Store, appended: &Arc<Notify>) -> Vec<Arc<dyn EventLog>> {
    let mut logs: Vec<Arc<dyn EventLog>> =
        vec![Arc::new(EmbeddedLog::new(store.clone(), appended.clone(), Appenders::ThisNode, 100))];
    if let Some(brokers) = std::env::var("TEST_KAFKA_BROKERS").ok().filter(|b| !b.trim().is_empty()) {
        let config = KafkaConfig {
            brokers: brokers.split(',').map(str::to_owned).collect(),
            topic_prefix: format!("unit-{}.", uuid::Uuid::new_v4().simple()),
            partitions: 3,
            replication: 1,
            connect_timeout: Duration::from_secs(20),
        };
        logs.push(Arc::new(KafkaLog::connect(&config, appended.clone()).await.expect("the test broker answers")));
    }
    logs
}

fn stock_event(product: &str, seq: i64) -> Envelope {
    let event = Event::StockChanged(StockChanged {
        product_id: product.to_owned().into(),
        stock: 100 - seq,
        delta: -1,
        order_id: None,
    });
    Envelope::new(product, seq, chrono::Utc::now(), event)
}

async fn commit(store: &Store, events: &[Envelope]) {
    let mut tx = store.begin().await.unwrap();
    append_events(&mut tx, events).unwrap();
    store.commit(tx).await.unwrap();
}

/// Everything in the partitions of `topics` from the start, partition by partition.
async fn read_all(log: &dyn EventLog, topics: &[&str]) -> HashMap<Partition, Vec<LogRecord>> {
    let mut all = HashMap::new();
    for partition in log.partitions_of(topics) {
        let mut records: Vec<LogRecord> = Vec::new();
        loop {
            let from = records.last().map_or(0, |r| r.offset + 1);
            let page = log.fetch(&partition, from, 100, Duration::from_millis(200)).await.unwrap();
            if page.is_empty() {
                break;
            }
            records.extend(page);
        }
        all.insert(partition, records);
    }
    all
}

#[tokio::test]
async fn the_relay_publishes_every_event_once_in_order_per_entity_and_empties_the_outbox() {
    let (store, _dir) = fresh_store().await;
    for log in logs(&store).await {
        // Eight products, ten events each, interleaved across commits.
        for seq in 1..=10 {
            let events: Vec<Envelope> = (0..8).map(|p| stock_event(&format!("{}-p{p}", log.kind()), seq)).collect();
            commit(&store, &events).await;
        }
        let mut published = 0;
        loop {
            let batch = log.relay(&store, 7).await.unwrap();
            if batch.is_empty() {
                break;
            }
            published += batch.len();
        }
        assert_eq!(published, 80, "{}", log.kind());
        assert!(outbox::pending(&store, 10).await.unwrap().is_empty(), "{}: outbox drained", log.kind());

        let all = read_all(&*log, &[topics::ORDERS]).await;
        let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
        for records in all.values() {
            assert!(records.windows(2).all(|w| w[0].offset < w[1].offset), "{}: offsets increase", log.kind());
            for record in records {
                seen.entry(record.envelope.entity_id.clone()).or_default().push(record.envelope.seq);
            }
        }
        assert_eq!(seen.len(), 8, "{}: every product", log.kind());
        for (product, seqs) in seen {
            assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "{}: {product} in order, once each", log.kind());
        }
    }
}

#[tokio::test]
async fn a_reader_resumes_from_its_offset_and_waits_for_what_comes_next() {
    let (store, _dir) = fresh_store().await;
    let appended = Arc::new(Notify::new());
    for log in logs_notified(&store, &appended).await {
        let product = format!("{}-resume", log.kind());
        commit(&store, &[stock_event(&product, 1), stock_event(&product, 2)]).await;
        while !log.relay(&store, 100).await.unwrap().is_empty() {}
        let all = read_all(&*log, &[topics::ORDERS]).await;
        let (partition, records) = all.into_iter().find(|(_, r)| !r.is_empty()).expect("a partition with records");
        let (first, second) = (&records[0], &records[1]);
        // From the second record's offset: only the second.
        let from_second = log.fetch(&partition, second.offset, 10, Duration::ZERO).await.unwrap();
        assert_eq!(from_second.iter().map(|r| r.envelope.seq).collect::<Vec<_>>(), [2], "{}", log.kind());
        assert!(first.offset < second.offset);

        // A reader at the end waits; a record published meanwhile ends the wait.
        let next = second.offset + 1;
        let waiting = {
            let (log, partition) = (log.clone(), partition.clone());
            tokio::spawn(async move { log.fetch(&partition, next, 10, Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        commit(&store, &[stock_event(&product, 3)]).await;
        let started = std::time::Instant::now();
        while !log.relay(&store, 100).await.unwrap().is_empty() {}
        // What the relay task does after publishing.
        appended.notify_one();
        appended.notify_waiters();
        let arrived = waiting.await.unwrap().unwrap();
        assert_eq!(arrived.iter().map(|r| r.envelope.seq).collect::<Vec<_>>(), [3], "{}", log.kind());
        assert!(started.elapsed() < Duration::from_secs(5), "{}: woken by the publication", log.kind());
    }
}

#[tokio::test]
async fn topics_route_events_to_their_partitions() {
    let (store, _dir) = fresh_store().await;
    for log in logs(&store).await {
        let partitions = log.partitions_of(&[topics::PAYMENTS, topics::ORDERS]);
        assert!(!partitions.is_empty());
        if log.kind() == "kafka" {
            assert_eq!(partitions.len(), 6, "three partitions of each of the two topics");
            assert_eq!(log.partitions_of(&TOPICS).len(), 12);
            assert!(partitions
                .iter()
                .all(|p| p.topic.ends_with(topics::PAYMENTS) || p.topic.ends_with(topics::ORDERS)));
        }
        // A chat event is not in the partitions of orders (on Kafka), and is everywhere on the
        // embedded log, whose one partition carries every topic.
        let room = format!("{}-room", log.kind());
        let chat = Envelope::new(
            &room,
            1,
            chrono::Utc::now(),
            Event::StockChanged(StockChanged { product_id: room.clone().into(), stock: 1, delta: 0, order_id: None }),
        );
        commit(&store, &[chat]).await;
        while !log.relay(&store, 100).await.unwrap().is_empty() {}
        let found = read_all(&*log, &[topics::ORDERS]).await.values().flatten().any(|r| r.envelope.entity_id == room);
        assert!(found, "{}: a stock event is on the orders topic", log.kind());
    }
}
