//! WebSocket client side: connecting (from a chosen loopback source address), the fan-out
//! receivers and sender, and holding idle sockets.

use anyhow::Context;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::load::{micros, Window};

pub type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `ws://addr/ws`, from `source` (any port), with an optional bearer token.
pub async fn open(addr: SocketAddr, path: &str, token: Option<&str>, source: Option<IpAddr>) -> anyhow::Result<Ws> {
    let socket = TcpSocket::new_v4()?;
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0)).with_context(|| format!("binding to {source}"))?;
    }
    let stream = socket.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    if let Some(token) = token {
        request.headers_mut().insert("authorization", format!("Bearer {token}").parse()?);
    }
    let (ws, _) = tokio_tungstenite::client_async(request, stream).await.context("WebSocket handshake")?;
    Ok(ws)
}

/// The source address for the `i`th connection: 127.0.0.1, then .2, .3 ... every `per_ip`
/// connections (one source address has only the ephemeral port range to connect from).
pub fn source_for(i: usize, per_ip: usize) -> IpAddr {
    let k = (i / per_ip.max(1)) as u32 + 1;
    IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + k))
}

/// Connections per source address: the ephemeral port range, less a margin.
pub fn ports_per_source() -> usize {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut parts = range.split_whitespace().filter_map(|p| p.parse::<usize>().ok());
    match (parts.next(), parts.next()) {
        (Some(lo), Some(hi)) if hi > lo + 2000 => (hi - lo) - 1000,
        _ => 10_000,
    }
}

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The marker a fan-out message carries: `bench:NANOS;` since the tool's base instant.
pub fn marker() -> String {
    format!("bench:{};", base().elapsed().as_nanos())
}

/// When a frame's marker was made, if it has one.
fn marked_at(text: &str) -> Option<Instant> {
    let at = text.find("bench:")? + "bench:".len();
    let digits: &str = text[at..].split(';').next()?;
    let nanos: u64 = digits.parse().ok()?;
    Some(base() + Duration::from_nanos(nanos))
}

/// Shared counters of a fan-out run.
#[derive(Default)]
pub struct Fanout {
    /// Every frame received, marked or not (used to wait for quiet).
    pub frames: AtomicU64,
    /// Marked frames received (all phases, for the progress bar).
    pub delivered_live: Arc<AtomicU64>,
    /// Marked frames sent within the window and received before it closed.
    pub delivered: AtomicU64,
    /// Sockets closed by the other side (or failing) before the end.
    pub closed: AtomicU64,
    pub joined: AtomicU64,
    pub hist: Mutex<Option<Histogram<u64>>>,
}

impl Fanout {
    pub fn new() -> Arc<Self> {
        let fanout = Fanout::default();
        *fanout.hist.lock().unwrap_or_else(|p| p.into_inner()) = Some(crate::load::histogram());
        Arc::new(fanout)
    }

    pub fn take_hist(&self) -> Histogram<u64> {
        self.hist.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(crate::load::histogram)
    }
}

/// Reads a socket until `stop`: counts frames, `joined` frames and marked messages (recording
/// their delivery latency when they were sent within the window). When `permits` is given (the
/// sender's own socket) every marked message it gets back frees one window slot.
pub fn spawn_reader(
    mut stream: SplitStream<Ws>,
    fanout: Arc<Fanout>,
    window: Arc<OnceLock<Window>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    permits: Option<Arc<Semaphore>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = stop.changed() => break,
            };
            let text = match next {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    fanout.closed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Some(Ok(_)) => continue,
            };
            fanout.frames.fetch_add(1, Ordering::Relaxed);
            let text: &str = text.as_ref();
            if let Some(sent) = marked_at(text) {
                fanout.delivered_live.fetch_add(1, Ordering::Relaxed);
                if let Some(permits) = &permits {
                    permits.add_permits(1);
                }
                if let Some(window) = window.get() {
                    if window.counts(sent) {
                        fanout.delivered.fetch_add(1, Ordering::Relaxed);
                        let mut hist = fanout.hist.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(hist) = hist.as_mut() {
                            hist.saturating_record(micros(sent.elapsed()));
                        }
                    }
                }
            } else if text.contains("\"type\":\"joined\"") {
                fanout.joined.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

/// Sends `frame(marker)` on `sink`, at most `in_flight` unanswered at once, until the window
/// closes; returns how many were sent within the window. A slot whose echo does not come back
/// within a second is given up (counted in the second value).
pub async fn run_sender(
    mut sink: SplitSink<Ws, Message>,
    permits: Arc<Semaphore>,
    window: Window,
    frame: impl Fn(&str) -> String,
) -> anyhow::Result<(u64, u64)> {
    let (mut sent, mut stalls) = (0u64, 0u64);
    while !window.over() {
        match tokio::time::timeout(Duration::from_secs(1), permits.acquire()).await {
            Ok(permit) => permit?.forget(),
            Err(_) => stalls += 1,
        }
        let now = Instant::now();
        sink.send(Message::text(frame(&marker()))).await?;
        if now >= window.from && now < window.until {
            sent += 1;
        }
    }
    Ok((sent, stalls))
}
