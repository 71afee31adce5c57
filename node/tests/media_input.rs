//! The protocol-neutral media input, end to end with no RTMP publisher at all: H.264
//! in Annex B and AAC in ADTS (what MPEG-TS carries over SRT), made by a real ffmpeg,
//! turned into FLV tag bodies by `media::mux`, admitted by `Authorizer::admit` under
//! another protocol, fed to the hub, relayed by the node's relay to a real nginx-rtmp
//! (whose HLS ffprobe reads back), and thumbnailed from the hub's snapshot.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use media::mux;
use media::MediaKind;
use streamgate::auth::{Authorizer, FleetTakeover, PublishAttempt, Verdict};
use streamgate::config::{AuthConfig, RelayConfig, RtmpConfig, StatusConfig};
use streamgate::hub::{Hub, Protocol, PublishObserver, ReadBatch};
use streamgate::outbox::StatusOutbox;
use streamgate::relay::RelayManager;
use streamgate::store::sqlite::SqliteStore;
use streamgate::store::ChannelDirectory;

/// Runs ffmpeg to write `name` in `dir` from a test source; returns its bytes.
fn ffmpeg_to(dir: &std::path::Path, name: &str, args: &[&str]) -> Vec<u8> {
    require("ffmpeg", "ffmpeg");
    let out = dir.join(name);
    run_ok(
        std::process::Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
            .args(args)
            .arg(&out),
    );
    std::fs::read(out).unwrap()
}

/// Splits ADTS into frames (header length from the header, CRC or not).
fn adts_frames(data: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 7 <= data.len() {
        let h = &data[i..];
        let len =
            (((h[3] & 0x03) as usize) << 11) | ((h[4] as usize) << 3) | ((h[5] >> 5) as usize);
        let header = if h[1] & 0x01 == 0 { 9 } else { 7 };
        if len < header || i + len > data.len() {
            break;
        }
        out.push((&data[i..i + header], &data[i + header..i + len]));
        i += len;
    }
    out
}

#[test]
fn an_elementary_stream_publisher_feeds_the_same_hub_relay_and_thumbnails() {
    let dir = TempDir::new("media-input");
    let video = ffmpeg_to(
        &dir.0,
        "clip.h264",
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "6",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-bf",
            "0",
            "-g",
            "25",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "h264",
        ],
    );
    let audio = ffmpeg_to(
        &dir.0,
        "clip.aac",
        &[
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "6",
            "-c:a",
            "aac",
            "-f",
            "adts",
        ],
    );
    let nginx = Nginx::start(&["live"], None);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let (channel, key) = store.create_channel("srt-like").await.unwrap();
        let relay = RelayManager::new(RelayConfig {
            targets: vec![streamgate::config::TargetTemplate::new(&format!(
                "rtmp://127.0.0.1:{}/live/{{channel_id}}",
                nginx.port
            ))
            .unwrap()],
            ..RelayConfig::default()
        })
        .unwrap();
        let hub = Hub::new(
            StatusOutbox::new(),
            vec![relay.clone() as Arc<dyn PublishObserver>],
            Duration::from_secs(3),
        );
        let rtmp = RtmpConfig::default();
        let auth = Authorizer::new(
            store.clone(),
            store.clone(),
            AuthConfig::default(),
            hub.clone(),
            FleetTakeover::of(&rtmp, &StatusConfig::default()),
        );
        let attempt = PublishAttempt {
            key,
            peer: "127.0.0.1:9000".parse().unwrap(),
            protocol: Protocol::Srt,
            cancel: None,
        };
        let Verdict::Admitted(handle) = auth.admit(attempt).await else {
            panic!("the key was refused")
        };
        let stream = handle.stream.clone();

        // Parameter sets first, then one access unit a frame (x264 writes one slice a
        // picture here), 40 ms apart, AAC interleaved by time.
        let units = mux::annex_b_units(&video);
        let find = |t: u8| {
            *units
                .iter()
                .find(|u| mux::h264_nal_type(u) == Some(t))
                .unwrap()
        };
        let header = mux::avc_sequence_header(&[find(7)], &[find(8)]).unwrap();
        let frames: Vec<Bytes> = units
            .iter()
            .filter(|u| matches!(mux::h264_nal_type(u), Some(1 | 5)))
            .map(|u| mux::avc_frame(mux::h264_nal_type(u) == Some(5), 0, &[u]))
            .collect();
        let aac = adts_frames(&audio);
        let asc = mux::adts_audio_specific_config(aac[0].0).unwrap();
        let mut batch = ReadBatch::default();
        batch.push_media(MediaKind::Video, 0, header);
        batch.push_media(MediaKind::Audio, 0, mux::aac_sequence_header(&asc));
        stream.deliver_read(&mut batch, tokio::time::Instant::now());
        let mut next_audio = 0usize;
        for (n, frame) in frames.iter().enumerate() {
            let ts = n as u32 * 40;
            let mut batch = ReadBatch::default();
            batch.push_media(MediaKind::Video, ts, frame.clone());
            // AAC frames of 1024 samples at 44.1 kHz, up to this video frame.
            while next_audio < aac.len() && (next_audio as u64 * 1024 * 1000 / 44100) as u32 <= ts {
                let at = (next_audio as u64 * 1024 * 1000 / 44100) as u32;
                batch.push_media(MediaKind::Audio, at, mux::aac_frame(aac[next_audio].1));
                next_audio += 1;
            }
            stream.deliver_read(&mut batch, tokio::time::Instant::now());
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        assert!(frames.len() >= 140, "{} frames", frames.len());

        // The thumbnailer decodes the hub's snapshot (sequence header and the latest
        // keyframe) as it does for RTMP: here, that keyframe as Annex B through ffmpeg.
        let snapshot = stream.snapshot();
        let header = snapshot.video_sequence_header.expect("a sequence header");
        let keyframe = snapshot.keyframe.expect("a keyframe");
        let tag = media::VideoTag::parse(&header.body).unwrap();
        let config =
            media::codec::DecoderConfig::from_avcc(&header.body[tag.data_offset..]).unwrap();
        let frame = &keyframe.frame.body;
        let frame_tag = media::VideoTag::parse(frame).unwrap();
        let annex_b = config.annex_b(&frame[frame_tag.data_offset..]).unwrap();
        let keyframe_file = dir.0.join("keyframe.h264");
        std::fs::write(&keyframe_file, &annex_b).unwrap();
        let jpeg_file = dir.0.join("thumb.jpg");
        run_ok(
            std::process::Command::new("ffmpeg")
                .args(["-nostdin", "-loglevel", "error", "-y", "-f", "h264", "-i"])
                .arg(&keyframe_file)
                .args(["-frames:v", "1"])
                .arg(&jpeg_file),
        );
        let jpeg = std::fs::read(&jpeg_file).unwrap();
        assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG");
        let info = stream.info();
        assert_eq!(info.stats.video_codec.map(|c| c.name()), Some("h264"));
        assert_eq!(
            info.stats.size.map(|s| (s.width, s.height)),
            Some((320, 240))
        );
        drop(handle);
        relay.tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), relay.tracker.wait()).await;
        channel
    });
    // What the relay sent, as nginx-rtmp wrote it to HLS: H.264 320x240 and AAC.
    let playlist = nginx.wait_playlist("live", &runtime_channel(&nginx), Duration::from_secs(10));
    let streams = ffprobe_streams(&playlist);
    assert!(
        streams.iter().any(|s| s.1 == "h264" && s.2 == Some(320)),
        "{streams:?}"
    );
    assert!(streams.iter().any(|s| s.1 == "aac"), "{streams:?}");
}

/// The one playlist nginx-rtmp wrote (named by the channel's public id).
fn runtime_channel(nginx: &Nginx) -> String {
    let dir = nginx.hls_dir("live");
    wait_for(Duration::from_secs(10), || {
        std::fs::read_dir(&dir)
            .ok()?
            .filter_map(Result::ok)
            .find_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix(".m3u8")
                    .map(str::to_string)
            })
    })
    .expect("a playlist")
}
