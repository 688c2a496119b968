//! A webhook receiver on 127.0.0.1 inside the test process: it records every request it gets
//! and answers each as the test planned (a status, or never), and checks signatures the way a
//! receiver written from docs/API.md would, with its own HMAC-SHA256 (not the node's code).

// Each test binary uses a different subset of this module.
#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// This status, at once.
    Status(u16),
    /// Nothing, ever (the connection stays open until the sender gives up or dies).
    Never,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    /// A header's value, or "".
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or_default()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// The event id the body carries.
    pub fn event_id(&self) -> String {
        self.json()["id"].as_str().expect("an event id").to_owned()
    }

    /// The event type the body carries.
    pub fn event_type(&self) -> String {
        self.json()["type"].as_str().expect("an event type").to_owned()
    }
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    planned: VecDeque<Answer>,
}

/// The receiver; it stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Starts one on a free port of 127.0.0.1; it answers 200 unless planned otherwise.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port for the receiver");
        let addr = listener.local_addr().expect("its address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| serve(state.clone(), request));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, state, task }
    }

    /// Where to register it.
    pub fn url(&self) -> String {
        format!("http://{}/hooks/bazaar", self.addr)
    }

    /// Answers the next requests so, in order.
    pub fn plan(&self, answers: &[Answer]) {
        self.state.lock().unwrap().planned.extend(answers.iter().copied());
    }

    /// Waits (up to `deadline`) until at least `count` requests came, and answers them all.
    pub async fn wait_for(&self, count: usize, deadline: Duration) -> Vec<Received> {
        crate::common::eventually(deadline, &format!("{count} webhook requests"), || async {
            let received = self.received();
            if received.len() >= count {
                Ok(received)
            } else {
                Err(format!("{} so far", received.len()))
            }
        })
        .await
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }
}

async fn serve(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let headers = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = request.into_body().collect().await?.to_bytes().to_vec();
    let answer = {
        let mut state = state.lock().unwrap();
        state.received.push(Received { headers, body });
        state.planned.pop_front().unwrap_or(Answer::Status(200))
    };
    match answer {
        Answer::Status(code) => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            *response.status_mut() = StatusCode::from_u16(code).expect("a status");
            Ok(response)
        }
        Answer::Never => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(Response::new(Full::new(Bytes::new())))
        }
    }
}

/// HMAC-SHA256 as RFC 2104 defines it, over SHA-256.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let inner_pad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let outer_pad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::new().chain_update(&inner_pad).chain_update(message).finalize();
    Sha256::new().chain_update(&outer_pad).chain_update(inner).finalize().into()
}

/// Whether `received` carries a signature of its body by `secret` (any of its `v1`s), with
/// a timestamp within five minutes of now, as docs/API.md tells receivers to check.
pub fn signed_by(received: &Received, secret: &str) -> bool {
    let header = received.header("bazaar-signature");
    let mut timestamp = None;
    let mut macs = Vec::new();
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", mac)) => macs.push(mac.to_owned()),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else { return false };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if (now - timestamp).abs() > 300 {
        return false;
    }
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&received.body);
    let expected: String = hmac_sha256(secret.as_bytes(), &signed).iter().map(|b| format!("{b:02x}")).collect();
    macs.contains(&expected)
}

#[test]
fn the_receivers_hmac_matches_rfc_4231() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}
