//! Credentials: HS256 access tokens, opaque refresh tokens (only their SHA-256 is stored, so a
//! database leak does not leak live tokens), and the deny list that ends an access token's life
//! early when its session (its refresh-token family, the `sid` claim) is revoked. Password
//! hashing is in [`crate::passwords`].

use bazaar_actors::login_sessions::LoginSessions;
use bazaar_protocol::auth::Claims;
use bazaar_protocol::values::Role;
use bazaar_protocol::UserId;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tracing::warn;

/// Issues and checks access tokens.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// How long an access token lives.
    pub access_ttl: Duration,
    /// How long a refresh token lives.
    pub refresh_ttl: Duration,
    /// Revoked sessions, each until the last access token it can have issued has expired
    /// (seconds since the epoch).
    denied: RwLock<HashMap<String, i64>>,
}

/// Who made an authenticated request.
#[derive(Clone)]
pub struct Caller {
    pub id: UserId,
    pub role: Role,
    /// Seconds since the epoch when the token expires.
    pub expires_at: i64,
    /// The caller's in-flight slot, held while the request is served.
    pub slot: Option<std::sync::Arc<crate::rate_limit::Slot>>,
}

impl TokenService {
    /// Builds the service over a secret.
    pub fn new(secret: &[u8], access_ttl: Duration, refresh_ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // No grace period: "expired" must mean expired (the WebSocket closes at that moment too).
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            access_ttl,
            refresh_ttl,
            denied: RwLock::new(HashMap::new()),
        }
    }

    /// Issues an access token for a user's session (the refresh-token family it belongs to).
    pub fn issue(&self, user: &UserId, role: Role, session: &str) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.0.clone(),
            role,
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            sid: Some(session.to_owned()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// Checks an access token's signature, expiry, and that its session was not revoked.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        if let Some(session) = &data.claims.sid {
            if self.denied.read().unwrap_or_else(|p| p.into_inner()).contains_key(session) {
                return None;
            }
        }
        Some(Caller { id: data.claims.sub.into(), role: data.claims.role, expires_at: data.claims.exp, slot: None })
    }

    /// Refuses every access token of `session` from now on; `revoked_at` is when the session was
    /// revoked, and it stays denied until its last token has expired.
    pub fn deny(&self, session: &str, revoked_at: DateTime<Utc>) {
        let until = revoked_at.timestamp() + self.access_ttl.as_secs() as i64 + 1;
        self.denied.write().unwrap_or_else(|p| p.into_inner()).insert(session.to_owned(), until);
    }

    /// Forgets the revoked sessions whose tokens have all expired; returns how many are left.
    fn prune(&self, now: i64) -> usize {
        let mut denied = self.denied.write().unwrap_or_else(|p| p.into_inner());
        denied.retain(|_, until| *until > now);
        denied.len()
    }
}

/// How far back each look at the revocations reaches, past the previous look: revocations are
/// stamped with the revoking node's clock and may commit a little after their stamp.
const REVOCATION_OVERLAP: Duration = Duration::from_secs(60);

/// Reads the sessions revoked at or after `since` into the deny list; returns where the next look
/// starts.
async fn look_at_revocations(
    tokens: &TokenService,
    sessions: &LoginSessions,
    since: DateTime<Utc>,
) -> Result<DateTime<Utc>, bazaar_actors::store::StoreError> {
    let looked_at = Utc::now();
    for (session, at) in sessions.revoked_since(since).await? {
        tokens.deny(&session, at);
    }
    let left = tokens.prune(looked_at.timestamp());
    metrics::gauge!("bazaar_revoked_sessions").set(left as f64);
    Ok(looked_at - chrono::Duration::from_std(REVOCATION_OVERLAP).unwrap_or_default())
}

/// Fills the deny list with the sessions revoked within one access-token lifetime, so a node
/// that starts refuses what was revoked before; returns where [`follow_revocations`] goes on.
pub async fn load_revocations(
    tokens: &TokenService,
    sessions: &LoginSessions,
) -> Result<DateTime<Utc>, bazaar_actors::store::StoreError> {
    let lifetime = chrono::Duration::from_std(tokens.access_ttl).unwrap_or(chrono::Duration::days(1));
    look_at_revocations(tokens, sessions, Utc::now() - lifetime).await
}

/// Keeps the deny list in step with the sessions revoked on every node (the `revoked_at` column
/// of the token families), looking every `every` from `since` on. Stops when `shutdown` turns
/// true.
pub fn follow_revocations(
    tokens: Arc<TokenService>,
    sessions: LoginSessions,
    every: Duration,
    mut since: DateTime<Utc>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            match look_at_revocations(&tokens, &sessions, since).await {
                Ok(next) => since = next,
                Err(e) => warn!(reason = %e, "revoked sessions unreadable; retrying"),
            }
        }
    })
}

/// A new opaque refresh token.
pub fn new_refresh_token() -> String {
    format!("rt_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// What is stored for a refresh token.
pub fn refresh_token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_from_another_secret_or_expired_are_refused() {
        let tokens = TokenService::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60), Duration::ZERO);
        let token = tokens.issue(&"u1".into(), Role::Buyer, "s1");
        assert_eq!(tokens.verify(&token).unwrap().id, UserId::from("u1"));
        let other = TokenService::new(b"another secret of thirty-two chars!", Duration::from_secs(60), Duration::ZERO);
        assert!(other.verify(&token).is_none());
        let expired = TokenService::new(b"0123456789abcdef0123456789abcdef", Duration::ZERO, Duration::ZERO);
        let token = expired.issue(&"u1".into(), Role::Buyer, "s1");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(expired.verify(&token).is_none());
        assert!(tokens.verify("not.a.token").is_none());
    }

    #[test]
    fn a_denied_session_refuses_its_tokens_and_only_its_own_until_they_expire() {
        let tokens = TokenService::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60), Duration::ZERO);
        let mine = tokens.issue(&"u1".into(), Role::Buyer, "s1");
        let other = tokens.issue(&"u1".into(), Role::Buyer, "s2");
        let now = Utc::now();
        tokens.deny("s1", now);
        assert!(tokens.verify(&mine).is_none());
        assert!(tokens.verify(&other).is_some());
        assert_eq!(tokens.prune(now.timestamp() + 30), 1, "kept while its tokens may live");
        assert_eq!(tokens.prune(now.timestamp() + 62), 0, "forgotten once they cannot");
    }
}
