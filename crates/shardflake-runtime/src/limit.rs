//! [`RateLimiter`]: a token bucket per caller, so that one runaway caller cannot starve the
//! others.
//!
//! Each key (a credential's name, a peer address) has a bucket of `burst` tokens refilled at
//! `rate_per_s`. A request costs tokens (one per request on the coordinator, one per id on a
//! node); it is allowed while its bucket holds at least `min(cost, burst)` tokens, and then
//! takes its whole cost, so a request larger than the burst is served when the bucket is
//! full and leaves it in debt: over any interval the caller gets no more than the rate plus
//! one burst. A refused request learns how long until it would be allowed (`Retry-After`).
//!
//! Written here rather than taken from a crate because the buckets need three things at once
//! that the services share: a cost per request (ids per batch), time passed in (tests run on
//! a paused tokio clock), and a hard bound on the number of keys (peer addresses are chosen
//! by the peers): at [`RateLimiter::keys_max`], buckets that are full again are dropped (a
//! sweep at most once a second), else an arbitrary one, so that a caller rotating its source
//! address costs each request O(1), not a scan. Addresses are keyed by [`address_key`]: an
//! IPv6 host holds a whole /64.
//!
//! ```
//! use shardflake_runtime::limit::{Decision, RateLimiter};
//! use tokio::time::{Duration, Instant};
//! let l = RateLimiter::new(100, 100); // 100 per second, bursts of 100
//! let t0 = Instant::now();
//! assert_eq!(l.check(&"a", 100, t0), Decision::Allowed);
//! assert_eq!(l.check(&"a", 10, t0), Decision::Limited { retry_after_ms: 100 });
//! assert_eq!(l.check(&"b", 10, t0), Decision::Allowed); // another caller is not held up
//! assert_eq!(l.check(&"a", 10, t0 + Duration::from_millis(100)), Decision::Allowed);
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// How often full buckets are swept out at most.
const SWEEP_INTERVAL_MS: u64 = 1_000;

/// The key a peer address is limited (or counted) under: the IPv4 address, or the IPv6 /64,
/// since one host holds a whole /64 and may send from any address in it.
///
/// ```
/// use shardflake_runtime::limit::address_key;
/// let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
/// let b: std::net::IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
/// assert_eq!(address_key(a), address_key(b));
/// assert_eq!(address_key("10.0.0.7".parse().unwrap()).to_string(), "10.0.0.7");
/// ```
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::from(segments)
        }
    }
}

/// Callers tracked at once by default.
pub const KEYS_MAX_DEFAULT: usize = 16_384;

/// Whether a request may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allowed,
    /// Over the limit: allowed again after this long.
    Limited {
        /// Milliseconds until the request would be allowed.
        retry_after_ms: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// May be negative: a request larger than the burst leaves a debt.
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate_per_s: f64,
    burst: f64,
    keys_max: usize,
    state: Mutex<State<K>>,
}

#[derive(Debug)]
struct State<K> {
    buckets: HashMap<K, Bucket>,
    /// No sweep for full buckets before this.
    next_sweep: Option<Instant>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `rate_per_s` tokens a second per key, at most `burst` saved up (both at least 1).
    pub fn new(rate_per_s: u64, burst: u64) -> Self {
        Self {
            rate_per_s: rate_per_s.max(1) as f64,
            burst: burst.max(1) as f64,
            keys_max: KEYS_MAX_DEFAULT,
            state: Mutex::new(State {
                buckets: HashMap::new(),
                next_sweep: None,
            }),
        }
    }

    /// The same limiter tracking at most `keys_max` callers.
    pub fn with_keys_max(mut self, keys_max: usize) -> Self {
        self.keys_max = keys_max.max(1);
        self
    }

    /// Most callers tracked at once.
    pub fn keys_max(&self) -> usize {
        self.keys_max
    }

    /// Callers tracked now.
    pub fn keys(&self) -> usize {
        self.state.lock().expect("limiter lock").buckets.len()
    }

    /// Takes `cost` tokens from `key`'s bucket at time `now`, or says how long to wait.
    pub fn check(&self, key: &K, cost: u64, now: Instant) -> Decision {
        let mut state = self.state.lock().expect("limiter lock");
        if !state.buckets.contains_key(key) && state.buckets.len() >= self.keys_max {
            self.evict(&mut state, now);
        }
        let b = state.buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate_per_s).min(self.burst);
        b.at = now;
        let cost = cost as f64;
        let needed = cost.min(self.burst);
        if b.tokens >= needed {
            b.tokens -= cost;
            return Decision::Allowed;
        }
        let wait_s = (needed - b.tokens) / self.rate_per_s;
        Decision::Limited {
            retry_after_ms: (wait_s * 1_000.0).ceil().max(1.0) as u64,
        }
    }

    /// Makes room for one more key: drops the buckets that are full again (their callers have
    /// been quiet for a burst's worth of time; dropping one forgets nothing) at most once per
    /// [`SWEEP_INTERVAL_MS`], else one arbitrary bucket.
    fn evict(&self, state: &mut State<K>, now: Instant) {
        if state.next_sweep.is_none_or(|t| now >= t) {
            state.buckets.retain(|_, b| {
                let idle = now.saturating_duration_since(b.at).as_secs_f64();
                b.tokens + idle * self.rate_per_s < self.burst
            });
            state.next_sweep = Some(now + Duration::from_millis(SWEEP_INTERVAL_MS));
        }
        if state.buckets.len() >= self.keys_max {
            if let Some(k) = state.buckets.keys().next().cloned() {
                state.buckets.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_request_is_served_from_a_full_bucket_and_leaves_a_debt() {
        let l = RateLimiter::new(1_000, 1_000);
        let t0 = Instant::now();
        assert_eq!(l.check(&1, 5_000, t0), Decision::Allowed);
        // 4 000 owed plus 1 for the next id: 4.001 s.
        assert_eq!(
            l.check(&1, 1, t0 + Duration::from_secs(1)),
            Decision::Limited {
                retry_after_ms: 3_001
            }
        );
        assert_eq!(
            l.check(&1, 1, t0 + Duration::from_millis(4_001)),
            Decision::Allowed
        );
    }

    #[test]
    fn over_a_long_run_a_caller_gets_the_rate_plus_one_burst() {
        let l = RateLimiter::new(100, 50);
        let t0 = Instant::now();
        let mut allowed = 0;
        for ms in 0..10_000u64 {
            if l.check(&"x", 1, t0 + Duration::from_millis(ms)) == Decision::Allowed {
                allowed += 1;
            }
        }
        // 10 s at 100/s, plus the initial burst of 50.
        assert!((1_000..=1_050).contains(&allowed), "{allowed}");
    }

    #[test]
    fn the_number_of_callers_tracked_is_bounded() {
        let l = RateLimiter::new(10, 10).with_keys_max(100);
        let t0 = Instant::now();
        for k in 0..1_000u32 {
            l.check(&k, 5, t0 + Duration::from_millis(u64::from(k)));
        }
        assert!(l.keys() <= 100, "{}", l.keys());
        // The most recent caller is still tracked and still limited.
        let now = t0 + Duration::from_millis(999);
        assert_eq!(l.check(&999, 5, now), Decision::Allowed);
        assert!(matches!(l.check(&999, 5, now), Decision::Limited { .. }));
    }
}
