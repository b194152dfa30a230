//! `StatsService`: live queue figures for supervisors and wallboards, KPI reports,
//! staffing plans and customer surveys.

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::instrument;

use chrono::{DateTime, Utc};

use super::convert::{duration, instant, std_duration, timestamp};
use super::drain::UntilDrained;
use super::error::invalid_argument;
use super::pb::{self, stats_service_server::StatsService};
use super::{ready, Ready};
use crate::domain::FieldViolation;
use crate::metrics::erlang::Staffing;
use crate::metrics::kpi::{KpiCounters, KpiFigures};
use crate::service::kpi::{validate_survey, KpiQuery, KpiRow, StaffingQuery};
use crate::service::{BoardWatch, QueueBoard};

/// Queues one wallboard stream may name (a plan holds far fewer).
pub const MAX_WATCHED_QUEUES: usize = 1_000;

pub struct StatsApi {
    pub ready: Ready,
    /// Turns true at shutdown: open wallboard streams end at once.
    pub draining: tokio::sync::watch::Receiver<bool>,
}

/// A wallboard stream: boards until the watcher is dropped (RESOURCE_EXHAUSTED, so the
/// client knows to resubscribe and read faster); wrapped in [`UntilDrained`], it also
/// ends when holdless shuts down (UNAVAILABLE).
struct BoardStream {
    watch: BoardWatch,
    first: bool,
    done: bool,
}

impl Stream for BoardStream {
    type Item = Result<pb::WatchQueueStatsResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.done {
            return Poll::Ready(None);
        }
        match self.watch.boards.poll_recv(cx) {
            Poll::Ready(Some(boards)) => {
                let snapshot = std::mem::replace(&mut self.first, false);
                Poll::Ready(Some(Ok(pb::WatchQueueStatsResponse {
                    queues: boards.into_iter().map(board_to_pb).collect(),
                    snapshot,
                })))
            }
            Poll::Ready(None) => {
                self.done = true;
                if self
                    .watch
                    .dropped
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    Poll::Ready(Some(Err(Status::resource_exhausted(
                        "this watcher fell behind (boards were not read as fast as they \
                         came) and was dropped; resubscribe, or ask for fewer \
                         max_updates_per_second",
                    ))))
                } else {
                    Poll::Ready(Some(Err(Status::unavailable(
                        "holdless is shutting down; resubscribe after it restarts",
                    ))))
                }
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn board_to_pb(b: QueueBoard) -> pb::QueueBoard {
    let QueueBoard {
        queue_id,
        name,
        waiting,
        longest_wait_secs,
        ewt_secs,
        agents_available,
        agents_busy,
        agents_wrap_up,
        agents_away,
        callbacks_pending,
        callbacks_dispatched,
        callbacks_due,
        offered_today,
        answered_today,
        abandoned_today,
        service_level_today,
        service_level_target,
        answer_target_secs,
        abandon_rate_today,
        at,
        agents_reserved,
        ewt_known,
    } = b;
    pb::QueueBoard {
        queue_id,
        name,
        waiting,
        longest_wait: Some(duration(std::time::Duration::from_secs(longest_wait_secs))),
        estimated_wait: ewt_known.then(|| duration(std::time::Duration::from_secs(ewt_secs))),
        agents_available,
        agents_busy,
        agents_wrap_up,
        agents_away,
        agents_reserved,
        callbacks_pending,
        callbacks_dispatched,
        callbacks_due,
        offered_today,
        answered_today,
        abandoned_today,
        service_level_today,
        service_level_target,
        answer_target: Some(duration(std::time::Duration::from_secs(answer_target_secs))),
        abandon_rate_today,
        at: Some(timestamp(at)),
    }
}

#[tonic::async_trait]
impl StatsService for StatsApi {
    type WatchQueueStatsStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchQueueStatsResponse, Status>> + Send>>;

    #[instrument(skip_all)]
    async fn watch_queue_stats(
        &self,
        request: Request<pb::WatchQueueStatsRequest>,
    ) -> Result<Response<Self::WatchQueueStatsStream>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::WatchQueueStatsRequest {
            queue_ids,
            max_updates_per_second,
        } = request.into_inner();
        let mut v = Vec::new();
        for (i, id) in queue_ids.iter().enumerate() {
            if id.is_empty() {
                v.push(FieldViolation::new(
                    format!("queue_ids[{i}]"),
                    "must not be empty (leave the list empty for every queue)",
                ));
            }
        }
        if queue_ids.len() > MAX_WATCHED_QUEUES {
            v.push(FieldViolation::new(
                "queue_ids",
                format!("at most {MAX_WATCHED_QUEUES} queues"),
            ));
        }
        if !v.is_empty() {
            return Err(invalid_argument(&v));
        }
        if *self.draining.borrow() {
            return Err(Status::unavailable("draining: holdless is shutting down"));
        }
        let watch = holdless.subscribe_boards(&queue_ids, max_updates_per_second)?;
        let boards = BoardStream {
            watch,
            first: true,
            done: false,
        };
        Ok(Response::new(Box::pin(UntilDrained::new(
            boards,
            self.draining.clone(),
            "draining: holdless is shutting down; resubscribe after it restarts",
        ))))
    }

    #[instrument(skip_all)]
    async fn get_queue_stats(
        &self,
        request: Request<pb::GetQueueStatsRequest>,
    ) -> Result<Response<pb::GetQueueStatsResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::GetQueueStatsRequest { queue_id } = request.into_inner();
        let stats = holdless.queue_stats((!queue_id.is_empty()).then_some(queue_id.as_str()))?;
        let queues = stats
            .into_iter()
            .map(|(id, s)| pb::QueueStats {
                queue_id: id,
                waiting: s.waiting,
                longest_wait: Some(duration(s.longest_wait)),
                agents_available: s.agents.available,
                agents_reserved: s.agents.reserved,
                agents_busy: s.agents.busy,
                agents_wrap_up: s.agents.wrap_up,
                average_handle_time: Some(duration(std::time::Duration::from_secs_f64(
                    s.aht_secs.max(0.0),
                ))),
                handle_time_samples: s.aht_samples,
                estimated_wait: s.estimated_wait.map(duration),
                ewt_mean_absolute_error: s.ewt_mae.map(duration),
                ewt_samples: s.ewt_samples,
            })
            .collect();
        Ok(Response::new(pb::GetQueueStatsResponse { queues }))
    }

    #[instrument(skip_all)]
    async fn get_kpi_report(
        &self,
        request: Request<pb::GetKpiReportRequest>,
    ) -> Result<Response<pb::GetKpiReportResponse>, Status> {
        self.kpi_report(request.into_inner())
            .await
            .map(Response::new)
    }

    #[instrument(skip_all)]
    async fn get_staffing_plan(
        &self,
        request: Request<pb::GetStaffingPlanRequest>,
    ) -> Result<Response<pb::GetStaffingPlanResponse>, Status> {
        self.staffing(request.into_inner()).await.map(Response::new)
    }

    #[instrument(skip_all, fields(contact_id))]
    async fn submit_survey(
        &self,
        request: Request<pb::SubmitSurveyRequest>,
    ) -> Result<Response<pb::SubmitSurveyResponse>, Status> {
        let holdless = ready(&self.ready)?;
        let pb::SubmitSurveyRequest {
            contact_id,
            csat,
            ces,
            nps,
        } = request.into_inner();
        tracing::Span::current().record("contact_id", contact_id.as_str());
        let mut v = Vec::new();
        if contact_id.is_empty() {
            v.push(FieldViolation::new("contact_id", "required"));
        }
        let survey = validate_survey(csat, ces, nps);
        if let Err(more) = &survey {
            v.extend(more.iter().cloned());
        }
        let survey = match survey {
            Ok(s) if v.is_empty() => s,
            _ => return Err(invalid_argument(&v)),
        };
        holdless.submit_survey(contact_id, survey).await?;
        Ok(Response::new(pb::SubmitSurveyResponse {}))
    }
}

fn secs(s: f64) -> prost_types::Duration {
    duration(std::time::Duration::from_secs_f64(if s.is_finite() {
        s.clamp(0.0, 1e12)
    } else {
        1e12
    }))
}

fn millis(ms: u64) -> prost_types::Duration {
    duration(std::time::Duration::from_millis(ms))
}

fn counts_to_pb(c: &KpiCounters) -> pb::KpiCounts {
    let KpiCounters {
        offered,
        answered,
        answered_in_target,
        abandoned,
        abandoned_after_target,
        abandoned_after_grace,
        transferred_waiting,
        answer_wait_ms,
        transferred,
        handled,
        handle_ms,
        answered_contacts,
        fcr_repeated,
        cb_offered,
        cb_requested,
        cb_accepted,
        cb_completed,
        cb_failed,
        cb_expired,
        cb_cancelled,
        cb_attempts,
        cb_hold_avoided_ms,
        cb_connect_ms,
        csat_answers,
        csat_satisfied,
        ces_answers,
        ces_sum,
        nps_answers,
        nps_promoters,
        nps_detractors,
        transfer_in,
    } = c.clone();
    pb::KpiCounts {
        offered,
        answered,
        answered_within_target: answered_in_target,
        abandoned,
        abandoned_after_target,
        abandoned_after_grace,
        transferred_while_waiting: transferred_waiting,
        total_answer_wait: Some(millis(answer_wait_ms)),
        transferred,
        handled,
        total_handle_time: Some(millis(handle_ms)),
        answered_contacts,
        repeated_contacts: fcr_repeated,
        callbacks_offered: cb_offered,
        callbacks_requested: cb_requested,
        callbacks_accepted: cb_accepted,
        callbacks_completed: cb_completed,
        callbacks_failed: cb_failed,
        callbacks_expired: cb_expired,
        callbacks_cancelled: cb_cancelled,
        callback_attempts: cb_attempts,
        hold_time_avoided: Some(millis(cb_hold_avoided_ms)),
        total_time_to_connect: Some(millis(cb_connect_ms)),
        csat_answers,
        csat_satisfied,
        ces_answers,
        ces_sum,
        nps_answers,
        nps_promoters,
        nps_detractors,
        transferred_in: transfer_in.offered,
    }
}

fn figures_to_pb(f: &KpiFigures) -> pb::KpiFigures {
    pb::KpiFigures {
        average_speed_of_answer: f.asa_secs.map(secs),
        service_level: f.service_level,
        abandonment_rate: f.abandonment_rate,
        transfer_rate: f.transfer_rate,
        average_handle_time: f.aht_secs.map(secs),
        first_contact_resolution: f.fcr,
        callback_acceptance_rate: f.cb_acceptance_rate,
        callback_success_rate: f.cb_success_rate,
        callback_mean_attempts: f.cb_mean_attempts,
        hold_time_avoided: Some(secs(f.cb_hold_avoided_secs)),
        mean_time_to_connect: f.cb_mean_time_to_connect_secs.map(secs),
        csat: f.csat,
        ces: f.ces,
        nps: f.nps,
    }
}

fn row_to_pb(r: &KpiRow) -> pb::KpiInterval {
    pb::KpiInterval {
        start: Some(timestamp(r.start)),
        end: Some(timestamp(r.end)),
        counts: Some(counts_to_pb(&r.counters)),
        figures: Some(figures_to_pb(&r.figures)),
    }
}

fn prediction_to_pb(s: &Staffing) -> pb::StaffingPrediction {
    pb::StaffingPrediction {
        agents: s.agents,
        service_level: s.service_level,
        average_speed_of_answer: Some(secs(s.asa_secs)),
        probability_of_waiting: s.prob_wait,
        occupancy: s.occupancy,
        probability_of_abandoning: s.prob_abandon,
    }
}

/// A required timestamp field.
fn required_instant(
    t: Option<&prost_types::Timestamp>,
    field: &str,
    v: &mut Vec<FieldViolation>,
) -> Option<DateTime<Utc>> {
    match t.map(instant) {
        Some(Some(t)) => Some(t),
        Some(None) => {
            v.push(FieldViolation::new(field, "out of range"));
            None
        }
        None => {
            v.push(FieldViolation::new(field, "required"));
            None
        }
    }
}

/// An optional duration field, in seconds.
fn optional_secs(
    d: Option<&prost_types::Duration>,
    field: &str,
    v: &mut Vec<FieldViolation>,
) -> Option<f64> {
    let d = d?;
    match std_duration(d) {
        Some(d) => Some(d.as_secs_f64()),
        None => {
            v.push(FieldViolation::new(field, "must not be negative"));
            None
        }
    }
}

impl StatsApi {
    async fn kpi_report(
        &self,
        r: pb::GetKpiReportRequest,
    ) -> Result<pb::GetKpiReportResponse, Status> {
        let holdless = ready(&self.ready)?;
        let pb::GetKpiReportRequest {
            queue_id,
            from,
            to,
            interval,
        } = r;
        let mut v = Vec::new();
        let from = required_instant(from.as_ref(), "from", &mut v);
        let to = required_instant(to.as_ref(), "to", &mut v);
        let interval = optional_secs(interval.as_ref(), "interval", &mut v);
        let (Some(from), Some(to), true) = (from, to, v.is_empty()) else {
            return Err(invalid_argument(&v));
        };
        let interval = match interval {
            Some(s) if s.fract() != 0.0 || s > 1e9 => {
                return Err(invalid_argument(&[FieldViolation::new(
                    "interval",
                    "must be a positive multiple of 15 minutes",
                )]))
            }
            Some(s) => Some(chrono::Duration::seconds(s as i64)),
            None => None,
        };
        let report = holdless
            .kpi_report(KpiQuery {
                queue_id: (!queue_id.is_empty()).then_some(queue_id),
                from,
                to,
                interval,
            })
            .await?;
        Ok(pb::GetKpiReportResponse {
            from: Some(timestamp(report.from)),
            to: Some(timestamp(report.to)),
            intervals: report.intervals.iter().map(row_to_pb).collect(),
            total: Some(row_to_pb(&report.total)),
            arrivals: report
                .arrivals
                .iter()
                .map(|(&(weekday, hour), &calls)| pb::ArrivalCount {
                    weekday,
                    hour,
                    calls,
                })
                .collect(),
            arrivals_time_zone: report.arrivals_time_zone,
            fcr_final: report.fcr_final,
        })
    }

    async fn staffing(
        &self,
        r: pb::GetStaffingPlanRequest,
    ) -> Result<pb::GetStaffingPlanResponse, Status> {
        let holdless = ready(&self.ready)?;
        let pb::GetStaffingPlanRequest {
            queue_id,
            from,
            to,
            patience,
            arrivals_per_hour,
            average_handle_time,
        } = r;
        let mut v = Vec::new();
        if queue_id.is_empty() {
            v.push(FieldViolation::new("queue_id", "required"));
        }
        let from = required_instant(from.as_ref(), "from", &mut v);
        let to = required_instant(to.as_ref(), "to", &mut v);
        let patience = optional_secs(patience.as_ref(), "patience", &mut v);
        let aht = optional_secs(average_handle_time.as_ref(), "average_handle_time", &mut v);
        let (Some(from), Some(to), true) = (from, to, v.is_empty()) else {
            return Err(invalid_argument(&v));
        };
        let plan = holdless
            .staffing_plan(StaffingQuery {
                queue_id,
                from,
                to,
                patience_secs: patience,
                arrivals_per_hour,
                aht_secs: aht,
            })
            .await?;
        Ok(pb::GetStaffingPlanResponse {
            queue_id: plan.queue_id,
            service_level_target: plan.target_fraction,
            service_level_threshold: Some(secs(f64::from(plan.target_secs))),
            hours: plan
                .hours
                .iter()
                .map(|h| pb::StaffingHour {
                    start: Some(timestamp(h.start)),
                    arrivals_per_hour: h.arrivals_per_hour,
                    average_handle_time: Some(secs(h.aht_secs)),
                    erlang_c: h.erlang_c.as_ref().map(prediction_to_pb),
                    erlang_a: h.erlang_a.as_ref().map(prediction_to_pb),
                })
                .collect(),
        })
    }
}
