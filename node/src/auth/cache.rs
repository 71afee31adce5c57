//! Recent answers to key lookups, by key digest, bounded in size.

use std::time::Instant;

use crate::channel::Channel;

/// One cached answer.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    /// `None`: no channel has this key.
    pub(super) channel: Option<Channel>,
    pub(super) at: Instant,
}

/// Recent answers by key digest, bounded in size. Lookups, inserts and evictions are
/// O(1) and touch one shard of the cache, never the whole table; eviction keeps the
/// entries in use (a hot key survives a flood of one-off guesses).
pub(super) struct AuthCache {
    entries: quick_cache::sync::Cache<String, Cached>,
}

impl AuthCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
        }
    }

    pub(super) fn get(&self, digest: &str) -> Option<Cached> {
        self.entries.get(digest)
    }

    pub(super) fn put(&self, digest: String, channel: Option<Channel>, now: Instant) {
        self.entries.insert(digest, Cached { channel, at: now });
    }

    /// Forgets a key (rotated or deleted).
    pub(super) fn invalidate(&self, digest: &str) {
        self.entries.remove(digest);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
