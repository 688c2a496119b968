//! The per-node socket hub: knows which WebSocket sessions of this node joined which room and
//! belong to which user, and pushes published events to them — each chat message is serialised
//! once and handed to every joined session; order changes go to the buyer's and seller's sockets;
//! presence is recomputed whenever someone joins or leaves.
//!
//! Events reach the hub by up to two paths: the relay's direct broadcast (on this node, or
//! from a peer through the router) and, on a Kafka cluster, this node's own feed from the log
//! ([`crate::socket_feed`]), which keeps delivering while the cluster's sessions are down. Each
//! event is pushed once: a chat message only when its seq is above the last one pushed to the
//! room here, an order change only the first time its event id is seen. A seq that skips ahead
//! is pushed at once; each session fills the gap from storage (see [`crate::session`]), and the
//! late copy of the missing message is then dropped here.

use crate::cluster::router::{PresenceUpdate, RoomFrame, RouterMsg};
use crate::cluster::ClusterView;
use crate::session::{frame_text, Hub, SessionGone, SessionId, SessionMsg, SessionRef};
use bazaar_protocol::chat::ServerFrame;
use bazaar_protocol::events::{topics, Envelope, Event};
use bazaar_protocol::orders::Order;
use bazaar_protocol::{EventId, RoomId, UserId};
use futures_util::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;
use tracing::warn;

/// Messages the hub accepts. Local-only: other nodes reach it through their router.
#[derive(ractor_cluster::RactorMessage)]
pub enum HubMsg {
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
    /// An event published on the log, from the relay here or a peer's (the fast path).
    Published(Arc<Envelope>),
    /// Events this node's feed read from the log; replies once they are handed to the sessions,
    /// so the feed reads no faster than the hub pushes.
    Feed { events: Vec<Arc<Envelope>>, reply: RpcReplyPort<()> },
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

/// The topics whose events the hub pushes to sockets (chat messages; order changes, which
/// `PaymentRequested` on the payments topic is one of).
pub const PUSHED_TOPICS: [&str; 3] = [topics::CHAT, topics::ORDERS, topics::PAYMENTS];

/// The event ids of the last `capacity` order pushes, to drop the second copy of one.
struct RecentEvents {
    capacity: usize,
    order: VecDeque<EventId>,
    seen: HashSet<EventId>,
}

impl RecentEvents {
    fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), order: VecDeque::new(), seen: HashSet::new() }
    }

    /// True the first time `id` is offered (within the window); the oldest id leaves when full.
    fn first_time(&mut self, id: &EventId) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back(id.clone());
        self.seen.insert(id.clone());
        true
    }
}

/// What the hub starts with.
pub struct HubArgs {
    /// The cluster as this node sees it, when in one.
    pub view: Option<Arc<ClusterView>>,
    /// Order pushes remembered by event id to drop a second copy; a copy arriving after this
    /// many later pushes would be pushed again.
    pub dedup_window: usize,
}

/// Who is connected and where.
pub struct HubState {
    sessions: HashMap<SessionId, Connected>,
    rooms: HashMap<RoomId, HashSet<SessionId>>,
    /// The highest seq pushed to each room that has sessions here (forgotten when the last one
    /// leaves: a session that joins later starts from what the room reports to it).
    pushed_seq: HashMap<RoomId, i64>,
    /// Order pushes already made, by event id.
    pushed_orders: RecentEvents,
    users: HashMap<UserId, HashSet<SessionId>>,
    /// Online users of rooms on other nodes, by room and node.
    remote_presence: HashMap<RoomId, HashMap<String, Vec<UserId>>>,
    view: Option<Arc<ClusterView>>,
}

impl HubState {
    fn new(args: HubArgs) -> Self {
        Self {
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            pushed_seq: HashMap::new(),
            pushed_orders: RecentEvents::new(args.dedup_window),
            users: HashMap::new(),
            remote_presence: HashMap::new(),
            view: args.view,
        }
    }

    /// Whether message `seq` of `room` is to be pushed: the room has sessions here and no message
    /// at or above `seq` was pushed to them yet. A seq past the next one is pushed all the same
    /// (the sessions fill the gap from storage), and then a late lower one is not.
    fn admit_message(&mut self, room: &RoomId, seq: i64) -> bool {
        if !self.rooms.contains_key(room) {
            return false;
        }
        match self.pushed_seq.get_mut(room) {
            Some(last) if seq <= *last => false,
            Some(last) => {
                *last = seq;
                true
            }
            None => {
                self.pushed_seq.insert(room.clone(), seq);
                true
            }
        }
    }

    /// Whether the order change of event `id` is to be pushed: its buyer or seller has a socket
    /// here and the event was not pushed yet.
    fn admit_order(&mut self, id: &EventId, order: &Order) -> bool {
        self.watched(order) && self.pushed_orders.first_time(id)
    }

    /// Whether the order's buyer or seller has a socket here.
    fn watched(&self, order: &Order) -> bool {
        self.users.contains_key(&order.buyer_id) || self.users.contains_key(&order.seller_id)
    }

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
                self.pushed_seq.remove(room);
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

    fn published(&mut self, envelope: &Envelope) {
        match &envelope.event {
            Event::ChatMessagePosted { message } => {
                if !self.rooms.contains_key(&message.room) {
                    return;
                }
                if !self.admit_message(&message.room, message.seq) {
                    metrics::counter!("bazaar_chat_duplicates_dropped_total").increment(1);
                    return;
                }
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
            | Event::OrderPaid { order }
            | Event::OrderRefunded { order } => {
                if self.admit_order(&envelope.id, order) {
                    self.push_order(order);
                }
            }
            // A checkout's payment moves each of its orders.
            Event::PaymentRequested { order, more_orders, .. } => {
                let watched: Vec<&Order> =
                    std::iter::once(order).chain(more_orders).filter(|o| self.watched(o)).collect();
                if !watched.is_empty() && self.pushed_orders.first_time(&envelope.id) {
                    for order in watched {
                        self.push_order(order);
                    }
                }
            }
            // Not shown on sockets.
            Event::UserRegistered { .. }
            | Event::ProductListed { .. }
            | Event::StockChanged(_)
            | Event::PaymentApproved { .. }
            | Event::PaymentDeclined { .. }
            | Event::PaymentRefunded { .. }
            | Event::ChatRoomOpened { .. } => {}
        }
    }
}

/// Sessions reach the hub through its mailbox.
impl Hub for ActorRef<HubMsg> {
    fn connect(&self, user: UserId, session: SessionRef) -> Result<(), SessionGone> {
        self.send_message(HubMsg::Connect { user, session }).map_err(|_| SessionGone)
    }

    fn disconnect(&self, session: SessionId) {
        let _ = self.send_message(HubMsg::Disconnect { session });
    }

    fn join(&self, room: RoomId, session: SessionId) -> BoxFuture<'static, ()> {
        let hub = self.clone();
        Box::pin(async move {
            let _ = ractor::call!(hub, |reply| HubMsg::Join { room, session, reply });
        })
    }

    fn announce(&self, room: RoomId) {
        let _ = self.send_message(HubMsg::Announce { room });
    }

    fn leave(&self, room: RoomId, session: SessionId) {
        let _ = self.send_message(HubMsg::Leave { room, session });
    }

    fn relay(&self, room: RoomId, from: SessionId, frame: ServerFrame) {
        let _ = self.send_message(HubMsg::Relay { room, from, frame });
    }
}

/// The hub actor.
pub struct SocketHub;

impl Actor for SocketHub {
    type Msg = HubMsg;
    type State = HubState;
    type Arguments = HubArgs;

    async fn pre_start(&self, _myself: ActorRef<HubMsg>, args: HubArgs) -> Result<HubState, ActorProcessingErr> {
        Ok(HubState::new(args))
    }

    async fn handle(
        &self,
        _myself: ActorRef<HubMsg>,
        msg: HubMsg,
        state: &mut HubState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HubMsg::Connect { user, session } => {
                state.users.entry(user.clone()).or_default().insert(session.get_id());
                state.sessions.insert(session.get_id(), Connected { user, session, rooms: HashSet::new() });
                metrics::gauge!("bazaar_ws_connections").set(state.sessions.len() as f64);
            }
            HubMsg::Disconnect { session } => {
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
            HubMsg::Join { room, session, reply } => {
                if let Some(connected) = state.sessions.get_mut(&session) {
                    connected.rooms.insert(room.clone());
                    state.rooms.entry(room.clone()).or_default().insert(session);
                }
                let _ = reply.send(());
            }
            HubMsg::Announce { room } => {
                state.presence(&room);
                state.share_presence(&room);
            }
            HubMsg::Leave { room, session } => {
                if let Some(connected) = state.sessions.get_mut(&session) {
                    if connected.rooms.remove(&room) {
                        state.leave(&room, &session);
                        state.presence(&room);
                        state.share_presence(&room);
                    }
                }
            }
            HubMsg::Relay { room, from, frame } => {
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
            HubMsg::Published(envelope) => state.published(&envelope),
            HubMsg::Feed { events, reply } => {
                for envelope in &events {
                    state.published(envelope);
                }
                let _ = reply.send(());
            }
            HubMsg::RemotePresence(update) => {
                let nodes = state.remote_presence.entry(update.room.clone()).or_default();
                if update.online.is_empty() {
                    nodes.remove(&update.node);
                } else {
                    nodes.insert(update.node.clone(), update.online);
                }
                state.presence(&update.room);
            }
            HubMsg::RemoteRelay(RoomFrame { room, frame }) => {
                let text = frame_text(&frame);
                for session in state.rooms.get(&room).into_iter().flatten() {
                    if let Some(connected) = state.sessions.get(session) {
                        let _ = connected.session.send_message(SessionMsg::Push(text.clone()));
                    }
                }
            }
            HubMsg::MembersChanged(members) => {
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

/// Forwards the node's live events to the hub until the stream closes.
pub fn forward(mut live: broadcast::Receiver<Arc<Envelope>>, hub: ActorRef<HubMsg>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match live.recv().await {
                Ok(envelope) => {
                    if hub.send_message(HubMsg::Published(envelope)).is_err() {
                        break;
                    }
                }
                // Sessions notice the gap at the next message of the room and fill it from storage.
                Err(broadcast::error::RecvError::Lagged(missed)) => warn!(missed, "socket hub lagged behind the log"),
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_room(room: &RoomId, dedup_window: usize) -> HubState {
        let mut state = HubState::new(HubArgs { view: None, dedup_window });
        let (session, _mailbox) = SessionRef::new();
        state.rooms.entry(room.clone()).or_default().insert(session.get_id());
        state
    }

    #[test]
    fn each_seq_of_a_room_is_pushed_once_whichever_path_brings_it_first() {
        let room = RoomId::from("room-1");
        let mut state = state_with_room(&room, 16);
        // The fast path brings 1 and 2, the feed the same two a moment later.
        let arrivals = [(1, true), (2, true), (1, false), (2, false), (3, true), (3, false)];
        for (seq, pushed) in arrivals {
            assert_eq!(state.admit_message(&room, seq), pushed, "seq {seq}");
        }
        // A room without sessions here pushes nothing, and remembers nothing.
        let elsewhere = RoomId::from("room-2");
        assert!(!state.admit_message(&elsewhere, 1));
        assert!(!state.pushed_seq.contains_key(&elsewhere));
    }

    #[test]
    fn a_seq_that_skips_ahead_is_pushed_at_once_and_the_late_one_is_dropped() {
        let room = RoomId::from("room-1");
        let mut state = state_with_room(&room, 16);
        assert!(state.admit_message(&room, 4));
        // 5 went missing on one path: 6 is pushed (each session reads 5 from storage first).
        assert!(state.admit_message(&room, 6), "a gap never holds back the messages after it");
        assert!(!state.admit_message(&room, 5), "the late copy of 5 would reach the sessions twice");
        assert!(state.admit_message(&room, 7));
    }

    #[test]
    fn a_room_whose_last_session_left_starts_afresh() {
        let room = RoomId::from("room-1");
        let mut state = state_with_room(&room, 16);
        assert!(state.admit_message(&room, 9));
        let members: Vec<SessionId> = state.rooms[&room].iter().copied().collect();
        for session in members {
            state.leave(&room, &session);
        }
        assert!(state.pushed_seq.is_empty(), "nothing is kept for a room without sessions");
        let (session, _mailbox) = SessionRef::new();
        state.rooms.entry(room.clone()).or_default().insert(session.get_id());
        // A session joining now skips by itself what it already got from its replay.
        assert!(state.admit_message(&room, 3));
    }

    #[test]
    fn an_order_event_is_pushed_once_within_the_window_and_the_window_is_bounded() {
        let mut recent = RecentEvents::new(3);
        let ids: Vec<EventId> = (0..5).map(|_| EventId::generate()).collect();
        assert!(recent.first_time(&ids[0]));
        assert!(!recent.first_time(&ids[0]), "the second copy of an event is dropped");
        for id in &ids[1..4] {
            assert!(recent.first_time(id));
        }
        assert_eq!((recent.order.len(), recent.seen.len()), (3, 3), "at most the window is kept");
        assert!(recent.first_time(&ids[0]), "an id older than the window is forgotten");
        assert!(!recent.first_time(&ids[3]));
    }
}
