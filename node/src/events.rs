//! Public events for websites (`GET /api/v1/events`, server-sent events): a channel
//! went live, went offline, or got a new thumbnail, named by its public id only. A
//! bounded broadcast: a listener that falls behind loses the oldest events (and is told
//! how many), never slows the node.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::channel::ThumbnailId;

/// Events kept for listeners that are behind.
const CAPACITY: usize = 1024;

/// One public event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PublicEvent {
    Live {
        channel_id: Uuid,
        name: String,
        started_at: DateTime<Utc>,
    },
    Offline {
        channel_id: Uuid,
    },
    Thumbnail {
        channel_id: Uuid,
        /// `<ThumbnailId>.jpg`.
        thumbnail: String,
        updated_at: DateTime<Utc>,
    },
}

impl PublicEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            PublicEvent::Live { .. } => "live",
            PublicEvent::Offline { .. } => "offline",
            PublicEvent::Thumbnail { .. } => "thumbnail",
        }
    }

    pub fn thumbnail(channel_id: Uuid, updated_at: DateTime<Utc>) -> PublicEvent {
        PublicEvent::Thumbnail {
            channel_id,
            thumbnail: ThumbnailId::of(&channel_id).file_name(),
            updated_at,
        }
    }
}

/// Where events go; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<PublicEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Sends to whoever listens now (nobody listening is fine).
    pub fn publish(&self, event: PublicEvent) {
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<PublicEvent> {
        self.sender.subscribe()
    }
}
