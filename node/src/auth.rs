//! Publish authorization: stream key → channel, with a deadline and a bounded cache
//! that keeps recent answers (and admits recently valid keys while the database is
//! unreachable); and a per-address limiter that refuses key guessers before the
//! handshake. Ending the publishes whose key was revoked is the revocation module's job.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::channel::Channel;
use crate::config::AuthConfig;
use crate::key::StreamKey;
use crate::store::ChannelStore;

/// The answer to a publish request.
#[derive(Debug)]
pub enum AuthDecision {
    Accepted(Channel),
    /// No channel has this key.
    UnknownKey,
    /// The store did not answer in time or failed: the publisher should retry later.
    Unavailable(String),
}

/// One cached answer.
#[derive(Debug, Clone)]
struct Cached {
    /// `None`: no channel has this key.
    channel: Option<Channel>,
    at: Instant,
}

/// Recent answers by key digest, bounded in size. Lookups, inserts and evictions are
/// O(1) and touch one shard of the cache, never the whole table; eviction keeps the
/// entries in use (a hot key survives a flood of one-off guesses).
pub struct AuthCache {
    entries: quick_cache::sync::Cache<String, Cached>,
}

impl AuthCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    fn get(&self, digest: &str) -> Option<Cached> {
        self.entries.get(digest)
    }

    fn put(&self, digest: String, channel: Option<Channel>, now: Instant) {
        self.entries.insert(digest, Cached { channel, at: now });
    }

    /// Forgets a key (rotated or deleted).
    pub fn invalidate(&self, digest: &str) {
        self.entries.remove(digest);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides publish requests.
pub struct Authorizer {
    store: Arc<dyn ChannelStore>,
    config: AuthConfig,
    pub cache: AuthCache,
    pub limiter: FailureLimiter,
}

impl Authorizer {
    pub fn new(store: Arc<dyn ChannelStore>, config: AuthConfig) -> Self {
        Self {
            store,
            cache: AuthCache::new(config.cache_size),
            limiter: FailureLimiter::new(&config),
            config,
        }
    }

    pub async fn authorize(&self, key: &StreamKey) -> AuthDecision {
        if key.expose().is_empty() {
            return AuthDecision::UnknownKey;
        }
        let digest = key.sha256_hex();
        let cached = self.cache.get(&digest);
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.at.elapsed() < self.config.cache_ttl)
        {
            return match &c.channel {
                Some(ch) => AuthDecision::Accepted(ch.clone()),
                None => AuthDecision::UnknownKey,
            };
        }
        let reason =
            match tokio::time::timeout(self.config.timeout, self.store.find_by_key(key)).await {
                Ok(Ok(answer)) => {
                    self.cache.put(digest, answer.clone(), Instant::now());
                    return match answer {
                        Some(channel) => AuthDecision::Accepted(channel),
                        None => AuthDecision::UnknownKey,
                    };
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!(
                    "channel lookup took longer than {}",
                    humantime::format_duration(self.config.timeout)
                ),
            };
        // The database cannot answer: a key seen valid recently is still admitted; an
        // unknown one is not.
        if self.config.admit_cached_when_unavailable {
            if let Some(Cached {
                channel: Some(ch),
                at,
            }) = cached
            {
                if at.elapsed() < self.config.stale_ttl {
                    warn!(channel_id = %ch.id, %reason, "database unavailable; admitting a key seen valid recently");
                    return AuthDecision::Accepted(ch);
                }
            }
        }
        AuthDecision::Unavailable(reason)
    }
}

/// Wrong-key attempts of one address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    window_start: Instant,
    banned_until: Option<Instant>,
}

/// Counts wrong keys per source address; past the threshold the address is refused,
/// before the handshake, for the ban duration.
pub struct FailureLimiter {
    map: Mutex<HashMap<IpAddr, Failures>>,
    max_failures: u32,
    window: Duration,
    ban: Duration,
}

/// Most addresses tracked at once.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

impl FailureLimiter {
    pub fn new(config: &AuthConfig) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max_failures: config.max_failures,
            window: config.failure_window,
            ban: config.ban_duration,
        }
    }

    /// Whether connections from `ip` are refused now.
    pub fn is_banned(&self, ip: IpAddr, now: Instant) -> bool {
        let map = self.map.lock().expect("limiter");
        map.get(&ip)
            .and_then(|f| f.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Records a wrong key; returns `true` when this attempt got the address banned.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> bool {
        let mut map = self.map.lock().expect("limiter");
        if map.len() >= MAX_TRACKED_ADDRESSES && !map.contains_key(&ip) {
            let (window, ban) = (self.window, self.ban);
            map.retain(|_, f| {
                f.banned_until.is_some_and(|u| now < u)
                    || now.duration_since(f.window_start) < window.max(ban)
            });
            if map.len() >= MAX_TRACKED_ADDRESSES {
                map.retain(|_, f| f.banned_until.is_some_and(|u| now < u));
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            window_start: now,
            banned_until: None,
        });
        if f.banned_until.is_some_and(|u| now >= u)
            || now.duration_since(f.window_start) > self.window
        {
            *f = Failures {
                count: 0,
                window_start: now,
                banned_until: None,
            };
        }
        f.count += 1;
        if f.count >= self.max_failures && f.banned_until.is_none() {
            f.banned_until = Some(now + self.ban);
            return true;
        }
        false
    }

    /// A valid key from `ip` clears its count.
    pub fn record_success(&self, ip: IpAddr) {
        let mut map = self.map.lock().expect("limiter");
        if map.get(&ip).is_some_and(|f| f.banned_until.is_none()) {
            map.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32) -> FailureLimiter {
        FailureLimiter::new(&AuthConfig {
            max_failures: max,
            failure_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(300),
            ..AuthConfig::default()
        })
    }

    #[test]
    fn limiter_bans_after_the_threshold_and_forgives_later() {
        let l = limiter(3);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        let t = Instant::now();
        assert!(!l.record_failure(ip, t));
        assert!(!l.record_failure(ip, t));
        assert!(!l.is_banned(ip, t));
        assert!(l.record_failure(ip, t), "third failure bans");
        assert!(l.is_banned(ip, t + Duration::from_secs(1)));
        assert!(!l.is_banned(other, t), "only that address");
        assert!(
            !l.is_banned(ip, t + Duration::from_secs(301)),
            "ban expires"
        );
        // Failures spread beyond the window do not add up.
        let l = limiter(3);
        for i in 0..10 {
            assert!(!l.record_failure(ip, t + Duration::from_secs(61 * i)));
        }
    }

    #[test]
    fn success_clears_the_count() {
        let l = limiter(3);
        let ip: IpAddr = "198.51.100.1".parse().unwrap();
        let t = Instant::now();
        l.record_failure(ip, t);
        l.record_failure(ip, t);
        l.record_success(ip);
        assert!(!l.record_failure(ip, t));
        assert!(!l.record_failure(ip, t));
    }

    #[test]
    fn cache_is_bounded() {
        let c = AuthCache::new(3);
        let t = Instant::now();
        for i in 0..10 {
            c.put(format!("k{i}"), None, t);
        }
        assert!(c.len() <= 3);
        c.put("k9".into(), None, t);
        c.invalidate("k9");
        assert!(c.get("k9").is_none());
    }

    /// Streamers' keys are looked up again and again; other keys (one-off publishes of
    /// other channels, guesses) once each. A stream of one-off keys must not push the
    /// keys in use out of the cache (the old cache, once full of fresh answers, evicted
    /// an arbitrary one, after sweeping the whole table under one lock).
    #[test]
    fn keys_in_use_survive_a_flood_of_one_off_lookups() {
        let c = AuthCache::new(1000);
        let t = Instant::now();
        let channel = |n: u128| Some(Channel::new(uuid::Uuid::from_u128(n), "live"));
        let hot: Vec<String> = (0..20).map(|i| format!("hot{i}")).collect();
        for (i, h) in hot.iter().enumerate() {
            c.put(h.clone(), channel(i as u128), t);
        }
        for n in 0..50_000u32 {
            let other =
                (n % 3 != 0).then(|| Channel::new(uuid::Uuid::from_u128(n as u128 + 100), "once"));
            c.put(format!("once{n}"), other, t);
            let h = &hot[n as usize % hot.len()];
            assert!(c.get(h).is_some(), "{h} evicted after {n} one-off keys");
        }
        assert!(c.len() <= 1000, "{}", c.len());
    }
}
