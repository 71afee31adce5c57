//! Thumbnails: every `thumbnails.interval`, for each live stream whose keyframe changed,
//! decode that one keyframe (with its sequence header, as Annex B) into a JPEG, written
//! atomically as `<thumbnails.dir>/<md5(uuid)>.jpg`. The first thumbnail follows the
//! first keyframe within one scheduler tick.
//!
//! Two decoders, both outside the node's process (a decoder crash on a hostile stream
//! is a logged failure of that job only):
//! - `worker` (default, H.264): long-lived `streamgate thumbnail-worker` subprocesses
//!   ([`worker`], [`pool`]): no process start per thumbnail;
//! - `ffmpeg`: a short-lived `ffmpeg` per keyframe (stdin in, JPEG out), used for HEVC
//!   and as the fallback.
//!
//! Bounded: a global pool caps concurrent decodes, each has a deadline (the process is
//! killed and reaped when it passes), and a stream whose previous thumbnail is still
//! being made is skipped.

pub mod pool;
pub mod worker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use media::codec::DecoderConfig;
use media::{Snapshot, VideoCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::config::ThumbnailConfig;
use crate::http::thumbnail_name;
use crate::hub::{EndReason, Hub, LiveStream};

/// How often the scheduler looks at the live streams.
const TICK: Duration = Duration::from_millis(500);
/// Largest JPEG accepted from ffmpeg.
const MAX_JPEG_BYTES: usize = 8 * 1024 * 1024;
/// Most of ffmpeg's error output kept for the log.
const MAX_STDERR_BYTES: usize = 4096;

/// Why one thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    #[error("codec {0} has no thumbnail decoder")]
    Unsupported(&'static str),
    #[error("bad codec configuration: {0}")]
    Config(#[from] media::codec::CodecError),
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("decoder did not finish within {0:?} and was killed")]
    Timeout(Duration),
    #[error("ffmpeg failed ({status}): {stderr}")]
    Ffmpeg { status: String, stderr: String },
    #[error("ffmpeg produced no JPEG")]
    NoImage,
    #[error("{0}")]
    Decode(String),
    #[error("thumbnail worker died: {0}")]
    WorkerDied(String),
    #[error("no decoder for {0}: ffmpeg is not available")]
    NoDecoder(&'static str),
    #[error("cannot write the thumbnail: {0}")]
    Write(std::io::Error),
    #[error("i/o with ffmpeg: {0}")]
    Io(#[from] std::io::Error),
}

/// The decoder input for one keyframe: Annex B and ffmpeg's demuxer name.
pub fn decoder_input(snapshot: &Snapshot) -> Result<Option<(Vec<u8>, &'static str)>, ThumbError> {
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
pub async fn decode_to_jpeg(
    config: &ThumbnailConfig,
    input: Vec<u8>,
    format: &str,
) -> Result<Vec<u8>, ThumbError> {
    let scale = format!("scale='min({w},iw)':-2", w = config.width);
    let q = mjpeg_qscale(config.quality).to_string();
    let mut child = Command::new(&config.ffmpeg)
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

/// Writes `data` to `path` through a temporary file in the same folder and a rename,
/// so a reader sees the old image or the new one, never half of one.
pub async fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("thumb"),
        Uuid::new_v4().simple()
    ));
    if let Err(e) = tokio::fs::write(&tmp, data).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    if let Err(e) = tokio::fs::rename(&tmp, path).await {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    Ok(())
}

/// Per-channel scheduling state.
#[derive(Debug, Default)]
struct ChannelThumb {
    /// Keyframe generation of the last thumbnail attempt.
    generation: u64,
    /// When the last attempt started.
    last_attempt: Option<Instant>,
    /// A job is running.
    in_flight: bool,
    /// The last attempt failed (failures after the first are logged at debug).
    failing: bool,
    /// The publish session the state belongs to.
    session: Uuid,
}

/// Makes the thumbnails of all live streams.
pub struct ThumbnailScheduler {
    config: ThumbnailConfig,
    hub: Arc<Hub>,
    /// Our own H.264 workers, when `thumbnails.decoder = "worker"`.
    workers: Option<pool::WorkerPool>,
    /// Whether ffmpeg can be run (HEVC, and everything with the `ffmpeg` decoder).
    ffmpeg: bool,
    /// Bounds concurrent ffmpeg processes.
    pool: Arc<Semaphore>,
    state: Mutex<HashMap<Uuid, ChannelThumb>>,
}

/// Checks that the configured ffmpeg runs. Returns its version line.
pub async fn probe_ffmpeg(program: &str) -> Result<String, String> {
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

/// The path of a channel's thumbnail.
pub fn thumbnail_path(dir: &Path, channel_id: &Uuid) -> PathBuf {
    dir.join(thumbnail_name(channel_id))
}

impl ThumbnailScheduler {
    pub fn new(
        config: ThumbnailConfig,
        hub: Arc<Hub>,
        workers: Option<pool::WorkerPool>,
        ffmpeg: bool,
    ) -> Arc<Self> {
        let n = config.workers.max(1);
        Arc::new(Self {
            config,
            hub,
            workers,
            ffmpeg,
            pool: Arc::new(Semaphore::new(n)),
            state: Mutex::new(HashMap::new()),
        })
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.tick(),
            }
        }
    }

    fn tick(self: &Arc<Self>) {
        let live = self.hub.list();
        let now = Instant::now();
        let mut state = self.state.lock().expect("thumb state");
        // Forget channels no longer live (their last thumbnail stays on disk).
        state.retain(|id, s| s.in_flight || live.iter().any(|l| l.channel_id == *id));
        for stream in live {
            let generation = stream.media.lock().expect("media lock").cache.generation();
            let st = state.entry(stream.channel_id).or_default();
            if st.session != stream.session_id {
                *st = ChannelThumb {
                    session: stream.session_id,
                    ..Default::default()
                };
            }
            let due = generation > 0
                && generation != st.generation
                && !st.in_flight
                && st
                    .last_attempt
                    .is_none_or(|t| now.duration_since(t) >= self.config.interval);
            if !due {
                continue;
            }
            // Pool full: try again next tick rather than queueing without bound.
            let Ok(permit) = self.pool.clone().try_acquire_owned() else {
                break;
            };
            st.in_flight = true;
            st.last_attempt = Some(now);
            st.generation = generation;
            let this = self.clone();
            tokio::spawn(async move {
                let result = this.make(&stream).await;
                drop(permit);
                this.finished(&stream, result);
            });
        }
    }

    async fn make(&self, stream: &LiveStream) -> Result<bool, ThumbError> {
        let snapshot = stream.media.lock().expect("media lock").cache.snapshot();
        let Some((input, format)) = decoder_input(&snapshot)? else {
            return Ok(false);
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
                        debug!(channel_id = %stream.channel_id, %reason, "worker could not decode; trying ffmpeg");
                        decode_to_jpeg(&self.config, input, format).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            _ if self.ffmpeg => decode_to_jpeg(&self.config, input, format).await?,
            _ => return Err(ThumbError::NoDecoder(format)),
        };
        let path = thumbnail_path(&self.config.dir, &stream.channel_id);
        write_atomically(&path, &jpeg)
            .await
            .map_err(ThumbError::Write)?;
        // A channel deleted meanwhile keeps no thumbnail (see `remove_deleted`).
        if stream.end_reason() == Some(EndReason::ChannelDeleted) {
            let _ = tokio::fs::remove_file(&path).await;
            return Ok(false);
        }
        *stream.thumbnail_updated_at.lock().expect("thumb time") = Some(Utc::now());
        Ok(true)
    }

    fn finished(&self, stream: &LiveStream, result: Result<bool, ThumbError>) {
        let mut state = self.state.lock().expect("thumb state");
        let st = state.entry(stream.channel_id).or_default();
        st.in_flight = false;
        let channel_id = stream.channel_id;
        match result {
            Ok(true) => {
                if st.failing {
                    info!(%channel_id, "thumbnails work again");
                }
                st.failing = false;
                debug!(%channel_id, "thumbnail written");
            }
            Ok(false) => {}
            Err(e) => {
                if st.failing {
                    debug!(%channel_id, error = %e, "thumbnail failed again");
                } else {
                    warn!(%channel_id, error = %e, "thumbnail failed");
                }
                st.failing = true;
            }
        }
    }
}

/// When the thumbnail of a live stream was last written.
pub type ThumbnailTime = Mutex<Option<DateTime<Utc>>>;

/// Removes the thumbnail of a deleted channel.
pub async fn remove_deleted(dir: &Path, channel_id: &Uuid) {
    match tokio::fs::remove_file(thumbnail_path(dir, channel_id)).await {
        Ok(()) => info!(%channel_id, "thumbnail of the deleted channel removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            warn!(%channel_id, error = %e, "cannot remove the thumbnail of a deleted channel")
        }
    }
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

    #[tokio::test]
    async fn atomic_write_replaces_without_leftovers() {
        let dir = std::env::temp_dir().join(format!("sg-thumb-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.jpg");
        write_atomically(&p, b"one").await.unwrap();
        write_atomically(&p, b"two").await.unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
