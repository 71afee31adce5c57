//! FLV file container (FLV 10.1 annex E.2/E.3): the file header and tags. Used to
//! read test and benchmark media into memory and to hand single frames to a decoder.

use bytes::{BufMut, Bytes, BytesMut};

pub const TAG_AUDIO: u8 = 8;
pub const TAG_VIDEO: u8 = 9;
pub const TAG_SCRIPT: u8 = 18;

/// One FLV tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlvTag {
    /// 8 audio, 9 video, 18 script data.
    pub tag_type: u8,
    /// Milliseconds, 32 bits (24 + extension byte).
    pub timestamp: u32,
    pub body: Bytes,
}

/// Why an FLV file could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlvError {
    #[error("not an FLV file (missing 'FLV' signature)")]
    NotFlv,
    #[error("FLV file truncated")]
    Truncated,
}

/// Appends the 9-byte FLV header and the first PreviousTagSize (0).
pub fn write_header(out: &mut BytesMut, audio: bool, video: bool) {
    out.put_slice(b"FLV");
    out.put_u8(1);
    out.put_u8(u8::from(audio) << 2 | u8::from(video));
    out.put_u32(9);
    out.put_u32(0);
}

/// Appends one tag and its PreviousTagSize.
pub fn write_tag(out: &mut BytesMut, tag_type: u8, timestamp: u32, body: &[u8]) {
    let len = body.len() as u32;
    out.put_u8(tag_type);
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_slice(&timestamp.to_be_bytes()[1..]);
    out.put_u8((timestamp >> 24) as u8);
    out.put_slice(&[0, 0, 0]);
    out.put_slice(body);
    out.put_u32(len + 11);
}

/// Reads all tags of an FLV file held in memory; bodies are slices of `data`.
pub fn read_tags(data: &Bytes) -> Result<Vec<FlvTag>, FlvError> {
    if data.len() < 9 || &data[..3] != b"FLV" {
        return Err(FlvError::NotFlv);
    }
    let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    let mut pos = header_len.max(9) + 4;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let h = &data[pos..pos + 11];
        let len = (h[1] as usize) << 16 | (h[2] as usize) << 8 | h[3] as usize;
        let ts = (h[7] as u32) << 24 | (h[4] as u32) << 16 | (h[5] as u32) << 8 | h[6] as u32;
        let start = pos + 11;
        if start + len > data.len() {
            return Err(FlvError::Truncated);
        }
        tags.push(FlvTag {
            tag_type: h[0] & 0x1f,
            timestamp: ts,
            body: data.slice(start..start + len),
        });
        pos = start + len + 4;
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read() {
        let mut out = BytesMut::new();
        write_header(&mut out, true, true);
        write_tag(&mut out, TAG_VIDEO, 0x0123_4567, b"video");
        write_tag(&mut out, TAG_AUDIO, 5, b"a");
        let tags = read_tags(&out.freeze()).unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].timestamp, 0x0123_4567);
        assert_eq!(&tags[0].body[..], b"video");
        assert_eq!(tags[1].tag_type, TAG_AUDIO);
        assert_eq!(
            read_tags(&Bytes::from_static(b"nope")),
            Err(FlvError::NotFlv)
        );
    }
}
