//! The Callbacks page: a filtered list (queue, state, phone), each callback's detail
//! with its history, and the supervisor's two changes: cancel, and reschedule into a
//! free slot (the slots `ListSlots` offers, in the customer's own time zone).
//!
//! A cancel from the console is the same operation as `CancelCallback` from a
//! supervisor: the callback becomes CANCELLED with the reason given, and the audit log
//! records the supervisor's principal.

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use maud::{html, Markup};
use serde::Deserialize;

use super::{csrf_field, page, ConsoleError, ConsoleState, Nav, SignedIn};
use crate::domain::audit::{AuditAction, AuditEntry};
use crate::domain::callback::{Callback, CallbackKind, CallbackState};
use crate::service::callbacks::CallbackView;
use crate::store::CallbackFilter;

/// Callbacks per page of the list.
pub const PAGE_SIZE: usize = 100;
/// Longest cancel reason kept (as the API's).
pub const MAX_REASON_CHARS: usize = 256;

const STATES: [(CallbackState, &str); 6] = [
    (CallbackState::Pending, "pending"),
    (CallbackState::Dispatched, "dispatched"),
    (CallbackState::Completed, "completed"),
    (CallbackState::Failed, "failed"),
    (CallbackState::Cancelled, "cancelled"),
    (CallbackState::Expired, "expired"),
];

pub fn state_label(s: CallbackState) -> &'static str {
    STATES
        .iter()
        .find(|(st, _)| *st == s)
        .map_or("unknown", |(_, l)| l)
}

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/callbacks", get(list))
        .route("/callbacks/{id}", get(detail))
        .route("/callbacks/{id}/cancel", post(cancel))
        .route("/callbacks/{id}/reschedule", post(reschedule))
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    queue: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    after: String,
}

async fn list(
    State(state): State<ConsoleState>,
    Query(q): Query<ListQuery>,
) -> Result<Markup, ConsoleError> {
    let holdless = state.holdless()?;
    let mut bad = Vec::new();
    let cb_state = match q.state.as_str() {
        "" => None,
        s => match STATES.iter().find(|(_, l)| *l == s) {
            Some((st, _)) => Some(*st),
            None => {
                bad.push(("state".to_owned(), format!("unknown state {s:?}")));
                None
            }
        },
    };
    let phone = q.phone.trim();
    let phone = if phone.is_empty() {
        None
    } else {
        match crate::domain::PhoneNumber::parse(phone) {
            Ok(p) => Some(p.as_str().to_owned()),
            Err(e) => {
                bad.push(("phone".to_owned(), e.to_string()));
                None
            }
        }
    };
    if !bad.is_empty() {
        return Err(ConsoleError::BadRequest(bad));
    }
    let queue = q.queue.trim();
    let filter = CallbackFilter {
        queue_id: (!queue.is_empty()).then(|| queue.to_owned()),
        state: cb_state,
        phone,
        created_by: None,
    };
    let after = (!q.after.is_empty()).then(|| q.after.clone());
    let (items, next) = holdless.list_callbacks(filter, after, PAGE_SIZE).await?;
    let plan = holdless.active_plan();
    let body = html! {
        h1 { "Callbacks" }
        form.filters method="get" action="/callbacks" {
            label { "Queue "
                select name="queue" {
                    option value="" { "all" }
                    @for qu in &plan.queues {
                        option value=(qu.id) selected[qu.id == queue] { (qu.id) }
                    }
                }
            }
            label { "State "
                select name="state" {
                    option value="" { "all" }
                    @for (_, l) in STATES {
                        option value=(l) selected[q.state == l] { (l) }
                    }
                }
            }
            label { "Phone " input type="tel" name="phone" value=(q.phone) placeholder="+14155550100"; }
            button type="submit" { "Filter" }
        }
        @if items.is_empty() {
            p.empty { "No callbacks match." }
        } @else {
            table.list {
                thead { tr {
                    th { "Callback" } th { "State" } th { "Queue" } th { "Phone" }
                    th { "Kind" } th { "Place" } th { "Attempts" } th { "Created" }
                } }
                tbody {
                    @for v in &items { (row(v)) }
                }
            }
        }
        @if let Some(next) = next {
            p { a href=(next_link(&q, &next)) { "Next page" } }
        }
    };
    Ok(page("Callbacks", Nav::Callbacks, body))
}

fn next_link(q: &ListQuery, after: &str) -> String {
    let params = [
        ("queue", q.queue.as_str()),
        ("state", q.state.as_str()),
        ("phone", q.phone.as_str()),
        ("after", after),
    ];
    let encoded = serde_urlencoded::to_string(params).unwrap_or_default();
    format!("/callbacks?{encoded}")
}

fn row(v: &CallbackView) -> Markup {
    let c = &v.callback;
    html! {
        tr data-callback=(c.id) {
            td { a href={"/callbacks/" (c.id)} { code { (c.id) } } }
            td { span class={"state " (state_label(c.state))} { (state_label(c.state)) } }
            td { (c.queue_id) }
            td { (c.phone) }
            td { (kind(c)) }
            td { @match v.position { Some((p, _)) => (p), None => "–" } }
            td { (c.attempts) " / " (c.max_attempts) }
            td { (when(c.created_at)) }
        }
    }
}

fn kind(c: &Callback) -> String {
    match &c.kind {
        CallbackKind::Asap => "ASAP".to_owned(),
        CallbackKind::Scheduled { start, end } => {
            let tz: Tz = c.time_zone.parse().unwrap_or(chrono_tz::UTC);
            format!(
                "{} – {}",
                start.with_timezone(&tz).format("%a %d %b %H:%M"),
                end.with_timezone(&tz).format("%H:%M %Z")
            )
        }
    }
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

async fn detail(
    State(state): State<ConsoleState>,
    Extension(me): Extension<SignedIn>,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let holdless = state.holdless()?;
    let v = holdless.get_callback(&id).await?;
    let c = &v.callback;
    let tz: Tz = c.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let open = c.state == CallbackState::Pending;
    let slots = if open {
        holdless
            .list_slots(&c.queue_id, Some(tz), holdless.slot_horizon_days())
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let body = html! {
        p { a href="/callbacks" { "← All callbacks" } }
        h1 { "Callback " code { (c.id) } }
        dl.facts {
            dt { "State" } dd { span class={"state " (state_label(c.state))} #cb-state { (state_label(c.state)) } }
            dt { "Queue" } dd { (c.queue_id) }
            dt { "Phone" } dd { (c.phone) }
            @if let Some(cust) = &c.customer_id { dt { "Customer" } dd { (cust) } }
            dt { "Kind" } dd { (kind(c)) }
            dt { "Customer's zone" } dd { (c.time_zone) }
            @if let Some((p, w)) = v.position {
                dt { "Place in line" } dd { (p) @if let Some(w) = w { " (about " (w.as_secs() / 60) " min)" } }
            }
            dt { "Attempts" } dd { (c.attempts) " of " (c.max_attempts) }
            dt { "Priority" } dd { (c.priority) }
            @if !c.notes.is_empty() { dt { "Notes" } dd { (c.notes) } }
        }
        h2 { "History" }
        ol.history {
            li { (when(c.created_at)) " — requested by " b { (c.created_by) }
                @if let Some(call) = &c.origin_call_id { " from call " code { (call) } } }
            li { (when(c.virtual_enqueued_at)) " — place in line counted from here" }
            @if c.attempts > 0 {
                li { (c.attempts) " attempt(s) dialed"
                    @if let Some(o) = c.last_outcome { "; last outcome " b { (format!("{o:?}")) } } }
            }
            @if let Some(l) = &c.lease {
                li { "being dialed by " (l.dialer_id) " (attempt " code { (l.attempt_id) } ") until " (when(l.until)) }
            }
            @if c.state.is_open() {
                li { "not dialed before " (when(c.not_before)) "; expires " (when(c.expires_at)) }
            }
            li { (when(c.updated_at)) " — " b { (state_label(c.state)) }
                @if let Some(r) = &c.cancel_reason { " (" (r) ")" } }
        }
        @if open {
            section.actions {
                h2 { "Cancel" }
                form method="post" action={"/callbacks/" (c.id) "/cancel"} {
                    (csrf_field(&me))
                    label { "Reason " input type="text" name="reason" maxlength=(MAX_REASON_CHARS) placeholder="cancelled by supervisor"; }
                    button.danger type="submit" #cancel { "Cancel callback" }
                }
                h2 { "Reschedule" }
                @if slots.is_empty() {
                    p { "No free slot in the next " (holdless.slot_horizon_days()) " days." }
                } @else {
                    form method="post" action={"/callbacks/" (c.id) "/reschedule"} {
                        (csrf_field(&me))
                        label { "Slot (" (tz.name()) ") "
                            select name="slot" {
                                @for s in &slots {
                                    option value={(s.start.to_rfc3339()) "|" (s.end.to_rfc3339())} {
                                        (s.start.with_timezone(&tz).format("%a %d %b %H:%M")) "–"
                                        (s.end.with_timezone(&tz).format("%H:%M")) " (" (s.free) " free)"
                                    }
                                }
                            }
                        }
                        button type="submit" { "Move to this slot" }
                    }
                }
            }
        }
    };
    Ok(page("Callback", Nav::Callbacks, body))
}

#[derive(Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    reason: String,
}

async fn cancel(
    State(state): State<ConsoleState>,
    Extension(me): Extension<SignedIn>,
    Path(id): Path<String>,
    Form(form): Form<CancelForm>,
) -> Result<Response, ConsoleError> {
    let holdless = state.holdless()?;
    let reason = form.reason.trim();
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ConsoleError::BadRequest(vec![(
            "reason".into(),
            format!("at most {MAX_REASON_CHARS} characters"),
        )]));
    }
    let reason = if reason.is_empty() {
        "cancelled by supervisor".to_owned()
    } else {
        reason.to_owned()
    };
    holdless.cancel_callback(&id, reason.clone()).await?;
    let entry = AuditEntry {
        seq: 0,
        time: holdless.clock().now(),
        principal: me.principal.name().to_owned(),
        action: AuditAction::CallbackCancel,
        target: format!("callback {id}"),
        request_id: String::new(),
        detail: reason,
        author: String::new(),
    };
    if let Err(e) = holdless.audit(entry).await {
        tracing::error!(callback_id = %id, error = %e, "callback cancelled but not audited");
    }
    Ok(Redirect::to(&format!("/callbacks/{id}")).into_response())
}

#[derive(Deserialize)]
pub struct RescheduleForm {
    slot: String,
}

async fn reschedule(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    Form(form): Form<RescheduleForm>,
) -> Result<Response, ConsoleError> {
    let holdless = state.holdless()?;
    let parsed = form.slot.split_once('|').and_then(|(s, e)| {
        let s = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
        let e = DateTime::parse_from_rfc3339(e).ok()?.with_timezone(&Utc);
        (e > s).then_some((s, e))
    });
    let Some((start, end)) = parsed else {
        return Err(ConsoleError::BadRequest(vec![(
            "slot".into(),
            "pick a slot from the list".into(),
        )]));
    };
    holdless.reschedule_callback(&id, start, end).await?;
    Ok(Redirect::to(&format!("/callbacks/{id}")).into_response())
}
