//! The day simulator against queueing theory, and its own promises.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::report::{DayFigures, Figures};
use super::*;
use crate::metrics::erlang;
use crate::metrics::kpi::ABANDON_GRACE_SECS;

const PLAN: &str = r#"
[[queues]]
id = "q"
skills = ["s"]
default_aht_secs = 180
service_level = { target_percent = 80, answer_within_secs = 20 }
[queues.callback]
offer_after_ewt_secs = 60
max_attempts = 3
retry_backoff_secs = [300]
[default_route]
queue = "q"
"#;

fn plan() -> Arc<CompiledPlan> {
    Arc::new(crate::routing::compile_toml(PLAN, 1).expect("test plan compiles"))
}

fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T00:00:00Z")
        .expect("fixed instant")
        .with_timezone(&Utc)
}

fn single_queue(hours: usize, per_hour: f64, agents: u32, aht: f64, patience: Dist) -> DayInput {
    DayInput {
        plan: plan(),
        start: start(),
        intervals: hours * 4,
        queues: vec![QueueLoad {
            queue: "q".into(),
            arrivals: Arrivals::Poisson(vec![per_hour / 4.0; hours * 4]),
            handle: Dist::Exponential { mean_secs: aht },
            patience,
            agents: vec![agents],
        }],
        callbacks: CallbackParams::default(),
        short_abandon_secs: 0.0,
        as_recorded: false,
    }
}

/// Batch means: the day cut into `batches` equal batches after a one-hour warm-up;
/// each batch's figures are one observation. Returns per batch the figures.
fn batches(d: &DayCounts, batches: usize) -> Vec<Figures> {
    let ivs = &d.intervals[0][4..];
    let per = ivs.len() / batches;
    (0..batches)
        .map(|b| {
            let mut c = IntervalCounts::default();
            for x in &ivs[b * per..(b + 1) * per] {
                c.add(x);
            }
            Figures::of(&c, 0)
        })
        .collect()
}

/// Two-sided 99.5% quantile of Student's t with 19 degrees of freedom (20 batches).
const T_995_19: f64 = 2.861;

/// Checks that `theory` lies in the 99% confidence interval of the batch means of
/// `metric`.
fn within_99(name: &str, values: &[f64], theory: f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let half = T_995_19 * sd / n.sqrt();
    assert!(
        (mean - theory).abs() <= half,
        "{name}: simulated {mean:.4} +- {half:.4} (99%), theory {theory:.4}"
    );
}

/// M/M/N+M: 10 agents, 190 calls an hour of 180 s mean handle time (9.5 Erlangs),
/// callers' patience exponential with mean 120 s, no callbacks, short-abandon
/// threshold 0 (so the abandonment rate is Erlang A's P(abandon)). 81 virtual hours,
/// the first discarded as warm-up, the rest cut into 20 batches of 4 hours; Erlang A's
/// P(abandon), mean wait of all callers and service level (20 s) each lie inside the
/// 99% confidence interval of the batch means (Student's t, 19 degrees of freedom).
#[test]
fn a_steady_queue_with_impatient_callers_matches_erlang_a() {
    let (rate_h, n, aht, patience) = (190.0, 10, 180.0, 120.0);
    let input = single_queue(
        81,
        rate_h,
        n,
        aht,
        Dist::Exponential {
            mean_secs: patience,
        },
    );
    let day = run(&input, 11, false).unwrap();
    let b = batches(&day, 20);
    let theory = erlang::erlang_a(n, rate_h / 3600.0, aht, patience, 20.0).unwrap();
    let get = |f: fn(&Figures) -> Option<f64>| b.iter().filter_map(f).collect::<Vec<_>>();
    within_99(
        "P(abandon)",
        &get(|f| f.abandonment_rate),
        theory.prob_abandon,
    );
    within_99("mean wait", &get(|f| f.mean_wait_secs), theory.asa_secs);
    within_99(
        "service level",
        &get(|f| f.service_level),
        theory.service_level,
    );
}

/// M/M/N: 10 agents, 160 calls an hour of 180 s (8 Erlangs), callers who never hang
/// up. Same batches and 99% intervals as the Erlang A test; ASA and service level
/// (20 s) match Erlang C.
#[test]
fn a_steady_queue_with_patient_callers_matches_erlang_c() {
    let (rate_h, n, aht) = (160.0, 10, 180.0);
    let input = single_queue(81, rate_h, n, aht, Dist::Infinite);
    let day = run(&input, 5, false).unwrap();
    let b = batches(&day, 20);
    let theory = erlang::erlang_c_staffing(n, rate_h / 3600.0, aht, 20.0);
    let get = |f: fn(&Figures) -> Option<f64>| b.iter().filter_map(f).collect::<Vec<_>>();
    assert!(b.iter().all(|f| f.abandoned == 0));
    within_99("ASA", &get(|f| f.asa_secs), theory.asa_secs);
    within_99(
        "service level",
        &get(|f| f.service_level),
        theory.service_level,
    );
}

/// A busy day (12 agents for 220 calls an hour of 180 s, 11 Erlangs) with callbacks
/// offered past 60 s.
fn busy_day() -> DayInput {
    let mut input = single_queue(
        8,
        220.0,
        12,
        180.0,
        Dist::LogNormal {
            mean_secs: 240.0,
            sd_secs: 120.0,
        },
    );
    // 09:00 to 17:00 UTC: inside the default calling window (08:00-21:00).
    input.start += chrono::Duration::hours(9);
    input.short_abandon_secs = ABANDON_GRACE_SECS;
    input.callbacks.acceptance = 0.6;
    input.callbacks.answer_rate = 0.7;
    input
}

#[test]
fn one_seed_gives_one_day_and_both_runs_see_the_same_callers() {
    let input = busy_day();
    let with = run(&input, 3, true).unwrap();
    assert_eq!(with, run(&input, 3, true).unwrap());
    let without = run(&input, 3, false).unwrap();
    let (w, wo) = (DayFigures::of(&with).total, DayFigures::of(&without).total);
    // Every arrival is offered once, or leaves the line for a callback.
    assert_eq!(w.offered + w.callbacks_requested, wo.offered);
    assert_eq!(wo.callbacks_offered, 0);
    assert!(
        w.callbacks_requested > 0 && w.callbacks_completed > 0,
        "{w:?}"
    );
    assert!(w.hold_avoided_secs > 0.0);
    for f in [&w, &wo] {
        assert!(f.occupancy.is_some_and(|o| o > 0.5 && o <= 1.0), "{f:?}");
    }
    // Every request ends completed, failed, or still open at close.
    assert_eq!(
        w.callbacks_requested,
        w.callbacks_completed + w.callbacks_failed + w.callbacks_pending_at_close
    );
}

/// With a dial that costs no agent time and customers who always answer, a caller who
/// accepts waits off hold and never hangs up: fewer callers abandon. (With the default
/// 20 s ring and 70% answers on a queue near full occupancy, the dial time can cost
/// more than it saves: what the with/without report is for.)
#[test]
fn free_dials_spare_callers_who_would_have_hung_up() {
    let mut input = busy_day();
    input.callbacks.ring_secs = 0.0;
    input.callbacks.answer_rate = 1.0;
    let w = DayFigures::of(&run(&input, 4, true).unwrap()).total;
    let wo = DayFigures::of(&run(&input, 4, false).unwrap()).total;
    assert!(w.abandoned < wo.abandoned, "{w:?} {wo:?}");
}

#[test]
fn a_lower_offer_threshold_offers_more_callbacks() {
    let mut input = busy_day();
    input.callbacks.offer_after_ewt_secs = Some(300);
    let high = DayFigures::of(&run(&input, 9, true).unwrap()).total;
    input.callbacks.offer_after_ewt_secs = Some(30);
    let low = DayFigures::of(&run(&input, 9, true).unwrap()).total;
    assert!(
        low.callbacks_offered > high.callbacks_offered,
        "{low:?} {high:?}"
    );
}

#[test]
fn bad_input_is_refused_naming_the_field() {
    let mut input = busy_day();
    input.callbacks.acceptance = 1.5;
    assert_eq!(run(&input, 1, true).unwrap_err().field, "acceptance_rate");
    let mut input = busy_day();
    input.queues[0].queue = "nope".into();
    assert_eq!(run(&input, 1, true).unwrap_err().field, "queues[0].queue");
}

#[test]
fn callbacks_are_not_dialed_outside_the_calling_window() {
    // 00:00 to 06:00 UTC: the window (08:00-21:00 UTC) never opens before close.
    let mut input = busy_day();
    input.start -= chrono::Duration::hours(9);
    input.intervals = 24;
    let f = DayFigures::of(&run(&input, 2, true).unwrap()).total;
    assert!(f.callbacks_requested > 0);
    assert_eq!(f.callbacks_completed + f.callbacks_failed, 0);
    assert_eq!(f.callbacks_pending_at_close, f.callbacks_requested);
}
