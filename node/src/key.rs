//! Stream keys: generation, hashing, fingerprints. A [`StreamKey`] never prints its
//! content: `Debug` and `Display` show a short fingerprint, so a key cannot reach a log
//! line, an error message or a panic by accident.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::peer::AddressKey;

/// Random bytes in a generated key (160 bits of entropy).
const KEY_BYTES: usize = 20;
/// Prefix of generated keys, so secret scanners recognise them.
const KEY_PREFIX: &str = "sg_";

/// A stream key (the secret a streamer pastes into OBS).
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(String);

impl StreamKey {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// A new random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("{KEY_PREFIX}{}", hex::encode(bytes)))
    }

    /// The secret itself: only for showing it once to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Lowercase hex SHA-256, the form stored by default.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// An opaque tag of a publisher's address (`address`: IPv6 grouped by /64), salted
    /// with this key: two nodes that saw the same key compare tags to tell "the same
    /// encoder, reconnecting" from "a second encoder", while a reader of the table
    /// learns neither the address nor the key. SHA-256 over an explicit encoding
    /// (a domain string, the key's bytes, a zero byte, the address's
    /// [`AddressKey::to_bytes`]), cut to 12 bytes, in hex.
    pub fn peer_tag(&self, address: AddressKey) -> String {
        let mut h = Sha256::new();
        h.update(b"streamgate peer tag v2\0");
        h.update(self.0.as_bytes());
        h.update(b"\0");
        h.update(address.to_bytes());
        hex::encode(&h.finalize()[..12])
    }

    /// Eight hex digits identifying the key in logs without revealing it.
    pub fn fingerprint(&self) -> String {
        self.sha256_hex()[..8].to_string()
    }
}

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamKey(fp={})", self.fingerprint())
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key fp {}", self.fingerprint())
    }
}

/// Whether `given` is `secret`, in a time that depends on neither's content nor on the
/// secret's length: the SHA-256 digests of both are compared (the digest of `given`
/// takes time in its own length, which its sender knows already).
pub fn secret_eq(given: &[u8], secret: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    constant_time_eq(&Sha256::digest(given), &Sha256::digest(secret))
}

/// Compares two strings of the same length in time independent of where they differ
/// (strings of different lengths are unequal at once: use it on digests, or
/// [`secret_eq`]).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_tags_tell_addresses_and_keys_apart_and_reveal_neither() {
        let key = StreamKey::new("sg_abc");
        let a = |s: &str| AddressKey::of(s.parse().unwrap());
        let tag = key.peer_tag(a("198.51.100.7"));
        assert_eq!(tag.len(), 24);
        assert_eq!(
            tag,
            key.peer_tag(a("::ffff:198.51.100.7")),
            "mapped IPv4 is IPv4"
        );
        assert_ne!(tag, key.peer_tag(a("198.51.100.8")));
        assert_ne!(tag, StreamKey::new("sg_abd").peer_tag(a("198.51.100.7")));
        // One /64: one tag.
        assert_eq!(
            key.peer_tag(a("2001:db8:1:2::1")),
            key.peer_tag(a("2001:db8:1:2:ffff::9"))
        );
        assert!(!tag.contains("198") && !tag.contains("abc"));
        // The encoding is fixed bytes, not a debug string: pinned.
        assert_eq!(tag, key.peer_tag(AddressKey::V4(0xC633_6407)));
    }

    #[test]
    fn secrets_compare_by_digest_whatever_the_lengths() {
        let secret = b"0123456789abcdef0123456789abcdef";
        assert!(secret_eq(secret, secret));
        for given in [
            &b""[..],
            b"0",
            b"0123456789abcdef0123456789abcde",
            b"0123456789abcdef0123456789abcdef0",
            b"0123456789abcdef0123456789abcdeF",
        ] {
            assert!(!secret_eq(given, secret), "{given:?}");
        }
    }

    #[test]
    fn generated_keys_are_long_random_and_never_printed() {
        let a = StreamKey::generate();
        let b = StreamKey::generate();
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), KEY_PREFIX.len() + 2 * KEY_BYTES);
        for shown in [format!("{a:?}"), format!("{a}")] {
            assert!(!shown.contains(a.expose()), "{shown}");
            assert!(shown.contains(&a.fingerprint()));
        }
    }

    #[test]
    fn sha256_matches_known_vector() {
        assert_eq!(
            StreamKey::new("abc").sha256_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn constant_time_compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
