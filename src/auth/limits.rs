//! Abuse limits for customer-facing writes (a public web page can be scripted to book
//! thousands of callbacks to one victim's phone). A sliding-window log per key: at most
//! `limit` admissions in any `window`, e.g. 3 callback requests per phone number per
//! hour; the caller is told exactly when the oldest admission leaves the window.
//!
//! [`CallbackLimits`] combines a per-phone and a per-principal window and is what the
//! callback service calls before `RequestCallback`; [`rate_limited`] turns a refusal
//! into RESOURCE_EXHAUSTED with `RetryInfo`. Time comes from the injected [`Clock`].
//!
//! Memory is bounded: at most `limit` instants per key and `max_keys` keys; keys whose
//! admissions all left the window are pruned when the map is full. If it is still full
//! (that many distinct keys within one window), new keys are refused (fail closed)
//! until one in [`FREED_SHARE`] of its keys has left the window: a table full of live keys
//! is looked through once per such batch, not once per refused request, and the
//! refusal's `RetryInfo` names that instant.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::clock::Clock;
use crate::config::LimitSettings;

/// Most keys one window tracks (distinct phone numbers or principals).
pub const MAX_LIMITED_KEYS: usize = 100_000;
/// A key table full of live keys refuses new keys until this share of them (1 in
/// 100) has left the window.
const FREED_SHARE: usize = 100;
/// Least time between two "key table full" warnings of one window.
const FULL_WARN_EVERY_SECS: i64 = 60;

/// A refused admission: which limit, and when to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The limit's name, e.g. `per_phone_number` (never the key itself: it may be PII).
    pub scope: &'static str,
    pub retry_after: StdDuration,
}

/// At most `limit` admissions per key in any window of `window`. `limit = 0`: no limit.
#[derive(Debug)]
pub struct SlidingWindow {
    scope: &'static str,
    limit: usize,
    window: Duration,
    max_keys: usize,
    hits: Mutex<Keys>,
}

/// The admissions of each key, and what the window knows of its table being full.
#[derive(Debug, Default)]
struct Keys {
    hits: HashMap<String, VecDeque<DateTime<Utc>>>,
    /// The table is full of live keys: new keys are refused until this instant.
    full_until: Option<DateTime<Utc>>,
    /// When the last "key table full" warning was logged.
    warned: Option<DateTime<Utc>>,
}

impl SlidingWindow {
    pub fn new(scope: &'static str, limit: u32, window: Duration, max_keys: usize) -> Self {
        Self {
            scope,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            window,
            max_keys: max_keys.max(1),
            hits: Mutex::new(Keys::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        self.hits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits and records one use of `key` at `now`, or says when to retry.
    pub fn admit(&self, key: &str, now: DateTime<Utc>) -> Result<(), Limited> {
        let mut hits = self.lock();
        self.check(&mut hits, key, now)?;
        self.record(&mut hits, key, now);
        Ok(())
    }

    /// Whether `key` would be admitted at `now`; drops instants that left the window.
    fn check(&self, keys: &mut Keys, key: &str, now: DateTime<Utc>) -> Result<(), Limited> {
        if self.limit == 0 {
            return Ok(());
        }
        let horizon = now - self.window;
        if let Some(log) = keys.hits.get_mut(key) {
            while log.front().is_some_and(|t| *t <= horizon) {
                log.pop_front();
            }
            return match log.front() {
                Some(oldest) if log.len() >= self.limit => Err(Limited {
                    scope: self.scope,
                    retry_after: (*oldest + self.window - now)
                        .to_std()
                        .unwrap_or(StdDuration::ZERO),
                }),
                _ => Ok(()),
            };
        }
        if keys.hits.len() >= self.max_keys {
            let full = |until: DateTime<Utc>| Limited {
                scope: self.scope,
                retry_after: (until - now).to_std().unwrap_or(StdDuration::ZERO),
            };
            if let Some(until) = keys.full_until.filter(|until| now < *until) {
                return Err(full(until));
            }
            keys.hits
                .retain(|_, log| log.back().is_some_and(|t| *t > horizon));
            if keys.hits.len() >= self.max_keys {
                let until = self.batch_freed(&keys.hits, now);
                keys.full_until = Some(until);
                let quiet = keys
                    .warned
                    .is_some_and(|w| now - w < Duration::seconds(FULL_WARN_EVERY_SECS));
                if !quiet {
                    keys.warned = Some(now);
                    tracing::warn!(
                        scope = self.scope,
                        keys = keys.hits.len(),
                        refused_secs = (until - now).num_seconds(),
                        "rate limiter key table full of keys admitted within the window: new \
                         keys are refused until some leave it"
                    );
                }
                return Err(full(until));
            }
            keys.full_until = None;
        }
        Ok(())
    }

    /// When one in [`FREED_SHARE`] of the keys in `hits` (all admitted within the
    /// window) will have left it: each key leaves when its last admission does.
    fn batch_freed(
        &self,
        hits: &HashMap<String, VecDeque<DateTime<Utc>>>,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let mut leaving: Vec<DateTime<Utc>> =
            hits.values().filter_map(|l| l.back()).copied().collect();
        if leaving.is_empty() {
            return now + self.window;
        }
        let k = (leaving.len() / FREED_SHARE).min(leaving.len() - 1);
        let (_, kth, _) = leaving.select_nth_unstable(k);
        *kth + self.window
    }

    fn record(&self, keys: &mut Keys, key: &str, now: DateTime<Utc>) {
        if self.limit == 0 {
            return;
        }
        let log = match keys.hits.get_mut(key) {
            Some(log) => log,
            None => keys.hits.entry(key.to_owned()).or_default(),
        };
        log.push_back(now);
        while log.len() > self.limit {
            log.pop_front();
        }
    }
}

/// The limits on `RequestCallback`: per phone number and per principal, both
/// per hour. A request refused by either limit is counted by neither.
pub struct CallbackLimits {
    clock: Arc<dyn Clock>,
    per_phone: SlidingWindow,
    per_principal: SlidingWindow,
}

impl CallbackLimits {
    pub fn new(settings: &LimitSettings, clock: Arc<dyn Clock>) -> Self {
        let hour = Duration::hours(1);
        Self {
            clock,
            per_phone: SlidingWindow::new(
                "per_phone_number",
                settings.callback_requests_per_phone_per_hour,
                hour,
                MAX_LIMITED_KEYS,
            ),
            per_principal: SlidingWindow::new(
                "per_principal",
                settings.callback_requests_per_principal_per_hour,
                hour,
                MAX_LIMITED_KEYS,
            ),
        }
    }

    /// Admits one callback request for `phone` (E.164) by `principal`, or refuses with
    /// RESOURCE_EXHAUSTED and `RetryInfo`. Call it only for requests that would create
    /// a callback (a retried idempotent request or a deduplicated one should not count).
    pub fn admit(&self, phone: &str, principal: &str) -> Result<(), Status> {
        let now = self.clock.now();
        // Fixed lock order (phone, then principal): no deadlock between callers.
        let mut phones = self.per_phone.lock();
        let mut principals = self.per_principal.lock();
        let by_phone = self.per_phone.check(&mut phones, phone, now);
        let by_principal = self.per_principal.check(&mut principals, principal, now);
        let refusal = match (by_phone, by_principal) {
            (Ok(()), Ok(())) => None,
            (Err(a), Err(b)) => Some(if a.retry_after >= b.retry_after { a } else { b }),
            (Err(a), Ok(())) | (Ok(()), Err(a)) => Some(a),
        };
        if let Some(limited) = refusal {
            return Err(rate_limited(&limited));
        }
        self.per_phone.record(&mut phones, phone, now);
        self.per_principal.record(&mut principals, principal, now);
        Ok(())
    }
}

/// RESOURCE_EXHAUSTED with a `RetryInfo` (rounded up to whole seconds) and a
/// `QuotaFailure` naming the limit.
pub fn rate_limited(limited: &Limited) -> Status {
    let secs = limited.retry_after.as_secs() + u64::from(limited.retry_after.subsec_nanos() > 0);
    let mut details = ErrorDetails::with_retry_info(Some(StdDuration::from_secs(secs)));
    details.add_quota_failure_violation(
        limited.scope,
        "too many callback requests; retry after the delay in RetryInfo",
    );
    Status::with_error_details(
        Code::ResourceExhausted,
        format!("rate limit {} reached; retry in {secs} s", limited.scope),
        details,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-25T15:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn limits(per_phone: u32, per_principal: u32) -> (Arc<ManualClock>, CallbackLimits) {
        let clock = Arc::new(ManualClock::new(t0()));
        let settings = LimitSettings {
            callback_requests_per_phone_per_hour: per_phone,
            callback_requests_per_principal_per_hour: per_principal,
        };
        (clock.clone(), CallbackLimits::new(&settings, clock))
    }

    fn retry_secs(s: &Status) -> u64 {
        assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
        s.get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .expect("RetryInfo")
            .as_secs()
    }

    #[test]
    fn three_callbacks_per_phone_per_hour_then_retry_when_the_oldest_leaves() {
        let (clock, l) = limits(3, 0);
        l.admit("+14155550100", "web").unwrap();
        clock.advance(Duration::minutes(10));
        l.admit("+14155550100", "web").unwrap();
        l.admit("+14155550100", "web").unwrap();
        let e = l.admit("+14155550100", "web").unwrap_err();
        assert_eq!(retry_secs(&e), 50 * 60);
        // Another number is not affected.
        l.admit("+14155550101", "web").unwrap();
        clock.advance(Duration::minutes(50) - Duration::seconds(1));
        let e = l.admit("+14155550100", "web").unwrap_err();
        assert_eq!(retry_secs(&e), 1);
        clock.advance(Duration::seconds(1));
        l.admit("+14155550100", "web").unwrap();
        // The two at minute 10 are still in the window.
        assert!(l.admit("+14155550100", "web").is_err());
    }

    #[test]
    fn per_principal_limit_and_a_refusal_counts_against_neither() {
        let (clock, l) = limits(3, 2);
        l.admit("+14155550100", "web").unwrap();
        l.admit("+14155550101", "web").unwrap();
        let e = l.admit("+14155550102", "web").unwrap_err();
        assert!(e.message().contains("per_principal"), "{e:?}");
        assert!(!e.message().contains("+1415"), "no phone number in errors");
        // Refused by the principal limit: the phone's window did not count it.
        l.admit("+14155550102", "ivr").unwrap();
        l.admit("+14155550102", "ivr").unwrap();
        l.admit("+14155550102", "app").unwrap();
        assert!(l.admit("+14155550102", "app2").is_err());
        clock.advance(Duration::hours(1));
        l.admit("+14155550102", "web").unwrap();
    }

    #[test]
    fn zero_disables_a_limit() {
        let (_clock, l) = limits(0, 0);
        for _ in 0..100 {
            l.admit("+14155550100", "web").unwrap();
        }
    }

    #[test]
    fn key_table_is_bounded_and_pruned() {
        let w = SlidingWindow::new("k", 1, Duration::minutes(1), 2);
        let now = t0();
        w.admit("a", now).unwrap();
        w.admit("b", now).unwrap();
        let e = w.admit("c", now).unwrap_err();
        assert_eq!(e.retry_after, StdDuration::from_secs(60));
        let later = now + Duration::minutes(1);
        w.admit("c", later).unwrap();
        assert!(w.lock().hits.len() <= 2);
    }

    /// A table full of live keys refuses new keys until a hundredth of them left the
    /// window (each refusal says how long), then admits new keys again; keys already
    /// in the table keep their own limits meanwhile.
    #[test]
    fn a_full_key_table_refuses_new_keys_until_a_share_of_them_left_the_window() {
        let w = SlidingWindow::new("k", 2, Duration::minutes(60), 200);
        let now = t0();
        // 200 keys, one a second: key i leaves the window at t0 + 60 min + i s.
        for i in 0..200 {
            w.admit(&format!("k{i}"), now + Duration::seconds(i))
                .unwrap();
        }
        let full = now + Duration::seconds(300);
        let e = w.admit("new", full).unwrap_err();
        // The 3rd key to leave (index 200 / 100 = 2) leaves at t0 + 60 min + 2 s.
        let freed = now + Duration::minutes(60) + Duration::seconds(2);
        assert_eq!(e.retry_after, (freed - full).to_std().unwrap());
        // Refused with the same instant until then, even after the first key left.
        let e = w.admit("new", freed - Duration::seconds(1)).unwrap_err();
        assert_eq!(e.retry_after, StdDuration::from_secs(1));
        // A key in the table still has its second admission.
        w.admit("k5", full).unwrap();
        w.admit("new", freed).unwrap();
        assert_eq!(w.lock().hits.len(), 198);
    }

    #[test]
    fn retry_info_rounds_up() {
        let s = rate_limited(&Limited {
            scope: "x",
            retry_after: StdDuration::from_millis(1500),
        });
        assert_eq!(retry_secs(&s), 2);
    }
}
