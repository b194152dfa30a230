use crate::helpers::*;
use holdless::api::pb;

fn gold_customer(phone: &str) -> pb::UpsertCustomerRequest {
    pb::UpsertCustomerRequest {
        customer: Some(pb::Customer {
            customer_id: "cust-42".into(),
            display_name: "Ada Lovelace".into(),
            phone_numbers: vec![phone.into()],
            status: "gold".into(),
            language: "en".into(),
            last_agent_id: "agent-7".into(),
            notes: "Asked about the annual plan last week.".into(),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn caller_from_plus_44_routes_by_country() {
    let app = spawn_app().await;
    let d = app.route(call("call-1", "+442079460958")).await;
    assert_eq!(d.queue_id, "uk_support");
    assert_eq!(d.queue_contact_uri, "sip:uk-support@queues.example.com");
    assert_eq!(d.rule_id, "uk");
    assert!(!d.default_route);
    assert_eq!(d.plan_version, 1);
    let loc = d.location.unwrap();
    assert_eq!(
        (
            loc.country.as_str(),
            loc.region.as_str(),
            loc.time_zone.as_str()
        ),
        ("GB", "GB-LND", "Europe/London")
    );
    // A ULID stamped with the server's clock (the test's manual one).
    let id: ulid::Ulid = d.decision_id.parse().expect("decision id is a ULID");
    assert_eq!(
        id.timestamp_ms(),
        holdless::clock::Clock::now(&*app.clock).timestamp_millis() as u64
    );
}

#[tokio::test]
async fn gold_customer_with_the_same_number_routes_to_the_priority_queue() {
    let app = spawn_app().await;
    app.customers()
        .upsert_customer(gold_customer("+442079460958"))
        .await
        .unwrap();
    let d = app.route(call("call-2", "+442079460958")).await;
    assert_eq!(d.queue_id, "priority");
    assert_eq!(d.rule_id, "vip");
    // The customer's last agent is not logged in: the call routes as usual and names
    // no preferred agent (nobody should wait for an agent who is not there).
    assert_eq!(d.preferred_agent_id, "");
    assert_eq!(d.preferred_agent_timeout_seconds, 0);
    let ctx = d.agent_context.unwrap();
    assert_eq!(ctx.customer_id, "cust-42");
    assert_eq!(ctx.customer_status, "gold");
    assert_eq!(ctx.customer_notes, "Asked about the annual plan last week.");

    // Looked up by id when the IVR identified the caller, whatever number they use.
    let mut req = call("call-3", "+33142685300");
    req.customer_id = "cust-42".into();
    assert_eq!(app.route(req).await.queue_id, "priority");
}

#[tokio::test]
async fn campaign_number_routes_to_campaign_queue_with_boost_but_not_after_it_ends() {
    let app = spawn_app().await;
    let mut req = call("call-4", "+13125550100");
    req.dialed_number = "+18005550199".into();
    let d = app.route(req.clone()).await;
    assert_eq!(d.queue_id, "sales");
    assert_eq!(d.campaign_id, "winter-sale-2026");
    assert_eq!(d.priority, 30, "rule priority 10 + campaign boost 20");
    assert!(d
        .agent_context
        .unwrap()
        .campaign_script
        .contains("Winter sale"));

    app.clock.set(at("2027-01-31T00:00:00Z"));
    let d = app.route(req).await;
    assert_eq!(
        d.queue_id, "after_hours",
        "campaign over; 2027-01-30 19:00 in Chicago is a Saturday evening"
    );
    assert_eq!(d.campaign_id, "");
    assert_eq!(d.priority, 0);
}

#[tokio::test]
async fn call_outside_business_hours_follows_the_closed_hours_rule() {
    let app = spawn_app().await;
    // Saturday 2026-11-28 20:00 UTC: UK support is closed.
    app.clock.set(at("2026-11-28T20:00:00Z"));
    let d = app.route(call("call-5", "+442079460958")).await;
    assert_eq!(d.rule_id, "uk-closed");
    assert_eq!(d.queue_id, "after_hours");
}

#[tokio::test]
async fn explanation_names_the_first_failing_matcher_of_every_earlier_rule() {
    let app = spawn_app().await;
    let mut req = call("call-6", "+12125550100");
    req.explain = true;
    req.language = "fr".into();
    let d = app.route(req).await;
    assert!(d.default_route);
    let trace: Vec<(String, i32, String)> = d
        .explanation
        .iter()
        .map(|t| (t.rule_id.clone(), t.outcome, t.failed_matcher.clone()))
        .collect();
    let failed = pb::RuleOutcome::Failed as i32;
    assert_eq!(
        trace,
        vec![
            ("transfer-loop".into(), failed, "transfer_loop".into()),
            ("fraud-flag".into(), failed, "expression".into()),
            ("vip".into(), failed, "customer_statuses".into()),
            ("winter-sale".into(), failed, "campaigns".into()),
            ("uk-closed".into(), failed, "countries".into()),
            ("uk".into(), failed, "countries".into()),
            ("billing".into(), failed, "intents".into()),
            ("spanish".into(), failed, "languages".into()),
            ("na-closed".into(), failed, "business_hours".into()),
        ]
    );
    assert!(
        d.explanation[4].detail.contains("US"),
        "{}",
        d.explanation[4].detail
    );
}

#[tokio::test]
async fn bad_calls_are_refused_with_field_violations() {
    let app = spawn_app().await;
    let mut client = app.routing();

    let e = client
        .route_call(call("c", "12125550100"))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["caller_number"]);

    let e = client
        .route_call(call("", "+12125550100"))
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["call_id"]);

    let mut req = call("c", "+12125550100");
    req.attributes = (0..40).map(|i| (format!("k{i}"), "v".into())).collect();
    let e = client.route_call(req).await.unwrap_err();
    assert!(violations(&e).contains(&"attributes".to_string()));

    let mut req = call("c", "+12125550100");
    req.attributes.insert("big".into(), "x".repeat(10_000));
    let e = client.route_call(req).await.unwrap_err();
    assert_eq!(violations(&e), vec!["attributes[big]"]);

    let mut req = call("c", "+12125550100");
    req.location = Some(pb::Location {
        country: "GBR".into(),
        region: String::new(),
        time_zone: "Mars/Base".into(),
    });
    let e = client.route_call(req).await.unwrap_err();
    assert_eq!(
        violations(&e),
        vec!["location.country", "location.time_zone"]
    );
}

#[tokio::test]
async fn withheld_number_routes_to_the_default_queue() {
    let app = spawn_app().await;
    let d = app.route(call("call-7", "")).await;
    assert!(d.default_route);
    assert_eq!(d.queue_id, "general");
}
