use std::time::Instant;

use crate::helpers::*;
use holdless::api::pb;
use holdless::service::EXAMPLE_PLAN;

pub fn apply(toml: &str, expected_version: u64) -> pb::ApplyPlanRequest {
    pb::ApplyPlanRequest {
        plan_toml: toml.into(),
        expected_version,
        author: "sam".into(),
        comment: "test".into(),
        request_id: String::new(),
    }
}

/// The example plan with UK callers sent to `sales` instead.
pub fn uk_to_sales() -> String {
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

fn rollback(version: u64, expected_version: u64, request_id: &str) -> pb::RollbackPlanRequest {
    pb::RollbackPlanRequest {
        version,
        expected_version,
        author: String::new(),
        comment: String::new(),
        request_id: request_id.into(),
    }
}

/// A varied fixed set of calls: countries, intents, languages, campaigns, attributes.
fn sample_calls(prefix: &str) -> Vec<pb::RouteCallRequest> {
    let callers = [
        "+442079460958",
        "+12125550100",
        "+13125550100",
        "+35314567890",
        "+33142685300",
        "+14165550100",
        "",
    ];
    let mut out = Vec::new();
    for (i, caller) in callers.iter().enumerate() {
        for (j, intent) in ["", "billing", "sales"].iter().enumerate() {
            let mut c = call(&format!("{prefix}-{i}-{j}"), caller);
            c.intent = intent.to_string();
            if j == 2 {
                c.language = "es".into();
                c.dialed_number = "+18005550199".into();
            }
            if i == 4 && j == 1 {
                c.attributes.insert("fraud_flag".into(), "yes".into());
            }
            out.push(c);
        }
    }
    out
}

/// What routing decided, without what legitimately differs between runs.
fn essence(d: &pb::RoutingDecision) -> (String, i32, String, Vec<String>, String) {
    (
        d.queue_id.clone(),
        d.priority,
        d.rule_id.clone(),
        d.extra_skills.clone(),
        d.campaign_id.clone(),
    )
}

async fn decisions(app: &TestApp, prefix: &str) -> Vec<(String, i32, String, Vec<String>, String)> {
    let mut out = Vec::new();
    for c in sample_calls(prefix) {
        out.push(essence(&app.route(c).await));
    }
    out
}

#[tokio::test]
async fn apply_then_rollback_restores_the_previous_routing_exactly() {
    let app = spawn_app().await;
    let before = decisions(&app, "a").await;
    let changed = uk_to_sales().replace(
        "intents = [\"billing\", \"invoice\"]",
        "intents = [\"invoice\"]",
    );
    app.plans().apply_plan(apply(&changed, 1)).await.unwrap();
    let during = decisions(&app, "b").await;
    assert_ne!(before, during, "the new plan must change some decisions");

    let r = app
        .plans()
        .rollback_plan(rollback(1, 2, ""))
        .await
        .unwrap()
        .into_inner()
        .version
        .unwrap();
    assert_eq!(r.version, 3);
    assert_eq!(r.comment, "rollback to v1");
    let after = decisions(&app, "c").await;
    assert_eq!(before, after);
    assert_eq!(app.route(call("v", "+12125550100")).await.plan_version, 3);
    let v3 = app
        .plans()
        .get_plan(pb::GetPlanRequest { version: 3 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v3.plan_toml, EXAMPLE_PLAN);
    let v1 = app
        .plans()
        .get_plan(pb::GetPlanRequest { version: 1 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        v3.version.unwrap().content_hash,
        v1.version.unwrap().content_hash
    );
}

#[tokio::test]
async fn rollback_to_the_text_already_active_says_so_and_creates_no_version() {
    let app = spawn_app().await;
    app.plans()
        .apply_plan(apply(&uk_to_sales(), 1))
        .await
        .unwrap();
    // Version 3 is a copy of version 1; rolling back to version 1 again is a no-op.
    app.plans().rollback_plan(rollback(1, 2, "")).await.unwrap();
    let r = app
        .plans()
        .rollback_plan(rollback(1, 3, ""))
        .await
        .unwrap()
        .into_inner();
    assert!(r.unchanged);
    assert_eq!(r.version.unwrap().version, 3);
    let versions = app
        .plans()
        .list_plan_versions(pb::ListPlanVersionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!((versions.versions.len(), versions.active_version), (3, 3));
    let audit = app
        .plans()
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.entries.len(), 3, "a no-op is not audited");
    // The same request against a stale base is still refused.
    let e = app
        .plans()
        .rollback_plan(rollback(1, 2, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted);
}

#[tokio::test]
async fn rollback_checks_its_input_and_the_expected_version() {
    let app = spawn_app().await;
    let e = app
        .plans()
        .rollback_plan(rollback(0, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["version"]);
    let e = app
        .plans()
        .rollback_plan(rollback(9, 0, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = app
        .plans()
        .rollback_plan(rollback(1, 1, "bad id!"))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["request_id"]);
    app.plans()
        .apply_plan(apply(&uk_to_sales(), 1))
        .await
        .unwrap();
    let e = app
        .plans()
        .rollback_plan(rollback(1, 1, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Aborted);
}

#[tokio::test]
async fn two_concurrent_applies_with_the_same_expected_version_one_wins_one_is_aborted() {
    let app = spawn_app().await;
    let (mut a, mut b) = (app.plans(), app.plans());
    let sales = uk_to_sales();
    let (ra, rb) = tokio::join!(
        a.apply_plan(apply(&sales, 1)),
        b.apply_plan(apply(EXAMPLE_PLAN, 1))
    );
    let (won, lost) = match (ra, rb) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w.into_inner(), l),
        other => panic!("exactly one apply must win: {other:?}"),
    };
    assert_eq!(lost.code(), tonic::Code::Aborted, "{lost:?}");
    assert_eq!(won.version.unwrap().version, 2);
    let list = app
        .plans()
        .list_plan_versions(pb::ListPlanVersionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.versions.len(), 2);
    assert_eq!(list.active_version, 2);
}

#[tokio::test]
async fn a_retried_apply_or_rollback_with_the_same_request_id_returns_the_first_answer() {
    let app = spawn_app().await;
    let mut req = apply(&uk_to_sales(), 1);
    req.request_id = "req-1".into();
    let first = app
        .plans()
        .apply_plan(req.clone())
        .await
        .unwrap()
        .into_inner();
    app.clock.advance(chrono::Duration::seconds(5));
    // The retry's expected version is stale now; it still gets the first answer.
    let again = app.plans().apply_plan(req).await.unwrap().into_inner();
    assert_eq!(first, again);

    let rb = app
        .plans()
        .rollback_plan(rollback(1, 2, "req-2"))
        .await
        .unwrap()
        .into_inner();
    let rb_again = app
        .plans()
        .rollback_plan(rollback(1, 2, "req-2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rb, rb_again);
    assert_eq!(rb.version.unwrap().version, 3);

    let list = app
        .plans()
        .list_plan_versions(pb::ListPlanVersionsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<u64> = list.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, vec![3, 2, 1]);
    assert_eq!(
        app.route(call("c", "+442079460958")).await.queue_id,
        "uk_support"
    );
}

#[tokio::test]
async fn plan_versions_page_newest_first_and_survive_restart() {
    let app = spawn_app().await;
    app.plans()
        .apply_plan(apply(&uk_to_sales(), 1))
        .await
        .unwrap();
    app.plans().rollback_plan(rollback(1, 2, "")).await.unwrap();
    let app = app.restart().await;
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let r = app
            .plans()
            .list_plan_versions(pb::ListPlanVersionsRequest {
                page_size: 1,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.active_version, 3);
        seen.extend(r.versions.iter().map(|v| (v.version, v.author.clone())));
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(
        seen,
        vec![
            (3, "anonymous".to_owned()),
            (2, "sam".to_owned()),
            (1, "holdless (import)".to_owned())
        ]
    );
    let e = app
        .plans()
        .list_plan_versions(pb::ListPlanVersionsRequest {
            page_size: 1,
            page_token: "zz".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["page_token"]);
}

/// A small deterministic generator (64-bit LCG), so the seeded call set is the same
/// on every run without a dependency.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[tokio::test]
async fn simulate_reports_the_exact_count_of_moved_calls_on_10000_seeded_calls() {
    let app = spawn_app().await;
    let mut rng = Lcg(42);
    let mut calls = Vec::new();
    let mut uk_or_ie = Vec::new();
    for i in 0..10_000 {
        let n = rng.next();
        let caller = match n % 5 {
            0 => format!("+4420794{:05}", n % 100_000),
            1 => format!("+3531{:07}", n % 10_000_000),
            2 => format!("+1212555{:04}", n % 10_000),
            3 => format!("+3314268{:04}", n % 10_000),
            _ => format!("+1312555{:04}", n % 10_000),
        };
        let id = format!("s{i}");
        let mut c = call(&id, &caller);
        if (n >> 8).is_multiple_of(4) {
            c.intent = "billing".into();
        }
        // Billing callers from the UK still match the `uk` rule first.
        if n % 5 < 2 {
            uk_or_ie.push(id);
        }
        calls.push(c);
    }
    let r = app
        .plans()
        .simulate_plan(pb::SimulatePlanRequest {
            plan_toml: uk_to_sales(),
            calls,
            samples_per_move: 3,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.base_version, 1);
    assert_eq!(r.calls_replayed, 10_000);
    assert_eq!(r.calls_moved as usize, uk_or_ie.len());
    assert_eq!(r.moves.len(), 1);
    let m = &r.moves[0];
    assert_eq!(
        (m.from_queue_id.as_str(), m.to_queue_id.as_str()),
        ("uk_support", "sales")
    );
    assert_eq!(m.call_count as usize, uk_or_ie.len());
    assert_eq!(m.sample_call_ids, uk_or_ie[..3].to_vec());
    for rule in ["vip", "fraud-flag", "spanish", "uk-closed"] {
        assert!(
            r.unmatched_rule_ids.iter().any(|u| u == rule),
            "{rule} in {:?}",
            r.unmatched_rule_ids
        );
    }
    for rule in ["uk", "billing"] {
        assert!(
            !r.unmatched_rule_ids.iter().any(|u| u == rule),
            "{rule} matched"
        );
    }
    // Nothing changed.
    assert_eq!(app.route(call("x", "+442079460958")).await.plan_version, 1);
}

#[tokio::test]
async fn simulate_refuses_a_bad_candidate_and_bad_calls_with_paths() {
    let app = spawn_app().await;
    let e = app
        .plans()
        .simulate_plan(pb::SimulatePlanRequest {
            plan_toml: EXAMPLE_PLAN.replace(
                "[default_route]\nqueue = \"general\"",
                "[default_route]\nqueue = \"nowhere\"",
            ),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["default_route.queue"]);
    let e = app
        .plans()
        .simulate_plan(pb::SimulatePlanRequest {
            plan_toml: EXAMPLE_PLAN.into(),
            calls: vec![call("ok", "+12125550100"), call("", "12")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&e),
        vec!["calls[1].call_id", "calls[1].caller_number"]
    );
}

#[tokio::test]
async fn simulate_replays_recorded_calls_at_the_time_they_were_routed() {
    let app = spawn_app().await;
    let callers = [
        "+442079460958",
        "+12125550100",
        "+35314567890",
        "+13125550100",
    ];
    for (i, caller) in callers.iter().enumerate() {
        let id = format!("r{i}");
        app.route(call(&id, caller)).await;
        crate::live::event(&app, &id, pb::CallEventType::Abandoned, "", "")
            .await
            .unwrap();
    }
    // Routed but still waiting: no contact record yet, so not replayed.
    app.route(call("waiting", "+442079460958")).await;
    // Saturday: UK support is closed now, but the calls are decided at their time.
    app.clock.advance(chrono::Duration::days(3));
    let r = app
        .plans()
        .simulate_plan(pb::SimulatePlanRequest {
            plan_toml: uk_to_sales(),
            days: 7,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.calls_replayed, 4);
    assert_eq!(r.calls_without_facts, 0);
    assert_eq!(r.calls_moved, 2);
    assert_eq!(r.moves[0].sample_call_ids, vec!["r0", "r2"]);
    // Older than the window: nothing to replay.
    let r = app
        .plans()
        .simulate_plan(pb::SimulatePlanRequest {
            plan_toml: uk_to_sales(),
            days: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.calls_replayed, r.calls_moved), (0, 0));
}

/// The example plan whose default route has priority `p`: a decision's priority says
/// which plan made it.
fn plan_with_default_priority(p: u64) -> String {
    EXAMPLE_PLAN.replace(
        "[default_route]\nqueue = \"general\"\npriority = 0",
        &format!("[default_route]\nqueue = \"general\"\npriority = {p}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn routing_never_stalls_during_100_applies_and_each_decision_names_a_live_version() {
    let app = spawn_app().await;
    let t0 = Instant::now();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for k in 0..8 {
        let mut routing = app.routing();
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut i = 0;
            // Bounded: stops when the applies are done (or after 20,000 calls).
            while (i == 0 || !done.load(std::sync::atomic::Ordering::Acquire)) && i < 20_000 {
                let sent = t0.elapsed();
                let d = routing
                    .route_call(call(&format!("k{k}-{i}"), "+12125550100"))
                    .await
                    .expect("routing keeps answering")
                    .into_inner()
                    .decision
                    .unwrap();
                seen.push((sent, t0.elapsed(), d.plan_version, d.priority));
                i += 1;
            }
            seen
        }));
    }
    // applied[v] = (sent, answered) of the apply that created version v.
    let mut applied = vec![(std::time::Duration::ZERO, std::time::Duration::ZERO); 2];
    let mut plans = app.plans();
    for v in 2..102u64 {
        let sent = t0.elapsed();
        let r = plans
            .apply_plan(apply(&plan_with_default_priority(v), v - 1))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.version.unwrap().version, v);
        applied.push((sent, t0.elapsed()));
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let mut total = 0;
    for c in clients {
        let seen = c.await.unwrap();
        assert!(!seen.is_empty());
        for (sent, answered, v, priority) in seen {
            total += 1;
            let v = v as usize;
            assert!((1..applied.len()).contains(&v), "version {v}");
            // The whole plan: its default priority is its version (v1: 0).
            assert_eq!(priority as usize, if v == 1 { 0 } else { v });
            // Version v was asked for before the decision was answered...
            assert!(v == 1 || applied[v].0 <= answered, "v{v} not yet applied");
            // ...and its successor was not yet in place when the call was sent.
            if v + 1 < applied.len() {
                assert!(applied[v + 1].1 >= sent, "v{v} already replaced");
            }
        }
    }
    assert!(total >= 8);
}
