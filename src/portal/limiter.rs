//! Per-key rate limits against password spraying and SMS pumping from the portal.
//!
//! GCRA ("at most `max` per `window`, in bursts of up to `max`"): one instant per key, the
//! theoretical arrival time, instead of a queue of hits. The keys live in an `lru::LruCache` of
//! fixed capacity, so memory and the time of a check stay bounded (O(1)) whatever keys clients
//! invent, e.g. with forged X-Forwarded-For headers through a trusted proxy.
//!
//! The price of the bound: a key pushed out by more than `capacity` newer keys starts afresh.
//! An attacker who spreads requests over that many addresses (or forges them through a trusted
//! proxy) within one window slips past the per-address limit; the per-user limits sit in their
//! own limiter, which only sign-in attempts (each one also per-address limited) fill, and the
//! password and code lockouts that `auth` keeps in the store hold regardless.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::client_addr::host_key;

/// What the portal counts attempts by. Addresses are kept as `host_key` makes them (an IPv4
/// address, or an IPv6 /64), so one host is one key however it varies its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// Sign-in attempts from one client.
    SigninFrom(IpAddr),
    /// Sign-in attempts for one user name (`Authenticator::rate_key`: every spelling shares one).
    SigninAs(String),
    /// Codes tried from one client.
    CodeFrom(IpAddr),
    /// Directory searches by one helpdesk member (their account id).
    HelpdeskSearch(String),
    /// Changes (unlock, remove a token, issue or revoke a code) by one helpdesk member.
    HelpdeskChange(String),
    /// Helpdesk pages refused to one signed-in account (for the log line's limit).
    HelpdeskRefused(String),
    /// One member's views of one account (one event in the trail per few minutes).
    HelpdeskViewed(String, String),
}

impl LimitKey {
    pub fn signin_from(ip: IpAddr) -> Self {
        Self::SigninFrom(host_key(ip))
    }

    pub fn code_from(ip: IpAddr) -> Self {
        Self::CodeFrom(host_key(ip))
    }
}

pub struct RateLimiter<K = LimitKey> {
    arrivals: Mutex<LruCache<K, Instant>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    pub fn new(capacity: usize) -> Self {
        Self { arrivals: Mutex::new(LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN))) }
    }

    /// Counts one attempt for `key` at `now` if fewer than `max` fit in the `window` before.
    pub fn allow_at<Q>(&self, key: &Q, max: u32, window: Duration, now: Instant) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let interval = window / max.max(1);
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|p| p.into_inner());
        let next = match arrivals.get(key) {
            Some(&arrival) => arrival.max(now) + interval,
            None => now + interval,
        };
        if next.saturating_duration_since(now) > window {
            return false;
        }
        match arrivals.get_mut(key) {
            Some(arrival) => *arrival = next,
            None => {
                arrivals.push(key.to_owned(), next);
            }
        }
        true
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.arrivals.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_max_then_one_per_interval() {
        let limiter = RateLimiter::<String>::new(10);
        let t0 = Instant::now();
        let window = Duration::from_secs(300);
        for _ in 0..5 {
            assert!(limiter.allow_at("user:alice", 5, window, t0));
        }
        assert!(!limiter.allow_at("user:alice", 5, window, t0), "the sixth in the window");
        assert!(!limiter.allow_at("user:alice", 5, window, t0 + Duration::from_secs(59)));
        assert!(limiter.allow_at("user:alice", 5, window, t0 + Duration::from_secs(60)), "one more after window/max");
        assert!(limiter.allow_at("user:bob", 5, window, t0), "keys are separate");
        let rested = t0 + Duration::from_secs(1000);
        for _ in 0..5 {
            assert!(limiter.allow_at("user:alice", 5, window, rested), "a full burst again after a rest");
        }
    }

    #[test]
    fn forged_keys_beyond_the_capacity_keep_the_size_at_the_cap() {
        let limiter = RateLimiter::<String>::new(50_000);
        let t0 = Instant::now();
        for n in 0..120_000u32 {
            assert!(limiter.allow_at(
                &format!("signin-ip:10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255),
                20,
                Duration::from_secs(300),
                t0
            ));
        }
        assert_eq!(limiter.len(), 50_000, "bounded: the oldest keys went");
        // A check is a hash lookup plus an LRU relink, whatever the history: the store never
        // grows past its capacity, so there is nothing to scan.
        assert!(limiter.allow_at("signin-ip:192.0.2.1", 20, Duration::from_secs(300), t0));
        assert_eq!(limiter.len(), 50_000);
    }
}
