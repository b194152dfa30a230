//! KPI reports, surveys and staffing plans over the stored interval counters.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

use super::{Holdless, ServiceError};
use crate::domain::FieldViolation;
use crate::metrics::erlang::{self, Staffing};
use crate::metrics::kpi::{
    bucket_start, KpiCounters, KpiFigures, Survey, BUCKET_SECS, CES_RANGE, CSAT_RANGE, FCR_DAYS,
    NPS_RANGE,
};
use crate::store::SurveyOutcome;

/// Most intervals one report may hold (a year of hours is 8,760).
pub const MAX_REPORT_INTERVALS: i64 = 10_000;
/// Longest range a staffing plan covers, in hours (one month).
pub const MAX_STAFFING_HOURS: i64 = 31 * 24;

/// A KPI report request, validated.
#[derive(Debug, Clone)]
pub struct KpiQuery {
    pub queue_id: Option<String>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Multiple of 15 minutes; `None`: one interval for the whole range.
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KpiRow {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub counters: KpiCounters,
    pub figures: KpiFigures,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KpiReport {
    /// `from` rounded down and `to` rounded up to the 15-minute grid.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub intervals: Vec<KpiRow>,
    pub total: KpiRow,
    /// Offered calls by local weekday (0 = Monday) and hour.
    pub arrivals: BTreeMap<(u32, u32), u64>,
    /// Time zone of `arrivals`: the queue's business-hours zone, else UTC.
    pub arrivals_time_zone: String,
    /// Whether every answered call in the range is past its 7-day FCR window.
    pub fcr_final: bool,
}

/// One hour of a staffing plan.
#[derive(Debug, Clone, PartialEq)]
pub struct StaffingHour {
    pub start: DateTime<Utc>,
    /// Arrivals per hour used (measured offered calls plus accepted callbacks, or given).
    pub arrivals_per_hour: f64,
    pub aht_secs: f64,
    /// `None` when the target cannot be reached, or in an hour without calls.
    pub erlang_c: Option<Staffing>,
    /// `None` without a patience, in an hour without calls, or when unreachable.
    pub erlang_a: Option<Staffing>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaffingPlan {
    pub queue_id: String,
    pub target_fraction: f64,
    pub target_secs: u32,
    pub hours: Vec<StaffingHour>,
}

/// A staffing request, validated.
#[derive(Debug, Clone)]
pub struct StaffingQuery {
    pub queue_id: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub patience_secs: Option<f64>,
    /// Overrides of the measured figures.
    pub arrivals_per_hour: Option<f64>,
    pub aht_secs: Option<f64>,
}

fn round_down(t: DateTime<Utc>) -> DateTime<Utc> {
    bucket_start(t)
}

fn round_up(t: DateTime<Utc>) -> DateTime<Utc> {
    let down = bucket_start(t);
    if down == t {
        t
    } else {
        down + Duration::seconds(BUCKET_SECS)
    }
}

fn row(start: DateTime<Utc>, end: DateTime<Utc>, counters: KpiCounters) -> KpiRow {
    KpiRow {
        start,
        end,
        figures: KpiFigures::of(&counters),
        counters,
    }
}

/// Checks a survey's ranges; at least one answer is required.
pub fn validate_survey(
    csat: Option<u32>,
    ces: Option<u32>,
    nps: Option<u32>,
) -> Result<Survey, Vec<FieldViolation>> {
    let mut v = Vec::new();
    let mut check =
        |name: &str, value: Option<u32>, range: std::ops::RangeInclusive<u32>| match value {
            Some(x) if !range.contains(&x) => {
                v.push(FieldViolation::new(
                    name,
                    format!("must be {} to {}", range.start(), range.end()),
                ));
                None
            }
            Some(x) => u8::try_from(x).ok(),
            None => None,
        };
    let survey = Survey {
        csat: check("csat", csat, CSAT_RANGE),
        ces: check("ces", ces, CES_RANGE),
        nps: check("nps", nps, NPS_RANGE),
    };
    if v.is_empty() && csat.is_none() && ces.is_none() && nps.is_none() {
        v.push(FieldViolation::new(
            "csat",
            "give at least one of csat, ces, nps",
        ));
    }
    if v.is_empty() {
        Ok(survey)
    } else {
        Err(v)
    }
}

/// The agents one hour needs for `target_fraction` of its calls answered within
/// `target_secs`, by Erlang C and (given a mean patience) Erlang A. The staffing plan and
/// the console's what-if both go through here, so the same inputs give the same figures.
pub fn staffing_hour(
    start: DateTime<Utc>,
    arrivals_per_hour: f64,
    aht_secs: f64,
    patience_secs: Option<f64>,
    target_secs: f64,
    target_fraction: f64,
) -> StaffingHour {
    let rate = arrivals_per_hour / 3600.0;
    // An hour without calls has nothing to plan: no prediction rather than
    // "0 agents, 100% service level, occupancy 100%".
    let busy = arrivals_per_hour > 0.0;
    StaffingHour {
        start,
        arrivals_per_hour,
        aht_secs,
        erlang_c: busy
            .then(|| erlang::agents_for_service_level(rate, aht_secs, target_secs, target_fraction))
            .flatten(),
        erlang_a: patience_secs.filter(|_| busy).and_then(|p| {
            erlang::agents_for_service_level_a(rate, aht_secs, p, target_secs, target_fraction)
        }),
    }
}

impl Holdless {
    pub async fn kpi_report(&self, q: KpiQuery) -> Result<KpiReport, ServiceError> {
        self.flush_offers().await?;
        let from = round_down(q.from);
        let to = round_up(q.to);
        let mut v = Vec::new();
        if from >= to {
            v.push(FieldViolation::new("to", "must be after from"));
        }
        let step = q.interval.unwrap_or(to - from);
        if q.interval.is_some()
            && (step <= Duration::zero() || step.num_seconds() % BUCKET_SECS != 0)
        {
            v.push(FieldViolation::new(
                "interval",
                "must be a positive multiple of 15 minutes",
            ));
        } else if from < to
            && (to - from).num_seconds() / step.num_seconds().max(1) >= MAX_REPORT_INTERVALS
        {
            v.push(FieldViolation::new(
                "interval",
                format!("at most {MAX_REPORT_INTERVALS} intervals per report"),
            ));
        }
        if !v.is_empty() {
            return Err(ServiceError::InvalidArgument(v));
        }
        let buckets = self
            .store
            .kpi_buckets(q.queue_id.as_deref(), from, to)
            .await?;
        // A mistyped queue would otherwise read as a quiet queue (all zeros). A queue
        // dropped from the plan still reports the range it has counters for.
        if let Some(id) = &q.queue_id {
            if buckets.is_empty() && self.active_plan().queue(id).is_none() {
                return Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                    "queue_id",
                    format!(
                        "queue '{id}' is not in the active plan and has no counters in the range"
                    ),
                )]));
            }
        }
        let mut intervals = Vec::new();
        let mut start = from;
        while start < to {
            let end = (start + step).min(to);
            intervals.push(row(start, end, KpiCounters::default()));
            start = end;
        }
        let mut total = KpiCounters::default();
        let mut per_bucket: BTreeMap<DateTime<Utc>, u64> = BTreeMap::new();
        for b in &buckets {
            let i = ((b.start - from).num_seconds() / step.num_seconds()) as usize;
            if let Some(r) = intervals.get_mut(i) {
                r.counters.add(&b.counters);
            }
            total.add(&b.counters);
            let offered = if q.queue_id.is_none() {
                b.counters.calls_once().offered
            } else {
                b.counters.offered
            };
            *per_bucket.entry(b.start).or_default() += offered;
        }
        // All queues together: a transferred call is one call, counted where it
        // entered (a sum of per-queue visits would count it once per queue).
        if q.queue_id.is_none() {
            total = total.calls_once();
            for r in &mut intervals {
                r.counters = r.counters.calls_once();
            }
        }
        for r in &mut intervals {
            r.figures = KpiFigures::of(&r.counters);
        }
        let tz = q
            .queue_id
            .as_deref()
            .and_then(|id| {
                self.active_plan()
                    .queue(id)
                    .and_then(|q| q.business_hours.as_ref().map(|h| h.time_zone()))
            })
            .unwrap_or(chrono_tz::UTC);
        let per_bucket: Vec<_> = per_bucket.into_iter().collect();
        Ok(KpiReport {
            from,
            to,
            intervals,
            total: row(from, to, total),
            arrivals: crate::metrics::kpi::weekday_hour(&per_bucket, tz),
            arrivals_time_zone: tz.name().to_owned(),
            fcr_final: to + Duration::days(FCR_DAYS) <= self.clock.now(),
        })
    }

    /// Records a survey of a call in the contact history; at most one per call.
    pub async fn submit_survey(&self, call_id: String, survey: Survey) -> Result<(), ServiceError> {
        let now = self.clock.now();
        match self
            .store
            .submit_survey(call_id.clone(), survey, now)
            .await?
        {
            SurveyOutcome::Recorded => Ok(()),
            SurveyOutcome::AlreadyTaken => Err(ServiceError::FailedPrecondition(format!(
                "contact {call_id} was already surveyed"
            ))),
            SurveyOutcome::UnknownContact => Err(ServiceError::NotFound(format!(
                "contact {call_id} is not in the contact history"
            ))),
        }
    }

    /// Agents needed per hour for the queue's service-level target.
    pub async fn staffing_plan(&self, q: StaffingQuery) -> Result<StaffingPlan, ServiceError> {
        self.flush_offers().await?;
        let plan = self.active_plan();
        let queue = plan.queue(&q.queue_id).ok_or_else(|| {
            ServiceError::InvalidArgument(vec![FieldViolation::new(
                "queue_id",
                format!("queue '{}' is not in the active plan", q.queue_id),
            )])
        })?;
        let from = q.from - Duration::seconds(q.from.timestamp().rem_euclid(3600));
        let to = q.to;
        let mut v = Vec::new();
        if from >= to {
            v.push(FieldViolation::new("to", "must be after from"));
        } else if (to - from).num_hours() > MAX_STAFFING_HOURS {
            v.push(FieldViolation::new(
                "to",
                format!("at most {MAX_STAFFING_HOURS} hours per plan"),
            ));
        }
        let positive = |x: Option<f64>| x.is_none_or(|x| x.is_finite() && x > 0.0);
        if !positive(q.patience_secs) {
            v.push(FieldViolation::new("patience", "must be positive"));
        }
        if !q
            .arrivals_per_hour
            .is_none_or(|x| x.is_finite() && x >= 0.0)
        {
            v.push(FieldViolation::new(
                "arrivals_per_hour",
                "must not be negative",
            ));
        }
        if !positive(q.aht_secs) {
            v.push(FieldViolation::new(
                "average_handle_time",
                "must be positive",
            ));
        }
        if !v.is_empty() {
            return Err(ServiceError::InvalidArgument(v));
        }
        let buckets = self
            .store
            .kpi_buckets(Some(&q.queue_id), from, round_up(to))
            .await?;
        let mut hours: BTreeMap<DateTime<Utc>, KpiCounters> = BTreeMap::new();
        let mut all = KpiCounters::default();
        for b in &buckets {
            let h = b.start - Duration::seconds(b.start.timestamp().rem_euclid(3600));
            hours.entry(h).or_default().add(&b.counters);
            all.add(&b.counters);
        }
        let fallback_aht = if all.handled > 0 {
            all.handle_ms as f64 / all.handled as f64 / 1000.0
        } else {
            f64::from(queue.default_aht_secs.max(1))
        };
        let target = queue.service_level_target.clamp(0.0, 0.999_999);
        let secs = f64::from(queue.service_level_secs);
        let mut out = Vec::new();
        let mut start = from;
        while start < to {
            let c = hours.get(&start).cloned().unwrap_or_default();
            let arrivals = q
                .arrivals_per_hour
                .unwrap_or((c.offered + c.cb_accepted) as f64);
            let aht = q.aht_secs.unwrap_or(if c.handled > 0 {
                c.handle_ms as f64 / c.handled as f64 / 1000.0
            } else {
                fallback_aht
            });
            out.push(staffing_hour(
                start,
                arrivals,
                aht,
                q.patience_secs,
                secs,
                target,
            ));
            start += Duration::hours(1);
        }
        Ok(StaffingPlan {
            queue_id: q.queue_id,
            target_fraction: queue.service_level_target,
            target_secs: queue.service_level_secs,
            hours: out,
        })
    }
}
