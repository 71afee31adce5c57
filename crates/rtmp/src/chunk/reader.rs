//! Chunk stream reader (RTMP 1.0 section 5.3): reassembles messages from chunks.
//!
//! Handles all four chunk header types, extended timestamps (also on type-3 chunks, read
//! leniently: present or absent, see obs-studio#10097), type-3 chunks that start a new
//! message (the previous delta is applied again), interleaved chunk streams (a partial
//! payload is kept per chunk stream), Set Chunk Size up to 2^31-1 and Abort Message.
//!
//! Memory is bounded: a message may not exceed [`ChunkLimits::max_message_size`], a
//! connection may not open more than [`ChunkLimits::max_chunk_streams`] chunk streams,
//! and the partial payloads of all chunk streams together may not exceed
//! [`ChunkLimits::max_partial_bytes`]. Payload memory is reserved as bytes arrive, never
//! from an announced length. A message that fits in one chunk is handed out as a
//! zero-copy slice of the input buffer.

use bytes::{Buf, BytesMut};

use super::{ChunkError, RawMessage, EXTENDED_TIMESTAMP, MSG_ABORT, MSG_SET_CHUNK_SIZE};

/// Chunk size every connection starts with (RTMP 1.0 section 5.4.1).
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Largest chunk size a peer may set (the top bit of the field must be 0).
pub const MAX_CHUNK_SIZE: u32 = 0x7FFF_FFFF;

/// Most room a message split over several chunks is given in advance, as its first
/// chunk arrives (a 6 Mbps frame is about 25 KiB, its keyframe about 150 KiB).
const RESERVE_AHEAD: usize = 256 * 1024;

/// Smallest chunk size a peer may set. Below the protocol's initial 128 bytes nobody
/// sends, and every chunk costs a header parse: a 1-byte chunk size would make a
/// connection cost many times the CPU of a normal one.
pub const MIN_CHUNK_SIZE: u32 = 128;

/// Limits that protect the node from what one connection can make it hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Largest message accepted, in bytes (the protocol allows 2^24-1).
    pub max_message_size: u32,
    /// Most chunk streams one connection may use.
    pub max_chunk_streams: usize,
    /// Most bytes of unfinished messages held for one connection, all chunk streams
    /// together.
    pub max_partial_bytes: usize,
    /// Largest chunk size the peer may set (the protocol allows 2^31-1).
    pub max_chunk_size: u32,
    /// Smallest chunk size the peer may set ([`MIN_CHUNK_SIZE`]; lower only to measure
    /// what a smaller one would cost).
    pub min_chunk_size: u32,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        Self {
            max_message_size: 8 * 1024 * 1024,
            max_chunk_streams: 64,
            max_partial_bytes: 16 * 1024 * 1024,
            max_chunk_size: MAX_CHUNK_SIZE,
            min_chunk_size: MIN_CHUNK_SIZE,
        }
    }
}

/// The header fields a chunk stream remembers for the next chunk's header.
#[derive(Debug, Default, Clone, Copy)]
struct LastHeader {
    /// Absolute timestamp of the current (or last) message.
    timestamp: u32,
    /// Timestamp delta of the last header; applied again by a type-3 new message.
    delta: u32,
    /// Length of the current message.
    length: u32,
    /// Message type id of the current message.
    type_id: u8,
    /// Message stream id of the current message.
    stream_id: u32,
    /// Raw extended-timestamp value of the last header that carried one.
    extended: Option<u32>,
}

/// What one chunk stream remembers between chunks.
#[derive(Debug, Default)]
struct ChunkStreamState {
    /// Its chunk stream id.
    csid: u32,
    /// The last header's fields.
    last: LastHeader,
    /// Payload received so far of an unfinished message.
    partial: BytesMut,
    /// Whether a message is being assembled on this chunk stream.
    in_progress: bool,
}

/// Reassembles RTMP messages from a byte stream.
#[derive(Debug)]
pub struct ChunkReader {
    /// Current incoming chunk size, changed by the peer's Set Chunk Size.
    chunk_size: u32,
    /// Limits in force for this connection.
    limits: ChunkLimits,
    /// State per chunk stream, in order of first use (a handful, at most
    /// `max_chunk_streams`).
    streams: Vec<ChunkStreamState>,
    /// Where the one-byte chunk stream ids (2..=63, the ones encoders use) are in
    /// `streams`, plus one (0: not seen): one small array instead of a search through
    /// the states for every chunk. Larger ids are searched for.
    slots: [u8; 64],
    /// Whether [`ChunkReader::read_whole`] is tried first (off only in tests that hold
    /// it to the general path).
    fast_path: bool,
    /// Sum of `partial.len()` over all chunk streams.
    partial_bytes: usize,
    /// Total bytes consumed from the input, for acknowledgements.
    bytes_consumed: u64,
}

/// A chunk header fully parsed but not yet applied.
struct ParsedChunk {
    header_len: usize,
    csid: u32,
    /// Index of its chunk stream in `streams`; `None` for a new one.
    slot: Option<usize>,
    new_message: bool,
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: Option<u32>,
    payload_len: usize,
}

impl ChunkReader {
    pub fn new(limits: ChunkLimits) -> Self {
        Self {
            chunk_size: DEFAULT_CHUNK_SIZE,
            limits,
            streams: Vec::new(),
            slots: [0; 64],
            fast_path: true,
            partial_bytes: 0,
            bytes_consumed: 0,
        }
    }

    /// A reader that always takes the general path (to test the fast one against).
    #[doc(hidden)]
    pub fn without_fast_path(limits: ChunkLimits) -> Self {
        Self {
            fast_path: false,
            ..Self::new(limits)
        }
    }

    /// Replaces the limits (e.g. looser ones once the peer is trusted). Applies to
    /// what arrives from now on.
    pub fn set_limits(&mut self, limits: ChunkLimits) {
        self.limits = limits;
    }

    /// Current incoming chunk size.
    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Total bytes consumed so far (for the acknowledgement sequence number).
    pub fn bytes_consumed(&self) -> u64 {
        self.bytes_consumed
    }

    /// Bytes currently held in unfinished messages.
    pub fn partial_bytes(&self) -> usize {
        self.partial_bytes
    }

    /// Reads the next complete message from `buf`. `Ok(None)` means more bytes are
    /// needed; consumed bytes are removed from `buf`. Set Chunk Size and Abort Message
    /// are applied here and not returned.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<RawMessage>, ChunkError> {
        loop {
            let msg = match self.read_whole(buf) {
                Some(msg) => msg,
                None => {
                    let Some(chunk) = self.parse_chunk(buf)? else {
                        return Ok(None);
                    };
                    let Some(msg) = self.apply_chunk(chunk, buf)? else {
                        continue;
                    };
                    msg
                }
            };
            match msg.type_id {
                MSG_SET_CHUNK_SIZE => self.apply_set_chunk_size(&msg.payload)?,
                MSG_ABORT => self.apply_abort(&msg.payload)?,
                _ => return Ok(Some(msg)),
            }
        }
    }

    /// The usual chunk in one pass: a one-byte basic header (chunk streams 2..=63) on
    /// a chunk stream seen before, no extended timestamp, starting a message and
    /// holding all of it, entirely in `buf`. `None` for anything else, which the
    /// general path ([`ChunkReader::parse_chunk`], [`ChunkReader::apply_chunk`])
    /// handles, limits and errors included: this only skips its bookkeeping.
    #[inline]
    fn read_whole(&mut self, buf: &mut BytesMut) -> Option<RawMessage> {
        if !self.fast_path {
            return None;
        }
        let b0 = *buf.first()?;
        let fmt = b0 >> 6;
        let csid = u32::from(b0 & 0x3f);
        let slot = *self.slots.get(csid as usize)?;
        if csid < 2 || slot == 0 {
            return None;
        }
        let st = &mut self.streams[slot as usize - 1];
        if st.in_progress || st.last.extended.is_some() {
            return None;
        }
        let header_len = [12usize, 8, 4, 1][fmt as usize];
        let h = buf.get(1..header_len)?;
        let last = st.last;
        let next = if fmt == 3 {
            LastHeader {
                timestamp: last.timestamp.wrapping_add(last.delta),
                ..last
            }
        } else {
            let field = read_u24(h);
            if field == EXTENDED_TIMESTAMP {
                return None;
            }
            let (length, type_id) = if fmt <= 1 {
                (read_u24(&h[3..]), h[6])
            } else {
                (last.length, last.type_id)
            };
            let (timestamp, stream_id) = if fmt == 0 {
                (field, u32::from_le_bytes([h[7], h[8], h[9], h[10]]))
            } else {
                (last.timestamp.wrapping_add(field), last.stream_id)
            };
            LastHeader {
                timestamp,
                delta: field,
                length,
                type_id,
                stream_id,
                extended: None,
            }
        };
        let len = next.length as usize;
        if next.length > self.limits.max_message_size
            || next.length > self.chunk_size
            || buf.len() < header_len + len
        {
            return None;
        }
        st.last = next;
        buf.advance(header_len);
        self.bytes_consumed += (header_len + len) as u64;
        Some(RawMessage {
            csid,
            timestamp: next.timestamp,
            type_id: next.type_id,
            stream_id: next.stream_id,
            payload: buf.split_to(len).freeze(),
        })
    }

    fn apply_set_chunk_size(&mut self, payload: &[u8]) -> Result<(), ChunkError> {
        let raw = read_u32(payload).ok_or(ChunkError::BadControlMessage("Set Chunk Size"))?;
        let size = raw & MAX_CHUNK_SIZE;
        if size < self.limits.min_chunk_size.max(1) {
            return Err(ChunkError::InvalidChunkSize(raw));
        }
        if size > self.limits.max_chunk_size {
            return Err(ChunkError::ChunkSizeTooLarge {
                size,
                max: self.limits.max_chunk_size,
            });
        }
        self.chunk_size = size;
        Ok(())
    }

    fn apply_abort(&mut self, payload: &[u8]) -> Result<(), ChunkError> {
        let csid = read_u32(payload).ok_or(ChunkError::BadControlMessage("Abort Message"))?;
        if let Some(i) = self.slot(csid) {
            let s = &mut self.streams[i];
            self.partial_bytes -= s.partial.len();
            s.partial = BytesMut::new();
            s.in_progress = false;
        }
        Ok(())
    }

    /// Where the state of chunk stream `csid` is in `streams`.
    fn slot(&self, csid: u32) -> Option<usize> {
        match self.slots.get(csid as usize) {
            Some(&0) | None => self.streams.iter().position(|s| s.csid == csid),
            Some(&i) => Some(i as usize - 1),
        }
    }

    /// Parses the chunk at the front of `buf` without consuming anything. `None` when the
    /// whole chunk (header and payload) is not there yet.
    fn parse_chunk(&self, buf: &[u8]) -> Result<Option<ParsedChunk>, ChunkError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3f {
            0 => match buf.get(1) {
                Some(&b1) => (64 + b1 as u32, 2),
                None => return Ok(None),
            },
            1 => match (buf.get(1), buf.get(2)) {
                (Some(&b1), Some(&b2)) => (64 + b1 as u32 + 256 * b2 as u32, 3),
                _ => return Ok(None),
            },
            n => (n as u32, 1),
        };

        let slot = self.slot(csid);
        let prev = slot.map(|i| &self.streams[i]);
        if prev.is_none() {
            if fmt != 0 {
                return Err(ChunkError::MissingPreviousHeader { csid, fmt });
            }
            if self.streams.len() >= self.limits.max_chunk_streams {
                return Err(ChunkError::TooManyChunkStreams(
                    self.limits.max_chunk_streams,
                ));
            }
        }

        let header_size = [11usize, 7, 3, 0][fmt as usize];
        if buf.len() < pos + header_size {
            return Ok(None);
        }
        let h = &buf[pos..pos + header_size];
        pos += header_size;

        let (st, in_progress, received) = match prev {
            Some(p) if p.in_progress => (p.last, true, p.partial.len()),
            Some(p) => (p.last, false, 0),
            None => (LastHeader::default(), false, 0),
        };
        if in_progress && fmt != 3 {
            return Err(ChunkError::HeaderMidMessage { csid, fmt });
        }

        let (mut length, mut type_id, mut stream_id) = (st.length, st.type_id, st.stream_id);
        let ts_field = if fmt < 3 { read_u24(h) } else { 0 };
        if fmt <= 1 {
            length = read_u24(&h[3..]);
            type_id = h[6];
        }
        if fmt == 0 {
            stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
        }

        // Extended timestamp.
        let mut extended = None;
        if fmt < 3 {
            if ts_field == EXTENDED_TIMESTAMP {
                if buf.len() < pos + 4 {
                    return Ok(None);
                }
                extended = Some(read_u32(&buf[pos..]).unwrap_or(0));
                pos += 4;
            }
        } else if let Some(prev_ext) = st.extended {
            // Lenient: consume the four bytes only when they repeat the last value.
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            if read_u32(&buf[pos..]) == Some(prev_ext) {
                pos += 4;
            }
            extended = Some(prev_ext);
        }
        let field = extended.unwrap_or(ts_field);

        let new_message = !in_progress;
        let (timestamp, delta) = match fmt {
            0 => (field, field),
            1 | 2 => (st.timestamp.wrapping_add(field), field),
            _ if new_message => (st.timestamp.wrapping_add(st.delta), st.delta),
            _ => (st.timestamp, st.delta),
        };

        if length > self.limits.max_message_size {
            return Err(ChunkError::MessageTooLarge {
                length,
                max: self.limits.max_message_size,
            });
        }
        let remaining = length as usize - received;
        let payload_len = remaining.min(self.chunk_size as usize);
        if !new_message || payload_len < remaining {
            // This chunk adds to a partial payload: enforce the per-connection cap.
            if self.partial_bytes + payload_len > self.limits.max_partial_bytes {
                return Err(ChunkError::TooMuchPartialData(
                    self.limits.max_partial_bytes,
                ));
            }
        }
        if buf.len() < pos + payload_len {
            return Ok(None);
        }
        Ok(Some(ParsedChunk {
            header_len: pos,
            csid,
            slot,
            new_message,
            timestamp,
            delta,
            length,
            type_id,
            stream_id,
            extended,
            payload_len,
        }))
    }

    /// Consumes the parsed chunk from `buf` and updates the chunk stream. Returns the
    /// message it completed, if any.
    fn apply_chunk(
        &mut self,
        c: ParsedChunk,
        buf: &mut BytesMut,
    ) -> Result<Option<RawMessage>, ChunkError> {
        buf.advance(c.header_len);
        self.bytes_consumed += (c.header_len + c.payload_len) as u64;
        let i = match c.slot {
            Some(i) => i,
            None => {
                self.streams.push(ChunkStreamState {
                    csid: c.csid,
                    ..ChunkStreamState::default()
                });
                let i = self.streams.len() - 1;
                if let Some(slot) = self.slots.get_mut(c.csid as usize) {
                    // At most `max_chunk_streams` entries; a limit above 255 falls
                    // back to the search.
                    *slot = u8::try_from(i + 1).unwrap_or(0);
                }
                i
            }
        };
        let st = &mut self.streams[i];
        st.last = LastHeader {
            timestamp: c.timestamp,
            delta: c.delta,
            length: c.length,
            type_id: c.type_id,
            stream_id: c.stream_id,
            extended: c.extended,
        };

        let whole = c.new_message && c.payload_len == c.length as usize;
        let payload = if whole {
            // Fast path: the message is one chunk; hand out a slice of the input.
            buf.split_to(c.payload_len).freeze()
        } else {
            if c.new_message {
                // Room for the whole message at once (no regrowth and copy as its
                // chunks arrive), but never more than [`RESERVE_AHEAD`] nor what the
                // connection may still hold unfinished: an announced length alone
                // cannot make it reserve more than the bound on unfinished bytes.
                let budget = self
                    .limits
                    .max_partial_bytes
                    .saturating_sub(self.partial_bytes)
                    / self.limits.max_chunk_streams.max(1);
                st.partial
                    .reserve((c.length as usize).min(budget).min(RESERVE_AHEAD));
            }
            st.partial.extend_from_slice(&buf[..c.payload_len]);
            buf.advance(c.payload_len);
            self.partial_bytes += c.payload_len;
            if st.partial.len() < c.length as usize {
                st.in_progress = true;
                return Ok(None);
            }
            self.partial_bytes -= st.partial.len();
            st.in_progress = false;
            std::mem::take(&mut st.partial).freeze()
        };
        Ok(Some(RawMessage {
            csid: c.csid,
            timestamp: c.timestamp,
            type_id: c.type_id,
            stream_id: c.stream_id,
            payload,
        }))
    }
}

fn read_u24(b: &[u8]) -> u32 {
    (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32
}

fn read_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room reserved for messages split over chunks comes out of the bound on
    /// unfinished bytes, shared by the chunk streams: announcing large messages on many
    /// chunk streams does not make the reader reserve more than that bound.
    #[test]
    fn announced_lengths_cannot_reserve_more_than_the_unfinished_bytes_bound() {
        let limits = ChunkLimits {
            max_message_size: 1 << 20,
            max_chunk_streams: 8,
            max_partial_bytes: 64 * 1024,
            ..ChunkLimits::default()
        };
        let mut r = ChunkReader::new(limits);
        let mut buf = BytesMut::new();
        for csid in 2..10u8 {
            // Type 0: timestamp 0, length 1 MiB, video, stream 1; then its first chunk.
            buf.extend_from_slice(&[csid, 0, 0, 0, 0x10, 0, 0, 9, 1, 0, 0, 0]);
            buf.extend_from_slice(&[0u8; 128]);
        }
        assert_eq!(r.read(&mut buf), Ok(None));
        let reserved: usize = r.streams.iter().map(|s| s.partial.capacity()).sum();
        assert!(reserved <= 64 * 1024, "{reserved} bytes reserved");
        assert_eq!(r.partial_bytes(), 8 * 128);
    }
}
