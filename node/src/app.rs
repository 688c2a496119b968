//! What every request handler shares.

use crate::config::Settings;
use crate::passwords::Passwords;
use crate::rate_limit::{AuthLimits, KeyedBuckets};
use crate::tokens::TokenService;
use bazaar_actors::cluster::ClusterView;
use bazaar_actors::login_sessions::LoginSessions;
use bazaar_actors::read_side::ReadSide;
use bazaar_actors::regions::Regions;
use bazaar_actors::socket_hub::HubMsg;
use bazaar_actors::webhooks::Webhooks;
use bazaar_protocol::UserId;
use metrics_exporter_prometheus::PrometheusHandle;
use ractor::ActorRef;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The node's shared state, behind an `Arc` in every filter.
pub struct App {
    pub settings: Settings,
    pub regions: Regions,
    /// The cluster as this node sees it, when in one.
    pub view: Option<Arc<ClusterView>>,
    /// Requests being served now, bounded (`max_in_flight_requests`).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// The listings and lookups the front end reads without an entity (never the store itself).
    pub reads: ReadSide,
    /// The refresh-token families behind logins.
    pub login_sessions: LoginSessions,
    /// Sellers' outbound webhook endpoints and their deliveries.
    pub webhooks: Webhooks,
    pub socket_hub: ActorRef<HubMsg>,
    /// The payment provider, whose notifications `POST /payments/webhooks/{name}` parses.
    pub payment_gateway: Arc<dyn bazaar_actors::payment_gateway::PaymentGateway>,
    pub tokens: Arc<TokenService>,
    /// Login attempts per client address and e-mail (when Redis does not count them).
    pub logins: KeyedBuckets,
    /// Payment provider notifications per sender address (`webhook_notices_per_minute`).
    pub webhook_senders: KeyedBuckets,
    /// Logins and signups per client address and per node, before any password work.
    pub auth_limits: AuthLimits,
    /// The bounded pool that hashes and checks passwords.
    pub passwords: Passwords,
    /// Redis in front of SQL (answers "don't know" when absent or down).
    pub cache: bazaar_actors::cache::Cache,
    /// Requests in flight per user.
    pub user_slots: crate::rate_limit::UserSlots,
    /// The `[[nodes]]` of the cluster file (empty when the node runs alone).
    pub nodes: Vec<crate::config::NodeEntry>,
    /// Open WebSockets per user, for the per-user connection limit.
    pub sockets: Mutex<HashMap<UserId, usize>>,
    pub metrics: PrometheusHandle,
}

impl App {
    /// Takes one of `user`'s socket places; `None` when the user is at the limit. The place is
    /// given back when the returned slot is dropped, however the socket ends.
    pub fn open_socket(self: &Arc<Self>, user: &UserId) -> Option<SocketSlot> {
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        let count = sockets.entry(user.clone()).or_insert(0);
        if *count >= self.settings.ws_max_connections_per_user {
            return None;
        }
        *count += 1;
        Some(SocketSlot { app: self.clone(), user: user.clone() })
    }

    /// Gives back one of `user`'s socket places.
    fn close_socket(&self, user: &UserId) {
        let mut sockets = self.sockets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = sockets.get_mut(user) {
            *count -= 1;
            if *count == 0 {
                sockets.remove(user);
            }
        }
    }
}

/// One of a user's places under `ws_max_connections_per_user`, held from the upgrade request to
/// the end of the socket: dropping it (an upgrade the client aborted, a socket closed for any
/// reason, a task that panicked) frees the place.
pub struct SocketSlot {
    app: Arc<App>,
    user: UserId,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        self.app.close_socket(&self.user);
    }
}
