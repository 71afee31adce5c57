//! What the public may know of a channel: its UUID, its name, its live status, and the
//! public id of its thumbnail. Never its key (see [`crate::key`]).

use std::fmt;

use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::Serialize;
use uuid::Uuid;

/// A channel as the public may see it: never the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Channel {
    pub id: Uuid,
    pub name: String,
    pub is_live: bool,
    pub live_since: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Extra relay targets of this channel (may embed third-party keys: never shown).
    #[serde(skip)]
    pub relay_targets: Vec<String>,
    /// The passphrase an SRT publisher of this channel must encrypt with (never shown).
    #[serde(skip)]
    pub srt_passphrase: Option<SrtPassphrase>,
}

/// An SRT passphrase: 10 to 79 characters, as SRT requires. Its `Debug` shows nothing
/// of it.
#[derive(Clone, PartialEq, Eq)]
pub struct SrtPassphrase(String);

impl SrtPassphrase {
    /// Shortest and longest passphrase SRT accepts.
    pub const MIN: usize = 10;
    pub const MAX: usize = 79;

    /// Checks the length; the error says what SRT requires (never the value).
    pub fn new(s: impl Into<String>) -> Result<SrtPassphrase, String> {
        let s = s.into();
        let n = s.chars().count();
        if !(Self::MIN..=Self::MAX).contains(&n) {
            return Err(format!(
                "an SRT passphrase has {} to {} characters (this one has {n})",
                Self::MIN,
                Self::MAX
            ));
        }
        Ok(SrtPassphrase(s))
    }

    /// The passphrase itself, for the key derivation and the store only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SrtPassphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SrtPassphrase(***)")
    }
}

impl Channel {
    /// A channel that is not live, with no extra relay targets.
    pub fn new(id: Uuid, name: impl Into<String>) -> Channel {
        Channel {
            id,
            name: name.into(),
            is_live: false,
            live_since: None,
            last_seen: None,
            relay_targets: Vec::new(),
            srt_passphrase: None,
        }
    }
}

/// The public id of a channel's thumbnail: the MD5 of the channel's lowercase,
/// hyphenated UUID, as the system streamgate replaces named its files. It is the
/// thumbnail's file name (`<id>.jpg`), the `{thumb_id}` of relay templates and the
/// only name `/thumbs/` serves.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ThumbnailId([u8; 16]);

/// Extension of thumbnail files.
const EXTENSION: &str = ".jpg";

impl ThumbnailId {
    /// The thumbnail id of a channel.
    pub fn of(channel_id: &Uuid) -> ThumbnailId {
        ThumbnailId(Md5::digest(channel_id.hyphenated().to_string().as_bytes()).into())
    }

    /// `<32 lowercase hex digits>.jpg`.
    pub fn file_name(&self) -> String {
        format!("{self}{EXTENSION}")
    }

    /// Reads a file name back: exactly 32 lowercase hex digits and `.jpg`, so nothing
    /// else (no path, no traversal, no other file) can be named.
    pub fn from_file_name(name: &str) -> Option<ThumbnailId> {
        let hex_part = name.strip_suffix(EXTENSION)?;
        if hex_part.len() != 32
            || !hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        let mut id = [0u8; 16];
        hex::decode_to_slice(hex_part, &mut id).ok()?;
        Some(ThumbnailId(id))
    }
}

impl fmt::Display for ThumbnailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ThumbnailId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ThumbnailId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbnail_id_is_md5_of_the_lowercase_hyphenated_uuid() {
        let id = Uuid::parse_str("3F2504E0-4F89-11D3-9A0C-0305E82C3301").unwrap();
        let expected = hex::encode(Md5::digest(b"3f2504e0-4f89-11d3-9a0c-0305e82c3301"));
        let t = ThumbnailId::of(&id);
        assert_eq!(t.to_string(), expected);
        assert_eq!(t.file_name(), format!("{expected}.jpg"));
        assert_eq!(ThumbnailId::from_file_name(&t.file_name()), Some(t));
    }

    #[test]
    fn only_thumbnail_file_names_are_read_back() {
        for bad in [
            "../streamgate.toml",
            "..%2f..%2fetc%2fpasswd",
            "0123456789abcdef0123456789abcdef.png",
            "0123456789ABCDEF0123456789ABCDEF.jpg",
            "/0123456789abcdef0123456789abcde.jpg",
            "0123456789abcdef0123456789abcdef0.jpg",
            "",
            ".jpg",
        ] {
            assert_eq!(ThumbnailId::from_file_name(bad), None, "{bad}");
        }
    }
}
