//! Business hours and customer-local clock times, through chrono-tz.
//!
//! Local wall-clock times that do not exist (the spring-forward gap) move to the first
//! valid instant after the gap; ambiguous ones (the fall-back overlap) take the earlier
//! instant. Every instant holdless stores is UTC; local times exist only here.

use std::collections::HashSet;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc, Weekday,
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
        use chrono::Timelike;
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

/// A queue's opening hours in its own zone.
#[derive(Debug, Clone)]
pub struct BusinessHours {
    pub time_zone: Tz,
    /// Per weekday (Mon = 0), half-open `[open, close)` intervals in local minutes.
    pub weekly: [Vec<(ClockTime, ClockTime)>; 7],
    pub holidays: HashSet<NaiveDate>,
}

impl BusinessHours {
    /// Whether the queue is open at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.time_zone);
        if self.holidays.contains(&local.date_naive()) {
            return false;
        }
        let minute = ClockTime::of(local.time());
        self.weekly[local.weekday().num_days_from_monday() as usize]
            .iter()
            .any(|(open, close)| open.minutes <= minute && minute < close.minutes)
    }
}

/// Resolves a local wall-clock time in `tz` to a UTC instant: a time in the
/// spring-forward gap moves to the first valid instant after the gap; a time in the
/// fall-back overlap takes the earlier of its two instants.
pub fn local_to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(earlier, _) => earlier.with_timezone(&Utc),
        LocalResult::None => {
            // Gaps are at most a few hours and minute-aligned in every zone in the tz
            // database (Lord Howe's is 30 minutes); step forward minute by minute until
            // a valid local time appears, then take its earliest instant.
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += chrono::Duration::minutes(1);
                match tz.from_local_datetime(&probe) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                        // The first valid minute after the gap begins exactly when the
                        // gap ends; whole-minute steps land on it.
                        return t.with_timezone(&Utc);
                    }
                    LocalResult::None => continue,
                }
            }
            // No zone has a day-long gap; fall back to reading the time as UTC offset 0.
            Utc.from_utc_datetime(&local)
        }
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
        BusinessHours {
            time_zone: chrono_tz::America::New_York,
            weekly,
            holidays: [NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()].into(),
        }
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
}
