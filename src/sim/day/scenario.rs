//! A day as a supervisor describes it (calls per hour, handle time, patience,
//! agents, the callback parameters), turned into a [`DayInput`], and the with/without
//! comparison over one or more seeded runs that `holdless simulate-day` and
//! `SimulateDay` report.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::report::{average, DayFigures, Estimate, ASA_BASIS};
use super::{bad, run, Arrivals, CallbackParams, DayInput, Dist, InputError, QueueLoad};
use crate::metrics::erlang;
use crate::routing::CompiledPlan;

/// Most runs one comparison averages (each is two simulated days).
pub const MAX_RUNS: u32 = 1000;
/// Longest simulated day.
pub const MAX_HOURS: u32 = 24 * 7;

/// Shapes of the handle and patience distributions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    #[default]
    Exponential,
    /// Log-normal with the standard deviation given apart.
    LogNormal,
}

/// The knobs of a simulated day; `None` takes the plan's or a documented default.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    /// Queues to simulate (default: the default route's queue).
    pub queues: Vec<String>,
    pub start: Option<DateTime<Utc>>,
    pub hours: u32,
    /// Calls per hour, hour by hour (the last value holds for later hours); per queue
    /// when `arrivals` is empty.
    pub calls_per_hour: Vec<f64>,
    /// Calls per interval and queue (rows of the arrivals CSV): (interval, queue, calls).
    pub arrivals: Vec<(usize, String, f64)>,
    /// Mean handle time (default: the queue's `default_aht_secs`).
    pub aht_secs: Option<f64>,
    pub handle_shape: Shape,
    pub handle_sd_secs: Option<f64>,
    /// Mean patience (default: callers never hang up).
    pub patience_secs: Option<f64>,
    pub patience_shape: Shape,
    pub patience_sd_secs: Option<f64>,
    /// Agents per queue all day (default: the Erlang staffing plan per interval).
    pub agents: Option<u32>,
    /// Agents per interval and queue (rows of the staffing CSV).
    pub staffing: Vec<(usize, String, u32)>,
    pub callbacks: CallbackParams,
    pub short_abandon_secs: f64,
}

fn dist(mean: Option<f64>, shape: Shape, sd: Option<f64>, field: &str) -> Result<Dist, InputError> {
    let Some(mean) = mean else {
        return Ok(Dist::Infinite);
    };
    let d = match shape {
        Shape::Exponential => Dist::Exponential { mean_secs: mean },
        Shape::LogNormal => Dist::LogNormal {
            mean_secs: mean,
            // Without a spread, as spread as the exponential of the same mean.
            sd_secs: sd.unwrap_or(mean),
        },
    };
    d.check().map_err(|m| bad(field, m))?;
    Ok(d)
}

impl Scenario {
    /// The simulator's input under `plan`.
    pub fn input(
        &self,
        plan: Arc<CompiledPlan>,
        start: DateTime<Utc>,
    ) -> Result<DayInput, InputError> {
        if self.hours == 0 || self.hours > MAX_HOURS {
            return Err(bad("hours", format!("give 1 to {MAX_HOURS} hours")));
        }
        let intervals = self.hours as usize * 4;
        let queues = if self.queues.is_empty() {
            vec![plan.queues[plan.default_route.queue].id.clone()]
        } else {
            self.queues.clone()
        };
        let mut loads = Vec::new();
        for (qi, id) in queues.iter().enumerate() {
            let Some(q) = plan.queue(id) else {
                return Err(bad(
                    format!("queues[{qi}]"),
                    format!("queue '{id}' is not in the plan"),
                ));
            };
            let aht = self.aht_secs.unwrap_or(f64::from(q.default_aht_secs));
            let handle = dist(
                Some(aht),
                self.handle_shape,
                self.handle_sd_secs,
                "aht_secs",
            )?;
            let patience = dist(
                self.patience_secs,
                self.patience_shape,
                self.patience_sd_secs,
                "patience_secs",
            )?;
            let mut rates = vec![0.0; intervals];
            if self.arrivals.is_empty() {
                if self.calls_per_hour.is_empty() {
                    return Err(bad(
                        "calls_per_hour",
                        "give calls per hour or an arrivals file",
                    ));
                }
                for (i, r) in rates.iter_mut().enumerate() {
                    let h = (i / 4).min(self.calls_per_hour.len() - 1);
                    *r = self.calls_per_hour[h] / 4.0;
                }
            } else {
                for (i, queue, calls) in &self.arrivals {
                    if queue == id && *i < intervals {
                        rates[*i] += calls;
                    }
                }
            }
            if rates.iter().any(|r| !(r.is_finite() && *r >= 0.0)) {
                return Err(bad(
                    "calls_per_hour",
                    "calls must be finite and not negative",
                ));
            }
            let agents = if self.staffing.iter().any(|(_, queue, _)| queue == id) {
                let mut a = vec![0; intervals];
                for (i, queue, n) in &self.staffing {
                    if queue == id && *i < intervals {
                        a[*i] = *n;
                    }
                }
                a
            } else if let Some(n) = self.agents {
                vec![n]
            } else {
                erlang_plan(&rates, aht, self.patience_secs, q)
            };
            loads.push(QueueLoad {
                queue: id.clone(),
                arrivals: Arrivals::Poisson(rates),
                handle,
                patience,
                agents,
            });
        }
        let input = DayInput {
            plan,
            start,
            intervals,
            queues: loads,
            callbacks: self.callbacks,
            short_abandon_secs: self.short_abandon_secs,
            as_recorded: false,
        };
        super::check(&input)?;
        Ok(input)
    }
}

/// Agents per interval for the queue's service-level target: Erlang A when the
/// patience is known, else Erlang C.
pub fn erlang_plan(
    per_interval: &[f64],
    aht: f64,
    patience: Option<f64>,
    q: &crate::routing::plan::Queue,
) -> Vec<u32> {
    let t = f64::from(q.service_level_secs);
    let target = q.service_level_target.clamp(0.0, 0.999);
    per_interval
        .iter()
        .map(|calls| {
            let rate = calls / (super::INTERVAL_MS as f64 / 1000.0);
            let s = match patience {
                Some(p) => erlang::agents_for_service_level_a(rate, aht, p, t, target),
                None => erlang::agents_for_service_level(rate, aht, t, target),
            };
            s.map_or(0, |s| s.agents)
        })
        .collect()
}

/// The with/without comparison of one input.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub seed: u64,
    pub runs: u32,
    pub short_abandon_secs: f64,
    pub asa_basis: &'static str,
    /// The first run's day, with callbacks and without.
    pub with_callbacks: DayFigures,
    pub without_callbacks: DayFigures,
    /// Day totals averaged over the runs (seeds `seed`, `seed + 1`, ...).
    pub averages: Vec<Averaged>,
    /// Events the simulator applied over all runs.
    pub events: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Averaged {
    pub metric: &'static str,
    pub with_callbacks: Option<Estimate>,
    pub without_callbacks: Option<Estimate>,
}

/// Runs `input` `runs` times with and without callbacks.
pub fn compare(input: &DayInput, seed: u64, runs: u32) -> Result<Comparison, InputError> {
    if runs == 0 || runs > MAX_RUNS {
        return Err(bad("runs", format!("give 1 to {MAX_RUNS} runs")));
    }
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut first = None;
    let mut events = 0;
    for r in 0..runs {
        let s = seed.wrapping_add(u64::from(r));
        let w = run(input, s, true)?;
        let wo = run(input, s, false)?;
        events += w.events + wo.events;
        let (fw, fwo) = (DayFigures::of(&w), DayFigures::of(&wo));
        with.push(fw.total.clone());
        without.push(fwo.total.clone());
        if first.is_none() {
            first = Some((fw, fwo));
        }
    }
    let (fw, fwo) = first.expect("at least one run");
    let averages = average(&with)
        .into_iter()
        .zip(average(&without))
        .map(|((metric, w), (_, wo))| Averaged {
            metric,
            with_callbacks: w,
            without_callbacks: wo,
        })
        .collect();
    Ok(Comparison {
        seed,
        runs,
        short_abandon_secs: input.short_abandon_secs,
        asa_basis: ASA_BASIS,
        with_callbacks: fw,
        without_callbacks: fwo,
        averages,
        events,
    })
}

fn cell(v: Option<f64>, metric: &str) -> String {
    match v {
        None => "-".into(),
        Some(v)
            if metric.ends_with("rate") || metric == "service_level" || metric == "occupancy" =>
        {
            format!("{:.1}%", v * 100.0)
        }
        Some(v) if metric.ends_with("secs") => format!("{v:.1}"),
        Some(v) => format!("{v:.0}"),
    }
}

fn estimate_cell(e: Option<Estimate>, metric: &str) -> String {
    match e {
        None => "-".into(),
        Some(e) => {
            let mean = cell(Some(e.mean), metric);
            match e.ci95 {
                Some(h) => {
                    let h = cell(Some(h), metric);
                    format!("{mean} ± {h}")
                }
                None => mean,
            }
        }
    }
}

impl Comparison {
    /// The readable report: day totals with and without callbacks (means and 95%
    /// intervals over the runs), then each hour and each queue.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} run(s) from seed {}; short abandons: {} s; ASA: {}",
            self.runs, self.seed, self.short_abandon_secs, self.asa_basis
        );
        if self.runs > 1 {
            let _ = writeln!(out, "(mean ± half-width of the 95% interval over the runs)");
        }
        let _ = writeln!(
            out,
            "\n{:<32} {:>20} {:>20}",
            "", "with callbacks", "without"
        );
        for a in &self.averages {
            let _ = writeln!(
                out,
                "{:<32} {:>20} {:>20}",
                a.metric,
                estimate_cell(a.with_callbacks, a.metric),
                estimate_cell(a.without_callbacks, a.metric)
            );
        }
        let _ = writeln!(
            out,
            "\nper hour (first run)    offered       abandoned        service level          ASA s  waiting  callbacks"
        );
        let _ = writeln!(
            out,
            "hour                  with   w/o      with     w/o       with     w/o      with    w/o   w/o      open"
        );
        for (h, (w, wo)) in self
            .with_callbacks
            .hours
            .iter()
            .zip(&self.without_callbacks.hours)
            .enumerate()
        {
            let _ = writeln!(
                out,
                "{h:<18} {:>7} {:>5} {:>9} {:>7} {:>10} {:>7} {:>9} {:>6} {:>5} {:>9}",
                w.offered,
                wo.offered,
                cell(w.abandonment_rate, "rate"),
                cell(wo.abandonment_rate, "rate"),
                cell(w.service_level, "rate"),
                cell(wo.service_level, "rate"),
                cell(w.asa_secs, "secs"),
                cell(wo.asa_secs, "secs"),
                wo.waiting_calls,
                w.open_callbacks,
            );
        }
        if self.with_callbacks.queues.len() > 1 {
            let _ = writeln!(out, "\nper queue (first run)");
            for (w, wo) in self
                .with_callbacks
                .queues
                .iter()
                .zip(&self.without_callbacks.queues)
            {
                let _ = writeln!(
                    out,
                    "{:<18} offered {}/{}  abandoned {}/{}  SL {}/{}  callbacks completed {} pending {}",
                    w.queue,
                    w.total.offered,
                    wo.total.offered,
                    cell(w.total.abandonment_rate, "rate"),
                    cell(wo.total.abandonment_rate, "rate"),
                    cell(w.total.service_level, "rate"),
                    cell(wo.total.service_level, "rate"),
                    w.total.callbacks_completed,
                    w.total.callbacks_pending_at_close,
                );
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staffing_rows_and_the_erlang_plan_give_agents_per_interval() {
        let plan = Arc::new(
            crate::routing::compile_toml(
                "[[queues]]\nid = \"q\"\nskills = [\"s\"]\ndefault_aht_secs = 180\n[default_route]\nqueue = \"q\"\n",
                1,
            )
            .expect("plan"),
        );
        let start = DateTime::<Utc>::UNIX_EPOCH;
        let mut s = Scenario {
            hours: 1,
            calls_per_hour: vec![100.0],
            staffing: vec![
                (0, "q".into(), 3),
                (2, "q".into(), 5),
                (1, "other".into(), 9),
            ],
            ..Scenario::default()
        };
        let input = s.input(plan.clone(), start).expect("input");
        assert_eq!(input.queues[0].agents, vec![3, 0, 5, 0]);
        s.staffing.clear();
        let input = s.input(plan.clone(), start).expect("input");
        // 100 calls an hour of 180 s is 5 Erlangs: Erlang C wants more agents than that.
        assert!(input.queues[0].agents.iter().all(|&n| n > 5 && n < 12));
        s.hours = 0;
        assert_eq!(s.input(plan, start).unwrap_err().field, "hours");
    }
}
