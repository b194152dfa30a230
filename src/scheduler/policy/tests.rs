use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;
use crate::routing::compile_toml;
use crate::routing::plan::Queue;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A queue open Mon-Fri 08:00-20:00 in `zone` (or always), window 08:00-21:00,
/// 30-minute slots for 2 callbacks.
fn queue(zone: Option<&str>) -> Queue {
    let hours = zone.map_or(String::new(), |z| {
        format!(
            "[queues.business_hours]\ntime_zone = \"{z}\"\nweekly = [{{ days = [\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"], open = \"08:00\", close = \"20:00\" }}]\nholidays = [\"2026-12-25\"]\n"
        )
    });
    let text = format!(
        "[[queues]]\nid = \"q\"\n{hours}[queues.callback]\nwindow_start = \"08:00\"\nwindow_end = \"21:00\"\nslot_minutes = 30\nslot_capacity = 2\nmax_attempts = 3\nretry_backoff_secs = [60, 600]\nexpiry_secs = 3600\n[default_route]\nqueue = \"q\"\n"
    );
    compile_toml(&text, 1).unwrap().queues[0].clone()
}

fn tz(s: &str) -> Tz {
    s.parse().unwrap()
}

#[test]
fn calling_window_is_the_customers_local_time_in_every_zone() {
    let q = queue(None);
    // 2026-11-25 13:30 UTC: 08:30 New York, 13:30 London, 22:30 Tokyo, 00:30 Lord Howe.
    let now = at("2026-11-25T13:30:00Z");
    assert!(in_calling_window(&q.callback, tz("America/New_York"), now));
    assert!(in_calling_window(&q.callback, tz("Europe/London"), now));
    assert!(!in_calling_window(&q.callback, tz("Asia/Tokyo"), now));
    assert!(!in_calling_window(
        &q.callback,
        tz("Australia/Lord_Howe"),
        now
    ));
    // 21:00 local is outside (end exclusive); 20:59 inside.
    assert!(!in_calling_window(
        &q.callback,
        tz("Europe/London"),
        at("2026-11-25T21:00:00Z")
    ));
    assert!(in_calling_window(
        &q.callback,
        tz("Europe/London"),
        at("2026-11-25T20:59:00Z")
    ));
    // Lord Howe is +11:00 in summer: 08:00 local = 21:00 UTC the day before.
    assert!(in_calling_window(
        &q.callback,
        tz("Australia/Lord_Howe"),
        at("2026-11-24T21:00:00Z")
    ));
    assert!(!in_calling_window(
        &q.callback,
        tz("Australia/Lord_Howe"),
        at("2026-11-24T20:59:00Z")
    ));
}

#[test]
fn next_dial_opportunity_waits_for_window_weekend_and_holiday() {
    let q = queue(Some("America/New_York"));
    let ny = tz("America/New_York");
    // Friday 2026-11-27 20:30 New York: queue closed; next is Monday 08:00 (13:00 UTC).
    assert_eq!(
        next_dial_opportunity(&q, ny, at("2026-11-28T01:30:00Z")),
        Some(at("2026-11-30T13:00:00Z"))
    );
    // Thursday 2026-12-24 22:00 New York: Christmas is a holiday; next is Saturday? No,
    // the queue is closed on weekends too: Monday 12-28 08:00 EST = 13:00 UTC.
    assert_eq!(
        next_dial_opportunity(&q, ny, at("2026-12-25T03:00:00Z")),
        Some(at("2026-12-28T13:00:00Z"))
    );
    // A Tokyo customer of a New York queue: both must hold. Monday 2026-11-30 08:00 in
    // New York is 22:00 in Tokyo (outside); the first overlap is Tuesday 08:00 Tokyo =
    // Monday 18:00 New York (23:00 UTC).
    assert_eq!(
        next_dial_opportunity(&q, tz("Asia/Tokyo"), at("2026-11-30T13:00:00Z")),
        Some(at("2026-11-30T23:00:00Z"))
    );
    // Already dialable: now.
    let now = at("2026-11-30T15:00:00Z");
    assert_eq!(next_dial_opportunity(&q, ny, now), Some(now));
}

#[test]
fn backoff_uses_the_list_then_repeats_its_last_value_and_fails_after_max() {
    let q = queue(None);
    let t0 = at("2026-11-25T12:00:00Z");
    assert_eq!(
        next_attempt_at(&q.callback, 1, t0),
        Some(t0 + Duration::seconds(60))
    );
    assert_eq!(
        next_attempt_at(&q.callback, 2, t0),
        Some(t0 + Duration::seconds(600))
    );
    assert_eq!(next_attempt_at(&q.callback, 3, t0), None, "max 3 attempts");
    let mut p = q.callback.clone();
    p.max_attempts = 6;
    assert_eq!(
        next_attempt_at(&p, 5, t0),
        Some(t0 + Duration::seconds(600))
    );
}

#[test]
fn expiry_is_the_policys_time_after_the_request() {
    let q = queue(None);
    let t0 = at("2026-11-25T12:00:00Z");
    assert_eq!(expires_at(&q.callback, t0), at("2026-11-25T13:00:00Z"));
}

#[test]
fn slots_stay_inside_hours_and_window_and_respect_capacity() {
    let q = queue(Some("Europe/London"));
    let london = tz("Europe/London");
    let from = at("2026-11-25T07:00:00Z");
    let booked_at = at("2026-11-25T09:00:00Z");
    let booked = |s: DateTime<Utc>| {
        if s == booked_at {
            1
        } else if s == at("2026-11-25T09:30:00Z") {
            2
        } else {
            0
        }
    };
    let slots = list_slots(&q, london, from, 1, &booked);
    assert_eq!(slots.first().unwrap().start, at("2026-11-25T08:00:00Z"));
    assert_eq!(slots.last().unwrap().end, at("2026-11-25T20:00:00Z"));
    assert_eq!(
        slots.len(),
        23,
        "24 half hours from 08:00 to 20:00, one full"
    );
    assert_eq!(slots.iter().find(|s| s.start == booked_at).unwrap().free, 1);
    assert!(!slots.iter().any(|s| s.start == at("2026-11-25T09:30:00Z")));
    // A New York customer of the London queue: only London 13:00-20:00 (08:00-15:00 NY).
    let ny = list_slots(&q, tz("America/New_York"), from, 1, &|_| 0);
    assert_eq!(ny.first().unwrap().start, at("2026-11-25T13:00:00Z"));
    assert_eq!(ny.len(), 14);
}

#[test]
fn slots_follow_local_time_across_dst_changes() {
    let q = queue(Some("America/New_York"));
    let ny = tz("America/New_York");
    // Friday 2026-03-06 (EST, -5) and Monday 2026-03-09 (EDT, -4): 08:00 local both days.
    let slots = list_slots(&q, ny, at("2026-03-06T00:00:00Z"), 5, &|_| 0);
    assert!(slots.iter().any(|s| s.start == at("2026-03-06T13:00:00Z")));
    assert!(slots.iter().any(|s| s.start == at("2026-03-09T12:00:00Z")));
    assert!(!slots
        .iter()
        .any(|s| s.start == at("2026-03-09T13:00:00Z") && s.end == at("2026-03-09T13:00:00Z")));
    // Every slot is 30 real minutes.
    assert!(slots
        .iter()
        .all(|s| s.end - s.start == Duration::minutes(30)));
    // Fall back: Monday 2026-11-02 08:00 EST = 13:00 UTC.
    let slots = list_slots(&q, ny, at("2026-10-30T00:00:00Z"), 5, &|_| 0);
    assert!(slots.iter().any(|s| s.start == at("2026-10-30T12:00:00Z")));
    assert!(slots.iter().any(|s| s.start == at("2026-11-02T13:00:00Z")));
    // London changes on 2026-03-29 and 2026-10-25 (Sundays): Monday 08:00 BST = 07:00 UTC.
    let lq = queue(Some("Europe/London"));
    let slots = list_slots(
        &lq,
        tz("Europe/London"),
        at("2026-03-27T00:00:00Z"),
        5,
        &|_| 0,
    );
    assert!(slots.iter().any(|s| s.start == at("2026-03-27T08:00:00Z")));
    assert!(slots.iter().any(|s| s.start == at("2026-03-30T07:00:00Z")));
}

#[test]
fn scheduled_slot_on_a_spring_forward_day_is_valid_and_real_length() {
    // A queue with no business hours, customer in New York: on 2026-03-08 the local
    // 02:00-03:00 hour does not exist; slots there are skipped, 08:00 is 12:00 UTC.
    let q = queue(None);
    let ny = tz("America/New_York");
    // From 01:00 EST on the day: the first slot is 08:00 EDT (12:00 UTC).
    let slots = list_slots(&q, ny, at("2026-03-08T06:00:00Z"), 1, &|_| 0);
    let first = slots.first().unwrap();
    assert_eq!(first.start, at("2026-03-08T12:00:00Z"));
    assert!(slots
        .iter()
        .all(|s| s.end - s.start == Duration::minutes(30)));
    let now = at("2026-03-07T12:00:00Z");
    assert_eq!(validate_slot(&q, ny, first.start, first.end, now), Ok(()));

    // With a round-the-clock window, the slots around the gap: 01:30-02:00 ends at
    // 03:00 EDT (its local end does not exist), the slots inside the gap vanish, and
    // 03:00-03:30 follows; no two slots overlap.
    let mut all_day = q.clone();
    all_day.callback.window_start = crate::routing::hours::ClockTime { minutes: 0 };
    all_day.callback.window_end = crate::routing::hours::ClockTime { minutes: 24 * 60 };
    let slots = list_slots(&all_day, ny, at("2026-03-08T05:00:00Z"), 1, &|_| 0);
    let starts: Vec<DateTime<Utc>> = slots.iter().map(|s| s.start).collect();
    assert!(starts.contains(&at("2026-03-08T06:30:00Z")));
    assert!(starts.contains(&at("2026-03-08T07:00:00Z")));
    assert!(slots.windows(2).all(|w| w[0].end <= w[1].start));
    let gap = slots
        .iter()
        .find(|s| s.start == at("2026-03-08T06:30:00Z"))
        .unwrap();
    assert_eq!(gap.end, at("2026-03-08T07:00:00Z"));
}

#[test]
fn bad_slots_are_refused_with_the_reason() {
    let q = queue(Some("America/New_York"));
    let ny = tz("America/New_York");
    let now = at("2026-11-25T12:00:00Z");
    let s = at("2026-11-25T15:00:00Z");
    assert_eq!(
        validate_slot(&q, ny, s, s + Duration::minutes(30), now),
        Ok(())
    );
    assert_eq!(
        validate_slot(
            &q,
            ny,
            s,
            s + Duration::minutes(30),
            at("2026-11-25T16:00:00Z")
        ),
        Err(SlotError::InPast)
    );
    assert_eq!(
        validate_slot(&q, ny, s, s + Duration::minutes(45), now),
        Err(SlotError::WrongLength(30))
    );
    let odd = s + Duration::minutes(10);
    assert_eq!(
        validate_slot(&q, ny, odd, odd + Duration::minutes(30), now),
        Err(SlotError::Misaligned)
    );
    // Saturday: closed.
    let sat = at("2026-11-28T15:00:00Z");
    assert_eq!(
        validate_slot(&q, ny, sat, sat + Duration::minutes(30), now),
        Err(SlotError::OutsideHours)
    );
    // 08:00 New York is 22:00 in Tokyo: outside the Tokyo customer's window.
    let early = at("2026-11-26T13:00:00Z");
    assert_eq!(
        validate_slot(
            &q,
            tz("Asia/Tokyo"),
            early,
            early + Duration::minutes(30),
            now
        ),
        Err(SlotError::OutsideWindow)
    );
}

proptest! {
    /// Whatever the zone and instant, a dial opportunity is dialable and not earlier
    /// than asked; listed slots are always valid.
    #[test]
    fn opportunities_and_slots_are_always_dialable(
        offset in 0i64..(400 * 86_400),
        zone in proptest::sample::select(vec!["America/New_York", "Europe/London", "Asia/Tokyo", "Australia/Lord_Howe", "Asia/Kolkata"]),
    ) {
        let q = queue(Some("America/New_York"));
        let customer = tz(zone);
        let from = at("2026-01-01T00:00:00Z") + Duration::seconds(offset);
        if let Some(t) = next_dial_opportunity(&q, customer, from) {
            prop_assert!(t >= from);
            prop_assert!(can_dial(&q, customer, t));
        }
        for s in list_slots(&q, customer, from, 3, &|_| 0) {
            prop_assert!(s.start > from);
            prop_assert_eq!(validate_slot(&q, customer, s.start, s.end, from), Ok(()));
        }
    }
}
