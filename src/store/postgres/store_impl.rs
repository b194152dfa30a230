//! [`Store`] for [`PgStore`]: each write is one transaction (see the module docs), its
//! statements in `tx`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio_postgres::types::Json;
use tokio_postgres::Row;

use super::tx::*;
use super::{in_tx, pg_err, PgStore, TxError};
use crate::domain::audit::AuditEntry;
use crate::domain::callback::Callback;
use crate::domain::contact::ContactRecord;
use crate::domain::{Customer, CustomerId};
use crate::metrics::kpi::{bucket_start, survey_delta, KpiCounters, Survey};
use crate::store::{
    AppliedPlan, CallbackCreate, CallbackFilter, KpiBucket, NewPlan, PlanRecord, RecordCounts,
    RequestKey, Store, StoreError, StoreImport, StoreResult, SurveyOutcome, UpsertOutcome,
};

fn docs<T: serde::de::DeserializeOwned>(rows: &[Row]) -> StoreResult<Vec<T>> {
    rows.iter()
        .map(|r| doc(r, 0).map_err(TxError::into_store))
        .collect()
}

/// A row of the open-callback scan as the scheduler's index entry.
fn open_ref(row: &Row) -> TxResult<crate::store::OpenCallbackRef<'_>> {
    let bad = |what: &str| TxError::from(StoreError::Corrupt(format!("callback {what}")));
    let get = |i: usize| -> TxResult<DateTime<Utc>> {
        let ms: i64 = row.try_get(i).map_err(|e| bad(&e.to_string()))?;
        DateTime::from_timestamp_millis(ms).ok_or_else(|| bad("instant out of range"))
    };
    let opt = |i: usize| -> TxResult<Option<DateTime<Utc>>> {
        let ms: Option<i64> = row.try_get(i).map_err(|e| bad(&e.to_string()))?;
        ms.map(|ms| DateTime::from_timestamp_millis(ms).ok_or_else(|| bad("instant out of range")))
            .transpose()
    };
    let text = |i: usize| -> TxResult<&str> { row.try_get(i).map_err(|e| bad(&e.to_string())) };
    let state = state_from_text(text(1)?).ok_or_else(|| bad("state unknown"))?;
    let attempt: Option<&str> = row.try_get(9).map_err(|e| bad(&e.to_string()))?;
    Ok(crate::store::OpenCallbackRef {
        id: text(0)?,
        state,
        phone: text(2)?,
        queue_id: text(3)?,
        priority: row.try_get(4).map_err(|e| bad(&e.to_string()))?,
        virtual_enqueued_at: get(5)?,
        not_before: get(6)?,
        expires_at: get(7)?,
        slot_start: opt(8)?,
        lease: match (attempt, opt(10)?) {
            (Some(a), Some(until)) => Some((a, until)),
            _ => None,
        },
    })
}

fn count(n: u64) -> usize {
    usize_of(n)
}

#[async_trait]
impl Store for PgStore {
    async fn active_plan(&self) -> StoreResult<Option<PlanRecord>> {
        let rows = self
            .rows(
                "SELECT p.doc FROM meta m JOIN plans p ON p.version = m.value \
                 WHERE m.key = 'active_plan'",
                &[],
            )
            .await?;
        Ok(docs(&rows)?.into_iter().next())
    }

    async fn plan_version(&self, version: u64) -> StoreResult<Option<PlanRecord>> {
        let rows = self
            .rows(
                "SELECT doc FROM plans WHERE version = $1",
                &[&i64_of(version)],
            )
            .await?;
        Ok(docs(&rows)?.into_iter().next())
    }

    async fn apply_plan(
        &self,
        plan: NewPlan,
        expected_version: Option<u64>,
    ) -> StoreResult<AppliedPlan> {
        in_tx!(self, tx => Self::apply_plan_tx(&tx, &plan, expected_version).await?)
    }

    async fn all_plans(&self) -> StoreResult<Vec<PlanRecord>> {
        let rows = self
            .rows("SELECT doc FROM plans ORDER BY version", &[])
            .await?;
        docs(&rows)
    }

    async fn list_plans(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<PlanRecord>> {
        let before = before.map_or(i64::MAX, i64_of);
        let rows = self
            .rows(
                "SELECT doc - 'toml' FROM plans WHERE version < $1 ORDER BY version DESC LIMIT $2",
                &[&before, &limit_of(limit)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let Json(mut v): Json<serde_json::Value> = row
                .try_get(0)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if let Some(o) = v.as_object_mut() {
                o.insert("toml".into(), serde_json::Value::String(String::new()));
            }
            out.push(serde_json::from_value(v).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        }
        Ok(out)
    }

    async fn prune_plan_requests(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        let n = in_tx!(self, tx => exec(&tx, "DELETE FROM plan_requests WHERE at < $1", &[&before]).await?)?;
        Ok(count(n))
    }

    async fn upsert_customer(
        &self,
        customer: Customer,
        audit: AuditEntry,
    ) -> StoreResult<UpsertOutcome> {
        crate::store::check_unique_phones(&customer)?;
        let _order = self.inner.customer_writes.lock().await;
        let (outcome, changed) =
            in_tx!(self, tx => Self::upsert_customer_tx(&tx, &customer, &audit).await?)?;
        self.inner.cache.put_customers(changed);
        Ok(outcome)
    }

    fn customer(&self, id: &CustomerId) -> StoreResult<Option<Customer>> {
        Ok(self.inner.cache.customer(id.as_str()))
    }

    async fn all_customers(&self) -> StoreResult<Vec<Customer>> {
        let rows = self
            .rows("SELECT doc FROM customers ORDER BY id", &[])
            .await?;
        docs(&rows)
    }

    fn customer_by_phone(&self, e164: &str) -> StoreResult<Option<Customer>> {
        Ok(self.inner.cache.customer_by_phone(e164))
    }

    async fn delete_customer(&self, id: &CustomerId, audit: AuditEntry) -> StoreResult<bool> {
        let _order = self.inner.customer_writes.lock().await;
        let key = id.as_str();
        let deleted = in_tx!(self, tx => {
            let n = exec(&tx, "DELETE FROM customers WHERE id = $1", &[&key]).await?;
            if n > 0 {
                audit_tx(&tx, audit.clone()).await?;
            }
            n > 0
        })?;
        if deleted {
            self.inner.cache.remove_customer(key);
        }
        Ok(deleted)
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditEntry> {
        in_tx!(self, tx => audit_tx(&tx, entry.clone()).await?)
    }

    async fn list_audit(&self, from: u64, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let rows = self
            .rows(
                "SELECT doc FROM audit WHERE seq >= $1 ORDER BY seq LIMIT $2",
                &[&i64_of(from), &limit_of(limit)],
            )
            .await?;
        docs(&rows)
    }

    async fn record_contact(&self, contact: ContactRecord) -> StoreResult<()> {
        self.record(contact, None).await
    }

    async fn record_call(&self, contact: ContactRecord, target_secs: f64) -> StoreResult<()> {
        self.record(contact, Some(target_secs)).await
    }

    async fn add_kpi(
        &self,
        queue_id: String,
        at: DateTime<Utc>,
        delta: KpiCounters,
    ) -> StoreResult<()> {
        in_tx!(self, tx => add_kpi_tx(&tx, &queue_id, bucket_start(at), &delta).await?)
    }

    async fn submit_survey(
        &self,
        call_id: String,
        survey: Survey,
        at: DateTime<Utc>,
    ) -> StoreResult<SurveyOutcome> {
        in_tx!(self, tx => {
            let contact = query(&tx, "SELECT doc FROM contacts WHERE call_id = $1", &[&call_id])
                .await?;
            match contact.first() {
                None => SurveyOutcome::UnknownContact,
                Some(row) => {
                    let contact: ContactRecord = doc(row, 0)?;
                    let n = exec(
                        &tx,
                        "INSERT INTO survey_marks (call_id, at) VALUES ($1, $2) \
                         ON CONFLICT (call_id) DO NOTHING",
                        &[&call_id, &at],
                    )
                    .await?;
                    if n == 0 {
                        SurveyOutcome::AlreadyTaken
                    } else {
                        add_kpi_tx(
                            &tx,
                            &contact.queue_id,
                            bucket_start(contact.enqueued_at),
                            &survey_delta(&survey),
                        )
                        .await?;
                        SurveyOutcome::Recorded
                    }
                }
            }
        })
    }

    async fn kpi_buckets(
        &self,
        queue_id: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<KpiBucket>> {
        let rows = self
            .rows(
                "SELECT queue_id, start, counters FROM kpi_deltas \
                 WHERE start >= $1 AND start < $2 AND ($3::text IS NULL OR queue_id = $3)",
                &[&from, &to, &queue_id],
            )
            .await?;
        let mut sums: std::collections::BTreeMap<(String, DateTime<Utc>), KpiCounters> =
            Default::default();
        for row in &rows {
            let counters: KpiCounters = doc(row, 2).map_err(TxError::into_store)?;
            sums.entry((row.get(0), row.get(1)))
                .or_default()
                .add(&counters);
        }
        Ok(sums
            .into_iter()
            .map(|((queue_id, start), counters)| KpiBucket {
                queue_id,
                start,
                counters,
            })
            .collect())
    }

    fn recent_contacts(
        &self,
        customer_id: Option<&str>,
        caller: Option<&str>,
        since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<ContactRecord>> {
        Ok(self
            .inner
            .cache
            .recent_contacts(customer_id, caller, since, limit))
    }

    async fn contacts_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<ContactRecord>> {
        let rows = self
            .rows(
                "SELECT doc FROM contacts WHERE enqueued_at >= $1 \
                 ORDER BY enqueued_at DESC, call_id DESC LIMIT $2",
                &[&since, &limit_of(limit)],
            )
            .await?;
        let mut out: Vec<ContactRecord> = docs(&rows)?;
        // The column holds microseconds; the documents' own times decide.
        out.retain(|c| c.enqueued_at >= since);
        Ok(out)
    }

    async fn prune_contacts(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        let n = in_tx!(self, tx => {
            let n = exec(&tx, "DELETE FROM contacts WHERE updated_at < $1", &[&before]).await?;
            exec(&tx, "DELETE FROM answered_marks WHERE enqueued_at < $1", &[&before]).await?;
            // A survey mark lives as long as its contact: while the contact exists, a
            // second survey stays refused.
            exec(
                &tx,
                "DELETE FROM survey_marks s WHERE s.at < $1 \
                 AND NOT EXISTS (SELECT 1 FROM contacts c WHERE c.call_id = s.call_id)",
                &[&before],
            )
            .await?;
            n
        })?;
        self.inner.cache.prune_contacts(before);
        Ok(count(n))
    }

    async fn create_callback(
        &self,
        callback: Callback,
        request: Option<RequestKey>,
    ) -> StoreResult<CallbackCreate> {
        self.create(callback, request).await
    }

    async fn update_callback(&self, callback: Callback) -> StoreResult<()> {
        self.update(callback, None).await
    }

    async fn settle_callback(&self, callback: Callback, attempt_id: String) -> StoreResult<()> {
        self.update(callback, Some(attempt_id)).await
    }

    async fn settled_attempt(&self, attempt_id: &str) -> StoreResult<Option<String>> {
        let rows = self
            .rows(
                "SELECT callback_id FROM settled_attempts WHERE attempt_id = $1",
                &[&attempt_id],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn callback(&self, id: &str) -> StoreResult<Option<Callback>> {
        let rows = self
            .rows("SELECT doc FROM callbacks WHERE id = $1", &[&id])
            .await?;
        Ok(docs(&rows)?.into_iter().next())
    }

    async fn requested_callback(&self, request: &RequestKey) -> StoreResult<Option<Callback>> {
        self.requested(request).await
    }

    async fn open_callbacks(&self) -> StoreResult<Vec<Callback>> {
        let rows = self
            .rows("SELECT doc FROM callbacks WHERE is_open ORDER BY id", &[])
            .await?;
        docs::<Callback>(&rows)
    }

    async fn scan_open_callbacks(
        &self,
        visit: &mut crate::store::OpenVisitor<'_>,
    ) -> StoreResult<u64> {
        use futures_util::TryStreamExt;
        let client = self.client().await.map_err(TxError::into_store)?;
        let stmt = client
            .prepare_cached(
                "SELECT id, state, phone, queue_id, priority, virtual_enqueued_ms, \
                 not_before_ms, expires_ms, slot_start_ms, attempt_id, lease_until_ms \
                 FROM callbacks WHERE is_open",
            )
            .await
            .map_err(pg_err)?;
        let none: [&(dyn tokio_postgres::types::ToSql + Sync); 0] = [];
        let rows = client.query_raw(&stmt, none).await.map_err(pg_err)?;
        futures_util::pin_mut!(rows);
        let mut n = 0;
        while let Some(row) = rows.try_next().await.map_err(pg_err)? {
            visit(open_ref(&row).map_err(TxError::into_store)?);
            n += 1;
        }
        Ok(n)
    }

    async fn open_callbacks_estimate(&self) -> StoreResult<Option<u64>> {
        // `reltuples` is -1 until the index's first vacuum or analyze, and the index
        // is missing only on a database this build did not migrate.
        let rows = self
            .rows(
                "SELECT reltuples::float8 FROM pg_class \
                 WHERE oid = to_regclass('callbacks_open')",
                &[],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let tuples: f64 = row
            .try_get(0)
            .map_err(|e| StoreError::Corrupt(format!("pg_class.reltuples: {e}")))?;
        // A float of whole rows: rounding and the cast saturate, a negative is "unknown".
        Ok((tuples >= 0.0).then(|| tuples.round() as u64))
    }

    async fn list_callbacks(
        &self,
        filter: &CallbackFilter,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Callback>> {
        let state = filter.state.map(state_text);
        let rows = self
            .rows(
                "SELECT doc FROM callbacks WHERE ($1::text IS NULL OR id > $1) \
                 AND ($2::text IS NULL OR queue_id = $2) AND ($3::text IS NULL OR state = $3) \
                 AND ($4::text IS NULL OR phone = $4) AND ($5::text IS NULL OR created_by = $5) \
                 ORDER BY id LIMIT $6",
                &[
                    &after,
                    &filter.queue_id,
                    &state,
                    &filter.phone,
                    &filter.created_by,
                    &limit_of(limit),
                ],
            )
            .await?;
        docs(&rows)
    }

    async fn prune_callback_requests(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        let n = in_tx!(self, tx => {
            exec(&tx, "DELETE FROM callback_requests WHERE at < $1", &[&before]).await?
                + exec(&tx, "DELETE FROM settled_attempts WHERE at < $1", &[&before]).await?
        })?;
        Ok(count(n))
    }

    async fn check_callback_indexes(&self) -> StoreResult<Vec<String>> {
        // The dedupe index is a unique constraint and the due order a query, so only
        // the denormalized columns can disagree with the documents.
        let rows = self
            .rows(
                "SELECT phone, queue_id, state, is_open, version, doc FROM callbacks",
                &[],
            )
            .await?;
        let mut problems = Vec::new();
        for row in &rows {
            let c: Callback = doc(row, 5).map_err(TxError::into_store)?;
            let phone: String = row.get(0);
            let queue: String = row.get(1);
            let state: String = row.get(2);
            let open: bool = row.get(3);
            let version: i64 = row.get(4);
            if phone != c.phone
                || queue != c.queue_id
                || state != state_text(c.state)
                || open != c.state.is_open()
                || u64_of(version) != c.version
            {
                problems.push(format!(
                    "callback {}: its columns disagree with its record",
                    c.id
                ));
            }
        }
        Ok(problems)
    }

    async fn import(&self, import: StoreImport) -> StoreResult<RecordCounts> {
        import.check()?;
        let _order = self.inner.customer_writes.lock().await;
        in_tx!(self, tx => Self::import_tx(&tx, &import).await?)?;
        self.inner.cache.put_customers(import.customers.clone());
        Ok(import.counts())
    }

    async fn flush(&self) -> StoreResult<()> {
        // Every acknowledged write was committed before it was acknowledged; a create
        // whose caller gave up is committed or refused once it is answered.
        if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        self.inner.unanswered.settled().await;
        Ok(())
    }

    async fn fold_kpi_deltas(&self) -> StoreResult<u64> {
        self.fold_kpi().await
    }

    fn keeps_warm_image(&self) -> bool {
        true
    }

    async fn save_warm_image(&self, image: Vec<u8>) -> StoreResult<()> {
        self.save_image(&image).await
    }

    async fn take_warm_image(&self) -> StoreResult<Option<Vec<u8>>> {
        self.take_image().await
    }

    async fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.pool.close();
    }
}
