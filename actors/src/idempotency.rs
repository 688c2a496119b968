//! Idempotent requests, in one place. A request sent with an `Idempotency-Key` is scoped to its
//! caller and fingerprinted with its route and body ([`IdempotencyKey::new`]). The command that
//! carries it out looks for an earlier record ([`check`], inside its own transaction) and, when
//! there is none, records the key with the id of what it created in that same transaction
//! ([`record`]), so the record exists exactly when the effect does. A retry is answered with what
//! the first request made; the same key with another request is a [`Earlier::Mismatch`]. The check
//! is made once, by the command: the front end does not look first for an order or a payment (a
//! read for every request to spare the rare retry a message to its entity). A checkout is the
//! exception ([`peek`]). Records are forgotten after `idempotency_retention` ([`expire`]).

use crate::store::idempotency::IdempotencyRecord;
use crate::store::{self, Lookup, Store, StoreError, Tx};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// An idempotency key as the caller sent it, scoped to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    /// The calling user.
    pub user_id: String,
    /// The `Idempotency-Key` header.
    pub key: String,
    /// A hash of the route and the request body, to tell a retry from a different request.
    pub request_hash: String,
}

impl IdempotencyKey {
    /// `key` of `user_id` for a request to `route` with `body`. The route is part of the
    /// fingerprint, so one key cannot both order and pay.
    pub fn new(user_id: &str, key: String, route: &str, body: &impl Serialize) -> Self {
        let canonical = serde_json::to_vec(body).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(route.as_bytes());
        hasher.update([0]);
        hasher.update(&canonical);
        Self { user_id: user_id.to_owned(), key, request_hash: hex::encode(hasher.finalize()) }
    }
}

/// What an earlier request with the same key left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Earlier {
    /// Nothing: this request is the first.
    Nothing,
    /// The same request was carried out and created this id.
    Done(String),
    /// The key was used with another request.
    Mismatch,
}

/// What the record found for `key` (if any) says about it.
pub fn judge(found: Option<IdempotencyRecord>, key: &IdempotencyKey) -> Earlier {
    match found {
        None => Earlier::Nothing,
        Some(record) if record.request_hash == key.request_hash => Earlier::Done(record.result_id),
        Some(_) => Earlier::Mismatch,
    }
}

/// Looks for an earlier request inside the command's transaction: the check that counts. Assumed
/// ([`Lookup::Assume`]), there is none, and an earlier one makes [`record`]'s insert break the
/// key's unique index at the commit, so the command is decided again and looks then.
pub async fn check(tx: &mut Tx, key: &IdempotencyKey, lookup: Lookup) -> Result<Earlier, StoreError> {
    match lookup {
        Lookup::Assume => Ok(Earlier::Nothing),
        Lookup::Read => Ok(judge(store::idempotency::find_in(tx, &key.user_id, &key.key).await?, key)),
    }
}

/// Looks for an earlier request outside any transaction: for a request whose body is not the whole
/// request (a checkout's is the cart, emptied by the first one), which must find its first
/// request's result before it reads anything else.
pub async fn peek(store: &Store, key: &IdempotencyKey) -> Result<Earlier, StoreError> {
    Ok(judge(store::idempotency::find(store, &key.user_id, &key.key).await?, key))
}

/// The lookup of a command that has decided: a refusal is given only after a look, because a
/// retry of a request that was carried out gets what it made, whatever the state says now (a
/// repeated order when the stock has run out meanwhile is answered with its order).
pub fn lookup_after<T, E>(lookup: Lookup, decided: &Result<T, E>) -> Lookup {
    if decided.is_err() {
        Lookup::Read
    } else {
        lookup
    }
}

/// Records that the request of `key` created `result_id`, inside the command's transaction.
pub fn record(tx: &mut Tx, key: &IdempotencyKey, result_id: &str, now: DateTime<Utc>) -> Result<(), StoreError> {
    store::idempotency::insert(tx, (&key.user_id, &key.key, &key.request_hash), result_id, now)
}

/// Forgets the records older than `cutoff`; returns how many.
pub async fn expire(store: &Store, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
    store::idempotency::delete_before(store, cutoff).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(route: &str, body: serde_json::Value) -> IdempotencyKey {
        IdempotencyKey::new("u1", "k1".into(), route, &body)
    }

    #[test]
    fn the_same_request_again_is_a_retry_and_another_is_a_mismatch() {
        let first = key("POST /orders", json!({"productId": "p1", "quantity": 1}));
        let record = |hash: &str| Some(IdempotencyRecord { request_hash: hash.into(), result_id: "o1".into() });
        assert_eq!(judge(None, &first), Earlier::Nothing);
        assert_eq!(judge(record(&first.request_hash), &first), Earlier::Done("o1".into()));
        let other_body = key("POST /orders", json!({"productId": "p1", "quantity": 2}));
        assert_eq!(judge(record(&first.request_hash), &other_body), Earlier::Mismatch);
    }

    #[test]
    fn the_fingerprint_is_the_one_stored_keys_were_made_with() {
        // SHA-256 of the route, a NUL and the body's JSON: records stored before this module (the
        // node computed it then) must still match their retries.
        let key = key("POST /orders", json!({"productId": "p1", "quantity": 1}));
        assert_eq!(key.request_hash, "ecf7c8485fd6b72fb757aeedab62fc92d23d1bd990f0804a29cab76c30330f02");
    }

    #[test]
    fn the_route_is_part_of_the_fingerprint() {
        let body = json!({"orderId": "o1"});
        assert_ne!(key("POST /orders", body.clone()).request_hash, key("POST /payments", body).request_hash);
    }
}
