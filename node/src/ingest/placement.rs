//! Which ingest thread a new connection goes to.
//!
//! Every sleep and wake-up of an ingest thread costs the kernel a context switch
//! (measured on the benchmark machine: a second thread for the same 1000 publishers
//! spent 12 % more CPU, nearly all of it switching). So by default (`Pack`) a new
//! connection goes to the first thread whose measured load, plus the expected load of
//! the connections it was given since that was measured, stays under [`FILL`]; when
//! every thread is that busy, to the least busy one. Until enough connections have run
//! for a load per connection to be known, each is expected to cost [`PRIOR`] (what a
//! 6 Mbps stream costs): a slow ramp of publishers fills one thread, and a burst of
//! reconnections after a restart is spread, never piled on one thread before its load
//! shows.
//!
//! The same accounting of time awake feeds the pacing of busy threads
//! ([`super::pacing`]), from the same park hook.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::pacing::{Pacer, Parking};
use crate::config::Placement;

/// Share of one core a thread is filled to before the next one takes connections.
/// 0.7 leaves room for bursts (keyframes, a reconnect wave) without queueing delays
/// that matter: 1000 publishers of 600 kbps on one thread of the benchmark machine
/// (0.45-0.59 of a core awake) had a relay delay p99 of 3-5 ms, and cost 0.85-0.90x
/// nginx-rtmp's CPU per stream where half a core (the earlier value) put the last
/// hundred on a second thread and cost 1.00-1.05x. The load is measured, so a ramp
/// overshoots it (new connections count only once their traffic shows): at 2000
/// publishers the first thread ended at 0.83-0.86.
pub const FILL: f64 = 0.7;
/// How often the threads' load is measured.
const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Connections needed before a load per connection is trusted.
const MIN_CONNECTIONS: usize = 32;
/// Load one connection is expected to add until a load per connection is measured: a
/// millisecond of CPU per second, about what a 6 Mbps stream costs on the benchmark
/// machine (a 600 kbps stream costs half of it). [`FILL`] / `PRIOR` = 700 connections
/// per thread and sampling period before the measured load says more. Dealing the
/// first connections round-robin instead (in batches) left a thread holding a few
/// dozen connections, and a thread with few connections wakes up for nearly every
/// message.
const PRIOR: f64 = 0.001;

/// What one ingest thread reports: time awake (not parked) and connections.
#[derive(Debug, Default)]
pub struct ThreadLoad {
    /// Nanoseconds since the placement's epoch at which the thread last woke up; 0
    /// while it is parked.
    awake_since: AtomicU64,
    /// Nanoseconds spent awake, up to its last park.
    busy: AtomicU64,
    /// Connections running on the thread.
    connections: AtomicUsize,
}

/// The ingest threads' loads and the choice made from them.
#[derive(Debug)]
pub struct Placer {
    policy: Placement,
    epoch: Instant,
    threads: Vec<Arc<ThreadLoad>>,
    next: AtomicUsize,
    state: Mutex<Sampled>,
    /// The pacing of busy threads, from the same park hook.
    pacer: Pacer,
}

/// The last measurement.
#[derive(Debug)]
struct Sampled {
    at: Instant,
    /// Busy nanoseconds of each thread at `at`.
    busy: Vec<u64>,
    /// Share of a core each thread was busy over the last period.
    load: Vec<f64>,
    /// Connections given to each thread since `at` (not in `load` yet).
    since: Vec<usize>,
    /// Load one connection adds, smoothed; `None` until known.
    per_connection: Option<f64>,
    /// Connections on all threads at `at`.
    connections: usize,
}

/// Keeps a thread's connection count; dropped when the connection ends.
#[derive(Debug)]
pub struct Seat(Arc<ThreadLoad>);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Relaxed);
    }
}

impl Placer {
    /// A placer for `threads` threads; `pace`: `rtmp.busy_wakeup_interval` (zero: no
    /// pacing).
    pub fn new(policy: Placement, threads: usize, pace: Duration) -> Placer {
        let now = Instant::now();
        Placer {
            pacer: Pacer::new(threads, pace),
            policy,
            epoch: now,
            threads: (0..threads.max(1))
                .map(|_| Arc::new(ThreadLoad::default()))
                .collect(),
            next: AtomicUsize::new(0),
            state: Mutex::new(Sampled {
                at: now,
                busy: vec![0; threads.max(1)],
                load: vec![0.0; threads.max(1)],
                since: vec![0; threads.max(1)],
                per_connection: None,
                connections: 0,
            }),
        }
    }

    fn nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Called by thread `i` when it wakes up (tokio's `on_thread_unpark`).
    pub fn woke(&self, i: usize) {
        self.threads[i]
            .awake_since
            .store(self.nanos().max(1), Relaxed);
    }

    /// Called by thread `i` before it parks (tokio's `on_thread_park`): ends its time
    /// awake, and paces it (sleeps) when it is busy (see [`super::pacing`]).
    pub fn parks(&self, i: usize) {
        let t = &self.threads[i];
        let now = self.nanos();
        let woke_at = t.awake_since.load(Relaxed);
        let busy = if woke_at > 0 {
            t.awake_since.store(0, Relaxed);
            t.busy.fetch_add(now.saturating_sub(woke_at), Relaxed) + now.saturating_sub(woke_at)
        } else {
            t.busy.load(Relaxed)
        };
        let at = Parking { now, woke_at, busy };
        match self.pacer.before_wait(i, at) {
            Some(pause) => {
                std::thread::sleep(pause);
                let after = self.nanos();
                self.pacer.waits(i, after, after.saturating_sub(now));
            }
            None => self.pacer.waits(i, now, 0),
        }
    }

    /// Each thread's busy nanoseconds up to `now` (a thread awake counts its current
    /// stretch so far).
    fn busy_nanos(&self, now: u64) -> Vec<u64> {
        self.threads
            .iter()
            .map(|t| {
                let since = t.awake_since.load(Relaxed);
                let current = if since > 0 {
                    now.saturating_sub(since)
                } else {
                    0
                };
                t.busy.load(Relaxed) + current
            })
            .collect()
    }

    /// The thread for a new connection, and its seat there.
    pub fn place(&self) -> (usize, Seat) {
        let i = match self.policy {
            Placement::Spread => self.round_robin(),
            Placement::Pack => self.pack(),
        };
        let t = &self.threads[i];
        t.connections.fetch_add(1, Relaxed);
        (i, Seat(t.clone()))
    }

    fn round_robin(&self) -> usize {
        self.next.fetch_add(1, Relaxed) % self.threads.len()
    }

    fn pack(&self) -> usize {
        if self.threads.len() == 1 {
            return 0;
        }
        let mut s = self.state.lock();
        let elapsed = s.at.elapsed();
        if elapsed >= SAMPLE_EVERY {
            self.sample(&mut s, elapsed);
        }
        let i = choose(&s.load, &s.since, s.per_connection.unwrap_or(PRIOR));
        s.since[i] += 1;
        i
    }

    /// Measures each thread's load over the last period and the load per connection.
    fn sample(&self, s: &mut Sampled, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut total_load = 0.0;
        let mut total_connections = 0;
        // A thread awake right now counts its current stretch so far (its park adds
        // the whole stretch later, and the difference to this reading is what the next
        // period gets).
        let busy_now = self.busy_nanos(self.nanos());
        for ((i, t), busy) in self.threads.iter().enumerate().zip(busy_now) {
            let load = (busy.saturating_sub(s.busy[i]) as f64 / 1e9 / secs).min(1.0);
            s.busy[i] = busy;
            s.load[i] = load;
            s.since[i] = 0;
            total_load += load;
            total_connections += t.connections.load(Relaxed);
        }
        s.at = Instant::now();
        // The load of the period over the connections there at its start (those that
        // came during it are still mostly handshaking): an overestimate while many
        // arrive, so no estimate at all while their number grows by half or more.
        let before = std::mem::replace(&mut s.connections, total_connections);
        if before >= MIN_CONNECTIONS && total_connections <= before * 3 / 2 && total_load > 0.0 {
            let measured = total_load / before as f64;
            s.per_connection = Some(match s.per_connection {
                Some(old) => 0.7 * old + 0.3 * measured,
                None => measured,
            });
        }
    }

    /// Seconds each thread has been awake since the start.
    pub fn busy_seconds(&self) -> Vec<f64> {
        self.busy_nanos(self.nanos())
            .into_iter()
            .map(|b| b as f64 / 1e9)
            .collect()
    }

    /// How many threads are paced now.
    pub fn paced_threads(&self) -> usize {
        self.pacer.paced_threads()
    }

    /// Seconds each thread has slept in pauses (pacing) since the start.
    pub fn paused_seconds(&self) -> Vec<f64> {
        self.pacer.paused_seconds()
    }

    /// Connections on each thread.
    pub fn connections(&self) -> Vec<usize> {
        self.threads
            .iter()
            .map(|t| t.connections.load(Relaxed))
            .collect()
    }
}

/// The first thread whose measured load plus the expected load of the connections it
/// got since stays within [`FILL`] with one more; else the least loaded.
fn choose(load: &[f64], since: &[usize], per_connection: f64) -> usize {
    let expected = |i: usize| load[i] + since[i] as f64 * per_connection;
    (0..load.len())
        .find(|&i| expected(i) + per_connection <= FILL)
        .unwrap_or_else(|| {
            (0..load.len())
                .min_by(|&a, &b| expected(a).total_cmp(&expected(b)))
                .unwrap_or(0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_the_first_thread_then_the_next_then_the_least_loaded() {
        // 1 % of a core per connection.
        let per = 0.01;
        assert_eq!(choose(&[0.0, 0.0], &[0, 0], per), 0);
        assert_eq!(choose(&[0.30, 0.0], &[0, 0], per), 0);
        // Measured 0.50 plus 20 connections given since: 0.70, full.
        assert_eq!(choose(&[0.50, 0.0], &[20, 0], per), 1);
        assert_eq!(choose(&[0.695, 0.10], &[0, 0], per), 1);
        // Both full: the least loaded.
        assert_eq!(choose(&[0.90, 0.80], &[0, 0], per), 1);
        assert_eq!(choose(&[0.90, 0.80], &[0, 15], per), 0);
    }

    #[test]
    fn a_burst_before_any_measurement_fills_a_thread_at_the_prior_then_the_next() {
        let p = Placer::new(Placement::Pack, 2, Duration::ZERO);
        let few: Vec<_> = (0..300).map(|_| p.place()).collect();
        assert_eq!(
            p.connections(),
            vec![300, 0],
            "a few hundred share one thread"
        );
        // FILL / PRIOR = 700 on the first, as many on the second, then alternately.
        let more: Vec<_> = (0..1124).map(|_| p.place()).collect();
        assert_eq!(p.connections(), vec![712, 712]);
        drop(few);
        drop(more);
        assert_eq!(p.connections(), vec![0, 0]);
    }

    /// Thread `i` awake for `ms` milliseconds.
    fn awake(p: &Placer, i: usize, ms: u64) {
        p.woke(i);
        std::thread::sleep(Duration::from_millis(ms));
        p.parks(i);
    }

    /// Takes a measurement now, as `pack` does when a period has passed.
    fn sample_now(p: &Placer) -> parking_lot::MutexGuard<'_, Sampled> {
        let mut s = p.state.lock();
        let elapsed = s.at.elapsed();
        p.sample(&mut s, elapsed);
        s
    }

    #[test]
    fn no_load_per_connection_is_estimated_while_connections_pour_in() {
        let p = Placer::new(Placement::Pack, 2, Duration::ZERO);
        let mut seats: Vec<_> = (0..40).map(|_| p.place()).collect();
        awake(&p, 0, 20);
        // From none to 40: growing.
        assert_eq!(sample_now(&p).per_connection, None);
        // 40 to 100: growing by more than half.
        seats.extend((0..60).map(|_| p.place()));
        awake(&p, 0, 20);
        assert_eq!(sample_now(&p).per_connection, None);
        // 100 to 110: measured, over the 100 there at the start.
        seats.extend((0..10).map(|_| p.place()));
        awake(&p, 0, 20);
        let per = sample_now(&p).per_connection.expect("the count is steady");
        let load = p.state.lock().load[0];
        assert!(load > 0.0);
        assert!((per - load / 100.0).abs() < 1e-12, "{per} {load}");
        drop(seats);
    }

    #[test]
    fn with_a_known_load_a_burst_fills_one_thread_then_the_next() {
        let p = Placer::new(Placement::Pack, 3, Duration::ZERO);
        p.state.lock().per_connection = Some(0.001);
        let seats: Vec<_> = (0..1600).map(|_| p.place()).collect();
        // FILL / 0.001 = 700 (699 after rounding) fill the first thread, as many the
        // second; the rest go to the third.
        let c = p.connections();
        assert!((c[0] as f64 - FILL / 0.001).abs() <= 1.0, "{c:?}");
        assert_eq!((c[1], c[2]), (c[0], 1600 - 2 * c[0]), "{c:?}");
        drop(seats);
    }

    #[test]
    fn a_thread_packed_full_is_a_thread_paced() {
        assert_eq!(super::super::pacing::PACE_FROM, FILL);
    }

    #[test]
    fn spread_deals_round_robin() {
        let p = Placer::new(Placement::Spread, 3, Duration::ZERO);
        let seats: Vec<_> = (0..9).map(|_| p.place()).collect();
        assert_eq!(p.connections(), vec![3, 3, 3]);
        drop(seats);
    }

    /// The park hook on the real clock: a thread awake through a whole window is
    /// paced and sleeps out the rest of the interval after a brief wake-up; the other
    /// thread, idle, is not; idle through a window, the first is not paced any more.
    #[test]
    fn a_busy_thread_is_paced_by_the_park_hook_and_an_idle_one_is_not() {
        use super::super::pacing::PACE_WINDOW;
        let pace = Duration::from_millis(2);
        let p = Placer::new(Placement::Pack, 2, pace);
        let paused = |p: &Placer, i: usize| p.paused_seconds()[i];
        // The first window starts; then thread 0 awake through a whole window.
        awake(&p, 0, 1);
        awake(&p, 0, PACE_WINDOW.as_millis() as u64 + 20);
        awake(&p, 1, 0);
        assert_eq!(p.paced_threads(), 1, "only the busy thread");
        // Woken at once after it went to wait, awake briefly: it sleeps out the rest.
        p.woke(0);
        let before = paused(&p, 0);
        p.parks(0);
        let slept = paused(&p, 0) - before;
        assert!(slept >= 0.0015, "paused {slept} s");
        // Thread 1 woken just as fast is not paced: it is not busy.
        p.woke(1);
        p.parks(1);
        assert_eq!(paused(&p, 1), 0.0);
        // Idle through a window: no longer paced, and no pause.
        std::thread::sleep(PACE_WINDOW + Duration::from_millis(20));
        awake(&p, 0, 0);
        assert_eq!(p.paced_threads(), 0, "idle for a window");
        p.woke(0);
        let before = paused(&p, 0);
        p.parks(0);
        assert_eq!(paused(&p, 0), before);
        // Off (zero): never paced.
        let off = Placer::new(Placement::Pack, 1, Duration::ZERO);
        awake(&off, 0, 1);
        awake(&off, 0, PACE_WINDOW.as_millis() as u64 + 20);
        assert_eq!(off.paced_threads(), 0);
    }

    #[test]
    fn load_is_measured_from_the_time_threads_are_awake() {
        let p = Placer::new(Placement::Pack, 2, Duration::ZERO);
        let seats: Vec<_> = (0..40).map(|_| p.place()).collect();
        // A first sample with the 40 there.
        drop(sample_now(&p));
        // Thread 0 awake 60 ms of the next 120 ms, thread 1 not at all.
        awake(&p, 0, 60);
        std::thread::sleep(Duration::from_millis(60));
        let s = sample_now(&p);
        assert!(s.load[0] > 0.2 && s.load[0] <= 0.6, "{}", s.load[0]);
        assert_eq!(s.load[1], 0.0);
        let per = s.per_connection.expect("40 connections are enough");
        assert!((per - s.load[0] / 40.0).abs() < 1e-9);
        drop(s);
        drop(seats);
    }
}
