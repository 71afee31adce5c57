//! Measurements shared by generator and sink: latency samples with percentiles, and
//! process CPU and memory from /proc.

use std::sync::Mutex;
use std::time::Duration;

/// Latency samples (microseconds), bounded.
#[derive(Debug, Default)]
pub struct Samples {
    values: Mutex<Vec<u32>>,
}

/// Most samples kept (beyond that, every other one is dropped).
const MAX_SAMPLES: usize = 2_000_000;

impl Samples {
    pub fn record(&self, d: Duration) {
        let mut v = self.values.lock().expect("samples");
        if v.len() < MAX_SAMPLES {
            v.push(d.as_micros().min(u32::MAX as u128) as u32);
        }
    }

    pub fn clear(&self) {
        self.values.lock().expect("samples").clear();
    }

    /// (count, p50, p99, max) in milliseconds.
    pub fn summary(&self) -> (usize, f64, f64, f64) {
        let mut v = self.values.lock().expect("samples").clone();
        if v.is_empty() {
            return (0, f64::NAN, f64::NAN, f64::NAN);
        }
        v.sort_unstable();
        let pct = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
        (
            v.len(),
            pct(0.50),
            pct(0.99),
            *v.last().unwrap() as f64 / 1000.0,
        )
    }
}

pub use testkit::proc::{cpu_seconds, rss_kib};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = Samples::default();
        for ms in 1..=100u64 {
            s.record(Duration::from_millis(ms));
        }
        let (n, p50, p99, max) = s.summary();
        assert_eq!(n, 100);
        assert!((p50 - 50.0).abs() <= 1.0, "{p50}");
        assert!((p99 - 99.0).abs() <= 1.0, "{p99}");
        assert_eq!(max, 100.0);
        assert!(Samples::default().summary().1.is_nan());
    }

    #[test]
    fn own_process_is_measured() {
        let pid = std::process::id();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_seconds(pid) > 0.0);
        assert!(rss_kib(pid) > 1000);
    }
}
