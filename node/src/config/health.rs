//! `[health]`: stream health verdicts (see `media::health` for what each measures and
//! where the defaults come from).

use std::time::Duration;

use media::health::{Thresholds, Verdict};
use serde::{Deserialize, Serialize};

use super::duration::duration_str;
use super::{invalid, positive, ConfigError};

/// What B-frames get.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BFramesVerdict {
    /// Not judged (a platform without low-latency players).
    Ignore,
    Warn,
    Bad,
}

/// `[health]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Track each stream's health (a few integer operations per message).
    pub enabled: bool,
    /// How long a verdict must have been better before the better one is told (a
    /// worse one is told at once): no event storm from a stream on the edge.
    #[serde(with = "duration_str")]
    pub settle: Duration,
    #[serde(with = "duration_str")]
    pub keyframe_interval_warn: Duration,
    #[serde(with = "duration_str")]
    pub keyframe_interval_bad: Duration,
    pub b_frames: BFramesVerdict,
    /// Fraction of frames missing in the worst second of the last ten.
    pub frame_drop_warn: f64,
    pub frame_drop_bad: f64,
    /// Frame rates below this: warn.
    pub min_fps: f64,
    /// (max - min) / mean of the 2-second bitrates of the last 10 s.
    pub bitrate_swing_warn: f64,
    pub bitrate_swing_bad: f64,
    /// Change of the audio/video timestamp offset since the stream settled.
    #[serde(with = "duration_str")]
    pub av_drift_warn: Duration,
    #[serde(with = "duration_str")]
    pub av_drift_bad: Duration,
    /// Arrival behind the stream's own clock.
    #[serde(with = "duration_str")]
    pub behind_warn: Duration,
    #[serde(with = "duration_str")]
    pub behind_bad: Duration,
    /// Timestamp jumps in a minute that make the verdict bad (one is a warning).
    pub timestamp_jumps_bad: u32,
    /// SRT: fraction of packets lost (most are sent again) that is a warning.
    pub srt_loss_warn: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        let t = Thresholds::default();
        let ms = |v: u32| Duration::from_millis(u64::from(v));
        Self {
            enabled: true,
            settle: Duration::from_secs(10),
            keyframe_interval_warn: ms(t.keyframe_warn_ms),
            keyframe_interval_bad: ms(t.keyframe_bad_ms),
            b_frames: BFramesVerdict::Warn,
            frame_drop_warn: t.frame_drop_warn,
            frame_drop_bad: t.frame_drop_bad,
            min_fps: t.min_fps,
            bitrate_swing_warn: t.swing_warn,
            bitrate_swing_bad: t.swing_bad,
            av_drift_warn: ms(t.drift_warn_ms),
            av_drift_bad: ms(t.drift_bad_ms),
            behind_warn: ms(t.behind_warn_ms),
            behind_bad: ms(t.behind_bad_ms),
            timestamp_jumps_bad: t.jumps_bad,
            srt_loss_warn: 0.05,
        }
    }
}

impl HealthConfig {
    /// The thresholds the checks use.
    pub fn thresholds(&self) -> Thresholds {
        let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
        Thresholds {
            keyframe_warn_ms: ms(self.keyframe_interval_warn),
            keyframe_bad_ms: ms(self.keyframe_interval_bad),
            b_frames: match self.b_frames {
                BFramesVerdict::Ignore => Verdict::Good,
                BFramesVerdict::Warn => Verdict::Warn,
                BFramesVerdict::Bad => Verdict::Bad,
            },
            frame_drop_warn: self.frame_drop_warn,
            frame_drop_bad: self.frame_drop_bad,
            min_fps: self.min_fps,
            swing_warn: self.bitrate_swing_warn,
            swing_bad: self.bitrate_swing_bad,
            drift_warn_ms: ms(self.av_drift_warn),
            drift_bad_ms: ms(self.av_drift_bad),
            behind_warn_ms: ms(self.behind_warn),
            behind_bad_ms: ms(self.behind_bad),
            jumps_bad: self.timestamp_jumps_bad,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        positive("health.settle", self.settle)?;
        let pairs: [(&'static str, f64, f64); 6] = [
            (
                "health.keyframe_interval_bad",
                self.keyframe_interval_warn.as_secs_f64(),
                self.keyframe_interval_bad.as_secs_f64(),
            ),
            (
                "health.frame_drop_bad",
                self.frame_drop_warn,
                self.frame_drop_bad,
            ),
            (
                "health.bitrate_swing_bad",
                self.bitrate_swing_warn,
                self.bitrate_swing_bad,
            ),
            (
                "health.av_drift_bad",
                self.av_drift_warn.as_secs_f64(),
                self.av_drift_bad.as_secs_f64(),
            ),
            (
                "health.behind_bad",
                self.behind_warn.as_secs_f64(),
                self.behind_bad.as_secs_f64(),
            ),
            ("health.srt_loss_warn", 0.0, self.srt_loss_warn),
        ];
        for (key, warn, bad) in pairs {
            if !(bad.is_finite() && warn.is_finite() && bad >= warn && warn >= 0.0) {
                return Err(invalid(
                    key,
                    bad,
                    "must be a number not below its _warn threshold (and not below 0)",
                ));
            }
        }
        for (key, v) in [
            ("health.frame_drop_warn", self.frame_drop_warn),
            ("health.frame_drop_bad", self.frame_drop_bad),
            ("health.srt_loss_warn", self.srt_loss_warn),
        ] {
            if v > 1.0 {
                return Err(invalid(
                    key,
                    v,
                    "is a fraction: between 0 and 1 (0.1 = 10 %)",
                ));
            }
        }
        if !(self.min_fps.is_finite() && self.min_fps >= 0.0) {
            return Err(invalid(
                "health.min_fps",
                self.min_fps,
                "must be 0 or more (20 is the default)",
            ));
        }
        if self.timestamp_jumps_bad == 0 {
            return Err(invalid(
                "health.timestamp_jumps_bad",
                0,
                "must be at least 1 (5 is the default)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_checks_defaults_and_bad_values_name_the_key() {
        let c = HealthConfig::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.thresholds(), Thresholds::default());
        let bad = HealthConfig {
            keyframe_interval_bad: Duration::from_secs(1),
            ..HealthConfig::default()
        };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("health.keyframe_interval_bad"), "{e}");
        let bad = HealthConfig {
            frame_drop_warn: 0.5,
            frame_drop_bad: 10.0,
            ..HealthConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("health.frame_drop_bad"));
    }
}
