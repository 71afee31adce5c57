//! The heartbeat, every `status.heartbeat_interval`: this node says it is alive in the
//! nodes table, refreshes `last_seen` of its live channels that received media since
//! the last beat (so `last_seen` tells a reader, and another node judging a takeover,
//! when media was last seen), and sweeps the nodes not heard from for
//! `status.dead_after_beats` beats: their live channels are marked offline, each by
//! exactly one sweeping node. A failure is logged and tried again at the next beat
//! (every statement has the store's deadlines, so a silent database delays a beat by
//! seconds at most and never stops the next), and a database that answers again gets
//! a beat at once; the video never waits for it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::hub::Hub;
use crate::store::{FleetRegistry, NodeAnnouncement, StatusStore};

/// What the heartbeat needs.
pub struct Heartbeat {
    pub hub: Arc<Hub>,
    /// Where this node says it is alive, and sweeps the dead.
    pub registry: Arc<dyn FleetRegistry>,
    /// Where `last_seen` is written.
    pub status: Arc<dyn StatusStore>,
    /// The store's health (a beat at once when the database answers again).
    pub health: Option<tokio::sync::watch::Receiver<bool>>,
    pub every: Duration,
    /// A node silent this long is dead.
    pub dead_after: Duration,
    pub announcement: NodeAnnouncement,
}

impl Heartbeat {
    /// Beats every interval until `cancel` (the first beat is the caller's, at start),
    /// and at once when the database answers again after an outage: the registry
    /// hears of this node before the others take it for dead.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut health = self.health.clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = crate::store::answers_again(&mut health) => {
                    info!("heartbeat: the database answers again; beating now");
                    tick.reset();
                }
            }
            self.beat().await;
        }
    }

    /// One beat.
    pub async fn beat(&self) {
        if let Err(e) = self.registry.announce_node(&self.announcement).await {
            warn!(error = %e, "heartbeat: cannot say this node is alive in the nodes table");
        }
        let sending: Vec<_> = self
            .hub
            .list()
            .iter()
            .filter(|s| s.quiet_for() <= self.every)
            .map(|s| s.channel_id)
            .collect();
        if let Err(e) = self.status.heartbeat(&sending).await {
            warn!(error = %e, "heartbeat: last_seen not written");
        }
        match self.registry.sweep_dead_nodes(self.dead_after).await {
            Ok(swept) => {
                for node in swept {
                    info!(node = %node.node, channels = node.channels.len(), dead_after = ?self.dead_after, "a node of the fleet stopped its heartbeat: declared dead, its live channels marked offline");
                    metrics::counter!(crate::metric::NODES_SWEPT).increment(1);
                }
            }
            Err(e) => warn!(error = %e, "heartbeat: cannot sweep dead nodes"),
        }
    }
}
