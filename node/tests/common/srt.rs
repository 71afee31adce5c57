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
        LossyPath::start_from([127, 0, 0, 1].into(), node_port, every)
    }

    /// The same, sending to the node from `source` (the node sees the caller there;
    /// `every` = `u64::MAX` loses nothing).
    pub fn start_from(source: std::net::IpAddr, node_port: u16, every: u64) -> LossyPath {
        let outside = UdpSocket::bind("127.0.0.1:0").unwrap();
        let inside = UdpSocket::bind((source, 0)).unwrap();
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

/// A hostile SRT caller: from one address, as fast as it can, inductions from ever
/// new socket ids, and for every induction answered a conclusion with the cookie and
/// a stream id (`live/<wrong key>` unless told otherwise): every handshake the node
/// must take to an admission. Counts what it sent and the rejection codes it got.
pub struct SrtFlood {
    pub sent: Arc<AtomicU64>,
    pub concluded: Arc<AtomicU64>,
    pub rejections: Arc<std::sync::Mutex<std::collections::BTreeMap<u32, u64>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SrtFlood {
    /// `per_second` inductions in all (0: as fast as the sockets go).
    pub fn start(
        from: std::net::IpAddr,
        node_port: u16,
        sockets: usize,
        per_second: u64,
    ) -> SrtFlood {
        use ::srt::handshake::{self, cmd, ext_flags, options, Handshake, HsType, SrtOptions};
        use ::srt::packet::{self, ControlHeader, ControlType, HEADER_LEN};
        let (sent, concluded, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let rejections: Arc<std::sync::Mutex<std::collections::BTreeMap<u32, u64>>> =
            Arc::default();
        let packet = |hs: &Handshake, sid: Option<&str>| {
            let mut b = Vec::with_capacity(128);
            packet::write_control(
                &mut b,
                &ControlHeader {
                    kind: ControlType::Handshake,
                    subtype: 0,
                    info: 0,
                    timestamp: 0,
                    dest: 0,
                },
            );
            hs.write(&mut b);
            if let Some(sid) = sid {
                SrtOptions {
                    version: 0x010501,
                    flags: options::TSBPDSND
                        | options::TSBPDRCV
                        | options::CRYPT
                        | options::TLPKTDROP
                        | options::NAKREPORT
                        | options::REXMITFLG,
                    recv_latency: 120,
                    send_latency: 120,
                }
                .write(&mut b, cmd::HSREQ);
                handshake::write_string(&mut b, cmd::SID, sid);
            }
            b
        };
        let threads = (0..sockets)
            .map(|t| {
                let (sent, concluded, stop, rejections) = (
                    sent.clone(),
                    concluded.clone(),
                    stop.clone(),
                    rejections.clone(),
                );
                let socket = UdpSocket::bind((from, 0)).expect("bind the attacker's address");
                socket.connect(("127.0.0.1", node_port)).unwrap();
                socket.set_nonblocking(true).unwrap();
                std::thread::spawn(move || {
                    let mut id = (t as u32 + 1) << 24;
                    let mut buf = [0u8; 1500];
                    let started = std::time::Instant::now();
                    let mut batches = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        if per_second > 0 {
                            // 32 per batch, the sockets sharing the rate.
                            let due = Duration::from_secs_f64(
                                (batches * 32 * sockets as u64) as f64 / per_second as f64,
                            );
                            if let Some(wait) = due.checked_sub(started.elapsed()) {
                                std::thread::sleep(wait);
                            }
                        }
                        batches += 1;
                        for _ in 0..32 {
                            id = id.wrapping_add(1);
                            let induction = Handshake {
                                version: 4,
                                encryption: 0,
                                extension: 2,
                                isn: ::srt::SeqNo::new(id & 0x7fff_ffff),
                                mss: 1500,
                                flow_window: 8192,
                                kind: HsType::Induction,
                                socket_id: id,
                                cookie: 0,
                                peer_ip: [0; 16],
                            };
                            if socket.send(&packet(&induction, None)).is_ok() {
                                sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        // Everything answered so far: conclude inductions, count
                        // rejections.
                        let mut idle = true;
                        while let Ok(n) = socket.recv(&mut buf) {
                            idle = false;
                            let Ok((h, _)) = Handshake::parse(&buf[HEADER_LEN.min(n)..n]) else {
                                continue;
                            };
                            match h.kind {
                                HsType::Induction => {
                                    let conclusion = Handshake {
                                        version: 5,
                                        extension: ext_flags::HSREQ | ext_flags::CONFIG,
                                        kind: HsType::Conclusion,
                                        socket_id: h.socket_id,
                                        cookie: h.cookie,
                                        isn: h.isn,
                                        ..h
                                    };
                                    let sid = format!("live/wrong_{:08x}_{t}", h.socket_id);
                                    let _ = socket.send(&packet(&conclusion, Some(&sid)));
                                    concluded.fetch_add(1, Ordering::Relaxed);
                                }
                                HsType::Rejection(code) => {
                                    *rejections.lock().unwrap().entry(code.0).or_default() += 1;
                                }
                                _ => {}
                            }
                        }
                        if idle {
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        SrtFlood {
            sent,
            concluded,
            rejections,
            stop,
            threads,
        }
    }
}

impl Drop for SrtFlood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
