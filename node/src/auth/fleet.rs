//! How a publish of the same channel on another node of the fleet is judged.

use std::time::Duration;

use crate::config::{RtmpConfig, StatusConfig};
use crate::store::RemotePublish;

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

impl FleetTakeover {
    /// The rule as configured (`rtmp.takeover_silence`, the heartbeat settings).
    pub fn of(rtmp: &RtmpConfig, status: &StatusConfig) -> FleetTakeover {
        FleetTakeover {
            silence: rtmp.takeover_silence,
            heartbeat_interval: status.heartbeat_interval,
            dead_after: status.dead_after(),
        }
    }
}
