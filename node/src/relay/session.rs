//! One relay connection: connect (TCP, TLS for rtmps://), then the shared RTMP
//! client ([`rtmp_io::Publisher`]: handshake, connect, releaseStream / FCPublish /
//! createStream / publish), then metadata, sequence headers and media from a keyframe
//! on, with the original timestamps. Reconnects with exponential backoff and jitter
//! when the upstream refuses, closes or stalls (write deadline); unpublishes and closes
//! when the publish ends.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use rtmp::message::{MSG_AUDIO, MSG_VIDEO};
use rtmp::{ClientConfig, ClientEvent, ClientSession, SessionError};
use rtmp_io::{
    write_available, write_queued, PublishError, Publisher, PublisherOptions, WriteError,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

use super::queue::RelayItem;
use super::RelayLink;
use crate::config::{RelayConfig, RelayUrl};
use crate::hub::{LiveStream, StreamMessage};

/// A connection that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Read buffer reserve for upstream replies (small: acks, pings, statuses).
const READ_RESERVE: usize = 4096;

/// A byte stream to the upstream: TCP, or TLS over TCP.
trait Upstream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Upstream for T {}

/// A connected upstream: plain TCP (written directly by ingest, see [`DirectPath`]), or
/// TLS (written by the relay task from the queue).
enum Dialed {
    Tcp(TcpStream),
    Tls(Box<dyn Upstream>),
}

/// The sending side of a plain-TCP relay connection while it publishes, shared by the
/// relay task and the ingest task (the same thread: a stream's relays run on its
/// ingest runtime). Ingest chunks the messages of a socket read into the session's
/// output and writes them in one write, straight to the socket, when nothing is
/// queued or unsent before them; otherwise the messages go to the bounded queue, which
/// the relay task drains. What it saves per message is the queue entry, the wake-up
/// and the poll of the relay task, and per read all writes but one.
pub(super) struct DirectPath {
    session: ClientSession,
    socket: Arc<TcpStream>,
    /// A write failed on the ingest side; the relay task reports it.
    failed: Option<std::io::Error>,
}

impl DirectPath {
    /// Writes what the session has queued, without waiting: returns the bytes the
    /// socket took (the rest stays queued in the session).
    fn write_now(&mut self) -> std::io::Result<u64> {
        let socket = &self.socket;
        // send/sendmsg, not write/writev: a socket write without the file layer (no
        // file position lock); `try_io` keeps tokio's readiness right on WouldBlock.
        write_available(self.session.output(), |slices| {
            socket.try_io(tokio::io::Interest::WRITABLE, || {
                let socket = socket2::SockRef::from(socket.as_ref());
                match slices {
                    [one] => socket.send(one),
                    _ => socket.send_vectored(slices),
                }
            })
        })
    }

    fn unsent(&mut self) -> bool {
        !self.session.output().is_empty()
    }
}

impl RelayLink {
    /// Sends `messages` straight to the upstream, in one write, if the direct path is
    /// open, nothing is queued or unsent before them, and the queue is not skipping to
    /// a keyframe; `false` when they must go through the queue. What the socket does
    /// not take now, the relay task finishes when it is writable again (what follows
    /// waits in the queue meanwhile).
    pub(super) fn send_direct(&self, messages: &[StreamMessage]) -> bool {
        let Some(mut guard) = self.direct.try_lock() else {
            return false;
        };
        let Some(direct) = guard.as_mut() else {
            return false;
        };
        // Chunking them does not touch the queue, so whether it skips cannot change
        // halfway: the read's messages go this way all or none.
        if messages.is_empty()
            || direct.failed.is_some()
            || direct.unsent()
            || !self.queue.is_flowing()
        {
            return false;
        }
        for m in messages {
            send_message(&mut direct.session, m);
        }
        match direct.write_now() {
            Ok(n) => {
                self.count_sent(n);
                if direct.unsent() {
                    self.queue.wake();
                }
            }
            Err(e) => {
                direct.failed = Some(e);
                self.queue.wake();
            }
        }
        true
    }

    fn count_sent(&self, n: u64) {
        self.queue.stats.bytes_sent.fetch_add(n, Relaxed);
        self.bytes_sent.add(n);
    }
}

/// Interprets what the upstream sent (acknowledgements, pings, statuses); a refusal
/// ends the connection.
fn handle_replies(
    session: &mut ClientSession,
    buf: &mut bytes::BytesMut,
    events: &mut Vec<ClientEvent>,
) -> Result<(), RelayError> {
    session.handle_bytes(buf, events)?;
    for e in events.drain(..) {
        if let ClientEvent::Rejected { code, description } = e {
            return Err(RelayError::Refused { code, description });
        }
    }
    Ok(())
}

/// Puts one message of the stream into the session's output.
fn send_message(session: &mut ClientSession, message: &StreamMessage) {
    match message {
        StreamMessage::Media {
            type_id,
            timestamp,
            payload,
        } => session.send_media_ref(*type_id, *timestamp, payload),
        StreamMessage::Metadata { timestamp, payload } => {
            session.send_metadata(*timestamp, payload)
        }
    }
}

/// Closes the direct path when the relay task leaves its connection, however it
/// leaves it.
struct DirectGuard<'a>(&'a RelayLink);

impl Drop for DirectGuard<'_> {
    fn drop(&mut self) {
        *self.0.direct.lock() = None;
    }
}

/// Why a relay connection ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("a channel's own target may not reach a private, loopback or link-local address (relay.allow_private_targets)")]
    Forbidden,
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream refused: {code} {description}")]
    Refused { code: String, description: String },
    #[error("upstream closed the connection")]
    Closed,
    #[error("upstream stalled: {0}")]
    Write(#[from] WriteError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("protocol: {0}")]
    Protocol(#[from] SessionError),
    #[error("handshake: {0}")]
    Handshake(#[from] rtmp::handshake::HandshakeError),
}

impl RelayError {
    /// What the public API may show: a short fixed reason, plus the upstream's status
    /// code reduced to letters, digits and dots (an upstream's own text is never
    /// passed on).
    pub fn public_reason(&self) -> String {
        match self {
            RelayError::Connect(_) => "cannot connect".into(),
            RelayError::Forbidden => "destination not allowed".into(),
            RelayError::Tls(_) => "TLS failed".into(),
            RelayError::Timeout(_) => "no answer in time".into(),
            RelayError::Refused { code, .. } => {
                let code: String = code
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
                    .take(64)
                    .collect();
                format!("upstream refused: {code}")
            }
            RelayError::Closed => "upstream closed the connection".into(),
            RelayError::Write(_) => "upstream stalled".into(),
            RelayError::Io(_) => "connection lost".into(),
            RelayError::Protocol(_) | RelayError::Handshake(_) => "protocol error".into(),
        }
    }
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

impl From<PublishError> for RelayError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Io(e) => RelayError::Io(e),
            PublishError::Write(e) => RelayError::Write(e),
            PublishError::Handshake(e) => RelayError::Handshake(e),
            PublishError::Protocol(e) => RelayError::Protocol(e),
            PublishError::Refused { code, description } => {
                RelayError::Refused { code, description }
            }
            PublishError::Closed => RelayError::Closed,
        }
    }
}

/// Everything one relay task needs.
pub struct RelayTask {
    /// The stream relayed (for its snapshot on (re)connection and resync).
    pub stream: Arc<LiveStream>,
    /// Its queue and state.
    pub link: Arc<RelayLink>,
    pub url: RelayUrl,
    /// Refuse internal destinations (a channel's own target).
    pub restricted: bool,
    pub config: Arc<RelayConfig>,
    pub tls: TlsConnector,
}

/// Backoff before attempt `n` (0-based): min * 2^n capped at max, with jitter in
/// [d/2, d].
fn backoff(min: Duration, max: Duration, n: u32) -> Duration {
    let d = min.saturating_mul(1u32 << n.min(16)).min(max);
    let half = d / 2;
    half + rand::thread_rng().gen_range(Duration::ZERO..=half)
}

impl RelayTask {
    pub async fn run(self) {
        let channel_id = self.stream.channel_id;
        let queue = &self.link.queue;
        let mut failures = 0u32;
        loop {
            if queue.is_closed() {
                return;
            }
            let started = Instant::now();
            let result = self.publish_once().await;
            queue.stats.connected.store(false, Relaxed);
            match result {
                Ok(()) => {
                    info!(%channel_id, target = %self.link.display_url, "relay ended with the publish");
                    return;
                }
                Err(e) => {
                    warn!(%channel_id, target = %self.link.display_url, error = %e, "relay connection failed; will reconnect");
                    self.link.set_error(Some(e.public_reason()));
                }
            }
            if started.elapsed() >= STABLE_AFTER {
                failures = 0;
            }
            // What was queued for the lost connection is stale.
            queue.restart();
            let delay = backoff(
                self.config.reconnect_min,
                self.config.reconnect_max,
                failures,
            );
            failures = failures.saturating_add(1);
            let until = tokio::time::Instant::now() + delay;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => break,
                    _ = queue.wait() => {
                        if queue.is_closed() {
                            return;
                        }
                    }
                }
            }
            queue.restart();
            queue.stats.reconnects.fetch_add(1, Relaxed);
            self.link.reconnects.increment(1);
        }
    }

    /// The publish exchange on a connected upstream.
    async fn open<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        io: S,
    ) -> Result<Publisher<S>, RelayError> {
        let client = ClientConfig {
            out_chunk_size: self.config.chunk_size,
            ..ClientConfig::new(&self.url.app, &self.url.tc_url(), &self.url.stream)
        };
        let options = PublisherOptions {
            write_timeout: self.config.write_timeout,
            ..PublisherOptions::default()
        };
        Ok(Publisher::publish(io, client, options).await?)
    }

    /// Connects, publishes, and relays until the publish ends (`Ok`) or the
    /// connection fails.
    async fn publish_once(&self) -> Result<(), RelayError> {
        let timeout = self.config.connect_timeout;
        let connect = async {
            match dial(&self.url, &self.config, &self.tls, self.restricted).await? {
                Dialed::Tcp(tcp) => Ok::<_, RelayError>(Ok(self.open(tcp).await?)),
                Dialed::Tls(tls) => Ok(Err(self.open(tls).await?)),
            }
        };
        let publisher = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| RelayError::Timeout(timeout))??;
        let queue = &self.link.queue;
        queue.stats.connected.store(true, Relaxed);
        self.link.set_error(None);
        info!(channel_id = %self.stream.channel_id, target = %self.link.display_url, "relay publishing");
        match publisher {
            Ok(tcp) => self.relay_direct(tcp).await,
            Err(tls) => self.relay_queued(tls).await,
        }
    }

    /// Plain TCP: ingest writes messages itself while the socket keeps up (see
    /// [`DirectPath`]); this task sends the start, finishes what the socket did not
    /// take, drains the queue, and reads the upstream's replies.
    async fn relay_direct(&self, publisher: Publisher<TcpStream>) -> Result<(), RelayError> {
        let (io, mut session, mut buf) = publisher.into_parts();
        let socket = Arc::new(io);
        let queue = &self.link.queue;
        let write_timeout = self.config.write_timeout;
        self.send_start(&mut session);
        *self.link.direct.lock() = Some(DirectPath {
            session,
            socket: socket.clone(),
            failed: None,
        });
        let _closes = DirectGuard(&self.link);
        let mut batch = Vec::new();
        let mut events = Vec::new();
        let mut finished = false;
        // Since when the socket has taken nothing of what is unsent: the deadline runs
        // from there, whatever else the upstream does meanwhile (an upstream that
        // sends pings but reads nothing has stalled all the same).
        let mut stalled_since: Option<tokio::time::Instant> = None;
        loop {
            // Under the lock (never across an await): what the queue holds goes out
            // after what the session has not sent yet, in order.
            let (unsent, open, wrote) = {
                let mut guard = self.link.direct.lock();
                let direct = guard.as_mut().expect("installed above, removed on return");
                if let Some(e) = direct.failed.take() {
                    return Err(RelayError::Io(e));
                }
                let open = queue.drain(&mut batch);
                for item in batch.drain(..) {
                    self.send_item(&mut direct.session, item);
                }
                if !open && !finished {
                    direct.session.finish();
                    finished = true;
                }
                let n = direct.write_now()?;
                self.link.count_sent(n);
                (direct.unsent(), open, n > 0)
            };
            stalled_since = match stalled_since {
                _ if !unsent => None,
                Some(since) if !wrote => Some(since),
                // Progress (or the first bytes left waiting): the clock starts now.
                _ => Some(tokio::time::Instant::now()),
            };
            if !open && !unsent {
                *self.link.direct.lock() = None;
                if let Ok(mut tcp) = Arc::try_unwrap(socket) {
                    let _ = tcp.shutdown().await;
                }
                return Ok(());
            }
            let stall_deadline =
                stalled_since.map_or_else(tokio::time::Instant::now, |s| s + write_timeout);
            tokio::select! {
                // Room again for what is unsent.
                r = socket.writable(), if unsent => r?,
                // A peer that took nothing for the write deadline has stalled.
                _ = tokio::time::sleep_until(stall_deadline), if unsent => {
                    return Err(RelayError::Write(WriteError::Timeout(write_timeout)));
                }
                _ = queue.wait(), if !unsent && open => {}
                r = socket.readable() => {
                    r?;
                    buf.reserve(READ_RESERVE);
                    match socket.try_read_buf(&mut buf) {
                        Ok(0) => return Err(RelayError::Closed),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e.into()),
                    }
                    let mut guard = self.link.direct.lock();
                    let direct = guard.as_mut().expect("installed above, removed on return");
                    handle_replies(&mut direct.session, &mut buf, &mut events)?;
                }
            }
        }
    }

    /// TLS: every message goes through the queue, and this task writes it.
    async fn relay_queued(
        &self,
        publisher: Publisher<Box<dyn Upstream>>,
    ) -> Result<(), RelayError> {
        let (io, mut session, mut buf) = publisher.into_parts();
        let (mut rd, mut wr) = tokio::io::split(io);
        let queue = &self.link.queue;
        self.send_start(&mut session);
        let mut batch = Vec::new();
        let mut events = Vec::new();
        loop {
            let sent = write_queued(&mut wr, session.output(), self.config.write_timeout).await?;
            self.link.count_sent(sent);
            buf.reserve(READ_RESERVE);
            tokio::select! {
                _ = queue.wait() => {
                    let open = queue.drain(&mut batch);
                    for item in batch.drain(..) {
                        self.send_item(&mut session, item);
                    }
                    if !open {
                        session.finish();
                        let sent = write_queued(&mut wr, session.output(), self.config.write_timeout).await?;
                        self.link.count_sent(sent);
                        let _ = wr.shutdown().await;
                        return Ok(());
                    }
                }
                r = rd.read_buf(&mut buf) => {
                    if r? == 0 {
                        return Err(RelayError::Closed);
                    }
                    handle_replies(&mut session, &mut buf, &mut events)?;
                }
            }
        }
    }

    /// After (re)connecting: metadata and sequence headers, and the cached keyframe when
    /// nothing is queued yet, so the upstream has a picture at once. The snapshot and
    /// the queue are looked at in one cut, so the queue's next keyframe is strictly
    /// newer than the cached one.
    fn send_start(&self, session: &mut ClientSession) {
        let (snapshot, with_keyframe) = self
            .stream
            .snapshot_with(|| self.link.queue.is_waiting_empty());
        send_headers(session, &snapshot);
        if with_keyframe {
            if let Some(k) = snapshot.keyframe {
                session.send_media(MSG_VIDEO, k.frame.timestamp, k.frame.body);
            }
        }
    }

    fn send_item(&self, session: &mut ClientSession, item: RelayItem) {
        match item {
            RelayItem::Message(m) => send_message(session, &m),
            RelayItem::Resync => send_headers(session, &self.stream.snapshot()),
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
async fn dial(
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

/// Metadata, then the video and audio sequence headers, stamped no later than the
/// media that follows.
fn send_headers(session: &mut ClientSession, snapshot: &media::Snapshot) {
    let ts = snapshot.keyframe.as_ref().map_or(0, |k| k.frame.timestamp);
    if let Some(meta) = &snapshot.metadata {
        session.send_metadata(ts, meta);
    }
    if let Some(v) = &snapshot.video_sequence_header {
        session.send_media(MSG_VIDEO, ts, v.body.clone());
    }
    if let Some(a) = &snapshot.audio_sequence_header {
        session.send_media(MSG_AUDIO, ts, a.body.clone());
    }
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

    #[test]
    fn an_upstreams_text_never_reaches_the_api() {
        let e = RelayError::Refused {
            code: "NetStream.Publish.BadName\n<script>".into(),
            description: "whatever the upstream says, with a key sk_live_123".into(),
        };
        assert_eq!(
            e.public_reason(),
            "upstream refused: NetStream.Publish.BadNamescript"
        );
        assert_eq!(
            RelayError::Closed.public_reason(),
            "upstream closed the connection"
        );
    }

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_caps() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(30));
        for n in 0..20 {
            let d = backoff(min, max, n);
            let ceiling = min.saturating_mul(1 << n.min(16)).min(max);
            assert!(d >= ceiling / 2 && d <= ceiling, "attempt {n}: {d:?}");
        }
        assert!(backoff(min, max, 10) >= Duration::from_secs(15));
    }
}
