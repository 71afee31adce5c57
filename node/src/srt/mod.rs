//! SRT ingest: publishers send MPEG-TS over SRT (UDP) with their stream key in the
//! stream id; after the handshake a publish is the same as an RTMP one (the same
//! admission, hub, relay, thumbnails, status and API).
//!
//! Each ingest thread has its own UDP socket on the SRT port (`SO_REUSEPORT`: the
//! kernel keeps each caller on one socket) and runs its callers' handshakes and
//! streams ([`worker`]). The protocol itself is the sans-IO `srt` crate; the stream id
//! is read by [`streamid`]; the media goes through `media::ts` ([`stream`]).

mod limits;
mod stream;
pub mod streamid;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::{RtmpConfig, SrtConfig};
use crate::ingest::{IngestContext, IngestWorkers};
use worker::{Worker, WorkerConfig};

/// One UDP socket on `addr` that others may share (`SO_REUSEPORT`), non-blocking, with
/// the receive buffer asked for.
fn bind_udp(addr: SocketAddr, receive_buffer: usize) -> std::io::Result<std::net::UdpSocket> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(false).ok();
    }
    if let Err(e) = s.set_recv_buffer_size(receive_buffer) {
        warn!(error = %e, "cannot set the SRT socket's receive buffer (srt.socket_receive_buffer)");
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// The SRT listener: one socket per ingest thread.
pub struct SrtIngest {
    local: SocketAddr,
}

impl SrtIngest {
    /// Binds `srt.listen` once per ingest thread and starts their workers, which run
    /// until `shutdown`.
    pub fn start(
        srt: &SrtConfig,
        rtmp: &RtmpConfig,
        ctx: Arc<IngestContext>,
        workers: &IngestWorkers,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> anyhow::Result<SrtIngest> {
        let cannot = |e: std::io::Error| {
            anyhow::anyhow!(
                "cannot listen for SRT on {} (UDP) ({e}): check srt.listen, or set srt.enabled = false",
                srt.listen
            )
        };
        let first = bind_udp(srt.listen, srt.socket_receive_buffer).map_err(cannot)?;
        let local = first.local_addr().map_err(cannot)?;
        let got = socket2::SockRef::from(&first)
            .recv_buffer_size()
            .unwrap_or(0);
        if got < srt.socket_receive_buffer {
            // Linux reports twice what it grants.
            warn!(asked = srt.socket_receive_buffer, got, "the kernel gave the SRT sockets a smaller receive buffer than srt.socket_receive_buffer: raise net.core.rmem_max (sysctl) so that bursts are not dropped");
        }
        let mut sockets = vec![first];
        for _ in 1..workers.len() {
            sockets.push(bind_udp(local, srt.socket_receive_buffer).map_err(cannot)?);
        }
        let ids = Arc::new(AtomicU32::new(rand::random::<u32>() | 1));
        for (i, socket) in sockets.into_iter().enumerate() {
            let cfg = WorkerConfig {
                listener: ::srt::ListenerConfig {
                    latency_ms: srt.latency.as_millis() as u16,
                    capacity: srt.receive_buffer_packets,
                    peer_idle: srt.peer_idle_timeout,
                },
                app: rtmp.app.clone(),
                auth_deadline: rtmp.auth_deadline,
                idle_timeout: rtmp.idle_timeout,
                max_handshakes_per_address: srt.max_handshakes_per_address,
            };
            let (ctx, ids, shutdown) = (ctx.clone(), ids.clone(), shutdown.clone());
            let handle = workers.handle(i).clone();
            tracker.spawn_on(
                async move {
                    match tokio::net::UdpSocket::from_std(socket) {
                        Ok(socket) => Worker::new(socket, cfg, ctx, ids).run(shutdown).await,
                        Err(e) => warn!(error = %e, "SRT socket cannot join its ingest thread"),
                    }
                },
                &handle,
            );
        }
        info!(addr = %local, transport = "udp", app = %rtmp.app, workers = workers.len(), latency = %humantime::format_duration(srt.latency), "SRT listening");
        Ok(SrtIngest { local })
    }

    /// The bound address (the port, when `srt.listen` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}
