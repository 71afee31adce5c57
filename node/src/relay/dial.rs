//! Reaching an upstream: TCP (a channel's own target refused when it resolves to the
//! node's own network), TLS for `rtmps://`, and the probe `streamgate check` runs.

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use super::error::RelayError;
use crate::config::{RelayConfig, RelayUrl};
use crate::peer::is_internal;

/// A byte stream to the upstream: TCP, or TLS over TCP.
pub(super) trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream for T {}

/// A connected upstream: plain TCP (written directly by ingest, see [`DirectPath`]), or
/// TLS (written by the relay task from the queue).
pub(super) enum Dialed {
    Tcp(TcpStream),
    Tls(Box<dyn Upstream>),
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
