//! Token buckets: the limits in front of password work (per client address, per client address
//! and e-mail, node-wide), requests in flight per user, and the WebSocket frame limit (per
//! connection).

use std::collections::HashMap;
use std::net::IpAddr;
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

/// Token buckets by key (a client address, an address and an e-mail), each refilled evenly over
/// a minute, and bounded in number: a flood of distinct keys cannot grow the table without limit.
pub struct KeyedBuckets {
    per_minute: u32,
    table: Mutex<Table>,
}

struct Table {
    buckets: HashMap<String, Bucket>,
    /// The size at which full buckets are next forgotten; doubled after each pass, so a table
    /// of live buckets is not swept on every new key.
    prune_at: usize,
    /// When a table at its bound was last swept (at most once a second).
    swept_at: Option<Instant>,
}

/// Above this many tracked keys, full buckets are forgotten (they carry no information).
const PRUNE_ABOVE: usize = 10_000;
/// The most keys tracked at once; a new key past it is refused until buckets fill up again
/// (about a minute), so memory stays bounded under a flood of distinct keys.
const MAX_KEYS: usize = 200_000;

impl KeyedBuckets {
    /// At most `per_minute` attempts per key and minute.
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, table: Mutex::new(Table { buckets: HashMap::new(), prune_at: PRUNE_ABOVE, swept_at: None }) }
    }

    /// Counts an attempt for `key`; when over the limit, says when to retry.
    pub fn attempt(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !table.buckets.contains_key(key) {
            if table.buckets.len() >= table.prune_at {
                table.buckets.retain(|_, bucket| !bucket.is_full(now));
                table.prune_at = (table.buckets.len() * 2).max(PRUNE_ABOVE);
            }
            if table.buckets.len() >= MAX_KEYS {
                if table.swept_at.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
                    table.buckets.retain(|_, bucket| !bucket.is_full(now));
                    table.swept_at = Some(now);
                }
                if table.buckets.len() >= MAX_KEYS {
                    return Err(Duration::from_secs(1));
                }
            }
        }
        let per_minute = self.per_minute;
        table
            .buckets
            .entry(key.to_owned())
            .or_insert_with(|| Bucket::new(per_minute, f64::from(per_minute) / 60.0))
            .take(now)
    }
}

/// Why a login or signup was refused before any password work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRefusal {
    /// This client address made too many attempts (429).
    Client(Duration),
    /// The node takes no more attempts per second from anyone (503).
    Node(Duration),
}

/// The limits in front of login and signup, whose Argon2 work is the most expensive thing a
/// client can make the node do: attempts per client address and minute, and per node and second.
pub struct AuthLimits {
    per_client: KeyedBuckets,
    node: Mutex<Bucket>,
}

impl AuthLimits {
    /// `per_client_per_minute` attempts per address, `node_per_second` per node (bursts of one
    /// second's worth).
    pub fn new(per_client_per_minute: u32, node_per_second: u32) -> Self {
        Self {
            per_client: KeyedBuckets::new(per_client_per_minute),
            node: Mutex::new(Bucket::new(node_per_second, f64::from(node_per_second))),
        }
    }

    /// Counts an attempt from `client` (`None`: an address the node could not learn, all such
    /// attempts counted together).
    pub fn admit(&self, client: Option<IpAddr>) -> Result<(), AuthRefusal> {
        self.per_client.attempt(&client_key(client)).map_err(AuthRefusal::Client)?;
        self.node.lock().unwrap_or_else(|p| p.into_inner()).take(Instant::now()).map_err(AuthRefusal::Node)
    }
}

/// The key a client address is counted under: IPv6 clients by their /64, which one holder
/// usually has whole (counting each address would let it make 2^64 fresh keys).
pub fn client_key(client: Option<IpAddr>) -> String {
    match client {
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        None => "unknown".into(),
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
    fn attempts_are_limited_per_key() {
        let limiter = KeyedBuckets::new(3);
        for _ in 0..3 {
            assert!(limiter.attempt("127.0.0.1 a@x.io").is_ok());
        }
        assert!(limiter.attempt("127.0.0.1 a@x.io").is_err());
        assert!(limiter.attempt("127.0.0.2 a@x.io").is_ok(), "the same e-mail from elsewhere");
        assert!(limiter.attempt("127.0.0.1 b@x.io").is_ok());
    }

    #[test]
    fn a_flood_of_distinct_keys_is_bounded() {
        let limiter = KeyedBuckets::new(1);
        let mut refused = 0;
        for n in 0..(MAX_KEYS + 10) {
            if limiter.attempt(&format!("k{n}")).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 10);
        assert!(limiter.table.lock().unwrap().buckets.len() <= MAX_KEYS);
    }

    #[test]
    fn auth_is_limited_per_client_then_per_node() {
        let limits = AuthLimits::new(2, 3);
        let a = Some("10.0.0.1".parse().unwrap());
        let b = Some("10.0.0.2".parse().unwrap());
        assert!(limits.admit(a).is_ok());
        assert!(limits.admit(a).is_ok());
        assert!(matches!(limits.admit(a), Err(AuthRefusal::Client(_))));
        assert!(limits.admit(b).is_ok());
        assert!(matches!(limits.admit(b), Err(AuthRefusal::Node(_))), "three per second in all");
    }

    #[test]
    fn ipv6_clients_count_by_their_64() {
        let one = client_key(Some("2001:db8:1:2::1".parse().unwrap()));
        let two = client_key(Some("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_eq!(one, two);
        assert_ne!(one, client_key(Some("2001:db8:1:3::1".parse().unwrap())));
        assert_eq!(client_key(Some("::ffff:127.0.0.1".parse().unwrap())), "127.0.0.1");
    }
}
