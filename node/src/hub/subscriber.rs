//! What the hub hands out, and the traits of those it hands it to. The hub fans each
//! message of a live stream out to its subscribers; it knows them only through
//! [`Subscriber`], and learns of new publishes' subscribers through
//! [`PublishObserver`], so no subscriber module is imported here.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use media::MediaKind;
use serde::Serialize;

use super::LiveStream;
use crate::channel::Channel;

/// One message of a live stream as a subscriber receives it, whatever protocol it
/// came in on: its kind, its timestamp (milliseconds) and an FLV tag body (see
/// [`media::mux`]); the payload is shared with the ingest buffer and every other
/// subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    /// An audio or video tag body.
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    /// `onMetaData` body.
    Metadata { timestamp: u32, payload: Bytes },
}

impl StreamMessage {
    /// The payload.
    pub fn payload(&self) -> &Bytes {
        match self {
            StreamMessage::Media { payload, .. } | StreamMessage::Metadata { payload, .. } => {
                payload
            }
        }
    }

    /// Payload bytes.
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A consumer of one live stream (a relay to one upstream target).
pub trait Subscriber: Send + Sync {
    /// The messages one socket read brought, in stream order (often one or two: a
    /// relay writes them upstream in one write). Called while the stream's media state
    /// is locked, so it must not block: a subscriber that cannot keep up drops
    /// messages up to the next restart point and counts them. `restart_points[i]`
    /// marks a message a consumer can start from (a video keyframe; any audio of an
    /// audio-only stream).
    fn deliver(&self, messages: &[StreamMessage], restart_points: &[bool], now: Instant);
    /// The publish ended: no message follows.
    fn close(&self);
    /// Its state, for the API.
    fn status(&self) -> SubscriberStatus;
}

/// The state of one subscriber as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SubscriberStatus {
    /// Where it delivers, safe to show (no userinfo, no query, secrets masked).
    pub url: String,
    /// What it is counted under in metrics (a bounded set: the configured target
    /// templates, redacted).
    #[serde(skip)]
    pub target: String,
    pub connected: bool,
    pub reconnects: u64,
    pub bytes_sent: u64,
    /// Messages and bytes dropped because it could not keep up.
    pub dropped_messages: u64,
    pub dropped_bytes: u64,
    pub last_error: Option<String>,
}

/// Told of every publish the hub accepts, before its first message, so that it can
/// attach subscribers ([`LiveStream::attach`]).
pub trait PublishObserver: Send + Sync {
    fn published(&self, stream: &Arc<LiveStream>, channel: &Channel);
}
