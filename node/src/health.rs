//! Stream health as the node tells it: every second, each live stream's
//! [`media::health`] report, plus what only the node knows (its relays dropping to
//! keyframes, the SRT link's loss and round-trip time), settled so that a stream on
//! the edge of a threshold does not flap: a worse verdict is told at once, a better
//! one once it has held for `health.settle`. What was told is what the API
//! (`/api/v1/streams/{id}/health`), the dashboard, the metrics and the `health`
//! event (on the event stream and to webhooks) show; an event goes out only when a
//! verdict changes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use media::health::{level, Check, Finding, HealthReport, Measures, Range, Thresholds, Verdict};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::HealthConfig;
use crate::events::{Change, CheckView, PublicEvent};
use crate::hub::{Hub, LinkStats, LiveStream};

/// How often the streams are judged.
const EVERY: Duration = Duration::from_secs(1);
/// How far back relay drops and SRT losses are counted.
const LOOKBACK: Duration = Duration::from_secs(60);
/// SRT link samples kept (one per judgement): the loss rate is over this many seconds.
const LINK_SAMPLES: usize = 10;

/// What `/api/v1/streams/{id}/health` answers.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelHealth {
    pub channel_id: Uuid,
    pub verdict: &'static str,
    /// Every check judged so far, as told.
    pub checks: Vec<CheckView>,
    pub measures: MeasuresView,
    pub updated_at: DateTime<Utc>,
}

/// [`Measures`] for JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MeasuresView {
    pub keyframe_interval_s: Option<f64>,
    pub keyframe_interval_max_s: Option<f64>,
    pub since_keyframe_s: Option<f64>,
    pub b_frames: bool,
    pub fps: Option<f64>,
    pub fps_min: Option<f64>,
    pub video_kbps: Option<RangeView>,
    pub audio_kbps: Option<RangeView>,
    pub av_offset_ms: Option<i64>,
    pub av_drift_ms: Option<i64>,
    pub timestamp_jumps: u32,
    pub largest_jump_ms: i64,
    pub behind_ms: Option<u64>,
    /// Relay messages dropped in the last minute, in all.
    pub relay_dropped_messages: u64,
    /// SRT only: packets lost and given up over the last 10 s, round trip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srt: Option<SrtView>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RangeView {
    pub mean: u64,
    pub min: u64,
    pub max: u64,
    pub swing: f64,
}

impl From<Range> for RangeView {
    fn from(r: Range) -> Self {
        RangeView {
            mean: r.mean,
            min: r.min,
            max: r.max,
            swing: (r.swing() * 100.0).round() / 100.0,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct SrtView {
    pub rtt_ms: f64,
    pub latency_ms: u32,
    pub loss_ratio: f64,
    pub dropped_packets: u64,
}

/// How a finding is shown.
fn check_view(f: &Finding) -> CheckView {
    CheckView {
        check: f.check.as_str(),
        verdict: f.verdict.as_str(),
        reason: f.reason.clone(),
        fix: f.fix,
    }
}

fn view(m: &Measures) -> MeasuresView {
    MeasuresView {
        keyframe_interval_s: m.keyframe_interval_s,
        keyframe_interval_max_s: m.keyframe_interval_max_s,
        since_keyframe_s: m.since_keyframe_s,
        b_frames: m.b_frames,
        fps: m.fps,
        fps_min: m.fps_min,
        video_kbps: m.video_kbps.map(Into::into),
        audio_kbps: m.audio_kbps.map(Into::into),
        av_offset_ms: m.av_offset_ms,
        av_drift_ms: m.av_drift_ms,
        timestamp_jumps: m.timestamp_jumps,
        largest_jump_ms: m.largest_jump_ms,
        behind_ms: m.behind_ms,
        ..MeasuresView::default()
    }
}

/// What the node remembers of one live stream's health.
struct Tracked {
    session_id: Uuid,
    /// The verdicts told, per check.
    told: BTreeMap<Check, Finding>,
    /// Since when a check has been judged better than told.
    better_since: HashMap<Check, Instant>,
    /// Relay drop counters, per relay URL: the last total and when it last grew.
    relay_drops: HashMap<String, (u64, VecDeque<(Instant, u64)>)>,
    /// SRT link samples, newest last.
    link: VecDeque<LinkStats>,
    /// The latest measures, and when they were taken.
    measures: MeasuresView,
    updated_at: DateTime<Utc>,
}

impl Tracked {
    fn new(session_id: Uuid) -> Tracked {
        Tracked {
            session_id,
            told: BTreeMap::new(),
            better_since: HashMap::new(),
            relay_drops: HashMap::new(),
            link: VecDeque::new(),
            measures: MeasuresView::default(),
            updated_at: Utc::now(),
        }
    }

    /// Applies a new judgement; returns the verdicts that changed.
    fn settle(&mut self, findings: Vec<Finding>, now: Instant, settle: Duration) -> Vec<Change> {
        let mut changes = Vec::new();
        for f in findings {
            let check = f.check;
            let told = self.told.get(&check).map_or(Verdict::Good, |t| t.verdict);
            let tell = if f.verdict > told {
                true
            } else if f.verdict < told {
                let since = *self.better_since.entry(check).or_insert(now);
                now.duration_since(since) >= settle
            } else {
                // Same verdict: the reason's numbers move on, nothing to tell.
                self.better_since.remove(&check);
                false
            };
            if tell {
                self.better_since.remove(&check);
                changes.push(Change {
                    check: check.as_str(),
                    from: told.as_str(),
                    to: f.verdict.as_str(),
                });
                self.told.insert(check, f);
            } else if f.verdict == told {
                self.told.insert(check, f);
            }
        }
        changes
    }

    fn verdict(&self) -> Verdict {
        self.told
            .values()
            .map(|f| f.verdict)
            .max()
            .unwrap_or_default()
    }

    /// The relays' drop counters: a finding when there are relays.
    fn relays(&mut self, stream: &LiveStream, now: Instant) -> (Option<Finding>, u64) {
        let statuses = stream.subscriber_statuses();
        if statuses.is_empty() {
            return (None, 0);
        }
        let mut worst: Option<(String, u64)> = None;
        let mut all = 0;
        for s in &statuses {
            let (last, growth) = self
                .relay_drops
                .entry(s.url.clone())
                .or_insert((s.dropped_messages, VecDeque::new()));
            if s.dropped_messages > *last {
                growth.push_back((now, s.dropped_messages - *last));
                *last = s.dropped_messages;
            }
            while growth
                .front()
                .is_some_and(|(at, _)| now.duration_since(*at) > LOOKBACK)
            {
                growth.pop_front();
            }
            let recent: u64 = growth.iter().map(|(_, n)| n).sum();
            all += recent;
            if recent > 0 && worst.as_ref().is_none_or(|(_, n)| recent > *n) {
                worst = Some((s.url.clone(), recent));
            }
        }
        let finding = match worst {
            None => Finding::new(Check::Relay, Verdict::Good, "relays keep up".into(), ""),
            Some((url, n)) => Finding::new(
                Check::Relay,
                Verdict::Warn,
                format!("the relay to {url} dropped {n} messages in the last minute to keep up"),
                "the node's link to that upstream is too slow (not the encoder): the operator \
                 should check the upstream's bandwidth",
            ),
        };
        (Some(finding), all)
    }

    /// The SRT link over the last samples: a finding for SRT publishes.
    fn srt(&mut self, link: Option<LinkStats>, loss_warn: f64) -> Option<(Finding, SrtView)> {
        let now = link?;
        self.link.push_back(now);
        if self.link.len() > LINK_SAMPLES + 1 {
            self.link.pop_front();
        }
        let first = self.link.front()?;
        let received = now.packets_received.saturating_sub(first.packets_received);
        let lost = now.packets_lost.saturating_sub(first.packets_lost);
        let dropped = now.packets_dropped.saturating_sub(first.packets_dropped);
        let loss = if received + lost == 0 {
            0.0
        } else {
            lost as f64 / (received + lost) as f64
        };
        let latency = f64::from(now.latency_ms);
        let needed = (now.rtt_ms * 4.0).ceil();
        let seconds = self.link.len() - 1;
        let (verdict, reason, fix) = if dropped > 0 {
            (
                Verdict::Bad,
                format!(
                    "{dropped} packets came too late in the last {seconds} s and were lost for \
                     viewers (latency {} ms, round trip {:.0} ms)",
                    now.latency_ms, now.rtt_ms
                ),
                "raise the SRT latency to 4 round trips or more (twice the current one is a \
                 good start), or lower the bitrate",
            )
        } else if needed > latency {
            (
                Verdict::Warn,
                format!(
                    "round trip {:.0} ms is too long for a latency of {} ms: raise it to at least {needed} ms",
                    now.rtt_ms, now.latency_ms
                ),
                "raise the SRT latency (the encoder's latency setting, or srt.latency on the \
                 node) to 4 round trips or more",
            )
        } else if level(loss, loss_warn, 1.0) != Verdict::Good {
            (
                Verdict::Warn,
                format!(
                    "{:.1} % of packets lost on the way (sent again so far)",
                    loss * 100.0
                ),
                "the network is lossy: raise the SRT latency, lower the bitrate, or use a \
                 better connection",
            )
        } else {
            (
                Verdict::Good,
                format!(
                    "round trip {:.0} ms, {:.1} % loss",
                    now.rtt_ms,
                    loss * 100.0
                ),
                "",
            )
        };
        Some((
            Finding::new(Check::SrtLink, verdict, reason, fix),
            SrtView {
                rtt_ms: now.rtt_ms,
                latency_ms: now.latency_ms,
                loss_ratio: (loss * 10_000.0).round() / 10_000.0,
                dropped_packets: dropped,
            },
        ))
    }
}

/// A live channel's verdict, and each check's.
pub type StreamVerdicts = (Uuid, Verdict, Vec<(Check, Verdict)>);

/// Judges the live streams every second and keeps what it told.
pub struct HealthMonitor {
    hub: Arc<Hub>,
    thresholds: Thresholds,
    srt_loss_warn: f64,
    settle: Duration,
    streams: Mutex<HashMap<Uuid, Tracked>>,
}

impl HealthMonitor {
    pub fn new(hub: Arc<Hub>, config: &HealthConfig) -> Arc<HealthMonitor> {
        Arc::new(HealthMonitor {
            hub,
            thresholds: config.thresholds(),
            srt_loss_warn: config.srt_loss_warn,
            settle: config.settle,
            streams: Mutex::new(HashMap::new()),
        })
    }

    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.judge(),
            }
        }
    }

    /// One round over the live streams.
    pub fn judge(&self) {
        let now = Instant::now();
        let live = self.hub.list();
        let mut events = Vec::new();
        {
            let mut streams = self.streams.lock();
            streams.retain(|id, t| {
                live.iter()
                    .any(|s| s.channel_id == *id && s.session_id == t.session_id)
            });
            for stream in &live {
                let Some(report) = stream.health(&self.thresholds) else {
                    continue;
                };
                let tracked = streams
                    .entry(stream.channel_id)
                    .or_insert_with(|| Tracked::new(stream.session_id));
                if let Some(event) = self.judge_one(stream, tracked, report, now) {
                    events.push(event);
                }
            }
        }
        // Published outside the lock (webhooks and listeners are bounded queues).
        for event in events {
            self.hub.events().publish(event);
        }
    }

    fn judge_one(
        &self,
        stream: &LiveStream,
        tracked: &mut Tracked,
        report: HealthReport,
        now: Instant,
    ) -> Option<PublicEvent> {
        let HealthReport {
            measures,
            mut findings,
        } = report;
        let mut measures = view(&measures);
        let (relay, dropped) = tracked.relays(stream, now);
        findings.extend(relay);
        measures.relay_dropped_messages = dropped;
        if let Some((finding, srt)) = tracked.srt(stream.link(), self.srt_loss_warn) {
            findings.push(finding);
            measures.srt = Some(srt);
        }
        let changes = tracked.settle(findings, now, self.settle);
        let verdict = tracked.verdict();
        tracked.measures = measures;
        tracked.updated_at = Utc::now();
        if changes.is_empty() {
            return None;
        }
        for c in &changes {
            metrics::counter!(crate::metric::HEALTH_CHANGES, "check" => c.check, "verdict" => c.to)
                .increment(1);
        }
        Some(PublicEvent::Health {
            channel_id: stream.channel_id,
            verdict: verdict.as_str(),
            problems: tracked
                .told
                .values()
                .filter(|f| f.verdict != Verdict::Good)
                .map(check_view)
                .collect(),
            changes,
        })
    }

    /// What was last told of a live channel.
    pub fn get(&self, channel_id: &Uuid) -> Option<ChannelHealth> {
        self.streams.lock().get(channel_id).map(|t| ChannelHealth {
            channel_id: *channel_id,
            verdict: t.verdict().as_str(),
            checks: t.told.values().map(check_view).collect(),
            measures: t.measures.clone(),
            updated_at: t.updated_at,
        })
    }

    /// Every live channel's verdict and each check's, for the metrics.
    pub fn verdicts(&self) -> Vec<StreamVerdicts> {
        self.streams
            .lock()
            .iter()
            .map(|(id, t)| {
                (
                    *id,
                    t.verdict(),
                    t.told.iter().map(|(c, f)| (*c, f.verdict)).collect(),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(check: Check, verdict: Verdict) -> Finding {
        Finding::new(check, verdict, format!("{verdict:?}"), "fix")
    }

    fn tracked() -> Tracked {
        Tracked::new(Uuid::nil())
    }

    #[tokio::test(start_paused = true)]
    async fn worse_is_told_at_once_and_better_once_it_held() {
        let settle = Duration::from_secs(10);
        let mut t = tracked();
        // A first good judgement is not news.
        assert!(t
            .settle(
                vec![finding(Check::Keyframes, Verdict::Good)],
                Instant::now(),
                settle
            )
            .is_empty());
        let changes = t.settle(
            vec![finding(Check::Keyframes, Verdict::Bad)],
            Instant::now(),
            settle,
        );
        assert_eq!(
            changes,
            vec![Change {
                check: "keyframes",
                from: "good",
                to: "bad"
            }]
        );
        // Better for 9 s, then worse again, then better for 10 s: one change back.
        for _ in 0..9 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(t
                .settle(
                    vec![finding(Check::Keyframes, Verdict::Good)],
                    Instant::now(),
                    settle
                )
                .is_empty());
        }
        assert!(t
            .settle(
                vec![finding(Check::Keyframes, Verdict::Bad)],
                Instant::now(),
                settle
            )
            .is_empty());
        let mut told = Vec::new();
        for _ in 0..=10 {
            told.extend(t.settle(
                vec![finding(Check::Keyframes, Verdict::Warn)],
                Instant::now(),
                settle,
            ));
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        assert_eq!(
            told,
            vec![Change {
                check: "keyframes",
                from: "bad",
                to: "warn"
            }]
        );
        assert_eq!(t.verdict(), Verdict::Warn);
    }

    #[test]
    fn srt_losses_and_round_trips_are_judged_against_the_latency() {
        let mut t = tracked();
        let mut link = LinkStats {
            rtt_ms: 20.0,
            latency_ms: 120,
            ..LinkStats::default()
        };
        for i in 0..5 {
            link.packets_received = i * 1000;
            let (f, _) = t.srt(Some(link), 0.05).unwrap();
            assert_eq!(f.verdict, Verdict::Good, "{f:?}");
        }
        link.rtt_ms = 45.0;
        let (f, _) = t.srt(Some(link), 0.05).unwrap();
        assert_eq!(f.verdict, Verdict::Warn);
        assert!(f.reason.contains("at least 180 ms"), "{}", f.reason);
        link.packets_dropped = 3;
        let (f, view) = t.srt(Some(link), 0.05).unwrap();
        assert_eq!((f.verdict, view.dropped_packets), (Verdict::Bad, 3));
        assert!(t.srt(None, 0.05).is_none());
    }
}
