//! From MPEG-TS to the node's media input: what [`super::TsDemuxer`] reassembles
//! becomes [`MediaKind`] + millisecond timestamp + FLV tag body ([`crate::mux`]), the
//! same as an RTMP publisher sends.
//!
//! - H.264 and H.265 access units: Annex B to length-prefixed NAL units, parameter sets
//!   to a sequence header (sent again when they change), IDR / IRAP as keyframes, the
//!   composition offset from PTS - DTS (B-frames).
//! - AAC in ADTS: each frame raw, the AudioSpecificConfig as the sequence header, each
//!   frame of a PES timed 1024 samples after the one before.
//! - Time: 33-bit PTS/DTS unwrapped per track, counted from the stream's first time
//!   stamp (the same zero for every track, so they stay in sync), handed on monotonic
//!   per track; a jump forward by more than [`MAX_JUMP_MS`] or back by more than
//!   [`MAX_BACK_MS`] (a discontinuity: an encoder restarted, a splice, a looped file)
//!   shifts every track so that time goes on from where it was.
//! - The first video stream (H.264 or H.265) and the first AAC stream of the program
//!   are used; anything else is reported once as a [`Notice`] and not relayed.

use bytes::Bytes;

use super::{Pes, StreamType, TsEvent, TsStream};
use crate::mux::{self, MediaKind};

/// A jump of a track's time forward by more than this is a discontinuity (less is a
/// gap: frames were lost).
pub const MAX_JUMP_MS: i64 = 10_000;
/// A jump back by more than this is a discontinuity (a looped file, an encoder that
/// restarted its clock); less is jitter, held at the last time.
pub const MAX_BACK_MS: i64 = 1_000;
/// One lap of a 33-bit 90 kHz clock.
const WRAP: u64 = 1 << 33;

/// What the conversion gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A message for the hub.
    Media {
        kind: MediaKind,
        timestamp: u32,
        body: Bytes,
    },
    /// Something the node should log (never any of the stream's content).
    Notice(Notice),
}

/// What is worth saying about a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// An elementary stream that is not relayed (its PMT stream type).
    Unsupported { pid: u16, stream_type: u8 },
    /// The program has no H.264 or H.265 video.
    NoVideo,
    /// Packets of a stream were lost; what was in progress was dropped.
    Lost { pid: u16 },
    /// A PES over the size limit was dropped.
    Oversized { pid: u16 },
    /// Time jumped by this many milliseconds; the stream's time goes on smoothly.
    Discontinuity { pid: u16, jump_ms: i64 },
}

/// Unwraps a 33-bit clock: each value is taken in the lap nearest the last one.
#[derive(Debug, Default, Clone, Copy)]
struct Unwrap {
    last: Option<u64>,
}

impl Unwrap {
    fn extend(&mut self, raw: u64) -> u64 {
        let raw = raw & (WRAP - 1);
        let ext = match self.last {
            None => raw + WRAP, // one lap up, so that a value just before it fits
            Some(last) => {
                let lap = last / WRAP;
                [lap.saturating_sub(1), lap, lap + 1]
                    .into_iter()
                    .map(|l| l * WRAP + raw)
                    .min_by_key(|c| c.abs_diff(last))
                    .expect("three candidates")
            }
        };
        self.last = Some(ext);
        ext
    }
}

/// One track's time.
#[derive(Debug, Default)]
struct Track {
    pid: u16,
    unwrap: Unwrap,
    /// Last timestamp handed on, milliseconds.
    last_ms: Option<i64>,
}

/// The common clock of the tracks.
#[derive(Debug, Default)]
struct Clock {
    /// The first time stamp seen (unwrapped, 90 kHz): zero.
    base: Option<u64>,
    /// Milliseconds added after discontinuities.
    shift: i64,
}

impl Clock {
    /// `raw` (90 kHz, 33 bits) of `track` as milliseconds for the hub; a jump is
    /// reported and smoothed over.
    fn ms(&mut self, track: &mut Track, raw: u64, out: &mut Vec<Output>) -> u32 {
        // A track that replaced another (a new PMT) has a clock of its own: going back
        // at its start is a discontinuity, not jitter.
        let fresh = track.unwrap.last.is_none();
        let ext = track.unwrap.extend(raw);
        let base = *self.base.get_or_insert(ext);
        let mut ms = (ext as i64 - base as i64) / 90 + self.shift;
        if let Some(last) = track.last_ms {
            let jump = ms - last;
            if !(-MAX_BACK_MS..=MAX_JUMP_MS).contains(&jump) || (fresh && jump < 0) {
                self.shift -= jump - 1;
                ms = last + 1;
                out.push(Output::Notice(Notice::Discontinuity {
                    pid: track.pid,
                    jump_ms: jump,
                }));
            } else if ms < last {
                ms = last;
            }
        }
        let ms = ms.max(0);
        track.last_ms = Some(ms);
        ms.min(u32::MAX as i64) as u32
    }
}

/// The video track: its codec and the sequence header in force.
#[derive(Debug)]
struct Video {
    track: Track,
    hevc: bool,
    header: Option<Bytes>,
}

/// The audio track: the AudioSpecificConfig in force.
#[derive(Debug)]
struct Audio {
    track: Track,
    config: Option<[u8; 2]>,
}

/// The conversion of one transport stream.
#[derive(Debug, Default)]
pub struct TsToFlv {
    clock: Clock,
    video: Option<Video>,
    audio: Option<Audio>,
    /// The last time handed on of each kind ([`MediaKind::Audio`], video), kept when a
    /// program drops the track so that one that comes back goes on from there.
    last_ms: [Option<i64>; 2],
}

/// AAC sampling frequencies by index (ISO/IEC 14496-3 1.6.3.4).
const AAC_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

impl TsToFlv {
    pub fn new() -> TsToFlv {
        TsToFlv::default()
    }

    /// Converts one event of the demuxer.
    pub fn on_event(&mut self, event: TsEvent, out: &mut Vec<Output>) {
        match event {
            TsEvent::Program(streams) => self.program(&streams, out),
            TsEvent::Pes(pes) => self.pes(pes, out),
            TsEvent::Lost { pid } => out.push(Output::Notice(Notice::Lost { pid })),
            TsEvent::Oversized { pid } => out.push(Output::Notice(Notice::Oversized { pid })),
        }
    }

    fn program(&mut self, streams: &[TsStream], out: &mut Vec<Output>) {
        let mut video = None;
        let mut audio = None;
        for s in streams {
            match s.stream_type {
                StreamType::H264 | StreamType::Hevc if video.is_none() => {
                    video = Some((s.pid, s.stream_type == StreamType::Hevc))
                }
                StreamType::AacAdts if audio.is_none() => audio = Some(s.pid),
                other => {
                    let stream_type = match other {
                        StreamType::H264 => 0x1b,
                        StreamType::Hevc => 0x24,
                        StreamType::AacAdts => 0x0f,
                        StreamType::Other(t) => t,
                    };
                    out.push(Output::Notice(Notice::Unsupported {
                        pid: s.pid,
                        stream_type,
                    }));
                }
            }
        }
        if video.is_none() {
            out.push(Output::Notice(Notice::NoVideo));
        }
        // A stream that stays keeps its state (a repeated PMT changes nothing); one that
        // is replaced starts a new track whose time goes on from the old one's, so what
        // the hub sees of a kind never goes back.
        let now_video = self.video.as_ref().map(|v| (v.track.pid, v.hevc));
        if video != now_video {
            if let Some(v) = &self.video {
                self.last_ms[1] = v.track.last_ms.or(self.last_ms[1]);
            }
            let last_ms = self.last_ms[1];
            self.video = video.map(|(pid, hevc)| Video {
                track: Track {
                    pid,
                    last_ms,
                    ..Track::default()
                },
                hevc,
                header: None,
            });
        }
        if audio != self.audio.as_ref().map(|a| a.track.pid) {
            if let Some(a) = &self.audio {
                self.last_ms[0] = a.track.last_ms.or(self.last_ms[0]);
            }
            let last_ms = self.last_ms[0];
            self.audio = audio.map(|pid| Audio {
                track: Track {
                    pid,
                    last_ms,
                    ..Track::default()
                },
                config: None,
            });
        }
    }

    fn pes(&mut self, pes: Pes, out: &mut Vec<Output>) {
        if self.video.as_ref().is_some_and(|v| v.track.pid == pes.pid) {
            self.video_pes(&pes, out);
        } else if self.audio.as_ref().is_some_and(|a| a.track.pid == pes.pid) {
            self.audio_pes(&pes, out);
        }
    }

    fn video_pes(&mut self, pes: &Pes, out: &mut Vec<Output>) {
        let video = self.video.as_mut().expect("checked");
        let Some(dts) = pes.dts.or(pes.pts) else {
            return;
        };
        let pts = pes.pts.unwrap_or(dts);
        let units = mux::annex_b_units(&pes.data);
        let (mut params, mut frame) = (Vec::new(), Vec::new());
        let mut keyframe = false;
        for u in units {
            let t = if video.hevc {
                mux::h265_nal_type(u)
            } else {
                mux::h264_nal_type(u)
            };
            match (video.hevc, t) {
                // Parameter sets (into the sequence header), delimiters and filler.
                (false, Some(7 | 8)) | (true, Some(32..=34)) => params.push(u),
                (false, Some(9 | 12)) | (true, Some(35 | 38)) => {}
                (false, Some(5)) | (true, Some(16..=23)) => {
                    keyframe = true;
                    frame.push(u);
                }
                _ => frame.push(u),
            }
        }
        let timestamp = self.clock.ms(&mut video.track, dts, out);
        if !params.is_empty() {
            let of = |types: &[u8]| -> Vec<&[u8]> {
                params
                    .iter()
                    .copied()
                    .filter(|u| {
                        let t = if video.hevc {
                            mux::h265_nal_type(u)
                        } else {
                            mux::h264_nal_type(u)
                        };
                        t.is_some_and(|t| types.contains(&t))
                    })
                    .collect()
            };
            let header = if video.hevc {
                mux::hevc_sequence_header(&of(&[32]), &of(&[33]), &of(&[34]))
            } else {
                mux::avc_sequence_header(&of(&[7]), &of(&[8]))
            };
            if let Some(h) = header.filter(|h| video.header.as_ref() != Some(h)) {
                video.header = Some(h.clone());
                out.push(Output::Media {
                    kind: MediaKind::Video,
                    timestamp,
                    body: h,
                });
            }
        }
        // Nothing to decode a frame with yet, or nothing to decode.
        if video.header.is_none() || frame.is_empty() {
            return;
        }
        let composition =
            ((pts as i64 - dts as i64).rem_euclid(WRAP as i64) / 90).clamp(0, 0x7f_ffff) as i32;
        let body = if video.hevc {
            mux::hevc_frame(keyframe, composition, &frame)
        } else {
            mux::avc_frame(keyframe, composition, &frame)
        };
        out.push(Output::Media {
            kind: MediaKind::Video,
            timestamp,
            body,
        });
    }

    fn audio_pes(&mut self, pes: &Pes, out: &mut Vec<Output>) {
        let audio = self.audio.as_mut().expect("checked");
        let Some(pts) = pes.pts else {
            return;
        };
        let data = &pes.data[..];
        let (mut at, mut n) = (0usize, 0u64);
        while at + 7 <= data.len() {
            let h = &data[at..];
            if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
                break;
            }
            let len =
                (((h[3] & 0x03) as usize) << 11) | ((h[4] as usize) << 3) | ((h[5] >> 5) as usize);
            let header = if h[1] & 0x01 == 0 { 9 } else { 7 };
            if len <= header || at + len > data.len() {
                break;
            }
            let Some(config) = mux::adts_audio_specific_config(h) else {
                break;
            };
            let rate = AAC_RATES
                .get(((h[2] >> 2) & 0x0f) as usize)
                .copied()
                .unwrap_or(44100) as u64;
            let at_90k = pts + n * 1024 * 90_000 / rate;
            let timestamp = self.clock.ms(&mut audio.track, at_90k, out);
            if audio.config != Some(config) {
                audio.config = Some(config);
                out.push(Output::Media {
                    kind: MediaKind::Audio,
                    timestamp,
                    body: mux::aac_sequence_header(&config),
                });
            }
            out.push(Output::Media {
                kind: MediaKind::Audio,
                timestamp,
                body: mux::aac_frame(&h[header..len]),
            });
            at += len;
            n += 1;
        }
    }
}
