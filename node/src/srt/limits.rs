//! What a caller can repeat at will, bounded per SRT worker: handshake packets per
//! source address (a token bucket, read before any work), and the log lines of
//! refusals before the key check.

use std::collections::HashMap;
use std::time::Instant;

use crate::peer::AddressKey;

/// Addresses whose handshake rate is tracked at most; past it, idle ones are
/// forgotten, and if none is, new addresses go unchecked (spoofed inductions cost
/// one cookie each; a conclusion needs a real address).
const RATE_ADDRESSES_MAX: usize = 65_536;

/// A token bucket per source address (IPv6 per /64) for handshake packets.
pub(super) struct HandshakeRate {
    per_second: f64,
    burst: f64,
    buckets: HashMap<AddressKey, (f64, Instant)>,
}

impl HandshakeRate {
    pub(super) fn new(per_second: u32) -> HandshakeRate {
        HandshakeRate {
            per_second: per_second as f64,
            burst: 2.0 * per_second as f64,
            buckets: HashMap::new(),
        }
    }

    /// Whether a handshake from `ip` may be read now.
    pub(super) fn allow(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        let key = AddressKey::of(ip);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= RATE_ADDRESSES_MAX {
            let (rate, burst) = (self.per_second, self.burst);
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
            if self.buckets.len() >= RATE_ADDRESSES_MAX {
                return true;
            }
        }
        let (tokens, at) = self.buckets.entry(key).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * self.per_second).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn an_address_gets_its_burst_then_its_rate_and_others_are_untouched() {
        let mut r = HandshakeRate::new(50);
        let t0 = Instant::now();
        let a: std::net::IpAddr = "198.51.100.7".parse().unwrap();
        let b: std::net::IpAddr = "203.0.113.9".parse().unwrap();
        let allowed = (0..1000).filter(|_| r.allow(a, t0)).count();
        assert_eq!(allowed, 100, "twice the rate at once");
        assert!(r.allow(b, t0), "another address has its own bucket");
        // A second later, a second's worth.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..1000).filter(|_| r.allow(a, t1)).count();
        assert_eq!(allowed, 50);
        // IPv6 counts per /64.
        let v6a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: std::net::IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert_eq!((0..100).filter(|_| r.allow(v6a, t1)).count(), 100);
        assert!(!r.allow(v6b, t1));
    }

    #[test]
    fn a_full_table_forgets_idle_addresses_and_never_refuses_a_new_one() {
        let mut r = HandshakeRate::new(50);
        let t0 = Instant::now();
        for i in 0..RATE_ADDRESSES_MAX as u32 {
            assert!(r.allow(std::net::IpAddr::from((0x0a00_0000 + i).to_be_bytes()), t0));
        }
        let new: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        // Nobody idle yet (each used one token): the new address is let through.
        assert!(r.allow(new, t0));
        assert_eq!(r.buckets.len(), RATE_ADDRESSES_MAX);
        // Two seconds later every bucket is full again: forgotten, room made.
        assert!(r.allow(new, t0 + Duration::from_secs(2)));
        assert_eq!(r.buckets.len(), 1);
    }
}
