//! Tokio drivers for the sans-IO [`rtmp`] sessions. The protocol crate takes and gives
//! buffers; this crate owns the sockets:
//!
//! - [`write_queued`]: writes what a session queued (header bytes and shared payload
//!   slices) with vectored writes, under one deadline; [`write_available`]: as much
//!   of it as a non-blocking write takes now;
//! - [`Publisher`]: the client side of a publish (handshake, connect, createStream,
//!   publish, then media), the one client used by the relay, the load generator and
//!   the tests.
//!
//! Both are generic over `AsyncRead + AsyncWrite`, so TCP, TLS and in-memory pipes are
//! all just streams.

mod publisher;
mod write;

pub use publisher::{PublishError, Publisher, PublisherOptions};
pub use write::{write_available, write_queued, WriteError};
