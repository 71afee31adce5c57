//! The media every generated publisher sends: one FLV file read into memory once, its
//! tags shared (`Bytes`) by every publisher, replayed in a loop with continuous
//! timestamps.

use bytes::Bytes;
use media::flv::{read_tags, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};

/// One tag to send.
#[derive(Debug, Clone)]
pub struct SourceTag {
    /// 8 audio, 9 video, 18 data.
    pub type_id: u8,
    /// Milliseconds from the start of the file.
    pub timestamp: u32,
    pub body: Bytes,
    /// A video keyframe (where a relay may start).
    pub keyframe: bool,
}

/// An FLV file in memory.
#[derive(Debug, Clone)]
pub struct FlvSource {
    /// The `onMetaData` body, if the file has one.
    pub metadata: Option<Bytes>,
    /// Audio and video tags in file order.
    pub tags: Vec<SourceTag>,
    /// Length of one loop, in ms (last timestamp plus one frame).
    pub loop_ms: u32,
    /// Average bitrate of the media, bits per second.
    pub bitrate: u64,
}

impl FlvSource {
    pub fn load(path: &std::path::Path) -> anyhow::Result<FlvSource> {
        let data = Bytes::from(std::fs::read(path)?);
        let mut metadata = None;
        let mut tags = Vec::new();
        for t in read_tags(&data)? {
            match t.tag_type {
                TAG_SCRIPT if metadata.is_none() => metadata = Some(t.body),
                TAG_AUDIO | TAG_VIDEO => tags.push(SourceTag {
                    type_id: t.tag_type,
                    timestamp: t.timestamp,
                    keyframe: t.tag_type == TAG_VIDEO
                        && t.body.first().is_some_and(|b| b >> 4 == 1),
                    body: t.body,
                }),
                _ => {}
            }
        }
        anyhow::ensure!(
            !tags.is_empty(),
            "{} has no audio or video tags",
            path.display()
        );
        let last = tags.iter().map(|t| t.timestamp).max().unwrap_or(0);
        let loop_ms = last + 34;
        let bytes: u64 = tags.iter().map(|t| t.body.len() as u64).sum();
        Ok(FlvSource {
            metadata,
            loop_ms,
            bitrate: bytes * 8 * 1000 / loop_ms.max(1) as u64,
            tags,
        })
    }

    /// The `n`-th tag of the endless stream: (timestamp, tag). Sequence headers repeat
    /// in every loop as in the file; timestamps keep growing.
    pub fn tag(&self, n: u64) -> (u32, &SourceTag) {
        let len = self.tags.len() as u64;
        let t = &self.tags[(n % len) as usize];
        let loops = (n / len) as u32;
        (
            t.timestamp.wrapping_add(loops.wrapping_mul(self.loop_ms)),
            t,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn loops_with_continuous_timestamps() {
        let mut f = BytesMut::new();
        media::flv::write_header(&mut f, true, true);
        media::flv::write_tag(&mut f, TAG_SCRIPT, 0, b"\x02\x00\x0aonMetaData");
        media::flv::write_tag(&mut f, TAG_VIDEO, 0, &[0x17, 1, 0, 0, 0]);
        media::flv::write_tag(&mut f, TAG_AUDIO, 20, &[0xAF, 1]);
        media::flv::write_tag(&mut f, TAG_VIDEO, 33, &[0x27, 1, 0, 0, 0]);
        let path = std::env::temp_dir().join(format!("sgbench-unit-{}.flv", std::process::id()));
        std::fs::write(&path, &f).unwrap();
        let src = FlvSource::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(src.metadata.is_some());
        assert_eq!(src.tags.len(), 3);
        assert!(src.tags[0].keyframe && !src.tags[2].keyframe);
        let ts: Vec<u32> = (0..7).map(|n| src.tag(n).0).collect();
        let l = src.loop_ms;
        assert_eq!(ts, vec![0, 20, 33, l, l + 20, l + 33, 2 * l]);
        assert!(
            ts.windows(2).all(|w| w[0] <= w[1]),
            "timestamps never go back: {ts:?}"
        );
    }
}
