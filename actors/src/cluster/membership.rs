//! Membership: the node server (cookie-authenticated sessions), a dial loop to every configured
//! peer (ractor_cluster never reconnects by itself), and a heartbeat to every peer's router (a
//! peer that hangs keeps its TCP session and its process-group entries; only an unanswered ping
//! tells). A peer is a member while its router answered a ping within the heartbeat timeout.

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
    /// Where this node accepts peer sessions.
    pub listen: SocketAddr,
    /// Every other node: name and cluster address.
    pub peers: Vec<(String, SocketAddr)>,
    /// The shared secret peers prove during the handshake.
    pub cookie: String,
    /// How often peers are pinged (and dialled when not connected).
    pub heartbeat: Duration,
    /// A peer silent for this long stops being a member.
    pub heartbeat_timeout: Duration,
    /// The largest frame accepted from a peer; also the limit every sender checks.
    pub max_frame_bytes: usize,
}

impl std::fmt::Debug for ClusterConfig {
    // The cookie must never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_name", &self.node_name)
            .field("listen", &self.listen)
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
    let server = NodeServer::new(
        config.listen.port(),
        config.cookie.clone(),
        config.node_name.clone(),
        config.listen.ip().to_string(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(config.listen.ip())
    .with_max_inbound_frame_size(config.max_frame_bytes as u64);
    let (node, _) = Actor::spawn(None, server, ()).await.context("starting the cluster node server")?;
    info!(listen = %config.listen, peers = config.peers.len(), "cluster node server started");
    let heartbeats = Arc::new(Mutex::new(Heartbeats::default()));
    let node_for_loop = node.clone();
    let task = tokio::spawn(async move {
        let mut dialled: HashMap<SocketAddr, Instant> = HashMap::new();
        let mut down_logged: HashSet<String> = HashSet::new();
        loop {
            let sessions = ractor::call_t!(node_for_loop, NodeServerMessage::GetSessions, 1000).unwrap_or_default();
            let connected: HashSet<String> = sessions
                .values()
                .filter_map(|s| s.peer_name.as_ref().map(|peer| peer.connection_string.clone()))
                .collect();
            for (name, addr) in &config.peers {
                if connected.contains(&addr.to_string()) {
                    down_logged.remove(name);
                    continue;
                }
                // Dial at most once a second per peer: a handshake takes about a millisecond, and
                // a refused cookie would otherwise be retried in a tight loop.
                if dialled.get(addr).is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                    continue;
                }
                dialled.insert(*addr, Instant::now());
                if let Err(e) = ractor_cluster::client_connect(&node_for_loop, addr.to_string().as_str()).await {
                    if down_logged.insert(name.clone()) {
                        warn!(peer = %name, %addr, reason = %e, "peer unreachable; retrying every second");
                    }
                } else {
                    debug!(peer = %name, %addr, "dialled peer");
                }
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
