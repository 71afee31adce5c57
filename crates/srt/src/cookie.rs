//! The SYN cookie of the induction phase: a caller must echo the listener's cookie in
//! its conclusion, so a conclusion from a spoofed address (which never saw the cookie)
//! costs the listener nothing. A keyed hash of the peer's address and port and the
//! current minute; the previous minute's is accepted too.

use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bakes and checks cookies with a secret of its own.
#[derive(Clone)]
pub struct CookieJar {
    secret: [u8; 32],
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieJar")
    }
}

impl CookieJar {
    /// `secret`: random bytes, kept for the listener's life.
    pub fn new(secret: [u8; 32]) -> CookieJar {
        CookieJar { secret }
    }

    /// The cookie of `peer` in `minute` (minutes since any fixed start).
    pub fn bake(&self, peer: SocketAddr, minute: u64) -> u32 {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("any key length");
        match peer.ip() {
            std::net::IpAddr::V4(a) => mac.update(&a.octets()),
            std::net::IpAddr::V6(a) => mac.update(&a.octets()),
        }
        mac.update(&peer.port().to_be_bytes());
        mac.update(&minute.to_be_bytes());
        let h = mac.finalize().into_bytes();
        u32::from_be_bytes([h[0], h[1], h[2], h[3]])
    }

    /// Whether `cookie` is `peer`'s for this minute or the one before.
    pub fn check(&self, peer: SocketAddr, minute: u64, cookie: u32) -> bool {
        cookie == self.bake(peer, minute)
            || minute
                .checked_sub(1)
                .is_some_and(|m| cookie == self.bake(peer, m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_good_for_its_minute_and_the_next_only() {
        let jar = CookieJar::new([7; 32]);
        let peer: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let c = jar.bake(peer, 100);
        assert!(jar.check(peer, 100, c));
        assert!(jar.check(peer, 101, c));
        assert!(!jar.check(peer, 102, c));
        assert!(!jar.check("198.51.100.7:5001".parse().unwrap(), 100, c));
        assert!(!jar.check("198.51.100.8:5000".parse().unwrap(), 100, c));
        assert!(!CookieJar::new([8; 32]).check(peer, 100, c));
    }
}
