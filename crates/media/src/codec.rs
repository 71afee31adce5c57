//! Codec configuration records and parameter sets: AVCDecoderConfigurationRecord
//! (ISO/IEC 14496-15 5.2.4.1), HEVCDecoderConfigurationRecord (14496-15 8.3.3.1), the
//! H.264 SPS (ITU-T H.264 7.3.2.1.1) and H.265 SPS (ITU-T H.265 7.3.2.2) for the picture
//! size, and conversion of length-prefixed NAL units to Annex B.

use bytes::{BufMut, BytesMut};

/// Why a configuration record or parameter set could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("configuration record truncated")]
    Truncated,
    #[error("unsupported configuration record version {0}")]
    BadVersion(u8),
    #[error("no SPS in the configuration record")]
    NoSps,
    #[error("parameter set value out of range")]
    OutOfRange,
}

/// Parameter sets and NAL length size from an avcC or hvcC record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DecoderConfig {
    /// Bytes of the length prefix of each NAL unit in frames (1, 2 or 4).
    pub nal_length_size: usize,
    /// Parameter set NAL units in decoding order (VPS, SPS, PPS), without prefix.
    pub parameter_sets: Vec<Vec<u8>>,
    /// Index in `parameter_sets` of the first SPS.
    pub sps_index: Option<usize>,
}

struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.b.len() < n {
            return Err(CodecError::Truncated);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<usize, CodecError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
}

impl DecoderConfig {
    /// Reads an AVCDecoderConfigurationRecord.
    pub fn from_avcc(rec: &[u8]) -> Result<DecoderConfig, CodecError> {
        let mut c = Cursor { b: rec };
        let version = c.u8()?;
        if version != 1 {
            return Err(CodecError::BadVersion(version));
        }
        c.take(3)?; // profile, compatibility, level
        let nal_length_size = (c.u8()? & 0x03) as usize + 1;
        let mut cfg = DecoderConfig {
            nal_length_size,
            ..Default::default()
        };
        let num_sps = c.u8()? & 0x1f;
        for _ in 0..num_sps {
            let len = c.u16()?;
            cfg.sps_index.get_or_insert(cfg.parameter_sets.len());
            cfg.parameter_sets.push(c.take(len)?.to_vec());
        }
        let num_pps = c.u8()?;
        for _ in 0..num_pps {
            let len = c.u16()?;
            cfg.parameter_sets.push(c.take(len)?.to_vec());
        }
        Ok(cfg)
    }

    /// Reads an HEVCDecoderConfigurationRecord.
    pub fn from_hvcc(rec: &[u8]) -> Result<DecoderConfig, CodecError> {
        let mut c = Cursor { b: rec };
        let version = c.u8()?;
        if version != 1 {
            return Err(CodecError::BadVersion(version));
        }
        c.take(20)?; // profile/tier/level, flags, chroma, bit depths, frame rate
        let nal_length_size = (c.u8()? & 0x03) as usize + 1;
        let mut cfg = DecoderConfig {
            nal_length_size,
            ..Default::default()
        };
        let num_arrays = c.u8()?;
        for _ in 0..num_arrays {
            let nal_type = c.u8()? & 0x3f;
            let count = c.u16()?;
            for _ in 0..count {
                let len = c.u16()?;
                if nal_type == 33 {
                    cfg.sps_index.get_or_insert(cfg.parameter_sets.len());
                }
                cfg.parameter_sets.push(c.take(len)?.to_vec());
            }
        }
        Ok(cfg)
    }

    /// The first SPS.
    pub fn sps(&self) -> Option<&[u8]> {
        self.sps_index.map(|i| self.parameter_sets[i].as_slice())
    }

    /// Annex B of the parameter sets followed by the NAL units of `frame`
    /// (length-prefixed): what a decoder needs to decode one keyframe.
    pub fn annex_b(&self, frame: &[u8]) -> Result<BytesMut, CodecError> {
        let mut out = BytesMut::with_capacity(frame.len() + 256);
        for ps in &self.parameter_sets {
            out.put_slice(&[0, 0, 0, 1]);
            out.put_slice(ps);
        }
        let mut rest = frame;
        let n = self.nal_length_size;
        while !rest.is_empty() {
            if rest.len() < n {
                return Err(CodecError::Truncated);
            }
            let len = rest[..n].iter().fold(0usize, |a, &b| a << 8 | b as usize);
            rest = &rest[n..];
            if rest.len() < len {
                return Err(CodecError::Truncated);
            }
            out.put_slice(&[0, 0, 0, 1]);
            out.put_slice(&rest[..len]);
            rest = &rest[len..];
        }
        Ok(out)
    }
}

/// Removes emulation-prevention bytes (0x000003 → 0x0000) from a NAL unit payload.
pub fn rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// Exp-Golomb bit reader over an RBSP.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Result<u32, CodecError> {
        let byte = *self.data.get(self.pos / 8).ok_or(CodecError::Truncated)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(b as u32)
    }
    fn bits(&mut self, n: u32) -> Result<u32, CodecError> {
        let mut v = 0;
        for _ in 0..n {
            v = v << 1 | self.bit()?;
        }
        Ok(v)
    }
    fn skip(&mut self, n: usize) -> Result<(), CodecError> {
        self.pos += n;
        if self.pos > self.data.len() * 8 {
            return Err(CodecError::Truncated);
        }
        Ok(())
    }
    fn ue(&mut self) -> Result<u32, CodecError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(CodecError::OutOfRange);
            }
        }
        Ok(((1u64 << zeros) - 1 + self.bits(zeros)? as u64) as u32)
    }
    fn se(&mut self) -> Result<i64, CodecError> {
        let v = self.ue()? as i64;
        Ok(if v % 2 == 1 { (v + 1) / 2 } else { -(v / 2) })
    }
}

/// Picture size in pixels, after cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PictureSize {
    pub width: u32,
    pub height: u32,
}

/// Reads width and height from an H.264 SPS NAL unit (with its 1-byte header).
pub fn h264_sps_size(nal: &[u8]) -> Result<PictureSize, CodecError> {
    let data = rbsp(nal.get(1..).ok_or(CodecError::Truncated)?);
    let mut r = Bits {
        data: &data,
        pos: 0,
    };
    let profile_idc = r.bits(8)?;
    r.skip(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = 0;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()?;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            let count = if chroma_format_idc != 3 { 8 } else { 12 };
            for i in 0..count {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i64, 8i64);
                    for _ in 0..size {
                        if next != 0 {
                            // delta_scale is in -128..=127 in a valid SPS; a hostile
                            // one may be anything, so compute without overflow.
                            next = (last + r.se()? + 256).rem_euclid(256);
                        }
                        last = if next == 0 { last } else { next };
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    let poc_type = r.ue()?;
    if poc_type == 0 {
        r.ue()?;
    } else if poc_type == 1 {
        r.skip(1)?;
        r.se()?;
        r.se()?;
        let n = r.ue()?;
        if n > 255 {
            return Err(CodecError::OutOfRange);
        }
        for _ in 0..n {
            r.se()?;
        }
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? as u64 + 1;
    let height_map_units = r.ue()? as u64 + 1;
    let frame_mbs_only = r.bit()? as u64;
    if frame_mbs_only == 0 {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let mut width = width_mbs * 16;
    let mut height = (2 - frame_mbs_only) * height_map_units * 16;
    if r.bit()? == 1 {
        let (l, rt, t, b) = (
            r.ue()? as u64,
            r.ue()? as u64,
            r.ue()? as u64,
            r.ue()? as u64,
        );
        let (sub_w, sub_h) = chroma_subsampling(chroma_format_idc, separate_colour_plane);
        width = width.saturating_sub((l + rt) * sub_w);
        height = height.saturating_sub((t + b) * sub_h * (2 - frame_mbs_only));
    }
    checked_size(width, height)
}

/// SubWidthC and SubHeightC (table 6-1 of both H.264 and H.265).
fn chroma_subsampling(chroma_format_idc: u32, separate_colour_plane: u32) -> (u64, u64) {
    match (chroma_format_idc, separate_colour_plane) {
        (1, 0) => (2, 2),
        (2, 0) => (2, 1),
        _ => (1, 1),
    }
}

/// A cropped picture size, refused when empty or beyond 16K.
fn checked_size(width: u64, height: u64) -> Result<PictureSize, CodecError> {
    if width == 0 || height == 0 || width > 16384 || height > 16384 {
        return Err(CodecError::OutOfRange);
    }
    Ok(PictureSize {
        width: width as u32,
        height: height as u32,
    })
}

/// Reads width and height from an H.265 SPS NAL unit (with its 2-byte header).
pub fn h265_sps_size(nal: &[u8]) -> Result<PictureSize, CodecError> {
    let data = rbsp(nal.get(2..).ok_or(CodecError::Truncated)?);
    let mut r = Bits {
        data: &data,
        pos: 0,
    };
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    r.skip(1)?; // temporal_id_nesting
                // profile_tier_level(1, max_sub_layers_minus1)
    r.skip(2 + 1 + 5 + 32 + 4 + 43 + 1 + 8)?;
    let mut sub_profile = [false; 8];
    let mut sub_level = [false; 8];
    for i in 0..max_sub_layers_minus1 as usize {
        sub_profile[i] = r.bit()? == 1;
        sub_level[i] = r.bit()? == 1;
    }
    if max_sub_layers_minus1 > 0 {
        for _ in max_sub_layers_minus1..8 {
            r.skip(2)?;
        }
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if sub_profile[i] {
            r.skip(88)?;
        }
        if sub_level[i] {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc == 3 {
        r.skip(1)?;
    }
    let mut width = r.ue()? as u64;
    let mut height = r.ue()? as u64;
    if r.bit()? == 1 {
        let (l, rt, t, b) = (
            r.ue()? as u64,
            r.ue()? as u64,
            r.ue()? as u64,
            r.ue()? as u64,
        );
        let (sub_w, sub_h) = chroma_subsampling(chroma_format_idc, 0);
        width = width.saturating_sub((l + rt) * sub_w);
        height = height.saturating_sub((t + b) * sub_h);
    }
    checked_size(width, height)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS NAL units written by x264 (ffmpeg -f lavfi testsrc2 -c:v libx264), High
    /// profile; the sizes that are not multiples of 16 exercise frame cropping.
    const SPS_1280X720: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];
    const SPS_1920X1080: &[u8] = &[
        0x67, 0x64, 0x00, 0x28, 0xac, 0xd9, 0x40, 0x78, 0x02, 0x27, 0xe5, 0xc0, 0x44, 0x00, 0x00,
        0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xc6, 0x58,
    ];
    const SPS_640X360: &[u8] = &[
        0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03,
        0x00, 0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2d, 0x96,
    ];
    const SPS_1366X768: &[u8] = &[
        0x67, 0x64, 0x00, 0x20, 0xac, 0xd9, 0x40, 0x56, 0x06, 0x1e, 0x6f, 0x01, 0x10, 0x00, 0x00,
        0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];

    #[test]
    fn h264_sizes() {
        assert_eq!(
            h264_sps_size(SPS_1280X720).unwrap(),
            PictureSize {
                width: 1280,
                height: 720
            }
        );
        assert_eq!(
            h264_sps_size(SPS_1920X1080).unwrap(),
            PictureSize {
                width: 1920,
                height: 1080
            }
        );
        assert_eq!(
            h264_sps_size(SPS_640X360).unwrap(),
            PictureSize {
                width: 640,
                height: 360
            }
        );
        assert_eq!(
            h264_sps_size(SPS_1366X768).unwrap(),
            PictureSize {
                width: 1366,
                height: 768
            }
        );
    }

    #[test]
    fn avcc_and_annex_b() {
        let mut rec = vec![1, 0x64, 0, 0x1f, 0xff, 0xe1];
        rec.extend_from_slice(&(SPS_1280X720.len() as u16).to_be_bytes());
        rec.extend_from_slice(SPS_1280X720);
        rec.extend_from_slice(&[1, 0, 4, 0x68, 0xeb, 0xe3, 0xcb]);
        let cfg = DecoderConfig::from_avcc(&rec).unwrap();
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!(cfg.sps(), Some(SPS_1280X720));
        let frame = [0, 0, 0, 3, 0x65, 0xAA, 0xBB, 0, 0, 0, 1, 0x06];
        let ab = cfg.annex_b(&frame).unwrap();
        let mut expected = vec![0, 0, 0, 1];
        expected.extend_from_slice(SPS_1280X720);
        expected.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xeb, 0xe3, 0xcb]);
        expected.extend_from_slice(&[0, 0, 0, 1, 0x65, 0xAA, 0xBB, 0, 0, 0, 1, 0x06]);
        assert_eq!(&ab[..], &expected[..]);
        assert_eq!(cfg.annex_b(&[0, 0, 0, 9, 1]), Err(CodecError::Truncated));
    }

    #[test]
    fn hvcc_and_h265_size() {
        // SPS written by x265 (ffmpeg -c:v libx265) for 1280x720 Main profile.
        let sps: &[u8] = &[
            0x42, 0x01, 0x01, 0x01, 0x60, 0x00, 0x00, 0x03, 0x00, 0x90, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x03, 0x00, 0x5d, 0xa0, 0x02, 0x80, 0x80, 0x2d, 0x16, 0x59, 0x59, 0xa4, 0x93,
            0x2b, 0xc0, 0x5a, 0x02, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3c,
            0x10,
        ];
        assert_eq!(
            h265_sps_size(sps).unwrap(),
            PictureSize {
                width: 1280,
                height: 720
            }
        );
        let mut rec = vec![1u8];
        rec.extend_from_slice(&[0; 20]);
        rec.push(0x03); // 4-byte NAL lengths
        rec.push(1); // one array
        rec.push(33);
        rec.extend_from_slice(&1u16.to_be_bytes());
        rec.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        rec.extend_from_slice(sps);
        let cfg = DecoderConfig::from_hvcc(&rec).unwrap();
        assert_eq!(cfg.sps(), Some(sps));
        let ab = cfg.annex_b(&[0, 0, 0, 2, 0x26, 0x01]).unwrap();
        assert!(ab.ends_with(&[0, 0, 0, 1, 0x26, 0x01]));
    }

    #[test]
    fn hostile_scaling_list_does_not_overflow() {
        // Found by the flv_tag fuzz target: a huge delta_scale in a scaling list.
        let crash = [
            0x00, 0x2c, 0x01, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x31, 0x01, 0x00, 0x00,
            0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0x00, 0x00, 0xff, 0xf4,
            0x31, 0x04, 0x04, 0x04, 0x04, 0x31, 0x31, 0x31,
        ];
        for start in 0..crash.len() {
            let _ = h264_sps_size(&crash[start..]);
        }
        let mut sps = vec![0x67, 100, 0, 0x1f];
        // ue(0) sps id, ue(1)=010 chroma 1, ue 0, ue 0, flag 0, scaling matrix present 1,
        // list 0 present 1, then se with 31 leading zeros (the largest value).
        sps.extend_from_slice(&[
            0b1010_1101,
            0b1000_0000,
            0,
            0,
            0,
            0b0000_0001,
            0xff,
            0xff,
            0xff,
            0xff,
        ]);
        let _ = h264_sps_size(&sps);
    }

    #[test]
    fn emulation_prevention_removed() {
        assert_eq!(rbsp(&[0, 0, 3, 1, 0, 0, 3, 0]), vec![0, 0, 1, 0, 0, 0]);
    }

    mod prop {
        use super::super::*;
        use proptest::prelude::*;
        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..128)) {
                let _ = h264_sps_size(&b);
                let _ = h265_sps_size(&b);
                if let Ok(c) = DecoderConfig::from_avcc(&b) { let _ = c.annex_b(&b); }
                let _ = DecoderConfig::from_hvcc(&b);
            }
        }
    }
}
