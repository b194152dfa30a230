//! KPI persistence in sled: one tree, `kpi`, with three key spaces.
//!
//! - `b` + queue id + 0x00 + interval start (i64 seconds, sign flipped, big-endian) ->
//!   [`KpiCounters`] (JSON), one per queue and 15-minute interval
//! - `a` + call id -> [`AnsweredMark`]: the call's first answer (first-contact resolution)
//! - `s` + call id -> [`SurveyMark`]: the call's survey was taken (at most one)
//!
//! Counters change in the same write as the event that moves them: a call's contact
//! record and its counters in one sled transaction; a callback's change and its counters
//! in the same writer-thread step and the same group-commit flush (two sled operations:
//! a crash between them may lose that one increment, never count it twice).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionalTree};
use sled::Transactional;

use super::sled_store::{
    abort, corrupt, decode, encode, io, party_contacts_newest, party_keys, tx_result, SledStore,
};
use crate::domain::callback::Callback;
use crate::domain::contact::ContactRecord;
use crate::metrics::kpi::{
    bucket_start, callback_delta, contact_delta, is_answered, survey_delta, KpiCounters, Survey,
    FCR_DAYS,
};
use crate::store::{KpiBucket, StoreResult, SurveyOutcome};

const BUCKET: u8 = b'b';
const ANSWERED: u8 = b'a';
const SURVEY: u8 = b's';

/// Most calls of one party (customer or number) a recorded call looks at for
/// first-contact resolution, newest first. Each answered call marks the earlier ones as
/// repeated when it is recorded, so a party with more calls than this in the window has
/// its older ones marked already by the calls in between; the cap keeps a frequent
/// caller's recording from slowing down with every call of their week.
const FCR_SCAN: usize = 64;

/// The first answer of a call: where its first-contact resolution is counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AnsweredMark {
    pub queue_id: String,
    pub bucket: DateTime<Utc>,
    pub enqueued_at: DateTime<Utc>,
    pub repeated: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SurveyMark {
    pub at: DateTime<Utc>,
}

fn time_key(t: DateTime<Utc>) -> [u8; 8] {
    (t.timestamp() as u64 ^ (1 << 63)).to_be_bytes()
}

fn bucket_key(queue: &str, start: DateTime<Utc>) -> Vec<u8> {
    let mut k = Vec::with_capacity(queue.len() + 10);
    k.push(BUCKET);
    k.extend_from_slice(queue.as_bytes());
    k.push(0);
    k.extend_from_slice(&time_key(start));
    k
}

fn parse_bucket_key(k: &[u8]) -> StoreResult<(String, DateTime<Utc>)> {
    let bad = || corrupt("kpi bucket key malformed");
    let rest = k.get(1..).ok_or_else(bad)?;
    let sep = rest.iter().position(|&b| b == 0).ok_or_else(bad)?;
    let queue = std::str::from_utf8(&rest[..sep]).map_err(|_| bad())?;
    let time: [u8; 8] = rest
        .get(sep + 1..)
        .and_then(|t| t.try_into().ok())
        .ok_or_else(bad)?;
    let secs = (u64::from_be_bytes(time) ^ (1 << 63)) as i64;
    let start = DateTime::from_timestamp(secs, 0).ok_or_else(bad)?;
    Ok((queue.to_owned(), start))
}

fn mark_key(space: u8, call_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(call_id.len() + 1);
    k.push(space);
    k.extend_from_slice(call_id.as_bytes());
    k
}

/// One party's calls, newest first: (call id, enqueue time).
type PartyCalls = Vec<(Vec<u8>, DateTime<Utc>)>;

type TxResult<T> = Result<T, ConflictableTransactionError<crate::store::StoreError>>;

fn bump_tx(kpi: &TransactionalTree, key: &[u8], delta: &KpiCounters) -> TxResult<()> {
    if delta.is_zero() {
        return Ok(());
    }
    let mut c: KpiCounters = match kpi.get(key)? {
        Some(v) => match decode(&v) {
            Ok(c) => c,
            Err(e) => return abort(e),
        },
        None => KpiCounters::default(),
    };
    c.add(delta);
    kpi.insert(key, encode(&c))?;
    Ok(())
}

pub(crate) fn get_tx<T: serde::de::DeserializeOwned>(
    tree: &TransactionalTree,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        Some(v) => match decode(&v) {
            Ok(c) => Ok(Some(c)),
            Err(e) => abort(e),
        },
        None => Ok(None),
    }
}

impl SledStore {
    /// Other calls in the contact index of the call's customer and of its number,
    /// entered at or after `since`: one list per party, newest first (at most
    /// [`FCR_SCAN`] each), of (call id, enqueue time). Runs on the writer thread, so no
    /// write can slip between this read and the transaction that follows.
    fn party_calls(&self, c: &ContactRecord, since: DateTime<Utc>) -> StoreResult<Vec<PartyCalls>> {
        let parties = [
            c.customer_id.as_deref().map(|id| format!("c:{id}")),
            c.caller.as_deref().map(|p| format!("p:{p}")),
        ];
        let mut out = Vec::with_capacity(2);
        for party in parties.into_iter().flatten() {
            let calls = party_contacts_newest(&self.contacts_by_party, &party, since, FCR_SCAN)?;
            out.push(
                calls
                    .into_iter()
                    .filter(|(_, id)| id != c.call_id.as_bytes())
                    .map(|(at, id)| (id, at))
                    .collect(),
            );
        }
        Ok(out)
    }

    /// Stores a contact record; with `target_secs` (the queue's service-level
    /// threshold) also its KPI counters and first-contact-resolution marks, in the same
    /// transaction. Runs on the writer thread only.
    pub(crate) fn record_call_blocking(
        &self,
        contact: ContactRecord,
        target_secs: Option<f64>,
    ) -> StoreResult<()> {
        if let Some(caller) = &contact.caller {
            self.known.insert(caller);
        }
        let window = chrono::Duration::days(FCR_DAYS);
        let priors = match target_secs {
            Some(_) => self.party_calls(&contact, contact.enqueued_at - window)?,
            None => Vec::new(),
        };
        let r = (&self.contacts, &self.contacts_by_party, &self.kpi).transaction(
            |(contacts, index, kpi)| {
                let key = contact.call_id.as_bytes();
                let old: Option<ContactRecord> = get_tx(contacts, key)?;
                if let Some(old) = &old {
                    for k in party_keys(old) {
                        index.remove(k)?;
                    }
                }
                for k in party_keys(&contact) {
                    index.insert(k, &[] as &[u8])?;
                }
                contacts.insert(key, encode(&contact))?;
                let Some(target) = target_secs else {
                    return Ok(());
                };
                let mut delta = contact_delta(old.as_ref(), &contact, target);
                let bucket = bucket_start(contact.enqueued_at);
                let mark = mark_key(ANSWERED, &contact.call_id);
                if is_answered(&contact) && kpi.get(&mark)?.is_none() {
                    delta.answered_contacts += 1;
                    // A call of the same party that entered after this one (while it
                    // waited) already repeats it.
                    let repeated = priors.iter().flatten().any(|(_, at)| {
                        *at > contact.enqueued_at && *at - contact.enqueued_at <= window
                    });
                    if repeated {
                        delta.fcr_repeated += 1;
                    }
                    let m = AnsweredMark {
                        queue_id: contact.queue_id.clone(),
                        bucket,
                        enqueued_at: contact.enqueued_at,
                        repeated,
                    };
                    kpi.insert(mark, encode(&m))?;
                }
                bump_tx(kpi, &bucket_key(&contact.queue_id, bucket), &delta)?;
                // This call repeats every answered call of the same party in the 7 days
                // before it: those were not resolved at first contact. Within one
                // party, newest first, the scan stops at the first answered call that
                // is already marked repeated: every answered call of that party before
                // it was marked too (whichever of the two was recorded later marked
                // the other, or was marked when it was recorded), so a frequent
                // caller's call reads one or two marks, not their whole week.
                let mut marked_now: Vec<&[u8]> = Vec::new();
                for party in &priors {
                    for (prior, prior_at) in party {
                        if *prior_at >= contact.enqueued_at {
                            continue;
                        }
                        if contact.enqueued_at - *prior_at > window {
                            break;
                        }
                        if marked_now.contains(&prior.as_slice()) {
                            continue;
                        }
                        let pk = [&[ANSWERED][..], prior].concat();
                        let Some(mut m) = get_tx::<AnsweredMark>(kpi, &pk)? else {
                            continue;
                        };
                        if m.repeated {
                            break;
                        }
                        if m.enqueued_at >= contact.enqueued_at
                            || contact.enqueued_at - m.enqueued_at > window
                        {
                            continue;
                        }
                        m.repeated = true;
                        kpi.insert(pk, encode(&m))?;
                        marked_now.push(prior.as_slice());
                        let d = KpiCounters {
                            fcr_repeated: 1,
                            ..Default::default()
                        };
                        bump_tx(kpi, &bucket_key(&m.queue_id, m.bucket), &d)?;
                    }
                }
                Ok(())
            },
        );
        tx_result(r)
    }

    /// Adds to a queue's counters in the interval holding `at`. Writer thread only: the
    /// delta is merged in memory with the others of the same batch of changes and
    /// written by [`SledStore::write_pending_kpi`] before the batch is flushed, so a
    /// thousand callbacks requested in one batch cost one read and one write of their
    /// interval's counters instead of a thousand of each.
    pub(crate) fn add_kpi_blocking(
        &self,
        queue_id: &str,
        at: DateTime<Utc>,
        delta: &KpiCounters,
    ) -> StoreResult<()> {
        if delta.is_zero() {
            return Ok(());
        }
        let key = bucket_key(queue_id, bucket_start(at));
        self.kpi_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_default()
            .add(delta);
        Ok(())
    }

    /// Writes the counters merged by [`SledStore::add_kpi_blocking`] since the last
    /// call. The applier calls it after each batch of changes, before the flush that
    /// makes the batch durable.
    pub(crate) fn write_pending_kpi(&self) -> StoreResult<()> {
        let pending =
            std::mem::take(&mut *self.kpi_pending.lock().unwrap_or_else(|e| e.into_inner()));
        for (key, delta) in pending {
            let mut c: KpiCounters = match self.kpi.get(&key).map_err(io)? {
                Some(v) => decode(&v)?,
                None => KpiCounters::default(),
            };
            c.add(&delta);
            self.kpi.insert(key, encode(&c)).map_err(io)?;
        }
        Ok(())
    }

    /// Counts a callback's change (writer thread only, right after it is applied).
    pub(crate) fn count_callback_blocking(
        &self,
        old: Option<&Callback>,
        new: &Callback,
    ) -> StoreResult<()> {
        crate::store::note_transition(old, new);
        self.add_kpi_blocking(&new.queue_id, new.created_at, &callback_delta(old, new))
    }

    /// Records a survey of a known call, at most once. Writer thread only.
    pub(crate) fn submit_survey_blocking(
        &self,
        call_id: &str,
        survey: Survey,
        at: DateTime<Utc>,
    ) -> StoreResult<SurveyOutcome> {
        let r = (&self.contacts, &self.kpi).transaction(|(contacts, kpi)| {
            let Some(contact) = get_tx::<ContactRecord>(contacts, call_id.as_bytes())? else {
                return Ok(SurveyOutcome::UnknownContact);
            };
            let mark = mark_key(SURVEY, call_id);
            if kpi.get(&mark)?.is_some() {
                return Ok(SurveyOutcome::AlreadyTaken);
            }
            kpi.insert(mark, encode(&SurveyMark { at }))?;
            let key = bucket_key(&contact.queue_id, bucket_start(contact.enqueued_at));
            bump_tx(kpi, &key, &survey_delta(&survey))?;
            Ok(SurveyOutcome::Recorded)
        });
        tx_result(r)
    }

    /// Interval counters whose interval starts in `[from, to)`, by queue then time.
    pub(crate) fn kpi_buckets_blocking(
        &self,
        queue_id: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<KpiBucket>> {
        let mut out = Vec::new();
        let mut push = |k: &[u8], v: &[u8]| -> StoreResult<()> {
            let (queue_id, start) = parse_bucket_key(k)?;
            if start >= from && start < to {
                out.push(KpiBucket {
                    queue_id,
                    start,
                    counters: decode(v)?,
                });
            }
            Ok(())
        };
        match queue_id {
            Some(q) => {
                let range = bucket_key(q, bucket_start(from))..bucket_key(q, to);
                for item in self.kpi.range(range) {
                    let (k, v) = item.map_err(io)?;
                    push(&k, &v)?;
                }
            }
            None => {
                for item in self.kpi.scan_prefix([BUCKET]) {
                    let (k, v) = item.map_err(io)?;
                    push(&k, &v)?;
                }
            }
        }
        Ok(out)
    }

    /// Forgets first-answer marks of calls entered before `before` and survey marks of
    /// contacts already pruned; the interval counters stay. Found by a read-only scan,
    /// deleted in short writer jobs.
    pub(crate) async fn prune_kpi_marks(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        let this = self.clone();
        let old = self
            .scan(move || {
                let mut old = Vec::new();
                for item in this.kpi.scan_prefix([ANSWERED]) {
                    let (k, v) = item.map_err(io)?;
                    if decode::<AnsweredMark>(&v)?.enqueued_at < before {
                        old.push(k);
                    }
                }
                // A survey mark lives as long as its contact: while the contact exists,
                // a second survey must stay refused.
                for item in this.kpi.scan_prefix([SURVEY]) {
                    let (k, v) = item.map_err(io)?;
                    let m: SurveyMark = decode(&v)?;
                    let contact_gone = this
                        .contacts
                        .get(k.get(1..).unwrap_or_default())
                        .map_err(io)?
                        .is_none();
                    if m.at < before && contact_gone {
                        old.push(k);
                    }
                }
                Ok(old)
            })
            .await?;
        // A mark's time never changes and a pruned contact does not come back, so what
        // the scan found stays prunable.
        self.remove_in_jobs(|s| &s.kpi, old).await
    }
}
