//! Publish admission, the one decision every protocol's driver asks for: a presented
//! stream key and the peer that presented it go in, and out comes either a publish
//! started on the hub or a refusal with its reason. Inside, in this order:
//!
//! 1. an address that sent wrong keys waits before any answer (valid keys too: a fast
//!    answer would tell a guesser its key is wrong) ([`limiter`]);
//! 2. the key is looked up, with a deadline, through a bounded cache that keeps recent
//!    answers and admits recently valid keys while the database cannot answer
//!    ([`cache`]); a suspended channel is refused;
//! 3. another node of the fleet that carries the channel for an encoder still sending
//!    from another address refuses the newcomer ([`fleet`]; a slow database never
//!    refuses anyone);
//! 4. the hub starts the publish, taking over a silent or same-address publisher;
//! 5. a wrong key is recorded against the address.
//!
//! Drivers translate the [`Verdict`] into what their protocol says (RTMP: `onStatus`).
//! Ending the publishes whose key was revoked is the revocation module's job.

mod cache;
mod fleet;
mod limiter;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use fleet::FleetTakeover;
pub use limiter::FailureLimiter;

use crate::channel::Channel;
use crate::config::AuthConfig;
use crate::hub::{Hub, Protocol, PublishHandle, PublishRequest};
use crate::key::StreamKey;
use crate::peer::AddressKey;
use crate::store::{ChannelDirectory, FleetRegistry};
use cache::{AuthCache, Cached};

/// A publish request, whatever the protocol.
#[derive(Debug)]
pub struct PublishAttempt {
    /// The key as presented.
    pub key: StreamKey,
    /// The publisher (the real client behind a trusted proxy).
    pub peer: SocketAddr,
    pub protocol: Protocol,
    /// Cancelled when the node ends the publish (the driver's own token, so that it
    /// watches one token for everything that ends it); `None`: a new one.
    pub cancel: Option<CancellationToken>,
}

/// The answer to a [`PublishAttempt`].
#[derive(Debug)]
pub enum Verdict {
    /// The publish is live on the hub; dropping the handle ends it.
    Admitted(PublishHandle),
    Refused(Refusal),
}

/// The answer to [`Authorizer::admit_checked`].
#[derive(Debug)]
pub enum Checked<T, E> {
    /// The publish is live on the hub, and what the check gave.
    Admitted(PublishHandle, T),
    Refused(Refusal),
    /// The protocol's own check failed.
    Failed(E),
}

impl<T, E> Checked<T, E> {
    fn refused(reason: RefusalReason, retry_after: Option<Duration>) -> Checked<T, E> {
        Checked::Refused(Refusal {
            reason,
            retry_after,
        })
    }
}

/// Why a publish was refused, and what to tell the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// When trying again may succeed (the database may answer again, the other encoder
    /// may go silent); `None`: not without a change (another key, an operator).
    pub retry_after: Option<Duration>,
}

/// The reasons a publish is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// No channel has this key.
    UnknownKey,
    /// The key is valid, but an operator suspended the channel's publishing.
    Suspended,
    /// The key cannot be checked now (the database is slow or down).
    Unavailable,
    /// The channel is live from another encoder still sending from another address
    /// (on this node or another of the fleet).
    AlreadyLive,
}

impl Refusal {
    /// What the encoder is told, in words its user can act on.
    pub fn description(&self) -> String {
        match self.reason {
            RefusalReason::UnknownKey => "invalid stream key".into(),
            RefusalReason::Suspended => "publishing to this channel is suspended for now".into(),
            RefusalReason::Unavailable => {
                "stream key cannot be checked right now, try again shortly".into()
            }
            RefusalReason::AlreadyLive => format!(
                "this channel is already live from another encoder: stop that one first (a new publish takes over only from the same address, or after {:?} without media)",
                self.retry_after.unwrap_or_default()
            ),
        }
    }

    /// For logs and metrics.
    pub fn label(&self) -> &'static str {
        match self.reason {
            RefusalReason::UnknownKey => "unknown_key",
            RefusalReason::Suspended => "suspended",
            RefusalReason::Unavailable => "unavailable",
            RefusalReason::AlreadyLive => "already_live",
        }
    }
}

/// What the key lookup said.
#[derive(Debug)]
enum Lookup {
    Accepted(Channel),
    /// No channel has this key.
    UnknownKey,
    /// The store did not answer in time or failed: the publisher should retry later.
    Unavailable(String),
    /// The key is valid, but an operator suspended the channel's publishing for now.
    Suspended(Channel),
}

impl Lookup {
    /// The metrics label.
    fn label(&self) -> &'static str {
        match self {
            Lookup::Accepted(_) => "accepted",
            Lookup::UnknownKey => "unknown_key",
            Lookup::Unavailable(_) => "unavailable",
            Lookup::Suspended(_) => "suspended",
        }
    }
}

/// Decides publish requests.
pub struct Authorizer {
    /// Key lookups.
    channels: Arc<dyn ChannelDirectory>,
    /// Who else carries a channel.
    registry: Arc<dyn FleetRegistry>,
    config: AuthConfig,
    cache: AuthCache,
    limiter: FailureLimiter,
    /// Channels an operator suspended, until when (at most one entry per channel).
    suspended: Mutex<HashMap<uuid::Uuid, Instant>>,
    /// Where an admitted publish starts.
    hub: Arc<Hub>,
    /// How a publish on another node is judged.
    fleet: FleetTakeover,
}

impl Authorizer {
    pub fn new(
        channels: Arc<dyn ChannelDirectory>,
        registry: Arc<dyn FleetRegistry>,
        config: AuthConfig,
        hub: Arc<Hub>,
        fleet: FleetTakeover,
    ) -> Self {
        Self {
            channels,
            registry,
            cache: AuthCache::new(config.cache_size),
            limiter: FailureLimiter::new(&config),
            suspended: Mutex::new(HashMap::new()),
            config,
            hub,
            fleet,
        }
    }

    /// Decides a publish request (see the module documentation for the steps), and
    /// starts the publish when it is admitted. The key goes no further than here: the
    /// hub gets its digest and the peer tag.
    pub async fn admit(&self, attempt: PublishAttempt) -> Verdict {
        match self
            .admit_checked(attempt, |_| Ok::<(), std::convert::Infallible>(()))
            .await
        {
            Checked::Admitted(handle, ()) => Verdict::Admitted(handle),
            Checked::Refused(r) => Verdict::Refused(r),
            Checked::Failed(never) => match never {},
        }
    }

    /// [`Authorizer::admit`] with a protocol's own check of the channel, made once the
    /// key is known good and before the publish starts (SRT: the channel's passphrase
    /// against the publisher's key material). A failed check counts against the
    /// address as a wrong key does (it guards a secret too), and what it says comes
    /// back as [`Checked::Failed`]; what it gives, with the publish, as
    /// [`Checked::Admitted`].
    pub async fn admit_checked<T, E: std::fmt::Display>(
        &self,
        attempt: PublishAttempt,
        check: impl FnOnce(&Channel) -> Result<T, E>,
    ) -> Checked<T, E> {
        let PublishAttempt {
            key,
            peer,
            protocol,
            cancel,
        } = attempt;
        let asked = Instant::now();
        let wait = self.limiter.delay(peer.ip(), asked);
        if !wait.is_zero() {
            debug!(%peer, wait = ?wait, "publish answer delayed: wrong stream keys from this address");
            tokio::time::sleep(wait).await;
        }
        let lookup = self.authorize(&key).await;
        metrics::histogram!(crate::metric::AUTH_SECONDS).record(asked.elapsed());
        metrics::counter!(crate::metric::AUTH_DECISIONS, "result" => lookup.label()).increment(1);
        let channel = match lookup {
            Lookup::Accepted(channel) => channel,
            Lookup::UnknownKey => {
                warn!(%peer, protocol = protocol.as_str(), key_fp = %key.fingerprint(), "publish rejected: no channel has this key");
                if self.limiter.record_failure(peer.ip(), Instant::now()) {
                    warn!(ip = %peer.ip(), "too many wrong stream keys: every publish from this address waits auth.max_failure_delay for auth.ban_duration");
                }
                return Checked::refused(RefusalReason::UnknownKey, None);
            }
            Lookup::Suspended(channel) => {
                info!(%peer, channel_id = %channel.id, "publish refused: suspended by the operator");
                return Checked::refused(RefusalReason::Suspended, None);
            }
            Lookup::Unavailable(reason) => {
                warn!(%peer, key_fp = %key.fingerprint(), %reason, "publish refused: cannot check the key now");
                return Checked::refused(RefusalReason::Unavailable, Some(self.config.timeout));
            }
        };
        let checked = match check(&channel) {
            Ok(v) => v,
            Err(e) => {
                warn!(%peer, protocol = protocol.as_str(), channel_id = %channel.id, reason = %e, "publish rejected");
                if self.limiter.record_failure(peer.ip(), Instant::now()) {
                    warn!(ip = %peer.ip(), "too many failed publishes: every publish from this address waits auth.max_failure_delay for auth.ban_duration");
                }
                return Checked::Failed(e);
            }
        };
        let tag = key.peer_tag(AddressKey::of(peer.ip()));
        // Live on another node of the fleet: the same rule as here, from what the
        // database knows.
        if self.hub.get(&channel.id).is_none() {
            if let Some(node) = self.held_elsewhere(channel.id, &tag).await {
                info!(%peer, channel_id = %channel.id, %node, "publish refused: the channel is live on another node from another encoder, still sending");
                metrics::counter!(crate::metric::ALREADY_LIVE, "where" => "fleet").increment(1);
                return Checked::refused(RefusalReason::AlreadyLive, Some(self.fleet.silence));
            }
        }
        let request = PublishRequest {
            key_hash: key.sha256_hex(),
            peer,
            peer_tag: Some(tag),
            protocol,
            cancel,
        };
        match self.hub.start_publish(&channel, request) {
            Ok(handle) => {
                info!(%peer, protocol = protocol.as_str(), channel_id = %channel.id, session = %handle.stream.session_id, "publish started");
                Checked::Admitted(handle, checked)
            }
            Err(_) => {
                info!(%peer, channel_id = %channel.id, "publish refused: the channel is live from another encoder, still sending");
                metrics::counter!(crate::metric::ALREADY_LIVE, "where" => "node").increment(1);
                Checked::refused(RefusalReason::AlreadyLive, Some(self.fleet.silence))
            }
        }
    }

    /// Forgets the cached answer for a key (by its SHA-256 hex): it was rotated or its
    /// channel deleted.
    pub fn forget_key(&self, digest: &str) {
        self.cache.invalidate(digest);
    }

    /// The node that holds `channel` live for another encoder, still sending and
    /// from another address (the newcomer is then refused); `None` when the channel
    /// is free, may be taken over, or the database cannot say in time (a publish is
    /// never refused because the database is slow).
    async fn held_elsewhere(&self, channel: uuid::Uuid, peer_tag: &str) -> Option<String> {
        let rule = &self.fleet;
        let asked = tokio::time::timeout(
            self.config.timeout,
            self.registry.live_elsewhere(channel, rule.dead_after),
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
        let mut s = self.suspended.lock();
        let now = Instant::now();
        s.retain(|_, u| *u > now);
        s.insert(channel, until);
    }

    async fn authorize(&self, key: &StreamKey) -> Lookup {
        match self.lookup(key).await {
            Lookup::Accepted(channel) if self.is_suspended(channel.id) => {
                Lookup::Suspended(channel)
            }
            decision => decision,
        }
    }

    fn is_suspended(&self, channel: uuid::Uuid) -> bool {
        self.suspended
            .lock()
            .get(&channel)
            .is_some_and(|until| Instant::now() < *until)
    }

    async fn lookup(&self, key: &StreamKey) -> Lookup {
        if key.expose().is_empty() {
            return Lookup::UnknownKey;
        }
        let digest = key.sha256_hex();
        let cached = self.cache.get(&digest);
        if let Some(c) = cached
            .as_ref()
            .filter(|c| c.at.elapsed() < self.config.cache_ttl)
        {
            return match &c.channel {
                Some(ch) => Lookup::Accepted(ch.clone()),
                None => Lookup::UnknownKey,
            };
        }
        let reason =
            match tokio::time::timeout(self.config.timeout, self.channels.find_by_key(key)).await {
                Ok(Ok(answer)) => {
                    self.cache.put(digest, answer.clone(), Instant::now());
                    return match answer {
                        Some(channel) => Lookup::Accepted(channel),
                        None => Lookup::UnknownKey,
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
                    return Lookup::Accepted(ch);
                }
            }
        }
        Lookup::Unavailable(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::StatusOutbox;
    use crate::store::sqlite::SqliteStore;
    use crate::store::ChannelDirectory;

    fn attempt(key: &StreamKey, peer: &str, protocol: Protocol) -> PublishAttempt {
        PublishAttempt {
            key: key.clone(),
            peer: peer.parse().unwrap(),
            protocol,
            cancel: None,
        }
    }

    /// The one decision, made without any protocol around it (as an SRT driver will
    /// make it): wrong keys are refused and slow their address down, a valid key starts
    /// the publish on the hub under its protocol, a second encoder from another
    /// address is refused with when to try again, and a suspension refuses a valid key.
    #[tokio::test]
    async fn admit_decides_a_publish_whatever_the_protocol() {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let (channel, key) = store.create_channel("decided").await.unwrap();
        let silence = Duration::from_secs(3);
        let hub = Hub::new(StatusOutbox::new(), Vec::new(), silence);
        let config = AuthConfig {
            failure_delay: Duration::from_millis(200),
            ..AuthConfig::default()
        };
        let fleet = FleetTakeover {
            silence,
            heartbeat_interval: Duration::from_secs(10),
            dead_after: Duration::from_secs(30),
        };
        let auth = Authorizer::new(store.clone(), store, config, hub.clone(), fleet);

        let wrong = StreamKey::new("sg_wrong");
        let Verdict::Refused(r) = auth
            .admit(attempt(&wrong, "198.51.100.1:1", Protocol::Srt))
            .await
        else {
            panic!("a wrong key admitted")
        };
        assert_eq!((r.reason, r.retry_after), (RefusalReason::UnknownKey, None));
        assert_eq!(r.description(), "invalid stream key");
        // That address now waits before its next answer, valid key or not.
        let started = Instant::now();
        let Verdict::Admitted(handle) = auth
            .admit(attempt(&key, "198.51.100.1:2", Protocol::Srt))
            .await
        else {
            panic!("the valid key refused")
        };
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(handle.stream.protocol, Protocol::Srt);
        assert_eq!(handle.stream.key_hash, key.sha256_hex());
        assert!(hub.get(&channel.id).is_some());

        // Another encoder, still sending (the first just started), another address.
        let Verdict::Refused(r) = auth
            .admit(attempt(&key, "203.0.113.9:1", Protocol::Rtmp))
            .await
        else {
            panic!("a second encoder admitted")
        };
        assert_eq!(
            (r.reason, r.retry_after),
            (RefusalReason::AlreadyLive, Some(silence))
        );
        assert!(
            r.description().contains("already live"),
            "{}",
            r.description()
        );
        drop(handle);

        auth.suspend(channel.id, Instant::now() + Duration::from_secs(60));
        let Verdict::Refused(r) = auth
            .admit(attempt(&key, "203.0.113.9:2", Protocol::Rtmp))
            .await
        else {
            panic!("a suspended channel admitted")
        };
        assert_eq!(r.reason, RefusalReason::Suspended);
    }
}
