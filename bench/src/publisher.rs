//! Generated publishers: each connects with the shared RTMP client
//! ([`rtmp_io::Publisher`]), publishes with its own key, and sends the shared FLV tags
//! paced by their timestamps. Sending is batched per tick
//! (all tags due are written in one vectored write) so the generator stays cheap; the
//! instant of each video write is recorded for the relay-delay measurement.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rtmp::message::MSG_VIDEO;
use rtmp::ClientConfig;
use rtmp_io::{Publisher, PublisherOptions};
use tokio::net::TcpStream;

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
    pub fn record(&self, ts: u32, at: Instant) {
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
) -> anyhow::Result<Publisher<TcpStream>> {
    let sock = TcpStream::connect(spec.addr).await?;
    sock.set_nodelay(true)?;
    let tc_url = format!("rtmp://{}/{}", spec.addr, spec.app);
    let options = PublisherOptions {
        write_timeout: WRITE_DEADLINE,
        ..PublisherOptions::default()
    };
    let publisher = Publisher::publish(
        sock,
        ClientConfig::new(&spec.app, &tc_url, &spec.key),
        options,
    )
    .await?;
    stats.auth_latency.record(publisher.publish_latency());
    Ok(publisher)
}

/// Runs one publisher until `stop_at`. `log` records video send instants.
pub async fn run(
    spec: PublisherSpec,
    source: Arc<FlvSource>,
    stats: Arc<GeneratorStats>,
    log: Arc<SendLog>,
) {
    let mut publisher = match connect_and_publish(&spec, &stats).await {
        Ok(x) => x,
        Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    stats.connected.fetch_add(1, Ordering::Relaxed);
    if let Some(meta) = &source.metadata {
        publisher.send_metadata(0, meta);
    }
    let start = Instant::now();
    let mut next = 0u64;
    let mut tick = tokio::time::interval(spec.tick);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
            publisher.send_media(tag.type_id, ts, tag.body.clone());
            if tag.type_id == MSG_VIDEO {
                videos.push(ts);
            }
            next += 1;
        }
        if publisher.queued() > 0 {
            let Ok(n) = publisher.flush().await else {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let sent = Instant::now();
            for ts in videos {
                log.record(ts, sent);
            }
            stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
        }
        // Acknowledgements and pings from the server: read what is there, never wait.
        if publisher.poll_incoming().await.is_err() {
            return;
        }
    }
    let _ = publisher.finish().await;
}
