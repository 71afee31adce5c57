//! The PROXY protocol (HAProxy's spec, versions 1 and 2): a load balancer in front of
//! a server says who the real client is at the start of each connection.
//!
//! Sans-IO: [`parse`] takes the bytes received so far and says "need more", "here is
//! the header and its length", or why it is not one. A version 2 header may be as long
//! as its 16-bit length field says (balancers that add TLVs, such as AWS NLB or
//! HAProxy's `send-proxy-v2-ssl`, send more than a few hundred bytes): it is answered
//! as soon as its addresses have arrived, and the reader skips the TLVs as they arrive
//! (the length [`parse`] answers says how many bytes to skip) instead of holding them, so a header
//! costs a few hundred bytes whatever its length.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12-byte signature that starts a version 2 header.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// A version 1 header is at most 107 bytes, CRLF included.
pub const V1_MAX: usize = 107;
/// The address block of a version 2 header is at most this long (two IPv6 addresses
/// and two ports); TLVs follow it, up to the header's 16-bit length.
pub const V2_ADDRESSES_MAX: usize = 36;

/// Why a trusted proxy's connection did not start with a usable PROXY header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY protocol header from a trusted proxy")]
    Missing,
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    #[error("PROXY protocol header longer than allowed")]
    TooLong,
    #[error("the proxy closed the connection before its header ended")]
    Closed,
    #[error("i/o reading the PROXY header: {0}")]
    Io(String),
}

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxiedPeer {
    /// The client's address and port.
    Client(SocketAddr),
    /// The proxy's own connection (a health check) or an unknown family: use the
    /// proxy's address.
    Local,
}

/// Reads one header from the start of `buf`: `Ok(None)` means more bytes are needed;
/// otherwise the header and its whole length in bytes. A version 2 header is answered
/// once its addresses are in `buf`: its length may be more than `buf` holds yet (the
/// TLVs that follow, which the caller skips).
pub fn parse(buf: &[u8]) -> Result<Option<(ProxiedPeer, usize)>, ProxyError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] == b"PROXY "[..n] {
        return if n < 6 { Ok(None) } else { parse_v1(buf) };
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxiedPeer, usize)>, ProxyError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::TooLong)
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ProxyError::TooLong);
    }
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::Malformed("not text"))?;
    let parts: Vec<&str> = line.split(' ').collect();
    let peer = match parts.as_slice() {
        ["PROXY", "UNKNOWN", ..] => ProxiedPeer::Local,
        ["PROXY", family @ ("TCP4" | "TCP6"), src, _dst, sport, _dport] => {
            let ip: IpAddr = src
                .parse()
                .map_err(|_| ProxyError::Malformed("source address"))?;
            if ip.is_ipv4() != (*family == "TCP4") {
                return Err(ProxyError::Malformed("address does not match the family"));
            }
            let port: u16 = sport
                .parse()
                .map_err(|_| ProxyError::Malformed("source port"))?;
            ProxiedPeer::Client(SocketAddr::new(ip, port))
        }
        _ => return Err(ProxyError::Malformed("version 1 line")),
    };
    Ok(Some((peer, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxiedPeer, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    let len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("version"));
    }
    // Only the addresses are needed (of a proxied TCP connection over IPv4 or IPv6);
    // the rest, TLVs, is skipped by the caller.
    let addresses = match (ver_cmd & 0x0f, family >> 4) {
        (1, 1) => 12,
        (1, 2) => V2_ADDRESSES_MAX,
        _ => 0,
    };
    let wanted = len.min(addresses);
    if buf.len() < 16 + wanted {
        return Ok(None);
    }
    let body = &buf[16..16 + wanted];
    let total = 16 + len;
    let peer = match (ver_cmd & 0x0f, family >> 4) {
        // LOCAL: the proxy's own connection.
        (0, _) => ProxiedPeer::Local,
        (1, 1) => {
            let a = body
                .get(..12)
                .ok_or(ProxyError::Malformed("IPv4 addresses"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            ProxiedPeer::Client(SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]])))
        }
        (1, 2) => {
            let a = body
                .get(..36)
                .ok_or(ProxyError::Malformed("IPv6 addresses"))?;
            let octets: [u8; 16] = a[..16].try_into().expect("16 bytes");
            let ip = Ipv6Addr::from(octets);
            ProxiedPeer::Client(SocketAddr::new(
                ip.into(),
                u16::from_be_bytes([a[32], a[33]]),
            ))
        }
        // UNSPEC or a UNIX socket: nothing usable, the proxy's address stands.
        (1, _) => ProxiedPeer::Local,
        _ => return Err(ProxyError::Malformed("command")),
    };
    Ok(Some((peer, total)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn v2(cmd: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut v = V2_SIGNATURE.to_vec();
        v.push(0x20 | cmd);
        v.push(family);
        v.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        v.extend_from_slice(addresses);
        v
    }

    #[test]
    fn version_1_tcp4_tcp6_and_unknown() {
        let h = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 1935\r\n\x03rest";
        assert_eq!(
            parse(h).unwrap(),
            Some((
                ProxiedPeer::Client("192.0.2.10:56324".parse().unwrap()),
                h.len() - 5
            ))
        );
        let h = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 1935\r\n";
        assert_eq!(
            parse(h).unwrap(),
            Some((
                ProxiedPeer::Client("[2001:db8::7]:4000".parse().unwrap()),
                h.len()
            ))
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n").unwrap(),
            Some((ProxiedPeer::Local, 15))
        );
        // Byte by byte: "need more" until the line ends.
        let h = b"PROXY TCP4 192.0.2.10 198.51.100.1 56324 1935\r\n";
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]).unwrap(), None, "{n}");
        }
    }

    #[test]
    fn version_2_ipv4_ipv6_local_and_tlvs() {
        let mut a = vec![192, 0, 2, 10, 198, 51, 100, 1];
        a.extend_from_slice(&56324u16.to_be_bytes());
        a.extend_from_slice(&1935u16.to_be_bytes());
        a.extend_from_slice(&[0x04, 0, 1, 0]); // a TLV, skipped
        let h = v2(1, 0x11, &a);
        assert_eq!(
            parse(&h).unwrap(),
            Some((
                ProxiedPeer::Client("192.0.2.10:56324".parse().unwrap()),
                h.len()
            ))
        );
        let mut a = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
        a.extend_from_slice(&[0; 16]);
        a.extend_from_slice(&4000u16.to_be_bytes());
        a.extend_from_slice(&1935u16.to_be_bytes());
        let h = v2(1, 0x21, &a);
        assert_eq!(
            parse(&h).unwrap(),
            Some((
                ProxiedPeer::Client("[2001:db8::7]:4000".parse().unwrap()),
                h.len()
            ))
        );
        assert_eq!(
            parse(&v2(0, 0, &[])).unwrap(),
            Some((ProxiedPeer::Local, 16))
        );
        for n in 0..h.len() {
            assert_eq!(parse(&h[..n]).unwrap(), None, "{n}");
        }
    }

    /// A header with the most TLVs its length field allows (AWS NLB and HAProxy send
    /// hundreds of bytes of them) is answered once its addresses are in, with its
    /// whole length.
    #[test]
    fn a_version_2_header_is_answered_once_its_addresses_are_in() {
        let mut a = vec![192, 0, 2, 10, 198, 51, 100, 1];
        a.extend_from_slice(&56324u16.to_be_bytes());
        a.extend_from_slice(&1935u16.to_be_bytes());
        a.push(0xEE);
        let tlv_len = u16::MAX as usize - a.len() - 2;
        a.extend_from_slice(&(tlv_len as u16).to_be_bytes());
        a.extend(std::iter::repeat_n(0x5a, tlv_len));
        let h = v2(1, 0x11, &a);
        let client = ProxiedPeer::Client("192.0.2.10:56324".parse().unwrap());
        assert_eq!(parse(&h[..28]).unwrap(), Some((client, 16 + 65535)));
        assert_eq!(parse(&h[..27]).unwrap(), None);
    }

    #[test]
    fn what_is_not_a_header_says_so() {
        // An RTMP C0 byte: a client that skipped the proxy.
        assert_eq!(parse(&[3, 0, 0, 0]), Err(ProxyError::Missing));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ProxyError::Missing));
        assert!(matches!(
            parse(b"PROXY TCP4 not-an-ip 198.51.100.1 1 2\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"PROXY TCP6 192.0.2.1 198.51.100.1 1 2\r\n"),
            Err(ProxyError::Malformed(_))
        ));
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        assert!(matches!(
            parse(&v2(1, 0x11, &[1, 2, 3])),
            Err(ProxyError::Malformed(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..700)) {
            let _ = parse(&data);
            let mut v = V2_SIGNATURE.to_vec();
            v.extend_from_slice(&data);
            let _ = parse(&v);
            let mut v = b"PROXY ".to_vec();
            v.extend_from_slice(&data);
            let _ = parse(&v);
        }
    }
}
