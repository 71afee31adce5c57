//! Generated publishers: each connects with our RTMP client, publishes with its own key,
//! and sends the shared FLV tags paced by their timestamps. Sending is batched per tick
//! (all tags due are written in one vectored write) so the generator stays cheap; the
//! instant of each video write is recorded for the relay-delay measurement.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtmp::handshake::{ClientHandshake, HandshakeKind};
use rtmp::message::MSG_VIDEO;
use rtmp::{ClientConfig, ClientEvent, ClientSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use streamgate::net::write_queued;

use crate::flv_source::FlvSource;
use crate::stats::Samples;

/// Send instants of recent video messages, by timestamp, for one stream.
#[derive(Debug, Default)]
pub struct SendLog {
    sent: Mutex<VecDeque<(u32, Instant)>>,
}

/// Video messages remembered per stream (a few seconds at 30 fps).
const SEND_LOG_LEN: usize = 512;

impl SendLog {
    fn record(&self, ts: u32, at: Instant) {
        let mut s = self.sent.lock().expect("send log");
        if s.len() == SEND_LOG_LEN {
            s.pop_front();
        }
        s.push_back((ts, at));
    }

    /// When the video message with this timestamp was written.
    pub fn find(&self, ts: u32) -> Option<Instant> {
        self.sent
            .lock()
            .expect("send log")
            .iter()
            .rev()
            .find(|(t, _)| *t == ts)
            .map(|(_, i)| *i)
    }
}

/// A generator write may block this long (the server's own deadlines decide; this
/// only keeps a wedged benchmark from hanging forever).
const WRITE_DEADLINE: Duration = Duration::from_secs(3600);

/// Counters of the whole generator.
#[derive(Debug, Default)]
pub struct GeneratorStats {
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Publish command to `onStatus` NetStream.Publish.Start.
    pub auth_latency: Samples,
}

/// One publisher's parameters.
pub struct PublisherSpec {
    pub addr: std::net::SocketAddr,
    pub app: String,
    pub key: String,
    pub tick: Duration,
    pub stop_at: Instant,
}

async fn connect_and_publish(
    spec: &PublisherSpec,
    stats: &GeneratorStats,
) -> anyhow::Result<(TcpStream, ClientSession)> {
    let mut sock = TcpStream::connect(spec.addr).await?;
    sock.set_nodelay(true)?;
    let mut hs = ClientHandshake::new(HandshakeKind::Simple);
    let (mut out, mut buf) = (BytesMut::new(), BytesMut::new());
    hs.start(&mut out);
    sock.write_all(&out).await?;
    out.clear();
    while !hs.read(&mut buf, &mut out)? {
        anyhow::ensure!(
            sock.read_buf(&mut buf).await? > 0,
            "closed during the handshake"
        );
    }
    sock.write_all(&out).await?;
    let tc_url = format!("rtmp://{}/{}", spec.addr, spec.app);
    let mut session = ClientSession::new(ClientConfig::new(&spec.app, &tc_url, &spec.key));
    session.start();
    let mut events = Vec::new();
    let mut publish_sent: Option<Instant> = None;
    loop {
        session.handle_bytes(&mut buf, &mut events)?;
        let out = session.output().take_contiguous();
        if !out.is_empty() {
            if publish_sent.is_none() && session.is_publish_pending() {
                // This batch carries the publish command: the auth clock starts.
                publish_sent = Some(Instant::now());
            }
            sock.write_all(&out).await?;
        }
        match events.drain(..).next() {
            Some(ClientEvent::Publishing) => {
                if let Some(t) = publish_sent {
                    stats.auth_latency.record(t.elapsed());
                }
                return Ok((sock, session));
            }
            Some(ClientEvent::Rejected { code, description }) => {
                anyhow::bail!("refused: {code} {description}")
            }
            None => {}
        }
        anyhow::ensure!(
            sock.read_buf(&mut buf).await? > 0,
            "closed before publishing"
        );
    }
}

/// Runs one publisher until `stop_at`. `log` records video send instants.
pub async fn run(
    spec: PublisherSpec,
    source: Arc<FlvSource>,
    stats: Arc<GeneratorStats>,
    log: Arc<SendLog>,
) {
    let (mut sock, mut session) = match connect_and_publish(&spec, &stats).await {
        Ok(x) => x,
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    stats.connected.fetch_add(1, Ordering::Relaxed);
    if let Some(meta) = &source.metadata {
        session.send_metadata(0, meta);
    }
    let start = Instant::now();
    let mut next = 0u64;
    let mut tick = tokio::time::interval(spec.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain = [0u8; 4096];
    loop {
        tick.tick().await;
        let now = Instant::now();
        if now >= spec.stop_at {
            break;
        }
        let elapsed = now.duration_since(start).as_millis() as u32;
        let mut videos = Vec::new();
        loop {
            let (ts, tag) = source.tag(next);
            if ts > elapsed {
                break;
            }
            session.send_media(tag.type_id, ts, tag.body.clone());
            if tag.type_id == MSG_VIDEO {
                videos.push(ts);
            }
            next += 1;
        }
        let out = session.output();
        let n = out.len() as u64;
        if n > 0 {
            if write_queued(&mut sock, out, WRITE_DEADLINE).await.is_err() {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let sent = Instant::now();
            for ts in videos {
                log.record(ts, sent);
            }
            stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
        }
        // Acknowledgements and pings from the server: read what is there, never wait.
        while let Ok(Ok(k)) = tokio::time::timeout(Duration::ZERO, sock.read(&mut drain)).await {
            if k == 0 {
                return;
            }
        }
    }
    session.finish();
    let _ = write_queued(&mut sock, session.output(), WRITE_DEADLINE).await;
}
