//! The wallboard: a tile per queue, live, readable from across a room.
//!
//! Each tile shows who waits (calls in line, the longest wait, the wait a caller
//! arriving now is told), the agents by state, the callbacks pending and due, and
//! today's service level and abandonment against target, colored by threshold. The
//! figures are the service's queue boards ([`Holdless::queue_boards`]), the same as
//! `WatchQueueStats` streams.
//!
//! Live: each open wallboard holds a server-sent event stream (`/wallboard/events`)
//! fed by [`Holdless::watch_boards`]: the boards that changed, coalesced to the
//! server's `stats.watch_max_per_sec` (2 a second by default). Every message is
//! rendered with [`render_tiles`], the function the first page render uses too, and
//! htmx swaps the tiles in, so a routed call, an answer or an agent change shows within
//! a second, without a reload. A wallboard that falls behind is dropped by the service;
//! the browser reconnects by itself and gets every tile again.
//!
//! Colors: service level green at or above the queue's target, amber within 10
//! points below it, red further below; abandonment green up to [`ABANDON_TARGET`],
//! amber up to twice that, red above. The plan has no abandonment target, so the
//! console uses the common 5%.
//!
//! Full-screen mode: `/wallboard?wall=1` drops the navigation and scales the type up;
//! the "Full screen" button also asks the browser for full screen.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use maud::{html, Markup};
use serde::Deserialize;

use super::{page, ConsoleError, ConsoleState, Nav};
use crate::service::{Holdless, QueueBoard};

/// Abandonment rate (after the 5 s grace) a contact center commonly aims under.
pub const ABANDON_TARGET: f64 = 0.05;

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
    let boards = holdless.queue_boards(&[])?;
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
                (render_tiles(&boards))
            }
        }
    };
    Ok(page("Wallboard", Nav::Wallboard, body))
}

/// The tiles' HTML: the first page render and every live update use this.
pub fn render_tiles(boards: &[QueueBoard]) -> Markup {
    html! {
        @if boards.is_empty() {
            p.empty { "The active plan has no queues." }
        }
        @for b in boards { (tile(b)) }
    }
}

fn tile(b: &QueueBoard) -> Markup {
    let target = b.service_level_target;
    let sl_class = match b.service_level_today {
        None => "none",
        Some(sl) if sl >= target => "good",
        Some(sl) if sl >= target - 0.10 => "warn",
        Some(_) => "bad",
    };
    let ab_class = match b.abandon_rate_today {
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
    let name = if b.name.is_empty() {
        &b.queue_id
    } else {
        &b.name
    };
    html! {
        article class={"tile " (tile_class)} data-queue=(b.queue_id) {
            header {
                h2 { (name) }
                @if *name != b.queue_id { span.qid { (b.queue_id) } }
            }
            div.big {
                div.figure { span.value data-field="waiting" { (b.waiting) } span.label { "waiting" } }
                div.figure { span.value data-field="longest" { (mmss(b.longest_wait_secs)) } span.label { "longest wait" } }
                div.figure {
                    span.value data-field="ewt" { @if b.ewt_known { (mmss(b.ewt_secs)) } @else { "–" } }
                    span.label { "EWT" }
                }
            }
            div.row {
                span { "Agents: " }
                span.avail data-field="available" { b { (b.agents_available) } " available" }
                span data-field="busy" { b { (b.agents_busy) } " busy"
                    @if b.agents_reserved > 0 { " (" (b.agents_reserved) " reserved)" } }
                span data-field="wrap-up" { b { (b.agents_wrap_up) } " wrap-up" }
                span data-field="away" { b { (b.agents_away) } " away" }
            }
            div.row {
                span { "Callbacks: " }
                span data-field="callbacks-pending" { b { (b.callbacks_pending) } " pending" }
                span data-field="callbacks-due" { b { (b.callbacks_due) } " due" }
                @if b.callbacks_dispatched > 0 {
                    span data-field="callbacks-dialing" { b { (b.callbacks_dispatched) } " dialing" }
                }
            }
            div.row.kpis {
                span class={"kpi " (sl_class)} {
                    "SL today " b { (pct(b.service_level_today)) }
                    " / " (format!("{:.0}%", target * 100.0)) " in " (b.answer_target_secs) "s"
                }
                span class={"kpi " (ab_class)} {
                    "Abandoned " b { (pct(b.abandon_rate_today)) }
                    " / " (format!("{:.0}%", ABANDON_TARGET * 100.0))
                }
                span.offered { (b.offered_today) " offered, " (b.answered_today) " answered" }
            }
        }
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{:.0}%", v * 100.0))
}

fn mmss(s: u64) -> String {
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The boards of `latest` in the active plan's queue order (queues that left the plan
/// are dropped).
fn in_plan_order(holdless: &Holdless, latest: &mut HashMap<String, QueueBoard>) -> Vec<QueueBoard> {
    let plan = holdless.active_plan();
    latest.retain(|id, _| plan.queue(id).is_some());
    plan.queues
        .iter()
        .filter_map(|q| latest.get(&q.id).cloned())
        .collect()
}

/// The live tiles as server-sent events: every tile at once, then all of them again
/// whenever a board changed. Ends when the console shuts down or the service drops the
/// watcher (the browser then reconnects).
async fn events(
    State(state): State<ConsoleState>,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ConsoleError> {
    let holdless = state.holdless()?;
    let mut boards = holdless.watch_boards(&[], 0.0)?;
    let mut stop = state.shutdown.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Event>(4);
    tokio::spawn(async move {
        let mut latest: HashMap<String, QueueBoard> = HashMap::new();
        loop {
            let changed = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tx.closed() => return,
                b = boards.recv() => match b {
                    Some(b) => b,
                    None => return,
                },
            };
            for b in changed {
                latest.insert(b.queue_id.clone(), b);
            }
            let html = render_tiles(&in_plan_order(&holdless, &mut latest)).into_string();
            if tx
                .send(Event::default().event("tiles").data(html))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let stream = futures_util::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board_with(sl: Option<f64>, ab: Option<f64>) -> QueueBoard {
        QueueBoard {
            queue_id: "sales".into(),
            name: "Sales <EU>".into(),
            waiting: 3,
            longest_wait_secs: 75,
            ewt_secs: 40,
            agents_available: 1,
            agents_busy: 2,
            agents_wrap_up: 0,
            agents_away: 0,
            callbacks_pending: 2,
            callbacks_dispatched: 0,
            callbacks_due: 1,
            offered_today: 10,
            answered_today: 9,
            abandoned_today: 1,
            service_level_today: sl,
            service_level_target: 0.8,
            answer_target_secs: 20,
            abandon_rate_today: ab,
            at: chrono::Utc::now(),
            agents_reserved: 1,
            ewt_known: true,
        }
    }

    #[test]
    fn tiles_are_colored_by_threshold_and_escape_names() {
        let html = render_tiles(&[board_with(Some(0.85), Some(0.02))]).into_string();
        assert!(html.contains(r#"class="tile good""#), "{html}");
        assert!(html.contains("Sales &lt;EU&gt;"), "{html}");
        assert!(html.contains("1:15"), "{html}");
        assert!(html.contains("(1 reserved)"), "{html}");
        let html = render_tiles(&[board_with(Some(0.75), Some(0.02))]).into_string();
        assert!(html.contains(r#"class="tile warn""#), "{html}");
        let html = render_tiles(&[board_with(Some(0.9), Some(0.2))]).into_string();
        assert!(html.contains(r#"class="tile bad""#), "{html}");
        let mut unknown = board_with(None, None);
        unknown.ewt_known = false;
        let html = render_tiles(&[unknown]).into_string();
        assert!(html.contains(r#"data-field="ewt">–<"#), "{html}");
    }
}
