//! The first hour with a node (issue 14): what a person sees when a setting is wrong, a server is
//! not there or a port is taken, and what the logs say (and do not say) while it runs.

use crate::support::*;
use serde_json::{json, Value};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// `bazaar <command>` with exactly this environment (no `BAZAAR_*` from the caller's).
fn bazaar(args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_bazaar"));
    command.args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("BAZAAR_")) {
        command.env_remove(key);
    }
    command.envs(env.iter().copied());
    command
}

/// Runs `command` to its end, killing it past `deadline`; its output and how long it ran.
async fn run_bounded(command: std::process::Command, deadline: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut command = tokio::process::Command::from(command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().expect("the bazaar binary starts");
    let output = tokio::time::timeout(deadline, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the process still ran after {deadline:?}"))
        .expect("its output");
    (output, started.elapsed())
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn bazaar_config_refuses_every_value_that_serve_refuses_with_the_same_message() {
    let refused: [(&str, &str, &str); 8] = [
        ("BAZAAR_DATABASE_URL", "oracle://db:1521/bazaar", "database_url"),
        ("BAZAAR_REDIS_URL", "not a url", "redis_url"),
        ("BAZAAR_KAFKA_BROKERS", "kafka-without-a-port", "kafka_brokers"),
        ("BAZAAR_LOG_FORMAT", "yaml", "log_format"),
        ("BAZAAR_DB_CONNECT_WAIT_MS", "10", "db_connect_wait_ms"),
        ("BAZAAR_SQLITE_SYNCHRONOUS", "sometimes", "sqlite_synchronous"),
        // The operator's webhook endpoint without its secret in the environment.
        ("BAZAAR_WEBHOOK_OPERATOR_URL", "https://ops.example.com/hook", "webhook_operator_url"),
        ("BAZAAR_WEBHOOK_TIMEOUT_MS", "0", "webhook_timeout_ms"),
    ];
    for (key, value, named) in refused {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let (config, _) =
            run_bounded(bazaar(&["config", "--data-dir", data], &[(key, value)]), Duration::from_secs(10)).await;
        let serve = bazaar(&["serve", "--http-addr", "127.0.0.1:0", "--data-dir", data], &[(key, value)]);
        let (serve, _) = run_bounded(serve, Duration::from_secs(20)).await;
        assert!(!serve.status.success(), "serve started with {key}={value}: {}", stderr(&serve));
        assert!(!config.status.success(), "config accepted {key}={value}; serve said: {}", stderr(&serve));
        let said = stderr(&config);
        assert!(said.contains(named), "{key}={value}: {said}");
        assert_eq!(said, stderr(&serve), "{key}={value}: config and serve disagree");
        assert!(
            config.stdout.is_empty(),
            "nothing is printed as if valid: {}",
            String::from_utf8_lossy(&config.stdout)
        );
    }
    // A data directory that is a file: serve could not create it, so config says so too.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let file = file.to_str().unwrap();
    let (config, _) = run_bounded(bazaar(&["config", "--data-dir", file], &[]), Duration::from_secs(10)).await;
    let serve = bazaar(&["serve", "--http-addr", "127.0.0.1:0", "--data-dir", file], &[]);
    let (serve, _) = run_bounded(serve, Duration::from_secs(20)).await;
    assert!(!serve.status.success() && !config.status.success(), "{}", stderr(&serve));
    assert_eq!(stderr(&config), stderr(&serve));
    assert!(stderr(&config).contains("data_dir"), "{}", stderr(&config));
}

#[tokio::test]
async fn a_syntax_error_in_the_file_names_its_table_and_a_bad_value_its_key_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cluster.toml");
    let file = path.to_str().unwrap();
    std::fs::write(&path, "[settings]\nws_burst = 9\n\n[[nodes]]\nname = \"a\"\nhttp_addr = \"127.0.0.1:1\n").unwrap();
    let (output, _) = run_bounded(bazaar(&["config", "--config", file], &[]), Duration::from_secs(10)).await;
    assert!(!output.status.success());
    let said = stderr(&output);
    assert!(said.contains("(in [[nodes]])") && said.contains("line 6"), "{said}");

    std::fs::write(&path, "[settings]\nws_burst = \"nine\"\n").unwrap();
    let (output, _) = run_bounded(bazaar(&["config", "--config", file], &[]), Duration::from_secs(10)).await;
    let said = stderr(&output);
    assert!(!output.status.success());
    assert!(said.contains("[settings] ws_burst") && !said.contains("default.ws_burst"), "{said}");
}

#[tokio::test]
async fn a_node_pointed_at_a_dead_database_port_says_so_per_attempt_and_stops_within_its_wait() {
    let dir = tempfile::tempdir().unwrap();
    let port = dead_port();
    let url = format!("postgres://bazaar:hunter2-in-the-url@127.0.0.1:{port}/bazaar");
    let data = dir.path().join("data");
    let command = bazaar(
        &["serve", "--http-addr", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()],
        &[("BAZAAR_DATABASE_URL", &url), ("BAZAAR_DB_CONNECT_WAIT_MS", "3000")],
    );
    let (output, took) = run_bounded(command, Duration::from_secs(30)).await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(took < Duration::from_secs(10), "gave up after {took:?}, not within the 3 s wait: {said}");
    let server = format!("database at 127.0.0.1:{port} unreachable");
    let retries: Vec<&str> = said.lines().filter(|l| l.contains(&server) && l.contains("retrying in")).collect();
    assert!(retries.len() >= 2, "a line per attempt: {said}");
    for (k, line) in retries.iter().enumerate() {
        assert!(line.contains("WARN"), "at warn level: {line}");
        assert!(line.contains(&format!("(attempt {})", k + 1)), "{line}");
    }
    let last = said.lines().last().unwrap_or_default();
    assert!(last.starts_with("bazaar: ") && last.contains(&server), "a clear last word: {said}");
    assert!(!said.contains("hunter2"), "the password never shows: {said}");
}

#[tokio::test]
async fn a_node_pointed_at_a_dead_broker_says_so_per_attempt_and_stops_within_its_wait() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = format!("127.0.0.1:{}", dead_port());
    let data = dir.path().join("data");
    let command = bazaar(
        &["serve", "--http-addr", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()],
        &[("BAZAAR_KAFKA_BROKERS", &brokers), ("BAZAAR_KAFKA_CONNECT_TIMEOUT_MS", "4000")],
    );
    let (output, took) = run_bounded(command, Duration::from_secs(30)).await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(took < Duration::from_secs(12), "gave up after {took:?}, not within the 4 s wait: {said}");
    let server = format!("kafka brokers at {brokers} unreachable, retrying in");
    assert!(said.lines().any(|l| l.contains(&server) && l.contains("WARN") && l.contains("(attempt 1)")), "{said}");
    assert!(said.lines().last().unwrap_or_default().contains(&format!("brokers at {brokers} unreachable")), "{said}");
}

#[tokio::test]
async fn a_node_that_cannot_bind_its_port_leaves_no_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let data = dir.path().join("data");
    let command = bazaar(&["serve", "--http-addr", &addr, "--data-dir", data.to_str().unwrap()], &[]);
    let (output, _) = run_bounded(command, Duration::from_secs(20)).await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    assert!(said.contains(&format!("binding {addr}")), "{said}");
    assert!(!data.exists(), "the data directory was made before the port was checked: {said}");
    drop(taken);
}

/// The lines of the node's log so far.
fn log_lines(node: &TestNode) -> Vec<String> {
    node.log_tail(100_000).lines().map(str::to_owned).collect()
}

#[tokio::test]
async fn with_log_format_json_every_stderr_line_is_an_object_with_level_target_and_message() {
    let mut node = TestNode::spawn_with(&[("BAZAAR_LOG_FORMAT", "json")]).await;
    let (_, product, buyer) = node.seller_product_buyer(500, 3).await;
    let order = buyer.place_order(product["id"].as_str().unwrap(), 1).await;
    let order_id = order["id"].as_str().unwrap();
    buyer.pay_ok(order_id, "tok_ok").await;
    buyer.wait_for_order_status(order_id, "PAID", EVENT_DEADLINE).await;
    node.terminate();
    assert!(node.wait_exit(Duration::from_secs(15)).await.is_some_and(|s| s.success()), "{}", node.log_tail(20));
    let lines = log_lines(&node);
    assert!(lines.len() >= 5, "startup, access and shutdown lines: {lines:?}");
    for line in &lines {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(object[field].is_string(), "no {field}: {line}");
        }
        assert!(!line.contains('\u{1b}'), "no colour codes: {line}");
    }
    let access = lines.iter().find(|l| l.contains("\"bazaar::access\"")).expect("an access line");
    let access: Value = serde_json::from_str(access).unwrap();
    assert!(access["status"].is_number() && access["path"].is_string(), "the event's fields at the top: {access}");
}

#[tokio::test]
async fn a_client_going_away_logs_nothing_at_the_default_level() {
    let node = TestNode::spawn().await;
    let (seller, _, buyer) = node.seller_product_buyer(500, 3).await;
    let room = buyer.open_room(&seller).await;
    // A socket dropped without a close frame, in a room.
    let mut socket = buyer.ws_connect().await;
    socket.send_json(&json!({"type": "join", "room": room["id"]})).await;
    socket.send_json(&json!({"type": "send", "room": room["id"], "text": "hi", "clientMsgId": "m1"})).await;
    assert!(socket.try_next_of_type("message", EVENT_DEADLINE).await.is_some(), "the socket works");
    let before = log_lines(&node).len();
    drop(socket);
    // An HTTP request abandoned halfway through its body, and one through its head.
    let mut half = tokio::net::TcpStream::connect(node.api.addr()).await.unwrap();
    let head =
        "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"em";
    half.write_all(head.as_bytes()).await.unwrap();
    drop(half);
    let mut headless = tokio::net::TcpStream::connect(node.api.addr()).await.unwrap();
    headless.write_all(b"GET /products HTTP/1.1\r\nHo").await.unwrap();
    drop(headless);
    // The node has noticed once the socket is no longer counted.
    eventually(EVENT_DEADLINE, "the socket to be gone", || async {
        let scrape = node.get("/metrics").await.text;
        match series_value(&scrape, "bazaar_ws_connections", &[]) {
            0.0 => Ok(()),
            open => Err(format!("{open} sockets open")),
        }
    })
    .await;
    // A marker request: its access line comes after anything the departures logged.
    let marker = node.get("/healthz").await.header("x-request-id").expect("a request id");
    eventually(EVENT_DEADLINE, "the marker's access line", || async {
        match log_lines(&node).iter().any(|l| l.contains(&marker)) {
            true => Ok(()),
            false => Err("not yet".to_owned()),
        }
    })
    .await;
    let since: Vec<String> =
        log_lines(&node).split_off(before).into_iter().filter(|l| !l.contains("bazaar::access")).collect();
    assert!(since.is_empty(), "clients going away are not news: {since:?}");
}

#[tokio::test]
async fn a_declined_payment_logs_its_order_payment_and_decline_code() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(500, 3).await;
    let order = buyer.place_order(product["id"].as_str().unwrap(), 1).await;
    let order_id = order["id"].as_str().unwrap();
    let payment = buyer.pay_ok(order_id, "tok_decline").await;
    let payment_id = payment["id"].as_str().unwrap();
    buyer.wait_for_payment_status(payment_id, "DECLINED", EVENT_DEADLINE).await;
    eventually(EVENT_DEADLINE, "the decline's log line", || async {
        let lines = log_lines(&node);
        let line = lines.iter().find(|l| l.contains("payment declined"));
        match line {
            Some(line) if line.contains(order_id) && line.contains(payment_id) && line.contains("card_declined") => {
                assert!(!line.contains("tok_decline"), "the card token is not logged: {line}");
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn with_ops_http_addr_metrics_and_the_cluster_view_leave_the_api_listener_for_their_own() {
    let node = TestNode::spawn_with(&[("BAZAAR_OPS_HTTP_ADDR", "127.0.0.1:0")]).await;
    let ops = eventually(EVENT_DEADLINE, "the operations listener's log line", || async {
        let lines = log_lines(&node);
        let line = lines.iter().find(|l| l.contains("serving the operations endpoints")).cloned();
        let addr = line.as_deref().and_then(|l| l.split_whitespace().find_map(|field| field.strip_prefix("ops=")));
        addr.map(str::to_owned).ok_or_else(|| format!("{line:?}"))
    })
    .await;
    assert_ne!(ops, node.api.addr().to_string());
    node.get("/metrics").await.expect_error(404, "not_found");
    node.get("/cluster").await.expect_error(404, "not_found");
    assert_eq!(node.get("/healthz").await.status, 200);
    assert_eq!(node.get("/products").await.status, 200);

    let client = reqwest::Client::new();
    let get = |path: &str| {
        let request = client.get(format!("http://{ops}{path}"));
        async move {
            let reply = request.send().await.expect("the operations listener answers");
            (reply.status().as_u16(), reply.text().await.unwrap_or_default())
        }
    };
    let (status, scrape) = get("/metrics").await;
    assert!(status == 200 && scrape.contains("bazaar_"), "HTTP {status}: {scrape}");
    let (status, cluster) = get("/cluster").await;
    assert!(status == 200 && cluster.contains(&node.name), "HTTP {status}: {cluster}");
    assert_eq!(get("/readyz").await.0, 200);
    // The API is not served there.
    assert_eq!(get("/products").await.0, 404);
}

#[tokio::test]
async fn with_log_format_json_a_failed_start_says_why_in_json_too() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mysql://bazaar:hunter2-in-the-url@127.0.0.1:{}/bazaar", dead_port());
    let data = dir.path().join("data");
    let env =
        [("BAZAAR_DATABASE_URL", url.as_str()), ("BAZAAR_DB_CONNECT_WAIT_MS", "1000"), ("BAZAAR_LOG_FORMAT", "json")];
    let command = bazaar(&["serve", "--http-addr", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()], &env);
    let (output, _) = run_bounded(command, Duration::from_secs(30)).await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    let lines: Vec<Value> = said
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let last = lines.last().unwrap_or_else(|| panic!("nothing said: {said}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(last["message"].as_str().is_some_and(|m| m.contains("unreachable")), "{last}");
    assert!(!said.contains("hunter2"), "{said}");
}

#[tokio::test]
async fn a_refused_start_says_why_in_json_even_with_the_logs_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A setting refused while loading (before logging starts), and the logs off: the reason is
    // still the last line, in the format asked for.
    let env = [("BAZAAR_WS_BURST", "0"), ("BAZAAR_LOG_FORMAT", "json"), ("BAZAAR_LOG", "off")];
    let command = bazaar(&["serve", "--http-addr", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()], &env);
    let (output, _) = run_bounded(command, Duration::from_secs(30)).await;
    let said = stderr(&output);
    assert!(!output.status.success(), "{said}");
    let last: Value = said
        .lines()
        .last()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .unwrap_or_else(|| panic!("nothing said"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert!(last["message"].as_str().is_some_and(|m| m.contains("ws_burst")), "{last}");
}
