//! `PlanService`: supervisors read, validate, simulate, apply and roll back the routing
//! plan, and read the audit log.

use tonic::{Request, Response, Status};
use tracing::instrument;

use super::convert::{call_from_pb, instant};
use super::error::invalid_argument;
use super::pb::{self, plan_service_server::PlanService};
use super::{actor, ready, Ready};
use crate::domain::limits::MAX_LABEL_LEN;
use crate::domain::{check_text, limits::MAX_TEXT_LEN, FieldViolation};
use crate::service::{ReplaySource, Rollback, DEFAULT_SIMULATION_DAYS, MAX_SIMULATION_DAYS};

/// List pages: this many entries unless the request says otherwise...
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// ...and never more than this (larger requests are served this many).
pub const MAX_PAGE_SIZE: usize = 500;
/// Sample call ids per queue move in a simulation, by default and at most.
pub const DEFAULT_SAMPLES_PER_MOVE: usize = 5;
pub const MAX_SAMPLES_PER_MOVE: usize = 50;

fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// Page tokens are opaque to clients: the hex of a big-endian position.
fn encode_token(position: u64) -> String {
    hex::encode(position.to_be_bytes())
}

fn decode_token(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    hex::decode(token)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(|b| Some(u64::from_be_bytes(b)))
        .ok_or_else(|| {
            invalid_argument(&[FieldViolation::new(
                "page_token",
                "is not a token from a previous response",
            )])
        })
}

/// Author and comment of a plan change, checked; the author defaults to the principal.
fn author_comment(
    author: &str,
    comment: &str,
    principal: &str,
    v: &mut Vec<FieldViolation>,
) -> Option<(String, String)> {
    let author = check_text("author", author, MAX_LABEL_LEN, v);
    let comment = check_text("comment", comment, MAX_TEXT_LEN, v);
    let (Some(author), Some(comment)) = (author, comment) else {
        return None;
    };
    // Versions holdless makes itself (first-start import, plan file reloads) are
    // recognized by their author; a client may not claim one.
    if author.starts_with("holdless (") {
        v.push(FieldViolation::new(
            "author",
            "names starting with 'holdless (' are reserved for versions holdless makes itself",
        ));
        return None;
    }
    let author = if author.is_empty() {
        principal.to_owned()
    } else {
        author
    };
    Some((author, comment))
}

pub struct PlanApi {
    pub ready: Ready,
}

#[tonic::async_trait]
impl PlanService for PlanApi {
    #[instrument(skip_all)]
    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::GetPlanResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::GetPlanRequest { version } = request.into_inner();
        let record = holdless.plan_record(version).await?;
        Ok(Response::new(pb::GetPlanResponse {
            version: Some((&record).into()),
            plan_toml: record.toml,
        }))
    }

    #[instrument(skip_all)]
    async fn validate_plan(
        &self,
        request: Request<pb::ValidatePlanRequest>,
    ) -> Result<Response<pb::ValidatePlanResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::ValidatePlanRequest { plan_toml } = request.into_inner();
        // A plan with issues is a valid question with a "no" answer: OK, not an error.
        let reply = match holdless.validate_plan(&plan_toml) {
            Ok(s) => pb::ValidatePlanResponse {
                valid: true,
                issues: vec![],
                queue_count: s.queues as u32,
                rule_count: s.rules as u32,
                campaign_count: s.campaigns as u32,
            },
            Err(issues) => pb::ValidatePlanResponse {
                valid: false,
                issues: issues
                    .into_iter()
                    .map(|i| pb::PlanIssue {
                        path: i.field,
                        message: i.description,
                    })
                    .collect(),
                ..Default::default()
            },
        };
        Ok(Response::new(reply))
    }

    #[instrument(skip_all, fields(expected_version = request.get_ref().expected_version))]
    async fn apply_plan(
        &self,
        request: Request<pb::ApplyPlanRequest>,
    ) -> Result<Response<pb::ApplyPlanResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let mut v = Vec::new();
        let actor = actor(&request, &request.get_ref().request_id, &mut v);
        let pb::ApplyPlanRequest {
            plan_toml,
            expected_version,
            author,
            comment,
            request_id: _,
        } = request.into_inner();
        let checked = author_comment(&author, &comment, &actor.principal, &mut v);
        let (Some((author, comment)), true) = (checked, v.is_empty()) else {
            return Err(invalid_argument(&v));
        };
        let record = holdless
            .apply_plan(plan_toml, expected_version, author, comment, &actor)
            .await?;
        Ok(Response::new(pb::ApplyPlanResponse {
            version: Some((&record).into()),
        }))
    }

    #[instrument(skip_all, fields(version = request.get_ref().version))]
    async fn rollback_plan(
        &self,
        request: Request<pb::RollbackPlanRequest>,
    ) -> Result<Response<pb::RollbackPlanResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let mut v = Vec::new();
        let actor = actor(&request, &request.get_ref().request_id, &mut v);
        let pb::RollbackPlanRequest {
            version,
            expected_version,
            author,
            comment,
            request_id: _,
        } = request.into_inner();
        if version == 0 {
            v.push(FieldViolation::new("version", "is required"));
        }
        let checked = author_comment(&author, &comment, &actor.principal, &mut v);
        let (Some((author, comment)), true) = (checked, v.is_empty()) else {
            return Err(invalid_argument(&v));
        };
        let (record, unchanged) = match holdless
            .rollback_plan(version, expected_version, author, comment, &actor)
            .await?
        {
            Rollback::Applied(r) => (r, false),
            Rollback::Unchanged(r) => (r, true),
        };
        Ok(Response::new(pb::RollbackPlanResponse {
            version: Some((&record).into()),
            unchanged,
        }))
    }

    #[instrument(skip_all)]
    async fn list_plan_versions(
        &self,
        request: Request<pb::ListPlanVersionsRequest>,
    ) -> Result<Response<pb::ListPlanVersionsResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::ListPlanVersionsRequest {
            page_size: size,
            page_token,
        } = request.into_inner();
        let before = decode_token(&page_token)?;
        let size = page_size(size);
        let (mut versions, active) = holdless.plan_versions(before, size + 1).await?;
        let more = versions.len() > size;
        versions.truncate(size);
        let next_page_token = match versions.last() {
            Some(last) if more => encode_token(last.version),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListPlanVersionsResponse {
            versions: versions.iter().map(Into::into).collect(),
            active_version: active,
            next_page_token,
        }))
    }

    #[instrument(skip_all)]
    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::ListAuditRequest {
            page_size: size,
            page_token,
        } = request.into_inner();
        let from = decode_token(&page_token)?.unwrap_or(0);
        let size = page_size(size);
        let mut entries = holdless.audit_log(from, size + 1).await?;
        let more = entries.len() > size;
        entries.truncate(size);
        let next_page_token = match entries.last() {
            Some(last) if more => encode_token(last.seq + 1),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries.into_iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(hours = request.get_ref().hours, runs = request.get_ref().runs))]
    async fn simulate_day(
        &self,
        request: Request<pb::SimulateDayRequest>,
    ) -> Result<Response<pb::SimulateDayResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::SimulateDayRequest {
            plan_toml,
            queue_ids,
            start_time,
            hours,
            calls_per_hour,
            aht_secs,
            patience_secs,
            agents,
            offer_threshold_secs,
            acceptance_rate,
            answer_rate,
            short_abandon_secs,
            seed,
            runs,
        } = request.into_inner();
        let mut v = Vec::new();
        for (i, q) in queue_ids.iter().enumerate() {
            check_text(&format!("queue_ids[{i}]"), q, MAX_LABEL_LEN, &mut v);
        }
        let start = match start_time {
            None => None,
            Some(t) => match instant(&t) {
                Some(t) => Some(t),
                None => {
                    v.push(FieldViolation::new("start_time", "is out of range"));
                    None
                }
            },
        };
        if calls_per_hour.is_empty() {
            v.push(FieldViolation::new(
                "calls_per_hour",
                "give at least one value (calls per hour)",
            ));
        }
        if calls_per_hour.len() > crate::sim::day::scenario::MAX_HOURS as usize {
            v.push(FieldViolation::new(
                "calls_per_hour",
                "one value per hour at most",
            ));
        }
        if !v.is_empty() {
            return Err(invalid_argument(&v));
        }
        let defaults = crate::sim::day::CallbackParams::default();
        let scenario = crate::sim::day::scenario::Scenario {
            queues: queue_ids,
            start,
            hours: if hours == 0 { 10 } else { hours },
            calls_per_hour,
            aht_secs,
            patience_secs,
            agents,
            callbacks: crate::sim::day::CallbackParams {
                offer_after_ewt_secs: offer_threshold_secs,
                acceptance: acceptance_rate.unwrap_or(defaults.acceptance),
                answer_rate: answer_rate.unwrap_or(defaults.answer_rate),
                ..defaults
            },
            short_abandon_secs: short_abandon_secs
                .unwrap_or(crate::metrics::kpi::ABANDON_GRACE_SECS),
            ..Default::default()
        };
        let runs = runs.max(1);
        let (version, c) = holdless
            .simulate_day(&plan_toml, scenario, seed, runs)
            .await
            .map_err(|e| match e {
                // The scenario names its fields as the flags do; the request's queue
                // list is `queue_ids`.
                crate::service::ServiceError::InvalidArgument(v) => invalid_argument(
                    &v.into_iter()
                        .map(|f| {
                            FieldViolation::new(
                                f.field.replace("queues[", "queue_ids["),
                                f.description,
                            )
                        })
                        .collect::<Vec<_>>(),
                ),
                other => Status::from(other),
            })?;
        let totals = |f: &crate::sim::day::report::Figures| pb::SimulatedDayTotals {
            offered: f.offered,
            answered: f.answered,
            abandoned: f.abandoned,
            abandonment_rate: f.abandonment_rate,
            asa_seconds: f.asa_secs,
            service_level: f.service_level,
            occupancy: f.occupancy,
            callbacks_offered: f.callbacks_offered,
            callbacks_requested: f.callbacks_requested,
            callbacks_completed: f.callbacks_completed,
            callbacks_failed: f.callbacks_failed,
            callbacks_pending_at_close: f.callbacks_pending_at_close,
            callback_wait_seconds: f.callback_wait_secs,
            hold_time_avoided_seconds: f.hold_avoided_secs,
        };
        Ok(Response::new(pb::SimulateDayResponse {
            plan_version: version,
            short_abandon_seconds: c.short_abandon_secs,
            asa_basis: c.asa_basis.to_owned(),
            with_callbacks: Some(totals(&c.with_callbacks.total)),
            without_callbacks: Some(totals(&c.without_callbacks.total)),
            report_json: serde_json::to_string(&c)
                .map_err(|e| Status::internal(format!("report not encodable: {e}")))?,
        }))
    }

    #[instrument(skip_all, fields(calls = request.get_ref().calls.len(), days = request.get_ref().days))]
    async fn simulate_plan(
        &self,
        request: Request<pb::SimulatePlanRequest>,
    ) -> Result<Response<pb::SimulatePlanResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::SimulatePlanRequest {
            plan_toml,
            base_version,
            days,
            calls,
            samples_per_move,
        } = request.into_inner();
        let mut v = Vec::new();
        if days > MAX_SIMULATION_DAYS {
            v.push(FieldViolation::new(
                "days",
                format!("at most {MAX_SIMULATION_DAYS}"),
            ));
        }
        if calls.len() > crate::service::MAX_SIMULATED_CALLS {
            v.push(FieldViolation::new(
                "calls",
                format!("at most {} calls", crate::service::MAX_SIMULATED_CALLS),
            ));
        }
        let samples = match samples_per_move as usize {
            0 => DEFAULT_SAMPLES_PER_MOVE,
            n => n.min(MAX_SAMPLES_PER_MOVE),
        };
        let source = if calls.is_empty() {
            ReplaySource::Recorded {
                days: if days == 0 {
                    DEFAULT_SIMULATION_DAYS
                } else {
                    days
                },
            }
        } else {
            let mut supplied = Vec::with_capacity(calls.len());
            for (i, mut c) in calls.into_iter().enumerate() {
                let at = match c.received_time.take() {
                    None => None,
                    Some(t) => match instant(&t) {
                        Some(t) => Some(t),
                        None => {
                            v.push(FieldViolation::new(
                                format!("calls[{i}].received_time"),
                                "is out of range",
                            ));
                            None
                        }
                    },
                };
                match call_from_pb(c) {
                    Ok(call) => supplied.push((call, at)),
                    Err(errors) => v.extend(errors.into_iter().map(|e| {
                        FieldViolation::new(format!("calls[{i}].{}", e.field), e.description)
                    })),
                }
            }
            ReplaySource::Supplied(supplied)
        };
        if !v.is_empty() {
            return Err(invalid_argument(&v));
        }
        let out = holdless
            .simulate_plan(&plan_toml, base_version, source, samples)
            .await?;
        let r = out.report;
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(Response::new(pb::SimulatePlanResponse {
            base_version: out.base_version,
            calls_replayed: count(r.replayed),
            calls_moved: count(r.moved),
            moves: r
                .moves
                .into_iter()
                .map(|m| pb::QueueMove {
                    from_queue_id: m.from,
                    to_queue_id: m.to,
                    call_count: count(m.count),
                    sample_call_ids: m.samples,
                })
                .collect(),
            unmatched_rule_ids: r.unmatched_rules,
            truncated: out.truncated,
            calls_without_facts: count(out.without_facts),
        }))
    }
}
