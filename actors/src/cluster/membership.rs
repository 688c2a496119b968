//! Membership: the node server (cookie-authenticated sessions), a dial loop to every configured
//! peer (ractor_cluster never reconnects by itself), and a heartbeat to every peer's router (a
//! peer that hangs keeps its TCP session and its process-group entries; only an unanswered ping
//! tells). A peer is a member while its router answered a ping within the heartbeat timeout.
//!
//! Peers are named by [`PeerAddr`]es that may be DNS names: each dial resolves the name again
//! (a pod or container comes back under its name with a new IP address), and each dial runs on
//! its own task under a deadline, so a slow resolver or a peer that swallows SYNs never holds up
//! the heartbeat or the dials to the others. A name lookup cannot be cancelled (the system
//! resolver blocks a thread until it answers), so a peer has at most one lookup in flight: while
//! a resolver outage lasts, later dials fail at once instead of starting a thread each.

use crate::cluster::peer_addr::PeerAddr;
use crate::cluster::router::RouterMsg;
use crate::cluster::{ClusterView, ROUTERS};
use anyhow::Context;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
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
    /// How long the view must have been whole, with the same members, before entities trust
    /// their memory again (`ClusterView::trusted_epoch`).
    pub trust_after: Duration,
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
    let resolver: Arc<dyn Resolve> = Arc::new(SystemResolver);
    let node_for_loop = node.clone();
    let task = tokio::spawn(async move {
        // Since when the view has been whole, and with which peers.
        let mut whole_since: Option<(Instant, Vec<String>)> = None;
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
                dial(&node_for_loop, name, addr, &dials, &resolver, config.dial_timeout);
            }

            let routers = peer_routers(view.self_name());
            ping_all(&routers, &heartbeats, config.heartbeat_timeout);
            // The oldest answer among the live peers bounds how long the view stays whole.
            let mut oldest: Option<Instant> = None;
            let alive: BTreeMap<String, ActorRef<RouterMsg>> = {
                let beats = heartbeats.lock().unwrap_or_else(|p| p.into_inner());
                routers
                    .into_iter()
                    .filter(|(name, _)| match beats.answered.get(name) {
                        Some(at) if at.elapsed() < config.heartbeat_timeout => {
                            oldest = Some(oldest.map_or(*at, |o| o.min(*at)));
                            true
                        }
                        _ => false,
                    })
                    .collect()
            };
            let whole = config.peers.iter().all(|(name, _)| alive.contains_key(name));
            let whole_until = if config.peers.is_empty() {
                Some(Instant::now() + config.heartbeat_timeout)
            } else {
                oldest.filter(|_| whole).map(|at| at + config.heartbeat_timeout)
            };
            // Trusted only once whole and unchanged for `trust_after`: a peer that just came back
            // may not see this node yet, and may still finish a write begun without it.
            let unchanged_since = match (&whole_since, whole_until.is_some()) {
                (Some((since, members)), true) if members.iter().eq(alive.keys()) => Some(*since),
                (_, true) => Some(Instant::now()),
                (_, false) => None,
            };
            whole_since = unchanged_since.map(|since| (since, alive.keys().cloned().collect::<Vec<_>>()));
            let whole_until =
                whole_until.filter(|_| unchanged_since.is_some_and(|s| s.elapsed() >= config.trust_after));
            let changed = view.set_peers(alive);
            view.confirm_whole(whole_until);
            if changed {
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
    /// Peers with a name lookup in flight; it may outlive its dial, which gave up on it.
    resolving: HashSet<String>,
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
    /// The lookup an earlier dial started has not answered yet; no second one is started.
    #[error("the name lookup of an earlier dial has not answered yet")]
    StillResolving,
}

/// Looks peer names up; a trait so a test can stand in a resolver that never answers.
trait Resolve: Send + Sync + 'static {
    /// Every address `host` has now, with `port`.
    fn lookup(&self, host: String, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver (getaddrinfo on a blocking thread).
struct SystemResolver;

impl Resolve for SystemResolver {
    fn lookup(&self, host: String, port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) }.boxed()
    }
}

/// Resolves `addr` for a dial of `peer`. The lookup runs on a task of its own, so a caller that
/// gives up (the dial's deadline) leaves it running to its end, marked in `resolving`; until it
/// ends, further calls for that peer fail with [`DialError::StillResolving`] rather than pile up
/// lookups (and blocked threads) during a resolver outage.
async fn resolve_once(
    resolver: &Arc<dyn Resolve>,
    dials: &Arc<Mutex<Dials>>,
    peer: &str,
    addr: &PeerAddr,
) -> Result<Vec<SocketAddr>, DialError> {
    if let Some(ip) = addr.ip() {
        return Ok(vec![SocketAddr::new(ip, addr.port())]);
    }
    if !dials.lock().unwrap_or_else(|p| p.into_inner()).resolving.insert(peer.to_owned()) {
        return Err(DialError::StillResolving);
    }
    let lookup = resolver.lookup(addr.host().to_owned(), addr.port());
    let (answer_tx, answer_rx) = tokio::sync::oneshot::channel();
    let (dials, peer) = (dials.clone(), peer.to_owned());
    tokio::spawn(async move {
        // The mark goes when this task ends, however it ends (a resolver that panics included),
        // so a peer can never be left "still resolving" for good.
        let resolved = Resolved { dials, peer };
        let answer = lookup.await;
        drop(resolved);
        let _ = answer_tx.send(answer);
    });
    match answer_rx.await {
        Ok(answer) => answer.map_err(DialError::NotResolved),
        Err(_) => Err(DialError::NotResolved(std::io::Error::other("the lookup task ended without an answer"))),
    }
}

/// Clears a peer's "lookup in flight" mark when dropped.
struct Resolved {
    dials: Arc<Mutex<Dials>>,
    peer: String,
}

impl Drop for Resolved {
    fn drop(&mut self) {
        self.dials.lock().unwrap_or_else(|p| p.into_inner()).resolving.remove(&self.peer);
    }
}

/// Dials `peer` on a task of its own, unless a dial is in flight or began less than a second ago
/// (a handshake takes about a millisecond, and a refused cookie would otherwise be retried in a
/// tight loop). The name is resolved afresh: the peer may have come back at a new address. The
/// lookup and the connection together are bounded by `timeout`.
fn dial(
    node: &ActorRef<NodeServerMessage>,
    peer: &str,
    addr: &PeerAddr,
    dials: &Arc<Mutex<Dials>>,
    resolver: &Arc<dyn Resolve>,
    timeout: Duration,
) {
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
    let (node, peer, addr, dials, resolver) =
        (node.clone(), peer.to_owned(), addr.clone(), dials.clone(), resolver.clone());
    tokio::spawn(async move {
        let attempt = async {
            let resolved = resolve_once(&resolver, &dials, &peer, &addr).await?;
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
                        DialError::Unreachable(_) | DialError::TimedOut(_) | DialError::StillResolving => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A resolver whose lookups answer after `delay` (never, when `None`), counting them.
    struct SlowResolver {
        delay: Option<Duration>,
        lookups: Arc<AtomicUsize>,
    }

    impl Resolve for SlowResolver {
        fn lookup(&self, _host: String, _port: u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let delay = self.delay;
            async move {
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending::<()>().await,
                }
                Err(std::io::Error::other("no such name"))
            }
            .boxed()
        }
    }

    /// One dial's lookup under the dial timeout, as `dial` runs it.
    async fn bounded(
        resolver: &Arc<dyn Resolve>,
        dials: &Arc<Mutex<Dials>>,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, DialError> {
        let addr: PeerAddr = "bazaar-1.bazaar-cluster:7000".parse().unwrap();
        tokio::time::timeout(timeout, resolve_once(resolver, dials, "bazaar-1", &addr))
            .await
            .unwrap_or(Err(DialError::TimedOut(timeout)))
    }

    // Real time, short: the crate's tokio has no paused clock (test-util is not enabled).
    #[tokio::test]
    async fn a_resolver_that_never_answers_costs_one_lookup_and_each_dial_ends_by_its_timeout() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let resolver: Arc<dyn Resolve> = Arc::new(SlowResolver { delay: None, lookups: lookups.clone() });
        let dials = Arc::new(Mutex::new(Dials::default()));
        let timeout = Duration::from_millis(100);
        for round in 0..10 {
            let started = Instant::now();
            let outcome = bounded(&resolver, &dials, timeout).await;
            assert!(started.elapsed() < timeout * 3, "round {round} took {:?}", started.elapsed());
            match (round, outcome) {
                (0, Err(DialError::TimedOut(_))) | (1.., Err(DialError::StillResolving)) => {}
                (_, other) => panic!("round {round}: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(lookups.load(Ordering::SeqCst), 1, "one lookup in flight for the peer, not one per dial");
    }

    #[tokio::test]
    async fn a_late_answer_frees_the_peer_for_the_next_lookup() {
        let lookups = Arc::new(AtomicUsize::new(0));
        let resolver: Arc<dyn Resolve> =
            Arc::new(SlowResolver { delay: Some(Duration::from_millis(300)), lookups: lookups.clone() });
        let dials = Arc::new(Mutex::new(Dials::default()));
        let timeout = Duration::from_millis(100);
        assert!(matches!(bounded(&resolver, &dials, timeout).await, Err(DialError::TimedOut(_))));
        assert!(matches!(bounded(&resolver, &dials, timeout).await, Err(DialError::StillResolving)));
        // The first lookup answers 300 ms after it started; then the peer may be looked up again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while dials.lock().unwrap().resolving.contains("bazaar-1") {
            assert!(Instant::now() < deadline, "the late answer never cleared the lookup");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(matches!(bounded(&resolver, &dials, timeout).await, Err(DialError::TimedOut(_))));
        assert_eq!(lookups.load(Ordering::SeqCst), 2, "the answered lookup let the next dial look again");
        let ip: PeerAddr = "127.0.0.1:7000".parse().unwrap();
        let resolved = resolve_once(&resolver, &dials, "other", &ip).await.expect("an IP address resolves to itself");
        assert_eq!(resolved, vec![SocketAddr::from(([127, 0, 0, 1], 7000))]);
        assert_eq!(lookups.load(Ordering::SeqCst), 2, "an IP address needs no lookup");
    }
}
