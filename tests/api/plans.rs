use crate::helpers::*;
use holdless::api::pb;
use holdless::service::EXAMPLE_PLAN;

fn apply(toml: &str, expected_version: u64) -> pb::ApplyPlanRequest {
    pb::ApplyPlanRequest {
        plan_toml: toml.into(),
        expected_version,
        author: "sam".into(),
        comment: "test".into(),
    }
}

/// The example plan with UK callers sent to `sales` instead.
fn uk_to_sales() -> String {
    EXAMPLE_PLAN.replace(
        "[rules.action]\nqueue = \"uk_support\"\n",
        "[rules.action]\nqueue = \"sales\"\n",
    )
}

#[tokio::test]
async fn invalid_plan_is_refused_with_every_issue_and_changes_nothing() {
    let app = spawn_app().await;
    let bad = EXAMPLE_PLAN
        .replace(
            "[default_route]\nqueue = \"general\"",
            "[default_route]\nqueue = \"nowhere\"",
        )
        .replace(
            "expression = \"'fraud_flag' in attributes && attributes['fraud_flag'] == 'yes'\"",
            "expression = \"attributes['fraud_flag'] ==\"",
        )
        .replace(
            "time_zone = \"Europe/London\"\nweekly",
            "time_zone = \"Europe/Londres\"\nweekly",
        );
    let e = app.plans().apply_plan(apply(&bad, 0)).await.unwrap_err();
    let fields = violations(&e);
    for want in [
        "default_route.queue",
        "rules[1].match.expression",
        "queues[2].business_hours.time_zone",
    ] {
        assert!(fields.iter().any(|f| f == want), "{want} in {fields:?}");
    }
    let v = app
        .plans()
        .validate_plan(pb::ValidatePlanRequest { plan_toml: bad })
        .await
        .unwrap()
        .into_inner();
    assert!(!v.valid);
    assert_eq!(v.issues.len(), fields.len());

    let active = app
        .plans()
        .get_plan(pb::GetPlanRequest { version: 0 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(active.version.unwrap().version, 1);
    assert_eq!(active.plan_toml, EXAMPLE_PLAN);
    assert_eq!(
        app.route(call("c", "+442079460958")).await.queue_id,
        "uk_support"
    );
}

#[tokio::test]
async fn applied_plan_changes_routing_and_survives_restart() {
    let app = spawn_app().await;
    let r = app
        .plans()
        .apply_plan(apply(&uk_to_sales(), 1))
        .await
        .unwrap()
        .into_inner();
    let v = r.version.unwrap();
    assert_eq!(v.version, 2);
    assert_eq!(v.author, "sam");
    assert_eq!(v.content_hash.len(), 64);
    let d = app.route(call("c", "+442079460958")).await;
    assert_eq!((d.queue_id.as_str(), d.plan_version), ("sales", 2));

    let app = app.restart().await;
    let d = app.route(call("c", "+442079460958")).await;
    assert_eq!((d.queue_id.as_str(), d.plan_version), ("sales", 2));
    let old = app
        .plans()
        .get_plan(pb::GetPlanRequest { version: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.plan_toml, EXAMPLE_PLAN);
    let e = app
        .plans()
        .get_plan(pb::GetPlanRequest { version: 99 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn stale_editor_gets_aborted() {
    let app = spawn_app().await;
    app.plans()
        .apply_plan(apply(&uk_to_sales(), 1))
        .await
        .unwrap();
    let e = app
        .plans()
        .apply_plan(apply(EXAMPLE_PLAN, 1))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted);
    assert_eq!(
        app.route(call("c", "+442079460958")).await.queue_id,
        "sales"
    );
}

#[tokio::test]
async fn plan_file_is_imported_into_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, uk_to_sales()).unwrap();
    let app = spawn_app_with(|s| s.plan.file = file.display().to_string()).await;
    assert_eq!(
        app.route(call("c", "+442079460958")).await.queue_id,
        "sales"
    );
}
