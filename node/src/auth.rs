//! Publish authorization: stream key → channel, with a deadline and a bounded cache
//! that keeps recent answers (and admits recently valid keys while the database is
//! unreachable); and a per-address limiter that slows key guessing down. Ending the publishes whose key was revoked is the revocation module's job.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::warn;

use crate::channel::Channel;
use crate::config::AuthConfig;
use crate::key::StreamKey;
use crate::peer::AddressKey;
use crate::store::{ChannelStore, RemotePublish};

/// The answer to a publish request.
#[derive(Debug)]
pub enum AuthDecision {
    Accepted(Channel),
    /// No channel has this key.
    UnknownKey,
    /// The store did not answer in time or failed: the publisher should retry later.
    Unavailable(String),
    /// The key is valid, but an operator suspended the channel's publishing for now.
    Suspended(Channel),
}

impl AuthDecision {
    /// The metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            AuthDecision::Accepted(_) => "accepted",
            AuthDecision::UnknownKey => "unknown_key",
            AuthDecision::Unavailable(_) => "unavailable",
            AuthDecision::Suspended(_) => "suspended",
        }
    }
}

/// How a publish elsewhere in the fleet is judged (see `hub::takeover_allowed`).
#[derive(Debug, Clone, Copy)]
pub struct FleetTakeover {
    /// `rtmp.takeover_silence`.
    pub silence: Duration,
    /// `status.heartbeat_interval`: how stale another node's `last_seen` of a stream
    /// that is sending may be.
    pub heartbeat_interval: Duration,
    /// `status.dead_after`: a node not heard from for this long carries nothing.
    pub dead_after: Duration,
}

impl FleetTakeover {
    /// Whether a newcomer with `peer_tag` may take `remote` over.
    pub fn allows(&self, remote: &RemotePublish, peer_tag: &str) -> bool {
        let same_address = remote.peer_tag.as_deref() == Some(peer_tag);
        // The other node refreshes last_seen only while media arrives, every
        // heartbeat: what it says is up to one interval old.
        let quiet = if remote.node_alive {
            remote
                .quiet_for
                .map(|q| q.saturating_sub(self.heartbeat_interval))
        } else {
            Some(Duration::MAX)
        };
        crate::hub::takeover_allowed(same_address, quiet, self.silence)
    }
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
    /// Channels an operator suspended, until when (at most one entry per channel).
    suspended: Mutex<HashMap<uuid::Uuid, Instant>>,
}

impl Authorizer {
    pub fn new(store: Arc<dyn ChannelStore>, config: AuthConfig) -> Self {
        Self {
            store,
            cache: AuthCache::new(config.cache_size),
            limiter: FailureLimiter::new(&config),
            suspended: Mutex::new(HashMap::new()),
            config,
        }
    }

    /// The node that holds `channel` live for another encoder, still sending and
    /// from another address (the newcomer is then refused); `None` when the channel
    /// is free, may be taken over, or the database cannot say in time (a publish is
    /// never refused because the database is slow).
    pub async fn held_elsewhere(
        &self,
        channel: uuid::Uuid,
        peer_tag: &str,
        rule: &FleetTakeover,
    ) -> Option<String> {
        let asked = tokio::time::timeout(
            self.config.timeout,
            self.store.live_elsewhere(channel, rule.dead_after),
        )
        .await;
        match asked {
            Ok(Ok(Some(remote))) if !rule.allows(&remote, peer_tag) => Some(remote.node),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                warn!(channel_id = %channel, error = %e, "cannot tell whether another node carries this channel; accepting the publish");
                None
            }
            Err(_) => {
                warn!(channel_id = %channel, "the database did not say in time whether another node carries this channel; accepting the publish");
                None
            }
        }
    }

    /// Refuses publishes of `channel` until `until` (its key stays valid).
    pub fn suspend(&self, channel: uuid::Uuid, until: Instant) {
        let mut s = self.suspended.lock().expect("suspended");
        let now = Instant::now();
        s.retain(|_, u| *u > now);
        s.insert(channel, until);
    }

    pub async fn authorize(&self, key: &StreamKey) -> AuthDecision {
        match self.lookup(key).await {
            AuthDecision::Accepted(channel) if self.is_suspended(channel.id) => {
                AuthDecision::Suspended(channel)
            }
            decision => decision,
        }
    }

    fn is_suspended(&self, channel: uuid::Uuid) -> bool {
        self.suspended
            .lock()
            .expect("suspended")
            .get(&channel)
            .is_some_and(|until| Instant::now() < *until)
    }

    async fn lookup(&self, key: &StreamKey) -> AuthDecision {
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
        let mut table = self.table.lock().expect("limiter");
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
        let mut table = self.table.lock().expect("limiter");
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
        self.table.lock().expect("limiter").len()
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
