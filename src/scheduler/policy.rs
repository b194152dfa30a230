//! Callback policy as pure functions of a queue, the customer's time zone and `now`:
//! calling windows, the next instant a customer may be dialed, retry backoff, expiry
//! and scheduled slots. Local times go through chrono-tz via `routing::hours`, so DST
//! gaps move to the first valid instant and overlaps take the earlier one.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;

use crate::routing::hours::{local_to_utc, ClockTime};
use crate::routing::plan::{CallbackPolicy, Queue};

/// How far ahead `next_dial_opportunity` and slot listings look.
pub const HORIZON_DAYS: i64 = 14;

fn minute_of(t: DateTime<Tz>) -> u16 {
    use chrono::Timelike;
    (t.hour() * 60 + t.minute()) as u16
}

/// Customer-local time inside `[window_start, window_end)`.
pub fn in_calling_window(policy: &CallbackPolicy, tz: Tz, now: DateTime<Utc>) -> bool {
    let m = minute_of(now.with_timezone(&tz));
    policy.window_start.minutes <= m && m < policy.window_end.minutes
}

/// May the customer be dialed now: inside their calling window and the queue's hours.
pub fn can_dial(queue: &Queue, tz: Tz, now: DateTime<Utc>) -> bool {
    in_calling_window(&queue.callback, tz, now) && queue.is_open(now)
}

fn at_local(tz: Tz, day: NaiveDate, t: ClockTime) -> DateTime<Utc> {
    let (h, m) = (u32::from(t.minutes / 60), u32::from(t.minutes % 60));
    match NaiveTime::from_hms_opt(h, m, 0) {
        Some(time) => local_to_utc(tz, day.and_time(time)),
        // 24:00 is the next day's midnight.
        None => local_to_utc(tz, (day + Duration::days(1)).and_time(NaiveTime::MIN)),
    }
}

/// Instants where `can_dial` may change: window and business-hours boundaries over the
/// next days, in both zones.
fn boundaries(queue: &Queue, tz: Tz, from: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let start_day = from.with_timezone(&tz).date_naive() - Duration::days(1);
    for d in 0..=HORIZON_DAYS + 1 {
        let day = start_day + Duration::days(d);
        out.push(at_local(tz, day, queue.callback.window_start));
        out.push(at_local(tz, day, queue.callback.window_end));
    }
    if let Some(h) = &queue.business_hours {
        let start_day = from.with_timezone(&h.time_zone).date_naive() - Duration::days(1);
        for d in 0..=HORIZON_DAYS + 1 {
            let day = start_day + Duration::days(d);
            out.push(at_local(h.time_zone, day, ClockTime { minutes: 0 }));
            for (open, close) in &h.weekly[day.weekday().num_days_from_monday() as usize] {
                out.push(at_local(h.time_zone, day, *open));
                out.push(at_local(h.time_zone, day, *close));
            }
        }
    }
    out.retain(|t| *t > from);
    out.sort_unstable();
    out.dedup();
    out
}

/// The earliest instant at or after `from` when the customer may be dialed, within
/// [`HORIZON_DAYS`]; `None` when there is none (e.g. a queue closed for weeks).
pub fn next_dial_opportunity(queue: &Queue, tz: Tz, from: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if can_dial(queue, tz, from) {
        return Some(from);
    }
    boundaries(queue, tz, from)
        .into_iter()
        .find(|t| can_dial(queue, tz, *t))
}

/// When attempt `attempts_made + 1` may start after an attempt that ended at `last`;
/// `None` when the attempts are used up (the callback fails). The wait before attempt
/// n+1 is `retry_backoff_secs[n-1]`, the last value repeating.
pub fn next_attempt_at(
    policy: &CallbackPolicy,
    attempts_made: u32,
    last: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if attempts_made >= policy.max_attempts {
        return None;
    }
    let idx = (attempts_made.max(1) - 1) as usize;
    let wait = policy
        .retry_backoff_secs
        .get(idx)
        .or(policy.retry_backoff_secs.last())
        .copied()
        .unwrap_or(300);
    Some(last + Duration::seconds(i64::from(wait)))
}

/// The instant a callback requested at `requested_at` (or due at a slot) expires.
pub fn expires_at(policy: &CallbackPolicy, from: DateTime<Utc>) -> DateTime<Utc> {
    from + Duration::seconds(i64::from(policy.expiry_secs))
}

/// A scheduled-callback slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub free: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("the slot starts in the past")]
    InPast,
    #[error("the slot must be {0} minutes long")]
    WrongLength(u32),
    #[error("the slot is not one the queue offers (see ListSlots)")]
    Misaligned,
    #[error("the slot is outside the queue's business hours")]
    OutsideHours,
    #[error("the slot is outside the customer's calling window")]
    OutsideWindow,
}

/// The zone slots are aligned in: the queue's business-hours zone, else the customer's.
fn slot_zone(queue: &Queue, tz: Tz) -> Tz {
    queue.business_hours.as_ref().map_or(tz, |h| h.time_zone)
}

/// Every slot inside the whole stretch is dialable: the start, and the last minute.
fn slot_fits(
    queue: &Queue,
    tz: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<(), SlotError> {
    let last = end - Duration::minutes(1);
    for t in [start, last] {
        if !queue.is_open(t) {
            return Err(SlotError::OutsideHours);
        }
        if !in_calling_window(&queue.callback, tz, t) {
            return Err(SlotError::OutsideWindow);
        }
    }
    // Hours may close and reopen inside a long slot: check every 5 minutes.
    let mut t = start;
    while t < end {
        if !can_dial(queue, tz, t) {
            return Err(SlotError::OutsideHours);
        }
        t += Duration::minutes(5);
    }
    Ok(())
}

/// Candidate slots of one local day: aligned to local midnight in the slot zone.
fn day_slots(queue: &Queue, zone: Tz, day: NaiveDate) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let len = queue.callback.slot_minutes.max(5) as u16;
    let mut out = Vec::new();
    let mut m: u16 = 0;
    while m + len <= 24 * 60 {
        let start = at_local(zone, day, ClockTime { minutes: m });
        let end = at_local(zone, day, ClockTime { minutes: m + len });
        if end > start {
            out.push((start, end));
        }
        m += len;
    }
    out
}

/// Free slots of a queue for a customer in `tz`, starting after `from`, over `days`
/// days: each entirely inside business hours and the calling window, with `booked`
/// callbacks already in it subtracted from the capacity; full slots are left out.
pub fn list_slots(
    queue: &Queue,
    tz: Tz,
    from: DateTime<Utc>,
    days: u32,
    booked: &dyn Fn(DateTime<Utc>) -> u32,
) -> Vec<Slot> {
    let zone = slot_zone(queue, tz);
    let first = from.with_timezone(&zone).date_naive();
    let mut out = Vec::new();
    for d in 0..i64::from(days.min(HORIZON_DAYS as u32)) {
        for (start, end) in day_slots(queue, zone, first + Duration::days(d)) {
            if start <= from || slot_fits(queue, tz, start, end).is_err() {
                continue;
            }
            let free = queue.callback.slot_capacity.saturating_sub(booked(start));
            if free > 0 && out.last().is_none_or(|s: &Slot| s.start < start) {
                out.push(Slot { start, end, free });
            }
        }
    }
    out
}

/// Checks a requested slot: in the future, the queue's length, aligned like
/// `list_slots`, inside business hours and the calling window.
pub fn validate_slot(
    queue: &Queue,
    tz: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), SlotError> {
    if start <= now {
        return Err(SlotError::InPast);
    }
    let zone = slot_zone(queue, tz);
    let day = start.with_timezone(&zone).date_naive();
    let aligned = day_slots(queue, zone, day)
        .into_iter()
        .chain(day_slots(queue, zone, day - Duration::days(1)))
        .find(|(s, _)| *s == start);
    match aligned {
        None => {
            if end - start != Duration::minutes(i64::from(queue.callback.slot_minutes)) {
                Err(SlotError::WrongLength(queue.callback.slot_minutes))
            } else {
                Err(SlotError::Misaligned)
            }
        }
        Some((_, e)) if e != end => Err(SlotError::WrongLength(queue.callback.slot_minutes)),
        Some(_) => slot_fits(queue, tz, start, end),
    }
}

#[cfg(test)]
mod tests;
