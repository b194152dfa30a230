//! Figures of a simulated day, by the product's KPI definitions
//! ([`crate::metrics::kpi::KpiFigures`]), and averages over several runs with their
//! confidence intervals.

use serde::Serialize;

use super::{DayCounts, IntervalCounts};
use crate::metrics::kpi::KpiFigures;

/// What the report says about its own definitions.
pub const ASA_BASIS: &str = "mean wait of answered calls (GetKpiReport's ASA)";

/// The figures of one queue (or all) over some intervals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
    /// The counts behind service level and abandonment rate.
    pub answered_within_target: u64,
    pub abandoned_after_target: u64,
    pub abandoned_after_grace: u64,
    /// Abandoned after the short-abandon threshold / offered.
    pub abandonment_rate: Option<f64>,
    pub asa_secs: Option<f64>,
    pub service_level: Option<f64>,
    /// Mean wait of every caller who stayed in line (answered or abandoned).
    pub mean_wait_secs: Option<f64>,
    pub callbacks_offered: u64,
    pub callbacks_requested: u64,
    pub callbacks_completed: u64,
    /// Failed after the last attempt, or expired.
    pub callbacks_failed: u64,
    /// Open when the day closed (only in day and queue totals).
    pub callbacks_pending_at_close: u64,
    /// Sum of the estimated waits callers were spared by accepting a callback.
    pub hold_avoided_secs: f64,
    pub hold_avoided_per_callback_secs: Option<f64>,
    /// Request to connect, over completed callbacks.
    pub callback_wait_secs: Option<f64>,
    pub occupancy: Option<f64>,
    /// Calls waiting and callbacks open at the start of the interval (0 in totals).
    pub waiting_calls: u32,
    pub open_callbacks: u32,
}

impl Figures {
    pub fn of(c: &IntervalCounts, pending_at_close: u64) -> Self {
        let k = &c.kpi;
        let f = KpiFigures::of(k);
        let stayed = k.answered + k.abandoned;
        Self {
            offered: k.offered,
            answered: k.answered,
            abandoned: k.abandoned,
            answered_within_target: k.answered_in_target,
            abandoned_after_target: k.abandoned_after_target,
            abandoned_after_grace: k.abandoned_after_grace,
            abandonment_rate: f.abandonment_rate,
            asa_secs: f.asa_secs,
            service_level: f.service_level,
            mean_wait_secs: (stayed > 0)
                .then(|| (k.answer_wait_ms + c.abandon_wait_ms) as f64 / 1000.0 / stayed as f64),
            callbacks_offered: k.cb_offered,
            callbacks_requested: k.cb_requested,
            callbacks_completed: k.cb_completed,
            callbacks_failed: k.cb_failed + k.cb_expired,
            callbacks_pending_at_close: pending_at_close,
            hold_avoided_secs: f.cb_hold_avoided_secs,
            hold_avoided_per_callback_secs: (k.cb_accepted > 0)
                .then(|| f.cb_hold_avoided_secs / k.cb_accepted as f64),
            callback_wait_secs: f.cb_mean_time_to_connect_secs,
            occupancy: (c.staffed_ms > 0).then(|| c.busy_ms as f64 / c.staffed_ms as f64),
            waiting_calls: c.waiting_at_start,
            open_callbacks: c.callbacks_open_at_start,
        }
    }

    /// The figures as named numbers (the rows of the table, the averaged metrics).
    pub fn metrics(&self) -> Vec<(&'static str, Option<f64>)> {
        let n = |v: u64| Some(v as f64);
        vec![
            ("offered", n(self.offered)),
            ("answered", n(self.answered)),
            ("abandoned", n(self.abandoned)),
            ("abandonment_rate", self.abandonment_rate),
            ("asa_secs", self.asa_secs),
            ("service_level", self.service_level),
            ("occupancy", self.occupancy),
            ("callbacks_offered", n(self.callbacks_offered)),
            ("callbacks_requested", n(self.callbacks_requested)),
            ("callbacks_completed", n(self.callbacks_completed)),
            ("callbacks_failed", n(self.callbacks_failed)),
            (
                "callbacks_pending_at_close",
                n(self.callbacks_pending_at_close),
            ),
            ("callback_wait_secs", self.callback_wait_secs),
            ("hold_avoided_secs", Some(self.hold_avoided_secs)),
            (
                "hold_avoided_per_callback_secs",
                self.hold_avoided_per_callback_secs,
            ),
        ]
    }
}

/// One queue's day: the total and each hour.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueFigures {
    pub queue: String,
    pub total: Figures,
    pub hours: Vec<Figures>,
}

/// A whole simulated day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DayFigures {
    pub total: Figures,
    pub hours: Vec<Figures>,
    pub queues: Vec<QueueFigures>,
}

/// Intervals per reported hour.
const PER_HOUR: usize = 4;

impl DayFigures {
    pub fn of(d: &DayCounts) -> Self {
        let n = d.intervals.first().map_or(0, Vec::len);
        let hours = n.div_ceil(PER_HOUR);
        let sum = |q: Option<usize>, range: std::ops::Range<usize>| {
            let mut c = IntervalCounts::default();
            for (i, qi) in d.intervals.iter().enumerate() {
                if q.is_none_or(|q| q == i) {
                    for x in &qi[range.clone()] {
                        c.add(x);
                    }
                }
            }
            c
        };
        let hour_range = |h: usize| h * PER_HOUR..((h + 1) * PER_HOUR).min(n);
        let pending = |q: Option<usize>| -> u64 {
            d.callbacks_open_at_close
                .iter()
                .enumerate()
                .filter(|(i, _)| q.is_none_or(|q| q == *i))
                .map(|(_, v)| u64::from(*v))
                .sum()
        };
        // An hour's waiting figures are those at its start, not a sum of four.
        let hour = |q: Option<usize>, h: usize| {
            let mut f = Figures::of(&sum(q, hour_range(h)), 0);
            let first = sum(q, h * PER_HOUR..h * PER_HOUR + 1);
            f.waiting_calls = first.waiting_at_start;
            f.open_callbacks = first.callbacks_open_at_start;
            f
        };
        let total_of = |q: Option<usize>| {
            let mut f = Figures::of(&sum(q, 0..n), pending(q));
            f.waiting_calls = 0;
            f.open_callbacks = 0;
            f
        };
        Self {
            total: total_of(None),
            hours: (0..hours).map(|h| hour(None, h)).collect(),
            queues: d
                .queues
                .iter()
                .enumerate()
                .map(|(i, id)| QueueFigures {
                    queue: id.clone(),
                    total: total_of(Some(i)),
                    hours: (0..hours).map(|h| hour(Some(i), h)).collect(),
                })
                .collect(),
        }
    }
}

/// A metric averaged over runs: the mean and the half-width of its 95% confidence
/// interval (Student's t over the runs; `None` with one run).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub ci95: Option<f64>,
    /// Runs in which the metric was defined.
    pub runs: usize,
}

/// Two-sided 97.5% quantile of Student's t for `df` degrees of freedom.
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => T[df - 1],
        31..=60 => 2.00,
        _ => 1.96,
    }
}

/// Mean and 95% interval of `values`.
pub fn estimate(values: &[f64]) -> Option<Estimate> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let ci95 = (n > 1).then(|| {
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        t975(n - 1) * (var / n as f64).sqrt()
    });
    Some(Estimate {
        mean,
        ci95,
        runs: n,
    })
}

/// Each metric of the day totals, averaged over runs.
pub fn average(runs: &[Figures]) -> Vec<(&'static str, Option<Estimate>)> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .metrics()
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let values: Vec<f64> = runs.iter().filter_map(|f| f.metrics()[i].1).collect();
            (*name, estimate(&values))
        })
        .collect()
}
