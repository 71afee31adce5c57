//! RTMP sessions (RTMP 1.0 section 7): the NetConnection/NetStream command exchange on
//! top of the chunk stream, for the server (ingest) and the client (relay) side.
//!
//! Both are sans-IO. The driver feeds received bytes with `handle_bytes`, acts on the
//! returned events, and writes what `output()` holds. [`Transport`] is the part both
//! sides share: chunk reader and writer, acknowledgements and ping responses.

pub mod client;
pub mod server;

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::amf0::Amf0Value;
use crate::chunk::{ChunkError, ChunkLimits, ChunkReader, ChunkWriter, OutputQueue, RawMessage};
use crate::message::{self, Message, MessageError};

pub use client::{ClientConfig, ClientEvent, ClientSession, SERVER_REPLY_LIMITS};
pub use server::{ServerConfig, ServerEvent, ServerSession, PRE_PUBLISH_LIMITS};

/// Default window acknowledgement size announced to peers (what OBS/FMS use).
pub const DEFAULT_WINDOW_ACK_SIZE: u32 = 2_500_000;
/// Smallest acknowledgement window a peer may ask for: a smaller one would make us
/// answer every few bytes with an acknowledgement.
pub const MIN_ACK_WINDOW: u32 = 4096;

/// Why a session cannot go on. Every variant ends the connection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("message: {0}")]
    Message(#[from] MessageError),
    #[error("protocol: {0}")]
    Protocol(&'static str),
}

/// A publish name (the stream key on ingest). Its `Debug` never shows the content, so
/// it cannot leak through a log line or a panic message.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamName(String);

impl StreamName {
    /// Wraps a name, dropping any `?query` suffix (some tools append parameters).
    pub fn new(raw: &str) -> Self {
        let name = raw.split('?').next().unwrap_or_default();
        Self(name.to_owned())
    }

    /// The secret content. Call only where the value itself is needed (hashing).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamName(<redacted, {} bytes>)", self.0.len())
    }
}

/// The shared part of both sessions: chunk layer, acknowledgements, pings.
#[derive(Debug)]
pub(crate) struct Transport {
    /// Reassembles incoming messages.
    reader: ChunkReader,
    /// Chunks outgoing messages.
    writer: ChunkWriter,
    /// Bytes waiting for the socket.
    out: OutputQueue,
    /// Send an acknowledgement every this many received bytes.
    ack_window: u32,
    /// Received-byte count at the last acknowledgement we sent.
    last_ack_at: u64,
    /// Whether data messages (`@setDataFrame`...) are AMF-decoded; until the peer is
    /// trusted they are passed on undecoded, as [`Message::Other`].
    decode_data: bool,
}

impl Transport {
    /// Bytes of unfinished messages held now (all chunk streams together).
    pub(crate) fn partial_bytes(&self) -> usize {
        self.reader.partial_bytes()
    }

    pub(crate) fn new(limits: ChunkLimits, ack_window: u32, decode_data: bool) -> Self {
        Self {
            reader: ChunkReader::new(limits),
            writer: ChunkWriter::new(),
            out: OutputQueue::new(),
            ack_window,
            last_ack_at: 0,
            decode_data,
        }
    }

    /// The peer is trusted from now on: its limits, and data messages decoded.
    pub(crate) fn trust(&mut self, limits: ChunkLimits) {
        self.reader.set_limits(limits);
        self.decode_data = true;
    }

    pub(crate) fn send(&mut self, msg: &RawMessage) {
        self.writer.write(msg, &mut self.out);
    }

    /// Queues an audio or video message without taking a reference on its payload
    /// when the payload is copied anyway ([`crate::chunk::writer::COPY_LIMIT`]).
    pub(crate) fn send_media(
        &mut self,
        type_id: u8,
        stream_id: u32,
        timestamp: u32,
        payload: &Bytes,
    ) {
        let csid = message::media_csid(type_id);
        self.writer
            .write_message(csid, timestamp, type_id, stream_id, payload, &mut self.out);
    }

    /// Announces and starts using an outgoing chunk size.
    pub(crate) fn set_out_chunk_size(&mut self, size: u32) {
        self.send(&message::set_chunk_size(size));
        self.writer.set_chunk_size(size);
    }

    pub(crate) fn output(&mut self) -> &mut OutputQueue {
        &mut self.out
    }

    /// Reads the next message, answering acknowledgement-window and ping bookkeeping
    /// on the way. Protocol-level messages are still returned for the caller to see.
    pub(crate) fn next_message(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Message>, SessionError> {
        let Some(raw) = self.next_raw(buf)? else {
            return Ok(None);
        };
        self.interpret(raw).map(Some)
    }

    /// Reads the next message without interpreting it; acknowledges on the way.
    pub(crate) fn next_raw(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<RawMessage>, SessionError> {
        let Some(raw) = self.reader.read(buf)? else {
            return Ok(None);
        };
        let received = self.reader.bytes_consumed();
        if self.ack_window > 0 && received - self.last_ack_at >= self.ack_window as u64 {
            self.last_ack_at = received;
            // The sequence number is the running total, wrapping at 2^32.
            self.send(&message::acknowledgement(received as u32));
        }
        Ok(Some(raw))
    }

    /// Decodes a message [`Transport::next_raw`] returned, answering pings and taking
    /// note of the peer's acknowledgement window.
    pub(crate) fn interpret(&mut self, raw: RawMessage) -> Result<Message, SessionError> {
        if !self.decode_data
            && matches!(raw.type_id, message::MSG_DATA_AMF0 | message::MSG_DATA_AMF3)
        {
            return Ok(Message::Other(raw));
        }
        let msg = Message::decode(raw)?;
        match &msg {
            Message::WindowAckSize(size) => self.ack_window = (*size).max(MIN_ACK_WINDOW),
            Message::UserControl { event, value } if *event == message::UC_PING_REQUEST => {
                self.send(&message::user_control(message::UC_PING_RESPONSE, *value));
            }
            _ => {}
        }
        Ok(msg)
    }
}

/// The `code` of an `onStatus` or `_result` info object, if any.
pub(crate) fn info_code(args: &[Amf0Value]) -> Option<&str> {
    args.iter()
        .find_map(|a| a.get("code").and_then(|c| c.as_str()))
}

/// The `level` of an info object, if any.
pub(crate) fn info_field<'a>(args: &'a [Amf0Value], field: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.get(field).and_then(|c| c.as_str()))
}

#[cfg(test)]
mod tests;
