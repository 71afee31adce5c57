//! Sans-IO RTMP 1.0 protocol: handshake, chunk stream, AMF0, messages, and server and
//! client session state machines. No sockets, no async runtime: drivers feed bytes in
//! and write the bytes the sessions queue.
//!
//! Specifications followed: Adobe RTMP 1.0 (2012), AMF0, Enhanced RTMP v2 (media tags
//! are passed through untouched; see the `media` crate for their interpretation).

pub mod amf0;
pub mod chunk;
pub mod handshake;
pub mod message;
pub mod session;

pub use chunk::{ChunkLimits, OutputQueue, RawMessage};
pub use session::{
    ClientConfig, ClientEvent, ClientSession, ServerConfig, ServerEvent, ServerSession,
    SessionError, StreamName, PRE_PUBLISH_LIMITS, SERVER_REPLY_LIMITS,
};
