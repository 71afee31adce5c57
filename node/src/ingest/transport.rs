//! The byte streams a connection runs over: plain TCP handed to the ingest thread's
//! [`Pump`] while it publishes ([`PumpedTcp`]), TLS, in-memory pipes (tests), and a
//! stream that first yields what was read past a PROXY header ([`PrefixedStream`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

use super::pump::Pump;

/// A connection's byte stream. A transport that can hand its socket to the ingest
/// thread's [`Pump`] says so; the others (RTMPS, in-memory pipes) keep the defaults and
/// are served by their task alone.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Takes the socket out of the runtime's reactor for a pump; `None` when this
    /// transport is not pumped.
    fn park(&mut self) -> std::io::Result<Option<(Arc<Pump>, std::net::TcpStream)>> {
        Ok(None)
    }

    /// Takes the socket back from the pump (registers it with the reactor again).
    fn unpark(&mut self, socket: std::net::TcpStream) -> std::io::Result<()> {
        drop(socket);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}

impl Transport for tokio::io::DuplexStream {}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport for tokio_rustls::server::TlsStream<S> {}

/// A plain TCP connection on an ingest thread: while it publishes, its socket waits in
/// the thread's [`Pump`] instead of the runtime's reactor.
pub struct PumpedTcp {
    /// `None` while the pump holds the socket (the task is waiting for it then, and
    /// neither reads nor writes).
    stream: Option<tokio::net::TcpStream>,
    pump: Arc<Pump>,
}

impl PumpedTcp {
    pub fn new(stream: tokio::net::TcpStream, pump: Arc<Pump>) -> PumpedTcp {
        PumpedTcp {
            stream: Some(stream),
            pump,
        }
    }

    fn stream(&mut self) -> std::io::Result<&mut tokio::net::TcpStream> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

impl Transport for PumpedTcp {
    fn park(&mut self) -> std::io::Result<Option<(Arc<Pump>, std::net::TcpStream)>> {
        match self.stream.take() {
            Some(s) => Ok(Some((self.pump.clone(), s.into_std()?))),
            None => Ok(None),
        }
    }

    fn unpark(&mut self, socket: std::net::TcpStream) -> std::io::Result<()> {
        self.stream = Some(tokio::net::TcpStream::from_std(socket)?);
        Ok(())
    }
}

impl AsyncRead for PumpedTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_read(cx, buf),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

impl AsyncWrite for PumpedTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write(cx, data),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_flush(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.stream() {
            Ok(s) => Pin::new(s).poll_shutdown(cx),
            Err(e) => Poll::Ready(Err(e)),
        }
    }
}

/// A stream that first yields bytes already read from it (after a PROXY header), then
/// reads on.
pub(super) struct PrefixedStream<S> {
    prefix: bytes::BytesMut,
    inner: S,
}

impl<S> PrefixedStream<S> {
    pub(super) fn new(prefix: bytes::BytesMut, inner: S) -> Self {
        PrefixedStream { prefix, inner }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for PrefixedStream<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for PrefixedStream<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
