//! SRT publishers for the tests: ffmpeg (libsrt), a UDP forwarder that loses
//! datagrams, and what ffprobe says of the timestamps of an HLS output.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{require, Proc};

/// `srt://127.0.0.1:PORT?streamid=...` plus `extra` parameters (`&passphrase=...`).
pub fn srt_url(port: u16, stream_id: &str, extra: &str) -> String {
    format!("srt://127.0.0.1:{port}?streamid={stream_id}{extra}")
}

/// ffmpeg publishing a moving test pattern and a tone as MPEG-TS over SRT: `codec`
/// `libx264` (with B-frames) or `libx265`, AAC audio.
pub fn ffmpeg_srt(url: &str, codec: &str, size: &str, seconds: u32) -> Proc {
    require("ffmpeg", "ffmpeg");
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "warning",
        "-re",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={size}:rate=30"),
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-c:v",
        codec,
        "-preset",
        "ultrafast",
        "-g",
        "30",
        "-pix_fmt",
        "yuv420p",
    ]);
    if codec == "libx264" {
        // B-frames: composition offsets the conversion must carry.
        cmd.args(["-bf", "2"]);
    } else {
        cmd.args(["-x265-params", "log-level=error"]);
    }
    cmd.args([
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-t",
        &seconds.to_string(),
        "-f",
        "mpegts",
        url,
    ]);
    Proc::spawn(&mut cmd)
}

/// A UDP forwarder between one SRT caller and the node that loses a share of the
/// datagrams each way (a deterministic pattern: one in `every`).
pub struct LossyPath {
    pub port: u16,
    pub dropped: Arc<AtomicU64>,
    pub forwarded: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LossyPath {
    pub fn start(node_port: u16, every: u64) -> LossyPath {
        let outside = UdpSocket::bind("127.0.0.1:0").unwrap();
        let inside = UdpSocket::bind("127.0.0.1:0").unwrap();
        inside.connect(("127.0.0.1", node_port)).unwrap();
        for s in [&outside, &inside] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let port = outside.local_addr().unwrap().port();
        let (dropped, forwarded, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let caller: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
        let mut threads = Vec::new();
        // Caller to node.
        {
            let (outside, inside) = (outside.try_clone().unwrap(), inside.try_clone().unwrap());
            let (dropped, forwarded, stop, caller) = (
                dropped.clone(),
                forwarded.clone(),
                stop.clone(),
                caller.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut n_seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = outside.recv_from(&mut buf) else {
                        continue;
                    };
                    *caller.lock().unwrap() = Some(from);
                    n_seen += 1;
                    // Handshakes pass (the first few): losses start with the media.
                    if n_seen > 4 && n_seen.is_multiple_of(every) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    forwarded.fetch_add(1, Ordering::Relaxed);
                    let _ = inside.send(&buf[..n]);
                }
            }));
        }
        // Node to caller.
        {
            let (dropped, stop) = (dropped.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                let mut n_seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = inside.recv(&mut buf) else {
                        continue;
                    };
                    n_seen += 1;
                    if n_seen > 4 && n_seen.is_multiple_of(every) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if let Some(to) = *caller.lock().unwrap() {
                        let _ = outside.send_to(&buf[..n], to);
                    }
                }
            }));
        }
        LossyPath {
            port,
            dropped,
            forwarded,
            stop,
            threads,
        }
    }
}

impl Drop for LossyPath {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The decoding times (seconds) of each stream of an HLS playlist, as ffprobe reads
/// them: (codec_type, times).
pub fn hls_dts(playlist: &Path) -> Vec<(String, Vec<f64>)> {
    require("ffprobe", "ffmpeg");
    // A live playlist has no end: ffprobe reading its packets would wait for the
    // next segment forever. Read a copy that says the stream ended, beside it (the
    // segments' names are relative).
    let text = std::fs::read_to_string(playlist).expect("read the playlist");
    let ended = playlist.with_extension("ended.m3u8");
    std::fs::write(&ended, format!("{text}\n#EXT-X-ENDLIST\n")).unwrap();
    let out = Command::new("timeout")
        .args([
            "60",
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type:packet=stream_index,dts_time",
            "-of",
            "json",
        ])
        .arg(&ended)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        playlist.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let streams = v["streams"].as_array().unwrap();
    streams
        .iter()
        .map(|s| {
            let index = s["index"].as_u64().unwrap();
            let times = v["packets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["stream_index"].as_u64() == Some(index))
                .filter_map(|p| p["dts_time"].as_str()?.parse().ok())
                .collect();
            (
                s["codec_type"].as_str().unwrap_or_default().to_string(),
                times,
            )
        })
        .collect()
}

/// Asserts that every stream's decoding times never go back and never jump by more
/// than `max_gap` seconds: a clean stream for a packager.
pub fn assert_continuous(playlist: &Path, max_gap: f64) {
    let streams = hls_dts(playlist);
    assert!(
        streams.iter().any(|(t, d)| t == "video" && d.len() > 30),
        "{}: {:?}",
        playlist.display(),
        streams
            .iter()
            .map(|(t, d)| (t, d.len()))
            .collect::<Vec<_>>()
    );
    for (kind, dts) in &streams {
        for w in dts.windows(2) {
            assert!(
                w[1] >= w[0] && w[1] - w[0] <= max_gap,
                "{kind} timestamps of {}: {} then {}",
                playlist.display(),
                w[0],
                w[1]
            );
        }
    }
}
