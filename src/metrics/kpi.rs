//! KPI counters per queue and 15-minute interval, and the figures derived from them
//! (defined in the README, "KPIs"). Pure: the store applies the deltas computed here in the same
//! durable write that records the event, so a counter never runs ahead of (or behind)
//! what was acknowledged.
//!
//! Attribution and exact definitions:
//! - Call counters go to the interval in which the call entered the queue (a call
//!   transferred to another queue is a new visit there, counted in that queue).
//! - **All queues together** count a call once, at the queue it entered: the part of a
//!   visit that began with a transfer (offered, answered, abandoned, waits) is kept
//!   apart in [`TransferIn`] as well and taken out of the sum by
//!   [`KpiCounters::calls_once`]. Handle time and onward transfers of such a visit
//!   still count (agents did that work). A call transferred while still waiting thus
//!   counts in the total as offered and transferred at its entry queue, whatever
//!   happened to it later.
//! - **Offered**: queue visits that were answered, abandoned, or transferred away while
//!   still waiting. Calls that left the line for a callback are counted as callbacks
//!   accepted, not offered (nor abandoned).
//! - **Answered within target**: wait `<=` the queue's service-level seconds at the time
//!   of the event; **abandoned after target**: wait `>` them; **abandoned after 5 s**:
//!   wait `> 5 s`.
//! - **ASA** = sum of answer waits / answered. **Service level** = answered within target
//!   / (answered + abandoned after target). **Abandonment rate** = abandoned after 5 s /
//!   offered. **Transfer rate** = answered visits transferred onwards by the agent /
//!   answered. **AHT** = handle time of ended calls / ended calls.
//! - **FCR**: an answered call (counted once, in the queue and interval of its first
//!   answer) is *repeated* when a later call (a different call id) from the same customer
//!   id or caller number enters a queue within 7 days after it. The store counts the
//!   repetition when that later call is recorded, so FCR = (answered contacts - repeated)
//!   / answered contacts is final once 7 days have passed after the interval and
//!   provisional (an upper bound) before.
//! - **Callbacks** go to the interval of the callback's creation (offers: of the routed
//!   call). Offered: calls routed with a callback offer. Accepted: callbacks created from
//!   an offered call (`call_id` given). Closed: completed + failed + expired (cancelled
//!   callbacks, e.g. because the customer called in and was answered, are counted apart
//!   and are not part of the success rate). Mean attempts: attempts of closed callbacks /
//!   closed. Hold time avoided: sum of the EWT at acceptance. Time to connect: request
//!   to the CONNECTED outcome, summed over completed callbacks.
//! - **Surveys** go to the interval and queue of the surveyed call. CSAT = ratings 4-5 /
//!   CSAT answers; CES = mean; NPS = 100 * (promoters 9-10 - detractors 0-6) / answers.
//!
//! Sums of durations are whole milliseconds, so totals are exact and independent of the
//! order of addition.

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::callback::{Callback, CallbackState};
use crate::domain::contact::{ContactOutcome, ContactRecord};

/// Length of an aggregation interval.
pub const BUCKET_SECS: i64 = 900;
/// An abandon counts against the abandonment rate only after this wait.
pub const ABANDON_GRACE_SECS: f64 = 5.0;
/// Window of first-contact resolution.
pub const FCR_DAYS: i64 = 7;

/// Start of the 15-minute interval holding `t`.
pub fn bucket_start(t: DateTime<Utc>) -> DateTime<Utc> {
    let s = t.timestamp();
    let start = s - s.rem_euclid(BUCKET_SECS);
    DateTime::from_timestamp(start, 0).unwrap_or(t)
}

/// Counters of one queue in one interval (or a sum of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KpiCounters {
    pub offered: u64,
    pub answered: u64,
    pub answered_in_target: u64,
    pub abandoned: u64,
    pub abandoned_after_target: u64,
    pub abandoned_after_grace: u64,
    pub transferred_waiting: u64,
    pub answer_wait_ms: u64,
    pub transferred: u64,
    pub handled: u64,
    pub handle_ms: u64,
    pub answered_contacts: u64,
    pub fcr_repeated: u64,
    pub cb_offered: u64,
    pub cb_requested: u64,
    pub cb_accepted: u64,
    pub cb_completed: u64,
    pub cb_failed: u64,
    pub cb_expired: u64,
    pub cb_cancelled: u64,
    pub cb_attempts: u64,
    pub cb_hold_avoided_ms: u64,
    pub cb_connect_ms: u64,
    pub csat_answers: u64,
    pub csat_satisfied: u64,
    pub ces_answers: u64,
    pub ces_sum: u64,
    pub nps_answers: u64,
    pub nps_promoters: u64,
    pub nps_detractors: u64,
    /// The call counts of visits that began with a transfer from another queue
    /// (included in the counters above; taken out for all-queue totals).
    pub transfer_in: TransferIn,
}

/// Call counts of queue visits that began with a transfer (a subset of the visit
/// counters of [`KpiCounters`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransferIn {
    pub offered: u64,
    pub answered: u64,
    pub answered_in_target: u64,
    pub abandoned: u64,
    pub abandoned_after_target: u64,
    pub abandoned_after_grace: u64,
    pub transferred_waiting: u64,
    pub answer_wait_ms: u64,
}

impl TransferIn {
    /// The visit counts of `d` (one visit's delta).
    fn of(d: &KpiCounters) -> Self {
        Self {
            offered: d.offered,
            answered: d.answered,
            answered_in_target: d.answered_in_target,
            abandoned: d.abandoned,
            abandoned_after_target: d.abandoned_after_target,
            abandoned_after_grace: d.abandoned_after_grace,
            transferred_waiting: d.transferred_waiting,
            answer_wait_ms: d.answer_wait_ms,
        }
    }

    fn add(&mut self, o: &TransferIn) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f = self.$f.saturating_add(o.$f); )* };
        }
        sum!(
            offered,
            answered,
            answered_in_target,
            abandoned,
            abandoned_after_target,
            abandoned_after_grace,
            transferred_waiting,
            answer_wait_ms
        );
    }
}

fn ms(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs * 1000.0).round() as u64
    } else {
        0
    }
}

impl KpiCounters {
    pub fn add(&mut self, o: &KpiCounters) {
        macro_rules! sum {
            ($($f:ident),*) => { $( self.$f = self.$f.saturating_add(o.$f); )* };
        }
        sum!(
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
            nps_detractors
        );
        self.transfer_in.add(&o.transfer_in);
    }

    /// These counters (a sum over queues) with each call counted once, at the queue it
    /// entered: the visit counts of visits that began with a transfer are taken out.
    /// `transfer_in` stays, so a report can say how many visits were left out.
    pub fn calls_once(&self) -> KpiCounters {
        let t = &self.transfer_in;
        let mut c = self.clone();
        macro_rules! less {
            ($($f:ident),*) => { $( c.$f = c.$f.saturating_sub(t.$f); )* };
        }
        less!(
            offered,
            answered,
            answered_in_target,
            abandoned,
            abandoned_after_target,
            abandoned_after_grace,
            transferred_waiting,
            answer_wait_ms
        );
        c
    }

    pub fn is_zero(&self) -> bool {
        *self == KpiCounters::default()
    }

    pub fn cb_closed(&self) -> u64 {
        self.cb_completed + self.cb_failed + self.cb_expired
    }
}

/// What a call's new contact record adds. `old` is the record stored for the call
/// before (a repeat of the same queue visit is not counted twice); `target_secs` is the
/// queue's service-level threshold.
pub fn contact_delta(
    old: Option<&ContactRecord>,
    new: &ContactRecord,
    target_secs: f64,
) -> KpiCounters {
    contact_delta_with_grace(old, new, target_secs, ABANDON_GRACE_SECS)
}

/// [`contact_delta`] with another short-abandon threshold than [`ABANDON_GRACE_SECS`]:
/// the day simulator states the one it used, and compares with queueing theory at 0
/// (where every abandon counts, as in Erlang A).
pub fn contact_delta_with_grace(
    old: Option<&ContactRecord>,
    new: &ContactRecord,
    target_secs: f64,
    grace_secs: f64,
) -> KpiCounters {
    let same_visit = old.is_some_and(|o| {
        o.queue_id == new.queue_id && o.enqueued_at == new.enqueued_at && o.call_id == new.call_id
    });
    let mut d = KpiCounters::default();
    let wait = new.wait_secs.unwrap_or(0.0);
    let answer = |d: &mut KpiCounters| {
        d.offered += 1;
        d.answered += 1;
        d.answer_wait_ms += ms(wait);
        if wait <= target_secs {
            d.answered_in_target += 1;
        }
    };
    match new.outcome {
        ContactOutcome::Answered if !same_visit => answer(&mut d),
        ContactOutcome::Answered => {}
        ContactOutcome::Completed => {
            if !same_visit {
                answer(&mut d);
            }
            d.handled += 1;
            d.handle_ms += ms(new.handle_secs.unwrap_or(0.0));
        }
        ContactOutcome::Abandoned if !same_visit => {
            d.offered += 1;
            d.abandoned += 1;
            if wait > target_secs {
                d.abandoned_after_target += 1;
            }
            if wait > grace_secs {
                d.abandoned_after_grace += 1;
            }
        }
        ContactOutcome::Abandoned => {}
        ContactOutcome::Transferred => {
            if new.agent_id.is_some() {
                if !same_visit {
                    answer(&mut d);
                }
                d.transferred += 1;
            } else if !same_visit {
                d.offered += 1;
                d.transferred_waiting += 1;
            }
        }
    }
    // `transfers` counts the transfers before this visit: a visit that began with one.
    if new.transfers > 0 {
        d.transfer_in = TransferIn::of(&d);
    }
    d
}

/// Whether a record is an answered call (for first-contact resolution).
pub fn is_answered(r: &ContactRecord) -> bool {
    match r.outcome {
        ContactOutcome::Answered | ContactOutcome::Completed => true,
        ContactOutcome::Transferred => r.agent_id.is_some(),
        ContactOutcome::Abandoned => false,
    }
}

/// What a callback's change adds (`old` is `None` when it was just created). Counted in
/// the interval of `new.created_at`.
pub fn callback_delta(old: Option<&Callback>, new: &Callback) -> KpiCounters {
    let mut d = KpiCounters::default();
    if old.is_none() {
        d.cb_requested += 1;
        if new.origin_call_id.is_some() {
            d.cb_accepted += 1;
            d.cb_hold_avoided_ms += ms(new.ewt_at_request_secs.unwrap_or(0.0));
        }
    }
    if old.is_none_or(|o| o.state.is_open()) {
        d.add(&callback_closing_delta(new));
    }
    d
}

/// The counts of a change from an open callback to `new` (zero while `new` is still
/// open): what [`callback_delta`] adds when the stored callback was open. A store that
/// checks whether it was open in the database computes this before asking it.
pub fn callback_closing_delta(new: &Callback) -> KpiCounters {
    let mut d = KpiCounters::default();
    if !new.state.is_open() {
        let attempts = u64::from(new.attempts);
        match new.state {
            CallbackState::Completed => {
                d.cb_completed += 1;
                d.cb_attempts += attempts;
                let connect = (new.updated_at - new.created_at).num_milliseconds();
                d.cb_connect_ms += u64::try_from(connect).unwrap_or(0);
            }
            CallbackState::Failed => {
                d.cb_failed += 1;
                d.cb_attempts += attempts;
            }
            CallbackState::Expired => {
                d.cb_expired += 1;
                d.cb_attempts += attempts;
            }
            CallbackState::Cancelled => d.cb_cancelled += 1,
            CallbackState::Pending | CallbackState::Dispatched => {}
        }
    }
    d
}

/// One survey answer set (already validated: CSAT 1-5, CES 1-7, NPS 0-10).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Survey {
    pub csat: Option<u8>,
    pub ces: Option<u8>,
    pub nps: Option<u8>,
}

pub const CSAT_RANGE: std::ops::RangeInclusive<u32> = 1..=5;
pub const CES_RANGE: std::ops::RangeInclusive<u32> = 1..=7;
pub const NPS_RANGE: std::ops::RangeInclusive<u32> = 0..=10;

pub fn survey_delta(s: &Survey) -> KpiCounters {
    let mut d = KpiCounters::default();
    if let Some(c) = s.csat {
        d.csat_answers += 1;
        if c >= 4 {
            d.csat_satisfied += 1;
        }
    }
    if let Some(c) = s.ces {
        d.ces_answers += 1;
        d.ces_sum += u64::from(c);
    }
    if let Some(n) = s.nps {
        d.nps_answers += 1;
        if n >= 9 {
            d.nps_promoters += 1;
        } else if n <= 6 {
            d.nps_detractors += 1;
        }
    }
    d
}

/// The figures of a set of counters; `None` where the denominator is zero.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KpiFigures {
    pub asa_secs: Option<f64>,
    pub service_level: Option<f64>,
    pub abandonment_rate: Option<f64>,
    pub transfer_rate: Option<f64>,
    pub aht_secs: Option<f64>,
    pub fcr: Option<f64>,
    pub cb_acceptance_rate: Option<f64>,
    pub cb_success_rate: Option<f64>,
    pub cb_mean_attempts: Option<f64>,
    pub cb_hold_avoided_secs: f64,
    pub cb_mean_time_to_connect_secs: Option<f64>,
    pub csat: Option<f64>,
    pub ces: Option<f64>,
    pub nps: Option<f64>,
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

impl KpiFigures {
    pub fn of(c: &KpiCounters) -> Self {
        Self {
            asa_secs: ratio(c.answer_wait_ms, c.answered).map(|v| v / 1000.0),
            service_level: ratio(c.answered_in_target, c.answered + c.abandoned_after_target),
            abandonment_rate: ratio(c.abandoned_after_grace, c.offered),
            transfer_rate: ratio(c.transferred, c.answered),
            aht_secs: ratio(c.handle_ms, c.handled).map(|v| v / 1000.0),
            fcr: ratio(
                c.answered_contacts.saturating_sub(c.fcr_repeated),
                c.answered_contacts,
            ),
            cb_acceptance_rate: ratio(c.cb_accepted, c.cb_offered),
            cb_success_rate: ratio(c.cb_completed, c.cb_closed()),
            cb_mean_attempts: ratio(c.cb_attempts, c.cb_closed()),
            cb_hold_avoided_secs: c.cb_hold_avoided_ms as f64 / 1000.0,
            cb_mean_time_to_connect_secs: ratio(c.cb_connect_ms, c.cb_completed)
                .map(|v| v / 1000.0),
            csat: ratio(c.csat_satisfied, c.csat_answers),
            ces: ratio(c.ces_sum, c.ces_answers),
            nps: ratio(c.nps_promoters, c.nps_answers)
                .zip(ratio(c.nps_detractors, c.nps_answers))
                .map(|(p, d)| 100.0 * (p - d)),
        }
    }
}

/// Arrivals (offered calls) by local weekday (0 = Monday) and hour, in `tz`.
pub fn weekday_hour(
    buckets: &[(DateTime<Utc>, u64)],
    tz: chrono_tz::Tz,
) -> std::collections::BTreeMap<(u32, u32), u64> {
    let mut out = std::collections::BTreeMap::new();
    for (start, n) in buckets {
        let local = tz.from_utc_datetime(&start.naive_utc());
        *out.entry((local.weekday().num_days_from_monday(), local.hour()))
            .or_insert(0) += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    fn rec(outcome: ContactOutcome, wait: f64, agent: bool) -> ContactRecord {
        ContactRecord {
            call_id: "c1".into(),
            customer_id: None,
            caller: Some("+441".into()),
            queue_id: "q".into(),
            enqueued_at: t(0),
            updated_at: t(wait as i64),
            outcome,
            agent_id: agent.then(|| "a".into()),
            wait_secs: Some(wait),
            handle_secs: None,
            transfers: 0,
            facts: None,
        }
    }

    #[test]
    fn buckets_start_on_quarter_hours() {
        let b = bucket_start(
            DateTime::parse_from_rfc3339("2026-11-25T15:29:59Z")
                .unwrap()
                .into(),
        );
        assert_eq!(b.to_rfc3339(), "2026-11-25T15:15:00+00:00");
    }

    #[test]
    fn answered_then_completed_counts_one_offer_and_one_answer() {
        let a = rec(ContactOutcome::Answered, 20.0, true);
        let d1 = contact_delta(None, &a, 20.0);
        assert_eq!((d1.offered, d1.answered, d1.answered_in_target), (1, 1, 1));
        let mut done = a.clone();
        done.outcome = ContactOutcome::Completed;
        done.handle_secs = Some(200.0);
        let d2 = contact_delta(Some(&a), &done, 20.0);
        assert_eq!(
            (d2.offered, d2.answered, d2.handled, d2.handle_ms),
            (0, 0, 1, 200_000)
        );
    }

    #[test]
    fn abandons_count_against_target_and_grace_only_when_longer() {
        let d = contact_delta(None, &rec(ContactOutcome::Abandoned, 5.0, false), 20.0);
        assert_eq!(
            (
                d.abandoned,
                d.abandoned_after_grace,
                d.abandoned_after_target
            ),
            (1, 0, 0)
        );
        let d = contact_delta(None, &rec(ContactOutcome::Abandoned, 21.0, false), 20.0);
        assert_eq!(
            (
                d.abandoned,
                d.abandoned_after_grace,
                d.abandoned_after_target
            ),
            (1, 1, 1)
        );
    }

    #[test]
    fn figures_follow_the_definitions() {
        let c = KpiCounters {
            offered: 10,
            answered: 8,
            answered_in_target: 6,
            abandoned: 2,
            abandoned_after_target: 1,
            abandoned_after_grace: 1,
            answer_wait_ms: 80_000,
            transferred: 2,
            nps_answers: 4,
            nps_promoters: 2,
            nps_detractors: 1,
            ..Default::default()
        };
        let f = KpiFigures::of(&c);
        assert_eq!(f.asa_secs, Some(10.0));
        assert_eq!(f.service_level, Some(6.0 / 9.0));
        assert_eq!(f.abandonment_rate, Some(0.1));
        assert_eq!(f.transfer_rate, Some(0.25));
        assert_eq!(f.nps, Some(25.0));
        assert_eq!(f.csat, None);
    }
}
