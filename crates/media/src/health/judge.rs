//! Measures and verdicts from a tracker's counters, phrased for a streamer.

use std::fmt::Write as _;

use super::*;

impl HealthTracker {
    /// Measures and verdicts at arrival time `now_ms`.
    pub fn report(&self, now_ms: u64, t: &Thresholds) -> HealthReport {
        let mut m = Measures::default();
        let mut findings = Vec::new();
        let window = self.window();
        let has_video = self.video.last().is_some();

        // Keyframes: the mean interval, or the wait for the next when that is longer.
        if let (Some(now), true) = (self.video.last(), has_video) {
            let since = self
                .last_keyframe
                .or(self.first_video)
                .map(|k| (now - k).max(0) as u32);
            let recent = &self.intervals[KEYFRAME_INTERVALS - self.interval_count..];
            if !recent.is_empty() {
                let mean = recent.iter().map(|&i| u64::from(i)).sum::<u64>() / recent.len() as u64;
                m.keyframe_interval_s = Some(mean as f64 / 1000.0);
                m.keyframe_interval_max_s = recent.iter().max().map(|&x| f64::from(x) / 1000.0);
            }
            m.since_keyframe_s = since.map(|s| f64::from(s) / 1000.0);
            let mean_ms = m.keyframe_interval_s.map(|s| (s * 1000.0) as u32);
            let judged = match (mean_ms, since) {
                (Some(mean), Some(since)) => Some((mean, since)),
                // Before two keyframes, only a long wait tells.
                (None, Some(since)) if since > t.keyframe_warn_ms => Some((0, since)),
                _ => None,
            };
            if let Some((mean, since)) = judged {
                let worst = mean.max(since);
                let verdict = level(
                    f64::from(worst),
                    t.keyframe_warn_ms.into(),
                    t.keyframe_bad_ms.into(),
                );
                let reason = if since > mean {
                    format!("no keyframe for {:.1} s", f64::from(since) / 1000.0)
                } else {
                    format!("keyframe every {:.1} s", f64::from(mean) / 1000.0)
                };
                let reason = if verdict == Verdict::Good {
                    reason
                } else {
                    format!(
                        "{reason}: set the keyframe interval to {} s",
                        t.keyframe_warn_ms.min(2_000) / 1000
                    )
                };
                findings.push(Finding::new(
                    Check::Keyframes,
                    verdict,
                    reason,
                    "OBS: Settings → Output → Output Mode: Advanced → Streaming → \
                     Keyframe Interval 2 s (not 0/auto); ffmpeg: -g <2 × frame rate>",
                ));
            }
        }

        // B-frames: any reordered frame in the last 10 s of stream time.
        if let (Some(now), Some(last)) = (self.video.last(), self.last_reordered()) {
            m.b_frames = now - last <= WINDOW_SECS * 1000;
        }
        if has_video && t.b_frames != Verdict::Good {
            let (verdict, reason) = if m.b_frames {
                (
                    t.b_frames,
                    "B-frames on: they add latency and some players cannot play them".to_string(),
                )
            } else {
                (Verdict::Good, "no B-frames".to_string())
            };
            findings.push(Finding::new(
                Check::BFrames,
                verdict,
                reason,
                "turn B-frames off: OBS x264 Options bframes=0, NVENC/QSV/AMF Max B-frames 0; \
                 ffmpeg: -bf 0",
            ));
        }

        if let Some((from, to)) = window {
            // Frame rate and its worst second.
            if has_video && to - from >= 3 {
                let counts: Vec<u32> = (from..to).map(|s| self.second(s).frames).collect();
                let total: u32 = counts.iter().sum();
                let best = counts.iter().copied().max().unwrap_or(0);
                let worst = counts.iter().copied().min().unwrap_or(0);
                if total > 0 {
                    let fps = f64::from(total) / counts.len() as f64;
                    m.fps = Some(round2(fps));
                    m.fps_min = Some(f64::from(worst));
                    let drop = 1.0 - f64::from(worst) / f64::from(best);
                    let mut verdict = level(drop, t.frame_drop_warn, t.frame_drop_bad);
                    let mut reason = if verdict == Verdict::Good {
                        format!("{fps:.1} fps, steady")
                    } else {
                        format!(
                            "frame rate fell to {worst} fps (of {best}) in the last {} s",
                            counts.len()
                        )
                    };
                    let mut fix = "the encoder is overloaded or the source stalls: lower the \
                                   output resolution or the CPU usage preset (OBS: Settings → \
                                   Output), or cap the game's frame rate";
                    if verdict == Verdict::Good && fps < t.min_fps {
                        verdict = Verdict::Warn;
                        reason = format!("{fps:.1} fps: too few for smooth motion");
                        fix = "set 30 or 60 fps (OBS: Settings → Video → Common FPS Values)";
                    }
                    findings.push(Finding::new(Check::FrameRate, verdict, reason, fix));
                }
            }
            // Bitrates and their swing.
            for (check, kind, range) in [
                (
                    Check::VideoBitrate,
                    "video",
                    self.range(from, to, |s| s.video_bytes),
                ),
                (
                    Check::AudioBitrate,
                    "audio",
                    self.range(from, to, |s| s.audio_bytes),
                ),
            ] {
                let Some(r) = range else { continue };
                if check == Check::VideoBitrate {
                    m.video_kbps = Some(r);
                } else {
                    m.audio_kbps = Some(r);
                }
                let verdict = level(r.swing(), t.swing_warn, t.swing_bad);
                let reason = if verdict == Verdict::Good {
                    format!("{kind} {} kbps, steady", r.mean)
                } else {
                    format!("{kind} bitrate swings between {} and {} kbps", r.min, r.max)
                };
                findings.push(Finding::new(
                    check,
                    verdict,
                    reason,
                    "use a constant bitrate: OBS: Settings → Output → Rate Control CBR; \
                     ffmpeg: -b:v N -maxrate N -bufsize 2N",
                ));
            }
        }

        // Audio/video drift since the offset settled.
        if let (Some(base), Some(now)) = (self.offset_baseline, self.offset()) {
            let drift = now - base;
            m.av_offset_ms = Some(now);
            m.av_drift_ms = Some(drift);
            let verdict = level(
                drift.unsigned_abs() as f64,
                t.drift_warn_ms.into(),
                t.drift_bad_ms.into(),
            );
            let reason = if verdict == Verdict::Good {
                "audio and video in step".to_string()
            } else {
                format!(
                    "audio drifted {} ms {} video since the start",
                    drift.abs(),
                    if drift > 0 { "ahead of" } else { "behind" }
                )
            };
            findings.push(Finding::new(
                Check::AvSync,
                verdict,
                reason,
                "set the audio device's sample rate to OBS's (Settings → Audio → Sample Rate) \
                 and use a constant-frame-rate source; restart the capture",
            ));
        }

        // Timestamp jumps of the last minute.
        let recent: Vec<(u64, i64)> = self.jumps[JUMPS - self.jump_count..]
            .iter()
            .copied()
            .filter(|(at, _)| now_ms.saturating_sub(*at) <= JUMP_MEMORY_MS)
            .collect();
        m.timestamp_jumps = recent.len() as u32;
        m.largest_jump_ms = recent
            .iter()
            .map(|&(_, s)| s)
            .max_by_key(|s| s.unsigned_abs())
            .unwrap_or(0);
        if self.video.last().is_some() || self.audio.last().is_some() {
            let verdict = if recent.is_empty() {
                Verdict::Good
            } else if m.timestamp_jumps >= t.jumps_bad {
                Verdict::Bad
            } else {
                Verdict::Warn
            };
            let mut reason = String::from("timestamps continuous");
            if verdict != Verdict::Good {
                reason.clear();
                let _ = write!(
                    reason,
                    "timestamps jumped {} time{} in the last minute (largest {:+.1} s)",
                    m.timestamp_jumps,
                    if m.timestamp_jumps == 1 { "" } else { "s" },
                    m.largest_jump_ms as f64 / 1000.0
                );
            }
            findings.push(Finding::new(
                Check::Timestamps,
                verdict,
                reason,
                "the encoder's source stalled or its output restarted: check the capture \
                 source, and use a constant frame rate",
            ));
        }

        // Arrival behind the stream's clock: the upload cannot keep up.
        if let (Some(floor), Some(recent)) = (self.lag_floor, self.lag_recent(now_ms)) {
            let behind = (recent - floor).max(0) as u64;
            m.behind_ms = Some(behind);
            let verdict = level(
                behind as f64,
                t.behind_warn_ms.into(),
                t.behind_bad_ms.into(),
            );
            let reason = if verdict == Verdict::Good {
                "arriving in real time".to_string()
            } else {
                format!(
                    "the stream arrives {:.1} s behind its own clock: the upload cannot keep up",
                    behind as f64 / 1000.0
                )
            };
            findings.push(Finding::new(
                Check::Upload,
                verdict,
                reason,
                "lower the bitrate to at most 75 % of your upload speed (OBS: Settings → \
                 Output → Bitrate), or use a wired connection",
            ));
        }
        HealthReport {
            measures: m,
            findings,
        }
    }
}
