//! FLV tag classification, codec configuration records, SPS parsing and FLV files on
//! arbitrary bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use media::codec::{h264_sps_size, h265_sps_size, DecoderConfig};
use media::{sequence_header_size, AudioTag, KeyframeCache, StreamStats, VideoTag};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let mut cache = KeyframeCache::new();
    let mut stats = StreamStats::new();
    if let Ok(tag) = VideoTag::parse(data) {
        assert!(tag.data_offset <= data.len());
        cache.on_video(0, &body, &tag);
        stats.on_video(0, data.len(), &tag, sequence_header_size(data, &tag));
        let rest = &data[tag.data_offset..];
        if let Ok(cfg) = DecoderConfig::from_avcc(rest) {
            let _ = cfg.annex_b(rest);
        }
        let _ = DecoderConfig::from_hvcc(rest);
    }
    if let Ok(tag) = AudioTag::parse(data) {
        cache.on_audio(0, &body, &tag);
        stats.on_audio(0, data.len(), &tag);
    }
    let _ = h264_sps_size(data);
    let _ = h265_sps_size(data);
    let _ = media::flv::read_tags(&body);
    let _ = stats.snapshot(10_000);
});
