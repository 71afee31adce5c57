//! The RTMP chunk stream (RTMP 1.0 section 5.3): messages in, chunks out, and back.

pub mod reader;
pub mod writer;

use bytes::Bytes;

pub use reader::{ChunkLimits, ChunkReader, DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE};
pub use writer::{ChunkWriter, OutputQueue};

/// Value of the 24-bit timestamp field that announces a 32-bit extended timestamp.
pub const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
/// Message type id of Set Chunk Size.
pub const MSG_SET_CHUNK_SIZE: u8 = 1;
/// Message type id of Abort Message.
pub const MSG_ABORT: u8 = 2;

/// One message as carried by the chunk stream, before interpretation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    /// Chunk stream id it arrived on (or is to be sent on).
    pub csid: u32,
    /// Absolute timestamp, milliseconds (wraps at 2^32).
    pub timestamp: u32,
    /// Message type id.
    pub type_id: u8,
    /// Message stream id.
    pub stream_id: u32,
    /// The payload; a slice of the receive buffer when possible.
    pub payload: Bytes,
}

/// Why the chunk stream of a connection cannot be read further. Every variant closes
/// the connection; none is a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("message of {length} bytes exceeds the limit of {max} bytes")]
    MessageTooLarge { length: u32, max: u32 },
    #[error("more than {0} chunk streams on one connection")]
    TooManyChunkStreams(usize),
    #[error("more than {0} bytes of unfinished messages on one connection")]
    TooMuchPartialData(usize),
    #[error(
        "chunk stream {csid} starts with a type-{fmt} header (needs a previous type-0 header)"
    )]
    MissingPreviousHeader { csid: u32, fmt: u8 },
    #[error("chunk stream {csid} got a type-{fmt} header in the middle of a message")]
    HeaderMidMessage { csid: u32, fmt: u8 },
    #[error("invalid chunk size {0} (at least 128)")]
    InvalidChunkSize(u32),
    #[error("chunk size {size} exceeds the limit of {max} bytes")]
    ChunkSizeTooLarge { size: u32, max: u32 },
    #[error("malformed {0}")]
    BadControlMessage(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn read_all(reader: &mut ChunkReader, bytes: &[u8]) -> Vec<RawMessage> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = reader.read(&mut buf).unwrap() {
            out.push(m);
        }
        assert!(buf.is_empty(), "unconsumed: {:?}", &buf[..]);
        out
    }

    fn reader() -> ChunkReader {
        ChunkReader::new(ChunkLimits::default())
    }

    /// Type-0 header on a one-byte basic header.
    fn type0(csid: u8, ts: u32, len: u32, type_id: u8, sid: u32) -> Vec<u8> {
        let mut v = vec![csid];
        v.extend_from_slice(&ts.min(EXTENDED_TIMESTAMP).to_be_bytes()[1..]);
        v.extend_from_slice(&len.to_be_bytes()[1..]);
        v.push(type_id);
        v.extend_from_slice(&sid.to_le_bytes());
        if ts >= EXTENDED_TIMESTAMP {
            v.extend_from_slice(&ts.to_be_bytes());
        }
        v
    }

    #[test]
    fn all_four_header_types() {
        let mut b = type0(4, 1000, 3, 9, 1);
        b.extend_from_slice(b"abc");
        // type 1: delta 40, new length 2, type 8
        b.extend_from_slice(&[0x40 | 4, 0, 0, 40, 0, 0, 2, 8]);
        b.extend_from_slice(b"de");
        // type 2: delta 10, same length/type
        b.extend_from_slice(&[0x80 | 4, 0, 0, 10]);
        b.extend_from_slice(b"fg");
        // type 3 starting a new message: delta 10 applied again
        b.push(0xC0 | 4);
        b.extend_from_slice(b"hi");
        let msgs = read_all(&mut reader(), &b);
        let summary: Vec<_> = msgs
            .iter()
            .map(|m| (m.timestamp, m.type_id, m.stream_id, &m.payload[..]))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1000, 9, 1, &b"abc"[..]),
                (1040, 8, 1, &b"de"[..]),
                (1050, 8, 1, &b"fg"[..]),
                (1060, 8, 1, &b"hi"[..]),
            ]
        );
    }

    #[test]
    fn type3_after_type0_reapplies_the_type0_field_as_delta() {
        // As ffmpeg and SRS read it: after a type-0 header the "delta" is its field.
        let mut b = type0(5, 20, 1, 8, 1);
        b.push(b'x');
        b.push(0xC0 | 5);
        b.push(b'y');
        let msgs = read_all(&mut reader(), &b);
        assert_eq!(msgs[1].timestamp, 40);
    }

    #[test]
    fn message_split_across_chunks() {
        let payload: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut b = type0(6, 5, 300, 9, 1);
        b.extend_from_slice(&payload[..128]);
        b.push(0xC0 | 6);
        b.extend_from_slice(&payload[128..256]);
        b.push(0xC0 | 6);
        b.extend_from_slice(&payload[256..]);
        let msgs = read_all(&mut reader(), &b);
        assert_eq!(msgs.len(), 1);
        assert_eq!(&msgs[0].payload[..], &payload[..]);
        assert_eq!(msgs[0].timestamp, 5);
    }

    #[test]
    fn interleaved_chunk_streams() {
        // Message A (csid 6, 200 bytes) is interrupted by two whole messages on csid 4
        // and 7 between its chunks.
        let a: Vec<u8> = vec![0xAA; 200];
        let mut b = type0(6, 0, 200, 9, 1);
        b.extend_from_slice(&a[..128]);
        b.extend(type0(4, 7, 2, 8, 1));
        b.extend_from_slice(b"au");
        b.extend(type0(7, 9, 3, 18, 1));
        b.extend_from_slice(b"dat");
        b.push(0xC0 | 6);
        b.extend_from_slice(&a[128..]);
        let msgs = read_all(&mut reader(), &b);
        let ids: Vec<_> = msgs.iter().map(|m| (m.csid, m.payload.len())).collect();
        assert_eq!(ids, vec![(4, 2), (7, 3), (6, 200)]);
        assert_eq!(&msgs[2].payload[..], &a[..]);
    }

    #[test]
    fn extended_timestamp_on_type0_and_type3_with_or_without_repeat() {
        let ts = 0x0100_0000;
        let payload = [1u8; 200];
        // Encoder that repeats the extended timestamp on continuation chunks.
        let mut with = type0(6, ts, 200, 9, 1);
        with.extend_from_slice(&payload[..128]);
        with.push(0xC0 | 6);
        with.extend_from_slice(&(ts).to_be_bytes());
        with.extend_from_slice(&payload[128..]);
        // Encoder that does not (obs-studio#10097).
        let mut without = type0(6, ts, 200, 9, 1);
        without.extend_from_slice(&payload[..128]);
        without.push(0xC0 | 6);
        without.extend_from_slice(&payload[128..]);
        for bytes in [with, without] {
            let msgs = read_all(&mut reader(), &bytes);
            assert_eq!(msgs.len(), 1);
            assert_eq!(msgs[0].timestamp, ts);
            assert_eq!(&msgs[0].payload[..], &payload[..]);
        }
    }

    #[test]
    fn extended_delta_on_type3_new_message() {
        let mut b = type0(6, 0x0100_0000, 1, 9, 1);
        b.push(7);
        // Type 3 starting a new message repeats the extended field: absolute+field.
        b.push(0xC0 | 6);
        b.extend_from_slice(&0x0100_0000u32.to_be_bytes());
        b.push(8);
        let msgs = read_all(&mut reader(), &b);
        assert_eq!(msgs[1].timestamp, 0x0200_0000);
        assert_eq!(&msgs[1].payload[..], &[8]);
    }

    #[test]
    fn two_and_three_byte_basic_headers() {
        let mut b = vec![0x00, 100 - 64];
        b.extend_from_slice(&type0(0, 1, 1, 8, 1)[1..]);
        b.push(b'a');
        let csid = 1000u32;
        b.extend_from_slice(&[0x01, ((csid - 64) & 0xff) as u8, ((csid - 64) >> 8) as u8]);
        b.extend_from_slice(&type0(0, 2, 1, 8, 1)[1..]);
        b.push(b'b');
        let msgs = read_all(&mut reader(), &b);
        assert_eq!(msgs[0].csid, 100);
        assert_eq!(msgs[1].csid, 1000);
    }

    #[test]
    fn set_chunk_size_and_abort() {
        let mut b = type0(2, 0, 4, MSG_SET_CHUNK_SIZE, 0);
        b.extend_from_slice(&0x7FFF_FFFFu32.to_be_bytes());
        let mut r = reader();
        assert!(read_all(&mut r, &b).is_empty());
        assert_eq!(r.chunk_size(), MAX_CHUNK_SIZE);

        let mut r = reader();
        let mut b = type0(6, 0, 200, 9, 1);
        b.extend_from_slice(&[0u8; 128]);
        b.extend(type0(2, 0, 4, MSG_ABORT, 0));
        b.extend_from_slice(&6u32.to_be_bytes());
        // After the abort a fresh message starts on csid 6 with a type-0 header.
        b.extend(type0(6, 1, 1, 9, 1));
        b.push(b'z');
        let msgs = read_all(&mut r, &b);
        assert_eq!(msgs.len(), 1);
        assert_eq!(&msgs[0].payload[..], b"z");
        assert_eq!(r.partial_bytes(), 0);

        // Below 128 bytes a chunk size only multiplies the header work: refused.
        for size in [0u32, 1, 127] {
            let mut b = type0(2, 0, 4, MSG_SET_CHUNK_SIZE, 0);
            b.extend_from_slice(&size.to_be_bytes());
            let mut buf = BytesMut::from(&b[..]);
            assert_eq!(
                reader().read(&mut buf),
                Err(ChunkError::InvalidChunkSize(size))
            );
        }
        // Above the connection's limit: refused too.
        let mut b = type0(2, 0, 4, MSG_SET_CHUNK_SIZE, 0);
        b.extend_from_slice(&70_000u32.to_be_bytes());
        let mut r = ChunkReader::new(ChunkLimits {
            max_chunk_size: 65_536,
            ..ChunkLimits::default()
        });
        assert_eq!(
            r.read(&mut BytesMut::from(&b[..])),
            Err(ChunkError::ChunkSizeTooLarge {
                size: 70_000,
                max: 65_536
            })
        );
        // Looser limits apply from the next message on.
        r.set_limits(ChunkLimits::default());
        assert!(r.read(&mut BytesMut::from(&b[..])).unwrap().is_none());
        assert_eq!(r.chunk_size(), 70_000);
    }

    #[test]
    fn byte_at_a_time_gives_the_same_messages() {
        let mut w = ChunkWriter::new();
        let mut out = OutputQueue::new();
        let msgs: Vec<RawMessage> = (0..5u32)
            .map(|i| RawMessage {
                csid: 4 + (i % 2),
                timestamp: i * 33,
                type_id: 9,
                stream_id: 1,
                payload: Bytes::from(vec![i as u8; 50 + 100 * i as usize]),
            })
            .collect();
        for m in &msgs {
            w.write(m, &mut out);
        }
        let bytes = out.take_contiguous();
        let mut r = reader();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in bytes.iter() {
            buf.put_u8(*b);
            while let Some(m) = r.read(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs);
        assert_eq!(r.bytes_consumed(), bytes.len() as u64);
    }

    #[test]
    fn limits_close_the_connection_without_allocating() {
        let limits = ChunkLimits {
            max_message_size: 1000,
            max_chunk_streams: 3,
            max_partial_bytes: 300,
            ..ChunkLimits::default()
        };
        // Announced length over the limit is refused before any payload arrives.
        let mut buf = BytesMut::from(&type0(4, 0, 0xFF_FFFF, 9, 1)[..]);
        assert!(matches!(
            ChunkReader::new(limits).read(&mut buf),
            Err(ChunkError::MessageTooLarge { .. })
        ));
        // Many chunk streams.
        let mut b = Vec::new();
        for csid in 3..10u8 {
            b.extend(type0(csid, 0, 1, 8, 1));
            b.push(0);
        }
        let mut buf = BytesMut::from(&b[..]);
        let mut r = ChunkReader::new(limits);
        let err = loop {
            match r.read(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("limit not enforced"),
                Err(e) => break e,
            }
        };
        assert_eq!(err, ChunkError::TooManyChunkStreams(3));
        // Partial payloads on several chunk streams, each under the message limit.
        let mut b = Vec::new();
        for csid in 3..6u8 {
            b.extend(type0(csid, 0, 900, 9, 1));
            b.extend_from_slice(&[0u8; 128]);
        }
        let mut buf = BytesMut::from(&b[..]);
        assert_eq!(
            ChunkReader::new(limits).read(&mut buf),
            Err(ChunkError::TooMuchPartialData(300))
        );
    }

    #[test]
    fn protocol_violations_are_errors() {
        let mut buf = BytesMut::from(&[0x40 | 5, 0, 0, 1, 0, 0, 1, 8][..]);
        assert_eq!(
            reader().read(&mut buf),
            Err(ChunkError::MissingPreviousHeader { csid: 5, fmt: 1 })
        );
        let mut b = type0(5, 0, 200, 9, 1);
        b.extend_from_slice(&[0; 128]);
        b.extend(type0(5, 0, 1, 9, 1));
        let mut buf = BytesMut::from(&b[..]);
        assert_eq!(
            reader().read(&mut buf),
            Err(ChunkError::HeaderMidMessage { csid: 5, fmt: 0 })
        );
    }

    #[test]
    fn writer_uses_compressed_headers_and_large_chunks() {
        let mut w = ChunkWriter::new();
        w.set_chunk_size(60000);
        let mut out = OutputQueue::new();
        let payload = Bytes::from(vec![7u8; 10_000]);
        for i in 0..3u32 {
            w.write(
                &RawMessage {
                    csid: 6,
                    timestamp: i * 40,
                    type_id: 9,
                    stream_id: 1,
                    payload: payload.clone(),
                },
                &mut out,
            );
        }
        // 12-byte type-0 header, then 4-byte type-2 headers; the payload itself is
        // queued by reference, never copied.
        assert_eq!(out.len(), 12 + 4 + 4 + 30_000);
        let mut slices = [std::io::IoSlice::new(&[]); 16];
        let n = out.io_slices(&mut slices);
        assert_eq!(n, 6);
        assert_eq!(slices[1].as_ptr(), payload.as_ptr());
    }

    #[test]
    fn output_queue_partial_advance() {
        let mut q = OutputQueue::new();
        q.push(Bytes::from_static(b"hello"));
        q.push(Bytes::from_static(b"world"));
        q.advance(7);
        assert_eq!(q.len(), 3);
        assert_eq!(&q.take_contiguous()[..], b"rld");
    }

    #[test]
    fn small_messages_become_one_contiguous_buffer() {
        // A read's audio and video frames, as a relay writes them: headers and
        // payloads copied into one buffer, written with one plain send.
        let mut w = ChunkWriter::new();
        w.set_chunk_size(60000);
        let mut out = OutputQueue::new();
        let video = Bytes::from(vec![9u8; 1500]);
        let audio = Bytes::from(vec![8u8; 170]);
        w.write_message(6, 0, 9, 1, &video, &mut out);
        w.write_message(4, 0, 8, 1, &audio, &mut out);
        let one = out.as_contiguous().expect("one buffer");
        assert_eq!(one.len(), 12 + 1500 + 12 + 170);
        assert_ne!(one[12..].as_ptr(), video.as_ptr(), "copied, not referenced");
        let mut slices = [std::io::IoSlice::new(&[]); 4];
        assert_eq!(out.io_slices(&mut slices), 1);
        // Partly written, then the rest: what is left keeps its order.
        out.advance(100);
        assert_eq!(out.len(), 1594);
        assert_eq!(out.as_contiguous().unwrap()[0], 9);
        out.advance(1594);
        assert!(out.is_empty());
        assert_eq!(out.as_contiguous(), Some(&[][..]));
    }

    #[test]
    fn copied_and_referenced_pieces_keep_their_order() {
        let mut out = OutputQueue::new();
        let big = Bytes::from(vec![1u8; writer::COPY_LIMIT + 1]);
        out.push_slice(b"head");
        out.push(big.clone());
        out.push_slice(b"tail");
        assert!(out.as_contiguous().is_none());
        let mut slices = [std::io::IoSlice::new(&[]); 8];
        let n = out.io_slices(&mut slices);
        assert_eq!(n, 3);
        assert_eq!(&slices[0][..], b"head");
        assert_eq!(
            slices[1].as_ptr(),
            big.as_ptr(),
            "large payloads are not copied"
        );
        assert_eq!(&slices[2][..], b"tail");
        // Across the boundary between a referenced piece and the copied bytes.
        out.advance(4 + big.len() + 2);
        assert_eq!(&out.take_contiguous()[..], b"il");
    }

    mod prop {
        use super::super::*;
        use bytes::BytesMut;
        use proptest::prelude::*;

        /// A chunk stream using every header type where the previous message of its
        /// chunk stream allows it (type 3 for a new message too), extended timestamps
        /// (repeated on continuation chunks), and the given chunk size. Each message
        /// is (csid, one of four shapes, a seed choosing the header type).
        fn encode_any_headers(chunk_size: u32, msgs: &[(u32, usize, u8)]) -> Vec<u8> {
            // Shapes: (timestamp delta, length, type id, stream id).
            const SHAPES: [(u32, usize, u8, u32); 4] = [
                (40, 300, 9, 1),
                (21, 7, 8, 1),
                (0x0100_0000, 100, 9, 1),
                (33, 0, 18, 0),
            ];
            let mut out = Vec::new();
            let put_u24 = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes()[1..]);
            // Set Chunk Size on csid 2 first.
            out.extend_from_slice(&[2, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
            out.extend_from_slice(&chunk_size.to_be_bytes());
            // Per chunk stream, as the reader sees it: (timestamp, delta, length, type,
            // stream id, whether the last header carried an extended timestamp).
            let mut last: std::collections::HashMap<u32, (u32, u32, usize, u8, u32, bool)> =
                std::collections::HashMap::new();
            for &(csid, shape, seed) in msgs {
                let (delta, len, type_id, sid) = SHAPES[shape];
                let prev = last.get(&csid).copied();
                let ts = prev.map_or(delta, |p| p.0.wrapping_add(delta));
                let allowed: Vec<u8> = match prev {
                    None => vec![0],
                    Some(p) => {
                        let mut a = vec![0];
                        if p.4 == sid {
                            a.push(1);
                            if p.2 == len && p.3 == type_id {
                                a.push(2);
                                if p.1 == delta {
                                    a.push(3);
                                }
                            }
                            // A repeated shape on a stream stays type 3 often.
                            if p.1 == delta && p.2 == len && p.3 == type_id && seed % 2 == 0 {
                                a.retain(|f| *f == 3);
                            }
                        }
                        a
                    }
                };
                let fmt = allowed[seed as usize % allowed.len()];
                // After a type-0 header the reader's delta is its absolute field.
                let field = if fmt == 0 { ts } else { delta };
                let extended = field >= EXTENDED_TIMESTAMP;
                out.push(fmt << 6 | csid as u8);
                if fmt < 3 {
                    put_u24(&mut out, field.min(EXTENDED_TIMESTAMP));
                }
                if fmt < 2 {
                    put_u24(&mut out, len as u32);
                    out.push(type_id);
                }
                if fmt == 0 {
                    out.extend_from_slice(&sid.to_le_bytes());
                }
                // A type-3 header repeats the extended field of the last header.
                let ext = if fmt == 3 {
                    prev.is_some_and(|p| p.5)
                } else {
                    extended
                };
                if ext {
                    out.extend_from_slice(&field.to_be_bytes());
                }
                let payload: Vec<u8> = (0..len).map(|i| (i as u8) ^ seed).collect();
                for (i, piece) in payload.chunks(chunk_size as usize).enumerate() {
                    if i > 0 {
                        out.push(3 << 6 | csid as u8);
                        if ext {
                            out.extend_from_slice(&field.to_be_bytes());
                        }
                    }
                    out.extend_from_slice(piece);
                }
                last.insert(csid, (ts, field, len, type_id, sid, ext));
            }
            out
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
                let mut r = ChunkReader::new(ChunkLimits { max_message_size: 4096, max_chunk_streams: 8, max_partial_bytes: 8192, ..ChunkLimits::default() });
                let mut buf = BytesMut::from(&bytes[..]);
                while let Ok(Some(_)) = r.read(&mut buf) {}
                prop_assert!(r.partial_bytes() <= 8192);
            }

            /// The fast path reads exactly what the general path reads, errors
            /// included, whatever the header types (type-3 headers starting new
            /// messages, extended timestamps), the chunk size and how the bytes are
            /// split across reads.
            #[test]
            fn the_fast_path_reads_what_the_general_path_reads(
                chunk_size in MIN_CHUNK_SIZE..300,
                msgs in prop::collection::vec((2u32..6, 0usize..4, any::<u8>()), 1..40),
                noise in prop::collection::vec(any::<u8>(), 0..16),
                noise_at in 0usize..4000,
                split in 1usize..400,
            ) {
                let mut bytes = encode_any_headers(chunk_size, &msgs);
                if !noise.is_empty() {
                    let at = noise_at.min(bytes.len());
                    bytes.splice(at..at, noise);
                }
                let limits = ChunkLimits { max_message_size: 700, ..ChunkLimits::default() };
                let run = |mut r: ChunkReader| {
                    let mut got = Vec::new();
                    let mut buf = BytesMut::new();
                    for piece in bytes.chunks(split) {
                        buf.extend_from_slice(piece);
                        loop {
                            match r.read(&mut buf) {
                                Ok(Some(m)) => got.push(Ok(m)),
                                Ok(None) => break,
                                Err(e) => {
                                    got.push(Err(e));
                                    return (got, r.bytes_consumed());
                                }
                            }
                        }
                    }
                    (got, r.bytes_consumed())
                };
                let fast = run(ChunkReader::new(limits));
                let general = run(ChunkReader::without_fast_path(limits));
                prop_assert_eq!(fast, general);
            }

            #[test]
            fn writer_reader_round_trip(
                chunk_size in MIN_CHUNK_SIZE..600,
                msgs in prop::collection::vec((2u32..400, any::<u32>(), 8u8..10, 0u32..3, 0usize..900), 1..12),
            ) {
                let mut w = ChunkWriter::new();
                let mut out = OutputQueue::new();
                // Announce the chunk size the way a session does.
                w.write(&RawMessage { csid: 2, timestamp: 0, type_id: MSG_SET_CHUNK_SIZE, stream_id: 0,
                    payload: Bytes::copy_from_slice(&chunk_size.to_be_bytes()) }, &mut out);
                w.set_chunk_size(chunk_size);
                let msgs: Vec<RawMessage> = msgs.into_iter().map(|(csid, ts, t, sid, len)| RawMessage {
                    csid, timestamp: ts, type_id: t, stream_id: sid,
                    payload: Bytes::from((0..len).map(|i| i as u8).collect::<Vec<_>>()),
                }).collect();
                for m in &msgs { w.write(m, &mut out); }
                let mut buf = out.take_contiguous();
                let mut r = ChunkReader::new(ChunkLimits::default());
                let mut got = Vec::new();
                while let Some(m) = r.read(&mut buf).unwrap() { got.push(m); }
                prop_assert_eq!(got, msgs);
            }
        }
    }
}
