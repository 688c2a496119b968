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
    #[arg(long, value_name = "ADDR")]
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
            // WebSocket buffers: a chat frame is a few hundred bytes, and tungstenite suggests
            // 4 KiB for many connections (its default, 128 KiB, is for a few busy ones).
            ws_read_buffer_bytes: 4096,
            // Payment gateways: Toss Payments.
            toss_api_url: bazaar_actors::payment_gateway::DEFAULT_TOSS_API_URL.into(),
            toss_timeout_ms: 2_000,
        }
    }
}

/// One `[[nodes]]` entry of cluster.toml.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeEntry {
    pub name: String,
    pub http_addr: SocketAddr,
    /// Where peers reach the node (`host:port`, the host an IP address or a name, resolved at
    /// every dial); nodes without one run alone.
    pub cluster_addr: Option<PeerAddr>,
}

/// The `[[nodes]]` of a cluster.toml.
#[derive(Debug, Default, Deserialize)]
pub struct ClusterFile {
    #[serde(default)]
    pub nodes: Vec<NodeEntry>,
}

impl ClusterFile {
    /// Reads the `[[nodes]]` of a file.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        Figment::from(Toml::file_exact(path))
            .extract()
            .with_context(|| format!("reading the [[nodes]] of {}", path.display()))
    }
}

/// The environment variable (after `BAZAAR_`) holding Toss's secret key.
const TOSS_SECRET_KEY_VAR: &str = "TOSS_SECRET_KEY";

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
        figment = figment.merge(Env::prefixed("BAZAAR_").ignore(&["CLUSTER_COOKIE", "LOG", TOSS_SECRET_KEY_VAR]));
        if let Some(node) = &args.node {
            figment = figment.merge(Serialized::default("node_name", node));
        }
        if let Some(addr) = args.http_addr {
            figment = figment.merge(Serialized::default("http_addr", addr));
        }
        if let Some(dir) = &args.data_dir {
            figment = figment.merge(Serialized::default("data_dir", dir));
        }
        let settings: Settings = figment.extract().context("invalid configuration")?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> anyhow::Result<()> {
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
        self.durability()?;
        bazaar_protocol::values::parse_currency(&self.default_currency)
            .map_err(|e| anyhow::anyhow!("default_currency: {}", e.reason))?;
        if self.ws_burst == 0 || self.ws_messages_per_second == 0 || self.ws_send_queue == 0 {
            bail!("ws_burst, ws_messages_per_second and ws_send_queue must be at least 1");
        }
        if self.auth_attempts_per_minute_per_client == 0 || self.auth_attempts_per_second == 0 {
            bail!("auth_attempts_per_minute_per_client and auth_attempts_per_second must be at least 1");
        }
        if self.login_attempts_per_minute == 0 || self.body_limit_bytes == 0 || self.ws_max_frame_bytes == 0 {
            bail!("login_attempts_per_minute, body_limit_bytes and ws_max_frame_bytes must be at least 1");
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
        self.cluster_listen_addr()?;
        if self.cluster_max_nodes == 0 || self.cluster_max_nodes > 1024 || self.cluster_dial_timeout_ms == 0 {
            bail!("cluster_max_nodes must be 1 to 1024 and cluster_dial_timeout_ms at least 1");
        }
        if !self.cluster_peer_domain.is_empty() {
            self.statefulset_members()?;
        }
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

    /// The SQLite durability setting.
    pub fn durability(&self) -> anyhow::Result<Durability> {
        match self.sqlite_synchronous.as_str() {
            "full" => Ok(Durability::Full),
            "normal" => Ok(Durability::Normal),
            other => bail!("sqlite_synchronous: \"full\" or \"normal\", got {other:?}"),
        }
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
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
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    // The user information ends at the last '@' before the path: a password may contain '@'.
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else { return url.to_owned() };
    let Some((user, _password)) = rest[..at].split_once(':') else { return url.to_owned() };
    format!("{scheme}://{user}:***{}", &rest[at..])
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
