//! `holdless simulate-day --from-store`: a day driven through the live server over
//! gRPC, then replayed unchanged from the stopped server's store, counts what the
//! server counted.

use std::process::Command;

use chrono::Duration;
use holdless::api::pb;

use crate::helpers::*;
use crate::live::agent;

#[derive(Clone, Copy)]
enum Fate {
    Answered { wait: i64, handle: i64 },
    Abandoned { wait: i64 },
}

/// The day's GetKpiReport total and the replay's `without_callbacks.total` agree on
/// every count (offered, answered, abandoned, and the service-level and short-abandon
/// splits behind the rates); ASA, service level and abandonment rate agree within
/// 0.001 (both are computed from the same millisecond waits).
#[tokio::test]
async fn an_unchanged_recorded_day_counts_what_the_server_counted() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    let start = at(WEEKDAY_NOON);
    let fates: Vec<Fate> = (0..40i64)
        .map(|i| match i % 5 {
            3 => Fate::Abandoned {
                wait: (i * 11) % 40,
            },
            _ => Fate::Answered {
                wait: (i * 7) % 50,
                handle: 120 + i,
            },
        })
        .collect();
    // (time, phase, call, step): 0 route, 1 answer or abandon, 2 end.
    let mut steps = Vec::new();
    for (i, f) in fates.iter().enumerate() {
        let t = start + Duration::seconds(90 * i as i64);
        steps.push((t, 0, i));
        match *f {
            Fate::Answered { wait, handle } => {
                steps.push((t + Duration::seconds(wait), 1, i));
                steps.push((t + Duration::seconds(wait + handle), 2, i));
            }
            Fate::Abandoned { wait } => steps.push((t + Duration::seconds(wait), 1, i)),
        }
    }
    steps.sort();
    for (t, phase, i) in steps {
        app.clock.set(t);
        let id = format!("rec-{i}");
        let (kind, handle) = match (phase, fates[i]) {
            (0, _) => {
                app.route(call(&id, "+12125550100")).await;
                continue;
            }
            (1, Fate::Answered { .. }) => (pb::CallEventType::Answered, None),
            (1, Fate::Abandoned { .. }) => (pb::CallEventType::Abandoned, None),
            (_, Fate::Answered { handle, .. }) => (pb::CallEventType::Ended, Some(handle)),
            (_, Fate::Abandoned { .. }) => unreachable!("abandoned calls do not end"),
        };
        app.routing()
            .report_call_event(pb::ReportCallEventRequest {
                call_id: id,
                r#type: kind as i32,
                agent_id: if kind == pb::CallEventType::Answered {
                    "a1".into()
                } else {
                    String::new()
                },
                queue_id: String::new(),
                handle_time: handle.map(|s| prost_types::Duration {
                    seconds: s,
                    nanos: 0,
                }),
            })
            .await
            .expect("event accepted");
    }
    let report = pb::stats_service_client::StatsServiceClient::new(app.channel.clone())
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: "general".into(),
            from: Some(prost_types::Timestamp {
                seconds: start.timestamp(),
                nanos: 0,
            }),
            to: Some(prost_types::Timestamp {
                seconds: (start + Duration::hours(2)).timestamp(),
                nanos: 0,
            }),
            interval: None,
        })
        .await
        .expect("report")
        .into_inner()
        .total
        .expect("total");
    let live = report.counts.expect("counts");
    let figures = report.figures.expect("figures");
    assert_eq!(live.offered, 40);

    let dir = app.data_dir.clone();
    app.stop().await.expect("stops");
    let config = dir.path().join("sim.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = {:?}\n",
            dir.path().join("store").display().to_string()
        ),
    )
    .expect("config written");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_holdless"))
            .current_dir(dir.path())
            .env_remove("HOLDLESS__STORE__PATH")
            .args([
                "simulate-day",
                "--from-store",
                "2026-11-25",
                "--json",
                "--config",
            ])
            .arg(&config)
            .output()
            .expect("runs")
    })
    .await
    .expect("joins");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let sim = &json["without_callbacks"]["total"];
    assert_eq!(json["short_abandon_secs"], 5.0);
    for (field, want) in [
        ("offered", live.offered),
        ("answered", live.answered),
        ("abandoned", live.abandoned),
        ("answered_within_target", live.answered_within_target),
        ("abandoned_after_target", live.abandoned_after_target),
        ("abandoned_after_grace", live.abandoned_after_grace),
    ] {
        assert_eq!(sim[field].as_u64(), Some(want), "{field}: {sim}");
    }
    let close = |field: &str, want: Option<f64>| {
        let got = sim[field].as_f64();
        assert!(
            matches!((got, want), (Some(g), Some(w)) if (g - w).abs() < 1e-3),
            "{field}: simulated {got:?}, live {want:?}"
        );
    };
    let asa = figures
        .average_speed_of_answer
        .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9);
    close("asa_secs", asa);
    close("service_level", figures.service_level);
    close("abandonment_rate", figures.abandonment_rate);
}

fn day_request() -> pb::SimulateDayRequest {
    pb::SimulateDayRequest {
        queue_ids: vec!["general".into()],
        start_time: Some(prost_types::Timestamp {
            seconds: at(WEEKDAY_NOON).timestamp(),
            nanos: 0,
        }),
        hours: 3,
        calls_per_hour: vec![150.0],
        aht_secs: Some(240.0),
        patience_secs: Some(180.0),
        agents: Some(9),
        offer_threshold_secs: Some(60),
        acceptance_rate: Some(0.6),
        seed: 4,
        ..Default::default()
    }
}

#[tokio::test]
async fn simulate_day_compares_the_active_plan_with_and_without_callbacks() {
    let app = spawn_app().await;
    let r = app
        .plans()
        .simulate_day(day_request())
        .await
        .expect("simulated")
        .into_inner();
    let (w, wo) = (r.with_callbacks.unwrap(), r.without_callbacks.unwrap());
    assert!(wo.offered > 300, "{wo:?}");
    // The same callers: each is offered to the line once, or became a callback.
    assert_eq!(w.offered + w.callbacks_requested, wo.offered);
    assert!(w.callbacks_requested > 0 && w.hold_time_avoided_seconds > 0.0);
    assert_eq!(wo.callbacks_offered, 0);
    assert_eq!(r.short_abandon_seconds, 5.0);
    assert!(r.asa_basis.contains("answered"));
    let json: serde_json::Value = serde_json::from_str(&r.report_json).expect("JSON");
    assert_eq!(
        json["with_callbacks"]["hours"].as_array().map(Vec::len),
        Some(3)
    );
    // One seed, one answer.
    let again = app
        .plans()
        .simulate_day(day_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.with_callbacks, Some(w));
}

#[tokio::test]
async fn simulate_day_refuses_bad_parameters_naming_each_field() {
    let app = spawn_app().await;
    let cases: Vec<(pb::SimulateDayRequest, &str)> = vec![
        (
            pb::SimulateDayRequest {
                calls_per_hour: vec![],
                ..day_request()
            },
            "calls_per_hour",
        ),
        (
            pb::SimulateDayRequest {
                acceptance_rate: Some(1.5),
                ..day_request()
            },
            "acceptance_rate",
        ),
        (
            pb::SimulateDayRequest {
                queue_ids: vec!["nope".into()],
                ..day_request()
            },
            "queue_ids[0]",
        ),
        (
            pb::SimulateDayRequest {
                runs: 1000,
                ..day_request()
            },
            "runs",
        ),
        (
            pb::SimulateDayRequest {
                plan_toml: "[[queues]]\nid = 3\n".into(),
                ..day_request()
            },
            "plan_toml.",
        ),
    ];
    for (req, field) in cases {
        let status = app.plans().simulate_day(req).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{field}: {status:?}"
        );
        assert!(
            violations(&status).iter().any(|v| v.starts_with(field)),
            "{field}: {:?}",
            violations(&status)
        );
    }
}
