//! The counters a stream's messages update (a few integer operations each).

use super::*;

/// 32-bit millisecond timestamps of one kind, unwrapped, with jumps noticed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Clock {
    pub(super) last_raw: u32,
    /// Unwrapped last timestamp; `None` before the first.
    pub(super) last: Option<i64>,
}

impl Clock {
    /// The unwrapped timestamp and the step from the previous one (0 for the first).
    fn advance(&mut self, raw: u32) -> (i64, i64) {
        match self.last {
            None => {
                self.last = Some(i64::from(raw));
                self.last_raw = raw;
                (i64::from(raw), 0)
            }
            Some(last) => {
                let step = i64::from(raw.wrapping_sub(self.last_raw) as i32);
                let now = last + step;
                self.last = Some(now);
                self.last_raw = raw;
                (now, step)
            }
        }
    }
}

/// One second of stream time.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Second {
    /// Which second (stream time) this slot counts; slots of other seconds are stale.
    pub(super) second: i64,
    pub(super) frames: u32,
    pub(super) video_bytes: u64,
    pub(super) audio_bytes: u64,
}

/// Minimum of a value over arrival seconds: the current one and the previous.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct RecentMin {
    pub(super) second: u64,
    pub(super) current: Option<i64>,
    pub(super) previous: Option<i64>,
}

impl RecentMin {
    fn add(&mut self, arrival_ms: u64, value: i64) {
        let second = arrival_ms / 1000;
        if second != self.second {
            self.previous = if second == self.second + 1 {
                self.current
            } else {
                None
            };
            self.current = None;
            self.second = second;
        }
        self.current = Some(self.current.map_or(value, |c| c.min(value)));
    }

    pub(super) fn get(&self, arrival_ms: u64) -> Option<i64> {
        let second = arrival_ms / 1000;
        let (cur, prev) = if second == self.second {
            (self.current, self.previous)
        } else if second == self.second + 1 {
            (None, self.current)
        } else {
            (None, None)
        };
        match (cur, prev) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Mean of a value over whole arrival seconds.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SecondMean {
    pub(super) second: u64,
    pub(super) sum: i64,
    pub(super) count: i64,
    /// The mean of the last complete second, and which second that was.
    pub(super) last: Option<(u64, i64)>,
}

impl SecondMean {
    fn add(&mut self, arrival_ms: u64, value: i64) {
        let second = arrival_ms / 1000;
        if second != self.second {
            if self.count > 0 {
                self.last = Some((self.second, self.sum / self.count));
            }
            (self.second, self.sum, self.count) = (second, 0, 0);
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Everything the checks need from one stream, updated per message.
#[derive(Debug, Default, Clone)]
pub struct HealthTracker {
    pub(super) video: Clock,
    pub(super) audio: Clock,
    pub(super) seconds: [Second; RING],
    /// Stream time of the last keyframe and the intervals between the last ones.
    pub(super) last_keyframe: Option<i64>,
    pub(super) intervals: [u32; KEYFRAME_INTERVALS],
    pub(super) interval_count: usize,
    /// First video timestamp (the keyframe wait counts from it before any keyframe).
    pub(super) first_video: Option<i64>,
    /// Stream time of the last reordered frame.
    pub(super) last_reordered: Option<i64>,
    /// Jumps: arrival time and size, newest last.
    pub(super) jumps: [(u64, i64); JUMPS],
    pub(super) jump_count: usize,
    /// Arrival minus stream time: the lowest ever (the baseline), and recently.
    pub(super) lag_floor: Option<i64>,
    pub(super) lag_recent: RecentMin,
    /// Last audio timestamp minus each video timestamp, per arrival second.
    pub(super) offset: SecondMean,
    pub(super) offset_baseline: Option<i64>,
    /// Arrival second the drift baseline is counted from (reset by jumps).
    pub(super) settle_from: u64,
}

impl HealthTracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&mut self, stream_ms: i64) -> &mut Second {
        let second = stream_ms.div_euclid(1000);
        let s = &mut self.seconds[second.rem_euclid(RING as i64) as usize];
        if s.second != second {
            *s = Second {
                second,
                ..Default::default()
            };
        }
        s
    }

    /// A jump of `step` milliseconds at `arrival_ms`: remembered, and the measures
    /// that compare against the past start over.
    fn jumped(&mut self, arrival_ms: u64, step: i64) {
        // Audio and video jumping together (the encoder's clock jumped) is one jump.
        let (last_at, last_step) = self.jumps[JUMPS - 1];
        let same = self.jump_count > 0
            && arrival_ms.saturating_sub(last_at) <= SAME_JUMP_MS
            && (step - last_step).abs() <= SAME_JUMP_MS as i64;
        if !same {
            self.jumps.rotate_left(1);
            self.jumps[JUMPS - 1] = (arrival_ms, step);
            self.jump_count = (self.jump_count + 1).min(JUMPS);
        }
        self.seconds = [Second::default(); RING];
        self.last_keyframe = None;
        self.first_video = None;
        self.lag_floor = None;
        self.lag_recent = RecentMin::default();
        self.offset = SecondMean::default();
        self.offset_baseline = None;
        self.settle_from = arrival_ms / 1000;
    }

    fn is_jump(step: i64) -> bool {
        !(-BACKWARD_SLACK_MS..=JUMP_FORWARD_MS).contains(&step)
    }

    fn lag(&mut self, arrival_ms: u64, stream_ms: i64) {
        let lag = arrival_ms as i64 - stream_ms;
        self.lag_floor = Some(self.lag_floor.map_or(lag, |f| f.min(lag)));
        self.lag_recent.add(arrival_ms, lag);
    }

    /// A video message: `len` bytes, a coded frame or not, a keyframe or not, with
    /// composition offset `composition_ms` ([`crate::VideoTag::composition_time`]).
    pub fn on_video(
        &mut self,
        arrival_ms: u64,
        timestamp: u32,
        len: usize,
        frame: bool,
        keyframe: bool,
        composition_ms: i32,
    ) {
        let (ts, step) = self.video.advance(timestamp);
        if Self::is_jump(step) {
            self.jumped(arrival_ms, step);
        }
        let slot = self.slot(ts);
        slot.video_bytes += len as u64;
        if !frame {
            return;
        }
        slot.frames += 1;
        self.first_video.get_or_insert(ts);
        if keyframe {
            if let Some(last) = self.last_keyframe {
                let interval = (ts - last).clamp(0, i64::from(u32::MAX)) as u32;
                if interval > 0 {
                    self.intervals.rotate_left(1);
                    self.intervals[KEYFRAME_INTERVALS - 1] = interval;
                    self.interval_count = (self.interval_count + 1).min(KEYFRAME_INTERVALS);
                }
            }
            self.last_keyframe = Some(ts);
        }
        if composition_ms != 0 {
            self.last_reordered = Some(ts);
        }
        self.lag(arrival_ms, ts);
        if let Some(audio) = self.audio.last {
            self.offset.add(arrival_ms, audio - ts);
            if let Some((second, mean)) = self.offset.last {
                if self.offset_baseline.is_none() && second >= self.settle_from + DRIFT_SETTLE_SECS
                {
                    self.offset_baseline = Some(mean);
                }
            }
        }
    }

    /// An audio message of `len` bytes (sequence headers included).
    pub fn on_audio(&mut self, arrival_ms: u64, timestamp: u32, len: usize) {
        let (ts, step) = self.audio.advance(timestamp);
        if Self::is_jump(step) {
            self.jumped(arrival_ms, step);
        }
        self.slot(ts).audio_bytes += len as u64;
        if self.video.last.is_none() {
            self.lag(arrival_ms, ts);
        }
    }

    /// The complete stream seconds of the window: `[from, to)`.
    pub(super) fn window(&self) -> Option<(i64, i64)> {
        let now = match (self.video.last, self.audio.last) {
            (Some(v), Some(a)) => v.min(a),
            (v, a) => v.or(a)?,
        };
        let to = now.div_euclid(1000);
        let oldest = self
            .seconds
            .iter()
            .filter(|s| s.frames > 0 || s.video_bytes > 0 || s.audio_bytes > 0)
            .map(|s| s.second)
            .min()?;
        // The first second may be partial: skip it.
        let from = (to - WINDOW_SECS).max(oldest + 1);
        (to > from).then_some((from, to))
    }

    pub(super) fn second(&self, second: i64) -> Second {
        let s = self.seconds[second.rem_euclid(RING as i64) as usize];
        if s.second == second {
            s
        } else {
            Second::default()
        }
    }

    /// Bitrate over `[from, to)` and over its 2-second windows (newest first, at
    /// least two of them), kbit/s.
    pub(super) fn range(
        &self,
        from: i64,
        to: i64,
        bytes: impl Fn(&Second) -> u64,
    ) -> Option<Range> {
        let total: u64 = (from..to).map(|s| bytes(&self.second(s))).sum();
        if total == 0 {
            return None;
        }
        let mut windows = Vec::with_capacity(WINDOW_SECS as usize / 2);
        let mut end = to;
        while end - 2 >= from {
            let b = bytes(&self.second(end - 1)) + bytes(&self.second(end - 2));
            windows.push(b * 8 / 2 / 1000);
            end -= 2;
        }
        if windows.len() < 2 {
            return None;
        }
        Some(Range {
            mean: total * 8 / (to - from) as u64 / 1000,
            min: *windows.iter().min()?,
            max: *windows.iter().max()?,
        })
    }
}
