//! At most so many log lines per window for what a peer (or a failing dependency) can
//! repeat at will: a refused SRT caller, a webhook backend that is down, a fleet node
//! that does not answer. What is left out is counted, and said in one line when the
//! window ends; the metrics count every occurrence.

use std::time::Duration;

use tokio::time::Instant;

/// A budget of `lines` log lines per `window`.
#[derive(Debug)]
pub struct LogBudget {
    lines: u32,
    window: Duration,
    since: Instant,
    logged: u32,
    left_out: u64,
}

impl LogBudget {
    pub fn new(lines: u32, window: Duration) -> LogBudget {
        LogBudget {
            lines,
            window,
            since: Instant::now(),
            logged: 0,
            left_out: 0,
        }
    }

    /// Whether one more line may be logged now (if not, it is counted as left out).
    /// When a window in which lines were left out has ended, `summary` is called first
    /// with how many, to say so in the caller's words.
    pub fn take(&mut self, summary: impl FnOnce(u64)) -> bool {
        let now = Instant::now();
        if now.duration_since(self.since) >= self.window {
            if self.left_out > 0 {
                summary(self.left_out);
            }
            self.since = now;
            self.logged = 0;
            self.left_out = 0;
        }
        if self.logged < self.lines {
            self.logged += 1;
            true
        } else {
            self.left_out += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn lines_per_window_and_a_summary_of_the_rest() {
        let mut budget = LogBudget::new(2, Duration::from_secs(10));
        let mut summaries = Vec::new();
        let taken: Vec<bool> = (0..5).map(|_| budget.take(|n| summaries.push(n))).collect();
        assert_eq!(taken, [true, true, false, false, false]);
        assert!(summaries.is_empty());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(budget.take(|n| summaries.push(n)));
        assert_eq!(summaries, [3]);
        // A window with nothing left out ends without a summary.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(budget.take(|n| summaries.push(n)));
        assert_eq!(summaries, [3]);
    }
}
