//! The statements of each change, run inside the transaction `in_tx!` gives them.

use chrono::{DateTime, Utc};
use deadpool_postgres::Transaction;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

use super::{in_tx, pg_err, PgStore, TxError};
use crate::domain::audit::AuditEntry;
use crate::domain::callback::{Callback, CallbackState};
use crate::domain::contact::ContactRecord;
use crate::domain::Customer;
use crate::metrics::kpi::{bucket_start, contact_delta, is_answered, KpiCounters, FCR_DAYS};
use crate::store::{
    content_hash, AppliedPlan, NewPlan, PlanRecord, StoreError, StoreImport, StoreResult,
    UpsertOutcome,
};

pub(super) type TxResult<T> = Result<T, TxError>;

pub(super) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn usize_of(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

pub(super) fn limit_of(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

pub(super) fn state_text(s: CallbackState) -> String {
    match serde_json::to_value(s) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{s:?}"),
    }
}

/// The inverse of [`state_text`].
pub(super) fn state_from_text(t: &str) -> Option<CallbackState> {
    [
        CallbackState::Pending,
        CallbackState::Dispatched,
        CallbackState::Completed,
        CallbackState::Failed,
        CallbackState::Cancelled,
        CallbackState::Expired,
    ]
    .into_iter()
    .find(|s| crate::store::state_name(*s) == t)
}

pub(super) fn doc<T: serde::de::DeserializeOwned>(row: &Row, idx: usize) -> TxResult<T> {
    let Json(v): Json<T> = row
        .try_get(idx)
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(v)
}

pub(super) async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> TxResult<Vec<Row>> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, p).await?)
}

pub(super) async fn exec(
    tx: &Transaction<'_>,
    sql: &str,
    p: &[&(dyn ToSql + Sync)],
) -> TxResult<u64> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, p).await?)
}

/// Appends an audit entry: the seq comes from a counter row updated in the same
/// transaction, so entries are numbered in commit order without gaps.
pub(super) async fn audit_tx(tx: &Transaction<'_>, mut entry: AuditEntry) -> TxResult<AuditEntry> {
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

pub(super) async fn add_kpi_tx(
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
        &[&queue_id, &start, &Json(super::kpi::delta_json(delta))],
    )
    .await?;
    Ok(())
}

pub(super) async fn put_callback_tx(tx: &Transaction<'_>, c: &Callback) -> TxResult<()> {
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

impl PgStore {
    pub(super) async fn upsert_customer_tx(
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

    pub(super) async fn apply_plan_tx(
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
    pub(super) async fn record_call_tx(
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

    pub(super) async fn record(
        &self,
        contact: ContactRecord,
        target: Option<f64>,
    ) -> StoreResult<()> {
        in_tx!(self, tx => Self::record_call_tx(&tx, &contact, target).await?)?;
        self.inner.cache.put_contact(contact);
        Ok(())
    }

    pub(super) async fn import_tx(tx: &Transaction<'_>, import: &StoreImport) -> TxResult<()> {
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
    pub(super) async fn rows(&self, sql: &str, p: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let client = self.client().await.map_err(TxError::into_store)?;
        let stmt = client.prepare_cached(sql).await.map_err(pg_err)?;
        client.query(&stmt, p).await.map_err(pg_err)
    }
}
