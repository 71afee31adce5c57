//! Publish authorization: stream key → channel, with a deadline, and the watcher that
//! ends live publishes whose key was rotated or whose channel was deleted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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

/// Decides publish requests.
pub struct Authorizer {
    store: Arc<dyn ChannelStore>,
    timeout: Duration,
}

impl Authorizer {
    pub fn new(store: Arc<dyn ChannelStore>, timeout: Duration) -> Self {
        Self { store, timeout }
    }

    pub async fn authorize(&self, key: &StreamKey) -> AuthDecision {
        if key.expose().is_empty() {
            return AuthDecision::UnknownKey;
        }
        match tokio::time::timeout(self.timeout, self.store.find_by_key(key)).await {
            Ok(Ok(Some(channel))) => AuthDecision::Accepted(channel),
            Ok(Ok(None)) => AuthDecision::UnknownKey,
            Ok(Err(e)) => AuthDecision::Unavailable(e.to_string()),
            Err(_) => AuthDecision::Unavailable(format!(
                "channel lookup took longer than {}",
                humantime::format_duration(self.timeout)
            )),
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
            stream.end(reason);
            if let (EndReason::ChannelDeleted, Some(dir)) = (reason, &thumbnail_dir) {
                crate::thumbs::remove_deleted(dir, &stream.channel_id).await;
            }
        }
    }
}
