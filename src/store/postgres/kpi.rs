//! KPI counts on PostgreSQL: appended as deltas, folded in the background.
//!
//! Every change that counts appends a row to `kpi_deltas` (one row per queue and
//! interval, updated in place, would make every writer of that interval queue on its
//! lock), and a read sums the rows of the period it asks for. So that reads (the
//! wallboards' "today" at start-up, a report) stay small, the leader's housekeeping
//! calls [`PgStore::fold_kpi`] every few seconds: the rows of each queue and interval
//! that got new ones are replaced by their sum, in one transaction per group of
//! intervals. A reader sees the counts from before or after a fold, never both or
//! neither; a delta committed during a fold is not locked by it and waits for the next
//! one. A delta is stored without its zero counters (a callback create counts one of
//! about forty).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::types::Json;

use super::tx::{doc, exec, query};
use super::{in_tx, PgStore, TxError};
use crate::metrics::kpi::KpiCounters;
use crate::store::{StoreError, StoreResult};

/// Intervals (queue and start) folded in one transaction.
const FOLD_GROUP: usize = 256;

/// A delta as stored: its counters that are not zero.
pub(super) fn delta_json(delta: &KpiCounters) -> Value {
    let mut v = serde_json::to_value(delta).unwrap_or(Value::Null);
    drop_zeros(&mut v);
    v
}

fn drop_zeros(v: &mut Value) {
    if let Value::Object(fields) = v {
        fields.retain(|_, field| {
            drop_zeros(field);
            !(field.as_u64() == Some(0) || field.as_object().is_some_and(|o| o.is_empty()))
        });
    }
}

impl PgStore {
    /// Folds the deltas of every interval that got one since the last fold of this
    /// store (the first fold looks at every row); returns how many rows were folded
    /// away.
    pub(super) async fn fold_kpi(&self) -> StoreResult<u64> {
        let after = self.inner.kpi_folded_upto.load(Ordering::SeqCst);
        let touched = self
            .rows(
                "SELECT queue_id, start, max(id) FROM kpi_deltas WHERE id > $1 GROUP BY 1, 2",
                &[&after],
            )
            .await?;
        let mut newest = after;
        let mut intervals: Vec<(String, DateTime<Utc>)> = Vec::with_capacity(touched.len());
        for row in &touched {
            let get = |e: tokio_postgres::Error| StoreError::Corrupt(format!("kpi_deltas: {e}"));
            newest = newest.max(row.try_get(2).map_err(get)?);
            intervals.push((row.try_get(0).map_err(get)?, row.try_get(1).map_err(get)?));
        }
        let mut folded = 0;
        for group in intervals.chunks(FOLD_GROUP) {
            folded += in_tx!(self, tx => Self::fold_tx(&tx, group).await?)?;
        }
        self.inner.kpi_folded_upto.store(newest, Ordering::SeqCst);
        Ok(folded)
    }

    /// Replaces the rows of each interval of `group` that has several by their sum.
    async fn fold_tx(
        tx: &deadpool_postgres::Transaction<'_>,
        group: &[(String, DateTime<Utc>)],
    ) -> Result<u64, TxError> {
        let queues: Vec<&str> = group.iter().map(|(q, _)| q.as_str()).collect();
        let starts: Vec<DateTime<Utc>> = group.iter().map(|(_, s)| *s).collect();
        let rows = query(
            tx,
            "SELECT id, queue_id, start, counters FROM kpi_deltas \
             WHERE (queue_id, start) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[])) \
             FOR UPDATE",
            &[&queues, &starts],
        )
        .await?;
        let mut sums: BTreeMap<(String, DateTime<Utc>), (Vec<i64>, KpiCounters)> = BTreeMap::new();
        for row in &rows {
            let counters: KpiCounters = doc(row, 3)?;
            let (ids, sum) = sums.entry((row.get(1), row.get(2))).or_default();
            ids.push(row.get(0));
            sum.add(&counters);
        }
        sums.retain(|_, (ids, _)| ids.len() > 1);
        if sums.is_empty() {
            return Ok(0);
        }
        let gone: Vec<i64> = sums
            .values()
            .flat_map(|(ids, _)| ids.iter().copied())
            .collect();
        exec(tx, "DELETE FROM kpi_deltas WHERE id = ANY($1)", &[&gone]).await?;
        let queues: Vec<&str> = sums.keys().map(|(q, _)| q.as_str()).collect();
        let starts: Vec<DateTime<Utc>> = sums.keys().map(|(_, s)| *s).collect();
        let counters: Vec<Json<Value>> = sums.values().map(|(_, c)| Json(delta_json(c))).collect();
        exec(
            tx,
            "INSERT INTO kpi_deltas (queue_id, start, counters) \
             SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::jsonb[])",
            &[&queues, &starts, &counters],
        )
        .await?;
        Ok((gone.len() - sums.len()) as u64)
    }
}
