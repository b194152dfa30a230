//! The behaviour every [`Store`] backend must show, written once and run against each
//! (`sled` and `postgres` below): plans and their idempotency keys, customers and the
//! phone index, the audit log written with each change, contacts and first-contact
//! resolution, KPI intervals and surveys, callback dedupe, request keys, stale writes,
//! settled attempts, pruning, import refusals, and that what was acknowledged is there
//! after a reopen. A new backend gets one more `backend_tests!` line.
//!
//! PostgreSQL runs come from `store::pgtest` (a private cluster, or
//! `HOLDLESS_TEST_POSTGRES`).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::*;
use crate::domain::audit::{Actor, AuditAction, AuditEntry};
use crate::domain::callback::{Callback, CallbackState};
use crate::domain::contact::{ContactOutcome, ContactRecord};
use crate::domain::{Customer, CustomerId};
use crate::metrics::kpi::{is_answered, KpiCounters, Survey, FCR_DAYS};

/// Where a backend keeps a store: made fresh for each test, opened (and after a
/// `close`, opened again) as often as the test wants.
#[async_trait]
pub(super) trait Backend: Send + Sync + Sized {
    async fn fresh() -> Self;
    async fn open(&self) -> Arc<dyn Store>;
}

pub(super) struct SledBackend(tempfile::TempDir);

#[async_trait]
impl Backend for SledBackend {
    async fn fresh() -> Self {
        SledBackend(tempfile::tempdir().unwrap())
    }

    /// A store closed and dropped a moment ago may still hold sled's file lock: sled's
    /// own I/O threads let go of it after the last handle drops. So a reopen in the
    /// same process waits for the lock (bounded) instead of failing with `InUse`.
    async fn open(&self) -> Arc<dyn Store> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match SledStore::open(self.0.path()) {
                Err(crate::store::StoreError::InUse { .. })
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                opened => return Arc::new(opened.unwrap()),
            }
        }
    }
}

pub(super) struct PostgresBackend(PgOptions);

#[async_trait]
impl Backend for PostgresBackend {
    async fn fresh() -> Self {
        PostgresBackend(PgOptions {
            url: pgtest::test_postgres().await,
            pool_size: 8,
            synchronous_commit: "on".into(),
            ca_file: None,
        })
    }

    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(PgStore::open(&self.0).await.unwrap())
    }
}

/// One `#[tokio::test]` per behaviour for backend `$backend`, in module `$module`.
macro_rules! backend_tests {
    ($module:ident, $backend:ty, [$($name:ident),* $(,)?]) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name::<$backend>().await
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($name:ident),* $(,)?) => {
        backend_tests!(sled, super::SledBackend, [$($name),*]);
        backend_tests!(postgres, super::PostgresBackend, [$($name),*]);
    };
}

all_backends!(
    a_stale_callback_change_is_refused_and_changes_nothing,
    callbacks_list_in_id_order_with_filters_and_pages,
    kpi_counts_add_up_per_queue_and_interval,
    contacts_since_returns_the_newest_first,
    writes_after_close_are_refused,
    plans_get_increasing_versions_and_stale_editors_conflict,
    a_phone_number_moves_to_the_customer_who_lists_it_last,
    concurrent_twin_requests_in_one_group_create_one_callback,
    recent_contacts_by_customer_or_number_newest_first_and_pruned,
    numbers_written_before_or_after_a_restart_are_found,
    a_frequent_callers_newest_contacts_come_from_both_parties,
    acknowledged_writes_survive_reopen,
    a_repeated_plan_request_id_returns_the_first_version_until_pruned,
    audit_entries_are_numbered_in_commit_order_with_the_change,
    request_ids_are_per_principal_and_a_reused_key_with_another_body_is_refused,
    settled_attempts_and_request_ids_are_remembered_until_pruned,
    all_plans_and_all_customers_return_every_record,
    import_restores_versions_phones_and_callback_indexes,
    import_refuses_a_store_that_holds_anything_and_changes_nothing,
    import_refuses_records_that_would_break_the_indexes,
    import_in_batches_writes_every_batch_then_the_plans,
    an_import_whose_batches_fail_leaves_nothing_behind,
    first_contact_resolution_of_frequent_callers_matches_the_definition,
    a_second_call_within_seven_days_spoils_first_contact_resolution_once,
    the_open_scan_gives_the_index_fields_of_open_callbacks_only,
    a_customer_listing_a_number_twice_is_refused_and_changes_nothing,
    a_warm_start_image_is_handed_out_once_and_not_after_a_callback_changed,
    kpi_counts_are_the_same_after_folding_while_others_are_counted,
);

pub(crate) fn customer(id: &str, phones: &[&str]) -> Customer {
    Customer {
        id: CustomerId::new_checked(id.into()),
        display_name: id.to_uppercase(),
        phones: phones.iter().map(|p| p.to_string()).collect(),
        status: "gold".into(),
        language: "en".into(),
        time_zone: None,
        last_agent_id: String::new(),
        preferred_agent_id: String::new(),
        notes: String::new(),
        do_not_call: false,
        updated_at: Utc::now(),
    }
}

pub(crate) fn audit(action: AuditAction) -> AuditEntry {
    Actor::new("tester", "").entry(Utc::now(), action, "", "")
}

fn new_plan(toml: &str) -> NewPlan {
    NewPlan {
        author: "test".into(),
        comment: String::new(),
        created_at: Utc::now(),
        toml: toml.into(),
        request_id: None,
        audit: audit(AuditAction::PlanApply),
    }
}

pub(super) async fn plans_get_increasing_versions_and_stale_editors_conflict<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    assert_eq!(s.active_plan().await.unwrap(), None);
    let v1 = s.apply_plan(new_plan("a"), Some(0)).await.unwrap().record;
    assert_eq!(v1.version, 1);
    let v2 = s.apply_plan(new_plan("b"), Some(1)).await.unwrap().record;
    assert_eq!(v2.version, 2);
    assert_eq!(
        s.apply_plan(new_plan("c"), Some(1)).await,
        Err(StoreError::VersionConflict {
            expected: 1,
            actual: 2
        })
    );
    assert_eq!(s.active_plan().await.unwrap().unwrap().toml, "b");
    assert_eq!(s.plan_version(1).await.unwrap().unwrap().toml, "a");
}

pub(super) async fn a_phone_number_moves_to_the_customer_who_lists_it_last<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    assert!(
        s.upsert_customer(customer("a", &["+441"]), audit(AuditAction::CustomerUpsert))
            .await
            .unwrap()
            .created
    );
    assert!(
        s.upsert_customer(
            customer("b", &["+441", "+442"]),
            audit(AuditAction::CustomerUpsert)
        )
        .await
        .unwrap()
        .created
    );
    let a = s
        .customer(&CustomerId::new_checked("a".into()))
        .unwrap()
        .unwrap();
    assert!(a.phones.is_empty());
    assert_eq!(owner(&*s, "+441").await.as_deref(), Some("b"));
    assert!(
        !s.upsert_customer(customer("b", &["+442"]), audit(AuditAction::CustomerUpsert))
            .await
            .unwrap()
            .created
    );
    assert_eq!(s.customer_by_phone("+441").unwrap(), None);
    assert!(s
        .delete_customer(
            &CustomerId::new_checked("b".into()),
            audit(AuditAction::CustomerDelete)
        )
        .await
        .unwrap());
    assert_eq!(s.customer_by_phone("+442").unwrap(), None);
    assert!(!s
        .delete_customer(
            &CustomerId::new_checked("b".into()),
            audit(AuditAction::CustomerDelete)
        )
        .await
        .unwrap());
}

/// `open` callbacks are open, and the indexes agree with the records.
pub(crate) async fn assert_open_and_consistent(s: &dyn Store, open: usize) {
    assert_eq!(s.open_callbacks().await.unwrap().len(), open);
    assert_consistent(s).await;
}

/// The indexes agree with the records.
pub(crate) async fn assert_consistent(s: &dyn Store) {
    assert_eq!(
        s.check_callback_indexes().await.unwrap(),
        Vec::<String>::new()
    );
}

pub(super) async fn concurrent_twin_requests_in_one_group_create_one_callback<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    // 64 requests for one number and queue, and 8 repeats of one request id, all
    // at once: staged in the same groups, each must still see the ones before it.
    let mut tasks = Vec::new();
    for i in 0..72 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let (phone, rid) = if i < 64 {
                ("+441", None)
            } else {
                ("+442", Some(request_key("web", "req-x")))
            };
            let id = format!("01J{i:023}");
            s.create_callback(open_callback(&id, phone, CallbackState::Pending), rid)
                .await
                .unwrap()
        }));
    }
    let mut created = Vec::new();
    let mut answers = std::collections::HashMap::<String, usize>::new();
    for t in tasks {
        let (c, new) = match t.await.unwrap() {
            CallbackCreate::Created(c) => (c, true),
            CallbackCreate::Existing(c) | CallbackCreate::Replayed(c) => (c, false),
        };
        if new {
            created.push(c.id.clone());
        }
        *answers.entry(c.id).or_default() += 1;
    }
    assert_eq!(created.len(), 2, "one callback per number: {created:?}");
    let mut counts: Vec<usize> = answers.values().copied().collect();
    counts.sort();
    assert_eq!(counts, vec![8, 64]);
    assert_open_and_consistent(&*s, 2).await;
    s.close().await;
}

/// An RFC 3339 instant in UTC.
pub(crate) fn utc(at: &str) -> DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .with_timezone(&Utc)
}

/// The id of the customer `phone` belongs to.
async fn owner(s: &dyn Store, phone: &str) -> Option<String> {
    let c = s.customer_by_phone(phone).unwrap()?;
    Some(c.id.as_str().to_owned())
}

/// The call ids of what `recent_contacts` returns, in its order.
async fn recent_ids(
    s: &dyn Store,
    customer: Option<&str>,
    caller: Option<&str>,
    since: &str,
    limit: usize,
) -> Vec<String> {
    s.recent_contacts(customer, caller, utc(since), limit)
        .unwrap()
        .into_iter()
        .map(|c| c.call_id)
        .collect()
}

pub(crate) fn contact(call: &str, customer: Option<&str>, caller: &str, at: &str) -> ContactRecord {
    let t = utc(at);
    ContactRecord {
        call_id: call.into(),
        customer_id: customer.map(str::to_owned),
        caller: Some(caller.into()),
        queue_id: "general".into(),
        enqueued_at: t,
        updated_at: t,
        outcome: crate::domain::contact::ContactOutcome::Answered,
        agent_id: Some("a1".into()),
        wait_secs: Some(3.0),
        handle_secs: None,
        transfers: 0,
        facts: None,
    }
}

pub(super) async fn recent_contacts_by_customer_or_number_newest_first_and_pruned<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    s.record_contact(contact("old", Some("c1"), "+441", "2026-11-01T10:00:00Z"))
        .await
        .unwrap();
    s.record_contact(contact("a", Some("c1"), "+441", "2026-11-20T10:00:00Z"))
        .await
        .unwrap();
    s.record_contact(contact("b", None, "+441", "2026-11-21T10:00:00Z"))
        .await
        .unwrap();
    s.record_contact(contact("c", Some("c1"), "+442", "2026-11-22T10:00:00Z"))
        .await
        .unwrap();
    s.record_contact(contact("other", Some("c2"), "+443", "2026-11-22T11:00:00Z"))
        .await
        .unwrap();
    // Updating a record replaces it, index included.
    let mut a = contact("a", Some("c1"), "+441", "2026-11-20T10:00:00Z");
    a.outcome = crate::domain::contact::ContactOutcome::Completed;
    s.record_contact(a).await.unwrap();
    let since = "2026-11-18T00:00:00Z";
    let got = recent_ids(&*s, Some("c1"), Some("+441"), since, 10).await;
    assert_eq!(got, vec!["c", "b", "a"]);
    let n = s.prune_contacts(utc(since)).await.unwrap();
    assert_eq!(n, 1);
    let all = s
        .recent_contacts(Some("c1"), None, chrono::DateTime::<Utc>::UNIX_EPOCH, 10)
        .unwrap();
    assert_eq!(all.len(), 2);
}

pub(super) async fn numbers_written_before_or_after_a_restart_are_found<B: Backend>() {
    let b = B::fresh().await;
    let since = utc("2026-11-01T00:00:00Z");
    {
        let s = b.open().await;
        s.upsert_customer(customer("a", &["+441"]), audit(AuditAction::CustomerUpsert))
            .await
            .unwrap();
        s.record_contact(contact("x", None, "+442", "2026-11-20T10:00:00Z"))
            .await
            .unwrap();
        // Found at once, before any restart.
        assert!(s.customer_by_phone("+441").unwrap().is_some());
        assert_eq!(
            recent_ids(&*s, None, Some("+442"), "2026-11-01T00:00:00Z", 5).await,
            ["x"]
        );
        s.close().await;
    }
    // After a restart the filter is built from what the store holds.
    let s = b.open().await;
    assert!(s.customer_by_phone("+441").unwrap().is_some());
    assert_eq!(
        recent_ids(&*s, None, Some("+442"), "2026-11-01T00:00:00Z", 5).await,
        ["x"]
    );
    // Numbers written after the restart too.
    s.upsert_customer(customer("b", &["+443"]), audit(AuditAction::CustomerUpsert))
        .await
        .unwrap();
    s.record_contact(contact("y", None, "+444", "2026-11-21T10:00:00Z"))
        .await
        .unwrap();
    assert_eq!(owner(&*s, "+443").await.as_deref(), Some("b"));
    assert_eq!(
        recent_ids(&*s, None, Some("+444"), "2026-11-01T00:00:00Z", 5).await,
        ["y"]
    );
    // A number never stored is unknown.
    assert!(s.customer_by_phone("+12125550100").unwrap().is_none());
    let none = s.recent_contacts(None, Some("+12125550100"), since, 5);
    assert!(none.unwrap().is_empty());
}

pub(super) async fn a_frequent_callers_newest_contacts_come_from_both_parties<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    // 40 calls from the number (no customer), then 3 older ones as the customer
    // from another number, interleaved in time.
    for i in 0..40 {
        let at = format!("2026-11-20T10:{i:02}:00Z");
        s.record_contact(contact(&format!("n{i:02}"), None, "+441", &at))
            .await
            .unwrap();
    }
    for (i, m) in [(0, 5), (1, 38), (2, 39)] {
        let at = format!("2026-11-20T10:{m:02}:30Z");
        s.record_contact(contact(&format!("c{i}"), Some("c1"), "+449", &at))
            .await
            .unwrap();
    }
    let got = recent_ids(&*s, Some("c1"), Some("+441"), "2026-11-18T00:00:00Z", 4).await;
    assert_eq!(got, vec!["c2", "n39", "c1", "n38"]);
    // Nothing before `since`.
    let got = recent_ids(&*s, None, Some("+441"), "2026-11-20T10:37:00Z", 10).await;
    assert_eq!(got, vec!["n39", "n38", "n37"]);
}

pub(super) async fn acknowledged_writes_survive_reopen<B: Backend>() {
    let b = B::fresh().await;
    {
        let s = b.open().await;
        s.upsert_customer(customer("a", &["+441"]), audit(AuditAction::CustomerUpsert))
            .await
            .unwrap();
        s.apply_plan(new_plan("p"), None).await.unwrap();
        s.close().await;
        assert_eq!(s.flush().await, Err(StoreError::Closed));
    }
    let s = b.open().await;
    assert_eq!(owner(&*s, "+441").await.as_deref(), Some("a"));
    assert_eq!(s.active_plan().await.unwrap().unwrap().toml, "p");
}

pub(super) async fn a_repeated_plan_request_id_returns_the_first_version_until_pruned<
    B: Backend,
>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let mut p = new_plan("a");
    p.request_id = Some("r1".into());
    let first = s.apply_plan(p.clone(), Some(0)).await.unwrap();
    assert!(!first.replayed);
    // A retry with a stale expected version still gets the first answer.
    let again = s.apply_plan(p.clone(), Some(0)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.record, first.record);
    assert_eq!(s.list_plans(None, 10).await.unwrap().len(), 1);
    assert_eq!(s.list_audit(0, 10).await.unwrap().len(), 1);

    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(s.prune_plan_requests(later).await.unwrap(), 1);
    let fresh = s.apply_plan(p, None).await.unwrap();
    assert!(!fresh.replayed);
    assert_eq!(fresh.record.version, 2);
}

pub(super) async fn audit_entries_are_numbered_in_commit_order_with_the_change<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    s.apply_plan(new_plan("a"), None).await.unwrap();
    s.upsert_customer(customer("c", &[]), audit(AuditAction::CustomerUpsert))
        .await
        .unwrap();
    s.upsert_customer(customer("c", &[]), audit(AuditAction::CustomerUpsert))
        .await
        .unwrap();
    let id = CustomerId::new_checked("c".into());
    assert!(s
        .delete_customer(&id, audit(AuditAction::CustomerDelete))
        .await
        .unwrap());
    // Nothing deleted: nothing audited.
    assert!(!s
        .delete_customer(&id, audit(AuditAction::CustomerDelete))
        .await
        .unwrap());
    s.append_audit(audit(AuditAction::CallbackCancel))
        .await
        .unwrap();
    let log = s.list_audit(0, 100).await.unwrap();
    let got: Vec<(u64, AuditAction, &str, &str)> = log
        .iter()
        .map(|e| (e.seq, e.action, e.target.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (1, AuditAction::PlanApply, "plan v1", ""),
            (2, AuditAction::CustomerUpsert, "", "created"),
            (3, AuditAction::CustomerUpsert, "", "updated"),
            (4, AuditAction::CustomerDelete, "", ""),
            (5, AuditAction::CallbackCancel, "", ""),
        ]
    );
    assert_eq!(s.list_audit(4, 1).await.unwrap()[0].seq, 4);
}

pub(crate) fn open_callback(id: &str, phone: &str, state: CallbackState) -> Callback {
    // Whole milliseconds: callbacks store instants at that precision.
    let t = DateTime::<Utc>::from_timestamp(1_790_000_000, 0).expect("valid instant");
    Callback {
        id: id.into(),
        state,
        kind: crate::domain::callback::CallbackKind::Asap,
        phone: phone.into(),
        customer_id: None,
        queue_id: "general".into(),
        time_zone: "Europe/London".into(),
        virtual_enqueued_at: t,
        priority: 0,
        attempts: u32::from(state == CallbackState::Dispatched),
        max_attempts: 3,
        not_before: t,
        expires_at: t + chrono::Duration::hours(24),
        lease: (state == CallbackState::Dispatched).then(|| crate::domain::callback::Lease {
            attempt_id: "a1".into(),
            dialer_id: "d1".into(),
            until: t,
            agent_id: None,
        }),
        last_outcome: None,
        cancel_reason: None,
        origin_call_id: None,
        notes: String::new(),
        ewt_at_request_secs: None,
        created_by: "tester".into(),
        created_at: t,
        updated_at: t,
        version: 1,
    }
}

fn request_key(principal: &str, request_id: &str) -> RequestKey {
    RequestKey {
        principal: principal.into(),
        request_id: request_id.into(),
        fingerprint: "same-body".into(),
    }
}

pub(super) async fn request_ids_are_per_principal_and_a_reused_key_with_another_body_is_refused<
    B: Backend,
>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let a = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    let b = open_callback("01J0000000000000000000000B", "+442", CallbackState::Pending);
    let created = |o: StoreResult<CallbackCreate>| matches!(o, Ok(CallbackCreate::Created(_)));
    assert!(created(
        s.create_callback(a.clone(), Some(request_key("web", "1")))
            .await
    ));
    // Another principal's "1" is another request.
    assert!(created(
        s.create_callback(b.clone(), Some(request_key("app", "1")))
            .await
    ));
    let mut other = request_key("web", "1");
    other.fingerprint = "other-body".into();
    assert!(matches!(
        s.create_callback(a.clone(), Some(other)).await,
        Err(StoreError::RequestIdReused { .. })
    ));
    assert_eq!(
        s.create_callback(a.clone(), Some(request_key("web", "1")))
            .await,
        Ok(CallbackCreate::Replayed(a.clone()))
    );
    // A principal named like another's key prefix cannot reach it.
    let c = open_callback("01J0000000000000000000000C", "+443", CallbackState::Pending);
    assert!(created(
        s.create_callback(c, Some(request_key("we", "b1"))).await
    ));
}

pub(super) async fn settled_attempts_and_request_ids_are_remembered_until_pruned<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let cb = open_callback(
        "01J0000000000000000000000A",
        "+441",
        CallbackState::Dispatched,
    );
    s.create_callback(cb.clone(), Some(request_key("web", "req-1")))
        .await
        .unwrap();
    let mut done = cb.clone();
    done.state = CallbackState::Completed;
    done.lease = None;
    done.version += 1;
    done.updated_at += chrono::Duration::minutes(5);
    s.settle_callback(done.clone(), "a1".into()).await.unwrap();
    assert_eq!(s.callback(&cb.id).await.unwrap(), Some(done.clone()));
    assert_eq!(s.settled_attempt("a1").await.unwrap(), Some(cb.id.clone()));
    assert_eq!(s.settled_attempt("a2").await.unwrap(), None);
    // A stale change settles nothing.
    let mut stale = done.clone();
    stale.version = 1;
    assert!(s.settle_callback(stale, "a9".into()).await.is_err());
    assert_eq!(s.settled_attempt("a9").await.unwrap(), None);
    // Both records are older than an hour after the outcome; nothing else goes.
    let before = done.updated_at + chrono::Duration::hours(1);
    assert_eq!(s.prune_callback_requests(done.updated_at).await.unwrap(), 1);
    assert_eq!(s.settled_attempt("a1").await.unwrap(), Some(cb.id.clone()));
    assert_eq!(s.prune_callback_requests(before).await.unwrap(), 1);
    assert_eq!(s.settled_attempt("a1").await.unwrap(), None);
    assert_eq!(s.callback(&cb.id).await.unwrap(), Some(done));
    s.close().await;
}

fn plan_record(version: u64, toml: &str) -> PlanRecord {
    PlanRecord {
        version,
        author: "ops".into(),
        comment: format!("v{version}"),
        created_at: Utc::now(),
        content_hash: content_hash(toml),
        toml: toml.into(),
    }
}

pub(super) async fn all_plans_and_all_customers_return_every_record<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    assert!(s.all_plans().await.unwrap().is_empty());
    s.apply_plan(new_plan("a"), None).await.unwrap();
    s.apply_plan(new_plan("b"), None).await.unwrap();
    let plans = s.all_plans().await.unwrap();
    let got: Vec<(u64, &str)> = plans.iter().map(|p| (p.version, p.toml.as_str())).collect();
    assert_eq!(got, vec![(1, "a"), (2, "b")]);
    for id in ["b", "a"] {
        s.upsert_customer(customer(id, &[]), audit(AuditAction::CustomerUpsert))
            .await
            .unwrap();
    }
    let ids: Vec<String> = s
        .all_customers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id.as_str().to_owned())
        .collect();
    assert_eq!(ids, vec!["a", "b"]);
}

pub(super) async fn import_restores_versions_phones_and_callback_indexes<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let pending = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    let dispatched = open_callback(
        "01J0000000000000000000000B",
        "+442",
        CallbackState::Dispatched,
    );
    let import = StoreImport {
        plans: vec![
            plan_record(1, "a"),
            plan_record(2, "b"),
            plan_record(3, "c"),
        ],
        active_version: Some(1),
        customers: vec![customer("x", &["+441", "+443"])],
        callbacks: vec![pending.clone(), dispatched.clone()],
    };
    let counts = s.import(import).await.unwrap();
    assert_eq!(
        counts,
        RecordCounts {
            plans: 3,
            customers: 1,
            callbacks: 2
        }
    );
    assert_eq!(s.active_plan().await.unwrap().unwrap().version, 1);
    assert_eq!(s.plan_version(3).await.unwrap().unwrap().toml, "c");
    assert_eq!(owner(&*s, "+443").await.as_deref(), Some("x"));
    assert_consistent(&*s).await;
    assert_eq!(s.open_callbacks().await.unwrap(), vec![pending, dispatched]);
    // The dedupe index is live: a second request for the number gets the first.
    let twin = open_callback("01J0000000000000000000000C", "+441", CallbackState::Pending);
    assert!(matches!(
        s.create_callback(twin, None).await.unwrap(),
        CallbackCreate::Existing(c) if c.id == "01J0000000000000000000000A"
    ));
    // Versions keep growing past the highest imported one.
    let next = s.apply_plan(new_plan("d"), Some(1)).await.unwrap().record;
    assert_eq!(next.version, 4);
    // Imported state survives a reopen.
    s.close().await;
    drop(s);
    let s = b.open().await;
    assert_eq!(s.all_plans().await.unwrap().len(), 4);
    assert_eq!(s.open_callbacks().await.unwrap().len(), 2);
}

/// Sends `batches` (in order) on a channel `import_batches` reads, then closes it.
fn batch_channel(
    batches: Vec<StoreResult<Vec<Callback>>>,
) -> tokio::sync::mpsc::Receiver<StoreResult<Vec<Callback>>> {
    let (tx, rx) = tokio::sync::mpsc::channel(batches.len().max(1));
    for b in batches {
        tx.try_send(b).unwrap();
    }
    rx
}

fn numbered_callback(i: usize) -> Callback {
    open_callback(
        &format!("01J00000000000000000000{i:03}"),
        &format!("+4420{i:04}"),
        CallbackState::Pending,
    )
}

pub(super) async fn import_in_batches_writes_every_batch_then_the_plans<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let all: Vec<Callback> = (0..7).map(numbered_callback).collect();
    let batches = all.chunks(3).map(|c| Ok(c.to_vec())).collect();
    let head = StoreImport {
        plans: vec![plan_record(1, "a")],
        active_version: Some(1),
        customers: vec![customer("x", &["+443"])],
        callbacks: Vec::new(),
    };
    let counts = s
        .import_batches(head, 7, batch_channel(batches))
        .await
        .unwrap();
    assert_eq!(
        counts,
        RecordCounts {
            plans: 1,
            customers: 1,
            callbacks: 7
        }
    );
    s.close().await;
    drop(s);
    let s = b.open().await;
    assert_eq!(s.open_callbacks().await.unwrap(), all);
    assert_eq!(s.active_plan().await.unwrap().unwrap().version, 1);
    assert_eq!(owner(&*s, "+443").await.as_deref(), Some("x"));
    assert_consistent(&*s).await;
}

/// A reader that fails after some batches, one that stops early, and a batch that
/// repeats an earlier one's number: each import is refused and the store is left
/// empty, ready for the next import.
pub(super) async fn an_import_whose_batches_fail_leaves_nothing_behind<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let head = || StoreImport {
        plans: vec![plan_record(1, "a")],
        active_version: Some(1),
        ..StoreImport::default()
    };
    let first: Vec<Callback> = (0..3).map(numbered_callback).collect();
    let failed = batch_channel(vec![
        Ok(first.clone()),
        Err(StoreError::BadImport("line 9: bad".into())),
    ]);
    assert_eq!(
        s.import_batches(head(), 6, failed).await,
        Err(StoreError::BadImport("line 9: bad".into()))
    );
    let short = batch_channel(vec![Ok(first.clone())]);
    assert!(matches!(
        s.import_batches(head(), 6, short).await,
        Err(StoreError::BadImport(_))
    ));
    let mut twin = numbered_callback(9);
    twin.phone = first[0].phone.clone();
    let twins = batch_channel(vec![Ok(first.clone()), Ok(vec![twin])]);
    assert!(matches!(
        s.import_batches(head(), 4, twins).await,
        Err(StoreError::BadImport(_))
    ));
    assert!(s.open_callbacks().await.unwrap().is_empty());
    assert!(s.all_plans().await.unwrap().is_empty());
    let again = batch_channel(vec![Ok(first.clone())]);
    s.import_batches(head(), 3, again).await.unwrap();
    assert_eq!(s.open_callbacks().await.unwrap(), first);
}

pub(super) async fn a_customer_listing_a_number_twice_is_refused_and_changes_nothing<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let twice = customer("a", &["+441", "+442", "+441"]);
    assert_eq!(
        s.upsert_customer(twice, audit(AuditAction::CustomerUpsert))
            .await,
        Err(StoreError::DuplicatePhone {
            phone: "+441".into()
        })
    );
    assert_eq!(
        s.customer(&CustomerId::new_checked("a".into())).unwrap(),
        None
    );
    assert_eq!(s.customer_by_phone("+442").unwrap(), None);
}

pub(super) async fn the_open_scan_gives_the_index_fields_of_open_callbacks_only<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let t = DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap();
    let asap = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    let mut scheduled = open_callback("01J0000000000000000000000B", "+442", CallbackState::Pending);
    scheduled.kind = crate::domain::callback::CallbackKind::Scheduled {
        start: t + chrono::Duration::hours(2),
        end: t + chrono::Duration::hours(3),
    };
    scheduled.not_before = t + chrono::Duration::hours(2);
    scheduled.priority = -7;
    scheduled.queue_id = "sales".into();
    let mut dispatched = open_callback(
        "01J0000000000000000000000C",
        "+443",
        CallbackState::Dispatched,
    );
    dispatched.priority = 12;
    dispatched.virtual_enqueued_at = t - chrono::Duration::minutes(5);
    let closed = open_callback("01J0000000000000000000000D", "+444", CallbackState::Pending);
    for c in [&asap, &scheduled, &dispatched, &closed] {
        assert!(matches!(
            s.create_callback(c.clone(), None).await.unwrap(),
            CallbackCreate::Created(_)
        ));
    }
    let mut done = closed.clone();
    done.cancel("test".into(), t).unwrap();
    s.update_callback(done).await.unwrap();

    let mut seen = Vec::new();
    let n = s
        .scan_open_callbacks(&mut |r| {
            seen.push(format!("{r:?}"));
        })
        .await
        .unwrap();
    seen.sort();
    let mut expected: Vec<String> = [&asap, &scheduled, &dispatched]
        .into_iter()
        .map(|c| format!("{:?}", OpenCallbackRef::of(c)))
        .collect();
    expected.sort();
    assert_eq!(n, 3);
    assert_eq!(seen, expected);
    // The fields the scheduler needs came through (not only equal to themselves).
    assert!(seen.iter().any(|r| r.contains("slot_start: Some(")));
    assert!(seen.iter().any(|r| r.contains("lease: Some((\"a1\"")));
}

pub(super) async fn import_refuses_a_store_that_holds_anything_and_changes_nothing<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    s.upsert_customer(customer("a", &[]), audit(AuditAction::CustomerUpsert))
        .await
        .unwrap();
    let import = StoreImport {
        plans: vec![plan_record(1, "a")],
        active_version: Some(1),
        ..StoreImport::default()
    };
    assert_eq!(
        s.import(import).await,
        Err(StoreError::NotEmpty {
            what: "customers".into()
        })
    );
    assert!(s.all_plans().await.unwrap().is_empty());
}

pub(super) async fn import_refuses_records_that_would_break_the_indexes<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let twins = StoreImport {
        callbacks: vec![
            open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending),
            open_callback("01J0000000000000000000000B", "+441", CallbackState::Pending),
        ],
        ..StoreImport::default()
    };
    assert!(matches!(
        s.import(twins).await,
        Err(StoreError::BadImport(_))
    ));
    let shared_phone = StoreImport {
        customers: vec![customer("a", &["+441"]), customer("b", &["+441"])],
        ..StoreImport::default()
    };
    assert!(matches!(
        s.import(shared_phone).await,
        Err(StoreError::BadImport(_))
    ));
    let no_active = StoreImport {
        plans: vec![plan_record(1, "a")],
        active_version: Some(2),
        ..StoreImport::default()
    };
    assert!(matches!(
        s.import(no_active).await,
        Err(StoreError::BadImport(_))
    ));
    let gap = StoreImport {
        plans: vec![plan_record(1, "a"), plan_record(3, "c")],
        active_version: Some(3),
        ..StoreImport::default()
    };
    assert!(matches!(s.import(gap).await, Err(StoreError::BadImport(_))));
    let mut closed = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    closed.state = CallbackState::Cancelled;
    let closed = StoreImport {
        callbacks: vec![closed],
        ..StoreImport::default()
    };
    assert!(matches!(
        s.import(closed).await,
        Err(StoreError::BadImport(_))
    ));
    assert!(s.all_customers().await.unwrap().is_empty());
    assert!(s
        .list_callbacks(&CallbackFilter::default(), None, 1)
        .await
        .unwrap()
        .is_empty());
}

fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_100 + s, 0).unwrap()
}

/// Every queue's counters from a day before [`t`]`(0)` to 30 days after, summed.
async fn all_counters(s: &dyn Store) -> KpiCounters {
    let mut total = KpiCounters::default();
    for b in s
        .kpi_buckets(None, t(-86_400), t(30 * 86_400))
        .await
        .unwrap()
    {
        total.add(&b.counters);
    }
    total
}

fn answered(call: &str, caller: &str, at: i64) -> ContactRecord {
    ContactRecord {
        call_id: call.into(),
        customer_id: None,
        caller: Some(caller.into()),
        queue_id: "q".into(),
        enqueued_at: t(at),
        updated_at: t(at + 10),
        outcome: ContactOutcome::Answered,
        agent_id: Some("a".into()),
        wait_secs: Some(10.0),
        handle_secs: None,
        transfers: 0,
        facts: None,
    }
}

/// Calls of three numbers, half of them also of one customer, answered or abandoned, recorded
/// in a shuffled order: the repeated count matches the definition (an answered call
/// is repeated when another call of a shared party entered after it within 7 days),
/// counted by brute force. The writer's scan stops early; this checks it misses none.
pub(super) async fn first_contact_resolution_of_frequent_callers_matches_the_definition<
    B: Backend,
>() {
    let mut seed: u64 = 0x5eed_f00d;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let mut calls = Vec::new();
    for i in 0..60 {
        // Distinct times over 12 days, so no two calls tie.
        let at = (i as i64) * 17_000 + next(16_000) as i64;
        let number = ["+441", "+442", "+443"][next(3) as usize];
        let mut c = answered(&format!("k{i:02}"), number, at);
        if next(2) == 0 {
            c.customer_id = Some("cust".into());
        }
        if next(4) == 0 {
            c.outcome = ContactOutcome::Abandoned;
            c.agent_id = None;
        }
        calls.push(c);
    }
    let shares = |a: &ContactRecord, b: &ContactRecord| {
        a.caller == b.caller || (a.customer_id.is_some() && a.customer_id == b.customer_id)
    };
    let window = chrono::Duration::days(FCR_DAYS);
    let expected = calls
        .iter()
        .filter(|a| is_answered(a))
        .filter(|a| {
            calls.iter().any(|b| {
                b.call_id != a.call_id
                    && shares(a, b)
                    && b.enqueued_at > a.enqueued_at
                    && b.enqueued_at - a.enqueued_at <= window
            })
        })
        .count() as u64;
    let mut order: Vec<usize> = (0..calls.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, next(i as u64 + 1) as usize);
    }
    let b = B::fresh().await;
    let s = b.open().await;
    for i in order {
        s.record_call(calls[i].clone(), 20.0).await.unwrap();
    }
    let total = all_counters(&*s).await;
    assert!(expected > 20, "the workload repeats often: {expected}");
    assert_eq!(total.fcr_repeated, expected);
    s.close().await;
}

pub(super) async fn a_second_call_within_seven_days_spoils_first_contact_resolution_once<
    B: Backend,
>() {
    let b = B::fresh().await;
    let s = b.open().await;
    s.record_call(answered("c1", "+441", 0), 20.0)
        .await
        .unwrap();
    // The same call ending does not repeat it.
    let mut done = answered("c1", "+441", 0);
    done.outcome = ContactOutcome::Completed;
    done.handle_secs = Some(100.0);
    s.record_call(done, 20.0).await.unwrap();
    s.record_call(answered("c2", "+441", 3600), 20.0)
        .await
        .unwrap();
    s.record_call(answered("c3", "+441", 7200), 20.0)
        .await
        .unwrap();
    // Eight days later: too late to count against c3.
    s.record_call(answered("c4", "+441", 7200 + 8 * 86_400), 20.0)
        .await
        .unwrap();
    let total = all_counters(&*s).await;
    assert_eq!(
        (
            total.offered,
            total.answered,
            total.handled,
            total.answered_contacts,
            total.fcr_repeated
        ),
        (4, 4, 1, 4, 2)
    );
    assert_eq!(
        s.submit_survey(
            "c1".into(),
            Survey {
                csat: Some(5),
                ces: None,
                nps: None
            },
            t(9)
        )
        .await
        .unwrap(),
        SurveyOutcome::Recorded
    );
    assert_eq!(
        s.submit_survey("c1".into(), Survey::default(), t(10))
            .await
            .unwrap(),
        SurveyOutcome::AlreadyTaken
    );
    assert_eq!(
        s.submit_survey("nope".into(), Survey::default(), t(10))
            .await
            .unwrap(),
        SurveyOutcome::UnknownContact
    );
    s.close().await;
}

pub(super) async fn a_stale_callback_change_is_refused_and_changes_nothing<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let cb = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    s.create_callback(cb.clone(), None).await.unwrap();
    let mut first = cb.clone();
    first.notes = "first".into();
    first.version = 2;
    s.update_callback(first.clone()).await.unwrap();
    // A second writer that read version 1 too.
    let mut second = cb.clone();
    second.notes = "second".into();
    second.version = 2;
    assert_eq!(
        s.update_callback(second).await,
        Err(StoreError::Stale { id: cb.id.clone() })
    );
    // Skipping a version is as stale.
    let mut skip = first.clone();
    skip.version = 4;
    assert!(s.update_callback(skip).await.is_err());
    let mut unknown = cb.clone();
    unknown.id = "01J0000000000000000000000Z".into();
    unknown.version = 2;
    assert!(s.update_callback(unknown).await.is_err());
    assert_eq!(s.callback(&cb.id).await.unwrap(), Some(first));
    // Closing a callback frees its number and queue for a new one.
    let mut cancelled = s.callback(&cb.id).await.unwrap().unwrap();
    cancelled
        .cancel("test".into(), cancelled.updated_at)
        .unwrap();
    s.update_callback(cancelled).await.unwrap();
    let again = open_callback("01J0000000000000000000000B", "+441", CallbackState::Pending);
    assert!(matches!(
        s.create_callback(again, None).await.unwrap(),
        CallbackCreate::Created(_)
    ));
    assert_open_and_consistent(&*s, 1).await;
}

/// The scheduler's warm-start image comes back once, from the store opened after the
/// close that kept it, and never after a callback was created or changed.
pub(super) async fn a_warm_start_image_is_handed_out_once_and_not_after_a_callback_changed<
    B: Backend,
>() {
    let b = B::fresh().await;
    // More than one of PostgreSQL's 8 MiB parts, in a pattern a part out of place breaks.
    let image: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
    let reopen = |s: Arc<dyn Store>| {
        let b = &b;
        async move {
            s.close().await;
            drop(s);
            b.open().await
        }
    };
    let s = b.open().await;
    assert_eq!(s.take_warm_image().await.unwrap(), None, "never saved");
    let cb = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
    s.create_callback(cb.clone(), None).await.unwrap();
    s.save_warm_image(image.clone()).await.unwrap();
    let s = reopen(s).await;
    let taken = s.take_warm_image().await.unwrap();
    assert!(
        taken.as_ref() == Some(&image),
        "{:?} bytes",
        taken.map(|i| i.len())
    );
    assert_eq!(s.take_warm_image().await.unwrap(), None, "taken once");

    // A change after the image was saved: it is not what the callbacks are any more.
    let mut done = cb.clone();
    done.cancel("test".into(), utc("2026-12-07T10:00:00Z"))
        .unwrap();
    s.save_warm_image(image.clone()).await.unwrap();
    s.update_callback(done).await.unwrap();
    let s = reopen(s).await;
    assert_eq!(s.take_warm_image().await.unwrap(), None, "after a change");
    s.save_warm_image(image.clone()).await.unwrap();
    let another = open_callback("01J0000000000000000000000B", "+442", CallbackState::Pending);
    s.create_callback(another, None).await.unwrap();
    let s = reopen(s).await;
    assert_eq!(s.take_warm_image().await.unwrap(), None, "after a create");
    s.close().await;
}

pub(super) async fn callbacks_list_in_id_order_with_filters_and_pages<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    for (i, (queue, by)) in [("q1", "web"), ("q2", "web"), ("q1", "app"), ("q1", "web")]
        .into_iter()
        .enumerate()
    {
        let mut cb = open_callback(
            &format!("01J000000000000000000000{i:02}"),
            "+441",
            CallbackState::Pending,
        );
        cb.queue_id = queue.into();
        cb.phone = format!("+44{i}");
        cb.created_by = by.into();
        s.create_callback(cb, None).await.unwrap();
    }
    let ids = |v: Vec<Callback>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let all = CallbackFilter::default();
    let page = ids(s.list_callbacks(&all, None, 2).await.unwrap());
    assert_eq!(
        page,
        ["01J00000000000000000000000", "01J00000000000000000000001"]
    );
    let next = ids(s.list_callbacks(&all, Some(&page[1]), 10).await.unwrap());
    assert_eq!(
        next,
        ["01J00000000000000000000002", "01J00000000000000000000003"]
    );
    let q1_web = CallbackFilter {
        queue_id: Some("q1".into()),
        created_by: Some("web".into()),
        ..CallbackFilter::default()
    };
    assert_eq!(
        ids(s.list_callbacks(&q1_web, None, 10).await.unwrap()),
        ["01J00000000000000000000000", "01J00000000000000000000003"]
    );
    let by_phone = CallbackFilter {
        phone: Some("+442".into()),
        state: Some(CallbackState::Pending),
        ..CallbackFilter::default()
    };
    assert_eq!(
        ids(s.list_callbacks(&by_phone, None, 10).await.unwrap()),
        ["01J00000000000000000000002"]
    );
    let done = CallbackFilter {
        state: Some(CallbackState::Completed),
        ..CallbackFilter::default()
    };
    assert!(s.list_callbacks(&done, None, 10).await.unwrap().is_empty());
}

pub(super) async fn kpi_counts_add_up_per_queue_and_interval<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let at = utc("2026-11-20T10:05:00Z");
    let one = KpiCounters {
        offered: 1,
        ..KpiCounters::default()
    };
    for (queue, at) in [
        ("q1", at),
        ("q1", at + chrono::Duration::minutes(5)),
        ("q1", at + chrono::Duration::minutes(15)),
        ("q2", at),
    ] {
        s.add_kpi(queue.into(), at, one.clone()).await.unwrap();
    }
    let from = utc("2026-11-20T10:00:00Z");
    let to = utc("2026-11-20T11:00:00Z");
    let got: Vec<(String, DateTime<Utc>, u64)> = s
        .kpi_buckets(Some("q1"), from, to)
        .await
        .unwrap()
        .into_iter()
        .map(|b| (b.queue_id, b.start, b.counters.offered))
        .collect();
    assert_eq!(
        got,
        vec![
            ("q1".into(), utc("2026-11-20T10:00:00Z"), 2),
            ("q1".into(), utc("2026-11-20T10:15:00Z"), 1),
        ]
    );
    let all = s.kpi_buckets(None, from, to).await.unwrap();
    assert_eq!(all.len(), 3);
    // The interval starting at `to` is outside.
    let none = s
        .kpi_buckets(None, from, utc("2026-11-20T10:00:00Z"))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// Folding the KPI deltas (the leader's housekeeping) changes no count, also while
/// other counts are added and callbacks created and closed during the fold.
pub(super) async fn kpi_counts_are_the_same_after_folding_while_others_are_counted<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    let at = utc("2026-11-20T10:05:00Z");
    let one = |offered| KpiCounters {
        offered,
        answer_wait_ms: 1_000 * offered,
        transfer_in: crate::metrics::kpi::TransferIn {
            offered,
            ..Default::default()
        },
        ..KpiCounters::default()
    };
    for i in 0..30i64 {
        let queue = ["q1", "q2", "q3"][(i % 3) as usize];
        let at = at + chrono::Duration::minutes(i % 4 * 15);
        s.add_kpi(queue.into(), at, one(1)).await.unwrap();
    }
    let (from, to) = (utc("2026-11-20T00:00:00Z"), utc("2026-11-21T00:00:00Z"));
    let before = s.kpi_buckets(None, from, to).await.unwrap();
    s.fold_kpi_deltas().await.unwrap();
    assert_eq!(s.kpi_buckets(None, from, to).await.unwrap(), before);
    assert_eq!(s.fold_kpi_deltas().await.unwrap(), 0, "nothing new to fold");

    // Counts and callbacks written while folds run: none lost, none counted twice.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..60usize {
                s.add_kpi("q1".into(), at, one(2)).await.unwrap();
                let cb = numbered_callback(i);
                s.create_callback(cb.clone(), None).await.unwrap();
                if i % 2 == 0 {
                    let mut done = cb;
                    done.cancel("test".into(), at).unwrap();
                    s.update_callback(done).await.unwrap();
                }
            }
        })
    };
    while !writer.is_finished() {
        s.fold_kpi_deltas().await.unwrap();
    }
    writer.await.unwrap();
    s.fold_kpi_deltas().await.unwrap();
    let total = |buckets: &[KpiBucket]| {
        let mut t = KpiCounters::default();
        for b in buckets {
            t.add(&b.counters);
        }
        t
    };
    let after = total(&s.kpi_buckets(None, from, to).await.unwrap());
    let mut expected = total(&before);
    for _ in 0..60 {
        expected.add(&one(2));
    }
    let callbacks = total(
        &s.kpi_buckets(None, t(-86_400), t(30 * 86_400))
            .await
            .unwrap(),
    );
    assert_eq!(after.offered, expected.offered);
    assert_eq!(after.answer_wait_ms, expected.answer_wait_ms);
    assert_eq!(after.transfer_in, expected.transfer_in);
    assert_eq!((callbacks.cb_requested, callbacks.cb_cancelled), (60, 30));
    // Folded to one record per queue and interval: reads as before, and a reopened
    // store (whose first fold looks at every row) finds nothing more to fold.
    s.close().await;
    drop(s);
    let s = b.open().await;
    assert_eq!(s.fold_kpi_deltas().await.unwrap(), 0);
    assert_eq!(total(&s.kpi_buckets(None, from, to).await.unwrap()), after);
}

pub(super) async fn contacts_since_returns_the_newest_first<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    for (call, at) in [
        ("a", "2026-11-20T10:00:00Z"),
        ("b", "2026-11-20T11:00:00Z"),
        ("c", "2026-11-20T12:00:00Z"),
    ] {
        s.record_contact(contact(call, None, "+441", at))
            .await
            .unwrap();
    }
    let got: Vec<String> = s
        .contacts_since(utc("2026-11-20T11:00:00Z"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.call_id)
        .collect();
    assert_eq!(got, ["c", "b"]);
    assert_eq!(
        s.contacts_since(utc("2026-11-20T00:00:00Z"), 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

pub(super) async fn writes_after_close_are_refused<B: Backend>() {
    let b = B::fresh().await;
    let s = b.open().await;
    s.close().await;
    assert_eq!(
        s.append_audit(audit(AuditAction::CallbackCancel))
            .await
            .map(|_| ()),
        Err(StoreError::Closed)
    );
}
