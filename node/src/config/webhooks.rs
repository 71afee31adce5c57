//! `[webhooks]`: where the node tells a backend what happened (live, offline,
//! thumbnail, health), signed the Standard Webhooks way (the `webhooks` module delivers them).

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::admin::Secret;
use super::duration::duration_str;
use super::{invalid, positive, ConfigError};

/// Most webhook URLs (each has its own queue and connection).
pub(super) const MAX_WEBHOOK_URLS: usize = 8;

/// What a backend can be told.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum WebhookEvent {
    Live,
    Offline,
    Thumbnail,
    Health,
}

/// An `http://` or `https://` URL a delivery is POSTed to.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, as the request line carries them.
    pub path_and_query: String,
    raw: String,
}

impl WebhookUrl {
    pub fn parse(s: &str) -> Result<WebhookUrl, String> {
        let uri: axum::http::Uri = s.parse().map_err(|e| {
            format!(
                "is not a URL ({e}); write it like \"https://backend.example/hooks/streamgate\""
            )
        })?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("must start with http:// or https://".into()),
        };
        let authority = uri.authority().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("must not carry user:password@ (put a token in the path or query)".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err("has no host".into());
        }
        Ok(WebhookUrl {
            tls,
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            host,
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
            raw: s.to_string(),
        })
    }

    /// Safe to log and to label metrics with: scheme, host, port and path; never the
    /// query (backends put tokens there).
    pub fn redacted(&self) -> String {
        let path = self.path_and_query.split('?').next().unwrap_or("/");
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!(
            "{}://{host}:{}{path}",
            if self.tls { "https" } else { "http" },
            self.port
        )
    }

    /// As `check-config` shows it: the URL with its query masked.
    pub fn shown(&self) -> String {
        match self.path_and_query.split_once('?') {
            Some(_) => format!("{}?***", self.redacted()),
            None => self.redacted(),
        }
    }

    /// The `Host` header.
    pub fn host_header(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl std::fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for WebhookUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        WebhookUrl::parse(&s).map_err(|e| serde::de::Error::custom(format!("webhook URL {e}")))
    }
}

/// `[webhooks]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Where deliveries go (none: webhooks off).
    pub urls: Vec<WebhookUrl>,
    /// `whsec_` and the base64 of 24 to 64 random bytes, as Standard Webhooks
    /// libraries take it.
    pub secret: Secret,
    /// What is sent.
    pub events: Vec<WebhookEvent>,
    /// Each delivery (connect, TLS, request and answer) must finish within this.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Longest wait between two attempts of a delivery the backend did not take.
    #[serde(with = "duration_str")]
    pub retry_max_backoff: Duration,
    /// Deliveries waiting per URL; beyond it the oldest is dropped (counted, logged).
    pub queue_max: usize,
    /// Whether a URL may reach private, loopback and link-local addresses (a backend
    /// on the node's own network).
    pub allow_private_targets: bool,
    /// Extra CA certificates (PEM) trusted for https:// URLs.
    pub ca_file: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            secret: Secret::default(),
            events: vec![
                WebhookEvent::Live,
                WebhookEvent::Offline,
                WebhookEvent::Health,
            ],
            timeout: Duration::from_secs(5),
            retry_max_backoff: Duration::from_secs(30),
            queue_max: 10_000,
            allow_private_targets: false,
            ca_file: String::new(),
        }
    }
}

/// The secret's bytes from its `whsec_<base64>` form.
pub fn secret_bytes(secret: &str) -> Result<Vec<u8>, String> {
    let b64 = secret.strip_prefix("whsec_").ok_or(
        "must be whsec_ followed by base64 (make one: echo whsec_$(openssl rand -base64 32))",
    )?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| {
            "is not valid base64 after whsec_ (make one: echo whsec_$(openssl rand -base64 32))"
        })?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(format!(
            "holds {} bytes; use 24 to 64 random bytes (echo whsec_$(openssl rand -base64 32))",
            bytes.len()
        ));
    }
    Ok(bytes)
}

impl WebhooksConfig {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.events.contains(&event)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("webhooks.timeout", self.timeout)?;
        positive("webhooks.retry_max_backoff", self.retry_max_backoff)?;
        if self.urls.len() > MAX_WEBHOOK_URLS {
            return Err(invalid(
                "webhooks.urls",
                format!("{} URLs", self.urls.len()),
                &format!("at most {MAX_WEBHOOK_URLS}; fan out in your backend"),
            ));
        }
        if self.queue_max < 16 {
            return Err(invalid(
                "webhooks.queue_max",
                self.queue_max,
                "must be at least 16 (10000 is the default)",
            ));
        }
        if !self.enabled() {
            return Ok(());
        }
        if self.secret.is_empty() {
            return Err(invalid(
                "webhooks.secret",
                "\"\"",
                "is needed to sign deliveries: echo whsec_$(openssl rand -base64 32)",
            ));
        }
        secret_bytes(self.secret.expose()).map_err(|e| invalid("webhooks.secret", "***", &e))?;
        if self.events.is_empty() {
            return Err(invalid(
                "webhooks.events",
                "[]",
                "names nothing to send: use some of \"live\", \"offline\", \"thumbnail\", \"health\"",
            ));
        }
        if !self.allow_private_targets {
            for url in &self.urls {
                if let Ok(ip) = url.host.parse::<std::net::IpAddr>() {
                    if crate::peer::is_internal(ip) {
                        return Err(invalid(
                            "webhooks.urls",
                            url.redacted(),
                            "is on a private, loopback or link-local address: set webhooks.allow_private_targets = true if your backend is on the node's network",
                        ));
                    }
                }
            }
        }
        super::pem_file("webhooks.ca_file", &self.ca_file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_never_show_their_query() {
        let u = WebhookUrl::parse("https://api.example.com/hooks?token=s3cret").unwrap();
        assert!(u.tls && u.port == 443 && u.path_and_query == "/hooks?token=s3cret");
        assert_eq!(u.redacted(), "https://api.example.com:443/hooks");
        assert_eq!(format!("{u:?}"), "https://api.example.com:443/hooks");
        assert_eq!(u.host_header(), "api.example.com");
        assert_eq!(u.shown(), "https://api.example.com:443/hooks?***");
        let u = WebhookUrl::parse("http://[::1]:8000").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("::1", 8000, "/")
        );
        assert_eq!(u.host_header(), "[::1]:8000");
        for bad in ["ftp://x/", "https://user:pw@x/", "not a url", "/relative"] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_secret_and_private_targets_are_checked_with_the_fix() {
        let mut c = WebhooksConfig {
            urls: vec![WebhookUrl::parse("http://127.0.0.1:9/h").unwrap()],
            ..WebhooksConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("webhooks.secret") && e.contains("openssl rand"),
            "{e}"
        );
        c.secret = Secret::new("whsec_c2hvcnQ=");
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("holds 5 bytes") && !e.contains("c2hvcnQ"), "{e}");
        c.secret = Secret::new(format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        ));
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("allow_private_targets"), "{e}");
        c.allow_private_targets = true;
        c.validate().unwrap();
        assert!(WebhooksConfig::default().validate().is_ok());
    }
}
