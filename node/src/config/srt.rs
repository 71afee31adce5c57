//! `[srt]`: the SRT ingest listener (UDP). Connection caps, the pending caps and the
//! auth deadline are `[rtmp]`'s, shared by every protocol.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{addr_str, duration_str};
use super::{invalid, ConfigError};

/// The longest latency SRT can carry (a 16-bit count of milliseconds).
const MAX_LATENCY: Duration = Duration::from_millis(65_535);

/// `[srt]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SrtConfig {
    pub enabled: bool,
    /// UDP address publishers send to.
    #[serde(with = "addr_str")]
    pub listen: SocketAddr,
    /// The least latency of a stream: how long the node waits for a lost packet's
    /// retransmission before it gives it up. A publisher may ask for more (its own
    /// latency setting); the larger wins.
    #[serde(with = "duration_str")]
    pub latency: Duration,
    /// A connection that sends nothing for this long (not even a keep-alive) is
    /// broken.
    #[serde(with = "duration_str")]
    pub peer_idle_timeout: Duration,
    /// Packets a stream may hold past a lost one while it waits (the flow window the
    /// publisher is told): a 6 Mbps stream with 120 ms latency needs about 70, a
    /// 20 Mbps one with 2 s about 3800. Each held packet is up to 1.5 KB.
    pub receive_buffer_packets: usize,
    /// The kernel's receive buffer of each SRT socket (one per ingest thread), bytes:
    /// datagrams wait there while the thread is busy. Above `net.core.rmem_max` the
    /// kernel gives less (the node logs what it got).
    pub socket_receive_buffer: usize,
    /// Handshake packets an address may send per second (to each ingest thread's
    /// socket; twice that at once): the rest is dropped unread, before any work. A
    /// caller sends 2 to connect, and repeats its conclusion every 250 ms while its
    /// key is checked; 50 lets a dozen encoders behind one NAT start together.
    pub max_handshakes_per_address: u32,
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8890)),
            latency: Duration::from_millis(120),
            peer_idle_timeout: Duration::from_secs(5),
            receive_buffer_packets: 8192,
            socket_receive_buffer: 8 * 1024 * 1024,
            max_handshakes_per_address: 50,
        }
    }
}

impl SrtConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.latency < Duration::from_millis(20) || self.latency > MAX_LATENCY {
            return Err(invalid(
                "srt.latency",
                format!("\"{}\"", humantime::format_duration(self.latency)),
                "must be between 20ms and 65535ms (\"120ms\" is SRT's default; 3 to 4 round-trip times is the usual advice)",
            ));
        }
        if self.peer_idle_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "srt.peer_idle_timeout",
                format!("\"{}\"", humantime::format_duration(self.peer_idle_timeout)),
                "must be at least 1s (publishers send a keep-alive every second)",
            ));
        }
        if !(32..=65_536).contains(&self.receive_buffer_packets) {
            return Err(invalid(
                "srt.receive_buffer_packets",
                self.receive_buffer_packets,
                "must be between 32 and 65536 (8192 is libsrt's default)",
            ));
        }
        if self.socket_receive_buffer < 64 * 1024 {
            return Err(invalid(
                "srt.socket_receive_buffer",
                self.socket_receive_buffer,
                "must be at least 65536 bytes (8388608 is a good value)",
            ));
        }
        if self.max_handshakes_per_address < 4 {
            return Err(invalid(
                "srt.max_handshakes_per_address",
                self.max_handshakes_per_address,
                "must be at least 4 (a caller needs 2 to connect and repeats them; 50 is the default)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_key_and_the_fix() {
        let bad = SrtConfig {
            latency: Duration::from_secs(70),
            ..SrtConfig::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("srt.latency") && e.contains("65535ms"), "{e}");
        let bad = SrtConfig {
            receive_buffer_packets: 4,
            ..SrtConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("srt.receive_buffer_packets"));
        assert!(SrtConfig::default().validate().is_ok());
    }
}
