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

pub mod membership;
pub mod peer_addr;
pub mod router;

use crate::placement;
use ractor::ActorRef;
use router::RouterMsg;
use std::collections::BTreeMap;
use std::sync::RwLock;

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
}

impl ClusterView {
    /// A view holding only this node; peers accept frames up to `max_frame_bytes`.
    pub fn new(self_name: impl Into<String>, max_frame_bytes: usize) -> Self {
        Self { self_name: self_name.into(), max_frame_bytes, peers: RwLock::new(BTreeMap::new()) }
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
