//! Decoding one keyframe into one JPEG, and which decoder does it. Both decoders run
//! outside the node's process, so a decoder crash on a hostile stream is a failed
//! thumbnail, not a dead node:
//! - `worker` (default, H.264): long-lived `streamgate thumbnail-worker` subprocesses
//!   ([`super::worker`], [`super::pool`]): no process start per thumbnail;
//! - `ffmpeg`: a short-lived `ffmpeg` per keyframe (stdin in, JPEG out), used for HEVC,
//!   for what the worker cannot decode (10-bit, 4:2:2, interlaced), and for everything
//!   when `thumbnails.decoder = "ffmpeg"`.

use std::process::Stdio;
use std::time::Duration;

use media::codec::DecoderConfig;
use media::{Snapshot, VideoCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tracing::{debug, info, warn};

use super::pool::WorkerPool;
use super::sandbox::{self, DecoderLimits};
use super::ThumbError;
use crate::config::{ThumbnailConfig, ThumbnailDecoder};

/// Largest JPEG accepted from ffmpeg.
const MAX_JPEG_BYTES: usize = 8 * 1024 * 1024;
/// Most of ffmpeg's error output kept for the log.
const MAX_STDERR_BYTES: usize = 4096;

/// The decoders this node can use, chosen once at start from the configuration and
/// from what the machine has.
pub struct Decoders {
    config: ThumbnailConfig,
    /// This binary, which starts ffmpeg under limits.
    exe: std::path::PathBuf,
    /// Our own H.264 workers, when `thumbnails.decoder = "worker"`.
    workers: Option<WorkerPool>,
    /// Whether ffmpeg runs here.
    ffmpeg: bool,
}

impl Decoders {
    /// Looks for ffmpeg and sets up the worker pool; `None` when nothing can make a
    /// thumbnail (the reason is logged; everything else of the node still works).
    pub async fn detect(config: &ThumbnailConfig) -> anyhow::Result<Option<Decoders>> {
        let ffmpeg = match probe_ffmpeg(&config.ffmpeg).await {
            Ok(version) => {
                info!(%version, "ffmpeg found");
                true
            }
            Err(e) if config.decoder == ThumbnailDecoder::Worker => {
                warn!(error = %e, "ffmpeg is not available: thumbnails only for H.264 streams; install it (apt-get install ffmpeg) or set thumbnails.ffmpeg for HEVC");
                false
            }
            Err(e) => {
                warn!(error = %e, "thumbnails disabled: ffmpeg is not available; install it (apt-get install ffmpeg) or set thumbnails.ffmpeg");
                return Ok(None);
            }
        };
        let workers = match config.decoder {
            ThumbnailDecoder::Worker => Some(WorkerPool::of_current_exe(
                config.timeout,
                config.decoder_memory_mib,
            )?),
            ThumbnailDecoder::Ffmpeg => None,
        };
        Ok(Some(Decoders {
            config: config.clone(),
            exe: std::env::current_exe()?,
            workers,
            ffmpeg,
        }))
    }

    /// The JPEG of a stream's latest keyframe; `None` while it has none (or no
    /// sequence header yet).
    pub async fn jpeg(&self, snapshot: &Snapshot) -> Result<Option<Vec<u8>>, ThumbError> {
        let Some((input, format)) = decoder_input(snapshot)? else {
            return Ok(None);
        };
        let jpeg = match (&self.workers, format) {
            (Some(pool), "h264") => {
                match pool
                    .h264_to_jpeg(&input, self.config.width, self.config.quality)
                    .await
                {
                    Ok(jpeg) => jpeg,
                    // openh264 lacks interlaced, 10-bit and 4:2:2 H.264: ffmpeg has them.
                    Err(ThumbError::Decode(reason)) if self.ffmpeg => {
                        debug!(%reason, "worker could not decode; trying ffmpeg");
                        ffmpeg_to_jpeg(&self.config, &self.exe, input, format).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            _ if self.ffmpeg => ffmpeg_to_jpeg(&self.config, &self.exe, input, format).await?,
            _ => return Err(ThumbError::NoDecoder(format)),
        };
        Ok(Some(jpeg))
    }

    /// A short description for the start-up log.
    pub fn describe(&self) -> &'static str {
        match (&self.workers, self.ffmpeg) {
            (Some(_), true) => "worker (H.264), ffmpeg (other codecs)",
            (Some(_), false) => "worker (H.264 only)",
            (None, _) => "ffmpeg",
        }
    }
}

/// The decoder input for one keyframe: Annex B and ffmpeg's demuxer name.
fn decoder_input(snapshot: &Snapshot) -> Result<Option<(Vec<u8>, &'static str)>, ThumbError> {
    let (Some(key), Some(seq)) = (&snapshot.keyframe, &snapshot.video_sequence_header) else {
        return Ok(None);
    };
    let record =
        &seq.body[media::VideoTag::parse(&seq.body).map_or(seq.body.len(), |t| t.data_offset)..];
    let (config, format) = match key.tag.codec {
        VideoCodec::Avc => (DecoderConfig::from_avcc(record)?, "h264"),
        VideoCodec::Hevc => (DecoderConfig::from_hvcc(record)?, "hevc"),
        other => return Err(ThumbError::Unsupported(other.name())),
    };
    let frame = &key.frame.body[key.tag.data_offset..];
    Ok(Some((config.annex_b(frame)?.to_vec(), format)))
}

/// ffmpeg's `-q:v` (2 best .. 31 worst) for a 1..=100 quality.
fn mjpeg_qscale(quality: u8) -> u8 {
    let q = quality.clamp(1, 100) as u32;
    (2 + (100 - q) * 29 / 99) as u8
}

/// Runs one ffmpeg over `input`; returns the JPEG.
async fn ffmpeg_to_jpeg(
    config: &ThumbnailConfig,
    exe: &std::path::Path,
    input: Vec<u8>,
    format: &str,
) -> Result<Vec<u8>, ThumbError> {
    let scale = format!("scale='min({w},iw)':-2", w = config.width);
    let q = mjpeg_qscale(config.quality).to_string();
    let limits = DecoderLimits {
        memory_mib: config.decoder_memory_mib,
        // The deadline kills it anyway; this also bounds what it burns until then.
        cpu_seconds: config.timeout.as_secs().max(1),
    };
    let no_args: [&str; 0] = [];
    let mut child = sandbox::limited_command(exe, limits, &config.ffmpeg, no_args)
        .args([
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-threads",
            "1",
            "-f",
            format,
            "-i",
            "pipe:0",
        ])
        .args([
            "-frames:v",
            "1",
            "-vf",
            &scale,
            "-q:v",
            &q,
            "-f",
            "image2pipe",
            "-c:v",
            "mjpeg",
            "pipe:1",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ThumbError::Spawn {
            program: config.ffmpeg.clone(),
            source,
        })?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let work = async {
        let feed = async {
            // ffmpeg may exit before reading everything (bad data): not our error.
            let _ = stdin.write_all(&input).await;
            drop(stdin);
        };
        let read_out = async {
            let mut jpeg = Vec::new();
            (&mut stdout)
                .take(MAX_JPEG_BYTES as u64 + 1)
                .read_to_end(&mut jpeg)
                .await
                .map(|_| jpeg)
        };
        let read_err = async {
            let mut e = Vec::new();
            let _ = (&mut stderr)
                .take(MAX_STDERR_BYTES as u64)
                .read_to_end(&mut e)
                .await;
            e
        };
        let ((), jpeg, err) = tokio::join!(feed, read_out, read_err);
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, jpeg?, err))
    };
    let (status, jpeg, err) = match tokio::time::timeout(config.timeout, work).await {
        Ok(r) => r?,
        Err(_) => {
            // Kill and reap: no zombie, no stuck decoder.
            let _ = child.kill().await;
            return Err(ThumbError::Timeout(config.timeout));
        }
    };
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        return Err(ThumbError::Ffmpeg {
            status: status.to_string(),
            stderr: text.lines().last().unwrap_or("").trim().to_string(),
        });
    }
    if jpeg.len() < 4 || jpeg[..2] != [0xFF, 0xD8] || jpeg.len() > MAX_JPEG_BYTES {
        return Err(ThumbError::NoImage);
    }
    Ok(jpeg)
}

/// Checks that the configured ffmpeg runs. Returns its version line.
async fn probe_ffmpeg(program: &str) -> Result<String, String> {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        Command::new(program)
            .arg("-version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("{program} -version did not answer within 10 s"))?
    .map_err(|e| format!("cannot run {program:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} -version failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_maps_to_qscale() {
        assert_eq!(mjpeg_qscale(100), 2);
        assert_eq!(mjpeg_qscale(1), 31);
        assert!((6..=9).contains(&mjpeg_qscale(80)));
    }
}
