//! `[rtmp]`: the ingest listener and the limits of every connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::{addr_str, duration_str};
use super::{chunk_size, invalid, pem_file, positive, ConfigError};
use crate::peer::Cidr;

/// How new connections are dealt to the ingest threads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// Fill the first thread up to 0.7 of a core of measured load, then the next, and
    /// when every thread is that busy, the least busy one: a thread that has more to do
    /// sleeps and wakes up less often per message, and each wake-up costs the kernel
    /// a context switch. Until a load per connection is measured, each new one is
    /// expected to cost a millisecond of CPU per second (a 6 Mbps stream).
    Pack,
    /// Round-robin over all threads.
    Spread,
}

/// Longest `rtmp.busy_wakeup_interval`: each message may wait that long.
const MAX_BUSY_WAKEUP_INTERVAL: Duration = Duration::from_millis(10);

/// `[rtmp]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Address publishers connect to.
    #[serde(with = "addr_str")]
    pub listen: SocketAddr,
    /// Application name, the first path segment of the publish URL.
    pub app: String,
    /// Most simultaneous RTMP connections.
    pub max_connections: usize,
    /// Most connections from one address (IPv6: one /64).
    pub max_connections_per_address: usize,
    /// Most connections without an accepted publish, all addresses together.
    pub max_pending: usize,
    /// Most connections without an accepted publish from one address.
    pub max_pending_per_address: usize,
    /// From accept to an accepted publish; traffic does not extend it.
    #[serde(with = "duration_str")]
    pub auth_deadline: Duration,
    /// On SIGTERM: how long live publishes may go on after the node stopped accepting
    /// (0: they are ended at once and reconnect, to the new instance in a restart).
    #[serde(with = "duration_str")]
    pub drain_timeout: Duration,
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
    #[serde(with = "duration_str")]
    pub idle_timeout: Duration,
    /// A publish of a channel that is already live takes it over when the current
    /// publisher has sent no media for this long, or comes from the same address;
    /// otherwise the newcomer is refused ("already live from another encoder").
    #[serde(with = "duration_str")]
    pub takeover_silence: Duration,
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    /// Chunk size we send with.
    pub chunk_size: u32,
    /// Largest message accepted.
    pub max_message_size: u32,
    /// Most chunk streams per connection.
    pub max_chunk_streams: usize,
    /// Most bytes of unfinished messages per connection.
    pub max_partial_bytes: usize,
    /// Ingest threads (each a single-threaded runtime); 0: one per core.
    pub workers: usize,
    /// How new connections are dealt to the ingest threads.
    pub placement: Placement,
    /// For an ingest thread that is itself awake more than 0.7 of a core, the shortest
    /// time from its wake-up to its next look for new data: one wake-up then serves
    /// every socket that became ready meanwhile. Adds at most this much relay delay,
    /// only on such a thread while it is that busy; 0: off.
    #[serde(with = "duration_str")]
    pub busy_wakeup_interval: Duration,
    /// Load balancers whose connections start with a PROXY protocol header (v1 or
    /// v2) naming the real client.
    pub trusted_proxies: Vec<Cidr>,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            app: "live".into(),
            max_connections: 10_000,
            max_connections_per_address: 100,
            max_pending: 1000,
            max_pending_per_address: 20,
            auth_deadline: Duration::from_secs(10),
            drain_timeout: Duration::ZERO,
            takeover_silence: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            chunk_size: 4096,
            max_message_size: 8 * 1024 * 1024,
            max_chunk_streams: 64,
            max_partial_bytes: 16 * 1024 * 1024,
            workers: 0,
            placement: Placement::Pack,
            busy_wakeup_interval: Duration::from_millis(2),
            trusted_proxies: Vec::new(),
        }
    }
}

impl RtmpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.app.is_empty() || self.app.contains('/') || self.app.contains('?') {
            return Err(invalid(
                "rtmp.app",
                format!("{:?}", self.app),
                "must be one path segment without '/' or '?', e.g. \"live\"",
            ));
        }
        for (key, value) in [
            ("rtmp.max_connections", self.max_connections),
            (
                "rtmp.max_connections_per_address",
                self.max_connections_per_address,
            ),
            ("rtmp.max_pending", self.max_pending),
            ("rtmp.max_pending_per_address", self.max_pending_per_address),
        ] {
            if value == 0 {
                return Err(invalid(key, 0, "must be at least 1"));
            }
        }
        if self.max_pending_per_address > self.max_connections_per_address {
            return Err(invalid(
                "rtmp.max_pending_per_address",
                self.max_pending_per_address,
                "must not be more than rtmp.max_connections_per_address",
            ));
        }
        if self.busy_wakeup_interval > MAX_BUSY_WAKEUP_INTERVAL {
            return Err(invalid(
                "rtmp.busy_wakeup_interval",
                humantime::format_duration(self.busy_wakeup_interval),
                &format!(
                    "must be at most {} (it adds up to that much relay delay); \"2ms\" is the default, \"0s\" turns pacing off",
                    humantime::format_duration(MAX_BUSY_WAKEUP_INTERVAL)
                ),
            ));
        }
        positive("rtmp.auth_deadline", self.auth_deadline)?;
        if self.auth_deadline < self.handshake_timeout {
            return Err(invalid(
                "rtmp.auth_deadline",
                humantime::format_duration(self.auth_deadline),
                "must not be shorter than rtmp.handshake_timeout",
            ));
        }
        positive("rtmp.handshake_timeout", self.handshake_timeout)?;
        positive("rtmp.idle_timeout", self.idle_timeout)?;
        positive("rtmp.write_timeout", self.write_timeout)?;
        chunk_size("rtmp.chunk_size", self.chunk_size, 4096)?;
        if !(64 * 1024..=16_777_215).contains(&self.max_message_size) {
            return Err(invalid(
                "rtmp.max_message_size",
                self.max_message_size,
                "must be between 65536 and 16777215 bytes (keyframes of high-bitrate streams need a few MiB)",
            ));
        }
        if self.max_chunk_streams < 4 {
            return Err(invalid(
                "rtmp.max_chunk_streams",
                self.max_chunk_streams,
                "must be at least 4",
            ));
        }
        if self.max_partial_bytes < self.max_message_size as usize {
            return Err(invalid(
                "rtmp.max_partial_bytes",
                self.max_partial_bytes,
                "must be at least rtmp.max_message_size",
            ));
        }
        Ok(())
    }
}

/// `[rtmps]`: a second ingest listener that speaks RTMP inside TLS (OBS and ffmpeg:
/// `rtmps://HOST/live`). Same limits, deadlines and authorization as `[rtmp]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpsConfig {
    pub enabled: bool,
    #[serde(with = "addr_str")]
    pub listen: SocketAddr,
    /// Certificate chain, PEM (re-read on SIGHUP).
    pub cert_file: PathBuf,
    /// Private key, PEM (re-read on SIGHUP).
    pub key_file: PathBuf,
}

impl Default for RtmpsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
        }
    }
}

impl RtmpsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        for (key, path) in [
            ("rtmps.cert_file", &self.cert_file),
            ("rtmps.key_file", &self.key_file),
        ] {
            if !path.is_file() {
                return Err(invalid(
                    key,
                    format!("{:?}", path.display().to_string()),
                    "must name a readable PEM file when rtmps.enabled is true",
                ));
            }
        }
        Ok(())
    }
}

/// `*`, or an origin as a browser sends it.
fn valid_origin(origin: &str) -> bool {
    origin == "*" || http_origin(origin)
}

/// `http(s)://host[:port]`: no path, query, fragment or user, no trailing slash (a
/// browser's origin; the base URL of a node).
fn http_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
        && origin.parse::<axum::http::Uri>().is_ok()
}

/// `[http]`: API, health and thumbnails.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    #[serde(with = "addr_str")]
    pub listen: SocketAddr,
    /// Most HTTP connections at once (their file descriptors are not the RTMP
    /// listener's to lose).
    pub max_connections: usize,
    /// Most connections from one address (IPv6: one /64), so that one client cannot
    /// take every slot; 0: an eighth of `max_connections` ([`HttpConfig::per_address`]).
    pub max_connections_per_address: usize,
    /// Connections taken beyond `max_connections` that serve only `/healthz`,
    /// `/metrics`, the admin API and the dashboard (anything else gets 503), so a
    /// health checker and the operator get in while the public slots are full.
    pub reserved_connections: usize,
    /// A request's head must arrive within this time, and an idle kept-alive
    /// connection is closed after it.
    #[serde(with = "duration_str")]
    pub header_timeout: Duration,
    /// A client that takes no byte of its answer for this long is closed (a large
    /// answer, an event stream).
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    /// Most `/api/v1/events` streams open at once (each holds a connection while it is
    /// open); 0: a quarter of `max_connections` ([`HttpConfig::event_streams`]).
    pub max_event_streams: usize,
    /// Most event streams from one address (at most what the address may hold).
    pub max_event_streams_per_address: usize,
    /// Whether `/api/v1/streams` says which node carries each stream (its node id).
    pub show_node: bool,
    /// Origins whose pages may read the public API, the events and the thumbnails
    /// (`*`: any; `scheme://host[:port]` each; empty: none but this node's own).
    pub cors_origins: Vec<String>,
    /// Serve HTTPS on `listen` (so a website on https:// can show the thumbnails and
    /// read the API without mixed content).
    pub tls: bool,
    /// PEM certificate chain and key of the HTTPS listener; empty: RTMPS's
    /// (`rtmps.cert_file`, `rtmps.key_file`), reloaded with it on SIGHUP.
    pub cert_file: String,
    pub key_file: String,
    /// The base URL the other nodes of a fleet fetch this node's thumbnails from
    /// (`http://10.0.0.5:8080`); empty: this listener's scheme, address (the host name
    /// when it listens on every address) and port.
    pub advertise: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_connections: 512,
            max_connections_per_address: 0,
            reserved_connections: 16,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            max_event_streams: 0,
            max_event_streams_per_address: 4,
            show_node: false,
            cors_origins: vec!["*".to_string()],
            tls: false,
            cert_file: String::new(),
            key_file: String::new(),
            advertise: String::new(),
        }
    }
}

impl HttpConfig {
    /// Connections one address may hold: as configured, or an eighth of the cap.
    pub fn per_address(&self) -> usize {
        match self.max_connections_per_address {
            0 => (self.max_connections / 8).max(1),
            n => n,
        }
    }

    /// Event streams open at once: as configured, or a quarter of the cap.
    pub fn event_streams(&self) -> usize {
        match self.max_event_streams {
            0 => (self.max_connections / 4).max(1),
            n => n,
        }
    }

    /// Event streams from one address: as configured, within what the address may
    /// hold and the streams in all.
    pub fn event_streams_per_address(&self) -> usize {
        self.max_event_streams_per_address
            .min(self.per_address())
            .min(self.event_streams())
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("http.max_connections", 0, "must be at least 1"));
        }
        if self.max_connections_per_address >= self.max_connections && self.max_connections > 1 {
            return Err(invalid(
                "http.max_connections_per_address",
                self.max_connections_per_address,
                "must be below http.max_connections, so that one address cannot take every connection (0: an eighth of it)",
            ));
        }
        if self.max_event_streams >= self.max_connections && self.max_connections > 1 {
            return Err(invalid(
                "http.max_event_streams",
                self.max_event_streams,
                "must be below http.max_connections: event streams hold their connections, leave room for the rest (0: a quarter of it)",
            ));
        }
        if self.max_event_streams_per_address == 0 {
            return Err(invalid(
                "http.max_event_streams_per_address",
                0,
                "must be at least 1",
            ));
        }
        for origin in &self.cors_origins {
            if !valid_origin(origin) {
                return Err(invalid(
                    "http.cors_origins",
                    format!("{origin:?}"),
                    "must be \"*\" or an origin like \"https://www.example.com\" (scheme, host, optional port; no path, no trailing slash)",
                ));
            }
        }
        pem_file("http.cert_file", &self.cert_file)?;
        pem_file("http.key_file", &self.key_file)?;
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(invalid(
                "http.key_file",
                format!("{:?}", self.key_file),
                "http.cert_file and http.key_file go together: set both, or neither (then RTMPS's are used)",
            ));
        }
        if !self.advertise.is_empty() && !http_origin(&self.advertise) {
            return Err(invalid(
                "http.advertise",
                format!("{:?}", self.advertise),
                "must be the base URL other nodes reach this node's HTTP listener at, like \"http://10.0.0.5:8080\" (scheme, host, port; no path, no trailing slash), or \"\" to derive it",
            ));
        }
        positive("http.header_timeout", self.header_timeout)?;
        positive("http.write_timeout", self.write_timeout)
    }

    /// The base URL the fleet fetches this node's thumbnails from: `advertise`, or
    /// derived from the address the listener is bound to.
    pub fn advertised_url(&self, bound: SocketAddr, host_name: Option<String>) -> String {
        if !self.advertise.is_empty() {
            return self.advertise.clone();
        }
        let scheme = if self.tls { "https" } else { "http" };
        let host = match bound.ip() {
            ip if ip.is_unspecified() => host_name.unwrap_or_else(|| "localhost".into()),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("{scheme}://{host}:{}", bound.port())
    }

    /// The certificate and key of the HTTPS listener: its own, or RTMPS's.
    pub fn tls_files(&self, rtmps: &RtmpsConfig) -> (PathBuf, PathBuf) {
        if self.cert_file.is_empty() {
            (rtmps.cert_file.clone(), rtmps.key_file.clone())
        } else {
            (self.cert_file.clone().into(), self.key_file.clone().into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_origins_are_origins() {
        for good in [
            "*",
            "https://www.example.com",
            "http://localhost:3000",
            "https://[::1]:8443",
        ] {
            assert!(valid_origin(good), "{good}");
        }
        for bad in [
            "www.example.com",
            "https://www.example.com/",
            "https://x/path",
            "ftp://x",
            "https://",
            "",
        ] {
            assert!(!valid_origin(bad), "{bad}");
        }
        let c = HttpConfig {
            cors_origins: vec!["https://site.example/".into()],
            ..HttpConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("http.cors_origins") && e.contains("no trailing slash"),
            "{e}"
        );
    }

    #[test]
    fn https_needs_a_certificate_of_its_own_or_rtmps() {
        let mut c = crate::config::Config::default();
        c.http.tls = true;
        let e = c.clone().validate().unwrap_err().to_string();
        assert!(
            e.contains("http.tls") && e.contains("rtmps.cert_file"),
            "{e}"
        );
        c.rtmps.cert_file = "/x/cert.pem".into();
        c.rtmps.key_file = "/x/key.pem".into();
        assert_eq!(
            c.http.tls_files(&c.rtmps).0,
            std::path::PathBuf::from("/x/cert.pem")
        );
    }

    #[test]
    fn the_advertised_url_is_a_base_url_or_derived() {
        let mut h = HttpConfig::default();
        for good in [
            "http://10.0.0.5:8080",
            "https://node-a.example.com",
            "http://[::1]:8080",
        ] {
            h.advertise = good.into();
            assert!(h.validate().is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.5:8080",
            "http://node/",
            "http://node/thumbs",
            "http://n?x=1",
            "http://u@node",
            "ftp://node",
        ] {
            h.advertise = bad.into();
            let e = h.validate().unwrap_err().to_string();
            assert!(e.contains("http.advertise"), "{bad}: {e}");
        }
        h.advertise = String::new();
        let bound: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(
            h.advertised_url(bound, Some("node-a".into())),
            "http://node-a:8080"
        );
        assert_eq!(
            h.advertised_url("[::1]:9000".parse().unwrap(), None),
            "http://[::1]:9000"
        );
    }
}
