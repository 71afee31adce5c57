//! One live publish: who published it, how it ends, and its media state (keyframe
//! cache, statistics, subscribers) behind one short-held lock that only this type
//! takes. Everything a message needs interpreting (tag headers, SPS, metadata AMF) is
//! parsed before the lock; the critical section only records and fans out, so a bug
//! in a parser can end one connection, never leave a lock that others need.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use media::{AudioTag, KeyframeCache, PictureSize, Snapshot, StatsSnapshot, StreamStats, VideoTag};
use parking_lot::Mutex;
use rtmp::message::{MSG_AUDIO, MSG_VIDEO};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use uuid::Uuid;

use super::subscriber::{StreamMessage, Subscriber, SubscriberStatus};
use super::EndReason;

/// Media state of a live stream. A message is recorded and fanned out to the
/// subscribers in one critical section, so a subscriber that takes a snapshot under
/// the same lock sees a consistent cut between "in the snapshot" and "in my queue".
#[derive(Default)]
struct MediaState {
    /// Metadata, sequence headers and the latest keyframe.
    cache: KeyframeCache,
    /// Codecs, size, frame rate, bitrate.
    stats: StreamStats,
    /// Fed with every message from their attachment on.
    subscribers: Vec<Arc<dyn Subscriber>>,
    /// Whether any video was seen (an audio-only stream restarts on any audio).
    has_video: bool,
}

/// One live publish.
pub struct LiveStream {
    pub channel_id: Uuid,
    pub name: String,
    /// Identifies this publish session (status writes carry it).
    pub session_id: Uuid,
    /// SHA-256 of the key it published with, to notice rotation.
    pub key_hash: String,
    pub peer: SocketAddr,
    /// Opaque tag of the publisher's address, salted with its key (the table keeps
    /// it, so that another node can tell a reconnect from a second encoder).
    pub peer_tag: Option<String>,
    pub started_at: DateTime<Utc>,
    /// Monotonic start, the zero of the statistics and takeover clocks (tokio's
    /// clock, which tests can pause).
    started: tokio::time::Instant,
    /// Milliseconds since `started` when the last media message arrived.
    last_media_ms: AtomicU64,
    /// Cancelled when the node ends this publish.
    cancel: CancellationToken,
    /// Set before `cancel` fires.
    end_reason: OnceLock<EndReason>,
    /// Never held across an await or a blocking call.
    media: Mutex<MediaState>,
}

/// What the API shows of a live stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    pub channel_id: Uuid,
    pub name: String,
    pub session_id: Uuid,
    pub started_at: DateTime<Utc>,
    pub stats: StatsSnapshot,
    pub subscribers: Vec<SubscriberStatus>,
}

impl std::fmt::Debug for LiveStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStream")
            .field("channel_id", &self.channel_id)
            .field("session_id", &self.session_id)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl LiveStream {
    pub(super) fn new(
        channel_id: Uuid,
        name: String,
        key_hash: String,
        peer: SocketAddr,
        peer_tag: Option<String>,
        cancel: CancellationToken,
    ) -> LiveStream {
        LiveStream {
            channel_id,
            name,
            session_id: Uuid::new_v4(),
            key_hash,
            peer,
            peer_tag,
            started_at: Utc::now(),
            started: tokio::time::Instant::now(),
            last_media_ms: AtomicU64::new(0),
            cancel,
            end_reason: OnceLock::new(),
            media: Mutex::new(MediaState::default()),
        }
    }

    fn ms_since_start(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn ms_at(&self, at: tokio::time::Instant) -> u64 {
        // Not `as_millis`: its 128-bit arithmetic runs for every media message.
        let d = at.saturating_duration_since(self.started);
        d.as_secs() * 1000 + u64::from(d.subsec_millis())
    }

    /// How long since the publisher last sent media (since the start, before any).
    pub fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_media_ms.load(Ordering::Relaxed));
        self.started.elapsed().saturating_sub(last)
    }

    /// Ends this publish from the node's side; the first reason given is kept.
    pub fn end(&self, reason: EndReason) {
        let _ = self.end_reason.set(reason);
        self.cancel.cancel();
    }

    /// Why the node ended it, if it did.
    pub fn end_reason(&self) -> Option<EndReason> {
        self.end_reason.get().copied()
    }

    /// Whether the node ended it.
    pub fn is_ended(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the node ends this publish.
    pub fn ended(&self) -> WaitForCancellationFutureOwned {
        self.cancel.clone().cancelled_owned()
    }

    /// Records an `onMetaData` body and hands it to the subscribers (the caller
    /// flushes them).
    pub fn on_metadata(&self, timestamp: u32, payload: Bytes) {
        let size = metadata_size(&payload);
        let now = Instant::now();
        let message = StreamMessage::Metadata {
            timestamp,
            payload: payload.clone(),
        };
        let mut m = self.media.lock();
        if let Some(size) = size {
            m.stats.on_metadata_size(size.width, size.height);
        }
        for s in &m.subscribers {
            s.deliver(&message, false, now);
        }
        m.cache.on_metadata(payload);
    }

    /// Records a video message and hands it to the subscribers. Tags that cannot be
    /// classified are relayed unchanged but not interpreted.
    pub fn on_video(&self, timestamp: u32, payload: &Bytes) {
        self.on_video_at(timestamp, payload.clone(), tokio::time::Instant::now());
        self.flush_subscribers();
    }

    /// [`LiveStream::on_video`], arrived at `at` (one clock reading for everything a
    /// socket read brought), without the flush: the caller ends the read's batch with
    /// [`LiveStream::flush_subscribers`].
    pub fn on_video_at(&self, timestamp: u32, payload: Bytes, at: tokio::time::Instant) {
        let ms = self.ms_at(at);
        self.last_media_ms.store(ms, Ordering::Relaxed);
        let now = at.into_std();
        let tag = VideoTag::parse(&payload).ok();
        let size = tag.and_then(|t| media::sequence_header_size(&payload, &t));
        let keyframe = tag.is_some_and(|t| t.is_keyframe_data());
        let message = StreamMessage::Media {
            type_id: MSG_VIDEO,
            timestamp,
            payload,
        };
        let payload = message.payload();
        let mut m = self.media.lock();
        m.has_video = true;
        if let Some(tag) = &tag {
            m.stats.on_video(ms, payload.len(), tag, size);
            m.cache.on_video(timestamp, payload, tag);
        }
        for s in &m.subscribers {
            s.deliver(&message, keyframe, now);
        }
    }

    /// Records an audio message and hands it to the subscribers.
    pub fn on_audio(&self, timestamp: u32, payload: &Bytes) {
        self.on_audio_at(timestamp, payload.clone(), tokio::time::Instant::now());
        self.flush_subscribers();
    }

    /// [`LiveStream::on_audio`], arrived at `at`, without the flush.
    pub fn on_audio_at(&self, timestamp: u32, payload: Bytes, at: tokio::time::Instant) {
        let ms = self.ms_at(at);
        self.last_media_ms.store(ms, Ordering::Relaxed);
        let now = at.into_std();
        let tag = AudioTag::parse(&payload).ok();
        let message = StreamMessage::Media {
            type_id: MSG_AUDIO,
            timestamp,
            payload,
        };
        let payload = message.payload();
        let mut m = self.media.lock();
        if let Some(tag) = &tag {
            m.stats.on_audio(ms, payload.len(), tag);
            m.cache.on_audio(timestamp, payload, tag);
        }
        let restart_point = !m.has_video;
        for s in &m.subscribers {
            s.deliver(&message, restart_point, now);
        }
    }

    /// Ends a batch of messages (everything one socket read brought): subscribers send
    /// what they held back ([`Subscriber::flush`]).
    pub fn flush_subscribers(&self) {
        let m = self.media.lock();
        for s in &m.subscribers {
            s.flush();
        }
    }

    /// Adds a subscriber; it receives every message from the next one on.
    pub fn attach(&self, subscriber: Arc<dyn Subscriber>) {
        self.media.lock().subscribers.push(subscriber);
    }

    /// Tells every subscriber that the publish ended.
    pub(super) fn close_subscribers(&self) {
        let subscribers = std::mem::take(&mut self.media.lock().subscribers);
        for s in subscribers {
            s.close();
        }
    }

    /// Metadata, sequence headers and the latest keyframe (shared buffers, no copy).
    pub fn snapshot(&self) -> Snapshot {
        self.media.lock().cache.snapshot()
    }

    /// The snapshot and the result of `check`, taken while no message can be
    /// delivered: what `check` sees of a subscriber's queue and the snapshot are one
    /// consistent cut. `check` must be quick and must not block.
    pub fn snapshot_with<T>(&self, check: impl FnOnce() -> T) -> (Snapshot, T) {
        let m = self.media.lock();
        (m.cache.snapshot(), check())
    }

    /// Changes with every keyframe; 0 before the first.
    pub fn keyframe_generation(&self) -> u64 {
        self.media.lock().cache.generation()
    }

    /// What the API shows.
    pub fn info(&self) -> StreamInfo {
        let now = self.ms_since_start();
        let (stats, subscribers) = {
            let m = self.media.lock();
            (
                m.stats.snapshot(now),
                m.subscribers.iter().map(|s| s.status()).collect(),
            )
        };
        StreamInfo {
            channel_id: self.channel_id,
            name: self.name.clone(),
            session_id: self.session_id,
            started_at: self.started_at,
            stats,
            subscribers,
        }
    }

    /// Runs `f` while holding the media lock (tests of what a failure inside it does).
    #[cfg(test)]
    pub(super) fn with_media_locked<T>(&self, f: impl FnOnce() -> T) -> T {
        let _m = self.media.lock();
        f()
    }
}

/// Width and height from an `onMetaData` body, when present.
fn metadata_size(body: &[u8]) -> Option<PictureSize> {
    let values = rtmp::amf0::decode_all(body).ok()?;
    let obj = values.get(1)?;
    let w = obj.get("width")?.as_number()?;
    let h = obj.get("height")?.as_number()?;
    (w > 0.0 && h > 0.0 && w < 65536.0 && h < 65536.0).then_some(PictureSize {
        width: w as u32,
        height: h as u32,
    })
}
