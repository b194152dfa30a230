//! Callback writes. A change and a settle are each one call of a function installed
//! by migration 3 (`schema::CALLBACK_FUNCTIONS`), sent as one autocommitted
//! statement: the function does in the server what a transaction of several
//! statements did from here (the fence check, the version check, the write, the
//! settled attempt and the KPI delta), so it costs one exchange with the database and
//! its commit instead of BEGIN, the fence check, two rounds of statements and COMMIT.
//!
//! Creates are queued and committed in groups: a worker takes every create waiting
//! when a transaction slot frees up ([`create_batches`] slots, at most
//! [`MAX_CREATE_BATCH`] creates each) and sends them as one call of
//! `holdless_create_callbacks`. Measured on a 2-core machine with the database on it,
//! the commit (its WAL flush, and waking the sessions that waited on it), not the
//! statements, was the costliest part of a create, so under load one commit now
//! carries many callbacks; a lone create still goes at once. Every create is still
//! answered only after the COMMIT of its transaction, on a session with the
//! configured `synchronous_commit`, and checked as before (the fence, the request key
//! and its fingerprint, the one open callback per number and queue); a statement the
//! database refuses is tried again one callback at a time, so one bad callback fails
//! alone.
//!
//! The KPI delta is computed here (`metrics::kpi`, one definition for every backend)
//! and handed to the function, which counts it only when its write happened: a create
//! that found a twin or a replay counts nothing, and a change counts the closing of a
//! callback only when the stored one was still open.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

use super::tx::{i64_of, state_text, u64_of};
use super::{Inner, PgStore, TxError, MAX_TRIES};
use crate::domain::callback::{Callback, CallbackState};
use crate::metrics::kpi::{bucket_start, callback_closing_delta, callback_delta, KpiCounters};
use crate::store::{note_state_change, CallbackCreate, RequestKey, StoreError, StoreResult};

const CREATE_SQL: &str = "SELECT outcome, answer, lease_epoch FROM holdless_create_callbacks(\
     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

const UPDATE_SQL: &str = "SELECT outcome, old_state, lease_epoch FROM holdless_update_callback(\
     $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

const REQUESTED_SQL: &str = "SELECT r.fingerprint, r.callback_id, c.doc \
     FROM callback_requests r LEFT JOIN callbacks c ON c.id = r.callback_id \
     WHERE r.principal = $1 AND r.request_id = $2";

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn outcome(row: &Row) -> StoreResult<String> {
    row.try_get(0).map_err(corrupt)
}

fn callback(row: &Row, idx: usize) -> StoreResult<Option<Callback>> {
    let found: Option<Json<Callback>> = row.try_get(idx).map_err(corrupt)?;
    Ok(found.map(|Json(c)| c))
}

fn fenced(row: &Row, epoch: u64) -> StoreResult<StoreError> {
    let current: Option<i64> = row.try_get(2).map_err(corrupt)?;
    Ok(StoreError::Fenced {
        epoch,
        current: current.map_or(0, u64_of),
    })
}

/// The delta to hand a function: `None` (SQL NULL) when there is nothing to count.
fn kpi(delta: &KpiCounters) -> Option<Json<serde_json::Value>> {
    (!delta.is_zero()).then(|| Json(super::kpi::delta_json(delta)))
}

/// What one create answered.
fn created(row: &Row, job: &CreateJob) -> StoreResult<CallbackCreate> {
    let request = job.request.as_ref();
    let found =
        || callback(row, 1)?.ok_or_else(|| corrupt("the database answered without the callback"));
    match outcome(row)?.as_str() {
        "created" => Ok(CallbackCreate::Created(job.cb.clone())),
        "existing" => Ok(CallbackCreate::Existing(found()?)),
        "replayed" => Ok(CallbackCreate::Replayed(found()?)),
        "reused" => Err(StoreError::RequestIdReused {
            request_id: request.map(|r| r.request_id.clone()).unwrap_or_default(),
        }),
        "lost" => {
            let named: Option<Json<String>> = row.try_get(1).map_err(corrupt)?;
            Err(StoreError::Corrupt(format!(
                "request {} names missing callback {}",
                request.map(|r| r.request_id.as_str()).unwrap_or_default(),
                named.map(|Json(id)| id).unwrap_or_default()
            )))
        }
        other => Err(corrupt(format!(
            "holdless_create_callbacks answered {other}"
        ))),
    }
}

/// Most callbacks created in one transaction.
pub(super) const MAX_CREATE_BATCH: usize = 64;
/// Creates waiting for a transaction; a create beyond these waits to be queued.
pub(super) const CREATE_QUEUE: usize = 1_024;

/// Create transactions in flight at once for a pool of `pool_size`: a quarter of the
/// pool, at most 4, so reads and other writes keep connections. While they run, the
/// creates that arrive queue and go together in the next transaction: under load a
/// commit (the database's costliest step on a small machine) carries many callbacks.
pub(super) fn create_batches(pool_size: usize) -> usize {
    (pool_size / 4).clamp(1, 4)
}

/// A create waiting for its transaction.
pub(super) struct CreateJob {
    cb: Callback,
    request: Option<RequestKey>,
    reply: oneshot::Sender<StoreResult<CallbackCreate>>,
    /// Held until the create is answered (or dropped unanswered).
    _ticket: Ticket,
}

/// The creates handed to the queue and not yet answered, by number in the order they
/// were handed in, so a flush can wait for every create handed in before it: one whose
/// caller gave up still commits (or fails) on its own time, and a scheduler that
/// rechecks such a callback must see its outcome.
pub(super) struct Unanswered(watch::Sender<Tickets>);

#[derive(Default)]
struct Tickets {
    next: u64,
    out: BTreeSet<u64>,
}

/// A create's number among [`Unanswered`]; dropping it marks the create answered.
pub(super) struct Ticket {
    n: u64,
    of: Arc<Unanswered>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.of.0.send_modify(|t| {
            t.out.remove(&self.n);
        });
    }
}

impl Unanswered {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Unanswered(watch::Sender::new(Tickets::default())))
    }

    fn ticket(self: &Arc<Self>) -> Ticket {
        let mut n = 0;
        self.0.send_modify(|t| {
            n = t.next;
            t.next += 1;
            t.out.insert(n);
        });
        Ticket {
            n,
            of: self.clone(),
        }
    }

    /// Returns once every create handed in before this call has been answered.
    pub(super) async fn settled(&self) {
        let upto = self.0.borrow().next;
        let mut seen = self.0.subscribe();
        // The sender lives as long as `self`: this ends only by the condition.
        let _ = seen
            .wait_for(|t| t.out.first().is_none_or(|&n| n >= upto))
            .await;
    }
}

/// The create queue's worker: takes the first waiting create, waits for one of
/// `batches` transaction slots, takes every create queued by then (up to
/// [`MAX_CREATE_BATCH`]) and runs them as one transaction. Holds the store weakly, so
/// dropping the last `PgStore` closes the queue and ends it.
pub(super) async fn run_creates(
    mut queue: mpsc::Receiver<CreateJob>,
    store: Weak<Inner>,
    batches: usize,
) {
    let slots = Arc::new(Semaphore::new(batches));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let mut jobs = vec![first];
        while jobs.len() < MAX_CREATE_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let Some(inner) = store.upgrade() else {
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Closed));
            }
            break;
        };
        tokio::spawn(async move {
            PgStore { inner }.create_batch(jobs).await;
            drop(slot);
        });
    }
}

impl PgStore {
    /// Runs one autocommitted statement on a pooled connection, and again when it lost
    /// a race (see `TxError::retryable`): its transaction was rolled back whole.
    async fn call_rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, TxError> {
        let mut tries = 0u32;
        loop {
            tries += 1;
            let r: Result<Vec<Row>, TxError> = async {
                let client = self.client().await?;
                let stmt = client.prepare_cached(sql).await?;
                Ok(client.query(&stmt, params).await?)
            }
            .await;
            match r {
                Err(e) if e.retryable() && tries < MAX_TRIES => continue,
                r => return r,
            }
        }
    }

    /// [`PgStore::call_rows`] of a statement that answers one row.
    async fn call(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Row> {
        let mut rows = self
            .call_rows(sql, params)
            .await
            .map_err(TxError::into_store)?;
        match rows.pop() {
            Some(row) if rows.is_empty() => Ok(row),
            _ => Err(corrupt("a function answered other than one row")),
        }
    }

    /// See `Store::create_callback`: queued for the next create transaction.
    pub(super) async fn create(
        &self,
        cb: Callback,
        request: Option<RequestKey>,
    ) -> StoreResult<CallbackCreate> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let (reply, answer) = oneshot::channel();
        let _ticket = self.inner.unanswered.ticket();
        self.inner
            .creates
            .send(CreateJob {
                cb,
                request,
                reply,
                _ticket,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer
            .await
            .map_err(|_| StoreError::Io("the callback writer stopped".into()))?
    }

    /// Runs one create transaction for `jobs` and answers each. When the database
    /// refuses the batch's statement (not a race: those are run again), one callback
    /// may be the cause, so each is then tried alone and only its own create fails.
    async fn create_batch(&self, jobs: Vec<CreateJob>) {
        // One order for every transaction (number, queue), so two batches that both
        // hold twins wait on each other's rows in the same order and never deadlock.
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&jobs[a].cb, &jobs[b].cb);
            (&a.phone, &a.queue_id, &a.id).cmp(&(&b.phone, &b.queue_id, &b.id))
        });
        let results = match self.create_many(&jobs, &order).await {
            Err(TxError::Pg(e)) if jobs.len() > 1 && e.as_db_error().is_some() => {
                let mut alone = Vec::with_capacity(jobs.len());
                for i in 0..jobs.len() {
                    alone.push(match self.create_many(&jobs, &[i]).await {
                        Ok(mut r) => r.swap_remove(i),
                        Err(e) => Err(e.into_store()),
                    });
                }
                alone
            }
            Ok(results) => results,
            Err(e) => {
                let e = e.into_store();
                jobs.iter().map(|_| Err(e.clone())).collect()
            }
        };
        for (job, result) in jobs.into_iter().zip(results) {
            if let Ok(CallbackCreate::Created(c)) = &result {
                note_state_change(None, c);
            }
            // A caller that gave up does not wait for its answer.
            let _ = job.reply.send(result);
        }
    }

    /// One call of `holdless_create_callbacks` for `jobs[i]`, `i` in `order`; answers
    /// indexed like `jobs` (those not in `order` are left `Closed`, never read).
    async fn create_many(
        &self,
        jobs: &[CreateJob],
        order: &[usize],
    ) -> Result<Vec<StoreResult<CallbackCreate>>, TxError> {
        let epoch = self.fence();
        let picked: Vec<&CreateJob> = order.iter().map(|&i| &jobs[i]).collect();
        let deltas: Vec<KpiCounters> = picked.iter().map(|j| callback_delta(None, &j.cb)).collect();
        let ids: Vec<&str> = picked.iter().map(|j| j.cb.id.as_str()).collect();
        let phones: Vec<&str> = picked.iter().map(|j| j.cb.phone.as_str()).collect();
        let queues: Vec<&str> = picked.iter().map(|j| j.cb.queue_id.as_str()).collect();
        let states: Vec<String> = picked.iter().map(|j| state_text(j.cb.state)).collect();
        let open: Vec<bool> = picked.iter().map(|j| j.cb.state.is_open()).collect();
        let versions: Vec<i64> = picked.iter().map(|j| i64_of(j.cb.version)).collect();
        let created_by: Vec<&str> = picked.iter().map(|j| j.cb.created_by.as_str()).collect();
        let docs: Vec<Json<&Callback>> = picked.iter().map(|j| Json(&j.cb)).collect();
        let key = |f: fn(&RequestKey) -> &str| -> Vec<Option<&str>> {
            picked.iter().map(|j| j.request.as_ref().map(f)).collect()
        };
        let principals = key(|r| &r.principal);
        let request_ids = key(|r| &r.request_id);
        let fingerprints = key(|r| &r.fingerprint);
        let at: Vec<DateTime<Utc>> = picked.iter().map(|j| j.cb.created_at).collect();
        let starts: Vec<DateTime<Utc>> = picked
            .iter()
            .map(|j| bucket_start(j.cb.created_at))
            .collect();
        let kpis: Vec<Option<Json<serde_json::Value>>> = deltas.iter().map(kpi).collect();
        let rows = self
            .call_rows(
                CREATE_SQL,
                &[
                    &i64_of(epoch),
                    &ids,
                    &phones,
                    &queues,
                    &states,
                    &open,
                    &versions,
                    &created_by,
                    &docs,
                    &principals,
                    &request_ids,
                    &fingerprints,
                    &at,
                    &starts,
                    &kpis,
                ],
            )
            .await?;
        let mut results: Vec<StoreResult<CallbackCreate>> =
            jobs.iter().map(|_| Err(StoreError::Closed)).collect();
        if let [row] = rows.as_slice() {
            if outcome(row)? == "fenced" {
                let e = fenced(row, epoch)?;
                for &i in order {
                    results[i] = Err(e.clone());
                }
                return Ok(results);
            }
        }
        if rows.len() != order.len() {
            return Err(corrupt(format!(
                "holdless_create_callbacks answered {} rows for {} callbacks",
                rows.len(),
                order.len()
            ))
            .into());
        }
        for (row, &i) in rows.iter().zip(order) {
            results[i] = created(row, &jobs[i]);
        }
        Ok(results)
    }

    /// A callback change (`Store::update_callback`), with the attempt it settles
    /// (`Store::settle_callback`).
    pub(super) async fn update(&self, cb: Callback, settled: Option<String>) -> StoreResult<()> {
        let epoch = self.fence();
        let delta = callback_closing_delta(&cb);
        let row = self
            .call(
                UPDATE_SQL,
                &[
                    &i64_of(epoch),
                    &cb.id,
                    &cb.phone,
                    &cb.queue_id,
                    &state_text(cb.state),
                    &cb.state.is_open(),
                    &i64_of(cb.version),
                    &cb.created_by,
                    &Json(&cb),
                    &settled.as_deref(),
                    &cb.updated_at,
                    &bucket_start(cb.created_at),
                    &kpi(&delta),
                ],
            )
            .await?;
        match outcome(&row)?.as_str() {
            "updated" => {
                let old: String = row.try_get(1).map_err(corrupt)?;
                let old: CallbackState =
                    serde_json::from_value(serde_json::Value::String(old)).map_err(corrupt)?;
                note_state_change(Some(old), &cb);
                Ok(())
            }
            "stale" => Err(StoreError::Stale { id: cb.id.clone() }),
            "fenced" => Err(fenced(&row, epoch)?),
            other => Err(corrupt(format!(
                "holdless_update_callback answered {other}"
            ))),
        }
    }

    /// See `Store::requested_callback`: one statement, no transaction.
    pub(super) async fn requested(&self, r: &RequestKey) -> StoreResult<Option<Callback>> {
        let rows = self
            .rows(REQUESTED_SQL, &[&r.principal, &r.request_id])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let fingerprint: String = row.try_get(0).map_err(corrupt)?;
        if fingerprint != r.fingerprint {
            return Err(StoreError::RequestIdReused {
                request_id: r.request_id.clone(),
            });
        }
        match callback(row, 2)? {
            Some(c) => Ok(Some(c)),
            None => {
                let named: String = row.try_get(1).map_err(corrupt)?;
                Err(StoreError::Corrupt(format!(
                    "request {} names missing callback {named}",
                    r.request_id
                )))
            }
        }
    }
}
