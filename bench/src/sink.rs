//! The relay sink: an RTMP server that accepts relayed publishes, counts bytes and
//! messages per stream, and measures relay delay by matching each video message to the
//! instant the generator wrote the message with the same timestamp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::BytesMut;
use rtmp::handshake::ServerHandshake;
use rtmp::{ServerConfig, ServerEvent, ServerSession};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::publisher::SendLog;
use crate::stats::Samples;

/// Per-stream counters at the sink.
#[derive(Debug, Default)]
pub struct StreamCount {
    pub bytes: AtomicU64,
    pub messages: AtomicU64,
}

/// What the sink saw.
#[derive(Default)]
pub struct Sink {
    /// Counters by published name.
    pub streams: Mutex<HashMap<String, Arc<StreamCount>>>,
    /// Send logs by the name the stream arrives under at the sink.
    pub logs: Mutex<HashMap<String, Arc<SendLog>>>,
    pub delay: Samples,
    /// Whether to record delays now (only in the measuring window).
    pub measuring: std::sync::atomic::AtomicBool,
}

impl Sink {
    pub async fn bind() -> anyhow::Result<(TcpListener, Arc<Sink>)> {
        Ok((
            TcpListener::bind("127.0.0.1:0").await?,
            Arc::new(Sink::default()),
        ))
    }

    pub async fn serve(self: Arc<Sink>, listener: TcpListener) {
        while let Ok((sock, _)) = listener.accept().await {
            let sink = self.clone();
            tokio::spawn(async move {
                let _ = sink.connection(sock).await;
            });
        }
    }

    /// Streams that received at least one video message, and total bytes.
    pub fn totals(&self) -> (usize, u64) {
        let s = self.streams.lock().expect("sink");
        let active = s
            .values()
            .filter(|c| c.messages.load(Ordering::Relaxed) > 0)
            .count();
        (
            active,
            s.values().map(|c| c.bytes.load(Ordering::Relaxed)).sum(),
        )
    }

    async fn connection(&self, mut sock: TcpStream) -> anyhow::Result<()> {
        sock.set_nodelay(true)?;
        let (mut buf, mut out) = (BytesMut::with_capacity(65536), BytesMut::new());
        let mut hs = ServerHandshake::new();
        while !hs.read(&mut buf, &mut out)? {
            sock.write_all(&out).await?;
            out.clear();
            anyhow::ensure!(sock.read_buf(&mut buf).await? > 0, "closed");
        }
        sock.write_all(&out).await?;
        let mut session = ServerSession::new(ServerConfig::default());
        let mut events = Vec::new();
        let mut current: Option<(Arc<StreamCount>, Option<Arc<SendLog>>)> = None;
        loop {
            loop {
                session.handle_bytes(&mut buf, &mut events)?;
                if events.is_empty() {
                    break;
                }
                let now = Instant::now();
                for e in events.drain(..) {
                    match e {
                        ServerEvent::ConnectRequested { .. } => session.accept_connect(),
                        ServerEvent::PublishRequested { stream_id, name } => {
                            session.accept_publish(stream_id);
                            let name = name.expose().to_string();
                            let count = self
                                .streams
                                .lock()
                                .expect("sink")
                                .entry(name.clone())
                                .or_default()
                                .clone();
                            let log = self.logs.lock().expect("sink").get(&name).cloned();
                            current = Some((count, log));
                        }
                        ServerEvent::Video(m) | ServerEvent::Audio(m) => {
                            if let Some((count, log)) = &current {
                                count
                                    .bytes
                                    .fetch_add(m.payload.len() as u64, Ordering::Relaxed);
                                count.messages.fetch_add(1, Ordering::Relaxed);
                                if m.type_id == rtmp::message::MSG_VIDEO
                                    && self.measuring.load(Ordering::Relaxed)
                                {
                                    if let Some(sent) =
                                        log.as_ref().and_then(|l| l.find(m.timestamp))
                                    {
                                        self.delay.record(now.saturating_duration_since(sent));
                                    }
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            let o = session.output().take_contiguous();
            if !o.is_empty() {
                sock.write_all(&o).await?;
            }
            buf.reserve(65536);
            if sock.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        }
    }
}
