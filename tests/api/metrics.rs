//! Prometheus `/metrics` over plain HTTP/1.1 on the metrics port.

use crate::helpers::*;
use crate::live::agent;
use holdless::api::pb;

#[tokio::test]
async fn metrics_endpoint_exports_rpc_routing_queue_and_store_families() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    app.route(call("m1", "+12125550100")).await;
    let bad = app
        .routing()
        .report_call_event(pb::ReportCallEventRequest {
            call_id: "unknown".into(),
            r#type: pb::CallEventType::Answered as i32,
            agent_id: "a1".into(),
            ..Default::default()
        })
        .await;
    assert!(bad.is_err());
    let body = scrape(&app).await;
    for family in [
        "holdless_rpc_requests_total",
        "holdless_rpc_duration_seconds_bucket",
        "holdless_routing_decisions_total",
        "holdless_queue_waiting",
        "holdless_queue_agents",
        "holdless_queue_ewt_seconds",
        "holdless_store_flush_seconds_bucket",
        "holdless_store_sync_seconds_bucket",
    ] {
        assert!(body.contains(family), "{family} missing from:\n{body}");
    }
    assert!(body.contains(
        r#"holdless_rpc_requests_total{method="/holdless.v1.RoutingService/RouteCall",code="OK"}"#
    ));
    assert!(
        body.contains(
            r#"method="/holdless.v1.RoutingService/ReportCallEvent",code="FAILED_PRECONDITION""#
        ),
        "{body}"
    );
    assert!(
        body.contains(r#"holdless_queue_waiting{queue="general"} 1"#),
        "{body}"
    );
    assert!(body.contains(r#"holdless_queue_agents{queue="general",state="busy"} 1"#));
}

/// The value of an unlabelled gauge in a scrape.
#[tokio::test]
async fn metrics_count_the_calls_and_callbacks_held_in_memory() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    app.route(call("mem-1", "+12125550100")).await;
    app.route(call("mem-2", "+12125550101")).await;
    pb::callback_service_client::CallbackServiceClient::new(app.channel.clone())
        .request_callback(pb::RequestCallbackRequest {
            queue_id: "general".into(),
            phone_number: "+13125550100".into(),
            ..Default::default()
        })
        .await
        .expect("callback requested");
    // The scheduler publishes its count after the pass that takes the new callback (and
    // the gauges are process-wide: another test's scrape may set them in between).
    let wanted = [
        ("holdless_callbacks_open", 1.0),
        ("holdless_live_calls", 2.0),
        ("holdless_callbacks_in_line", 1.0),
    ];
    let mut body = scrape(&app).await;
    for _ in 0..100 {
        if wanted.iter().all(|(g, v)| gauge(&body, g) == Some(*v)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        body = scrape(&app).await;
    }
    for (g, v) in wanted {
        assert_eq!(gauge(&body, g), Some(v), "{g} in:\n{body}");
    }
}

/// Latency samples are folded into their buckets in the background, so a server that
/// nobody scrapes does not keep every sample it ever recorded (8 bytes per RPC).
#[tokio::test]
async fn latency_samples_are_folded_without_a_scrape() {
    let app = spawn_app().await;
    app.route(call("fold-1", "+12125550100")).await;
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect();
    let upkeep = holdless::metrics::prometheus::UPKEEP_THREAD;
    assert_eq!(
        threads.iter().filter(|t| *t == upkeep).count(),
        1,
        "{threads:?}"
    );
}

/// The day-one families: process figures, the build, reload results and every fixed
/// counter at 0 before anything happened; an unknown wait is absent, never NaN.
#[tokio::test]
async fn metrics_export_process_build_and_reload_families_and_no_nan() {
    let app = spawn_app().await;
    // Nobody staffed: every queue's wait is unknown.
    let body = scrape(&app).await;
    assert!(!body.contains("NaN"), "{body}");
    assert!(
        !body.contains(r#"holdless_queue_ewt_seconds{queue="general"}"#),
        "{body}"
    );
    assert!(
        body.contains(r#"holdless_queue_waiting{queue="general"} 0"#),
        "{body}"
    );
    for series in [
        r#"holdless_plan_reloads_total{result="failed"}"#,
        r#"holdless_plan_reloads_total{result="refused"}"#,
        r#"holdless_tls_reloads_total{result="failed"}"#,
        r#"holdless_callback_transitions_total{state="expired"}"#,
        r#"holdless_dispatch_outcomes_total{outcome="invalid_number"}"#,
        "holdless_build_info{version=",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(body.contains(series), "{series} missing from:\n{body}");
    }
    // With an agent staffed the wait is known and exported.
    agent(&app, "a1", &["support"], pb::AgentState::Available, 0).await;
    let body = scrape(&app).await;
    assert!(
        body.contains(r#"holdless_queue_ewt_seconds{queue="general"} 0"#),
        "{body}"
    );
}
