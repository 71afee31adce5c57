//! The SRT workload's media: the RTMP workload's FLV remuxed to MPEG-TS by ffmpeg
//! (`-c copy`), read into memory once and cut into SRT payloads of 7 TS packets, each
//! with the time it is due (the decoding time of the latest video frame begun in it)
//! and, for the delay, the time the server will give the frame that begins in it.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;

/// TS packets per SRT data packet (1316 bytes: what every SRT sender uses).
const TS_PER_PACKET: usize = 7;

/// One SRT payload of the source and when it is due.
#[derive(Debug, Clone)]
pub struct TsChunk {
    pub bytes: Bytes,
    /// Milliseconds from the start: the decoding time of the latest video frame begun
    /// in or before this chunk.
    pub due_ms: u32,
    /// The video frame that begins in this chunk, as the server will time it (its
    /// decoding time from the first time stamp of the file), for the delay.
    pub video_ms: Option<u32>,
    /// The same frame's decoding time in ms from 0 on the 90 kHz clock (not from the
    /// file's first time stamp): what SRS hands on.
    pub video_abs_ms: Option<u32>,
}

/// The workload's MPEG-TS in memory, cut into SRT payloads.
#[derive(Debug)]
pub struct TsSource {
    pub chunks: Vec<TsChunk>,
    pub bitrate: u64,
}

/// PTS or DTS of a PES header field (33 bits in 5 bytes).
fn pes_time(b: &[u8]) -> u64 {
    ((b[0] as u64 >> 1) & 0x07) << 30
        | (b[1] as u64) << 22
        | ((b[2] as u64) >> 1) << 15
        | (b[3] as u64) << 7
        | (b[4] as u64) >> 1
}

impl TsSource {
    /// `flv` remuxed to MPEG-TS for `seconds` (looped: time stamps run on).
    pub fn from_flv(flv: &Path, seconds: u64) -> anyhow::Result<TsSource> {
        let ts: PathBuf = flv.with_extension(format!("{seconds}s.ts"));
        if !ts.is_file() {
            let status = Command::new("ffmpeg")
                .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
                .args(["-stream_loop", "-1", "-i"])
                .arg(flv)
                .args(["-t", &seconds.to_string(), "-c", "copy", "-f", "mpegts"])
                .arg(&ts)
                .status()?;
            anyhow::ensure!(status.success(), "ffmpeg could not remux {}", flv.display());
        }
        Self::load(&ts)
    }

    pub fn load(path: &Path) -> anyhow::Result<TsSource> {
        let data = Bytes::from(std::fs::read(path)?);
        anyhow::ensure!(
            data.len() >= 188 && data[0] == 0x47,
            "{} is not MPEG-TS",
            path.display()
        );
        // Every PES start: (packet index, stream id, DTS or PTS). And the server's
        // zero: the time stamp of the first PES to be complete (the demuxer hands a
        // PES on when its length is reached or, without a length, when the next one
        // on its PID begins), as the server's clock starts there.
        let mut starts = Vec::new();
        // PID -> (time stamp, bytes still to come: None when unbounded).
        let mut open: std::collections::HashMap<u16, (u64, Option<i64>)> = Default::default();
        let mut zero = None;
        for (i, p) in data.chunks_exact(188).enumerate() {
            let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
            let afc = (p[3] >> 4) & 3;
            let at = match afc {
                1 => 4,
                3 => 5 + p[4] as usize,
                _ => continue,
            };
            let Some(payload) = p.get(at..) else { continue };
            let pusi = p[1] & 0x40 != 0;
            if pusi {
                if let Some((t, _)) = open.remove(&pid) {
                    zero.get_or_insert(t);
                }
                if payload.len() < 19 || payload[..3] != [0, 0, 1] {
                    continue;
                }
                let sid = payload[3];
                let flags = payload[7] >> 6;
                let t = match flags {
                    3 => pes_time(&payload[14..19]),
                    2 => pes_time(&payload[9..14]),
                    _ => continue,
                };
                starts.push((i, sid, t));
                let len = u16::from_be_bytes([payload[4], payload[5]]) as i64;
                let left = (len > 0).then(|| len + 6 - payload.len() as i64);
                if left.is_some_and(|l| l <= 0) {
                    zero.get_or_insert(t);
                } else {
                    open.insert(pid, (t, left));
                }
            } else if let Some((t, Some(left))) = open.get_mut(&pid) {
                *left -= payload.len() as i64;
                if *left <= 0 {
                    let t = *t;
                    open.remove(&pid);
                    zero.get_or_insert(t);
                }
            }
        }
        let zero = zero.ok_or_else(|| anyhow::anyhow!("no PES in {}", path.display()))?;
        let video = |sid: u8| (0xe0..=0xef).contains(&sid);
        let packets = data.len() / 188;
        let mut chunks = Vec::with_capacity(packets / TS_PER_PACKET + 1);
        let mut next_start = 0;
        let mut due = 0u32;
        for first in (0..packets).step_by(TS_PER_PACKET) {
            let last = (first + TS_PER_PACKET).min(packets);
            let (mut video_ms, mut video_abs_ms) = (None, None);
            while next_start < starts.len() && starts[next_start].0 < last {
                let (_, sid, t) = starts[next_start];
                if video(sid) {
                    let ms = (t.saturating_sub(zero) / 90) as u32;
                    due = due.max(ms);
                    video_ms.get_or_insert(ms);
                    video_abs_ms.get_or_insert((t / 90) as u32);
                }
                next_start += 1;
            }
            chunks.push(TsChunk {
                bytes: data.slice(first * 188..last * 188),
                due_ms: due,
                video_ms,
                video_abs_ms,
            });
        }
        let seconds = (due as f64 / 1000.0).max(1.0);
        Ok(TsSource {
            bitrate: (data.len() as f64 * 8.0 / seconds) as u64,
            chunks,
        })
    }
}
