//! The user entity: an account, its public profile, and a buyer's cart (read from storage the
//! first time it is used, so accounts that never shop carry none in memory).

use crate::attempt::Attempt;
use crate::cart::{self, CartError};
use crate::entity::{Ctx, Entity, EntityRef};
use crate::store::{self, carts, carts::CartRecord, users, StoreError};
use crate::with_retries;
use bazaar_protocol::auth::UserView;
use bazaar_protocol::cart::CartItem;
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::values::{Email, Quantity, Role};
use bazaar_protocol::{ProductId, UserId};
use chrono::Utc;
use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};

/// Why a user command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("the e-mail address is taken")]
    EmailTaken,
    /// Only buyers have carts.
    #[error("only buyers have a cart")]
    NotABuyer,
    #[error(transparent)]
    Cart(#[from] CartError),
    #[error("storage unavailable")]
    Unavailable,
}

type Reply<T> = RpcReplyPort<Result<T, UserError>>;

/// A validated signup, with the password already hashed (hashing is slow and runs off the actor).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUser {
    pub email: Email,
    pub password_hash: String,
    pub role: Role,
    pub name: String,
}

/// Messages a user entity accepts. Local-only: entities never cross nodes.
pub enum UserMsg {
    /// Creates the account under this id.
    Register(NewUser, Reply<UserView>),
    /// Reads the profile.
    Get(Reply<UserView>),
    /// Reads a buyer's cart.
    Cart(Reply<Vec<CartItem>>),
    /// Sets the quantity of a product in a buyer's cart.
    SetCartItem { product_id: ProductId, quantity: Quantity, reply: Reply<Vec<CartItem>> },
    /// Takes a product out of a buyer's cart.
    RemoveCartItem { product_id: ProductId, reply: Reply<Vec<CartItem>> },
    /// Takes products out of a buyer's cart (those a checkout ordered).
    RemoveCartItems { products: Vec<ProductId>, reply: Reply<Vec<CartItem>> },
}

/// Registers a new account under the entity's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register(pub NewUser);
crate::request!(Register, UserState, "user.register", Result<UserView, UserError>, |self, reply| UserMsg::Register(self.0, reply));

/// Reads a profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetUser;
crate::request!(read GetUser, UserState, "user.get", Result<UserView, UserError>, |self, reply| UserMsg::Get(reply));

/// Reads a buyer's cart: its lines, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetCart;
crate::request!(read GetCart, UserState, "user.cart", Result<Vec<CartItem>, UserError>, |self, reply| UserMsg::Cart(reply));

/// Sets the quantity of a product in a buyer's cart (adding the line if it is new); replies with
/// the lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetCartItem {
    pub product_id: ProductId,
    pub quantity: Quantity,
}
crate::request!(SetCartItem, UserState, "user.set_cart_item", Result<Vec<CartItem>, UserError>, |self, reply| {
    UserMsg::SetCartItem { product_id: self.product_id, quantity: self.quantity, reply }
});

/// Takes a product out of a buyer's cart (nothing to do when it is not there); replies with the
/// lines.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveCartItem {
    pub product_id: ProductId,
}
crate::request!(RemoveCartItem, UserState, "user.remove_cart_item", Result<Vec<CartItem>, UserError>, |self, reply| {
    UserMsg::RemoveCartItem { product_id: self.product_id, reply }
});

/// Takes products out of a buyer's cart (those a checkout ordered); replies with the lines left.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveCartItems {
    pub products: Vec<ProductId>,
}
crate::request!(
    RemoveCartItems,
    UserState,
    "user.remove_cart_items",
    Result<Vec<CartItem>, UserError>,
    |self, reply| UserMsg::RemoveCartItems { products: self.products, reply }
);

crate::remote_requests!(UserState: Register, GetUser, GetCart, SetCartItem, RemoveCartItem, RemoveCartItems);

/// The user entity's state.
pub struct UserState {
    id: UserId,
    user: Option<UserView>,
    /// The cart, once read.
    cart: Option<CartRecord>,
}

impl UserState {
    /// Decides the profile of a new account; an id is registered once.
    pub fn register(&self, new: &NewUser) -> Result<UserView, UserError> {
        if self.user.is_some() {
            return Err(UserError::EmailTaken);
        }
        Ok(UserView {
            id: self.id.clone(),
            email: new.email.as_str().to_owned(),
            role: new.role,
            name: new.name.clone(),
        })
    }

    /// The account, if it may have a cart.
    pub fn buyer(&self) -> Result<&UserView, UserError> {
        match &self.user {
            None => Err(UserError::NotFound),
            Some(user) if user.role != Role::Buyer => Err(UserError::NotABuyer),
            Some(user) => Ok(user),
        }
    }

    /// The cart, read from storage on first use.
    async fn cart(&mut self, ctx: &Ctx) -> Result<&CartRecord, Attempt<UserError>> {
        self.buyer().map_err(Attempt::Refused)?;
        if self.cart.is_none() {
            self.cart = Some(carts::load(&ctx.store, self.id.as_str()).await?);
        }
        Ok(self.cart.get_or_insert_with(CartRecord::default))
    }

    async fn try_set_cart_item(
        &mut self,
        product: &ProductId,
        quantity: Quantity,
        ctx: &Ctx,
    ) -> Result<Vec<CartItem>, Attempt<UserError>> {
        let max = ctx.settings.cart_max_items;
        let current = self.cart(ctx).await?;
        let next = cart::set_item(&current.items, product, quantity, max, Utc::now())
            .map_err(|refused| Attempt::Refused(refused.into()))?;
        self.save_cart(next, ctx).await
    }

    async fn try_remove_cart_item(
        &mut self,
        product: &ProductId,
        ctx: &Ctx,
    ) -> Result<Vec<CartItem>, Attempt<UserError>> {
        let current = self.cart(ctx).await?;
        match cart::remove_item(&current.items, product) {
            None => Ok(current.items.clone()),
            Some(next) => self.save_cart(next, ctx).await,
        }
    }

    async fn try_remove_cart_items(
        &mut self,
        products: &[ProductId],
        ctx: &Ctx,
    ) -> Result<Vec<CartItem>, Attempt<UserError>> {
        let current = self.cart(ctx).await?;
        let next: Vec<CartItem> =
            current.items.iter().filter(|item| !products.contains(&item.product_id)).cloned().collect();
        if next.len() == current.items.len() {
            return Ok(next);
        }
        self.save_cart(next, ctx).await
    }

    /// Writes the cart's new lines over the version this entity read.
    async fn save_cart(&mut self, items: Vec<CartItem>, ctx: &Ctx) -> Result<Vec<CartItem>, Attempt<UserError>> {
        let version = self.cart.as_ref().map_or(0, |cart| cart.version);
        let mut tx = ctx.store.begin().await?;
        carts::save(&mut tx, self.id.as_str(), &items, version, Utc::now())?;
        ctx.store.commit(tx).await?;
        self.cart = Some(CartRecord { items: items.clone(), version: version + 1 });
        Ok(items)
    }

    async fn reload(&mut self, ctx: &Ctx) -> Result<(), StoreError> {
        *self = Self::load(self.id.as_str(), ctx).await?;
        Ok(())
    }

    async fn try_register(&mut self, new: &NewUser, ctx: &Ctx) -> Result<UserView, Attempt<UserError>> {
        let view = self.register(new).map_err(Attempt::Refused)?;
        let now = Utc::now();
        let record = users::UserRecord { view: view.clone(), password_hash: new.password_hash.clone(), version: 1 };
        let mut tx = ctx.store.begin().await?;
        match users::insert(&mut tx, &record, now).await {
            // The id is fresh, so the only unique key that can refuse it is the e-mail.
            Err(StoreError::Duplicate) => return Err(Attempt::Refused(UserError::EmailTaken)),
            other => other?,
        }
        let registered = Envelope::new(view.id.as_str(), 1, now, Event::UserRegistered { user: view.clone() });
        store::append_events(&mut tx, &[registered])?;
        ctx.store.commit(tx).await?;
        self.user = Some(view.clone());
        Ok(view)
    }
}

impl Entity for UserState {
    const KIND: &'static str = "user";
    type Msg = UserMsg;

    async fn load(id: &str, ctx: &Ctx) -> Result<Self, StoreError> {
        let user = users::load(&ctx.store, id).await?.map(|record| record.view);
        Ok(Self { id: id.into(), user, cart: None })
    }

    async fn handle(&mut self, msg: UserMsg, ctx: &Ctx, _myself: &EntityRef<Self>) {
        match msg {
            UserMsg::Register(new, reply) => {
                let _ = reply.send(with_retries!(self, ctx, UserError::Unavailable, self.try_register(&new, ctx)));
            }
            UserMsg::Get(reply) => {
                let _ = reply.send(self.user.clone().ok_or(UserError::NotFound));
            }
            UserMsg::Cart(reply) => {
                // Read again, not from memory: this activation may not be the owner (a read too
                // large to cross, an old owner during a view change), and the row is one read.
                self.cart = None;
                let read = self.cart(ctx).await.map(|cart| cart.items.clone());
                let _ = reply.send(
                    read.map_err(|a| crate::attempt::settle(Self::KIND, self.id.as_str(), a, UserError::Unavailable)),
                );
            }
            UserMsg::SetCartItem { product_id, quantity, reply } => {
                let _ = reply.send(with_retries!(
                    self,
                    ctx,
                    UserError::Unavailable,
                    self.try_set_cart_item(&product_id, quantity, ctx)
                ));
            }
            UserMsg::RemoveCartItem { product_id, reply } => {
                let _ = reply.send(with_retries!(
                    self,
                    ctx,
                    UserError::Unavailable,
                    self.try_remove_cart_item(&product_id, ctx)
                ));
            }
            UserMsg::RemoveCartItems { products, reply } => {
                let _ = reply.send(with_retries!(
                    self,
                    ctx,
                    UserError::Unavailable,
                    self.try_remove_cart_items(&products, ctx)
                ));
            }
        }
    }

    fn exists(&self) -> bool {
        self.user.is_some()
    }

    fn refuse(msg: UserMsg) {
        match msg {
            UserMsg::Register(_, reply) | UserMsg::Get(reply) => {
                let _ = reply.send(Err(UserError::Unavailable));
            }
            UserMsg::Cart(reply)
            | UserMsg::SetCartItem { reply, .. }
            | UserMsg::RemoveCartItem { reply, .. }
            | UserMsg::RemoveCartItems { reply, .. } => {
                let _ = reply.send(Err(UserError::Unavailable));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_user() -> NewUser {
        NewUser {
            email: Email::parse("a@b.co").unwrap(),
            password_hash: "h".into(),
            role: Role::Buyer,
            name: "A".into(),
        }
    }

    #[test]
    fn an_id_is_registered_once() {
        let mut state = UserState { id: "u1".into(), user: None, cart: None };
        let view = state.register(&new_user()).unwrap();
        assert_eq!(view.email, "a@b.co");
        state.user = Some(view);
        assert_eq!(state.register(&new_user()), Err(UserError::EmailTaken));
    }

    #[test]
    fn only_a_registered_buyer_has_a_cart() {
        let mut state = UserState { id: "u1".into(), user: None, cart: None };
        assert_eq!(state.buyer().unwrap_err(), UserError::NotFound);
        let view = state.register(&new_user()).unwrap();
        state.user = Some(UserView { role: Role::Seller, ..view.clone() });
        assert_eq!(state.buyer().unwrap_err(), UserError::NotABuyer);
        state.user = Some(view);
        assert!(state.buyer().is_ok());
    }
}
