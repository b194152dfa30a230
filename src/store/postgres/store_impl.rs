//! [`Store`] for [`PgStore`]: each write is one transaction (see the module docs).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

use super::{in_tx, pg_err, PgStore, TxError};
use crate::domain::audit::AuditEntry;
use crate::domain::callback::{Callback, CallbackState};
use crate::domain::contact::ContactRecord;
use crate::domain::{Customer, CustomerId};
use crate::metrics::kpi::{
    bucket_start, callback_delta, contact_delta, is_answered, survey_delta, KpiCounters, Survey,
    FCR_DAYS,
};
use crate::store::{
    content_hash, note_transition, AppliedPlan, CallbackCreate, CallbackFilter, KpiBucket, NewPlan,
    PlanRecord, RecordCounts, RequestKey, Store, StoreError, StoreImport, StoreResult,
    SurveyOutcome, UpsertOutcome,
};

type TxResult<T> = Result<T, TxError>;

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn state_text(s: CallbackState) -> String {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{s:?}"),
    }
}

fn doc<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> TxResult<T> {
    let Json(v): Json<T> = row
        .try_get(idx)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(v)
}

async fn query(tx: &Transaction<'_>, sql: &str, p: &[&(dyn ToSql + Sync)]) -> TxResult<Vec<Row>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, p).await?)
}

async fn exec(tx: &Transaction<'_>, sql: &str, p: &[&(dyn ToSql + Sync)]) -> TxResult<u64> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, p).await?)
}

/// Appends an audit entry: the seq comes from a counter row updated in the same
/// transaction, so entries are numbered in commit order without gaps.
async fn audit_tx(tx: &Transaction<'_>, mut entry: AuditEntry) -> TxResult<AuditEntry> {
    let rows = query(
        tx,
        "UPDATE meta SET value = value + 1 WHERE key = 'audit_seq' RETURNING value",
        &[],
    )
    .await?;
    let seq: i64 = rows
        .first()
        .map(|r| r.get(0))
        .ok_or_else(|| StoreError::Corrupt("meta has no audit_seq".into()))?;
    entry.seq = u64_of(seq);
    exec(
        tx,
        "INSERT INTO audit (seq, doc) VALUES ($1, $2)",
        &[&seq, &Json(&entry)],
    )
    .await?;
    Ok(entry)
}

async fn add_kpi_tx(
    tx: &Transaction<'_>,
    queue_id: &str,
    start: DateTime<Utc>,
    delta: &KpiCounters,
) -> TxResult<()> {
    if delta.is_zero() {
        return Ok(());
    }
    exec(
        tx,
        "INSERT INTO kpi_deltas (queue_id, start, counters) VALUES ($1, $2, $3)",
        &[&queue_id, &start, &Json(delta)],
    )
    .await?;
    Ok(())
}

async fn callback_tx(tx: &Transaction<'_>, id: &str, lock: bool) -> TxResult<Option<Callback>> {
    let sql = if lock {
        "SELECT doc FROM callbacks WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT doc FROM callbacks WHERE id = $1"
    };
    match query(tx, sql, &[&id]).await?.first() {
        Some(r) => Ok(Some(doc(r, 0)?)),
        None => Ok(None),
    }
}

async fn put_callback_tx(tx: &Transaction<'_>, c: &Callback) -> TxResult<()> {
    exec(
        tx,
        "INSERT INTO callbacks (id, phone, queue_id, state, is_open, version, created_by, doc) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (id) DO UPDATE SET phone = $2, queue_id = $3, state = $4, is_open = $5, \
         version = $6, created_by = $7, doc = $8",
        &[
            &c.id,
            &c.phone,
            &c.queue_id,
            &state_text(c.state),
            &c.state.is_open(),
            &i64_of(c.version),
            &c.created_by,
            &Json(c),
        ],
    )
    .await?;
    Ok(())
}

/// The request key's first answer, or a refusal when its body differs.
async fn requested_tx(tx: &Transaction<'_>, r: &RequestKey) -> TxResult<Option<Callback>> {
    let rows = query(
        tx,
        "SELECT callback_id, fingerprint FROM callback_requests \
         WHERE principal = $1 AND request_id = $2",
        &[&r.principal, &r.request_id],
    )
    .await?;
    let Some(row) = rows.first() else {
        return Ok(None);
    };
    let callback_id: String = row.get(0);
    let fingerprint: String = row.get(1);
    if fingerprint != r.fingerprint {
        return Err(StoreError::RequestIdReused {
            request_id: r.request_id.clone(),
        }
        .into());
    }
    match callback_tx(tx, &callback_id, false).await? {
        Some(c) => Ok(Some(c)),
        None => Err(StoreError::Corrupt(format!(
            "request {} names missing callback {callback_id}",
            r.request_id
        ))
        .into()),
    }
}

impl PgStore {
    async fn create_callback_tx(
        tx: &Transaction<'_>,
        cb: &Callback,
        request: Option<&RequestKey>,
    ) -> TxResult<CallbackCreate> {
        if let Some(r) = request {
            if let Some(c) = requested_tx(tx, r).await? {
                return Ok(CallbackCreate::Replayed(c));
            }
        }
        let open = query(
            tx,
            "SELECT doc FROM callbacks WHERE phone = $1 AND queue_id = $2 AND is_open",
            &[&cb.phone, &cb.queue_id],
        )
        .await?;
        let outcome = match open.first() {
            Some(row) => CallbackCreate::Existing(doc(row, 0)?),
            None => {
                // A concurrent twin makes this insert fail on the one-open index; the
                // transaction is then run again and finds it.
                put_callback_tx(tx, cb).await?;
                add_kpi_tx(
                    tx,
                    &cb.queue_id,
                    bucket_start(cb.created_at),
                    &callback_delta(None, cb),
                )
                .await?;
                CallbackCreate::Created(cb.clone())
            }
        };
        if let Some(r) = request {
            let id = match &outcome {
                CallbackCreate::Created(c) | CallbackCreate::Existing(c) => &c.id,
                CallbackCreate::Replayed(c) => &c.id,
            };
            exec(
                tx,
                "INSERT INTO callback_requests (principal, request_id, callback_id, fingerprint, at) \
                 VALUES ($1, $2, $3, $4, $5)",
                &[&r.principal, &r.request_id, id, &r.fingerprint, &cb.created_at],
            )
            .await?;
        }
        Ok(outcome)
    }

    async fn update_callback_tx(
        tx: &Transaction<'_>,
        cb: &Callback,
        settled: Option<&str>,
    ) -> TxResult<Option<Callback>> {
        let old = callback_tx(tx, &cb.id, true).await?;
        match &old {
            Some(o) if o.version + 1 == cb.version => {}
            _ => return Err(StoreError::Stale { id: cb.id.clone() }.into()),
        }
        put_callback_tx(tx, cb).await?;
        if let Some(attempt) = settled {
            exec(
                tx,
                "INSERT INTO settled_attempts (attempt_id, callback_id, at) VALUES ($1, $2, $3) \
                 ON CONFLICT (attempt_id) DO UPDATE SET callback_id = $2, at = $3",
                &[&attempt, &cb.id, &cb.updated_at],
            )
            .await?;
        }
        add_kpi_tx(
            tx,
            &cb.queue_id,
            bucket_start(cb.created_at),
            &callback_delta(old.as_ref(), cb),
        )
        .await?;
        Ok(old)
    }

    async fn update(&self, cb: Callback, settled: Option<String>) -> StoreResult<()> {
        let old =
            in_tx!(self, tx => Self::update_callback_tx(&tx, &cb, settled.as_deref()).await?)?;
        note_transition(old.as_ref(), &cb);
        Ok(())
    }

    async fn upsert_customer_tx(
        tx: &Transaction<'_>,
        customer: &Customer,
        audit: &AuditEntry,
    ) -> TxResult<(UpsertOutcome, Vec<Customer>)> {
        let id = customer.id.as_str();
        let existing = query(
            tx,
            "SELECT doc FROM customers WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?;
        let created = existing.is_empty();
        // Numbers listed here leave their other owners (the CRM's latest word wins).
        let owners = query(
            tx,
            "SELECT c.doc FROM customer_phones p JOIN customers c ON c.id = p.customer_id \
             WHERE p.phone = ANY($1) AND p.customer_id <> $2 FOR UPDATE OF c",
            &[&customer.phones, &id],
        )
        .await?;
        let mut changed = Vec::new();
        for row in &owners {
            let mut other: Customer = doc(row, 0)?;
            other.phones.retain(|p| !customer.phones.contains(p));
            exec(
                tx,
                "UPDATE customers SET doc = $2 WHERE id = $1",
                &[&other.id.as_str(), &Json(&other)],
            )
            .await?;
            changed.push(other);
        }
        exec(
            tx,
            "INSERT INTO customers (id, doc) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET doc = $2",
            &[&id, &Json(customer)],
        )
        .await?;
        exec(
            tx,
            "DELETE FROM customer_phones WHERE customer_id = $1 AND NOT (phone = ANY($2))",
            &[&id, &customer.phones],
        )
        .await?;
        exec(
            tx,
            "INSERT INTO customer_phones (phone, customer_id) SELECT unnest($1::text[]), $2 \
             ON CONFLICT (phone) DO UPDATE SET customer_id = $2",
            &[&customer.phones, &id],
        )
        .await?;
        let mut entry = audit.clone();
        let what = if created { "created" } else { "updated" };
        entry.detail = if entry.detail.is_empty() {
            what.to_owned()
        } else {
            format!("{what}: {}", entry.detail)
        };
        audit_tx(tx, entry).await?;
        changed.push(customer.clone());
        Ok((
            UpsertOutcome {
                customer: customer.clone(),
                created,
            },
            changed,
        ))
    }

    async fn apply_plan_tx(
        tx: &Transaction<'_>,
        plan: &NewPlan,
        expected_version: Option<u64>,
    ) -> TxResult<AppliedPlan> {
        // The active-plan row serializes plan changes.
        let active: i64 = query(
            tx,
            "SELECT value FROM meta WHERE key = 'active_plan' FOR UPDATE",
            &[],
        )
        .await?
        .first()
        .map(|r| r.get(0))
        .ok_or_else(|| StoreError::Corrupt("meta has no active_plan".into()))?;
        if let Some(id) = &plan.request_id {
            let seen = query(
                tx,
                "SELECT p.doc FROM plan_requests r JOIN plans p ON p.version = r.version \
                 WHERE r.request_id = $1",
                &[id],
            )
            .await?;
            if let Some(row) = seen.first() {
                return Ok(AppliedPlan {
                    record: doc(row, 0)?,
                    replayed: true,
                });
            }
        }
        let active = u64_of(active);
        if let Some(expected) = expected_version {
            if expected != active {
                return Err(StoreError::VersionConflict {
                    expected,
                    actual: active,
                }
                .into());
            }
        }
        // Versions only grow, also after a rollback made an old one active.
        let max: i64 = query(tx, "SELECT coalesce(max(version), 0) FROM plans", &[])
            .await?
            .first()
            .map(|r| r.get(0))
            .unwrap_or(0);
        let next = u64_of(max).max(active) + 1;
        let record = PlanRecord {
            version: next,
            author: plan.author.clone(),
            comment: plan.comment.clone(),
            created_at: plan.created_at,
            content_hash: content_hash(&plan.toml),
            toml: plan.toml.clone(),
        };
        let v = i64_of(next);
        exec(
            tx,
            "INSERT INTO plans (version, doc) VALUES ($1, $2)",
            &[&v, &Json(&record)],
        )
        .await?;
        exec(
            tx,
            "UPDATE meta SET value = $1 WHERE key = 'active_plan'",
            &[&v],
        )
        .await?;
        if let Some(id) = &plan.request_id {
            exec(
                tx,
                "INSERT INTO plan_requests (request_id, version, at) VALUES ($1, $2, $3)",
                &[id, &v, &plan.created_at],
            )
            .await?;
        }
        let mut entry = plan.audit.clone();
        entry.target = format!("plan v{next}");
        audit_tx(tx, entry).await?;
        Ok(AppliedPlan {
            record,
            replayed: false,
        })
    }

    /// The contact, and with `target_secs` its KPI counts and first-contact marks (see
    /// `Store::record_call`). Calls of the same customer or number are serialized by
    /// advisory locks, so two of their calls recorded at once see each other.
    async fn record_call_tx(
        tx: &Transaction<'_>,
        contact: &ContactRecord,
        target_secs: Option<f64>,
    ) -> TxResult<()> {
        if target_secs.is_some() {
            let mut parties: Vec<String> = Vec::new();
            parties.extend(contact.customer_id.as_deref().map(|c| format!("c:{c}")));
            parties.extend(contact.caller.as_deref().map(|p| format!("p:{p}")));
            parties.sort();
            for p in &parties {
                exec(tx, "SELECT pg_advisory_xact_lock(hashtext($1))", &[p]).await?;
            }
        }
        let old: Option<ContactRecord> = match query(
            tx,
            "SELECT doc FROM contacts WHERE call_id = $1 FOR UPDATE",
            &[&contact.call_id],
        )
        .await?
        .first()
        {
            Some(r) => Some(doc(r, 0)?),
            None => None,
        };
        exec(
            tx,
            "INSERT INTO contacts (call_id, customer_id, caller, enqueued_at, updated_at, doc) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (call_id) DO UPDATE SET \
             customer_id = $2, caller = $3, enqueued_at = $4, updated_at = $5, doc = $6",
            &[
                &contact.call_id,
                &contact.customer_id,
                &contact.caller,
                &contact.enqueued_at,
                &contact.updated_at,
                &Json(contact),
            ],
        )
        .await?;
        let Some(target) = target_secs else {
            return Ok(());
        };
        let window = chrono::Duration::days(FCR_DAYS);
        let at = contact.enqueued_at;
        let mut delta = contact_delta(old.as_ref(), contact, target);
        let bucket = bucket_start(at);
        // Other calls of the same customer or number: (entered) within the window.
        let party_sql = "SELECT call_id, enqueued_at FROM contacts \
             WHERE ((customer_id IS NOT NULL AND customer_id = $1) \
                 OR (caller IS NOT NULL AND caller = $2)) \
             AND call_id <> $3 AND enqueued_at >= $4 AND enqueued_at <= $5";
        if is_answered(contact) {
            let later = query(
                tx,
                party_sql,
                &[
                    &contact.customer_id,
                    &contact.caller,
                    &contact.call_id,
                    &at,
                    &(at + window),
                ],
            )
            .await?;
            let repeated = later.iter().any(|r| r.get::<_, DateTime<Utc>>(1) > at);
            let inserted = exec(
                tx,
                "INSERT INTO answered_marks (call_id, queue_id, bucket, enqueued_at, repeated) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_id) DO NOTHING",
                &[&contact.call_id, &contact.queue_id, &bucket, &at, &repeated],
            )
            .await?;
            if inserted == 1 {
                delta.answered_contacts += 1;
                if repeated {
                    delta.fcr_repeated += 1;
                }
            }
        }
        add_kpi_tx(tx, &contact.queue_id, bucket, &delta).await?;
        // This call repeats every answered call of the same party in the 7 days before
        // it: those were not resolved at first contact.
        let marked = query(
            tx,
            "UPDATE answered_marks SET repeated = true WHERE NOT repeated \
             AND enqueued_at >= $4 AND enqueued_at < $5 AND call_id IN (\
                 SELECT call_id FROM contacts \
                 WHERE ((customer_id IS NOT NULL AND customer_id = $1) \
                     OR (caller IS NOT NULL AND caller = $2)) \
                 AND call_id <> $3 AND enqueued_at >= $4 AND enqueued_at < $5) \
             RETURNING queue_id, bucket",
            &[
                &contact.customer_id,
                &contact.caller,
                &contact.call_id,
                &(at - window),
                &at,
            ],
        )
        .await?;
        for row in marked {
            let queue: String = row.get(0);
            let bucket: DateTime<Utc> = row.get(1);
            let d = KpiCounters {
                fcr_repeated: 1,
                ..Default::default()
            };
            add_kpi_tx(tx, &queue, bucket, &d).await?;
        }
        Ok(())
    }

    async fn record(&self, contact: ContactRecord, target: Option<f64>) -> StoreResult<()> {
        in_tx!(self, tx => Self::record_call_tx(&tx, &contact, target).await?)?;
        self.inner.cache.put_contact(contact);
        Ok(())
    }

    async fn import_tx(tx: &Transaction<'_>, import: &StoreImport) -> TxResult<()> {
        let mut held = Vec::new();
        for (table, what) in [
            ("plans", "plans"),
            ("customers", "customers"),
            ("callbacks", "callbacks"),
        ] {
            let sql = format!("SELECT EXISTS (SELECT 1 FROM {table})");
            if query(tx, &sql, &[])
                .await?
                .first()
                .is_some_and(|r| r.get(0))
            {
                held.push(what);
            }
        }
        if !held.is_empty() {
            return Err(StoreError::NotEmpty {
                what: held.join(", "),
            }
            .into());
        }
        for p in &import.plans {
            exec(
                tx,
                "INSERT INTO plans (version, doc) VALUES ($1, $2)",
                &[&i64_of(p.version), &Json(p)],
            )
            .await?;
        }
        if let Some(active) = import.active_version {
            exec(
                tx,
                "UPDATE meta SET value = $1 WHERE key = 'active_plan'",
                &[&i64_of(active)],
            )
            .await?;
        }
        for c in &import.customers {
            exec(
                tx,
                "INSERT INTO customers (id, doc) VALUES ($1, $2)",
                &[&c.id.as_str(), &Json(c)],
            )
            .await?;
            exec(
                tx,
                "INSERT INTO customer_phones (phone, customer_id) SELECT unnest($1::text[]), $2",
                &[&c.phones, &c.id.as_str()],
            )
            .await?;
        }
        for c in &import.callbacks {
            put_callback_tx(tx, c).await?;
        }
        Ok(())
    }

    /// A read of one statement on a pooled connection.
    async fn rows(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self.client().await.map_err(TxError::into_store)?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_err)?;
        client.query(&stmt, p).await.map_err(pg_err)
    }
}

fn docs<T: serde::de::DeserializeOwned>(rows: &[Row]) -> StoreResult<Vec<T>> {
    rows.iter()
        .map(|r| doc(r, 0).map_err(TxError::into_store))
        .collect()
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
        let mut seen = std::collections::HashSet::new();
        for p in &customer.phones {
            if !seen.insert(p) {
                return Err(StoreError::DuplicatePhone { phone: p.clone() });
            }
        }
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
        let outcome =
            in_tx!(self, tx => Self::create_callback_tx(&tx, &callback, request.as_ref()).await?)?;
        if let CallbackCreate::Created(c) = &outcome {
            note_transition(None, c);
        }
        Ok(outcome)
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
        let mut client = self.client().await.map_err(TxError::into_store)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        let found = requested_tx(&tx, request)
            .await
            .map_err(TxError::into_store)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(found)
    }

    async fn open_callbacks(&self) -> StoreResult<Vec<Box<Callback>>> {
        let rows = self
            .rows("SELECT doc FROM callbacks WHERE is_open ORDER BY id", &[])
            .await?;
        Ok(docs::<Callback>(&rows)?.into_iter().map(Box::new).collect())
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
        // Every acknowledged write was committed before it was acknowledged.
        if self.inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    async fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.pool.close();
    }
}
