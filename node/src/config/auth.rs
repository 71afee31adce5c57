//! `[auth]`: stream key checks, their cache, and brute-force protection; `[status]`:
//! live/offline writes to the database.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::duration_str;
use super::{invalid, positive, ConfigError};

/// `[auth]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A lookup that takes longer is refused with "try again shortly".
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// How often live publishes are re-checked against the channels table.
    #[serde(with = "duration_str")]
    pub recheck_interval: Duration,
    /// Answers younger than this are served from the cache without the database.
    #[serde(with = "duration_str")]
    pub cache_ttl: Duration,
    /// When the database is unreachable, a key seen valid this recently is admitted.
    #[serde(with = "duration_str")]
    pub stale_ttl: Duration,
    /// Whether to admit recently valid keys while the database is unreachable.
    pub admit_cached_when_unavailable: bool,
    /// Most cached answers.
    pub cache_size: usize,
    /// Wrong keys from one IP within `failure_window` before it is refused.
    pub max_failures: u32,
    #[serde(with = "duration_str")]
    pub failure_window: Duration,
    /// How long an address that reached `max_failures` keeps the longest delay.
    #[serde(with = "duration_str")]
    pub ban_duration: Duration,
    /// Wait before answering a publish from an address after one wrong key from it;
    /// it doubles with each further wrong key.
    #[serde(with = "duration_str")]
    pub failure_delay: Duration,
    /// The longest such wait.
    #[serde(with = "duration_str")]
    pub max_failure_delay: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            recheck_interval: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(10),
            stale_ttl: Duration::from_secs(600),
            admit_cached_when_unavailable: true,
            cache_size: 100_000,
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            ban_duration: Duration::from_secs(300),
            failure_delay: Duration::from_millis(250),
            max_failure_delay: Duration::from_secs(5),
        }
    }
}

impl AuthConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("auth.timeout", self.timeout)?;
        positive("auth.recheck_interval", self.recheck_interval)?;
        positive("auth.failure_window", self.failure_window)?;
        positive("auth.ban_duration", self.ban_duration)?;
        positive("auth.failure_delay", self.failure_delay)?;
        if self.max_failure_delay < self.failure_delay {
            return Err(invalid(
                "auth.max_failure_delay",
                humantime::format_duration(self.max_failure_delay),
                "must not be shorter than auth.failure_delay",
            ));
        }
        if self.cache_size == 0 {
            return Err(invalid("auth.cache_size", 0, "must be at least 1"));
        }
        if self.max_failures == 0 {
            return Err(invalid("auth.max_failures", 0, "must be at least 1"));
        }
        Ok(())
    }
}

/// `[status]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Identifies this node in the table (crash recovery marks offline only its own
    /// channels). Empty: the host name.
    pub node_id: String,
    /// How often this node says it is alive (nodes table) and `last_seen` of its
    /// live channels that received media is refreshed.
    #[serde(with = "duration_str")]
    pub heartbeat_interval: Duration,
    /// A node not heard from for this many heartbeat intervals is dead: any live node
    /// marks its channels offline.
    pub dead_after_beats: u32,
    /// How other nodes and operators reach this node (the nodes table's address);
    /// empty: the host name and the RTMP port.
    pub advertise: String,
    #[serde(with = "duration_str")]
    pub retry_max_backoff: Duration,
    #[serde(with = "duration_str")]
    pub shutdown_grace: Duration,
    /// Held locked while the node runs: an instance that finds it locked is a restart's
    /// new instance and leaves crash recovery to the old one.
    pub lock_file: std::path::PathBuf,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            heartbeat_interval: Duration::from_secs(10),
            dead_after_beats: 3,
            advertise: String::new(),
            retry_max_backoff: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
            lock_file: std::path::PathBuf::from("./data/streamgate.lock"),
        }
    }
}

impl StatusConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.lock_file.as_os_str().is_empty() {
            return Err(invalid(
                "status.lock_file",
                "\"\"",
                "must name a file, e.g. \"./data/streamgate.lock\"",
            ));
        }
        positive("status.heartbeat_interval", self.heartbeat_interval)?;
        if self.dead_after_beats < 2 {
            return Err(invalid(
                "status.dead_after_beats",
                self.dead_after_beats,
                "must be at least 2 (one late heartbeat must not declare a node dead); 3 is a good value",
            ));
        }
        positive("status.retry_max_backoff", self.retry_max_backoff)
    }

    /// How long a node may stay silent before the others declare it dead.
    pub fn dead_after(&self) -> Duration {
        self.heartbeat_interval * self.dead_after_beats
    }

    /// `node_id`, or the host name when empty.
    pub fn node_id(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        host_name().unwrap_or_else(|| "streamgate".into())
    }

    /// How the fleet view shows this node: `advertise`, or the host name and the RTMP
    /// port.
    pub fn advertised_address(&self, rtmp_port: u16) -> String {
        if !self.advertise.is_empty() {
            return self.advertise.clone();
        }
        let host = host_name().unwrap_or_else(|| "localhost".into());
        format!("{host}:{rtmp_port}")
    }
}

/// This machine's name (the container's, in a container), if it has one.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
}
