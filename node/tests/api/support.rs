//! The harness: starts a real `bazaar` process on port 0 with a fresh data directory, and speaks
//! HTTP and WebSocket to it like any client would.
//!
//! Tests hold a [`TestNode`] (the process) and [`TestUser`]s (accounts with tokens). Both share
//! the node's current address through an [`Api`], so a user created before a crash keeps working
//! after [`TestNode::restart`] moved the node to a new port. What the `cluster` tests share
//! (replies, the WebSocket client, polling) lives in `common` and is re-exported from here.

#![allow(dead_code)]

pub use crate::common::*;
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::process::Child;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// How long a node may take to print its ready line; a debug build recovering a data directory
/// after SIGKILL is the slow case.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long event-driven outcomes (payments, stock releases) may take to show.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// The shared way to reach the node: a client and the node's current address.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    addr: Arc<RwLock<SocketAddr>>,
}

impl Api {
    /// The node's current HTTP address.
    pub fn addr(&self) -> SocketAddr {
        *self.addr.read().unwrap()
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_send(method.clone(), path, token, body, headers)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: the node did not answer: {e}"))
    }

    /// Sends one request; `Err` when the connection failed (a node being killed, say).
    pub async fn try_send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        send_request(&self.client, method, &format!("{}{}", self.base(), path), token, body, headers).await
    }

    /// An anonymous GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, Body::None, &[]).await
    }

    /// An anonymous POST of JSON.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, None, Body::Json(body), &[]).await
    }

    /// An anonymous POST that, like a well-behaved client, waits as `Retry-After` says and tries
    /// again while the node answers 503 (its password work is bounded: tests that sign up many
    /// users at once can find it full). Gives up after 30 tries.
    pub async fn post_patiently(&self, path: &str, body: Value) -> Reply {
        for _ in 0..30 {
            let reply = self.post(path, body.clone()).await;
            if reply.status != 503 {
                return reply;
            }
            let wait: u64 = reply.header("retry-after").and_then(|s| s.parse().ok()).unwrap_or(1);
            tokio::time::sleep(Duration::from_millis(100 + 400 * wait.min(5))).await;
        }
        self.post(path, body).await
    }

    /// The WebSocket URL, optionally with the token as a query parameter.
    pub fn ws_url(&self, query_token: Option<&str>) -> String {
        match query_token {
            Some(token) => format!("ws://{}/ws?token={}", self.addr(), enc(token)),
            None => format!("ws://{}/ws", self.addr()),
        }
    }

    /// Opens a WebSocket with the token in the `Authorization` header.
    pub async fn ws_connect(&self, token: &str) -> WsClient {
        self.try_ws_connect(Some(token), None).await.unwrap_or_else(|e| panic!("the WebSocket upgrade failed: {e}"))
    }

    /// Tries an upgrade with an optional header token and an optional query token.
    pub async fn try_ws_connect(
        &self,
        header_token: Option<&str>,
        query_token: Option<&str>,
    ) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let request = ws_request(&self.ws_url(query_token), header_token)?;
        // Leave room for the oversized frames some tests send on purpose.
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(64 << 20);
        config.max_frame_size = Some(64 << 20);
        let (stream, _) = tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        Ok(WsClient::new(stream, None))
    }

    /// Signs up an account of `role` with a fresh e-mail and logs it in.
    pub async fn signup(&self, role: Role) -> TestUser {
        let email = unique_email();
        let body = json!({"email": email, "password": PASSWORD, "role": role.as_str(), "name": "Test User"});
        let profile = self.post_patiently("/auth/signup", body).await.expect(201);
        let id = profile["id"].as_str().expect("signup returns an id").to_owned();
        let mut user = TestUser {
            api: self.clone(),
            id,
            email,
            password: PASSWORD.to_owned(),
            role,
            access_token: String::new(),
            refresh_token: String::new(),
        };
        user.login().await;
        user
    }
}

/// A running `bazaar serve` process with its own data directory.
pub struct TestNode {
    pub api: Api,
    /// The node name from the ready line.
    pub name: String,
    child: Option<Child>,
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    starts: u32,
}

impl TestNode {
    /// Starts a node with the default configuration.
    pub async fn spawn() -> TestNode {
        Self::spawn_with(&[]).await
    }

    /// Starts a node with extra environment (`BAZAAR_*` overrides).
    pub async fn spawn_with(env: &[(&str, &str)]) -> TestNode {
        let dir = tempfile::Builder::new().prefix("bazaar-test-").tempdir().expect("a temporary directory");
        std::fs::create_dir_all(dir.path().join("data")).expect("the data directory");
        let client = http_client_builder().build().expect("an HTTP client");
        let mut node = TestNode {
            api: Api { client, addr: Arc::new(RwLock::new(SocketAddr::from(([127, 0, 0, 1], 0)))) },
            name: String::new(),
            child: None,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            dir,
            starts: 0,
        };
        node.start().await;
        node
    }

    /// The data directory, kept across restarts.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// The last lines the node wrote to stderr, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        crate::common::log_tail(&self.log_path(), lines)
    }

    async fn start(&mut self) {
        self.starts += 1;
        let mut command = serve_command();
        command
            .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(self.data_dir())
            .envs(server_env(self.dir.path()))
            .envs(database_env(&self.data_dir()).await)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let (child, line) = match spawn_until_ready(&mut command, &self.log_path(), READY_DEADLINE).await {
            Ok(ready) => ready,
            Err(NotReady::Exited) => {
                panic!("the node exited before it was ready (start {}); its log:\n{}", self.starts, self.log_tail(40))
            }
            Err(NotReady::TimedOut) => {
                panic!("the node printed no ready line within {READY_DEADLINE:?}; its log:\n{}", self.log_tail(40))
            }
        };
        let mut name = None;
        let mut addr = None;
        for field in line.split_whitespace() {
            if let Some(value) = field.strip_prefix("node=") {
                name = Some(value.to_owned());
            }
            if let Some(value) = field.strip_prefix("http=") {
                addr = Some(
                    value
                        .parse::<SocketAddr>()
                        .unwrap_or_else(|e| panic!("the ready line has a bad address `{value}`: {e}")),
                );
            }
        }
        self.name = name.unwrap_or_else(|| panic!("the ready line names no node: {line}"));
        *self.api.addr.write().unwrap() = addr.unwrap_or_else(|| panic!("the ready line has no http address: {line}"));
        self.child = Some(child);
    }

    /// The process id of the running node.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(|child| child.id()).expect("the node is running")
    }

    /// Kills the process with SIGKILL and waits for it to be gone; nothing gets to flush.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL the node");
        }
    }

    /// Sends SIGTERM (a polite stop) to the node's process.
    pub fn terminate(&self) {
        let pid = self.child.as_ref().and_then(Child::id).expect("the node is running");
        // SAFETY: kill(2) on the pid of a child this harness spawned and still owns.
        let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to the node");
    }

    /// Waits up to `deadline` for the process to exit; its status, or `None` if it still runs.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().expect("the node was started");
        let status = tokio::time::timeout(deadline, child.wait()).await.ok()?.expect("waiting for the node");
        self.child = None;
        Some(status)
    }

    /// Sets (or replaces) one environment override for the next start.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Starts a new process on the same data directory (and a new port); kills the old one first.
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.start().await;
    }

    /// Signs up an account of `role` with a fresh e-mail and logs it in.
    pub async fn signup(&self, role: Role) -> TestUser {
        self.api.signup(role).await
    }

    /// An anonymous GET.
    pub async fn get(&self, path: &str) -> Reply {
        self.api.get(path).await
    }

    /// An anonymous POST of JSON.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.api.post(path, body).await
    }

    /// Any request, for malformed input.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Body,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.api.send(method, path, token, body, headers).await
    }

    /// Opens a WebSocket with the token in the `Authorization` header.
    pub async fn ws_connect(&self, token: &str) -> WsClient {
        self.api.ws_connect(token).await
    }

    /// A seller with one product of `price` and `stock`, and a buyer; the common cast of a test.
    pub async fn seller_product_buyer(&self, price: i64, stock: i64) -> (TestUser, Value, TestUser) {
        let seller = self.signup(Role::Seller).await;
        let product = seller.list_product(price, stock).await;
        let buyer = self.signup(Role::Buyer).await;
        (seller, product, buyer)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            eprintln!(
                "---- last lines of node {} (started {} times) ----\n{}",
                self.name,
                self.starts,
                self.log_tail(60)
            );
        }
    }
}

/// A logged-in account.
#[derive(Clone)]
pub struct TestUser {
    pub api: Api,
    pub id: String,
    pub email: String,
    pub password: String,
    pub role: Role,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestUser {
    /// Logs in again (for example after a restart) and keeps the new pair.
    pub async fn login(&mut self) {
        let pair = self
            .api
            .post_patiently("/auth/login", json!({"email": self.email, "password": self.password}))
            .await
            .expect(200);
        self.access_token = pair["accessToken"].as_str().expect("login returns accessToken").to_owned();
        self.refresh_token = pair["refreshToken"].as_str().expect("login returns refreshToken").to_owned();
    }

    /// Any request with this user's bearer token.
    pub async fn send(&self, method: Method, path: &str, body: Body, headers: &[(&str, &str)]) -> Reply {
        self.api.send(method, path, Some(&self.access_token), body, headers).await
    }

    /// GET with the bearer token.
    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, Body::None, &[]).await
    }

    /// POST of JSON with the bearer token.
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Body::Json(body), &[]).await
    }

    /// POST without a body, for the action routes (`/cancel`, `/refund`).
    pub async fn post_empty(&self, path: &str) -> Reply {
        self.send(Method::POST, path, Body::None, &[]).await
    }

    /// POST of JSON with an `Idempotency-Key`.
    pub async fn post_with_key(&self, path: &str, body: Value, key: &str) -> Reply {
        self.send(Method::POST, path, Body::Json(body), &[("idempotency-key", key)]).await
    }

    /// PATCH of JSON with the bearer token.
    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, Body::Json(body), &[]).await
    }

    /// PUT of JSON with the bearer token.
    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, Body::Json(body), &[]).await
    }

    /// DELETE with the bearer token.
    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, Body::None, &[]).await
    }

    /// Lists a product (as a seller) and returns it.
    pub async fn list_product(&self, price: i64, stock: i64) -> Value {
        self.post(
            "/products",
            json!({"name": "Test product", "price": price, "currency": "KRW", "stock": stock, "description": "for tests"}),
        )
        .await
        .expect(201)
    }

    /// A product's current stock.
    pub async fn stock_of(&self, product_id: &str) -> i64 {
        self.get(&format!("/products/{product_id}")).await.expect(200)["stock"]
            .as_i64()
            .expect("a product has a numeric stock")
    }

    /// `POST /orders` with an idempotency key.
    pub async fn post_order(&self, product_id: &str, quantity: i64, key: &str) -> Reply {
        self.post_with_key("/orders", json!({"productId": product_id, "quantity": quantity}), key).await
    }

    /// Places an order with a fresh key and returns it.
    pub async fn place_order(&self, product_id: &str, quantity: i64) -> Value {
        let order = self.post_order(product_id, quantity, &unique_key()).await.expect(201);
        assert_eq!(order["status"], "ORDERED", "a new order: {order}");
        order
    }

    /// `POST /payments` with a card token and an idempotency key.
    pub async fn pay(&self, order_id: &str, card_token: &str, key: &str) -> Reply {
        self.post_with_key(
            "/payments",
            json!({"orderId": order_id, "method": {"type": "card", "token": card_token}}),
            key,
        )
        .await
    }

    /// Pays with a fresh key, expects 202, and returns the payment.
    pub async fn pay_ok(&self, order_id: &str, card_token: &str) -> Value {
        self.pay(order_id, card_token, &unique_key()).await.expect(202)
    }

    /// Polls `GET /orders/{id}` until the order has `status`, and returns it.
    pub async fn wait_for_order_status(&self, order_id: &str, status: &str, deadline: Duration) -> Value {
        self.wait_for_status(&format!("/orders/{order_id}"), status, deadline).await
    }

    /// Polls `GET /payments/{id}` until the payment has `status`, and returns it.
    pub async fn wait_for_payment_status(&self, payment_id: &str, status: &str, deadline: Duration) -> Value {
        self.wait_for_status(&format!("/payments/{payment_id}"), status, deadline).await
    }

    /// Polls `path` until its JSON has `status`, and returns it.
    async fn wait_for_status(&self, path: &str, status: &str, deadline: Duration) -> Value {
        eventually(deadline, &format!("{path} to be {status}"), || async {
            let reply = self.get(path).await;
            if reply.status == 200 && reply.json["status"] == status {
                Ok(reply.json)
            } else {
                Err(format!("HTTP {} {}", reply.status, reply.text))
            }
        })
        .await
    }

    /// Polls the product until its stock is `stock`.
    pub async fn wait_for_stock(&self, product_id: &str, stock: i64) {
        eventually(EVENT_DEADLINE, &format!("product {product_id} to have stock {stock}"), || async {
            let seen = self.stock_of(product_id).await;
            if seen == stock {
                Ok(())
            } else {
                Err(format!("stock is {seen}"))
            }
        })
        .await
    }

    /// Opens a room with `peer` and returns it.
    pub async fn open_room(&self, peer: &TestUser) -> Value {
        let reply = self.post("/chat/rooms", json!({"peerId": peer.id})).await;
        assert!(reply.status == 201 || reply.status == 200, "opening a room: HTTP {} {}", reply.status, reply.text);
        reply.json
    }

    /// Opens a WebSocket with this user's token.
    pub async fn ws_connect(&self) -> WsClient {
        self.api.ws_connect(&self.access_token).await
    }

    /// Every item of a paged listing (`items` / `nextCursor`), following cursors.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        collect_pages(path, 100, |url| async move { self.get(&url).await.expect(200) })
            .await
            .unwrap_or_else(|| panic!("{path} did not end within 100 pages"))
    }

    /// A room's whole history, newest first, following `nextBefore`.
    pub async fn history(&self, room_id: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut before: Option<i64> = None;
        for _ in 0..100 {
            let url = match before {
                Some(before) => format!("/chat/rooms/{room_id}/messages?limit=200&before={before}"),
                None => format!("/chat/rooms/{room_id}/messages?limit=200"),
            };
            let page = self.get(&url).await.expect(200);
            items.extend(page["items"].as_array().expect("a page has items").clone());
            match page["nextBefore"].as_i64() {
                Some(next) => before = Some(next),
                None => return items,
            }
        }
        panic!("the history of {room_id} did not end within 100 pages");
    }
}

/// Decodes unpadded base64url (JWT segments).
/// The sum of the values of a Prometheus metric's series in `scrape` whose labels include every
/// one of `label_filter` (`kind="order"`).
pub fn series_value(scrape: &str, name: &str, label_filter: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with(['{', ' ']))
        .filter(|line| label_filter.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        } as u32;
        buffer = (buffer << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Encodes unpadded base64url (JWT segments).
pub fn base64url_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The claims of a JWT, read without checking the signature.
pub fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&base64url_decode(payload).expect("base64url")).expect("JSON claims")
}

/// A random alphanumeric string of `len` characters.
pub fn random_word(rng: &mut impl Rng, len: usize) -> String {
    (0..len).map(|_| rng.sample(rand::distributions::Alphanumeric) as char).collect()
}
