//! Callback writes, one round trip each: a create, a change and a settle are each one
//! call of a function installed by migration 3 (`schema::CALLBACK_FUNCTIONS`), sent as
//! one autocommitted statement. The function does in the server what a transaction
//! of several statements did from here (the fence check, the request key, the dedupe,
//! the write and its KPI delta), so a callback costs one exchange with the database
//! and its commit instead of BEGIN, the fence check, two rounds of statements and
//! COMMIT: on a small machine the database's and holdless's CPU per exchange, not the
//! disk, bounded durable callbacks per second. The reply still comes after COMMIT,
//! on a session with the configured `synchronous_commit`.
//!
//! The KPI delta is computed here (`metrics::kpi`, one definition for every backend)
//! and handed to the function, which counts it only when its write happened: a create
//! that found a twin or a replay counts nothing, and a change counts the closing of a
//! callback only when the stored one was still open.

use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

use super::tx::{i64_of, state_text, u64_of};
use super::{PgStore, TxError, MAX_TRIES};
use crate::domain::callback::{Callback, CallbackState};
use crate::metrics::kpi::{bucket_start, callback_closing_delta, callback_delta, KpiCounters};
use crate::store::{note_state_change, CallbackCreate, RequestKey, StoreError, StoreResult};

const CREATE_SQL: &str = "SELECT outcome, answer, lease_epoch FROM holdless_create_callback(\
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
fn kpi(delta: &KpiCounters) -> Option<Json<&KpiCounters>> {
    (!delta.is_zero()).then_some(Json(delta))
}

impl PgStore {
    /// Runs one autocommitted statement on a pooled connection, and again when it lost
    /// a race (see `TxError::retryable`): its transaction was rolled back whole.
    async fn call(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Row> {
        let mut tries = 0u32;
        loop {
            tries += 1;
            let r: Result<Row, TxError> = async {
                let client = self.client().await?;
                let stmt = client.prepare_cached(sql).await?;
                Ok(client.query_one(&stmt, params).await?)
            }
            .await;
            match r {
                Ok(row) => return Ok(row),
                Err(e) if e.retryable() && tries < MAX_TRIES => continue,
                Err(e) => return Err(e.into_store()),
            }
        }
    }

    /// See `Store::create_callback`.
    pub(super) async fn create(
        &self,
        cb: &Callback,
        request: Option<&RequestKey>,
    ) -> StoreResult<CallbackCreate> {
        let epoch = self.fence();
        let delta = callback_delta(None, cb);
        let row = self
            .call(
                CREATE_SQL,
                &[
                    &i64_of(epoch),
                    &cb.id,
                    &cb.phone,
                    &cb.queue_id,
                    &state_text(cb.state),
                    &cb.state.is_open(),
                    &i64_of(cb.version),
                    &cb.created_by,
                    &Json(cb),
                    &request.map(|r| r.principal.as_str()),
                    &request.map(|r| r.request_id.as_str()),
                    &request.map(|r| r.fingerprint.as_str()),
                    &cb.created_at,
                    &bucket_start(cb.created_at),
                    &kpi(&delta),
                ],
            )
            .await?;
        let found = || {
            callback(&row, 1)?.ok_or_else(|| corrupt("the database answered without the callback"))
        };
        match outcome(&row)?.as_str() {
            "created" => {
                note_state_change(None, cb);
                Ok(CallbackCreate::Created(cb.clone()))
            }
            "existing" => Ok(CallbackCreate::Existing(found()?)),
            "replayed" => Ok(CallbackCreate::Replayed(found()?)),
            "fenced" => Err(fenced(&row, epoch)?),
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
                "holdless_create_callback answered {other}"
            ))),
        }
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
