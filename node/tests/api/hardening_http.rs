//! Slow and hostile clients, as raw TCP where a well-behaved HTTP client would not do it: bodies
//! that never arrive, idle connections, more connections than allowed, SIGTERM during a
//! half-sent request, WebSocket upgrades aborted half-way, ping floods, and the small edges of
//! the HTTP front end (header bytes, content types, what a 400 says).

use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// What came back on a raw connection: the status (0 when none) and the body (empty when none).
struct RawAnswer {
    status: u16,
    body: Value,
    /// Whether the server closed the connection after the answer (or instead of one).
    closed: bool,
}

/// Reads one HTTP/1.1 answer off `stream` (head, then a `Content-Length` body), waiting at most
/// `deadline`; a connection closed before a head gives status 0.
async fn read_answer(stream: &mut TcpStream, deadline: Duration) -> RawAnswer {
    let until = Instant::now() + deadline;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().expect("a numeric content-length"));
            if bytes.len() >= end + 4 + length {
                let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                let body = serde_json::from_slice(&bytes[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                return RawAnswer { status, body, closed: head.contains("connection: close") };
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return RawAnswer { status: 0, body: Value::Null, closed: true },
            Ok(Ok(n)) => bytes.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("no answer within {deadline:?}; read so far: {:?}", String::from_utf8_lossy(&bytes)),
        }
    }
}

/// Waits up to `deadline` for the server to close `stream`; how long that took.
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> Duration {
    let started = Instant::now();
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return started.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the server kept the connection open for {deadline:?}"),
        }
    }
}

/// A keep-alive `GET /healthz` on a raw connection, answered.
async fn healthz_on(stream: &mut TcpStream) {
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: node\r\n\r\n").await.expect("the request goes out");
    let answer = read_answer(stream, Duration::from_secs(5)).await;
    assert_eq!(answer.status, 200, "healthz on a raw connection: {}", answer.body);
}

/// Sends a signup's head announcing 100 bytes of JSON, then only the first byte of it.
async fn stall_a_signup(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("a connection");
    stream
        .write_all(
            b"POST /auth/signup HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{",
        )
        .await
        .expect("the head goes out");
    stream
}

#[tokio::test]
async fn stalled_request_bodies_neither_hold_up_the_probes_nor_outlive_the_body_timeout() {
    let node =
        TestNode::spawn_with(&[("BAZAAR_MAX_IN_FLIGHT_REQUESTS", "50"), ("BAZAAR_HTTP_BODY_READ_TIMEOUT_MS", "15000")])
            .await;
    let addr = node.api.addr();
    let mut stalled = Vec::new();
    for _ in 0..55 {
        stalled.push(stall_a_signup(addr).await);
    }
    // The stalled requests hold every in-flight place: the node says so on its other routes...
    // Generous, yet within the body timeout: on a loaded machine the node may take a while to
    // read 55 heads, and each stalled request frees its place when its body times out. A probe
    // that holds a place for a moment while a head arrives gets that request refused (503), so
    // each probe that finds a place free stalls one more request, up to a bound.
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        let reply = node.get("/products").await;
        if reply.status == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline && stalled.len() < 100,
            "the node never reached capacity with {} stalled requests: HTTP {} {}",
            stalled.len(),
            reply.status,
            reply.text
        );
        stalled.push(stall_a_signup(addr).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...yet its probes answer at once.
    for probe in ["/healthz", "/readyz"] {
        let started = Instant::now();
        let reply = node.get(probe).await;
        assert_eq!(reply.status, 200, "{probe} while {} bodies stall: {}", stalled.len(), reply.text);
        assert!(started.elapsed() < Duration::from_secs(1), "{probe} took {:?}", started.elapsed());
    }
    // Those past the limit were refused at the door (503); each of the others is answered 408
    // after the body timeout, and its connection closed.
    let mut timed_out = 0;
    for stream in &mut stalled {
        let answer = read_answer(stream, Duration::from_secs(25)).await;
        match answer.status {
            408 => {
                assert_eq!(answer.body["error"]["code"], "request_timeout", "{}", answer.body);
                assert!(answer.closed, "a 408 says Connection: close");
                closed_within(stream, Duration::from_secs(2)).await;
                timed_out += 1;
            }
            503 => assert_eq!(answer.body["error"]["code"], "unavailable", "{}", answer.body),
            other => panic!("a stalled body got HTTP {other} {}", answer.body),
        }
    }
    // Fifty places; a probe of /products may have taken one for a moment while heads arrived.
    assert!((45..=50).contains(&timed_out), "{timed_out} stalled requests timed out");
    assert_eq!(node.get("/products").await.status, 200, "the places are free again");
}

#[tokio::test]
async fn idle_connections_are_closed_after_the_header_read_timeout() {
    let node = TestNode::spawn_with(&[("BAZAAR_HTTP_HEADER_READ_TIMEOUT_MS", "1000")]).await;
    // One that served a request and waits, kept alive, for the next.
    let mut kept_alive = TcpStream::connect(node.api.addr()).await.expect("a connection");
    healthz_on(&mut kept_alive).await;
    // One that never says anything.
    let mut silent = TcpStream::connect(node.api.addr()).await.expect("a connection");
    // One that sends half a head.
    let mut half_head = TcpStream::connect(node.api.addr()).await.expect("a connection");
    half_head.write_all(b"GET /healthz HTTP/1.1\r\nhost: no").await.expect("half a head goes out");
    for (what, stream) in [("kept alive", &mut kept_alive), ("silent", &mut silent), ("half a head", &mut half_head)] {
        let took = closed_within(stream, Duration::from_secs(5)).await;
        assert!(took < Duration::from_secs(4), "{what}: closed after {took:?}");
    }
    assert_eq!(node.get("/healthz").await.status, 200);
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_are_closed_and_once_others_close_they_work_again() {
    let node = TestNode::spawn_with(&[("BAZAAR_HTTP_MAX_CONNECTIONS", "5")]).await;
    let addr = node.api.addr();
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut stream = TcpStream::connect(addr).await.expect("a connection");
        // Answered, so it is surely counted.
        healthz_on(&mut stream).await;
        open.push(stream);
    }
    for _ in 0..3 {
        // The kernel completes the handshake; the node closes the connection without an answer.
        let mut extra = TcpStream::connect(addr).await.expect("the handshake");
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: node\r\n\r\n").await;
        let answer = read_answer(&mut extra, Duration::from_secs(5)).await;
        assert_eq!(answer.status, 0, "a connection past the cap got an answer: {}", answer.body);
    }
    drop(open);
    eventually(Duration::from_secs(5), "a new connection to be served", || async {
        let reply = node.api.try_send(Method::GET, "/healthz", None, Body::None, &[]).await?;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(format!("HTTP {}", reply.status))
        }
    })
    .await;
}

#[tokio::test]
async fn sigterm_during_a_half_sent_request_exits_within_the_grace_period() {
    let mut node =
        TestNode::spawn_with(&[("BAZAAR_SHUTDOWN_GRACE_MS", "1000"), ("BAZAAR_HTTP_BODY_READ_TIMEOUT_MS", "600000")])
            .await;
    let mut stream = TcpStream::connect(node.api.addr()).await.expect("a connection");
    // A request answered first, so the connection is surely being served when the next stalls.
    healthz_on(&mut stream).await;
    stream
        .write_all(
            b"POST /auth/login HTTP/1.1\r\nhost: node\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{",
        )
        .await
        .expect("half a request goes out");
    // The node has read the head once the request holds an in-flight place (the scrape that
    // reports it holds the other); until then a SIGTERM would find the connection idle.
    eventually(Duration::from_secs(10), "the half-sent request to be in flight", || async {
        let text = node.get("/metrics").await.text;
        let in_flight = text
            .lines()
            .find_map(|line| line.strip_prefix("bazaar_http_requests_in_flight "))
            .and_then(|value| value.trim().parse::<f64>().ok());
        match in_flight {
            Some(n) if n >= 2.0 => Ok(()),
            other => Err(format!("bazaar_http_requests_in_flight {other:?}")),
        }
    })
    .await;
    let started = Instant::now();
    node.terminate();
    let status = node.wait_exit(Duration::from_secs(8)).await;
    let status = status.unwrap_or_else(|| panic!("the node still runs 8 s after SIGTERM; log:\n{}", node.log_tail(20)));
    assert!(status.success(), "exit status {status}; log:\n{}", node.log_tail(20));
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the node did not wait out the grace period for the request in flight ({:?})",
        started.elapsed()
    );
    closed_within(&mut stream, Duration::from_secs(1)).await;
}

/// Sends a WebSocket upgrade request for `token` on a raw connection.
async fn upgrade_request(addr: SocketAddr, token: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("a connection");
    let request = format!(
        "GET /ws HTTP/1.1\r\nhost: node\r\nauthorization: Bearer {token}\r\nconnection: upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("the upgrade request goes out");
    stream
}

#[tokio::test]
async fn aborted_upgrades_and_refused_room_joins_give_every_socket_place_back() {
    let node = TestNode::spawn().await;
    let user = node.signup(Role::Buyer).await;
    let addr = node.api.addr();
    for i in 0..100 {
        let mut stream = upgrade_request(addr, &user.access_token).await;
        if i % 2 == 0 {
            // After the 101: the socket was open, and the client vanishes without a close frame.
            let mut buffer = [0u8; 512];
            let n = tokio::time::timeout(FRAME_DEADLINE, stream.read(&mut buffer))
                .await
                .expect("an answer to the upgrade")
                .expect("reading the answer");
            assert!(buffer[..n].starts_with(b"HTTP/1.1 101"), "{:?}", String::from_utf8_lossy(&buffer[..n]));
        }
        // Before the 101 (odd ones): the upgrade never completes.
        drop(stream);
    }
    let buyer = node.signup(Role::Buyer).await;
    let seller = node.signup(Role::Seller).await;
    let their_room = buyer.open_room(&seller).await["id"].as_str().expect("a room id").to_owned();
    for _ in 0..40 {
        let mut ws = user.ws_connect().await;
        ws.send_json(&json!({"type": "join", "room": their_room})).await;
        ws.expect_close_code(4403, FRAME_DEADLINE).await;
    }
    // All 16 places come back (as the node notices each socket ended).
    let sockets = eventually(Duration::from_secs(10), "16 sockets to open at once", || async {
        let mut sockets = Vec::new();
        for n in 0..16 {
            match node.api.try_ws_connect(Some(&user.access_token), None).await {
                Ok(ws) => sockets.push(ws),
                Err(e) => return Err(format!("socket {} refused: {e}", n + 1)),
            }
        }
        Ok(sockets)
    })
    .await;
    assert!(node.api.try_ws_connect(Some(&user.access_token), None).await.is_err(), "a 17th socket is refused");
    drop(sockets);
    let log = node.log_tail(100_000);
    assert!(!log.contains("panicked"), "the node panicked:\n{}", node.log_tail(40));
    assert!(!log.contains("ERROR"), "client disconnects are not errors:\n{}", node.log_tail(40));
}

#[tokio::test]
async fn ping_frames_count_against_the_frame_rate_limit() {
    let node = TestNode::spawn_with(&[("BAZAAR_WS_MESSAGES_PER_SECOND", "5"), ("BAZAAR_WS_BURST", "10")]).await;
    let user = node.signup(Role::Buyer).await;
    let request = ws_request(&node.api.ws_url(None), Some(&user.access_token)).expect("a request");
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("the upgrade");
    for _ in 0..60 {
        if ws.send(Message::Ping(b"hi".to_vec().into())).await.is_err() {
            break;
        }
    }
    let deadline = Instant::now() + FRAME_DEADLINE;
    let code = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => break frame.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => panic!("the socket broke without a close frame: {e}"),
            Ok(None) => panic!("the socket ended without a close frame"),
            Err(_) => panic!("60 pings within a burst of 10 did not close the socket"),
        }
    };
    assert_eq!(code, Some(4429));
}

#[tokio::test]
async fn a_non_ascii_idempotency_key_is_a_bad_request() {
    let node = TestNode::spawn().await;
    let (_, product, buyer) = node.seller_product_buyer(100, 3).await;
    let body = json!({"productId": product["id"], "quantity": 1}).to_string();
    let mut stream = TcpStream::connect(node.api.addr()).await.expect("a connection");
    let head = format!(
        "POST /orders HTTP/1.1\r\nhost: node\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nidempotency-key: ",
        buyer.access_token,
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice("clé-🔑".as_bytes());
    request.extend_from_slice(b"\r\n\r\n");
    request.extend_from_slice(body.as_bytes());
    stream.write_all(&request).await.expect("the request goes out");
    let answer = read_answer(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "bad_request");
    assert!(
        answer.body["error"]["message"].as_str().unwrap_or_default().contains("Idempotency-Key"),
        "{}",
        answer.body
    );
    assert_eq!(buyer.stock_of(product["id"].as_str().unwrap()).await, 3, "no order was placed");
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_unsupported_media_type_and_json_with_a_charset_works() {
    let node = TestNode::spawn().await;
    let login = json!({"email": unique_email(), "password": PASSWORD}).to_string().into_bytes();
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        let body = Body::Raw { content_type: Some(content_type.into()), bytes: login.clone() };
        node.send(Method::POST, "/auth/login", None, body, &[]).await.expect_error(415, "unsupported_media_type");
    }
    let signup = |content_type: Option<&str>| Body::Raw {
        content_type: content_type.map(str::to_owned),
        bytes: json!({"email": unique_email(), "password": PASSWORD, "role": "BUYER"}).to_string().into_bytes(),
    };
    for content_type in [Some("application/json; charset=utf-8"), Some("Application/JSON"), None] {
        let reply = node.send(Method::POST, "/auth/signup", None, signup(content_type), &[]).await;
        assert_eq!(reply.status, 201, "content type {content_type:?}: {}", reply.text);
    }
}

#[tokio::test]
async fn bad_request_messages_say_what_to_send_and_never_name_rust_types() {
    let node = TestNode::spawn().await;
    let seller = node.signup(Role::Seller).await;
    let cases = [
        ("/products", json!({"name": "x", "price": "12", "stock": 1}), "price", "whole number"),
        ("/products", json!({"name": "x", "price": 1, "stock": 1.5}), "stock", "whole number"),
        ("/products", json!([]), "body", "JSON object"),
        ("/products", json!(null), "body", "JSON object"),
        ("/products", json!({"price": 1, "stock": 1}), "name", "required"),
        ("/auth/signup", json!({"email": unique_email(), "password": PASSWORD, "role": 7}), "role", "string"),
        ("/auth/signup", json!({"email": 42, "password": PASSWORD, "role": "BUYER"}), "email", "string"),
    ];
    for (path, body, field, hint) in cases {
        let reply = seller.post(path, body.clone()).await;
        reply.expect_error_naming(400, "bad_request", field);
        let message = reply.message();
        assert!(message.contains(hint), "{body} should get a message saying `{hint}`: {message}");
        for rust in ["i64", "u32", "u64", "struct", "enum", "sequence", "CreateProduct", "SignupRequest", "line 1"] {
            assert!(!message.contains(rust), "{body}: the message names `{rust}`: {message}");
        }
    }
    let mut ws = seller.ws_connect().await;
    ws.send_text(r#"{"type": "join", "room": 5}"#).await;
    let error = ws.next_of_type("error").await;
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    assert!(message.contains("string"), "{error}");
    assert!(!message.contains("line 1") && !message.contains("i64"), "{error}");
}
