//! Chunk stream writer (RTMP 1.0 section 5.3): splits messages into chunks.
//!
//! Headers, and payload pieces up to [`COPY_LIMIT`] bytes, are copied into one
//! contiguous buffer: a relay's usual write (a read's audio and video frames with their
//! headers) is then one plain buffer, with no shared-buffer reference per piece and one
//! iovec for the kernel. Larger pieces (keyframes, high-bitrate frames) are queued by
//! reference, never copied: the output is then a list of slices for a vectored write.
//! Type-1/2 headers are used when the previous message on the chunk stream allows it.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{reader::DEFAULT_CHUNK_SIZE, RawMessage, EXTENDED_TIMESTAMP};

/// Payload pieces up to this size are copied next to their header; larger ones are
/// queued by reference. Copying a few KiB costs less than a shared reference (an
/// atomic count on a cache line other threads touch) and an iovec of its own.
pub const COPY_LIMIT: usize = 4096;

/// Chunk stream ids below this have their last header at a fixed place.
const SMALL_CSIDS: usize = 8;

/// Spare copy buffers kept per thread, and the largest one kept.
const SPARE_BUFFERS: usize = 8;
const SPARE_CAPACITY: usize = 64 * 1024;
/// What a copy buffer starts with.
const INITIAL_CAPACITY: usize = 8 * 1024;

thread_local! {
    /// Emptied copy buffers, for the next queue of this thread that copies. A queue
    /// that is written out at once (a relay that keeps up, which is the usual case)
    /// holds no buffer between writes: thousands of idle connections hold no memory
    /// for it, and the few buffers in use stay in the CPU's cache.
    static SPARE: std::cell::RefCell<Vec<BytesMut>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A copy buffer from this thread's spares, or a new one.
fn take_spare() -> BytesMut {
    SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| BytesMut::with_capacity(INITIAL_CAPACITY))
}

/// Gives an emptied copy buffer back to this thread's spares (or frees it).
fn give_spare(mut b: BytesMut) {
    b.clear();
    if b.capacity() == 0 || b.capacity() > SPARE_CAPACITY {
        return;
    }
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_BUFFERS {
            s.push(b);
        }
    });
}

/// Header fields of the last message written on one chunk stream.
#[derive(Debug, Clone, Copy, Default)]
struct LastHeader {
    csid: u32,
    timestamp: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
}

/// Bytes waiting to be written to the socket: shared slices, then copied bytes.
#[derive(Debug, Default)]
pub struct OutputQueue {
    /// Pieces in order before `tail`: payloads queued by reference, and the copied
    /// bytes that preceded each. The front one may be partially written.
    parts: VecDeque<Bytes>,
    /// Bytes copied since the last piece queued by reference; written after `parts`.
    tail: BytesMut,
    /// Sum of the lengths of `parts` and `tail`.
    len: usize,
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

    /// Queues a payload: copied when small, else by reference.
    pub fn push(&mut self, b: Bytes) {
        if b.len() <= COPY_LIMIT {
            self.push_slice(&b);
        } else {
            self.push_shared(b);
        }
    }

    /// Queues a slice by reference, after everything copied so far.
    fn push_shared(&mut self, b: Bytes) {
        if !self.tail.is_empty() {
            self.parts.push_back(self.tail.split().freeze());
        }
        self.len += b.len();
        self.parts.push_back(b);
    }

    /// Queues a copy of `data`.
    pub fn push_slice(&mut self, data: &[u8]) {
        if self.tail.capacity() == 0 {
            self.tail = take_spare();
        }
        self.tail.extend_from_slice(data);
        self.len += data.len();
    }

    /// Queues a copy of `a` then `b` (a header and its payload).
    fn push_two(&mut self, a: &[u8], b: &[u8]) {
        if self.tail.capacity() == 0 {
            self.tail = take_spare();
        }
        self.tail.reserve(a.len() + b.len());
        self.tail.extend_from_slice(a);
        self.tail.extend_from_slice(b);
        self.len += a.len() + b.len();
    }

    /// Fills `dst` with slices for a vectored write; returns how many were set.
    pub fn io_slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        let tail = (!self.tail.is_empty()).then_some(&self.tail[..]);
        for (slot, part) in dst
            .iter_mut()
            .zip(self.parts.iter().map(|p| &p[..]).chain(tail))
        {
            *slot = IoSlice::new(part);
            n += 1;
        }
        n
    }

    /// The bytes to write when they are all in one piece (the usual case).
    pub fn as_contiguous(&self) -> Option<&[u8]> {
        self.parts.is_empty().then_some(&self.tail[..])
    }

    /// Drops `n` written bytes from the front.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.parts.front_mut() else {
                self.tail.advance(n.min(self.tail.len()));
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.parts.pop_front();
            } else {
                front.advance(n);
                return;
            }
        }
        if self.len == 0 {
            // Written out: the buffer goes back to the thread's spares.
            give_spare(std::mem::take(&mut self.tail));
        }
    }

    /// Moves everything out as one contiguous buffer (for tests and simple drivers).
    pub fn take_contiguous(&mut self) -> BytesMut {
        let mut out = BytesMut::with_capacity(self.len);
        for p in self.parts.drain(..) {
            out.put_slice(&p);
        }
        out.put_slice(&self.tail);
        give_spare(std::mem::take(&mut self.tail));
        self.len = 0;
        out
    }
}

/// Splits outgoing messages into chunks.
#[derive(Debug)]
pub struct ChunkWriter {
    /// Outgoing chunk size (announce it with Set Chunk Size before changing it).
    chunk_size: u32,
    /// Last header per chunk stream, for header compression: chunk streams below
    /// [`SMALL_CSIDS`] (the ones sessions send on) by index (a `csid` of 0: none
    /// yet), others in a list.
    last: [LastHeader; SMALL_CSIDS],
    more: Vec<LastHeader>,
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
            last: [LastHeader::default(); SMALL_CSIDS],
            more: Vec::new(),
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
        self.write_message(
            msg.csid,
            msg.timestamp,
            msg.type_id,
            msg.stream_id,
            &msg.payload,
            out,
        );
    }

    /// Queues one message, given by its fields, as chunks on `out`.
    pub fn write_message(
        &mut self,
        csid: u32,
        timestamp: u32,
        type_id: u8,
        stream_id: u32,
        payload: &Bytes,
        out: &mut OutputQueue,
    ) {
        let length = payload.len() as u32;
        let next = LastHeader {
            csid,
            timestamp,
            length,
            type_id,
            stream_id,
        };
        // Choose the smallest header the previous message allows. Timestamps going
        // backwards (or a new stream id) need an absolute type-0 header.
        let slot = match self.last.get_mut(csid as usize) {
            Some(l) if l.csid == csid => Some(l),
            Some(l) => {
                *l = next;
                None
            }
            None => {
                let found = self.more.iter().position(|l| l.csid == csid);
                if found.is_none() {
                    self.more.push(next);
                }
                found.map(|i| &mut self.more[i])
            }
        };
        let (fmt, ts_field) = match slot {
            Some(p) => {
                let prev = std::mem::replace(p, next);
                if prev.stream_id == stream_id && timestamp >= prev.timestamp {
                    let delta = timestamp - prev.timestamp;
                    if prev.length == length && prev.type_id == type_id {
                        (2u8, delta)
                    } else {
                        (1u8, delta)
                    }
                } else {
                    (0u8, timestamp)
                }
            }
            None => (0u8, timestamp),
        };
        let extended = ts_field >= EXTENDED_TIMESTAMP;

        // The whole header in one small array, copied once.
        let mut h = [0u8; 18];
        let mut n = put_basic_header(&mut h, fmt, csid);
        put_u24(
            &mut h[n..],
            if extended {
                EXTENDED_TIMESTAMP
            } else {
                ts_field
            },
        );
        n += 3;
        if fmt <= 1 {
            put_u24(&mut h[n..], length);
            h[n + 3] = type_id;
            n += 4;
        }
        if fmt == 0 {
            h[n..n + 4].copy_from_slice(&stream_id.to_le_bytes());
            n += 4;
        }
        if extended {
            h[n..n + 4].copy_from_slice(&ts_field.to_be_bytes());
            n += 4;
        }
        let chunk = self.chunk_size as usize;
        if payload.len() <= chunk && payload.len() <= COPY_LIMIT {
            // The usual message: one chunk, copied with its header in one go.
            out.push_two(&h[..n], payload);
            return;
        }
        out.push_slice(&h[..n]);
        let mut offset = 0;
        loop {
            let end = (offset + chunk).min(payload.len());
            if end - offset <= COPY_LIMIT {
                out.push_slice(&payload[offset..end]);
            } else {
                out.push_shared(payload.slice(offset..end));
            }
            offset = end;
            if offset >= payload.len() {
                break;
            }
            // Continuation chunk: type-3 header, repeating the extended timestamp.
            let mut n = put_basic_header(&mut h, 3, csid);
            if extended {
                h[n..n + 4].copy_from_slice(&ts_field.to_be_bytes());
                n += 4;
            }
            out.push_slice(&h[..n]);
        }
    }
}

/// Writes a basic header at the start of `h`; returns its length.
fn put_basic_header(h: &mut [u8], fmt: u8, csid: u32) -> usize {
    match csid {
        2..=63 => {
            h[0] = fmt << 6 | csid as u8;
            1
        }
        64..=319 => {
            h[0] = fmt << 6;
            h[1] = (csid - 64) as u8;
            2
        }
        _ => {
            let v = csid.clamp(64, 65599) - 64;
            h[0] = fmt << 6 | 1;
            h[1] = (v & 0xff) as u8;
            h[2] = (v >> 8) as u8;
            3
        }
    }
}

fn put_u24(h: &mut [u8], v: u32) {
    h[0] = (v >> 16) as u8;
    h[1] = (v >> 8) as u8;
    h[2] = v as u8;
}
