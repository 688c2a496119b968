//! The per-node chat gateway: knows which WebSocket sessions of this node joined which room and
//! belong to which user, and pushes published events to them — each chat message is serialised
//! once and handed to every joined session; order changes go to the buyer's and seller's sockets;
//! presence is recomputed whenever someone joins or leaves.

use crate::cluster::router::{PresenceUpdate, RoomFrame, RouterMsg};
use crate::cluster::ClusterView;
use crate::session::{frame_text, SessionId, SessionMsg, SessionRef};
use bazaar_protocol::chat::ServerFrame;
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::orders::Order;
use bazaar_protocol::{RoomId, UserId};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::warn;

/// Messages the gateway accepts. Local-only: other nodes reach it through their router.
#[derive(ractor_cluster::RactorMessage)]
pub enum GatewayMsg {
    /// A session opened for `user`.
    Connect { user: UserId, session: SessionRef },
    /// A session closed.
    Disconnect { session: SessionId },
    /// A session joined a room; replies once it receives the room's messages.
    Join { room: RoomId, session: SessionId, reply: RpcReplyPort<()> },
    /// Tells the room's sessions who is online; sent after a join's replay, so the joining
    /// session sees `joined` (and its replay) before the presence frame.
    Announce { room: RoomId },
    /// A session left a room.
    Leave { room: RoomId, session: SessionId },
    /// A frame (typing, read) for the room's other sessions.
    Relay { room: RoomId, from: SessionId, frame: ServerFrame },
    /// An event published on the log.
    Published(Arc<Envelope>),
    /// Who is online in a room on another node.
    RemotePresence(PresenceUpdate),
    /// A typing or read frame from a socket on another node.
    RemoteRelay(RoomFrame),
    /// The cluster's members changed: forget presence of nodes that left, tell newcomers ours.
    MembersChanged(Vec<String>),
}

struct Connected {
    user: UserId,
    session: SessionRef,
    rooms: HashSet<RoomId>,
}

/// Who is connected and where.
#[derive(Default)]
pub struct GatewayState {
    sessions: HashMap<SessionId, Connected>,
    rooms: HashMap<RoomId, HashSet<SessionId>>,
    users: HashMap<UserId, HashSet<SessionId>>,
    /// Online users of rooms on other nodes, by room and node.
    remote_presence: HashMap<RoomId, HashMap<String, Vec<UserId>>>,
    view: Option<Arc<ClusterView>>,
}

impl GatewayState {
    fn local_online(&self, room: &RoomId) -> BTreeSet<UserId> {
        let members = self.rooms.get(room).into_iter().flatten();
        members.filter_map(|s| self.sessions.get(s)).map(|c| c.user.clone()).collect()
    }

    /// Tells the other nodes who is online in `room` here.
    fn share_presence(&self, room: &RoomId) {
        let Some(view) = &self.view else { return };
        let update = PresenceUpdate {
            room: room.clone(),
            node: view.self_name().to_owned(),
            online: self.local_online(room).into_iter().collect(),
        };
        let text = serde_json::to_string(&update).unwrap_or_default();
        view.broadcast(&text, RouterMsg::Presence);
    }

    /// Sends the room's presence (this node's and the others') to the room's sockets here.
    fn presence(&self, room: &RoomId) {
        let Some(members) = self.rooms.get(room) else { return };
        let mut online = self.local_online(room);
        for users in self.remote_presence.get(room).into_iter().flat_map(HashMap::values) {
            online.extend(users.iter().cloned());
        }
        let text = frame_text(&ServerFrame::Presence { room: room.clone(), online: online.into_iter().collect() });
        for session in members {
            if let Some(connected) = self.sessions.get(session) {
                let _ = connected.session.send_message(SessionMsg::Push(text.clone()));
            }
        }
    }

    fn leave(&mut self, room: &RoomId, session: &SessionId) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(session);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    fn push_order(&self, order: &Order) {
        let text = frame_text(&ServerFrame::Order { order: order.clone() });
        for user in [&order.buyer_id, &order.seller_id] {
            for session in self.users.get(user).into_iter().flatten() {
                if let Some(connected) = self.sessions.get(session) {
                    let _ = connected.session.send_message(SessionMsg::Push(text.clone()));
                }
            }
        }
    }

    fn published(&self, envelope: &Envelope) {
        match &envelope.event {
            Event::ChatMessagePosted { message } => {
                let Some(members) = self.rooms.get(&message.room) else { return };
                let message = Arc::new(message.clone());
                let text = frame_text(&ServerFrame::Message((*message).clone()));
                for session in members {
                    if let Some(connected) = self.sessions.get(session) {
                        let _ = connected
                            .session
                            .send_message(SessionMsg::ChatMessage { message: message.clone(), text: text.clone() });
                    }
                }
                metrics::counter!("bazaar_chat_deliveries_total").increment(members.len() as u64);
            }
            Event::OrderPlaced { order }
            | Event::OrderCancelled { order, .. }
            | Event::PaymentRequested { order, .. }
            | Event::OrderPaid { order }
            | Event::OrderRefunded { order } => self.push_order(order),
            _ => {}
        }
    }
}

/// The gateway actor.
pub struct ChatGateway;

impl Actor for ChatGateway {
    type Msg = GatewayMsg;
    type State = GatewayState;
    type Arguments = Option<Arc<ClusterView>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<GatewayMsg>,
        view: Option<Arc<ClusterView>>,
    ) -> Result<GatewayState, ActorProcessingErr> {
        Ok(GatewayState { view, ..GatewayState::default() })
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        state: &mut GatewayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::Connect { user, session } => {
                state.users.entry(user.clone()).or_default().insert(session.get_id());
                state.sessions.insert(session.get_id(), Connected { user, session, rooms: HashSet::new() });
                metrics::gauge!("bazaar_ws_connections").set(state.sessions.len() as f64);
            }
            GatewayMsg::Disconnect { session } => {
                if let Some(connected) = state.sessions.remove(&session) {
                    if let Some(sessions) = state.users.get_mut(&connected.user) {
                        sessions.remove(&session);
                        if sessions.is_empty() {
                            state.users.remove(&connected.user);
                        }
                    }
                    for room in &connected.rooms {
                        state.leave(room, &session);
                        state.presence(room);
                        state.share_presence(room);
                    }
                }
                metrics::gauge!("bazaar_ws_connections").set(state.sessions.len() as f64);
            }
            GatewayMsg::Join { room, session, reply } => {
                if let Some(connected) = state.sessions.get_mut(&session) {
                    connected.rooms.insert(room.clone());
                    state.rooms.entry(room.clone()).or_default().insert(session);
                }
                let _ = reply.send(());
            }
            GatewayMsg::Announce { room } => {
                state.presence(&room);
                state.share_presence(&room);
            }
            GatewayMsg::Leave { room, session } => {
                if let Some(connected) = state.sessions.get_mut(&session) {
                    if connected.rooms.remove(&room) {
                        state.leave(&room, &session);
                        state.presence(&room);
                        state.share_presence(&room);
                    }
                }
            }
            GatewayMsg::Relay { room, from, frame } => {
                if let Some(view) = &state.view {
                    let shared = serde_json::to_string(&RoomFrame { room: room.clone(), frame: frame.clone() })
                        .unwrap_or_default();
                    view.broadcast(&shared, RouterMsg::Relay);
                }
                let text = frame_text(&frame);
                for session in state.rooms.get(&room).into_iter().flatten().filter(|s| **s != from) {
                    if let Some(connected) = state.sessions.get(session) {
                        let _ = connected.session.send_message(SessionMsg::Push(text.clone()));
                    }
                }
            }
            GatewayMsg::Published(envelope) => state.published(&envelope),
            GatewayMsg::RemotePresence(update) => {
                let nodes = state.remote_presence.entry(update.room.clone()).or_default();
                if update.online.is_empty() {
                    nodes.remove(&update.node);
                } else {
                    nodes.insert(update.node.clone(), update.online);
                }
                state.presence(&update.room);
            }
            GatewayMsg::RemoteRelay(RoomFrame { room, frame }) => {
                let text = frame_text(&frame);
                for session in state.rooms.get(&room).into_iter().flatten() {
                    if let Some(connected) = state.sessions.get(session) {
                        let _ = connected.session.send_message(SessionMsg::Push(text.clone()));
                    }
                }
            }
            GatewayMsg::MembersChanged(members) => {
                let mut touched = Vec::new();
                for (room, nodes) in state.remote_presence.iter_mut() {
                    let before = nodes.len();
                    nodes.retain(|node, _| members.contains(node));
                    if nodes.len() != before {
                        touched.push(room.clone());
                    }
                }
                for room in touched {
                    state.presence(&room);
                }
                let rooms: Vec<RoomId> = state.rooms.keys().cloned().collect();
                for room in rooms {
                    state.share_presence(&room);
                }
            }
        }
        Ok(())
    }
}

/// Forwards the node's live events to the gateway until the stream closes.
pub fn forward(
    mut live: broadcast::Receiver<Arc<Envelope>>,
    gateway: ActorRef<GatewayMsg>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(envelope) => {
                    if gateway.send_message(GatewayMsg::Published(envelope)).is_err() {
                        break;
                    }
                }
                // Sessions notice the gap at the next message of the room and fill it from storage.
                Err(broadcast::error::RecvError::Lagged(missed)) => warn!(missed, "gateway lagged behind the log"),
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}
