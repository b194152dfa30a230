//! The Plan page: the version history, the line diff between any two versions, a
//! candidate plan (pasted or loaded from a file) simulated against the calls of the
//! last N days (which calls would change queue), applied on the version it was based
//! on, and rollback to any earlier version.
//!
//! Applies and rollbacks are the service's own operations: each lands in the audit log
//! with the signed-in supervisor's principal (and as the version's author), and a
//! change based on a version that is no longer the active one is refused with 409
//! (someone else applied in between), never silently merged.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use maud::{html, Markup};
use serde::Deserialize;

use super::{csrf_field, page, ConsoleError, ConsoleState, Nav, SignedIn};
use crate::domain::audit::Actor;
use crate::service::{ReplaySource, Rollback, DEFAULT_SIMULATION_DAYS, MAX_SIMULATION_DAYS};
use crate::store::PlanRecord;

/// Versions listed in the history.
pub const HISTORY_LEN: usize = 50;
/// Lines of unchanged context around each change in a diff.
pub const DIFF_CONTEXT: usize = 3;
/// Sample call ids shown per queue move in a simulation.
pub const SAMPLES_PER_MOVE: usize = 5;
/// Longest comment kept with a version.
pub const MAX_COMMENT_CHARS: usize = 512;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/plan", get(overview))
        .route("/plan/diff", get(diff))
        .route("/plan/simulate", post(simulate))
        .route("/plan/apply", post(apply))
        .route("/plan/rollback", post(rollback))
}

fn history(versions: &[PlanRecord], active: u64, me: &SignedIn) -> Markup {
    html! {
        table.list #versions {
            thead { tr { th { "Version" } th { "Applied" } th { "Author" } th { "Comment" } th {} } }
            tbody {
                @for r in versions {
                    tr data-version=(r.version) {
                        td { "v" (r.version) @if r.version == active { " " span.badge { "active" } } }
                        td { (r.created_at.format("%Y-%m-%d %H:%M UTC")) }
                        td { (r.author) }
                        td { (r.comment) }
                        td {
                            @if r.version != active {
                                form.inline method="post" action="/plan/rollback" {
                                    (csrf_field(me))
                                    input type="hidden" name="version" value=(r.version);
                                    input type="hidden" name="base_version" value=(active);
                                    button type="submit" { "Roll back to v" (r.version) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn candidate_form(me: &SignedIn, active: u64, text: &str, days: u32) -> Markup {
    html! {
        form.candidate method="post" action="/plan/simulate" {
            (csrf_field(me))
            input type="hidden" name="base_version" value=(active);
            label { "Load a plan file " input type="file" accept=".toml,text/plain" data-load-into="plan-text"; }
            textarea #plan-text name="text" rows="16" spellcheck="false" placeholder="Paste a plan (TOML) here" { (text) }
            div.row {
                label { "Replay the last " input type="number" name="days" min="1" max=(MAX_SIMULATION_DAYS) value=(days); " days" }
                label { "Comment " input type="text" name="comment" maxlength=(MAX_COMMENT_CHARS); }
                button type="submit" { "Simulate" }
                button type="submit" formaction="/plan/apply" { "Apply on v" (active) }
            }
        }
    }
}

async fn overview(
    State(state): State<ConsoleState>,
    Extension(me): Extension<SignedIn>,
) -> Result<Markup, ConsoleError> {
    let holdless = state.holdless()?;
    let (versions, active) = holdless.plan_versions(None, HISTORY_LEN).await?;
    let body = html! {
        h1 { "Plan" }
        p { "Active version: " b #active-version { "v" (active) } }
        h2 { "Compare two versions" }
        (diff_form(&versions, active.saturating_sub(1), active))
        h2 { "History" }
        (history(&versions, active, &me))
        h2 { "Try a new plan" }
        p { "Simulate replays the calls of the last days through the new plan and shows which would change queue. Apply makes it the active version, only if v" (active) " is still the active one." }
        (candidate_form(&me, active, "", DEFAULT_SIMULATION_DAYS))
    };
    Ok(page("Plan", Nav::Plan, body))
}

fn diff_form(versions: &[PlanRecord], from: u64, to: u64) -> Markup {
    html! {
        form.filters method="get" action="/plan/diff" {
            label { "From " select name="from" {
                @for r in versions { option value=(r.version) selected[r.version == from] { "v" (r.version) } }
            } }
            label { "to " select name="to" {
                @for r in versions { option value=(r.version) selected[r.version == to] { "v" (r.version) } }
            } }
            button type="submit" { "Show diff" }
        }
    }
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: u64,
    to: u64,
}

async fn diff(
    State(state): State<ConsoleState>,
    Query(q): Query<DiffQuery>,
) -> Result<Markup, ConsoleError> {
    let holdless = state.holdless()?;
    let (versions, _) = holdless.plan_versions(None, HISTORY_LEN).await?;
    let from = holdless.plan_record(q.from.max(1)).await?;
    let to = holdless.plan_record(q.to.max(1)).await?;
    let body = html! {
        p { a href="/plan" { "← Plan" } }
        h1 { "v" (from.version) " → v" (to.version) }
        (diff_form(&versions, from.version, to.version))
        (render_diff(&from.toml, &to.toml))
    };
    Ok(page("Plan diff", Nav::Plan, body))
}

/// A unified line diff, each line classed `add`, `del` or `ctx`.
pub fn render_diff(old: &str, new: &str) -> Markup {
    use similar::{ChangeTag, TextDiff};
    let diff = TextDiff::from_lines(old, new);
    let groups = diff.grouped_ops(DIFF_CONTEXT);
    html! {
        @if groups.is_empty() {
            p.empty { "The two versions are identical." }
        } @else {
            pre.diff {
                @for (i, group) in groups.iter().enumerate() {
                    @if i > 0 { span.hunk { "⋯\n" } }
                    @for op in group {
                        @for change in diff.iter_changes(op) {
                            @let (class, sign) = match change.tag() {
                                ChangeTag::Insert => ("add", "+"),
                                ChangeTag::Delete => ("del", "-"),
                                ChangeTag::Equal => ("ctx", " "),
                            };
                            span class=(class) { (sign) " " (change.value().trim_end_matches('\n')) "\n" }
                        }
                    }
                }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct CandidateForm {
    text: String,
    #[serde(default)]
    days: Option<u32>,
    base_version: u64,
    #[serde(default)]
    comment: String,
}

async fn simulate(
    State(state): State<ConsoleState>,
    Extension(me): Extension<SignedIn>,
    Form(form): Form<CandidateForm>,
) -> Result<Response, ConsoleError> {
    let holdless = state.holdless()?;
    let days = form.days.unwrap_or(DEFAULT_SIMULATION_DAYS);
    if !(1..=MAX_SIMULATION_DAYS).contains(&days) {
        return Err(ConsoleError::BadRequest(vec![(
            "days".into(),
            format!("must be 1 to {MAX_SIMULATION_DAYS}"),
        )]));
    }
    let outcome = holdless
        .simulate_plan(
            &form.text,
            form.base_version,
            ReplaySource::Recorded { days },
            SAMPLES_PER_MOVE,
        )
        .await?;
    let base = holdless.plan_record(outcome.base_version).await?;
    let r = &outcome.report;
    let body = html! {
        p { a href="/plan" { "← Plan" } }
        h1 { "Simulation against v" (outcome.base_version) }
        p #sim-summary {
            b { (r.moved) } " of " (r.replayed) " calls from the last " (days) " days would change queue."
            @if outcome.truncated { " Only the newest calls were replayed." }
        }
        @if !r.moves.is_empty() {
            table.list #moves {
                thead { tr { th { "From" } th { "To" } th { "Calls" } th { "For example" } } }
                tbody {
                    @for m in &r.moves {
                        tr { td { (m.from) } td { (m.to) } td { (m.count) } td { (m.samples.join(", ")) } }
                    }
                }
            }
        }
        @if !r.unmatched_rules.is_empty() {
            p { "Rules that matched none of these calls: " (r.unmatched_rules.join(", ")) }
        }
        h2 { "Changes against v" (outcome.base_version) }
        (render_diff(&base.toml, &form.text))
        h2 { "Apply" }
        (candidate_form(&me, outcome.base_version, &form.text, days))
    };
    Ok(page("Plan simulation", Nav::Plan, body).into_response())
}

async fn apply(
    State(state): State<ConsoleState>,
    Extension(me): Extension<SignedIn>,
    Form(form): Form<CandidateForm>,
) -> Result<Response, ConsoleError> {
    let holdless = state.holdless()?;
    let comment = check_comment(&form.comment)?;
    if form.base_version == 0 {
        return Err(ConsoleError::BadRequest(vec![(
            "base_version".into(),
            "the version this plan is based on is required".into(),
        )]));
    }
    let actor = Actor::new(me.principal.name(), "");
    let record = holdless
        .apply_plan(
            form.text,
            form.base_version,
            me.principal.name().to_owned(),
            comment,
            &actor,
        )
        .await?;
    Ok(Redirect::to(&format!("/plan?applied={}", record.version)).into_response())
}

#[derive(Deserialize)]
pub struct RollbackForm {
    version: u64,
    base_version: u64,
    #[serde(default)]
    comment: String,
}

async fn rollback(
    State(state): State<ConsoleState>,
    Extension(me): Extension<SignedIn>,
    Form(form): Form<RollbackForm>,
) -> Result<Response, ConsoleError> {
    let holdless = state.holdless()?;
    let comment = check_comment(&form.comment)?;
    let actor = Actor::new(me.principal.name(), "");
    match holdless
        .rollback_plan(
            form.version,
            form.base_version,
            me.principal.name().to_owned(),
            comment,
            &actor,
        )
        .await?
    {
        Rollback::Applied(r) | Rollback::Unchanged(r) => {
            Ok(Redirect::to(&format!("/plan?applied={}", r.version)).into_response())
        }
    }
}

fn check_comment(comment: &str) -> Result<String, ConsoleError> {
    let comment = comment.trim();
    if comment.chars().count() > MAX_COMMENT_CHARS {
        return Err(ConsoleError::BadRequest(vec![(
            "comment".into(),
            format!("at most {MAX_COMMENT_CHARS} characters"),
        )]));
    }
    Ok(comment.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines_and_escapes_them() {
        let html = render_diff("a = 1\nb = 2\n", "a = 1\nb = \"<3>\"\n").into_string();
        assert!(html.contains(r#"<span class="del">- b = 2"#), "{html}");
        assert!(
            html.contains(r#"<span class="add">+ b = &quot;&lt;3&gt;&quot;"#),
            "{html}"
        );
        let same = render_diff("a\n", "a\n").into_string();
        assert!(same.contains("identical"), "{same}");
    }
}
