//! Callback policy: when a callback may be dialed, when its next attempt is due, when it
//! expires, which scheduled slots are offered, and where an ASAP callback stands in its
//! queue's line. Pure functions of the compiled [`Queue`], the customer's time zone and
//! an explicit instant: no I/O, no clock, no store (docs/ARCHITECTURE.md, "A callback").
//!
//! # Local time
//!
//! Calling windows are on the customer's local clock, business hours on the queue's,
//! slots on the queue's (the customer's when the queue is open around the clock). A clock
//! time on a local date names the instant [`local_at`] gives: inside a spring-forward gap
//! the first valid instant after the gap, inside a fall-back overlap the earlier of the
//! two instants. So a window or an opening is, per local date, one half-open interval
//! of instants: on 2026-03-08 in New York a window opening at 02:30 opens at 03:00 EDT,
//! and on 2026-11-01 a window closing at 01:30 closes at the first 01:30 and does not
//! open again while the clock repeats 01:00-01:30. Every function here reasons with
//! those intervals, so [`can_dial`], [`next_dial_opportunity`], [`list_slots`] and
//! [`validate_slot`] agree instant by instant.
//!
//! # Slots
//!
//! Slots lie on a grid of `slot_minutes` counted from local midnight on the slot clock:
//! `00:00-00:30, 00:30-01:00, ...` for 30 minutes. A day's grid stops at the last slot
//! that ends by midnight, so with a length that does not divide a day the remainder is
//! never offered, and slots never cross local midnight. A slot's start and end are its
//! two grid times resolved like any local time, so consecutive slots always meet and
//! the grid tiles the timeline even across DST changes; the price is that a slot's real
//! length can differ from its nominal one on a change day: on a spring-forward day the
//! slots inside the gap resolve to nothing and are skipped, one starting in the gap
//! starts when it ends (with 25-minute slots, 02:55-03:20 in New York runs 03:00-03:20
//! on 2026-03-08), and on a fall-back day the slot that ends after the repeated hour
//! also covers the repeat (01:30-02:00 in New York lasts 90 minutes on 2026-11-01). The
//! second pass of a repeated hour never starts a slot.
//!
//! The place in line itself (one ordering of live calls and ASAP callbacks) is kept by
//! the live floor, `live::floor::WaitKey`.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::routing::hours::{local_at, BusinessHours, ClockTime};
use crate::routing::plan::{CallbackPolicy, Queue};

/// How far ahead [`next_dial_opportunity`] looks, in days. Two weeks cover any weekend
/// plus a run of holidays; a queue that cannot reach its customer in that time is
/// misconfigured for them, and the scheduler should say so rather than wait forever.
pub const DIAL_SEARCH_DAYS: i64 = 14;

/// Most local days [`list_slots`] covers, and how far ahead (in local days of the slot
/// clock) [`validate_slot`] accepts a slot.
pub const MAX_SLOT_DAYS: u32 = 31;

/// A due callback not dialed this long after it became due (and not held back by
/// the calling window or business hours) is overdue: the wallboards and the
/// `HoldlessCallbacksOverdue` alert show it. Half an hour: an ASAP callback keeps a
/// caller's place in a line that rarely waits that long, and a scheduled one was
/// promised within its slot.
pub const OVERDUE_AFTER_SECS: i64 = 30 * 60;

/// [`OVERDUE_AFTER_SECS`] as a duration.
pub fn overdue_after() -> chrono::Duration {
    chrono::Duration::seconds(OVERDUE_AFTER_SECS)
}

/// Scheduled callbacks are listed and booked this many local days ahead (today
/// included) unless `callbacks.slot_horizon_days` says otherwise: two weeks cover
/// "next Tuesday" without bookings piling up for staffing nobody has planned yet.
pub const DEFAULT_SLOT_HORIZON_DAYS: u32 = 14;

const MINUTES_PER_DAY: u32 = 24 * 60;

/// A half-open interval of instants, `[start, end)`.
type Interval = (DateTime<Utc>, DateTime<Utc>);

/// Whether `now` is inside the customer's calling window: customer-local time in
/// `[window_start, window_end)`, resolved per local date as the module docs describe.
pub fn in_calling_window(policy: &CallbackPolicy, customer_tz: Tz, now: DateTime<Utc>) -> bool {
    contains(&calling_windows(policy, customer_tz, now, now), now, now)
}

/// Whether a callback of `queue` may be dialed at `now`: inside the customer's calling
/// window and inside the queue's business hours (a queue without hours is always open).
pub fn can_dial(queue: &Queue, customer_tz: Tz, now: DateTime<Utc>) -> bool {
    in_calling_window(&queue.callback, customer_tz, now) && queue.is_open(now)
}

/// The earliest instant at or after `from` at which [`can_dial`] holds; `None` when there
/// is none within [`DIAL_SEARCH_DAYS`] days of `from`.
///
/// Works on the boundaries of the two windows (each local day's window and openings as
/// intervals, intersected), not by stepping through time, so it is exact to the
/// instant and costs a few dozen time-zone lookups.
pub fn next_dial_opportunity(
    queue: &Queue,
    customer_tz: Tz,
    from: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let until = from.checked_add_signed(Duration::days(DIAL_SEARCH_DAYS))?;
    dialable(queue, customer_tz, from, until)
        .into_iter()
        .find(|&(_, end)| end > from)
        .map(|(start, _)| start.max(from))
        .filter(|&t| t <= until)
}

/// When the next attempt of a callback may start, given the attempts made so far and
/// when the last one ended; `None` when `attempts_made` has reached `max_attempts`: the
/// callback has FAILED and is not tried again.
///
/// The wait before attempt `n + 1` is `retry_backoff_secs[n - 1]`, the last value
/// repeating for later attempts. With no attempt made yet there is nothing to wait for
/// and `last_attempt_end` itself is returned. The result is a "not before": the caller
/// still waits for [`next_dial_opportunity`] from there.
pub fn next_attempt_at(
    policy: &CallbackPolicy,
    attempts_made: u32,
    last_attempt_end: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if attempts_made >= policy.max_attempts {
        return None;
    }
    let Some(previous) = attempts_made.checked_sub(1) else {
        return Some(last_attempt_end);
    };
    let backoff = &policy.retry_backoff_secs;
    // Validation refuses an empty list; should one get through, retry without waiting
    // rather than never.
    let wait_secs = backoff
        .get(previous as usize)
        .or(backoff.last())
        .copied()
        .unwrap_or(0);
    Some(
        last_attempt_end
            .checked_add_signed(Duration::seconds(i64::from(wait_secs)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC),
    )
}

/// The instant a callback requested at `requested_at` expires: `expiry_secs` later.
pub fn expires_at(policy: &CallbackPolicy, requested_at: DateTime<Utc>) -> DateTime<Utc> {
    requested_at
        .checked_add_signed(Duration::seconds(i64::from(policy.expiry_secs)))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Whether a callback requested at `requested_at` has expired at `now`: from
/// [`expires_at`] on (an expiry of one hour means it is expired at exactly one hour).
pub fn is_expired(
    policy: &CallbackPolicy,
    requested_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    now >= expires_at(policy, requested_at)
}

/// A scheduled-callback slot on offer: `[start, end)` with `free` places left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    /// `slot_capacity` minus the callbacks already booked; never zero in a listing.
    pub free: u32,
}

/// Why a requested slot cannot be booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("the slot must start in the future")]
    InPast,
    #[error("slots can be booked at most {max_days} days ahead")]
    TooFarAhead { max_days: u32 },
    #[error("a slot must start on the {slot_minutes}-minute grid of the queue's local clock")]
    Misaligned { slot_minutes: u32 },
    #[error("a slot lasts {slot_minutes} minutes of local clock time")]
    WrongLength { slot_minutes: u32 },
    #[error("the slot is not entirely inside the queue's business hours")]
    OutsideHours,
    #[error("the slot is not entirely inside the customer's calling window")]
    OutsideWindow,
}

/// The free slots of `queue` for a customer in `customer_tz`: every grid slot (see the
/// module docs) of the `days` local days of the slot clock starting with the day of
/// `from` (at most [`MAX_SLOT_DAYS`]) that starts after `from` and lies entirely inside
/// the queue's business hours and the customer's calling window. `booked(start)` says
/// how many callbacks hold the slot starting at `start`; full slots are left out.
/// Sorted by start; slots never overlap.
pub fn list_slots(
    queue: &Queue,
    customer_tz: Tz,
    from: DateTime<Utc>,
    days: u32,
    booked: &dyn Fn(DateTime<Utc>) -> u32,
) -> Vec<Slot> {
    let minutes = queue.callback.slot_minutes;
    if !(1..=MINUTES_PER_DAY).contains(&minutes) {
        return Vec::new();
    }
    let zone = slot_zone(queue, customer_tz);
    let dates: Vec<NaiveDate> = from
        .with_timezone(&zone)
        .date_naive()
        .iter_days()
        .take(days.min(MAX_SLOT_DAYS) as usize)
        .collect();
    let Some(&last) = dates.last() else {
        return Vec::new();
    };
    let until = last
        .succ_opt()
        .map_or(DateTime::<Utc>::MAX_UTC, |d| local_at(zone, d, midnight()));
    let open = dialable(queue, customer_tz, from, until);
    let mut slots = Vec::new();
    for date in dates {
        for (start, end) in grid(zone, date, minutes) {
            if start <= from || !contains(&open, start, end) {
                continue;
            }
            let free = queue.callback.slot_capacity.saturating_sub(booked(start));
            if free > 0 {
                slots.push(Slot { start, end, free });
            }
        }
    }
    slots
}

/// Checks that `[start, end)` is a slot [`list_slots`] could offer at `now` when asked
/// for `horizon_days` days (capped at [`MAX_SLOT_DAYS`]), capacity aside (the caller
/// counts bookings inside its store transaction): listing and booking share one
/// horizon, so nothing can be booked that could not be listed. The checks run in the
/// order of the variants of [`SlotError`], and the first failing one is reported.
pub fn validate_slot(
    queue: &Queue,
    customer_tz: Tz,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
    horizon_days: u32,
) -> Result<(), SlotError> {
    if start <= now {
        return Err(SlotError::InPast);
    }
    let zone = slot_zone(queue, customer_tz);
    let date = start.with_timezone(&zone).date_naive();
    let days_ahead = (date - now.with_timezone(&zone).date_naive()).num_days();
    let horizon_days = horizon_days.min(MAX_SLOT_DAYS);
    if days_ahead >= i64::from(horizon_days) {
        return Err(SlotError::TooFarAhead {
            max_days: horizon_days,
        });
    }
    // The slot must be one of the grid's, exactly as listed: comparing against the
    // grid itself (rather than checking the start's wall clock) keeps the two in step
    // on DST days, where a grid slot may start at the end of a gap and the second pass
    // of a repeated hour shows grid times that are not slot starts.
    let slot_minutes = queue.callback.slot_minutes;
    if !(1..=MINUTES_PER_DAY).contains(&slot_minutes) {
        return Err(SlotError::Misaligned { slot_minutes });
    }
    // A start resolved forward out of a gap may sit on the next local date.
    let grid_end = [date.pred_opt(), Some(date)]
        .into_iter()
        .flatten()
        .flat_map(|d| grid(zone, d, slot_minutes))
        .find(|&(grid_start, _)| grid_start == start)
        .map(|(_, grid_end)| grid_end);
    match grid_end {
        None => return Err(SlotError::Misaligned { slot_minutes }),
        Some(grid_end) if grid_end != end => {
            return Err(SlotError::WrongLength { slot_minutes });
        }
        Some(_) => {}
    }
    if let Some(hours) = &queue.business_hours {
        if !contains(&openings(hours, start, end), start, end) {
            return Err(SlotError::OutsideHours);
        }
    }
    if !contains(
        &calling_windows(&queue.callback, customer_tz, start, end),
        start,
        end,
    ) {
        return Err(SlotError::OutsideWindow);
    }
    Ok(())
}

/// The zone of the slot clock: the queue's hours, else the customer's.
fn slot_zone(queue: &Queue, customer_tz: Tz) -> Tz {
    queue
        .business_hours
        .as_ref()
        .map_or(customer_tz, |h| h.time_zone())
}

fn midnight() -> ClockTime {
    ClockTime { minutes: 0 }
}

/// A clock time from minutes since midnight; callers keep `minutes <= 1440`.
fn clock(minutes: u32) -> ClockTime {
    ClockTime {
        minutes: u16::try_from(minutes.min(MINUTES_PER_DAY)).unwrap_or(u16::MAX),
    }
}

/// The slot grid of one local date, as resolved intervals; slots that resolve to
/// nothing (inside a spring-forward gap) are left out.
fn grid(zone: Tz, date: NaiveDate, slot_minutes: u32) -> Vec<Interval> {
    let points: Vec<DateTime<Utc>> = (0..=MINUTES_PER_DAY / slot_minutes)
        .map(|k| local_at(zone, date, clock(k * slot_minutes)))
        .collect();
    points
        .windows(2)
        .map(|w| (w[0], w[1]))
        .filter(|(start, end)| start < end)
        .collect()
}

/// Local dates of `tz` whose intervals may touch `[from, to]`: a day of margin on each
/// side, for the odd zone whose DST change crosses midnight.
fn local_dates(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> impl Iterator<Item = NaiveDate> {
    let first = from.with_timezone(&tz).date_naive();
    let first = first.pred_opt().unwrap_or(first);
    let last = to.with_timezone(&tz).date_naive();
    let last = last.succ_opt().unwrap_or(last);
    first.iter_days().take_while(move |d| *d <= last)
}

/// The customer's calling windows around `[from, to]`, sorted and merged.
fn calling_windows(
    policy: &CallbackPolicy,
    customer_tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Interval> {
    merge(
        local_dates(customer_tz, from, to)
            .map(|d| {
                (
                    local_at(customer_tz, d, policy.window_start),
                    local_at(customer_tz, d, policy.window_end),
                )
            })
            .collect(),
    )
}

/// The queue's openings around `[from, to]`, sorted and merged.
fn openings(hours: &BusinessHours, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Interval> {
    merge(
        local_dates(hours.time_zone(), from, to)
            .flat_map(|d| hours.open_intervals_on(d))
            .collect(),
    )
}

/// When a callback of `queue` may be dialed around `[from, to]`: calling windows
/// intersected with openings, sorted, disjoint and never touching.
fn dialable(
    queue: &Queue,
    customer_tz: Tz,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<Interval> {
    let windows = calling_windows(&queue.callback, customer_tz, from, to);
    match &queue.business_hours {
        None => windows,
        Some(hours) => intersect(&windows, &openings(hours, from, to)),
    }
}

/// Sorts and merges overlapping or touching intervals; drops empty ones.
fn merge(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.retain(|(start, end)| start < end);
    intervals.sort_unstable();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The intersection of two merged interval lists, itself merged.
fn intersect(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if start < end {
            out.push((start, end));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Whether `[start, end]` (a point when equal, else `[start, end)`) lies inside one
/// interval of a merged list.
fn contains(intervals: &[Interval], start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
    let k = intervals.partition_point(|iv| iv.0 <= start);
    k > 0 && {
        let (_, iv_end) = intervals[k - 1];
        start < iv_end && end <= iv_end
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use chrono::Timelike;
    use chrono_tz::{America, Asia, Australia, Europe};
    use proptest::prelude::*;

    use super::*;
    use crate::routing::plan::Dialing;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("test instants are RFC 3339")
            .with_timezone(&Utc)
    }

    fn hm(s: &str) -> ClockTime {
        ClockTime::parse(s, true).expect("test clock times are HH:MM")
    }

    fn policy(window_start: &str, window_end: &str) -> CallbackPolicy {
        CallbackPolicy {
            enabled: true,
            offer_after_ewt_secs: 120,
            window_start: hm(window_start),
            window_end: hm(window_end),
            dialing: Dialing::AgentFirst,
            max_attempts: 4,
            retry_backoff_secs: vec![60, 300],
            expiry_secs: 3600,
            slot_minutes: 30,
            slot_capacity: 2,
            abandon_rescue_after_secs: 0,
        }
    }

    /// Hours `open`-`close` on the given weekdays (Mon = 0), closed on `holidays`.
    fn hours(tz: Tz, days: &[usize], open: &str, close: &str, holidays: &[&str]) -> BusinessHours {
        let mut weekly: [Vec<(ClockTime, ClockTime)>; 7] = Default::default();
        for &d in days {
            weekly[d].push((hm(open), hm(close)));
        }
        BusinessHours::new(
            tz,
            weekly,
            holidays
                .iter()
                .map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").expect("test dates"))
                .collect(),
        )
    }

    const WEEKDAYS: &[usize] = &[0, 1, 2, 3, 4];
    const EVERY_DAY: &[usize] = &[0, 1, 2, 3, 4, 5, 6];

    fn queue(business_hours: Option<BusinessHours>, callback: CallbackPolicy) -> Queue {
        Queue {
            id: "support".into(),
            name: "Support".into(),
            skills: vec!["support".into()],
            business_hours,
            service_level_target: 0.8,
            service_level_secs: 20,
            max_waiting: 100,
            default_aht_secs: 300,
            callback,
            contact_uri: String::new(),
        }
    }

    /// New York weekdays 09:00-17:00, US holidays of 2026 that matter below.
    fn new_york_office(callback: CallbackPolicy) -> Queue {
        queue(
            Some(hours(
                America::New_York,
                WEEKDAYS,
                "09:00",
                "17:00",
                &["2026-09-07", "2026-12-25"],
            )),
            callback,
        )
    }

    fn no_bookings(_: DateTime<Utc>) -> u32 {
        0
    }

    fn starts(slots: &[Slot]) -> Vec<DateTime<Utc>> {
        slots.iter().map(|s| s.start).collect()
    }

    fn assert_tiles(slots: &[Slot]) {
        for pair in slots.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "slots must meet: {pair:?}");
        }
    }

    // ---- calling window ------------------------------------------------------------

    #[test]
    fn window_is_half_open_in_new_york_local_time_in_both_seasons() {
        let p = policy("08:00", "21:00");
        let ny = America::New_York;
        // January, EST (UTC-5).
        assert!(!in_calling_window(&p, ny, utc("2026-01-15T12:59:00Z")));
        assert!(in_calling_window(&p, ny, utc("2026-01-15T13:00:00Z")));
        assert!(in_calling_window(&p, ny, utc("2026-01-16T01:59:59Z")));
        assert!(!in_calling_window(&p, ny, utc("2026-01-16T02:00:00Z")));
        // July, EDT (UTC-4): the same local window is an hour earlier in UTC.
        assert!(!in_calling_window(&p, ny, utc("2026-07-15T11:59:00Z")));
        assert!(in_calling_window(&p, ny, utc("2026-07-15T12:00:00Z")));
        assert!(!in_calling_window(&p, ny, utc("2026-07-16T01:00:00Z")));
    }

    #[test]
    fn window_follows_london_summer_time() {
        let p = policy("08:00", "21:00");
        let london = Europe::London;
        // 07:00 UTC is 08:00 BST in July but 07:00 GMT in January.
        assert!(in_calling_window(&p, london, utc("2026-07-15T07:00:00Z")));
        assert!(!in_calling_window(&p, london, utc("2026-07-15T06:59:00Z")));
        assert!(!in_calling_window(&p, london, utc("2026-01-15T07:00:00Z")));
        assert!(in_calling_window(&p, london, utc("2026-01-15T08:00:00Z")));
        assert!(in_calling_window(&p, london, utc("2026-01-15T20:59:00Z")));
        assert!(!in_calling_window(&p, london, utc("2026-01-15T21:00:00Z")));
    }

    #[test]
    fn window_in_tokyo_spans_the_utc_date_line_and_never_shifts() {
        let p = policy("08:00", "21:00");
        let tokyo = Asia::Tokyo;
        for day in ["2026-01-14", "2026-07-14"] {
            // 23:00 UTC is 08:00 the next day in Tokyo (UTC+9, no DST).
            assert!(in_calling_window(
                &p,
                tokyo,
                utc(&format!("{day}T23:00:00Z"))
            ));
            assert!(!in_calling_window(
                &p,
                tokyo,
                utc(&format!("{day}T22:59:00Z"))
            ));
            assert!(in_calling_window(
                &p,
                tokyo,
                utc(&format!("{day}T11:59:00Z"))
            ));
            assert!(!in_calling_window(
                &p,
                tokyo,
                utc(&format!("{day}T12:00:00Z"))
            ));
        }
    }

    #[test]
    fn window_follows_lord_howe_half_hour_dst() {
        let p = policy("08:00", "21:00");
        let lh = Australia::Lord_Howe;
        // January: UTC+11, 08:00 is 21:00 UTC. July: UTC+10:30, 08:00 is 21:30 UTC.
        assert!(in_calling_window(&p, lh, utc("2026-01-14T21:15:00Z")));
        assert!(!in_calling_window(&p, lh, utc("2026-07-14T21:15:00Z")));
        assert!(in_calling_window(&p, lh, utc("2026-07-14T21:30:00Z")));
    }

    #[test]
    fn window_opening_in_lord_howe_gap_opens_when_the_gap_ends() {
        // 2026-10-04 02:00 jumps to 02:30 (UTC+10:30 -> UTC+11); 02:30 = 15:30 UTC.
        let p = policy("02:15", "21:00");
        let lh = Australia::Lord_Howe;
        assert!(!in_calling_window(&p, lh, utc("2026-10-03T15:29:00Z")));
        assert!(in_calling_window(&p, lh, utc("2026-10-03T15:30:00Z")));
    }

    #[test]
    fn window_closing_in_lord_howe_repeated_half_hour_closes_at_the_first_pass() {
        // 2026-04-05 02:00 (UTC+11) goes back to 01:30 (UTC+10:30); 01:30-02:00 repeats.
        let p = policy("00:00", "01:45");
        let lh = Australia::Lord_Howe;
        assert!(in_calling_window(&p, lh, utc("2026-04-04T14:44:00Z")));
        assert!(!in_calling_window(&p, lh, utc("2026-04-04T14:45:00Z")));
        // 15:05 UTC is 01:35 again (second pass): still closed.
        assert!(!in_calling_window(&p, lh, utc("2026-04-04T15:05:00Z")));
    }

    #[test]
    fn window_opening_in_new_york_gap_opens_at_three_on_spring_forward_day() {
        let p = policy("02:30", "21:00");
        let ny = America::New_York;
        // 06:59 UTC is 01:59 EST; 07:00 UTC is 03:00 EDT.
        assert!(!in_calling_window(&p, ny, utc("2026-03-08T06:59:00Z")));
        assert!(in_calling_window(&p, ny, utc("2026-03-08T07:00:00Z")));
        // The next day 02:30 exists again: 06:30 UTC.
        assert!(!in_calling_window(&p, ny, utc("2026-03-09T06:29:00Z")));
        assert!(in_calling_window(&p, ny, utc("2026-03-09T06:30:00Z")));
    }

    #[test]
    fn window_closing_in_the_repeated_hour_does_not_reopen_for_the_repeat() {
        let p = policy("00:00", "01:30");
        let ny = America::New_York;
        assert!(in_calling_window(&p, ny, utc("2026-11-01T05:29:00Z"))); // 01:29 EDT
        assert!(!in_calling_window(&p, ny, utc("2026-11-01T05:30:00Z"))); // 01:30 EDT
        assert!(!in_calling_window(&p, ny, utc("2026-11-01T06:10:00Z"))); // 01:10 EST
    }

    // ---- can_dial --------------------------------------------------------------------

    #[test]
    fn dialing_needs_both_the_customer_window_and_the_queue_open() {
        let q = new_york_office(policy("08:00", "21:00"));
        let la = America::Los_Angeles;
        // Wed 2026-11-25. 09:30 ET = 06:30 PT: open, but too early for the customer.
        assert!(!can_dial(&q, la, utc("2026-11-25T14:30:00Z")));
        // 11:00 ET = 08:00 PT: both.
        assert!(can_dial(&q, la, utc("2026-11-25T16:00:00Z")));
        // 17:00 ET = 14:00 PT: customer fine, queue closed.
        assert!(!can_dial(&q, la, utc("2026-11-25T22:00:00Z")));
    }

    #[test]
    fn queue_without_hours_leaves_only_the_window() {
        let q = queue(None, policy("08:00", "21:00"));
        let la = America::Los_Angeles;
        // Saturday 2026-11-28, 08:00 PT.
        assert!(can_dial(&q, la, utc("2026-11-28T16:00:00Z")));
        assert!(!can_dial(&q, la, utc("2026-11-28T15:59:00Z")));
    }

    // ---- next_dial_opportunity --------------------------------------------------------

    #[test]
    fn next_opportunity_is_now_when_dialing_is_allowed() {
        let q = new_york_office(policy("08:00", "21:00"));
        let now = utc("2026-11-27T21:30:00Z"); // Fri 16:30 ET
        assert_eq!(next_dial_opportunity(&q, America::New_York, now), Some(now));
    }

    #[test]
    fn friday_evening_waits_for_monday_opening() {
        let q = new_york_office(policy("08:00", "21:00"));
        // Fri 2026-11-27 17:30 ET -> Mon 2026-11-30 09:00 ET.
        let from = utc("2026-11-27T22:30:00Z");
        assert_eq!(
            next_dial_opportunity(&q, America::New_York, from),
            Some(utc("2026-11-30T14:00:00Z"))
        );
        // A customer in Los Angeles: Monday 09:00 ET is 06:00 PT; wait for 08:00 PT.
        assert_eq!(
            next_dial_opportunity(&q, America::Los_Angeles, from),
            Some(utc("2026-11-30T16:00:00Z"))
        );
    }

    #[test]
    fn holiday_monday_pushes_the_next_opportunity_to_tuesday() {
        let q = new_york_office(policy("08:00", "21:00"));
        // Fri 2026-09-04 17:30 EDT; Mon 09-07 is Labor Day -> Tue 09:00 EDT.
        assert_eq!(
            next_dial_opportunity(&q, America::New_York, utc("2026-09-04T21:30:00Z")),
            Some(utc("2026-09-08T13:00:00Z"))
        );
        // Thu 2026-12-24 17:30 EST; Christmas Friday, then the weekend -> Mon 12-28.
        assert_eq!(
            next_dial_opportunity(&q, America::New_York, utc("2026-12-24T22:30:00Z")),
            Some(utc("2026-12-28T14:00:00Z"))
        );
    }

    #[test]
    fn window_in_spring_forward_gap_is_first_dialable_when_the_gap_ends() {
        let q = queue(None, policy("02:30", "21:00"));
        // From 00:00 EST on 2026-03-08: 02:30 does not exist, 03:00 EDT = 07:00 UTC.
        assert_eq!(
            next_dial_opportunity(&q, America::New_York, utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
        // Same for business hours opening in the gap.
        let q = queue(
            Some(hours(America::New_York, EVERY_DAY, "02:30", "04:00", &[])),
            policy("00:00", "24:00"),
        );
        assert_eq!(
            next_dial_opportunity(&q, Asia::Tokyo, utc("2026-03-08T05:00:00Z")),
            Some(utc("2026-03-08T07:00:00Z"))
        );
    }

    #[test]
    fn no_opportunity_when_hours_and_window_never_meet() {
        // Tokyo 09:00-17:00 is 00:00-08:00 UTC; New York 08:00-10:00 is 12:00-15:00 UTC.
        let q = queue(
            Some(hours(Asia::Tokyo, EVERY_DAY, "09:00", "17:00", &[])),
            policy("08:00", "10:00"),
        );
        assert_eq!(
            next_dial_opportunity(&q, America::New_York, utc("2026-06-01T00:00:00Z")),
            None
        );
    }

    // ---- attempts and expiry -------------------------------------------------------

    #[test]
    fn backoff_follows_the_list_and_repeats_its_last_wait() {
        let p = policy("08:00", "21:00"); // max 4 attempts, backoff [60, 300]
        let t = utc("2026-05-01T12:00:00Z");
        assert_eq!(next_attempt_at(&p, 0, t), Some(t));
        assert_eq!(next_attempt_at(&p, 1, t), Some(t + Duration::seconds(60)));
        assert_eq!(next_attempt_at(&p, 2, t), Some(t + Duration::seconds(300)));
        assert_eq!(next_attempt_at(&p, 3, t), Some(t + Duration::seconds(300)));
    }

    #[test]
    fn callback_fails_after_max_attempts() {
        let mut p = policy("08:00", "21:00");
        let t = utc("2026-05-01T12:00:00Z");
        assert_eq!(next_attempt_at(&p, 4, t), None);
        assert_eq!(next_attempt_at(&p, 5, t), None);
        p.max_attempts = 1;
        assert_eq!(next_attempt_at(&p, 1, t), None);
    }

    #[test]
    fn callback_expires_exactly_at_its_expiry() {
        let p = policy("08:00", "21:00"); // expiry one hour
        let requested = utc("2026-05-01T12:00:00Z");
        assert_eq!(expires_at(&p, requested), utc("2026-05-01T13:00:00Z"));
        assert!(!is_expired(&p, requested, requested));
        assert!(!is_expired(&p, requested, utc("2026-05-01T12:59:59Z")));
        assert!(is_expired(&p, requested, utc("2026-05-01T13:00:00Z")));
        assert!(!is_expired(&p, requested, utc("2026-05-01T11:00:00Z")));
    }

    // ---- slots -----------------------------------------------------------------------

    /// A queue and window open around the clock in one zone: only the grid and DST left.
    fn round_the_clock(tz: Tz) -> Queue {
        queue(
            Some(hours(tz, EVERY_DAY, "00:00", "24:00", &[])),
            policy("00:00", "24:00"),
        )
    }

    #[test]
    fn us_spring_forward_skips_the_slots_in_the_gap() {
        let q = round_the_clock(America::New_York);
        // From 23:59 EST on the 7th, two local days: only 03-08 slots are after `from`.
        let slots = list_slots(
            &q,
            America::New_York,
            utc("2026-03-08T04:59:00Z"),
            2,
            &no_bookings,
        );
        let day: Vec<_> = slots
            .iter()
            .filter(|s| s.start < utc("2026-03-09T04:00:00Z"))
            .collect();
        // 48 grid slots minus 02:00 and 02:30, which do not exist.
        assert_eq!(day.len(), 46);
        assert_eq!(day[0].start, utc("2026-03-08T05:00:00Z"));
        // 01:30 EST - 02:00 (= 03:00 EDT), then 03:00 EDT.
        assert_eq!(day[3].start, utc("2026-03-08T06:30:00Z"));
        assert_eq!(day[3].end, utc("2026-03-08T07:00:00Z"));
        assert_eq!(day[4].start, utc("2026-03-08T07:00:00Z"));
        assert_eq!(day[45].end, utc("2026-03-09T04:00:00Z"));
        assert_tiles(&slots);
    }

    #[test]
    fn us_fall_back_slot_before_two_covers_the_repeated_hour() {
        let q = round_the_clock(America::New_York);
        let slots = list_slots(
            &q,
            America::New_York,
            utc("2026-11-01T03:59:00Z"),
            2,
            &no_bookings,
        );
        let day: Vec<_> = slots
            .iter()
            .filter(|s| s.start < utc("2026-11-02T05:00:00Z"))
            .collect();
        assert_eq!(day.len(), 48);
        assert_eq!(day[0].start, utc("2026-11-01T04:00:00Z"));
        // 01:00-01:30 EDT, then 01:30 EDT - 02:00 EST: 90 real minutes.
        assert_eq!(
            (day[2].start, day[2].end),
            (utc("2026-11-01T05:00:00Z"), utc("2026-11-01T05:30:00Z"))
        );
        assert_eq!(
            (day[3].start, day[3].end),
            (utc("2026-11-01T05:30:00Z"), utc("2026-11-01T07:00:00Z"))
        );
        assert_eq!(day[47].end, utc("2026-11-02T05:00:00Z"));
        assert_tiles(&slots);
        // No slot starts on the second pass of the repeated hour.
        assert!(!starts(&slots).contains(&utc("2026-11-01T06:00:00Z")));
    }

    #[test]
    fn eu_spring_change_moves_the_london_slots_a_new_york_customer_gets() {
        // London 09:00-17:00 daily; New York customer 08:00-21:00. The US is already on
        // EDT (since 03-08), so the window opens at 12:00 UTC throughout.
        let q = queue(
            Some(hours(Europe::London, EVERY_DAY, "09:00", "17:00", &[])),
            policy("08:00", "21:00"),
        );
        let ny = America::New_York;
        // Fri 03-27, London on GMT: 12:00-17:00 London = 10 slots, 12:00-17:00 UTC.
        let before = list_slots(&q, ny, utc("2026-03-27T00:00:00Z"), 1, &no_bookings);
        assert_eq!(before.len(), 10);
        assert_eq!(before[0].start, utc("2026-03-27T12:00:00Z"));
        assert_eq!(before[9].end, utc("2026-03-27T17:00:00Z"));
        // Sun 03-29, London on BST from 01:00 UTC: 13:00-17:00 London = 8 slots,
        // 12:00-16:00 UTC.
        let after = list_slots(&q, ny, utc("2026-03-29T00:00:00Z"), 1, &no_bookings);
        assert_eq!(after.len(), 8);
        assert_eq!(after[0].start, utc("2026-03-29T12:00:00Z"));
        assert_eq!(after[7].end, utc("2026-03-29T16:00:00Z"));
    }

    #[test]
    fn eu_and_us_autumn_changes_each_move_the_slots() {
        let q = queue(
            Some(hours(Europe::London, EVERY_DAY, "09:00", "17:00", &[])),
            policy("08:00", "21:00"),
        );
        let ny = America::New_York;
        let count = |day: &str| {
            let from = utc(&format!("{day}T00:00:00Z"));
            let slots = list_slots(&q, ny, from, 1, &no_bookings);
            (slots.len(), slots[0].start)
        };
        // Sat 10-24: BST and EDT, window opens 12:00 UTC = 13:00 London.
        assert_eq!(count("2026-10-24"), (8, utc("2026-10-24T12:00:00Z")));
        // Sun 10-25: GMT and EDT, 12:00 UTC = 12:00 London.
        assert_eq!(count("2026-10-25"), (10, utc("2026-10-25T12:00:00Z")));
        // Sun 11-01: GMT and EST, window opens 13:00 UTC = 13:00 London.
        assert_eq!(count("2026-11-01"), (8, utc("2026-11-01T13:00:00Z")));
    }

    #[test]
    fn eu_spring_gap_and_autumn_repeat_in_the_queue_zone_keep_slots_tiled() {
        // London open around the clock, Tokyo customer 08:00-21:00 (23:00-12:00 UTC).
        let q = queue(
            Some(hours(Europe::London, EVERY_DAY, "00:00", "24:00", &[])),
            policy("08:00", "21:00"),
        );
        let tokyo = Asia::Tokyo;
        // 2026-03-29: London 01:00 GMT jumps to 02:00 BST.
        let spring = list_slots(&q, tokyo, utc("2026-03-28T23:59:00Z"), 2, &no_bookings);
        let day: Vec<_> = spring
            .iter()
            .filter(|s| s.start < utc("2026-03-29T23:00:00Z"))
            .copied()
            .collect();
        // 00:00 and 00:30 GMT, then 02:00 BST (01:00 UTC) up to 13:00 BST (12:00 UTC).
        assert_eq!(day.len(), 24);
        assert_eq!(day[1].end, utc("2026-03-29T01:00:00Z"));
        assert_eq!(day[2].start, utc("2026-03-29T01:00:00Z"));
        assert_eq!(day[23].end, utc("2026-03-29T12:00:00Z"));
        assert_tiles(&day);
        // 2026-10-25: London 02:00 BST goes back to 01:00 GMT.
        let autumn = list_slots(&q, tokyo, utc("2026-10-24T22:59:00Z"), 2, &no_bookings);
        let day: Vec<_> = autumn
            .iter()
            .filter(|s| s.start < utc("2026-10-25T23:00:00Z"))
            .copied()
            .collect();
        assert_eq!(day[0].start, utc("2026-10-24T23:00:00Z")); // 00:00 BST
        let long = day
            .iter()
            .find(|s| s.start == utc("2026-10-25T00:30:00Z"))
            .expect("the 01:30 BST slot is offered");
        assert_eq!(long.end, utc("2026-10-25T02:00:00Z")); // 02:00 GMT
        assert_eq!(day.last().map(|s| s.end), Some(utc("2026-10-25T12:00:00Z")));
        assert_tiles(&day);
    }

    #[test]
    fn customer_spring_forward_moves_the_first_slot_an_hour_earlier_in_utc() {
        // Tokyo queue open around the clock (no DST); New York customer 08:00-21:00.
        let mut p = policy("08:00", "21:00");
        p.slot_minutes = 60;
        let q = queue(
            Some(hours(Asia::Tokyo, EVERY_DAY, "00:00", "24:00", &[])),
            p,
        );
        let slots = list_slots(
            &q,
            America::New_York,
            utc("2026-03-06T15:00:00Z"),
            5,
            &no_bookings,
        );
        let all = starts(&slots);
        // Sat 03-07 (EST): 08:00 = 13:00 UTC. Sun 03-08 and Mon 03-09 (EDT): 12:00 UTC.
        assert!(all.contains(&utc("2026-03-07T13:00:00Z")));
        assert!(!all.contains(&utc("2026-03-07T12:00:00Z")));
        assert!(all.contains(&utc("2026-03-08T12:00:00Z")));
        assert!(!all.contains(&utc("2026-03-08T11:00:00Z")));
        assert!(all.contains(&utc("2026-03-09T12:00:00Z")));
        // Last slot of the 03-07 window ends 21:00 EST = 02:00 UTC on the 8th.
        assert!(all.contains(&utc("2026-03-08T01:00:00Z")));
        assert!(!all.contains(&utc("2026-03-08T02:00:00Z")));
    }

    #[test]
    fn scheduled_slot_on_spring_forward_day_is_accepted_with_its_resolved_end() {
        let q = round_the_clock(America::New_York);
        let ny = America::New_York;
        let now = utc("2026-03-07T12:00:00Z");
        // 01:30 EST - 02:00 (which is 03:00 EDT).
        assert_eq!(
            validate_slot(
                &q,
                ny,
                utc("2026-03-08T06:30:00Z"),
                utc("2026-03-08T07:00:00Z"),
                now,
                MAX_SLOT_DAYS
            ),
            Ok(())
        );
        // 03:00 - 03:30 EDT.
        assert_eq!(
            validate_slot(
                &q,
                ny,
                utc("2026-03-08T07:00:00Z"),
                utc("2026-03-08T07:30:00Z"),
                now,
                MAX_SLOT_DAYS
            ),
            Ok(())
        );
        assert_eq!(
            validate_slot(
                &q,
                ny,
                utc("2026-03-08T06:30:00Z"),
                utc("2026-03-08T07:30:00Z"),
                now,
                MAX_SLOT_DAYS
            ),
            Err(SlotError::WrongLength { slot_minutes: 30 })
        );
        // With the usual 08:00-21:00 window the day's first slot is 08:00 EDT.
        let q = queue(
            Some(hours(ny, EVERY_DAY, "00:00", "24:00", &[])),
            policy("08:00", "21:00"),
        );
        let slots = list_slots(&q, ny, now, 2, &no_bookings);
        let first = slots
            .iter()
            .find(|s| s.start > utc("2026-03-08T05:00:00Z"))
            .expect("slots on 03-08");
        assert_eq!(first.start, utc("2026-03-08T12:00:00Z"));
        assert_eq!(
            validate_slot(&q, ny, first.start, first.end, now, MAX_SLOT_DAYS),
            Ok(())
        );
        assert_eq!(
            validate_slot(
                &q,
                ny,
                utc("2026-03-08T11:30:00Z"),
                utc("2026-03-08T12:00:00Z"),
                now,
                MAX_SLOT_DAYS
            ),
            Err(SlotError::OutsideWindow)
        );
    }

    #[test]
    fn slot_starting_in_the_gap_starts_when_the_gap_ends() {
        let mut q = round_the_clock(America::New_York);
        q.callback.slot_minutes = 25;
        let ny = America::New_York;
        let now = utc("2026-03-08T05:00:00Z");
        let slots = list_slots(&q, ny, now, 1, &no_bookings);
        // 01:40 EST - 02:05 (= 03:00 EDT), then 02:55-03:20 as 03:00-03:20 EDT;
        // 02:05-02:30 and 02:30-02:55 do not exist.
        let around: Vec<_> = slots
            .iter()
            .filter(|s| s.start >= utc("2026-03-08T06:40:00Z"))
            .take(2)
            .map(|s| (s.start, s.end))
            .collect();
        assert_eq!(
            around,
            [
                (utc("2026-03-08T06:40:00Z"), utc("2026-03-08T07:00:00Z")),
                (utc("2026-03-08T07:00:00Z"), utc("2026-03-08T07:20:00Z")),
            ]
        );
        for (start, end) in around {
            assert_eq!(
                validate_slot(&q, ny, start, end, now, MAX_SLOT_DAYS),
                Ok(())
            );
        }
    }

    #[test]
    fn repeated_hour_second_pass_is_not_a_slot_start() {
        let q = round_the_clock(America::New_York);
        // 06:00 UTC is 01:00 EST, the second 01:00 of 2026-11-01.
        assert_eq!(
            validate_slot(
                &q,
                America::New_York,
                utc("2026-11-01T06:00:00Z"),
                utc("2026-11-01T06:30:00Z"),
                utc("2026-10-31T12:00:00Z"),
                MAX_SLOT_DAYS,
            ),
            Err(SlotError::Misaligned { slot_minutes: 30 })
        );
    }

    #[test]
    fn validate_slot_names_what_is_wrong() {
        let q = new_york_office(policy("08:00", "21:00"));
        let la = America::Los_Angeles;
        let now = utc("2026-11-25T12:00:00Z"); // Wed
        let check = |s: &str, e: &str| validate_slot(&q, la, utc(s), utc(e), now, MAX_SLOT_DAYS);
        // 11:00-11:30 ET = 08:00-08:30 PT.
        assert_eq!(
            check("2026-11-25T16:00:00Z", "2026-11-25T16:30:00Z"),
            Ok(())
        );
        assert_eq!(
            check("2026-11-25T11:00:00Z", "2026-11-25T11:30:00Z"),
            Err(SlotError::InPast)
        );
        assert_eq!(
            check("2026-11-25T12:00:00Z", "2026-11-25T12:30:00Z"),
            Err(SlotError::InPast)
        );
        assert_eq!(
            check("2027-01-04T16:00:00Z", "2027-01-04T16:30:00Z"),
            Err(SlotError::TooFarAhead { max_days: 31 })
        );
        // A shorter horizon: its last local day is bookable, the day after is not.
        let within = |s: &str, e: &str| validate_slot(&q, la, utc(s), utc(e), now, 14);
        assert_eq!(
            within("2026-12-08T16:00:00Z", "2026-12-08T16:30:00Z"),
            Ok(())
        );
        assert_eq!(
            within("2026-12-09T16:00:00Z", "2026-12-09T16:30:00Z"),
            Err(SlotError::TooFarAhead { max_days: 14 })
        );
        assert_eq!(
            check("2026-11-25T16:10:00Z", "2026-11-25T16:40:00Z"),
            Err(SlotError::Misaligned { slot_minutes: 30 })
        );
        assert_eq!(
            check("2026-11-25T16:00:30Z", "2026-11-25T16:30:30Z"),
            Err(SlotError::Misaligned { slot_minutes: 30 })
        );
        assert_eq!(
            check("2026-11-25T16:00:00Z", "2026-11-25T17:00:00Z"),
            Err(SlotError::WrongLength { slot_minutes: 30 })
        );
        // Saturday.
        assert_eq!(
            check("2026-11-28T16:00:00Z", "2026-11-28T16:30:00Z"),
            Err(SlotError::OutsideHours)
        );
        // 09:30 ET is 06:30 PT.
        assert_eq!(
            check("2026-11-25T14:30:00Z", "2026-11-25T15:00:00Z"),
            Err(SlotError::OutsideWindow)
        );
        // 16:30-17:00 ET ends exactly at closing: fine.
        assert_eq!(
            check("2026-11-25T21:30:00Z", "2026-11-25T22:00:00Z"),
            Ok(())
        );
    }

    #[test]
    fn full_slots_are_left_out_and_free_places_counted() {
        let q = new_york_office(policy("08:00", "21:00")); // capacity 2
        let ny = America::New_York;
        let taken = [
            (utc("2026-11-25T14:00:00Z"), 2),
            (utc("2026-11-25T14:30:00Z"), 1),
            (utc("2026-11-25T15:00:00Z"), 7), // overbooked: still just full
        ];
        let booked = |start: DateTime<Utc>| {
            taken
                .iter()
                .find(|(s, _)| *s == start)
                .map_or(0, |&(_, n)| n)
        };
        let slots = list_slots(&q, ny, utc("2026-11-25T12:00:00Z"), 1, &booked);
        // 09:00-17:00 ET = 16 slots, two of them full.
        assert_eq!(slots.len(), 14);
        assert_eq!(slots[0].start, utc("2026-11-25T14:30:00Z"));
        assert_eq!(slots[0].free, 1);
        assert_eq!(slots[1].start, utc("2026-11-25T15:30:00Z"));
        assert_eq!(slots[1].free, 2);
    }

    #[test]
    fn slots_start_strictly_after_from() {
        let q = new_york_office(policy("08:00", "21:00"));
        let slots = list_slots(
            &q,
            America::New_York,
            utc("2026-11-25T14:00:00Z"), // 09:00 ET, a slot start
            1,
            &no_bookings,
        );
        assert_eq!(slots[0].start, utc("2026-11-25T14:30:00Z"));
        assert_eq!(slots.len(), 15);
    }

    #[test]
    fn queue_without_hours_aligns_slots_to_customer_midnight() {
        let mut p = policy("08:00", "21:00");
        p.slot_minutes = 60;
        let q = queue(None, p);
        // Kolkata is UTC+5:30: local hours fall on the half hour in UTC.
        let slots = list_slots(
            &q,
            Asia::Kolkata,
            utc("2026-06-01T00:00:00Z"),
            1,
            &no_bookings,
        );
        assert_eq!(slots.len(), 13);
        assert_eq!(slots[0].start, utc("2026-06-01T02:30:00Z"));
        assert_eq!(slots[12].end, utc("2026-06-01T15:30:00Z"));
    }

    #[test]
    fn slot_listing_is_bounded_in_days() {
        let q = queue(None, policy("08:00", "21:00"));
        let from = utc("2026-06-01T00:00:00Z");
        assert!(list_slots(&q, Europe::London, from, 0, &no_bookings).is_empty());
        let all = list_slots(&q, Europe::London, from, 1000, &no_bookings);
        // 26 slots of 30 minutes per day, MAX_SLOT_DAYS days.
        assert_eq!(all.len(), 26 * MAX_SLOT_DAYS as usize);
    }

    #[test]
    fn slot_length_not_dividing_a_day_leaves_the_remainder_unoffered() {
        let mut p = policy("00:00", "24:00");
        p.slot_minutes = 25;
        let q = queue(None, p);
        let slots = list_slots(
            &q,
            Europe::Berlin,
            utc("2026-06-01T00:00:00Z"), // 02:00 CEST, day of 06-01
            1,
            &no_bookings,
        );
        // The last slot of the day is 23:20-23:45 CEST; 23:45-24:00 is never offered.
        assert_eq!(
            slots.last().map(|s| s.end),
            Some(utc("2026-06-01T21:45:00Z"))
        );
    }

    // ---- properties ------------------------------------------------------------------

    const ZONES: &[Tz] = &[
        America::New_York,
        America::Los_Angeles,
        America::Sao_Paulo,
        Europe::London,
        Europe::Berlin,
        Asia::Tokyo,
        Asia::Kolkata,
        Australia::Lord_Howe,
        Australia::Sydney,
    ];

    /// The 2026 DST changes of the zones in [`ZONES`] that have them, as instants.
    const CHANGES: &[(Tz, &str)] = &[
        (America::New_York, "2026-03-08T07:00:00Z"),
        (America::New_York, "2026-11-01T06:00:00Z"),
        (America::Los_Angeles, "2026-03-08T10:00:00Z"),
        (America::Los_Angeles, "2026-11-01T09:00:00Z"),
        (Europe::London, "2026-03-29T01:00:00Z"),
        (Europe::London, "2026-10-25T01:00:00Z"),
        (Europe::Berlin, "2026-03-29T01:00:00Z"),
        (Europe::Berlin, "2026-10-25T01:00:00Z"),
        (Australia::Lord_Howe, "2026-04-04T15:00:00Z"),
        (Australia::Lord_Howe, "2026-10-03T15:30:00Z"),
        (Australia::Sydney, "2026-04-04T16:00:00Z"),
        (Australia::Sydney, "2026-10-03T16:00:00Z"),
    ];

    fn zone() -> impl Strategy<Value = Tz> {
        prop::sample::select(ZONES)
    }

    /// `(start, end)` clock times on a quarter-hour grid, `start < end <= 24:00`; half
    /// of the ends fall in 00:00-04:00, where DST changes happen.
    fn span() -> impl Strategy<Value = (ClockTime, ClockTime)> {
        let quarter = || prop_oneof![0u16..=16, 0u16..=96];
        (quarter(), quarter())
            .prop_filter("a span is not empty", |(a, b)| a != b)
            .prop_map(|(a, b)| {
                (
                    ClockTime {
                        minutes: a.min(b) * 15,
                    },
                    ClockTime {
                        minutes: a.max(b) * 15,
                    },
                )
            })
    }

    fn arb_queue() -> impl Strategy<Value = Queue> {
        let hours = (zone(), 1u8..128, span(), prop::option::of(0u32..4)).prop_map(
            |(tz, days, (open, close), holiday)| {
                BusinessHours::new(
                    tz,
                    std::array::from_fn(|d| {
                        if days & (1 << d) != 0 {
                            vec![(open, close)]
                        } else {
                            Vec::new()
                        }
                    }),
                    holiday
                        .into_iter()
                        .map(|k| {
                            NaiveDate::from_ymd_opt(2026, 3, 8).expect("valid date")
                                + Duration::days(i64::from(k))
                        })
                        .collect::<HashSet<_>>(),
                )
            },
        );
        (
            prop::option::of(hours),
            span(),
            prop::sample::select(&[15u32, 25, 30, 45, 60, 90][..]),
        )
            .prop_map(|(hours, (ws, we), slot_minutes)| {
                let mut p = policy("08:00", "21:00");
                p.window_start = ws;
                p.window_end = we;
                p.slot_minutes = slot_minutes;
                queue(hours, p)
            })
    }

    /// A queue, a customer zone and a DST change instant of the queue's zone (of the
    /// customer's when the queue has no hours); half of the customers live in the
    /// queue's zone, so both clocks change together.
    fn around_change() -> impl Strategy<Value = (Queue, Tz, DateTime<Utc>)> {
        (
            arb_queue(),
            zone(),
            any::<bool>(),
            prop::sample::select(CHANGES),
        )
            .prop_map(|(mut q, other, same_zone, (zone, at))| {
                let customer = match &mut q.business_hours {
                    Some(h) => {
                        *h = BusinessHours::new(zone, h.weekly().clone(), h.holidays().clone());
                        if same_zone {
                            zone
                        } else {
                            other
                        }
                    }
                    None => zone,
                };
                (q, customer, utc(at))
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// Against a minute-by-minute scan of `can_dial` (every boundary is on a whole
        /// minute in these zones, so the scan is exact).
        #[test]
        fn next_opportunity_is_the_first_dialable_minute(
            (q, tz, change) in around_change(), before in 0i64..(26 * 60)
        ) {
            let from = change - Duration::minutes(before);
            let found = next_dial_opportunity(&q, tz, from);
            let scan_minutes = 4 * 24 * 60;
            let scanned = (0..scan_minutes)
                .map(|m| from + Duration::minutes(m))
                .find(|&t| can_dial(&q, tz, t));
            match scanned {
                Some(t) => prop_assert_eq!(found, Some(t)),
                None => prop_assert!(
                    found.is_none_or(|t| t >= from + Duration::minutes(scan_minutes))
                ),
            }
        }

        /// Listed slots are exactly the grid slots after `from` during which dialing
        /// is allowed throughout, and each passes `validate_slot`.
        #[test]
        fn listed_slots_are_exactly_the_dialable_grid_slots(
            (q, tz, change) in around_change(), before in 0i64..(26 * 60)
        ) {
            let from = change - Duration::minutes(before);
            let slots = list_slots(&q, tz, from, 2, &no_bookings);
            let m = q.callback.slot_minutes;
            let zone = slot_zone(&q, tz);
            let first = from.with_timezone(&zone).date_naive();
            let mut expected = Vec::new();
            for date in first.iter_days().take(2) {
                let mut k = 0;
                while (k + 1) * m <= MINUTES_PER_DAY {
                    let s = local_at(zone, date, ClockTime { minutes: (k * m) as u16 });
                    let e = local_at(zone, date, ClockTime { minutes: ((k + 1) * m) as u16 });
                    let minutes = (e - s).num_minutes();
                    if s < e && s > from
                        && (0..minutes).all(|i| can_dial(&q, tz, s + Duration::minutes(i)))
                    {
                        expected.push((s, e));
                    }
                    k += 1;
                }
            }
            let listed: Vec<_> = slots.iter().map(|s| (s.start, s.end)).collect();
            prop_assert_eq!(&listed, &expected);
            for s in &slots {
                prop_assert_eq!(s.free, q.callback.slot_capacity);
                prop_assert_eq!(validate_slot(&q, tz, s.start, s.end, from, MAX_SLOT_DAYS), Ok(()));
            }
        }

        /// `can_dial` (wall clock off the repeated hour, instants on it) and
        /// `next_dial_opportunity` (intervals of instants) agree on every minute of the
        /// six hours around a DST change.
        #[test]
        fn can_dial_and_next_opportunity_agree_around_dst_changes(
            (q, tz, change) in around_change()
        ) {
            for m in -180..180 {
                let t = change + Duration::minutes(m);
                prop_assert_eq!(
                    can_dial(&q, tz, t),
                    next_dial_opportunity(&q, tz, t) == Some(t),
                    "at {}", t
                );
            }
        }

        /// Off a repeated hour, the window is simply the wall clock.
        #[test]
        fn window_matches_the_wall_clock_when_local_time_is_unambiguous(
            (tz, change) in prop::sample::select(CHANGES),
            (ws, we) in span(),
            offset in -(26 * 60i64)..(26 * 60)
        ) {
            let t = utc(change) + Duration::minutes(offset);
            use chrono::{LocalResult, TimeZone};
            let local = t.with_timezone(&tz).naive_local();
            prop_assume!(matches!(tz.from_local_datetime(&local), LocalResult::Single(_)));
            let mut p = policy("08:00", "21:00");
            p.window_start = ws;
            p.window_end = we;
            let minute = (local.hour() * 60 + local.minute()) as u16;
            prop_assert_eq!(
                in_calling_window(&p, tz, t),
                ws.minutes <= minute && minute < we.minutes
            );
        }
    }
}
