//! What the chunk size a publisher picks costs the node: the same media (the 360p
//! file's tags, in order) chunked at each size and read back by the node's chunk
//! reader and server session, timed in process. The node refuses chunk sizes below
//! 128 bytes; the reader is told to accept smaller ones here only to show what they
//! would cost.

use std::time::Instant;

use bytes::BytesMut;
use rtmp::chunk::{ChunkLimits, ChunkReader, ChunkWriter, OutputQueue, RawMessage};

use crate::flv_source::FlvSource;

/// One row: CPU time per MiB of media read at `chunk_size`.
#[derive(Debug, serde::Serialize)]
pub struct ChunkCost {
    pub chunk_size: u32,
    pub wire_bytes: usize,
    pub ns_per_media_byte: f64,
    /// Against the 4096-byte chunk size ffmpeg and OBS use.
    pub vs_4096: f64,
}

/// Chunks `source`'s tags at `size` (about `mib` MiB of media), then times the reader.
fn measure(source: &FlvSource, size: u32, mib: usize) -> (usize, f64, usize) {
    let mut writer = ChunkWriter::new();
    writer.set_chunk_size(size);
    let mut out = OutputQueue::new();
    let mut media = 0usize;
    let mut n = 0u64;
    while media < mib << 20 {
        let (ts, tag) = source.tag(n);
        n += 1;
        media += tag.body.len();
        writer.write(
            &RawMessage {
                csid: 6,
                timestamp: ts,
                type_id: tag.type_id,
                stream_id: 1,
                payload: tag.body.clone(),
            },
            &mut out,
        );
    }
    let wire = out.take_contiguous();
    let wire_len = wire.len();
    let mut reader = ChunkReader::new(ChunkLimits {
        min_chunk_size: 1,
        ..ChunkLimits::default()
    });
    // The reader must know the chunk size, as if announced.
    let mut announce = BytesMut::new();
    let mut w = ChunkWriter::new();
    let mut q = OutputQueue::new();
    w.write(&rtmp::message::set_chunk_size(size), &mut q);
    announce.extend_from_slice(&q.take_contiguous());
    while reader.read(&mut announce).unwrap().is_some() {}
    // Fed in 64 KiB reads, as from a socket.
    let started = Instant::now();
    let mut messages = 0usize;
    let mut buf = BytesMut::with_capacity(128 * 1024);
    for piece in wire.chunks(64 * 1024) {
        buf.extend_from_slice(piece);
        while let Some(m) = reader.read(&mut buf).unwrap() {
            std::hint::black_box(&m);
            messages += 1;
        }
    }
    let ns = started.elapsed().as_nanos() as f64 / media as f64;
    (wire_len, ns, messages)
}

/// Measures each size in `sizes` (reading `mib` MiB of media at each), best of 3.
pub fn chunk_cost(source: &FlvSource, sizes: &[u32], mib: usize) -> Vec<ChunkCost> {
    let best = |size: u32| {
        (0..3)
            .map(|_| measure(source, size, mib))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("three runs")
    };
    let (_, base, _) = best(4096);
    sizes
        .iter()
        .map(|&size| {
            let (wire_bytes, ns, _) = best(size);
            ChunkCost {
                chunk_size: size,
                wire_bytes,
                ns_per_media_byte: ns,
                vs_4096: ns / base,
            }
        })
        .collect()
}
