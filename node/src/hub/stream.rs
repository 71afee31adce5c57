//! One live publish: who published it, how it ends, and its media state (keyframe
//! cache, statistics, subscribers) behind one short-held lock that only this type
//! takes. Everything a message needs interpreting (tag headers, SPS, metadata AMF) is
//! parsed before the lock; the critical section only records and fans out, so a bug
//! in a parser can end one connection, never leave a lock that others need.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use media::health::{HealthReport, HealthTracker, Thresholds};
use media::{
    AudioTag, KeyframeCache, MediaKind, PictureSize, Snapshot, StatsSnapshot, StreamStats, VideoTag,
};
use parking_lot::Mutex;
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
    /// What the encoder's settings look like (`health.enabled`).
    health: Option<HealthTracker>,
}

impl MediaState {
    /// Records one message in the cache and the statistics; returns whether a consumer
    /// can start from it (a video keyframe; any audio of an audio-only stream).
    fn record(&mut self, ms: u64, message: &StreamMessage, parsed: &Parsed) -> bool {
        let payload = message.payload();
        match (message, parsed) {
            (
                StreamMessage::Media { timestamp, .. },
                Parsed::Video {
                    tag,
                    size,
                    composition,
                },
            ) => {
                self.has_video = true;
                match tag {
                    Some(tag) => {
                        self.stats.on_video(ms, payload.len(), tag, *size);
                        if let Some(h) = &mut self.health {
                            h.on_video(
                                ms,
                                *timestamp,
                                payload.len(),
                                tag.packet == media::VideoPacket::Frames,
                                tag.keyframe,
                                *composition,
                            );
                        }
                        self.cache.on_video(*timestamp, payload, tag);
                        tag.is_keyframe_data()
                    }
                    None => false,
                }
            }
            (StreamMessage::Media { timestamp, .. }, Parsed::Audio { tag }) => {
                if let Some(tag) = tag {
                    self.stats.on_audio(ms, payload.len(), tag);
                    if let Some(h) = &mut self.health {
                        h.on_audio(ms, *timestamp, payload.len());
                    }
                    self.cache.on_audio(*timestamp, payload, tag);
                }
                !self.has_video
            }
            (_, Parsed::Metadata { size }) => {
                if let Some(size) = size {
                    self.stats.on_metadata_size(size.width, size.height);
                }
                self.cache.on_metadata(payload.clone());
                false
            }
            // Built together by `ReadBatch`: never mismatched.
            _ => false,
        }
    }
}

/// What a message says about itself, parsed before the stream's lock is taken.
#[derive(Debug, Clone, Copy)]
enum Parsed {
    Video {
        tag: Option<VideoTag>,
        size: Option<PictureSize>,
        /// PTS - DTS of a coded frame (non-zero: B-frames).
        composition: i32,
    },
    Audio {
        tag: Option<AudioTag>,
    },
    Metadata {
        size: Option<PictureSize>,
    },
}

/// The messages of a publish one socket read brought, in order, parsed and ready to
/// be recorded and fanned out in one critical section ([`LiveStream::deliver_read`]).
/// Ingest keeps one per connection and reuses it.
#[derive(Debug, Default)]
pub struct ReadBatch {
    messages: Vec<StreamMessage>,
    parsed: Vec<Parsed>,
    /// Filled under the lock: which messages are restart points.
    restart: Vec<bool>,
    /// Whether any message is audio or video (the publisher's last-media time moves).
    media: bool,
}

impl ReadBatch {
    /// Adds an audio or video tag body (the protocol-neutral input: RTMP's message
    /// payloads as they came, or bodies built from elementary streams by
    /// [`media::mux`]). Tags that cannot be classified are relayed unchanged but not
    /// interpreted.
    pub fn push_media(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        match kind {
            MediaKind::Video => {
                let tag = VideoTag::parse(&payload).ok();
                let size = tag.and_then(|t| media::sequence_header_size(&payload, &t));
                let composition = tag.map_or(0, |t| t.composition_time(&payload));
                self.parsed.push(Parsed::Video {
                    tag,
                    size,
                    composition,
                });
            }
            MediaKind::Audio => {
                let tag = AudioTag::parse(&payload).ok();
                self.parsed.push(Parsed::Audio { tag });
            }
        }
        self.media = true;
        self.messages.push(StreamMessage::Media {
            kind,
            timestamp,
            payload,
        });
    }

    /// Adds an `onMetaData` body.
    pub fn push_metadata(&mut self, timestamp: u32, payload: Bytes) {
        let size = metadata_size(&payload);
        self.parsed.push(Parsed::Metadata { size });
        self.messages
            .push(StreamMessage::Metadata { timestamp, payload });
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Forgets the messages (their payloads are released), keeping the capacity.
    pub fn clear(&mut self) {
        self.messages.clear();
        self.parsed.clear();
        self.restart.clear();
        self.media = false;
    }
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
    /// What the publisher speaks.
    pub protocol: super::Protocol,
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
    /// The last report on the publisher's link, from protocols that have one (SRT).
    link: Mutex<Option<LinkStats>>,
}

/// How the publisher's link to the node is doing, as its protocol reports it (SRT
/// does; RTMP over TCP has nothing of the kind).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct LinkStats {
    /// Round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// The stream's latency: how long a lost packet may take to be sent again.
    pub latency_ms: u32,
    pub packets_received: u64,
    /// Packets found missing (most come again: retransmitted).
    pub packets_lost: u64,
    pub packets_retransmitted: u64,
    /// Packets given up (too late): what the viewers miss.
    pub packets_dropped: u64,
    /// Packets waiting behind a lost one now.
    pub receive_buffer_packets: usize,
    pub receive_kbps: u64,
    pub encrypted: bool,
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
    pub protocol: super::Protocol,
    pub link: Option<LinkStats>,
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
        request: super::PublishRequest,
        track_health: bool,
    ) -> LiveStream {
        let super::PublishRequest {
            key_hash,
            peer,
            peer_tag,
            protocol,
            cancel,
        } = request;
        LiveStream {
            channel_id,
            name,
            session_id: Uuid::new_v4(),
            key_hash,
            peer,
            peer_tag,
            protocol,
            started_at: Utc::now(),
            started: tokio::time::Instant::now(),
            last_media_ms: AtomicU64::new(0),
            cancel: cancel.unwrap_or_default(),
            end_reason: OnceLock::new(),
            media: Mutex::new(MediaState {
                health: track_health.then(HealthTracker::default),
                ..MediaState::default()
            }),
            link: Mutex::new(None),
        }
    }

    /// The protocol driver's latest report on the publisher's link.
    pub fn set_link(&self, stats: LinkStats) {
        *self.link.lock() = Some(stats);
    }

    pub fn link(&self) -> Option<LinkStats> {
        *self.link.lock()
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

    /// Records a video message and hands it to the subscribers (ingest goes through
    /// [`LiveStream::deliver_read`]).
    #[cfg(test)]
    pub fn on_video(&self, timestamp: u32, payload: &Bytes) {
        let mut batch = ReadBatch::default();
        batch.push_media(MediaKind::Video, timestamp, payload.clone());
        self.deliver_read(&mut batch, tokio::time::Instant::now());
    }

    /// Records an audio message and hands it to the subscribers.
    #[cfg(test)]
    pub fn on_audio(&self, timestamp: u32, payload: &Bytes) {
        let mut batch = ReadBatch::default();
        batch.push_media(MediaKind::Audio, timestamp, payload.clone());
        self.deliver_read(&mut batch, tokio::time::Instant::now());
    }

    /// Records what one socket read brought, arrived at `at`, and hands it to the
    /// subscribers as one batch, in one critical section (a relay writes it upstream
    /// in one write). Leaves `batch` empty, its capacity kept for the next read.
    pub fn deliver_read(&self, batch: &mut ReadBatch, at: tokio::time::Instant) {
        if batch.messages.is_empty() {
            return;
        }
        let now = at.into_std();
        let ms = self.ms_at(at);
        if batch.media {
            self.last_media_ms.store(ms, Ordering::Relaxed);
        }
        let mut m = self.media.lock();
        batch.restart.clear();
        for (message, parsed) in batch.messages.iter().zip(&batch.parsed) {
            let restart = m.record(ms, message, parsed);
            batch.restart.push(restart);
        }
        for s in &m.subscribers {
            s.deliver(&batch.messages, &batch.restart, now);
        }
        drop(m);
        batch.clear();
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
            protocol: self.protocol,
            link: self.link(),
        }
    }

    /// What the encoder's settings look like now (`None` when health is off).
    pub fn health(&self, thresholds: &Thresholds) -> Option<HealthReport> {
        let now = self.ms_since_start();
        let m = self.media.lock();
        m.health.as_ref().map(|h| h.report(now, thresholds))
    }

    /// The relays' states (their drop counters), without the rest of [`Self::info`].
    pub fn subscriber_statuses(&self) -> Vec<SubscriberStatus> {
        let m = self.media.lock();
        m.subscribers.iter().map(|s| s.status()).collect()
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
