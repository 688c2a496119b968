//! Membership: the node server (cookie-authenticated sessions), a dial loop to every configured
//! peer (ractor_cluster never reconnects by itself), and a heartbeat to every peer's router (a
//! peer that hangs keeps its TCP session and its process-group entries; only an unanswered ping
//! tells). A peer is a member while its router answered a ping within the heartbeat timeout.
//!
//! Peers are named by [`PeerAddr`]es that may be DNS names: each dial resolves the name again
//! (a pod or container comes back under its name with a new IP address), and each dial runs on
//! its own task under a deadline, so a slow resolver or a peer that swallows SYNs never holds up
//! the heartbeat or the dials to the others.

use crate::cluster::peer_addr::PeerAddr;
use crate::cluster::router::RouterMsg;
use crate::cluster::{ClusterView, ROUTERS};
use anyhow::Context;
use ractor::{Actor, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// How this node joins the cluster.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This node's name (unique in the cluster).
    pub node_name: String,
    /// Where this node accepts peer sessions; a name is resolved once, when the node starts.
    pub listen: PeerAddr,
    /// How peers reach this node; its host is what the node announces in the handshake.
    pub addr: PeerAddr,
    /// Every other node: name and cluster address (resolved again at every dial).
    pub peers: Vec<(String, PeerAddr)>,
    /// The shared secret peers prove during the handshake.
    pub cookie: String,
    /// How often peers are pinged (and dialled when not connected).
    pub heartbeat: Duration,
    /// A peer silent for this long stops being a member.
    pub heartbeat_timeout: Duration,
    /// How long one dial (name resolution, TCP connect) may take before it counts as failed.
    pub dial_timeout: Duration,
    /// The largest frame accepted from a peer; also the limit every sender checks.
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for ClusterConfig {
    // The cookie must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_name", &self.node_name)
            .field("listen", &self.listen)
            .field("addr", &self.addr)
            .field("peers", &self.peers)
            .finish_non_exhaustive()
    }
}

/// The running membership machinery.
pub struct Membership {
    node: ActorRef<NodeServerMessage>,
    task: JoinHandle<()>,
}

impl Membership {
    /// Stops dialling and pinging, and closes the node server (and with it every session).
    pub async fn stop(self) {
        self.task.abort();
        self.node.stop(None);
    }
}

#[derive(Default)]
struct Heartbeats {
    /// When each peer's router last answered.
    answered: HashMap<String, Instant>,
    /// Peers with a ping in flight.
    pending: HashSet<String>,
}

/// Starts the node server and the membership loop. `on_change` runs with the new member names
/// whenever the set of members changes.
pub async fn start(
    config: ClusterConfig,
    view: Arc<ClusterView>,
    on_change: Box<dyn Fn(Vec<String>) + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Membership> {
    let listen = resolve(&config.listen)
        .await
        .with_context(|| format!("resolving the cluster listen address {}", config.listen))?;
    let server = NodeServer::new(
        listen.port(),
        config.cookie.clone(),
        config.node_name.clone(),
        config.addr.host().to_owned(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(listen.ip())
    .with_max_inbound_frame_size(config.max_frame_bytes as u64);
    let (node, _) = Actor::spawn(None, server, ()).await.context("starting the cluster node server")?;
    info!(%listen, addr = %config.addr, peers = config.peers.len(), "cluster node server started");
    let heartbeats = Arc::new(Mutex::new(Heartbeats::default()));
    let dials = Arc::new(Mutex::new(Dials::default()));
    let node_for_loop = node.clone();
    let task = tokio::spawn(async move {
        loop {
            let sessions = ractor::call_t!(node_for_loop, NodeServerMessage::GetSessions, 1000).unwrap_or_default();
            // A session is known by the name its peer proved in the handshake (`name@host`), not
            // by an address: the address a peer announces need not be the one it was dialled at.
            let connected: HashSet<String> = sessions
                .values()
                .filter_map(|s| s.peer_name.as_ref())
                .map(|peer| peer.name.split_once('@').map_or(peer.name.as_str(), |(name, _)| name).to_owned())
                .collect();
            for (name, addr) in &config.peers {
                if connected.contains(name) {
                    dials.lock().unwrap_or_else(|p| p.into_inner()).down_logged.remove(name);
                    continue;
                }
                dial(&node_for_loop, name, addr, &dials, config.dial_timeout);
            }

            let routers = peer_routers(view.self_name());
            ping_all(&routers, &heartbeats, config.heartbeat_timeout);
            let alive: BTreeMap<String, ActorRef<RouterMsg>> = {
                let beats = heartbeats.lock().unwrap_or_else(|p| p.into_inner());
                routers
                    .into_iter()
                    .filter(|(name, _)| {
                        beats.answered.get(name).is_some_and(|at| at.elapsed() < config.heartbeat_timeout)
                    })
                    .collect()
            };
            if view.set_peers(alive) {
                let members = view.member_names();
                info!(?members, "cluster membership changed");
                metrics::gauge!("bazaar_cluster_members").set(members.len() as f64);
                on_change(members);
            }
            tokio::select! {
                _ = tokio::time::sleep(config.heartbeat) => {}
                _ = shutdown.changed() => break,
            }
        }
    });
    Ok(Membership { node, task })
}

/// The first address `addr` resolves to now (an IP address resolves to itself).
async fn resolve(addr: &PeerAddr) -> std::io::Result<SocketAddr> {
    let mut resolved = tokio::net::lookup_host((addr.host(), addr.port())).await?;
    resolved.next().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the name has no address"))
}

/// The dial loop's memory across rounds.
#[derive(Default)]
struct Dials {
    /// When each peer was last dialled.
    started: HashMap<String, Instant>,
    /// Peers with a dial in flight.
    in_flight: HashSet<String>,
    /// Peers whose failure was logged since they were last connected (one line per outage).
    down_logged: HashSet<String>,
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
enum DialError {
    /// The name has no address now: on Kubernetes, a pod that does not exist (yet).
    #[error("the name does not resolve: {0}")]
    NotResolved(std::io::Error),
    /// Resolved, but the connection failed.
    #[error("{0}")]
    Unreachable(String),
    /// Resolving and connecting took longer than the dial timeout.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// Dials `peer` on a task of its own, unless a dial is in flight or began less than a second ago
/// (a handshake takes about a millisecond, and a refused cookie would otherwise be retried in a
/// tight loop). The name is resolved afresh: the peer may have come back at a new address.
fn dial(node: &ActorRef<NodeServerMessage>, peer: &str, addr: &PeerAddr, dials: &Arc<Mutex<Dials>>, timeout: Duration) {
    {
        let mut state = dials.lock().unwrap_or_else(|p| p.into_inner());
        if state.in_flight.contains(peer)
            || state.started.get(peer).is_some_and(|at| at.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        state.in_flight.insert(peer.to_owned());
        state.started.insert(peer.to_owned(), Instant::now());
    }
    let (node, peer, addr, dials) = (node.clone(), peer.to_owned(), addr.clone(), dials.clone());
    tokio::spawn(async move {
        let attempt = async {
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((addr.host(), addr.port())).await.map_err(DialError::NotResolved)?.collect();
            ractor_cluster::client_connect(&node, resolved.as_slice())
                .await
                .map_err(|e| DialError::Unreachable(e.to_string()))
        };
        let outcome = tokio::time::timeout(timeout, attempt).await.unwrap_or(Err(DialError::TimedOut(timeout)));
        let mut state = dials.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight.remove(&peer);
        match outcome {
            Ok(()) => debug!(%peer, %addr, "dialled peer"),
            Err(reason) => {
                if state.down_logged.insert(peer.clone()) {
                    match reason {
                        // Expected on Kubernetes for every ordinal above the replica count.
                        DialError::NotResolved(_) => {
                            info!(%peer, %addr, %reason, "peer not found; retrying every second")
                        }
                        DialError::Unreachable(_) | DialError::TimedOut(_) => {
                            warn!(%peer, %addr, %reason, "peer unreachable; retrying every second")
                        }
                    }
                }
            }
        }
    });
}

/// The routers of other nodes in the process group, by node name.
fn peer_routers(self_name: &str) -> Vec<(String, ActorRef<RouterMsg>)> {
    ractor::pg::get_members(&ROUTERS.to_owned())
        .into_iter()
        .filter(|cell| !cell.get_id().is_local())
        .filter_map(|cell| {
            let name = cell.get_name()?.strip_prefix("router/")?.to_owned();
            (name != self_name).then(|| (name, ActorRef::<RouterMsg>::from(cell)))
        })
        .collect()
}

fn ping_all(routers: &[(String, ActorRef<RouterMsg>)], heartbeats: &Arc<Mutex<Heartbeats>>, timeout: Duration) {
    for (name, router) in routers {
        {
            let mut beats = heartbeats.lock().unwrap_or_else(|p| p.into_inner());
            if !beats.pending.insert(name.clone()) {
                continue;
            }
        }
        let (tx, rx) = ractor::concurrency::oneshot();
        let sent = router.send_message(RouterMsg::Ping(String::new(), RpcReplyPort::from((tx, timeout))));
        let heartbeats = heartbeats.clone();
        let name = name.clone();
        tokio::spawn(async move {
            let answered = sent.is_ok() && matches!(tokio::time::timeout(timeout, rx).await, Ok(Ok(_)));
            let mut beats = heartbeats.lock().unwrap_or_else(|p| p.into_inner());
            beats.pending.remove(&name);
            if answered {
                beats.answered.insert(name, Instant::now());
            }
        });
    }
}
