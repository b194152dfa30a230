//! The wallboard: a tile per queue, live, readable from across a room.
//!
//! Each tile shows who waits (calls in line, the longest wait, the wait a caller
//! arriving now is told), the agents by state, the callbacks pending and due, and
//! today's service level and abandonment against target, colored by threshold.
//!
//! Live: one board task per console samples the floor every [`LIVE_TICK`] (today's
//! KPIs every [`KPI_TICK`]) while at least one wallboard is open, renders the tiles
//! with [`tiles`] (the function the first page render uses too), and publishes the
//! HTML only when it changed. Each open wallboard holds a server-sent event stream
//! (`/wallboard/events`) and htmx swaps the tiles in, so a routed call, an answer or
//! an agent change shows within a second, without a reload. The work does not grow
//! with the number of wall screens: they all share the one sample.
//!
//! Colors: service level green at or above the queue's target, amber within 10
//! points below it, red further below; abandonment green up to
//! [`ABANDON_TARGET`], amber up to twice that, red above. The plan has no
//! abandonment target, so the console uses the common 5% one.
//!
//! Full-screen mode: `/wallboard?wall=1` drops the navigation and scales the type up;
//! the "Full screen" button also asks the browser for full screen.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, TimeZone, Utc};
use maud::{html, Markup};
use serde::Deserialize;
use tokio::sync::watch;

use super::{page, ConsoleError, ConsoleState, Nav};
use crate::domain::callback::CallbackState;
use crate::live::floor::AgentCounts;
use crate::service::kpi::KpiQuery;
use crate::service::Holdless;
use crate::store::CallbackFilter;

/// How often the floor is sampled for open wallboards (well inside the 1 s promise).
pub const LIVE_TICK: Duration = Duration::from_millis(250);
/// How often today's service level and abandonment are recomputed from the KPI store.
pub const KPI_TICK: Duration = Duration::from_secs(5);
/// Abandonment rate (after the 5 s grace) a contact center commonly aims under.
pub const ABANDON_TARGET: f64 = 0.05;
/// Pending callbacks counted per queue; past it the tile says "500+".
pub const MAX_COUNTED_CALLBACKS: usize = 500;

/// One queue's tile, as sampled.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    pub queue_id: String,
    pub name: String,
    pub open: bool,
    pub waiting: u32,
    pub longest_wait: Duration,
    pub ewt: Option<Duration>,
    pub agents: AgentCounts,
    pub callbacks_pending: usize,
    pub callbacks_due: usize,
    pub sl_today: Option<f64>,
    pub sl_target: f64,
    pub sl_secs: u32,
    pub abandon_today: Option<f64>,
}

/// Today's KPI figures of a queue: (service level, abandonment rate).
type Today = HashMap<String, (Option<f64>, Option<f64>)>;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/wallboard", get(wallboard))
        .route("/wallboard/events", get(events))
}

#[derive(Deserialize, Default)]
pub struct WallQuery {
    #[serde(default)]
    wall: Option<String>,
}

async fn wallboard(
    State(state): State<ConsoleState>,
    Query(q): Query<WallQuery>,
) -> Result<Markup, ConsoleError> {
    let holdless = state.holdless()?;
    let today = today_kpis(&holdless).await;
    let tiles = sample(&holdless, &today).await?;
    let wall = q.wall.is_some_and(|w| w != "0");
    let body = html! {
        div.wallboard.wall[wall] hx-ext="sse" sse-connect="/wallboard/events" {
            div.wallbar {
                h1 { "Wallboard" }
                span.live-status #live-status { "live" }
                @if wall {
                    a.button href="/wallboard" { "Exit wall mode" }
                } @else {
                    a.button href="/wallboard?wall=1" data-fullscreen { "Full screen" }
                }
            }
            div #tiles sse-swap="tiles" hx-swap="innerHTML" {
                (render_tiles(&tiles))
            }
        }
    };
    let markup = page("Wallboard", Nav::Wallboard, body);
    Ok(markup)
}

/// The tiles' HTML: the first page render and every live update use this.
pub fn render_tiles(tiles: &[Tile]) -> Markup {
    html! {
        @if tiles.is_empty() {
            p.empty { "The active plan has no queues." }
        }
        @for t in tiles { (tile(t)) }
    }
}

fn tile(t: &Tile) -> Markup {
    let sl_class = match t.sl_today {
        None => "none",
        Some(sl) if sl >= t.sl_target => "good",
        Some(sl) if sl >= t.sl_target - 0.10 => "warn",
        Some(_) => "bad",
    };
    let ab_class = match t.abandon_today {
        None => "none",
        Some(a) if a <= ABANDON_TARGET => "good",
        Some(a) if a <= 2.0 * ABANDON_TARGET => "warn",
        Some(_) => "bad",
    };
    let tile_class = if sl_class == "bad" || ab_class == "bad" {
        "bad"
    } else if sl_class == "warn" || ab_class == "warn" {
        "warn"
    } else {
        "good"
    };
    html! {
        article class={"tile " (tile_class)} data-queue=(t.queue_id) {
            header {
                h2 { (t.name) }
                @if t.name != t.queue_id { span.qid { (t.queue_id) } }
                @if !t.open { span.closed { "closed" } }
            }
            div.big {
                div.figure { span.value data-field="waiting" { (t.waiting) } span.label { "waiting" } }
                div.figure { span.value data-field="longest" { (mmss(t.longest_wait)) } span.label { "longest wait" } }
                div.figure {
                    span.value data-field="ewt" { @match t.ewt { Some(d) => (mmss(d)), None => "–" } }
                    span.label { "EWT" }
                }
            }
            div.row {
                span { "Agents: " }
                span.avail { b { (t.agents.available) } " available" }
                span { b { (t.agents.reserved) } " reserved" }
                span { b { (t.agents.busy) } " busy" }
                span { b { (t.agents.wrap_up) } " wrap-up" }
            }
            div.row {
                span { "Callbacks: " }
                span data-field="callbacks-pending" { b { (count(t.callbacks_pending)) } " pending" }
                span data-field="callbacks-due" { b { (count(t.callbacks_due)) } " due" }
            }
            div.row.kpis {
                span class={"kpi " (sl_class)} {
                    "SL today " b { (pct(t.sl_today)) }
                    " / " (format!("{:.0}%", t.sl_target * 100.0)) " in " (t.sl_secs) "s"
                }
                span class={"kpi " (ab_class)} {
                    "Abandoned " b { (pct(t.abandon_today)) }
                    " / " (format!("{:.0}%", ABANDON_TARGET * 100.0))
                }
            }
        }
    }
}

fn count(n: usize) -> String {
    if n > MAX_COUNTED_CALLBACKS {
        format!("{MAX_COUNTED_CALLBACKS}+")
    } else {
        n.to_string()
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

fn mmss(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Today's service level and abandonment per queue, "today" in the queue's own
/// business-hours zone (UTC without hours). A queue whose report fails shows "–".
async fn today_kpis(holdless: &Holdless) -> Today {
    let plan = holdless.active_plan();
    let now = holdless.clock().now();
    let mut out = HashMap::new();
    for q in &plan.queues {
        let tz = q
            .business_hours
            .as_ref()
            .map_or(chrono_tz::UTC, |h| h.time_zone());
        let from = local_midnight(tz, now);
        let query = KpiQuery {
            queue_id: Some(q.id.clone()),
            from,
            to: now.max(from + chrono::Duration::minutes(15)),
            interval: None,
        };
        let figures = match holdless.kpi_report(query).await {
            Ok(r) => (
                r.total.figures.service_level,
                r.total.figures.abandonment_rate,
            ),
            Err(e) => {
                tracing::debug!(queue = %q.id, error = %e, "wallboard KPIs unavailable");
                (None, None)
            }
        };
        out.insert(q.id.clone(), figures);
    }
    out
}

fn local_midnight(tz: chrono_tz::Tz, now: DateTime<Utc>) -> DateTime<Utc> {
    let date = now.with_timezone(&tz).date_naive();
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    // A zone whose midnight does not exist that day (DST at 00:00) starts at the
    // first valid instant; an ambiguous one at the earlier.
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now - chrono::Duration::hours(24))
}

/// Samples every queue of the active plan: the floor, callbacks from the service.
pub async fn sample(holdless: &Holdless, today: &Today) -> Result<Vec<Tile>, ConsoleError> {
    let plan = holdless.active_plan();
    let now = holdless.clock().now();
    let stats = holdless.queue_stats(None)?;
    let mut tiles = Vec::with_capacity(stats.len());
    for (queue_id, snap) in stats {
        let Some(q) = plan.queue(&queue_id) else {
            continue;
        };
        let (pending, _) = holdless
            .list_callbacks(
                CallbackFilter {
                    queue_id: Some(queue_id.clone()),
                    state: Some(CallbackState::Pending),
                    phone: None,
                    created_by: None,
                },
                None,
                MAX_COUNTED_CALLBACKS + 1,
            )
            .await?;
        let due = pending
            .iter()
            .filter(|v| v.callback.not_before <= now)
            .count();
        let (sl_today, abandon_today) = today.get(&queue_id).copied().unwrap_or((None, None));
        tiles.push(Tile {
            name: if q.name.is_empty() {
                queue_id.clone()
            } else {
                q.name.clone()
            },
            open: q.is_open(now),
            waiting: snap.waiting,
            longest_wait: snap.longest_wait,
            ewt: snap.estimated_wait,
            agents: snap.agents,
            callbacks_pending: pending.len(),
            callbacks_due: due,
            sl_today,
            sl_target: q.service_level_target,
            sl_secs: q.service_level_secs,
            abandon_today,
            queue_id,
        });
    }
    Ok(tiles)
}

/// The live tiles' HTML, shared by every open wallboard of one console.
pub type Board = watch::Sender<Arc<String>>;

/// Samples the floor for the open wallboards until `stop` turns true; idle (no
/// sampling) while no wallboard is open.
pub async fn run_board(state: ConsoleState, board: Arc<Board>) {
    let mut stop = state.shutdown.clone();
    let mut live = tokio::time::interval(LIVE_TICK);
    live.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut today = Today::new();
    let mut kpis_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = live.tick() => {}
        }
        if board.receiver_count() == 0 {
            kpis_at = None;
            continue;
        }
        let Ok(holdless) = state.holdless() else {
            continue;
        };
        if kpis_at.is_none_or(|t| t.elapsed() >= KPI_TICK) {
            today = today_kpis(&holdless).await;
            kpis_at = Some(tokio::time::Instant::now());
        }
        match sample(&holdless, &today).await {
            Ok(tiles) => {
                let html = render_tiles(&tiles).into_string();
                board.send_if_modified(|current| {
                    if **current == html {
                        false
                    } else {
                        *current = Arc::new(html);
                        true
                    }
                });
            }
            Err(e) => tracing::debug!(error = ?e, "wallboard sample failed"),
        }
    }
}

/// The live tiles as server-sent events: the current tiles at once, then every
/// change. Ends when the console shuts down.
async fn events(
    State(state): State<ConsoleState>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut rx = state.board.subscribe();
    let mut stop = state.shutdown.clone();
    let stream = async_stream(move |tx| async move {
        rx.mark_changed();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let html = rx.borrow_and_update().clone();
            if html.is_empty() {
                continue;
            }
            if tx
                .send(Event::default().event("tiles").data(html.as_str()))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A stream fed by a task through a small channel (the task ends when the client
/// goes away: its sends fail).
fn async_stream<F, Fut>(f: F) -> impl futures_util::Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Event>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(f(tx));
    futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile_with(sl: Option<f64>, ab: Option<f64>) -> Tile {
        Tile {
            queue_id: "sales".into(),
            name: "Sales <EU>".into(),
            open: true,
            waiting: 3,
            longest_wait: Duration::from_secs(75),
            ewt: Some(Duration::from_secs(40)),
            agents: AgentCounts::default(),
            callbacks_pending: 2,
            callbacks_due: 1,
            sl_today: sl,
            sl_target: 0.8,
            sl_secs: 20,
            abandon_today: ab,
        }
    }

    #[test]
    fn tiles_are_colored_by_threshold_and_escape_names() {
        let html = render_tiles(&[tile_with(Some(0.85), Some(0.02))]).into_string();
        assert!(html.contains(r#"class="tile good""#), "{html}");
        assert!(html.contains("Sales &lt;EU&gt;"), "{html}");
        assert!(html.contains("1:15"), "{html}");
        let html = render_tiles(&[tile_with(Some(0.75), Some(0.02))]).into_string();
        assert!(html.contains(r#"class="tile warn""#), "{html}");
        let html = render_tiles(&[tile_with(Some(0.9), Some(0.2))]).into_string();
        assert!(html.contains(r#"class="tile bad""#), "{html}");
    }

    #[test]
    fn local_midnight_is_the_start_of_the_queues_day() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0).unwrap();
        let ny = local_midnight(chrono_tz::America::New_York, now);
        assert_eq!(ny, Utc.with_ymd_and_hms(2026, 11, 24, 5, 0, 0).unwrap());
    }
}
