//! Configuration: built-in defaults, then the `[settings]` table of `cluster.toml`, then
//! `BAZAAR_*` environment variables, then command-line flags.

use anyhow::{bail, Context};
use bazaar_actors::cluster::membership::ClusterConfig;
use bazaar_actors::cluster::peer_addr::PeerAddr;
use bazaar_actors::store::{Durability, Tuning};
use clap::{Parser, Subcommand};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// bazaar: a marketplace backend (accounts, catalog, orders, payments, chat) as an actor system.
#[derive(Debug, Parser)]
#[command(name = "bazaar", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What to do; `serve` when none is given.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs one node: the HTTP/WebSocket front end and its actors.
    Serve(ServeArgs),
    /// Prints, as JSON, the settings and cluster that `serve` with the same flags and environment
    /// would run with (secrets redacted), or why it would refuse to start.
    Config(ServeArgs),
    /// Fills a running node with demo sellers, products, a buyer with a paid order and a chat room,
    /// through its HTTP API, and prints how to log in.
    Demo {
        /// The node's address.
        #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Manages a local cluster.
    Cluster {
        #[command(subcommand)]
        action: ClusterCommand,
    },
}

/// `bazaar cluster ...`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Starts every node of the config file on this machine as separate processes, with a log
    /// file per node; Ctrl-C stops them all.
    Up {
        /// The cluster.toml listing the nodes.
        #[arg(long, value_name = "FILE", default_value = "cluster.toml")]
        config: PathBuf,
        /// How long after a node dies it is started again, in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 2000)]
        restart_delay_ms: u64,
        /// Starts in a row that end before the node is ready, after which every node is stopped.
        #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
        max_start_failures: u32,
        /// Logs of earlier runs kept per node (data/logs/NODE.log.1 is the newest of them).
        #[arg(long, value_name = "N", default_value_t = 5)]
        keep_logs: u32,
    },
}

/// Flags of `bazaar serve`; each overrides the file and the environment.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// A cluster.toml to read `[settings]` (and the `[[nodes]]` entry of --node) from.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This node's name; with --config, its `[[nodes]]` entry supplies http_addr.
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Where to listen for HTTP and WebSocket traffic (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub http_addr: Option<SocketAddr>,
    /// Where the SQLite database and the generated development secret live.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Every setting of a node. Field names are the `cluster.toml` keys; `BAZAAR_<KEY>` overrides.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub node_name: String,
    #[serde(deserialize_with = "listen_addr")]
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    /// Empty: `sqlite://{data_dir}/bazaar.db`.
    pub database_url: String,
    /// `full` or `normal`.
    pub sqlite_synchronous: String,
    /// Unset: a development secret generated into the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt_secret: Option<String>,
    pub access_token_ttl_secs: u64,
    pub refresh_token_ttl_secs: u64,
    /// Login attempts per client address and e-mail and minute (a flood of wrong passwords from
    /// one address cannot lock the owner out from another).
    pub login_attempts_per_minute: u32,
    // Password work (Argon2id: about 19 MiB and tens of milliseconds of a core per hash).
    /// Hashes computed at once; 0: one per core.
    pub password_workers: usize,
    /// Hashes waiting for a worker; beyond it login and signup answer 503 + Retry-After.
    pub password_queue: usize,
    /// Logins and signups per client address and minute; beyond it 429 + Retry-After.
    pub auth_attempts_per_minute_per_client: u32,
    /// Logins and signups per node and second; beyond it 503 + Retry-After.
    pub auth_attempts_per_second: u32,
    /// How often a node reads the sessions revoked on other nodes (their access tokens are
    /// refused from then on; on the revoking node at once).
    pub revocation_sync_ms: u64,
    pub body_limit_bytes: u64,
    pub default_currency: String,
    pub ws_max_frame_bytes: usize,
    pub ws_messages_per_second: u32,
    pub ws_burst: u32,
    pub ws_max_connections_per_user: usize,
    /// Frames queued for a socket's client; also, or `ws_burst` if larger, the most client
    /// frames that may wait for a busy session (a long replay to a slow reader) before the
    /// socket is closed with 4429.
    pub ws_send_queue: usize,
    /// The payment gateway: `simulated` or `toss` (then BAZAAR_TOSS_SECRET_KEY holds its key).
    pub gateway: String,
    pub gateway_timeout_ms: u64,
    pub call_timeout_ms: u64,
    /// An entity idle this long hibernates: its task and mailbox go, its state stays in memory
    /// and its next message wakes it without a database read.
    pub hibernate_after_secs: u64,
    /// An entity idle this long (active or hibernated) leaves memory; the next message loads it.
    pub passivate_after_secs: u64,
    /// How often the allocator's free pages are given back to the kernel (0: never), so RSS
    /// falls back after a burst.
    pub memory_trim_interval_ms: u64,
    /// The page cache of each SQLite connection (the writer and each reader), in KiB.
    pub sqlite_cache_kib: u32,
    /// How long the writer waits on a row lock (PostgreSQL, MySQL) before its batch is retried.
    pub db_lock_wait_ms: u64,
    /// How long a starting node waits for another node's schema migrations.
    pub db_migration_wait_ms: u64,
    pub idempotency_retention_hours: u64,
    pub relay_batch: u32,
    /// A file holding the cluster cookie (BAZAAR_CLUSTER_COOKIE wins); empty: a cookie generated
    /// into the data directory, shared by the nodes of a local cluster.
    pub cluster_cookie_file: String,
    pub cluster_heartbeat_ms: u64,
    pub cluster_heartbeat_timeout_ms: u64,
    /// The largest message between nodes; larger requests are refused before they are sent.
    pub cluster_max_frame_bytes: usize,
    /// Requests from peers handled at once; beyond it peers get 503.
    pub cluster_max_routed_in_flight: usize,
    /// HTTP requests served at once by this node; beyond it 503 + Retry-After.
    pub max_in_flight_requests: usize,
    /// HTTP requests one user may have in flight at once; beyond it 429 + Retry-After.
    pub max_in_flight_per_user: usize,
    /// `redis://host:port`: Redis caches relations and profiles and counts logins cluster-wide;
    /// empty: no cache (SQL only, login limit per node).
    pub redis_url: String,
    /// How long a Redis call may take before the request goes on without it.
    pub redis_timeout_ms: u64,
    /// `host:port[,host:port...]` of Kafka brokers: events are published to Kafka topics and
    /// consumed from there; empty: the embedded event log in the database.
    pub kafka_brokers: String,
    /// Put before every topic name (`{prefix}bazaar.orders`), to share a broker between
    /// deployments.
    pub kafka_topic_prefix: String,
    /// Partitions of each topic created at startup (existing topics keep theirs).
    pub kafka_partitions: u32,
    /// Replicas of each topic created at startup.
    pub kafka_replication: u16,
    /// How long startup waits for the brokers before the node gives up.
    pub kafka_connect_timeout_ms: u64,
    // --- HTTP connections: timeouts, the connection cap, the shutdown grace (slow clients) ---
    /// How long a connection may take to send a request's head once it waits for one; hyper
    /// starts this timer as soon as a connection waits for its next request, so it is also the
    /// idle keep-alive timeout. Then the connection is closed.
    pub http_header_read_timeout_ms: u64,
    /// How long a request's body may take to arrive, counted from its head; then 408
    /// `request_timeout` and the connection is closed.
    pub http_body_read_timeout_ms: u64,
    /// Open HTTP connections (upgraded WebSockets included); past it new connections are closed
    /// as soon as they are accepted.
    pub http_max_connections: usize,
    /// On shutdown, how long requests in flight may finish before every connection is dropped.
    pub shutdown_grace_ms: u64,
    // --- orders: the reservation hold (hardening, issue 9) ---
    /// How long a placed order holds its stock unpaid: an order still ORDERED (no payment
    /// requested) after this is cancelled by the system (`reservation_expired`) and its stock
    /// released. At least 1.
    pub reservation_hold_secs: u64,
    /// The most changes `GET /orders/{id}/events` shows (the oldest; `truncated` says more were
    /// left out): bounds the read and the answer. 1 to 100,000.
    pub order_timeline_max_events: usize,
    /// The most products a buyer's cart holds: a new one past it is 409 `cart_full` (changing a
    /// line already there always works). 1 to 1,000.
    pub cart_max_items: usize,
    /// How long `POST /checkout` may take to reserve the cart's lines: past it the request is 503
    /// (a retry with the same `Idempotency-Key` carries on), and a checkout still reserving
    /// this long after its last step is given up by the sweep and its lines released.
    /// 1,000 to 600,000.
    pub checkout_timeout_ms: u64,
    /// The most answers a chat room holds waiting for their posts' commit (a room decides its
    /// next post before the last one is durable); a room with this many waits for the oldest.
    /// 1 to 1,000,000.
    pub chat_room_answers_waiting: usize,
    // --- outbound webhooks (issue 15) ---
    /// How long a delivery is retried before it is FAILED. 1 second to 30 days.
    pub webhook_retry_for_secs: u64,
    /// The wait before the first retry; it doubles with each one. At least 1.
    pub webhook_retry_base_ms: u64,
    /// The longest wait between two tries. At least `webhook_retry_base_ms`.
    pub webhook_retry_max_ms: u64,
    /// How long one attempt may take, connection included. 1 to 60,000.
    pub webhook_timeout_ms: u64,
    /// Whether sellers' URLs may point at loopback, private and link-local addresses (for a
    /// receiver on the same network; off in production: it lets a seller reach internal services).
    pub webhook_allow_private_addresses: bool,
    /// The most live endpoints one seller registers. 1 to 100.
    pub webhook_max_endpoints: usize,
    /// Attempts in flight at once on the sending node. 1 to 10,000.
    pub webhook_max_in_flight: usize,
    /// How often the sender looks for due deliveries when nothing woke it. At least 1.
    pub webhook_poll_ms: u64,
    /// How long a rotated-out secret still signs, as a second signature.
    pub webhook_secret_overlap_secs: u64,
    /// How long finished deliveries and their attempts are kept. At least 1.
    pub webhook_retention_days: u64,
    /// The operator's endpoint, which receives events of every seller; empty: none. Its
    /// secret is read from `BAZAAR_WEBHOOK_OPERATOR_SECRET` only.
    pub webhook_operator_url: String,
    /// The event types the operator's endpoint receives: `*` or a comma-separated list.
    pub webhook_operator_events: String,
    // --- saga lanes and chat replay (issue 9: one buyer never stalls another; replay of any
    // length in bounded memory) ---
    /// Saga records read and not yet done per log partition; steps of different entities run
    /// side by side up to it, and reading pauses there.
    pub saga_max_in_flight: usize,
    /// Messages read from storage per page of a join's replay (and of a gap fill).
    pub chat_replay_page: u32,
    /// How long a replayed message may wait for room in a client's send queue before the
    /// client is disconnected as too slow.
    pub ws_replay_send_timeout_ms: u64,
    /// Rooms in a page of `GET /chat/rooms` when `limit` is not given.
    pub chat_rooms_page_default: u32,
    /// The largest page of `GET /chat/rooms`; a larger `limit` is clamped to it.
    pub chat_rooms_page_max: u32,
    // --- cluster by name: Kubernetes StatefulSets and peers that change IPs (issue 12) ---
    /// Where this node accepts peer sessions, as `ip:port`. Empty: where its own `cluster_addr`
    /// resolves when it starts. On Kubernetes `0.0.0.0:7000`: a pod's own name may not resolve
    /// yet while it starts.
    pub cluster_listen_addr: String,
    /// The domain of a StatefulSet's headless Service (`bazaar-cluster.shop.svc.cluster.local`).
    /// Set, this node is a pod named `<statefulset>-<ordinal>` (its node name), and its peers are
    /// the StatefulSet's other pods, `<statefulset>-<i>.<domain>` on the listen port, for every
    /// ordinal below `cluster_max_nodes`: a name that does not resolve is a pod that does not
    /// exist (yet), so scaling needs no node list. Empty: the peers are the file's `[[nodes]]`.
    pub cluster_peer_domain: String,
    /// With `cluster_peer_domain`: the most pods the StatefulSet may scale to (the ordinals
    /// dialled); every one not running costs one failed name lookup a second.
    pub cluster_max_nodes: u32,
    /// How long one dial of a peer (resolving its name, then connecting) may take.
    pub cluster_dial_timeout_ms: u64,
    // --- chat brokered by Kafka: each node's socket hub reads the log (issue 12) ---
    /// On a cluster whose event log is Kafka: the most records one read of a partition of the
    /// chat, orders or payments topic returns to the node's socket hub (at least 1).
    pub socket_feed_fetch_records: usize,
    /// How long an idle partition waits before the hub's reader looks again, unless a
    /// publication wakes it first: the most a message waits while the cluster's sessions to
    /// this node are down (at least 1).
    pub socket_feed_poll_ms: u64,
    /// The longest pause between the hub reader's retries while the broker fails.
    pub socket_feed_retry_max_ms: u64,
    /// Order pushes the socket hub remembers by event id, to push the copy that arrives by the
    /// second path (peer broadcast or log) no more (at least 1).
    pub socket_push_dedup_window: usize,
    // --- WebSocket buffers (issue 11: small idle sockets) ---
    /// Bytes of each socket's read buffer, and the most read from its connection at once. A
    /// larger frame grows the buffer while it arrives; the socket gives the grown buffer back
    /// once that frame has been handled. Frames are written out as they are sent: no write
    /// buffer waits while a socket is idle.
    pub ws_read_buffer_bytes: usize,
    // --- payment gateways: Toss Payments (issue 12); its secret key is read from
    // BAZAAR_TOSS_SECRET_KEY only, never from a file ---
    /// Toss Payments' API address (an emulator's in tests).
    pub toss_api_url: String,
    /// How long one request to Toss may take; a charge whose answer timed out is looked up by
    /// order id, so twice this must fit in `gateway_timeout_ms`.
    pub toss_timeout_ms: u64,
    // --- browsers on other origins (issue 14) ---
    /// Origins (`scheme://host[:port]`, comma-separated) whose pages may call the API; empty:
    /// none. Requests from the node's own origin and from non-browser clients need no entry.
    pub cors_allowed_origins: String,
    // --- payment webhooks and partial refunds (issue 12) ---
    /// The largest body `POST /payments/webhooks/{gateway}` reads (413 past it): a provider's
    /// notification carries one payment object, a few KiB.
    pub webhook_body_limit_bytes: u64,
    /// Notifications `POST /payments/webhooks/{gateway}` takes per sender address and minute
    /// (429 past it): each one naming a known order costs a lookup at the provider.
    pub webhook_notices_per_minute: u32,
    // --- startup and logs for people (issue 14: errors for people, logs) ---
    /// How long a starting node waits for a PostgreSQL or MySQL server that does not accept
    /// connections, saying so on every attempt, before it stops with an error (at least 1000).
    pub db_connect_wait_ms: u64,
    /// `text` (lines for a person) or `json` (one JSON object a line, for a log collector).
    pub log_format: String,
    /// A listener of its own for `/metrics` and `/cluster` (with the probes and `/info`), as
    /// `ip:port`; then `http_addr` answers 404 for those two, so publishing the API does not
    /// publish the cluster's map and load. Empty: everything on `http_addr`.
    pub ops_http_addr: String,
}

impl std::fmt::Debug for Settings {
    // The JWT secret must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("node_name", &self.node_name)
            .field("http_addr", &self.http_addr)
            .field("data_dir", &self.data_dir)
            .field("jwt_secret", &self.jwt_secret.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_name: "node1".into(),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: String::new(),
            sqlite_synchronous: "full".into(),
            jwt_secret: None,
            access_token_ttl_secs: 900,
            refresh_token_ttl_secs: 14 * 24 * 3600,
            login_attempts_per_minute: 10,
            password_workers: 0,
            password_queue: 32,
            auth_attempts_per_minute_per_client: 60,
            auth_attempts_per_second: 50,
            revocation_sync_ms: 1000,
            body_limit_bytes: 64 * 1024,
            default_currency: "KRW".into(),
            ws_max_frame_bytes: 64 * 1024,
            ws_messages_per_second: 20,
            ws_burst: 40,
            ws_max_connections_per_user: 16,
            ws_send_queue: 256,
            gateway: "simulated".into(),
            gateway_timeout_ms: 5000,
            call_timeout_ms: 5000,
            hibernate_after_secs: 10,
            passivate_after_secs: 600,
            memory_trim_interval_ms: 5_000,
            sqlite_cache_kib: Tuning::DEFAULT_SQLITE_CACHE_KIB,
            db_lock_wait_ms: Tuning::DEFAULT_LOCK_WAIT.as_millis() as u64,
            db_migration_wait_ms: Tuning::DEFAULT_MIGRATION_WAIT.as_millis() as u64,
            idempotency_retention_hours: 24,
            relay_batch: 500,
            cluster_cookie_file: String::new(),
            cluster_heartbeat_ms: 250,
            cluster_heartbeat_timeout_ms: 1500,
            cluster_max_frame_bytes: 4 << 20,
            cluster_max_routed_in_flight: 4096,
            max_in_flight_requests: 8192,
            max_in_flight_per_user: 64,
            redis_url: String::new(),
            redis_timeout_ms: 50,
            kafka_brokers: String::new(),
            kafka_topic_prefix: String::new(),
            kafka_partitions: 6,
            kafka_replication: 1,
            kafka_connect_timeout_ms: 30_000,
            // HTTP connections (slow clients).
            http_header_read_timeout_ms: 10_000,
            http_body_read_timeout_ms: 30_000,
            http_max_connections: 10_000,
            // Under the 10 s after which `bazaar cluster up` SIGKILLs a node that has not exited.
            shutdown_grace_ms: 5_000,
            // Orders: the reservation hold (15 minutes).
            reservation_hold_secs: 900,
            order_timeline_max_events: 500,
            cart_max_items: 50,
            checkout_timeout_ms: 30_000,
            chat_room_answers_waiting: 1_024,
            // Outbound webhooks: retried for three days, 10 s doubling up to an hour.
            webhook_retry_for_secs: 3 * 24 * 3600,
            webhook_retry_base_ms: 10_000,
            webhook_retry_max_ms: 3_600_000,
            webhook_timeout_ms: 10_000,
            webhook_allow_private_addresses: false,
            webhook_max_endpoints: 10,
            webhook_max_in_flight: 64,
            webhook_poll_ms: 1_000,
            webhook_secret_overlap_secs: 24 * 3600,
            webhook_retention_days: 30,
            webhook_operator_url: String::new(),
            webhook_operator_events: "*".to_owned(),
            saga_max_in_flight: 10_000,
            chat_replay_page: 100,
            ws_replay_send_timeout_ms: 10_000,
            chat_rooms_page_default: 20,
            chat_rooms_page_max: 100,
            // Cluster by name: [[nodes]] by default; a StatefulSet of up to 16 pods when a
            // peer domain is set.
            cluster_listen_addr: String::new(),
            cluster_peer_domain: String::new(),
            cluster_max_nodes: 16,
            cluster_dial_timeout_ms: 2_000,
            // Chat brokered by Kafka: a batch of 500 records is a few hundred KiB of chat; a look
            // every 500 ms per partition (the saga's pace) bounds the delay while a node's peer
            // links are down, and keeps an idle cluster's reads of the broker few.
            socket_feed_fetch_records: 500,
            socket_feed_poll_ms: 500,
            socket_feed_retry_max_ms: 2_000,
            socket_push_dedup_window: 4096,
            // WebSocket buffers: a chat frame is a few hundred bytes, and tungstenite suggests
            // 4 KiB for many connections (its default, 128 KiB, is for a few busy ones).
            ws_read_buffer_bytes: 4096,
            // Payment gateways: Toss Payments.
            toss_api_url: bazaar_actors::payment_gateway::DEFAULT_TOSS_API_URL.into(),
            toss_timeout_ms: 2_000,
            // Browsers on other origins: none until named.
            cors_allowed_origins: String::new(),
            // Payment webhooks: Toss's payment object with its cancels is a few KiB.
            webhook_body_limit_bytes: 65_536,
            webhook_notices_per_minute: 600,
            // Startup and logs: a minute covers a database container that starts with the node.
            db_connect_wait_ms: Tuning::DEFAULT_CONNECT_WAIT.as_millis() as u64,
            log_format: "text".into(),
            ops_http_addr: String::new(),
        }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For a person: one line per event, colours only at a terminal.
    Text,
    /// For a collector: one JSON object per line, with `timestamp`, `level`, `target` and
    /// `message` beside the event's own fields.
    Json,
}

/// One `[[nodes]]` entry of cluster.toml.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    #[serde(deserialize_with = "listen_addr")]
    pub http_addr: SocketAddr,
    /// Where peers reach the node (`host:port`, the host an IP address or a name, resolved at
    /// every dial); nodes without one run alone.
    pub cluster_addr: Option<PeerAddr>,
}

/// The `[[nodes]]` of a cluster.toml. Its `[settings]` are read into [`Settings`]; any other
/// top-level key (a misspelled `[setings]`) is refused rather than silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
    #[serde(default, rename = "settings")]
    _settings: Option<figment::value::Dict>,
}

/// A listening address: an IP address and port, or `localhost:PORT` (the IPv4 loopback, which is
/// what `localhost` names for a browser on the same machine).
pub fn parse_listen_addr(raw: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    match raw.rsplit_once(':') {
        Some((host, port)) if host.eq_ignore_ascii_case("localhost") => port
            .parse::<u16>()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .map_err(|_| format!("{raw:?}: the port must be a number from 0 to 65535")),
        _ => Err(format!("{raw:?} is not a listening address: use IP:PORT (127.0.0.1:8080) or localhost:PORT")),
    }
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let raw = String::deserialize(deserializer)?;
    parse_listen_addr(&raw).map_err(serde::de::Error::custom)
}

/// Why a `cors_allowed_origins` entry was refused.
#[derive(Debug, thiserror::Error)]
#[error("cors_allowed_origins: {0:?} is not an origin (scheme://host[:port], http or https, nothing after)")]
pub struct BadOrigin(pub String);

/// The listed origins of the comma-separated setting, each checked.
fn parse_origins(setting: &str) -> Result<Vec<String>, BadOrigin> {
    setting.split(',').map(str::trim).filter(|o| !o.is_empty()).map(parse_origin).collect()
}

fn parse_origin(raw: &str) -> Result<String, BadOrigin> {
    let bad = || BadOrigin(raw.to_owned());
    let (scheme, rest) = raw.split_once("://").ok_or_else(bad)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let valid_authority = !authority.is_empty()
        && authority.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        && authority.parse::<warp::http::uri::Authority>().is_ok_and(|a| a.as_str() == authority);
    if !matches!(scheme, "http" | "https") || !valid_authority {
        return Err(bad());
    }
    Ok(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// Says, for a key no setting has, which one was meant, naming the key as it was written: the
/// environment variable or the `[settings]` key.
fn explain_unknown_keys(error: figment::Error) -> anyhow::Error {
    let mut lines = Vec::new();
    for one in error.clone() {
        let figment::error::Kind::UnknownField(key, expected) = &one.kind else {
            lines.push(located(&one, "settings"));
            continue;
        };
        let from_env = one.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
        let written = if from_env { format!("BAZAAR_{}", key.to_uppercase()) } else { format!("`{key}`") };
        let source =
            one.metadata.as_ref().and_then(|m| m.source.as_ref()).map(|s| format!(" in {s}")).unwrap_or_default();
        let mut line = format!("unknown setting {written}{source}");
        if let Some(closest) = closest(key, expected) {
            let meant = if from_env { format!("BAZAAR_{}", closest.to_uppercase()) } else { format!("`{closest}`") };
            line.push_str(&format!(": did you mean {meant}?"));
        }
        lines.push(line);
    }
    anyhow::anyhow!("invalid configuration: {}", lines.join("; "))
}

/// One error of a value, where a person wrote it: `BAZAAR_WS_BURST`, or the table and key of the
/// file (`[settings] ws_burst`, `[[nodes]] entry 2: http_addr`) rather than figment's
/// `default.ws_burst`, whose `default` is its profile and names no table of the file. `table` is
/// the table a path without one is in (figment was focused on it).
fn located(one: &figment::Error, table: &str) -> String {
    if one.path.is_empty() {
        return one.to_string();
    }
    let from_env = one.metadata.as_ref().is_some_and(|m| m.name.contains("environment"));
    let written = if from_env {
        format!("BAZAAR_{}", one.path.join("_").to_uppercase())
    } else {
        match one.path.as_slice() {
            [nodes, index, rest @ ..] if nodes == "nodes" => {
                let entry = index.parse::<usize>().map_or_else(|_| index.clone(), |i| (i + 1).to_string());
                format!("[[nodes]] entry {entry}: {}", rest.join("."))
            }
            path => format!("[{table}] {}", path.join(".")),
        }
    };
    let source = one.metadata.as_ref().and_then(|m| m.source.as_ref()).map(|s| format!(" in {s}")).unwrap_or_default();
    format!("{written}{source}: {}", one.kind)
}

/// The line a TOML syntax error is at, as the parser's message names it.
fn syntax_error_line(message: &str) -> Option<usize> {
    let (_, rest) = message.split_once("TOML parse error at line ")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// The table header (`[settings]`, `[[nodes]]`) that line `line` (from 1) of a TOML text is
/// under; `None` above the first header.
fn table_at(text: &str, line: usize) -> Option<String> {
    text.lines()
        .take(line)
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .filter_map(|l| l.find(']').map(|end| l[..=end + usize::from(l[end + 1..].starts_with(']'))].to_owned()))
        .last()
}

/// The known key nearest to `key` by edit distance, if it is near enough to be a typo.
fn closest<'a>(key: &str, known: &'a [&'a str]) -> Option<&'a str> {
    let (best, distance) = known.iter().map(|k| (*k, edit_distance(key, k))).min_by_key(|(_, d)| *d)?;
    (distance <= 2.max(key.len() / 4)).then_some(best)
}

/// Levenshtein distance, over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

impl ClusterFile {
    /// Reads the `[[nodes]]` of a file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        Figment::from(Toml::file_exact(path)).extract().map_err(|error| {
            let tables: Vec<String> = error
                .clone()
                .into_iter()
                .filter_map(|one| match one.kind {
                    figment::error::Kind::UnknownField(key, expected) => Some(match closest(&key, expected) {
                        Some(meant) => format!("unknown table [{key}]: did you mean [{meant}]?"),
                        None => format!("unknown table [{key}]: a cluster file holds [settings] and [[nodes]]"),
                    }),
                    _ => None,
                })
                .collect();
            match tables.is_empty() {
                true => {
                    let lines: Vec<String> = error.into_iter().map(|one| located(&one, "nodes")).collect();
                    let lines = lines.join("; ");
                    // A syntax error names a line; the table it is in is what a person edits.
                    let table = syntax_error_line(&lines)
                        .and_then(|line| table_at(&std::fs::read_to_string(path).ok()?, line))
                        .map(|table| format!(" (in {table})"))
                        .unwrap_or_default();
                    anyhow::anyhow!("reading {}{table}: {lines}", path.display())
                }
                false => anyhow::anyhow!("{}: {}", path.display(), tables.join("; ")),
            }
        })
    }
}

/// The environment variable (after `BAZAAR_`) holding Toss's secret key.
const TOSS_SECRET_KEY_VAR: &str = "TOSS_SECRET_KEY";

/// The environment variable (after `BAZAAR_`) holding the operator's webhook secret.
const WEBHOOK_OPERATOR_SECRET_VAR: &str = "WEBHOOK_OPERATOR_SECRET";

/// Toss's secret key from the environment, when set and not empty.
fn toss_secret_key() -> Option<String> {
    std::env::var(format!("BAZAAR_{TOSS_SECRET_KEY_VAR}")).ok().filter(|k| !k.is_empty())
}

impl Settings {
    /// Reads the settings for `args`: defaults < file < environment < flags.
    pub fn load(args: &ServeArgs) -> anyhow::Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let mut entry = None;
        if let Some(path) = &args.config {
            figment = figment.merge(Figment::from(Toml::file_exact(path)).focus("settings"));
            let cluster = ClusterFile::read(path)?;
            if let Some(name) = &args.node {
                let found = cluster.nodes.into_iter().find(|n| &n.name == name);
                entry = Some(found.with_context(|| format!("no [[nodes]] entry named {name} in {}", path.display()))?);
            }
        }
        if let Some(entry) = &entry {
            figment = figment.merge(Serialized::default("node_name", &entry.name));
            figment = figment.merge(Serialized::default("http_addr", entry.http_addr));
        }
        // BAZAAR_LOG (the log filter), BAZAAR_CLUSTER_COOKIE and BAZAAR_TOSS_SECRET_KEY (secrets)
        // are read elsewhere.
        figment = figment.merge(Env::prefixed("BAZAAR_").ignore(&[
            "CLUSTER_COOKIE",
            "LOG",
            TOSS_SECRET_KEY_VAR,
            WEBHOOK_OPERATOR_SECRET_VAR,
        ]));
        if let Some(node) = &args.node {
            figment = figment.merge(Serialized::default("node_name", node));
        }
        if let Some(addr) = args.http_addr {
            figment = figment.merge(Serialized::default("http_addr", addr));
        }
        if let Some(dir) = &args.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        let settings: Settings = figment.extract().map_err(explain_unknown_keys)?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.cors_origins()?;
        if !bazaar_actors::payment_gateway::KINDS.contains(&self.gateway.as_str()) {
            bail!("gateway: one of {:?}, got {:?}", bazaar_actors::payment_gateway::KINDS, self.gateway);
        }
        if self.gateway == "toss" {
            if toss_secret_key().is_none() {
                bail!("gateway \"toss\" needs its secret key in BAZAAR_{TOSS_SECRET_KEY_VAR}");
            }
            if self.toss_timeout_ms == 0 || self.toss_timeout_ms.saturating_mul(2) >= self.gateway_timeout_ms {
                bail!("toss_timeout_ms must be at least 1 and under half of gateway_timeout_ms (a charge and its lookup fit in the payment's wait)");
            }
            if !(self.toss_api_url.starts_with("https://") || self.toss_api_url.starts_with("http://")) {
                bail!("toss_api_url must start with https:// (or http:// for a local emulator)");
            }
        }
        // Payment webhooks: a provider's notification is a few KiB; under 1 KiB none would fit.
        if self.webhook_body_limit_bytes < 1024 {
            bail!("webhook_body_limit_bytes must be at least 1024 (a provider's notification is a few KiB)");
        }
        // MySQL counts a lock wait in whole seconds.
        if self.db_lock_wait_ms < 1000 || self.db_migration_wait_ms < 1000 {
            bail!(
                "db_lock_wait_ms and db_migration_wait_ms must be at least 1000 (MySQL counts them in whole seconds)"
            );
        }
        self.durability()?;
        bazaar_protocol::values::parse_currency(&self.default_currency)
            .map_err(|e| anyhow::anyhow!("default_currency: {}", e.reason))?;
        if self.ws_burst == 0 || self.ws_messages_per_second == 0 || self.ws_send_queue == 0 {
            bail!("ws_burst, ws_messages_per_second and ws_send_queue must be at least 1");
        }
        if self.auth_attempts_per_minute_per_client == 0 || self.auth_attempts_per_second == 0 {
            bail!("auth_attempts_per_minute_per_client and auth_attempts_per_second must be at least 1");
        }
        if self.login_attempts_per_minute == 0
            || self.webhook_notices_per_minute == 0
            || self.body_limit_bytes == 0
            || self.ws_max_frame_bytes == 0
        {
            bail!("login_attempts_per_minute, webhook_notices_per_minute, body_limit_bytes and ws_max_frame_bytes must be at least 1");
        }
        if self.saga_max_in_flight == 0
            || self.chat_replay_page == 0
            || self.chat_rooms_page_default == 0
            || self.chat_rooms_page_max < self.chat_rooms_page_default
        {
            bail!("saga_max_in_flight, chat_replay_page and chat_rooms_page_default must be at least 1, and chat_rooms_page_max at least chat_rooms_page_default");
        }
        if self.ws_read_buffer_bytes < 256 {
            bail!("ws_read_buffer_bytes must be at least 256");
        }
        if self.idempotency_retention_hours < 24 {
            bail!("idempotency_retention_hours: the API promises at least 24");
        }
        if self.cluster_max_frame_bytes < 4096 || self.cluster_heartbeat_ms == 0 {
            bail!("cluster_max_frame_bytes must be at least 4096 and cluster_heartbeat_ms at least 1");
        }
        if self.max_in_flight_requests == 0
            || self.max_in_flight_per_user == 0
            || self.cluster_max_routed_in_flight == 0
        {
            bail!("max_in_flight_requests, max_in_flight_per_user and cluster_max_routed_in_flight must be at least 1");
        }
        if self.kafka_partitions == 0 || self.kafka_partitions > 1024 || self.kafka_replication == 0 {
            bail!("kafka_partitions must be 1 to 1024 and kafka_replication at least 1");
        }
        if self.http_header_read_timeout_ms == 0
            || self.http_body_read_timeout_ms == 0
            || self.http_max_connections == 0
        {
            bail!("http_header_read_timeout_ms, http_body_read_timeout_ms and http_max_connections must be at least 1");
        }
        if self.reservation_hold_secs == 0 {
            bail!("reservation_hold_secs must be at least 1");
        }
        if !(1..=100_000).contains(&self.order_timeline_max_events) {
            bail!("order_timeline_max_events must be 1 to 100000");
        }
        if !(1..=1_000).contains(&self.cart_max_items) {
            bail!("cart_max_items must be 1 to 1000");
        }
        if !(1_000..=600_000).contains(&self.checkout_timeout_ms) {
            bail!("checkout_timeout_ms must be 1000 to 600000");
        }
        if !(1..=1_000_000).contains(&self.chat_room_answers_waiting) {
            bail!("chat_room_answers_waiting must be 1 to 1000000");
        }
        self.webhook_settings()?;
        self.cluster_listen_addr()?;
        if self.cluster_max_nodes == 0 || self.cluster_max_nodes > 1024 || self.cluster_dial_timeout_ms == 0 {
            bail!("cluster_max_nodes must be 1 to 1024 and cluster_dial_timeout_ms at least 1");
        }
        if self.socket_feed_fetch_records == 0 || self.socket_feed_poll_ms == 0 || self.socket_push_dedup_window == 0 {
            bail!("socket_feed_fetch_records, socket_feed_poll_ms and socket_push_dedup_window must be at least 1");
        }
        if !self.cluster_peer_domain.is_empty() {
            self.statefulset_members()?;
        }
        // Startup and logs: what `serve` would refuse later while starting (a URL it cannot
        // read), refused here, so `bazaar config` refuses it too and before anything is opened.
        if !self.database_url.is_empty() {
            bazaar_actors::store::Backend::of_url(&self.database_url)
                .map_err(|e| anyhow::anyhow!("database_url {}: {e}", mask_url_password(&self.database_url)))?;
        }
        if !self.redis_url.is_empty() {
            bazaar_actors::cache::Cache::check_url(&self.redis_url)
                .map_err(|e| anyhow::anyhow!("redis_url {}: {e}", mask_url_password(&self.redis_url)))?;
        }
        for broker in self.kafka_brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            let valid =
                broker.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                bail!("kafka_brokers: {broker:?} is not host:port");
            }
        }
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            bail!("data_dir {} is not a directory", self.data_dir.display());
        }
        if self.db_connect_wait_ms < 1000 {
            bail!("db_connect_wait_ms must be at least 1000");
        }
        self.log_format()?;
        self.ops_http_addr()?;
        if matches!(&self.jwt_secret, Some(s) if s.len() < 32) {
            bail!("jwt_secret: must be at least 32 characters");
        }
        Ok(())
    }

    /// The payment gateway these settings name, with Toss's secret key from the environment.
    pub fn gateway_settings(&self) -> bazaar_actors::payment_gateway::GatewaySettings {
        bazaar_actors::payment_gateway::GatewaySettings {
            kind: self.gateway.clone(),
            toss: bazaar_actors::payment_gateway::TossSettings {
                api_url: self.toss_api_url.clone(),
                secret_key: toss_secret_key(),
                timeout: Duration::from_millis(self.toss_timeout_ms),
            },
        }
    }

    /// The outbound webhook settings, the operator's endpoint with its secret from the
    /// environment; refused when out of range.
    pub fn webhook_settings(&self) -> anyhow::Result<bazaar_actors::webhooks::WebhookSettings> {
        use bazaar_protocol::webhooks::OPERATOR_EVENTS;
        if !(1..=30 * 24 * 3600).contains(&self.webhook_retry_for_secs) {
            bail!("webhook_retry_for_secs must be 1 to 2592000 (30 days)");
        }
        if self.webhook_retry_base_ms == 0 || self.webhook_retry_max_ms < self.webhook_retry_base_ms {
            bail!("webhook_retry_base_ms must be at least 1 and webhook_retry_max_ms at least webhook_retry_base_ms");
        }
        if !(1..=60_000).contains(&self.webhook_timeout_ms) {
            bail!("webhook_timeout_ms must be 1 to 60000");
        }
        if !(1..=100).contains(&self.webhook_max_endpoints) || !(1..=10_000).contains(&self.webhook_max_in_flight) {
            bail!("webhook_max_endpoints must be 1 to 100 and webhook_max_in_flight 1 to 10000");
        }
        if self.webhook_poll_ms == 0 || !(1..=36_500).contains(&self.webhook_retention_days) {
            bail!("webhook_poll_ms must be at least 1 and webhook_retention_days 1 to 36500");
        }
        let operator = if self.webhook_operator_url.is_empty() {
            None
        } else {
            bazaar_actors::webhooks::address::parse(&self.webhook_operator_url)
                .map_err(|e| anyhow::anyhow!("webhook_operator_url: {e}"))?;
            let var = format!("BAZAAR_{WEBHOOK_OPERATOR_SECRET_VAR}");
            let secret = std::env::var(&var).unwrap_or_default();
            if !(24..=255).contains(&secret.len()) {
                bail!("webhook_operator_url is set: its signing secret goes in {var}, 24 to 255 characters");
            }
            let listed: Vec<&str> =
                self.webhook_operator_events.split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
            if let Some(unknown) = listed.iter().find(|e| **e != "*" && !OPERATOR_EVENTS.contains(e)) {
                bail!(
                    "webhook_operator_events: {unknown:?} is not an event type; \"*\" or some of {}",
                    OPERATOR_EVENTS.join(", ")
                );
            }
            let all = listed.is_empty() || listed.contains(&"*");
            let events =
                OPERATOR_EVENTS.iter().filter(|e| all || listed.contains(e)).map(|e| (*e).to_owned()).collect();
            Some(bazaar_actors::webhooks::OperatorEndpoint { url: self.webhook_operator_url.clone(), secret, events })
        };
        Ok(bazaar_actors::webhooks::WebhookSettings {
            retry_for: Duration::from_secs(self.webhook_retry_for_secs),
            retry_base: Duration::from_millis(self.webhook_retry_base_ms),
            retry_max: Duration::from_millis(self.webhook_retry_max_ms),
            timeout: Duration::from_millis(self.webhook_timeout_ms),
            allow_private: self.webhook_allow_private_addresses,
            max_endpoints: self.webhook_max_endpoints,
            max_in_flight: self.webhook_max_in_flight,
            poll: Duration::from_millis(self.webhook_poll_ms),
            secret_overlap: Duration::from_secs(self.webhook_secret_overlap_secs),
            retention: Duration::from_secs(self.webhook_retention_days.saturating_mul(24 * 3600)),
            operator,
        })
    }

    /// `ops_http_addr` as an address to bind; `None` when empty.
    pub fn ops_http_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        if self.ops_http_addr.is_empty() {
            return Ok(None);
        }
        parse_listen_addr(&self.ops_http_addr).map(Some).map_err(|e| anyhow::anyhow!("ops_http_addr: {e}"))
    }

    /// The log format setting.
    pub fn log_format(&self) -> anyhow::Result<LogFormat> {
        match self.log_format.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("log_format: \"text\" or \"json\", got {other:?}"),
        }
    }

    /// The SQLite durability setting.
    pub fn durability(&self) -> anyhow::Result<Durability> {
        match self.sqlite_synchronous.as_str() {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => bail!("sqlite_synchronous: \"full\" or \"normal\", got {other:?}"),
        }
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    /// The origins of `cors_allowed_origins`, each checked (`validate` refuses a bad one).
    pub fn cors_origins(&self) -> Result<Vec<String>, BadOrigin> {
        parse_origins(&self.cors_allowed_origins)
    }

    pub fn database_url(&self) -> String {
        if self.database_url.is_empty() {
            format!("sqlite://{}", self.data_dir.join("bazaar.db").display())
        } else {
            self.database_url.clone()
        }
    }

    /// How this node joins its cluster: `None` unless `--config` lists this node with a
    /// `cluster_addr` and at least one other node, or `cluster_peer_domain` makes it a pod of a
    /// StatefulSet.
    pub fn cluster(&self, args: &ServeArgs) -> anyhow::Result<Option<ClusterConfig>> {
        let Some(Members { listen, addr, peers }) = self.cluster_members(args)? else { return Ok(None) };
        Ok(Some(ClusterConfig {
            node_name: self.node_name.clone(),
            listen,
            addr,
            peers,
            dial_timeout: Duration::from_millis(self.cluster_dial_timeout_ms),
            cookie: self.cluster_cookie()?,
            heartbeat: Duration::from_millis(self.cluster_heartbeat_ms),
            heartbeat_timeout: Duration::from_millis(
                self.cluster_heartbeat_timeout_ms.max(self.cluster_heartbeat_ms * 2),
            ),
            max_frame_bytes: self.cluster_max_frame_bytes,
            // A peer back in view may still be finishing a write it began while this node was out
            // of its view (a call takes at most call_timeout), and may not see this node for
            // another heartbeat timeout: memory is trusted once the view has been whole that long.
            trust_after: Duration::from_millis(
                self.cluster_heartbeat_timeout_ms.max(self.cluster_heartbeat_ms * 2) + self.cluster_heartbeat_ms,
            ) + self.call_timeout(),
        }))
    }

    /// Where this node listens for peers and who they are; `None` when it runs alone.
    fn cluster_members(&self, args: &ServeArgs) -> anyhow::Result<Option<Members>> {
        let nodes = match &args.config {
            Some(path) => ClusterFile::read(path)?.nodes,
            None => Vec::new(),
        };
        if !self.cluster_peer_domain.is_empty() {
            // Two sources of peers would disagree about who is in the cluster.
            if let (Some(path), false) = (&args.config, nodes.is_empty()) {
                bail!("cluster_peer_domain is set and {} lists [[nodes]]: use one or the other", path.display());
            }
            return self.statefulset_members().map(Some);
        }
        let Some(me) = nodes.iter().find(|n| n.name == self.node_name) else { return Ok(None) };
        let Some(addr) = me.cluster_addr.clone() else { return Ok(None) };
        let peers: Vec<(String, PeerAddr)> = nodes
            .iter()
            .filter(|n| n.name != self.node_name)
            .filter_map(|n| n.cluster_addr.clone().map(|addr| (n.name.clone(), addr)))
            .collect();
        let listen = self.cluster_listen_addr()?.unwrap_or_else(|| addr.clone());
        Ok((!peers.is_empty()).then_some(Members { listen, addr, peers }))
    }

    /// `cluster_listen_addr` as an address to bind; `None` when empty.
    fn cluster_listen_addr(&self) -> anyhow::Result<Option<PeerAddr>> {
        if self.cluster_listen_addr.is_empty() {
            return Ok(None);
        }
        let addr: SocketAddr = self.cluster_listen_addr.parse().map_err(|_| {
            anyhow::anyhow!("cluster_listen_addr: an ip:port such as 0.0.0.0:7000, got {:?}", self.cluster_listen_addr)
        })?;
        Ok(Some(PeerAddr::new(&addr.ip().to_string(), addr.port())?))
    }

    /// The members of this node's StatefulSet (see `cluster_peer_domain`).
    fn statefulset_members(&self) -> anyhow::Result<Members> {
        let listen = self.cluster_listen_addr()?.context(
            "cluster_listen_addr: required with cluster_peer_domain (every pod listens on its port, 0.0.0.0:7000)",
        )?;
        statefulset_members(&self.node_name, &self.cluster_peer_domain, listen, self.cluster_max_nodes)
    }

    /// What `bazaar config` prints: every setting by its key, then the cluster this node would
    /// join. Secrets never appear: `jwt_secret` is `"***"` when set, passwords in URLs are
    /// masked, and the cluster cookie is named by where it comes from. Unlike `serve`, nothing
    /// is written: a cookie that would be generated into the data directory is only announced.
    pub fn describe(&self, args: &ServeArgs) -> anyhow::Result<serde_json::Value> {
        let mut settings = serde_json::to_value(self)?;
        let keys = settings.as_object_mut().context("settings serialize to a JSON object")?;
        keys.insert("jwt_secret".into(), self.jwt_secret.as_ref().map(|_| "***").into());
        for key in ["database_url", "redis_url"] {
            if let Some(serde_json::Value::String(url)) = keys.get_mut(key) {
                *url = mask_url_password(url);
            }
        }
        let cluster = match self.cluster_members(args)? {
            None => serde_json::Value::Null,
            Some(Members { listen, addr, peers }) => serde_json::json!({
                "listen": listen,
                "addr": addr,
                "peers": peers.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "cookie": self.cluster_cookie_source()?,
            }),
        };
        Ok(serde_json::json!({ "settings": settings, "cluster": cluster }))
    }

    /// Where `cluster_cookie` would take the cookie from, checked the same way but without
    /// creating anything.
    fn cluster_cookie_source(&self) -> anyhow::Result<String> {
        if std::env::var("BAZAAR_CLUSTER_COOKIE").is_ok_and(|cookie| !cookie.trim().is_empty()) {
            return Ok("BAZAAR_CLUSTER_COOKIE".into());
        }
        if !self.cluster_cookie_file.is_empty() {
            std::fs::read_to_string(&self.cluster_cookie_file)
                .with_context(|| format!("reading the cluster cookie file {}", self.cluster_cookie_file))?;
            return Ok(format!("file {}", self.cluster_cookie_file));
        }
        Ok(format!("generated into {}", self.data_dir.join("cluster_cookie").display()))
    }

    /// The deadline of a call to an entity.
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }

    /// The JWT secret: configured, or the development secret of the data directory (created on
    /// first start with owner-only permissions).
    pub fn jwt_secret(&self) -> anyhow::Result<Vec<u8>> {
        if let Some(secret) = &self.jwt_secret {
            return Ok(secret.as_bytes().to_vec());
        }
        dev_secret(&self.data_dir.join("jwt_secret"))
    }

    /// The cluster cookie: BAZAAR_CLUSTER_COOKIE, else the cookie file, else one generated into
    /// the data directory (which the nodes of a local cluster share).
    pub fn cluster_cookie(&self) -> anyhow::Result<String> {
        if let Ok(cookie) = std::env::var("BAZAAR_CLUSTER_COOKIE") {
            if !cookie.trim().is_empty() {
                return Ok(cookie.trim().to_owned());
            }
        }
        if !self.cluster_cookie_file.is_empty() {
            let cookie = std::fs::read_to_string(&self.cluster_cookie_file)
                .with_context(|| format!("reading the cluster cookie file {}", self.cluster_cookie_file))?;
            return Ok(cookie.trim().to_owned());
        }
        Ok(String::from_utf8(dev_secret(&self.data_dir.join("cluster_cookie"))?)?)
    }
}

/// Where a node of a cluster listens for peers, how they reach it, and the peers by name.
struct Members {
    listen: PeerAddr,
    addr: PeerAddr,
    peers: Vec<(String, PeerAddr)>,
}

/// The members of a StatefulSet's cluster as pod `node_name` sees them: the pod names are
/// `<statefulset>-<ordinal>`, each reachable as `<pod>.<domain>` on the listen port (the headless
/// Service's DNS records), for ordinals `0..max_nodes`. Which of them exist is for DNS to say at
/// each dial, so scaling the StatefulSet changes nothing here.
fn statefulset_members(node_name: &str, domain: &str, listen: PeerAddr, max_nodes: u32) -> anyhow::Result<Members> {
    let (statefulset, ordinal) = node_name
        .rsplit_once('-')
        .and_then(|(set, ordinal)| Some((set, ordinal.parse::<u32>().ok()?)))
        .filter(|(set, _)| !set.is_empty())
        .with_context(|| {
            format!("node_name: a StatefulSet pod's name, <statefulset>-<ordinal>, with cluster_peer_domain; got {node_name:?}")
        })?;
    if ordinal >= max_nodes {
        bail!("node_name: {node_name} is beyond cluster_max_nodes = {max_nodes}; raise it to scale further");
    }
    let pod_addr = |ordinal: u32| -> anyhow::Result<PeerAddr> {
        let host = format!("{statefulset}-{ordinal}.{domain}");
        PeerAddr::new(&host, listen.port()).with_context(|| format!("cluster_peer_domain: {host} is not a DNS name"))
    };
    let peers = (0..max_nodes)
        .filter(|&i| i != ordinal)
        .map(|i| Ok((format!("{statefulset}-{i}"), pod_addr(i)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Members { addr: pod_addr(ordinal)?, listen, peers })
}

/// `scheme://user:***@host...` for a URL that carries a password; any other string unchanged.
fn mask_url_password(url: &str) -> String {
    // A value without a scheme is no URL this parses: whatever precedes its last '@' may be
    // credentials.
    let Some((scheme, rest)) = url.split_once("://") else {
        return match url.rfind('@') {
            Some(at) => format!("***{}", &url[at..]),
            None => mask_query_password(url),
        };
    };
    // The user information ends at the last '@' before the path: a password may contain '@'.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let masked = match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    mask_query_password(&masked)
}

/// `password=...` in a URL's query (PostgreSQL's drivers take it there too) with its value masked.
fn mask_query_password(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// Reads the secret at `path`, creating it first if missing. Nodes of a local cluster start
/// together on one data directory: the file is written once (to a temporary name, then linked
/// into place, which fails if another node won the race) and everyone reads the winner's.
fn dev_secret(path: &Path) -> anyhow::Result<Vec<u8>> {
    let read = || std::fs::read_to_string(path).ok().map(|s| s.trim().to_owned()).filter(|s| s.len() >= 32);
    if let Some(existing) = read() {
        return Ok(existing.into_bytes());
    }
    let secret = hex::encode(rand::random::<[u8; 32]>());
    // `serve` on a fresh checkout: the data directory is made here, not required beforehand.
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let temporary = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    use std::io::Write;
    let mut file = options.open(&temporary).with_context(|| format!("writing {}", temporary.display()))?;
    file.write_all(secret.as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => Ok(secret.into_bytes()),
        Err(_) => read().map(String::into_bytes).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        assert_eq!(
            parse_origins(" https://shop.example , http://localhost:3000/").unwrap(),
            ["https://shop.example", "http://localhost:3000"]
        );
        assert!(parse_origins("").unwrap().is_empty());
        for bad in ["shop.example", "ftp://shop.example", "https://shop.example/path", "https://", "https://a b", "*"] {
            assert!(parse_origins(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn flags_beat_the_file_and_the_file_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(
            &path,
            "[settings]\nws_burst = 7\n[[nodes]]\nname = \"n2\"\nhttp_addr = \"127.0.0.1:9999\"\ncluster_addr = \"127.0.0.1:9998\"\n",
        )
        .unwrap();
        let args = ServeArgs { config: Some(path), node: Some("n2".into()), ..Default::default() };
        let settings = Settings::load(&args).unwrap();
        assert_eq!(settings.ws_burst, 7);
        assert_eq!(settings.node_name, "n2");
        assert_eq!(settings.http_addr.port(), 9999);

        let args = ServeArgs { http_addr: Some("127.0.0.1:0".parse().unwrap()), ..args };
        assert_eq!(Settings::load(&args).unwrap().http_addr.port(), 0);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment's own error type.
    fn the_log_filter_variable_is_not_a_setting() {
        // BAZAAR_LOG is read by main; a strict settings parser must not refuse to start over it.
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_LOG", "warn");
            jail.set_env("BAZAAR_WS_BURST", "9");
            let settings = Settings::load(&ServeArgs::default()).map_err(|e| e.to_string())?;
            assert_eq!(settings.ws_burst, 9);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment's own error type.
    fn the_toss_secret_key_comes_from_the_environment_only() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_GATEWAY", "toss");
            assert!(Settings::load(&ServeArgs::default()).is_err(), "toss without its key must not start");
            jail.set_env("BAZAAR_TOSS_SECRET_KEY", "test_sk_from_the_environment");
            let settings = Settings::load(&ServeArgs::default()).map_err(|e| e.to_string())?;
            let gateway = settings.gateway_settings();
            assert_eq!(gateway.toss.secret_key.as_deref(), Some("test_sk_from_the_environment"));
            assert!(!format!("{gateway:?}").contains("test_sk_from"));
            assert!(!settings.describe(&ServeArgs::default()).unwrap().to_string().contains("test_sk_from"));
            // A key in the file is not a setting: the file is refused.
            jail.create_file("bazaar.toml", "[settings]\ntoss_secret_key = \"test_sk_in_a_file\"\n")?;
            let args = ServeArgs { config: Some("bazaar.toml".into()), ..Default::default() };
            assert!(Settings::load(&args).is_err());
            // The lookup after a timeout must fit in the payment's own wait.
            jail.set_env("BAZAAR_TOSS_TIMEOUT_MS", "2500");
            assert!(Settings::load(&ServeArgs::default()).is_err());
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment's own error type.
    fn a_misspelled_setting_is_named_as_written_with_the_key_that_was_meant() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_WS_BRUST", "9");
            let error = Settings::load(&ServeArgs::default()).unwrap_err().to_string();
            assert!(error.contains("BAZAAR_WS_BRUST") && error.contains("did you mean BAZAAR_WS_BURST?"), "{error}");
            jail.clear_env();
            jail.create_file(
                "bazaar.toml",
                "[settings]
http_adr = \"127.0.0.1:1\"\n",
            )?;
            let args = ServeArgs { config: Some("bazaar.toml".into()), ..Default::default() };
            let error = Settings::load(&args).unwrap_err().to_string();
            assert!(error.contains("`http_adr`") && error.contains("did you mean `http_addr`?"), "{error}");
            // Far from every key: no guess.
            jail.set_env("BAZAAR_COMPLETELY_UNRELATED", "1");
            let error = Settings::load(&ServeArgs::default()).unwrap_err().to_string();
            assert!(error.contains("BAZAAR_COMPLETELY_UNRELATED") && !error.contains("did you mean"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn errors_in_the_file_name_its_table_and_key_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let args = ServeArgs { config: Some(path.clone()), ..Default::default() };
            format!("{:#}", Settings::load(&args).unwrap_err())
        };
        let error = load("[settings]\nws_burst = \"nine\"\n");
        assert!(error.contains("[settings] ws_burst") && !error.contains("default."), "{error}");
        let error = load("[settings]\nws_burst = 9\n[[nodes]]\nname = \"a\"\nhttp_addr = 5\n");
        assert!(error.contains("[[nodes]] entry 1: http_addr") && !error.contains("default."), "{error}");
        let error = load("[settings]\nws_burst = 9\n[[nodes]]\nname = \"a\"\nhttp_addr = \"127.0.0.1:1\n");
        assert!(error.contains("(in [[nodes]])") && error.contains("line 5"), "{error}");
        let error = load("[settings]\nws_burst = = 9\n[[nodes]]\nname = \"a\"\n");
        assert!(error.contains("(in [settings])") && error.contains("line 2"), "{error}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment's own error type.
    fn a_misspelled_settings_table_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bazaar.toml", "[setings]\nws_burst = 9\n")?;
            let args = ServeArgs { config: Some("bazaar.toml".into()), ..Default::default() };
            let error = format!("{:#}", Settings::load(&args).unwrap_err());
            assert!(error.contains("unknown table [setings]: did you mean [settings]?"), "{error}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment's own error type.
    fn localhost_is_a_listening_address() {
        assert_eq!(parse_listen_addr("localhost:8080"), Ok(SocketAddr::from(([127, 0, 0, 1], 8080))));
        assert_eq!(parse_listen_addr("[::1]:80"), Ok("[::1]:80".parse().unwrap()));
        assert!(parse_listen_addr("localhost:http").is_err());
        assert!(parse_listen_addr("example.com:80").is_err());
        figment::Jail::expect_with(|jail| {
            jail.set_env("BAZAAR_HTTP_ADDR", "localhost:8181");
            let settings = Settings::load(&ServeArgs::default()).map_err(|e| e.to_string())?;
            assert_eq!(settings.http_addr, SocketAddr::from(([127, 0, 0, 1], 8181)));
            Ok(())
        });
    }

    #[test]
    fn a_chat_room_holds_one_to_a_million_answers_waiting() {
        for (waiting, valid) in [(0, false), (1, true), (1_024, true), (1_000_000, true), (1_000_001, false)] {
            let settings = Settings { chat_room_answers_waiting: waiting, ..Settings::default() };
            let outcome = settings.validate();
            assert_eq!(outcome.is_ok(), valid, "{waiting}: {outcome:?}");
            if let Err(e) = outcome {
                assert!(e.to_string().contains("chat_room_answers_waiting"), "{e}");
            }
        }
    }

    #[test]
    fn the_repository_cluster_toml_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster.toml");
        let args = ServeArgs { config: Some(path), node: Some("node2".into()), ..Default::default() };
        let settings = Settings::load(&args).unwrap();
        assert_eq!(settings.node_name, "node2");
    }

    #[test]
    fn the_dev_secret_is_stable_and_the_debug_form_hides_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let first = dev_secret(&dir.path().join("s")).unwrap();
        assert_eq!(first, dev_secret(&dir.path().join("s")).unwrap());
        let settings = Settings { jwt_secret: Some("x".repeat(40)), ..Settings::default() };
        assert!(!format!("{settings:?}").contains("xxxx"));
        let described = settings.describe(&ServeArgs::default()).unwrap();
        assert!(!described.to_string().contains("xxxx"));
        assert_eq!(described["settings"]["jwt_secret"], "***");
    }

    #[test]
    fn passwords_in_urls_are_masked_and_the_rest_is_kept() {
        assert_eq!(
            mask_url_password("postgres://bazaar:s3cr@t@db:5432/bazaar"),
            "postgres://bazaar:***@db:5432/bazaar"
        );
        assert_eq!(mask_url_password("redis://:pw@redis:6379/0"), "redis://:***@redis:6379/0");
        assert_eq!(mask_url_password("redis://redis:6379"), "redis://redis:6379");
        assert_eq!(mask_url_password("postgres://bazaar@db/x?a=b@c"), "postgres://bazaar@db/x?a=b@c");
        assert_eq!(mask_url_password(""), "");
        // No scheme: what precedes the last '@' may be credentials.
        assert_eq!(mask_url_password("bazaar:pw@db:5432/bazaar"), "***@db:5432/bazaar");
        assert_eq!(
            mask_url_password("postgres://db/x?user=bazaar&password=pw&sslmode=disable"),
            "postgres://db/x?user=bazaar&password=***&sslmode=disable"
        );
    }

    /// `Settings::load` with only these `BAZAAR_*` variables (and a cluster file, if given).
    #[allow(clippy::result_large_err)] // figment::Jail's closure must return figment's own error type.
    fn load_with(env: &[(&str, &str)], args: ServeArgs) -> Result<(Settings, Option<ClusterConfig>), String> {
        let mut out = Err(String::new());
        figment::Jail::expect_with(|jail| {
            for (key, value) in env {
                jail.set_env(key, value);
            }
            out = Settings::load(&args).and_then(|s| Ok((s.clone(), s.cluster(&args)?))).map_err(|e| format!("{e:#}"));
            Ok(())
        });
        out
    }

    const POD: [(&str, &str); 4] = [
        ("BAZAAR_NODE_NAME", "bazaar-1"),
        ("BAZAAR_CLUSTER_LISTEN_ADDR", "0.0.0.0:7000"),
        ("BAZAAR_CLUSTER_PEER_DOMAIN", "bazaar-cluster.shop.svc.cluster.local"),
        ("BAZAAR_CLUSTER_COOKIE", "cookie"),
    ];

    #[test]
    fn a_statefulset_pod_dials_every_other_ordinal_by_name_on_the_listen_port() {
        let env = [POD.as_slice(), &[("BAZAAR_CLUSTER_MAX_NODES", "5")]].concat();
        let (_, cluster) = load_with(&env, ServeArgs::default()).unwrap();
        let cluster = cluster.expect("a pod of a StatefulSet is in a cluster without a cluster file");
        assert_eq!(cluster.node_name, "bazaar-1");
        assert_eq!(cluster.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(cluster.addr.to_string(), "bazaar-1.bazaar-cluster.shop.svc.cluster.local:7000");
        let peers: Vec<String> = cluster.peers.iter().map(|(name, addr)| format!("{name}={addr}")).collect();
        assert_eq!(
            peers,
            [0, 2, 3, 4].map(|i| format!("bazaar-{i}=bazaar-{i}.bazaar-cluster.shop.svc.cluster.local:7000"))
        );
        // The default bound leaves room to scale to 16 without touching anything.
        let (_, cluster) = load_with(&POD, ServeArgs::default()).unwrap();
        assert_eq!(cluster.unwrap().peers.len(), 15);
    }

    #[test]
    fn a_statefulset_cluster_refuses_what_it_cannot_derive_peers_from() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut env: Vec<(&str, &str)> = POD.to_vec();
            for (key, value) in extra {
                env.retain(|(k, _)| k != key);
                env.push((key, value));
            }
            load_with(&env, ServeArgs::default()).map(|_| ()).unwrap_err()
        };
        assert!(with(&[("BAZAAR_NODE_NAME", "node1")]).contains("<statefulset>-<ordinal>"));
        assert!(with(&[("BAZAAR_NODE_NAME", "bazaar-")]).contains("<statefulset>-<ordinal>"));
        assert!(with(&[("BAZAAR_NODE_NAME", "bazaar-x")]).contains("<statefulset>-<ordinal>"));
        assert!(with(&[("BAZAAR_NODE_NAME", "bazaar-16")]).contains("cluster_max_nodes"));
        assert!(with(&[("BAZAAR_CLUSTER_LISTEN_ADDR", "")]).contains("required with cluster_peer_domain"));
        assert!(with(&[("BAZAAR_CLUSTER_LISTEN_ADDR", "bazaar-1:7000")]).contains("cluster_listen_addr"));
        assert!(with(&[("BAZAAR_CLUSTER_PEER_DOMAIN", "under_score.svc")]).contains("not a DNS name"));
        assert!(with(&[("BAZAAR_CLUSTER_MAX_NODES", "0")]).contains("cluster_max_nodes"));
        assert!(with(&[("BAZAAR_CLUSTER_DIAL_TIMEOUT_MS", "0")]).contains("cluster_dial_timeout_ms"));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(&path, "[[nodes]]\nname = \"bazaar-1\"\nhttp_addr = \"127.0.0.1:1\"\n").unwrap();
        let error = load_with(&POD, ServeArgs { config: Some(path), ..Default::default() }).unwrap_err();
        assert!(error.contains("use one or the other"), "{error}");
    }

    #[test]
    fn cluster_addresses_may_be_names_and_the_listen_address_may_differ() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.toml");
        std::fs::write(
            &path,
            "[[nodes]]\nname = \"a\"\nhttp_addr = \"127.0.0.1:1\"\ncluster_addr = \"node-a:7000\"\n\
             [[nodes]]\nname = \"b\"\nhttp_addr = \"127.0.0.1:2\"\ncluster_addr = \"[::1]:7001\"\n",
        )
        .unwrap();
        let args = ServeArgs { config: Some(path.clone()), node: Some("a".into()), ..Default::default() };
        let (_, cluster) = load_with(&[("BAZAAR_CLUSTER_COOKIE", "c")], args.clone()).unwrap();
        let cluster = cluster.unwrap();
        assert_eq!(
            (cluster.listen.to_string(), cluster.addr.to_string()),
            ("node-a:7000".into(), "node-a:7000".into())
        );
        assert_eq!(cluster.peers, [("b".to_owned(), "[::1]:7001".parse().unwrap())]);
        let env = [("BAZAAR_CLUSTER_COOKIE", "c"), ("BAZAAR_CLUSTER_LISTEN_ADDR", "0.0.0.0:7000")];
        let (_, cluster) = load_with(&env, args).unwrap();
        assert_eq!(cluster.unwrap().listen.to_string(), "0.0.0.0:7000");

        std::fs::write(&path, "[[nodes]]\nname = \"a\"\nhttp_addr = \"127.0.0.1:1\"\ncluster_addr = \"node_a\"\n")
            .unwrap();
        let error = ClusterFile::read(&path).unwrap_err();
        assert!(format!("{error:#}").contains("not host:port"), "{error:#}");
    }
}
