//! The closed-loop load generator: N connections, each sending its next request when the previous
//! answer is in, for a warm-up and then a measured window. Latencies go into HDR histograms
//! (microseconds). The same generator drives bazaar and its baseline.

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A latency histogram in microseconds, 1 µs to 1 hour, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// When the measured window starts and ends.
#[derive(Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub until: Instant,
}

impl Window {
    pub fn new(warmup: Duration, measure: Duration) -> Self {
        let from = Instant::now() + warmup;
        Self { from, until: from + measure }
    }

    pub fn seconds(&self) -> f64 {
        (self.until - self.from).as_secs_f64()
    }

    /// Whether something that started at `started` and ends now counts.
    pub fn counts(&self, started: Instant) -> bool {
        started >= self.from && Instant::now() <= self.until
    }

    pub fn over(&self) -> bool {
        Instant::now() >= self.until
    }
}

/// What one connection (or caller) saw.
pub struct Recorder {
    pub window: Window,
    /// Per request.
    pub hist: Histogram<u64>,
    /// Per operation, when an operation is several requests (order + payment).
    pub ops: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub error_samples: Vec<String>,
    live: Arc<AtomicU64>,
}

impl Recorder {
    pub fn new(window: Window, live: Arc<AtomicU64>) -> Self {
        Self {
            window,
            hist: histogram(),
            ops: histogram(),
            ok: 0,
            errors: 0,
            statuses: BTreeMap::new(),
            error_samples: Vec::new(),
            live,
        }
    }

    /// Records one request that started at `started` and just ended.
    pub fn request(&mut self, started: Instant, ok: bool) {
        self.live.fetch_add(1, Ordering::Relaxed);
        if !self.window.counts(started) {
            return;
        }
        if ok {
            self.ok += 1;
            self.hist.saturating_record(micros(started.elapsed()));
        } else {
            self.errors += 1;
        }
    }

    /// Records one whole operation.
    pub fn op(&mut self, started: Instant) {
        if self.window.counts(started) {
            self.ops.saturating_record(micros(started.elapsed()));
        }
    }

    pub fn error(&mut self, what: String) {
        if self.error_samples.len() < 5 {
            self.error_samples.push(what);
        }
    }

    /// Sends `req` on `sender`, records it, and returns the status and body.
    pub async fn send(
        &mut self,
        sender: &mut Sender,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let started = Instant::now();
        let answer = async {
            sender.ready().await?;
            let response = sender.send_request(req).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, body))
        }
        .await;
        match answer {
            Ok((status, body)) => {
                self.request(started, status.is_success());
                if self.window.counts(started) {
                    *self.statuses.entry(status.as_u16()).or_default() += 1;
                }
                if !status.is_success() {
                    self.error(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])));
                }
                Ok((status, body))
            }
            Err(e) => {
                self.request(started, false);
                Err(e)
            }
        }
    }

    pub fn merge(&mut self, other: Recorder) {
        let _ = self.hist.add(&other.hist);
        let _ = self.ops.add(&other.ops);
        self.ok += other.ok;
        self.errors += other.errors;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for sample in other.error_samples {
            if self.error_samples.len() < 5 {
                self.error_samples.push(sample);
            }
        }
    }

    pub fn into_stats(self, label: &str) -> Stats {
        Stats {
            label: label.to_owned(),
            seconds: self.window.seconds(),
            ok: self.ok,
            errors: self.errors,
            statuses: self.statuses,
            error_samples: self.error_samples,
            hist: self.hist,
            ops: self.ops,
        }
    }
}

pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}

/// The merged result of a load run.
pub struct Stats {
    pub label: String,
    pub seconds: f64,
    pub ok: u64,
    pub errors: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub error_samples: Vec<String>,
    pub hist: Histogram<u64>,
    pub ops: Histogram<u64>,
}

impl Stats {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    pub fn ops_per_second(&self) -> f64 {
        self.ops.len() as f64 / self.seconds
    }

    pub fn json(&self) -> serde_json::Value {
        let mut value = json!({
            "label": self.label,
            "seconds": self.seconds,
            "ok": self.ok,
            "errors": self.errors,
            "perSecond": self.per_second(),
            "statuses": self.statuses,
            "errorSamples": self.error_samples,
            "latencyMs": latency_json(&self.hist),
            "percentileCurveMs": curve_json(&self.hist),
        });
        if !self.ops.is_empty() {
            value["operations"] = json!({
                "count": self.ops.len(),
                "perSecond": self.ops_per_second(),
                "latencyMs": latency_json(&self.ops),
            });
        }
        value
    }
}

/// Milliseconds at a quantile.
pub fn ms(hist: &Histogram<u64>, q: f64) -> f64 {
    if hist.is_empty() {
        return f64::NAN;
    }
    hist.value_at_quantile(q) as f64 / 1000.0
}

pub fn latency_json(hist: &Histogram<u64>) -> serde_json::Value {
    json!({
        "count": hist.len(),
        "p50": ms(hist, 0.50),
        "p90": ms(hist, 0.90),
        "p99": ms(hist, 0.99),
        "p999": ms(hist, 0.999),
        "max": hist.max() as f64 / 1000.0,
        "mean": hist.mean() / 1000.0,
    })
}

/// The quantiles plotted and stored: 0 .. 99.999 %.
pub const CURVE: [f64; 12] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999];

pub fn curve_json(hist: &Histogram<u64>) -> serde_json::Value {
    let points: Vec<serde_json::Value> = CURVE.iter().map(|q| json!([q * 100.0, ms(hist, *q)])).collect();
    json!(points)
}

/// A progress bar on stderr for a timed phase, showing the live rate.
pub fn timed_bar(label: &str, window: Window, live: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let total = (window.until - Instant::now()).as_millis() as u64;
    let bar = ProgressBar::new(total.max(1));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {elapsed:>3} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    let start = Instant::now();
    tokio::spawn(async move {
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let now = Instant::now();
            let count = live.load(Ordering::Relaxed);
            let rate = (count - last.1) as f64 / (now - last.0).as_secs_f64();
            last = (now, count);
            bar.set_position((now - start).as_millis() as u64);
            let phase = if now < window.from { "warm-up" } else { "measuring" };
            bar.set_message(format!("{phase} {rate:>9.0}/s"));
            if now >= window.until {
                break;
            }
        }
        bar.finish_and_clear();
    })
}

/// A counting progress bar (setup phases).
pub fn count_bar(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {elapsed:>3} {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// One operation of an HTTP workload on a connection. `seq` counts the connection's operations.
pub trait Workload: Send + Sync + 'static {
    fn op(
        &self,
        sender: &mut Sender,
        conn: usize,
        seq: u64,
        rec: &mut Recorder,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Opens an HTTP/1.1 keep-alive connection.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Runs `workload` over `connections` keep-alive connections to `addr`.
pub async fn run_http<W: Workload>(
    label: &str,
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    measure: Duration,
    workload: Arc<W>,
) -> anyhow::Result<Stats> {
    // Connect first, so connection setup is not part of the window.
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(addr).await?);
    }
    let window = Window::new(warmup, measure);
    let live = Arc::new(AtomicU64::new(0));
    let bar = timed_bar(label, window, live.clone());
    let mut tasks = Vec::with_capacity(connections);
    for (conn, mut sender) in senders.into_iter().enumerate() {
        let (workload, live) = (workload.clone(), live.clone());
        tasks.push(tokio::spawn(async move {
            let mut rec = Recorder::new(window, live);
            let mut seq = 0u64;
            while !window.over() {
                seq += 1;
                if let Err(e) = workload.op(&mut sender, conn, seq, &mut rec).await {
                    rec.error(format!("{e:#}"));
                    if sender.is_closed() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        match connect(addr).await {
                            Ok(fresh) => sender = fresh,
                            Err(_) => continue,
                        }
                    }
                }
            }
            rec
        }));
    }
    let mut total = Recorder::new(window, live);
    for task in tasks {
        total.merge(task.await?);
    }
    let _ = bar.await;
    Ok(total.into_stats(label))
}

/// Builds a request with the Host header set.
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
    body: Option<Bytes>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path).header("host", addr.to_string());
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        builder = builder.header("content-type", "application/json");
    }
    builder.body(Full::new(body.unwrap_or_default())).expect("valid request")
}
