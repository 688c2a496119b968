//! Load benchmarks of bazaar (see benches/README.md). Each scenario starts what it measures on
//! loopback (bazaar nodes and a bare baseline server, as child processes), drives both with the
//! same client settings, prints a summary table and writes `results/SCENARIO.json` and `.svg`.

mod api;
mod baseline;
mod faults;
mod kafka;
mod load;
mod memory;
mod report;
mod scenarios;
mod sys;
mod ws;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Load benchmarks of bazaar, each against a bare baseline measured in the same run.
///
/// Every scenario starts its own bazaar node(s) (target/release/bazaar next to this binary, or
/// --bazaar) with a fresh temporary data directory, and kills everything it started when it ends.
/// Progress goes to stderr, the summary table to stdout.
#[derive(Debug, Parser)]
#[command(name = "bazaar-bench", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// Authenticated GET /orders/{id}: req/s and latency vs a bare hyper hello-world (target ratio ≥ 0.5).
    HttpRead(HttpArgs),
    /// Durable POST /orders + POST /payments: req/s and p50/p99 vs a bare hyper server (target ratio ≥ 0.2,
    /// p99 ≤ 20 ms).
    OrderPlace(HttpArgs),
    /// GET /products/{id} through a 3-node cluster vs raw ractor_cluster calls between two processes
    /// (target ratio ≥ 0.7).
    CrossNode(CrossArgs),
    /// A room fanning out to many sockets: deliveries/s and delivery p99 vs a bare tokio-tungstenite
    /// broadcast server (target ratio ≥ 0.5, p99 ≤ 50 ms).
    ChatFanout(ChatArgs),
    /// Idle authenticated WebSocket connections one node holds, and its RSS per connection vs a bare
    /// tokio-tungstenite server with the same buffer sizes (target ≤ 20 KiB and ≤ 1.5× the
    /// baseline); a sample of the sockets then carries a message each way.
    WsIdle(IdleArgs),
    /// RSS per active and per hibernated entity (products), vs bare ractor actors (targets ≤ 8 KiB
    /// active, ≤ 2 KiB hibernated).
    Entities(EntitiesArgs),
    /// RSS of a fresh idle node (target ≤ 64 MB), and 10 s after a burst of orders and sockets
    /// (target within 20 % of before).
    Footprint(FootprintArgs),
    /// Outbox-to-Kafka bridge events/s vs a raw rskafka producer to the same broker, at batch sizes
    /// 10, 100, 500 and 1000 (target ratio ≥ 0.7; no cliff at any batch size).
    Kafka(KafkaArgs),
    /// A fault run (benches/README.md, "Fault runs"): client tasks issue a mixed workload against a
    /// 3-node cluster while a nemesis partitions, pauses, kills and restarts; the history is then
    /// checked against the final state. Exits with 1 when the checker finds a violation.
    Faults(FaultArgs),
    /// Checks a fault run's history (JSON lines) against the final state read after the faults
    /// healed (benches/README.md, "Fault histories"): prints the results table and every
    /// violation, and exits with 1 when there is one.
    CheckHistory {
        /// The history file: one JSON line per operation.
        history: PathBuf,
        /// The final-state file: one JSON object.
        #[arg(value_name = "FINAL")]
        final_state: PathBuf,
    },
    #[command(name = "__hello-server", hide = true)]
    HelloServer,
    #[command(name = "__ws-broadcast", hide = true)]
    WsBroadcast {
        #[arg(long, default_value_t = 256)]
        queue: usize,
        /// tungstenite's read buffer per socket (its default: 128 KiB).
        #[arg(long, default_value_t = 128 * 1024)]
        read_buffer: usize,
        /// tungstenite's write buffer per socket (its default: 128 KiB; 0: each frame written out).
        #[arg(long, default_value_t = 128 * 1024)]
        write_buffer: usize,
    },
    #[command(name = "__ractor-peer", hide = true)]
    RactorPeer {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        cookie: String,
    },
    #[command(name = "__ractor-idle", hide = true)]
    RactorIdle {
        #[arg(long)]
        count: usize,
    },
}

/// Flags every scenario has.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The bazaar binary (default: `bazaar` next to this binary, i.e. target/release/bazaar).
    #[arg(long, value_name = "PATH")]
    pub bazaar: Option<PathBuf>,
    /// Where SCENARIO.json and SCENARIO.svg are written.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    pub results: PathBuf,
    /// Measured seconds of each side (timed scenarios).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Warm-up seconds before each measured window (timed scenarios).
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
}

#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep-alive HTTP/1.1 connections, each closed-loop (the same for bazaar and the baseline).
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Orders read round robin (http-read).
    #[arg(long, default_value_t = 16)]
    pub orders: usize,
    /// Store in this database instead of SQLite in the node's data directory: a
    /// `postgres://` or `mysql://` URL (its `database_url`) of an existing database, empty or left
    /// by an earlier run (order-place, http-read). Start the server as the test script does:
    /// `source scripts/servers/postgres.sh; postgres_start DIR PORT` prints the URL to use.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct CrossArgs {
    #[command(flatten)]
    pub common: Common,
    /// Concurrent callers: keep-alive connections for bazaar, ractor callers for the baseline.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Products spread over the cluster and read round robin.
    #[arg(long, default_value_t = 300)]
    pub products: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub common: Common,
    /// WebSocket connections joined to the room (the sender's included).
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Messages the sender may have unanswered (not yet back on its own socket).
    #[arg(long, default_value_t = 8)]
    pub in_flight: usize,
    /// Approximate size of each message text.
    #[arg(long, default_value_t = 64)]
    pub text_bytes: usize,
}

#[derive(Debug, Clone, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Idle WebSocket connections to open.
    #[arg(long, default_value_t = 20_000)]
    pub connections: usize,
    /// The read buffer per socket, for the node (ws_read_buffer_bytes) and the baseline alike;
    /// both write each frame out as it is sent (no write buffer).
    #[arg(long, default_value_t = 4096)]
    pub read_buffer_bytes: usize,
    /// One socket in this many joins a room and gets a message at the end (the baseline: gets a
    /// broadcast), to show the sockets still work, beyond answering a ping.
    #[arg(long, default_value_t = 50)]
    pub probe_every: usize,
}

#[derive(Debug, Clone, Args)]
pub struct EntitiesArgs {
    #[command(flatten)]
    pub common: Common,
    /// Products to create and keep active.
    #[arg(long, default_value_t = 20_000)]
    pub count: usize,
    /// Products to create and let hibernate, on a second node.
    #[arg(long, default_value_t = 100_000)]
    pub hibernated: usize,
    /// Requests in flight while creating and reading them.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

#[derive(Debug, Clone, Args)]
pub struct FootprintArgs {
    #[command(flatten)]
    pub common: Common,
    /// Orders in the burst.
    #[arg(long, default_value_t = 10_000)]
    pub orders: usize,
    /// Sockets opened, then closed, in the burst.
    #[arg(long, default_value_t = 1_000)]
    pub sockets: usize,
    /// Orders in flight during the burst.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Buyers the orders are spread over.
    #[arg(long, default_value_t = 16)]
    pub buyers: usize,
    /// The node's passivate_after_secs for the run.
    #[arg(long, default_value_t = 3)]
    pub passivate_after_secs: u64,
}

#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    #[command(flatten)]
    pub common: Common,
    /// The tansu broker binary to start.
    #[arg(long, value_name = "PATH", default_value = "tansu")]
    pub tansu: String,
    /// Use tansu's memory storage instead of SQLite.
    #[arg(long)]
    pub memory: bool,
    /// Events sent at each batch size, by each side.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Batch sizes (records per relay round / per produce round).
    #[arg(long, value_delimiter = ',', default_value = "10,100,500,1000")]
    pub batches: Vec<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct FaultArgs {
    #[command(flatten)]
    pub common: Common,
    /// Nodes of the cluster (at least 3).
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Client tasks, each one buyer issuing one operation at a time.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Sellers; every buyer has a chat room with each.
    #[arg(long, default_value_t = 3)]
    pub sellers: usize,
    /// Products, spread over the sellers.
    #[arg(long, default_value_t = 6)]
    pub products: usize,
    /// The initial stock of each product: small enough that orders run out of it.
    #[arg(long, default_value_t = 200)]
    pub stock: i64,
    /// The faults, applied in turn: isolate, split, bridge, pause, kill, isolate+kill,
    /// restart-NAME, pause+restart-NAME (NAME as given to --restart).
    #[arg(long, value_delimiter = ',', default_value = "isolate,pause,kill,split,bridge,isolate+kill")]
    pub schedule: Vec<faults::nemesis::Fault>,
    /// How to restart a backend the schedule names: NAME=COMMAND (a shell command run to its end).
    #[arg(long, value_name = "NAME=COMMAND")]
    pub restart: Vec<faults::nemesis::Restart>,
    /// How long each fault is held, in ms.
    #[arg(long, default_value_t = 5000)]
    pub hold_ms: u64,
    /// How long the cluster runs clean between faults, in ms.
    #[arg(long, default_value_t = 4000)]
    pub quiet_ms: u64,
    /// The nodes' cluster_heartbeat_ms.
    #[arg(long, default_value_t = 250)]
    pub heartbeat_ms: u64,
    /// The nodes' cluster_heartbeat_timeout_ms (a pause is held longer than this).
    #[arg(long, default_value_t = 1500)]
    pub heartbeat_timeout_ms: u64,
    /// The nodes' reservation_hold_secs: short, so orders left unpaid expire during the run.
    #[arg(long, default_value_t = 20)]
    pub reservation_hold_secs: u64,
    /// How long after the heal every order and payment must be decided and every unit of a
    /// cancelled or refunded order back in stock.
    #[arg(long, default_value_t = 120)]
    pub settle_secs: u64,
    /// The seed of the clients' choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where history.jsonl, faults.jsonl and final.json are written (default: RESULTS/faults).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let run = async {
        match &cli.scenario {
            Scenario::HelloServer => baseline::hello_server().await,
            Scenario::WsBroadcast { queue, read_buffer, write_buffer } => {
                baseline::ws_broadcast(*queue, *read_buffer, *write_buffer).await
            }
            Scenario::RactorPeer { port, cookie } => baseline::ractor_peer(*port, cookie.clone()).await,
            Scenario::RactorIdle { count } => baseline::ractor_idle(*count).await,
            Scenario::HttpRead(args) => scenarios::http_read(&scenarios::Ctx::new(&args.common)?, args).await,
            Scenario::OrderPlace(args) => scenarios::order_place(&scenarios::Ctx::new(&args.common)?, args).await,
            Scenario::CrossNode(args) => scenarios::cross_node(&scenarios::Ctx::new(&args.common)?, args).await,
            Scenario::ChatFanout(args) => scenarios::chat_fanout(&scenarios::Ctx::new(&args.common)?, args).await,
            Scenario::WsIdle(args) => scenarios::ws_idle(&scenarios::Ctx::new(&args.common)?, args).await,
            Scenario::Entities(args) => memory::entities(&scenarios::Ctx::new(&args.common)?, args).await,
            Scenario::Footprint(args) => memory::footprint(&scenarios::Ctx::new(&args.common)?, args).await,
            Scenario::Kafka(args) => kafka::kafka(&scenarios::Ctx::new(&args.common)?, args).await,
            Scenario::Faults(args) => {
                if !faults::runner::faults(&scenarios::Ctx::new(&args.common)?, args).await? {
                    std::process::exit(1);
                }
                Ok(())
            }
            Scenario::CheckHistory { history, final_state } => {
                // Violations are the answer, not an error of the tool: the table says them.
                if !faults::check_files(history, final_state)? {
                    std::process::exit(1);
                }
                Ok(())
            }
        }
    };
    // On Ctrl-C the scenario is dropped, which kills every process it started.
    tokio::select! {
        result = run => result,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}
