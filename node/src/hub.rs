//! The hub: one live publish per channel. A publish of a channel that is already live
//! takes over: the old session is cancelled at once (this ends the "stream busy" loop
//! when OBS reconnects over a half-dead TCP connection). Status transitions go to the
//! [`StatusOutbox`]; nothing here waits on the database.
//!
//! Each [`LiveStream`] keeps its keyframe cache and statistics; the ingest connection
//! feeds it, the API reads it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use media::{AudioTag, KeyframeCache, StatsSnapshot, StreamStats, VideoTag};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use rtmp::message::{MSG_AUDIO, MSG_VIDEO};

use crate::outbox::StatusOutbox;
use crate::relay::queue::{RelayItem, RelayQueue};
use crate::store::{Channel, StatusUpdate};

/// Why a publish ended, when the node ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// A new publisher with the same key took over.
    TakenOver,
    /// The stream key was rotated.
    KeyRevoked,
    /// The channel was deleted.
    ChannelDeleted,
    /// The node is shutting down.
    Shutdown,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::TakenOver => "taken over by a new publisher with the same key",
            EndReason::KeyRevoked => "stream key rotated",
            EndReason::ChannelDeleted => "channel deleted",
            EndReason::Shutdown => "node shutting down",
        }
    }
}

/// A relay target attached to a live stream.
#[derive(Debug)]
pub struct RelayAttachment {
    /// The target as it may be shown (no userinfo, no query, secrets masked).
    pub display_url: String,
    pub queue: Arc<RelayQueue>,
    /// Last failure, for the API.
    pub last_error: Arc<Mutex<Option<String>>>,
}

/// Media state of a live stream, behind one short-held lock. The ingest connection
/// updates it and fans each message out to the relay queues in the same critical
/// section, so a relay that snapshots the cache under this lock sees a consistent
/// cut between "in the snapshot" and "in my queue".
#[derive(Debug, Default)]
pub struct MediaState {
    pub cache: KeyframeCache,
    pub stats: StreamStats,
    /// Relay queues fed by this stream.
    pub relays: Vec<RelayAttachment>,
    /// Whether any video was seen (an audio-only stream restarts on any audio).
    pub has_video: bool,
}

/// One live publish.
#[derive(Debug)]
pub struct LiveStream {
    pub channel_id: Uuid,
    pub name: String,
    /// Identifies this publish session (status writes carry it).
    pub session_id: Uuid,
    /// SHA-256 of the key it published with, to notice rotation.
    pub key_hash: String,
    pub peer: SocketAddr,
    pub started_at: DateTime<Utc>,
    /// Monotonic start, the zero of the stats clock.
    started: Instant,
    /// Cancelled when the node ends this publish.
    pub cancel: CancellationToken,
    /// Set before `cancel` fires.
    end_reason: OnceLock<EndReason>,
    pub media: Mutex<MediaState>,
    /// When the thumbnail was last written.
    pub thumbnail_updated_at: crate::thumbs::ThumbnailTime,
}

impl LiveStream {
    fn ms_since_start(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Ends this publish from the node's side.
    pub fn end(&self, reason: EndReason) {
        let _ = self.end_reason.set(reason);
        self.cancel.cancel();
    }

    pub fn end_reason(&self) -> Option<EndReason> {
        self.end_reason.get().copied()
    }

    pub fn on_metadata(&self, timestamp: u32, body: Bytes) {
        let size = metadata_size(&body);
        let now = Instant::now();
        let mut m = self.media.lock().expect("media lock");
        if let Some((w, h)) = size {
            m.stats.on_metadata_size(w, h);
        }
        for r in &m.relays {
            r.queue.push(
                RelayItem::Metadata {
                    timestamp,
                    payload: body.clone(),
                },
                false,
                now,
            );
        }
        m.cache.on_metadata(body);
    }

    /// Records a video message and hands it to the relays. Tags that cannot be
    /// classified are relayed unchanged but not interpreted.
    pub fn on_video(&self, timestamp: u32, body: &Bytes) {
        let ms = self.ms_since_start();
        let now = Instant::now();
        let tag = VideoTag::parse(body).ok();
        let mut m = self.media.lock().expect("media lock");
        m.has_video = true;
        if let Some(tag) = &tag {
            m.stats.on_video(ms, body, tag);
            m.cache.on_video(timestamp, body, tag);
        }
        let keyframe = tag.is_some_and(|t| t.is_keyframe_data());
        for r in &m.relays {
            r.queue
                .push(media_item(MSG_VIDEO, timestamp, body), keyframe, now);
        }
    }

    pub fn on_audio(&self, timestamp: u32, body: &Bytes) {
        let ms = self.ms_since_start();
        let now = Instant::now();
        let tag = AudioTag::parse(body).ok();
        let mut m = self.media.lock().expect("media lock");
        if let Some(tag) = &tag {
            m.stats.on_audio(ms, body, tag);
            m.cache.on_audio(timestamp, body, tag);
        }
        let restart_point = !m.has_video;
        for r in &m.relays {
            r.queue
                .push(media_item(MSG_AUDIO, timestamp, body), restart_point, now);
        }
    }

    /// Attaches a relay queue (fed from the next message on).
    pub fn attach_relay(&self, attachment: RelayAttachment) {
        self.media
            .lock()
            .expect("media lock")
            .relays
            .push(attachment);
    }

    /// Closes every relay queue: the relays unpublish and disconnect.
    pub fn close_relays(&self) {
        for r in &self.media.lock().expect("media lock").relays {
            r.queue.close();
        }
    }

    pub fn stats(&self) -> StatsSnapshot {
        let now = self.ms_since_start();
        self.media.lock().expect("media lock").stats.snapshot(now)
    }
}

fn media_item(type_id: u8, timestamp: u32, body: &Bytes) -> RelayItem {
    RelayItem::Media {
        type_id,
        timestamp,
        payload: body.clone(),
    }
}

/// Width and height from an `onMetaData` body, when present.
fn metadata_size(body: &[u8]) -> Option<(u32, u32)> {
    let values = rtmp::amf0::decode_all(body).ok()?;
    let obj = values.get(1)?;
    let w = obj.get("width")?.as_number()?;
    let h = obj.get("height")?.as_number()?;
    (w > 0.0 && h > 0.0 && w < 65536.0 && h < 65536.0).then_some((w as u32, h as u32))
}

/// All live streams of this node.
pub struct Hub {
    /// Live stream per channel.
    live: Mutex<HashMap<Uuid, Arc<LiveStream>>>,
    /// Where status transitions go.
    outbox: Arc<StatusOutbox>,
    /// Orders status updates.
    seq: AtomicU64,
}

impl Hub {
    pub fn new(outbox: Arc<StatusOutbox>) -> Arc<Self> {
        Arc::new(Self {
            live: Mutex::new(HashMap::new()),
            outbox,
            seq: AtomicU64::new(1),
        })
    }

    fn status(&self, stream: &LiveStream, live: bool) {
        self.outbox.push(StatusUpdate {
            channel_id: stream.channel_id,
            live,
            session_id: stream.session_id,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at: Utc::now(),
            supersedes: Vec::new(),
        });
    }

    /// Starts a publish of `channel`, taking over any current one.
    pub fn start_publish(
        self: &Arc<Self>,
        channel: &Channel,
        key_hash: String,
        peer: SocketAddr,
    ) -> PublishHandle {
        let stream = Arc::new(LiveStream {
            channel_id: channel.id,
            name: channel.name.clone(),
            session_id: Uuid::new_v4(),
            key_hash,
            peer,
            started_at: Utc::now(),
            started: Instant::now(),
            cancel: CancellationToken::new(),
            end_reason: OnceLock::new(),
            media: Mutex::new(MediaState::default()),
            thumbnail_updated_at: Mutex::new(None),
        });
        let previous = self
            .live
            .lock()
            .expect("hub lock")
            .insert(channel.id, stream.clone());
        if let Some(old) = previous {
            old.end(EndReason::TakenOver);
        }
        self.status(&stream, true);
        PublishHandle {
            hub: self.clone(),
            stream,
        }
    }

    /// Live streams, in no particular order.
    pub fn list(&self) -> Vec<Arc<LiveStream>> {
        self.live
            .lock()
            .expect("hub lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, channel_id: &Uuid) -> Option<Arc<LiveStream>> {
        self.live.lock().expect("hub lock").get(channel_id).cloned()
    }

    fn finish(&self, stream: &Arc<LiveStream>) {
        let mut live = self.live.lock().expect("hub lock");
        let current = live
            .get(&stream.channel_id)
            .is_some_and(|s| Arc::ptr_eq(s, stream));
        if current {
            live.remove(&stream.channel_id);
            drop(live);
            self.status(stream, false);
        }
    }

    /// Ends every live stream (shutdown).
    pub fn end_all(&self, reason: EndReason) {
        for s in self.list() {
            s.end(reason);
        }
    }
}

/// Held by the ingest connection while it publishes; dropping it ends the publish
/// (and marks the channel offline, unless another session took over).
pub struct PublishHandle {
    hub: Arc<Hub>,
    pub stream: Arc<LiveStream>,
}

impl Drop for PublishHandle {
    fn drop(&mut self) {
        self.stream.close_relays();
        self.hub.finish(&self.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel() -> Channel {
        Channel {
            id: Uuid::new_v4(),
            name: "c".into(),
            is_live: false,
            live_since: None,
            last_seen: None,
            relay_targets: Vec::new(),
        }
    }

    #[test]
    fn takeover_cancels_the_old_session_and_keeps_the_channel_live() {
        let outbox = StatusOutbox::new();
        let hub = Hub::new(outbox.clone());
        let ch = channel();
        let peer = "127.0.0.1:1".parse().unwrap();
        let first = hub.start_publish(&ch, "h".into(), peer);
        let second = hub.start_publish(&ch, "h".into(), peer);
        assert!(first.stream.cancel.is_cancelled());
        assert_eq!(first.stream.end_reason(), Some(EndReason::TakenOver));
        assert!(!second.stream.cancel.is_cancelled());
        drop(first);
        // The old session leaving does not take the channel offline.
        assert_eq!(hub.list().len(), 1);
        let pending = outbox.take_all();
        assert_eq!(pending.len(), 1);
        assert!(pending[0].live && pending[0].session_id == second.stream.session_id);
        drop(second);
        assert!(hub.list().is_empty());
        let pending = outbox.take_all();
        assert!(!pending[0].live);
    }

    #[test]
    fn coalescing_keeps_the_newest_update() {
        let outbox = StatusOutbox::new();
        let id = Uuid::new_v4();
        let s = |n: u128| Uuid::from_u128(n);
        let u = |live, session, seq| StatusUpdate {
            channel_id: id,
            live,
            session_id: s(session),
            seq,
            at: Utc::now(),
            supersedes: Vec::new(),
        };
        outbox.push(u(true, 1, 1));
        outbox.push(u(false, 2, 3));
        outbox.push(u(true, 1, 2)); // a retried older update must not win
        assert_eq!(outbox.pending_len(), 1);
        let all = outbox.take_all();
        // ...but the survivor may end the sessions it replaced.
        assert_eq!(all[0].ending_sessions(), vec![s(2), s(1)]);
        assert_eq!((all[0].live, all[0].seq), (false, 3));
    }
}
