//! The machinery that runs entities. [`Region`] owns the entities of one kind on this node and
//! supervises them: an entity is activated on its first message (a task and a mailbox of its own,
//! loading its state from storage), hibernates when idle for a short while (the task goes, the
//! state stays in the region and the next message wakes it without reading storage), and leaves
//! memory after a longer idle time. A panic in one entity fails only the message that caused it,
//! and the entity reloads from storage on its next message. [`RegionRef`] is how callers ask an
//! entity, here or, through the router, on the node that owns it.

use crate::cluster::router::{call_route, RouteFailure, RouteRequest, Routed, RouterMsg};
use crate::cluster::{ClusterView, Placement};
use crate::entity::{Ctx, Entity, EntityRef, Post, Remote, Request};
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{error, warn};

/// What an entity's task receives.
enum Mail<M> {
    /// A message of the entity's kind. Boxed: the mailbox allocates its slots in blocks (32 at a
    /// time), and a block of large messages would cost every idle entity kilobytes.
    Command(Box<M>),
    /// Give the state back to the region and stop (the entity hibernates).
    Hibernate,
    /// Stop now and drop the state; it is already stored.
    Passivate,
}

/// An entity's state in memory, and the epoch of the cluster view it was read from storage in
/// (`None`: read while the view was not whole, so it is read again before the next request).
pub struct Held<E> {
    state: Box<E>,
    read_in: Option<u64>,
}

/// The view epoch entity `id` may trust its memory in; `Some(0)` on a node alone.
fn trusted_epoch<E: Entity>(ctx: &Ctx, id: &str) -> Option<u64> {
    match &ctx.cluster {
        None => Some(0),
        // A copy held here while another node owns the entity (a read too large to cross) is
        // never trusted: the owner changes it.
        Some(view) if !view.owns(E::KIND, id) => None,
        Some(view) => view.trusted_epoch(),
    }
}

/// The text of a panic's payload, for the log.
fn panic_reason(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic")
}

/// One active entity: its own task, handling its mailbox one message at a time.
///
/// An entity is an actor (one task, one mailbox, supervised by its region) but not a ractor actor:
/// a ractor actor costs about 10.6 KiB even with no state (the blocks of its four channels), and
/// an active entity must fit in 8 KiB (docs/decisions.md 26). Its region is a ractor actor.
async fn run_entity<E: Entity>(
    region: ActorRef<RegionMsg<E>>,
    myself: EntityRef<E>,
    mut entity: Option<Held<E>>,
    ctx: Ctx,
    mut mail: mpsc::UnboundedReceiver<Mail<E::Msg>>,
    generation: u64,
) {
    // Whatever ends the task other than its orders (a panic in a handler, in loading, anywhere)
    // drops the watch, which reports the failure: the region must never wait for a dead task.
    let mut watch = Watch { region: &region, id: myself.id(), generation, armed: true };
    let id = myself.id();
    while let Some(next) = mail.recv().await {
        let command = match next {
            Mail::Command(command) => *command,
            Mail::Hibernate => {
                watch.armed = false;
                let _ = region.send_message(RegionMsg::Hibernated(id.to_owned(), generation, entity));
                return;
            }
            Mail::Passivate => break,
        };
        // Memory is trusted only in the epoch it was read in, and only while the view is whole: a
        // node this one cannot see (cut off, paused, or back after either) may have changed it.
        let trusted = trusted_epoch::<E>(&ctx, id);
        match entity.as_mut() {
            None => match Box::pin(E::load(id, &ctx)).await {
                Ok(loaded) => entity = Some(Held { state: Box::new(loaded), read_in: trusted }),
                Err(e) => {
                    warn!(kind = E::KIND, %id, reason = %e, "entity could not be loaded");
                    E::refuse(command);
                    continue;
                }
            },
            Some(held) if trusted.is_none() || held.read_in != trusted => {
                metrics::counter!("bazaar_entity_refreshes_total", "kind" => E::KIND).increment(1);
                match Box::pin(held.state.refresh(id, &ctx)).await {
                    Ok(()) => held.read_in = trusted,
                    // Decided on the copy in memory: its writes still pass the version check.
                    Err(e) if E::handle_unread(&command) => {
                        warn!(kind = E::KIND, %id, reason = %e, "entity could not be read again; deciding on memory");
                    }
                    Err(e) => {
                        warn!(kind = E::KIND, %id, reason = %e, "entity could not be read again");
                        E::refuse(command);
                        continue;
                    }
                }
            }
            Some(_) => {}
        }
        let Some(Held { state, .. }) = entity.as_mut() else { continue };
        // Boxed: the task would otherwise hold the largest handler's future inline (kilobytes of
        // SQL state machines), idle or not. A panic fails this message and this entity only: the
        // region forgets it, and its next message loads it afresh from storage.
        let handled = AssertUnwindSafe(Box::pin(state.handle(command, &ctx, &myself))).catch_unwind().await;
        if let Err(payload) = handled {
            error!(kind = E::KIND, %id, reason = panic_reason(&*payload), "entity failed; it restarts on its next message");
            return;
        }
        if !state.exists() {
            let _ = region.send_message(RegionMsg::Evict(id.to_owned(), generation));
        }
    }
    watch.armed = false;
}

/// Reports an entity task's end to its region as a failure unless disarmed.
struct Watch<'a, E: Entity> {
    region: &'a ActorRef<RegionMsg<E>>,
    id: &'a str,
    generation: u64,
    armed: bool,
}

impl<E: Entity> Drop for Watch<'_, E> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.region.send_message(RegionMsg::Failed(self.id.to_owned(), self.generation));
        }
    }
}

/// What a region receives.
pub enum RegionMsg<E: Entity> {
    /// Deliver a message to the entity with this id, waking or activating it if needed.
    Deliver(String, E::Msg),
    /// Hibernate the entities idle for `hibernate_after`, drop those idle for `passivate_after`.
    Sweep,
    /// The entity of this generation was looked up but does not exist in storage: drop it.
    Evict(String, u64),
    /// The entity of this generation gave its state back (`None`: it never loaded).
    Hibernated(String, u64, Option<Held<E>>),
    /// The entity of this generation panicked.
    Failed(String, u64),
    /// Drop the entities this node no longer owns (the cluster view changed).
    Rebalance,
    /// Reply with the number of entities in memory, active and hibernated.
    Live(RpcReplyPort<EntityCounts>),
}

impl<E: Entity> ractor::Message for RegionMsg<E> {}

/// How many entities of a kind a region holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityCounts {
    /// With a task and a mailbox.
    pub active: usize,
    /// State only, woken by the next message without reading storage.
    pub hibernated: usize,
}

/// The owner of one kind's entities on this node.
pub struct Region<E>(PhantomData<fn() -> E>);

/// Where one entity stands in its region.
enum Slot<E: Entity> {
    /// Running: messages go to its mailbox.
    Active { mail: mpsc::UnboundedSender<Mail<E::Msg>>, generation: u64, last_used: Instant },
    /// Asked to hibernate; messages that arrive before its state comes back wait here.
    Hibernating { generation: u64, pending: Vec<E::Msg>, last_used: Instant },
    /// Its state, without a task.
    Hibernated { entity: Held<E>, last_used: Instant },
}

/// A region's directory of the entities in memory.
pub struct RegionState<E: Entity> {
    ctx: Ctx,
    entities: HashMap<String, Slot<E>>,
    /// How many of `entities` are [`Slot::Hibernated`], kept as slots come and go.
    hibernated: usize,
    next_generation: u64,
    /// The handles' way back to this region, once made.
    post: Option<Post<E>>,
}

impl<E: Entity> RegionState<E> {
    /// How an entity's handle reaches this region (made once, shared by every handle).
    fn post(&mut self, myself: &ActorRef<RegionMsg<E>>) -> Post<E> {
        self.post
            .get_or_insert_with(|| {
                let region = myself.clone();
                Arc::new(move |id, msg| {
                    let _ = region.send_message(RegionMsg::Deliver(id, msg));
                })
            })
            .clone()
    }

    fn counts(&self) -> EntityCounts {
        EntityCounts { active: self.entities.len() - self.hibernated, hibernated: self.hibernated }
    }

    /// Takes the entity's slot out of the directory.
    fn take(&mut self, id: &str) -> Option<Slot<E>> {
        let slot = self.entities.remove(id)?;
        if matches!(slot, Slot::Hibernated { .. }) {
            self.hibernated -= 1;
        }
        Some(slot)
    }

    fn report(&self) {
        let counts = self.counts();
        metrics::gauge!("bazaar_entities_live", "kind" => E::KIND).set((counts.active + counts.hibernated) as f64);
        metrics::gauge!("bazaar_entities_active", "kind" => E::KIND).set(counts.active as f64);
    }

    /// Whether `slot` is the activation `generation` (a message from an older one is stale).
    fn is_generation(&self, id: &str, generation: u64) -> bool {
        match self.entities.get(id) {
            Some(Slot::Active { generation: g, .. } | Slot::Hibernating { generation: g, .. }) => *g == generation,
            Some(Slot::Hibernated { .. }) | None => false,
        }
    }

    /// Drops the entity from memory (its state is stored).
    fn passivate(&mut self, id: &str) {
        if let Some(slot) = self.take(id) {
            if let Slot::Active { mail, .. } = slot {
                // A message, not an abort: it queues behind what the entity still has to do, and
                // whatever arrives later goes to a fresh activation.
                let _ = mail.send(Mail::Passivate);
            }
            metrics::counter!("bazaar_entity_passivations_total", "kind" => E::KIND).increment(1);
        }
    }

    /// Starts a task for entity `id` (from `entity` when it was hibernated, else loading on its
    /// first message) and hands it `messages`.
    fn activate(&mut self, myself: &ActorRef<RegionMsg<E>>, id: &str, entity: Option<Held<E>>, messages: Vec<E::Msg>) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let (mail, inbox) = mpsc::unbounded_channel();
        for message in messages {
            let _ = mail.send(Mail::Command(Box::new(message)));
        }
        let kind = if entity.is_some() { "bazaar_entity_wakes_total" } else { "bazaar_entity_activations_total" };
        metrics::counter!(kind, "kind" => E::KIND).increment(1);
        let handle = EntityRef::new(id.to_owned(), self.post(myself));
        tokio::spawn(run_entity(myself.clone(), handle, entity, self.ctx.clone(), inbox, generation));
        self.entities.insert(id.to_owned(), Slot::Active { mail, generation, last_used: Instant::now() });
    }

    fn deliver(&mut self, myself: &ActorRef<RegionMsg<E>>, id: String, message: E::Msg) {
        let now = Instant::now();
        let message = match self.entities.get_mut(&id) {
            Some(Slot::Active { mail, last_used, .. }) => {
                *last_used = now;
                match mail.send(Mail::Command(Box::new(message))) {
                    Ok(()) => return,
                    // The task ended (it failed, and its report is still on the way): start anew.
                    Err(mpsc::error::SendError(Mail::Command(message))) => *message,
                    Err(mpsc::error::SendError(Mail::Hibernate | Mail::Passivate)) => return,
                }
            }
            Some(Slot::Hibernating { pending, last_used, .. }) => {
                *last_used = now;
                pending.push(message);
                return;
            }
            Some(Slot::Hibernated { .. }) => {
                let Some(Slot::Hibernated { entity, .. }) = self.take(&id) else { return };
                self.activate(myself, &id, Some(entity), vec![message]);
                return;
            }
            None => message,
        };
        self.entities.remove(&id);
        self.activate(myself, &id, None, vec![message]);
    }

    /// The entity of `generation` gave its state back: keep it, or wake it at once for the
    /// messages that arrived meanwhile.
    fn hibernated(&mut self, myself: &ActorRef<RegionMsg<E>>, id: String, generation: u64, entity: Option<Held<E>>) {
        if !self.is_generation(&id, generation) {
            return;
        }
        let Some(Slot::Hibernating { pending, last_used, .. }) = self.entities.remove(&id) else { return };
        // Moved elsewhere while it gave its state back (and maybe back again since): another
        // node may have changed it, so the state is not kept.
        let owned = self.ctx.cluster.as_ref().is_none_or(|view| view.owns(E::KIND, &id));
        let entity = entity.filter(|_| owned);
        if !pending.is_empty() {
            self.activate(myself, &id, entity, pending);
            return;
        }
        match entity {
            Some(entity) if entity.state.exists() => {
                metrics::counter!("bazaar_entity_hibernations_total", "kind" => E::KIND).increment(1);
                self.entities.insert(id, Slot::Hibernated { entity, last_used });
                self.hibernated += 1;
            }
            // Never loaded, or does not exist: nothing worth keeping.
            Some(_) | None => {}
        }
    }

    /// The entity of `generation` panicked: forget it, and give the messages that waited for it
    /// to a fresh activation.
    fn failed(&mut self, myself: &ActorRef<RegionMsg<E>>, id: String, generation: u64) {
        if !self.is_generation(&id, generation) {
            return;
        }
        metrics::counter!("bazaar_entity_failures_total", "kind" => E::KIND).increment(1);
        if let Some(Slot::Hibernating { pending, .. }) = self.entities.remove(&id) {
            if !pending.is_empty() {
                self.activate(myself, &id, None, pending);
            }
        }
    }

    /// The entity of `generation` does not exist in storage: drop it. One already giving its
    /// state back has messages waiting for it: they go to a fresh activation (which loads, and
    /// finds the entity if a waiting message created it meanwhile).
    fn evict(&mut self, myself: &ActorRef<RegionMsg<E>>, id: String, generation: u64) {
        if !self.is_generation(&id, generation) {
            return;
        }
        if matches!(self.entities.get(&id), Some(Slot::Hibernating { .. })) {
            if let Some(Slot::Hibernating { pending, .. }) = self.entities.remove(&id) {
                if !pending.is_empty() {
                    self.activate(myself, &id, None, pending);
                }
            }
            return;
        }
        self.passivate(&id);
    }

    fn sweep(&mut self) {
        let settings = &self.ctx.settings;
        let (hibernate_after, passivate_after) = (settings.hibernate_after, settings.passivate_after);
        let view = self.ctx.cluster.clone();
        let mut gone = Vec::new();
        let mut sleepy = Vec::new();
        for (id, slot) in &self.entities {
            // Entities owned elsewhere go (activated here for a read whose answer was too large
            // to cross, or left over from a view change): another node may change them.
            let elsewhere = view.as_ref().is_some_and(|v| !v.owns(E::KIND, id));
            match slot {
                Slot::Active { last_used, .. } => {
                    let idle = last_used.elapsed();
                    if elsewhere || idle >= passivate_after {
                        gone.push(id.clone());
                    } else if idle >= hibernate_after {
                        sleepy.push(id.clone());
                    }
                }
                Slot::Hibernated { last_used, .. } => {
                    if elsewhere || last_used.elapsed() >= passivate_after {
                        gone.push(id.clone());
                    }
                }
                // Waiting for its state; the next sweep decides.
                Slot::Hibernating { .. } => {}
            }
        }
        for id in gone {
            self.passivate(&id);
        }
        // The directory keeps the capacity a burst grew it to: give it back once most of its
        // entities have left (the slack avoids shrinking at every sweep).
        if self.entities.capacity() > 4 * self.entities.len() + 256 {
            self.entities.shrink_to_fit();
        }
        for id in sleepy {
            if let Some(slot) = self.entities.get_mut(&id) {
                if let Slot::Active { mail, generation, last_used } = slot {
                    let (generation, last_used) = (*generation, *last_used);
                    if mail.send(Mail::Hibernate).is_ok() {
                        *slot = Slot::Hibernating { generation, pending: Vec::new(), last_used };
                    }
                }
            }
        }
    }
}

impl<E: Entity> Actor for Region<E> {
    type Msg = RegionMsg<E>;
    type State = RegionState<E>;
    type Arguments = Ctx;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, ctx: Ctx) -> Result<Self::State, ActorProcessingErr> {
        let shortest = ctx.settings.hibernate_after.min(ctx.settings.passivate_after);
        let every = (shortest / 2).max(Duration::from_millis(100));
        myself.send_interval(every, || RegionMsg::Sweep);
        Ok(RegionState { ctx, entities: HashMap::new(), hibernated: 0, next_generation: 0, post: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            RegionMsg::Deliver(id, command) => {
                // Most deliveries reach an active entity and change no count: skip the gauges.
                let before = state.counts();
                state.deliver(&myself, id, command);
                if state.counts() == before {
                    return Ok(());
                }
            }
            RegionMsg::Sweep => state.sweep(),
            RegionMsg::Rebalance => {
                if let Some(view) = state.ctx.cluster.clone() {
                    let moved: Vec<String> = state
                        .entities
                        .iter()
                        .filter(|(id, slot)| !matches!(slot, Slot::Hibernating { .. }) && !view.owns(E::KIND, id))
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in &moved {
                        state.passivate(id);
                    }
                    if !moved.is_empty() {
                        tracing::info!(kind = E::KIND, moved = moved.len(), "passivated entities now owned elsewhere");
                    }
                }
            }
            RegionMsg::Evict(id, generation) => state.evict(&myself, id, generation),
            RegionMsg::Hibernated(id, generation, entity) => state.hibernated(&myself, id, generation, entity),
            RegionMsg::Failed(id, generation) => state.failed(&myself, id, generation),
            RegionMsg::Live(reply) => {
                let _ = reply.send(state.counts());
                return Ok(());
            }
        }
        state.report();
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
    actor: ActorRef<RegionMsg<E>>,
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
            let routed = call.await.map_err(|failure| match failure {
                RouteFailure::Unreachable => CallError::Unavailable,
                RouteFailure::Timeout => CallError::Timeout,
            })?;
            match routed {
                Routed::Answered(json) => serde_json::from_str(&json).map_err(|_| CallError::Dropped),
                Routed::Busy => Err(CallError::Busy),
                // A read answered too large to cross is read here instead, from the shared store.
                Routed::TooLarge if Q::READ_ONLY => local.ask_within(&id, timeout, request).await,
                Routed::TooLarge => Err(CallError::TooLarge),
                Routed::Dropped | Routed::Unknown => Err(CallError::Dropped),
            }
        }
        .boxed()
    }

    /// This region without the cluster view: every request goes to the local entity.
    fn local(&self) -> Self {
        Self { view: None, ..self.clone() }
    }

    /// Delivers a request that arrived from another node; `None` when the kind has no such request.
    pub fn deliver_remote(&self, id: &str, name: &str, payload: &str) -> Option<BoxFuture<'static, Routed>>
    where
        E: Remote,
    {
        match E::decode(name, payload)? {
            Ok(decoded) => {
                let sent = self.actor.send_message(RegionMsg::Deliver(id.to_owned(), decoded.msg));
                Some(if sent.is_ok() {
                    decoded.answer.map(|answer| answer.map_or(Routed::Dropped, Routed::Answered)).boxed()
                } else {
                    futures_util::future::ready(Routed::Dropped).boxed()
                })
            }
            Err(_) => Some(futures_util::future::ready(Routed::Unknown).boxed()),
        }
    }

    /// Passivates the entities this node no longer owns.
    pub fn rebalance(&self) {
        let _ = self.actor.send_message(RegionMsg::Rebalance);
    }

    /// How many entities of this kind are in memory on this node, active and hibernated.
    pub async fn live(&self) -> usize {
        let counts = self.counts().await;
        counts.active + counts.hibernated
    }

    /// How many entities of this kind are active and how many hibernated on this node.
    pub async fn counts(&self) -> EntityCounts {
        let (tx, rx) = ractor::concurrency::oneshot();
        if self.actor.send_message(RegionMsg::Live(tx.into())).is_err() {
            return EntityCounts::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Stops the region and its entities.
    pub fn stop(&self) {
        self.actor.stop(None);
    }
}

/// What entity tests in this crate share.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::entity::{Ctx, EntitySettings};
    use crate::payment_gateway::SimulatedGateway;
    use crate::store::test_support::{fresh_store, TestDatabase};
    use crate::store::Store;
    use std::sync::Arc;
    use std::time::Duration;

    /// A context over a fresh database with the simulated gateway, outside any cluster; entities
    /// leave memory after `passivate_after` idle, without hibernating first.
    pub async fn ctx(passivate_after: Duration) -> (Ctx, TestDatabase) {
        ctx_idle(passivate_after, passivate_after).await
    }

    /// Like [`ctx`], with entities hibernating after `hibernate_after` idle.
    pub async fn ctx_idle(hibernate_after: Duration, passivate_after: Duration) -> (Ctx, TestDatabase) {
        let (store, dir) = fresh_store().await;
        (ctx_over(store, hibernate_after, passivate_after), dir)
    }

    /// A context over `store` (another node's view of the same database, when it is shared).
    pub fn ctx_over(store: Store, hibernate_after: Duration, passivate_after: Duration) -> Ctx {
        let settings = Arc::new(EntitySettings {
            gateway_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(2),
            hibernate_after,
            passivate_after,
            max_remote_bytes: 1 << 20,
            reservation_hold: Duration::from_secs(900),
            order_timeline_max_events: 500,
            cart_max_items: 50,
            checkout_timeout: Duration::from_secs(30),
            chat_room_answers_waiting: 1_024,
        });
        Ctx {
            gateway: Arc::new(SimulatedGateway::new(store.clone())),
            store,
            settings,
            cluster: None,
            live: tokio::sync::broadcast::channel(1_024).0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{ctx, ctx_idle};
    use super::*;
    use crate::store::StoreError;

    /// A counter that panics on demand, to show failures stay inside one entity.
    struct Counter {
        loads: u32,
        count: u32,
        /// Makes `exists` panic: a failure outside any handler.
        poisoned: bool,
    }

    #[derive(ractor_cluster::RactorMessage)]
    enum CounterMsg {
        Bump(RpcReplyPort<(u32, u32)>),
        Panic(RpcReplyPort<()>),
        Peek(RpcReplyPort<u32>),
        Slow(u64, RpcReplyPort<()>),
        Poison(u64, RpcReplyPort<()>),
    }

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Bump;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Panic;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Peek;
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Slow(u64);
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Poison(u64);
    crate::request!(Bump, Counter, "bump", (u32, u32), |self, reply| CounterMsg::Bump(reply));
    crate::request!(Panic, Counter, "panic", (), |self, reply| CounterMsg::Panic(reply));
    crate::request!(Peek, Counter, "peek", u32, |self, reply| CounterMsg::Peek(reply));
    crate::request!(Slow, Counter, "slow", (), |self, reply| CounterMsg::Slow(self.0, reply));
    crate::request!(Poison, Counter, "poison", (), |self, reply| CounterMsg::Poison(self.0, reply));

    static LOADS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    impl Entity for Counter {
        const KIND: &'static str = "counter";
        type Msg = CounterMsg;

        async fn load(_id: &str, _ctx: &Ctx) -> Result<Self, StoreError> {
            let loads = LOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            Ok(Counter { loads, count: 0, poisoned: false })
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
                CounterMsg::Slow(millis, reply) => {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    let _ = reply.send(());
                }
                CounterMsg::Poison(millis, reply) => {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    self.poisoned = true;
                    let _ = reply.send(());
                }
            }
        }

        fn refuse(_msg: CounterMsg) {}

        // A counter "exists" once bumped, like an entity once stored.
        fn exists(&self) -> bool {
            assert!(!self.poisoned, "poisoned");
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

    async fn wait_for_counts(region: &RegionRef<Counter>, wanted: EntityCounts) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let counts = region.counts().await;
            if counts == wanted {
                return;
            }
            assert!(Instant::now() < deadline, "counts stayed {counts:?}, wanted {wanted:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn an_idle_entity_hibernates_and_wakes_with_its_state_without_loading_again() {
        let (ctx, _dir) = ctx_idle(Duration::from_millis(100), Duration::from_secs(60)).await;
        let region = RegionRef::<Counter>::spawn(ctx).await.unwrap();
        let (first_load, _) = region.ask("sleepy", Bump).await.unwrap();
        region.ask("sleepy", Bump).await.unwrap();
        wait_for_counts(&region, EntityCounts { active: 0, hibernated: 1 }).await;

        let (load, count) = region.ask("sleepy", Bump).await.unwrap();
        assert_eq!((load, count), (first_load, 3), "woken from memory, not loaded again");
        assert_eq!(region.counts().await, EntityCounts { active: 1, hibernated: 0 });
        wait_for_counts(&region, EntityCounts { active: 0, hibernated: 1 }).await;
        assert_eq!(region.ask("sleepy", Peek).await, Ok(3));
    }

    #[tokio::test]
    async fn messages_that_arrive_while_an_entity_hibernates_wait_for_its_state_and_keep_their_order() {
        // A slow command makes the entity look idle to the sweep while it still works: the order
        // to hibernate queues behind the command, and the bumps sent meanwhile wait in the region
        // until the state comes back, then wake the entity with it.
        let (ctx, _dir) = ctx_idle(Duration::from_millis(100), Duration::from_secs(60)).await;
        let region = RegionRef::<Counter>::spawn(ctx).await.unwrap();
        let (first_load, _) = region.ask("racy", Bump).await.unwrap();
        let slow = region.ask("racy", Slow(600));
        tokio::time::sleep(Duration::from_millis(350)).await;
        let bumps: Vec<_> = (0..5).map(|_| region.ask("racy", Bump)).collect();
        slow.await.unwrap();
        for (n, bump) in bumps.into_iter().enumerate() {
            assert_eq!(bump.await.unwrap(), (first_load, n as u32 + 2));
        }
        assert_eq!(region.ask("racy", Peek).await, Ok(6));
    }

    #[tokio::test]
    async fn a_hibernated_entity_leaves_memory_after_the_passivation_time() {
        let (ctx, _dir) = ctx_idle(Duration::from_millis(100), Duration::from_millis(600)).await;
        let region = RegionRef::<Counter>::spawn(ctx).await.unwrap();
        let (first_load, _) = region.ask("gone", Bump).await.unwrap();
        wait_for_counts(&region, EntityCounts { active: 0, hibernated: 1 }).await;
        wait_for_counts(&region, EntityCounts::default()).await;
        let (load, count) = region.ask("gone", Bump).await.unwrap();
        assert!(load > first_load);
        assert_eq!(count, 1, "a counter's state is not stored: loaded anew it starts over");
    }

    #[tokio::test]
    async fn a_panic_fails_only_the_entity_that_panicked_while_others_hibernate() {
        let (ctx, _dir) = ctx_idle(Duration::from_millis(100), Duration::from_secs(60)).await;
        let region = RegionRef::<Counter>::spawn(ctx).await.unwrap();
        region.ask("calm", Bump).await.unwrap();
        wait_for_counts(&region, EntityCounts { active: 0, hibernated: 1 }).await;
        region.ask("wild", Bump).await.unwrap();
        assert_eq!(region.ask("wild", Panic).await, Err(CallError::Dropped));
        assert_eq!(region.ask("wild", Bump).await.unwrap().1, 1);
        assert_eq!(region.ask("calm", Bump).await.unwrap().1, 2);
    }

    #[tokio::test]
    async fn a_task_that_dies_outside_a_handler_while_hibernating_still_hands_on_the_waiting_messages() {
        // The entity panics after its slow command (in `exists`, outside the handler's guard)
        // while the order to hibernate waits behind that command: the region must hear of the
        // failure, or the bump waiting for the state would never be answered.
        let (ctx, _dir) = ctx_idle(Duration::from_millis(100), Duration::from_secs(60)).await;
        let region = RegionRef::<Counter>::spawn(ctx).await.unwrap();
        let (first_load, _) = region.ask("doomed", Bump).await.unwrap();
        let poison = region.ask("doomed", Poison(600));
        tokio::time::sleep(Duration::from_millis(350)).await;
        let bump = region.ask("doomed", Bump);
        poison.await.unwrap();
        let (load, count) = bump.await.expect("the waiting bump is answered");
        assert!(load > first_load, "answered by a fresh activation");
        assert_eq!(count, 1);
    }
}
