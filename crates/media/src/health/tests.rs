use super::*;

/// A synthetic publisher: video at `fps` with a keyframe every `gop` frames, AAC-like
/// audio every 23 ms, both stamped by the stream clock; `arrival` maps stream time to
/// arrival time (real time: the identity).
struct Publisher {
    fps: u32,
    gop: u32,
    frame_bytes: Box<dyn Fn(u32) -> usize>,
    composition_ms: i32,
    /// Audio runs this much faster than video (0: same clock).
    audio_speedup: f64,
    arrival: Box<dyn Fn(i64) -> u64>,
    /// Added to every timestamp from this stream millisecond on.
    jump: Option<(i64, i64)>,
    /// Stream seconds in which only this fraction of the frames are sent.
    thin: Option<(std::ops::Range<i64>, u32)>,
    base: u32,
}

impl Default for Publisher {
    fn default() -> Self {
        Publisher {
            fps: 30,
            gop: 60,
            frame_bytes: Box::new(|n| if n % 60 == 0 { 40_000 } else { 8_000 }),
            composition_ms: 0,
            audio_speedup: 0.0,
            arrival: Box::new(|ms| ms as u64),
            jump: None,
            thin: None,
            base: 0,
        }
    }
}

impl Publisher {
    /// Feeds `secs` seconds of stream; returns the arrival time of the last message.
    fn feed(&self, t: &mut HealthTracker, secs: u32) -> u64 {
        // (stream time of the clock that paces sending, stamp, video, index)
        let mut events: Vec<(i64, i64, bool, u32)> = Vec::new();
        for n in 0..secs * self.fps {
            let ms = i64::from(n) * 1000 / i64::from(self.fps);
            if let Some((range, keep_every)) = &self.thin {
                if range.contains(&(ms / 1000)) && n % keep_every != 0 {
                    continue;
                }
            }
            events.push((ms, ms, true, n));
        }
        let mut a = 0u32;
        loop {
            let ms = i64::from(a) * 23;
            if ms >= i64::from(secs) * 1000 {
                break;
            }
            let stamp = (f64::from(a) * 23.0 * (1.0 + self.audio_speedup)) as i64;
            events.push((ms, stamp, false, a));
            a += 1;
        }
        events.sort_by_key(|e| e.0);
        let mut last = 0;
        for (ms, stamp, video, n) in events {
            let stamp = match self.jump {
                Some((at, by)) if ms >= at => stamp + by,
                _ => stamp,
            };
            let stamp = self.base.wrapping_add(stamp as u32);
            let arrival = (self.arrival)(ms);
            if video {
                t.on_video(
                    arrival,
                    stamp,
                    (self.frame_bytes)(n),
                    true,
                    n % self.gop == 0,
                    self.composition_ms,
                );
            } else {
                t.on_audio(arrival, stamp, 370);
            }
            last = arrival;
        }
        last
    }
}

fn report(p: &Publisher, secs: u32) -> HealthReport {
    let mut t = HealthTracker::new();
    let now = p.feed(&mut t, secs);
    t.report(now, &Thresholds::default())
}

fn verdict_of(r: &HealthReport, check: Check) -> Option<Verdict> {
    r.findings
        .iter()
        .find(|f| f.check == check)
        .map(|f| f.verdict)
}

fn not_good(r: &HealthReport) -> Vec<Check> {
    r.findings
        .iter()
        .filter(|f| f.verdict != Verdict::Good)
        .map(|f| f.check)
        .collect()
}

#[test]
fn a_clean_stream_gets_no_verdict_and_its_measures() {
    let r = report(&Publisher::default(), 14);
    assert_eq!(not_good(&r), Vec::<Check>::new(), "{r:#?}");
    let m = &r.measures;
    assert_eq!(m.keyframe_interval_s, Some(2.0));
    assert_eq!(m.fps, Some(30.0));
    assert!(!m.b_frames);
    assert_eq!(m.timestamp_jumps, 0);
    assert_eq!(m.behind_ms, Some(0));
    assert_eq!(m.av_drift_ms.map(|d| d.abs() < 30), Some(true), "{m:?}");
    // 59 × 8000 + 40000 bytes per 2 s.
    let v = m.video_kbps.unwrap();
    assert_eq!((v.min, v.max), (2048, 2048), "{v:?}");
    for check in [
        Check::Keyframes,
        Check::BFrames,
        Check::FrameRate,
        Check::VideoBitrate,
        Check::AudioBitrate,
        Check::AvSync,
        Check::Timestamps,
        Check::Upload,
    ] {
        assert_eq!(verdict_of(&r, check), Some(Verdict::Good), "{check:?}");
    }
    assert!(r.findings.iter().all(|f| f.fix.is_empty()));
}

#[test]
fn a_long_keyframe_interval_is_told_before_the_second_keyframe() {
    let p = Publisher {
        gop: 240, // 8 s at 30 fps
        ..Publisher::default()
    };
    // 3 s in: not yet over the warning (2.5 s)... past it.
    let early = report(&p, 3);
    assert_eq!(verdict_of(&early, Check::Keyframes), Some(Verdict::Warn));
    let r = report(&p, 5);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == Check::Keyframes)
        .unwrap();
    assert_eq!(f.verdict, Verdict::Bad);
    assert!(
        f.reason.starts_with("no keyframe for 5.0 s"),
        "{}",
        f.reason
    );
    assert!(f.fix.contains("Keyframe Interval"), "{}", f.fix);
    let r = report(&p, 17);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == Check::Keyframes)
        .unwrap();
    assert_eq!(f.verdict, Verdict::Bad);
    assert!(
        f.reason
            .starts_with("keyframe every 8.0 s: set the keyframe interval to 2 s"),
        "{}",
        f.reason
    );
    assert_eq!(r.measures.keyframe_interval_max_s, Some(8.0));
}

#[test]
fn reordered_frames_are_b_frames() {
    let p = Publisher {
        composition_ms: 67,
        ..Publisher::default()
    };
    let r = report(&p, 2);
    assert!(r.measures.b_frames);
    assert_eq!(not_good(&r), vec![Check::BFrames]);
    let off = Thresholds {
        b_frames: Verdict::Good,
        ..Thresholds::default()
    };
    let mut t = HealthTracker::new();
    let now = p.feed(&mut t, 2);
    assert_eq!(verdict_of(&t.report(now, &off), Check::BFrames), None);
}

#[test]
fn seconds_with_missing_frames_are_a_frame_rate_drop() {
    let p = Publisher {
        thin: Some((6..8, 2)), // 15 fps for two seconds
        ..Publisher::default()
    };
    let r = report(&p, 12);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == Check::FrameRate)
        .unwrap();
    assert_eq!(f.verdict, Verdict::Bad, "{f:?}");
    assert!(
        f.reason.starts_with("frame rate fell to 15 fps (of 30)"),
        "{}",
        f.reason
    );
    let low = Publisher {
        fps: 15,
        gop: 30,
        ..Publisher::default()
    };
    let r = report(&low, 8);
    assert_eq!(verdict_of(&r, Check::FrameRate), Some(Verdict::Warn));
}

#[test]
fn a_bitrate_that_swings_is_told() {
    let p = Publisher {
        // 3 s of small frames, 3 s of large ones.
        frame_bytes: Box::new(|n| if (n / 90) % 2 == 0 { 2_000 } else { 20_000 }),
        ..Publisher::default()
    };
    let r = report(&p, 14);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == Check::VideoBitrate)
        .unwrap();
    assert_ne!(f.verdict, Verdict::Good, "{r:#?}");
    assert!(
        f.reason.starts_with("video bitrate swings between"),
        "{}",
        f.reason
    );
    assert_eq!(verdict_of(&r, Check::AudioBitrate), Some(Verdict::Good));
}

#[test]
fn audio_on_a_faster_clock_drifts() {
    let p = Publisher {
        audio_speedup: 0.02, // 20 ms per second
        ..Publisher::default()
    };
    let r = report(&p, 30);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == Check::AvSync)
        .unwrap();
    assert_ne!(f.verdict, Verdict::Good, "{:?}", r.measures);
    assert!(f.reason.contains("ahead of video"), "{}", f.reason);
}

#[test]
fn a_timestamp_jump_is_told_and_not_taken_for_other_faults() {
    let p = Publisher {
        jump: Some((5_000, 30_000)),
        ..Publisher::default()
    };
    let r = report(&p, 16);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == Check::Timestamps)
        .unwrap();
    assert_eq!(f.verdict, Verdict::Warn);
    assert!(
        f.reason
            .contains("jumped 1 time in the last minute (largest +30.0 s)"),
        "{}",
        f.reason
    );
    // The measures that compare against the past started over at the jump.
    assert_eq!(not_good(&r), vec![Check::Timestamps], "{r:#?}");
    // A minute later it is forgotten.
    let mut t = HealthTracker::new();
    let now = p.feed(&mut t, 16);
    assert_eq!(
        verdict_of(
            &t.report(now + 61_000, &Thresholds::default()),
            Check::Timestamps
        ),
        Some(Verdict::Good)
    );
}

#[test]
fn the_32_bit_wrap_is_not_a_jump() {
    let p = Publisher {
        base: u32::MAX - 3_000,
        ..Publisher::default()
    };
    let r = report(&p, 12);
    assert_eq!(not_good(&r), Vec::<Check>::new(), "{r:#?}");
}

#[test]
fn an_upload_that_cannot_keep_up_falls_behind_the_stream_clock() {
    let p = Publisher {
        // Each second of stream takes 1.5 s to arrive.
        arrival: Box::new(|ms| (ms as f64 * 1.5) as u64),
        ..Publisher::default()
    };
    // Sampled as each stream second begins, the least of the last two: 1.5 s behind
    // after 5 s of stream (arriving over 7.5 s).
    let r = report(&p, 5);
    assert_eq!(r.measures.behind_ms, Some(1500));
    assert_eq!(
        verdict_of(&r, Check::Upload),
        Some(Verdict::Warn),
        "{:?}",
        r.measures
    );
    let r = report(&p, 10);
    let f = r
        .findings
        .iter()
        .find(|f| f.check == Check::Upload)
        .unwrap();
    assert_eq!(f.verdict, Verdict::Bad);
    assert!(f.reason.contains("behind its own clock"), "{}", f.reason);
}

#[test]
fn an_audio_only_stream_is_judged_on_what_it_has() {
    let mut t = HealthTracker::new();
    for n in 0..500u32 {
        t.on_audio(u64::from(n) * 23, n * 23, 370);
    }
    let r = t.report(500 * 23, &Thresholds::default());
    let checks: Vec<Check> = r.findings.iter().map(|f| f.check).collect();
    assert_eq!(
        checks,
        vec![Check::AudioBitrate, Check::Timestamps, Check::Upload]
    );
    assert_eq!(r.verdict(), Verdict::Good);
}

mod prop {
    use super::super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever timestamps, sizes, arrival times and composition offsets a
        /// publisher sends, tracking and judging never panic, and a verdict is one of
        /// the three.
        #[test]
        fn arbitrary_streams_never_panic(
            messages in prop::collection::vec(
                (any::<bool>(), any::<u32>(), 0u64..5_000, 0usize..100_000, any::<bool>(), any::<i32>()),
                0..300,
            ),
            judge_at in any::<u64>(),
        ) {
            let mut t = HealthTracker::new();
            let mut arrival = 0u64;
            for (video, ts, gap, len, key, cts) in messages {
                arrival += gap;
                if video {
                    t.on_video(arrival, ts, len, true, key, cts);
                } else {
                    t.on_audio(arrival, ts, len);
                }
                let _ = t.report(arrival, &Thresholds::default());
            }
            let r = t.report(judge_at, &Thresholds::default());
            prop_assert!(r.verdict() <= Verdict::Bad);
        }
    }
}
