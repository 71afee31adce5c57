//! The HTTP server loop, bounded so that no client and no one address can take it:
//!
//! - at most `http.max_connections` connections (the permit is taken before `accept`,
//!   as on the RTMP port), and at most `http.max_connections_per_address` from one
//!   address (IPv6: one /64; more are answered 503 and closed at once);
//! - `http.reserved_connections` more, taken only when the public slots are full, that
//!   serve only the operator's routes (`/healthz`, `/metrics`, the admin API, the
//!   dashboard: the `reserved` router) and close after one answer, at most
//!   [`RESERVED_PER_ADDRESS`] of them per address;
//! - a request head must arrive within `http.header_timeout` (which also closes idle
//!   kept-alive connections), and is at most [`MAX_HEAD_BYTES`] with [`MAX_HEADERS`]
//!   headers;
//! - a client that takes no byte of its answer for `http.write_timeout` is closed
//!   ([`WriteDeadline`]): a large answer or an event stream nobody reads holds nothing.
//!
//! Every request carries its client's address as a [`ClientAddr`] extension.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::peer::{AddressSlot, PerAddress};

/// Largest request head (request line and headers) accepted; a larger one gets 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in one request.
pub const MAX_HEADERS: usize = 64;
/// Reserved connections one address may hold at once.
pub const RESERVED_PER_ADDRESS: usize = 2;

/// The bounds, from `[http]`.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_connections: usize,
    pub max_connections_per_address: usize,
    pub reserved_connections: usize,
    pub header_timeout: Duration,
    pub write_timeout: Duration,
}

impl HttpLimits {
    pub fn of(config: &crate::config::HttpConfig) -> HttpLimits {
        HttpLimits {
            max_connections: config.max_connections,
            max_connections_per_address: config.per_address(),
            reserved_connections: config.reserved_connections,
            header_timeout: config.header_timeout,
            write_timeout: config.write_timeout,
        }
    }
}

/// The address of the client that sent a request (an extension of every request).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// What a listener serves: everything, and what a reserved connection may reach; over
/// TLS when it has an identity (HTTPS).
#[derive(Clone)]
pub struct Routes {
    pub all: Router,
    pub reserved: Router,
    pub tls: Option<Arc<crate::ingest::tls::TlsIdentity>>,
}

/// The answer to a connection over its address's cap, written without waiting.
const ADDRESS_FULL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\nConnection: close\r\nContent-Length: 83\r\n\r\n{\"error\":\"too many connections from this address (http.max_connections_per_address)\"}";

/// The slot a connection holds: a public one, or one of the reserve.
struct Slot {
    _permit: OwnedSemaphorePermit,
    reserved: bool,
}

/// Serves `routes` on `listener` until `stop_accepting` (then the socket closes: a
/// second instance on the same port takes the new connections); connections end with
/// `shutdown`, requests in flight get up to `grace`.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    limits: HttpLimits,
    stop_accepting: CancellationToken,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let reserve = Arc::new(Semaphore::new(limits.reserved_connections));
    let per_address = PerAddress::new(limits.max_connections_per_address);
    let reserved_per_address = PerAddress::new(RESERVED_PER_ADDRESS);
    let connections = TaskTracker::new();
    loop {
        // Take the permit before accepting, so the cap is real; the reserve only when
        // the public slots are all taken.
        let slot = tokio::select! {
            biased;
            _ = stop_accepting.cancelled() => break,
            p = slots.clone().acquire_owned() => Slot {
                _permit: p.expect("never closed"),
                reserved: false,
            },
            p = reserve.clone().acquire_owned(), if slots.available_permits() == 0 => Slot {
                _permit: p.expect("never closed"),
                reserved: true,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop_accepting.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let address = per_address.take(peer.ip());
        let reserved_place = slot.reserved.then(|| reserved_per_address.take(peer.ip()));
        let (Some(address), None | Some(Some(_))) = (address, &reserved_place) else {
            // Over TLS a plain answer would be noise: the connection just closes.
            if routes.tls.is_none() {
                refuse_address_full(&stream, peer);
            }
            continue;
        };
        let router = if slot.reserved {
            routes.reserved.clone()
        } else {
            routes.all.clone()
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            (router, routes.tls.clone()),
            limits,
            shutdown.clone(),
            (slot, address, reserved_place.flatten()),
        ));
    }
    drop(listener);
    // Connections go on until the node shuts down.
    shutdown.cancelled().await;
    connections.close();
    let _ = tokio::time::timeout(grace, connections.wait()).await;
}

/// Answers 503 without waiting (what the socket takes now) and closes.
fn refuse_address_full(stream: &TcpStream, peer: SocketAddr) {
    metrics::counter!(crate::metric::HTTP_REFUSED, "reason" => "address_full").increment(1);
    debug!(%peer, "HTTP connection refused: http.max_connections_per_address");
    let _ = stream.try_write(ADDRESS_FULL);
}

/// One connection, with its slot and its address's place held until it ends; its TLS
/// handshake (HTTPS) within `http.header_timeout`.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    (router, tls): (Router, Option<Arc<crate::ingest::tls::TlsIdentity>>),
    limits: HttpLimits,
    cancel: CancellationToken,
    held: (Slot, AddressSlot, Option<AddressSlot>),
) {
    let Some(tls) = tls else {
        return serve_io(stream, peer, router, limits, cancel, held).await;
    };
    let handshake = tokio::select! {
        r = tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(stream)) => r,
        _ = cancel.cancelled() => return,
    };
    match handshake {
        Ok(Ok(stream)) => serve_io(stream, peer, router, limits, cancel, held).await,
        Ok(Err(e)) => debug!(%peer, error = %e, "HTTPS handshake failed"),
        Err(_) => debug!(%peer, "HTTPS handshake not done within http.header_timeout"),
    }
}

/// Serves HTTP/1.1 on one connection's byte stream (TCP, or TLS over it).
async fn serve_io<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    limits: HttpLimits,
    cancel: CancellationToken,
    held: (Slot, AddressSlot, Option<AddressSlot>),
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reserved = held.0.reserved;
    if reserved {
        metrics::counter!(crate::metric::HTTP_RESERVED).increment(1);
    }
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(ClientAddr(peer));
        router.clone().oneshot(request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(!reserved)
        .max_buf_size(MAX_HEAD_BYTES.max(8192))
        .max_header_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        // hyper's error says what it was doing; its source says why (the deadline).
        let mut why = e.to_string();
        let mut cause = std::error::Error::source(&e);
        while let Some(c) = cause {
            why.push_str(&format!(": {c}"));
            cause = c.source();
        }
        debug!(%peer, error = %why, "HTTP connection ended");
    }
}

/// A stream whose writes fail once they have made no progress for `timeout`: a client
/// that stops reading its answer is closed instead of holding its connection (and the
/// answer's memory) forever. The clock starts at the first write the socket does not
/// take, and stops at the next one it takes.
pub struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    /// Set while writes wait for room.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, timeout: Duration) -> WriteDeadline<S> {
        WriteDeadline {
            inner,
            timeout,
            stalled: None,
        }
    }

    /// After a write that did not complete: `Ready(Err)` once the deadline passed.
    fn check<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let timeout = self.timeout;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the client took nothing for {timeout:?} (http.write_timeout)"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progress<T>(
        &mut self,
        r: Poll<std::io::Result<T>>,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => self.check(cx),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A reader that stops reading makes writes fail after the deadline; one that
    /// reads keeps the writer going however long it takes in all.
    #[tokio::test(start_paused = true)]
    async fn writes_that_make_no_progress_fail_at_the_deadline() {
        let (a, b) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(a, Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        let err = w.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(10));

        let (a, mut b2) = tokio::io::duplex(1024);
        let mut w = WriteDeadline::new(a, Duration::from_secs(10));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut got = 0;
            let mut buf = [0u8; 512];
            while got < 64 * 1024 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                got += b2.read(&mut buf).await.unwrap();
            }
        });
        w.write_all(&[7u8; 64 * 1024])
            .await
            .expect("a slow reader is no stalled one");
        reader.await.unwrap();
        drop(b);
    }
}
