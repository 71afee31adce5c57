//! FLV audio/video tag bodies as RTMP carries them (FLV 10.1 annex E.4.2/E.4.3), legacy
//! and Enhanced RTMP v2 (`IsExHeader` bit, FourCC codecs).
//!
//! Only the first bytes are read: enough to know the codec, whether a frame is a
//! keyframe, and whether it is a sequence header (codec configuration). The payload is
//! never modified.

/// Video codec of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Avc,
    Hevc,
    Av1,
    Vp9,
    /// Legacy codec ids other than AVC (Sorenson, VP6...) or unknown FourCCs.
    Other,
}

impl VideoCodec {
    /// Short public name for APIs.
    pub fn name(self) -> &'static str {
        match self {
            VideoCodec::Avc => "h264",
            VideoCodec::Hevc => "hevc",
            VideoCodec::Av1 => "av1",
            VideoCodec::Vp9 => "vp9",
            VideoCodec::Other => "other",
        }
    }

    fn from_fourcc(f: &[u8]) -> VideoCodec {
        match f {
            b"avc1" => VideoCodec::Avc,
            b"hvc1" => VideoCodec::Hevc,
            b"av01" => VideoCodec::Av1,
            b"vp09" => VideoCodec::Vp9,
            _ => VideoCodec::Other,
        }
    }
}

/// What a video tag carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoPacket {
    /// Codec configuration (avcC, hvcC, av1C, vpcC).
    SequenceHeader,
    /// Coded frames.
    Frames,
    /// End of sequence, metadata, or another packet type: forwarded, not interpreted.
    Other,
}

/// Classification of one video tag body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VideoTag {
    pub codec: VideoCodec,
    pub packet: VideoPacket,
    /// Frame type 1: a keyframe (random access point).
    pub keyframe: bool,
    /// Whether the tag uses the Enhanced RTMP extended header.
    pub enhanced: bool,
    /// Offset of the codec payload (configuration record or frame data) in the body.
    pub data_offset: usize,
}

/// Why a tag could not be classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("empty tag")]
    Empty,
    #[error("tag header truncated")]
    Truncated,
}

const LEGACY_AVC: u8 = 7;
/// Codec id 12 is the pre-Enhanced-RTMP HEVC extension some Chinese CDNs use.
const LEGACY_HEVC: u8 = 12;

impl VideoTag {
    /// Classifies a video message body.
    pub fn parse(body: &[u8]) -> Result<VideoTag, TagError> {
        let b0 = *body.first().ok_or(TagError::Empty)?;
        if b0 & 0x80 != 0 {
            // Enhanced RTMP: [1 IsExHeader][3 FrameType][4 PacketType][FourCC]...
            let frame_type = (b0 >> 4) & 0x07;
            let packet_type = b0 & 0x0f;
            let fourcc = body.get(1..5).ok_or(TagError::Truncated)?;
            let codec = VideoCodec::from_fourcc(fourcc);
            // PacketType 1 (CodedFrames) carries a 24-bit composition time for AVC/HEVC.
            let (packet, data_offset) = match packet_type {
                0 => (VideoPacket::SequenceHeader, 5),
                1 if matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) => {
                    (VideoPacket::Frames, 8)
                }
                1 | 3 => (VideoPacket::Frames, 5),
                _ => (VideoPacket::Other, 5),
            };
            return Ok(VideoTag {
                codec,
                packet,
                keyframe: frame_type == 1,
                enhanced: true,
                data_offset: data_offset.min(body.len()),
            });
        }
        let frame_type = b0 >> 4;
        let codec_id = b0 & 0x0f;
        let codec = match codec_id {
            LEGACY_AVC => VideoCodec::Avc,
            LEGACY_HEVC => VideoCodec::Hevc,
            _ => VideoCodec::Other,
        };
        let (packet, data_offset) = if codec == VideoCodec::Other {
            (VideoPacket::Frames, 1)
        } else {
            // [AVCPacketType][CompositionTime 24]
            let pt = *body.get(1).ok_or(TagError::Truncated)?;
            let p = match pt {
                0 => VideoPacket::SequenceHeader,
                1 => VideoPacket::Frames,
                _ => VideoPacket::Other,
            };
            (p, 5)
        };
        Ok(VideoTag {
            codec,
            packet,
            keyframe: frame_type == 1,
            enhanced: false,
            data_offset: data_offset.min(body.len()),
        })
    }

    /// A keyframe carrying coded data (what a late joiner or a thumbnail needs).
    pub fn is_keyframe_data(&self) -> bool {
        self.keyframe && self.packet == VideoPacket::Frames
    }

    /// The composition time offset of coded AVC/HEVC frames (PTS - DTS, milliseconds,
    /// a signed 24-bit field: FLV 10.1 E.4.3.1, Enhanced RTMP `CodedFrames`); 0 for
    /// everything else (`CodedFramesX` carries none). Non-zero means the encoder
    /// reorders frames: B-frames.
    pub fn composition_time(&self, body: &[u8]) -> i32 {
        if self.packet != VideoPacket::Frames
            || !matches!(self.codec, VideoCodec::Avc | VideoCodec::Hevc)
            // Legacy: [flags][AVCPacketType][CompositionTime 24]; Enhanced
            // `CodedFrames`: [flags][FourCC][CompositionTime 24]; `CodedFramesX`
            // (offset 5 when enhanced) has none.
            || self.data_offset != if self.enhanced { 8 } else { 5 }
        {
            return 0;
        }
        match body.get(self.data_offset - 3..self.data_offset) {
            // Sign-extend the 24-bit big-endian value.
            Some(b) => i32::from_be_bytes([b[0], b[1], b[2], 0]) >> 8,
            None => 0,
        }
    }
}

/// Audio codec of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioCodec {
    Aac,
    Mp3,
    Opus,
    Other,
}

impl AudioCodec {
    /// Short public name for APIs.
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Aac => "aac",
            AudioCodec::Mp3 => "mp3",
            AudioCodec::Opus => "opus",
            AudioCodec::Other => "other",
        }
    }
}

/// Classification of one audio tag body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioTag {
    pub codec: AudioCodec,
    /// AudioSpecificConfig (AAC packet type 0) or Enhanced SequenceStart.
    pub sequence_header: bool,
}

const SOUND_FORMAT_MP3: u8 = 2;
const SOUND_FORMAT_AAC: u8 = 10;
const SOUND_FORMAT_EX_HEADER: u8 = 9;

impl AudioTag {
    /// Classifies an audio message body.
    pub fn parse(body: &[u8]) -> Result<AudioTag, TagError> {
        let b0 = *body.first().ok_or(TagError::Empty)?;
        let format = b0 >> 4;
        Ok(match format {
            SOUND_FORMAT_AAC => AudioTag {
                codec: AudioCodec::Aac,
                sequence_header: *body.get(1).ok_or(TagError::Truncated)? == 0,
            },
            SOUND_FORMAT_EX_HEADER => {
                let fourcc = body.get(1..5).ok_or(TagError::Truncated)?;
                let codec = match fourcc {
                    b"mp4a" => AudioCodec::Aac,
                    b"Opus" => AudioCodec::Opus,
                    b".mp3" => AudioCodec::Mp3,
                    _ => AudioCodec::Other,
                };
                AudioTag {
                    codec,
                    sequence_header: b0 & 0x0f == 0,
                }
            }
            SOUND_FORMAT_MP3 => AudioTag {
                codec: AudioCodec::Mp3,
                sequence_header: false,
            },
            _ => AudioTag {
                codec: AudioCodec::Other,
                sequence_header: false,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_avc() {
        let seq = VideoTag::parse(&[0x17, 0, 0, 0, 0, 1, 0x64]).unwrap();
        assert_eq!(seq.codec, VideoCodec::Avc);
        assert_eq!(seq.packet, VideoPacket::SequenceHeader);
        assert_eq!(seq.data_offset, 5);
        let key = VideoTag::parse(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]).unwrap();
        assert!(key.is_keyframe_data());
        let inter = VideoTag::parse(&[0x27, 1, 0, 0, 0]).unwrap();
        assert!(!inter.keyframe);
        assert!(!inter.enhanced);
        assert_eq!(inter.composition_time(&[0x27, 1, 0, 0, 0]), 0);
        let b = [0x27, 1, 0, 0, 0x42, 0];
        assert_eq!(VideoTag::parse(&b).unwrap().composition_time(&b), 0x42);
        let negative = [0x27, 1, 0xff, 0xff, 0xdf, 0];
        let t = VideoTag::parse(&negative).unwrap();
        assert_eq!(t.composition_time(&negative), -33);
        assert_eq!(seq.composition_time(&[0x17, 0, 0, 0, 9, 1]), 0);
    }

    #[test]
    fn enhanced_hevc_keyframe_is_not_misread() {
        // 0x80 | frame type 1 << 4 | packet type 1 (CodedFrames): 0x91. Reading
        // `flags >> 4` as the frame type would give 9 and miss the keyframe.
        let t = VideoTag::parse(b"\x91hvc1\x00\x00\x00data").unwrap();
        assert_eq!(t.codec, VideoCodec::Hevc);
        assert!(t.keyframe && t.enhanced);
        assert_eq!(t.packet, VideoPacket::Frames);
        assert_eq!(t.data_offset, 8);
        assert_eq!(t.composition_time(b"\x91hvc1\x00\x00\x21data"), 33);
        // CodedFramesX (3): no composition time.
        let x = VideoTag::parse(b"\x93hvc1data").unwrap();
        assert_eq!(x.data_offset, 5);
        assert_eq!(x.composition_time(b"\x93hvc1data"), 0);
        let seq = VideoTag::parse(b"\x90av01cfg").unwrap();
        assert_eq!(
            (seq.codec, seq.packet),
            (VideoCodec::Av1, VideoPacket::SequenceHeader)
        );
        let inter = VideoTag::parse(b"\xA1avc1\0\0\0x").unwrap();
        assert!(!inter.keyframe);
        assert_eq!(inter.codec, VideoCodec::Avc);
    }

    #[test]
    fn audio() {
        let seq = AudioTag::parse(&[0xAF, 0, 0x12, 0x10]).unwrap();
        assert_eq!(
            seq,
            AudioTag {
                codec: AudioCodec::Aac,
                sequence_header: true
            }
        );
        let raw = AudioTag::parse(&[0xAF, 1, 0x21]).unwrap();
        assert!(!raw.sequence_header);
        let opus = AudioTag::parse(b"\x90Opus").unwrap();
        assert_eq!(
            opus,
            AudioTag {
                codec: AudioCodec::Opus,
                sequence_header: true
            }
        );
    }

    #[test]
    fn truncated_is_an_error_not_a_panic() {
        assert_eq!(VideoTag::parse(&[]), Err(TagError::Empty));
        assert_eq!(VideoTag::parse(&[0x17]), Err(TagError::Truncated));
        assert_eq!(VideoTag::parse(b"\x91hv"), Err(TagError::Truncated));
        assert_eq!(AudioTag::parse(&[0xAF]), Err(TagError::Truncated));
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;
        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..64)) {
                if let Ok(t) = VideoTag::parse(&b) {
                    prop_assert!(t.data_offset <= b.len());
                    let _ = t.composition_time(&b);
                }
                let _ = AudioTag::parse(&b);
            }
        }
    }
}
