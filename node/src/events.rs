//! Public events for websites (`GET /api/v1/events`, server-sent events) and webhooks:
//! a channel went live, went offline, got a new thumbnail, or its health verdicts
//! changed, named by its public id only. A
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
    /// A stream's health verdicts changed (judged by the `health` module).
    Health {
        channel_id: Uuid,
        /// The worst verdict now.
        verdict: &'static str,
        /// Every check that is not good now.
        problems: Vec<CheckView>,
        /// What changed.
        changes: Vec<Change>,
    },
}

/// One check as told.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckView {
    pub check: &'static str,
    pub verdict: &'static str,
    pub reason: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub fix: &'static str,
}

/// A verdict that changed, in a `health` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub check: &'static str,
    pub from: &'static str,
    pub to: &'static str,
}

impl PublicEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            PublicEvent::Live { .. } => "live",
            PublicEvent::Offline { .. } => "offline",
            PublicEvent::Thumbnail { .. } => "thumbnail",
            PublicEvent::Health { .. } => "health",
        }
    }

    /// The channel it is about.
    pub fn channel_id(&self) -> Uuid {
        match self {
            PublicEvent::Live { channel_id, .. }
            | PublicEvent::Offline { channel_id }
            | PublicEvent::Thumbnail { channel_id, .. }
            | PublicEvent::Health { channel_id, .. } => *channel_id,
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

/// A consumer that must see every event, in order (webhooks): given each event as it
/// is published, possibly under the hub's session lock, so it must only queue.
pub trait EventSink: Send + Sync {
    fn offer(&self, event: &PublicEvent);
}

/// Where events go; cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Published>>,
    /// Set once at start, before the first publish.
    sink: Arc<std::sync::OnceLock<Arc<dyn EventSink>>>,
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("listeners", &self.sender.receiver_count())
            .field("sink", &self.sink.get().is_some())
            .finish()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(CAPACITY).0,
            sink: Arc::default(),
        }
    }
}

impl EventBus {
    /// Sends to the sink and to whoever listens now (nobody listening is fine; then
    /// it is not even serialised).
    pub fn publish(&self, event: PublicEvent) {
        if let Some(sink) = self.sink.get() {
            sink.offer(&event);
        }
        if self.sender.receiver_count() > 0 {
            let _ = self.sender.send(Arc::new(Published::new(event)));
        }
    }

    /// Gives every event from now on to `sink` too (once; a second sink is refused).
    pub fn set_sink(&self, sink: Arc<dyn EventSink>) -> bool {
        self.sink.set(sink).is_ok()
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
