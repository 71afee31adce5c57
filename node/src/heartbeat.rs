//! The heartbeat: every `status.heartbeat_interval`, `last_seen` of the channels live
//! on this node is refreshed, so that a reader of the table can tell a live channel
//! from one a dead node left behind. A failure is logged and retried at the next beat;
//! the video never waits for it.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::hub::Hub;
use crate::store::ChannelStore;

/// Beats every `every` until `cancel`.
pub async fn run(
    hub: Arc<Hub>,
    store: Arc<dyn ChannelStore>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = store.heartbeat(&hub.live_channels()).await {
            warn!(error = %e, "heartbeat not written");
        }
    }
}
