//! Credentials: Argon2id password hashes, HS256 access tokens, and opaque refresh tokens (only
//! their SHA-256 is stored, so a database leak does not leak live tokens).

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use bazaar_protocol::auth::Claims;
use bazaar_protocol::values::Role;
use bazaar_protocol::UserId;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;
use std::time::Duration;

/// Hashes a password with Argon2id and a fresh salt (slow on purpose: run it off the async threads).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt)?.to_string())
}

/// Checks a password against a stored hash. With no hash (unknown e-mail) it checks against a
/// dummy one, so unknown accounts take as long as wrong passwords.
pub fn verify_password(password: &str, stored: Option<&str>) -> bool {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("dummy password for timing").unwrap_or_default());
    let Ok(parsed) = PasswordHash::new(stored.unwrap_or(dummy)) else { return false };
    Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok() && stored.is_some()
}

/// Issues and checks access tokens.
pub struct TokenService {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// How long an access token lives.
    pub access_ttl: Duration,
    /// How long a refresh token lives.
    pub refresh_ttl: Duration,
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
        }
    }

    /// Issues an access token for a user.
    pub fn issue(&self, user: &UserId, role: Role) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: user.0.clone(),
            role,
            iat: now,
            exp: now + self.access_ttl.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// Checks an access token's signature and expiry.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        Some(Caller { id: data.claims.sub.into(), role: data.claims.role, expires_at: data.claims.exp, slot: None })
    }
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
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", Some(&hash)));
        assert!(!verify_password("wrong horse", Some(&hash)));
        assert!(!verify_password("correct horse", None));
        assert!(hash.starts_with("$argon2id$"));
    }

    #[test]
    fn tokens_from_another_secret_or_expired_are_refused() {
        let tokens = TokenService::new(b"0123456789abcdef0123456789abcdef", Duration::from_secs(60), Duration::ZERO);
        let token = tokens.issue(&"u1".into(), Role::Buyer);
        assert_eq!(tokens.verify(&token).unwrap().id, UserId::from("u1"));
        let other = TokenService::new(b"another secret of thirty-two chars!", Duration::from_secs(60), Duration::ZERO);
        assert!(other.verify(&token).is_none());
        let expired = TokenService::new(b"0123456789abcdef0123456789abcdef", Duration::ZERO, Duration::ZERO);
        let token = expired.issue(&"u1".into(), Role::Buyer);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(expired.verify(&token).is_none());
        assert!(tokens.verify("not.a.token").is_none());
    }
}
