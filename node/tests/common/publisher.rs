//! A publisher that does exactly what the test says (e.g. go silent, send one crafted
//! keyframe), unlike ffmpeg: the shared RTMP client ([`rtmp_io::Publisher`]) driven
//! from a blocking test through a runtime of its own.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtmp::ClientConfig;
use rtmp_io::{PublishError, Publisher, PublisherOptions};
use tokio::net::TcpStream;

/// How long any one step may take before the test fails.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RawPublisher {
    runtime: tokio::runtime::Runtime,
    publisher: Publisher<TcpStream>,
}

impl RawPublisher {
    /// Connects to 127.0.0.1:`port` and publishes `key` to `app`; `Err` carries the
    /// server's refusal (`code: description`) or the I/O failure.
    pub fn publish(port: u16, app: &str, key: &str) -> Result<RawPublisher, String> {
        Self::publish_from([127, 0, 0, 1].into(), port, app, key)
    }

    /// [`RawPublisher::publish`] from another loopback source address.
    pub fn publish_from(
        source: std::net::IpAddr,
        port: u16,
        app: &str,
        key: &str,
    ) -> Result<RawPublisher, String> {
        Self::publish_with(source, port, app, key, |_| {})
    }

    /// [`RawPublisher::publish_from`] with the client's settings changed by `adjust`
    /// (its outgoing chunk size, say).
    pub fn publish_with(
        source: std::net::IpAddr,
        port: u16,
        app: &str,
        key: &str,
        adjust: impl FnOnce(&mut ClientConfig),
    ) -> Result<RawPublisher, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let tc_url = format!("rtmp://127.0.0.1:{port}/{app}");
        let mut config = ClientConfig::new(app, &tc_url, key);
        adjust(&mut config);
        let publisher = runtime.block_on(async {
            let attempt = async {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind((source, 0).into())?;
                let sock = socket.connect(([127, 0, 0, 1], port).into()).await?;
                sock.set_nodelay(true)?;
                Publisher::publish(sock, config, PublisherOptions::default()).await
            };
            match tokio::time::timeout(STEP_TIMEOUT, attempt).await {
                Ok(Ok(p)) => Ok(p),
                Ok(Err(PublishError::Refused { code, description })) => {
                    Err(format!("{code}: {description}"))
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {STEP_TIMEOUT:?}")),
            }
        })?;
        Ok(RawPublisher { runtime, publisher })
    }

    /// Sends one media message (8 audio, 9 video).
    pub fn send(&mut self, type_id: u8, timestamp: u32, body: &[u8]) {
        self.publisher
            .send_media(type_id, timestamp, Bytes::copy_from_slice(body));
        let publisher = &mut self.publisher;
        self.runtime
            .block_on(async { tokio::time::timeout(STEP_TIMEOUT, publisher.flush()).await })
            .expect("the node reads what we send")
            .expect("send");
    }

    /// Sends one media message; `false` when the connection is gone.
    pub fn try_send(&mut self, type_id: u8, timestamp: u32, body: &[u8]) -> bool {
        self.publisher
            .send_media(type_id, timestamp, Bytes::copy_from_slice(body));
        let publisher = &mut self.publisher;
        self.runtime.block_on(async {
            matches!(
                tokio::time::timeout(STEP_TIMEOUT, async {
                    publisher.flush().await?;
                    publisher.poll_incoming().await
                })
                .await,
                Ok(Ok(()))
            )
        })
    }

    /// Blocks until the server ends the connection; returns how long that took.
    pub fn wait_closed(&mut self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        let publisher = &mut self.publisher;
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, publisher.closed()).await })
            .ok()
            .map(|_| start.elapsed())
    }
}

/// A publisher that sends a small video frame every 100 ms in a thread of its own
/// until dropped.
pub struct Streaming {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Streaming {
    pub fn start(port: u16, key: &str) -> Result<Streaming, String> {
        Self::start_from([127, 0, 0, 1].into(), port, key)
    }

    pub fn start_from(source: std::net::IpAddr, port: u16, key: &str) -> Result<Streaming, String> {
        let mut p = RawPublisher::publish_from(source, port, "live", key)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ts = 0;
            while !halt.load(std::sync::atomic::Ordering::Relaxed)
                && p.try_send(9, ts, &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65])
            {
                ts += 100;
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        Ok(Streaming {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
