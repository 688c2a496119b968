//! The HTTP accept loop: hyper's HTTP/1 server over the warp routes, with the bounds
//! `warp::serve` lacks. A connection past `http_max_connections` is closed as soon as it is
//! accepted; a request head must arrive within `http_header_read_timeout_ms` (hyper's timer, which
//! also runs while a keep-alive connection waits for its next request, so it closes idle ones);
//! each request carries a [`BodyDeadline`] that [`super::json_body`] enforces with a 408; and on
//! shutdown the loop stops accepting, lets requests in flight finish for at most
//! `shutdown_grace_ms`, then drops every connection that is left.

use super::client_addr::ClientAddr;
use super::upgrade::PendingUpgrade;
use crate::app::App;
use crate::config::Settings;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// The bounds of the accept loop, from [`Settings`].
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Time to send a request head once the connection waits for one (idle keep-alive included).
    pub header_read_timeout: Duration,
    /// Time for a request's body to arrive, from its head.
    pub body_read_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long requests in flight may finish after shutdown begins.
    pub shutdown_grace: Duration,
}

impl ServerLimits {
    /// The limits the settings ask for.
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(settings.http_header_read_timeout_ms),
            body_read_timeout: Duration::from_millis(settings.http_body_read_timeout_ms),
            max_connections: settings.http_max_connections,
            shutdown_grace: Duration::from_millis(settings.shutdown_grace_ms),
        }
    }
}

/// When a request's body must have arrived; put in every request's extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline {
    /// The instant past which reading the body gives up.
    pub at: Instant,
    /// The configured timeout, for the error message.
    pub after: Duration,
}

/// The connection's place under `http_max_connections`, shared with the requests it carries: an
/// upgraded WebSocket keeps a clone, so the place is freed only when the socket ends too.
#[derive(Clone)]
pub struct ConnectionSlot(#[allow(dead_code)] Arc<Place>);

/// A taken place, counted in `bazaar_http_connections_open` for as long as it is held (a task
/// aborted or a socket that panicked gives it back too).
struct Place(#[allow(dead_code)] OwnedSemaphorePermit);

impl Place {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("bazaar_http_connections_open").increment(1.0);
        Self(permit)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        metrics::gauge!("bazaar_http_connections_open").decrement(1.0);
    }
}

/// Accept errors that concern one connection (it went away before we took it), not the listener.
fn concerns_one_connection(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::Interrupted
    )
}

/// Serves the API on `listener` until `shutdown` resolves, then drains as described above.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    routes: super::Listener,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let service = warp::service(super::routes(app, routes));
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = finished {
                    warn!(reason = %e, "a connection task failed");
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if concerns_one_connection(&e) => {
                        debug!(reason = %e, "a connection went away before it was accepted");
                        continue;
                    }
                    Err(e) => {
                        // Out of file descriptors, say: retrying at once would spin on the same
                        // error, and waiting lets connections that are closing free some.
                        warn!(reason = %e, "accepting a connection failed; pausing accepts for 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(place) = places.clone().try_acquire_owned() else {
                    metrics::counter!("bazaar_http_connections_refused_total").increment(1);
                    debug!(%peer, "connection closed at once: http_max_connections are open");
                    drop(stream);
                    continue;
                };
                let slot = ConnectionSlot(Arc::new(Place::new(place)));
                let stopping = stopping_rx.clone();
                let service = service.clone();
                // Written out here rather than in a function: the service's type is warp's and
                // unnameable.
                connections.spawn(async move {
                    // Small JSON answers: waiting to coalesce them only adds latency.
                    let _ = stream.set_nodelay(true);
                    let hyper_service = TowerToHyperService::new(service);
                    let for_requests = slot.clone();
                    let body_read_timeout = limits.body_read_timeout;
                    let per_request = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                        let extensions = request.extensions_mut();
                        // Only a request that asks to upgrade carries one; `/ws` takes it.
                        if let Some(on_upgrade) = extensions.remove::<hyper::upgrade::OnUpgrade>() {
                            extensions.insert(PendingUpgrade::new(on_upgrade));
                        }
                        extensions.insert(ClientAddr(peer));
                        extensions.insert(for_requests.clone());
                        extensions
                            .insert(BodyDeadline { at: Instant::now() + body_read_timeout, after: body_read_timeout });
                        hyper_service.call(request)
                    });
                    serve_connection(TokioIo::new(stream), per_request, limits, stopping, peer).await;
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    info!(open = connections.len(), grace_ms = limits.shutdown_grace.as_millis() as u64, "draining connections");
    // Each connection finishes the request it is on (if any) and closes.
    let _ = stopping_tx.send(true);
    let drained =
        tokio::time::timeout(limits.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(left = connections.len(), "the shutdown grace period is over; dropping the connections still open");
    }
    connections.shutdown().await;
}

/// Serves one connection until it closes, or until shutdown has let its request in flight finish.
async fn serve_connection<S>(
    io: TokioIo<TcpStream>,
    service: S,
    limits: ServerLimits,
    mut stopping: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    S: hyper::service::HttpService<Incoming> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(io, service).with_upgrades();
    tokio::pin!(connection);
    let outcome = tokio::select! {
        outcome = connection.as_mut() => outcome,
        () = shutdown_begins(&mut stopping) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = outcome {
        // A client that goes away, stalls past a timeout or speaks bad HTTP: its business, not
        // the node's health.
        debug!(%peer, reason = %e, "connection ended with an error");
    }
}

/// Resolves once shutdown has begun (or the accept loop is gone).
async fn shutdown_begins(stopping: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; it is dropped here, before any await.
    let _ = stopping.wait_for(|stopping| *stopping).await.map(|_| ());
}
