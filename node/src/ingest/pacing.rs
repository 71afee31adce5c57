//! Pacing a busy ingest thread's wake-ups.
//!
//! Every sleep and wake-up of an ingest thread costs the kernel a context switch, and a
//! thread that is woken for nearly every message spends more on waking than on the
//! messages. So a thread that is itself busy (awake at least [`PACE_FROM`] of a core
//! over the last [`PACE_WINDOW`]) is paced: when its last wait for events ended sooner
//! than `rtmp.busy_wakeup_interval` (they come that often) and it has been awake less
//! than that interval, it sleeps, before it waits again, until the interval has passed
//! since it woke; the wait then finds every socket that became ready meanwhile, and one
//! wake-up serves them all. That adds at most the interval to a message's relay delay,
//! only on that thread and only while it is that busy (it stops being paced below
//! [`PACE_UNTIL`]).
//!
//! The rule is per thread. An earlier rule paced every thread once the threads together
//! were busy, which on a many-core node carrying a few cores of load paced nearly idle
//! threads too: exactly where pacing was measured to hurt (BENCHMARKS.md, "Relay hot
//! path, round 6": at 500 publishers, a quarter of a core, always-on pacing doubled the
//! context switches and raised the delay p99 from 2.5 to 3.8 ms), while its gain was
//! measured on a thread busy at 0.83-0.86 of a core.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tracing::debug;

/// A thread is paced from this load on (share of a core, over [`PACE_WINDOW`]): the
/// load placement fills a thread to ([`super::placement::FILL`]), so a thread packed
/// full is paced...
pub const PACE_FROM: f64 = 0.7;
/// ...until its load falls below this one.
pub const PACE_UNTIL: f64 = PACE_FROM * 0.8;
/// Over how long a thread's load is measured for pacing.
pub const PACE_WINDOW: Duration = Duration::from_millis(250);

/// What pacing keeps of one thread (only that thread writes it, from its park hook).
#[derive(Debug, Default)]
struct ThreadPace {
    /// Start of the current window (nanoseconds since the placer's epoch; 0: the first
    /// starts at the epoch), and the thread's busy nanoseconds then.
    window_at: AtomicU64,
    window_busy: AtomicU64,
    /// Whether the thread is paced now.
    paced: AtomicBool,
    /// When the thread last went to wait for events (after any pause); 0 before its
    /// first park. Its last wait lasted from then to its last wake-up.
    waiting_since: AtomicU64,
    /// Nanoseconds spent in pauses.
    paused: AtomicU64,
}

/// The pacing of every ingest thread.
#[derive(Debug)]
pub struct Pacer {
    /// The shortest time from a busy thread's wake-up to its next wait, in nanoseconds
    /// (0: off).
    interval: u64,
    threads: Vec<ThreadPace>,
}

/// What a thread's park hook knows when it is about to wait (nanoseconds since the
/// placer's epoch).
#[derive(Debug, Clone, Copy)]
pub struct Parking {
    /// Now.
    pub now: u64,
    /// When the thread last woke up (0: unknown).
    pub woke_at: u64,
    /// The thread's busy nanoseconds up to now.
    pub busy: u64,
}

impl Pacer {
    /// `interval`: `rtmp.busy_wakeup_interval` (zero: never paced).
    pub fn new(threads: usize, interval: Duration) -> Pacer {
        Pacer {
            interval: interval.as_nanos().min(u64::MAX as u128) as u64,
            threads: (0..threads.max(1)).map(|_| ThreadPace::default()).collect(),
        }
    }

    /// Called by thread `i` before it waits for events: updates its load once per
    /// window, and returns how long it must sleep first (it sleeps, then calls
    /// [`Pacer::waits`]).
    pub fn before_wait(&self, i: usize, at: Parking) -> Option<Duration> {
        if self.interval == 0 {
            return None;
        }
        let t = &self.threads[i];
        let window_at = t.window_at.load(Relaxed);
        let window = PACE_WINDOW.as_nanos() as u64;
        if at.now.saturating_sub(window_at) >= window {
            let before = t.window_busy.swap(at.busy, Relaxed);
            t.window_at.store(at.now, Relaxed);
            let load =
                at.busy.saturating_sub(before) as f64 / at.now.saturating_sub(window_at) as f64;
            let was = t.paced.load(Relaxed);
            let now = paced(was, load);
            if now != was {
                t.paced.store(now, Relaxed);
                debug!(
                    thread = i,
                    load = format_args!("{load:.2}"),
                    "ingest thread: pacing wake-ups {}",
                    if now { "on" } else { "off" }
                );
            }
        }
        let waiting_since = t.waiting_since.load(Relaxed);
        let (last_wait, awake) = if at.woke_at > 0 {
            (
                if waiting_since > 0 {
                    at.woke_at.saturating_sub(waiting_since)
                } else {
                    u64::MAX
                },
                at.now.saturating_sub(at.woke_at),
            )
        } else {
            (u64::MAX, u64::MAX)
        };
        pause(t.paced.load(Relaxed), last_wait, awake, self.interval)
    }

    /// Called by thread `i` as it goes to wait (after a pause of `paused` nanoseconds,
    /// if any), at `now`.
    pub fn waits(&self, i: usize, now: u64, paused: u64) {
        let t = &self.threads[i];
        if paused > 0 {
            t.paused.fetch_add(paused, Relaxed);
        }
        t.waiting_since.store(now.max(1), Relaxed);
    }

    /// How many threads are paced now.
    pub fn paced_threads(&self) -> usize {
        self.threads
            .iter()
            .filter(|t| t.paced.load(Relaxed))
            .count()
    }

    /// Seconds each thread has slept in pauses since the start.
    pub fn paused_seconds(&self) -> Vec<f64> {
        self.threads
            .iter()
            .map(|t| t.paused.load(Relaxed) as f64 / 1e9)
            .collect()
    }
}

/// The rule: whether a thread is paced, given whether it was and its own load over the
/// last window (share of a core).
pub fn paced(was: bool, load: f64) -> bool {
    if was {
        load >= PACE_UNTIL
    } else {
        load >= PACE_FROM
    }
}

/// How long a thread about to wait for events sleeps first: when it is paced, its last
/// wait ended sooner than `interval` (events come faster than that) and it has been
/// awake less than `interval`, the rest of `interval`.
fn pause(paced: bool, last_wait: u64, awake: u64, interval: u64) -> Option<Duration> {
    (paced && last_wait < interval && awake < interval)
        .then(|| Duration::from_nanos(interval - awake))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_pauses_only_when_paced_woken_fast_and_awake_briefly() {
        let ms = |m: f64| (m * 1e6) as u64;
        let interval = ms(1.0);
        assert_eq!(pause(false, ms(0.1), ms(0.3), interval), None, "not busy");
        assert_eq!(
            pause(true, ms(2.0), ms(0.3), interval),
            None,
            "events come slowly"
        );
        assert_eq!(
            pause(true, ms(0.1), ms(1.5), interval),
            None,
            "awake long enough"
        );
        assert_eq!(
            pause(true, ms(0.1), ms(0.3), interval),
            Some(Duration::from_micros(700)),
            "the rest of the interval"
        );
    }

    /// The rule over sixteen threads, as on a 16-core node carrying three cores of
    /// load: packing fills threads to 0.7 of a core one after the other, so three or four
    /// are busy and the rest nearly idle. Only the busy ones are paced; the sum of the
    /// loads (3.3 cores here) paced all sixteen under the earlier rule.
    #[test]
    fn on_sixteen_threads_only_the_busy_ones_are_paced() {
        let mut load = [0.02; 16];
        load[..4].copy_from_slice(&[0.85, 0.8, 0.75, 0.6]);
        // Windows of a simulated run: the loads drift a little each window.
        let mut was = vec![false; 16];
        for window in 0..20 {
            let jitter = if window % 2 == 0 { 0.03 } else { -0.03 };
            was = load
                .iter()
                .zip(&was)
                .map(|(l, w)| paced(*w, l + jitter))
                .collect();
            let paced_now: Vec<usize> = (0..16).filter(|&i| was[i]).collect();
            assert_eq!(paced_now, vec![0, 1, 2], "window {window}: {was:?}");
        }
        assert!(load.iter().sum::<f64>() > PACE_FROM * 4.0);
        // Hysteresis: a paced thread stays paced down to PACE_UNTIL, then stops; an
        // unpaced one starts only at PACE_FROM.
        assert!(paced(true, PACE_UNTIL + 0.01));
        assert!(!paced(true, PACE_UNTIL - 0.01));
        assert!(!paced(false, PACE_FROM - 0.01));
        assert!(paced(false, PACE_FROM));
    }

    /// The pacer itself, over sixteen threads in simulated time: work reaches each
    /// thread at its own rate (a share of a core), a message wakes it after a short
    /// wait, and each wake-up is awake as long as the work that piled up since it was
    /// last awake takes. Three threads at 0.8 of a core are paced and pause; thirteen
    /// at 0.02 never are. A pause does not lower a busy thread's load (the work it
    /// defers is done at the next wake-up), so pacing does not switch itself off.
    #[test]
    fn the_pacer_paces_each_thread_by_its_own_load() {
        let interval = Duration::from_millis(2);
        let p = Pacer::new(16, interval);
        let ms = 1_000_000u64;
        let mut pauses = [0u32; 16];
        for (i, paused) in pauses.iter_mut().enumerate() {
            let (rate, wait) = if i < 3 {
                (0.8, ms / 10)
            } else {
                (0.02, ms / 2)
            };
            let (mut busy, mut now, mut idle_since) = (0u64, 0u64, 0u64);
            while now < 2000 * ms {
                let woke_at = now + wait;
                let awake =
                    (rate / (1.0 - rate) * woke_at.saturating_sub(idle_since) as f64) as u64;
                busy += awake;
                now = woke_at + awake;
                idle_since = now;
                let pause = p.before_wait(i, Parking { now, woke_at, busy });
                if let Some(d) = pause {
                    *paused += 1;
                    now += d.as_nanos() as u64;
                }
                p.waits(i, now, pause.map_or(0, |d| d.as_nanos() as u64));
            }
        }
        assert_eq!(p.paced_threads(), 3, "{pauses:?}");
        assert!(pauses[..3].iter().all(|&n| n > 100), "{pauses:?}");
        assert!(pauses[3..].iter().all(|&n| n == 0), "{pauses:?}");
        let off = Pacer::new(2, Duration::ZERO);
        assert_eq!(
            off.before_wait(
                0,
                Parking {
                    now: 300 * ms,
                    woke_at: 300 * ms - 1,
                    busy: 300 * ms
                }
            ),
            None
        );
    }
}
