//! The router: the one remotable actor of a node. Peers send it entity requests for entities this
//! node owns, published events for this node's WebSocket hub, presence and typing updates,
//! heartbeats and statistics requests. Everything it carries is a string (JSON), so the wire
//! format is ours and not the actors' Rust types.

use crate::cluster::{ClusterView, Placement};
use bazaar_protocol::chat::ServerFrame;
use bazaar_protocol::events::Envelope;
use bazaar_protocol::{RoomId, UserId};
use futures_util::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore};
use tracing::warn;

/// Messages a router accepts; every variant can cross nodes.
#[derive(RactorClusterMessage)]
pub enum RouterMsg {
    /// An entity request ([`RouteRequest`] as JSON); answers a [`Routed`] in its wire form.
    #[rpc]
    Route(String, RpcReplyPort<String>),
    /// A published event ([`Envelope`] as JSON), for this node's sockets and saga.
    Publish(String),
    /// Who is online in a room on the sending node ([`PresenceUpdate`] as JSON).
    Presence(String),
    /// A typing or read frame for a room's sockets ([`RoomFrame`] as JSON).
    Relay(String),
    /// A heartbeat; answers the node's name.
    #[rpc]
    Ping(String, RpcReplyPort<String>),
    /// Answers this node's live entities per kind ([`NodeStats`] as JSON).
    #[rpc]
    Stats(String, RpcReplyPort<String>),
    /// The sending node (named) committed events to the outbox: the relay, when it must run on
    /// one node only and runs here, looks now instead of polling for other nodes' commits.
    OutboxQueued(String),
}

/// An entity request on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteRequest {
    /// The entity kind (`order`).
    pub kind: String,
    /// The entity id.
    pub id: String,
    /// The request's name within the kind (`order.cancel`).
    pub name: String,
    /// The request as JSON.
    pub payload: String,
    /// How often it was forwarded already; a node forwards a request it does not own once.
    pub hops: u8,
}

/// How a routed request ended at the node that owns the entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// The entity's reply, as JSON.
    Answered(String),
    /// The entity failed, or its node is shutting down: the outcome is unknown.
    Dropped,
    /// The request was not understood (another version of bazaar?).
    Unknown,
    /// Too many requests in flight on the owning node.
    Busy,
    /// The answer would not fit in the caller's frame.
    TooLarge,
}

impl Routed {
    /// The wire form: a reply as its JSON text, a failure as `!reason` (no JSON text starts
    /// with `!`), so an answer crosses without a second layer of escaping.
    pub fn encode(self) -> String {
        match self {
            Routed::Answered(json) => json,
            Routed::Dropped => "!dropped".to_owned(),
            Routed::Unknown => "!unknown".to_owned(),
            Routed::Busy => "!busy".to_owned(),
            Routed::TooLarge => "!too_large".to_owned(),
        }
    }

    /// Reads the wire form back; a failure this version does not know is [`Routed::Dropped`].
    pub fn decode(text: String) -> Routed {
        match text.as_str() {
            "!unknown" => Routed::Unknown,
            "!busy" => Routed::Busy,
            "!too_large" => Routed::TooLarge,
            failure if failure.starts_with('!') => Routed::Dropped,
            _ => Routed::Answered(text),
        }
    }
}

/// A node's online users of a room.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceUpdate {
    pub room: RoomId,
    pub node: String,
    pub online: Vec<UserId>,
}

/// A frame for every socket of a room.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomFrame {
    pub room: RoomId,
    pub frame: ServerFrame,
}

/// Live entities of a node, by kind.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStats {
    pub entities: std::collections::BTreeMap<String, usize>,
}

/// What the router hands to this node: requests for its entities and what its sockets are to
/// get. The node's composition root implements it over its regions and its socket hub, so the
/// router (the transport) knows no entity kind and no socket.
pub trait Local: Send + Sync + 'static {
    /// Delivers request `name` for entity `id` of `kind` and resolves to how it ended; `None`
    /// when the kind is unknown here.
    fn dispatch(&self, kind: &str, id: &str, name: &str, payload: &str) -> Option<BoxFuture<'static, Routed>>;
    /// Live entities per kind on this node.
    fn live(&self) -> BoxFuture<'static, std::collections::BTreeMap<String, usize>>;
    /// An event a peer published, for this node's sockets.
    fn published(&self, envelope: Envelope);
    /// Who is online in a room, as a peer sees it.
    fn presence(&self, update: PresenceUpdate);
    /// A frame (typing, read) for this node's members of a room.
    fn relay(&self, frame: RoomFrame);
}

/// What the router works with.
pub struct RouterArgs {
    pub local: Arc<dyn Local>,
    pub view: Arc<ClusterView>,
    /// Woken when a peer published events, so the saga (if it runs here) reads them promptly.
    pub appended: Arc<Notify>,
    /// Wakes this node's outbox relay (the store's commit signal) when a peer queued events.
    pub outbox_queued: Arc<Notify>,
    /// How long an entity may take to answer a routed request.
    pub timeout: Duration,
    /// The largest frame a peer accepts (for forwarded requests).
    pub max_remote_bytes: usize,
    /// Most routed requests handled at once; more are answered `!busy` rather than queued
    /// without bound (ractor mailboxes are unbounded).
    pub max_in_flight: usize,
}

/// The router actor.
pub struct Router;

/// The router's state.
pub struct RouterState {
    args: RouterArgs,
    in_flight: Arc<Semaphore>,
}

impl Actor for Router {
    type Msg = RouterMsg;
    type State = RouterState;
    type Arguments = RouterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<RouterMsg>,
        args: RouterArgs,
    ) -> Result<RouterState, ActorProcessingErr> {
        let in_flight = Arc::new(Semaphore::new(args.max_in_flight));
        Ok(RouterState { args, in_flight })
    }

    async fn handle(
        &self,
        _myself: ActorRef<RouterMsg>,
        msg: RouterMsg,
        state: &mut RouterState,
    ) -> Result<(), ActorProcessingErr> {
        let args = &state.args;
        match msg {
            RouterMsg::Route(raw, reply) => {
                let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
                    metrics::counter!("bazaar_router_busy_total").increment(1);
                    let _ = reply.send(Routed::Busy.encode());
                    return Ok(());
                };
                let Ok(request) = serde_json::from_str::<RouteRequest>(&raw) else {
                    let _ = reply.send(Routed::Unknown.encode());
                    return Ok(());
                };
                // Dispatching happens here, in order, so requests from one peer reach an entity in
                // the order they were sent; only the wait for the answer moves to a task.
                let answer = route(args, request);
                let view = args.view.clone();
                tokio::spawn(async move {
                    let mut text = answer.await.encode();
                    // An answer over the caller's frame limit would drop the session to it.
                    if !view.fits(&text) {
                        metrics::counter!("bazaar_router_refused_too_large_total").increment(1);
                        text = Routed::TooLarge.encode();
                    }
                    let _ = reply.send(text);
                    drop(permit);
                });
            }
            RouterMsg::Publish(raw) => match serde_json::from_str::<Envelope>(&raw) {
                Ok(envelope) => {
                    args.local.published(envelope);
                    args.appended.notify_one();
                    args.appended.notify_waiters();
                }
                Err(e) => warn!(reason = %e, "unreadable event from a peer"),
            },
            RouterMsg::Presence(raw) => {
                if let Ok(update) = serde_json::from_str::<PresenceUpdate>(&raw) {
                    args.local.presence(update);
                }
            }
            RouterMsg::Relay(raw) => {
                if let Ok(frame) = serde_json::from_str::<RoomFrame>(&raw) {
                    args.local.relay(frame);
                }
            }
            RouterMsg::Ping(_, reply) => {
                let _ = reply.send(args.view.self_name().to_owned());
            }
            RouterMsg::OutboxQueued(_) => args.outbox_queued.notify_one(),
            RouterMsg::Stats(_, reply) => {
                let live = args.local.live();
                tokio::spawn(async move {
                    let stats = NodeStats { entities: live.await };
                    let _ = reply.send(serde_json::to_string(&stats).unwrap_or_default());
                });
            }
        }
        Ok(())
    }
}

/// Sends a routed request to the entity here, or forwards it once to the owner this node sees.
fn route(args: &RouterArgs, request: RouteRequest) -> BoxFuture<'static, Routed> {
    use futures_util::FutureExt;
    if request.hops == 0 {
        if let Placement::Remote(_, owner) = args.view.placement(&request.kind, &request.id) {
            let forwarded = RouteRequest { hops: 1, ..request };
            return match call_route(&owner, &forwarded, args.timeout, args.max_remote_bytes) {
                Ok(call) => call.map(|r| r.unwrap_or(Routed::Dropped)).boxed(),
                Err(TooLarge) => futures_util::future::ready(Routed::Dropped).boxed(),
            };
        }
    }
    match args.local.dispatch(&request.kind, &request.id, &request.name, &request.payload) {
        Some(answer) => {
            let timeout = args.timeout;
            async move { tokio::time::timeout(timeout, answer).await.unwrap_or(Routed::Dropped) }.boxed()
        }
        None => futures_util::future::ready(Routed::Unknown).boxed(),
    }
}

/// Why a routed call got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteFailure {
    /// The peer is gone or the session dropped.
    Unreachable,
    /// No answer in time (or the session dropped while waiting: the outcome is unknown).
    Timeout,
}

/// Room for the frame around a routed request (protobuf envelope, length prefixes, variant name);
/// measured at 32 bytes, doubled for safety.
pub const FRAME_OVERHEAD: usize = 64;

/// The request was too large to send (it would exceed `max_bytes` on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Sends a routed request to a router and awaits the raw answer. The message leaves before this
/// returns, so routed requests keep the order in which they were made. A request whose frame
/// would exceed `max_bytes` is refused here: the receiving node would drop the whole session.
pub fn call_route(
    router: &ActorRef<RouterMsg>,
    request: &RouteRequest,
    timeout: Duration,
    max_bytes: usize,
) -> Result<BoxFuture<'static, Result<Routed, RouteFailure>>, TooLarge> {
    use futures_util::FutureExt;
    let raw = serde_json::to_string(request).unwrap_or_default();
    if raw.len() + FRAME_OVERHEAD > max_bytes {
        metrics::counter!("bazaar_router_refused_too_large_total").increment(1);
        return Err(TooLarge);
    }
    let (tx, rx) = ractor::concurrency::oneshot();
    let sent = router.send_message(RouterMsg::Route(raw, RpcReplyPort::from((tx, timeout))));
    Ok(async move {
        sent.map_err(|_| RouteFailure::Unreachable)?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(text)) => Ok(Routed::decode(text)),
            Ok(Err(_)) | Err(_) => Err(RouteFailure::Timeout),
        }
    }
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_crosses_the_wire_and_back() {
        for routed in [
            Routed::Answered(r#"{"Ok":{"id":"o1"}}"#.to_owned()),
            Routed::Answered("\"text\"".to_owned()),
            Routed::Dropped,
            Routed::Unknown,
            Routed::Busy,
            Routed::TooLarge,
        ] {
            assert_eq!(Routed::decode(routed.clone().encode()), routed);
        }
        assert_eq!(Routed::decode("!from_a_newer_version".to_owned()), Routed::Dropped);
    }
}
