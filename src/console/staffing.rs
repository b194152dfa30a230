//! The Staffing page: when calls come (a weekday x hour heatmap of offered calls over a
//! range of days), the agents each hour needed for the queue's service-level target by
//! Erlang C and by Erlang A (callers with a mean patience), next to the agents logged in
//! now, and a what-if that re-plans a typical day from edited targets, handle time,
//! patience and an hourly forecast.
//!
//! The figures are those of `GetKpiReport` (the heatmap) and `GetStaffingPlan` (the
//! hourly plan), from the same service functions; the what-if runs every hour through
//! the staffing plan's own per-hour function ([`crate::service::kpi::staffing_hour`]).
//!
//! Dates are local days in the queue's business-hours time zone (UTC for a queue open
//! around the clock); `to` is included. Staffed agents are the agents logged in now
//! (available, reserved, busy or in wrap-up, as the telephony platform reports them):
//! holdless keeps no history of logins, so past hours have no staffed figure.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;
use maud::{html, Markup};
use serde::Deserialize;

use super::charts::{heat_legend, heatmap};
use super::report::{
    forecast_field, local_midnight, Heatmap, WhatIf, WhatIfHour, DEFAULT_PATIENCE_SECS,
};
use super::{csrf_field, page, ConsoleError, ConsoleState, Nav, SignedIn};
use crate::domain::FieldViolation;
use crate::metrics::erlang::Staffing;
use crate::service::kpi::{KpiQuery, StaffingPlan, StaffingQuery};
use crate::service::Holdless;

/// Most days one page covers (the staffing plan stops at 31 days of hours; a month with
/// a clock change has one hour more).
pub const MAX_DAYS: i64 = 30;
/// Days shown when the page is opened without a range: the week up to today.
pub const DEFAULT_DAYS: i64 = 7;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/staffing", get(show))
        .route("/staffing/what-if", post(what_if))
}

/// `GET /staffing?from=YYYY-MM-DD&to=YYYY-MM-DD&queue=ID&patience=SECS`; every field
/// may be left out.
#[derive(Debug, Deserialize, Default)]
pub struct StaffingParams {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub patience: String,
}

/// What the page measured for one queue and range.
struct Measured {
    queue_id: String,
    queues: Vec<String>,
    tz: Tz,
    from_date: NaiveDate,
    to_date: NaiveDate,
    heatmap: Heatmap,
    plan: StaffingPlan,
    patience_secs: f64,
    /// Agents logged in now for the queue.
    staffed: u32,
    now: DateTime<Utc>,
}

fn bad(field: &str, message: impl Into<String>) -> ConsoleError {
    ConsoleError::BadRequest(vec![(field.to_owned(), message.into())])
}

fn date(field: &str, raw: &str) -> Result<Option<NaiveDate>, ConsoleError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(Some)
        .map_err(|_| bad(field, format!("'{raw}' is not a date (YYYY-MM-DD)")))
}

async fn measure(h: &Holdless, p: &StaffingParams) -> Result<Measured, ConsoleError> {
    let plan = h.active_plan();
    let queues: Vec<String> = plan.queues.iter().map(|q| q.id.clone()).collect();
    let queue = match p.queue.trim() {
        "" => plan
            .queues
            .first()
            .ok_or_else(|| bad("queue", "the active plan has no queues"))?,
        id => plan
            .queue(id)
            .ok_or_else(|| bad("queue", format!("queue '{id}' is not in the active plan")))?,
    };
    let tz = queue
        .business_hours
        .as_ref()
        .map_or(chrono_tz::UTC, |b| b.time_zone());
    let now = h.clock().now();
    let today = now.with_timezone(&tz).date_naive();
    let to_date = date("to", &p.to)?.unwrap_or(today);
    let from_date = date("from", &p.from)?.unwrap_or(to_date - Duration::days(DEFAULT_DAYS - 1));
    if from_date > to_date {
        return Err(bad("to", "must not be before from"));
    }
    if (to_date - from_date).num_days() >= MAX_DAYS {
        return Err(bad("to", format!("at most {MAX_DAYS} days per page")));
    }
    let patience_secs = match p.patience.trim() {
        "" => DEFAULT_PATIENCE_SECS,
        raw => match raw.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => x,
            _ => return Err(bad("patience", "must be a positive number of seconds")),
        },
    };
    let from = local_midnight(from_date, tz);
    let to = local_midnight(to_date + Duration::days(1), tz);
    let report = h
        .kpi_report(KpiQuery {
            queue_id: Some(queue.id.clone()),
            from,
            to,
            interval: None,
        })
        .await?;
    let staffing = h
        .staffing_plan(StaffingQuery {
            queue_id: queue.id.clone(),
            from,
            to,
            patience_secs: Some(patience_secs),
            arrivals_per_hour: None,
            aht_secs: None,
        })
        .await?;
    let staffed = h
        .queue_stats(Some(&queue.id))?
        .first()
        .map_or(0, |(_, s)| s.agents.staffed());
    Ok(Measured {
        queue_id: queue.id.clone(),
        queues,
        tz,
        from_date,
        to_date,
        heatmap: Heatmap::from_arrivals(&report.arrivals, &report.arrivals_time_zone),
        plan: staffing,
        patience_secs,
        staffed,
        now,
    })
}

async fn show(
    State(state): State<ConsoleState>,
    Extension(me): Extension<SignedIn>,
    Query(p): Query<StaffingParams>,
) -> Result<Markup, ConsoleError> {
    let h = state.holdless()?;
    let m = measure(&h, &p).await?;
    let start = WhatIf::from_plan(&m.plan, m.tz, Some(m.patience_secs));
    Ok(render(&me, &m, &inputs_of(&start), None))
}

async fn what_if(
    State(state): State<ConsoleState>,
    Extension(me): Extension<SignedIn>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    let fields: BTreeMap<String, String> = fields.into_iter().collect();
    let field = |k: &str| fields.get(k).cloned().unwrap_or_default();
    let p = StaffingParams {
        from: field("from"),
        to: field("to"),
        queue: field("queue"),
        patience: String::new(),
    };
    let h = state.holdless()?;
    let m = measure(&h, &p).await?;
    Ok(match WhatIf::parse(&fields) {
        Ok(w) => {
            // Up to a second of Erlang searches: off the async threads, like any
            // CPU-bound work, so the wallboard's streams keep flowing meanwhile.
            let plan = tokio::task::spawn_blocking(move || w.plan())
                .await
                .map_err(|e| ConsoleError::Internal(format!("what-if plan failed: {e}")))?;
            render(&me, &m, &fields, Some(Ok(plan))).into_response()
        }
        Err(v) => (
            StatusCode::BAD_REQUEST,
            render(&me, &m, &fields, Some(Err(v))),
        )
            .into_response(),
    })
}

/// The what-if form's values as text.
fn inputs_of(w: &WhatIf) -> BTreeMap<String, String> {
    let mut out = BTreeMap::from([
        (
            "sl_target".to_owned(),
            format!("{}", w.target_fraction * 100.0),
        ),
        ("answer_secs".to_owned(), format!("{}", w.target_secs)),
        ("aht_secs".to_owned(), format!("{}", w.aht_secs)),
        (
            "patience_secs".to_owned(),
            w.patience_secs.map(|p| format!("{p}")).unwrap_or_default(),
        ),
    ]);
    for (h, f) in w.forecast.iter().enumerate() {
        out.insert(forecast_field(h), format!("{f}"));
    }
    out
}

/// A required-agents cell; `key` names the column for scripts and tests.
fn agents(key: &str, s: Option<&Staffing>) -> Markup {
    match s {
        Some(s) => html! {
            td.num data-key=(key) data-value=(s.agents) title=(format!(
                "service level {:.1}%, ASA {:.1} s, occupancy {:.1}%",
                s.service_level * 100.0, s.asa_secs, s.occupancy * 100.0
            )) { (s.agents) }
        },
        None => html! { td.num data-key=(key) { "-" } },
    }
}

fn render(
    me: &SignedIn,
    m: &Measured,
    inputs: &BTreeMap<String, String>,
    result: Option<Result<Vec<WhatIfHour>, Vec<FieldViolation>>>,
) -> Markup {
    let value = |k: &str| inputs.get(k).cloned().unwrap_or_default();
    let target = format!(
        "{:.1}% answered within {} s",
        m.plan.target_fraction * 100.0,
        m.plan.target_secs
    );
    // Hours without calls have no prediction; listing them would bury the busy hours
    // of a week under a hundred rows of dashes. The current hour stays for its
    // staffed figure.
    let listed: Vec<_> = m
        .plan
        .hours
        .iter()
        .map(|h| (h, m.now >= h.start && m.now < h.start + Duration::hours(1)))
        .filter(|(h, now)| *now || h.arrivals_per_hour > 0.0)
        .collect();
    let quiet = m.plan.hours.len() - listed.len();
    let body = html! {
        h1 { "Staffing" }
        form.filters method="get" action="/staffing" {
            label { "Queue "
                select name="queue" {
                    @for q in &m.queues {
                        option value=(q) selected[*q == m.queue_id] { (q) }
                    }
                }
            }
            label { "From " input type="date" name="from" value=(m.from_date.format("%Y-%m-%d")); }
            label { "To " input type="date" name="to" value=(m.to_date.format("%Y-%m-%d")); }
            label { "Patience (s) " input type="number" name="patience" min="1" step="any" value=(m.patience_secs); }
            button type="submit" { "Show" }
        }
        p {
            "Queue " strong { (m.queue_id) } ", target " (target)
            ". Days and hours are local time in " (m.tz.name()) "."
        }
        section.heat {
            h2 { "When calls come" }
            (heatmap(&m.heatmap))
            (heat_legend(m.heatmap.max()))
            p.note { "Offered calls (answered, abandoned or transferred while waiting) counted in the hour they entered the queue, as GetKpiReport reports them." }
        }
        section.what-if {
            h2 { "What if" }
            p.note { "A typical day of 24 local hours, planned hour by hour with the same formulas as the plan below. Leave patience empty for Erlang C only." }
            @if let Some(Err(v)) = &result {
                div.flash.bad role="alert" {
                    p { "The plan was not recomputed:" }
                    ul { @for e in v { li { (e.field) ": " (e.description) } } }
                }
            }
            form method="post" action="/staffing/what-if" {
                (csrf_field(me))
                input type="hidden" name="queue" value=(m.queue_id);
                input type="hidden" name="from" value=(m.from_date.format("%Y-%m-%d"));
                input type="hidden" name="to" value=(m.to_date.format("%Y-%m-%d"));
                div.row {
                    label { "Service level (%) " input name="sl_target" inputmode="decimal" value=(value("sl_target")); }
                    label { "answered within (s) " input name="answer_secs" inputmode="decimal" value=(value("answer_secs")); }
                    label { "AHT (s) " input name="aht_secs" inputmode="decimal" value=(value("aht_secs")); }
                    label { "Patience (s) " input name="patience_secs" inputmode="decimal" value=(value("patience_secs")); }
                }
                @for half in [0..12, 12..24] {
                    table.forecast style="border-collapse:collapse;margin:.4rem 0" {
                        tr {
                            th style="text-align:left;padding-right:.5rem" { "Hour" }
                            @for h in half.clone() { th { (format!("{h:02}")) } }
                        }
                        tr {
                            th style="text-align:left;padding-right:.5rem" { "Calls" }
                            @for h in half {
                                td { input name=(forecast_field(h)) inputmode="decimal" style="width:4.2rem" value=(value(&forecast_field(h))); }
                            }
                        }
                    }
                }
                button type="submit" { "Recompute" }
            }
            @if let Some(Ok(hours)) = &result {
                (what_if_table(hours))
            }
        }
        section.plan {
            h2 { "Measured hours" }
            p {
                "Agents logged in now for this queue: " strong #staffed-now data-value=(m.staffed) { (m.staffed) }
                " (available, reserved, busy or in wrap-up, as the telephony platform reports agent states). "
                "holdless keeps no history of logins, so only the current hour shows a staffed figure."
            }
            p.note {
                "Arrivals are offered calls plus accepted callbacks; handle time is the hour's measured mean (else the range's, else the queue's default). "
                "Required agents reach the target by Erlang C, and by Erlang A with callers' mean patience of " (m.patience_secs) " s"
                @if m.patience_secs == DEFAULT_PATIENCE_SECS { " (an assumption: set your measured patience above)" }
                ". The figures are those of GetStaffingPlan for the same range."
            }
            table.list.staffing-plan {
                thead { tr {
                    th { "Hour (" (m.tz.name()) ")" } th { "Arrivals" } th { "AHT (s)" }
                    th { "Required (Erlang C)" } th { "Required (Erlang A)" } th { "Staffed" }
                } }
                tbody {
                    @for (h, now) in listed.iter() {
                        @let now = *now;
                        tr data-start=(h.start.to_rfc3339()) {
                            td { (h.start.with_timezone(&m.tz).format("%a %d %b %H:%M")) }
                            td.num data-key="arrivals" data-value=(h.arrivals_per_hour) { (h.arrivals_per_hour) }
                            td.num data-key="aht_secs" data-value=(h.aht_secs) { (format!("{:.1}", h.aht_secs)) }
                            (agents("erlang_c", h.erlang_c.as_ref()))
                            (agents("erlang_a", h.erlang_a.as_ref()))
                            @if now { td.num.staffed data-key="staffed" data-value=(m.staffed) { (m.staffed) } } @else { td.num data-key="staffed" { "-" } }
                        }
                    }
                }
            }
            @if quiet > 0 {
                p.note #quiet-hours data-value=(quiet) { (quiet) " hours without calls are not listed (nothing to plan)." }
            }
        }
    };
    page("Staffing", Nav::Staffing, body)
}

fn what_if_table(hours: &[WhatIfHour]) -> Markup {
    let sum = |f: fn(&WhatIfHour) -> Option<u32>| hours.iter().filter_map(f).sum::<u32>();
    let c_total = sum(|h| h.erlang_c.map(|s| s.agents));
    let a_total = sum(|h| h.erlang_a.map(|s| s.agents));
    html! {
        table.list.what-if-plan {
            thead { tr {
                th { "Hour" } th { "Calls" }
                th { "Required (Erlang C)" } th { "Service level (C)" } th { "ASA (C, s)" }
                th { "Required (Erlang A)" } th { "Service level (A)" } th { "Abandoning (A)" }
            } }
            tbody {
                @for h in hours {
                    tr data-hour=(h.hour) {
                        td { (format!("{:02}:00", h.hour)) }
                        td.num data-key="arrivals" data-value=(h.arrivals_per_hour) { (h.arrivals_per_hour) }
                        (agents("erlang_c", h.erlang_c.as_ref()))
                        (share("service_level_c", h.erlang_c.map(|s| s.service_level)))
                        td.num { (h.erlang_c.map_or("-".to_owned(), |s| format!("{:.1}", s.asa_secs))) }
                        (agents("erlang_a", h.erlang_a.as_ref()))
                        (share("service_level_a", h.erlang_a.map(|s| s.service_level)))
                        (share("abandoning_a", h.erlang_a.map(|s| s.prob_abandon)))
                    }
                }
            }
            tfoot { tr {
                th { "Agent hours" } td {}
                td.num #agent-hours-c data-value=(c_total) { (c_total) } td {} td {}
                td.num #agent-hours-a data-value=(a_total) { (a_total) } td {} td {}
            } }
        }
    }
}

fn share(key: &str, x: Option<f64>) -> Markup {
    match x {
        Some(x) => {
            html! { td.num data-key=(key) data-value=(x) { (format!("{:.1}%", x * 100.0)) } }
        }
        None => html! { td.num data-key=(key) { "-" } },
    }
}
