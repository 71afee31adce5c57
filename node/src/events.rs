//! Public events for websites (`GET /api/v1/events`, server-sent events): a channel
//! went live, went offline, or got a new thumbnail, named by its public id only. A
//! bounded broadcast: a listener that falls behind loses the oldest events (and is told
//! how many), never slows the node. Each event is serialised once, when it is
//! published, into the SSE frame every listener is sent (shared, not copied).

use std::sync::Arc;

use bytes::Bytes;
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

/// An event as it is sent: the event, and its SSE frame (`event: ...`, `data: ...`,
/// a blank line), rendered once for every listener.
#[derive(Debug)]
pub struct Published {
    pub event: PublicEvent,
    pub sse: Bytes,
}

impl Published {
    fn new(event: PublicEvent) -> Published {
        let json = serde_json::to_string(&event).expect("events serialize");
        let sse = Bytes::from(format!("event: {}\ndata: {json}\n\n", event.name()));
        Published { event, sse }
    }
}

/// Where events go; cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Published>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl EventBus {
    /// Sends to whoever listens now (nobody listening is fine; then it is not even
    /// serialised).
    pub fn publish(&self, event: PublicEvent) {
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(Published::new(event)));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Published>> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_rendered_once_into_the_frame_every_listener_gets() {
        let bus = EventBus::default();
        let (mut a, mut b) = (bus.subscribe(), bus.subscribe());
        let id = uuid::Uuid::from_u128(7);
        bus.publish(PublicEvent::Offline { channel_id: id });
        let (x, y) = (a.try_recv().unwrap(), b.try_recv().unwrap());
        assert!(Arc::ptr_eq(&x, &y), "one rendering, shared");
        assert_eq!(
            x.sse,
            format!("event: offline\ndata: {{\"type\":\"offline\",\"channel_id\":\"{id}\"}}\n\n")
        );
    }
}
