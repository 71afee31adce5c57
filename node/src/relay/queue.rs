//! The queue between ingest and one relay target. Ingest pushes without ever waiting
//! (it is called under the stream's media lock, see [`crate::hub::Subscriber`]); the
//! queue is bounded by bytes (each message counted with a fixed overhead besides its
//! payload, so a flood of tiny messages is bounded too), by the number of messages, and
//! by the age of its oldest item. On overflow it
//! drops everything queued and every new message until the next video keyframe, counts
//! what it dropped, and marks the restart point with [`RelayItem::Resync`] so the relay
//! re-sends metadata and sequence headers before that keyframe.

use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::hub::StreamMessage;

/// One thing to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayItem {
    /// A message of the stream, payload shared with ingest.
    Message(StreamMessage),
    /// Frames were dropped; re-send metadata and sequence headers first.
    Resync,
}

/// What a queued message costs besides its payload: its queue slot, the handle on the
/// shared payload, its timestamp.
pub const MESSAGE_OVERHEAD: usize = 64;

impl RelayItem {
    fn payload_len(&self) -> usize {
        match self {
            RelayItem::Message(m) => m.len(),
            RelayItem::Resync => 0,
        }
    }

    /// What it counts against the byte bound.
    fn cost(&self) -> usize {
        self.payload_len() + MESSAGE_OVERHEAD
    }
}

/// Bounds of a queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Payload plus [`MESSAGE_OVERHEAD`] per message.
    pub max_bytes: usize,
    pub max_messages: usize,
    pub max_delay: Duration,
}

/// The Prometheus counters a queue's drops also go to (no-ops when none are given).
#[derive(Debug, Clone)]
pub struct DropCounters {
    pub messages: metrics::Counter,
    pub bytes: metrics::Counter,
}

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters {
            messages: metrics::Counter::noop(),
            bytes: metrics::Counter::noop(),
        }
    }
}

/// Counters and state shown in the API.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub connected: AtomicBool,
    pub reconnects: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub dropped_messages: AtomicU64,
    pub dropped_bytes: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    items: VecDeque<(RelayItem, Instant)>,
    bytes: usize,
    /// Dropping until the next video keyframe.
    waiting_keyframe: bool,
    /// Whether delivery ever started: what precedes the first keyframe of a stream is
    /// not lost (the relay sends metadata and sequence headers from the cache), so it
    /// is not counted as dropped.
    started: bool,
    closed: bool,
}

/// See the module documentation.
#[derive(Debug)]
pub struct RelayQueue {
    inner: Mutex<Inner>,
    /// Whether a message may bypass the queue (see [`RelayQueue::is_flowing`]), kept
    /// up to date under the lock so that asking costs no lock.
    flowing: AtomicBool,
    wake: Notify,
    limits: QueueLimits,
    pub stats: RelayStats,
    /// Where drops are counted for Prometheus too.
    drop_counters: DropCounters,
}

impl RelayQueue {
    /// A new queue; it starts waiting for a keyframe.
    pub fn new(limits: QueueLimits) -> Self {
        Self::with_counters(limits, DropCounters::default())
    }

    /// A new queue whose drops also go to `drop_counters`.
    pub fn with_counters(limits: QueueLimits, drop_counters: DropCounters) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
                waiting_keyframe: true,
                started: false,
                closed: false,
            }),
            flowing: AtomicBool::new(false),
            wake: Notify::new(),
            limits,
            stats: RelayStats::default(),
            drop_counters,
        }
    }

    /// Records whether a message may bypass the queue; called at the end of every
    /// change, under the lock.
    fn update_flowing(&self, q: &Inner) {
        let flowing = q.items.is_empty() && !q.waiting_keyframe && !q.closed;
        self.flowing.store(flowing, Ordering::Release);
    }

    /// Empties the queue, counting the media it held as dropped.
    fn clear(&self, q: &mut Inner) {
        let n = q
            .items
            .iter()
            .filter(|(i, _)| *i != RelayItem::Resync)
            .count() as u64;
        let b: usize = q.items.iter().map(|(i, _)| i.payload_len()).sum();
        q.items.clear();
        q.bytes = 0;
        q.waiting_keyframe = true;
        self.update_flowing(q);
        if n > 0 {
            self.count_drop(n, b);
        }
    }

    fn count_drop(&self, messages: u64, bytes: usize) {
        self.drop_counters.messages.increment(messages);
        self.drop_counters.bytes.increment(bytes as u64);
        self.stats
            .dropped_messages
            .fetch_add(messages, Ordering::Relaxed);
        self.stats
            .dropped_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Queues an item. `keyframe` marks a video keyframe (a restart point). Never blocks
    /// for longer than the short critical section.
    pub fn push(&self, item: RelayItem, keyframe: bool, now: Instant) {
        let size = item.cost();
        let mut q = self.inner.lock();
        if q.closed {
            return;
        }
        let too_old = q
            .items
            .front()
            .is_some_and(|(_, t)| now.duration_since(*t) > self.limits.max_delay);
        let full =
            q.bytes + size > self.limits.max_bytes || q.items.len() >= self.limits.max_messages;
        if !q.waiting_keyframe && (full || too_old) {
            self.clear(&mut q);
        }
        if q.waiting_keyframe {
            if !keyframe {
                let started = q.started;
                drop(q);
                if started {
                    self.count_drop(1, item.payload_len());
                }
                return;
            }
            q.waiting_keyframe = false;
            q.started = true;
            q.items.push_back((RelayItem::Resync, now));
        }
        q.bytes += size;
        q.items.push_back((item, now));
        self.update_flowing(&q);
        drop(q);
        self.wake.notify_one();
    }

    /// Moves everything queued into `out`; returns `false` once the queue is closed and
    /// empty (the publish ended).
    pub fn drain(&self, out: &mut Vec<RelayItem>) -> bool {
        let mut q = self.inner.lock();
        out.extend(q.items.drain(..).map(|(i, _)| i));
        q.bytes = 0;
        self.update_flowing(&q);
        !q.closed
    }

    /// Whether a message may bypass the queue: nothing is queued, the queue is not
    /// skipping to a keyframe, and it is open.
    pub fn is_flowing(&self) -> bool {
        self.flowing.load(Ordering::Acquire)
    }

    /// Wakes the relay task (something for it besides the queue).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Whether nothing is queued (a fresh connection may then start from the cached
    /// keyframe).
    pub fn is_waiting_empty(&self) -> bool {
        let q = self.inner.lock();
        q.items.is_empty() && q.waiting_keyframe
    }

    /// Drops what is queued and waits for the next keyframe (after a lost connection:
    /// what was queued for it is stale).
    pub fn restart(&self) {
        let mut q = self.inner.lock();
        self.clear(&mut q);
    }

    /// The publish ended: the relay sends what is left, unpublishes and closes.
    pub fn close(&self) {
        let mut q = self.inner.lock();
        q.closed = true;
        self.update_flowing(&q);
        drop(q);
        self.wake.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Waits until something was pushed or the queue closed.
    pub async fn wait(&self) {
        self.wake.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn media(n: usize) -> RelayItem {
        RelayItem::Message(StreamMessage::Media {
            kind: media::MediaKind::Video,
            timestamp: 0,
            payload: bytes::Bytes::from(vec![0u8; n]),
        })
    }

    #[test]
    fn flowing_means_empty_started_and_open() {
        let q = RelayQueue::new(limits());
        let now = Instant::now();
        let mut out = Vec::new();
        assert!(!q.is_flowing(), "waits for a keyframe first");
        q.push(media(10), false, now);
        assert!(!q.is_flowing());
        q.push(media(10), true, now);
        assert!(!q.is_flowing(), "holds the keyframe");
        assert!(q.drain(&mut out));
        assert!(q.is_flowing());
        q.push(media(10), false, now);
        assert!(!q.is_flowing(), "holds a message");
        q.drain(&mut out);
        assert!(q.is_flowing());
        q.restart();
        assert!(!q.is_flowing(), "a restart waits for a keyframe");
        q.push(media(10), true, now);
        q.drain(&mut out);
        assert!(q.is_flowing());
        q.close();
        assert!(!q.is_flowing(), "closed");
    }

    fn limits() -> QueueLimits {
        QueueLimits {
            max_bytes: 1000 + 4 * MESSAGE_OVERHEAD,
            max_messages: 100,
            max_delay: Duration::from_secs(2),
        }
    }

    #[test]
    fn starts_at_a_keyframe_with_a_resync() {
        let q = RelayQueue::new(limits());
        let t = Instant::now();
        q.push(media(10), false, t);
        q.push(media(20), true, t);
        q.push(media(30), false, t);
        let mut out = Vec::new();
        assert!(q.drain(&mut out));
        assert_eq!(out, vec![RelayItem::Resync, media(20), media(30)]);
        // What precedes the stream's first keyframe is not a loss.
        assert_eq!(q.stats.dropped_messages.load(Ordering::Relaxed), 0);
        q.restart();
        q.push(media(5), false, t);
        assert_eq!(q.stats.dropped_messages.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn overflow_by_bytes_drops_to_the_next_keyframe() {
        let q = RelayQueue::new(limits());
        let t = Instant::now();
        q.push(media(400), true, t);
        q.push(media(400), false, t);
        q.push(media(400), false, t); // 1200 > 1000: everything goes
        q.push(media(100), false, t); // still waiting
        q.push(media(50), true, t);
        let mut out = Vec::new();
        q.drain(&mut out);
        assert_eq!(out, vec![RelayItem::Resync, media(50)]);
        assert_eq!(q.stats.dropped_messages.load(Ordering::Relaxed), 4);
        assert_eq!(q.stats.dropped_bytes.load(Ordering::Relaxed), 1300);
    }

    #[test]
    fn overflow_by_age() {
        let q = RelayQueue::new(limits());
        let t = Instant::now();
        q.push(media(1), true, t);
        q.push(media(1), false, t + Duration::from_secs(3));
        let mut out = Vec::new();
        q.drain(&mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(q.stats.dropped_messages.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn close_ends_the_drain() {
        let q = RelayQueue::new(limits());
        q.push(media(1), true, Instant::now());
        q.close();
        let mut out = Vec::new();
        assert!(!q.drain(&mut out));
        assert_eq!(out.len(), 2, "what was queued is still delivered");
        q.push(media(1), true, Instant::now());
        assert!(!q.drain(&mut Vec::new()));
    }

    #[test]
    fn a_flood_of_tiny_messages_is_bounded_by_count_and_overhead() {
        let q = RelayQueue::new(QueueLimits {
            max_bytes: 1 << 20,
            max_messages: 1000,
            max_delay: Duration::from_secs(60),
        });
        let t = Instant::now();
        q.push(media(1), true, t);
        for _ in 0..100_000 {
            q.push(media(1), false, t);
        }
        let mut out = Vec::new();
        q.drain(&mut out);
        assert!(
            out.is_empty(),
            "dropped to the next keyframe: {} queued",
            out.len()
        );
        assert_eq!(q.stats.dropped_messages.load(Ordering::Relaxed), 100_001);
        assert_eq!(q.stats.dropped_bytes.load(Ordering::Relaxed), 100_001);
        // One-byte payloads still cost their overhead against the byte bound.
        let q = RelayQueue::new(QueueLimits {
            max_bytes: 100 * (1 + MESSAGE_OVERHEAD),
            max_messages: 1_000_000,
            max_delay: Duration::from_secs(60),
        });
        q.push(media(1), true, t);
        for _ in 0..150 {
            q.push(media(1), false, t);
        }
        q.drain(&mut out);
        assert!(out.len() < 100, "{}", out.len());
    }
}
