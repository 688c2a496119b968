//! Multi-node tests of the `bazaar` binary: every test writes its own cluster config (fresh ports,
//! one shared data directory in a temporary folder), starts separate `bazaar serve` processes from
//! it (see [`support`], built on [`common`], which the `api` tests share), and talks to them over
//! HTTP and WebSocket only.
//!
//! One module per concern: `by_name` forms a cluster whose peers are all host names;
//! `consistency` reads entities through nodes other than the one that wrote them; `chat` joins
//! sockets on different nodes to one room; `kafka_chat` cuts a node's peer links while Kafka
//! carries its chat; `membership` covers the cookie, a node joining under load and the framework's
//! session lines kept out of the default log; `cluster_up`
//! starts and stops a whole cluster with one command; `silent_peer` stops a node without closing
//! its connections; `failover` kills a node under load; `frame_limit` sends a routed request
//! larger than the inter-node frame limit; `idle` measures what an idle cluster costs; `webhooks` delivers
//! events decided on every node and survives the sending node's death.

#[path = "../common/mod.rs"]
mod common;
mod support;
#[path = "../common/webhook_receiver.rs"]
mod webhook_receiver;

mod by_name;
mod chat;
mod checkout;
mod cluster_up;
mod consistency;
mod failover;
mod frame_limit;
mod idle;
mod kafka_chat;
mod membership;
mod revocation;
mod silent_peer;
mod webhooks;
