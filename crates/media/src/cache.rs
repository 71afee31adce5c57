//! Per-stream state a late consumer needs to start cleanly: the current metadata,
//! the audio and video sequence headers, and the latest keyframe. A relay that
//! (re)connects or a thumbnailer reads a [`Snapshot`]; everything in it is a shared
//! `Bytes`, so taking one copies no media.

use bytes::Bytes;

use crate::tag::{AudioTag, VideoPacket, VideoTag};

/// One media message as received: timestamp and tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Timestamp in milliseconds, as the publisher sent it.
    pub timestamp: u32,
    /// The FLV tag body (RTMP message payload).
    pub body: Bytes,
}

/// The latest keyframe, with a generation number that changes with every new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyframe {
    pub frame: Frame,
    pub tag: VideoTag,
    /// Increases by one for each keyframe of the stream.
    pub generation: u64,
}

/// What a consumer joining mid-stream needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `onMetaData` data message body.
    pub metadata: Option<Bytes>,
    pub video_sequence_header: Option<Frame>,
    pub audio_sequence_header: Option<Frame>,
    pub keyframe: Option<Keyframe>,
}

/// Keeps the [`Snapshot`] of one live stream up to date.
#[derive(Debug, Default)]
pub struct KeyframeCache {
    /// Current state.
    snapshot: Snapshot,
    /// Keyframes seen so far.
    generation: u64,
}

impl KeyframeCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_metadata(&mut self, body: Bytes) {
        self.snapshot.metadata = Some(body);
    }

    /// Records a video message already classified as `tag`.
    pub fn on_video(&mut self, timestamp: u32, body: &Bytes, tag: &VideoTag) {
        let frame = Frame {
            timestamp,
            body: body.clone(),
        };
        match tag.packet {
            VideoPacket::SequenceHeader => {
                self.snapshot.video_sequence_header = Some(frame);
                // A new configuration invalidates the old keyframe.
                self.snapshot.keyframe = None;
            }
            VideoPacket::Frames if tag.keyframe => {
                self.generation += 1;
                self.snapshot.keyframe = Some(Keyframe {
                    frame,
                    tag: *tag,
                    generation: self.generation,
                });
            }
            _ => {}
        }
    }

    pub fn on_audio(&mut self, timestamp: u32, body: &Bytes, tag: &AudioTag) {
        if tag.sequence_header {
            self.snapshot.audio_sequence_header = Some(Frame {
                timestamp,
                body: body.clone(),
            });
        }
    }

    /// A cheap copy of the current state.
    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.clone()
    }

    /// The latest keyframe's generation, 0 before the first.
    pub fn generation(&self) -> u64 {
        self.snapshot.keyframe.as_ref().map_or(0, |k| k.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_headers_and_latest_keyframe() {
        let mut c = KeyframeCache::new();
        let seq = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]);
        c.on_video(0, &seq, &VideoTag::parse(&seq).unwrap());
        let k1 = Bytes::from_static(&[0x17, 1, 0, 0, 0, 9]);
        c.on_video(0, &k1, &VideoTag::parse(&k1).unwrap());
        let p = Bytes::from_static(&[0x27, 1, 0, 0, 0, 8]);
        c.on_video(33, &p, &VideoTag::parse(&p).unwrap());
        let k2 = Bytes::from_static(&[0x17, 1, 0, 0, 0, 7]);
        c.on_video(66, &k2, &VideoTag::parse(&k2).unwrap());
        let a = Bytes::from_static(&[0xAF, 0, 0x12, 0x10]);
        c.on_audio(0, &a, &AudioTag::parse(&a).unwrap());
        let s = c.snapshot();
        assert_eq!(s.video_sequence_header.unwrap().body, seq);
        assert_eq!(s.audio_sequence_header.unwrap().body, a);
        let k = s.keyframe.unwrap();
        assert_eq!((k.frame.timestamp, k.generation), (66, 2));
        assert_eq!(k.frame.body, k2);
        // The snapshot shares the buffer.
        assert_eq!(k.frame.body.as_ptr(), k2.as_ptr());
    }
}
