//! The baselines, each run as a child process of the tool (the tool's own binary in a hidden
//! mode), so that, like a bazaar node, it has a process and a tokio runtime of its own:
//! - `__hello-server`: a bare hyper HTTP/1.1 keep-alive server answering "Hello, world!";
//! - `__ws-broadcast`: a bare tokio-tungstenite server sending every text frame it receives to
//!   every connected socket (the sender too);
//! - `__ractor-peer`: a ractor_cluster node with one remotable echo actor.
//!
//! Each prints `bench-baseline ready addr=ADDR` when it accepts connections.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, RactorClusterMessage};
use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

pub const READY: &str = "bench-baseline ready";

fn ready(addr: impl std::fmt::Display) -> anyhow::Result<()> {
    println!("{READY} addr={addr}");
    std::io::stdout().flush()?;
    Ok(())
}

/// `__hello-server`.
pub async fn hello_server() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    ready(listener.local_addr()?)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                // Read the body (POSTs carry one) so the connection stays reusable.
                let _ = req.into_body().collect().await;
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"Hello, world!"))))
            });
            let _ = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

type Peers = Arc<Mutex<HashMap<u64, mpsc::Sender<Message>>>>;

/// `__ws-broadcast`: every text frame received goes to every connected socket. Each socket has a
/// bounded queue of `queue` frames (bazaar's `ws_send_queue` is 256); a socket whose queue is full
/// misses the frame (bazaar would disconnect it). `read_buffer` and `write_buffer` size
/// tungstenite's buffers, so that ws-idle compares with a node configured alike.
pub async fn ws_broadcast(queue: usize, read_buffer: usize, write_buffer: usize) -> anyhow::Result<()> {
    let config = WebSocketConfig::default().read_buffer_size(read_buffer).write_buffer_size(write_buffer);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    ready(listener.local_addr()?)?;
    let peers: Peers = Arc::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let (id, peers) = (next_id, peers.clone());
        tokio::spawn(async move {
            let Ok(socket) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else { return };
            let (mut sink, mut stream) = socket.split();
            let (tx, mut rx) = mpsc::channel::<Message>(queue);
            peers.lock().unwrap_or_else(|p| p.into_inner()).insert(id, tx);
            let writer = tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(message)) = stream.next().await {
                match message {
                    Message::Text(_) => {
                        let targets: Vec<mpsc::Sender<Message>> =
                            peers.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
                        for target in targets {
                            let _ = target.try_send(message.clone());
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            peers.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
            writer.abort();
        });
    }
}

/// The remotable echo actor's messages.
#[derive(RactorClusterMessage)]
pub enum EchoMsg {
    #[rpc]
    Echo(String, RpcReplyPort<String>),
}

pub struct EchoActor;

impl Actor for EchoActor {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(&self, _: ActorRef<Self::Msg>, msg: Self::Msg, _: &mut ()) -> Result<(), ActorProcessingErr> {
        match msg {
            EchoMsg::Echo(text, reply) => {
                let _ = reply.send(text);
            }
        }
        Ok(())
    }
}

pub const ECHO_GROUP: &str = "bench-echo";

/// Starts a ractor_cluster node server on 127.0.0.1:`port` (0: any).
pub async fn node_server(
    name: &str,
    port: u16,
    cookie: &str,
) -> anyhow::Result<ActorRef<ractor_cluster::NodeServerMessage>> {
    let server = NodeServer::new(
        port,
        cookie.to_owned(),
        name.to_owned(),
        "127.0.0.1".into(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(IpAddr::from([127, 0, 0, 1]));
    let (node, _) = Actor::spawn(None, server, ()).await?;
    Ok(node)
}

/// `__ractor-peer`: a node with one echo actor in the `bench-echo` process group.
pub async fn ractor_peer(port: u16, cookie: String) -> anyhow::Result<()> {
    let _node = node_server("bench-peer", port, &cookie).await?;
    let (echo, _) = Actor::spawn(Some("bench-echo".into()), EchoActor, ()).await?;
    ractor::pg::join(ECHO_GROUP.to_owned(), vec![echo.get_cell()]);
    ready(format!("127.0.0.1:{port}"))?;
    // Runs until the tool kills it.
    std::future::pending::<()>().await;
    Ok(())
}

struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// `__ractor-idle`: spawns `count` bare actors and reports its RSS before and after.
pub async fn ractor_idle(count: usize) -> anyhow::Result<()> {
    let mut warm = Vec::new();
    for _ in 0..100 {
        warm.push(Actor::spawn(None, Idle, ()).await?.0);
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = crate::sys::rss_of(std::process::id())?;
    let mut actors = Vec::with_capacity(count);
    for _ in 0..count {
        actors.push(Actor::spawn(None, Idle, ()).await?.0);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let after = crate::sys::rss_of(std::process::id())?;
    println!("{READY} addr=127.0.0.1:0 before={before} after={after} actors={}", actors.len());
    std::io::stdout().flush()?;
    std::future::pending::<()>().await;
    Ok(())
}
