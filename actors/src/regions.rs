//! Every kind's region on this node, in one handle.

use crate::chat_room::RoomState;
use crate::checkout::entity::CheckoutState;
use crate::cluster::router::Routed;
use crate::entity::Entity;
use crate::order::OrderState;
use crate::payment::PaymentState;
use crate::product::ProductState;
use crate::region::RegionRef;
use crate::user::UserState;
use futures_util::future::BoxFuture;
use std::collections::BTreeMap;

/// The regions of this node, one per entity kind.
#[derive(Clone)]
pub struct Regions {
    pub users: RegionRef<UserState>,
    pub products: RegionRef<ProductState>,
    pub orders: RegionRef<OrderState>,
    pub payments: RegionRef<PaymentState>,
    pub rooms: RegionRef<RoomState>,
    pub checkouts: RegionRef<CheckoutState>,
}

impl Regions {
    /// Delivers a request that came from another node to the region of `kind`; `None` when
    /// the kind or the request is unknown.
    pub fn dispatch(&self, kind: &str, id: &str, name: &str, payload: &str) -> Option<BoxFuture<'static, Routed>> {
        match kind {
            UserState::KIND => self.users.deliver_remote(id, name, payload),
            ProductState::KIND => self.products.deliver_remote(id, name, payload),
            OrderState::KIND => self.orders.deliver_remote(id, name, payload),
            PaymentState::KIND => self.payments.deliver_remote(id, name, payload),
            RoomState::KIND => self.rooms.deliver_remote(id, name, payload),
            CheckoutState::KIND => self.checkouts.deliver_remote(id, name, payload),
            _ => None,
        }
    }

    /// Live entities per kind on this node.
    pub async fn live(&self) -> BTreeMap<String, usize> {
        BTreeMap::from([
            (UserState::KIND.to_owned(), self.users.live().await),
            (ProductState::KIND.to_owned(), self.products.live().await),
            (OrderState::KIND.to_owned(), self.orders.live().await),
            (PaymentState::KIND.to_owned(), self.payments.live().await),
            (RoomState::KIND.to_owned(), self.rooms.live().await),
            (CheckoutState::KIND.to_owned(), self.checkouts.live().await),
        ])
    }

    /// Passivates, in every region, the entities this node no longer owns.
    pub fn rebalance(&self) {
        self.users.rebalance();
        self.products.rebalance();
        self.orders.rebalance();
        self.payments.rebalance();
        self.rooms.rebalance();
        self.checkouts.rebalance();
    }

    /// Stops every region.
    pub fn stop(&self) {
        self.users.stop();
        self.products.stop();
        self.orders.stop();
        self.payments.stop();
        self.rooms.stop();
        self.checkouts.stop();
    }
}
