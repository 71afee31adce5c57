//! The demuxer and the conversion on real captures (`tests/assets`, made by ffmpeg),
//! cut and damaged as the network does it, and on arbitrary bytes.

use super::to_flv::{Notice, Output, TsToFlv};
use super::*;
use crate::codec::{h264_sps_size, h265_sps_size, DecoderConfig};
use crate::tag::{AudioTag, VideoCodec, VideoPacket, VideoTag};
use crate::MediaKind;

const H264: &[u8] = include_bytes!("../../tests/assets/h264_aac_bframes.ts");
const HEVC: &[u8] = include_bytes!("../../tests/assets/hevc_aac.ts");

fn demux(data: &[u8], piece: usize) -> Vec<TsEvent> {
    let mut d = TsDemuxer::new(4 << 20);
    let mut events = Vec::new();
    for chunk in data.chunks(piece) {
        d.push(chunk, &mut events);
    }
    events
}

fn convert(events: Vec<TsEvent>) -> Vec<Output> {
    let mut c = TsToFlv::new();
    let mut out = Vec::new();
    for e in events {
        c.on_event(e, &mut out);
    }
    out
}

fn media(out: &[Output], want: MediaKind) -> Vec<(u32, Bytes)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Media {
                kind,
                timestamp,
                body,
            } if *kind == want => Some((*timestamp, body.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_program_and_every_pes_of_a_real_capture() {
    let events = demux(H264, H264.len());
    let TsEvent::Program(streams) = &events[0] else {
        panic!("{:?}", events[0])
    };
    let types: Vec<StreamType> = streams.iter().map(|s| s.stream_type).collect();
    assert_eq!(types, vec![StreamType::H264, StreamType::AacAdts]);
    let video: Vec<&Pes> = events
        .iter()
        .filter_map(|e| match e {
            TsEvent::Pes(p) if p.stream_type == StreamType::H264 => Some(p),
            _ => None,
        })
        .collect();
    // 2 s at 25 fps; the last PES is still open (no next start, no length).
    assert!((49..=50).contains(&video.len()), "{}", video.len());
    assert!(video[0].random_access && video[0].pts.is_some() && video[0].dts.is_some());
    // B-frames: some presentation times differ from their decoding times.
    assert!(video.iter().any(|p| p.pts != p.dts));
    let audio = events
        .iter()
        .filter(|e| matches!(e, TsEvent::Pes(p) if p.stream_type == StreamType::AacAdts))
        .count();
    assert!(audio > 0);
}

#[test]
fn any_split_of_the_bytes_gives_the_same_events() {
    let whole = demux(H264, H264.len());
    for piece in [1, 7, 188, 1316, 4000] {
        assert_eq!(demux(H264, piece), whole, "in pieces of {piece}");
    }
}

#[test]
fn h264_with_b_frames_becomes_what_rtmp_carries() {
    let out = convert(demux(H264, 1316));
    let video = media(&out, MediaKind::Video);
    // The sequence header first: avcC with the SPS of a 160x120 picture.
    let header = VideoTag::parse(&video[0].1).unwrap();
    assert_eq!(
        (header.codec, header.packet),
        (VideoCodec::Avc, VideoPacket::SequenceHeader)
    );
    let cfg = DecoderConfig::from_avcc(&video[0].1[header.data_offset..]).unwrap();
    let size = h264_sps_size(cfg.sps().unwrap()).unwrap();
    assert_eq!((size.width, size.height), (160, 120));
    // Then frames: the first a keyframe, one a second (GOP 25), composition offsets
    // for the reordered pictures, decoding times rising 40 ms a frame.
    let frames: Vec<(u32, VideoTag, &Bytes)> = video[1..]
        .iter()
        .map(|(t, b)| (*t, VideoTag::parse(b).unwrap(), b))
        .collect();
    assert!(frames[0].1.keyframe);
    assert_eq!(frames.iter().filter(|f| f.1.keyframe).count(), 2);
    assert!(
        frames.iter().any(|f| f.2[2..5] != [0, 0, 0]),
        "some composition offset"
    );
    assert!(frames.windows(2).all(|w| w[1].0 >= w[0].0), "monotonic");
    assert_eq!(frames[10].0 - frames[9].0, 40);
    // Each frame converts back to Annex B with the record's parameter sets.
    for (_, tag, body) in &frames {
        cfg.annex_b(&body[tag.data_offset..]).unwrap();
    }
    let audio = media(&out, MediaKind::Audio);
    assert!(AudioTag::parse(&audio[0].1).unwrap().sequence_header);
    assert_eq!(&audio[0].1[2..4], &[0x12, 0x08], "AAC LC, 44.1 kHz, mono");
    assert!(audio.len() > 80, "{} AAC frames in 2 s", audio.len());
    assert!(audio.windows(2).all(|w| w[1].0 >= w[0].0));
    assert!(
        !out.iter().any(|o| matches!(o, Output::Notice(_))),
        "{out:?}"
    );
}

#[test]
fn hevc_becomes_enhanced_rtmp() {
    let out = convert(demux(HEVC, 1316));
    let video = media(&out, MediaKind::Video);
    let header = VideoTag::parse(&video[0].1).unwrap();
    assert_eq!(
        (header.codec, header.packet),
        (VideoCodec::Hevc, VideoPacket::SequenceHeader)
    );
    assert!(header.enhanced);
    let cfg = DecoderConfig::from_hvcc(&video[0].1[header.data_offset..]).unwrap();
    assert_eq!(cfg.parameter_sets.len(), 3, "VPS, SPS, PPS");
    let size = h265_sps_size(cfg.sps().unwrap()).unwrap();
    assert_eq!((size.width, size.height), (160, 120));
    let first = VideoTag::parse(&video[1].1).unwrap();
    assert!(first.keyframe && first.is_keyframe_data(), "{first:?}");
    for (_, body) in &video[1..] {
        let tag = VideoTag::parse(body).unwrap();
        cfg.annex_b(&body[tag.data_offset..]).unwrap();
    }
    assert!(video.len() > 20);
}

#[test]
fn a_lost_packet_drops_its_pes_and_the_stream_goes_on() {
    // Drop the 30th packet of the video PID.
    let mut damaged = Vec::new();
    let mut video_packets = 0;
    for p in H264.chunks(PACKET) {
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        if pid == 0x100 {
            video_packets += 1;
            if video_packets == 30 {
                continue;
            }
        }
        damaged.extend_from_slice(p);
    }
    let whole = media(&convert(demux(H264, 1316)), MediaKind::Video).len();
    let out = convert(demux(&damaged, 1316));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Notice(Notice::Lost { pid: 0x100 }))));
    let video = media(&out, MediaKind::Video);
    assert_eq!(video.len(), whole - 1, "one frame lost, the rest kept");
}

#[test]
fn garbage_between_packets_is_skipped() {
    let mut data = b"not a transport stream at all".to_vec();
    for (i, p) in H264.chunks(PACKET).enumerate() {
        data.extend_from_slice(p);
        if i == 100 {
            data.extend_from_slice(&[0x47, 1, 2, 3, 4]);
        }
    }
    let mut d = TsDemuxer::new(4 << 20);
    let mut events = Vec::new();
    d.push(&data, &mut events);
    assert!(d.skipped() > 0);
    let pes = events
        .iter()
        .filter(|e| matches!(e, TsEvent::Pes(_)))
        .count();
    let clean = demux(H264, H264.len())
        .iter()
        .filter(|e| matches!(e, TsEvent::Pes(_)))
        .count();
    assert!(pes + 2 >= clean, "{pes} of {clean}");
}

#[test]
fn the_33_bit_clock_wraps_and_jumps_are_smoothed() {
    let mut c = to_flv_clock_probe();
    // Just before the wrap, then after it: time goes on.
    let before = c.at((1 << 33) - 90 * 40);
    let after = c.at(90 * 40);
    assert_eq!(after - before, 80);
    // An hour's jump (an encoder restarted): reported, and time goes on by 1 ms.
    let (jumped, notice) = c.at_with_notice(90 * 40 + 90 * 3_600_000);
    assert_eq!(jumped, after + 1);
    assert!(notice);
    // And continues from there at the stream's pace.
    let next = c.at(90 * 40 + 90 * 3_600_000 + 90 * 40);
    assert_eq!(next, jumped + 40);
}

/// A converter fed single video PES packets with given times (an H.264 keyframe with
/// its parameter sets), to read the clock through it.
struct ClockProbe {
    c: TsToFlv,
    pid: u16,
}

fn to_flv_clock_probe() -> ClockProbe {
    let mut c = TsToFlv::new();
    let mut out = Vec::new();
    c.on_event(
        TsEvent::Program(vec![TsStream {
            pid: 0x100,
            stream_type: StreamType::H264,
        }]),
        &mut out,
    );
    ClockProbe { c, pid: 0x100 }
}

impl ClockProbe {
    fn at_with_notice(&mut self, t: u64) -> (u32, bool) {
        let sps: &[u8] = &[
            0x67, 0x64, 0x00, 0x1e, 0xac, 0xd9, 0x40, 0xa0, 0x2f, 0xf9, 0x70, 0x11,
        ];
        let mut data = vec![0, 0, 0, 1];
        data.extend_from_slice(sps);
        data.extend_from_slice(&[0, 0, 0, 1, 0x68, 0xeb, 0xe3, 0xcb, 0, 0, 0, 1, 0x65, 0x88]);
        let mut out = Vec::new();
        self.c.on_event(
            TsEvent::Pes(Pes {
                pid: self.pid,
                stream_type: StreamType::H264,
                pts: Some(t & ((1 << 33) - 1)),
                dts: Some(t & ((1 << 33) - 1)),
                random_access: true,
                data: Bytes::from(data),
            }),
            &mut out,
        );
        let ts = out
            .iter()
            .rev()
            .find_map(|o| match o {
                Output::Media { timestamp, .. } => Some(*timestamp),
                _ => None,
            })
            .expect("a frame");
        let notice = out
            .iter()
            .any(|o| matches!(o, Output::Notice(Notice::Discontinuity { .. })));
        (ts, notice)
    }

    fn at(&mut self, t: u64) -> u32 {
        self.at_with_notice(t).0
    }
}

#[test]
fn a_new_program_goes_on_from_the_old_time() {
    // A PMT that moves the video to another PID (a restarted muxer, a splice) starts a
    // new track: its time must not go back below what the hub already has (a fuzzer
    // found 120 -> 0).
    let mut c = to_flv_clock_probe();
    c.at(90 * 1000);
    let before = c.at(90 * 1120);
    assert_eq!(before, 120);
    let mut out = Vec::new();
    c.c.on_event(
        TsEvent::Program(vec![TsStream {
            pid: 0x200,
            stream_type: StreamType::H264,
        }]),
        &mut out,
    );
    c.pid = 0x200;
    // Earlier than the stream's first time stamp (a clock of its own): a
    // discontinuity, time goes on 1 ms after the old track's last.
    let after = c.at(90 * 500);
    assert_eq!(after, before + 1);
    // And on at the stream's pace from there.
    let next = c.at(90 * 540);
    assert_eq!(next, after + 40);
}

#[test]
fn a_program_without_video_or_with_other_codecs_says_so() {
    let mut c = TsToFlv::new();
    let mut out = Vec::new();
    c.on_event(
        TsEvent::Program(vec![
            TsStream {
                pid: 0x101,
                stream_type: StreamType::AacAdts,
            },
            TsStream {
                pid: 0x102,
                stream_type: StreamType::Other(0x03),
            },
        ]),
        &mut out,
    );
    assert!(out.contains(&Output::Notice(Notice::NoVideo)));
    assert!(out.contains(&Output::Notice(Notice::Unsupported {
        pid: 0x102,
        stream_type: 0x03
    })));
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..4000)) {
        let mut d = TsDemuxer::new(1 << 16);
        let mut events = Vec::new();
        d.push(&data, &mut events);
        let mut c = TsToFlv::new();
        let mut out = Vec::new();
        for e in events {
            c.on_event(e, &mut out);
        }
        assert_monotonic(&out);
    }

    #[test]
    fn a_real_capture_damaged_anywhere_never_panics(at in 0usize..56400, byte in proptest::num::u8::ANY, len in 1usize..400) {
        let mut data = H264.to_vec();
        for b in data.iter_mut().skip(at).take(len) {
            *b ^= byte;
        }
        let mut d = TsDemuxer::new(1 << 20);
        let mut events = Vec::new();
        d.push(&data, &mut events);
        let mut c = TsToFlv::new();
        let mut out = Vec::new();
        for e in events {
            c.on_event(e, &mut out);
        }
        assert_monotonic(&out);
    }
}

/// What the hub gets of each kind never goes back in time.
fn assert_monotonic(out: &[Output]) {
    for kind in [MediaKind::Audio, MediaKind::Video] {
        let times: Vec<u32> = media(out, kind).into_iter().map(|(t, _)| t).collect();
        assert!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "{kind:?} went back: {times:?}"
        );
    }
}

#[test]
fn video_that_leaves_the_program_and_comes_back_goes_on_from_its_time() {
    // A PMT without the video, then one with it again (a fuzzer found 790868 -> 0).
    let mut c = to_flv_clock_probe();
    c.at(90 * 1000);
    let before = c.at(90 * 60_000);
    let mut out = Vec::new();
    c.c.on_event(TsEvent::Program(vec![]), &mut out);
    c.c.on_event(
        TsEvent::Program(vec![TsStream {
            pid: 0x100,
            stream_type: StreamType::H264,
        }]),
        &mut out,
    );
    assert_eq!(c.at(90 * 1000), before + 1);
}

#[test]
fn a_pes_header_too_short_for_its_time_stamps_has_none() {
    // Flags say PTS and DTS, the header holds 5 bytes and the PES ends there (a fuzzer
    // found the DTS read past the end).
    let e = Elementary {
        stream: TsStream {
            pid: 0x100,
            stream_type: StreamType::H264,
        },
        cc: None,
        pes: None,
        random_access: false,
    };
    let mut pes = BytesMut::from(&[0, 0, 1, 0xe0, 0, 0, 0x80, 0xc0, 5][..]);
    pes.extend_from_slice(&[0x21, 0, 1, 0, 1]);
    let mut events = Vec::new();
    emit(&e, pes, &mut events);
    match &events[..] {
        [TsEvent::Pes(p)] => {
            assert_eq!(p.pts, Some(0));
            assert_eq!(p.dts, None);
            assert!(p.data.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_clock_that_goes_back_more_than_a_second_is_a_discontinuity() {
    // A looped file: two seconds in, the clock starts again.
    let mut c = to_flv_clock_probe();
    c.at(90 * 1000);
    let before = c.at(90 * 3000);
    let (after, notice) = c.at_with_notice(90 * 1000);
    assert!(notice);
    assert_eq!(after, before + 1);
    assert_eq!(c.at(90 * 1040), after + 40, "and on at the stream's pace");
    // Jitter back by less is held.
    let held = c.at(90 * 1000);
    assert_eq!(held, after + 40);
}
