//! `[relay]`: pass-through forwarding to upstream RTMP servers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::duration_str;
use super::target::TargetTemplate;
use super::{chunk_size, invalid, pem_file, positive, ConfigError};

/// `[relay]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// URL templates; placeholders `{channel_id}`, `{thumb_id}`, `{name}`.
    pub targets: Vec<TargetTemplate>,
    /// Also relay to each channel's own extra targets from the store.
    pub per_channel_targets: bool,
    /// Most own targets used per channel.
    pub max_channel_targets: usize,
    /// Whether a channel's own targets may reach private, loopback and link-local
    /// addresses (the node's own network).
    pub allow_private_targets: bool,
    pub chunk_size: u32,
    pub queue_max_bytes: usize,
    pub queue_max_messages: usize,
    #[serde(with = "duration_str")]
    pub queue_max_delay: Duration,
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    #[serde(with = "duration_str")]
    pub reconnect_min: Duration,
    #[serde(with = "duration_str")]
    pub reconnect_max: Duration,
    /// Kernel send buffer per upstream socket (0: the kernel's auto-tuning).
    pub send_buffer: u32,
    /// Extra CA certificates (PEM) trusted for rtmps:// targets.
    pub ca_file: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            per_channel_targets: false,
            max_channel_targets: 4,
            allow_private_targets: false,
            chunk_size: 60_000,
            queue_max_bytes: 4 * 1024 * 1024,
            queue_max_messages: 4096,
            queue_max_delay: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(30),
            send_buffer: 256 * 1024,
            ca_file: String::new(),
        }
    }
}

impl RelayConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("relay.queue_max_delay", self.queue_max_delay)?;
        positive("relay.connect_timeout", self.connect_timeout)?;
        positive("relay.write_timeout", self.write_timeout)?;
        positive("relay.reconnect_min", self.reconnect_min)?;
        chunk_size("relay.chunk_size", self.chunk_size, 60_000)?;
        if self.queue_max_bytes < 64 * 1024 {
            return Err(invalid(
                "relay.queue_max_bytes",
                self.queue_max_bytes,
                "must be at least 65536 (a keyframe must fit)",
            ));
        }
        if self.queue_max_messages < 16 {
            return Err(invalid(
                "relay.queue_max_messages",
                self.queue_max_messages,
                "must be at least 16 (4096 is a good value)",
            ));
        }
        if self.reconnect_max < self.reconnect_min {
            return Err(invalid(
                "relay.reconnect_max",
                humantime::format_duration(self.reconnect_max),
                "must not be shorter than relay.reconnect_min",
            ));
        }
        pem_file("relay.ca_file", &self.ca_file)
    }
}
