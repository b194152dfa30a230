//! Random durations for the day simulator: handle times and caller patience.

use serde::{Deserialize, Serialize};

/// A distribution of durations in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Dist {
    /// Always the same duration.
    Fixed { secs: f64 },
    /// Exponential with this mean (Erlang's assumption).
    Exponential { mean_secs: f64 },
    /// Log-normal with this mean and standard deviation (what measured handle times
    /// usually look like: skewed, never negative).
    LogNormal { mean_secs: f64, sd_secs: f64 },
    /// Never ends: callers who never hang up (Erlang C).
    Infinite,
}

impl Dist {
    /// Whether the parameters make a distribution (positive, finite means).
    pub fn check(&self) -> Result<(), String> {
        let ok = |v: f64| v.is_finite() && v > 0.0;
        match *self {
            Dist::Fixed { secs } if !(secs.is_finite() && secs >= 0.0) => {
                Err(format!("fixed duration {secs} s is not a duration"))
            }
            Dist::Exponential { mean_secs } if !ok(mean_secs) => {
                Err(format!("mean {mean_secs} s must be positive"))
            }
            Dist::LogNormal { mean_secs, sd_secs } if !ok(mean_secs) || !ok(sd_secs) => Err(
                format!("log-normal mean {mean_secs} s and sd {sd_secs} s must be positive"),
            ),
            _ => Ok(()),
        }
    }

    /// The mean in seconds (`None`: infinite).
    pub fn mean_secs(&self) -> Option<f64> {
        match *self {
            Dist::Fixed { secs } => Some(secs),
            Dist::Exponential { mean_secs } | Dist::LogNormal { mean_secs, .. } => Some(mean_secs),
            Dist::Infinite => None,
        }
    }

    /// One draw in milliseconds (`None`: never).
    pub fn sample_ms(&self, rng: &mut fastrand::Rng) -> Option<i64> {
        let secs = match *self {
            Dist::Fixed { secs } => secs,
            Dist::Exponential { mean_secs } => mean_secs * exp1(rng),
            Dist::LogNormal { mean_secs, sd_secs } => {
                // Parameters of the underlying normal from the mean and sd.
                let s2 = (1.0 + (sd_secs / mean_secs).powi(2)).ln();
                let mu = mean_secs.ln() - s2 / 2.0;
                (mu + s2.sqrt() * normal(rng)).exp()
            }
            Dist::Infinite => return None,
        };
        Some((secs * 1000.0).round().max(0.0) as i64)
    }
}

/// A unit exponential draw.
pub fn exp1(rng: &mut fastrand::Rng) -> f64 {
    // 1 - u lies in (0, 1]: the logarithm is finite.
    -(1.0 - rng.f64()).ln()
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut fastrand::Rng) -> f64 {
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_have_the_stated_means() {
        let mut rng = fastrand::Rng::with_seed(7);
        for d in [
            Dist::Exponential { mean_secs: 100.0 },
            Dist::LogNormal {
                mean_secs: 100.0,
                sd_secs: 60.0,
            },
        ] {
            let n = 40_000;
            let sum: i64 = (0..n).map(|_| d.sample_ms(&mut rng).unwrap()).sum();
            let mean = sum as f64 / n as f64 / 1000.0;
            assert!((mean - 100.0).abs() < 2.5, "{d:?}: {mean}");
        }
        assert_eq!(Dist::Infinite.sample_ms(&mut rng), None);
        assert!(Dist::Exponential { mean_secs: 0.0 }.check().is_err());
    }
}
