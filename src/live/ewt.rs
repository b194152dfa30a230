//! Estimated wait time (EWT) and average handle time (AHT).
//!
//! Method: a caller at position `k` in a queue's line (1 = next to be served) waits for
//! `k` agents able to serve the queue to free up, beyond those already free. With `n`
//! such agents staffed (not offline) and handle times averaging `AHT`, agents free up
//! at a rate of `n / AHT`, so
//!
//! ```text
//! EWT(k) = max(0, k - free) * AHT / n        (unknown when n = 0)
//! ```
//!
//! This is exact in expectation when handle times are exponential (the k-th departure
//! among n busy agents) and is the README's EWT formula ("Live queue state") with the
//! free agents taken off the position. With no agent staffed the wait is unknown: holdless says so
//! instead of inventing a number.
//!
//! AHT is a running mean that starts from the plan's `default_aht_secs` (counted as one
//! sample, so a single outlier cannot swing it) and turns into an exponentially weighted
//! mean once [`AHT_WINDOW`] calls were measured, so it follows the shift's real pace.

use std::time::Duration;

/// After this many samples AHT weighs each new call by `1 / AHT_WINDOW`.
pub const AHT_WINDOW: u32 = 50;

/// Estimated wait for position `position` (1-based) with `free` agents free now and
/// `staffed` agents able to serve. `None` when no agent is staffed.
pub fn estimated_wait(position: u32, free: u32, staffed: u32, aht_secs: f64) -> Option<Duration> {
    if staffed == 0 || !aht_secs.is_finite() || aht_secs < 0.0 {
        return None;
    }
    let ahead = position.saturating_sub(free);
    Some(Duration::from_secs_f64(
        f64::from(ahead) * aht_secs / f64::from(staffed),
    ))
}

/// Average handle time of a queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Aht {
    mean_secs: f64,
    samples: u32,
}

impl Aht {
    pub fn seeded(default_secs: u32) -> Self {
        Self {
            mean_secs: f64::from(default_secs.max(1)),
            samples: 0,
        }
    }

    /// Adds one measured handle time (ignored when not a finite, positive number).
    pub fn record(&mut self, secs: f64) {
        if !secs.is_finite() || secs <= 0.0 {
            return;
        }
        self.samples = self.samples.saturating_add(1);
        // The seed counts as one sample; past the window, a fixed weight.
        let weight = 1.0 / f64::from((self.samples + 1).min(AHT_WINDOW));
        self.mean_secs += weight * (secs - self.mean_secs);
    }

    pub fn secs(&self) -> f64 {
        self.mean_secs
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }
}

/// Mean absolute error of predicted against actual waits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EwtError {
    abs_sum_secs: f64,
    samples: u32,
}

impl EwtError {
    pub fn record(&mut self, predicted: Duration, actual: Duration) {
        self.abs_sum_secs += (predicted.as_secs_f64() - actual.as_secs_f64()).abs();
        self.samples = self.samples.saturating_add(1);
    }

    pub fn mean_absolute_error(&self) -> Option<Duration> {
        (self.samples > 0)
            .then(|| Duration::from_secs_f64(self.abs_sum_secs / f64::from(self.samples)))
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_grows_with_position_and_shrinks_with_agents() {
        let w = |p, f, n| estimated_wait(p, f, n, 300.0).unwrap().as_secs_f64();
        assert_eq!(w(1, 0, 3), 100.0);
        assert_eq!(w(3, 0, 3), 300.0);
        assert_eq!(w(6, 0, 6), 300.0);
        assert!(w(2, 0, 3) < w(3, 0, 3));
        assert_eq!(
            w(2, 2, 3),
            0.0,
            "free agents take the first callers at once"
        );
        assert_eq!(w(3, 2, 3), 100.0);
    }

    #[test]
    fn no_staffed_agent_means_unknown_not_a_division_by_zero() {
        assert_eq!(estimated_wait(1, 0, 0, 300.0), None);
        assert_eq!(estimated_wait(5, 3, 0, 300.0), None);
        assert_eq!(estimated_wait(1, 0, 2, f64::NAN), None);
    }

    #[test]
    fn aht_starts_at_the_plan_and_follows_measured_calls() {
        let mut a = Aht::seeded(300);
        assert_eq!(a.secs(), 300.0);
        a.record(100.0);
        assert_eq!(a.secs(), 200.0, "seed counts as one sample");
        for _ in 0..500 {
            a.record(120.0);
        }
        assert!((a.secs() - 120.0).abs() < 0.01, "{}", a.secs());
        a.record(f64::NAN);
        a.record(-1.0);
        assert_eq!(a.samples(), 501);
    }

    #[test]
    fn ewt_error_is_a_mean_of_absolute_differences() {
        let mut e = EwtError::default();
        assert_eq!(e.mean_absolute_error(), None);
        e.record(Duration::from_secs(10), Duration::from_secs(20));
        e.record(Duration::from_secs(30), Duration::from_secs(20));
        assert_eq!(e.mean_absolute_error(), Some(Duration::from_secs(10)));
    }
}
