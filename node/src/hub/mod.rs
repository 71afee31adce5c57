//! The hub: one live publish per channel, and the fan-out of its messages. A publish
//! of a channel that is already live takes over when the current publisher has gone
//! silent or comes from the same address: the old session is ended at once (this ends
//! the "stream busy" loop when OBS reconnects over a half-dead TCP connection). A
//! second encoder still sending from another address is refused instead, so two
//! encoders on one key do not take the channel from each other forever.
//!
//! Live/offline transitions go to the [`StatusOutbox`] in the same critical section
//! that changes the set of live sessions, so the order of the status updates is the
//! order of the sessions: an old session's "offline" can never be numbered after the
//! "live" of the session that replaced it. Nothing here waits on the database.
//!
//! The hub knows its consumers only through the traits it defines
//! ([`Subscriber`], [`PublishObserver`]); relay and thumbnails depend on it, never the
//! reverse.

mod stream;
mod subscriber;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use uuid::Uuid;

use crate::channel::Channel;
use crate::events::{EventBus, PublicEvent};
use crate::outbox::StatusOutbox;
use crate::peer::AddressKey;
use crate::store::StatusUpdate;

pub use stream::{LinkStats, LiveStream, ReadBatch, StreamInfo};
pub use subscriber::{PublishObserver, StreamMessage, Subscriber, SubscriberStatus};

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
    /// An operator ended it (admin API).
    Kicked,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::TakenOver => "taken over by a new publisher with the same key",
            EndReason::KeyRevoked => "stream key rotated",
            EndReason::ChannelDeleted => "channel deleted",
            EndReason::Shutdown => "node shutting down",
            EndReason::Kicked => "ended by the operator",
        }
    }
}

/// Who asks to publish.
#[derive(Debug, Clone)]
pub struct PublishRequest {
    /// SHA-256 of the key it publishes with.
    pub key_hash: String,
    pub peer: SocketAddr,
    /// See [`crate::key::StreamKey::peer_tag`].
    pub peer_tag: Option<String>,
    /// What the publisher speaks.
    pub protocol: Protocol,
    /// Cancelled when the node ends this publish (the publisher's connection may pass
    /// its own token, to watch one token for everything that ends it); `None`: a new
    /// one.
    pub cancel: Option<tokio_util::sync::CancellationToken>,
}

/// The protocol a publish came in on (for logs, metrics and the operator's view; what
/// the hub does with a stream never depends on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    Rtmps,
    Srt,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::Rtmps => "rtmps",
            Protocol::Srt => "srt",
        }
    }
}

/// The channel is live from another encoder that is still sending, from another
/// address: the newcomer is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this channel is already live from another encoder")]
pub struct AlreadyLive;

/// Whether a new publish may take a live channel from its current publisher: when
/// that one comes from the same address (the same encoder, reconnecting) or has sent
/// no media for `silence` (a half-dead connection). `quiet_for` is `None` when
/// nobody can tell.
pub fn takeover_allowed(
    same_address: bool,
    quiet_for: Option<Duration>,
    silence: Duration,
) -> bool {
    same_address || quiet_for.is_some_and(|q| q >= silence)
}

/// The live sessions and the numbering of their status updates, changed together.
#[derive(Default)]
struct Sessions {
    /// The live stream of each channel.
    streams: HashMap<Uuid, Arc<LiveStream>>,
    /// Number of the next status update (higher is newer).
    next_seq: u64,
}

impl Sessions {
    /// Whether `stream` is its channel's live publish (not ended, not taken over).
    fn is_current(&self, stream: &Arc<LiveStream>) -> bool {
        self.streams
            .get(&stream.channel_id)
            .is_some_and(|s| Arc::ptr_eq(s, stream))
    }
}

/// All live streams of this node.
pub struct Hub {
    /// Taken for every change of the live set and the status update it causes.
    sessions: Mutex<Sessions>,
    /// Where status transitions go.
    outbox: Arc<StatusOutbox>,
    /// Told of each accepted publish (they attach subscribers).
    observers: Vec<Arc<dyn PublishObserver>>,
    /// Public live/offline events (and thumbnails, from their scheduler).
    events: EventBus,
    /// See [`takeover_allowed`].
    takeover_silence: Duration,
    /// Whether new publishes track their health (`health.enabled`).
    track_health: std::sync::atomic::AtomicBool,
    /// Test hook: runs inside `finish` once a session is known to be over, before its
    /// status is queued.
    #[cfg(test)]
    offline_probe: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl Hub {
    pub fn new(
        outbox: Arc<StatusOutbox>,
        observers: Vec<Arc<dyn PublishObserver>>,
        takeover_silence: Duration,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            sessions: Mutex::new(Sessions {
                streams: HashMap::new(),
                next_seq: 1,
            }),
            outbox,
            observers,
            events: EventBus::default(),
            takeover_silence,
            track_health: std::sync::atomic::AtomicBool::new(true),
            #[cfg(test)]
            offline_probe: Mutex::new(None),
        })
    }

    /// Queues the status of `stream`. Takes `&mut Sessions` so that it can only be
    /// called with the session lock held: numbering and queueing happen in the same
    /// critical section as the change they report.
    fn queue_status(&self, sessions: &mut Sessions, stream: &LiveStream, live: bool) {
        let seq = sessions.next_seq;
        sessions.next_seq += 1;
        self.events.publish(if live {
            PublicEvent::Live {
                channel_id: stream.channel_id,
                name: stream.name.clone(),
                started_at: stream.started_at,
            }
        } else {
            PublicEvent::Offline {
                channel_id: stream.channel_id,
            }
        });
        self.outbox.push(StatusUpdate {
            channel_id: stream.channel_id,
            live,
            session_id: stream.session_id,
            seq,
            // A live is dated by its publish, so that a late write of an older publish
            // never replaces a newer one (another node's) in the table.
            at: if live { stream.started_at } else { Utc::now() },
            supersedes: Vec::new(),
            peer_tag: if live { stream.peer_tag.clone() } else { None },
        });
    }

    /// Starts a publish of `channel`, taking over the current one if it may (see
    /// [`takeover_allowed`]); the observers attach their subscribers before this
    /// returns.
    pub fn start_publish(
        self: &Arc<Self>,
        channel: &Channel,
        request: PublishRequest,
    ) -> Result<PublishHandle, AlreadyLive> {
        let peer = request.peer;
        let track_health = self.track_health.load(std::sync::atomic::Ordering::Relaxed);
        let stream = Arc::new(LiveStream::new(
            channel.id,
            channel.name.clone(),
            request,
            track_health,
        ));
        let previous = {
            let mut sessions = self.sessions.lock();
            if let Some(current) = sessions.streams.get(&channel.id) {
                let same_address = AddressKey::of(current.peer.ip()) == AddressKey::of(peer.ip());
                if !takeover_allowed(
                    same_address,
                    Some(current.quiet_for()),
                    self.takeover_silence,
                ) {
                    return Err(AlreadyLive);
                }
            }
            let previous = sessions.streams.insert(channel.id, stream.clone());
            self.queue_status(&mut sessions, &stream, true);
            previous
        };
        if let Some(old) = previous {
            metrics::counter!(crate::metric::TAKEOVERS, "where" => "node").increment(1);
            old.end(EndReason::TakenOver);
        }
        for observer in &self.observers {
            observer.published(&stream, channel);
        }
        Ok(PublishHandle {
            hub: self.clone(),
            stream,
        })
    }

    /// Whether publishes from now on track their health (on by default).
    pub fn track_health(&self, on: bool) {
        self.track_health
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the table has accepted this publish's "live" (after which a different
    /// session there is a newer publish elsewhere, not our write on its way).
    pub fn live_written(&self, stream: &LiveStream) -> bool {
        self.outbox.written_live(&stream.channel_id) == Some(stream.session_id)
    }

    /// Queues this publish's "live" again (someone marked the channel offline while
    /// it streams here, e.g. a dead-node sweep while this node was cut off from the
    /// database). Nothing happens if the publish is no longer current.
    pub fn reassert_live(&self, stream: &Arc<LiveStream>) {
        let mut sessions = self.sessions.lock();
        if sessions.is_current(stream) {
            self.queue_status(&mut sessions, stream, true);
        }
    }

    /// The public events of this node.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Live streams, in no particular order.
    pub fn list(&self) -> Vec<Arc<LiveStream>> {
        self.sessions.lock().streams.values().cloned().collect()
    }

    /// Channels live on this node.
    pub fn live_channels(&self) -> Vec<Uuid> {
        self.sessions.lock().streams.keys().copied().collect()
    }

    pub fn get(&self, channel_id: &Uuid) -> Option<Arc<LiveStream>> {
        self.sessions.lock().streams.get(channel_id).cloned()
    }

    /// What the API shows of every live stream.
    pub fn infos(&self) -> Vec<StreamInfo> {
        self.list().iter().map(|s| s.info()).collect()
    }

    /// Ends the publish; marks the channel offline unless another session took over.
    fn finish(&self, stream: &Arc<LiveStream>) {
        let mut sessions = self.sessions.lock();
        if sessions.is_current(stream) {
            sessions.streams.remove(&stream.channel_id);
            #[cfg(test)]
            if let Some(probe) = self.offline_probe.lock().as_mut() {
                probe();
            }
            self.queue_status(&mut sessions, stream, false);
        }
    }

    /// Ends every live stream (shutdown).
    pub fn end_all(&self, reason: EndReason) {
        for s in self.list() {
            s.end(reason);
        }
    }
}

/// Held by the ingest connection while it publishes; dropping it ends the publish (the
/// subscribers close, and the channel goes offline unless another session took over).
pub struct PublishHandle {
    hub: Arc<Hub>,
    pub stream: Arc<LiveStream>,
}

impl std::fmt::Debug for PublishHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishHandle")
            .field("stream", &self.stream)
            .finish()
    }
}

impl Drop for PublishHandle {
    fn drop(&mut self) {
        self.stream.close_subscribers();
        self.hub.finish(&self.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Weak;

    const SILENCE: Duration = Duration::from_secs(3);

    fn hub() -> (Arc<Hub>, Arc<StatusOutbox>) {
        let outbox = StatusOutbox::new();
        (Hub::new(outbox.clone(), Vec::new(), SILENCE), outbox)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn request(peer: SocketAddr) -> PublishRequest {
        PublishRequest {
            key_hash: "h".into(),
            peer,
            peer_tag: None,
            protocol: Protocol::Rtmp,
            cancel: None,
        }
    }

    #[test]
    fn takeover_ends_the_old_session_and_keeps_the_channel_live() {
        let (hub, outbox) = hub();
        let ch = Channel::new(Uuid::new_v4(), "c");
        let first = hub.start_publish(&ch, request(peer())).unwrap();
        let second = hub.start_publish(&ch, request(peer())).unwrap();
        assert!(first.stream.is_ended());
        assert_eq!(first.stream.end_reason(), Some(EndReason::TakenOver));
        assert!(!second.stream.is_ended());
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

    /// Two encoders on one key: the second, from another address, is refused while
    /// the first keeps sending; once the first has been silent for the takeover
    /// time (a half-dead connection), the next attempt takes over.
    #[tokio::test(start_paused = true)]
    async fn a_second_encoder_is_refused_while_the_first_sends_and_takes_over_when_it_is_silent() {
        let (hub, _outbox) = hub();
        let ch = Channel::new(Uuid::new_v4(), "two encoders");
        let first = hub.start_publish(&ch, request(peer())).unwrap();
        let elsewhere: SocketAddr = "127.0.0.2:1".parse().unwrap();
        let media = bytes::Bytes::from_static(&[0xaf, 1, 0]);
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            first.stream.on_audio(0, &media);
            assert_eq!(
                hub.start_publish(&ch, request(elsewhere)).err(),
                Some(AlreadyLive)
            );
            assert!(!first.stream.is_ended());
        }
        // The first goes silent: not yet long enough...
        tokio::time::advance(SILENCE - Duration::from_millis(1)).await;
        assert!(hub.start_publish(&ch, request(elsewhere)).is_err());
        // ...now it is.
        tokio::time::advance(Duration::from_millis(1)).await;
        let second = hub.start_publish(&ch, request(elsewhere)).unwrap();
        assert_eq!(first.stream.end_reason(), Some(EndReason::TakenOver));
        // The same address takes over at once, sending or not.
        second.stream.on_audio(0, &media);
        let third = hub
            .start_publish(&ch, request("127.0.0.2:2".parse().unwrap()))
            .unwrap();
        assert_eq!(second.stream.end_reason(), Some(EndReason::TakenOver));
        assert!(!third.stream.is_ended());
    }

    /// The race of a publish ending on one ingest thread while the same channel's next
    /// publish is accepted on another, forced at the worst moment: the old session is
    /// known to be over and its "offline" is not queued yet. The new session must stay
    /// live. (When the hub released its lock before numbering the offline, the new
    /// "live" got the lower number and the coalesced update was an offline that ended
    /// the new session in the database.)
    #[test]
    fn an_old_sessions_offline_never_outranks_the_next_sessions_live() {
        let (hub, outbox) = hub();
        let ch = Channel::new(Uuid::new_v4(), "race");
        let old = hub.start_publish(&ch, request(peer())).unwrap();
        // The old publisher goes away first (e.g. a dead TCP connection dropped),
        // leaving the channel to the next publish.
        let new_publish: Arc<Mutex<Option<PublishHandle>>> = Arc::new(Mutex::new(None));
        let other_thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>> =
            Arc::new(Mutex::new(None));
        let weak: Weak<Hub> = Arc::downgrade(&hub);
        let (slot, thread_slot, channel) = (new_publish.clone(), other_thread.clone(), ch.clone());
        *hub.offline_probe.lock() = Some(Box::new(move || {
            let hub = weak.upgrade().expect("hub alive");
            if hub.sessions.is_locked() {
                // The session lock orders the two: the new publish, on its own thread,
                // waits for this offline to be queued.
                let (slot, channel) = (slot.clone(), channel.clone());
                *thread_slot.lock() = Some(std::thread::spawn(move || {
                    *slot.lock() = Some(hub.start_publish(&channel, request(peer())).unwrap());
                }));
            } else {
                // Nothing orders them: the new publish completes right here.
                *slot.lock() = Some(hub.start_publish(&channel, request(peer())).unwrap());
            }
        }));
        outbox.take_all();
        drop(old);
        if let Some(t) = other_thread.lock().take() {
            t.join().unwrap();
        }
        *hub.offline_probe.lock() = None;
        let new_session = new_publish
            .lock()
            .as_ref()
            .expect("new publish accepted")
            .stream
            .session_id;
        let pending = outbox.take_all();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert!(
            pending[0].live && pending[0].session_id == new_session,
            "the channel must end live with the new session: {pending:?}"
        );
        assert_eq!(hub.live_channels(), vec![ch.id]);
    }

    /// A failure while a stream's media state is locked (a bug in a parser, say) stays
    /// that stream's: the API, the thumbnails and the other streams go on.
    #[test]
    fn a_panic_under_one_streams_lock_does_not_take_down_the_readers() {
        let (hub, _outbox) = hub();
        let broken = hub
            .start_publish(&Channel::new(Uuid::new_v4(), "broken"), request(peer()))
            .unwrap();
        let fine = hub
            .start_publish(&Channel::new(Uuid::new_v4(), "fine"), request(peer()))
            .unwrap();
        let stream = broken.stream.clone();
        let outcome = std::thread::spawn(move || {
            stream.with_media_locked(|| panic!("parser bug (expected by this test)"))
        })
        .join();
        assert!(outcome.is_err(), "the panic happened");
        // Everything that reads stream state still works, for both streams.
        assert_eq!(hub.infos().len(), 2);
        assert_eq!(broken.stream.keyframe_generation(), 0);
        let _ = broken.stream.snapshot();
        broken
            .stream
            .on_video(0, &bytes::Bytes::from_static(&[0x17, 1, 0, 0, 0, 1]));
        fine.stream
            .on_video(0, &bytes::Bytes::from_static(&[0x17, 1, 0, 0, 0, 1]));
        assert_eq!(fine.stream.keyframe_generation(), 1);
        assert_eq!(broken.stream.keyframe_generation(), 1);
    }
}
