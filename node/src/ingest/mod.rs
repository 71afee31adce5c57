//! RTMP ingest: the listener (connection cap taken before accept, TCP_NODELAY), the
//! ingest threads, and one task per client: the PROXY header when the client is a
//! trusted load balancer ([`proxy`]), the per-address caps ([`admission`]), then the
//! RTMP [`connection`].

pub mod admission;
pub mod connection;
pub mod context;
pub mod flow;
pub mod pacing;
pub mod placement;
pub mod proxy;
pub mod pump;
pub mod tls;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::Placement;
use crate::hub::Protocol;
use crate::metric;
pub use context::IngestContext;
use pump::Pump;
use tls::TlsIdentity;

/// Single-threaded runtimes, one per core, that run the connections (and their relay
/// tasks, which they spawn): a stream's ingest and relays share a thread, so handing a
/// message to a relay never wakes another thread. Which thread a connection goes to is
/// the [`placement::Placer`]'s choice (`rtmp.placement`). Each thread has a [`Pump`]
/// for its publishing connections on plain TCP.
pub struct IngestWorkers {
    handles: Vec<tokio::runtime::Handle>,
    pumps: Vec<Arc<Pump>>,
    stops: parking_lot::Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    threads: parking_lot::Mutex<Vec<std::thread::JoinHandle<()>>>,
    placer: Arc<placement::Placer>,
}

impl IngestWorkers {
    /// Starts `n` worker threads (0: one per core); `pace`: `rtmp.busy_wakeup_interval`.
    pub fn start(
        n: usize,
        policy: Placement,
        pace: std::time::Duration,
    ) -> std::io::Result<Arc<IngestWorkers>> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let placer = Arc::new(placement::Placer::new(policy, n, pace));
        let (mut handles, mut stops, mut threads) = (Vec::new(), Vec::new(), Vec::new());
        let mut pumps = Vec::new();
        for i in 0..n {
            let (woke, parks) = (placer.clone(), placer.clone());
            // Sockets and timers only: no process or signal driver to look at on
            // every turn (the node's subprocesses and signals live on the main
            // runtime). The park hooks measure how busy the thread is, and pace it
            // when the threads are busy.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .on_thread_unpark(move || woke.woke(i))
                .on_thread_park(move || parks.parks(i))
                .build()?;
            let (pump, pumping) = {
                let _inside = rt.enter();
                Pump::start()?
            };
            rt.spawn(pumping);
            pumps.push(pump);
            handles.push(rt.handle().clone());
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            stops.push(tx);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("ingest-{i}"))
                    .spawn(move || {
                        let _ = rt.block_on(rx);
                        rt.shutdown_timeout(std::time::Duration::from_secs(1));
                    })?,
            );
        }
        Ok(Arc::new(IngestWorkers {
            handles,
            pumps,
            stops: parking_lot::Mutex::new(stops),
            threads: parking_lot::Mutex::new(threads),
            placer,
        }))
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// The runtime of ingest thread `i`.
    pub fn handle(&self, i: usize) -> &tokio::runtime::Handle {
        &self.handles[i]
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The runtime for a new connection, its pump, and its seat there (held for the
    /// connection's life).
    fn pick(&self) -> (&tokio::runtime::Handle, Arc<Pump>, placement::Seat) {
        let (i, seat) = self.placer.place();
        (&self.handles[i], self.pumps[i].clone(), seat)
    }

    /// Publishing connections in each thread's pump.
    pub fn pumped(&self) -> Vec<usize> {
        self.pumps.iter().map(|p| p.len()).collect()
    }

    /// Connections on each ingest thread.
    pub fn connections(&self) -> Vec<usize> {
        self.placer.connections()
    }

    /// Seconds each ingest thread slept in pauses (`rtmp.busy_wakeup_interval`).
    pub fn paused_seconds(&self) -> Vec<f64> {
        self.placer.paused_seconds()
    }

    /// How many ingest threads are paced now.
    pub fn paced_threads(&self) -> usize {
        self.placer.paced_threads()
    }

    /// Seconds each ingest thread has been awake.
    pub fn busy_seconds(&self) -> Vec<f64> {
        self.placer.busy_seconds()
    }

    /// Stops the worker runtimes (after the connections drained).
    pub fn stop(&self) {
        for tx in self.stops.lock().drain(..) {
            let _ = tx.send(());
        }
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts RTMP (or, with a TLS identity, RTMPS) connections until `cancel`.
pub struct Listener {
    listener: TcpListener,
    /// RTMPS: the certificate new handshakes get.
    tls: Option<Arc<TlsIdentity>>,
    ctx: Arc<IngestContext>,
    workers: Arc<IngestWorkers>,
}

impl Listener {
    /// Binds `addr`; with `tls` the listener speaks RTMPS.
    pub async fn bind(
        ctx: Arc<IngestContext>,
        workers: Arc<IngestWorkers>,
        addr: SocketAddr,
        tls: Option<Arc<TlsIdentity>>,
    ) -> anyhow::Result<Listener> {
        let (what, key) = match tls {
            Some(_) => ("RTMPS", "rtmps.listen"),
            None => ("RTMP", "rtmp.listen"),
        };
        let listener = crate::listen::bind(addr).map_err(|e| {
            anyhow::anyhow!("cannot listen for {what} on {addr} ({e}): check {key}")
        })?;
        Ok(Listener {
            listener,
            tls,
            ctx,
            workers,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts until `stop_accepting`; then takes what the kernel queued already and
    /// closes the socket (a second instance on the same port takes the new ones).
    /// Connections end with `shutdown`.
    pub async fn run(
        self,
        stop_accepting: CancellationToken,
        shutdown: CancellationToken,
        tracker: TaskTracker,
    ) {
        let addr = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        if self.tls.is_some() {
            info!(%addr, app = %self.ctx.config.app, "RTMPS listening");
        } else {
            info!(%addr, app = %self.ctx.config.app, workers = self.workers.len(), "RTMP listening");
        }
        loop {
            // Take the permit before accepting, so the cap is real.
            let permit = tokio::select! {
                _ = stop_accepting.cancelled() => break,
                p = self.ctx.connections.clone().acquire_owned() => p.expect("semaphore never closed"),
            };
            let (socket, peer) = tokio::select! {
                _ = stop_accepting.cancelled() => break,
                r = self.listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            self.hand_off(socket, peer, permit, &shutdown, &tracker);
        }
        // Closing: serve what already waits in the queue rather than reset it.
        for (socket, peer) in crate::listen::queued(&self.listener) {
            match self.ctx.connections.clone().try_acquire_owned() {
                Ok(permit) => self.hand_off(socket, peer, permit, &shutdown, &tracker),
                Err(_) => break,
            }
        }
        info!(%addr, "stopped accepting");
    }

    /// Gives an accepted connection to an ingest thread.
    fn hand_off(
        &self,
        socket: tokio::net::TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
        shutdown: &CancellationToken,
        tracker: &TaskTracker,
    ) {
        if let Err(e) = socket.set_nodelay(true) {
            debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        // Hand the socket to a worker thread: it is registered with that thread's
        // reactor, and the connection (and its relays) run there.
        let socket = match socket.into_std() {
            Ok(s) => s,
            Err(e) => {
                debug!(%peer, error = %e, "cannot hand the connection to a worker");
                return;
            }
        };
        let listener = if self.tls.is_some() { "rtmps" } else { "rtmp" };
        metrics::counter!(metric::CONNECTIONS_ACCEPTED, "listener" => listener).increment(1);
        let ctx = self.ctx.clone();
        let cancel = shutdown.clone();
        let tls = self.tls.clone();
        let (runtime, pump, seat) = self.workers.pick();
        let accepted_at = tokio::time::Instant::now();
        let task = tracker.track_future(async move {
            match tokio::net::TcpStream::from_std(socket) {
                Ok(socket) => admit(socket, peer, accepted_at, tls, pump, ctx, cancel).await,
                Err(e) => debug!(%peer, error = %e, "cannot register the connection"),
            }
            drop(seat);
            drop(permit);
        });
        runtime.spawn(task);
    }
}

/// The start of every connection: the real client address (from the PROXY header when
/// the connection comes from a trusted proxy), the per-address caps, then the RTMP
/// session.
///
/// Everything before the publish runs within `rtmp.auth_deadline` of `accepted_at`:
/// the PROXY header and the TLS handshake each within `rtmp.handshake_timeout` too,
/// but never past it.
async fn admit(
    mut socket: tokio::net::TcpStream,
    from: SocketAddr,
    accepted_at: tokio::time::Instant,
    tls: Option<Arc<TlsIdentity>>,
    pump: Arc<Pump>,
    ctx: Arc<IngestContext>,
    cancel: CancellationToken,
) {
    let step_until = || {
        (tokio::time::Instant::now() + ctx.config.handshake_timeout)
            .min(accepted_at + ctx.config.auth_deadline)
    };
    let (peer, received) = if ctx
        .config
        .trusted_proxies
        .iter()
        .any(|range| range.contains(from.ip()))
    {
        match tokio::time::timeout_at(step_until(), proxy::read_header(&mut socket)).await {
            Ok(Ok((proxy::ProxiedPeer::Client(client), rest))) => (client, rest),
            Ok(Ok((proxy::ProxiedPeer::Local, rest))) => (from, rest),
            Ok(Err(e)) => {
                metrics::counter!(metric::CONNECTIONS_REFUSED, "reason" => "proxy_header")
                    .increment(1);
                info!(proxy = %from, error = %e, "connection closed");
                return;
            }
            Err(_) => {
                metrics::counter!(metric::CONNECTIONS_REFUSED, "reason" => "proxy_header")
                    .increment(1);
                info!(proxy = %from, "connection closed: no PROXY header within rtmp.handshake_timeout");
                return;
            }
        }
    } else {
        (from, bytes::BytesMut::new())
    };
    let ticket = match ctx.admission.admit(peer.ip()) {
        Ok(t) => t,
        Err(refusal) => {
            metrics::counter!(metric::CONNECTIONS_REFUSED, "reason" => refusal.label())
                .increment(1);
            debug!(%peer, reason = %refusal, "connection refused");
            return;
        }
    };
    let Some(tls) = tls else {
        let socket = connection::PumpedTcp::new(socket, pump);
        let arrival = connection::Arrival {
            peer,
            received,
            accepted_at,
            protocol: Protocol::Rtmp,
        };
        return connection::serve(socket, arrival, ticket, ctx, cancel).await;
    };
    // RTMPS: the TLS handshake comes first, under the RTMP handshake's deadline (and
    // the auth deadline). (Bytes read past a PROXY header are part of the TLS
    // handshake.)
    let stream = transport::PrefixedStream::new(received, socket);
    match tokio::time::timeout_at(step_until(), tls.acceptor().accept(stream)).await {
        Ok(Ok(tls_stream)) => {
            let arrival = connection::Arrival {
                peer,
                received: bytes::BytesMut::new(),
                accepted_at,
                protocol: Protocol::Rtmps,
            };
            connection::serve(tls_stream, arrival, ticket, ctx, cancel).await
        }
        Ok(Err(e)) => {
            metrics::counter!(metric::CONNECTIONS_REFUSED, "reason" => "tls").increment(1);
            debug!(%peer, error = %e, "TLS handshake failed")
        }
        Err(_) => {
            metrics::counter!(metric::CONNECTIONS_REFUSED, "reason" => "tls").increment(1);
            debug!(%peer, "TLS handshake not completed within rtmp.handshake_timeout")
        }
    }
}
