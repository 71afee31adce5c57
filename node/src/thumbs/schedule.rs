//! Which channel gets the next free decoder: earliest due first. A channel is due
//! when its first keyframe is seen, and then one interval after its previous turn was
//! due; it is eligible when it is due, has a keyframe newer than the one last decoded,
//! and has no decode running. Every channel's due time only moves forward when it is
//! served, so when decoders are short, each waits its turn and none starves: the
//! refresh period stretches for all alike instead of some channels never getting a
//! picture. Pure bookkeeping (time is passed in), so the policy is tested without
//! decoders or clocks.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A live channel as the scheduler sees it at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LiveView {
    pub(super) channel: Uuid,
    pub(super) session: Uuid,
    /// Changes with every keyframe; 0 before the first.
    pub(super) generation: u64,
}

/// How one thumbnail attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Written(DateTime<Utc>),
    /// Nothing to decode yet (no sequence header), or the channel went away.
    Nothing,
    Failed,
}

/// Per-channel state of one publish session.
#[derive(Debug)]
struct ChannelTurn {
    session: Uuid,
    /// When the channel is (or was) due; `None` until its first keyframe.
    due: Option<Instant>,
    /// Keyframe generation of the last attempt (0: none yet).
    attempted: u64,
    /// A decode is running.
    in_flight: bool,
    /// The last attempt failed (failures after the first are logged quietly).
    failing: bool,
    /// When this session's thumbnail was last written.
    written_at: Option<DateTime<Utc>>,
}

impl ChannelTurn {
    fn new(session: Uuid) -> ChannelTurn {
        ChannelTurn {
            session,
            due: None,
            attempted: 0,
            in_flight: false,
            failing: false,
            written_at: None,
        }
    }

    fn eligible(&self, generation: u64, now: Instant) -> bool {
        !self.in_flight
            && generation != 0
            && generation != self.attempted
            && self.due.is_some_and(|d| d <= now)
    }
}

/// The turns of every live channel.
#[derive(Debug)]
pub(super) struct Schedule {
    interval: Duration,
    turns: HashMap<Uuid, ChannelTurn>,
}

/// What `finish` reports for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    None,
    /// The first failure after successes (or the first ever).
    StartedFailing,
    /// A success after failures.
    Recovered,
}

impl Schedule {
    pub(super) fn new(interval: Duration) -> Schedule {
        Schedule {
            interval,
            turns: HashMap::new(),
        }
    }

    /// Takes in the live set: forgets channels no longer live (unless a decode of
    /// theirs is running), starts new sessions, marks first keyframes due. Returns the
    /// channels eligible now, earliest due first.
    pub(super) fn due(&mut self, live: &[LiveView], now: Instant) -> Vec<Uuid> {
        let ids: HashSet<Uuid> = live.iter().map(|l| l.channel).collect();
        self.turns.retain(|id, t| t.in_flight || ids.contains(id));
        let mut due = Vec::new();
        for l in live {
            let turn = self
                .turns
                .entry(l.channel)
                .or_insert_with(|| ChannelTurn::new(l.session));
            if turn.session != l.session && !turn.in_flight {
                *turn = ChannelTurn::new(l.session);
            }
            if turn.session != l.session || l.generation == 0 {
                continue;
            }
            let when = *turn.due.get_or_insert(now);
            if turn.eligible(l.generation, now) {
                due.push((when, l.channel));
            }
        }
        due.sort_unstable();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Starts a turn if the channel is still eligible; its next turn is due one
    /// interval after this one was (or now, if that has passed already).
    pub(super) fn claim(&mut self, view: LiveView, now: Instant) -> bool {
        let interval = self.interval;
        let Some(turn) = self.turns.get_mut(&view.channel) else {
            return false;
        };
        if turn.session != view.session || !turn.eligible(view.generation, now) {
            return false;
        }
        turn.in_flight = true;
        turn.attempted = view.generation;
        let due = turn.due.unwrap_or(now);
        turn.due = Some((due + interval).max(now));
        true
    }

    /// Ends the turn of `channel`'s `session`.
    pub(super) fn finish(&mut self, channel: Uuid, session: Uuid, outcome: Outcome) -> Change {
        let Some(turn) = self.turns.get_mut(&channel) else {
            return Change::None;
        };
        if turn.session != session {
            // A new session started meanwhile: it has its own turns.
            turn.in_flight = false;
            return Change::None;
        }
        turn.in_flight = false;
        match outcome {
            Outcome::Written(at) => {
                turn.written_at = Some(at);
                let was = std::mem::replace(&mut turn.failing, false);
                if was {
                    Change::Recovered
                } else {
                    Change::None
                }
            }
            Outcome::Nothing => Change::None,
            Outcome::Failed => {
                let was = std::mem::replace(&mut turn.failing, true);
                if was {
                    Change::None
                } else {
                    Change::StartedFailing
                }
            }
        }
    }

    /// When this session's thumbnail was last written.
    pub(super) fn written_at(&self, channel: Uuid, session: Uuid) -> Option<DateTime<Utc>> {
        self.turns
            .get(&channel)
            .filter(|t| t.session == session)
            .and_then(|t| t.written_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulation: `channels` live streams with a new keyframe every `gop`, served by
    /// `decoders` decoders that each take `cost` per thumbnail, looked at every `tick`.
    /// Returns, per channel, the instants its thumbnails were written.
    fn simulate(
        channels: usize,
        decoders: usize,
        cost: Duration,
        interval: Duration,
        gop: Duration,
        run_for: Duration,
    ) -> Vec<Vec<Instant>> {
        let tick = Duration::from_millis(250);
        let start = Instant::now();
        let mut schedule = Schedule::new(interval);
        let ids: Vec<Uuid> = (0..channels as u128).map(Uuid::from_u128).collect();
        let session = Uuid::from_u128(u128::MAX);
        let mut written: Vec<Vec<Instant>> = vec![Vec::new(); channels];
        // Decoders: when each becomes free, and the job it runs.
        let mut busy: Vec<Option<(Instant, usize)>> = vec![None; decoders];
        let mut now = start;
        while now < start + run_for {
            let generation = 1 + (now - start).as_millis() as u64 / gop.as_millis() as u64;
            let views: Vec<LiveView> = ids
                .iter()
                .map(|&channel| LiveView {
                    channel,
                    session,
                    generation,
                })
                .collect();
            // Finished jobs, then dispatch to free decoders, earliest due first.
            for slot in busy.iter_mut() {
                if let Some((done, i)) = *slot {
                    if done <= now {
                        schedule.finish(ids[i], session, Outcome::Written(Utc::now()));
                        written[i].push(done);
                        *slot = None;
                    }
                }
            }
            let mut ready = schedule.due(&views, now).into_iter();
            for slot in busy.iter_mut().filter(|s| s.is_none()) {
                for id in ready.by_ref() {
                    let i = id.as_u128() as usize;
                    if schedule.claim(views[i], now) {
                        *slot = Some((now + cost, i));
                        break;
                    }
                }
            }
            now += tick.min(cost);
        }
        written
    }

    #[test]
    fn with_enough_decoders_every_channel_is_refreshed_every_interval() {
        // 300 channels, 2 decoders at 20 ms a picture: 100 pictures/s, 30/s needed.
        let interval = Duration::from_secs(10);
        let written = simulate(
            300,
            2,
            Duration::from_millis(20),
            interval,
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        for (i, w) in written.iter().enumerate() {
            assert!(w.len() >= 5, "channel {i} got {} thumbnails", w.len());
            // The first within a couple of seconds, then one per interval.
            let start = *written.iter().flatten().min().unwrap();
            assert!(
                w[0] - start < Duration::from_secs(4),
                "channel {i} first late"
            );
            for pair in w.windows(2) {
                let gap = pair[1] - pair[0];
                assert!(
                    gap <= interval + Duration::from_secs(2),
                    "channel {i}: gap {gap:?}"
                );
            }
        }
    }

    #[test]
    fn with_too_few_decoders_every_channel_still_gets_its_turn() {
        // 300 channels, 1 decoder at 100 ms a picture: a round takes 30 s, three times
        // the interval. Everyone is served, everyone alike.
        let written = simulate(
            300,
            1,
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(2),
            Duration::from_secs(95),
        );
        let counts: Vec<usize> = written.iter().map(|w| w.len()).collect();
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(min >= 3, "every channel served each round: {counts:?}");
        assert!(max - min <= 1, "turns are shared fairly: {min}..{max}");
    }

    #[test]
    fn an_unchanged_keyframe_is_not_decoded_again_and_sessions_restart() {
        let t = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(10));
        let (ch, s1, s2) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let view = |session, generation| LiveView {
            channel: ch,
            session,
            generation,
        };
        assert!(s.due(&[view(s1, 0)], t).is_empty(), "no keyframe yet");
        assert_eq!(s.due(&[view(s1, 1)], t), vec![ch]);
        assert!(s.claim(view(s1, 1), t));
        assert!(!s.claim(view(s1, 1), t), "one decode at a time");
        s.finish(ch, s1, Outcome::Written(Utc::now()));
        let later = t + Duration::from_secs(11);
        assert!(s.due(&[view(s1, 1)], later).is_empty(), "same keyframe");
        assert_eq!(s.due(&[view(s1, 2)], later), vec![ch]);
        assert!(s.written_at(ch, s1).is_some());
        // A new session starts over: due at its first keyframe, no thumbnail time yet.
        assert_eq!(s.due(&[view(s2, 1)], later), vec![ch]);
        assert!(s.written_at(ch, s2).is_none());
        // A channel no longer live is forgotten.
        assert!(s.due(&[], later).is_empty());
        assert!(s.written_at(ch, s2).is_none());
    }

    #[test]
    fn failures_are_reported_once_and_recovery_too() {
        let t = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(1));
        let (ch, session) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let view = |generation| LiveView {
            channel: ch,
            session,
            generation,
        };
        let mut outcomes = Vec::new();
        for (g, outcome) in [
            Outcome::Failed,
            Outcome::Failed,
            Outcome::Written(Utc::now()),
        ]
        .into_iter()
        .enumerate()
        {
            let now = t + Duration::from_secs(2 * g as u64);
            s.due(&[view(g as u64 + 1)], now);
            assert!(s.claim(view(g as u64 + 1), now));
            outcomes.push(s.finish(ch, session, outcome));
        }
        assert_eq!(
            outcomes,
            vec![Change::StartedFailing, Change::None, Change::Recovered]
        );
    }
}
