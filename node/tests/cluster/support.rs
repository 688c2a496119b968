//! The harness: a cluster of real `bazaar` processes sharing one data directory, each started with
//! `serve --config FILE --node NAME`, and clients that speak HTTP and WebSocket to any of them.
//!
//! A test builds a [`Cluster`] (the config file and its listed nodes), starts some of its nodes,
//! and talks to them through [`Api`]s, one per node. Accounts are plain [`User`]s (an id and a
//! token), so the same account can act through any node. Every child process is killed when the
//! cluster is dropped, and a failing test prints the tail of every node's log. What the `api`
//! tests share (replies, the WebSocket client, polling) lives in `common` and is re-exported here.

#![allow(dead_code)]

use crate::common::{collect_pages, enc, http_client_builder, send_request, serve_command, spawn_until_ready};
pub use crate::common::{
    database_env, eventually, server_env, unique_email, unique_key, Reply, Role, WsClient, FRAME_DEADLINE, PASSWORD,
};
use crate::common::{ws_request, Body, NotReady};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Child;

/// How long a node may take to print its ready line: a debug build on a loaded two-core machine,
/// next to other tests' clusters, is the slow case.
pub const READY_DEADLINE: Duration = Duration::from_secs(40);
/// How long the nodes of a cluster may take to see each other `up`.
pub const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(20);
/// How long event-driven outcomes (payments, order pushes) may take to show.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(15);
/// The cookie of the nodes that belong together.
pub const COOKIE: &str = "cluster-test-cookie-0123456789abcdef";

/// `n` distinct free ports, outside the kernel's ephemeral range: a port taken from that range
/// (binding port 0) can be grabbed by any outgoing connection (peers dial down nodes every second)
/// before the node binds it, or while a killed node is down. All are bound at once (so they
/// differ), then released for the nodes.
pub fn free_ports(n: usize) -> Vec<u16> {
    use rand::Rng;
    let (low, high) = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32768, 60999));
    let range = if low > 12_000 { 10_000..low } else { high.saturating_add(1)..u16::MAX };
    let mut rng = rand::thread_rng();
    let mut listeners = Vec::new();
    for _ in 0..10_000 {
        if listeners.len() == n {
            break;
        }
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", rng.gen_range(range.clone()))) {
            listeners.push(listener);
        }
    }
    assert_eq!(listeners.len(), n, "no {n} free ports in {range:?}");
    listeners.iter().map(|l| l.local_addr().expect("a bound address").port()).collect()
}

/// An account: its id, e-mail and current access token; usable through any node.
#[derive(Debug, Clone)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub token: String,
}

/// Where a WebSocket carries its access token.
#[derive(Debug, Clone, Copy)]
pub enum TokenIn {
    Header,
    Query,
}

/// One node's front door: a client and the node's HTTP address.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    /// The node's name, for failure messages.
    pub name: String,
    pub addr: SocketAddr,
}

impl Api {
    /// The base URL, without a trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends one request; `Err` when the connection failed or timed out (a node being killed).
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let body = body.map_or(Body::None, |body| Body::Json(body.clone()));
        send_request(&self.client, method, &format!("{}{}", self.base(), path), token, body, headers)
            .await
            .map_err(|e| format!("{}: {e}", self.name))
    }

    /// Sends one request and reads the whole answer; panics when the node does not answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_send(method.clone(), path, token, body, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path} via {}: the node did not answer: {e}", self.name))
    }

    /// A GET, with a token or anonymous.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, None, &[]).await
    }

    /// A POST of JSON, with a token or anonymous.
    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send(Method::POST, path, token, Some(body), &[]).await
    }

    /// A POST of JSON with a token and an `Idempotency-Key`.
    pub async fn post_keyed(&self, path: &str, token: &str, body: &Value, key: &str) -> Reply {
        self.send(Method::POST, path, Some(token), Some(body), &[("idempotency-key", key)]).await
    }

    /// A PATCH of JSON with a token.
    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Reply {
        self.send(Method::PATCH, path, Some(token), Some(body), &[]).await
    }

    /// `GET /cluster`, or why it failed.
    pub async fn cluster_view(&self) -> Result<Value, String> {
        let reply = self.try_send(Method::GET, "/cluster", None, None, &[]).await?;
        if reply.status == 200 {
            Ok(reply.json)
        } else {
            Err(format!("{}: GET /cluster answered HTTP {} {}", self.name, reply.status, reply.text))
        }
    }

    /// Signs up an account of `role` with a fresh e-mail; the token stays empty until a login.
    pub async fn signup(&self, role: Role) -> User {
        let email = unique_email();
        let profile = self
            .post(
                "/auth/signup",
                None,
                &json!({"email": email, "password": PASSWORD, "role": role.as_str(), "name": "Cluster Test"}),
            )
            .await
            .expect(201);
        let id = profile["id"].as_str().expect("signup returns an id").to_owned();
        User { id, email, role, token: String::new() }
    }

    /// Logs `user` in through this node and keeps the access token.
    pub async fn login(&self, user: &mut User) {
        let pair =
            self.post("/auth/login", None, &json!({"email": user.email, "password": PASSWORD})).await.expect(200);
        user.token = pair["accessToken"].as_str().expect("login returns accessToken").to_owned();
    }

    /// Signs up and logs in through this node.
    pub async fn signup_and_login(&self, role: Role) -> User {
        let mut user = self.signup(role).await;
        self.login(&mut user).await;
        user
    }

    /// Lists a product as `seller` and returns it.
    pub async fn list_product(&self, seller: &User, price: i64, stock: i64) -> Value {
        self.post(
            "/products",
            Some(&seller.token),
            &json!({"name": "Cluster product", "price": price, "currency": "KRW", "stock": stock, "description": "for cluster tests"}),
        )
        .await
        .expect(201)
    }

    /// Places an order with a fresh key and returns it.
    pub async fn place_order(&self, buyer: &User, product_id: &str, quantity: i64) -> Value {
        let order = self
            .post_keyed("/orders", &buyer.token, &json!({"productId": product_id, "quantity": quantity}), &unique_key())
            .await
            .expect(201);
        assert_eq!(order["status"], "ORDERED", "a new order: {order}");
        order
    }

    /// Pays an order with an approving card and a fresh key, and returns the payment.
    pub async fn pay(&self, buyer: &User, order_id: &str) -> Value {
        self.post_keyed(
            "/payments",
            &buyer.token,
            &json!({"orderId": order_id, "method": {"type": "card", "token": "tok_visa"}}),
            &unique_key(),
        )
        .await
        .expect(202)
    }

    /// Every item of a paged listing (`items` / `nextCursor`), following cursors.
    pub async fn list_all(&self, path: &str, token: Option<&str>) -> Vec<Value> {
        collect_pages(path, 200, |url| async move { self.get(&url, token).await.expect(200) })
            .await
            .unwrap_or_else(|| panic!("{path} via {} did not end within 200 pages", self.name))
    }

    /// Opens a WebSocket carrying `token` in the header or the query.
    pub async fn ws_connect(&self, token: &str, token_in: TokenIn) -> WsClient {
        let (url, header_token) = match token_in {
            TokenIn::Header => (format!("ws://{}/ws", self.addr), Some(token)),
            TokenIn::Query => (format!("ws://{}/ws?token={}", self.addr, enc(token)), None),
        };
        let request = ws_request(&url, header_token).expect("a WebSocket request");
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|e| panic!("the WebSocket upgrade on {} failed: {e}", self.name));
        WsClient::new(stream, Some(self.name.clone()))
    }
}

/// One `[[nodes]]` entry: a name and the two addresses it listens on.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub http_addr: SocketAddr,
    /// `host:port` as written in the file: an IP address or a name its peers resolve.
    pub cluster_addr: String,
}

/// A cluster config file with its listed nodes, and the processes started from it.
pub struct Cluster {
    dir: tempfile::TempDir,
    config: PathBuf,
    /// The config file each node is started with: `config`, unless a test gave a node its own.
    node_configs: Vec<PathBuf>,
    specs: Vec<NodeSpec>,
    children: Vec<Option<Child>>,
    starts: Vec<u32>,
    env: Vec<(String, String)>,
    client: reqwest::Client,
}

impl Cluster {
    /// Writes a config listing `listed` nodes (`n1`, `n2`, ...) on fresh ports; starts nothing.
    /// `env` (`BAZAAR_*` overrides) applies to every node started later.
    pub fn configure(listed: usize, env: &[(&str, &str)]) -> Cluster {
        Cluster::configure_hosts(listed, env, |_| "127.0.0.1".to_owned())
    }

    /// Like [`Cluster::configure`], with node `i`'s `cluster_addr` on host `host_of(i)` (a name
    /// or an IP address) instead of 127.0.0.1.
    pub fn configure_hosts(listed: usize, env: &[(&str, &str)], host_of: impl Fn(usize) -> String) -> Cluster {
        let dir = tempfile::Builder::new().prefix("bazaar-cluster-").tempdir().expect("a temporary directory");
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir).expect("the data directory");
        let ports = free_ports(listed * 2);
        let specs: Vec<NodeSpec> = (0..listed)
            .map(|i| NodeSpec {
                name: format!("n{}", i + 1),
                http_addr: SocketAddr::from(([127, 0, 0, 1], ports[2 * i])),
                cluster_addr: format!("{}:{}", host_of(i), ports[2 * i + 1]),
            })
            .collect();
        let mut toml = format!(
            "[settings]\ndata_dir = \"{}\"\ncluster_heartbeat_ms = 100\ncluster_heartbeat_timeout_ms = 600\n",
            data_dir.display()
        );
        for spec in &specs {
            toml.push_str(&format!(
                "\n[[nodes]]\nname = \"{}\"\nhttp_addr = \"{}\"\ncluster_addr = \"{}\"\n",
                spec.name, spec.http_addr, spec.cluster_addr
            ));
        }
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, toml).expect("the cluster config");
        let client = http_client_builder().connect_timeout(Duration::from_secs(3)).build().expect("an HTTP client");
        Cluster {
            dir,
            node_configs: vec![config.clone(); listed],
            config,
            children: (0..listed).map(|_| None).collect(),
            starts: vec![0; listed],
            specs,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            client,
        }
    }

    /// Configures `listed` nodes, starts the first `started` of them at once, and waits until
    /// each of them sees all of them `up`.
    pub async fn start(listed: usize, started: usize, env: &[(&str, &str)]) -> Cluster {
        let mut cluster = Cluster::configure(listed, env);
        let indices: Vec<usize> = (0..started).collect();
        cluster.start_nodes(&indices, COOKIE).await;
        cluster.wait_until_members_up(&indices, &indices, MEMBERSHIP_DEADLINE).await;
        cluster
    }

    /// The listed nodes.
    /// The cluster.toml this cluster was configured with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Starts node `index` (from now on) with `toml` as its config file instead of the shared
    /// one: how a test gives each node its own view of its peers' addresses.
    pub fn set_node_config(&mut self, index: usize, toml: &str) {
        let path = self.dir.path().join(format!("{}.toml", self.specs[index].name));
        std::fs::write(&path, toml).expect("the node's config file");
        self.node_configs[index] = path;
    }

    /// The data directory every node of this config shares.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn specs(&self) -> &[NodeSpec] {
        &self.specs
    }

    /// The name of node `index` (`n1` is index 0).
    pub fn name(&self, index: usize) -> &str {
        &self.specs[index].name
    }

    /// The front door of node `index`, whether it runs or not.
    pub fn api(&self, index: usize) -> Api {
        Api { client: self.client.clone(), name: self.specs[index].name.clone(), addr: self.specs[index].http_addr }
    }

    /// Starts the given nodes concurrently with `cookie`, and waits for each ready line.
    pub async fn start_nodes(&mut self, indices: &[usize], cookie: &str) {
        for &index in indices {
            assert!(self.children[index].is_none(), "node {} is already running", self.name(index));
            self.starts[index] += 1;
        }
        let children = futures_util::future::join_all(indices.iter().map(|&i| self.spawn_node(i, cookie))).await;
        for (&index, child) in indices.iter().zip(children) {
            self.children[index] = Some(child);
        }
    }

    /// Starts one node with the shared cookie and waits for its ready line.
    pub async fn start_node(&mut self, index: usize) {
        self.start_nodes(&[index], COOKIE).await;
    }

    /// Kills node `index` with SIGKILL and waits until the process is gone; nothing is flushed.
    /// The process id of a running node.
    pub fn pid(&self, index: usize) -> u32 {
        self.children[index].as_ref().and_then(|child| child.id()).expect("the node is running")
    }

    pub async fn kill9(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            child.kill().await.expect("SIGKILL the node");
        }
    }

    fn log_path(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.specs[index].name))
    }

    /// The last lines node `index` wrote to stderr, for failure messages.
    pub fn log_tail(&self, index: usize, lines: usize) -> String {
        crate::common::log_tail(&self.log_path(index), lines)
    }

    async fn spawn_node(&self, index: usize, cookie: &str) -> Child {
        let spec = &self.specs[index];
        let mut command = serve_command();
        command
            .arg("--config")
            .arg(&self.node_configs[index])
            .args(["--node", &spec.name])
            .envs(server_env(self.dir.path()))
            .envs(database_env(&self.data_dir()).await)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("BAZAAR_CLUSTER_COOKIE", cookie)
            .env("NO_COLOR", "1")
            // A startup error then fits in the log tail a failing test prints.
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0");
        let (child, line) = match spawn_until_ready(&mut command, &self.log_path(index), READY_DEADLINE).await {
            Ok(ready) => ready,
            Err(NotReady::Exited) => panic!(
                "node {} exited before it was ready (start {}); its log:\n{}",
                spec.name,
                self.starts[index],
                self.log_tail(index, 40)
            ),
            Err(NotReady::TimedOut) => panic!(
                "node {} printed no ready line within {READY_DEADLINE:?}; its log:\n{}",
                spec.name,
                self.log_tail(index, 40)
            ),
        };
        assert_eq!(
            line,
            format!("bazaar ready node={} http={}", spec.name, spec.http_addr),
            "the ready line names the node and its configured address"
        );
        child
    }

    /// Waits until, on every node in `observers`, every node in `expected` is listed `up`.
    pub async fn wait_until_members_up(&self, observers: &[usize], expected: &[usize], deadline: Duration) {
        let names: Vec<String> = expected.iter().map(|&i| self.name(i).to_owned()).collect();
        for &observer in observers {
            let api = self.api(observer);
            eventually(deadline, &format!("{} to list {names:?} as up", api.name), || async {
                let view = api.cluster_view().await?;
                for name in &names {
                    if member_status(&view, name).as_deref() != Some("up") {
                        return Err(view.to_string());
                    }
                }
                Ok(())
            })
            .await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            for index in 0..self.specs.len() {
                eprintln!(
                    "---- last lines of node {} (started {} times) ----\n{}",
                    self.specs[index].name,
                    self.starts[index],
                    self.log_tail(index, 40)
                );
            }
        }
    }
}

/// The `status` of member `name` in a `/cluster` view, if it is listed.
pub fn member_status(view: &Value, name: &str) -> Option<String> {
    member(view, name).and_then(|m| m["status"].as_str().map(str::to_owned))
}

/// The `entities` of member `name` in a `/cluster` view, if it is listed.
pub fn member_entities(view: &Value, name: &str) -> Option<i64> {
    member(view, name).and_then(|m| m["entities"].as_i64())
}

fn member<'a>(view: &'a Value, name: &str) -> Option<&'a Value> {
    view["members"].as_array()?.iter().find(|m| m["name"] == name)
}
