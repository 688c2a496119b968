//! The chat-room entity: membership and the room's gapless message sequence. Posting is
//! idempotent per sender by `clientMsgId`.

use crate::attempt::Attempt;
use crate::entity::{Ctx, Entity, EntityRef};
use crate::store::{self, chat, chat::RoomRecord, StoreError};
use crate::with_retries;
use bazaar_protocol::chat::{ChatMessage, Room};
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::{RoomId, UserId};
use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

/// Why a room command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum RoomError {
    #[error("room not found")]
    NotFound,
    #[error("not a member of this room")]
    Forbidden,
    #[error("chat unavailable")]
    Unavailable,
}

type Reply<T> = RpcReplyPort<Result<T, RoomError>>;

/// A room and where its sequence stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomView {
    pub room: Room,
    pub last_seq: i64,
}

/// A posted message, and whether it was a resend of one posted before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posted {
    pub message: ChatMessage,
    pub duplicate: bool,
}

/// Messages a room entity accepts. Local-only: entities never cross nodes.
pub enum RoomMsg {
    /// Opens the room of this buyer and seller (the id derives from them); replies whether it was new.
    Open { buyer: UserId, seller: UserId, reply: Reply<(Room, bool)> },
    /// Reads the room for a member.
    Get { viewer: UserId, reply: Reply<RoomView> },
    /// Posts a validated text as `from`.
    Post { from: UserId, text: String, client_msg_id: String, reply: Reply<Posted> },
}

/// Opens the room of a buyer and a seller (its id derives from them); answers whether it was new.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRoom {
    pub buyer: UserId,
    pub seller: UserId,
}
crate::request!(OpenRoom, RoomState, "room.open", Result<(Room, bool), RoomError>, |self, reply| RoomMsg::Open { buyer: self.buyer, seller: self.seller, reply });

/// Reads the room for a member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetRoom {
    pub viewer: UserId,
}
crate::request!(read GetRoom, RoomState, "room.get", Result<RoomView, RoomError>, |self, reply| RoomMsg::Get { viewer: self.viewer, reply });

/// Posts a validated text as `from`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostMessage {
    pub from: UserId,
    pub text: String,
    pub client_msg_id: String,
}
crate::request!(PostMessage, RoomState, "room.post", Result<Posted, RoomError>, |self, reply| RoomMsg::Post { from: self.from, text: self.text, client_msg_id: self.client_msg_id, reply });

crate::remote_requests!(RoomState: OpenRoom, GetRoom, PostMessage);

/// The room entity's state.
pub struct RoomState {
    id: RoomId,
    record: Option<RoomRecord>,
}

impl RoomState {
    /// The room, if `viewer` is a member.
    pub fn visible_to(&self, viewer: &UserId) -> Result<RoomView, RoomError> {
        let record = self.record.as_ref().ok_or(RoomError::NotFound)?;
        if !chat::member_of(&record.room, viewer.as_str()) {
            return Err(RoomError::Forbidden);
        }
        Ok(RoomView { room: record.room.clone(), last_seq: record.last_seq })
    }

    /// Decides the next message of the room.
    pub fn next_message(&self, from: &UserId, text: &str, now: DateTime<Utc>) -> Result<ChatMessage, RoomError> {
        let view = self.visible_to(from)?;
        Ok(ChatMessage {
            room: self.id.clone(),
            seq: view.last_seq + 1,
            id: uuid::Uuid::now_v7().to_string(),
            from: from.clone(),
            text: text.to_owned(),
            sent_at: now,
        })
    }

    async fn reload(&mut self, ctx: &Ctx) -> Result<(), StoreError> {
        *self = Self::load(self.id.as_str(), ctx).await?;
        Ok(())
    }

    async fn try_open(
        &mut self,
        buyer: &UserId,
        seller: &UserId,
        ctx: &Ctx,
    ) -> Result<(Room, bool), Attempt<RoomError>> {
        if let Some(record) = &self.record {
            return Ok((record.room.clone(), false));
        }
        let now = Utc::now();
        let room =
            Room { id: self.id.clone(), members: [buyer.clone(), seller.clone()], created_at: now, last_message: None };
        let mut tx = ctx.store.begin().await?;
        chat::insert(&mut tx, &room).await?;
        store::append_events(
            &mut tx,
            &[Envelope::new(room.id.as_str(), 1, now, Event::ChatRoomOpened { room: room.clone() })],
        )
        .await?;
        ctx.store.commit(tx).await?;
        self.record = Some(RoomRecord { room: room.clone(), last_seq: 0, version: 1 });
        Ok((room, true))
    }

    async fn try_post(
        &mut self,
        from: &UserId,
        text: &str,
        client_msg_id: &str,
        ctx: &Ctx,
    ) -> Result<Posted, Attempt<RoomError>> {
        let now = Utc::now();
        let message = self.next_message(from, text, now).map_err(Attempt::Refused)?;
        let version = self.record.as_ref().map_or(0, |r| r.version);
        let mut tx = ctx.store.begin().await?;
        if let Some(earlier) = chat::find_by_client_id(&mut tx, self.id.as_str(), from.as_str(), client_msg_id).await? {
            return Ok(Posted { message: earlier, duplicate: true });
        }
        chat::append(&mut tx, &message, client_msg_id, version).await?;
        let posted =
            Envelope::new(self.id.as_str(), message.seq, now, Event::ChatMessagePosted { message: message.clone() });
        store::append_events(&mut tx, &[posted]).await?;
        ctx.store.commit(tx).await?;
        if let Some(record) = self.record.as_mut() {
            record.last_seq = message.seq;
            record.version += 1;
        }
        Ok(Posted { message, duplicate: false })
    }
}

impl Entity for RoomState {
    const KIND: &'static str = "room";
    type Msg = RoomMsg;

    async fn load(id: &str, ctx: &Ctx) -> Result<Self, StoreError> {
        Ok(Self { id: id.into(), record: chat::load(&ctx.store, id).await? })
    }

    async fn handle(&mut self, msg: RoomMsg, ctx: &Ctx, _myself: &EntityRef<Self>) {
        match msg {
            RoomMsg::Open { buyer, seller, reply } => {
                let _ =
                    reply.send(with_retries!(self, ctx, RoomError::Unavailable, self.try_open(&buyer, &seller, ctx)));
            }
            RoomMsg::Get { viewer, reply } => {
                let _ = reply.send(self.visible_to(&viewer));
            }
            RoomMsg::Post { from, text, client_msg_id, reply } => {
                let _ = reply.send(with_retries!(
                    self,
                    ctx,
                    RoomError::Unavailable,
                    self.try_post(&from, &text, &client_msg_id, ctx)
                ));
            }
        }
    }

    fn exists(&self) -> bool {
        self.record.is_some()
    }

    fn refuse(msg: RoomMsg) {
        match msg {
            RoomMsg::Open { reply, .. } => {
                let _ = reply.send(Err(RoomError::Unavailable));
            }
            RoomMsg::Get { reply, .. } => {
                let _ = reply.send(Err(RoomError::Unavailable));
            }
            RoomMsg::Post { reply, .. } => {
                let _ = reply.send(Err(RoomError::Unavailable));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(last_seq: i64) -> RoomState {
        RoomState {
            id: "r1".into(),
            record: Some(RoomRecord {
                room: Room {
                    id: "r1".into(),
                    members: ["buyer".into(), "seller".into()],
                    created_at: Utc::now(),
                    last_message: None,
                },
                last_seq,
                version: 1,
            }),
        }
    }

    #[test]
    fn messages_continue_the_sequence() {
        assert_eq!(room(0).next_message(&"buyer".into(), "hi", Utc::now()).unwrap().seq, 1);
        assert_eq!(room(41).next_message(&"seller".into(), "hi", Utc::now()).unwrap().seq, 42);
    }

    #[test]
    fn outsiders_cannot_post_or_read() {
        assert_eq!(room(0).next_message(&"x".into(), "hi", Utc::now()), Err(RoomError::Forbidden));
        assert_eq!(RoomState { id: "r".into(), record: None }.visible_to(&"x".into()), Err(RoomError::NotFound));
    }
}
