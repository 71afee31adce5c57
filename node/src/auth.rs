//! Publish authorization: stream key → channel, with a deadline and a cache that keeps
//! recent answers (and admits recently valid keys while the database is unreachable);
//! a per-address limiter that refuses key guessers before the handshake; and the
//! watcher that ends live publishes whose key was rotated or whose channel was deleted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::AuthConfig;
use crate::hub::{EndReason, Hub};
use crate::key::{constant_time_eq, StreamKey};
use crate::store::{Channel, ChannelStore};

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

/// Recent answers by key digest, bounded in size.
pub struct AuthCache {
    entries: Mutex<HashMap<String, Cached>>,
    capacity: usize,
}

impl AuthCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, digest: &str) -> Option<Cached> {
        self.entries
            .lock()
            .expect("auth cache")
            .get(digest)
            .cloned()
    }

    fn put(&self, digest: String, channel: Option<Channel>, now: Instant, max_age: Duration) {
        let mut e = self.entries.lock().expect("auth cache");
        if e.len() >= self.capacity && !e.contains_key(&digest) {
            e.retain(|_, c| now.duration_since(c.at) < max_age);
            if e.len() >= self.capacity {
                // Still full of fresh answers: drop negative ones first, then any.
                e.retain(|_, c| c.channel.is_some());
                if e.len() >= self.capacity {
                    let victim = e.keys().next().cloned();
                    if let Some(v) = victim {
                        e.remove(&v);
                    }
                }
            }
        }
        e.insert(digest, Cached { channel, at: now });
    }

    /// Forgets a key (rotated or deleted).
    pub fn invalidate(&self, digest: &str) {
        self.entries.lock().expect("auth cache").remove(digest);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().expect("auth cache").len()
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
                    self.cache.put(
                        digest,
                        answer.clone(),
                        Instant::now(),
                        self.config.stale_ttl,
                    );
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

/// Every `interval`, checks that each live publish's key is still its channel's key;
/// ends the publishes whose key was rotated or whose channel is gone. When the store
/// is unreachable nothing is ended.
/// The thumbnail of a deleted channel is removed from `thumbnail_dir`.
pub async fn watch_keys(
    hub: Arc<Hub>,
    store: Arc<dyn ChannelStore>,
    auth: Arc<Authorizer>,
    interval: Duration,
    thumbnail_dir: Option<PathBuf>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let live = hub.list();
        if live.is_empty() {
            continue;
        }
        let ids: Vec<_> = live.iter().map(|s| s.channel_id).collect();
        let current = match store.key_hashes(&ids).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot re-check stream keys; live publishes continue");
                continue;
            }
        };
        for stream in live {
            let reason = match current.get(&stream.channel_id) {
                None => EndReason::ChannelDeleted,
                Some(h) if !constant_time_eq(h.as_bytes(), stream.key_hash.as_bytes()) => {
                    EndReason::KeyRevoked
                }
                Some(_) => continue,
            };
            info!(channel_id = %stream.channel_id, session = %stream.session_id, reason = reason.as_str(), "ending publish");
            auth.cache.invalidate(&stream.key_hash);
            stream.end(reason);
            if let (EndReason::ChannelDeleted, Some(dir)) = (reason, &thumbnail_dir) {
                crate::thumbs::remove_deleted(dir, &stream.channel_id).await;
            }
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
            c.put(format!("k{i}"), None, t, Duration::from_secs(60));
        }
        assert!(c.len() <= 3);
        c.invalidate("k9");
        assert!(c.get("k9").is_none());
    }
}
