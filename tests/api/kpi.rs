//! KPI reports, surveys and staffing through gRPC: a seeded synthetic day of calls is
//! driven through the API with the manual clock, and the report must equal a naive
//! count over the same generated calls.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use holdless::api::pb;

use crate::helpers::*;
use crate::live::agent;

/// xorshift64*: small, deterministic, good enough to shuffle a test day.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo + 1) as u64) as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// Answered after `wait`, then ended after `handle` (or transferred away).
    Answered {
        wait: i64,
        handle: i64,
        transferred: bool,
    },
    /// Still talking at the end of the day.
    Talking {
        wait: i64,
    },
    Abandoned {
        wait: i64,
    },
}

#[derive(Debug, Clone)]
struct SimCall {
    id: String,
    caller: String,
    arrival: DateTime<Utc>,
    fate: Fate,
}

fn generate_day(seed: u64, calls: usize, start: DateTime<Utc>) -> Vec<SimCall> {
    let mut rng = Rng(seed);
    let mut t = start;
    (0..calls)
        .map(|i| {
            t += Duration::seconds(rng.range(20, 240));
            let caller = format!("+1212555{:04}", rng.below(30));
            let fate = match rng.below(100) {
                0..=59 => Fate::Answered {
                    wait: rng.range(0, 60),
                    handle: rng.range(30, 600),
                    transferred: rng.below(5) == 0,
                },
                60..=69 => Fate::Talking {
                    wait: rng.range(0, 40),
                },
                _ => Fate::Abandoned {
                    wait: rng.range(0, 45),
                },
            };
            SimCall {
                id: format!("day-{i}"),
                caller,
                arrival: t,
                fate,
            }
        })
        .collect()
}

#[derive(Debug)]
enum Step {
    Route(usize),
    Answer(usize),
    End(usize, i64),
    Transfer(usize),
    Abandon(usize),
}

async fn call_event(
    app: &TestApp,
    call_id: &str,
    kind: pb::CallEventType,
    handle: Option<i64>,
) -> Result<bool, tonic::Status> {
    app.routing()
        .report_call_event(pb::ReportCallEventRequest {
            call_id: call_id.into(),
            r#type: kind as i32,
            agent_id: if kind == pb::CallEventType::Answered {
                "a1".into()
            } else {
                String::new()
            },
            queue_id: String::new(),
            handle_time: handle.and_then(secs),
        })
        .await
        .map(|r| r.into_inner().duplicate)
}

/// CSAT, CES, NPS.
type SurveyAnswers = (Option<u32>, Option<u32>, Option<u32>);

/// Expected counters, computed naively from the generated calls.
fn naive_counts(
    calls: &[SimCall],
    offered_cb: &[bool],
    surveys: &BTreeMap<usize, SurveyAnswers>,
    target: i64,
    hour_of: impl Fn(DateTime<Utc>) -> usize,
    hours: usize,
) -> (Vec<pb::KpiCounts>, pb::KpiCounts) {
    let mut rows = vec![pb::KpiCounts::default(); hours];
    let mut wait_ms = vec![0u64; hours];
    let mut handle_ms = vec![0u64; hours];
    for (i, c) in calls.iter().enumerate() {
        let h = hour_of(c.arrival);
        let r = &mut rows[h];
        r.offered += 1;
        if offered_cb[i] {
            r.callbacks_offered += 1;
        }
        let answered_wait = match c.fate {
            Fate::Answered { wait, .. } | Fate::Talking { wait } => Some(wait),
            Fate::Abandoned { wait } => {
                r.abandoned += 1;
                if wait > target {
                    r.abandoned_after_target += 1;
                }
                if wait > 5 {
                    r.abandoned_after_grace += 1;
                }
                None
            }
        };
        if let Some(wait) = answered_wait {
            r.answered += 1;
            wait_ms[h] += wait as u64 * 1000;
            if wait <= target {
                r.answered_within_target += 1;
            }
            r.answered_contacts += 1;
            // Not resolved at first contact: the same number called again within 7 days.
            let again = calls.iter().any(|o| {
                o.id != c.id
                    && o.caller == c.caller
                    && o.arrival > c.arrival
                    && o.arrival - c.arrival <= Duration::days(7)
            });
            if again {
                r.repeated_contacts += 1;
            }
        }
        match c.fate {
            Fate::Answered {
                transferred: true, ..
            } => r.transferred += 1,
            Fate::Answered { handle, .. } => {
                r.handled += 1;
                handle_ms[h] += handle as u64 * 1000;
            }
            _ => {}
        }
        if let Some((csat, ces, nps)) = surveys.get(&i) {
            if let Some(v) = csat {
                r.csat_answers += 1;
                r.csat_satisfied += u64::from(*v >= 4);
            }
            if let Some(v) = ces {
                r.ces_answers += 1;
                r.ces_sum += u64::from(*v);
            }
            if let Some(v) = nps {
                r.nps_answers += 1;
                r.nps_promoters += u64::from(*v >= 9);
                r.nps_detractors += u64::from(*v <= 6);
            }
        }
    }
    let ms = |m: u64| Some(duration_ms(m));
    let mut total = pb::KpiCounts::default();
    let (mut tw, mut th) = (0, 0);
    for (h, r) in rows.iter_mut().enumerate() {
        r.total_answer_wait = ms(wait_ms[h]);
        r.total_handle_time = ms(handle_ms[h]);
        r.hold_time_avoided = ms(0);
        r.total_time_to_connect = ms(0);
        tw += wait_ms[h];
        th += handle_ms[h];
        macro_rules! sum {
            ($($f:ident),*) => { $( total.$f += r.$f; )* };
        }
        sum!(
            offered,
            answered,
            answered_within_target,
            abandoned,
            abandoned_after_target,
            abandoned_after_grace,
            transferred,
            handled,
            answered_contacts,
            repeated_contacts,
            callbacks_offered,
            csat_answers,
            csat_satisfied,
            ces_answers,
            ces_sum,
            nps_answers,
            nps_promoters,
            nps_detractors
        );
    }
    total.total_answer_wait = ms(tw);
    total.total_handle_time = ms(th);
    total.hold_time_avoided = ms(0);
    total.total_time_to_connect = ms(0);
    (rows, total)
}

fn duration_ms(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

#[tokio::test]
async fn a_seeded_day_of_calls_reports_exactly_the_naive_counts() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    let start = at(WEEKDAY_NOON);
    let calls = generate_day(0x5eed_cafe, 140, start);

    let mut steps: Vec<(DateTime<Utc>, usize, Step)> = Vec::new();
    for (i, c) in calls.iter().enumerate() {
        let a = c.arrival;
        steps.push((a, 0, Step::Route(i)));
        match c.fate {
            Fate::Answered {
                wait,
                handle,
                transferred,
            } => {
                steps.push((a + Duration::seconds(wait), 1, Step::Answer(i)));
                let done = a + Duration::seconds(wait + handle);
                steps.push((
                    done,
                    2,
                    if transferred {
                        Step::Transfer(i)
                    } else {
                        Step::End(i, handle)
                    },
                ));
            }
            Fate::Talking { wait } => steps.push((a + Duration::seconds(wait), 1, Step::Answer(i))),
            Fate::Abandoned { wait } => {
                steps.push((a + Duration::seconds(wait), 1, Step::Abandon(i)))
            }
        }
    }
    steps.sort_by_key(|(t, phase, s)| {
        let i = match s {
            Step::Route(i)
            | Step::Answer(i)
            | Step::End(i, _)
            | Step::Transfer(i)
            | Step::Abandon(i) => *i,
        };
        (*t, *phase, i)
    });

    let mut offered_cb = vec![false; calls.len()];
    for (t, _, step) in &steps {
        app.clock.set(*t);
        match *step {
            Step::Route(i) => {
                let d = app.route(call(&calls[i].id, &calls[i].caller)).await;
                assert_eq!(d.queue_id, "general");
                offered_cb[i] = d.offer_callback;
            }
            Step::Answer(i) => {
                call_event(&app, &calls[i].id, pb::CallEventType::Answered, None)
                    .await
                    .unwrap();
            }
            Step::End(i, handle) => {
                call_event(&app, &calls[i].id, pb::CallEventType::Ended, Some(handle))
                    .await
                    .unwrap();
            }
            Step::Transfer(i) => {
                call_event(&app, &calls[i].id, pb::CallEventType::Transferred, None)
                    .await
                    .unwrap();
            }
            Step::Abandon(i) => {
                call_event(&app, &calls[i].id, pb::CallEventType::Abandoned, None)
                    .await
                    .unwrap();
            }
        }
    }
    assert!(
        offered_cb.iter().any(|o| *o),
        "the day should include offers"
    );

    // Surveys on every third answered call, with some questions skipped.
    let mut rng = Rng(42);
    let mut surveys = BTreeMap::new();
    for (i, c) in calls.iter().enumerate() {
        if matches!(c.fate, Fate::Abandoned { .. }) || i % 3 != 0 {
            continue;
        }
        let pick =
            |rng: &mut Rng, lo: i64, hi: i64| (rng.below(4) != 0).then(|| rng.range(lo, hi) as u32);
        let (csat, ces, nps) = (
            pick(&mut rng, 1, 5),
            pick(&mut rng, 1, 7),
            pick(&mut rng, 0, 10),
        );
        if csat.is_none() && ces.is_none() && nps.is_none() {
            continue;
        }
        stats(&app)
            .submit_survey(pb::SubmitSurveyRequest {
                contact_id: c.id.clone(),
                csat,
                ces,
                nps,
            })
            .await
            .expect("survey accepted");
        surveys.insert(i, (csat, ces, nps));
    }

    let hours = 8usize;
    let report = stats(&app)
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: "general".into(),
            from: ts(start),
            to: ts(start + Duration::hours(hours as i64)),
            interval: secs(3600),
        })
        .await
        .expect("report")
        .into_inner();
    let last = calls.last().unwrap().arrival;
    assert!(
        last < start + Duration::hours(hours as i64),
        "day fits the report"
    );
    let hour_of = |t: DateTime<Utc>| ((t - start).num_seconds() / 3600) as usize;
    let (rows, total) = naive_counts(&calls, &offered_cb, &surveys, 20, hour_of, hours);
    assert_eq!(report.intervals.len(), hours);
    for (h, (got, want)) in report.intervals.iter().zip(&rows).enumerate() {
        assert_eq!(got.counts.as_ref(), Some(want), "hour {h}");
    }
    let got_total = report.total.expect("total");
    assert_eq!(got_total.counts.as_ref(), Some(&total));

    // The figures follow the definitions from the same counts.
    let f = got_total.figures.expect("figures");
    let answered = total.answered as f64;
    assert_eq!(
        f.service_level,
        Some(
            total.answered_within_target as f64
                / (total.answered + total.abandoned_after_target) as f64
        )
    );
    assert_eq!(
        f.abandonment_rate,
        Some(total.abandoned_after_grace as f64 / total.offered as f64)
    );
    assert_eq!(f.transfer_rate, Some(total.transferred as f64 / answered));
    assert_eq!(
        f.first_contact_resolution,
        Some((total.answered_contacts - total.repeated_contacts) as f64 / answered)
    );
    let asa_ms = {
        let d = total.total_answer_wait.unwrap();
        d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6
    };
    let asa = f.average_speed_of_answer.expect("asa");
    let got_asa = asa.seconds as f64 + f64::from(asa.nanos) / 1e9;
    assert!((got_asa - asa_ms / answered / 1000.0).abs() < 1e-6);
    assert_eq!(
        f.nps,
        Some(
            100.0
                * (total.nps_promoters as f64 / total.nps_answers as f64
                    - total.nps_detractors as f64 / total.nps_answers as f64)
        )
    );
    assert_eq!(
        f.csat,
        Some(total.csat_satisfied as f64 / total.csat_answers as f64)
    );
    assert!(!report.fcr_final, "the day is not 7 days old yet");
    // Peaks: the arrivals table holds every offered call, in New York time.
    assert_eq!(report.arrivals_time_zone, "America/New_York");
    let arrivals: u64 = report.arrivals.iter().map(|a| a.calls).sum();
    assert_eq!(arrivals, total.offered);
    assert!(report.arrivals.iter().all(|a| a.weekday == 2));

    // Counters are durable: the same report after a restart.
    let app = app.restart().await;
    let again = stats(&app)
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: "general".into(),
            from: ts(start),
            to: ts(start + Duration::hours(hours as i64)),
            interval: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.intervals.len(), 1);
    assert_eq!(again.total.unwrap().counts, Some(total));
}

#[tokio::test]
async fn surveys_are_validated_and_taken_once_per_known_contact() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    app.route(call("s1", "+12125550100")).await;
    call_event(&app, "s1", pb::CallEventType::Answered, None)
        .await
        .unwrap();
    let submit = |contact: &str, csat, ces, nps| {
        let mut client = stats(&app);
        let req = pb::SubmitSurveyRequest {
            contact_id: contact.into(),
            csat,
            ces,
            nps,
        };
        async move { client.submit_survey(req).await }
    };
    let e = submit("s1", Some(6), Some(0), Some(11)).await.unwrap_err();
    assert_eq!(violations(&e), vec!["csat", "ces", "nps"]);
    let e = submit("s1", None, None, None).await.unwrap_err();
    assert_eq!(violations(&e), vec!["csat"]);
    let e = submit("", Some(5), None, None).await.unwrap_err();
    assert_eq!(violations(&e), vec!["contact_id"]);
    let e = submit("never-seen", Some(5), None, None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    submit("s1", Some(5), Some(2), Some(10))
        .await
        .expect("first survey");
    let e = submit("s1", Some(1), None, None).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn kpi_report_rejects_bad_ranges_with_field_violations() {
    let app = spawn_app().await;
    let now = at(WEEKDAY_NOON);
    let e = stats(&app)
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: String::new(),
            from: None,
            to: ts(now),
            interval: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["from"]);
    let e = stats(&app)
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: String::new(),
            from: ts(now),
            to: ts(now + Duration::hours(1)),
            interval: secs(600),
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["interval"]);
    let e = stats(&app)
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: String::new(),
            from: ts(now),
            to: ts(now - Duration::hours(1)),
            interval: None,
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["to"]);
}

#[tokio::test]
async fn staffing_plan_reproduces_the_published_erlang_example() {
    let app = spawn_app().await;
    let now = at(WEEKDAY_NOON);
    // 100 calls per 30 minutes, AHT 180 s; general's target is 80% in 20 s.
    let plan = stats(&app)
        .get_staffing_plan(pb::GetStaffingPlanRequest {
            queue_id: "general".into(),
            from: ts(now),
            to: ts(now + Duration::hours(2)),
            patience: secs(120),
            arrivals_per_hour: Some(200.0),
            average_handle_time: secs(180),
        })
        .await
        .expect("plan")
        .into_inner();
    assert_eq!(plan.hours.len(), 2);
    let c = plan.hours[0].erlang_c.expect("erlang c");
    assert_eq!(c.agents, 14);
    assert!((c.service_level - 0.888).abs() < 0.0005);
    assert!((c.probability_of_waiting - 0.174).abs() < 0.0005);
    let a = plan.hours[0].erlang_a.expect("erlang a");
    assert!(a.agents <= 14 && a.service_level >= 0.8);
    let e = stats(&app)
        .get_staffing_plan(pb::GetStaffingPlanRequest {
            queue_id: "nope".into(),
            from: ts(now),
            to: ts(now + Duration::hours(1)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&e), vec!["queue_id"]);
}

#[tokio::test]
async fn stats_and_staffing_commands_print_tables() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    app.route(call("cli-1", "+12125550100")).await;
    app.clock.advance(Duration::seconds(12));
    call_event(&app, "cli-1", pb::CallEventType::Answered, None)
        .await
        .unwrap();
    let server = format!("http://{}", app.addr);
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_holdless"))
                .env_remove("HOLDLESS_SERVER")
                .args(args)
                .output()
                .unwrap()
        })
    };
    let args = |s: &str| {
        s.split_whitespace()
            .map(str::to_owned)
            .chain(["--server".to_owned(), server.clone()])
            .collect::<Vec<_>>()
    };
    let out = run(args(
        "stats --queue general --from 2026-11-25 --to 2026-11-26",
    ))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let total = text
        .lines()
        .find(|l| l.starts_with("total"))
        .expect("total row");
    // One offered, one answered within 20 s: 100% service level, 12 s ASA.
    assert_eq!(
        total.split_whitespace().take(6).collect::<Vec<_>>(),
        vec!["total", "1", "1", "0", "100.0%", "12.0"],
        "{text}"
    );
    let out = run(args(
        "staffing --queue general --date 2026-11-25 --calls-per-hour 200 --aht-secs 180",
    ))
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let noon = text
        .lines()
        .find(|l| l.starts_with("15:00"))
        .expect("15:00 row");
    assert_eq!(noon.split_whitespace().nth(3), Some("14"), "{text}");
    let out = run(args("stats --from yesterday")).await.unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// `total`'s (offered, answered, transferred) of a report over the test day.
async fn day_counts(app: &TestApp, queue: &str) -> (u64, u64, u64, u64) {
    let now = at(WEEKDAY_NOON);
    let r = stats(app)
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: queue.into(),
            from: ts(now - Duration::hours(1)),
            to: ts(now + Duration::hours(1)),
            interval: None,
        })
        .await
        .unwrap()
        .into_inner();
    let c = r.total.unwrap().counts.unwrap();
    (c.offered, c.answered, c.transferred, c.transferred_in)
}

#[tokio::test]
async fn all_queue_totals_count_a_transferred_call_once_at_its_entry_queue() {
    let app = spawn_app().await;
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    app.route(call("x-1", "+12125550100")).await;
    app.clock.advance(Duration::seconds(10));
    call_event(&app, "x-1", pb::CallEventType::Answered, None)
        .await
        .unwrap();
    app.clock.advance(Duration::seconds(60));
    // The agent hands the caller to sales, where another agent answers.
    app.routing()
        .report_call_event(pb::ReportCallEventRequest {
            call_id: "x-1".into(),
            r#type: pb::CallEventType::Transferred as i32,
            queue_id: "sales".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    app.clock.advance(Duration::seconds(15));
    call_event(&app, "x-1", pb::CallEventType::Answered, None)
        .await
        .unwrap();
    app.clock.advance(Duration::seconds(100));
    call_event(&app, "x-1", pb::CallEventType::Ended, Some(100))
        .await
        .unwrap();
    // Each queue saw a visit; all queues together saw one call, answered once.
    assert_eq!(day_counts(&app, "general").await, (1, 1, 1, 0));
    assert_eq!(day_counts(&app, "sales").await, (1, 1, 0, 1));
    assert_eq!(day_counts(&app, "").await, (1, 1, 1, 1));
}

#[tokio::test]
async fn staffing_leaves_idle_hours_unset_and_shows_every_figure() {
    let app = spawn_app_with(|_| {}).await;
    // Measured: one call in the 15:00 hour, none in the others.
    agent(&app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    app.route(call("s-1", "+12125550100")).await;
    app.clock.advance(Duration::seconds(12));
    call_event(&app, "s-1", pb::CallEventType::Answered, None)
        .await
        .unwrap();
    let now = at(WEEKDAY_NOON);
    let plan = stats(&app)
        .get_staffing_plan(pb::GetStaffingPlanRequest {
            queue_id: "general".into(),
            from: ts(now - Duration::hours(1)),
            to: ts(now + Duration::hours(1)),
            patience: secs(120),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let idle = &plan.hours[0];
    assert_eq!(idle.arrivals_per_hour, 0.0);
    assert!(
        idle.erlang_c.is_none() && idle.erlang_a.is_none(),
        "{idle:?}"
    );
    assert!(plan.hours[1].erlang_c.is_some() && plan.hours[1].erlang_a.is_some());

    let server = format!("http://{}", app.addr);
    let run = |extra: &'static str| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_holdless"))
                .env_remove("HOLDLESS_SERVER")
                .args(
                    format!(
                        "staffing --queue general --date 2026-11-25 --patience-secs 120 {extra}"
                    )
                    .split_whitespace(),
                )
                .args(["--server", &server])
                .output()
                .unwrap()
        })
    };
    let out = run("").await.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let header = text.lines().nth(1).unwrap();
    for col in ["agents A", "SL A", "P(ab)", "occ A"] {
        assert!(header.contains(col), "{text}");
    }
    let quiet = text.lines().find(|l| l.starts_with("14:00")).unwrap();
    assert_eq!(
        quiet.split_whitespace().skip(3).collect::<Vec<_>>(),
        vec!["-"; 8],
        "{text}"
    );
    let busy = text.lines().find(|l| l.starts_with("15:00")).unwrap();
    assert_eq!(busy.split_whitespace().count(), 11, "{text}");
    assert!(!busy.contains(" - "), "{text}");

    let out = run("--json").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["service_level_target"], 0.8);
    let h15 = v["hours"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["start"] == "2026-11-25 15:00")
        .unwrap();
    for key in [
        "agents",
        "service_level",
        "asa_secs",
        "probability_of_waiting",
        "occupancy",
    ] {
        assert!(h15["erlang_c"][key].is_number(), "{key}: {h15}");
        assert!(h15["erlang_a"][key].is_number(), "{key}: {h15}");
    }
    assert!(h15["erlang_a"]["probability_of_abandoning"].is_number());
    let h14 = &v["hours"][14];
    assert!(
        h14["erlang_c"].is_null() && h14["erlang_a"].is_null(),
        "{h14}"
    );
}

#[tokio::test]
async fn staffing_shows_the_target_as_configured() {
    let app = spawn_app().await;
    let plan = holdless::service::EXAMPLE_PLAN.replacen(
        "target_percent = 80,",
        "target_percent = 79.459,",
        1,
    );
    assert_ne!(plan, holdless::service::EXAMPLE_PLAN);
    app.plans()
        .apply_plan(crate::plans::apply(&plan, 1))
        .await
        .unwrap();
    let server = format!("http://{}", app.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_holdless"))
            .env_remove("HOLDLESS_SERVER")
            .args(["staffing", "--queue", "general", "--date", "2026-11-25"])
            .args(["--server", &server])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("target 79.459% within 20 s"), "{text}");
}

#[tokio::test]
async fn stats_shows_callback_and_survey_figures_and_the_all_queues_footnote() {
    let app = spawn_app().await;
    let server = format!("http://{}", app.addr);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_holdless"))
            .env_remove("HOLDLESS_SERVER")
            .args(["stats", "--from", "2026-11-25", "--server", &server])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let header = text
        .lines()
        .find(|l| l.starts_with("callbacks"))
        .unwrap_or_default();
    for col in ["cb ok", "attempts", "avoided", "to connect", "CES"] {
        assert!(header.contains(col), "{col}: {text}");
    }
    assert!(
        text.contains("a transferred call counts once, in the queue it entered"),
        "{text}"
    );
}
