//! Stream health: what is wrong with a publisher's encoder settings, told from the
//! stream's own timestamps and the times its messages arrive, without decoding a
//! frame. A [`HealthTracker`] is fed every audio and video message (a few integer
//! operations each, under the stream's lock); [`HealthTracker::report`] turns what
//! it saw into measures and a verdict per check, each with a one-line reason and the
//! fix, phrased for a streamer.
//!
//! The thresholds ([`Thresholds`]) default to what HLS packagers and the big
//! platforms ask of an encoder:
//! - keyframes every 2 s: Apple's HLS Authoring Specification (1.12: "Key frames
//!   (IDRs) SHOULD be present every two seconds"), Twitch's and YouTube's encoder
//!   settings (YouTube: "do not exceed 4 seconds");
//! - no B-frames for low latency (a reordered frame waits for the frames it refers to;
//!   WebRTC players cannot take them at all);
//! - a constant frame rate and a constant bitrate (CBR: every platform's ingest
//!   guidelines).
//!
//! Time is passed in by the caller: arrival in monotonic milliseconds since the
//! stream started, stream time as the timestamps the publisher sent (32-bit
//! milliseconds, unwrapped here), so every measure is testable without sleeping.

/// good < warn < bad.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Verdict {
    #[default]
    Good,
    Warn,
    Bad,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Warn => "warn",
            Verdict::Bad => "bad",
        }
    }

    /// 0, 1, 2 (the metric's value).
    pub fn level(self) -> u8 {
        self as u8
    }
}

/// What is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    Keyframes,
    BFrames,
    FrameRate,
    VideoBitrate,
    AudioBitrate,
    AvSync,
    Timestamps,
    Upload,
    /// A relay dropping to keyframes (judged by the node, which owns the relays).
    Relay,
    /// An SRT link's loss and round-trip time (judged by the node).
    SrtLink,
}

impl Check {
    pub const ALL: [Check; 10] = [
        Check::Keyframes,
        Check::BFrames,
        Check::FrameRate,
        Check::VideoBitrate,
        Check::AudioBitrate,
        Check::AvSync,
        Check::Timestamps,
        Check::Upload,
        Check::Relay,
        Check::SrtLink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Check::Keyframes => "keyframes",
            Check::BFrames => "b_frames",
            Check::FrameRate => "frame_rate",
            Check::VideoBitrate => "video_bitrate",
            Check::AudioBitrate => "audio_bitrate",
            Check::AvSync => "av_sync",
            Check::Timestamps => "timestamps",
            Check::Upload => "upload",
            Check::Relay => "relay",
            Check::SrtLink => "srt_link",
        }
    }
}

/// One check's verdict, why, and what to change (empty when good).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: Check,
    pub verdict: Verdict,
    pub reason: String,
    /// Fixed text (the numbers are in the reason).
    pub fix: &'static str,
}

impl Finding {
    pub fn new(check: Check, verdict: Verdict, reason: String, fix: &'static str) -> Finding {
        let fix = if verdict == Verdict::Good { "" } else { fix };
        Finding {
            check,
            verdict,
            reason,
            fix,
        }
    }
}

/// When a check turns warn or bad. Ratios are fractions (0.1 = 10 %).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Mean keyframe interval (or the wait for the next one) above which: warn, bad.
    pub keyframe_warn_ms: u32,
    pub keyframe_bad_ms: u32,
    /// What B-frames get (`Good` turns the check off).
    pub b_frames: Verdict,
    /// The worst second's frame count below the best second's by this fraction.
    pub frame_drop_warn: f64,
    pub frame_drop_bad: f64,
    /// Frame rates below this: warn.
    pub min_fps: f64,
    /// Bitrate swing, (max - min) / mean of the 2-second windows of the last 10 s.
    pub swing_warn: f64,
    pub swing_bad: f64,
    /// Change of the audio/video timestamp offset since the start, milliseconds.
    pub drift_warn_ms: u32,
    pub drift_bad_ms: u32,
    /// Arrival behind the stream's own clock (beyond the best it ever did).
    pub behind_warn_ms: u32,
    pub behind_bad_ms: u32,
    /// Timestamp jumps in the last minute: any is a warning, this many bad.
    pub jumps_bad: u32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            keyframe_warn_ms: 2_500,
            keyframe_bad_ms: 4_000,
            b_frames: Verdict::Warn,
            frame_drop_warn: 0.1,
            frame_drop_bad: 0.25,
            min_fps: 20.0,
            swing_warn: 1.0,
            swing_bad: 2.0,
            drift_warn_ms: 250,
            drift_bad_ms: 1_000,
            behind_warn_ms: 1_000,
            behind_bad_ms: 3_000,
            jumps_bad: 5,
        }
    }
}

/// What was measured, for the API (each `None` until there is enough to tell).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measures {
    /// Mean and longest of the last keyframe intervals, seconds of stream time.
    pub keyframe_interval_s: Option<f64>,
    pub keyframe_interval_max_s: Option<f64>,
    /// Seconds of stream time since the last keyframe.
    pub since_keyframe_s: Option<f64>,
    /// Frames reordered in the last 10 s.
    pub b_frames: bool,
    /// Frames per second over the window, and its worst second.
    pub fps: Option<f64>,
    pub fps_min: Option<f64>,
    /// Bitrate over the window, and its lowest and highest 2-second window.
    pub video_kbps: Option<Range>,
    pub audio_kbps: Option<Range>,
    /// Audio minus video timestamps at arrival, now and at the start (milliseconds).
    pub av_offset_ms: Option<i64>,
    pub av_drift_ms: Option<i64>,
    /// Timestamp jumps in the last minute, and the largest (signed, milliseconds).
    pub timestamp_jumps: u32,
    pub largest_jump_ms: i64,
    /// How far arrival is behind the stream's clock, beyond the best it did.
    pub behind_ms: Option<u64>,
}

/// A bitrate over the window and its lowest and highest 2-second window, kbit/s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub mean: u64,
    pub min: u64,
    pub max: u64,
}

impl Range {
    /// (max - min) / mean.
    pub fn swing(&self) -> f64 {
        if self.mean == 0 {
            0.0
        } else {
            (self.max - self.min) as f64 / self.mean as f64
        }
    }
}

/// The measures and one finding per check that could be judged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthReport {
    pub measures: Measures,
    pub findings: Vec<Finding>,
}

impl HealthReport {
    /// The worst verdict (good when nothing could be judged yet).
    pub fn verdict(&self) -> Verdict {
        self.findings
            .iter()
            .map(|f| f.verdict)
            .max()
            .unwrap_or_default()
    }
}

/// Stream seconds kept for the frame rate and bitrate measures.
const WINDOW_SECS: i64 = 10;
/// Ring size: the window plus the second being filled and one to spare.
const RING: usize = WINDOW_SECS as usize + 2;
/// Keyframe intervals the mean and maximum are taken over.
const KEYFRAME_INTERVALS: usize = 8;
/// Timestamp jumps remembered (those of the last minute are reported).
const JUMPS: usize = 8;
/// How long a timestamp jump is reported after it happened, arrival milliseconds.
const JUMP_MEMORY_MS: u64 = 60_000;
/// A step between consecutive timestamps of one kind larger than this is a jump
/// (milliseconds); so is any step backwards larger than [`BACKWARD_SLACK_MS`].
const JUMP_FORWARD_MS: i64 = 2_000;
const BACKWARD_SLACK_MS: i64 = 100;
/// Jumps of the two kinds this close in arrival time and in size are one jump.
const SAME_JUMP_MS: u64 = 2_000;
/// Arrival seconds skipped before the audio/video offset is taken as the baseline
/// (encoders settle their interleaving first).
const DRIFT_SETTLE_SECS: u64 = 3;

mod judge;
mod tracker;

pub use tracker::HealthTracker;

/// `value` against a warn and a bad threshold.
pub fn level(value: f64, warn: f64, bad: f64) -> Verdict {
    if value > bad {
        Verdict::Bad
    } else if value > warn {
        Verdict::Warn
    } else {
        Verdict::Good
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests;
