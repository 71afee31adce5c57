//! The chunk reader on arbitrary bytes, fed in two pieces (a split anywhere must not
//! change what is read), under tight limits: never a panic, never more partial data
//! held than the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rtmp::chunk::{ChunkLimits, ChunkReader};

fuzz_target!(|data: &[u8]| {
    let limits = ChunkLimits {
        max_message_size: 1 << 16,
        max_chunk_streams: 8,
        max_partial_bytes: 1 << 17,
        ..ChunkLimits::default()
    };
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut r = ChunkReader::new(limits);
    let mut buf = BytesMut::from(&data[..split]);
    let mut failed = false;
    loop {
        match r.read(&mut buf) {
            Ok(Some(m)) => assert!(m.payload.len() <= limits.max_message_size as usize),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if !failed {
        buf.extend_from_slice(&data[split..]);
        while let Ok(Some(_)) = r.read(&mut buf) {}
    }
    assert!(r.partial_bytes() <= limits.max_partial_bytes);
});
