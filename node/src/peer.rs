//! Peer addresses as the limits see them: IPv4 as is, IPv6 grouped by /64 (the block
//! one subscriber gets, so rotating through it buys an attacker nothing), IPv4-mapped
//! IPv6 as IPv4; and address ranges ([`Cidr`]) as the configuration names them.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A source address as the limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressKey {
    V4(u32),
    V6Prefix(u64),
}

impl AddressKey {
    /// A fixed encoding: a family byte (4 or 6), then the address (IPv6: its /64) in
    /// network order.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            AddressKey::V4(a) => [&[4u8][..], &a.to_be_bytes()].concat(),
            AddressKey::V6Prefix(p) => [&[6u8][..], &p.to_be_bytes()].concat(),
        }
    }

    pub fn of(ip: IpAddr) -> AddressKey {
        match ip {
            IpAddr::V4(v4) => AddressKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressKey::V4(u32::from(v4)),
                None => AddressKey::V6Prefix((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Counts what each address holds (connections, streams) against a cap; an address
/// holding nothing is forgotten, so the table never outgrows what is held. Each
/// [`AddressSlot`] gives its place back when dropped.
#[derive(Debug)]
pub struct PerAddress {
    cap: usize,
    held: parking_lot::Mutex<std::collections::HashMap<AddressKey, usize>>,
}

/// One place of one address in a [`PerAddress`] count.
#[derive(Debug)]
pub struct AddressSlot {
    owner: std::sync::Arc<PerAddress>,
    key: AddressKey,
}

impl PerAddress {
    pub fn new(cap: usize) -> std::sync::Arc<PerAddress> {
        std::sync::Arc::new(PerAddress {
            cap,
            held: Default::default(),
        })
    }

    /// A place for `ip`, or `None` when it holds the cap already.
    pub fn take(self: &std::sync::Arc<Self>, ip: IpAddr) -> Option<AddressSlot> {
        let key = AddressKey::of(ip);
        let mut held = self.held.lock();
        let n = held.entry(key).or_default();
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(AddressSlot {
            owner: self.clone(),
            key,
        })
    }

    /// Places held by `ip`'s address.
    pub fn held_by(&self, ip: IpAddr) -> usize {
        self.held
            .lock()
            .get(&AddressKey::of(ip))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut held = self.owner.held.lock();
        if let Some(n) = held.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.key);
            }
        }
    }
}

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address (`192.0.2.7`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| {
            format!(
                "{s:?} is not an address range; write it like \"10.0.0.0/8\" or \"2001:db8::/32\""
            )
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether `ip` is in the range (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({self})")
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Addresses a channel's own relay target or a webhook may not reach (unless allowed):
/// the node's own network, also when
/// it is written as an IPv6 address that carries an IPv4 one (mapped, compatible,
/// SIIT-translated, NAT64, 6to4, Teredo): the IPv4 address inside is judged.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // "This network", 0.0.0.0/8.
                || o[0] == 0
                // Carrier-grade NAT, 100.64.0.0/10.
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                // IETF protocol assignments, 192.0.0.0/24.
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                // Benchmarking, 198.18.0.0/15.
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                // Reserved, 240.0.0.0/4.
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let o = v6.octets();
            let v4 = |at: usize| Ipv4Addr::new(o[at], o[at + 1], o[at + 2], o[at + 3]);
            let embedded = if let Some(v4) = v6.to_ipv4_mapped() {
                // ::ffff:a.b.c.d
                Some(v4)
            } else if s[..6] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified() {
                // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
                Some(v4(12))
            } else if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
                // IPv4-translated (SIIT) ::ffff:0:a.b.c.d.
                Some(v4(12))
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 well-known prefix 64:ff9b::/96.
                Some(v4(12))
            } else if s[0] == 0x2002 {
                // 6to4, 2002:a.b.c.d::/48.
                Some(v4(2))
            } else if s[0] == 0x2001 && s[1] == 0 {
                // Teredo 2001::/32: the server's address, and the client's (inverted).
                let client = Ipv4Addr::from(!u32::from(v4(12)));
                if is_internal(IpAddr::V4(client)) {
                    return true;
                }
                Some(v4(4))
            } else {
                None
            };
            if let Some(v4) = embedded {
                return is_internal(IpAddr::V4(v4));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
                // Local-use IPv4/IPv6 translation, 64:ff9b:1::/48 (RFC 8215): a
                // translator of the node's own network, whatever address it embeds.
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1)
                // Discard-only, 100::/64.
                || (s[0] == 0x100 && s[1..4] == [0; 3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_address_counts_up_to_the_cap_per_64_and_forgets_empty_addresses() {
        let caps = PerAddress::new(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        let other: IpAddr = "198.51.100.4".parse().unwrap();
        let s1 = caps.take(a).unwrap();
        let _s2 = caps.take(same_64).unwrap();
        assert!(caps.take(a).is_none(), "the /64 holds its two");
        let _o = caps.take(other).unwrap();
        drop(s1);
        assert_eq!(caps.held_by(a), 1);
        let _s3 = caps.take(a).unwrap();
        drop((_s2, _s3, _o));
        assert!(caps.held.lock().is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(AddressKey::of(a), AddressKey::of(b));
        assert_ne!(AddressKey::of(a), AddressKey::of(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(AddressKey::of(mapped), AddressKey::of(v4));
        assert_ne!(
            AddressKey::of(v4),
            AddressKey::of("192.0.2.8".parse().unwrap())
        );
    }

    #[test]
    fn ranges_contain_what_they_should() {
        let r = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(r.contains("10.1.200.3".parse().unwrap()));
        assert!(!r.contains("10.2.0.1".parse().unwrap()));
        assert!(r.contains("::ffff:10.1.0.9".parse().unwrap()));
        let one = Cidr::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::1".parse().unwrap()));
        assert!(!v6.contains("10.1.0.1".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("203.0.113.1".parse().unwrap()));
        assert_eq!(one.to_string(), "127.0.0.1/32");
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.0/x", "::/129"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn internal_addresses_are_recognised() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "224.0.0.1",
            "0.1.2.3",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
            // IPv6 forms that carry an internal IPv4 address.
            "64:ff9b::127.0.0.1",
            "64:ff9b::10.1.2.3",
            "64:ff9b::a9fe:a9fe", // 169.254.169.254, the cloud metadata service
            "64:ff9b:1::1",
            "64:ff9b:1:ffff::8.8.8.8",
            "2002:7f00:1::1",   // 6to4 of 127.0.0.1
            "2002:c0a8:101::1", // 6to4 of 192.168.1.1
            "::127.0.0.1",      // IPv4-compatible
            "::10.0.0.1",
            "::ffff:0:10.0.0.1",                    // SIIT
            "2001:0:4136:e378:8000:63bf:80ff:fffe", // Teredo, client 127.0.0.1
            "2001:0:0a00:0001::1",                  // Teredo, server 10.0.0.1
            "fec0::1",
            "100::1",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "203.0.113.9",
            "8.8.8.8",
            "2001:db8::1",
            "100.128.0.1",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
            "::8.8.8.8",
            "2a00:1450:4001:81c::200e",
        ] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
