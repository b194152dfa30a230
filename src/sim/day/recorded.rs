//! A recorded day: the contact records the live server stored for a day (arrival,
//! wait, outcome, handle time, routing facts) as the day simulator's arrivals.
//!
//! - Answered calls keep their handle time and the wait after which they were
//!   answered (used by as-recorded staffing); their patience is unknown (at least
//!   their wait): they are taken as never hanging up.
//! - Abandoned calls hang up after their recorded wait.
//! - Visits that began with a transfer are left out: the simulator plays each call
//!   once, at the queue it entered, as the all-queue KPI totals count it.

use chrono::{DateTime, Utc};

use super::{Arrivals, Dist, QueueLoad, RecordedCall};
use crate::domain::contact::{ContactOutcome, ContactRecord};
use crate::routing::CompiledPlan;

/// A recorded call and when it entered its queue.
type Timed = (DateTime<Utc>, RecordedCall);

fn ms(secs: Option<f64>) -> Option<i64> {
    secs.filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| (s * 1000.0).round() as i64)
}

/// The recorded calls of `[start, start + hours)`, per queue of `plan` (queues the
/// plan does not hold are skipped), with as-recorded staffing in mind: agents are
/// left empty.
pub fn loads(
    plan: &CompiledPlan,
    records: &[ContactRecord],
    start: DateTime<Utc>,
    hours: u32,
) -> Vec<QueueLoad> {
    let end = start + chrono::Duration::hours(i64::from(hours));
    let mut by_queue: Vec<(String, Vec<Timed>)> = Vec::new();
    for r in records {
        if r.transfers > 0 || r.enqueued_at < start || r.enqueued_at >= end {
            continue;
        }
        let Some(q) = plan.queue(&r.queue_id) else {
            continue;
        };
        let answered = match r.outcome {
            ContactOutcome::Answered | ContactOutcome::Completed => true,
            ContactOutcome::Transferred => r.agent_id.is_some(),
            ContactOutcome::Abandoned => false,
        };
        let wait = ms(r.wait_secs);
        let call = RecordedCall {
            offset_ms: (r.enqueued_at - start).num_milliseconds(),
            handle_ms: ms(r.handle_secs),
            patience_ms: if answered { None } else { wait.or(Some(0)) },
            answered_after_ms: if answered { wait.or(Some(0)) } else { None },
            call: r.facts.as_ref().map(|f| Box::new(f.to_call(&r.call_id))),
        };
        match by_queue.iter_mut().find(|(id, _)| *id == q.id) {
            Some((_, calls)) => calls.push((r.enqueued_at, call)),
            None => by_queue.push((q.id.clone(), vec![(r.enqueued_at, call)])),
        }
    }
    by_queue
        .into_iter()
        .map(|(id, mut calls)| {
            calls.sort_by_key(|(t, _)| *t);
            let aht = plan.queue(&id).map_or(300, |q| q.default_aht_secs);
            QueueLoad {
                queue: id,
                arrivals: Arrivals::Recorded(calls.into_iter().map(|(_, c)| c).collect()),
                handle: Dist::Exponential {
                    mean_secs: f64::from(aht.max(1)),
                },
                patience: Dist::Infinite,
                agents: Vec::new(),
            }
        })
        .collect()
}
