//! How durations and socket addresses are written in the file: `"10s"`, `"1500ms"`,
//! `"2m"`; `"0.0.0.0:1935"`. Parse errors say how to write them.

/// Durations written like `"10s"`, `"1500ms"`, `"2m"`.
pub(super) mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}): write it like \"10s\", \"500ms\" or \"2m\""
            ))
        })
    }
}

/// Socket addresses written like `"0.0.0.0:1935"` or `"[::]:1935"`.
pub(super) mod addr_str {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.to_string())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(|_| {
            serde::de::Error::custom(format!(
                "{s:?} is not a socket address; write host:port with an IP address, e.g. \"0.0.0.0:1935\" or \"[::]:1935\""
            ))
        })
    }
}
