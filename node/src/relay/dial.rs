//! Reaching an upstream: TCP (a channel's own target refused when it resolves to the
//! node's own network), TLS for `rtmps://`, and the probe `streamgate check` runs.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use super::error::RelayError;
use crate::config::{RelayConfig, RelayUrl};

/// A byte stream to the upstream: TCP, or TLS over TCP.
pub(super) trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream for T {}

/// A connected upstream: plain TCP (written directly by ingest, see [`DirectPath`]), or
/// TLS (written by the relay task from the queue).
pub(super) enum Dialed {
    Tcp(TcpStream),
    Tls(Box<dyn Upstream>),
}

/// Addresses a channel's own target may not reach: the node's own network, also when
/// it is written as an IPv6 address that carries an IPv4 one (mapped, compatible,
/// SIIT-translated, NAT64, 6to4, Teredo): the IPv4 address inside is judged.
fn is_internal(ip: std::net::IpAddr) -> bool {
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

/// Connects to the first address of the host that answers, with the configured send
/// buffer; `restricted` refuses internal addresses (a channel's own target).
async fn dial_tcp(
    url: &RelayUrl,
    config: &RelayConfig,
    restricted: bool,
) -> Result<TcpStream, RelayError> {
    let addrs = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(RelayError::Connect)?;
    let mut last = RelayError::Connect(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        "host has no address",
    ));
    for addr in addrs {
        if restricted && is_internal(addr.ip()) {
            last = RelayError::Forbidden;
            continue;
        }
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(RelayError::Connect)?;
        if config.send_buffer > 0 {
            socket
                .set_send_buffer_size(config.send_buffer)
                .map_err(RelayError::Connect)?;
        }
        match socket.connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = RelayError::Connect(e),
        }
    }
    Err(last)
}

/// TCP, then TLS for `rtmps://`.
pub(super) async fn dial(
    url: &RelayUrl,
    config: &RelayConfig,
    tls: &TlsConnector,
    restricted: bool,
) -> Result<Dialed, RelayError> {
    let tcp = dial_tcp(url, config, restricted).await?;
    let _ = tcp.set_nodelay(true);
    if !url.tls {
        return Ok(Dialed::Tcp(tcp));
    }
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| RelayError::Tls(std::io::Error::other(e)))?;
    let tls = tls.connect(name, tcp).await.map_err(RelayError::Tls)?;
    Ok(Dialed::Tls(Box::new(tls)))
}

/// Whether an upstream answers: connect (and TLS) and the RTMP handshake, no publish,
/// within the connect timeout. Returns how long it took.
pub async fn probe(
    url: &RelayUrl,
    config: &RelayConfig,
    tls: &TlsConnector,
) -> Result<Duration, RelayError> {
    use rtmp::handshake::{ClientHandshake, HandshakeKind};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let attempt = async {
        let mut io: Box<dyn Upstream> = match dial(url, config, tls, false).await? {
            Dialed::Tcp(tcp) => Box::new(tcp),
            Dialed::Tls(tls) => tls,
        };
        let mut hs = ClientHandshake::new(HandshakeKind::Simple);
        let (mut out, mut buf) = (bytes::BytesMut::new(), bytes::BytesMut::new());
        hs.start(&mut out);
        io.write_all(&out).await?;
        out.clear();
        while !hs.read(&mut buf, &mut out)? {
            if io.read_buf(&mut buf).await? == 0 {
                return Err(RelayError::Closed);
            }
        }
        io.write_all(&out).await?;
        let _ = io.shutdown().await;
        Ok(())
    };
    tokio::time::timeout(config.connect_timeout, attempt)
        .await
        .map_err(|_| RelayError::Timeout(config.connect_timeout))??;
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

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
