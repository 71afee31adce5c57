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
use rtmp::{ClientConfig, ClientSession};
use rtmp_io::{write_queued, Publisher, PublisherOptions, WriteError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tracing::{info, warn};

use super::dial::{dial, Dialed, Upstream};
use super::direct::{handle_replies, send_message, DirectGuard, DirectPath};
use super::error::RelayError;
use super::queue::RelayItem;
use super::RelayLink;
use crate::config::{RelayConfig, RelayUrl};
use crate::hub::LiveStream;

/// A connection that stayed up this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(10);
/// Read buffer reserve for upstream replies (small: acks, pings, statuses).
const READ_RESERVE: usize = 4096;

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
