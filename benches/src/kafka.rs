//! The `kafka` scenario: the outbox relay's publishing to Kafka (the bridge) against a raw
//! rskafka producer sending the same records to the same broker, at several batch sizes.
//!
//! Both sides send the same envelopes, keyed by entity id and partitioned alike, one produce
//! request per partition per batch, the requests of a batch in parallel. The bridge also reads
//! the batch from the outbox and deletes it after the broker acknowledged it, which is its whole
//! cost over the raw producer. The broker is a tansu started here (SQLite storage: the durable
//! engine), as in the test suite.

use crate::report::{self, Row, Series, XAxis};
use crate::scenarios::{Ctx, Plot};
use crate::KafkaArgs;
use anyhow::Context;
use bazaar_actors::event_log::kafka::{record, KafkaConfig, KafkaLog};
use bazaar_actors::event_log::partitioner::partition_for;
use bazaar_actors::event_log::EventLog;
use bazaar_actors::store::{self, Durability, Store};
use bazaar_protocol::events::{Envelope, Event, StockChanged};
use futures_util::future::try_join_all;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// Partitions of every topic in the run.
const PARTITIONS: i32 = 6;

async fn start_broker(ctx: &Ctx, args: &KafkaArgs) -> anyhow::Result<(Child, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = ctx.tmp.path().join("tansu");
    std::fs::create_dir_all(&dir)?;
    let url = format!("tcp://127.0.0.1:{port}");
    let storage = if args.memory { "memory://tansu/" } else { "sqlite://tansu.db" };
    let log = std::fs::File::create(dir.join("broker.log"))?;
    let child = Command::new(&args.tansu)
        .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", storage])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!("starting {} (install: cargo install tansu@0.6.0 --locked --features dynostore,libsql)", args.tansu)
        })?;
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        anyhow::ensure!(started.elapsed() < Duration::from_secs(10), "tansu did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((child, format!("127.0.0.1:{port}")))
}

/// `count` events of `entities` products, each product's in order.
fn events(count: usize, entities: usize) -> Vec<Envelope> {
    (0..count)
        .map(|n| {
            let product = format!("product-{:06}", n % entities);
            let seq = (n / entities) as i64 + 1;
            let event = Event::StockChanged(StockChanged {
                product_id: product.clone().into(),
                stock: 1_000_000 - seq,
                delta: -1,
                order_id: Some(format!("order-{n:08}").into()),
            });
            Envelope::new(product, seq, chrono::Utc::now(), event)
        })
        .collect()
}

/// Raw rskafka: the same records, batched and partitioned as the relay does. Records/s.
async fn raw(broker: &str, topic: &str, events: &[Envelope], batch: usize) -> anyhow::Result<f64> {
    let client = ClientBuilder::new(vec![broker.to_owned()]).build().await?;
    client.controller_client()?.create_topic(topic, PARTITIONS, 1, 5_000).await?;
    let mut partitions = Vec::new();
    for p in 0..PARTITIONS {
        partitions.push(Arc::new(client.partition_client(topic, p, UnknownTopicHandling::Retry).await?));
    }
    let bodies: Vec<(Envelope, Vec<u8>)> =
        events.iter().map(|e| (e.clone(), serde_json::to_vec(e).expect("an envelope serializes"))).collect();
    let started = Instant::now();
    for chunk in bodies.chunks(batch) {
        let mut by_partition: BTreeMap<i32, Vec<rskafka::record::Record>> = BTreeMap::new();
        for (envelope, body) in chunk {
            let p = partition_for(envelope.entity_id.as_bytes(), PARTITIONS);
            by_partition.entry(p).or_default().push(record(envelope, body.clone()));
        }
        try_join_all(by_partition.into_iter().map(|(p, records)| {
            let partition = partitions[p as usize].clone();
            async move { partition.produce(records, Compression::NoCompression).await }
        }))
        .await?;
    }
    Ok(events.len() as f64 / started.elapsed().as_secs_f64())
}

/// The bridge: the outbox filled with the events, then drained by the relay's publishing step.
/// Events/s.
async fn bridge(ctx: &Ctx, broker: &str, prefix: &str, events: &[Envelope], batch: usize) -> anyhow::Result<f64> {
    let url = format!("sqlite://{}", ctx.tmp.path().join(format!("{prefix}db")).display());
    let store = Store::open(&url, Durability::Normal).await?;
    for chunk in events.chunks(1000) {
        let mut tx = store.begin().await?;
        store::append_events(&mut tx, chunk)?;
        store.commit(tx).await?;
    }
    let config = KafkaConfig {
        brokers: vec![broker.to_owned()],
        topic_prefix: prefix.to_owned(),
        partitions: PARTITIONS,
        replication: 1,
        connect_timeout: Duration::from_secs(20),
    };
    let log = KafkaLog::connect(&config, Arc::new(Notify::new())).await?;
    let started = Instant::now();
    let mut published = 0;
    loop {
        let batch = log.relay(&store, batch as u32).await?;
        if batch.is_empty() {
            break;
        }
        published += batch.len();
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(published == events.len(), "published {published} of {}", events.len());
    store.close().await;
    Ok(events.len() as f64 / elapsed.as_secs_f64())
}

pub async fn kafka(ctx: &Ctx, args: &KafkaArgs) -> anyhow::Result<()> {
    let (_broker, address) = start_broker(ctx, args).await?;
    let events = events(args.events, 1000);
    let mut rows = Vec::new();
    let mut points = (Vec::new(), Vec::new());
    let mut results = Vec::new();
    for &batch in &args.batches {
        eprintln!("batch {batch}: raw rskafka producer");
        let raw_rate = raw(&address, &format!("raw-{batch}"), &events, batch).await?;
        eprintln!("batch {batch}: bridge (outbox -> Kafka)");
        let bridge_rate = bridge(ctx, &address, &format!("bridge-{batch}."), &events, batch).await?;
        let ratio = bridge_rate / raw_rate;
        // A cliff: a bigger batch moving markedly fewer records per second than a smaller one
        // did (the Nagle stall made batch 500 slower than batch 100, on both sides).
        let best_smaller = |rates: &[(f64, f64)]| rates.iter().map(|&(_, rate)| rate).fold(0.0, f64::max);
        let no_cliff = bridge_rate >= 0.8 * best_smaller(&points.1) && raw_rate >= 0.8 * best_smaller(&points.0);
        let mut row =
            Row::new(&format!("events/s, batch {batch}"), report::fmt_rate(bridge_rate), report::fmt_rate(raw_rate));
        row = if batch == 500 {
            row.judged(format!("{ratio:.2}"), "≥ 0.7 (relay_batch default), no cliff", ratio >= 0.7 && no_cliff)
        } else {
            row.judged(format!("{ratio:.2}"), "no cliff", no_cliff)
        };
        rows.push(row);
        points.0.push((batch as f64, raw_rate));
        points.1.push((batch as f64, bridge_rate));
        results.push(json!({"batch": batch, "raw_per_sec": raw_rate, "bridge_per_sec": bridge_rate, "ratio": ratio}));
    }
    let storage = if args.memory { "memory" } else { "SQLite" };
    let notes = vec![
        format!(
            "{} StockChanged envelopes (about {} bytes each) of 1,000 entities, {PARTITIONS} partitions, tansu 0.6 with {storage} storage on loopback",
            args.events,
            serde_json::to_vec(&events[0]).map(|b| b.len()).unwrap_or(0)
        ),
        "raw: rskafka produce per partition per batch, in parallel; bridge: the same, plus reading the outbox and deleting what was acknowledged".into(),
        "rskafka is this project's copy with TCP_NODELAY (vendor/rskafka/PATCHED.md); without it mid-size requests stall ~40 ms each".into(),
    ];
    let plot = Plot {
        title: "Kafka produce throughput by batch size".into(),
        x: XAxis::Linear("records per batch".into()),
        y: "records/s".into(),
        series: vec![
            Series { label: "raw rskafka".into(), points: points.0 },
            Series { label: "bazaar bridge".into(), points: points.1 },
        ],
    };
    ctx.finish("kafka", &rows, &notes, json!({"results": results, "storage": storage}), plot)
}
