//! The actor side of bazaar: domain state machines, the entity actors that wrap them, and the
//! machinery that keeps them durable and spreads them over a cluster.
//!
//! A command from the front end goes to a kind's region ([`region::RegionRef`], all of them in
//! [`regions`]). If this node owns the entity ([`placement`], [`cluster`]) the region activates
//! the entity actor ([`user`], [`product`], [`order`], [`payment`], [`chat_room`], each an
//! [`entity::Entity`]); otherwise the request travels to the owner's router
//! ([`cluster::router`]). The entity decides with plain
//! functions on its state, then commits state, events, outbox row and idempotency record in one
//! transaction ([`store`], group-committed) before it replies; a command that lost a race is
//! decided again ([`attempt`]). The [`relay`] moves committed events into the embedded event log
//! and on to every node; the [`saga`] consumer reads the log and drives the next steps (charge,
//! mark paid, release stock); [`webhooks`] turns the log into signed deliveries to sellers'
//! endpoints, retried until answered; [`reservations`] cancels orders left unpaid past their hold; [`checkout`] turns a cart into
//! one order per seller, every line reserved or none; the
//! [`socket_hub`] pushes chat messages and order updates to the WebSocket [`session`]s of this
//! node, fed by the relay and, on a Kafka cluster, by its own reader of the log
//! ([`socket_feed`]). [`payment_gateway`] is where money moves, [`cache`]
//! is Redis in front of SQL, and [`system`] starts all of it.

pub mod attempt;
pub mod cache;
pub mod cart;
pub mod chat_room;
pub mod checkout;
pub mod cluster;
pub mod entity;
pub mod event_log;
pub mod idempotency;
pub mod login_sessions;
pub mod order;
pub mod order_timeline;
pub mod payment;
pub mod payment_gateway;
pub mod placement;
pub mod product;
pub mod read_side;
pub mod region;
pub mod regions;
pub mod relay;
pub mod reservations;
pub mod saga;
pub mod session;
pub mod socket_feed;
pub mod socket_hub;
pub mod store;
pub mod system;
pub mod user;
pub mod webhooks;
