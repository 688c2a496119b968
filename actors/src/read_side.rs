//! What the front end reads without asking an entity: the listings (orders by buyer or seller,
//! products by seller, rooms by member), a room's history pages, an account by e-mail for login,
//! the buyer-seller relation of the profile rule, and the earlier answer to a retried request.
//! Each is a read of rows the entities wrote in their own transactions, through the read pool, so
//! it never queues behind a command. The front end holds this, not the store: everything else it
//! does goes through the entities.

use crate::idempotency::{self, Earlier, IdempotencyKey};
use crate::store::backend::{Backend, OnBackend};
use crate::store::{catalog, chat, orders, users, Store, StoreError};
use bazaar_protocol::catalog::Product;
use bazaar_protocol::chat::{ChatMessage, Room};
use bazaar_protocol::orders::{Order, OrderStatus};
use bazaar_protocol::Page;

pub use crate::store::orders::Side;
pub use crate::store::users::UserRecord;

/// The reads of [this module](self), over the node's store.
#[derive(Clone)]
pub struct ReadSide {
    store: Store,
}

impl ReadSide {
    /// Reads over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// One page of `user_id`'s orders as buyer or seller, newest first, optionally of one status.
    pub async fn orders(
        &self,
        user_id: &str,
        side: Side,
        status: Option<OrderStatus>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Order>, StoreError> {
        orders::list(&self.store, user_id, side, status, limit, cursor).await
    }

    /// One page of the catalog, or of one seller's products.
    pub async fn products(
        &self,
        seller_id: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Page<Product>, StoreError> {
        catalog::list(&self.store, seller_id, limit, cursor).await
    }

    /// One page of the rooms `user_id` is a member of.
    pub async fn rooms_of(&self, user_id: &str, limit: u32, cursor: Option<&str>) -> Result<Page<Room>, StoreError> {
        chat::rooms_of(&self.store, user_id, limit, cursor).await
    }

    /// A page of a room's messages before `before` (the newest when `None`), newest first.
    pub async fn history(
        &self,
        room_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        chat::history(&self.store, room_id, before, limit).await
    }

    /// A room's messages after seq `after` up to `upto`, oldest first, at most `limit`: a replay page.
    pub async fn messages_between(
        &self,
        room_id: &str,
        after: i64,
        upto: i64,
        limit: u32,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        chat::range(&self.store, room_id, after, upto, limit).await
    }

    /// The account with this (normalised) e-mail, with its password hash, for login.
    pub async fn account_by_email(&self, email: &str) -> Result<Option<UserRecord>, StoreError> {
        users::find_by_email(&self.store, email).await
    }

    /// The account with this id.
    pub async fn account(&self, id: &str) -> Result<Option<UserRecord>, StoreError> {
        users::load(&self.store, id).await
    }

    /// Whether `buyer` has an order from `seller` that reached PAID (the profile rule).
    pub async fn has_paid_order(&self, buyer: &str, seller: &str) -> Result<bool, StoreError> {
        users::has_paid_order(&self.store, buyer, seller).await
    }

    /// What an earlier request with `key` left, for a checkout's retry ([`idempotency::peek`]).
    pub async fn earlier(&self, key: &IdempotencyKey) -> Result<Earlier, StoreError> {
        idempotency::peek(&self.store, key).await
    }

    /// Whether the database answers (the readiness probe).
    pub async fn ping(&self) -> bool {
        self.store.ping().await
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.store.backend()
    }
}
