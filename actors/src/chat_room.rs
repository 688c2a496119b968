//! The chat-room entity: membership and the room's gapless message sequence. Posting is
//! idempotent per sender by `clientMsgId`.
//!
//! The room is its sequence's single writer, so it decides the next post as soon as the last one
//! is in the store's open batch, without waiting for that batch's commit: posts that arrive
//! together share one commit. Answers still wait for durability. They go, in order, through the
//! room's answerer ([`answer_in_order`]): a post is answered, and handed to this node's sockets,
//! once its commit is through; a read is answered after the posts before it. A batch that fails
//! fails the posts in it. The next post then finds the stored version behind the room's, and
//! decides again on what was stored.

use crate::attempt::Attempt;
use crate::entity::{Ctx, Entity, EntityRef};
use crate::store::{self, chat, chat::RoomRecord, Committing, StoreError};
use crate::with_retries;
use bazaar_protocol::chat::{ChatMessage, Room};
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::{RoomId, UserId};
use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc};

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
    /// The answerer of this room's posts and reads, started with the first of them. It holds at
    /// most `chat_room_answers_waiting` answers; a room with that many waits (its mailbox fills,
    /// and its senders are told it is busy) until the oldest is answered.
    answers: Option<mpsc::Sender<Answer>>,
}

/// An answer of the room: given once its post (if it made one) and every post before it are
/// durable.
struct Answer {
    /// The post's commit, and its event for this node's sockets.
    post: Option<(Committing, Arc<Envelope>)>,
    /// Gives the answer, or the failure of the post's commit.
    give: Box<dyn FnOnce(Result<(), RoomError>) + Send>,
}

/// Gives a room's answers in the order it decided them.
async fn answer_in_order(mut answers: mpsc::Receiver<Answer>, live: broadcast::Sender<Arc<Envelope>>, room: RoomId) {
    while let Some(Answer { post, give }) = answers.recv().await {
        let outcome = match post {
            None => Ok(()),
            Some((committing, event)) => match committing.await {
                Ok(()) => {
                    // No subscriber is fine: no socket of this node is listening.
                    let _ = live.send(event);
                    Ok(())
                }
                Err(e) => {
                    tracing::warn!(room = %room, reason = %e, "a chat post's batch did not commit");
                    Err(RoomError::Unavailable)
                }
            },
        };
        give(outcome);
    }
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
        // The answerer stays: answers already queued go out before any decided after this.
        self.record = chat::load(&ctx.store, self.id.as_str()).await?;
        Ok(())
    }

    /// Queues an answer behind the ones before it.
    async fn answer(&mut self, ctx: &Ctx, answer: Answer) {
        let answers = self.answers.get_or_insert_with(|| {
            let (queue, answers) = mpsc::channel(ctx.settings.chat_room_answers_waiting.max(1));
            tokio::spawn(answer_in_order(answers, ctx.live.clone(), self.id.clone()));
            queue
        });
        if let Err(mpsc::error::SendError(answer)) = answers.send(answer).await {
            // The answerer is gone (it panicked): this answer is not known durable.
            self.answers = None;
            (answer.give)(Err(RoomError::Unavailable));
        }
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
        chat::insert(&mut tx, &room)?;
        store::append_events(
            &mut tx,
            &[Envelope::new(room.id.as_str(), 1, now, Event::ChatRoomOpened { room: room.clone() })],
        )?;
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
    ) -> Result<(Posted, Option<(Committing, Arc<Envelope>)>), Attempt<RoomError>> {
        let now = Utc::now();
        let message = self.next_message(from, text, now).map_err(Attempt::Refused)?;
        let version = self.record.as_ref().map_or(0, |r| r.version);
        let mut tx = ctx.store.begin().await?;
        // Read through the write connection: the earlier post may be in the open batch, and its
        // answer waits for that batch's commit like the first answer did.
        if let Some(earlier) = chat::find_by_client_id(&mut tx, self.id.as_str(), from.as_str(), client_msg_id).await? {
            return Ok((Posted { message: earlier, duplicate: true }, None));
        }
        chat::append(&mut tx, &message, client_msg_id, version)?;
        let posted = Arc::new(Envelope::new(
            self.id.as_str(),
            message.seq,
            now,
            Event::ChatMessagePosted { message: message.clone() },
        ));
        store::append_events(&mut tx, &[(*posted).clone()])?;
        let committing = ctx.store.release(tx).await?;
        if let Some(record) = self.record.as_mut() {
            record.last_seq = message.seq;
            record.version += 1;
        }
        Ok((Posted { message, duplicate: false }, Some((committing, posted))))
    }
}

impl Entity for RoomState {
    const KIND: &'static str = "room";
    type Msg = RoomMsg;

    async fn load(id: &str, ctx: &Ctx) -> Result<Self, StoreError> {
        Ok(Self { id: id.into(), record: chat::load(&ctx.store, id).await?, answers: None })
    }

    async fn handle(&mut self, msg: RoomMsg, ctx: &Ctx, _myself: &EntityRef<Self>) {
        match msg {
            RoomMsg::Open { buyer, seller, reply } => {
                let _ =
                    reply.send(with_retries!(self, ctx, RoomError::Unavailable, self.try_open(&buyer, &seller, ctx)));
            }
            RoomMsg::Get { viewer, reply } => {
                // After the posts before it: the sequence it reports is then stored.
                let view = self.visible_to(&viewer);
                let give = Box::new(move |durable: Result<(), RoomError>| {
                    let _ = reply.send(durable.and(view));
                });
                self.answer(ctx, Answer { post: None, give }).await;
            }
            RoomMsg::Post { from, text, client_msg_id, reply } => {
                let outcome =
                    with_retries!(self, ctx, RoomError::Unavailable, self.try_post(&from, &text, &client_msg_id, ctx));
                let (answer, post) = match outcome {
                    Ok((posted, post)) => (Ok(posted), post),
                    Err(e) => (Err(e), None),
                };
                let give = Box::new(move |durable: Result<(), RoomError>| {
                    let _ = reply.send(durable.and(answer));
                });
                self.answer(ctx, Answer { post, give }).await;
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
            answers: None,
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
        assert_eq!(
            RoomState { id: "r".into(), record: None, answers: None }.visible_to(&"x".into()),
            Err(RoomError::NotFound)
        );
    }

    /// Posts that arrive together share commits (the room does not wait for one before deciding
    /// the next), yet each is answered only once it is stored, in order, with a gapless sequence,
    /// and handed to this node's sockets after its commit; a resend is answered with the first.
    #[tokio::test]
    async fn a_burst_of_posts_is_answered_in_order_each_once_stored() {
        use crate::region::test_support::ctx;
        use crate::region::RegionRef;
        let (ctx, _db) = ctx(std::time::Duration::from_secs(60)).await;
        let mut live = ctx.live.subscribe();
        let store = ctx.store.clone();
        let rooms: RegionRef<RoomState> = RegionRef::spawn(ctx).await.unwrap();
        let (buyer, seller): (UserId, UserId) = ("buyer".into(), "seller".into());
        let id = RoomId::for_pair(&buyer, &seller);
        rooms.ask(id.as_str(), OpenRoom { buyer: buyer.clone(), seller: seller.clone() }).await.unwrap().unwrap();
        let posts = (0..40).map(|n| {
            let (rooms, id, from) =
                (rooms.clone(), id.clone(), if n % 2 == 0 { buyer.clone() } else { seller.clone() });
            let store = store.clone();
            tokio::spawn(async move {
                let post = PostMessage { from, text: format!("m{n}"), client_msg_id: format!("c{n}") };
                let posted = rooms.ask(id.as_str(), post).await.unwrap().unwrap();
                // Answered only once durable: the read pool, which sees only commits, has it.
                let stored =
                    chat::range(&store, id.as_str(), posted.message.seq - 1, posted.message.seq, 1).await.unwrap();
                assert_eq!(stored.len(), 1, "message {} answered before it was stored", posted.message.seq);
                posted.message.seq
            })
        });
        let mut seqs: Vec<i64> = futures_util::future::join_all(posts).await.into_iter().map(|s| s.unwrap()).collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=40).collect::<Vec<i64>>());
        let resend = PostMessage { from: buyer.clone(), text: "m0".into(), client_msg_id: "c0".into() };
        let again = rooms.ask(id.as_str(), resend).await.unwrap().unwrap();
        assert!(again.duplicate);
        let view = rooms.ask(id.as_str(), GetRoom { viewer: buyer }).await.unwrap().unwrap();
        assert_eq!(view.last_seq, 40);
        // Handed to the sockets in sequence order (the room's opening event is not).
        let mut handed = Vec::new();
        while let Ok(event) = live.try_recv() {
            if let Event::ChatMessagePosted { message } = &event.event {
                handed.push(message.seq);
            }
        }
        assert_eq!(handed, (1..=40).collect::<Vec<i64>>());
    }
}
