//! Token buckets: the login limit (per e-mail) and the WebSocket frame limit (per connection).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket: `burst` tokens, refilled at `per_second`.
#[derive(Debug, Clone)]
pub struct Bucket {
    tokens: f64,
    burst: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(burst: u32, per_second: f64) -> Self {
        Self { tokens: f64::from(burst), burst: f64::from(burst), per_second, last: Instant::now() }
    }

    /// Takes a token at `now`; when empty, says how long until the next one.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.per_second))
        }
    }

    fn is_full(&self, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * self.per_second >= self.burst
    }
}

/// Requests in flight per user, bounded: one user cannot take the node's whole capacity.
pub struct UserSlots {
    limit: usize,
    taken: Arc<Mutex<HashMap<String, usize>>>,
}

/// One request's slot; freed when dropped.
pub struct Slot {
    user: String,
    taken: Arc<Mutex<HashMap<String, usize>>>,
}

impl UserSlots {
    /// At most `limit` requests in flight per user.
    pub fn new(limit: usize) -> Self {
        Self { limit, taken: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Takes a slot for `user`; `None` when the user is at the limit.
    pub fn acquire(&self, user: &str) -> Option<Slot> {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        let count = taken.entry(user.to_owned()).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(Slot { user: user.to_owned(), taken: self.taken.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut taken = self.taken.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = taken.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                taken.remove(&self.user);
            }
        }
    }
}

/// Login attempts per e-mail: `per_minute` attempts, refilled evenly over a minute.
pub struct LoginLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Above this many tracked e-mails, full buckets are forgotten (they carry no information).
const PRUNE_ABOVE: usize = 10_000;

impl LoginLimiter {
    /// At most `per_minute` attempts per e-mail and minute.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    /// Counts an attempt for `email`; when over the limit, says when to retry.
    pub fn attempt(&self, email: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| !bucket.is_full(now));
        }
        buckets
            .entry(email.to_owned())
            .or_insert_with(|| Bucket::new(self.per_minute, f64::from(self.per_minute) / 60.0))
            .take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_refuses_past_its_burst_and_refills() {
        let mut bucket = Bucket::new(2, 1.0);
        let start = Instant::now();
        assert!(bucket.take(start).is_ok());
        assert!(bucket.take(start).is_ok());
        let wait = bucket.take(start).unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        assert!(bucket.take(start + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn user_slots_are_bounded_and_freed_on_drop() {
        let slots = UserSlots::new(2);
        let first = slots.acquire("u").unwrap();
        let _second = slots.acquire("u").unwrap();
        assert!(slots.acquire("u").is_none());
        assert!(slots.acquire("v").is_some());
        drop(first);
        assert!(slots.acquire("u").is_some());
    }

    #[test]
    fn logins_are_limited_per_email() {
        let limiter = LoginLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.attempt("a@x.io").is_ok());
        }
        assert!(limiter.attempt("a@x.io").is_err());
        assert!(limiter.attempt("b@x.io").is_ok());
    }
}
