//! Relay: every live stream is forwarded, unchanged, to the configured upstream RTMP
//! servers under its public name (the key never leaves the node). The
//! [`RelayManager`] observes the hub's publishes and attaches one [`RelayLink`] per
//! target (a hub [`Subscriber`] around a bounded [`queue::RelayQueue`]); one task per
//! link runs the RTMP client. Ingest never waits for it.

pub mod dial;
pub mod direct;
pub mod error;
pub mod queue;
pub mod session;

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio_rustls::TlsConnector;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::channel::{Channel, ThumbnailId};
use crate::config::RelayConfig;
use crate::config::{RelayUrl, TargetTemplate, TemplateValues};
use crate::hub::{LiveStream, PublishObserver, StreamMessage, Subscriber, SubscriberStatus};
use crate::metric;
use queue::{DropCounters, QueueLimits, RelayItem, RelayQueue};

/// Starts relay tasks for live streams.
pub struct RelayManager {
    config: Arc<RelayConfig>,
    tls: TlsConnector,
    /// Relay tasks, drained at shutdown.
    pub tracker: TaskTracker,
}

impl RelayManager {
    pub fn new(config: RelayConfig) -> anyhow::Result<Arc<RelayManager>> {
        Ok(Arc::new(RelayManager {
            tls: crate::client_tls::connector(&config.ca_file, "relay.ca_file")?,
            config: Arc::new(config),
            tracker: TaskTracker::new(),
        }))
    }

    /// Attaches a link and starts one relay task per target of a stream that just went
    /// live.
    fn attach(&self, stream: &Arc<LiveStream>, channel: &Channel) {
        let channel_id = channel.id.hyphenated().to_string();
        let thumb_id = ThumbnailId::of(&channel.id).to_string();
        let values = TemplateValues {
            channel_id: &channel_id,
            thumb_id: &thumb_id,
            name: &channel.name,
        };
        // (url, what the API shows, whether it is a channel's own target, metrics label)
        let mut targets: Vec<(RelayUrl, String, bool, String)> = Vec::new();
        let shown = |t: &TargetTemplate| {
            t.render(&values)
                .and_then(|u| Ok((u, t.public_url(&values)?)))
        };
        for t in &self.config.targets {
            match shown(t) {
                Ok((url, public)) => targets.push((url, public, false, t.redacted())),
                Err(e) => {
                    warn!(channel_id = %channel.id, error = %e, "relay target does not render for this channel")
                }
            }
        }
        if self.config.per_channel_targets {
            let own = &channel.relay_targets;
            if own.len() > self.config.max_channel_targets {
                warn!(channel_id = %channel.id, targets = own.len(), used = self.config.max_channel_targets, "the channel has more relay targets than relay.max_channel_targets; using the first ones");
            }
            for (i, raw) in own.iter().take(self.config.max_channel_targets).enumerate() {
                match TargetTemplate::new(raw).and_then(|t| shown(&t)) {
                    Ok((url, public)) => {
                        targets.push((url, public, true, metric::CHANNEL_OWN_TARGET.into()))
                    }
                    Err(e) => {
                        warn!(channel_id = %channel.id, index = i, error = %e, "channel relay target unusable")
                    }
                }
            }
        }
        for (url, display_url, channel_own, label) in targets {
            let link = Arc::new(RelayLink {
                queue: RelayQueue::with_counters(
                    QueueLimits {
                        max_bytes: self.config.queue_max_bytes,
                        max_messages: self.config.queue_max_messages,
                        max_delay: self.config.queue_max_delay,
                    },
                    DropCounters {
                        messages: metrics::counter!(metric::RELAY_DROPPED_MESSAGES, "target" => label.clone()),
                        bytes: metrics::counter!(metric::RELAY_DROPPED_BYTES, "target" => label.clone()),
                    },
                ),
                display_url,
                bytes_sent: metric::BatchedCounter::new(
                    metrics::counter!(metric::RELAY_BYTES, "target" => label.clone()),
                ),
                reconnects: metrics::counter!(metric::RELAY_RECONNECTS, "target" => label.clone()),
                label,
                last_error: Mutex::new(None),
                direct: Mutex::new(None),
            });
            stream.attach(link.clone());
            let task = session::RelayTask {
                stream: stream.clone(),
                link,
                url,
                // A channel's own target comes from the channels table, not from the
                // operator's file: it may not point inside the node's network.
                restricted: channel_own && !self.config.allow_private_targets,
                config: self.config.clone(),
                tls: self.tls.clone(),
            };
            self.tracker.spawn(task.run());
        }
    }
}

impl RelayManager {
    /// Tries each configured target (rendered for a sample channel): connect and RTMP
    /// handshake, no publish. For `streamgate check`.
    pub async fn probe_targets(&self) -> Vec<(String, Result<std::time::Duration, String>)> {
        let sample = TemplateValues {
            channel_id: "00000000-0000-0000-0000-000000000000",
            thumb_id: "00000000000000000000000000000000",
            name: "check",
        };
        let mut out = Vec::new();
        for t in &self.config.targets {
            let result = match t.render(&sample) {
                Ok(url) => dial::probe(&url, &self.config, &self.tls)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            out.push((t.redacted(), result));
        }
        out
    }
}

impl PublishObserver for RelayManager {
    fn published(&self, stream: &Arc<LiveStream>, channel: &Channel) {
        self.attach(stream, channel);
    }
}

/// One live stream relayed to one target: what the hub feeds (a [`Subscriber`]) and
/// what the relay task reads.
pub struct RelayLink {
    /// Messages waiting for the upstream connection.
    pub queue: RelayQueue,
    /// The target as it may be shown (no userinfo, no query, secrets masked).
    pub display_url: String,
    /// The last connection failure, cleared once publishing again.
    last_error: Mutex<Option<String>>,
    /// Its metrics label (the redacted target template).
    label: String,
    /// Prometheus counters of this target template.
    pub(crate) bytes_sent: metric::BatchedCounter,
    pub(crate) reconnects: metrics::Counter,
    /// The connection ingest writes to directly while it keeps up (plain TCP).
    direct: Mutex<Option<direct::DirectPath>>,
}

impl RelayLink {
    /// `error` is what the API may show: a short reason, never the upstream's text.
    fn set_error(&self, error: Option<String>) {
        *self.last_error.lock() = error;
    }
}

impl Subscriber for RelayLink {
    fn deliver(&self, messages: &[StreamMessage], restart_points: &[bool], now: Instant) {
        // Straight to the socket if the direct path takes them, else the queue.
        if self.send_direct(messages) {
            return;
        }
        for (m, &restart) in messages.iter().zip(restart_points) {
            self.queue.push(RelayItem::Message(m.clone()), restart, now);
        }
    }

    fn close(&self) {
        self.queue.close();
    }

    fn status(&self) -> SubscriberStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let q = &self.queue.stats;
        SubscriberStatus {
            url: self.display_url.clone(),
            target: self.label.clone(),
            connected: q.connected.load(Relaxed),
            reconnects: q.reconnects.load(Relaxed),
            bytes_sent: q.bytes_sent.load(Relaxed),
            dropped_messages: q.dropped_messages.load(Relaxed),
            dropped_bytes: q.dropped_bytes.load(Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}
