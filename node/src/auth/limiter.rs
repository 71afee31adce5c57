//! Wrong keys (and wrong admin tokens) per address: growing waits, never a lock-out.

use parking_lot::Mutex;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::config::AuthConfig;
use crate::peer::AddressKey;

/// Wrong keys of one address (or /64) within the failure window.
#[derive(Debug, Clone, Copy)]
struct Failures {
    /// Wrong keys since `window_start`.
    count: u32,
    window_start: Instant,
    /// Reached `auth.max_failures`: the longest delay applies until then.
    penalized_until: Option<Instant>,
}

/// Slows key guessing down without locking anyone out. Every wrong key from an address
/// (IPv6: its /64) makes that address's next publish requests wait before they are
/// answered: `auth.failure_delay` after one failure, doubling with each further one,
/// up to `auth.max_failure_delay`; after `auth.max_failures` within
/// `auth.failure_window` the longest delay holds for `auth.ban_duration`. The wait
/// applies to every request from the address, valid keys included (otherwise the
/// speed of the answer would tell a guesser at once that a key is wrong), and is
/// checked when the publish arrives, so connections opened earlier wait too. A valid
/// key from a shared address (carrier NAT, a venue) still goes live, at most
/// `max_failure_delay` later; it does not clear the failures of other keys. The table
/// is bounded (`auth.tracked_addresses`), with O(1) work per lookup.
pub struct FailureLimiter {
    table: Mutex<quick_cache::unsync::Cache<AddressKey, Failures>>,
    max_failures: u32,
    window: Duration,
    ban: Duration,
    first_delay: Duration,
    max_delay: Duration,
}

/// Addresses tracked at once; the least used are forgotten first.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl FailureLimiter {
    pub fn new(config: &AuthConfig) -> Self {
        Self::with_capacity(config, MAX_TRACKED_ADDRESSES)
    }

    fn with_capacity(config: &AuthConfig, capacity: usize) -> Self {
        Self {
            table: Mutex::new(quick_cache::unsync::Cache::new(capacity)),
            max_failures: config.max_failures,
            window: config.failure_window,
            ban: config.ban_duration,
            first_delay: config.failure_delay,
            max_delay: config.max_failure_delay,
        }
    }

    /// How long a publish request from `ip` waits before it is answered now.
    pub fn delay(&self, ip: IpAddr, now: Instant) -> Duration {
        let mut table = self.table.lock();
        let Some(f) = table.get(&AddressKey::of(ip)).copied() else {
            return Duration::ZERO;
        };
        if f.penalized_until.is_some_and(|until| now < until) {
            return self.max_delay;
        }
        if now.duration_since(f.window_start) > self.window {
            table.remove(&AddressKey::of(ip));
            return Duration::ZERO;
        }
        let doublings = f.count.saturating_sub(1).min(30);
        self.first_delay
            .saturating_mul(1u32 << doublings)
            .min(self.max_delay)
    }

    /// Records a wrong key; returns `true` when this one put the address at the longest
    /// delay for `auth.ban_duration`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> bool {
        let mut table = self.table.lock();
        let fresh = Failures {
            count: 0,
            window_start: now,
            penalized_until: None,
        };
        let Ok(Some(mut f)) =
            table.get_mut_or_insert_with(&AddressKey::of(ip), || Ok::<_, ()>(fresh))
        else {
            return false;
        };
        let penalty_over = f.penalized_until.is_some_and(|u| now >= u);
        if penalty_over
            || (f.penalized_until.is_none() && now.duration_since(f.window_start) > self.window)
        {
            *f = fresh;
        }
        f.count += 1;
        if f.count >= self.max_failures && f.penalized_until.is_none() {
            f.penalized_until = Some(now + self.ban);
            return true;
        }
        false
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.table.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max: u32) -> AuthConfig {
        AuthConfig {
            max_failures: max,
            failure_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(300),
            failure_delay: Duration::from_millis(250),
            max_failure_delay: Duration::from_secs(5),
            ..AuthConfig::default()
        }
    }

    fn limiter(max: u32) -> FailureLimiter {
        FailureLimiter::new(&config(max))
    }

    #[test]
    fn each_wrong_key_doubles_the_wait_up_to_the_longest() {
        let l = limiter(10);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t = Instant::now();
        assert_eq!(l.delay(ip, t), Duration::ZERO);
        let mut waits = Vec::new();
        for _ in 0..7 {
            assert!(!l.record_failure(ip, t));
            waits.push(l.delay(ip, t).as_millis());
        }
        assert_eq!(waits, vec![250, 500, 1000, 2000, 4000, 5000, 5000]);
        // Only that address.
        assert_eq!(l.delay("203.0.113.8".parse().unwrap(), t), Duration::ZERO);
        // Failures older than the window are forgotten.
        assert_eq!(l.delay(ip, t + Duration::from_secs(61)), Duration::ZERO);
    }

    #[test]
    fn max_failures_keep_the_longest_wait_for_the_ban_duration() {
        let l = limiter(3);
        let ip: IpAddr = "2001:db8:5:6::1".parse().unwrap();
        let t = Instant::now();
        assert!(!l.record_failure(ip, t));
        assert!(!l.record_failure(ip, t));
        assert!(
            l.record_failure(ip, t),
            "the third failure starts the penalty"
        );
        // The whole /64 waits, past the failure window, until the ban duration ends.
        let neighbour: IpAddr = "2001:db8:5:6:ffff::2".parse().unwrap();
        assert_eq!(
            l.delay(neighbour, t + Duration::from_secs(200)),
            Duration::from_secs(5)
        );
        assert_eq!(l.delay(ip, t + Duration::from_secs(301)), Duration::ZERO);
        assert!(
            !l.record_failure(ip, t + Duration::from_secs(301)),
            "counting starts over"
        );
    }

    #[test]
    fn a_valid_key_never_clears_other_keys_failures() {
        // There is no success path at all: only time clears failures.
        let l = limiter(10);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let t = Instant::now();
        l.record_failure(ip, t);
        l.record_failure(ip, t);
        assert_eq!(
            l.delay(ip, t + Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn the_address_table_is_bounded() {
        let l = FailureLimiter::with_capacity(&config(10), 1000);
        let t = Instant::now();
        for n in 0..20_000u32 {
            l.record_failure(IpAddr::from(n.to_be_bytes()), t);
        }
        assert!(l.tracked() <= 1000, "{}", l.tracked());
    }
}
