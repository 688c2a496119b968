//! A WebSocket session: the state of one connection, transport-agnostic. The front end feeds it
//! parsed client frames; it writes server frames into a bounded queue that the front end drains
//! into the socket. A client too slow to drain its queue is disconnected rather than buffered
//! without limit.
//!
//! A session is not an actor of its own: the socket's task (node/src/http/ws.rs) runs it, one
//! message of its [`SessionRef`] mailbox at a time, as an actor would. A ractor actor costs about
//! 10.6 KiB at rest (its task and four channels), more than the rest of an idle socket together;
//! see docs/decisions.md ("Small sockets").
//!
//! A join's replay (and a gap fill) is read from storage a page at a time and each message waits
//! for room in the queue (up to a timeout), so a backlog of any length arrives complete, in order,
//! in bounded memory. Live messages that arrive meanwhile wait in the session's mailbox and are
//! delivered after it, each once: `delivered` skips what the replay already sent.

use crate::chat_room::{GetRoom, PostMessage, RoomError, RoomState};
use crate::read_side::ReadSide;
use crate::region::RegionRef;
use bazaar_protocol::chat::{ChatMessage, ClientFrame, ServerFrame};
use bazaar_protocol::values::{parse_chat_text, refuse_nul};
use bazaar_protocol::{RoomId, UserId};
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::debug;

/// WebSocket close codes of the API.
pub mod close {
    /// The token expired.
    pub const EXPIRED: u16 = 4401;
    /// Joined a room the user is not a member of.
    pub const NOT_A_MEMBER: u16 = 4403;
    /// Sent frames faster than allowed.
    pub const FLOODING: u16 = 4429;
}

/// What the session asks the socket writer to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Send a text frame.
    Text(Arc<str>),
    /// Close with a code and a reason.
    Close(u16, &'static str),
}

/// Messages a session accepts. Local-only.
pub enum SessionMsg {
    /// A frame from the client. Boxed: the mailbox allocates room for 32 messages at once, sized
    /// for the largest variant, in every idle session.
    Frame(Box<ClientFrame>),
    /// A message of a room; `text` is its frame, serialised once for every recipient.
    ChatMessage { message: Arc<ChatMessage>, text: Arc<str> },
    /// A ready frame to forward as is.
    Push(Arc<str>),
    /// The access token expired.
    Expired,
}

/// Identifies a session on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(u64);

/// The session's mailbox was closed: its socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session has ended")]
pub struct SessionGone;

/// How the hub and the socket reach a session: its mailbox, which the socket's task reads.
#[derive(Debug, Clone)]
pub struct SessionRef {
    id: SessionId,
    mailbox: mpsc::UnboundedSender<SessionMsg>,
}

impl SessionRef {
    /// A new session's address and the mailbox it reads.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<SessionMsg>) {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (mailbox, received) = mpsc::unbounded_channel();
        (Self { id: SessionId(NEXT.fetch_add(1, Ordering::Relaxed)), mailbox }, received)
    }

    /// The session's id.
    pub fn get_id(&self) -> SessionId {
        self.id
    }

    /// Puts a message in the session's mailbox; `Err` once the session has ended.
    pub fn send_message(&self, msg: SessionMsg) -> Result<(), SessionGone> {
        self.mailbox.send(msg).map_err(|_| SessionGone)
    }
}

/// What a session starts with.
pub struct SessionArgs {
    pub user: UserId,
    pub out: mpsc::Sender<Outbound>,
    pub hub: Arc<dyn Hub>,
    pub rooms: RegionRef<RoomState>,
    pub reads: ReadSide,
    /// How replays are paged and paced.
    pub replay: ReplaySettings,
}

/// How a session reads and sends a backlog.
#[derive(Debug, Clone, Copy)]
pub struct ReplaySettings {
    /// Messages read from storage per page.
    pub page: u32,
    /// How long one replayed message may wait for room in the send queue; then the client is
    /// disconnected as too slow.
    pub send_timeout: Duration,
}

/// A session: who it is, its address, and how far each joined room was delivered.
pub struct Session {
    args: SessionArgs,
    me: SessionRef,
    delivered: HashMap<RoomId, i64>,
    /// A replay left the client's queue full: live messages wait for room as replayed ones do
    /// (up to the replay's timeout) until the client has drained half of it. Without this the
    /// first message posted during a long replay found the queue full of the replay's last page
    /// and the session ended as a slow reader's would, though the client was reading.
    catching_up: bool,
}

/// An `error` frame, serialised.
pub fn error_frame(code: &str, message: impl Into<String>) -> Arc<str> {
    frame_text(&ServerFrame::Error { code: code.to_owned(), message: message.into() })
}

/// A server frame serialised once, to be shared by every socket it goes to.
pub fn frame_text(frame: &ServerFrame) -> Arc<str> {
    Arc::from(serde_json::to_string(frame).expect("server frames always serialise"))
}

/// What a session asks of the node's socket hub ([`crate::socket_hub`], which implements it): the
/// session knows the hub only through this, so the two files do not import each other.
pub trait Hub: Send + Sync + 'static {
    /// Registers session `session` of `user`; `Err` when the hub is gone.
    fn connect(&self, user: UserId, session: SessionRef) -> Result<(), SessionGone>;
    /// The session closed.
    fn disconnect(&self, session: SessionId);
    /// Subscribes the session to a room; resolves once it receives the room's messages.
    fn join(&self, room: RoomId, session: SessionId) -> BoxFuture<'static, ()>;
    /// Tells the room's sessions who is online (after a join's replay).
    fn announce(&self, room: RoomId);
    /// The session left a room.
    fn leave(&self, room: RoomId, session: SessionId);
    /// A frame (typing, read) for the room's other sessions.
    fn relay(&self, room: RoomId, from: SessionId, frame: ServerFrame);
}

impl Session {
    /// Registers a session with the hub under `me`; the caller then feeds it what arrives in
    /// `me`'s mailbox with [`Session::handle`]. `Err` when the hub is gone.
    pub fn start(args: SessionArgs, me: SessionRef) -> Result<Self, SessionGone> {
        args.hub.connect(args.user.clone(), me.clone())?;
        Ok(Self { args, me, delivered: HashMap::new(), catching_up: false })
    }

    /// Handles one message; false when the session is over (the client is gone, too slow, or
    /// must be closed: the close frame is queued already).
    pub async fn handle(&mut self, msg: SessionMsg) -> bool {
        let user = self.args.user.clone();
        let alive = match msg {
            SessionMsg::Frame(frame) => match *frame {
                ClientFrame::Join { room, since } => self.join(room, since).await,
                ClientFrame::Send { room, text, client_msg_id } => self.post(room, text, client_msg_id).await,
                ClientFrame::Leave { room } => {
                    if self.delivered.remove(&room).is_some() {
                        self.args.hub.leave(room, self.me.get_id());
                    }
                    true
                }
                ClientFrame::Typing { room } => self.relay(room.clone(), ServerFrame::Typing { room, from: user }),
                ClientFrame::Read { room, seq } => {
                    self.relay(room.clone(), ServerFrame::Read { room, from: user, seq })
                }
            },
            SessionMsg::ChatMessage { message, text } => self.deliver(&message, text).await,
            SessionMsg::Push(text) => self.send(text),
            SessionMsg::Expired => {
                self.close(close::EXPIRED, "token expired");
                false
            }
        };
        if !alive {
            debug!(user = %self.args.user, "session ends");
        }
        alive
    }

    /// Queues a frame; false when the client is gone or too slow (the session then stops).
    fn send(&self, text: Arc<str>) -> bool {
        self.args.out.try_send(Outbound::Text(text)).is_ok()
    }

    /// Queues a frame, waiting for room (up to the replay timeout); false when the client is gone
    /// or drains nothing for that long.
    async fn send_waiting(&self, text: Arc<str>) -> bool {
        self.args.out.send_timeout(Outbound::Text(text), self.args.replay.send_timeout).await.is_ok()
    }

    /// Sends the room's messages with `after < seq <= upto`, page by page, in order. `Ok(false)`:
    /// the client is gone; `Err`: storage failed (what was sent stays sent).
    async fn replay(&mut self, room: &RoomId, mut after: i64, upto: i64) -> Result<bool, ()> {
        let page = self.args.replay.page.max(1);
        self.catching_up |= after < upto;
        while after < upto {
            let messages = self.args.reads.messages_between(room.as_str(), after, upto, page).await.map_err(|_| ())?;
            let Some(last) = messages.last().map(|m| m.seq) else { break };
            for message in messages {
                if !self.send_waiting(frame_text(&ServerFrame::Message(message))).await {
                    return Ok(false);
                }
            }
            after = last;
        }
        Ok(true)
    }

    fn close(&self, code: u16, reason: &'static str) {
        let _ = self.args.out.try_send(Outbound::Close(code, reason));
    }

    async fn join(&mut self, room: RoomId, since: Option<i64>) -> bool {
        let user = self.args.user.clone();
        // Subscribe first, then read where the room stands: a message committed after the read
        // arrives live, one committed before is in the replay, none falls between.
        self.args.hub.join(room.clone(), self.me.get_id()).await;
        let view = match self.args.rooms.ask(room.as_str(), GetRoom { viewer: user }).await {
            Ok(Ok(view)) => view,
            Ok(Err(RoomError::Forbidden | RoomError::NotFound)) => {
                self.send(error_frame("forbidden", "not a member of this room"));
                self.close(close::NOT_A_MEMBER, "not a member");
                return false;
            }
            Ok(Err(RoomError::Unavailable)) | Err(_) => {
                self.args.hub.leave(room, self.me.get_id());
                return self.send(error_frame("unavailable", "chat is unavailable, try again"));
            }
        };
        if !self.send(frame_text(&ServerFrame::Joined { room: room.clone(), last_seq: view.last_seq })) {
            return false;
        }
        if let Some(since) = since {
            match self.replay(&room, since.max(0), view.last_seq).await {
                Ok(true) => {}
                Ok(false) => return false,
                Err(()) => return self.send(error_frame("unavailable", "history is unavailable, join again")),
            }
        }
        self.delivered.insert(room.clone(), view.last_seq);
        self.args.hub.announce(room);
        true
    }

    async fn post(&mut self, room: RoomId, text: String, client_msg_id: String) -> bool {
        if let Err(invalid) = parse_chat_text(&text) {
            return self.send(error_frame("invalid", invalid.to_string()));
        }
        if client_msg_id.is_empty() || client_msg_id.chars().count() > 128 {
            return self.send(error_frame("invalid", "clientMsgId: must be 1 to 128 characters"));
        }
        if let Err(invalid) = refuse_nul("clientMsgId", &client_msg_id) {
            return self.send(error_frame("invalid", invalid.to_string()));
        }
        let post = PostMessage { from: self.args.user.clone(), text, client_msg_id: client_msg_id.clone() };
        let answer = self.args.rooms.ask(room.as_str(), post).await;
        match answer {
            Ok(Ok(posted)) => self.send(frame_text(&ServerFrame::Ack { client_msg_id, seq: posted.message.seq })),
            Ok(Err(RoomError::Forbidden)) => self.send(error_frame("forbidden", "not a member of this room")),
            Ok(Err(RoomError::NotFound)) => self.send(error_frame("not_found", "no such room")),
            Ok(Err(RoomError::Unavailable)) | Err(_) => {
                self.send(error_frame("unavailable", "message not stored, send it again"))
            }
        }
    }

    async fn deliver(&mut self, message: &ChatMessage, text: Arc<str>) -> bool {
        let Some(&delivered) = self.delivered.get(&message.room) else { return true };
        if message.seq <= delivered {
            return true;
        }
        if message.seq > delivered + 1 {
            // A gap (the live stream lagged): fill it from storage so the client sees every seq.
            if let Ok(false) = self.replay(&message.room, delivered, message.seq - 1).await {
                return false;
            }
        }
        self.delivered.insert(message.room.clone(), message.seq);
        let out = &self.args.out;
        if self.catching_up && out.capacity() * 2 >= out.max_capacity() {
            self.catching_up = false;
        }
        if self.catching_up {
            self.send_waiting(text).await
        } else {
            self.send(text)
        }
    }

    fn relay(&self, room: RoomId, frame: ServerFrame) -> bool {
        if !self.delivered.contains_key(&room) {
            return self.send(error_frame("forbidden", "join the room first"));
        }
        self.args.hub.relay(room, self.me.get_id(), frame);
        true
    }
}

impl Drop for Session {
    // However the socket ends (closed, dropped mid-message, its task aborted), the hub
    // forgets the session.
    fn drop(&mut self) {
        self.args.hub.disconnect(self.me.get_id());
    }
}
