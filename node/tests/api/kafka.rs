//! Kafka as the event log, under faults: the broker stopped for 30 s under order load. Each test
//! runs its own broker (tansu, a Kafka-protocol broker; scripts/test.sh installs it) on a free
//! loopback port with durable storage, and reads the topics back with rskafka as any other Kafka
//! consumer would.

use crate::support::*;
use rskafka::client::partition::UnknownTopicHandling;
use rskafka::client::ClientBuilder;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the broker stays down, as the issue asks.
const BROKER_DOWN: Duration = Duration::from_secs(30);

/// A throwaway tansu broker on loopback, storing in a temporary directory.
struct Broker {
    bin: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Broker {
    /// `None` when no tansu is installed (scripts/test.sh installs it; a bare `cargo test`
    /// may not have it).
    fn start() -> Option<Broker> {
        let bin = std::env::var("TEST_TANSU_BIN").ok().or_else(|| {
            let found = Command::new("sh").args(["-c", "command -v tansu"]).output().ok()?;
            found.status.success().then(|| String::from_utf8_lossy(&found.stdout).trim().to_owned())
        })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut broker = Broker { bin, port, dir: tempfile::tempdir().unwrap(), child: None };
        broker.restart();
        Some(broker)
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// (Re)starts the broker on the same port and storage, and waits until it accepts connections.
    fn restart(&mut self) {
        let url = format!("tcp://{}", self.address());
        let child = Command::new(&self.bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker the way an operator would (SIGTERM), and waits for it to exit.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every record of a topic's partitions, as parsed envelopes.
async fn read_topic(broker: &str, topic: &str, partitions: i32) -> Vec<Value> {
    let client = ClientBuilder::new(vec![broker.to_owned()]).build().await.expect("a Kafka client");
    let mut all = Vec::new();
    for partition in 0..partitions {
        let reader = client.partition_client(topic, partition, UnknownTopicHandling::Retry).await.unwrap();
        let mut offset = 0;
        loop {
            let (records, _) = reader.fetch_records(offset, 1..8_000_000, 1).await.expect("a fetch");
            let Some(last) = records.last() else { break };
            offset = last.offset + 1;
            for record in records {
                let value = record.record.value.expect("a value");
                let envelope: Value = serde_json::from_slice(&value).expect("a JSON envelope");
                // Keyed by entity id, as docs/API.md says.
                assert_eq!(record.record.key.as_deref(), envelope["entityId"].as_str().map(str::as_bytes));
                all.push(envelope);
            }
        }
    }
    all
}

#[tokio::test]
async fn a_node_whose_brokers_never_answer_exits_with_an_error_naming_kafka() {
    // A port nothing listens on: connections are refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = serve_command()
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("BAZAAR_KAFKA_BROKERS", format!("127.0.0.1:{port}"))
        .env("BAZAAR_KAFKA_CONNECT_TIMEOUT_MS", "1000")
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("the binary runs");
    assert!(!output.status.success(), "the node must not start without its event log");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("connecting to Kafka"), "the error names Kafka: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(20), "it gave up after the timeout, not later");
}

#[tokio::test]
async fn with_the_broker_stopped_for_30_seconds_orders_go_on_and_every_event_and_saga_completes_once() {
    let Some(mut broker) = Broker::start() else {
        eprintln!("skipped: no tansu on PATH and TEST_TANSU_BIN unset (scripts/test.sh installs it)");
        return;
    };
    let address = broker.address();
    let node = TestNode::spawn_with(&[
        ("BAZAAR_KAFKA_BROKERS", &address),
        ("BAZAAR_KAFKA_TOPIC_PREFIX", "fault."),
        ("BAZAAR_KAFKA_PARTITIONS", "2"),
    ])
    .await;
    let (_seller, product, buyer) = node.seller_product_buyer(100, 1_000_000).await;
    let product_id = product["id"].as_str().unwrap().to_owned();

    // Four buyers' worth of load: place an order, pay it, and go again.
    let stop = Arc::new(AtomicBool::new(false));
    let placed: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let load: Vec<_> = (0..4)
        .map(|client| {
            let (buyer, stop, placed, product_id) = (buyer.clone(), stop.clone(), placed.clone(), product_id.clone());
            tokio::spawn(async move {
                let mut round = 0;
                while !stop.load(Ordering::Relaxed) && round < 1000 {
                    let order = buyer.post_order(&product_id, 1, &format!("fault-{client}-{round}")).await.expect(201);
                    let order_id = order["id"].as_str().unwrap().to_owned();
                    let payment = buyer.pay(&order_id, "tok_ok", &format!("fault-pay-{client}-{round}")).await;
                    let payment_id = payment.expect(202)["id"].as_str().unwrap().to_owned();
                    placed.lock().unwrap().push((order_id, payment_id));
                    round += 1;
                    tokio::time::sleep(Duration::from_millis(150)).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.stop();
    let before_outage = placed.lock().unwrap().len();
    tokio::time::sleep(BROKER_DOWN).await;
    let during_outage = placed.lock().unwrap().len() - before_outage;
    broker.restart();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for client in load {
        client.await.expect("every order and payment of the load was accepted");
    }
    assert!(during_outage > 20, "orders kept being accepted while the broker was down: {during_outage}");
    let placed = placed.lock().unwrap().clone();

    // Every saga completes once the broker is back.
    eventually(Duration::from_secs(90), "every order to be PAID", || async {
        let paid = buyer.list_all("/orders?status=PAID").await.len();
        if paid == placed.len() {
            Ok(())
        } else {
            Err(format!("{paid} of {} orders PAID", placed.len()))
        }
    })
    .await;

    // Every event reached Kafka, and each step happened once: one approval per payment, one
    // OrderPaid per order (a redelivered record would carry the same event id).
    let orders = read_topic(&address, "fault.bazaar.orders", 2).await;
    let payments = read_topic(&address, "fault.bazaar.payments", 2).await;
    let distinct = |records: &[Value], kind: &str| -> HashMap<String, HashSet<String>> {
        let mut by_entity: HashMap<String, HashSet<String>> = HashMap::new();
        for record in records.iter().filter(|r| r["type"] == kind) {
            let entity = record["entityId"].as_str().unwrap().to_owned();
            by_entity.entry(entity).or_default().insert(record["id"].as_str().unwrap().to_owned());
        }
        by_entity
    };
    let (order_placed, order_paid) = (distinct(&orders, "OrderPlaced"), distinct(&orders, "OrderPaid"));
    let (requested, approved) = (distinct(&payments, "PaymentRequested"), distinct(&payments, "PaymentApproved"));
    for (order_id, payment_id) in &placed {
        assert_eq!(order_placed.get(order_id).map(HashSet::len), Some(1), "OrderPlaced of {order_id}");
        assert_eq!(order_paid.get(order_id).map(HashSet::len), Some(1), "OrderPaid of {order_id}, once");
        assert_eq!(requested.get(payment_id).map(HashSet::len), Some(1), "PaymentRequested of {payment_id}");
        assert_eq!(approved.get(payment_id).map(HashSet::len), Some(1), "PaymentApproved of {payment_id}, once");
    }
    assert_eq!(order_paid.len(), placed.len(), "no OrderPaid for an order nobody placed");

    // The outage and the traffic show in the metrics the dashboard charts.
    let scrape = node.get("/metrics").await.text;
    let sample = |name: &str| -> f64 {
        scrape
            .lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(sample("bazaar_relay_failures_total") >= 1.0, "relay failures while the broker was down");
    assert!(sample("bazaar_kafka_produce_seconds_count") >= 1.0, "produce latency recorded\n{scrape}");
    assert!(sample("bazaar_kafka_consume_lag_seconds_count") >= 1.0, "consume lag recorded\n{scrape}");
    eprintln!(
        "{} orders, {during_outage} while the broker was down; {} records on orders, {} on payments",
        placed.len(),
        orders.len(),
        payments.len()
    );
}
