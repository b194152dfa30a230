//! The torture's judge: what clients and dialers were told (the [`Ledger`]) against what
//! the store holds after a crash. [`check`] is pure (records and index findings in, a
//! [`Report`] out); [`check_store`] reads a store that no server has open.
//!
//! What an OK reply promises (docs/ARCHITECTURE.md, "Durability": "an OK reply to any write means the
//! record is on disk"), and so what is checked:
//!
//! - **lost**: a callback the server acknowledged, by an OK `RequestCallback` or by
//!   sending it to a dialer (a dispatch is stored before the dialer hears of it), is
//!   missing from the store.
//! - **duplicated**: the customer could be called twice. Two open callbacks for one
//!   (number, queue); a second record for an acknowledged (number, queue) (the torture
//!   asks for each number under one request id only, so any second record is a twin);
//!   one request id answered with two callback ids; or one callback leased to two
//!   dialers at once (see "Leases" below).
//! - **inconsistent**: the due or dedupe index disagrees with the records
//!   (`Store::check_callback_indexes`); a record disagrees with an acknowledged reply
//!   (acknowledged as COMPLETED or FAILED but stored otherwise, fewer attempts stored
//!   than acknowledged or dispatched, an attempt live again after its outcome was
//!   acknowledged, a dispatched attempt that no dialer reported on but that is no longer
//!   the callback's live lease, a lease deadline earlier than one a dialer was sent); or a
//!   reply that breaks the state machine (CONNECTED answered with anything but
//!   COMPLETED, INVALID_NUMBER with anything but FAILED).
//!
//! Leases. Every dispatch a dialer receives carries the attempt id, its number and the
//! lease deadline the server set (`now + lease`), so the lease *start* is
//! `deadline - lease`. For each callback the dispatches are ordered by deadline, and each
//! one must begin after the one before it ended: the same attempt id only once the
//! previous lease had run out (docs/ARCHITECTURE.md: re-dispatch after expiry, possibly to another
//! dialer), a new attempt only with a higher number and only after some dialer had sent
//! an outcome for the previous attempt (before the new dispatch arrived, in the
//! torture's own clock). Stored instants have millisecond precision, so a lease read
//! back after a restart may end up to 1 ms early: that much overlap is tolerated.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::callback::{Callback, CallbackState, DispatchOutcome};
use crate::store::{CallbackFilter, SledStore, Store, StoreError};

/// Stored instants have millisecond precision (see the module docs).
const STORE_PRECISION: Duration = Duration::milliseconds(1);
/// Records read per page when scanning a store.
const SCAN_PAGE: usize = 10_000;

/// Everything the torture's clients and dialers were told, in the order they heard it.
/// Times in `*_us` are microseconds since the torture started (its own monotonic clock).
/// The workload asks for each (number, queue) under a single request id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// The server's lease length (`callbacks.lease_secs`), in milliseconds.
    pub lease_ms: i64,
    /// Every OK `RequestCallback` reply.
    pub acked: Vec<AckedRequest>,
    /// Every dispatch a dialer received.
    pub grants: Vec<Grant>,
    /// Every outcome report sent, acknowledged or not.
    pub sent_outcomes: Vec<SentOutcome>,
    /// Every OK `ReportDispatchOutcome` reply.
    pub acked_outcomes: Vec<AckedOutcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckedRequest {
    pub request_id: String,
    pub callback_id: String,
    pub phone: String,
    pub queue_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub callback_id: String,
    pub attempt_id: String,
    pub attempt_number: u32,
    pub dialer_id: String,
    pub lease_until: DateTime<Utc>,
    pub received_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentOutcome {
    pub attempt_id: String,
    pub sent_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckedOutcome {
    pub callback_id: String,
    pub attempt_id: String,
    pub outcome: DispatchOutcome,
    /// The server said the outcome had been recorded before.
    pub duplicate: bool,
    /// The callback as the reply showed it.
    pub state: CallbackState,
    pub attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Lost,
    Duplicated,
    Inconsistent,
}

/// One finding. `key` names what is wrong (a callback, a request, an index entry), so
/// the same finding seen by several checks or runs counts once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub kind: Kind,
    pub key: String,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// Callback records in the store.
    pub records: usize,
    /// Distinct callbacks acknowledged to a client.
    pub acked: usize,
    pub problems: Vec<Problem>,
}

impl Report {
    /// Distinct findings of a kind.
    pub fn count(&self, kind: Kind) -> usize {
        self.problems
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| p.key.as_str())
            .collect::<HashSet<_>>()
            .len()
    }

    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    fn push(&mut self, kind: Kind, key: String, detail: String) {
        self.problems.push(Problem { kind, key, detail });
    }
}

fn cb_key(id: &str) -> String {
    format!("callback:{id}")
}

/// Checks the store's callbacks (`records`, each id once, as a store holds them) and its
/// index findings against the ledger.
pub fn check(records: &[Callback], index_problems: &[String], ledger: &Ledger) -> Report {
    let mut r = Report {
        records: records.len(),
        ..Default::default()
    };
    let by_id: HashMap<&str, &Callback> = records.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut by_number: HashMap<(&str, &str), Vec<&Callback>> = HashMap::new();
    for c in records {
        by_number
            .entry((c.phone.as_str(), c.queue_id.as_str()))
            .or_default()
            .push(c);
    }

    for p in index_problems {
        r.push(Kind::Inconsistent, format!("index:{p}"), p.clone());
    }

    // docs/ARCHITECTURE.md: one open callback per (phone, queue).
    for ((phone, queue), cbs) in &by_number {
        let open: Vec<&str> = cbs
            .iter()
            .filter(|c| c.state.is_open())
            .map(|c| c.id.as_str())
            .collect();
        if open.len() > 1 {
            r.push(
                Kind::Duplicated,
                format!("open:{phone}/{queue}"),
                format!(
                    "{} open callbacks for {phone} in {queue}: {}",
                    open.len(),
                    open.join(", ")
                ),
            );
        }
    }

    check_requests(&mut r, &by_id, &by_number, ledger);
    check_outcomes(&mut r, &by_id, ledger);
    check_dispatches(&mut r, &by_id, ledger);
    r
}

fn check_requests(
    r: &mut Report,
    by_id: &HashMap<&str, &Callback>,
    by_number: &HashMap<(&str, &str), Vec<&Callback>>,
    ledger: &Ledger,
) {
    let mut first_answer: HashMap<&str, &str> = HashMap::new();
    let mut acked: HashSet<&str> = HashSet::new();
    for a in &ledger.acked {
        acked.insert(a.callback_id.as_str());
        let first = *first_answer
            .entry(a.request_id.as_str())
            .or_insert(a.callback_id.as_str());
        if first != a.callback_id {
            r.push(
                Kind::Duplicated,
                format!("request:{}", a.request_id),
                format!(
                    "request {} was answered with callback {first} and later with {}",
                    a.request_id, a.callback_id
                ),
            );
        }
        match by_id.get(a.callback_id.as_str()) {
            None => r.push(
                Kind::Lost,
                cb_key(&a.callback_id),
                format!(
                    "acknowledged callback {} for {} in {} is not in the store",
                    a.callback_id, a.phone, a.queue_id
                ),
            ),
            Some(c) if c.phone != a.phone || c.queue_id != a.queue_id => r.push(
                Kind::Inconsistent,
                cb_key(&a.callback_id),
                format!(
                    "callback {} was acknowledged for {} in {} but is stored for {} in {}",
                    a.callback_id, a.phone, a.queue_id, c.phone, c.queue_id
                ),
            ),
            Some(_) => {}
        }
        let twins = by_number
            .get(&(a.phone.as_str(), a.queue_id.as_str()))
            .into_iter()
            .flatten()
            .filter(|c| c.id != a.callback_id);
        for twin in twins {
            r.push(
                Kind::Duplicated,
                format!("twin:{}", twin.id),
                format!(
                    "callback {} ({:?}) is a second record for {} in {}, acknowledged as {}",
                    twin.id, twin.state, a.phone, a.queue_id, a.callback_id
                ),
            );
        }
    }
    r.acked = acked.len();
}

fn check_outcomes(r: &mut Report, by_id: &HashMap<&str, &Callback>, ledger: &Ledger) {
    for o in &ledger.acked_outcomes {
        if !o.duplicate {
            let follows = match o.outcome {
                DispatchOutcome::Connected => o.state == CallbackState::Completed,
                DispatchOutcome::InvalidNumber => o.state == CallbackState::Failed,
                DispatchOutcome::NoAnswer
                | DispatchOutcome::Busy
                | DispatchOutcome::Voicemail
                | DispatchOutcome::Failed => {
                    matches!(o.state, CallbackState::Pending | CallbackState::Failed)
                }
            };
            if !follows {
                r.push(
                    Kind::Inconsistent,
                    format!("reply:{}", o.attempt_id),
                    format!(
                        "outcome {:?} of attempt {} (callback {}) was answered with state {:?}",
                        o.outcome, o.attempt_id, o.callback_id, o.state
                    ),
                );
            }
        }
        let key = cb_key(&o.callback_id);
        let Some(c) = by_id.get(o.callback_id.as_str()) else {
            r.push(
                Kind::Lost,
                key,
                format!(
                    "callback {}, whose outcome {:?} was acknowledged, is not in the store",
                    o.callback_id, o.outcome
                ),
            );
            continue;
        };
        let mut wrong = |detail: String| r.push(Kind::Inconsistent, key.clone(), detail);
        if c.attempts < o.attempts {
            wrong(format!(
                "callback {} is stored with {} attempts; {} were acknowledged",
                c.id, c.attempts, o.attempts
            ));
        }
        if !o.state.is_open() && (c.state != o.state || c.attempts != o.attempts) {
            wrong(format!(
                "callback {} was acknowledged {:?} after {} attempts but is stored {:?} after {}",
                c.id, o.state, o.attempts, c.state, c.attempts
            ));
        }
        if c.state == CallbackState::Dispatched
            && c.lease
                .as_ref()
                .is_some_and(|l| l.attempt_id == o.attempt_id)
        {
            wrong(format!(
                "attempt {} of callback {} is live again after its outcome {:?} was acknowledged",
                o.attempt_id, c.id, o.outcome
            ));
        }
        // Pending again after a retryable outcome: the same attempt count means no new
        // dispatch, so only PENDING (or a customer's or the expiry's end) may follow.
        if o.state == CallbackState::Pending
            && c.attempts == o.attempts
            && !matches!(
                c.state,
                CallbackState::Pending | CallbackState::Cancelled | CallbackState::Expired
            )
        {
            wrong(format!(
                "callback {} was acknowledged PENDING after {} attempts and is stored {:?} without another attempt",
                c.id, o.attempts, c.state
            ));
        }
    }
}

fn check_dispatches(r: &mut Report, by_id: &HashMap<&str, &Callback>, ledger: &Ledger) {
    let lease = Duration::milliseconds(ledger.lease_ms);
    let mut reported: HashMap<&str, u64> = HashMap::new();
    for s in &ledger.sent_outcomes {
        let t = reported.entry(s.attempt_id.as_str()).or_insert(s.sent_us);
        *t = (*t).min(s.sent_us);
    }
    let mut grants: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for g in &ledger.grants {
        grants.entry(g.callback_id.as_str()).or_default().push(g);
    }
    for (id, mut gs) in grants {
        let key = cb_key(id);
        let Some(c) = by_id.get(id) else {
            r.push(
                Kind::Lost,
                key,
                format!(
                    "callback {id} was dispatched ({} time(s)) but is not in the store",
                    gs.len()
                ),
            );
            continue;
        };

        // One attempt id per attempt number, and the stored record at least as far on.
        let mut attempt_of: BTreeMap<u32, &str> = BTreeMap::new();
        for g in &gs {
            let first = *attempt_of
                .entry(g.attempt_number)
                .or_insert(g.attempt_id.as_str());
            if first != g.attempt_id {
                r.push(
                    Kind::Inconsistent,
                    key.clone(),
                    format!(
                        "callback {id} had two attempts numbered {}: {first} and {} (a stored dispatch was forgotten)",
                        g.attempt_number, g.attempt_id
                    ),
                );
            }
        }
        if let Some((&max, &last)) = attempt_of.last_key_value() {
            if c.attempts < max {
                r.push(
                    Kind::Inconsistent,
                    key.clone(),
                    format!(
                        "callback {id} was dispatched as attempt {max} but is stored with {} attempts",
                        c.attempts
                    ),
                );
            } else if c.attempts == max && !reported.contains_key(last) {
                // Nobody reported on the last attempt: it must still be the live lease.
                let latest = gs
                    .iter()
                    .filter(|g| g.attempt_id == last)
                    .map(|g| g.lease_until)
                    .max();
                match (&c.state, &c.lease) {
                    (CallbackState::Dispatched, Some(l)) if l.attempt_id == last => {
                        if let Some(latest) = latest.filter(|t| l.until + STORE_PRECISION < *t) {
                            r.push(
                                Kind::Inconsistent,
                                key.clone(),
                                format!(
                                    "callback {id} is leased until {} but a dialer was sent {latest}",
                                    l.until
                                ),
                            );
                        }
                    }
                    (state, _) => r.push(
                        Kind::Inconsistent,
                        key.clone(),
                        format!(
                            "attempt {last} of callback {id} was dispatched and never reported on, yet the callback is stored {state:?}{}",
                            c.lease
                                .as_ref()
                                .map(|l| format!(" under attempt {}", l.attempt_id))
                                .unwrap_or_default()
                        ),
                    ),
                }
            }
        }

        // Leases, in the order the server granted them: one dialer at a time.
        gs.sort_by(|a, b| {
            (a.lease_until, a.received_us, &a.dialer_id).cmp(&(
                b.lease_until,
                b.received_us,
                &b.dialer_id,
            ))
        });
        gs.dedup_by(|b, a| {
            a.attempt_id == b.attempt_id
                && a.lease_until == b.lease_until
                && a.dialer_id == b.dialer_id
        });
        for pair in gs.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let b_start = b.lease_until - lease;
            if a.attempt_id == b.attempt_id {
                if b_start + STORE_PRECISION < a.lease_until {
                    r.push(
                        Kind::Duplicated,
                        format!("lease:{id}"),
                        format!(
                            "attempt {} of callback {id} was leased to {} until {} and to {} from {b_start}",
                            a.attempt_id, a.dialer_id, a.lease_until, b.dialer_id
                        ),
                    );
                }
            } else {
                let ended = reported
                    .get(a.attempt_id.as_str())
                    .is_some_and(|t| *t < b.received_us);
                if b.attempt_number <= a.attempt_number || !ended {
                    r.push(
                        Kind::Duplicated,
                        format!("lease:{id}"),
                        format!(
                            "attempt {} (#{}) of callback {id} went to {} while attempt {} (#{}) leased to {} until {} had no outcome reported",
                            b.attempt_id,
                            b.attempt_number,
                            b.dialer_id,
                            a.attempt_id,
                            a.attempt_number,
                            a.dialer_id,
                            a.lease_until
                        ),
                    );
                }
            }
        }
    }
}

/// Every callback record of an open store, in id order.
pub async fn all_callbacks(store: &dyn Store) -> Result<Vec<Callback>, StoreError> {
    let mut out: Vec<Callback> = Vec::new();
    loop {
        let after = out.last().map(|c| c.id.clone());
        let page = store
            .list_callbacks(&CallbackFilter::default(), after.as_deref(), SCAN_PAGE)
            .await?;
        let done = page.len() < SCAN_PAGE;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

/// Checks an open store against the ledger; returns the report and the records read.
pub async fn check_open_store(
    store: &dyn Store,
    ledger: &Ledger,
) -> Result<(Report, Vec<Callback>), StoreError> {
    let records = all_callbacks(store).await?;
    let index = store.check_callback_indexes().await?;
    Ok((check(&records, &index, ledger), records))
}

/// Opens the sled store in `path` (no server may have it open: sled's lock is
/// exclusive), checks it against the ledger and closes it.
pub async fn check_store(
    path: &Path,
    ledger: &Ledger,
) -> Result<(Report, Vec<Callback>), StoreError> {
    if !path.join("db").is_file() {
        return Err(StoreError::Io(format!(
            "{} holds no holdless store",
            path.display()
        )));
    }
    let owned = path.to_owned();
    let store = tokio::task::spawn_blocking(move || SledStore::open(&owned))
        .await
        .map_err(|e| StoreError::Io(format!("opening the store failed: {e}")))??;
    let out = check_open_store(&store, ledger).await;
    store.close().await;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::callback::{CallbackKind, Lease};

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_790_000_000_000 + ms).expect("in range")
    }

    fn cb(id: &str, phone: &str) -> Callback {
        Callback {
            id: id.into(),
            state: CallbackState::Pending,
            kind: CallbackKind::Asap,
            phone: phone.into(),
            customer_id: None,
            queue_id: "torture".into(),
            time_zone: "America/New_York".into(),
            virtual_enqueued_at: t(0),
            priority: 0,
            attempts: 0,
            max_attempts: 3,
            not_before: t(0),
            expires_at: t(86_400_000),
            lease: None,
            last_outcome: None,
            cancel_reason: None,
            origin_call_id: None,
            notes: String::new(),
            ewt_at_request_secs: None,
            created_by: "anonymous".into(),
            created_at: t(0),
            updated_at: t(0),
            version: 1,
        }
    }

    fn acked(rid: &str, id: &str, phone: &str) -> AckedRequest {
        AckedRequest {
            request_id: rid.into(),
            callback_id: id.into(),
            phone: phone.into(),
            queue_id: "torture".into(),
        }
    }

    fn grant(id: &str, attempt: &str, n: u32, dialer: &str, until: i64, at: u64) -> Grant {
        Grant {
            callback_id: id.into(),
            attempt_id: attempt.into(),
            attempt_number: n,
            dialer_id: dialer.into(),
            lease_until: t(until),
            received_us: at,
        }
    }

    fn leased(mut c: Callback, attempt: &str, n: u32, until: i64) -> Callback {
        c.state = CallbackState::Dispatched;
        c.attempts = n;
        c.lease = Some(Lease {
            attempt_id: attempt.into(),
            dialer_id: "d1".into(),
            until: t(until),
            agent_id: None,
        });
        c
    }

    /// A history that went right: a request, a dispatch whose lease ran out, the same
    /// attempt to the other dialer, NO_ANSWER, a second attempt, CONNECTED.
    fn good() -> (Vec<Callback>, Ledger) {
        let mut done = cb("A", "+12122000001");
        done.state = CallbackState::Completed;
        done.attempts = 2;
        let ledger = Ledger {
            lease_ms: 1000,
            acked: vec![
                acked("r1", "A", "+12122000001"),
                acked("r1", "A", "+12122000001"),
                acked("r2", "B", "+12122000002"),
            ],
            grants: vec![
                grant("A", "a1", 1, "d1", 1000, 10),
                grant("A", "a1", 1, "d2", 2000, 1_000_500),
                grant("A", "a2", 2, "d1", 4000, 3_000_100),
                grant("B", "b1", 1, "d2", 1500, 600),
            ],
            sent_outcomes: vec![
                SentOutcome {
                    attempt_id: "a1".into(),
                    sent_us: 1_200_000,
                },
                SentOutcome {
                    attempt_id: "a2".into(),
                    sent_us: 3_100_000,
                },
            ],
            acked_outcomes: vec![
                AckedOutcome {
                    callback_id: "A".into(),
                    attempt_id: "a1".into(),
                    outcome: DispatchOutcome::NoAnswer,
                    duplicate: false,
                    state: CallbackState::Pending,
                    attempts: 1,
                },
                AckedOutcome {
                    callback_id: "A".into(),
                    attempt_id: "a2".into(),
                    outcome: DispatchOutcome::Connected,
                    duplicate: false,
                    state: CallbackState::Completed,
                    attempts: 2,
                },
            ],
        };
        let b = leased(cb("B", "+12122000002"), "b1", 1, 1500);
        (vec![done, b], ledger)
    }

    #[test]
    fn a_history_that_went_right_is_clean() {
        let (records, ledger) = good();
        let r = check(&records, &[], &ledger);
        assert!(r.is_clean(), "{:#?}", r.problems);
        assert_eq!((r.records, r.acked), (2, 2));
    }

    #[test]
    fn a_missing_acknowledged_callback_is_lost() {
        let (mut records, ledger) = good();
        records.retain(|c| c.id != "B");
        let r = check(&records, &[], &ledger);
        // Acknowledged and dispatched: one callback, counted once.
        assert_eq!(r.count(Kind::Lost), 1, "{:#?}", r.problems);
        assert_eq!(r.count(Kind::Duplicated) + r.count(Kind::Inconsistent), 0);
    }

    #[test]
    fn a_completed_callback_back_to_pending_is_inconsistent() {
        let (mut records, ledger) = good();
        records[0].state = CallbackState::Pending;
        let r = check(&records, &[], &ledger);
        assert_eq!(r.count(Kind::Inconsistent), 1, "{:#?}", r.problems);
    }

    #[test]
    fn a_dispatch_forgotten_after_a_crash_is_inconsistent() {
        let (mut records, ledger) = good();
        // B was sent to a dialer as attempt 1 but is stored as never dispatched.
        records[1] = cb("B", "+12122000002");
        let r = check(&records, &[], &ledger);
        assert_eq!(r.count(Kind::Inconsistent), 1, "{:#?}", r.problems);
    }

    #[test]
    fn twins_and_requests_answered_twice_are_duplicated() {
        let (mut records, mut ledger) = good();
        records.push(cb("C", "+12122000002"));
        ledger.acked.push(acked("r2", "D", "+12122000002"));
        let r = check(&records, &[], &ledger);
        let dup: Vec<&str> = r
            .problems
            .iter()
            .filter(|p| p.kind == Kind::Duplicated)
            .map(|p| p.key.as_str())
            .collect();
        assert!(dup.contains(&"open:+12122000002/torture"), "{dup:?}");
        assert!(dup.contains(&"twin:C"), "{dup:?}");
        assert!(dup.contains(&"request:r2"), "{dup:?}");
        // D was acknowledged and is nowhere.
        assert_eq!(r.count(Kind::Lost), 1);
    }

    #[test]
    fn overlapping_leases_are_duplicated() {
        let (records, mut ledger) = good();
        // a1 to d2 while d1's lease still had 400 ms to run.
        ledger.grants[1].lease_until = t(1600);
        let r = check(&records, &[], &ledger);
        assert_eq!(r.count(Kind::Duplicated), 1, "{:#?}", r.problems);
        // A new attempt before anyone reported on the previous one.
        let (records, mut ledger) = good();
        ledger.sent_outcomes[0].sent_us = 3_500_000;
        let r = check(&records, &[], &ledger);
        assert_eq!(r.count(Kind::Duplicated), 1, "{:#?}", r.problems);
        // A re-lease within the store's millisecond precision is tolerated.
        let (records, mut ledger) = good();
        ledger.grants[1].lease_until = t(1999);
        assert!(check(&records, &[], &ledger).is_clean());
    }

    #[test]
    fn replies_that_break_the_state_machine_are_inconsistent() {
        let (records, mut ledger) = good();
        ledger.acked_outcomes[1].state = CallbackState::Pending;
        let r = check(&records, &[], &ledger);
        assert!(r.count(Kind::Inconsistent) >= 1, "{:#?}", r.problems);
    }

    #[test]
    fn index_findings_are_inconsistent() {
        let (records, ledger) = good();
        let r = check(&records, &["due index holds X".into()], &ledger);
        assert_eq!(r.count(Kind::Inconsistent), 1);
    }

    #[test]
    fn the_ledger_round_trips_through_json() {
        let (_, ledger) = good();
        let text = serde_json::to_string(&ledger).expect("serializes");
        let back: Ledger = serde_json::from_str(&text).expect("parses");
        assert_eq!(back, ledger);
    }

    mod store {
        use super::*;
        use crate::store::CallbackCreate;

        async fn store_with(cbs: &[Callback]) -> (tempfile::TempDir, SledStore) {
            let dir = tempfile::tempdir().expect("temp dir");
            let s = SledStore::open(dir.path()).expect("opens");
            for c in cbs {
                let out = s
                    .create_callback(
                        c.clone(),
                        Some(crate::store::RequestKey {
                            principal: "torture".into(),
                            request_id: format!("r-{}", c.id),
                            fingerprint: c.id.clone(),
                        }),
                    )
                    .await
                    .expect("created");
                assert!(matches!(out, CallbackCreate::Created(_)));
            }
            (dir, s)
        }

        fn ledger_of(cbs: &[Callback]) -> Ledger {
            Ledger {
                lease_ms: 1000,
                acked: cbs
                    .iter()
                    .map(|c| acked(&format!("r-{}", c.id), &c.id, &c.phone))
                    .collect(),
                ..Default::default()
            }
        }

        fn three() -> Vec<Callback> {
            vec![
                cb("01A", "+12122000001"),
                cb("01B", "+12122000002"),
                cb("01C", "+12122000003"),
            ]
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_intact_store_passes_and_check_store_reads_it_from_disk() {
            let cbs = three();
            let (dir, s) = store_with(&cbs).await;
            let (r, records) = check_open_store(&s, &ledger_of(&cbs)).await.expect("read");
            assert!(r.is_clean(), "{:#?}", r.problems);
            assert_eq!(records.len(), 3);
            s.close().await;
            drop(s);
            let (r, _) = check_store(dir.path(), &ledger_of(&cbs))
                .await
                .expect("read");
            assert!(r.is_clean(), "{:#?}", r.problems);
            assert_eq!((r.records, r.acked), (3, 3));
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_record_deleted_under_its_index_entries_is_lost_and_inconsistent() {
            let cbs = three();
            let (_dir, s) = store_with(&cbs).await;
            s.remove_callback_record_only("01B").expect("removed");
            let (r, _) = check_open_store(&s, &ledger_of(&cbs)).await.expect("read");
            assert_eq!(r.count(Kind::Lost), 1, "{:#?}", r.problems);
            // Its open (dedupe) entry now points at nothing.
            assert_eq!(r.count(Kind::Inconsistent), 1, "{:#?}", r.problems);
            s.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_twin_written_past_the_dedupe_index_is_duplicated() {
            let cbs = three();
            let (_dir, s) = store_with(&cbs).await;
            s.put_callback_record_only(&cb("01D", "+12122000003"))
                .expect("written");
            let (r, _) = check_open_store(&s, &ledger_of(&cbs)).await.expect("read");
            assert!(r.count(Kind::Duplicated) >= 2, "{:#?}", r.problems);
            assert!(r.count(Kind::Inconsistent) >= 1, "{:#?}", r.problems);
            s.close().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_missing_store_is_an_error_not_a_pass() {
            let dir = tempfile::tempdir().expect("temp dir");
            assert!(check_store(&dir.path().join("nothing"), &Ledger::default())
                .await
                .is_err());
        }
    }
}
