//! Chunk stream writer (RTMP 1.0 section 5.3): splits messages into chunks.
//!
//! Headers are written into a small scratch buffer; payloads are never copied above
//! [`INLINE_COPY_LIMIT`] bytes: the output is a list of `Bytes` slices (header, payload
//! part, header, payload part...) ready for a vectored write. Type-1/2 headers are used
//! when the previous message on the chunk stream allows it.

use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{reader::DEFAULT_CHUNK_SIZE, RawMessage, EXTENDED_TIMESTAMP};

/// Payload pieces smaller than this are copied next to their header instead of being
/// queued as their own slice: fewer iovecs for tiny control messages.
const INLINE_COPY_LIMIT: usize = 128;

/// Header fields of the last message written on one chunk stream.
#[derive(Debug, Clone, Copy)]
struct LastHeader {
    timestamp: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// Bytes waiting to be written to the socket, as shared slices.
#[derive(Debug, Default)]
pub struct OutputQueue {
    /// Pieces in order; the front one may be partially written.
    parts: VecDeque<Bytes>,
    /// Sum of the lengths of `parts`.
    len: usize,
    /// Where header bytes are assembled before being split off as `Bytes`.
    scratch: BytesMut,
}

impl OutputQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a shared slice.
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.parts.push_back(b);
        }
    }

    /// Queues a copy of small data.
    pub fn push_slice(&mut self, data: &[u8]) {
        self.scratch.reserve(data.len().max(4096));
        self.scratch.put_slice(data);
        let b = self.scratch.split().freeze();
        self.push(b);
    }

    /// Fills `dst` with slices for a vectored write; returns how many were set.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, part) in dst.iter_mut().zip(self.parts.iter()) {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }

    /// Drops `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.parts.pop_front();
            } else {
                front.advance(n);
                return;
            }
        }
    }

    /// Moves everything out as one contiguous buffer (for tests and simple drivers).
    pub fn take_contiguous(&mut self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.len);
        for p in self.parts.drain(..) {
            out.put_slice(&p);
        }
        self.len = 0;
        out
    }
}

/// Splits outgoing messages into chunks.
#[derive(Debug)]
pub struct ChunkWriter {
    /// Outgoing chunk size (announce it with Set Chunk Size before changing it).
    chunk_size: u32,
    /// Last header per chunk stream, for header compression.
    last: HashMap<u32, LastHeader>,
}

impl Default for ChunkWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkWriter {
    pub fn new() -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            last: HashMap::new(),
        }
    }

    /// Current outgoing chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Uses a new outgoing chunk size from the next message on. The caller must have
    /// queued a Set Chunk Size message first.
    pub fn set_chunk_size(&mut self, size: u32) {
        self.chunk_size = size.clamp(1, super::reader::MAX_CHUNK_SIZE);
    }

    /// Queues `msg` as chunks on `out`.
    pub fn write(&mut self, msg: &RawMessage, out: &mut OutputQueue) {
        let length = msg.payload.len() as u32;
        let prev = self.last.get(&msg.csid).copied();
        // Choose the smallest header the previous message allows. Timestamps going
        // backwards (or a new stream id) need an absolute type-0 header.
        let (fmt, ts_field) = match prev {
            Some(p) if p.stream_id == msg.stream_id && msg.timestamp >= p.timestamp => {
                let delta = msg.timestamp - p.timestamp;
                if p.length == length && p.type_id == msg.type_id {
                    (2u8, delta)
                } else {
                    (1u8, delta)
                }
            }
            _ => (0u8, msg.timestamp),
        };
        self.last.insert(
            msg.csid,
            LastHeader {
                timestamp: msg.timestamp,
                length,
                type_id: msg.type_id,
                stream_id: msg.stream_id,
            },
        );
        let extended = ts_field >= EXTENDED_TIMESTAMP;

        let s = &mut out.scratch;
        s.reserve(32);
        put_basic_header(s, fmt, msg.csid);
        put_u24(
            s,
            if extended {
                EXTENDED_TIMESTAMP
            } else {
                ts_field
            },
        );
        if fmt <= 1 {
            put_u24(s, length);
            s.put_u8(msg.type_id);
        }
        if fmt == 0 {
            s.put_u32_le(msg.stream_id);
        }
        if extended {
            s.put_u32(ts_field);
        }

        let chunk = self.chunk_size as usize;
        let mut offset = 0;
        loop {
            let end = (offset + chunk).min(msg.payload.len());
            let piece = &msg.payload[offset..end];
            if piece.len() < INLINE_COPY_LIMIT {
                out.scratch.put_slice(piece);
                let b = out.scratch.split().freeze();
                out.push(b);
            } else {
                let header = out.scratch.split().freeze();
                out.push(header);
                out.push(msg.payload.slice(offset..end));
            }
            offset = end;
            if offset >= msg.payload.len() {
                break;
            }
            // Continuation chunk: type-3 header, repeating the extended timestamp.
            put_basic_header(&mut out.scratch, 3, msg.csid);
            if extended {
                out.scratch.put_u32(ts_field);
            }
        }
    }
}

fn put_basic_header(s: &mut BytesMut, fmt: u8, csid: u32) {
    match csid {
        2..=63 => s.put_u8(fmt << 6 | csid as u8),
        64..=319 => {
            s.put_u8(fmt << 6);
            s.put_u8((csid - 64) as u8);
        }
        _ => {
            let v = csid.clamp(64, 65599) - 64;
            s.put_u8(fmt << 6 | 1);
            s.put_u8((v & 0xff) as u8);
            s.put_u8((v >> 8) as u8);
        }
    }
}

fn put_u24(s: &mut BytesMut, v: u32) {
    s.put_u8((v >> 16) as u8);
    s.put_u8((v >> 8) as u8);
    s.put_u8(v as u8);
}
