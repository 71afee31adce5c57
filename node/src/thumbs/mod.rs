//! Thumbnails: for each live stream, its latest keyframe (with its sequence header,
//! as Annex B) decoded into a JPEG, written atomically as
//! `<thumbnails.dir>/<ThumbnailId>.jpg`, refreshed every `thumbnails.interval` while
//! the keyframe changes. The first thumbnail follows the first keyframe within one
//! scheduler tick.
//!
//! - [`schedule`]: who is next (earliest due first, so no channel starves);
//! - [`decode`]: which decoder, outside the node's process;
//! - [`pool`] / [`worker`]: our long-lived H.264 decoder processes;
//! - [`sandbox`]: how every decoder process is started (cleared environment, limits).
//!
//! Bounded: `thumbnails.workers` decodes at once, each with a deadline (the process is
//! killed and reaped when it passes); a decode starts as soon as one is free.

pub mod decode;
pub mod fleet;
pub mod pool;
pub mod sandbox;
mod schedule;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::channel::ThumbnailId;
use crate::config::ThumbnailConfig;
use crate::hub::{EndReason, Hub, LiveStream};
use decode::Decoders;
use schedule::{Change, LiveView, Outcome, Schedule};

/// How often the scheduler looks at the live streams.
const TICK: Duration = Duration::from_millis(250);

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
    #[error("the thumbnail job failed: {0}")]
    Crashed(String),
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

/// The path of a channel's thumbnail.
pub fn thumbnail_path(dir: &Path, channel_id: &Uuid) -> PathBuf {
    dir.join(ThumbnailId::of(channel_id).file_name())
}

/// Creates the thumbnail folder, picks the decoders and starts the scheduler; `None`
/// when thumbnails are off or nothing here can decode (logged).
pub async fn start(
    config: &ThumbnailConfig,
    hub: Arc<Hub>,
    cancel: CancellationToken,
) -> anyhow::Result<Option<Arc<ThumbnailScheduler>>> {
    if !config.enabled {
        return Ok(None);
    }
    tokio::fs::create_dir_all(&config.dir).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot create thumbnails.dir {} ({e})",
            config.dir.display()
        )
    })?;
    let Some(decoders) = Decoders::detect(config).await? else {
        return Ok(None);
    };
    let scheduler = ThumbnailScheduler::new(config.clone(), hub, decoders);
    info!(decoder = scheduler.decoders.describe(), workers = scheduler.workers, dir = %config.dir.display(), "thumbnails on");
    tokio::spawn(scheduler.clone().run(cancel));
    Ok(Some(scheduler))
}

/// Makes the thumbnails of all live streams.
pub struct ThumbnailScheduler {
    config: ThumbnailConfig,
    hub: Arc<Hub>,
    decoders: Decoders,
    /// Decodes that may run at once.
    workers: usize,
    /// One permit per running decode.
    slots: Arc<Semaphore>,
    schedule: Mutex<Schedule>,
}

impl ThumbnailScheduler {
    pub fn new(config: ThumbnailConfig, hub: Arc<Hub>, decoders: Decoders) -> Arc<Self> {
        let workers = config.worker_count();
        Arc::new(Self {
            schedule: Mutex::new(Schedule::new(config.interval)),
            config,
            hub,
            decoders,
            workers,
            slots: Arc::new(Semaphore::new(workers)),
        })
    }

    /// Every tick, takes in the live streams; whenever a decoder is free, gives it the
    /// eligible channel that has been due longest.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ready: std::collections::VecDeque<Arc<LiveStream>> = Default::default();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = tick.tick() => ready = self.due(),
                slot = self.slots.clone().acquire_owned(), if !ready.is_empty() => {
                    let slot = slot.expect("the semaphore is never closed");
                    while let Some(stream) = ready.pop_front() {
                        if self.claim(&stream) {
                            self.spawn_job(stream, slot);
                            break;
                        }
                    }
                }
            }
        }
    }

    fn view(stream: &LiveStream) -> LiveView {
        LiveView {
            channel: stream.channel_id,
            session: stream.session_id,
            generation: stream.keyframe_generation(),
        }
    }

    /// The streams eligible now, earliest due first.
    fn due(&self) -> std::collections::VecDeque<Arc<LiveStream>> {
        let live = self.hub.list();
        let views: Vec<LiveView> = live.iter().map(|s| Self::view(s)).collect();
        let due = self.schedule.lock().due(&views, Instant::now());
        let mut by_id: std::collections::HashMap<Uuid, Arc<LiveStream>> =
            live.into_iter().map(|s| (s.channel_id, s)).collect();
        due.iter().filter_map(|id| by_id.remove(id)).collect()
    }

    fn claim(&self, stream: &LiveStream) -> bool {
        self.schedule
            .lock()
            .claim(Self::view(stream), Instant::now())
    }

    /// Runs one thumbnail job; a panic in it is that job's failure only.
    fn spawn_job(self: &Arc<Self>, stream: Arc<LiveStream>, slot: OwnedSemaphorePermit) {
        let this = self.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let job = tokio::spawn({
                let (this, stream) = (this.clone(), stream.clone());
                async move { this.make(&stream).await }
            });
            let result = job
                .await
                .unwrap_or_else(|e| Err(ThumbError::Crashed(e.to_string())));
            drop(slot);
            let label = match &result {
                Ok(Some(_)) => Some("written"),
                Ok(None) => None,
                Err(_) => Some("failed"),
            };
            if let Some(label) = label {
                metrics::counter!(crate::metric::THUMBNAILS, "result" => label).increment(1);
                metrics::histogram!(crate::metric::THUMBNAIL_SECONDS).record(started.elapsed());
            }
            this.finished(&stream, result);
        });
    }

    async fn make(&self, stream: &LiveStream) -> Result<Option<DateTime<Utc>>, ThumbError> {
        let Some(jpeg) = self.decoders.jpeg(&stream.snapshot()).await? else {
            return Ok(None);
        };
        let path = thumbnail_path(&self.config.dir, &stream.channel_id);
        write_atomically(&path, &jpeg)
            .await
            .map_err(ThumbError::Write)?;
        // A channel deleted meanwhile keeps no thumbnail (see `remove_deleted`).
        if stream.end_reason() == Some(EndReason::ChannelDeleted) {
            let _ = tokio::fs::remove_file(&path).await;
            return Ok(None);
        }
        Ok(Some(Utc::now()))
    }

    fn finished(&self, stream: &LiveStream, result: Result<Option<DateTime<Utc>>, ThumbError>) {
        let channel_id = stream.channel_id;
        let outcome = match &result {
            Ok(Some(at)) => Outcome::Written(*at),
            Ok(None) => Outcome::Nothing,
            Err(_) => Outcome::Failed,
        };
        let change = self
            .schedule
            .lock()
            .finish(channel_id, stream.session_id, outcome);
        if let Outcome::Written(at) = outcome {
            self.hub
                .events()
                .publish(crate::events::PublicEvent::thumbnail(channel_id, at));
        }
        match (change, result) {
            (Change::Recovered, _) => info!(%channel_id, "thumbnails work again"),
            (Change::StartedFailing, Err(e)) => warn!(%channel_id, error = %e, "thumbnail failed"),
            (_, Err(e)) => debug!(%channel_id, error = %e, "thumbnail failed again"),
            (_, Ok(Some(_))) => debug!(%channel_id, "thumbnail written"),
            (_, Ok(None)) => {}
        }
    }

    /// When the thumbnail of this publish session was last written.
    pub fn written_at(&self, channel_id: Uuid, session_id: Uuid) -> Option<DateTime<Utc>> {
        self.schedule.lock().written_at(channel_id, session_id)
    }
}

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
