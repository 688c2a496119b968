//! The entity machinery every kind shares: [`EntityActor`] wraps one entity (activated lazily from
//! storage on its first message), and [`Region`] owns the entities of one kind on this node —
//! spawning them on demand, passivating idle ones and supervising them, so a panic in one entity
//! fails only the message that caused it and the entity reloads on its next message.

use crate::cluster::router::{call_route, failure, RouteFailure, RouteRequest, RouterMsg};
use crate::cluster::{ClusterView, Placement};
use crate::payment_gateway::PaymentGateway;
use crate::store::{Store, StoreError};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, warn};

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
}

/// Timing settings for entities and regions.
#[derive(Debug, Clone)]
pub struct EntitySettings {
    /// How long a payment waits for the gateway before it is declined with `gateway_timeout`.
    pub gateway_timeout: Duration,
    /// How long a caller waits for an entity's reply.
    pub call_timeout: Duration,
    /// How long an entity may stay idle before it is passivated.
    pub passivate_after: Duration,
    /// The largest request sent to another node; larger ones are refused here, because a frame
    /// over the peer's limit would drop the whole session to that peer.
    pub max_remote_bytes: usize,
    /// How long a placed order holds its stock unpaid: an order still ORDERED after it is
    /// cancelled by the system and its stock released.
    pub reservation_hold: Duration,
}

/// One kind of entity: how to load it and how it handles its messages.
pub trait Entity: Sized + Send + Sync + 'static {
    /// The kind's name in logs, metrics and actor names (`order`).
    const KIND: &'static str;
    /// The messages it accepts. Local-only: entities never cross nodes.
    type Msg: Send + 'static;

    /// Loads the entity's state (possibly "does not exist yet").
    fn load(id: &str, ctx: &Ctx) -> impl Future<Output = Result<Self, StoreError>> + Send;

    /// Handles one message; replies through the ports inside it.
    fn handle(&mut self, msg: Self::Msg, ctx: &Ctx, myself: &EntityRef<Self>) -> impl Future<Output = ()> + Send;

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

/// The mailbox of one live entity.
pub type EntityRef<E> = ActorRef<EntityMsg<<E as Entity>::Msg>>;

/// What an entity actor receives: its kind's commands, or the order to passivate.
pub enum EntityMsg<M> {
    /// A message of the entity's kind.
    Command(M),
    /// Stop now; the state is already stored.
    Passivate,
}

// Local-only: with ractor's `cluster` feature every message type says whether it can travel,
// and entities never do (their region is what other nodes talk to).
impl<M: Send + 'static> ractor::Message for EntityMsg<M> {}

/// The actor around one entity.
pub struct EntityActor<E>(PhantomData<fn() -> E>);

/// The entity actor's state: its id, and the entity once loaded.
pub struct EntityState<E: Entity> {
    id: String,
    ctx: Ctx,
    region: ActorRef<RegionMsg<E::Msg>>,
    entity: Option<E>,
}

impl<E: Entity> Actor for EntityActor<E> {
    type Msg = EntityMsg<E::Msg>;
    type State = EntityState<E>;
    type Arguments = (String, Ctx, ActorRef<RegionMsg<E::Msg>>);

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        (id, ctx, region): Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Loading waits for the first message so that spawning never blocks the region.
        Ok(EntityState { id, ctx, region, entity: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let command = match msg {
            EntityMsg::Passivate => {
                myself.stop(None);
                return Ok(());
            }
            EntityMsg::Command(command) => command,
        };
        if state.entity.is_none() {
            match Box::pin(E::load(&state.id, &state.ctx)).await {
                Ok(entity) => state.entity = Some(entity),
                Err(e) => {
                    warn!(kind = E::KIND, id = %state.id, reason = %e, "entity could not be loaded");
                    E::refuse(command);
                    return Ok(());
                }
            }
        }
        if let Some(entity) = state.entity.as_mut() {
            // Boxed: an actor's task holds its handler's future inline, sized for the largest
            // command (kilobytes of SQL state machines). Boxing allocates that only while a
            // message is handled, so an idle entity stays small.
            Box::pin(entity.handle(command, &state.ctx, &myself)).await;
            if !entity.exists() {
                let _ = state.region.send_message(RegionMsg::Evict(state.id.clone(), myself.get_id()));
            }
        }
        Ok(())
    }
}

/// What a region receives.
pub enum RegionMsg<M> {
    /// Deliver a message to the entity with this id, activating it if needed.
    Deliver(String, M),
    /// Passivate the entities idle for longer than the limit.
    Sweep,
    /// Passivate this entity now if it is still this actor (it does not exist in storage).
    Evict(String, ActorId),
    /// Passivate the entities this node no longer owns (the cluster view changed).
    Rebalance,
    /// Reply with the number of live entities.
    Live(RpcReplyPort<usize>),
}

impl<M: Send + 'static> ractor::Message for RegionMsg<M> {}

/// The owner of one kind's entities on this node.
pub struct Region<E>(PhantomData<fn() -> E>);

struct Slot<E: Entity> {
    actor: EntityRef<E>,
    last_used: Instant,
}

/// A region's directory of live entities.
pub struct RegionState<E: Entity> {
    ctx: Ctx,
    entities: HashMap<String, Slot<E>>,
    by_actor: HashMap<ActorId, String>,
}

impl<E: Entity> RegionState<E> {
    fn forget(&mut self, actor: ActorId) -> Option<String> {
        let id = self.by_actor.remove(&actor)?;
        if self.entities.get(&id).is_some_and(|slot| slot.actor.get_id() == actor) {
            self.entities.remove(&id);
        }
        Some(id)
    }

    fn passivate(&mut self, id: &str) {
        if let Some(slot) = self.entities.remove(id) {
            self.by_actor.remove(&slot.actor.get_id());
            // A message, not `stop()`: it queues behind what the entity still has to do, and
            // whatever arrives later goes to a fresh activation.
            let _ = slot.actor.send_message(EntityMsg::Passivate);
            metrics::counter!("bazaar_entity_passivations_total", "kind" => E::KIND).increment(1);
        }
    }

    fn report(&self) {
        metrics::gauge!("bazaar_entities_live", "kind" => E::KIND).set(self.entities.len() as f64);
    }

    async fn activate(
        &mut self,
        myself: &ActorRef<RegionMsg<E::Msg>>,
        id: &str,
    ) -> Result<EntityRef<E>, ActorProcessingErr> {
        let (actor, _) = Actor::spawn_linked(
            None,
            EntityActor::<E>(PhantomData),
            (id.to_owned(), self.ctx.clone(), myself.clone()),
            myself.get_cell(),
        )
        .await?;
        metrics::counter!("bazaar_entity_activations_total", "kind" => E::KIND).increment(1);
        self.by_actor.insert(actor.get_id(), id.to_owned());
        self.entities.insert(id.to_owned(), Slot { actor: actor.clone(), last_used: Instant::now() });
        self.report();
        Ok(actor)
    }
}

impl<E: Entity> Actor for Region<E> {
    type Msg = RegionMsg<E::Msg>;
    type State = RegionState<E>;
    type Arguments = Ctx;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, ctx: Ctx) -> Result<Self::State, ActorProcessingErr> {
        let every = (ctx.settings.passivate_after / 2).max(Duration::from_millis(100));
        myself.send_interval(every, || RegionMsg::Sweep);
        Ok(RegionState { ctx, entities: HashMap::new(), by_actor: HashMap::new() })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegionMsg::Deliver(id, command) => {
                let mut command = EntityMsg::Command(command);
                if let Some(slot) = state.entities.get_mut(&id) {
                    slot.last_used = Instant::now();
                    match slot.actor.send_message(command) {
                        Ok(()) => return Ok(()),
                        // The actor stopped but its termination is not handled yet: start anew.
                        Err(ractor::MessagingErr::SendErr(back)) => command = back,
                        Err(_) => return Ok(()),
                    }
                    let stale = slot.actor.get_id();
                    state.forget(stale);
                }
                let actor = state.activate(&myself, &id).await?;
                if let Err(ractor::MessagingErr::SendErr(EntityMsg::Command(lost))) = actor.send_message(command) {
                    E::refuse(lost);
                }
            }
            RegionMsg::Sweep => {
                let limit = state.ctx.settings.passivate_after;
                let view = state.ctx.cluster.clone();
                // Idle entities go, and so do those owned elsewhere (activated here for a read
                // whose answer was too large to cross, or left over from a view change).
                let idle: Vec<String> = state
                    .entities
                    .iter()
                    .filter(|(id, slot)| {
                        slot.last_used.elapsed() >= limit || view.as_ref().is_some_and(|v| !v.owns(E::KIND, id))
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in idle {
                    state.passivate(&id);
                }
                state.report();
            }
            RegionMsg::Rebalance => {
                if let Some(view) = state.ctx.cluster.clone() {
                    let moved: Vec<String> =
                        state.entities.keys().filter(|id| !view.owns(E::KIND, id)).cloned().collect();
                    for id in &moved {
                        state.passivate(id);
                    }
                    if !moved.is_empty() {
                        tracing::info!(kind = E::KIND, moved = moved.len(), "passivated entities now owned elsewhere");
                    }
                    state.report();
                }
            }
            RegionMsg::Evict(id, actor) => {
                if state.entities.get(&id).is_some_and(|slot| slot.actor.get_id() == actor) {
                    state.passivate(&id);
                    state.report();
                }
            }
            RegionMsg::Live(reply) => {
                let _ = reply.send(state.entities.len());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Overridden because the default stops the supervisor when a child fails: one entity's
        // panic must never take its region (and every other entity of the kind) down.
        match event {
            SupervisionEvent::ActorFailed(cell, reason) => {
                if let Some(id) = state.forget(cell.get_id()) {
                    error!(kind = E::KIND, %id, %reason, "entity failed; it restarts on its next message");
                    metrics::counter!("bazaar_entity_failures_total", "kind" => E::KIND).increment(1);
                }
                state.report();
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                state.forget(cell.get_id());
                state.report();
            }
            _ => {}
        }
        Ok(())
    }
}

/// Why a call to an entity got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The region is gone (the node is shutting down).
    #[error("region unavailable")]
    Unavailable,
    /// The entity failed while handling the message.
    #[error("entity dropped the request")]
    Dropped,
    /// No answer within the timeout.
    #[error("entity timed out")]
    Timeout,
    /// The request is too large to send to the owning node.
    #[error("request too large to route")]
    TooLarge,
    /// The owning node has too many requests in flight.
    #[error("owning node busy")]
    Busy,
}

/// A handle to a kind's region: the way everything else talks to entities.
pub struct RegionRef<E: Entity> {
    actor: ActorRef<RegionMsg<E::Msg>>,
    timeout: Duration,
    view: Option<Arc<ClusterView>>,
    max_remote_bytes: usize,
}

impl<E: Entity> Clone for RegionRef<E> {
    fn clone(&self) -> Self {
        Self {
            actor: self.actor.clone(),
            timeout: self.timeout,
            view: self.view.clone(),
            max_remote_bytes: self.max_remote_bytes,
        }
    }
}

impl<E: Entity> RegionRef<E> {
    /// Starts the region of kind `E`, unlinked: it supervises its entities itself.
    pub async fn spawn(ctx: Ctx) -> Result<Self, ractor::SpawnErr> {
        let timeout = ctx.settings.call_timeout;
        let max_remote_bytes = ctx.settings.max_remote_bytes;
        let view = ctx.cluster.clone();
        let (actor, _) = Actor::spawn(None, Region::<E>(PhantomData), ctx).await?;
        Ok(Self { actor, timeout, view, max_remote_bytes })
    }

    /// Sends `request` to entity `id` and awaits the reply.
    ///
    /// The message is sent before this returns, so requests asked in sequence reach the entity in
    /// that order even if their replies are awaited concurrently.
    pub fn ask<Q: Request<E>>(&self, id: &str, request: Q) -> BoxFuture<'static, Result<Q::Reply, CallError>> {
        self.ask_within(id, self.timeout, request)
    }

    /// Like [`RegionRef::ask`] with its own timeout (for replies that wait on a slow gateway).
    pub fn ask_within<Q: Request<E>>(
        &self,
        id: &str,
        timeout: Duration,
        request: Q,
    ) -> BoxFuture<'static, Result<Q::Reply, CallError>> {
        if let Some(Placement::Remote(_, router)) = self.view.as_ref().map(|view| view.placement(E::KIND, id)) {
            return self.ask_remote(&router, id, timeout, request);
        }
        let (tx, rx) = ractor::concurrency::oneshot();
        let sent = self.actor.send_message(RegionMsg::Deliver(id.to_owned(), request.into_msg(tx.into())));
        async move {
            sent.map_err(|_| CallError::Unavailable)?;
            match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(_)) => Err(CallError::Dropped),
                Err(_) => Err(CallError::Timeout),
            }
        }
        .boxed()
    }

    fn ask_remote<Q: Request<E>>(
        &self,
        router: &ActorRef<RouterMsg>,
        id: &str,
        timeout: Duration,
        request: Q,
    ) -> BoxFuture<'static, Result<Q::Reply, CallError>> {
        let Ok(payload) = serde_json::to_string(&request) else {
            return futures_util::future::ready(Err(CallError::Unavailable)).boxed();
        };
        let route =
            RouteRequest { kind: E::KIND.to_owned(), id: id.to_owned(), name: Q::NAME.to_owned(), payload, hops: 0 };
        let call = match call_route(router, &route, timeout, self.max_remote_bytes) {
            Ok(call) => call,
            Err(_) => return futures_util::future::ready(Err(CallError::TooLarge)).boxed(),
        };
        let local = self.local();
        let id = id.to_owned();
        async move {
            let text = call.await.map_err(|failure| match failure {
                RouteFailure::Unreachable => CallError::Unavailable,
                RouteFailure::Timeout => CallError::Timeout,
            })?;
            match text.as_str() {
                failure::BUSY => Err(CallError::Busy),
                failure::TOO_LARGE if Q::READ_ONLY => local.ask_within(&id, timeout, request).await,
                failure::TOO_LARGE => Err(CallError::TooLarge),
                t if t.starts_with('!') => Err(CallError::Dropped),
                t => serde_json::from_str(t).map_err(|_| CallError::Dropped),
            }
        }
        .boxed()
    }

    /// This region without the cluster view: every request goes to the local entity.
    fn local(&self) -> Self {
        Self { view: None, ..self.clone() }
    }

    /// Delivers a request that arrived from another node; `None` when the kind has no such request.
    pub fn deliver_remote(&self, id: &str, name: &str, payload: &str) -> Option<BoxFuture<'static, Option<String>>>
    where
        E: Remote,
    {
        match E::decode(name, payload)? {
            Ok(decoded) => {
                let sent = self.actor.send_message(RegionMsg::Deliver(id.to_owned(), decoded.msg));
                Some(if sent.is_ok() { decoded.answer } else { futures_util::future::ready(None).boxed() })
            }
            Err(_) => Some(futures_util::future::ready(Some(failure::UNKNOWN.to_owned())).boxed()),
        }
    }

    /// Passivates the entities this node no longer owns.
    pub fn rebalance(&self) {
        let _ = self.actor.send_message(RegionMsg::Rebalance);
    }

    /// How many entities of this kind are live on this node.
    pub async fn live(&self) -> usize {
        let (tx, rx) = ractor::concurrency::oneshot();
        if self.actor.send_message(RegionMsg::Live(tx.into())).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Stops the region and its entities.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}

/// What entity tests in this crate share.
#[cfg(test)]
pub(crate) mod test_support {
    use super::{Ctx, EntitySettings};
    use crate::payment_gateway::SimulatedGateway;
    use crate::store::test_support::{fresh_store, TestDatabase};
    use std::sync::Arc;
    use std::time::Duration;

    /// A context over a fresh database with the simulated gateway, outside any cluster.
    pub async fn ctx(passivate_after: Duration) -> (Ctx, TestDatabase) {
        let (store, dir) = fresh_store().await;
        let settings = Arc::new(EntitySettings {
            gateway_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(2),
            passivate_after,
            max_remote_bytes: 1 << 20,
            reservation_hold: Duration::from_secs(900),
        });
        (Ctx { gateway: Arc::new(SimulatedGateway::new(store.clone())), store, settings, cluster: None }, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::ctx;
    use super::*;

    /// A counter that panics on demand, to show failures stay inside one entity.
    struct Counter {
        loads: u32,
        count: u32,
    }

    #[derive(ractor_cluster::RactorMessage)]
    enum CounterMsg {
        Bump(RpcReplyPort<(u32, u32)>),
        Panic(RpcReplyPort<()>),
        Peek(RpcReplyPort<u32>),
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Bump;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Panic;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Peek;
    crate::request!(Bump, Counter, "bump", (u32, u32), |self, reply| CounterMsg::Bump(reply));
    crate::request!(Panic, Counter, "panic", (), |self, reply| CounterMsg::Panic(reply));
    crate::request!(Peek, Counter, "peek", u32, |self, reply| CounterMsg::Peek(reply));

    static LOADS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    impl Entity for Counter {
        const KIND: &'static str = "counter";
        type Msg = CounterMsg;

        async fn load(_id: &str, _ctx: &Ctx) -> Result<Self, StoreError> {
            let loads = LOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Ok(Counter { loads, count: 0 })
        }

        async fn handle(&mut self, msg: CounterMsg, _ctx: &Ctx, _myself: &EntityRef<Self>) {
            match msg {
                CounterMsg::Bump(reply) => {
                    self.count += 1;
                    let _ = reply.send((self.loads, self.count));
                }
                CounterMsg::Panic(_reply) => panic!("asked to"),
                CounterMsg::Peek(reply) => {
                    let _ = reply.send(self.count);
                }
            }
        }

        fn refuse(_msg: CounterMsg) {}

        // A counter "exists" once bumped, like an entity once stored.
        fn exists(&self) -> bool {
            self.count > 0
        }
    }

    #[tokio::test]
    async fn a_panicking_entity_restarts_and_leaves_its_neighbours_alone() {
        let (ctx, _dir) = ctx(Duration::from_secs(60)).await;
        let region = RegionRef::<Counter>::spawn(ctx).await.unwrap();
        let (_, count) = region.ask("b", Bump).await.unwrap();
        assert_eq!(count, 1);
        region.ask("a", Bump).await.unwrap();

        assert_eq!(region.ask("a", Panic).await, Err(CallError::Dropped));

        // The neighbour kept its in-memory state; the failed one was reloaded from scratch.
        let (_, count) = region.ask("b", Bump).await.unwrap();
        assert_eq!(count, 2);
        let (_, count) = region.ask("a", Bump).await.unwrap();
        assert_eq!(count, 1);
        assert_eq!(region.live().await, 2);
    }

    #[tokio::test]
    async fn looking_up_an_entity_that_does_not_exist_leaves_no_actor_behind() {
        let (ctx, _dir) = ctx(Duration::from_secs(60)).await;
        let region = RegionRef::<Counter>::spawn(ctx).await.unwrap();
        region.ask("kept", Bump).await.unwrap();
        for n in 0..50 {
            assert_eq!(region.ask(&format!("ghost-{n}"), Peek).await, Ok(0));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while region.live().await > 1 {
            assert!(Instant::now() < deadline, "ghost entities were not evicted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, count) = region.ask("kept", Bump).await.unwrap();
        assert_eq!(count, 2);
    }

    #[tokio::test]
    async fn idle_entities_are_passivated_and_reload_on_the_next_message() {
        let (ctx, _dir) = ctx(Duration::from_millis(100)).await;
        let region = RegionRef::<Counter>::spawn(ctx).await.unwrap();
        let (first_load, _) = region.ask("idle", Bump).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while region.live().await > 0 {
            assert!(Instant::now() < deadline, "entity was never passivated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (second_load, count) = region.ask("idle", Bump).await.unwrap();
        assert!(second_load > first_load);
        assert_eq!(count, 1);
    }
}
