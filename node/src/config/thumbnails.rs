//! `[thumbnails]`: one JPEG per live channel, refreshed every `interval`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration::duration_str;
use super::{invalid, positive, ConfigError};

/// Which decoder makes the thumbnails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThumbnailDecoder {
    /// H.264 by streamgate's own long-lived worker processes; other codecs by ffmpeg.
    Worker,
    /// Every thumbnail by a short-lived ffmpeg.
    Ffmpeg,
}

/// `[thumbnails]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ThumbnailConfig {
    pub enabled: bool,
    pub dir: PathBuf,
    #[serde(with = "duration_str")]
    pub interval: Duration,
    /// Output width in pixels (height keeps the aspect ratio; never upscaled).
    pub width: u32,
    /// JPEG quality, 1 (smallest) to 100 (best).
    pub quality: u8,
    /// Decodes running at once; 0 means half the cores (at least 1).
    pub workers: usize,
    /// A decoder still running after this is killed.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Address space of each decoder process, MiB.
    pub decoder_memory_mib: u64,
    pub decoder: ThumbnailDecoder,
    /// The ffmpeg program (name on PATH or absolute path).
    pub ffmpeg: String,
}

impl Default for ThumbnailConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from("./data/thumbs"),
            interval: Duration::from_secs(10),
            width: 640,
            quality: 80,
            workers: 0,
            timeout: Duration::from_secs(5),
            decoder_memory_mib: 1024,
            decoder: ThumbnailDecoder::Worker,
            ffmpeg: "ffmpeg".into(),
        }
    }
}

impl ThumbnailConfig {
    /// `workers` with 0 resolved to half the cores.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        (cores / 2).max(1)
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("thumbnails.interval", self.interval)?;
        positive("thumbnails.timeout", self.timeout)?;
        if !(16..=7680).contains(&self.width) || !self.width.is_multiple_of(2) {
            return Err(invalid(
                "thumbnails.width",
                self.width,
                "must be an even number of pixels between 16 and 7680, e.g. 640",
            ));
        }
        if !(1..=100).contains(&self.quality) {
            return Err(invalid(
                "thumbnails.quality",
                self.quality,
                "must be between 1 and 100 (80 is a good value)",
            ));
        }
        if self.dir.as_os_str().is_empty() {
            return Err(invalid(
                "thumbnails.dir",
                "\"\"",
                "must name a folder, e.g. \"./data/thumbs\"",
            ));
        }
        if self.decoder_memory_mib < 64 {
            return Err(invalid(
                "thumbnails.decoder_memory_mib",
                self.decoder_memory_mib,
                "must be at least 64 (1024 decodes 4K keyframes)",
            ));
        }
        if self.ffmpeg.is_empty() {
            return Err(invalid(
                "thumbnails.ffmpeg",
                "\"\"",
                "must name the ffmpeg program, e.g. \"ffmpeg\"",
            ));
        }
        Ok(())
    }
}
