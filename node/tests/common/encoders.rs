//! ffmpeg publishing test patterns, and ffprobe reading what came out.

use std::path::Path;
use std::process::Command;

use super::{require, Proc};

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
