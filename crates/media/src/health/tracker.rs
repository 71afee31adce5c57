//! The counters a stream's messages update. Every message touches one cache line:
//! its kind's clock and the counts of the stream second it belongs to, both at the
//! head of the tracker; the rest (the ring of past seconds, the upload and drift
//! samples) is written once a stream second, when the next one begins, and on
//! keyframes. At a thousand streams that line is all a message brings into the cache.

use super::*;

/// "None" in fields kept as plain integers (they share the hot line).
const NONE: i64 = i64::MIN;
/// Upload-lag samples (one per stream second) the recent lag is the least of.
const LAG_SAMPLES: usize = 2;
/// Audio/video offset samples (one per stream second) averaged.
const OFFSET_SAMPLES: usize = 4;
/// A stream whose first timestamp is this far into a second has that second whole.
const FIRST_SECOND_SLACK_MS: i64 = 100;
/// No lag sample for this long (arrival ms): the upload measure is not current.
const LAG_STALE_MS: u64 = 2_500;

/// 32-bit millisecond timestamps of one kind, unwrapped.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    last_raw: u32,
    seen: bool,
    /// The unwrapped last timestamp (meaningful once `seen`).
    last: i64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            last_raw: 0,
            seen: false,
            last: NONE,
        }
    }
}

impl Clock {
    /// The unwrapped timestamp and the step from the previous one (0 for the first).
    #[inline]
    fn advance(&mut self, raw: u32) -> (i64, i64) {
        let step = if self.seen {
            i64::from(raw.wrapping_sub(self.last_raw) as i32)
        } else {
            self.seen = true;
            self.last = i64::from(raw);
            0
        };
        self.last += step;
        self.last_raw = raw;
        (self.last, step)
    }

    /// The last unwrapped timestamp, if any.
    pub(super) fn last(&self) -> Option<i64> {
        self.seen.then_some(self.last)
    }
}

/// One second of stream time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Second {
    /// Which second (stream time) this counts; [`NONE`] for an empty slot.
    pub(super) second: i64,
    pub(super) frames: u32,
    pub(super) video_bytes: u32,
    pub(super) audio_bytes: u32,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            second: NONE,
            frames: 0,
            video_bytes: 0,
            audio_bytes: 0,
        }
    }
}

impl Second {
    fn of(second: i64) -> Second {
        Second {
            second,
            ..Second::default()
        }
    }

    #[inline]
    fn add(&mut self, video_bytes: usize, audio_bytes: usize, frames: u32) {
        self.video_bytes = self.video_bytes.saturating_add(video_bytes as u32);
        self.audio_bytes = self.audio_bytes.saturating_add(audio_bytes as u32);
        self.frames += frames;
    }
}

/// Everything the checks need from one stream. The first 64 bytes are what every
/// message writes (aligned: one cache line).
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub struct HealthTracker {
    pub(super) video: Clock,
    pub(super) audio: Clock,
    /// The newest stream second, being counted.
    pub(super) cur: Second,
    /// Stream time of the last reordered frame ([`NONE`]: none yet).
    pub(super) last_reordered: i64,
    // --- Once a stream second, on keyframes, and on jumps. ---
    /// The seconds before `cur`, ring indexed by second.
    pub(super) seconds: [Second; RING],
    /// Stream time of the last keyframe and the intervals between the last ones.
    pub(super) last_keyframe: Option<i64>,
    pub(super) intervals: [u32; KEYFRAME_INTERVALS],
    pub(super) interval_count: usize,
    /// First video timestamp (the keyframe wait counts from it before any keyframe).
    pub(super) first_video: Option<i64>,
    /// Jumps: arrival time and size, newest last.
    pub(super) jumps: [(u64, i64); JUMPS],
    pub(super) jump_count: usize,
    /// Arrival minus stream time when each stream second began: the lowest ever (the
    /// baseline), the last ones, and when the last was taken (arrival ms).
    pub(super) lag_floor: Option<i64>,
    lag_recent: [i64; LAG_SAMPLES],
    lag_at: u64,
    /// Last audio minus last video timestamp when each stream second began: the last
    /// ones, how many were taken, and the mean of the first after the stream settled.
    offsets: [i64; OFFSET_SAMPLES],
    offset_count: usize,
    pub(super) offset_baseline: Option<i64>,
    /// Arrival second the drift baseline is counted from (reset by jumps).
    settle_from: u64,
    /// Stream time of the first message counted (since the start or the last jump):
    /// its second is complete only when it starts at the second's beginning.
    first_ms: i64,
}

impl Default for HealthTracker {
    fn default() -> Self {
        HealthTracker {
            video: Clock::default(),
            audio: Clock::default(),
            cur: Second::default(),
            last_reordered: NONE,
            seconds: [Second::default(); RING],
            last_keyframe: None,
            intervals: [0; KEYFRAME_INTERVALS],
            interval_count: 0,
            first_video: None,
            jumps: [(0, 0); JUMPS],
            jump_count: 0,
            lag_floor: None,
            lag_recent: [NONE; LAG_SAMPLES],
            lag_at: 0,
            offsets: [0; OFFSET_SAMPLES],
            offset_count: 0,
            offset_baseline: None,
            settle_from: 0,
            first_ms: NONE,
        }
    }
}

fn ring_index(second: i64) -> usize {
    second.rem_euclid(RING as i64) as usize
}

impl HealthTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a message of stream time `ts` in its second.
    #[inline]
    fn count(&mut self, arrival_ms: u64, ts: i64, video: usize, audio: usize, frames: u32) {
        let cur = self.cur.second;
        if cur != NONE {
            let start = cur * 1000;
            if ts >= start && ts < start + 1000 {
                self.cur.add(video, audio, frames);
                return;
            }
            if ts < start {
                // An older second (audio and video cross a boundary apart).
                let second = ts.div_euclid(1000);
                let slot = &mut self.seconds[ring_index(second)];
                if slot.second != second {
                    *slot = Second::of(second);
                }
                slot.add(video, audio, frames);
                return;
            }
        }
        self.next_second(arrival_ms, ts);
        self.cur.add(video, audio, frames);
    }

    /// A newer stream second begins with a message of stream time `ts`: the one
    /// counted so far goes to the ring, and the upload and drift are sampled.
    #[cold]
    fn next_second(&mut self, arrival_ms: u64, ts: i64) {
        if self.cur.second != NONE {
            self.seconds[ring_index(self.cur.second)] = self.cur;
        } else {
            self.first_ms = ts;
        }
        self.cur = Second::of(ts.div_euclid(1000));
        let lag = arrival_ms as i64 - ts;
        self.lag_floor = Some(self.lag_floor.map_or(lag, |f| f.min(lag)));
        self.lag_recent.rotate_left(1);
        self.lag_recent[LAG_SAMPLES - 1] = lag;
        self.lag_at = arrival_ms;
        if let (Some(audio), Some(video)) = (self.audio.last(), self.video.last()) {
            self.offsets.rotate_left(1);
            self.offsets[OFFSET_SAMPLES - 1] = audio - video;
            self.offset_count += 1;
            if self.offset_baseline.is_none()
                && self.offset_count >= OFFSET_SAMPLES
                && arrival_ms / 1000 >= self.settle_from + DRIFT_SETTLE_SECS
            {
                self.offset_baseline = self.offset();
            }
        }
    }

    /// A jump of `step` milliseconds at `arrival_ms`: remembered, and the measures
    /// that compare against the past start over.
    #[cold]
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
        let (video, audio, reordered) = (self.video, self.audio, self.last_reordered);
        let (jumps, jump_count) = (self.jumps, self.jump_count);
        *self = HealthTracker {
            video,
            audio,
            last_reordered: reordered,
            jumps,
            jump_count,
            settle_from: arrival_ms / 1000,
            ..HealthTracker::default()
        };
    }

    #[inline]
    fn is_jump(step: i64) -> bool {
        !(-BACKWARD_SLACK_MS..=JUMP_FORWARD_MS).contains(&step)
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
        self.count(arrival_ms, ts, len, 0, u32::from(frame));
        if !frame {
            return;
        }
        if composition_ms != 0 {
            self.last_reordered = ts;
        }
        if keyframe || self.first_video.is_none() {
            self.keyframe_or_first(ts, keyframe);
        }
    }

    #[cold]
    fn keyframe_or_first(&mut self, ts: i64, keyframe: bool) {
        self.first_video.get_or_insert(ts);
        if !keyframe {
            return;
        }
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

    /// An audio message of `len` bytes (sequence headers included).
    pub fn on_audio(&mut self, arrival_ms: u64, timestamp: u32, len: usize) {
        let (ts, step) = self.audio.advance(timestamp);
        if Self::is_jump(step) {
            self.jumped(arrival_ms, step);
        }
        self.count(arrival_ms, ts, 0, len, 0);
    }

    /// Stream time of the last reordered frame.
    pub(super) fn last_reordered(&self) -> Option<i64> {
        (self.last_reordered != NONE).then_some(self.last_reordered)
    }

    /// The least recent upload lag, when a sample is current at `now_ms`.
    pub(super) fn lag_recent(&self, now_ms: u64) -> Option<i64> {
        if now_ms.saturating_sub(self.lag_at) > LAG_STALE_MS {
            return None;
        }
        self.lag_recent.iter().copied().filter(|&l| l != NONE).min()
    }

    /// The mean of the last audio/video offsets.
    pub(super) fn offset(&self) -> Option<i64> {
        let n = self.offset_count.min(OFFSET_SAMPLES);
        (n > 0).then(|| self.offsets[OFFSET_SAMPLES - n..].iter().sum::<i64>() / n as i64)
    }

    /// The complete stream seconds of the window: `[from, to)`.
    pub(super) fn window(&self) -> Option<(i64, i64)> {
        let now = match (self.video.last(), self.audio.last()) {
            (Some(v), Some(a)) => v.min(a),
            (v, a) => v.or(a)?,
        };
        let to = now.div_euclid(1000);
        let oldest = self
            .seconds
            .iter()
            .chain(std::iter::once(&self.cur))
            .filter(|s| s.second != NONE)
            .map(|s| s.second)
            .min()?;
        // The first second is partial unless the stream began at its start (within the
        // first frame or two).
        let partial = oldest == self.first_ms.div_euclid(1000)
            && self.first_ms.rem_euclid(1000) > FIRST_SECOND_SLACK_MS;
        let from = (to - WINDOW_SECS).max(oldest + i64::from(partial));
        (to > from).then_some((from, to))
    }

    pub(super) fn second(&self, second: i64) -> Second {
        if second == self.cur.second {
            return self.cur;
        }
        let s = self.seconds[ring_index(second)];
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
        bytes: impl Fn(&Second) -> u32,
    ) -> Option<Range> {
        let total: u64 = (from..to).map(|s| u64::from(bytes(&self.second(s)))).sum();
        if total == 0 {
            return None;
        }
        let mut windows = Vec::with_capacity(WINDOW_SECS as usize / 2);
        let mut end = to;
        while end - 2 >= from {
            let b =
                u64::from(bytes(&self.second(end - 1))) + u64::from(bytes(&self.second(end - 2)));
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
