//! Callbacks and their state machine (docs/ARCHITECTURE.md, "A callback"):
//!
//! ```text
//! PENDING --due, window open, agent reserved--> DISPATCHED --CONNECTED--> COMPLETED
//!    ^                                             | NO_ANSWER / BUSY / VOICEMAIL / FAILED
//!    +---------- retry after backoff --------------+ (attempts < max)      else -> FAILED
//!    +---------- lease expired without outcome ----+ (same attempt id, re-dispatched)
//! PENDING --> CANCELLED (customer, supervisor, or answered inbound)
//! PENDING --> EXPIRED   (past the policy's expiry)
//! ```
//!
//! The transition functions here are pure; the scheduler applies them and persists the
//! result before anything is acknowledged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    Pending,
    Dispatched,
    Completed,
    Failed,
    Cancelled,
    Expired,
}

impl CallbackState {
    /// Pending or dispatched: the callback still owes the customer a call.
    pub fn is_open(self) -> bool {
        matches!(self, CallbackState::Pending | CallbackState::Dispatched)
    }

    /// The state's name as clients see it in the API (`holdless.v1.CallbackState`),
    /// so messages about a state use the words of the reply that carries it.
    pub fn api_name(self) -> &'static str {
        match self {
            CallbackState::Pending => "CALLBACK_STATE_PENDING",
            CallbackState::Dispatched => "CALLBACK_STATE_DISPATCHED",
            CallbackState::Completed => "CALLBACK_STATE_COMPLETED",
            CallbackState::Failed => "CALLBACK_STATE_FAILED",
            CallbackState::Cancelled => "CALLBACK_STATE_CANCELLED",
            CallbackState::Expired => "CALLBACK_STATE_EXPIRED",
        }
    }
}

/// `t` at the precision callbacks are stored with (whole milliseconds, see
/// [`Callback`]). Every instant a callback holds goes through it when it is set, so a
/// reply built from the callback in memory equals what a later read returns.
pub fn stored_instant(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchOutcome {
    Connected,
    NoAnswer,
    Busy,
    Voicemail,
    Failed,
    InvalidNumber,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackKind {
    Asap,
    Scheduled {
        #[serde(with = "chrono::serde::ts_milliseconds")]
        start: DateTime<Utc>,
        #[serde(with = "chrono::serde::ts_milliseconds")]
        end: DateTime<Utc>,
    },
}

impl CallbackKind {
    /// A scheduled callback's slot start; `None` for an ASAP one.
    pub fn slot_start(&self) -> Option<DateTime<Utc>> {
        match self {
            CallbackKind::Scheduled { start, .. } => Some(*start),
            CallbackKind::Asap => None,
        }
    }
}

/// A dispatch in progress. (Stored compactly: instants as epoch milliseconds.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub attempt_id: String,
    pub dialer_id: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub until: DateTime<Utc>,
    /// Agent reserved for the call (agent-first), if any.
    pub agent_id: Option<String>,
}

/// A callback. Its instants are stored as epoch milliseconds, and kept at that
/// precision in memory too ([`stored_instant`]): one value everywhere, whether a reply
/// is built at creation, after a transition or from a read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Callback {
    /// ULID.
    pub id: String,
    pub state: CallbackState,
    pub kind: CallbackKind,
    /// E.164.
    pub phone: String,
    pub customer_id: Option<String>,
    pub queue_id: String,
    /// IANA zone of the customer (calling window).
    pub time_zone: String,
    /// Place in line: the offered call's enqueue time, or the request time.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub virtual_enqueued_at: DateTime<Utc>,
    pub priority: i32,
    /// Attempts dispatched so far.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Not dialed before this instant (backoff, slot start).
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub not_before: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub expires_at: DateTime<Utc>,
    pub lease: Option<Lease>,
    pub last_outcome: Option<DispatchOutcome>,
    pub cancel_reason: Option<String>,
    pub origin_call_id: Option<String>,
    pub notes: String,
    /// Estimated wait when the offer was accepted (hold time avoided).
    pub ewt_at_request_secs: Option<f64>,
    /// Principal that created it (customer tokens see only their own).
    pub created_by: String,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
    /// Incremented on every stored change; stores refuse a stale write.
    pub version: u64,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("callback is {}; only a CALLBACK_STATE_PENDING or CALLBACK_STATE_DISPATCHED callback changes", .0.api_name())]
    NotOpen(CallbackState),
    #[error("callback is being dialed; it can be changed once the attempt ends")]
    Dispatched,
    #[error("attempt {0} is not the callback's current attempt")]
    StaleAttempt(String),
}

impl Callback {
    /// Whether a scheduled callback's slot or a retry's backoff still lies ahead.
    pub fn waiting_until(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        (self.not_before > now).then_some(self.not_before)
    }

    /// Every instant at the stored precision ([`stored_instant`]): a new callback is
    /// made so before it is stored, and each transition leaves it so.
    pub fn at_stored_precision(mut self) -> Self {
        self.truncate_instants();
        self
    }

    fn truncate_instants(&mut self) {
        if let CallbackKind::Scheduled { start, end } = &mut self.kind {
            *start = stored_instant(*start);
            *end = stored_instant(*end);
        }
        if let Some(lease) = &mut self.lease {
            lease.until = stored_instant(lease.until);
        }
        for t in [
            &mut self.virtual_enqueued_at,
            &mut self.not_before,
            &mut self.expires_at,
            &mut self.created_at,
            &mut self.updated_at,
        ] {
            *t = stored_instant(*t);
        }
    }

    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
        self.version += 1;
        self.truncate_instants();
    }

    /// PENDING -> DISPATCHED under a new lease (a new attempt).
    pub fn dispatch(
        &mut self,
        attempt_id: String,
        dialer_id: String,
        agent_id: Option<String>,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        if self.state != CallbackState::Pending {
            return Err(TransitionError::NotOpen(self.state));
        }
        self.state = CallbackState::Dispatched;
        self.attempts += 1;
        self.lease = Some(Lease {
            attempt_id,
            dialer_id,
            until,
            agent_id,
        });
        self.touch(now);
        Ok(())
    }

    /// A lease ran out without an outcome: the same attempt goes to a dialer again
    /// (possibly another one), with a new deadline. Attempts are not counted again.
    pub fn re_lease(
        &mut self,
        dialer_id: String,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        match (&self.state, &mut self.lease) {
            (CallbackState::Dispatched, Some(lease)) => {
                lease.dialer_id = dialer_id;
                lease.until = until;
                self.touch(now);
                Ok(())
            }
            _ => Err(TransitionError::NotOpen(self.state)),
        }
    }

    /// The dialer's report. `retry_at` is when the next attempt may start, or `None`
    /// when attempts are exhausted. Returns the agent whose reservation ends.
    pub fn outcome(
        &mut self,
        attempt_id: &str,
        outcome: DispatchOutcome,
        retry_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<Option<String>, TransitionError> {
        let lease = match (&self.state, &self.lease) {
            (CallbackState::Dispatched, Some(l)) if l.attempt_id == attempt_id => l.clone(),
            (CallbackState::Dispatched, _) => {
                return Err(TransitionError::StaleAttempt(attempt_id.into()))
            }
            (state, _) => return Err(TransitionError::NotOpen(*state)),
        };
        self.last_outcome = Some(outcome);
        self.lease = None;
        self.state = match (outcome, retry_at) {
            (DispatchOutcome::Connected, _) => CallbackState::Completed,
            (DispatchOutcome::InvalidNumber, _) | (_, None) => CallbackState::Failed,
            (_, Some(at)) => {
                self.not_before = at;
                CallbackState::Pending
            }
        };
        self.touch(now);
        Ok(lease.agent_id)
    }

    /// PENDING -> CANCELLED. A callback being dialed cannot be cancelled (the phone may
    /// already be ringing); the caller retries once the attempt ends.
    pub fn cancel(&mut self, reason: String, now: DateTime<Utc>) -> Result<(), TransitionError> {
        match self.state {
            CallbackState::Pending => {
                self.state = CallbackState::Cancelled;
                self.cancel_reason = Some(reason);
                self.touch(now);
                Ok(())
            }
            CallbackState::Dispatched => Err(TransitionError::Dispatched),
            s => Err(TransitionError::NotOpen(s)),
        }
    }

    /// PENDING -> EXPIRED.
    pub fn expire(&mut self, now: DateTime<Utc>) -> Result<(), TransitionError> {
        if self.state != CallbackState::Pending {
            return Err(TransitionError::NotOpen(self.state));
        }
        self.state = CallbackState::Expired;
        self.touch(now);
        Ok(())
    }

    /// Moves a pending callback to a scheduled slot.
    pub fn reschedule(
        &mut self,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), TransitionError> {
        match self.state {
            CallbackState::Pending => {
                self.kind = CallbackKind::Scheduled { start, end };
                self.not_before = start;
                self.virtual_enqueued_at = start;
                self.touch(now);
                Ok(())
            }
            CallbackState::Dispatched => Err(TransitionError::Dispatched),
            s => Err(TransitionError::NotOpen(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_790_000_000 + s, 0).unwrap()
    }

    pub(super) fn pending() -> Callback {
        Callback {
            id: "cb".into(),
            state: CallbackState::Pending,
            kind: CallbackKind::Asap,
            phone: "+12125550100".into(),
            customer_id: None,
            queue_id: "general".into(),
            time_zone: "America/New_York".into(),
            virtual_enqueued_at: t(0),
            priority: 0,
            attempts: 0,
            max_attempts: 3,
            not_before: t(0),
            expires_at: t(86_400),
            lease: None,
            last_outcome: None,
            cancel_reason: None,
            origin_call_id: None,
            notes: String::new(),
            ewt_at_request_secs: None,
            created_by: "test".into(),
            created_at: t(0),
            updated_at: t(0),
            version: 1,
        }
    }

    #[test]
    fn no_answer_retries_then_connected_completes() {
        let mut c = pending();
        c.dispatch("a1".into(), "d1".into(), Some("agent".into()), t(60), t(1))
            .unwrap();
        assert_eq!((c.state, c.attempts), (CallbackState::Dispatched, 1));
        assert_eq!(
            c.outcome("a1", DispatchOutcome::NoAnswer, Some(t(300)), t(10)),
            Ok(Some("agent".into()))
        );
        assert_eq!((c.state, c.not_before), (CallbackState::Pending, t(300)));
        c.dispatch("a2".into(), "d1".into(), None, t(400), t(300))
            .unwrap();
        assert!(matches!(
            c.outcome("a1", DispatchOutcome::Connected, None, t(301)),
            Err(TransitionError::StaleAttempt(_))
        ));
        c.outcome("a2", DispatchOutcome::Connected, None, t(302))
            .unwrap();
        assert_eq!((c.state, c.attempts), (CallbackState::Completed, 2));
        assert!(c
            .outcome("a2", DispatchOutcome::Connected, None, t(303))
            .is_err());
    }

    #[test]
    fn exhausted_attempts_and_invalid_numbers_fail() {
        let mut c = pending();
        c.dispatch("a1".into(), "d".into(), None, t(60), t(1))
            .unwrap();
        c.outcome("a1", DispatchOutcome::Busy, None, t(2)).unwrap();
        assert_eq!(c.state, CallbackState::Failed);
        let mut c = pending();
        c.dispatch("a1".into(), "d".into(), None, t(60), t(1))
            .unwrap();
        c.outcome("a1", DispatchOutcome::InvalidNumber, Some(t(100)), t(2))
            .unwrap();
        assert_eq!(c.state, CallbackState::Failed);
    }

    #[test]
    fn re_lease_keeps_the_attempt_and_does_not_count_it_twice() {
        let mut c = pending();
        c.dispatch("a1".into(), "d1".into(), None, t(60), t(1))
            .unwrap();
        c.re_lease("d2".into(), t(120), t(61)).unwrap();
        let lease = c.lease.clone().unwrap();
        assert_eq!(
            (
                lease.attempt_id.as_str(),
                lease.dialer_id.as_str(),
                c.attempts
            ),
            ("a1", "d2", 1)
        );
    }

    #[test]
    fn instants_keep_the_stored_precision_through_transitions() {
        let fine = t(0) + chrono::Duration::nanoseconds(123_456_789);
        let c = Callback {
            created_at: fine,
            updated_at: fine,
            not_before: fine,
            ..pending()
        }
        .at_stored_precision();
        assert_eq!(c.created_at.timestamp_subsec_nanos(), 123_000_000);
        assert_eq!(c.not_before, c.created_at);
        let mut c = c;
        c.dispatch(
            "a1".into(),
            "d1".into(),
            None,
            fine + chrono::Duration::seconds(60),
            fine,
        )
        .unwrap();
        let lease = c.lease.clone().unwrap();
        assert_eq!(lease.until.timestamp_subsec_nanos(), 123_000_000);
        assert_eq!(c.updated_at.timestamp_subsec_nanos(), 123_000_000);
    }

    #[test]
    fn a_refused_transition_names_the_state_as_the_api_does() {
        let mut c = pending();
        c.cancel("customer".into(), t(1)).unwrap();
        let e = c.cancel("again".into(), t(2)).unwrap_err().to_string();
        assert!(e.contains("CALLBACK_STATE_CANCELLED"), "{e}");
        assert!(!e.contains("Cancelled"), "{e}");
    }

    #[test]
    fn only_pending_callbacks_cancel_expire_or_move() {
        let mut c = pending();
        c.dispatch("a1".into(), "d1".into(), None, t(60), t(1))
            .unwrap();
        assert_eq!(c.cancel("x".into(), t(2)), Err(TransitionError::Dispatched));
        assert!(c.expire(t(3)).is_err());
        let mut c = pending();
        c.cancel("customer".into(), t(2)).unwrap();
        assert_eq!(c.state, CallbackState::Cancelled);
        assert!(c.cancel("again".into(), t(3)).is_err());
        let v = c.version;
        assert!(c.reschedule(t(10), t(20), t(4)).is_err());
        assert_eq!(c.version, v, "a refused transition changes nothing");
    }
}
