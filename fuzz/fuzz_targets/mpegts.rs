//! The MPEG-TS demuxer and its conversion to the node's media input (what an SRT
//! publisher sends) on arbitrary bytes, fed in two pieces: never a panic, and the
//! timestamps handed on never go back within a track.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::ts::to_flv::{Output, TsToFlv};
use media::ts::TsDemuxer;
use media::MediaKind;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |b| *b as usize * 8).min(data.len());
    let mut d = TsDemuxer::new(1 << 20);
    let mut events = Vec::new();
    d.push(&data[..split], &mut events);
    d.push(&data[split..], &mut events);
    let mut c = TsToFlv::new();
    let mut out = Vec::new();
    for e in events {
        c.on_event(e, &mut out);
    }
    let mut last = [0u32; 2];
    for o in out {
        if let Output::Media { kind, timestamp, .. } = o {
            let i = (kind == MediaKind::Video) as usize;
            assert!(timestamp >= last[i], "{kind:?} went back: {} -> {timestamp}", last[i]);
            last[i] = timestamp;
        }
    }
});
