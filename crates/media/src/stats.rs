//! Live stream statistics: codecs, picture size (from the SPS), frame rate and bitrate
//! over a sliding window of whole seconds. Time is passed in by the caller (monotonic
//! milliseconds), so the numbers are testable without sleeping.

use crate::codec::{h264_sps_size, h265_sps_size, DecoderConfig, PictureSize};
use crate::tag::{AudioCodec, AudioTag, VideoCodec, VideoPacket, VideoTag};

/// Seconds the bitrate and frame rate are averaged over.
pub const WINDOW_SECS: u64 = 5;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Which second this bucket counts.
    second: u64,
    bytes: u64,
    video_frames: u32,
}

/// Public numbers of a stream at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StatsSnapshot {
    pub video_codec: Option<VideoCodec>,
    pub audio_codec: Option<AudioCodec>,
    pub size: Option<PictureSize>,
    /// Video frames per second over the window.
    pub fps: f64,
    /// Bits per second (audio + video payload) over the window.
    pub bitrate_bps: u64,
    /// Payload bytes since the start.
    pub bytes_total: u64,
}

/// The picture size a video sequence header (avcC or hvcC) announces in its SPS;
/// `None` for other messages, other codecs and unreadable records.
pub fn sequence_header_size(body: &[u8], tag: &VideoTag) -> Option<PictureSize> {
    if tag.packet != VideoPacket::SequenceHeader {
        return None;
    }
    let record = body.get(tag.data_offset..)?;
    match tag.codec {
        VideoCodec::Avc => DecoderConfig::from_avcc(record)
            .ok()
            .and_then(|c| c.sps().and_then(|s| h264_sps_size(s).ok())),
        VideoCodec::Hevc => DecoderConfig::from_hvcc(record)
            .ok()
            .and_then(|c| c.sps().and_then(|s| h265_sps_size(s).ok())),
        _ => None,
    }
}

/// Accumulates [`StatsSnapshot`] for one stream.
#[derive(Debug, Default)]
pub struct StreamStats {
    /// Codecs and size as last seen.
    current: StatsSnapshot,
    /// One bucket per second, ring indexed by second.
    buckets: [Bucket; WINDOW_SECS as usize + 1],
    /// Monotonic millisecond of the first sample.
    started_ms: Option<u64>,
}

impl StreamStats {
    pub fn new() -> Self {
        Self::default()
    }

    fn bucket(&mut self, now_ms: u64) -> &mut Bucket {
        self.started_ms.get_or_insert(now_ms);
        let second = now_ms / 1000;
        let b = &mut self.buckets[(second % (WINDOW_SECS + 1)) as usize];
        if b.second != second {
            *b = Bucket {
                second,
                ..Default::default()
            };
        }
        b
    }

    /// Counts a video message of `len` bytes. `size` is the picture size a sequence
    /// header announced ([`sequence_header_size`]); parse it before taking any lock.
    pub fn on_video(&mut self, now_ms: u64, len: usize, tag: &VideoTag, size: Option<PictureSize>) {
        let b = self.bucket(now_ms);
        b.bytes += len as u64;
        if tag.packet == VideoPacket::Frames {
            b.video_frames += 1;
        }
        self.current.bytes_total += len as u64;
        self.current.video_codec = Some(tag.codec);
        if size.is_some() {
            self.current.size = size;
        }
    }

    /// Counts an audio message of `len` bytes.
    pub fn on_audio(&mut self, now_ms: u64, len: usize, tag: &AudioTag) {
        self.bucket(now_ms).bytes += len as u64;
        self.current.bytes_total += len as u64;
        self.current.audio_codec = Some(tag.codec);
    }

    /// Sets the size from metadata when no sequence header told it.
    pub fn on_metadata_size(&mut self, width: u32, height: u32) {
        if self.current.size.is_none() && width > 0 && height > 0 {
            self.current.size = Some(PictureSize { width, height });
        }
    }

    /// Current numbers. The window covers the last complete seconds (up to
    /// [`WINDOW_SECS`]) before `now_ms`.
    pub fn snapshot(&self, now_ms: u64) -> StatsSnapshot {
        let mut s = self.current;
        let Some(start) = self.started_ms else {
            return s;
        };
        let now_s = now_ms / 1000;
        let first_full = start / 1000 + 1; // the first second may be partial
        let from = now_s.saturating_sub(WINDOW_SECS).max(first_full);
        if now_s <= from {
            return s;
        }
        let secs = now_s - from;
        let (mut bytes, mut frames) = (0u64, 0u64);
        for b in &self.buckets {
            if b.second >= from && b.second < now_s {
                bytes += b.bytes;
                frames += b.video_frames as u64;
            }
        }
        s.bitrate_bps = bytes * 8 / secs;
        s.fps = frames as f64 / secs as f64;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrate_and_fps_over_the_window() {
        let mut st = StreamStats::new();
        let frame = vec![0x27u8, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        let tag = VideoTag::parse(&frame).unwrap();
        let audio = [0xAFu8, 1, 0, 0, 0, 0];
        let atag = AudioTag::parse(&audio).unwrap();
        // 10 seconds at 30 fps, 10-byte video frames + 6-byte audio every 20 ms.
        for sec in 0..10u64 {
            for f in 0..30 {
                st.on_video(sec * 1000 + f * 33, frame.len(), &tag, None);
            }
            for a in 0..50 {
                st.on_audio(sec * 1000 + a * 20, audio.len(), &atag);
            }
        }
        let s = st.snapshot(10_000);
        assert!((s.fps - 30.0).abs() < 0.5, "{}", s.fps);
        // per second: 30*10 + 50*6 = 600 bytes = 4800 bps
        assert_eq!(s.bitrate_bps, 4800);
        assert_eq!(s.video_codec, Some(VideoCodec::Avc));
        assert_eq!(s.audio_codec, Some(AudioCodec::Aac));
        // After the publisher stops sending, the window drains.
        assert_eq!(st.snapshot(17_000).bitrate_bps, 0);
    }

    #[test]
    fn size_from_sequence_header() {
        let sps = [
            0x67u8, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00,
            0x03, 0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
        ];
        let mut body = vec![0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1e, 0xff, 0xe1];
        body.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        body.extend_from_slice(&sps);
        body.extend_from_slice(&[1, 0, 4, 0x68, 0xeb, 0xe3, 0xcb]);
        let tag = VideoTag::parse(&body).unwrap();
        let size = sequence_header_size(&body, &tag);
        let mut st = StreamStats::new();
        st.on_video(0, body.len(), &tag, size);
        assert_eq!(
            st.snapshot(0).size,
            Some(PictureSize {
                width: 640,
                height: 360
            })
        );
    }
}
