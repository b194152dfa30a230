//! The figures behind the Staffing and KPIs pages, pure and without HTML: the weekday x
//! hour heatmap, the staffing what-if, report periods in the center's local time, the
//! measures a KPI report shows and its CSV form.
//!
//! Nothing here computes a KPI or a staffing figure of its own: counts and figures come
//! from [`crate::service::kpi`] (the code behind `GetKpiReport` and `GetStaffingPlan`),
//! and the what-if runs each hour through [`staffing_hour`], the function the staffing
//! plan uses, so the console and the API can never disagree for the same inputs.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::domain::FieldViolation;
use crate::metrics::erlang::Staffing;
use crate::metrics::kpi::{weekday_hour, KpiFigures};
use crate::routing::hours::local_to_utc;
use crate::service::kpi::{staffing_hour, KpiRow, StaffingPlan};

/// Weekday names, Monday first (the heatmap's rows, as `GetKpiReport` numbers them).
pub const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Offered calls per local weekday (row, Monday first) and hour of day (column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heatmap {
    pub cells: [[u64; 24]; 7],
    /// IANA zone the weekdays and hours are local to.
    pub time_zone: String,
}

impl Heatmap {
    /// From a report's arrivals (`KpiReport::arrivals`, keyed by weekday and hour);
    /// keys outside the week are ignored.
    pub fn from_arrivals(arrivals: &BTreeMap<(u32, u32), u64>, time_zone: &str) -> Self {
        let mut cells = [[0u64; 24]; 7];
        for (&(day, hour), &n) in arrivals {
            if let Some(c) = cells
                .get_mut(day as usize)
                .and_then(|row| row.get_mut(hour as usize))
            {
                *c += n;
            }
        }
        Self {
            cells,
            time_zone: time_zone.to_owned(),
        }
    }

    /// From offered calls per 15-minute bucket start, bucketed in `tz` exactly as
    /// `GetKpiReport` buckets its arrivals.
    pub fn from_buckets(buckets: &[(DateTime<Utc>, u64)], tz: Tz) -> Self {
        Self::from_arrivals(&weekday_hour(buckets, tz), tz.name())
    }

    pub fn max(&self) -> u64 {
        self.cells.iter().flatten().copied().max().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.cells.iter().flatten().sum()
    }
}

/// Mean patience assumed for Erlang A until the supervisor enters one: two minutes is a
/// common planning figure for inbound service lines. The page says it is an assumption.
pub const DEFAULT_PATIENCE_SECS: f64 = 120.0;
/// Largest forecast the what-if takes for one hour; beyond it the Erlang searches get slow
/// and no single queue plausibly plans for more.
pub const MAX_FORECAST_PER_HOUR: f64 = 10_000.0;
/// Longest handle time and answer-time target the what-if takes, in seconds.
pub const MAX_WHAT_IF_SECS: f64 = 4.0 * 3600.0;
/// Longest mean patience the what-if takes: callers who would wait over an hour are
/// planned for with Erlang C (leave patience empty).
pub const MAX_PATIENCE_SECS: f64 = 3600.0;
/// Most offered load (calls x AHT) one hour of the what-if may carry, in Erlangs: a
/// thousand agents busy on one queue at once is past any single queue, and the Erlang A
/// search grows with the load (a day at this bound takes about a second of CPU).
pub const MAX_WHAT_IF_ERLANGS: f64 = 1_000.0;

/// The inputs of the staffing what-if, validated: a typical day of 24 local hours.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIf {
    /// Share of calls to answer within `target_secs`, in `(0, 1)`.
    pub target_fraction: f64,
    pub target_secs: f64,
    pub aht_secs: f64,
    /// `None`: Erlang C only.
    pub patience_secs: Option<f64>,
    /// Calls expected in each local hour, 0 to 23.
    pub forecast: [f64; 24],
}

/// One hour of the what-if's plan.
#[derive(Debug, Clone, PartialEq)]
pub struct WhatIfHour {
    /// Local hour of day.
    pub hour: u32,
    pub arrivals_per_hour: f64,
    pub erlang_c: Option<Staffing>,
    pub erlang_a: Option<Staffing>,
}

/// The form field holding the forecast of local hour `h`.
pub fn forecast_field(h: usize) -> String {
    format!("f{h:02}")
}

fn number(
    fields: &BTreeMap<String, String>,
    name: &str,
    v: &mut Vec<FieldViolation>,
) -> Option<f64> {
    let raw = fields.get(name).map(|s| s.trim()).unwrap_or("");
    if raw.is_empty() {
        return None;
    }
    match raw.parse::<f64>() {
        Ok(x) if x.is_finite() => Some(x),
        _ => {
            v.push(FieldViolation::new(
                name,
                format!("'{raw}' is not a number"),
            ));
            None
        }
    }
}

fn required(
    fields: &BTreeMap<String, String>,
    name: &str,
    v: &mut Vec<FieldViolation>,
) -> Option<f64> {
    let before = v.len();
    let x = number(fields, name, v);
    if x.is_none() && v.len() == before {
        v.push(FieldViolation::new(name, "required"));
    }
    x
}

fn in_range(
    x: Option<f64>,
    name: &str,
    ok: impl Fn(f64) -> bool,
    rule: &str,
    v: &mut Vec<FieldViolation>,
) -> Option<f64> {
    match x {
        Some(x) if !ok(x) => {
            v.push(FieldViolation::new(name, rule));
            None
        }
        x => x,
    }
}

impl WhatIf {
    /// Reads the what-if form: `sl_target` (percent), `answer_secs`, `aht_secs`,
    /// `patience_secs` (empty for Erlang C only) and `f00` to `f23` (calls per hour;
    /// empty is 0). Every problem is reported, not just the first.
    pub fn parse(fields: &BTreeMap<String, String>) -> Result<Self, Vec<FieldViolation>> {
        let mut v = Vec::new();
        let max = MAX_WHAT_IF_SECS;
        let sl = required(fields, "sl_target", &mut v);
        let sl = in_range(
            sl,
            "sl_target",
            |x| x > 0.0 && x < 100.0,
            "must be above 0 and below 100 (percent)",
            &mut v,
        );
        let answer = required(fields, "answer_secs", &mut v);
        let answer = in_range(
            answer,
            "answer_secs",
            |x| (0.0..=max).contains(&x),
            &format!("must be 0 to {max} seconds"),
            &mut v,
        );
        let aht = required(fields, "aht_secs", &mut v);
        let aht = in_range(
            aht,
            "aht_secs",
            |x| x > 0.0 && x <= max,
            &format!("must be above 0 and at most {max} seconds"),
            &mut v,
        );
        let patience = number(fields, "patience_secs", &mut v);
        let patience = in_range(
            patience,
            "patience_secs",
            |x| x > 0.0 && x <= MAX_PATIENCE_SECS,
            &format!(
                "must be above 0 and at most {MAX_PATIENCE_SECS} seconds (leave empty for Erlang C only)"
            ),
            &mut v,
        );
        let mut forecast = [0.0; 24];
        for (h, slot) in forecast.iter_mut().enumerate() {
            let name = forecast_field(h);
            let x = number(fields, &name, &mut v);
            let x = in_range(
                x,
                &name,
                |x| (0.0..=MAX_FORECAST_PER_HOUR).contains(&x),
                &format!("calls in hour {h:02}:00 must be 0 to {MAX_FORECAST_PER_HOUR}"),
                &mut v,
            );
            *slot = x.unwrap_or(0.0);
            if let Some(aht) = aht {
                let load = *slot * aht / 3600.0;
                if load > MAX_WHAT_IF_ERLANGS {
                    v.push(FieldViolation::new(
                        name,
                        format!(
                            "{} calls of {aht} s in hour {h:02}:00 are {load:.0} Erlangs; one queue plans for at most {MAX_WHAT_IF_ERLANGS}",
                            *slot
                        ),
                    ));
                }
            }
        }
        match (sl, answer, aht) {
            (Some(sl), Some(answer), Some(aht)) if v.is_empty() => Ok(WhatIf {
                target_fraction: sl / 100.0,
                target_secs: answer,
                aht_secs: aht,
                patience_secs: patience,
                forecast,
            }),
            _ => Err(v),
        }
    }

    /// The plan for these inputs, hour by hour, through the staffing plan's own
    /// per-hour function.
    pub fn plan(&self) -> Vec<WhatIfHour> {
        (0u32..)
            .zip(self.forecast)
            .map(|(hour, arrivals)| {
                let h = staffing_hour(
                    DateTime::UNIX_EPOCH,
                    arrivals,
                    self.aht_secs,
                    self.patience_secs,
                    self.target_secs,
                    self.target_fraction,
                );
                WhatIfHour {
                    hour,
                    arrivals_per_hour: h.arrivals_per_hour,
                    erlang_c: h.erlang_c,
                    erlang_a: h.erlang_a,
                }
            })
            .collect()
    }

    /// Starting values from a measured plan: the queue's target, the plan's mean handle
    /// time weighted by calls, and per local hour the mean arrivals over the range's days.
    pub fn from_plan(plan: &StaffingPlan, tz: Tz, patience_secs: Option<f64>) -> Self {
        let mut sums = [0.0; 24];
        let mut counts = [0u32; 24];
        let (mut weighted, mut calls) = (0.0, 0.0);
        for h in &plan.hours {
            let local = h.start.with_timezone(&tz);
            let i = chrono::Timelike::hour(&local) as usize;
            sums[i] += h.arrivals_per_hour;
            counts[i] += 1;
            weighted += h.aht_secs * h.arrivals_per_hour;
            calls += h.arrivals_per_hour;
        }
        let aht = if calls > 0.0 {
            weighted / calls
        } else {
            plan.hours.first().map_or(180.0, |h| h.aht_secs)
        };
        let mut forecast = [0.0; 24];
        for (i, f) in forecast.iter_mut().enumerate() {
            if counts[i] > 0 {
                // One decimal: a forecast a person reads and edits.
                *f = (sums[i] / f64::from(counts[i]) * 10.0).round() / 10.0;
            }
        }
        WhatIf {
            target_fraction: plan.target_fraction,
            target_secs: f64::from(plan.target_secs),
            aht_secs: (aht * 10.0).round() / 10.0,
            patience_secs,
            forecast,
        }
    }
}

/// The instant local midnight of `date` begins in `tz` (a midnight skipped by a clock
/// change begins at the first valid instant after it).
pub fn local_midnight(date: NaiveDate, tz: Tz) -> DateTime<Utc> {
    local_to_utc(tz, date.and_time(chrono::NaiveTime::MIN))
}

/// A KPI report's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// One local day, by hour.
    Day,
    /// The local week (Monday to Sunday) holding the date, by day.
    Week,
}

impl Period {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Week => "week",
        }
    }

    /// The local days the period covers.
    pub fn days(self, date: NaiveDate) -> Vec<NaiveDate> {
        match self {
            Self::Day => vec![date],
            Self::Week => {
                let monday =
                    date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
                (0..7).map(|i| monday + Duration::days(i)).collect()
            }
        }
    }

    /// `[from, to)` of the period in UTC: local midnight to local midnight, so a day
    /// with a clock change has 23 or 25 hours.
    pub fn range(self, date: NaiveDate, tz: Tz) -> (DateTime<Utc>, DateTime<Utc>) {
        let days = self.days(date);
        let first = days.first().copied().unwrap_or(date);
        let last = days.last().copied().unwrap_or(date);
        (
            local_midnight(first, tz),
            local_midnight(last + Duration::days(1), tz),
        )
    }
}

/// How a measure is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A share in `[0, 1]`, shown as a percentage.
    Share,
    Secs,
    /// A plain number (CES, mean attempts, NPS points).
    Plain,
}

/// One figure of a KPI report: the page's table, its charts and the CSV list the same
/// measures in this order.
pub struct Measure {
    pub key: &'static str,
    pub label: &'static str,
    pub unit: Unit,
    pub get: fn(&KpiFigures) -> Option<f64>,
}

/// The figures shown for every scope and interval (definitions in the README, "KPIs").
pub const MEASURES: &[Measure] = &[
    Measure {
        key: "service_level",
        label: "Service level",
        unit: Unit::Share,
        get: |f| f.service_level,
    },
    Measure {
        key: "asa_secs",
        label: "ASA",
        unit: Unit::Secs,
        get: |f| f.asa_secs,
    },
    Measure {
        key: "abandonment_rate",
        label: "Abandonment",
        unit: Unit::Share,
        get: |f| f.abandonment_rate,
    },
    Measure {
        key: "transfer_rate",
        label: "Transfer rate",
        unit: Unit::Share,
        get: |f| f.transfer_rate,
    },
    Measure {
        key: "fcr",
        label: "First-contact resolution",
        unit: Unit::Share,
        get: |f| f.fcr,
    },
    Measure {
        key: "callback_acceptance_rate",
        label: "Callback acceptance",
        unit: Unit::Share,
        get: |f| f.cb_acceptance_rate,
    },
    Measure {
        key: "callback_success_rate",
        label: "Callback success",
        unit: Unit::Share,
        get: |f| f.cb_success_rate,
    },
    Measure {
        key: "hold_time_avoided_secs",
        label: "Hold time avoided",
        unit: Unit::Secs,
        get: |f| Some(f.cb_hold_avoided_secs),
    },
    Measure {
        key: "csat",
        label: "CSAT",
        unit: Unit::Share,
        get: |f| f.csat,
    },
    Measure {
        key: "ces",
        label: "CES",
        unit: Unit::Plain,
        get: |f| f.ces,
    },
    Measure {
        key: "nps",
        label: "NPS",
        unit: Unit::Plain,
        get: |f| f.nps,
    },
];

/// A value for people: shares as percentages, seconds with one decimal, `-` for none.
pub fn display(unit: Unit, x: Option<f64>) -> String {
    match (unit, x) {
        (_, None) => "-".to_owned(),
        (Unit::Share, Some(x)) => format!("{:.1}%", x * 100.0),
        (Unit::Secs, Some(x)) => format!("{x:.1} s"),
        (Unit::Plain, Some(x)) => format!("{x:.1}"),
    }
}

/// One row of a report as the page and the CSV list it.
#[derive(Debug, Clone)]
pub struct ReportRow<'a> {
    /// Queue id, or [`ALL_QUEUES`].
    pub scope: &'a str,
    /// `interval` or `total`.
    pub kind: &'static str,
    pub row: &'a KpiRow,
}

/// The scope name of all queues together (a transferred call counted once): `*`, which
/// no queue id may contain.
pub const ALL_QUEUES: &str = "*";

/// The center's time zone for reports over all queues: the zone the queues' business
/// hours share, or UTC when they differ (a day must start at one instant for every row
/// of a report) or no queue keeps hours.
pub fn center_zone(zones: impl IntoIterator<Item = Tz>) -> Tz {
    let mut zones = zones.into_iter();
    match zones.next() {
        Some(first) if zones.all(|z| z == first) => first,
        _ => chrono_tz::UTC,
    }
}

/// Quotes a CSV field when it needs it (RFC 4180), and defuses text a spreadsheet would
/// run as a formula (a leading `=`, `+`, `-`, `@`, tab or CR gets a `'` in front): queue
/// ids come from a plan anyone with supervisor rights can edit.
pub fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

fn csv_number(x: Option<f64>) -> String {
    // `{}` prints the shortest text that reads back as the same f64: the CSV carries
    // the figures exactly as the API returns them.
    x.map(|x| format!("{x}")).unwrap_or_default()
}

/// The report as CSV: one line per scope and interval, then the scope's total; counts
/// first, then every [`MEASURES`] figure (empty where there is nothing to divide by).
pub fn csv(rows: &[ReportRow<'_>]) -> String {
    let mut out = String::from(
        "queue,row,start,end,offered,answered,abandoned,transferred,callbacks_offered,callbacks_accepted",
    );
    for m in MEASURES {
        out.push(',');
        out.push_str(m.key);
    }
    out.push_str("\r\n");
    for r in rows {
        let c = &r.row.counters;
        let mut fields = vec![
            csv_field(r.scope),
            r.kind.to_owned(),
            r.row.start.to_rfc3339(),
            r.row.end.to_rfc3339(),
            c.offered.to_string(),
            c.answered.to_string(),
            c.abandoned.to_string(),
            c.transferred.to_string(),
            c.cb_offered.to_string(),
            c.cb_accepted.to_string(),
        ];
        fields.extend(MEASURES.iter().map(|m| csv_number((m.get)(&r.row.figures))));
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::kpi::KpiCounters;
    use crate::service::kpi::StaffingHour;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn heatmap_buckets_in_local_time_across_the_autumn_clock_change() {
        let ny: Tz = "America/New_York".parse().unwrap();
        // Sunday 2026-11-01: 01:00-02:00 EDT happens, then 01:00-02:00 EST again.
        let buckets = [
            (at("2026-11-01T05:30:00Z"), 2), // 01:30 EDT
            (at("2026-11-01T06:30:00Z"), 3), // 01:30 EST, the same local hour again
            (at("2026-11-01T07:00:00Z"), 5), // 02:00 EST
            (at("2026-11-02T03:45:00Z"), 7), // Sunday 22:45 EST
            (at("2026-11-02T05:00:00Z"), 1), // Monday 00:00 EST
        ];
        let h = Heatmap::from_buckets(&buckets, ny);
        assert_eq!(h.cells[6][1], 5, "both runs of 01:00 are Sunday 01:00");
        assert_eq!(h.cells[6][2], 5);
        assert_eq!(h.cells[6][22], 7);
        assert_eq!(h.cells[0][0], 1);
        assert_eq!(h.total(), 18);
        assert_eq!(h.max(), 7);
        assert_eq!(h.time_zone, "America/New_York");
    }

    #[test]
    fn heatmap_buckets_in_local_time_across_the_spring_clock_change() {
        let london: Tz = "Europe/London".parse().unwrap();
        // Sunday 2026-03-29: 01:00 GMT jumps to 02:00 BST; local 01:xx never happens.
        let buckets = [
            (at("2026-03-29T00:45:00Z"), 1), // 00:45 GMT
            (at("2026-03-29T01:00:00Z"), 2), // 02:00 BST
            (at("2026-03-29T01:15:00Z"), 3), // 02:15 BST
        ];
        let h = Heatmap::from_buckets(&buckets, london);
        assert_eq!(h.cells[6][0], 1);
        assert_eq!(h.cells[6][1], 0, "the skipped hour stays empty");
        assert_eq!(h.cells[6][2], 5);
    }

    #[test]
    fn heatmap_ignores_keys_outside_the_week() {
        let arrivals = BTreeMap::from([((7, 0), 4), ((0, 24), 4), ((2, 9), 3)]);
        let h = Heatmap::from_arrivals(&arrivals, "UTC");
        assert_eq!(h.total(), 3);
        assert_eq!(h.cells[2][9], 3);
    }

    #[test]
    fn day_and_week_ranges_run_from_local_midnight_to_local_midnight() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let d = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
        let (from, to) = Period::Day.range(d, ny);
        assert_eq!(from, at("2026-11-01T04:00:00Z"));
        assert_eq!(
            to - from,
            Duration::hours(25),
            "the autumn day has 25 hours"
        );
        // Wednesday 2026-11-04 lies in the week of Monday 2026-11-02.
        let w = NaiveDate::from_ymd_opt(2026, 11, 4).unwrap();
        let (from, to) = Period::Week.range(w, ny);
        assert_eq!(from, at("2026-11-02T05:00:00Z"));
        assert_eq!(to, at("2026-11-09T05:00:00Z"));
        assert_eq!(Period::Week.days(w).len(), 7);
    }

    #[test]
    fn a_skipped_local_midnight_begins_at_the_first_instant_after_it() {
        // Santiago springs forward at 00:00 (to 01:00) on 2026-09-06.
        let scl: Tz = "America/Santiago".parse().unwrap();
        let d = NaiveDate::from_ymd_opt(2026, 9, 6).unwrap();
        assert_eq!(local_midnight(d, scl), at("2026-09-06T04:00:00Z"));
    }

    #[test]
    fn the_center_zone_is_the_one_all_queues_share() {
        let ny: Tz = "America/New_York".parse().unwrap();
        let london: Tz = "Europe/London".parse().unwrap();
        assert_eq!(center_zone([ny, ny]), ny);
        assert_eq!(center_zone([ny, london]), chrono_tz::UTC);
        assert_eq!(center_zone([]), chrono_tz::UTC);
    }

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("sales"), "sales");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("-x,y"), "\"'-x,y\"");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
    }

    #[test]
    fn csv_lists_counts_and_exact_figures_per_row() {
        let counters = KpiCounters {
            offered: 3,
            answered: 2,
            answered_in_target: 1,
            abandoned: 1,
            abandoned_after_target: 1,
            answer_wait_ms: 20_000,
            ..Default::default()
        };
        let row = KpiRow {
            start: at("2026-11-25T00:00:00Z"),
            end: at("2026-11-26T00:00:00Z"),
            figures: KpiFigures::of(&counters),
            counters,
        };
        let text = csv(&[ReportRow {
            scope: "q,1",
            kind: "total",
            row: &row,
        }]);
        let lines: Vec<&str> = text.split("\r\n").collect();
        assert_eq!(lines.len(), 3, "header, one row, final line break");
        let header: Vec<&str> = lines[0].split(',').collect();
        assert_eq!(header.len(), 10 + MEASURES.len());
        assert!(lines[1].starts_with(
            "\"q,1\",total,2026-11-25T00:00:00+00:00,2026-11-26T00:00:00+00:00,3,2,1,0,0,0,"
        ));
        let sl = header.iter().position(|h| *h == "service_level").unwrap();
        // The quoted scope holds one comma: fields after it sit one further right.
        let fields: Vec<&str> = lines[1].split(',').collect();
        assert_eq!(fields[sl + 1], format!("{}", 1.0 / 3.0));
        let csat = header.iter().position(|h| *h == "csat").unwrap();
        assert_eq!(fields[csat + 1], "", "no survey answers: empty, not 0");
    }

    fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn what_if_form_reports_every_bad_field() {
        let err = WhatIf::parse(&form(&[
            ("sl_target", "100"),
            ("answer_secs", "x"),
            ("aht_secs", "-3"),
            ("patience_secs", "0"),
            ("f03", "-1"),
            ("f04", "NaN"),
        ]))
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "sl_target",
                "answer_secs",
                "aht_secs",
                "patience_secs",
                "f03",
                "f04"
            ]
        );
        let err = WhatIf::parse(&form(&[])).unwrap_err();
        let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["sl_target", "answer_secs", "aht_secs"]);
    }

    #[test]
    fn what_if_refuses_loads_past_one_queue() {
        let err = WhatIf::parse(&form(&[
            ("sl_target", "80"),
            ("answer_secs", "20"),
            ("aht_secs", "3600"),
            ("patience_secs", "3601"),
            ("f08", "1000"),
            ("f09", "1001"),
        ]))
        .unwrap_err();
        let fields: Vec<&str> = err.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["patience_secs", "f09"], "{err:?}");
        assert!(err[1].description.contains("1001 Erlangs"), "{err:?}");
    }

    #[test]
    fn what_if_plans_each_hour_as_the_staffing_plan_does() {
        let w = WhatIf::parse(&form(&[
            ("sl_target", "80"),
            ("answer_secs", "20"),
            ("aht_secs", "240"),
            ("patience_secs", "90"),
            ("f09", "120"),
            ("f10", "60.5"),
        ]))
        .unwrap();
        assert_eq!(w.forecast[0], 0.0, "an empty hour is no calls");
        let plan = w.plan();
        assert_eq!(plan.len(), 24);
        for h in &plan {
            let same = staffing_hour(
                DateTime::UNIX_EPOCH,
                w.forecast[h.hour as usize],
                240.0,
                Some(90.0),
                20.0,
                0.8,
            );
            assert_eq!(h.erlang_c, same.erlang_c);
            assert_eq!(h.erlang_a, same.erlang_a);
        }
        let nine = &plan[9];
        assert!(nine.erlang_c.is_some_and(|s| s.service_level >= 0.8));
        assert!(nine.erlang_a.unwrap().agents <= nine.erlang_c.unwrap().agents);
        assert_eq!(plan[0].erlang_c, None, "no calls, nothing to plan");
    }

    #[test]
    fn what_if_starts_from_the_measured_means_per_local_hour() {
        let tz: Tz = "Europe/London".parse().unwrap();
        let hour = |s: &str, calls: f64, aht: f64| StaffingHour {
            start: at(s),
            arrivals_per_hour: calls,
            aht_secs: aht,
            erlang_c: None,
            erlang_a: None,
        };
        let plan = StaffingPlan {
            queue_id: "q".into(),
            target_fraction: 0.9,
            target_secs: 30,
            hours: vec![
                hour("2026-11-24T09:00:00Z", 10.0, 100.0),
                hour("2026-11-25T09:00:00Z", 20.0, 250.0),
                hour("2026-11-25T10:00:00Z", 0.0, 999.0),
            ],
        };
        let w = WhatIf::from_plan(&plan, tz, Some(60.0));
        assert_eq!(w.forecast[9], 15.0);
        assert_eq!(w.forecast[10], 0.0);
        assert_eq!(w.aht_secs, 200.0, "weighted by calls");
        assert_eq!((w.target_fraction, w.target_secs), (0.9, 30.0));
    }
}
