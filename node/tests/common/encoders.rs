//! ffmpeg publishing test patterns, and ffprobe reading what came out.

use std::path::Path;
use std::process::Command;

use super::{require, Proc, TempDir};

/// ffmpeg publishing a moving H.264 + AAC test pattern for `seconds`.
pub fn ffmpeg_publish(url: &str, size: &str, seconds: u32) -> Proc {
    ffmpeg_publish_pix(url, size, seconds, "yuv420p")
}

/// `ffmpeg_publish` with another pixel format (e.g. 10-bit `yuv420p10le`).
pub fn ffmpeg_publish_pix(url: &str, size: &str, seconds: u32, pix_fmt: &str) -> Proc {
    let video = [
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "30",
        "-pix_fmt",
        pix_fmt,
    ];
    ffmpeg_test_pattern(url, size, &video, None, seconds)
}

/// ffmpeg publishing a 320x180 30 fps test pattern with AAC, with `video` as the
/// H.264 settings and `filter` on the picture.
pub fn ffmpeg_publish_with(url: &str, video: &[&str], filter: Option<&str>, seconds: u32) -> Proc {
    let video = [&["-pix_fmt", "yuv420p"], video].concat();
    ffmpeg_test_pattern(url, "320x180", &video, filter, seconds)
}

/// ffmpeg publishing a moving 30 fps test pattern of `size` with a 440 Hz tone for
/// `seconds`, in real time, as H.264 (`video`: its settings) and 64 kbps AAC in FLV.
fn ffmpeg_test_pattern(
    url: &str,
    size: &str,
    video: &[&str],
    filter: Option<&str>,
    seconds: u32,
) -> Proc {
    require("ffmpeg", "ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
    ])
    .arg(format!("testsrc2=size={size}:rate=30"))
    .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
    if let Some(f) = filter {
        cmd.args(["-vf", f]);
    }
    cmd.args(["-c:v", "libx264"]).args(video);
    cmd.args([
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-t",
        &seconds.to_string(),
        "-f",
        "flv",
        url,
    ]);
    Proc::spawn(&mut cmd)
}

/// Streams ffprobe finds in a file or playlist: (codec_type, codec_name, width, height).
pub fn ffprobe_streams(path: &Path) -> Vec<(String, String, Option<u64>, Option<u64>)> {
    require("ffprobe", "ffmpeg");
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_type,codec_name,width,height",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["codec_type"].as_str().unwrap_or_default().to_string(),
                s["codec_name"].as_str().unwrap_or_default().to_string(),
                s["width"].as_u64(),
                s["height"].as_u64(),
            )
        })
        .collect()
}

/// NAL units of an Annex-B byte stream.
pub fn nal_units(data: &[u8]) -> Vec<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &s)| {
            let end = starts.get(n + 1).map_or(data.len(), |&e| e - 3);
            let mut nal = data[s..end].to_vec();
            while nal.last() == Some(&0) {
                nal.pop();
            }
            nal
        })
        .collect()
}

/// One keyframe of a real encoder, as Annex B.
pub fn encode_one_frame(codec: &str, format: &str, size: &str) -> Vec<u8> {
    require("ffmpeg", "ffmpeg");
    let dir = TempDir::new("enc");
    let out = dir.0.join("frame.bin");
    let status = Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            &format!("testsrc2=size={size}:rate=30"),
        ])
        .args(["-frames:v", "1", "-c:v", codec, "-pix_fmt", "yuv420p"])
        .args(if codec == "libx265" {
            &["-x265-params", "log-level=error"][..]
        } else {
            &[][..]
        })
        .args(["-f", format])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(&out).unwrap()
}

/// NAL units with 4-byte length prefixes (AVCC / HVCC).
pub fn length_prefixed(nals: &[&Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    for n in nals {
        v.extend_from_slice(&(n.len() as u32).to_be_bytes());
        v.extend_from_slice(n);
    }
    v
}

/// Enhanced RTMP video tags of one real x265 keyframe: the sequence start (hvcC) and
/// the keyframe.
pub fn hevc_tags(size: &str) -> (Vec<u8>, Vec<u8>) {
    let annexb = encode_one_frame("libx265", "hevc", size);
    let nals = nal_units(&annexb);
    let of_type = |t: u8| nals.iter().filter(move |n| (n[0] >> 1) & 0x3f == t);
    // hvcC: version 1, profile fields (not needed by the decoder path), 4-byte lengths,
    // then arrays of VPS (32), SPS (33), PPS (34).
    let mut hvcc = vec![1u8];
    hvcc.extend_from_slice(&[0; 20]);
    hvcc.push(0x03);
    hvcc.push(3);
    for t in [32u8, 33, 34] {
        let list: Vec<_> = of_type(t).collect();
        assert!(!list.is_empty(), "x265 output has NAL type {t}");
        hvcc.push(0x80 | t);
        hvcc.extend_from_slice(&(list.len() as u16).to_be_bytes());
        for n in list {
            hvcc.extend_from_slice(&(n.len() as u16).to_be_bytes());
            hvcc.extend_from_slice(n);
        }
    }
    let slices: Vec<&Vec<u8>> = nals.iter().filter(|n| (n[0] >> 1) & 0x3f < 32).collect();
    assert!(!slices.is_empty());
    // Enhanced RTMP: IsExHeader | FrameType 1 (key) | PacketType, FourCC "hvc1".
    let mut seq = vec![0x90];
    seq.extend_from_slice(b"hvc1");
    seq.extend_from_slice(&hvcc);
    let mut key_frame = vec![0x91];
    key_frame.extend_from_slice(b"hvc1");
    key_frame.extend_from_slice(&[0, 0, 0]); // composition time
    key_frame.extend_from_slice(&length_prefixed(&slices));
    (seq, key_frame)
}
