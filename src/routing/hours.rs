//! Business hours and customer-local clock times, through chrono-tz.
//!
//! Local wall-clock times that do not exist (the spring-forward gap) move to the first
//! valid instant after the gap; ambiguous ones (the fall-back overlap) take the earlier
//! instant. Every instant holdless stores is UTC; local times exist only here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone,
    Timelike, Utc, Weekday,
};
use chrono_tz::Tz;

/// A local time of day with minute precision; `24:00` is allowed as an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockTime {
    /// Minutes since local midnight, 0..=1440.
    pub minutes: u16,
}

impl ClockTime {
    /// Parses `HH:MM` (24-hour); `24:00` only when `allow_end_of_day`.
    pub fn parse(s: &str, allow_end_of_day: bool) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a time of day in HH:MM form");
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(bad());
        }
        let h: u16 = h.parse().map_err(|_| bad())?;
        let m: u16 = m.parse().map_err(|_| bad())?;
        if m >= 60 || h > 24 || (h == 24 && (m != 0 || !allow_end_of_day)) {
            return Err(bad());
        }
        Ok(Self {
            minutes: h * 60 + m,
        })
    }

    fn of(t: NaiveTime) -> u16 {
        (t.hour() * 60 + t.minute()) as u16
    }
}

/// Parses a weekday name (`mon` .. `sun`, case-insensitive, full names too).
pub fn parse_weekday(s: &str) -> Option<Weekday> {
    match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Some(Weekday::Mon),
        "tue" | "tuesday" => Some(Weekday::Tue),
        "wed" | "wednesday" => Some(Weekday::Wed),
        "thu" | "thursday" => Some(Weekday::Thu),
        "fri" | "friday" => Some(Weekday::Fri),
        "sat" | "saturday" => Some(Weekday::Sat),
        "sun" | "sunday" => Some(Weekday::Sun),
        _ => None,
    }
}

/// A queue's opening hours in its own zone. Built once with the plan and never
/// changed (the fields are read-only: [`BusinessHours::is_open`] remembers answers).
#[derive(Debug, Clone)]
pub struct BusinessHours {
    time_zone: Tz,
    /// Per weekday (Mon = 0), half-open `[open, close)` intervals in local minutes.
    weekly: [Vec<(ClockTime, ClockTime)>; 7],
    holidays: HashSet<NaiveDate>,
    open_cache: MinuteCache,
}

/// [`BusinessHours::is_open`]'s answer for the last UTC minute it worked one out for:
/// `(minute since 1970 + 1) << 1 | open`, 0 for none. One atomic word, so routing
/// threads share it without a lock; a thread that reads another's minute works the
/// answer out and stores its own.
#[derive(Debug, Default)]
struct MinuteCache(AtomicU64);

impl Clone for MinuteCache {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl BusinessHours {
    pub fn new(
        time_zone: Tz,
        weekly: [Vec<(ClockTime, ClockTime)>; 7],
        holidays: HashSet<NaiveDate>,
    ) -> Self {
        Self {
            time_zone,
            weekly,
            holidays,
            open_cache: MinuteCache::default(),
        }
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    /// Per weekday (Mon = 0), the half-open `[open, close)` intervals in local minutes.
    pub fn weekly(&self) -> &[Vec<(ClockTime, ClockTime)>; 7] {
        &self.weekly
    }

    pub fn holidays(&self) -> &HashSet<NaiveDate> {
        &self.holidays
    }

    /// Whether the queue is open at `now`: inside one of the intervals of
    /// [`open_intervals_on`](Self::open_intervals_on) for the local date.
    ///
    /// Routing asks this for every call, and working it out costs two time-zone
    /// lookups; the answer is the same for a whole UTC minute whenever the zone's
    /// offset is a whole number of minutes and does not change within that minute
    /// (then the local minute and date, and every opening or closing instant, are
    /// fixed for the minute). So the answer is kept for the minute when those hold
    /// and the minute's first and last instants give the same answer as `now`, and
    /// worked out afresh otherwise (a minute with an offset change, a zone with a
    /// seconds offset, instants before 1970).
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let Ok(minute) = u64::try_from(now.timestamp().div_euclid(60)) else {
            return self.is_open_at(now);
        };
        let tag = (minute + 1) << 1;
        let cached = self.open_cache.0.load(Ordering::Relaxed);
        if cached & !1 == tag {
            return cached & 1 == 1;
        }
        let open = self.is_open_at(now);
        if self.same_all_minute(minute, open) {
            self.open_cache
                .0
                .store(tag | u64::from(open), Ordering::Relaxed);
        }
        open
    }

    /// Whether the answer is `open` for all of UTC minute `minute` (see
    /// [`BusinessHours::is_open`]).
    fn same_all_minute(&self, minute: u64, open: bool) -> bool {
        let Some(first) = i64::try_from(minute)
            .ok()
            .and_then(|m| m.checked_mul(60))
            .and_then(|s| DateTime::from_timestamp(s, 0))
        else {
            return false;
        };
        let last = first + chrono::Duration::nanoseconds(59_999_999_999);
        let offset = |t: DateTime<Utc>| {
            self.time_zone
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc()
        };
        let seconds = offset(first);
        seconds % 60 == 0
            && offset(last) == seconds
            && self.is_open_at(first) == open
            && self.is_open_at(last) == open
    }

    /// [`BusinessHours::is_open`] worked out from the zone, without the minute's
    /// remembered answer.
    pub fn is_open_at(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.time_zone).naive_local();
        // Off the repeated hour of a fall-back, comparing wall-clock minutes gives the
        // same answer as comparing resolved instants, and is cheaper (routing asks this
        // for every decision). On the repeated hour one wall time names two instants and
        // an opening or closing time there means the earlier one: without this, hours
        // closing at 01:30 would close at the first 01:30 and open again for the repeat.
        if let LocalResult::Ambiguous(..) = self.time_zone.from_local_datetime(&local) {
            let date = local.date();
            return [date.pred_opt(), Some(date), date.succ_opt()]
                .into_iter()
                .flatten()
                .flat_map(|d| self.open_intervals_on(d))
                .any(|(open, close)| open <= now && now < close);
        }
        if self.holidays.contains(&local.date()) {
            return false;
        }
        let minute = ClockTime::of(local.time());
        self.weekly[local.weekday().num_days_from_monday() as usize]
            .iter()
            .any(|(open, close)| open.minutes <= minute && minute < close.minutes)
    }

    /// The instants the queue is open on local `date`, as half-open `[open, close)`
    /// intervals in weekly order: each of that weekday's intervals with both ends
    /// resolved by [`local_at`]; none on a holiday. An interval lying wholly inside a
    /// spring-forward gap resolves to nothing and is left out. Intervals may touch or
    /// overlap when the plan lists them so.
    pub fn open_intervals_on(
        &self,
        date: NaiveDate,
    ) -> impl Iterator<Item = (DateTime<Utc>, DateTime<Utc>)> + '_ {
        let closed = self.holidays.contains(&date);
        let day = &self.weekly[date.weekday().num_days_from_monday() as usize];
        day.iter()
            .filter(move |_| !closed)
            .map(move |(open, close)| {
                (
                    local_at(self.time_zone, date, *open),
                    local_at(self.time_zone, date, *close),
                )
            })
            .filter(|(open, close)| open < close)
    }
}

/// The instant of clock time `time` on local `date` in `tz` (`24:00` is the next day's
/// midnight), resolved like [`local_to_utc`].
pub fn local_at(tz: Tz, date: NaiveDate, time: ClockTime) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    let local = midnight
        .checked_add_signed(chrono::Duration::minutes(i64::from(time.minutes)))
        .unwrap_or(NaiveDateTime::MAX);
    local_to_utc(tz, local)
}

/// Resolves a local wall-clock time in `tz` to a UTC instant: a time in the
/// spring-forward gap moves to the first valid instant after the gap; a time in the
/// fall-back overlap takes the earlier of its two instants.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are at most a few hours and start and end on whole seconds. Step
            // forward a minute at a time from the whole second at or before `local`
            // (still inside the gap) to the first valid time, then narrow down to the
            // second: the gap's end, the first valid instant after it. Stepping from
            // `local` itself would land `local`'s seconds past the end (02:30:30 would
            // become 03:00:30 instead of 03:00:00 in New York).
            let mut before = local.with_nanosecond(0).unwrap_or(local);
            for _ in 0..(24 * 60) {
                let probe = before + chrono::Duration::minutes(1);
                if earliest(tz, probe).is_none() {
                    before = probe;
                    continue;
                }
                // `before` is in the gap, `probe` is not: bisect whole seconds.
                let (mut lo, mut hi) = (0i64, 60i64);
                while hi - lo > 1 {
                    let mid = (lo + hi) / 2;
                    if earliest(tz, before + chrono::Duration::seconds(mid)).is_some() {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                if let Some(t) = earliest(tz, before + chrono::Duration::seconds(hi)) {
                    return t;
                }
            }
            // No zone has a day-long gap; fall back to reading the time as UTC offset 0.
            Utc.from_utc_datetime(&local)
        }
    }
}

/// The earlier instant of a valid local time; `None` inside a gap.
fn earliest(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.with_timezone(&Utc)),
        LocalResult::None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours() -> BusinessHours {
        let nine = ClockTime::parse("09:00", false).unwrap();
        let five = ClockTime::parse("17:00", true).unwrap();
        let mut weekly: [Vec<(ClockTime, ClockTime)>; 7] = Default::default();
        for d in weekly.iter_mut().take(5) {
            d.push((nine, five));
        }
        BusinessHours::new(
            chrono_tz::America::New_York,
            weekly,
            [NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()].into(),
        )
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn open_inside_local_hours_closed_outside_and_on_holidays() {
        let h = hours();
        // Wed 2026-11-25 10:00 New York = 15:00 UTC.
        assert!(h.is_open(utc("2026-11-25T15:00:00Z")));
        // 17:00 New York is closing time: closed.
        assert!(!h.is_open(utc("2026-11-25T22:00:00Z")));
        // Saturday.
        assert!(!h.is_open(utc("2026-11-28T15:00:00Z")));
        // Christmas (a Friday).
        assert!(!h.is_open(utc("2026-12-25T15:00:00Z")));
    }

    #[test]
    fn parses_clock_times_strictly() {
        assert_eq!(ClockTime::parse("08:30", false).unwrap().minutes, 510);
        assert_eq!(ClockTime::parse("24:00", true).unwrap().minutes, 1440);
        for bad in ["24:00", "8:30", "08:60", "25:00", "0830", "aa:bb", ""] {
            assert!(ClockTime::parse(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn spring_forward_gap_moves_to_first_valid_instant() {
        // 2026-03-08 02:30 does not exist in New York; 03:00 EDT = 07:00 UTC.
        let t = local_to_utc(
            chrono_tz::America::New_York,
            NaiveDate::from_ymd_opt(2026, 3, 8)
                .unwrap()
                .and_hms_opt(2, 30, 0)
                .unwrap(),
        );
        assert_eq!(t, utc("2026-03-08T07:00:00Z"));
        // Lord Howe springs forward by 30 minutes: 2026-10-04 02:15 does not exist;
        // 02:30 (+11:00) = 15:30 UTC the day before.
        let t = local_to_utc(
            chrono_tz::Australia::Lord_Howe,
            NaiveDate::from_ymd_opt(2026, 10, 4)
                .unwrap()
                .and_hms_opt(2, 15, 0)
                .unwrap(),
        );
        assert_eq!(t, utc("2026-10-03T15:30:00Z"));
    }

    #[test]
    fn fall_back_overlap_takes_the_earlier_instant() {
        // 2026-11-01 01:30 happens twice in New York; the first is EDT (05:30 UTC).
        let t = local_to_utc(
            chrono_tz::America::New_York,
            NaiveDate::from_ymd_opt(2026, 11, 1)
                .unwrap()
                .and_hms_opt(1, 30, 0)
                .unwrap(),
        );
        assert_eq!(t, utc("2026-11-01T05:30:00Z"));
    }

    #[test]
    fn gap_time_with_seconds_moves_to_the_gap_end_not_past_it() {
        let t = local_to_utc(
            chrono_tz::America::New_York,
            NaiveDate::from_ymd_opt(2026, 3, 8)
                .unwrap()
                .and_hms_opt(2, 30, 30)
                .unwrap(),
        );
        assert_eq!(t, utc("2026-03-08T07:00:00Z"));
    }

    #[test]
    fn hours_closing_in_the_repeated_hour_do_not_reopen_for_the_repeat() {
        // Open 00:00-01:30 every day in New York; 2026-11-01 repeats 01:00-02:00.
        let mut weekly: [Vec<(ClockTime, ClockTime)>; 7] = Default::default();
        let midnight = ClockTime { minutes: 0 };
        let half_past_one = ClockTime { minutes: 90 };
        for d in weekly.iter_mut() {
            d.push((midnight, half_past_one));
        }
        let h = BusinessHours::new(chrono_tz::America::New_York, weekly, HashSet::new());
        // 01:15 EDT (first pass): open.
        assert!(h.is_open(utc("2026-11-01T05:15:00Z")));
        // 01:30 EDT: closed from here on, though the clock shows 01:00-01:29 again.
        assert!(!h.is_open(utc("2026-11-01T05:30:00Z")));
        assert!(!h.is_open(utc("2026-11-01T06:15:00Z")));
        // And opening in the repeated hour means its first occurrence: open 01:30-03:00
        // stays open through the repeat.
        let mut weekly: [Vec<(ClockTime, ClockTime)>; 7] = Default::default();
        for d in weekly.iter_mut() {
            d.push((half_past_one, ClockTime { minutes: 180 }));
        }
        let h = BusinessHours::new(chrono_tz::America::New_York, weekly, HashSet::new());
        assert!(!h.is_open(utc("2026-11-01T05:15:00Z")));
        assert!(h.is_open(utc("2026-11-01T05:30:00Z")));
        assert!(h.is_open(utc("2026-11-01T06:15:00Z")));
        assert!(h.is_open(utc("2026-11-01T07:59:00Z")));
        assert!(!h.is_open(utc("2026-11-01T08:00:00Z")));
    }

    /// The answer kept for a minute is the answer worked out afresh, at every instant
    /// around clock changes: New York and London (an hour), Lord Howe (half an hour),
    /// Kathmandu and Chatham (offsets of 45 minutes), Monrovia's change from an offset
    /// with seconds (1972), and instants before 1970. Hours open and close inside the
    /// repeated and skipped hours, and on a holiday.
    #[test]
    fn the_minute_kept_answer_is_the_worked_out_one_across_clock_changes() {
        use chrono_tz::{Africa, America, Asia, Australia, Europe, Pacific};
        let at = |h: u16, m: u16| ClockTime {
            minutes: h * 60 + m,
        };
        let mut weekly: [Vec<(ClockTime, ClockTime)>; 7] = Default::default();
        for d in weekly.iter_mut() {
            d.push((at(0, 0), at(0, 1)));
            d.push((at(1, 30), at(2, 30)));
            d.push((at(3, 0), at(17, 45)));
        }
        let cases: &[(Tz, &[&str])] = &[
            (America::New_York, &["2026-03-08", "2026-11-01"]),
            (Europe::London, &["2026-03-29", "2026-10-25"]),
            (Australia::Lord_Howe, &["2026-04-05", "2026-10-04"]),
            (Asia::Kathmandu, &["2026-06-01"]),
            (Pacific::Chatham, &["2026-04-05", "2026-09-27"]),
            (Africa::Monrovia, &["1972-01-07"]),
            (America::New_York, &["1969-12-31"]),
        ];
        let mut checked = 0;
        for (tz, days) in cases {
            for day in *days {
                let date = NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap();
                let holiday = date.succ_opt().unwrap();
                let h = BusinessHours::new(*tz, weekly.clone(), [holiday].into());
                let start =
                    date.and_hms_opt(0, 0, 0).unwrap().and_utc() - chrono::Duration::days(1);
                // 37-second steps: several instants per minute, never the same second.
                for k in 0..(3 * 86_400 / 37) {
                    let t = start + chrono::Duration::seconds(37 * k);
                    assert_eq!(h.is_open(t), h.is_open_at(t), "{tz} at {t}");
                    checked += 1;
                }
                // Asking about an instant far away and back again.
                let noon = start + chrono::Duration::hours(36);
                for t in [noon, noon + chrono::Duration::days(200), noon] {
                    assert_eq!(h.is_open(t), h.is_open_at(t), "{tz} at {t}");
                }
            }
        }
        assert!(checked > 50_000);
    }
}
