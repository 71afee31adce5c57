//! Revocation: a key rotated or a channel deleted in the channels table ends the live
//! publish that used it, within `auth.recheck_interval`. Every interval the key of each
//! live publish is compared (in constant time) with its channel's current key; while
//! the database cannot answer nothing is ended. A deleted channel's thumbnail goes too.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Authorizer;
use crate::hub::{EndReason, Hub};
use crate::key::constant_time_eq;
use crate::store::ChannelStore;

/// What the watcher needs.
pub struct KeyWatch {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn ChannelStore>,
    /// Its cache forgets revoked keys at once.
    pub auth: Arc<Authorizer>,
    pub interval: Duration,
    /// Where thumbnails are, when they are made.
    pub thumbnail_dir: Option<PathBuf>,
}

impl KeyWatch {
    /// Checks every `interval` until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.check().await,
            }
        }
    }

    /// One round: ends the publishes whose key is no longer their channel's.
    pub async fn check(&self) {
        let live = self.hub.list();
        if live.is_empty() {
            return;
        }
        let ids: Vec<_> = live.iter().map(|s| s.channel_id).collect();
        let current = match self.store.key_hashes(&ids).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot re-check stream keys; live publishes continue");
                return;
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
            self.auth.cache.invalidate(&stream.key_hash);
            stream.end(reason);
            if let (EndReason::ChannelDeleted, Some(dir)) = (reason, &self.thumbnail_dir) {
                crate::thumbs::remove_deleted(dir, &stream.channel_id).await;
            }
        }
    }
}
