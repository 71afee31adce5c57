//! Codec configuration records and parameter sets straight from arbitrary bytes (what
//! a publisher's sequence header carries, after the FLV tag): avcC and hvcC records,
//! H.264 and H.265 SPS, RBSP unescaping, Annex-B conversion of a frame with the
//! record's parameter sets. Never a panic; a picture size is never zero.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::codec::{h264_sps_size, h265_sps_size, rbsp, DecoderConfig};

fuzz_target!(|data: &[u8]| {
    // The first byte says where the record ends and the frame begins.
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let (record, frame) = data.split_at(split);
    for config in [
        DecoderConfig::from_avcc(record),
        DecoderConfig::from_hvcc(record),
    ]
    .into_iter()
    .flatten()
    {
        if let Some(sps) = config.sps() {
            let _ = h264_sps_size(sps);
            let _ = h265_sps_size(sps);
        }
        let _ = config.annex_b(frame);
    }
    for size in [h264_sps_size(data), h265_sps_size(data)]
        .into_iter()
        .flatten()
    {
        assert!(size.width > 0 && size.height > 0, "{size:?}");
    }
    assert!(rbsp(data).len() <= data.len());
});
