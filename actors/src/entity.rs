//! What an entity kind is: its state loaded from storage ([`Entity`]), the requests it answers
//! ([`Request`], declared with [`request!`](crate::request) and listed for other nodes with
//! [`remote_requests!`](crate::remote_requests)), what every entity may use ([`Ctx`]) and how it
//! messages itself later ([`EntityRef`]). The machinery that runs entities is
//! [`crate::region`]; this file knows nothing of it, so the kinds depend on this file only.

use crate::cluster::ClusterView;
use crate::payment_gateway::PaymentGateway;
use crate::store::{Store, StoreError};
use bazaar_protocol::events::Envelope;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ractor::RpcReplyPort;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// What every entity may use: storage, the payment gateway and the timing settings.
#[derive(Clone)]
pub struct Ctx {
    /// The SQL truth.
    pub store: Store,
    /// Where payments are charged.
    pub gateway: Arc<dyn PaymentGateway>,
    /// Timeouts and limits.
    pub settings: Arc<EntitySettings>,
    /// The cluster as this node sees it; `None` when the node runs alone.
    pub cluster: Option<Arc<ClusterView>>,
    /// This node's live subscribers (its sockets), which the relay feeds from the log: an entity
    /// whose events this node's sockets should see at once (a chat room's posts) hands them over
    /// itself once they are committed, without waiting for the relay's transaction. The
    /// subscribers take each event once, whichever path brings it first.
    pub live: broadcast::Sender<Arc<Envelope>>,
}

/// Timing settings for entities and regions.
#[derive(Debug, Clone)]
pub struct EntitySettings {
    /// How long a payment waits for the gateway's charge (and then for its lookup) before it asks
    /// what the gateway recorded (nothing charged: declined with `gateway_timeout`).
    pub gateway_timeout: Duration,
    /// How long a caller waits for an entity's reply.
    pub call_timeout: Duration,
    /// How long an entity may stay idle before it hibernates: its task and mailbox go, its state
    /// stays in the region, and its next message wakes it without reading storage.
    pub hibernate_after: Duration,
    /// How long an entity may stay idle (active or hibernated) before it leaves memory.
    pub passivate_after: Duration,
    /// The largest request sent to another node; larger ones are refused here, because a frame
    /// over the peer's limit would drop the whole session to that peer.
    pub max_remote_bytes: usize,
    /// How long a placed order holds its stock unpaid: an order still ORDERED after it is
    /// cancelled by the system and its stock released.
    pub reservation_hold: Duration,
    /// The most changes an order's timeline shows (`order_timeline_max_events`).
    pub order_timeline_max_events: usize,
    /// The most products a buyer's cart holds (`cart_max_items`).
    pub cart_max_items: usize,
    /// How long a checkout may take to reserve its lines (`checkout_timeout_ms`): past it the
    /// request answers 503, and a checkout still reserving (its request cut off) is given up by
    /// the sweep, its lines released.
    pub checkout_timeout: Duration,
    /// The most answers a chat room holds waiting for their posts' commit
    /// (`chat_room_answers_waiting`).
    pub chat_room_answers_waiting: usize,
}

/// One kind of entity: how to load it and how it handles its messages.
pub trait Entity: Sized + Send + Sync + 'static {
    /// The kind's name in logs, metrics and actor names (`order`).
    const KIND: &'static str;
    /// The messages it accepts. Local-only: entities never cross nodes.
    type Msg: Send + 'static;

    /// Loads the entity's state (possibly "does not exist yet").
    fn load(id: &str, ctx: &Ctx) -> impl Future<Output = Result<Self, StoreError>> + Send;

    /// Reads the stored state again in place, keeping what lives only in memory (callers waiting
    /// on the entity): what an active entity does before a request when its node cannot be sure
    /// that no other node changed it ([`crate::cluster::ClusterView::trusted_epoch`]).
    fn refresh(&mut self, id: &str, ctx: &Ctx) -> impl Future<Output = Result<(), StoreError>> + Send {
        async move {
            *self = Self::load(id, ctx).await?;
            Ok(())
        }
    }

    /// Handles one message; replies through the ports inside it.
    fn handle(&mut self, msg: Self::Msg, ctx: &Ctx, myself: &EntityRef<Self>) -> impl Future<Output = ()> + Send;

    /// Whether `msg` must be handled even when the stored state could not be read again before
    /// it (storage unreachable), on the copy in memory: an answer from outside, such as the
    /// gateway's, that nobody would send again if it were refused.
    fn handle_unread(_msg: &Self::Msg) -> bool {
        false
    }

    /// Answers a message with "unavailable" when the entity could not be loaded.
    fn refuse(msg: Self::Msg);

    /// Whether the entity exists in storage. One that does not (a lookup of an unknown id) is
    /// evicted right after its message, so probing random ids cannot pile up idle actors.
    fn exists(&self) -> bool;
}

/// A request to an entity of kind `E`: plain, serialisable data (so it can travel to the node that
/// owns the entity) that becomes the entity's message once a reply port is attached.
pub trait Request<E: Entity>: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {
    /// The request's name on the wire, unique within its kind.
    const NAME: &'static str;
    /// Whether the request only reads. A read whose answer is too large to cross to this node
    /// is answered here from storage instead (writes stay with the owner).
    const READ_ONLY: bool = false;
    /// What the entity answers.
    type Reply: serde::Serialize + serde::de::DeserializeOwned + Send + 'static;

    /// The entity message carrying this request and the port for its reply.
    fn into_msg(self, reply: RpcReplyPort<Self::Reply>) -> E::Msg;
}

/// Declares a request type:
/// `request!(GetOrder, OrderState, "order.get", Result<Order, OrderError>, |self, reply| ...)`;
/// `request!(read GetOrder, ...)` marks it read-only.
#[macro_export]
macro_rules! request {
    (read $request:ty, $entity:ty, $name:literal, $reply:ty, |$this:ident, $port:ident| $msg:expr) => {
        $crate::request!(@impl true, $request, $entity, $name, $reply, |$this, $port| $msg);
    };
    ($request:ty, $entity:ty, $name:literal, $reply:ty, |$this:ident, $port:ident| $msg:expr) => {
        $crate::request!(@impl false, $request, $entity, $name, $reply, |$this, $port| $msg);
    };
    (@impl $read:literal, $request:ty, $entity:ty, $name:literal, $reply:ty, |$this:ident, $port:ident| $msg:expr) => {
        impl $crate::entity::Request<$entity> for $request {
            const NAME: &'static str = $name;
            const READ_ONLY: bool = $read;
            type Reply = $reply;

            fn into_msg($this, $port: ractor::RpcReplyPort<$reply>) -> <$entity as $crate::entity::Entity>::Msg {
                $msg
            }
        }
    };
}

/// A request decoded from the wire: the entity's message, and its answer serialised once given.
pub struct Decoded<E: Entity> {
    pub msg: E::Msg,
    pub answer: BoxFuture<'static, Option<String>>,
}

/// Decodes a request of type `Q` for kind `E`.
pub fn decode<E: Entity, Q: Request<E>>(payload: &str) -> Result<Decoded<E>, serde_json::Error> {
    let request: Q = serde_json::from_str(payload)?;
    let (tx, rx) = ractor::concurrency::oneshot::<Q::Reply>();
    let msg = request.into_msg(tx.into());
    let answer = async move { serde_json::to_string(&rx.await.ok()?).ok() }.boxed();
    Ok(Decoded { msg, answer })
}

/// An entity kind whose requests can arrive from other nodes.
pub trait Remote: Entity {
    /// Decodes the request named `name`; `None` when the kind has no such request.
    fn decode(name: &str, payload: &str) -> Option<Result<Decoded<Self>, serde_json::Error>>;
}

/// Lists the requests of a kind that other nodes may send: `remote_requests!(OrderState: GetOrder, ...)`.
#[macro_export]
macro_rules! remote_requests {
    ($entity:ty: $($request:ty),+ $(,)?) => {
        impl $crate::entity::Remote for $entity {
            fn decode(
                name: &str,
                payload: &str,
            ) -> Option<Result<$crate::entity::Decoded<Self>, serde_json::Error>> {
                $(
                    if name == <$request as $crate::entity::Request<$entity>>::NAME {
                        return Some($crate::entity::decode::<$entity, $request>(payload));
                    }
                )+
                None
            }
        }
    };
}

/// How a message reaches an entity through its region: `(id, message)`.
pub(crate) type Post<E> = Arc<dyn Fn(String, <E as Entity>::Msg) + Send + Sync>;

/// An entity's way to message itself later (the payment, when the gateway answers): through its
/// region, so the message reaches whichever activation holds the entity by then, woken from
/// hibernation if need be.
pub struct EntityRef<E: Entity> {
    id: String,
    post: Post<E>,
}

impl<E: Entity> Clone for EntityRef<E> {
    fn clone(&self) -> Self {
        Self { id: self.id.clone(), post: self.post.clone() }
    }
}

impl<E: Entity> EntityRef<E> {
    /// The handle of entity `id`, whose messages go through `post` (made by its region only).
    pub(crate) fn new(id: String, post: Post<E>) -> Self {
        Self { id, post }
    }

    /// The entity's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends the entity a message; lost only when the region is gone (the node is stopping).
    pub fn send(&self, msg: E::Msg) {
        (self.post)(self.id.clone(), msg);
    }
}
