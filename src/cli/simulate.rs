//! `holdless simulate-day`: a day through the real floor, callback scheduler and KPI
//! code on a virtual clock ([`crate::sim::day`]), with callbacks and without, as a
//! table, JSON or SVG charts. Reads a plan file, or the active plan of a running
//! server.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use clap::Args;

use super::{connect, Failure, ServerArg, EXIT_CONFIG};
use crate::api::pb;
use crate::domain::contact::ContactRecord;
use crate::metrics::kpi::ABANDON_GRACE_SECS;
use crate::routing::CompiledPlan;
use crate::sim::day::report::DayFigures;
use crate::sim::day::scenario::{compare, Comparison, Scenario, Shape};
use crate::sim::day::{CallbackParams, DayInput, Dist, DEFAULT_RING_SECS};

/// Where the simulated day starts when `--start` gives only a date (or nothing):
/// 08:00 in the first queue's business-hours zone, a contact center's usual opening.
pub const DEFAULT_START: &str = "08:00";

#[derive(Debug, Args)]
pub struct SimulateDayArgs {
    /// Routing plan file (TOML); default: the running server's active plan.
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// Queue to simulate (repeat for several); default: the default route's queue.
    #[arg(long)]
    pub queue: Vec<String>,
    /// Start: RFC 3339 instant, or a date (YYYY-MM-DD) for 08:00 in the queue's
    /// business-hours zone. Default: today.
    #[arg(long)]
    pub start: Option<String>,
    /// Length of the day in hours (default: 10; 24 with --from-store).
    #[arg(long)]
    pub hours: Option<u32>,
    /// Replay the calls a stopped server recorded on this UTC day (YYYY-MM-DD) from
    /// its store (at store.path of --config). Without --agents or --staffing-csv,
    /// staffing is as recorded: each call is answered after its recorded wait, so the
    /// unchanged day counts what the server counted.
    #[arg(long)]
    pub from_store: Option<String>,
    /// Config file whose store.path --from-store reads (default: ./holdless.toml if
    /// present).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Poisson arrivals per hour: one value for the whole day, or one per hour
    /// (comma-separated; the last holds for later hours).
    #[arg(long, value_delimiter = ',')]
    pub calls_per_hour: Vec<f64>,
    /// CSV of arrivals: `interval,queue,calls` with the interval's local start (HH:MM).
    #[arg(long)]
    pub arrivals_csv: Option<PathBuf>,
    /// Mean handle time in seconds (default: the queue's default_aht_secs).
    #[arg(long)]
    pub aht_secs: Option<f64>,
    /// Handle time distribution: exponential or lognormal.
    #[arg(long, default_value = "exponential")]
    pub aht_dist: String,
    /// Standard deviation of a log-normal handle time (default: the mean).
    #[arg(long)]
    pub aht_sd_secs: Option<f64>,
    /// Callers' mean patience in seconds (default: nobody hangs up).
    #[arg(long)]
    pub patience_secs: Option<f64>,
    /// Patience distribution: exponential or lognormal.
    #[arg(long, default_value = "exponential")]
    pub patience_dist: String,
    /// Standard deviation of a log-normal patience (default: the mean).
    #[arg(long)]
    pub patience_sd_secs: Option<f64>,
    /// Agents all day (default: the Erlang staffing plan for the queue's
    /// service-level target, per interval).
    #[arg(long)]
    pub agents: Option<u32>,
    /// CSV of staffing: `interval,queue,agents` with the interval's local start (HH:MM).
    #[arg(long)]
    pub staffing_csv: Option<PathBuf>,
    /// Offer a callback when the estimated wait exceeds this (default: the queue's
    /// offer_after_ewt_secs).
    #[arg(long)]
    pub offer_threshold_secs: Option<u32>,
    /// Share of offered callers who accept a callback.
    #[arg(long, default_value_t = 0.5)]
    pub acceptance_rate: f64,
    /// Share of callback attempts the customer answers.
    #[arg(long, default_value_t = 0.8)]
    pub answer_rate: f64,
    /// How long an agent is held while a callback rings.
    #[arg(long, default_value_t = DEFAULT_RING_SECS)]
    pub ring_secs: f64,
    /// Customers' time zone for calling windows (default: the queue's).
    #[arg(long)]
    pub customer_tz: Option<String>,
    /// Abandons after at most this wait are short and not counted in the abandonment
    /// rate (the live server's threshold by default).
    #[arg(long, default_value_t = ABANDON_GRACE_SECS)]
    pub short_abandon_secs: f64,
    /// Seed of the first run: the same seed gives the same day.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Runs (seeds seed, seed+1, ...) averaged, with 95% confidence intervals.
    #[arg(long, default_value_t = 1)]
    pub runs: u32,
    /// One row per value instead of the report, e.g. offer_threshold=30,60,120,300.
    #[arg(long)]
    pub sweep: Option<String>,
    /// Write charts (waiting.svg, hourly.svg) into this directory.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Also print how long the simulation took (days, calls, events, seconds).
    #[arg(long)]
    pub timing: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

fn bad(message: String) -> Failure {
    Failure {
        code: EXIT_CONFIG,
        message,
    }
}

fn shape(s: &str, flag: &str) -> Result<Shape, Failure> {
    match s {
        "exponential" | "exp" => Ok(Shape::Exponential),
        "lognormal" | "log-normal" => Ok(Shape::LogNormal),
        _ => Err(bad(format!("--{flag} {s}: give exponential or lognormal"))),
    }
}

async fn load_plan(
    args: &SimulateDayArgs,
    stored: Option<String>,
) -> Result<Arc<CompiledPlan>, Failure> {
    let text = match (&args.plan, stored) {
        (Some(path), _) => std::fs::read_to_string(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?,
        (None, Some(toml)) => toml,
        (None, None) => {
            let mut c =
                pb::plan_service_client::PlanServiceClient::new(connect(&args.server).await?);
            c.get_plan(pb::GetPlanRequest::default())
                .await
                .map_err(|s| Failure {
                    code: super::EXIT_UNAVAILABLE,
                    message: format!("cannot read the active plan: {}", s.message()),
                })?
                .into_inner()
                .plan_toml
        }
    };
    let plan = crate::routing::compile_toml(&text, 0).map_err(|v| {
        let lines: Vec<String> = v
            .iter()
            .map(|f| format!("{}: {}", f.field, f.description))
            .collect();
        bad(format!("the plan is invalid:\n  {}", lines.join("\n  ")))
    })?;
    Ok(Arc::new(plan))
}

/// The day's start: an instant, or a date at [`DEFAULT_START`] in zone `tz`.
fn start_of(s: Option<&str>, tz: Tz) -> Result<DateTime<Utc>, Failure> {
    if let Some(t) = s.and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
        return Ok(t.with_timezone(&Utc));
    }
    let date = match s {
        Some(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            bad(format!(
                "bad --start {s}: give an RFC 3339 instant or YYYY-MM-DD"
            ))
        })?,
        None => Utc::now().with_timezone(&tz).date_naive(),
    };
    let open = NaiveTime::parse_from_str(DEFAULT_START, "%H:%M").expect("valid constant");
    tz.from_local_datetime(&date.and_time(open))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| bad(format!("{date} {DEFAULT_START} does not exist in {tz}")))
}

/// Rows `HH:MM,queue,number` of a CSV (a header line and blank lines are skipped), as
/// (interval since `start`, queue, number). Times are local clock times in `tz`.
fn read_csv(
    path: &Path,
    start: DateTime<Utc>,
    tz: Tz,
) -> Result<Vec<(usize, String, f64)>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
    let day_start = start.with_timezone(&tz);
    let mut rows = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = (cols.len() == 3)
            .then(|| NaiveTime::parse_from_str(cols[0], "%H:%M").ok())
            .flatten();
        let Some(at) = at else {
            if n == 0 {
                continue; // header
            }
            return Err(bad(format!(
                "{} line {}: expected HH:MM,queue,number",
                path.display(),
                n + 1
            )));
        };
        let value: f64 = cols[2].parse().map_err(|_| {
            bad(format!(
                "{} line {}: '{}' is not a number",
                path.display(),
                n + 1,
                cols[2]
            ))
        })?;
        let mins = (at - day_start.time()).num_minutes();
        if mins < 0 || mins % 15 != 0 {
            return Err(bad(format!(
                "{} line {}: {} is not a quarter hour of the day starting {}",
                path.display(),
                n + 1,
                cols[0],
                day_start.format("%H:%M")
            )));
        }
        rows.push(((mins / 15) as usize, cols[1].to_owned(), value));
    }
    Ok(rows)
}

/// The contact records and active plan of a stopped server's store.
async fn from_store(
    config: Option<&Path>,
) -> Result<(Vec<ContactRecord>, Option<String>), Failure> {
    let settings = super::backup::settings(config)?;
    let location = crate::app::store_location(&settings.store);
    if settings.store.backend == crate::config::StoreBackend::Sled
        && !settings.store.path.join("db").is_file()
    {
        return Err(bad(format!("no holdless store {location} (store.path)")));
    }
    let store = super::backup::open(&settings.store).await?;
    let records = store
        .contacts_since(DateTime::<Utc>::MIN_UTC, MAX_RECORDS)
        .await;
    let plan = store.active_plan().await;
    store.close().await;
    let fail = |e: crate::store::StoreError| bad(format!("cannot read the store {location}: {e}"));
    Ok((records.map_err(fail)?, plan.map_err(fail)?.map(|p| p.toml)))
}

/// Most contact records a recorded day reads.
pub const MAX_RECORDS: usize = 2_000_000;

/// Builds the day from the flags.
async fn day_input(args: &SimulateDayArgs) -> Result<(DayInput, Scenario), Failure> {
    if let Some(day) = &args.from_store {
        return recorded_input(args, day).await;
    }
    let plan = load_plan(args, None).await?;
    let first = args
        .queue
        .first()
        .cloned()
        .unwrap_or_else(|| plan.queues[plan.default_route.queue].id.clone());
    let tz = plan
        .queue(&first)
        .and_then(|q| q.business_hours.as_ref())
        .map_or(Tz::UTC, |h| h.time_zone());
    let start = start_of(args.start.as_deref(), tz)?;
    let customer_tz = match &args.customer_tz {
        Some(z) => Some(
            z.parse::<Tz>()
                .map_err(|_| bad(format!("--customer-tz {z} is not an IANA time zone")))?,
        ),
        None => None,
    };
    let mut scenario = Scenario {
        queues: args.queue.clone(),
        start: Some(start),
        hours: args.hours.unwrap_or(10),
        calls_per_hour: args.calls_per_hour.clone(),
        aht_secs: args.aht_secs,
        handle_shape: shape(&args.aht_dist, "aht-dist")?,
        handle_sd_secs: args.aht_sd_secs,
        patience_secs: args.patience_secs,
        patience_shape: shape(&args.patience_dist, "patience-dist")?,
        patience_sd_secs: args.patience_sd_secs,
        agents: args.agents,
        callbacks: CallbackParams {
            offer_after_ewt_secs: args.offer_threshold_secs,
            acceptance: args.acceptance_rate,
            answer_rate: args.answer_rate,
            ring_secs: args.ring_secs,
            customer_tz,
        },
        short_abandon_secs: args.short_abandon_secs,
        ..Scenario::default()
    };
    if let Some(p) = &args.arrivals_csv {
        scenario.arrivals = read_csv(p, start, tz)?;
    }
    if let Some(p) = &args.staffing_csv {
        scenario.staffing = read_csv(p, start, tz)?
            .into_iter()
            .map(|(i, q, n)| (i, q, n.max(0.0).round() as u32))
            .collect();
    }
    let input = scenario
        .input(plan, start)
        .map_err(|e| bad(format!("--{}", e.to_string().replace('_', "-"))))?;
    Ok((input, scenario))
}

/// `--from-store DAY`: the recorded calls of that UTC day.
async fn recorded_input(
    args: &SimulateDayArgs,
    day: &str,
) -> Result<(DayInput, Scenario), Failure> {
    let date = NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| {
        bad(format!(
            "bad --from-store {day}: give a UTC date YYYY-MM-DD"
        ))
    })?;
    let (records, stored_plan) = from_store(args.config.as_deref()).await?;
    let plan = load_plan(args, stored_plan).await?;
    let start = match &args.start {
        Some(s) => start_of(Some(s), Tz::UTC)?,
        None => date.and_time(NaiveTime::MIN).and_utc(),
    };
    let hours = args.hours.unwrap_or(24);
    if hours == 0 || hours > crate::sim::day::scenario::MAX_HOURS {
        return Err(bad("--hours: give 1 to 168 hours".into()));
    }
    let mut loads = crate::sim::day::recorded::loads(&plan, &records, start, hours);
    if !args.queue.is_empty() {
        loads.retain(|l| args.queue.contains(&l.queue));
    }
    if loads.is_empty() {
        return Err(bad(format!(
            "no recorded calls on {day} in the queues asked for"
        )));
    }
    let intervals = hours as usize * 4;
    let staffing = match &args.staffing_csv {
        Some(p) => read_csv(p, start, Tz::UTC)?,
        None => Vec::new(),
    };
    let as_recorded = args.agents.is_none() && staffing.is_empty();
    for l in &mut loads {
        if let Some(n) = args.agents {
            l.agents = vec![n];
        } else if !staffing.is_empty() {
            l.agents = vec![0; intervals];
            for (i, q, n) in &staffing {
                if *q == l.queue && *i < intervals {
                    l.agents[*i] = n.max(0.0).round() as u32;
                }
            }
        }
        if let Some(p) = args.patience_secs {
            l.patience = Dist::Exponential { mean_secs: p };
        }
    }
    let customer_tz = match &args.customer_tz {
        Some(z) => Some(
            z.parse::<Tz>()
                .map_err(|_| bad(format!("--customer-tz {z} is not an IANA time zone")))?,
        ),
        None => None,
    };
    let input = DayInput {
        plan,
        start,
        intervals,
        queues: loads,
        callbacks: CallbackParams {
            offer_after_ewt_secs: args.offer_threshold_secs,
            acceptance: args.acceptance_rate,
            answer_rate: args.answer_rate,
            ring_secs: args.ring_secs,
            customer_tz,
        },
        short_abandon_secs: args.short_abandon_secs,
        as_recorded,
    };
    crate::sim::day::check(&input).map_err(|e| bad(e.to_string()))?;
    Ok((input, Scenario::default()))
}

pub async fn simulate_day(args: SimulateDayArgs) -> Result<String, Failure> {
    let (mut input, _) = day_input(&args).await?;
    if let Some(sweep) = &args.sweep {
        return self::sweep(&mut input, sweep, &args);
    }
    let began = std::time::Instant::now();
    let c = compare(&input, args.seed, args.runs).map_err(|e| bad(e.to_string()))?;
    let took = began.elapsed();
    if let Some(dir) = &args.svg {
        charts(dir, &c, &input)
            .map_err(|e| bad(format!("cannot draw into {}: {e}", dir.display())))?;
    }
    if args.server.json {
        return serde_json::to_string_pretty(&c)
            .map(|s| s + "\n")
            .map_err(|e| bad(e.to_string()));
    }
    let mut out = c.table();
    if args.timing {
        out += &format!(
            "\nsimulated {} day(s) ({} calls in the first, {} events) in {:.2} s\n",
            2 * c.runs,
            c.without_callbacks.total.offered,
            c.events,
            took.as_secs_f64()
        );
    }
    Ok(out)
}

/// `--sweep offer_threshold=30,60,...`: one row per value (means over the runs).
fn sweep(input: &mut DayInput, spec: &str, args: &SimulateDayArgs) -> Result<String, Failure> {
    let Some(("offer_threshold", values)) = spec.split_once('=') else {
        return Err(bad(format!(
            "--sweep {spec}: give offer_threshold=V1,V2,... (seconds)"
        )));
    };
    let values: Vec<u32> = values
        .split(',')
        .map(|v| v.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| bad(format!("--sweep {spec}: thresholds are whole seconds")))?;
    let mut rows = Vec::new();
    for v in values {
        input.callbacks.offer_after_ewt_secs = Some(v);
        let c = compare(input, args.seed, args.runs).map_err(|e| bad(e.to_string()))?;
        rows.push((v, c));
    }
    if args.server.json {
        let json: Vec<_> = rows
            .iter()
            .map(|(v, c)| serde_json::json!({"offer_threshold_secs": v, "report": c}))
            .collect();
        return serde_json::to_string_pretty(&json)
            .map(|s| s + "\n")
            .map_err(|e| bad(e.to_string()));
    }
    let mean = |c: &Comparison, m: &str| {
        c.averages
            .iter()
            .find(|a| a.metric == m)
            .and_then(|a| a.with_callbacks)
            .map(|e| e.mean)
    };
    let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0));
    let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.0}"));
    let mut out = format!(
        "{:>10} {:>8} {:>10} {:>8} {:>8} {:>9} {:>9} {:>8} {:>12} {:>10}\n",
        "threshold",
        "offered",
        "abandoned",
        "SL",
        "ASA s",
        "cb asked",
        "cb done",
        "pending",
        "avoided/cb s",
        "occupancy"
    );
    for (v, c) in &rows {
        out += &format!(
            "{:>10} {:>8} {:>10} {:>8} {:>8} {:>9} {:>9} {:>8} {:>12} {:>10}\n",
            v,
            num(mean(c, "offered")),
            pct(mean(c, "abandonment_rate")),
            pct(mean(c, "service_level")),
            mean(c, "asa_secs").map_or("-".into(), |v| format!("{v:.1}")),
            num(mean(c, "callbacks_requested")),
            num(mean(c, "callbacks_completed")),
            num(mean(c, "callbacks_pending_at_close")),
            mean(c, "hold_avoided_per_callback_secs").map_or("-".into(), |v| format!("{v:.0}")),
            pct(mean(c, "occupancy")),
        );
    }
    if let Some((_, c)) = rows.first() {
        out += &format!(
            "without callbacks: abandoned {}, SL {}\n",
            pct(c
                .averages
                .iter()
                .find(|a| a.metric == "abandonment_rate")
                .and_then(|a| a.without_callbacks)
                .map(|e| e.mean)),
            pct(c
                .averages
                .iter()
                .find(|a| a.metric == "service_level")
                .and_then(|a| a.without_callbacks)
                .map(|e| e.mean)),
        );
    }
    Ok(out)
}

/// `waiting.svg`: calls waiting and callbacks open over the day (every interval);
/// `hourly.svg`: abandonment and service level per hour; both with and without
/// callbacks, from the first run.
pub fn charts(dir: &Path, c: &Comparison, input: &DayInput) -> Result<(), String> {
    use plotters::prelude::*;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let run_w = crate::sim::day::run(input, c.seed, true).map_err(|e| err(&e))?;
    let run_wo = crate::sim::day::run(input, c.seed, false).map_err(|e| err(&e))?;
    let series = |d: &crate::sim::day::DayCounts,
                  f: fn(&crate::sim::day::IntervalCounts) -> u32| {
        (0..input.intervals)
            .map(|i| {
                let v: u32 = d.intervals.iter().map(|q| f(&q[i])).sum();
                (i as f64 / 4.0, f64::from(v))
            })
            .collect::<Vec<_>>()
    };
    let waiting_w = series(&run_w, |x| x.waiting_at_start);
    let waiting_wo = series(&run_wo, |x| x.waiting_at_start);
    let open_w = series(&run_w, |x| x.callbacks_open_at_start);
    let hours = input.intervals as f64 / 4.0;
    let top = waiting_w
        .iter()
        .chain(&waiting_wo)
        .chain(&open_w)
        .map(|p| p.1)
        .fold(1.0, f64::max)
        * 1.1;
    {
        let path = dir.join("waiting.svg");
        let root = SVGBackend::new(&path, (800, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Waiting calls and open callbacks", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..hours, 0.0..top)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("hours since start")
            .y_desc("count")
            .draw()
            .map_err(|e| err(&e))?;
        for (data, color, label) in [
            (&waiting_wo, RED, "calls waiting, without callbacks"),
            (&waiting_w, BLUE, "calls waiting, with callbacks"),
            (&open_w, GREEN, "callbacks open"),
        ] {
            chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    {
        let path = dir.join("hourly.svg");
        let root = SVGBackend::new(&path, (800, 400)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Abandonment and service level per hour", ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..hours, 0.0..100.0)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("hour")
            .y_desc("%")
            .draw()
            .map_err(|e| err(&e))?;
        let pts = |d: &DayFigures, f: fn(&crate::sim::day::report::Figures) -> Option<f64>| {
            d.hours
                .iter()
                .enumerate()
                .filter_map(|(h, x)| f(x).map(|v| (h as f64 + 0.5, v * 100.0)))
                .collect::<Vec<_>>()
        };
        let lines = [
            (
                pts(&c.with_callbacks, |x| x.service_level),
                BLUE,
                "service level, with callbacks",
            ),
            (
                pts(&c.without_callbacks, |x| x.service_level),
                RED,
                "service level, without",
            ),
            (
                pts(&c.with_callbacks, |x| x.abandonment_rate),
                CYAN,
                "abandonment, with callbacks",
            ),
            (
                pts(&c.without_callbacks, |x| x.abandonment_rate),
                MAGENTA,
                "abandonment, without",
            ),
        ];
        for (data, color, label) in lines {
            chart
                .draw_series(LineSeries::new(data, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("written");
        p
    }

    #[test]
    fn csv_rows_become_intervals_of_the_day_in_its_zone() {
        let dir = tempfile::tempdir().expect("dir");
        let tz: Tz = "America/New_York".parse().expect("zone");
        let start = start_of(Some("2026-03-02"), tz).ok().expect("start");
        assert_eq!(start.to_rfc3339(), "2026-03-02T13:00:00+00:00");
        let p = write(
            dir.path(),
            "a.csv",
            "interval,queue,calls\n08:00,general,30\n\n09:15, general , 42.5\n",
        );
        let rows = read_csv(&p, start, tz).ok().expect("parsed");
        assert_eq!(
            rows,
            vec![(0, "general".into(), 30.0), (5, "general".into(), 42.5)]
        );
        for bad in [
            "07:45,general,3\n",
            "08:10,general,3\n",
            "08:00,general,x\n",
        ] {
            let p = write(dir.path(), "b.csv", &format!("interval,queue,calls\n{bad}"));
            let Err(e) = read_csv(&p, start, tz) else {
                panic!("{bad} is refused");
            };
            assert!(e.message.contains("line 2"), "{}", e.message);
        }
    }

    #[test]
    fn charts_are_two_svg_files() {
        let plan = Arc::new(
            crate::routing::compile_toml(
                "[[queues]]\nid = \"q\"\nskills = [\"s\"]\n[default_route]\nqueue = \"q\"\n",
                1,
            )
            .expect("plan"),
        );
        let scenario = Scenario {
            hours: 2,
            calls_per_hour: vec![60.0],
            agents: Some(2),
            aht_secs: Some(150.0),
            ..Scenario::default()
        };
        let start = start_of(Some("2026-03-02"), Tz::UTC).ok().expect("start");
        let input = scenario.input(plan, start).expect("input");
        let c = compare(&input, 1, 1).expect("compared");
        let dir = tempfile::tempdir().expect("dir");
        charts(dir.path(), &c, &input).expect("drawn");
        for f in ["waiting.svg", "hourly.svg"] {
            let svg = std::fs::read_to_string(dir.path().join(f)).expect("file");
            assert!(
                svg.starts_with("<svg") && svg.contains("with callbacks"),
                "{f}"
            );
        }
    }
}
