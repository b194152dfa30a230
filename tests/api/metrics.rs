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

/// The metric names in a PromQL text: `holdless_*` and `process_*` identifiers.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &text[i..];
        if starts_word && (rest.starts_with("holdless_") || rest.starts_with("process_")) {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.insert(rest[..end].to_owned());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

/// The Grafana dashboard parses, and every metric it and the alert rules use is one
/// the exporter really writes (after a short day: agents, a routed and an abandoned
/// call, a callback, a dialer), so neither can rot when a metric is renamed.
#[tokio::test]
async fn dashboard_and_alert_rules_use_only_exported_metrics() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard = std::fs::read_to_string(repo.join("deploy/grafana/holdless-dashboard.json"))
        .expect("dashboard file");
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut queries = String::new();
    for panel in parsed["panels"].as_array().expect("panels") {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has a query", panel["title"]);
        for t in targets {
            queries.push_str(t["expr"].as_str().expect("expr"));
            queries.push('\n');
        }
    }
    for v in parsed["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = v["query"].as_str() {
            queries.push_str(q);
            queries.push('\n');
        }
    }
    let rules =
        std::fs::read_to_string(repo.join("deploy/prometheus/alerts.yml")).expect("alert rules");
    let exprs: String = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(exprs.lines().count(), 5, "five alerts");
    for alert in [
        "HoldlessServiceLevelBelowTarget",
        "HoldlessCallbacksOverdue",
        "HoldlessStoreFlushSlow",
        "HoldlessPlanReloadFailed",
        "HoldlessNoDialerWhileCallbacksDue",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
    assert_eq!(rules.matches("for: ").count(), 5, "each alert has a for:");
    assert_eq!(
        rules.matches("severity: ").count(),
        5,
        "each alert a severity"
    );
    assert_eq!(
        rules.matches("summary: ").count(),
        5,
        "each alert a summary"
    );

    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    app.route(call("d1", "+12125550100")).await;
    app.clock.advance(chrono::Duration::seconds(30));
    app.routing()
        .report_call_event(pb::ReportCallEventRequest {
            call_id: "d1".into(),
            r#type: pb::CallEventType::Abandoned as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    agent(&app, "a2", &["support"], pb::AgentState::WrapUp, 0).await;
    app.route(call("d2", "+12125550101")).await;
    app.routing()
        .report_call_event(pb::ReportCallEventRequest {
            call_id: "d2".into(),
            r#type: pb::CallEventType::Answered as i32,
            agent_id: "a2".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let _dialer = pb::dispatch_service_client::DispatchServiceClient::new(app.channel.clone())
        .watch_dispatches(pb::WatchDispatchesRequest {
            dialer_id: "d".into(),
        })
        .await
        .unwrap();
    let body = scrape(&app).await;
    let exported: std::collections::BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .flat_map(|(name, kind)| {
            let mut names = vec![name.clone()];
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{name}{suffix}"));
                }
            }
            names
        })
        .collect();
    for (what, text) in [("dashboard", &queries), ("alert rules", &exprs)] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{what} use metrics");
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{what} use metrics not exported: {missing:?}"
        );
    }
}
