//! The re-check of live publishes against the channels table, every
//! `auth.recheck_interval`: a key rotated or a channel deleted ends the publish that
//! used it (the key is compared in constant time; a deleted channel's thumbnail goes
//! too), and so does a newer publish of the channel recorded by another node of the
//! fleet (cross-node takeover: once the table has accepted this node's "live", a
//! different session there is a newer publish). A channel found offline while it
//! streams here (swept while this node was cut off from the database) is marked live
//! again. While the database cannot answer nothing is ended.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Authorizer;
use crate::hub::{EndReason, Hub};
use crate::key::constant_time_eq;
use crate::store::ChannelDirectory;

/// What the watcher needs.
pub struct KeyWatch {
    pub hub: Arc<Hub>,
    pub store: Arc<dyn ChannelDirectory>,
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
        let current = match self.store.recheck(&ids).await {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot re-check stream keys; live publishes continue");
                return;
            }
        };
        for stream in live {
            let reason = match current.get(&stream.channel_id) {
                None => EndReason::ChannelDeleted,
                Some(state)
                    if !constant_time_eq(state.key_hash.as_bytes(), stream.key_hash.as_bytes()) =>
                {
                    EndReason::KeyRevoked
                }
                // Until the table has our live, what it says is older than us.
                Some(_) if !self.hub.live_written(&stream) => continue,
                Some(state) => match state.session {
                    Some(s) if state.live && s != stream.session_id => {
                        info!(channel_id = %stream.channel_id, session = %stream.session_id, newer_session = %s, node = state.node.as_deref().unwrap_or("?"), "a newer publish of this channel went live on another node");
                        metrics::counter!(crate::metric::TAKEOVERS, "where" => "fleet")
                            .increment(1);
                        EndReason::TakenOver
                    }
                    None if !state.live => {
                        warn!(channel_id = %stream.channel_id, session = %stream.session_id, "the channel was marked offline while it streams here (declared dead while cut off from the database?): marking it live again");
                        self.hub.reassert_live(&stream);
                        continue;
                    }
                    _ => continue,
                },
            };
            info!(channel_id = %stream.channel_id, session = %stream.session_id, reason = reason.as_str(), "ending publish");
            self.auth.forget_key(&stream.key_hash);
            stream.end(reason);
            if let (EndReason::ChannelDeleted, Some(dir)) = (reason, &self.thumbnail_dir) {
                crate::thumbs::remove_deleted(dir, &stream.channel_id).await;
            }
        }
    }
}
