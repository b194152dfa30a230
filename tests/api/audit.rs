//! The audit log: every plan and customer change, in order, with who, what and the
//! request id.

use crate::helpers::*;
use crate::plans::{apply, uk_to_sales};
use holdless::api::pb;

async fn all_entries(app: &TestApp, page_size: u32) -> Vec<pb::AuditEntry> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let r = app
            .plans()
            .list_audit(pb::ListAuditRequest {
                page_size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.entries.len() <= page_size as usize);
        out.extend(r.entries);
        if r.next_page_token.is_empty() {
            return out;
        }
        token = r.next_page_token;
    }
}

#[tokio::test]
async fn audit_lists_plan_and_customer_changes_in_order_and_survives_restart() {
    let app = spawn_app().await;
    let mut req = apply(&uk_to_sales(), 1);
    req.request_id = "req-apply".into();
    app.plans().apply_plan(req.clone()).await.unwrap();
    // A retried request is not a second change.
    app.plans().apply_plan(req).await.unwrap();
    app.plans()
        .rollback_plan(pb::RollbackPlanRequest {
            version: 1,
            request_id: "req-rollback".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.customers()
        .upsert_customer(pb::UpsertCustomerRequest {
            customer: Some(pb::Customer {
                customer_id: "c-1".into(),
                status: "gold".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    app.customers()
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "c-1".into(),
        })
        .await
        .unwrap();
    // Refused changes leave no trace.
    app.plans()
        .apply_plan(apply("not toml [", 0))
        .await
        .unwrap_err();
    app.customers()
        .delete_customer(pb::DeleteCustomerRequest {
            customer_id: "nobody".into(),
        })
        .await
        .unwrap_err();

    let app = app.restart().await;
    let log = all_entries(&app, 2).await;
    let got: Vec<(u64, &str, pb::AuditAction, &str, &str)> = log
        .iter()
        .map(|e| {
            (
                e.sequence,
                e.principal.as_str(),
                pb::AuditAction::try_from(e.action).unwrap(),
                e.target.as_str(),
                e.request_id.as_str(),
            )
        })
        .collect();
    use pb::AuditAction::*;
    assert_eq!(
        got,
        vec![
            (1, "system", PlanApply, "plan v1", ""),
            (2, "anonymous", PlanApply, "plan v2", "req-apply"),
            (3, "anonymous", PlanRollback, "plan v3", "req-rollback"),
            (4, "anonymous", CustomerUpsert, "customer c-1", ""),
            (5, "anonymous", CustomerDelete, "customer c-1", ""),
        ]
    );
    assert_eq!(log[1].detail, "test");
    // The version's author is in the entry next to the authenticated principal.
    assert_eq!(log[1].author, "sam");
    assert_eq!(log[3].author, "", "a customer change has no plan author");
    assert!(
        log[2].detail.starts_with("rolled back to v1"),
        "{}",
        log[2].detail
    );
    assert_eq!(log[3].detail, "created");
    let t = log[1].time.unwrap();
    assert_eq!(t.seconds, at(WEEKDAY_NOON).timestamp());

    // A page token is opaque but checked.
    let e = app
        .plans()
        .list_audit(pb::ListAuditRequest {
            page_size: 0,
            page_token: "not-a-token".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["page_token"]);
}
