//! The user entity: an account and its public profile.

use crate::attempt::Attempt;
use crate::entity::{Ctx, Entity, EntityRef};
use crate::store::{self, users, StoreError};
use crate::with_retries;
use bazaar_protocol::auth::UserView;
use bazaar_protocol::events::{Envelope, Event};
use bazaar_protocol::values::{Email, Role};
use bazaar_protocol::UserId;
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
}

/// Registers a new account under the entity's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register(pub NewUser);
crate::request!(Register, UserState, "user.register", Result<UserView, UserError>, |self, reply| UserMsg::Register(self.0, reply));

/// Reads a profile.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GetUser;
crate::request!(read GetUser, UserState, "user.get", Result<UserView, UserError>, |self, reply| UserMsg::Get(reply));

crate::remote_requests!(UserState: Register, GetUser);

/// The user entity's state.
pub struct UserState {
    id: UserId,
    user: Option<UserView>,
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
        store::append_events(&mut tx, &[registered]).await?;
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
        Ok(Self { id: id.into(), user })
    }

    async fn handle(&mut self, msg: UserMsg, ctx: &Ctx, _myself: &EntityRef<Self>) {
        match msg {
            UserMsg::Register(new, reply) => {
                let _ = reply.send(with_retries!(self, ctx, UserError::Unavailable, self.try_register(&new, ctx)));
            }
            UserMsg::Get(reply) => {
                let _ = reply.send(self.user.clone().ok_or(UserError::NotFound));
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
        let mut state = UserState { id: "u1".into(), user: None };
        let view = state.register(&new_user()).unwrap();
        assert_eq!(view.email, "a@b.co");
        state.user = Some(view);
        assert_eq!(state.register(&new_user()), Err(UserError::EmailTaken));
    }
}
