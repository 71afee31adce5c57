//! One relay connection: connect (TCP, TLS for rtmps://), handshake, connect /
//! releaseStream / FCPublish / createStream / publish with our client session, then
//! metadata, sequence headers and media from a keyframe on, with the original
//! timestamps. Reconnects with exponential backoff and jitter when the upstream refuses,
//! closes or stalls (write deadline); unpublishes and closes when the publish ends.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use rtmp::handshake::{ClientHandshake, HandshakeKind};
use rtmp::message::{MSG_AUDIO, MSG_VIDEO};
use rtmp::{ClientConfig, ClientEvent, ClientSession, SessionError};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

use super::queue::{RelayItem, RelayQueue};
use super::target::RelayUrl;
use crate::config::RelayConfig;
use crate::hub::LiveStream;
use crate::net::{write_queued, Io, WriteError};

/// A connection that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Read buffer reserve for upstream replies (small: acks, pings, statuses).
const READ_RESERVE: usize = 4096;

/// Why a relay connection ended.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
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

/// Everything one relay task needs.
pub struct RelayTask {
    pub stream: Arc<LiveStream>,
    pub queue: Arc<RelayQueue>,
    pub url: RelayUrl,
    pub display_url: String,
    pub config: Arc<RelayConfig>,
    pub tls: TlsConnector,
    pub last_error: Arc<Mutex<Option<String>>>,
}

type Reader = ReadHalf<Box<dyn Io>>;
type Writer = WriteHalf<Box<dyn Io>>;

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
        let mut failures = 0u32;
        loop {
            if self.queue.is_closed() {
                return;
            }
            let started = Instant::now();
            let result = self.publish_once().await;
            self.queue
                .stats
                .connected
                .store(false, std::sync::atomic::Ordering::Relaxed);
            match result {
                Ok(()) => {
                    info!(%channel_id, target = %self.display_url, "relay ended with the publish");
                    return;
                }
                Err(e) => {
                    warn!(%channel_id, target = %self.display_url, error = %e, "relay connection failed; will reconnect");
                    *self.last_error.lock().expect("relay error lock") = Some(e.to_string());
                }
            }
            if started.elapsed() >= STABLE_AFTER {
                failures = 0;
            }
            // What was queued for the lost connection is stale.
            self.queue.restart();
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
                    _ = self.queue.wait() => {
                        if self.queue.is_closed() {
                            return;
                        }
                    }
                }
            }
            self.queue.restart();
            self.queue
                .stats
                .reconnects
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Connects to the first address of the host that answers, with the configured
    /// send buffer.
    async fn connect_tcp(&self) -> Result<TcpStream, RelayError> {
        let addrs = tokio::net::lookup_host((self.url.host.as_str(), self.url.port))
            .await
            .map_err(RelayError::Connect)?;
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "host has no address");
        for addr in addrs {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()
            } else {
                TcpSocket::new_v6()
            }
            .map_err(RelayError::Connect)?;
            if self.config.send_buffer > 0 {
                socket
                    .set_send_buffer_size(self.config.send_buffer)
                    .map_err(RelayError::Connect)?;
            }
            match socket.connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(RelayError::Connect(last))
    }

    async fn connect(&self) -> Result<Box<dyn Io>, RelayError> {
        let tcp = self.connect_tcp().await?;
        let _ = tcp.set_nodelay(true);
        if !self.url.tls {
            return Ok(Box::new(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.url.host.clone())
            .map_err(|e| RelayError::Tls(std::io::Error::other(e)))?;
        let tls = self.tls.connect(name, tcp).await.map_err(RelayError::Tls)?;
        Ok(Box::new(tls))
    }

    /// Connects, publishes, and relays until the publish ends (`Ok`) or the
    /// connection fails.
    async fn publish_once(&self) -> Result<(), RelayError> {
        let timeout = self.config.connect_timeout;
        let (mut rd, mut wr, mut session, mut buf) = tokio::time::timeout(timeout, self.open())
            .await
            .map_err(|_| RelayError::Timeout(timeout))??;
        self.queue
            .stats
            .connected
            .store(true, std::sync::atomic::Ordering::Relaxed);
        *self.last_error.lock().expect("relay error lock") = None;
        info!(channel_id = %self.stream.channel_id, target = %self.display_url, "relay publishing");

        self.send_start(&mut session);
        let mut batch = Vec::new();
        let mut events = Vec::new();
        loop {
            let sent = write_queued(&mut wr, session.output(), self.config.write_timeout).await?;
            self.queue
                .stats
                .bytes_sent
                .fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
            buf.reserve(READ_RESERVE);
            tokio::select! {
                _ = self.queue.wait() => {
                    let open = self.queue.drain(&mut batch);
                    for item in batch.drain(..) {
                        self.send_item(&mut session, item);
                    }
                    if !open {
                        session.finish();
                        let sent = write_queued(&mut wr, session.output(), self.config.write_timeout).await?;
                        self.queue.stats.bytes_sent.fetch_add(sent, std::sync::atomic::Ordering::Relaxed);
                        let _ = wr.shutdown().await;
                        return Ok(());
                    }
                }
                r = rd.read_buf(&mut buf) => {
                    if r? == 0 {
                        return Err(RelayError::Closed);
                    }
                    session.handle_bytes(&mut buf, &mut events)?;
                    for e in events.drain(..) {
                        if let ClientEvent::Rejected { code, description } = e {
                            return Err(RelayError::Refused { code, description });
                        }
                    }
                }
            }
        }
    }

    /// TCP/TLS connect, handshake, and the publish exchange.
    async fn open(&self) -> Result<(Reader, Writer, ClientSession, BytesMut), RelayError> {
        let io = self.connect().await?;
        let (mut rd, mut wr) = tokio::io::split(io);
        let mut buf = BytesMut::new();
        let mut out = BytesMut::new();
        let mut hs = ClientHandshake::new(HandshakeKind::Simple);
        hs.start(&mut out);
        loop {
            if !out.is_empty() {
                wr.write_all(&out).await?;
                out.clear();
            }
            if hs.read(&mut buf, &mut out)? {
                wr.write_all(&out).await?;
                break;
            }
            buf.reserve(READ_RESERVE);
            if rd.read_buf(&mut buf).await? == 0 {
                return Err(RelayError::Closed);
            }
        }
        let mut session = ClientSession::new(ClientConfig {
            out_chunk_size: self.config.chunk_size,
            ..ClientConfig::new(&self.url.app, &self.url.tc_url(), &self.url.stream)
        });
        session.start();
        let mut events = Vec::new();
        loop {
            // Answer what arrived before waiting for more: the server waits for us.
            session.handle_bytes(&mut buf, &mut events)?;
            match events.drain(..).next() {
                Some(ClientEvent::Publishing) => {
                    write_queued(&mut wr, session.output(), self.config.write_timeout).await?;
                    return Ok((rd, wr, session, buf));
                }
                Some(ClientEvent::Rejected { code, description }) => {
                    return Err(RelayError::Refused { code, description })
                }
                None => {}
            }
            write_queued(&mut wr, session.output(), self.config.write_timeout).await?;
            buf.reserve(READ_RESERVE);
            if rd.read_buf(&mut buf).await? == 0 {
                return Err(RelayError::Closed);
            }
        }
    }

    /// After (re)connecting: metadata and sequence headers, and the cached keyframe when
    /// nothing is queued yet, so the upstream has a picture at once. Done under the
    /// media lock so the queue's next keyframe is strictly newer than the cached one.
    fn send_start(&self, session: &mut ClientSession) {
        let media = self.stream.media.lock().expect("media lock");
        let snapshot = media.cache.snapshot();
        let with_keyframe = self.queue.is_waiting_empty();
        drop(media);
        send_headers(session, &snapshot);
        if with_keyframe {
            if let Some(k) = snapshot.keyframe {
                session.send_media(MSG_VIDEO, k.frame.timestamp, k.frame.body);
            }
        }
    }

    fn send_item(&self, session: &mut ClientSession, item: RelayItem) {
        match item {
            RelayItem::Media {
                type_id,
                timestamp,
                payload,
            } => session.send_media(type_id, timestamp, payload),
            RelayItem::Metadata { timestamp, payload } => {
                session.send_metadata(timestamp, &payload)
            }
            RelayItem::Resync => {
                let snapshot = self
                    .stream
                    .media
                    .lock()
                    .expect("media lock")
                    .cache
                    .snapshot();
                send_headers(session, &snapshot);
            }
        }
    }
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
