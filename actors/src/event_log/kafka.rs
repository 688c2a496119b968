//! The event log on Kafka (rskafka): one topic per entity family, keyed by entity id, partitioned
//! as Kafka's default partitioner does, so one entity's events stay in order.
//!
//! rskafka has no consumer groups and no producer batching: the relay batches (one produce
//! request per partition per outbox batch, sent concurrently), consumers are assigned partitions
//! by the cluster (rendezvous hashing) and keep their offsets in SQL.

use super::partitioner::partition_for;
use super::{parse, EventLog, LogError, LogRecord, Partition};
use crate::store::{outbox, Store};
use bazaar_protocol::events::{topics, Envelope};
use futures_util::future::{try_join_all, BoxFuture};
use futures_util::FutureExt;
use rskafka::client::error::Error as KafkaError;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};
use tracing::{info, warn};

/// Every topic bazaar publishes to.
pub const TOPICS: [&str; 4] = [topics::USERS, topics::ORDERS, topics::PAYMENTS, topics::CHAT];

/// How long one call to the broker may take before it is given up and retried by its caller.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker may hold a fetch that finds nothing (0 makes tansu 0.6 answer without
/// the topic, which rskafka refuses).
const FETCH_WAIT_MS: i32 = 1;
/// The most bytes one fetch returns.
const FETCH_MAX_BYTES: i32 = 8 << 20;

/// Where the brokers are and how topics are created.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Put before every topic name.
    pub topic_prefix: String,
    /// Partitions of topics created at startup.
    pub partitions: i32,
    /// Replicas of topics created at startup.
    pub replication: i16,
    /// How long startup waits for the brokers before it fails.
    pub connect_timeout: Duration,
}

/// The event log on Kafka.
pub struct KafkaLog {
    client: Client,
    prefix: String,
    /// Partition count of each topic (by bare name), as the broker reported at startup.
    partitions: BTreeMap<&'static str, i32>,
    clients: Mutex<HashMap<(String, i32), Arc<PartitionClient>>>,
    /// Notified whenever events are published anywhere in the cluster (the relay here, the
    /// router for other nodes' relays), so readers need not rely on the broker's long poll.
    appended: Arc<Notify>,
}

fn kafka(e: KafkaError) -> LogError {
    LogError::Kafka(e.to_string())
}

async fn within<T>(call: impl std::future::Future<Output = Result<T, KafkaError>>) -> Result<T, LogError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(done) => done.map_err(kafka),
        Err(_) => Err(LogError::Timeout(CALL_TIMEOUT)),
    }
}

impl KafkaLog {
    /// Connects, creates the topics that are missing and learns each topic's partition count;
    /// retries until `connect_timeout`, so nodes may start before the broker is up.
    pub async fn connect(config: &KafkaConfig, appended: Arc<Notify>) -> Result<Self, LogError> {
        let started = Instant::now();
        let brokers = config.brokers.join(",");
        let mut delay = Duration::from_millis(500);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            // One attempt may retry inside rskafka for seconds: it is cut at a quarter of the
            // total wait (a second at least) and at what is left of it, so a dead broker gets a
            // line every few seconds and `connect_timeout` bounds the whole start.
            let remaining = config.connect_timeout.saturating_sub(started.elapsed());
            let limit = remaining.min((config.connect_timeout / 4).max(Duration::from_secs(1)));
            let outcome = match tokio::time::timeout(limit, Self::try_connect(config, appended.clone())).await {
                Ok(outcome) => outcome,
                Err(_) => Err(LogError::Timeout(limit)),
            };
            let e = match outcome {
                Ok(log) => return Ok(log),
                Err(e) => e,
            };
            let remaining = config.connect_timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                return Err(LogError::Kafka(format!(
                    "brokers at {brokers} unreachable after {} attempts in {:.0} s: {e}",
                    attempt,
                    config.connect_timeout.as_secs_f64()
                )));
            }
            let pause = delay.min(remaining);
            warn!(
                %brokers,
                attempt,
                reason = %e,
                "kafka brokers at {brokers} unreachable, retrying in {:.1} s (attempt {attempt})",
                pause.as_secs_f64()
            );
            tokio::time::sleep(pause).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    async fn try_connect(config: &KafkaConfig, appended: Arc<Notify>) -> Result<Self, LogError> {
        // A call that fails is retried by rskafka for a few seconds at most, then by our own
        // loops, which also watch for shutdown.
        let backoff = BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.0,
            deadline: Some(Duration::from_secs(5)),
        };
        let client =
            within(ClientBuilder::new(config.brokers.clone()).client_id("bazaar").backoff_config(backoff).build())
                .await?;
        let controller = client.controller_client().map_err(kafka)?;
        let existing = within(client.list_topics()).await?;
        for topic in TOPICS {
            let name = format!("{}{topic}", config.topic_prefix);
            if existing.iter().any(|t| t.name == name) {
                continue;
            }
            match within(controller.create_topic(&name, config.partitions, config.replication, 5_000)).await {
                Ok(()) => info!(topic = %name, partitions = config.partitions, "topic created"),
                // Another node created it first.
                Err(LogError::Kafka(e)) if e.contains("TopicAlreadyExists") => {}
                Err(e) => return Err(e),
            }
        }
        let mut partitions = BTreeMap::new();
        let listed = within(client.list_topics()).await?;
        for topic in TOPICS {
            let name = format!("{}{topic}", config.topic_prefix);
            let count = listed.iter().find(|t| t.name == name).map_or(0, |t| t.partitions.len() as i32);
            if count == 0 {
                return Err(LogError::Kafka(format!("topic {name} has no partitions yet")));
            }
            partitions.insert(topic, count);
        }
        Ok(Self {
            client,
            prefix: config.topic_prefix.clone(),
            partitions,
            clients: Mutex::new(HashMap::new()),
            appended,
        })
    }

    async fn partition_client(&self, topic: &str, index: i32) -> Result<Arc<PartitionClient>, LogError> {
        let key = (topic.to_owned(), index);
        if let Some(client) = self.clients.lock().await.get(&key) {
            return Ok(client.clone());
        }
        let client = Arc::new(within(self.client.partition_client(topic, index, UnknownTopicHandling::Retry)).await?);
        self.clients.lock().await.insert(key, client.clone());
        Ok(client)
    }

    /// The offset the next record of `partition` will take: where a reader that wants only what
    /// is published from now on starts.
    pub async fn end_offset(&self, partition: &Partition) -> Result<i64, LogError> {
        let client = self.partition_client(&partition.topic, partition.index).await?;
        within(client.get_offset(OffsetAt::Latest)).await
    }

    /// The full topic name and partition an event is published to.
    fn place(&self, envelope: &Envelope) -> (String, i32) {
        let topic = envelope.event.topic();
        let count = self.partitions.get(topic).copied().unwrap_or(1);
        (format!("{}{topic}", self.prefix), partition_for(envelope.entity_id.as_bytes(), count))
    }

    /// Appends `records` to one partition, in order.
    async fn produce(&self, topic: &str, index: i32, records: Vec<Record>) -> Result<(), LogError> {
        let client = self.partition_client(topic, index).await?;
        let started = Instant::now();
        within(client.produce(records, Compression::NoCompression)).await?;
        metrics::histogram!("bazaar_kafka_produce_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// One fetch that returns at once with what the partition holds from `from` on.
    async fn fetch_once(&self, client: &PartitionClient, from: i64, limit: usize) -> Result<Vec<LogRecord>, LogError> {
        let mut from = from;
        let (records, _high_watermark) = loop {
            match within(client.fetch_records(from, 1..FETCH_MAX_BYTES, FETCH_WAIT_MS)).await {
                Ok(answer) => break answer,
                Err(LogError::Kafka(e)) if e.contains("OffsetOutOfRange") => {
                    let resumed = self.clamp(client, from).await?;
                    if resumed == from {
                        return Ok(Vec::new());
                    }
                    from = resumed;
                }
                Err(e) => return Err(e),
            }
        };
        let now = chrono::Utc::now();
        let mut out = Vec::with_capacity(records.len().min(limit));
        // A fetch may start before `from` (record batches are returned whole).
        for record in records.into_iter().filter(|r| r.offset >= from).take(limit) {
            let lag = (now - record.record.timestamp).num_microseconds().unwrap_or(0) as f64 / 1e6;
            metrics::histogram!("bazaar_kafka_consume_lag_seconds").record(lag.max(0.0));
            let value = record.record.value.unwrap_or_default();
            out.push(LogRecord { offset: record.offset, envelope: parse(&value)? });
        }
        Ok(out)
    }

    /// An offset the broker no longer (or does not yet) hold: resume at the nearest one it has.
    async fn clamp(&self, client: &PartitionClient, from: i64) -> Result<i64, LogError> {
        let earliest = within(client.get_offset(OffsetAt::Earliest)).await?;
        let latest = within(client.get_offset(OffsetAt::Latest)).await?;
        let resumed = from.clamp(earliest, latest);
        warn!(
            from,
            resumed,
            earliest,
            latest,
            topic = client.topic(),
            partition = client.partition(),
            "consumer offset outside the partition; resuming at the nearest record"
        );
        Ok(resumed)
    }
}

/// The Kafka record of an event: key the entity id, value the JSON envelope of docs/API.md
/// (which names the event's type). No record headers: tansu 0.6 scans its whole header table
/// for every record a fetch returns, so one header per event made every fetch slower with each
/// event ever published (docs/decisions.md, 37).
pub fn record(envelope: &Envelope, body: Vec<u8>) -> Record {
    Record {
        key: Some(envelope.entity_id.as_bytes().to_vec()),
        value: Some(body),
        headers: BTreeMap::new(),
        timestamp: envelope.at,
    }
}

impl EventLog for KafkaLog {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn partitions_of(&self, topics: &[&str]) -> Vec<Partition> {
        self.partitions
            .iter()
            .filter(|(topic, _)| topics.contains(topic))
            .flat_map(|(topic, count)| {
                (0..*count).map(move |index| Partition { topic: format!("{}{topic}", self.prefix), index })
            })
            .collect()
    }

    fn exclusive_relay(&self) -> bool {
        true
    }

    fn relay<'a>(&'a self, store: &'a Store, limit: u32) -> BoxFuture<'a, Result<Vec<Arc<Envelope>>, LogError>> {
        async move {
            let pending = outbox::pending(store, limit).await?;
            if pending.is_empty() {
                return Ok(Vec::new());
            }
            let mut published = Vec::with_capacity(pending.len());
            let mut positions = Vec::with_capacity(pending.len());
            // One request per partition, records in outbox order within it.
            let mut batches: BTreeMap<(String, i32), Vec<Record>> = BTreeMap::new();
            for (position, body) in pending {
                let envelope = parse(body.as_bytes())?;
                batches.entry(self.place(&envelope)).or_default().push(record(&envelope, body.into_bytes()));
                published.push(envelope);
                positions.push(position);
            }
            try_join_all(
                batches
                    .into_iter()
                    .map(|((topic, index), records)| async move { self.produce(&topic, index, records).await }),
            )
            .await?;
            outbox::forget(store, &positions).await?;
            Ok(published)
        }
        .boxed()
    }

    fn fetch<'a>(
        &'a self,
        partition: &'a Partition,
        from: i64,
        limit: usize,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Vec<LogRecord>, LogError>> {
        async move {
            let client = self.partition_client(&partition.topic, partition.index).await?;
            // Registered before the first look, so a publication right after it still wakes us.
            let published = self.appended.notified();
            tokio::pin!(published);
            published.as_mut().enable();
            let records = self.fetch_once(&client, from, limit).await?;
            if !records.is_empty() || wait.is_zero() {
                return Ok(records);
            }
            // Not the broker's long poll: some brokers (tansu 0.6) answer it only when it
            // expires, with what they held when it started.
            tokio::select! {
                _ = published => {}
                _ = tokio::time::sleep(wait) => {}
            }
            self.fetch_once(&client, from, limit).await
        }
        .boxed()
    }
}
