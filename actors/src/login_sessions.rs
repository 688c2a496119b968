//! Login sessions: the refresh-token families behind each login, rotated on every refresh and
//! revoked whole on logout or when a spent token comes back. They belong to no entity (a user
//! may be logged in on many devices at once, and a refresh must not wait behind the user's
//! commands), so the front end keeps them through this, and every node learns of revocations by
//! reading them back ([`LoginSessions::revoked_since`]).

use crate::store::{tokens, Store, StoreError};
use chrono::{DateTime, Utc};

pub use crate::store::tokens::Rotation;

/// The login sessions kept in the node's store.
#[derive(Clone)]
pub struct LoginSessions {
    store: Store,
}

impl LoginSessions {
    /// Sessions kept in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Starts session `family_id` of `user_id` with its first refresh token (hashed).
    pub async fn start(
        &self,
        family_id: &str,
        user_id: &str,
        token_hash: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        tokens::start_family(&self.store, family_id, user_id, token_hash, expires_at, now).await
    }

    /// Spends the refresh token hashed `token_hash` for the next one, `next_hash`.
    pub async fn rotate(
        &self,
        token_hash: &str,
        next_hash: &str,
        next_expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Rotation, StoreError> {
        tokens::rotate(&self.store, token_hash, next_hash, next_expires_at, now).await
    }

    /// Revokes the session of the refresh token hashed `token_hash`, if it is `user_id`'s;
    /// answers the session's id.
    pub async fn revoke(
        &self,
        token_hash: &str,
        user_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, StoreError> {
        tokens::revoke_family_of(&self.store, token_hash, user_id, now).await
    }

    /// The sessions revoked at or after `since`, on any node, with when.
    pub async fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<(String, DateTime<Utc>)>, StoreError> {
        tokens::revoked_since(&self.store, since).await
    }
}
