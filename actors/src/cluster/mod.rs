//! The cluster: which nodes are live ([`ClusterView`]), the one remotable actor per node that
//! peers talk to ([`router`]), the loop that keeps the view true ([`membership`]), and the
//! addresses it dials, which may be DNS names resolved at every dial ([`peer_addr`]).
//!
//! ractor_cluster gives sessions and process groups, nothing more: no membership view, no remote
//! spawn, no reconnect, no failure detector for a peer that hangs. So each node dials every peer of
//! its configuration until connected, pings each peer's router, and counts as members only the
//! routers that answered lately. Entities are placed by rendezvous hashing over member names;
//! since two nodes may briefly disagree, single-writer safety comes from the version check in
//! storage, never from the view.
//!
//! What an entity may trust of its own memory does depend on the view: a node out of sight (a
//! partition, a node paused and continued) may change the same entities, so each entity reads its
//! stored state again once in every new epoch of the view ([`ClusterView::trusted_epoch`]): when
//! the members change, and when the view has become whole and settled.

pub mod membership;
pub mod peer_addr;
pub mod router;

use crate::placement;
use ractor::ActorRef;
use router::RouterMsg;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

/// The process group every node's router joins.
pub const ROUTERS: &str = "bazaar.routers";

/// The registered name of a node's router; peers read the node name back from it.
pub fn router_name(node: &str) -> String {
    format!("router/{node}")
}

/// Where an entity lives, as this node sees it now.
pub enum Placement {
    /// Here.
    Local,
    /// On the named member, reached through its router.
    Remote(String, ActorRef<RouterMsg>),
}

/// The live members as this node sees them, itself included.
pub struct ClusterView {
    self_name: String,
    /// The largest frame peers accept.
    max_frame_bytes: usize,
    /// Remote members by name, with their routers.
    peers: RwLock<BTreeMap<String, ActorRef<RouterMsg>>>,
    /// Counts the changes of the set of members.
    epoch: AtomicU64,
    /// Until when (ns since [`clock_base`], 0: not at all) every configured peer is known to have
    /// answered within the heartbeat timeout.
    whole_until: AtomicU64,
}

/// The instant `whole_until` counts from.
fn clock_base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn clock_ns(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(clock_base()).as_nanos()).unwrap_or(u64::MAX)
}

impl ClusterView {
    /// A view holding only this node; peers accept frames up to `max_frame_bytes`.
    pub fn new(self_name: impl Into<String>, max_frame_bytes: usize) -> Self {
        Self {
            self_name: self_name.into(),
            max_frame_bytes,
            peers: RwLock::new(BTreeMap::new()),
            epoch: AtomicU64::new(0),
            whole_until: AtomicU64::new(0),
        }
    }

    /// Says until when every configured peer is known to be answering (`None`: some is not).
    /// The membership loop calls it after each round of heartbeats.
    /// Becoming whole again starts a new epoch: what was changed by a node out of sight until
    /// now (or by one just back, finishing a write begun without this node) is read once more.
    pub fn confirm_whole(&self, until: Option<Instant>) {
        let now = clock_ns(Instant::now());
        let was_whole = self.whole_until.load(Ordering::Acquire) > now;
        self.whole_until.store(until.map_or(0, clock_ns), Ordering::Release);
        if until.is_some() && !was_whole {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The epoch of the view the entities' memory is trusted in. A new epoch starts when the
    /// members change and again when the view has become whole and settled
    /// ([`ClusterView::confirm_whole`]); each entity then reads its stored state once more, since
    /// a node that was away may have changed it meanwhile. Reading storage before every request
    /// while the view is not whole was tried and made the saga too slow on PostgreSQL with a node
    /// down (decision 35).
    pub fn trusted_epoch(&self) -> Option<u64> {
        Some(self.epoch.load(Ordering::Acquire))
    }

    /// Whether a message carrying `text` fits in a peer's frame.
    pub fn fits(&self, text: &str) -> bool {
        text.len() + router::FRAME_OVERHEAD <= self.max_frame_bytes
    }

    /// This node's name.
    pub fn self_name(&self) -> &str {
        &self.self_name
    }

    fn peers(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, ActorRef<RouterMsg>>> {
        self.peers.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The owner of `key` among the live members.
    pub fn owner_of(&self, key: &str) -> String {
        let peers = self.peers();
        let names = peers.keys().map(String::as_str).chain(std::iter::once(self.self_name.as_str()));
        placement::owner(key, names).unwrap_or(&self.self_name).to_owned()
    }

    /// Where entity `id` of `kind` lives.
    pub fn placement(&self, kind: &str, id: &str) -> Placement {
        let key = entity_key(kind, id);
        let peers = self.peers();
        let names = peers.keys().map(String::as_str).chain(std::iter::once(self.self_name.as_str()));
        match placement::owner(&key, names) {
            Some(owner) if owner != self.self_name => match peers.get(owner) {
                Some(router) => Placement::Remote(owner.to_owned(), router.clone()),
                None => Placement::Local,
            },
            _ => Placement::Local,
        }
    }

    /// Whether this node owns entity `id` of `kind`.
    pub fn owns(&self, kind: &str, id: &str) -> bool {
        matches!(self.placement(kind, id), Placement::Local)
    }

    /// Whether this node holds a cluster-wide role (the saga consumer): the role's rendezvous owner.
    pub fn leads(&self, role: &str) -> bool {
        self.owner_of(role) == self.self_name
    }

    /// The router of the member holding `role`, when that is a peer (`None`: this node, or the
    /// holder just left the view).
    pub fn leader_router(&self, role: &str) -> Option<ActorRef<RouterMsg>> {
        let owner = self.owner_of(role);
        self.peers().get(&owner).cloned()
    }

    /// Replaces the remote members; returns whether the set of names changed.
    pub fn set_peers(&self, peers: BTreeMap<String, ActorRef<RouterMsg>>) -> bool {
        let mut current = self.peers.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = !current.keys().eq(peers.keys());
        *current = peers;
        if changed {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    /// The remote members and their routers.
    pub fn peer_routers(&self) -> Vec<(String, ActorRef<RouterMsg>)> {
        self.peers().iter().map(|(name, router)| (name.clone(), router.clone())).collect()
    }

    /// Sends `text` to every peer's router, wrapped by `wrap`. A text too large for a peer's frame
    /// is not sent (it would drop the whole session); the peers then miss it, which every
    /// receiver tolerates (sockets fill gaps from storage, the saga polls).
    pub fn broadcast(&self, text: &str, wrap: impl Fn(String) -> RouterMsg) {
        if !self.fits(text) {
            metrics::counter!("bazaar_router_refused_too_large_total").increment(1);
            tracing::warn!(bytes = text.len(), "message too large for peers; not sent");
            return;
        }
        for router in self.peers().values() {
            let _ = router.send_message(wrap(text.to_owned()));
        }
    }

    /// Every member's name, this node's included, sorted.
    pub fn member_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.peers().keys().cloned().collect();
        names.push(self.self_name.clone());
        names.sort();
        names
    }
}

/// The placement key of an entity.
pub fn entity_key(kind: &str, id: &str) -> String {
    format!("{kind}/{id}")
}
