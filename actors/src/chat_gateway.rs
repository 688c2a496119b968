//! The per-node chat gateway: knows which WebSocket sessions of this node joined which room and
//! belong to which user, and pushes published events to them — each chat message is serialised
//! once and handed to every joined session; order changes go to the buyer's and seller's sockets;
//! presence is recomputed whenever someone joins or leaves.

use crate::session::SessionMsg;
use bazaar_protocol::chat::ServerFrame;
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::orders::Order;
use bazaar_protocol::{RoomId, UserId};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::warn;

/// Messages the gateway accepts. Node-local for now; the remotable cross-node form comes with the
/// cluster.
pub enum GatewayMsg {
    /// A session opened for `user`.
    Connect { user: UserId, session: ActorRef<SessionMsg> },
    /// A session closed.
    Disconnect { session: ActorId },
    /// A session joined a room; replies once it receives the room's messages.
    Join { room: RoomId, session: ActorId, reply: RpcReplyPort<()> },
    /// Tells the room's sessions who is online; sent after a join's replay, so the joining
    /// session sees `joined` (and its replay) before the presence frame.
    Announce { room: RoomId },
    /// A session left a room.
    Leave { room: RoomId, session: ActorId },
    /// A frame (typing, read) for the room's other sessions.
    Relay { room: RoomId, from: ActorId, frame: ServerFrame },
    /// An event published on the log.
    Published(Arc<Envelope>),
    /// How many sessions are connected.
    Connections(RpcReplyPort<usize>),
}

struct Connected {
    user: UserId,
    session: ActorRef<SessionMsg>,
    rooms: HashSet<RoomId>,
}

/// Who is connected and where.
#[derive(Default)]
pub struct GatewayState {
    sessions: HashMap<ActorId, Connected>,
    rooms: HashMap<RoomId, HashSet<ActorId>>,
    users: HashMap<UserId, HashSet<ActorId>>,
}

fn frame_text(frame: &ServerFrame) -> Arc<str> {
    Arc::from(serde_json::to_string(frame).expect("server frames always serialise"))
}

impl GatewayState {
    fn presence(&self, room: &RoomId) {
        let Some(members) = self.rooms.get(room) else { return };
        let online: BTreeSet<&UserId> = members.iter().filter_map(|s| self.sessions.get(s)).map(|c| &c.user).collect();
        let text =
            frame_text(&ServerFrame::Presence { room: room.clone(), online: online.into_iter().cloned().collect() });
        for session in members {
            if let Some(connected) = self.sessions.get(session) {
                let _ = connected.session.send_message(SessionMsg::Push(text.clone()));
            }
        }
    }

    fn leave(&mut self, room: &RoomId, session: &ActorId) {
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
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<GatewayMsg>, _: ()) -> Result<GatewayState, ActorProcessingErr> {
        Ok(GatewayState::default())
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
            GatewayMsg::Announce { room } => state.presence(&room),
            GatewayMsg::Leave { room, session } => {
                if let Some(connected) = state.sessions.get_mut(&session) {
                    if connected.rooms.remove(&room) {
                        state.leave(&room, &session);
                        state.presence(&room);
                    }
                }
            }
            GatewayMsg::Relay { room, from, frame } => {
                let text = frame_text(&frame);
                for session in state.rooms.get(&room).into_iter().flatten().filter(|s| **s != from) {
                    if let Some(connected) = state.sessions.get(session) {
                        let _ = connected.session.send_message(SessionMsg::Push(text.clone()));
                    }
                }
            }
            GatewayMsg::Published(envelope) => state.published(&envelope),
            GatewayMsg::Connections(reply) => {
                let _ = reply.send(state.sessions.len());
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
