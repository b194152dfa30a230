//! The KPIs page: a day (by hour) or week (by day) report per queue and for all queues
//! together, with a chart per figure and the report as a CSV download.
//!
//! Every figure is `GetKpiReport`'s for the same range (the same service function,
//! [`Holdless::kpi_report`]): a day is one report by 1-hour intervals; a week is one
//! report per local day, so a week with a clock change still has seven whole days.
//! Periods run from local midnight in the selected queue's business-hours time zone, or,
//! for all queues, in the zone the queues' business hours share (UTC when they differ).

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{Duration, NaiveDate};
use chrono_tz::Tz;
use maud::{html, Markup, PreEscaped};
use serde::Deserialize;

use super::charts::{bar_chart, line_chart};
use super::report::{
    center_zone, csv, display, local_midnight, Period, ReportRow, Unit, ALL_QUEUES, MEASURES,
};
use super::{page, ConsoleError, ConsoleState, Nav, SignedIn};
use crate::service::kpi::{KpiQuery, KpiRow};
use crate::service::Holdless;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/kpis", get(show))
        .route("/kpis.csv", get(download))
}

/// `GET /kpis?period=day|week&date=YYYY-MM-DD&queue=ID` (and the same for `/kpis.csv`);
/// defaults: a day, today, all queues.
#[derive(Debug, Deserialize, Default)]
pub struct KpiParams {
    #[serde(default)]
    pub period: String,
    #[serde(default)]
    pub date: String,
    #[serde(default)]
    pub queue: String,
}

/// One queue's (or all queues') part of the report.
struct Scope {
    id: String,
    total: KpiRow,
    /// By hour (day) or by local day (week).
    series: Vec<KpiRow>,
}

struct Report {
    period: Period,
    date: NaiveDate,
    tz: Tz,
    /// The queue charted, or [`ALL_QUEUES`].
    selected: String,
    queues: Vec<String>,
    /// The plan's queues, then all queues together.
    scopes: Vec<Scope>,
    fcr_final: bool,
}

fn bad(field: &str, message: impl Into<String>) -> ConsoleError {
    ConsoleError::BadRequest(vec![(field.to_owned(), message.into())])
}

async fn scope(
    h: &Holdless,
    id: &str,
    period: Period,
    date: NaiveDate,
    tz: Tz,
) -> Result<(Scope, bool), ConsoleError> {
    let queue_id = (id != ALL_QUEUES).then(|| id.to_owned());
    let (from, to) = period.range(date, tz);
    let whole = h
        .kpi_report(KpiQuery {
            queue_id: queue_id.clone(),
            from,
            to,
            interval: (period == Period::Day).then(|| Duration::hours(1)),
        })
        .await?;
    let series = match period {
        Period::Day => whole.intervals,
        Period::Week => {
            let mut days = Vec::new();
            for d in period.days(date) {
                let r = h
                    .kpi_report(KpiQuery {
                        queue_id: queue_id.clone(),
                        from: local_midnight(d, tz),
                        to: local_midnight(d + Duration::days(1), tz),
                        interval: None,
                    })
                    .await?;
                days.push(r.total);
            }
            days
        }
    };
    Ok((
        Scope {
            id: id.to_owned(),
            total: whole.total,
            series,
        },
        whole.fcr_final,
    ))
}

async fn build(h: &Holdless, p: &KpiParams) -> Result<Report, ConsoleError> {
    let period = match p.period.trim() {
        "" => Period::Day,
        s => Period::parse(s).ok_or_else(|| bad("period", "must be day or week"))?,
    };
    let plan = h.active_plan();
    let queues: Vec<String> = plan.queues.iter().map(|q| q.id.clone()).collect();
    let selected = match p.queue.trim() {
        "" => ALL_QUEUES.to_owned(),
        id => id.to_owned(),
    };
    let tz = plan
        .queue(&selected)
        .and_then(|q| q.business_hours.as_ref().map(|b| b.time_zone()))
        .unwrap_or_else(|| {
            center_zone(
                plan.queues
                    .iter()
                    .filter_map(|q| q.business_hours.as_ref().map(|b| b.time_zone())),
            )
        });
    let date = match p.date.trim() {
        "" => h.clock().now().with_timezone(&tz).date_naive(),
        raw => NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .map_err(|_| bad("date", format!("'{raw}' is not a date (YYYY-MM-DD)")))?,
    };
    // The selected scope first, so a mistyped queue is refused before any other work.
    let (first, fcr_final) = scope(h, &selected, period, date, tz).await?;
    let mut scopes = Vec::new();
    // A queue no longer in the plan keeps its row while it has figures in the range.
    let mut ids: Vec<&str> = queues.iter().map(String::as_str).collect();
    if selected != ALL_QUEUES && !queues.contains(&selected) {
        ids.push(&selected);
    }
    ids.push(ALL_QUEUES);
    let mut first = Some(first);
    for id in ids {
        if id == selected {
            if let Some(s) = first.take() {
                scopes.push(s);
            }
        } else {
            scopes.push(scope(h, id, period, date, tz).await?.0);
        }
    }
    Ok(Report {
        period,
        date,
        tz,
        selected,
        queues,
        scopes,
        fcr_final,
    })
}

fn labels(r: &Report, rows: &[KpiRow]) -> Vec<String> {
    let format = match r.period {
        Period::Day => "%H:%M",
        Period::Week => "%a %d",
    };
    rows.iter()
        .map(|row| row.start.with_timezone(&r.tz).format(format).to_string())
        .collect()
}

fn query_string(r: &Report) -> String {
    let mut q = format!(
        "period={}&date={}",
        r.period.as_str(),
        r.date.format("%Y-%m-%d")
    );
    if r.selected != ALL_QUEUES {
        q.push_str("&queue=");
        q.push_str(&url_encode(&r.selected));
    }
    q
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn figure_cells(row: &KpiRow) -> Markup {
    let c = &row.counters;
    html! {
        td.num data-key="offered" data-value=(c.offered) { (c.offered) }
        td.num data-key="answered" data-value=(c.answered) { (c.answered) }
        td.num data-key="abandoned" data-value=(c.abandoned) { (c.abandoned) }
        @for m in MEASURES {
            @let v = (m.get)(&row.figures);
            @match v {
                Some(x) => td.num data-key=(m.key) data-value=(x) { (display(m.unit, v)) },
                None => td.num data-key=(m.key) { "-" },
            }
        }
    }
}

fn header_cells(first: &str) -> Markup {
    html! {
        th { (first) } th { "Offered" } th { "Answered" } th { "Abandoned" }
        @for m in MEASURES { th { (m.label) } }
    }
}

async fn show(
    State(state): State<ConsoleState>,
    Extension(_me): Extension<SignedIn>,
    Query(p): Query<KpiParams>,
) -> Result<Markup, ConsoleError> {
    let h = state.holdless()?;
    let r = build(&h, &p).await?;
    let chosen = r
        .scopes
        .iter()
        .find(|s| s.id == r.selected)
        .expect("build puts the selected scope in the report");
    let labels = labels(&r, &chosen.series);
    let offered: Vec<Option<f64>> = chosen
        .series
        .iter()
        .map(|row| Some(row.counters.offered as f64))
        .collect();
    let (from, to) = r.period.range(r.date, r.tz);
    let body = html! {
        // Figures stay on one line; a wide table scrolls instead of running off the page.
        style { (PreEscaped(".kpi-wide{overflow-x:auto}.kpi-wide table{font-size:.85rem}.kpi-wide td{white-space:nowrap}")) }
        h1 { "KPIs" }
        form.filters method="get" action="/kpis" {
            label { "Period "
                select name="period" {
                    option value="day" selected[r.period == Period::Day] { "Day (by hour)" }
                    option value="week" selected[r.period == Period::Week] { "Week (by day)" }
                }
            }
            label { "Date " input type="date" name="date" value=(r.date.format("%Y-%m-%d")); }
            label { "Queue "
                select name="queue" {
                    option value="" selected[r.selected == ALL_QUEUES] { "All queues" }
                    @for q in &r.queues { option value=(q) selected[*q == r.selected] { (q) } }
                }
            }
            button type="submit" { "Show" }
            a.button href=(format!("/kpis.csv?{}", query_string(&r))) download { "Download CSV" }
        }
        p {
            (from.with_timezone(&r.tz).format("%a %d %b %Y %H:%M")) " to "
            (to.with_timezone(&r.tz).format("%a %d %b %Y %H:%M")) " (" (r.tz.name()) "). "
            "All queues together count a transferred call once, at the queue it entered. "
            "Definitions: the README's KPIs section."
        }
        @if !r.fcr_final {
            p.note { "First-contact resolution is provisional: a repeat contact can still arrive within 7 days after the period." }
        }
        section {
            h2 { "Per queue" }
            div.kpi-wide { table.list.kpi-totals {
                thead { tr { (header_cells("Queue")) } }
                tbody {
                    @for s in &r.scopes {
                        tr data-scope=(s.id) {
                            th { @if s.id == ALL_QUEUES { "All queues" } @else { (s.id) } }
                            (figure_cells(&s.total))
                        }
                    }
                }
            } }
        }
        section.charts {
            h2 { @if r.selected == ALL_QUEUES { "All queues" } @else { "Queue " (r.selected) } }
            div style="display:flex;flex-wrap:wrap;gap:0 1.5rem" {
            (bar_chart("Offered calls", Unit::Plain, &labels, &offered))
            @for m in MEASURES {
                @let values: Vec<Option<f64>> = chosen.series.iter().map(|row| (m.get)(&row.figures)).collect();
                @if m.key == "hold_time_avoided_secs" {
                    (bar_chart(m.label, m.unit, &labels, &values))
                } @else {
                    (line_chart(m.label, m.unit, &labels, &values))
                }
            }
            }
        }
        section {
            h2 { @if r.period == Period::Day { "By hour" } @else { "By day" } }
            div.kpi-wide { table.list.kpi-series {
                thead { tr { (header_cells(if r.period == Period::Day { "Hour" } else { "Day" })) } }
                tbody {
                    @for (row, label) in chosen.series.iter().zip(&labels) {
                        tr data-start=(row.start.to_rfc3339()) {
                            th { (label) }
                            (figure_cells(row))
                        }
                    }
                }
            } }
        }
    };
    Ok(page("KPIs", Nav::Kpis, body))
}

/// The CSV file name: period, date and queue, with anything but letters, digits, `-`
/// and `_` in a queue id replaced (it ends up in a header and a file system).
fn file_name(r: &Report) -> String {
    let queue: String = r
        .selected
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "holdless-kpis-{}-{}-{queue}.csv",
        r.period.as_str(),
        r.date.format("%Y-%m-%d")
    )
}

async fn download(
    State(state): State<ConsoleState>,
    Query(p): Query<KpiParams>,
) -> Result<Response, ConsoleError> {
    let h = state.holdless()?;
    let r = build(&h, &p).await?;
    let mut rows = Vec::new();
    for s in &r.scopes {
        rows.extend(s.series.iter().map(|row| ReportRow {
            scope: &s.id,
            kind: "interval",
            row,
        }));
        rows.push(ReportRow {
            scope: &s.id,
            kind: "total",
            row: &s.total,
        });
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", file_name(&r)),
            ),
        ],
        csv(&rows),
    )
        .into_response())
}
