//! `[admin]`: where `/metrics` and the admin API listen, the admin token, and the
//! opt-in per-channel metrics.

use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{invalid, ConfigError};

/// A secret from the configuration: compared, never shown (`Debug` and
/// `check-config` print `***`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, for the comparison.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "***" })
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Secret(String::deserialize(d)?))
    }
}

/// An optional socket address: `""` for none.
mod opt_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        a: &Option<SocketAddr>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.map(|a| a.to_string()).unwrap_or_default())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not a socket address; write host:port, e.g. \"127.0.0.1:9090\", or \"\" for none"
            ))
        })
    }
}

/// `[admin]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// A separate, private address for `/metrics` and the admin API; none: both on the
    /// HTTP listener.
    #[serde(with = "opt_addr")]
    pub listen: Option<SocketAddr>,
    /// Bearer token of the admin API; empty: the admin API is off.
    pub token: Secret,
    /// Series per live channel (`channel_id` labels); they grow with the channels.
    pub per_channel_metrics: bool,
}

impl AdminConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.token.is_empty() && self.token.expose().len() < 16 {
            return Err(invalid(
                "admin.token",
                "***",
                "must be at least 16 characters (e.g. `openssl rand -hex 32`), or \"\" to turn the admin API off",
            ));
        }
        Ok(())
    }
}
