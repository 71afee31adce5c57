//! The protocol-neutral media input, built from elementary streams.
//!
//! Everything a publisher sends the node reaches the hub, the relays and the
//! thumbnailer as [`MediaKind`] + timestamp + an FLV tag body (FLV 10.1 E.4.2-E.4.3,
//! Enhanced RTMP v2 for codecs after H.264): a video tag header and its codec packet,
//! an audio tag header and its packet, or `onMetaData`. RTMP carries exactly that, so
//! an RTMP publisher's messages go through untouched (zero copy). A protocol that
//! carries elementary streams instead (MPEG-TS over SRT: H.264 in Annex B, AAC in
//! ADTS) builds the same bodies here: a sequence header from the parameter sets, each
//! access unit with its NAL units length-prefixed, each AAC frame behind its header.

use bytes::{BufMut, Bytes, BytesMut};

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    Audio,
    Video,
}

impl MediaKind {
    /// The FLV tag type (FLV 10.1 E.4.1: 8 audio, 9 video), which RTMP uses as its
    /// message type id for the same bodies.
    pub fn flv_tag_type(self) -> u8 {
        match self {
            MediaKind::Audio => 8,
            MediaKind::Video => 9,
        }
    }

    /// The kind of an FLV tag type (8 or 9).
    pub fn of_flv_tag_type(t: u8) -> Option<MediaKind> {
        match t {
            8 => Some(MediaKind::Audio),
            9 => Some(MediaKind::Video),
            _ => None,
        }
    }
}

/// The NAL units of an Annex B byte stream (ITU-T H.264 B.1): what lies between start
/// codes (`00 00 01` or `00 00 00 01`), without the codes and without the zero bytes
/// that trail a unit before the next code.
pub fn annex_b_units(stream: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut start = None;
    let mut i = 0;
    while i + 2 < stream.len() {
        if stream[i] == 0 && stream[i + 1] == 0 && stream[i + 2] == 1 {
            if let Some(s) = start {
                let mut end = i;
                while end > s && stream[end - 1] == 0 {
                    end -= 1;
                }
                if end > s {
                    units.push(&stream[s..end]);
                }
            }
            i += 3;
            start = Some(i);
        } else {
            i += 1;
        }
    }
    if let Some(s) = start {
        if s < stream.len() {
            units.push(&stream[s..]);
        }
    }
    units
}

/// The H.264 NAL unit type (ITU-T H.264 7.4.1): 1 non-IDR slice, 5 IDR slice, 7 SPS,
/// 8 PPS, 9 access unit delimiter.
pub fn h264_nal_type(unit: &[u8]) -> Option<u8> {
    unit.first().map(|b| b & 0x1f)
}

/// An H.264 sequence header tag body (AVC packet type 0): the
/// AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.2.4.1) of these parameter sets,
/// with 4-byte NAL lengths. `None` without an SPS of at least 4 bytes.
pub fn avc_sequence_header(sps: &[&[u8]], pps: &[&[u8]]) -> Option<Bytes> {
    let first = sps.first().filter(|s| s.len() >= 4)?;
    let mut out = BytesMut::new();
    out.put_slice(&[0x17, 0, 0, 0, 0]);
    out.put_u8(1); // configurationVersion
    out.put_slice(&first[1..4]); // profile, compatibility, level
    out.put_u8(0xfc | 3); // lengthSizeMinusOne = 3
    out.put_u8(0xe0 | (sps.len() as u8 & 0x1f));
    for s in sps {
        out.put_u16(s.len() as u16);
        out.put_slice(s);
    }
    out.put_u8(pps.len() as u8);
    for p in pps {
        out.put_u16(p.len() as u16);
        out.put_slice(p);
    }
    Some(out.freeze())
}

/// An H.264 frame tag body (AVC packet type 1): its NAL units, each behind a 4-byte
/// length, with the composition time offset (PTS - DTS, milliseconds).
pub fn avc_frame(keyframe: bool, composition_ms: i32, units: &[&[u8]]) -> Bytes {
    let len: usize = units.iter().map(|u| u.len() + 4).sum();
    let mut out = BytesMut::with_capacity(5 + len);
    out.put_u8(if keyframe { 0x17 } else { 0x27 });
    out.put_u8(1);
    out.put_slice(&composition_ms.to_be_bytes()[1..]);
    for u in units {
        out.put_u32(u.len() as u32);
        out.put_slice(u);
    }
    out.freeze()
}

/// The H.265 NAL unit type (ITU-T H.265 7.4.2.2): 16-23 IRAP (random access) slices,
/// 32 VPS, 33 SPS, 34 PPS, 35 access unit delimiter.
pub fn h265_nal_type(unit: &[u8]) -> Option<u8> {
    unit.first().map(|b| (b >> 1) & 0x3f)
}

/// The FourCC of H.265 in Enhanced RTMP.
const HVC1: &[u8; 4] = b"hvc1";

/// An H.265 sequence header tag body (Enhanced RTMP v2: `IsExHeader`, keyframe,
/// SequenceStart, FourCC `hvc1`): the HEVCDecoderConfigurationRecord (ISO/IEC 14496-15
/// 8.3.3.1) of these parameter sets, with 4-byte NAL lengths, its profile, tier and
/// level copied from the SPS. `None` without an SPS that long.
pub fn hevc_sequence_header(vps: &[&[u8]], sps: &[&[u8]], pps: &[&[u8]]) -> Option<Bytes> {
    let first = sps.first()?;
    // After the 2-byte NAL header: 4 bits of VPS id, 3 of sub-layers, 1 of nesting,
    // then profile_tier_level's first 12 bytes.
    let rbsp = crate::codec::rbsp(first.get(2..)?);
    let ptl = rbsp.get(1..13)?;
    let mut out = BytesMut::new();
    out.put_u8(0x80 | (1 << 4)); // IsExHeader, keyframe, SequenceStart
    out.put_slice(HVC1);
    out.put_u8(1); // configurationVersion
    out.put_slice(ptl); // profile space/tier/idc, compatibility, constraints, level
    out.put_u16(0xf000); // min_spatial_segmentation_idc 0
    out.put_u8(0xfc); // parallelismType 0
    out.put_u8(0xfd); // chromaFormat 1 (4:2:0)
    out.put_u8(0xf8); // bitDepthLumaMinus8 0
    out.put_u8(0xf8); // bitDepthChromaMinus8 0
    out.put_u16(0); // avgFrameRate unknown
    out.put_u8(0x0f); // constantFrameRate 0, 1 temporal layer, nested, 4-byte lengths
    let arrays = [(32u8, vps), (33, sps), (34, pps)];
    out.put_u8(arrays.iter().filter(|(_, units)| !units.is_empty()).count() as u8);
    for (nal_type, units) in arrays {
        if units.is_empty() {
            continue;
        }
        out.put_u8(0x80 | nal_type); // array_completeness
        out.put_u16(units.len() as u16);
        for u in units {
            out.put_u16(u.len() as u16);
            out.put_slice(u);
        }
    }
    Some(out.freeze())
}

/// An H.265 frame tag body (Enhanced RTMP v2 CodedFrames, FourCC `hvc1`): the
/// composition time offset, then its NAL units, each behind a 4-byte length.
pub fn hevc_frame(keyframe: bool, composition_ms: i32, units: &[&[u8]]) -> Bytes {
    let len: usize = units.iter().map(|u| u.len() + 4).sum();
    let mut out = BytesMut::with_capacity(8 + len);
    out.put_u8(0x80 | (if keyframe { 1 } else { 2 } << 4) | 1);
    out.put_slice(HVC1);
    out.put_slice(&composition_ms.to_be_bytes()[1..]);
    for u in units {
        out.put_u32(u.len() as u32);
        out.put_slice(u);
    }
    out.freeze()
}

/// An AAC sequence header tag body (AAC packet type 0): the AudioSpecificConfig
/// (ISO/IEC 14496-3 1.6.2.1).
pub fn aac_sequence_header(audio_specific_config: &[u8]) -> Bytes {
    aac_body(0, audio_specific_config)
}

/// An AAC frame tag body (AAC packet type 1): a raw frame (an ADTS frame without its
/// header).
pub fn aac_frame(raw: &[u8]) -> Bytes {
    aac_body(1, raw)
}

fn aac_body(packet_type: u8, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + data.len());
    // AAC (10), 44 kHz, 16-bit, stereo: what FLV says of every AAC stream (the real
    // parameters are in the AudioSpecificConfig).
    out.put_u8(0xaf);
    out.put_u8(packet_type);
    out.put_slice(data);
    out.freeze()
}

/// The AudioSpecificConfig of an ADTS header (ISO/IEC 13818-7 6.2): object type,
/// sampling frequency index, channel configuration. `None` when `adts` is not one.
pub fn adts_audio_specific_config(adts: &[u8]) -> Option<[u8; 2]> {
    if adts.len() < 7 || adts[0] != 0xff || adts[1] & 0xf0 != 0xf0 {
        return None;
    }
    let object = (adts[2] >> 6) + 1;
    let frequency = (adts[2] >> 2) & 0x0f;
    let channels = ((adts[2] & 0x01) << 2) | (adts[3] >> 6);
    Some([
        (object << 3) | (frequency >> 1),
        ((frequency & 1) << 7) | (channels << 3),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{h264_sps_size, DecoderConfig};
    use crate::tag::{AudioCodec, AudioTag, VideoCodec, VideoPacket, VideoTag};

    /// An SPS of a 640x360 High-profile stream (from x264), and a PPS.
    const SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x32, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    #[test]
    fn annex_b_is_split_on_both_start_codes() {
        let idr = [0x65u8, 0x88, 0x84, 0x00];
        let mut stream = vec![0, 0, 0, 1];
        stream.extend_from_slice(SPS);
        stream.extend_from_slice(&[0, 0, 1]);
        stream.extend_from_slice(PPS);
        stream.extend_from_slice(&[0, 0, 0, 0, 1]);
        stream.extend_from_slice(&idr);
        let units = annex_b_units(&stream);
        assert_eq!(units, vec![SPS, PPS, &idr[..]]);
        assert_eq!(
            units.iter().map(|u| h264_nal_type(u)).collect::<Vec<_>>(),
            vec![Some(7), Some(8), Some(5)]
        );
        assert!(annex_b_units(&[0, 0]).is_empty());
    }

    /// What an elementary-stream publisher builds is what an RTMP publisher sends: the
    /// tag parser classifies it, the configuration record reads back the same
    /// parameter sets and picture size, and the frame converts back to the Annex B it
    /// came from.
    #[test]
    fn elementary_h264_becomes_the_flv_bodies_rtmp_carries() {
        let header = avc_sequence_header(&[SPS], &[PPS]).unwrap();
        let tag = VideoTag::parse(&header).unwrap();
        assert_eq!(tag.codec, VideoCodec::Avc);
        assert_eq!(tag.packet, VideoPacket::SequenceHeader);
        let cfg = DecoderConfig::from_avcc(&header[tag.data_offset..]).unwrap();
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.parameter_sets, vec![SPS.to_vec(), PPS.to_vec()]);
        let size = h264_sps_size(cfg.sps().unwrap()).unwrap();
        assert_eq!((size.width, size.height), (640, 360));

        let idr = [0x65u8, 0x88, 0x84, 0x00, 0x33];
        let frame = avc_frame(true, 40, &[&idr]);
        let tag = VideoTag::parse(&frame).unwrap();
        assert!(tag.keyframe && tag.is_keyframe_data(), "{tag:?}");
        assert_eq!(&frame[2..5], &[0, 0, 40]);
        let annex_b = cfg.annex_b(&frame[tag.data_offset..]).unwrap();
        assert!(annex_b.ends_with(&idr), "{annex_b:?}");
        let inter = avc_frame(false, 0, &[&[0x41, 0x9a]]);
        assert!(!VideoTag::parse(&inter).unwrap().keyframe);
        assert_eq!(MediaKind::of_flv_tag_type(9), Some(MediaKind::Video));
        assert_eq!(MediaKind::Audio.flv_tag_type(), 8);
    }

    #[test]
    fn adts_aac_becomes_the_flv_bodies_rtmp_carries() {
        // ADTS: AAC LC, 48 kHz (index 3), stereo.
        let adts = [0xff, 0xf1, 0x4c, 0x80, 0x01, 0x7f, 0xfc];
        let asc = adts_audio_specific_config(&adts).unwrap();
        assert_eq!(asc, [0x11, 0x90], "AAC LC, 48 kHz, 2 channels");
        let header = aac_sequence_header(&asc);
        let tag = AudioTag::parse(&header).unwrap();
        assert_eq!(tag.codec, AudioCodec::Aac);
        assert!(tag.sequence_header);
        let frame = aac_frame(&[0x21, 0x10]);
        assert!(!AudioTag::parse(&frame).unwrap().sequence_header);
        assert_eq!(adts_audio_specific_config(&[0u8; 7]), None);
    }
}
