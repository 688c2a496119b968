//! The cache: Redis (through fred) in front of SQL for what many requests read and few write —
//! buyer–seller relations for the profile visibility rule, user profiles — and the cluster-wide
//! login counter. Redis is never the truth: every call has a short timeout, and any failure (Redis
//! down, slow, or never configured) answers "don't know", so the caller asks SQL (or, for the
//! login limit, counts locally). Entries are written when the events that create them are
//! relayed, and they expire, so a cache restarted empty fills itself again.

use bazaar_protocol::auth::UserView;
use bazaar_protocol::events::{Envelope, Event};
use fred::prelude::*;
use fred::types::ExpireOptions;
use std::time::Duration;
use tracing::{debug, info, warn};

/// How long a cached profile is kept.
const PROFILE_TTL_SECS: i64 = 3600;
/// How long a cached buyer–seller relation is kept (it never becomes false again).
const RELATION_TTL_SECS: i64 = 24 * 3600;

/// The cache; `None` inside when no Redis is configured.
#[derive(Clone, Default)]
pub struct Cache {
    redis: Option<Client>,
    timeout: Duration,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("enabled", &self.redis.is_some()).field("timeout", &self.timeout).finish()
    }
}

fn counted(outcome: &str) {
    metrics::counter!("bazaar_cache_requests_total", "outcome" => outcome.to_owned()).increment(1);
}

impl Cache {
    /// A cache that always answers "don't know".
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Checks that `url` is a Redis URL [`Cache::connect`] accepts, without connecting.
    pub fn check_url(url: &str) -> anyhow::Result<()> {
        Config::from_url(url)?;
        Ok(())
    }

    /// Connects to Redis at `url` in the background: startup never waits for Redis, and the
    /// client keeps reconnecting while it is away.
    pub fn connect(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let mut config = Config::from_url(url)?;
        // Fail at once while disconnected instead of queueing: the caller falls back to SQL.
        config.fail_fast = true;
        let client = Builder::from_config(config)
            .with_connection_config(|connection| {
                connection.connection_timeout = Duration::from_secs(1);
                connection.internal_command_timeout = Duration::from_secs(1);
                connection.max_command_attempts = 1;
            })
            .with_performance_config(|performance| performance.default_command_timeout = timeout)
            .set_policy(ReconnectPolicy::new_constant(0, 500))
            .build()?;
        let _connection = client.connect();
        client.on_reconnect(|server| async move {
            info!(%server, "cache connected");
            Ok(())
        });
        client.on_error(|(error, server)| async move {
            warn!(server = ?server, reason = %error, "cache connection lost; serving from SQL meanwhile");
            Ok(())
        });
        Ok(Self { redis: Some(client), timeout })
    }

    async fn run<T, F>(&self, what: &str, command: impl FnOnce(Client) -> F) -> Option<T>
    where
        F: std::future::Future<Output = Result<T, Error>>,
    {
        let redis = self.redis.clone()?;
        match tokio::time::timeout(self.timeout, command(redis)).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) => {
                // Per request, so only at debug: the connection's own errors are logged once each.
                counted("error");
                debug!(what, reason = %e, "cache unavailable; using SQL");
                None
            }
            Err(_) => {
                counted("timeout");
                None
            }
        }
    }

    fn relation_key(buyer: &str, seller: &str) -> String {
        format!("bazaar:paid:{buyer}:{seller}")
    }

    fn profile_key(user: &str) -> String {
        format!("bazaar:user:{user}")
    }

    /// Whether `buyer` has a PAID order from `seller`: `Some(true)` when the cache knows it,
    /// `None` when the caller must ask SQL.
    pub async fn paid_relation(&self, buyer: &str, seller: &str) -> Option<bool> {
        let key = Self::relation_key(buyer, seller);
        let found: Option<String> = self.run("paid relation", |r| async move { r.get(key).await }).await?;
        counted(if found.is_some() { "hit" } else { "miss" });
        found.map(|_| true)
    }

    /// Remembers that `buyer` has a PAID order from `seller`.
    pub async fn remember_paid_relation(&self, buyer: &str, seller: &str) {
        let key = Self::relation_key(buyer, seller);
        let _: Option<()> = self
            .run("paid relation", |r| async move {
                r.set(key, "1", Some(Expiration::EX(RELATION_TTL_SECS)), None, false).await
            })
            .await;
    }

    /// A user's profile, if cached.
    pub async fn profile(&self, user: &str) -> Option<UserView> {
        let key = Self::profile_key(user);
        let found: Option<String> = self.run("profile", |r| async move { r.get(key).await }).await?;
        counted(if found.is_some() { "hit" } else { "miss" });
        serde_json::from_str(&found?).ok()
    }

    /// Caches a profile.
    pub async fn remember_profile(&self, user: &UserView) {
        let Ok(value) = serde_json::to_string(user) else { return };
        let key = Self::profile_key(user.id.as_str());
        let _: Option<()> =
            self.run("profile", |r| async move {
                r.set(key, value, Some(Expiration::EX(PROFILE_TTL_SECS)), None, false).await
            })
            .await;
    }

    /// Counts a login attempt for `email` across the cluster: `Some(Ok)` within the limit,
    /// `Some(Err(seconds))` over it, `None` when Redis cannot say (the caller counts locally).
    pub async fn login_attempt(&self, email: &str, per_minute: u32) -> Option<Result<(), u64>> {
        let key = format!("bazaar:login:{email}");
        let (count, ttl): (i64, i64) = self
            .run("login limit", |r| async move {
                let pipeline = r.pipeline();
                let _: () = pipeline.incr(&key).await?;
                let _: () = pipeline.expire(&key, 60, Some(ExpireOptions::NX)).await?;
                let _: () = pipeline.ttl(&key).await?;
                let (count, _, ttl): (i64, i64, i64) = pipeline.all().await?;
                Ok((count, ttl))
            })
            .await?;
        Some(if count <= i64::from(per_minute) { Ok(()) } else { Err(ttl.max(1) as u64) })
    }

    /// Keeps the cache in step with a relayed event.
    pub async fn apply(&self, envelope: &Envelope) {
        if self.redis.is_none() {
            return;
        }
        match &envelope.event {
            Event::UserRegistered { user } => self.remember_profile(user).await,
            Event::OrderPaid { order } => {
                self.remember_paid_relation(order.buyer_id.as_str(), order.seller_id.as_str()).await
            }
            // Nothing else is cached.
            Event::ProductListed { .. }
            | Event::StockChanged(_)
            | Event::OrderPlaced { .. }
            | Event::OrderCancelled { .. }
            | Event::PaymentRequested { .. }
            | Event::PaymentApproved { .. }
            | Event::PaymentDeclined { .. }
            | Event::PaymentRefunded { .. }
            | Event::OrderRefunded { .. }
            | Event::ChatRoomOpened { .. }
            | Event::ChatMessagePosted { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cache_without_redis_never_knows() {
        let cache = Cache::disabled();
        assert_eq!(cache.paid_relation("b", "s").await, None);
        assert_eq!(cache.login_attempt("a@b.co", 1).await, None);
        assert!(cache.profile("u").await.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_redis_answers_dont_know_within_the_timeout() {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let cache = Cache::connect("redis://127.0.0.1:1", Duration::from_millis(50)).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(cache.paid_relation("b", "s").await, None);
        assert_eq!(cache.login_attempt("a@b.co", 1).await, None);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
