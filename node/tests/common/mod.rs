//! What the `api` and `cluster` test binaries share: the constants and names every account uses,
//! one HTTP exchange read to the end ([`Reply`], [`send_request`]), the WebSocket client
//! ([`WsClient`]), polling ([`eventually`]), and starting a `bazaar serve` process up to its ready
//! line ([`spawn_until_ready`]).
//!
//! Each binary includes this file with `#[path = "../common/mod.rs"] mod common;` and re-exports
//! what its tests use through its own `support` module, which keeps what only it needs: one node
//! on port 0 for `api`, a configured cluster for `cluster`.

// Each test binary uses a different subset of this module.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long to wait for a WebSocket frame that should come promptly.
pub const FRAME_DEADLINE: Duration = Duration::from_secs(5);
/// The password every test account uses; long enough for the policy.
pub const PASSWORD: &str = "correct horse battery staple";

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Buyer,
    Seller,
}

impl Role {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Buyer => "BUYER",
            Role::Seller => "SELLER",
        }
    }
}

/// A fresh e-mail address, so tests sharing nothing never collide.
pub fn unique_email() -> String {
    format!("user-{}@example.com", uuid::Uuid::new_v4().simple())
}

/// A fresh idempotency key.
pub fn unique_key() -> String {
    format!("key-{}", uuid::Uuid::new_v4())
}

/// Percent-encodes a query value (everything but RFC 3986 unreserved characters).
pub fn enc(raw: &str) -> String {
    let mut out = String::new();
    for byte in raw.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Polls `probe` every 50 ms until it returns `Ok`, or panics with its last complaint.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => {
                if started.elapsed() > deadline {
                    panic!("waited {deadline:?} for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request body: none, JSON, or raw bytes with a content type (for malformed input).
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Json(Value),
    Raw { content_type: Option<String>, bytes: Vec<u8> },
}

/// A finished HTTP exchange, read to the end so assertions can show the whole body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    /// The body as text (lossy), for messages and for non-JSON answers.
    pub text: String,
    /// The body as JSON, or `Null` when it is empty or not JSON.
    pub json: Value,
}

impl Reply {
    /// The `error.code` of an error body, or "" when there is none.
    pub fn code(&self) -> &str {
        self.json["error"]["code"].as_str().unwrap_or("")
    }

    /// The `error.message` of an error body, or "" when there is none.
    pub fn message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or("")
    }

    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned)
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "expected HTTP {status}, got {} with body {}", self.status, self.text);
        self.json
    }

    /// Asserts an error answer's status and code, and nothing about the rest of its body.
    #[track_caller]
    pub fn expect_code(&self, status: u16, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "expected HTTP {status} `{code}`, got HTTP {} with body {}",
            self.status,
            self.text
        );
    }

    /// Asserts an error answer: the status, the code, and the documented body shape.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        self.expect_code(status, code);
        assert!(self.json["error"]["message"].is_string(), "an error body carries a message: {}", self.text);
    }

    /// Asserts an error whose message names `field`, as the API promises for 400 and 422.
    #[track_caller]
    pub fn expect_error_naming(&self, status: u16, code: &str, field: &str) {
        self.expect_error(status, code);
        assert!(self.message().contains(field), "the message should name `{field}`: {}", self.text);
    }
}

/// An HTTP client for test nodes, to finish with `build()` (after any further settings).
pub fn http_client_builder() -> reqwest::ClientBuilder {
    // A fresh connection per request: a node that answers 413 before reading the body closes
    // that connection, and a pooled reuse of it (or of one to a killed node) would fail the next
    // request.
    reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).timeout(Duration::from_secs(15))
}

/// Sends one request to `url` and reads the whole answer; `Err` when the connection failed or
/// the body broke off (a node being killed, say).
pub async fn send_request(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Body,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut request = client.request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request = match body {
        Body::None => request,
        Body::Json(value) => request.json(&value),
        Body::Raw { content_type, bytes } => {
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            request.body(bytes)
        }
    };
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.map_err(|e| format!("the body broke off: {e}"))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Ok(Reply { status, headers, text, json })
}

/// Every item of a paged listing (`items` / `nextCursor`) at `path`, following cursors;
/// `get_page` fetches one URL and returns its body. `None` when it has not ended after
/// `max_pages` pages.
pub async fn collect_pages<F, Fut>(path: &str, max_pages: usize, mut get_page: F) -> Option<Vec<Value>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Value>,
{
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..max_pages {
        let url = match &cursor {
            Some(cursor) => format!("{path}{separator}cursor={}", enc(cursor)),
            None => path.to_owned(),
        };
        let page = get_page(url).await;
        items.extend(page["items"].as_array().expect("a page has items").clone());
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Some(items),
        }
    }
    None
}

/// `bazaar serve`, to complete with its arguments and environment.
pub fn serve_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_bazaar"));
    command.arg("serve");
    command
}

/// The settings that point a node of one test at the suite's shared servers, when the suite runs
/// against them (scripts/test.sh sets `TEST_KAFKA_BROKERS` and `TEST_REDIS_URL`; they are not
/// `BAZAAR_` names, which the binary would refuse as unknown settings). Kafka topics are the
/// test's own, named after its directory (`scope`), so tests sharing the broker never read each
/// other's events and a restarted node finds its topics again. Empty on the embedded default.
pub fn server_env(scope: &Path) -> Vec<(String, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    // Every test client comes from 127.0.0.1, and many tests sign up dozens of users: the limit
    // on sign-ups and logins per client address (60 a minute) is raised for them; the tests of
    // that limit set it themselves.
    let mut env = vec![("BAZAAR_AUTH_ATTEMPTS_PER_MINUTE_PER_CLIENT".to_owned(), "1000000".to_owned())];
    if let Some(brokers) = var("TEST_KAFKA_BROKERS") {
        let name = scope.file_name().and_then(|n| n.to_str()).unwrap_or("scope");
        let prefix: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
        env.push(("BAZAAR_KAFKA_BROKERS".into(), brokers));
        env.push(("BAZAAR_KAFKA_TOPIC_PREFIX".into(), format!("{prefix}.")));
        // Fewer partitions than production: hundreds of tests each create their topics.
        env.push(("BAZAAR_KAFKA_PARTITIONS".into(), "2".into()));
    }
    if let Some(redis) = var("TEST_REDIS_URL") {
        env.push(("BAZAAR_REDIS_URL".into(), redis));
    }
    env
}

/// The admin URL of the database server the tests run on, if one is named: `TEST_MYSQL_URL`
/// (MySQL or MariaDB) first, then `TEST_POSTGRES_URL`; none means SQLite.
pub fn database_server() -> Option<String> {
    ["TEST_MYSQL_URL", "TEST_POSTGRES_URL"].iter().find_map(|var| std::env::var(var).ok().filter(|url| !url.is_empty()))
}

/// The environment that chooses a node's database: none for SQLite (the file in `data_dir`),
/// or `BAZAAR_DATABASE_URL` naming a database of its own on the server [`database_server`]
/// names (an admin URL). The database is named after `data_dir`, so a restarted node, and every
/// node of one cluster, finds the same one.
pub async fn database_env(data_dir: &Path) -> Vec<(&'static str, String)> {
    let Some(admin_url) = database_server() else { return Vec::new() };
    let key = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, data_dir.to_string_lossy().as_bytes());
    let name = format!("t_{}", key.simple());
    let url = bazaar_actors::store::backend::create_database(&admin_url, &name)
        .await
        .unwrap_or_else(|e| panic!("creating test database {name} on {admin_url}: {e}"));
    vec![("BAZAAR_DATABASE_URL", url)]
}

/// Why a node never printed its ready line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Its stdout ended first: the process exited.
    Exited,
    /// Nothing came within the deadline.
    TimedOut,
}

/// Spawns `command` (killed on drop) with stdout piped and stderr appended to `log`, and waits up
/// to `deadline` for the `bazaar ready ...` line; returns the child and that line. Stdout keeps
/// being read afterwards, so a chatty node never blocks on a full pipe.
pub async fn spawn_until_ready(
    command: &mut Command,
    log: &Path,
    deadline: Duration,
) -> Result<(Child, String), NotReady> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("the node log");
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::from(log)).kill_on_drop(true);
    let mut child = command.spawn().expect("the bazaar binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(deadline, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("bazaar ready ") {
                return Some(line);
            }
        }
        None
    })
    .await;
    let line = match ready {
        Ok(Some(line)) => line,
        Ok(None) => return Err(NotReady::Exited),
        Err(_) => return Err(NotReady::TimedOut),
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, line))
}

/// The last `lines` lines of a node's log, for failure messages.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A WebSocket upgrade request for `url`, with the token in the `Authorization` header if given.
pub fn ws_request(url: &str, header_token: Option<&str>) -> Result<Request, tokio_tungstenite::tungstenite::Error> {
    let mut request = url.into_client_request()?;
    if let Some(token) = header_token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse().expect("a header value"));
    }
    Ok(request)
}

/// What a WebSocket read produced.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    /// A text frame that is not JSON (the server should never send one).
    Text(String),
    Closed(Option<u16>),
    Timeout,
}

/// A WebSocket client that keeps frames it skipped, so waiting for one type loses none.
pub struct WsClient {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
    backlog: VecDeque<Value>,
    /// The node it is connected to, for failure messages; `None` where there is only one.
    node: Option<String>,
}

impl WsClient {
    /// Wraps a connected stream; `node` names the node in failure messages.
    pub fn new(stream: WebSocketStream<MaybeTlsStream<TcpStream>>, node: Option<String>) -> WsClient {
        WsClient { stream, backlog: VecDeque::new(), node }
    }

    /// " on NODE" for failure messages, or "" without a node name.
    fn on(&self) -> String {
        self.node.as_ref().map(|node| format!(" on {node}")).unwrap_or_default()
    }

    /// Sends one JSON object as a text frame.
    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.stream.send(Message::text(text.to_owned())).await.expect("the WebSocket accepts a text frame");
    }

    /// Sends a text frame; false once the connection is gone (a flood may be cut off mid-way).
    pub async fn try_send_text(&mut self, text: &str) -> bool {
        self.stream.send(Message::text(text.to_owned())).await.is_ok()
    }

    /// Sends a raw binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.stream.send(Message::binary(bytes)).await.expect("the WebSocket accepts a binary frame");
    }

    /// Closes the socket politely.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
    }

    /// Reads the next frame off the wire (not the backlog).
    async fn read_wire(&mut self, timeout: Duration) -> WsEvent {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => return WsEvent::Timeout,
                Ok(None) => return WsEvent::Closed(None),
                Ok(Some(Err(_))) => return WsEvent::Closed(None),
                Ok(Some(Ok(Message::Text(text)))) => {
                    return match serde_json::from_str(text.as_str()) {
                        Ok(value) => WsEvent::Json(value),
                        Err(_) => WsEvent::Text(text.to_string()),
                    }
                }
                Ok(Some(Ok(Message::Close(frame)))) => return WsEvent::Closed(frame.map(|f| u16::from(f.code))),
                // Pings are answered by tungstenite; nothing else matters to tests.
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next JSON frame (backlog first), or `None` after `timeout`; panics if the socket closes.
    pub async fn next_json_with_timeout(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(value) = self.backlog.pop_front() {
            return Some(value);
        }
        match self.read_wire(timeout).await {
            WsEvent::Json(value) => Some(value),
            WsEvent::Text(text) => panic!("the server{} sent a text frame that is not JSON: {text}", self.on()),
            WsEvent::Closed(code) => {
                panic!("the WebSocket{} closed (code {code:?}) while a frame was awaited", self.on())
            }
            WsEvent::Timeout => None,
        }
    }

    /// The first frame of `type` within `timeout` (others stay queued), or `None`.
    pub async fn try_next_of_type(&mut self, kind: &str, timeout: Duration) -> Option<Value> {
        self.try_next_matching(timeout, |frame| frame["type"] == kind).await
    }

    /// The first frame of `type` within [`FRAME_DEADLINE`]; panics when none comes.
    pub async fn next_of_type(&mut self, kind: &str) -> Value {
        match self.try_next_of_type(kind, FRAME_DEADLINE).await {
            Some(frame) => frame,
            None => {
                panic!("no `{kind}` frame{} within {FRAME_DEADLINE:?}; queued instead: {:?}", self.on(), self.backlog)
            }
        }
    }

    /// The first frame for which `wanted` holds within `timeout` (others stay queued), or `None`;
    /// panics if the socket closes or sends a text frame that is not JSON.
    pub async fn try_next_matching(&mut self, timeout: Duration, wanted: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(index) = self.backlog.iter().position(&wanted) {
            return self.backlog.remove(index);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_wire(left).await {
                WsEvent::Json(value) if wanted(&value) => return Some(value),
                WsEvent::Json(value) => self.backlog.push_back(value),
                WsEvent::Text(text) => {
                    panic!("the server{} sent a text frame that is not JSON: {text}", self.on())
                }
                WsEvent::Closed(code) => {
                    panic!(
                        "the WebSocket{} closed (code {code:?}) while a frame was awaited; queued: {:?}",
                        self.on(),
                        self.backlog
                    )
                }
                WsEvent::Timeout => return None,
            }
        }
    }

    /// The first frame for which `wanted` holds within `timeout`; panics when none comes.
    pub async fn next_matching_within(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        match self.try_next_matching(timeout, wanted).await {
            Some(frame) => frame,
            None => panic!("no frame {what}{} within {timeout:?}; queued instead: {:?}", self.on(), self.backlog),
        }
    }

    /// The first frame for which `wanted` holds within [`FRAME_DEADLINE`]; panics when none comes.
    pub async fn next_matching(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        self.next_matching_within(what, FRAME_DEADLINE, wanted).await
    }

    /// Reads until the server closes, and asserts the close code; text frames before it are skipped.
    pub async fn expect_close_code(&mut self, code: u16, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_wire(left).await {
                WsEvent::Json(value) => self.backlog.push_back(value),
                WsEvent::Text(_) => {}
                WsEvent::Closed(seen) => {
                    assert_eq!(
                        seen,
                        Some(code),
                        "the WebSocket closed with the wrong code; frames before it: {:?}",
                        self.backlog
                    );
                    return;
                }
                WsEvent::Timeout => {
                    panic!("the WebSocket was not closed with {code} within {timeout:?}; frames: {:?}", self.backlog)
                }
            }
        }
    }

    /// Joins a room and returns the `joined` frame (an `error` frame stays queued).
    pub async fn join(&mut self, room_id: &str) -> Value {
        self.send_json(&json!({"type": "join", "room": room_id})).await;
        self.next_matching("joined", |frame| frame["type"] == "joined" && frame["room"] == room_id).await
    }

    /// Joins a room, replaying from `since` if given, and returns the `joined` frame or the first
    /// `error` frame, whichever comes first.
    pub async fn join_or_error(&mut self, room_id: &str, since: Option<i64>) -> Value {
        let frame = match since {
            Some(since) => json!({"type": "join", "room": room_id, "since": since}),
            None => json!({"type": "join", "room": room_id}),
        };
        self.send_json(&frame).await;
        self.next_matching("joined", |f| (f["type"] == "joined" && f["room"] == room_id) || f["type"] == "error").await
    }

    /// Sends a message and returns its `ack` (panics on an `error` frame instead).
    pub async fn send_message(&mut self, room_id: &str, text: &str, client_msg_id: &str) -> Value {
        self.send_json(&json!({"type": "send", "room": room_id, "text": text, "clientMsgId": client_msg_id})).await;
        let ack = self
            .next_matching(&format!("ack for {client_msg_id}"), |frame| {
                (frame["type"] == "ack" && frame["clientMsgId"] == client_msg_id) || frame["type"] == "error"
            })
            .await;
        assert_eq!(ack["type"], "ack", "sending `{client_msg_id}`{}: {ack}", self.on());
        ack
    }

    /// Takes the next `count` `message` frames of `room_id`, in arrival order.
    pub async fn messages(&mut self, room_id: &str, count: usize) -> Vec<Value> {
        let mut out = Vec::new();
        for _ in 0..count {
            let frame = self
                .next_matching(&format!("message #{} of {room_id}", out.len() + 1), |f| {
                    f["type"] == "message" && f["room"] == room_id
                })
                .await;
            out.push(frame);
        }
        out
    }

    /// The frames received so far but not yet taken.
    pub fn backlog(&self) -> &VecDeque<Value> {
        &self.backlog
    }

    /// Reads everything that arrives within `window` into the backlog; panics if the socket closes.
    pub async fn drain_for(&mut self, window: Duration) {
        let deadline = Instant::now() + window;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.read_wire(left).await {
                WsEvent::Json(value) => self.backlog.push_back(value),
                WsEvent::Text(text) => panic!("the server{} sent a text frame that is not JSON: {text}", self.on()),
                WsEvent::Closed(code) => {
                    panic!("the WebSocket{} closed (code {code:?}); frames before it: {:?}", self.on(), self.backlog)
                }
                WsEvent::Timeout => return,
            }
        }
    }

    /// Takes every queued frame.
    pub fn take_backlog(&mut self) -> Vec<Value> {
        self.backlog.drain(..).collect()
    }
}

/// CPU time (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the node's /proc stat");
    // The command name (field 2) may hold spaces; the fields after its closing parenthesis do not.
    let after_name = &stat[stat.rfind(')').expect("a stat line names its command") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 (utime) and 15 (stime) of stat(5); fields[0] is field 3.
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf reads a constant of the running system and has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// The sum of every sample of series `name` (all label sets) in a Prometheus scrape.
pub fn series_total(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with([' ', '{'])))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
