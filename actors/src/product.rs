//! The product entity: the catalog entry and its stock. Placing an order goes through the
//! product, because the stock check, the reservation and the new order row must commit together.

use crate::attempt::Attempt;
use crate::entity::{Ctx, Entity, EntityRef};
use crate::idempotency::{self, Earlier, IdempotencyKey};
use crate::store::{self, catalog, orders, Lookup, StoreError};
use crate::with_retries;
use bazaar_protocol::catalog::Product;
use bazaar_protocol::events::{Envelope, Event, StockChanged};
use bazaar_protocol::orders::{Order, OrderLine, OrderStatus};
use bazaar_protocol::values::{Quantity, MAX_STOCK};
use bazaar_protocol::{EventId, OrderId, ProductId, UserId};
use chrono::{DateTime, Utc};
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

/// Why a product command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ProductError {
    #[error("product not found")]
    NotFound,
    #[error("only the product's seller may change it")]
    Forbidden,
    #[error("not enough stock")]
    OutOfStock,
    #[error("the idempotency key was used for a different request")]
    IdempotencyMismatch,
    #[error("a product with this id exists")]
    AlreadyExists,
    /// The new stock plus the units open orders hold would exceed [`MAX_STOCK`]: those units
    /// come back to the stock when the orders are cancelled, and the maximum must hold then too.
    #[error("stock plus the {reserved} reserved units would exceed the maximum")]
    StockAboveMaximum {
        /// Units reserved by orders not yet released.
        reserved: i64,
    },
    /// A checkout line asked for after it was given up (its checkout failed meanwhile).
    #[error("this reservation was given up")]
    Withdrawn,
    #[error("storage unavailable")]
    Unavailable,
}

type Reply<T> = RpcReplyPort<Result<T, ProductError>>;

/// A validated new product.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewProduct {
    pub seller_id: UserId,
    pub name: String,
    pub description: String,
    pub price: i64,
    pub currency: String,
    pub stock: i64,
}

/// Validated changes to a product; `None` keeps the field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProductChanges {
    pub price: Option<i64>,
    pub stock: Option<i64>,
    pub name: Option<String>,
    pub description: Option<String>,
}

/// An order to place against this product.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// The id the new order gets (chosen by the caller so retries can be recognised).
    pub order_id: OrderId,
    pub buyer_id: UserId,
    pub quantity: Quantity,
    pub idempotency: IdempotencyKey,
}

/// A checkout's line to reserve: `quantity` units for order `order_id` (which the checkout creates
/// once every line is reserved). Reserving a line twice reserves it once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReserveLine {
    pub order_id: OrderId,
    pub quantity: Quantity,
}

/// A line as reserved: the price it was reserved at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedLine {
    pub product_id: ProductId,
    pub seller_id: UserId,
    pub quantity: u32,
    pub unit_price: i64,
    pub currency: String,
}

/// Gives up a checkout's line: its units go back if it was reserved, and it can never be
/// reserved after this.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgoLine {
    pub order_id: OrderId,
}

/// The order a placement produced, and whether this call created it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placed {
    pub order: Order,
    pub created: bool,
}

/// Messages a product entity accepts. Local-only: entities never cross nodes.
pub enum ProductMsg {
    /// Lists a new product under this id.
    Create(NewProduct, Reply<Product>),
    /// Reads the product.
    Get(Reply<Product>),
    /// Changes the product on behalf of `seller`.
    Update { seller: UserId, changes: ProductChanges, reply: Reply<Product> },
    /// Reserves stock and creates the order in one transaction.
    PlaceOrder(PlaceOrder, Reply<Placed>),
    /// Gives an order's reserved units back (once), because of event `cause`.
    Release { order_id: OrderId, cause: EventId, reply: Reply<()> },
    /// Reserves a checkout's line.
    ReserveLine(ReserveLine, Reply<ReservedLine>),
    /// Gives up a checkout's line.
    ForgoLine(ForgoLine, Reply<()>),
}

/// Lists a new product under the entity's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListProduct(pub NewProduct);
crate::request!(ListProduct, ProductState, "product.list", Result<Product, ProductError>, |self, reply| ProductMsg::Create(self.0, reply));

/// Reads the product.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetProduct;
crate::request!(read GetProduct, ProductState, "product.get", Result<Product, ProductError>, |self, reply| ProductMsg::Get(reply));

/// Changes the product on behalf of its seller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateProduct {
    pub seller: UserId,
    pub changes: ProductChanges,
}
crate::request!(UpdateProduct, ProductState, "product.update", Result<Product, ProductError>, |self, reply| ProductMsg::Update { seller: self.seller, changes: self.changes, reply });

crate::request!(PlaceOrder, ProductState, "product.place_order", Result<Placed, ProductError>, |self, reply| ProductMsg::PlaceOrder(self, reply));

/// Gives an order's reserved units back (once), because of event `cause`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseStock {
    pub order_id: OrderId,
    pub cause: EventId,
}
crate::request!(ReleaseStock, ProductState, "product.release", Result<(), ProductError>, |self, reply| ProductMsg::Release { order_id: self.order_id, cause: self.cause, reply });

crate::request!(ReserveLine, ProductState, "product.reserve_line", Result<ReservedLine, ProductError>, |self, reply| ProductMsg::ReserveLine(self, reply));
crate::request!(ForgoLine, ProductState, "product.forgo_line", Result<(), ProductError>, |self, reply| ProductMsg::ForgoLine(self, reply));

crate::remote_requests!(ProductState: ListProduct, GetProduct, UpdateProduct, PlaceOrder, ReleaseStock, ReserveLine, ForgoLine);

/// The product entity's state: the product (if it exists) and its stored version.
pub struct ProductState {
    id: ProductId,
    product: Option<Product>,
    version: i64,
}

impl ProductState {
    fn existing(&self) -> Result<&Product, ProductError> {
        self.product.as_ref().ok_or(ProductError::NotFound)
    }

    /// Decides what a new listing looks like.
    pub fn create(&self, new: NewProduct) -> Result<Product, ProductError> {
        if self.product.is_some() {
            return Err(ProductError::AlreadyExists);
        }
        Ok(Product {
            id: self.id.clone(),
            seller_id: new.seller_id,
            name: new.name,
            description: new.description,
            price: new.price,
            currency: new.currency,
            stock: new.stock,
        })
    }

    /// Decides the product after `seller`'s changes, while open orders hold `reserved` units.
    pub fn change(&self, seller: &UserId, changes: &ProductChanges, reserved: i64) -> Result<Product, ProductError> {
        let current = self.existing()?;
        if &current.seller_id != seller {
            return Err(ProductError::Forbidden);
        }
        let mut next = current.clone();
        if let Some(price) = changes.price {
            next.price = price;
        }
        if let Some(stock) = changes.stock {
            // Refused rather than clamped when the units come back: a seller who set a stock
            // learns now that it cannot hold, instead of finding units silently dropped later.
            if stock.saturating_add(reserved) > MAX_STOCK {
                return Err(ProductError::StockAboveMaximum { reserved });
            }
            next.stock = stock;
        }
        if let Some(name) = &changes.name {
            next.name = name.clone();
        }
        if let Some(description) = &changes.description {
            next.description = description.clone();
        }
        Ok(next)
    }

    /// Decides a placement: the product with its stock reserved, and the new order, which holds
    /// that stock unpaid for `hold`.
    pub fn place(
        &self,
        cmd: &PlaceOrder,
        now: DateTime<Utc>,
        hold: std::time::Duration,
    ) -> Result<(Product, Order), ProductError> {
        let current = self.existing()?;
        let quantity = i64::from(cmd.quantity.get());
        if current.stock < quantity {
            return Err(ProductError::OutOfStock);
        }
        let mut after = current.clone();
        after.stock -= quantity;
        // Prices are capped so that price × quantity fits an i64 (see `values::MAX_PRICE`).
        let amount = current.price.saturating_mul(quantity);
        let order = Order {
            id: cmd.order_id.clone(),
            buyer_id: cmd.buyer_id.clone(),
            seller_id: current.seller_id.clone(),
            product_id: current.id.clone(),
            quantity: cmd.quantity.get(),
            amount,
            currency: current.currency.clone(),
            status: OrderStatus::Ordered,
            created_at: now,
            updated_at: now,
            // A hold too long for chrono is no hold at all (the order waits for its buyer).
            expires_at: chrono::Duration::from_std(hold).ok().and_then(|hold| now.checked_add_signed(hold)),
            payment_id: None,
            lines: vec![OrderLine {
                product_id: current.id.clone(),
                quantity: cmd.quantity.get(),
                unit_price: current.price,
                amount,
            }],
            checkout_id: None,
        };
        Ok((after, order))
    }

    /// Decides a checkout line's reservation: the product with `quantity` units fewer, and the
    /// line at today's price.
    pub fn reserve_line(&self, quantity: Quantity) -> Result<(Product, ReservedLine), ProductError> {
        let current = self.existing()?;
        let units = i64::from(quantity.get());
        if current.stock < units {
            return Err(ProductError::OutOfStock);
        }
        let mut after = current.clone();
        after.stock -= units;
        let line = ReservedLine {
            product_id: current.id.clone(),
            seller_id: current.seller_id.clone(),
            quantity: quantity.get(),
            unit_price: current.price,
            currency: current.currency.clone(),
        };
        Ok((after, line))
    }

    async fn reload(&mut self, ctx: &Ctx) -> Result<(), StoreError> {
        *self = Self::load(self.id.as_str(), ctx).await?;
        Ok(())
    }

    fn stock_event(&self, after: &Product, delta: i64, order_id: Option<OrderId>, now: DateTime<Utc>) -> Envelope {
        Envelope::new(
            after.id.as_str(),
            self.version + 1,
            now,
            Event::StockChanged(StockChanged { product_id: after.id.clone(), stock: after.stock, delta, order_id }),
        )
    }

    async fn try_create(&mut self, new: &NewProduct, ctx: &Ctx) -> Result<Product, Attempt<ProductError>> {
        let product = self.create(new.clone()).map_err(Attempt::Refused)?;
        let now = Utc::now();
        let mut tx = ctx.store.begin().await?;
        catalog::insert(&mut tx, &product, now)?;
        let listed = Envelope::new(product.id.as_str(), 1, now, Event::ProductListed { product: product.clone() });
        store::append_events(&mut tx, &[listed])?;
        ctx.store.commit(tx).await?;
        self.product = Some(product.clone());
        self.version = 1;
        Ok(product)
    }

    async fn try_update(
        &mut self,
        seller: &UserId,
        changes: &ProductChanges,
        ctx: &Ctx,
    ) -> Result<Product, Attempt<ProductError>> {
        self.change(seller, changes, 0).map_err(Attempt::Refused)?;
        let before = self.existing().map_err(Attempt::Refused)?.stock;
        let now = Utc::now();
        let mut tx = ctx.store.begin().await?;
        // Read in the transaction: reservations of this product change only through this entity.
        let reserved = if changes.stock.is_some() { catalog::reserved(&mut tx, self.id.as_str()).await? } else { 0 };
        let next = self.change(seller, changes, reserved).map_err(Attempt::Refused)?;
        catalog::update(&mut tx, &next, self.version)?;
        if next.stock != before {
            store::append_events(&mut tx, &[self.stock_event(&next, next.stock - before, None, now)])?;
        }
        ctx.store.commit(tx).await?;
        self.product = Some(next.clone());
        self.version += 1;
        Ok(next)
    }

    async fn try_place(
        &mut self,
        cmd: &PlaceOrder,
        lookup: Lookup,
        ctx: &Ctx,
    ) -> Result<Placed, Attempt<ProductError>> {
        let now = Utc::now();
        let decided = self.place(cmd, now, ctx.settings.reservation_hold);
        let mut tx = ctx.store.begin().await?;
        let key = &cmd.idempotency;
        match idempotency::check(&mut tx, key, idempotency::lookup_after(lookup, &decided)).await? {
            Earlier::Nothing => {}
            Earlier::Mismatch => return Err(Attempt::Refused(ProductError::IdempotencyMismatch)),
            Earlier::Done(order_id) => {
                let order = orders::load_in(&mut tx, &order_id)
                    .await?
                    .ok_or_else(|| Attempt::Store(StoreError::Corrupt("idempotency record without order".into())))?;
                return Ok(Placed { order, created: false });
            }
        }
        let (after, order) = decided.map_err(Attempt::Refused)?;
        catalog::update(&mut tx, &after, self.version)?;
        orders::insert(&mut tx, &order)?;
        let unit_price = order.items()[0].unit_price;
        catalog::reserve(&mut tx, order.id.as_str(), after.id.as_str(), order.quantity, unit_price)?;
        idempotency::record(&mut tx, key, order.id.as_str(), now)?;
        let events = [
            self.stock_event(&after, -i64::from(order.quantity), Some(order.id.clone()), now),
            Envelope::new(order.id.as_str(), 1, now, Event::OrderPlaced { order: order.clone() }),
        ];
        store::append_events(&mut tx, &events)?;
        ctx.store.commit(tx).await?;
        self.product = Some(after);
        self.version += 1;
        Ok(Placed { order, created: true })
    }

    async fn try_release(
        &mut self,
        order_id: &OrderId,
        cause: &EventId,
        ctx: &Ctx,
    ) -> Result<(), Attempt<ProductError>> {
        let mut tx = ctx.store.begin().await?;
        // One event (an order's cancellation) releases each of its lines at its own product: the
        // mark is per product.
        if !store::mark_processed(&mut tx, "release", &format!("{cause}/{}", self.id), Lookup::Read).await? {
            return Ok(());
        }
        let Some(quantity) = catalog::release(&mut tx, order_id.as_str(), self.id.as_str()).await? else {
            // Released before under another event (a refund after a cancel cannot happen, but a
            // replayed log can deliver the same release twice under different ids).
            ctx.store.commit(tx).await?;
            return Ok(());
        };
        let mut after = self.existing().map_err(Attempt::Refused)?.clone();
        after.stock += quantity;
        let now = Utc::now();
        catalog::update(&mut tx, &after, self.version)?;
        store::append_events(&mut tx, &[self.stock_event(&after, quantity, Some(order_id.clone()), now)])?;
        ctx.store.commit(tx).await?;
        self.product = Some(after);
        self.version += 1;
        Ok(())
    }

    async fn try_reserve_line(&mut self, cmd: &ReserveLine, ctx: &Ctx) -> Result<ReservedLine, Attempt<ProductError>> {
        let current = self.existing().map_err(Attempt::Refused)?.clone();
        let mut tx = ctx.store.begin().await?;
        match catalog::reservation(&mut tx, cmd.order_id.as_str(), self.id.as_str()).await? {
            Some(held) if held.released => return Err(Attempt::Refused(ProductError::Withdrawn)),
            // Reserved before (a retried checkout): the same line, at the price it was reserved at.
            Some(held) => {
                return Ok(ReservedLine {
                    product_id: current.id.clone(),
                    seller_id: current.seller_id.clone(),
                    quantity: held.quantity as u32,
                    unit_price: held.unit_price.unwrap_or(current.price),
                    currency: current.currency.clone(),
                })
            }
            None => {}
        }
        let (after, line) = self.reserve_line(cmd.quantity).map_err(Attempt::Refused)?;
        let now = Utc::now();
        catalog::update(&mut tx, &after, self.version)?;
        catalog::reserve(&mut tx, cmd.order_id.as_str(), self.id.as_str(), line.quantity, line.unit_price)?;
        let units = -i64::from(line.quantity);
        store::append_events(&mut tx, &[self.stock_event(&after, units, Some(cmd.order_id.clone()), now)])?;
        ctx.store.commit(tx).await?;
        self.product = Some(after);
        self.version += 1;
        Ok(line)
    }

    async fn try_forgo_line(&mut self, cmd: &ForgoLine, ctx: &Ctx) -> Result<(), Attempt<ProductError>> {
        let mut tx = ctx.store.begin().await?;
        match catalog::reservation(&mut tx, cmd.order_id.as_str(), self.id.as_str()).await? {
            Some(held) if held.released => Ok(()),
            None => {
                catalog::forgo(&mut tx, cmd.order_id.as_str(), self.id.as_str())?;
                ctx.store.commit(tx).await?;
                Ok(())
            }
            Some(_) => {
                let quantity = catalog::release(&mut tx, cmd.order_id.as_str(), self.id.as_str()).await?.unwrap_or(0);
                let mut after = self.existing().map_err(Attempt::Refused)?.clone();
                after.stock += quantity;
                catalog::update(&mut tx, &after, self.version)?;
                let event = self.stock_event(&after, quantity, Some(cmd.order_id.clone()), Utc::now());
                store::append_events(&mut tx, &[event])?;
                ctx.store.commit(tx).await?;
                self.product = Some(after);
                self.version += 1;
                Ok(())
            }
        }
    }
}

impl Entity for ProductState {
    const KIND: &'static str = "product";
    type Msg = ProductMsg;

    async fn load(id: &str, ctx: &Ctx) -> Result<Self, StoreError> {
        let found = catalog::load(&ctx.store, id).await?;
        let version = found.as_ref().map_or(0, |(_, v)| *v);
        Ok(Self { id: id.into(), product: found.map(|(p, _)| p), version })
    }

    async fn handle(&mut self, msg: ProductMsg, ctx: &Ctx, _myself: &EntityRef<Self>) {
        match msg {
            ProductMsg::Create(new, reply) => {
                let _ = reply.send(with_retries!(self, ctx, ProductError::Unavailable, self.try_create(&new, ctx)));
            }
            ProductMsg::Get(reply) => {
                let _ = reply.send(self.existing().cloned());
            }
            ProductMsg::Update { seller, changes, reply } => {
                let _ = reply.send(with_retries!(
                    self,
                    ctx,
                    ProductError::Unavailable,
                    self.try_update(&seller, &changes, ctx)
                ));
            }
            ProductMsg::PlaceOrder(cmd, reply) => {
                let _ =
                    reply
                        .send(with_retries!(self, ctx, ProductError::Unavailable, |lookup| self
                            .try_place(&cmd, lookup, ctx)));
            }
            ProductMsg::ReserveLine(cmd, reply) => {
                let _ =
                    reply.send(with_retries!(self, ctx, ProductError::Unavailable, self.try_reserve_line(&cmd, ctx)));
            }
            ProductMsg::ForgoLine(cmd, reply) => {
                let _ = reply.send(with_retries!(self, ctx, ProductError::Unavailable, self.try_forgo_line(&cmd, ctx)));
            }
            ProductMsg::Release { order_id, cause, reply } => {
                let _ = reply.send(with_retries!(
                    self,
                    ctx,
                    ProductError::Unavailable,
                    self.try_release(&order_id, &cause, ctx)
                ));
            }
        }
    }

    fn exists(&self) -> bool {
        self.product.is_some()
    }

    fn refuse(msg: ProductMsg) {
        match msg {
            ProductMsg::Create(_, reply) | ProductMsg::Get(reply) | ProductMsg::Update { reply, .. } => {
                let _ = reply.send(Err(ProductError::Unavailable));
            }
            ProductMsg::PlaceOrder(_, reply) => {
                let _ = reply.send(Err(ProductError::Unavailable));
            }
            ProductMsg::Release { reply, .. } | ProductMsg::ForgoLine(_, reply) => {
                let _ = reply.send(Err(ProductError::Unavailable));
            }
            ProductMsg::ReserveLine(_, reply) => {
                let _ = reply.send(Err(ProductError::Unavailable));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::test_support::{ctx_idle, ctx_over};
    use crate::region::{EntityCounts, RegionRef};
    use crate::store::{Durability, Store};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    async fn hibernated(region: &RegionRef<ProductState>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while region.counts().await != (EntityCounts { active: 0, hibernated: 1 }) {
            assert!(Instant::now() < deadline, "the product never hibernated");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A listing of 5 lamps by `seller`.
    fn lamp(seller: &UserId) -> NewProduct {
        NewProduct {
            seller_id: seller.clone(),
            name: "lamp".into(),
            description: String::new(),
            price: 1_000,
            currency: "KRW".into(),
            stock: 5,
        }
    }

    fn key(user: &str, key: &str) -> IdempotencyKey {
        IdempotencyKey { user_id: user.into(), key: key.into(), request_hash: "h".into() }
    }

    #[tokio::test]
    async fn a_hibernated_product_changed_by_another_owner_is_never_written_on_a_stale_version() {
        // Two nodes over one database both believe they own the product (a view change in
        // flight). Each hibernates with the product in memory; one changes it; the other, woken
        // by an order, loses the version check, reloads and decides on the fresh stock.
        let hibernate = Duration::from_millis(100);
        let (ctx_a, db) = ctx_idle(hibernate, Duration::from_secs(60)).await;
        let store_b = Store::open(db.url(), Durability::Normal).await.unwrap();
        let ctx_b = ctx_over(store_b.clone(), hibernate, Duration::from_secs(60));
        let (a, b) = (RegionRef::<ProductState>::spawn(ctx_a).await.unwrap(), RegionRef::spawn(ctx_b).await.unwrap());
        let id = ProductId::generate();
        let seller = UserId::from("seller");
        let new = lamp(&seller);
        a.ask(id.as_str(), ListProduct(new)).await.unwrap().unwrap();
        assert_eq!(b.ask(id.as_str(), GetProduct).await.unwrap().unwrap().stock, 5);
        hibernated(&a).await;
        hibernated(&b).await;

        let changes = ProductChanges { stock: Some(2), ..ProductChanges::default() };
        b.ask(id.as_str(), UpdateProduct { seller, changes }).await.unwrap().unwrap();

        let order = PlaceOrder {
            order_id: OrderId::generate(),
            buyer_id: UserId::from("buyer"),
            quantity: Quantity::try_from(1).unwrap(),
            idempotency: key("buyer", "k1"),
        };
        let placed = a.ask(id.as_str(), order).await.unwrap().unwrap();
        assert!(placed.created);
        assert_eq!(a.ask(id.as_str(), GetProduct).await.unwrap().unwrap().stock, 1, "decided on the fresh stock");

        // B's copy is stale now; its next write loses the version check too and reloads.
        let order = PlaceOrder {
            order_id: OrderId::generate(),
            buyer_id: UserId::from("buyer"),
            quantity: Quantity::try_from(2).unwrap(),
            idempotency: key("buyer", "k2"),
        };
        assert!(matches!(b.ask(id.as_str(), order).await.unwrap(), Err(ProductError::OutOfStock)));
        let (stored, version) = catalog::load(&store_b, id.as_str()).await.unwrap().unwrap();
        // Created, updated, one order: three commits, one per version.
        assert_eq!((stored.stock, version), (1, 3));
    }

    #[tokio::test]
    async fn a_product_changed_by_a_node_out_of_sight_is_read_again_when_the_view_changes() {
        // Node A holds the product in memory while another node, out of A's sight, owns and
        // changes it (a partition). When A's view becomes whole again, A must read the product
        // again rather than answer from its old copy (the fault runner saw a PAID order read back
        // as PAYMENT_PENDING from such a copy after a partition healed).
        let (mut ctx_a, db) = ctx_idle(Duration::from_secs(60), Duration::from_secs(60)).await;
        let view = Arc::new(crate::cluster::ClusterView::new("a", 1 << 20));
        ctx_a.cluster = Some(view.clone());
        let store_b = Store::open(db.url(), Durability::Normal).await.unwrap();
        let ctx_b = ctx_over(store_b.clone(), Duration::from_secs(60), Duration::from_secs(60));
        let (a, b) = (RegionRef::<ProductState>::spawn(ctx_a).await.unwrap(), RegionRef::spawn(ctx_b).await.unwrap());
        let id = ProductId::generate();
        let seller = UserId::from("seller");
        let new = lamp(&seller);
        a.ask(id.as_str(), ListProduct(new)).await.unwrap().unwrap();
        let restock = |stock| UpdateProduct {
            seller: seller.clone(),
            changes: ProductChanges { stock: Some(stock), ..ProductChanges::default() },
        };

        b.ask(id.as_str(), restock(2)).await.unwrap().unwrap();
        view.confirm_whole(Some(Instant::now() + Duration::from_secs(3600)));
        assert_eq!(a.ask(id.as_str(), GetProduct).await.unwrap().unwrap().stock, 2, "read again once whole");

        // Out of sight again, then whole again: read once more.
        view.confirm_whole(None);
        b.ask(id.as_str(), restock(4)).await.unwrap().unwrap();
        view.confirm_whole(Some(Instant::now() + Duration::from_secs(3600)));
        assert_eq!(a.ask(id.as_str(), GetProduct).await.unwrap().unwrap().stock, 4);
        // Its writes decide on the fresh stock, without losing a version check first.
        let order = PlaceOrder {
            order_id: OrderId::generate(),
            buyer_id: UserId::from("buyer"),
            quantity: Quantity::try_from(4).unwrap(),
            idempotency: key("buyer", "k1"),
        };
        assert!(a.ask(id.as_str(), order).await.unwrap().unwrap().created);
        let (stored, version) = catalog::load(&store_b, id.as_str()).await.unwrap().unwrap();
        // Created, restocked twice, one order: four commits, none lost to a conflict.
        assert_eq!((stored.stock, version), (0, 4));
    }

    mod replay {
        //! Property: whatever a seller and buyers do to a product, with the node restarting in
        //! between, the product in memory is the stored row, the model's stock and price, and the
        //! product's events replayed (the listing, then every stock change) give the same stock.

        use super::*;
        use crate::region::test_support::ctx;
        use crate::store::history;
        use bazaar_protocol::events::topics;
        use proptest::prelude::*;

        #[derive(Debug, Clone)]
        enum Step {
            /// A buyer orders this many units: a new order under its own key.
            Order(u32),
            /// An order placed before (the n-th, wrapping) is sent again under its key.
            Repeat(usize),
            /// An order placed before is released because of an event; `twice`: delivered again
            /// under the same event and under another one.
            Release(usize, bool),
            /// The seller sets the stock.
            Restock(i64),
            /// The seller sets the price.
            Reprice(i64),
            /// The node restarts: the region goes, a new one loads the product from storage.
            Restart,
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (1_u32..=3).prop_map(Step::Order),
                1 => any::<usize>().prop_map(Step::Repeat),
                2 => (any::<usize>(), any::<bool>()).prop_map(|(n, twice)| Step::Release(n, twice)),
                1 => (0_i64..=8).prop_map(Step::Restock),
                1 => (1_i64..=5_000).prop_map(Step::Reprice),
                1 => Just(Step::Restart),
            ]
        }

        /// What the product should be: its stock and price, and the orders placed (released or not).
        struct Model {
            stock: i64,
            price: i64,
            placed: Vec<(PlaceOrder, bool)>,
        }

        async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
            let (ctx, _db) = ctx(Duration::from_secs(60)).await;
            let mut region = RegionRef::<ProductState>::spawn(ctx.clone()).await.unwrap();
            let id = ProductId::generate();
            let seller = UserId::from("seller");
            let listed = region.ask(id.as_str(), ListProduct(lamp(&seller))).await.unwrap().unwrap();
            let mut model = Model { stock: listed.stock, price: listed.price, placed: Vec::new() };
            let update = |changes| UpdateProduct { seller: seller.clone(), changes };
            for step in steps {
                match step {
                    Step::Order(units) => {
                        let n = model.placed.len();
                        let cmd = PlaceOrder {
                            order_id: OrderId::generate(),
                            buyer_id: UserId::from("buyer"),
                            quantity: Quantity::try_from(i64::from(units)).unwrap(),
                            idempotency: key("buyer", &format!("k{n}")),
                        };
                        let answer = region.ask(id.as_str(), cmd.clone()).await.unwrap();
                        if model.stock >= i64::from(units) {
                            let placed = answer.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
                            prop_assert!(placed.created);
                            prop_assert_eq!(&placed.order.id, &cmd.order_id);
                            model.stock -= i64::from(units);
                            model.placed.push((cmd, false));
                        } else {
                            prop_assert_eq!(answer.unwrap_err(), ProductError::OutOfStock);
                        }
                    }
                    Step::Repeat(n) if !model.placed.is_empty() => {
                        let (cmd, _) = &model.placed[n % model.placed.len()];
                        let placed = region.ask(id.as_str(), cmd.clone()).await.unwrap().unwrap();
                        prop_assert!(!placed.created, "a repeated order is answered, not placed again");
                        prop_assert_eq!(&placed.order.id, &cmd.order_id);
                    }
                    Step::Release(n, twice) if !model.placed.is_empty() => {
                        let at = n % model.placed.len();
                        let order_id = model.placed[at].0.order_id.clone();
                        let cause = EventId::generate();
                        let release =
                            |cause: &EventId| ReleaseStock { order_id: order_id.clone(), cause: cause.clone() };
                        region.ask(id.as_str(), release(&cause)).await.unwrap().unwrap();
                        if twice {
                            region.ask(id.as_str(), release(&cause)).await.unwrap().unwrap();
                            region.ask(id.as_str(), release(&EventId::generate())).await.unwrap().unwrap();
                        }
                        let (cmd, released) = &mut model.placed[at];
                        if !*released {
                            model.stock += i64::from(cmd.quantity.get());
                            *released = true;
                        }
                    }
                    Step::Repeat(_) | Step::Release(..) => {}
                    Step::Restock(stock) => {
                        let changes = ProductChanges { stock: Some(stock), ..ProductChanges::default() };
                        region.ask(id.as_str(), update(changes)).await.unwrap().unwrap();
                        model.stock = stock;
                    }
                    Step::Reprice(price) => {
                        let changes = ProductChanges { price: Some(price), ..ProductChanges::default() };
                        region.ask(id.as_str(), update(changes)).await.unwrap().unwrap();
                        model.price = price;
                    }
                    Step::Restart => {
                        region.stop();
                        region = RegionRef::spawn(ctx.clone()).await.unwrap();
                    }
                }
            }

            let in_memory = region.ask(id.as_str(), GetProduct).await.unwrap().unwrap();
            let (stored, _version) = catalog::load(&ctx.store, id.as_str()).await.unwrap().unwrap();
            prop_assert_eq!(&in_memory, &stored, "memory is the stored row");
            prop_assert_eq!((in_memory.stock, in_memory.price), (model.stock, model.price));

            let events = history::of_entity(&ctx.store, topics::ORDERS, id.as_str(), 10_000).await.unwrap();
            let mut replayed = match events.first().map(|e| &e.event) {
                Some(Event::ProductListed { product }) => product.stock,
                other => return Err(TestCaseError::fail(format!("the first event is {other:?}"))),
            };
            let mut last_seq = 0;
            for envelope in &events {
                prop_assert!(envelope.seq > last_seq, "versions rise: {} after {}", envelope.seq, last_seq);
                last_seq = envelope.seq;
                match &envelope.event {
                    Event::ProductListed { .. } => prop_assert_eq!(envelope.seq, 1),
                    Event::StockChanged(change) => {
                        replayed += change.delta;
                        prop_assert_eq!(replayed, change.stock, "each change states the stock it leaves");
                    }
                    other => return Err(TestCaseError::fail(format!("a product's event: {other:?}"))),
                }
            }
            prop_assert_eq!(replayed, in_memory.stock, "the events replayed give the stock in memory");
            region.stop();
            Ok(())
        }

        proptest! {
            // Each case opens its own database (a few milliseconds on SQLite, one CREATE DATABASE
            // on a server): 64 sequences of up to 30 steps cover the interleavings in about a second.
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
            #[test]
            fn memory_storage_and_the_replayed_events_agree(steps in proptest::collection::vec(step(), 1..30)) {
                let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                runtime.block_on(run(steps))?;
            }
        }
    }
}
