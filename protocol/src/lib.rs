//! Wire types of bazaar: what crosses the HTTP, WebSocket and event-log boundaries.
//!
//! A request enters as one of the bodies in [`auth`], [`cart`], [`checkout`], [`catalog`], [`orders`], [`payments`],
//! [`webhooks`] or [`chat`], is checked into the domain types of [`values`] by the front end, becomes a command for
//! an entity actor, and leaves as the same module's view type (or an [`error::ErrorCode`]). What an
//! entity decided is recorded as an [`events::Envelope`]; WebSocket traffic is the
//! [`chat::ClientFrame`] and [`chat::ServerFrame`] pair. Plain data and serde only: no runtime, no I/O.
//! With the `openapi` feature (the node's) the wire types also derive utoipa's `ToSchema`: the
//! schemas of `/openapi.json` are these definitions.

pub mod auth;
pub mod cart;
pub mod catalog;
pub mod chat;
pub mod checkout;
pub mod error;
pub mod events;
pub mod ids;
pub mod orders;
pub mod payments;
pub mod values;
pub mod webhooks;

pub use error::ErrorCode;
pub use ids::{CheckoutId, EventId, OrderId, PaymentId, ProductId, RoomId, UserId};

/// One page of a listing; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items of this page, in the listing's order.
    pub items: Vec<T>,
    /// The cursor to pass for the next page, absent on the last one.
    pub next_cursor: Option<String>,
}
