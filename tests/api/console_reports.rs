//! The console's Staffing and KPIs pages over HTTP against a real server: seeded calls
//! go in through gRPC, and every figure a page (or the CSV) shows must equal what
//! `GetKpiReport` and `GetStaffingPlan` return for the same range and inputs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use holdless::api::pb;
use regex::Regex;

use crate::helpers::*;
use crate::live::agent;

/// One HTTP/1.1 exchange (`Connection: close`), as a browser would send it.
async fn http(addr: SocketAddr, method: &str, path: &str, cookie: &str, body: &str) -> HttpReply {
    let headers: &[(&str, &str)] = if cookie.is_empty() {
        &[]
    } else {
        &[("Cookie", cookie)]
    };
    http_exchange(
        addr,
        method,
        path,
        headers,
        body,
        StdDuration::from_secs(20),
    )
    .await
}

async fn get(app: &TestApp, path: &str) -> HttpReply {
    http(app.console_addr.expect("console on"), "GET", path, "", "").await
}

fn to_secs(d: &Option<prost_types::Duration>) -> Option<f64> {
    d.as_ref()
        .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

async fn event(app: &TestApp, call_id: &str, kind: pb::CallEventType, handle: Option<i64>) {
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
        .expect("call event");
}

/// Wednesday 2026-11-25 in `general` (New York): at 10:00 two calls, one answered after
/// 12 s and ended after 100 s, one abandoned after 30 s; at 12:00 one answered after
/// 25 s and ended after 200 s. Both answered callers answer the survey.
async fn seed(app: &TestApp) {
    agent(app, "a1", &["support"], pb::AgentState::Busy, 0).await;
    app.route(call("k-1", "+12125550100")).await;
    app.route(call("k-2", "+12125550101")).await;
    app.clock.advance(Duration::seconds(12));
    event(app, "k-1", pb::CallEventType::Answered, None).await;
    app.clock.advance(Duration::seconds(18));
    event(app, "k-2", pb::CallEventType::Abandoned, None).await;
    app.clock.advance(Duration::seconds(70));
    event(app, "k-1", pb::CallEventType::Ended, Some(100)).await;
    app.clock.set(at("2026-11-25T17:05:00Z"));
    app.route(call("k-3", "+12125550102")).await;
    app.clock.advance(Duration::seconds(25));
    event(app, "k-3", pb::CallEventType::Answered, None).await;
    app.clock.advance(Duration::seconds(200));
    event(app, "k-3", pb::CallEventType::Ended, Some(200)).await;
    for (id, csat, ces, nps) in [("k-1", 5, 2, 10), ("k-3", 2, 6, 3)] {
        stats(app)
            .submit_survey(pb::SubmitSurveyRequest {
                contact_id: id.into(),
                csat: Some(csat),
                ces: Some(ces),
                nps: Some(nps),
            })
            .await
            .expect("survey");
    }
}

/// New York's 2026-11-25, midnight to midnight.
fn ny_day() -> (DateTime<Utc>, DateTime<Utc>) {
    (at("2026-11-25T05:00:00Z"), at("2026-11-26T05:00:00Z"))
}

/// `data-key` -> `data-value` of the cells inside the first element that carries
/// `marker` (a `<tr ...>` attribute), up to its `</tr>`.
fn row_values(html: &str, marker: &str) -> BTreeMap<String, String> {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in page"));
    let rest = &html[start..];
    let row = &rest[..rest.find("</tr>").expect("row end")];
    let cell = Regex::new(r#"data-key="([a-z_]+)"(?: data-value="([^"]+)")?"#).unwrap();
    cell.captures_iter(row)
        .map(|c| {
            (
                c[1].to_owned(),
                c.get(2).map_or(String::new(), |v| v.as_str().to_owned()),
            )
        })
        .collect()
}

/// The body with apostrophes unescaped, however the page escaped them.
fn text(r: &HttpReply) -> String {
    r.body.replace("&#39;", "'").replace("&#x27;", "'")
}

fn num(v: &BTreeMap<String, String>, key: &str) -> Option<f64> {
    let raw = v.get(key).unwrap_or_else(|| panic!("no {key} in {v:?}"));
    (!raw.is_empty()).then(|| raw.parse().expect("a number"))
}

/// The page's figures of one row against the RPC's, measure by measure.
fn assert_figures(v: &BTreeMap<String, String>, r: &pb::KpiInterval) {
    let c = r.counts.as_ref().unwrap();
    let f = r.figures.as_ref().unwrap();
    assert_eq!(num(v, "offered"), Some(c.offered as f64));
    assert_eq!(num(v, "answered"), Some(c.answered as f64));
    assert_eq!(num(v, "abandoned"), Some(c.abandoned as f64));
    let close = |key: &str, want: Option<f64>| {
        let got = num(v, key);
        match (got, want) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-6, "{key}: page {g}, RPC {w}"),
            (g, w) => assert_eq!(g, w, "{key}"),
        }
    };
    close("service_level", f.service_level);
    close("asa_secs", to_secs(&f.average_speed_of_answer));
    close("abandonment_rate", f.abandonment_rate);
    close("transfer_rate", f.transfer_rate);
    close("fcr", f.first_contact_resolution);
    close("callback_acceptance_rate", f.callback_acceptance_rate);
    close("callback_success_rate", f.callback_success_rate);
    close("hold_time_avoided_secs", to_secs(&f.hold_time_avoided));
    close("csat", f.csat);
    close("ces", f.ces);
    close("nps", f.nps);
}

async fn report(
    app: &TestApp,
    queue: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    interval: Option<i64>,
) -> pb::GetKpiReportResponse {
    stats(app)
        .get_kpi_report(pb::GetKpiReportRequest {
            queue_id: queue.into(),
            from: ts(from),
            to: ts(to),
            interval: interval.and_then(secs),
        })
        .await
        .expect("kpi report")
        .into_inner()
}

#[tokio::test]
async fn staffing_heatmap_and_hourly_plan_show_what_the_rpcs_return() {
    let app = spawn_app().await;
    seed(&app).await;
    agent(&app, "a2", &["support"], pb::AgentState::Available, 400).await;
    let page = get(
        &app,
        "/staffing?queue=general&from=2026-11-25&to=2026-11-25",
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);

    let cell = Regex::new(
        r#"class="heat-cell" data-weekday="(\w+)" data-hour="(\d+)" data-calls="(\d+)""#,
    )
    .unwrap();
    let cells: Vec<(String, u32, u64)> = cell
        .captures_iter(&page.body)
        .map(|c| {
            (
                c[1].to_owned(),
                c[2].parse().unwrap(),
                c[3].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(cells.len(), 7 * 24);
    let rpc = report(&app, "general", ny_day(), None).await;
    assert_eq!(rpc.arrivals_time_zone, "America/New_York");
    let days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let want: BTreeMap<(String, u32), u64> = rpc
        .arrivals
        .iter()
        .map(|a| ((days[a.weekday as usize].to_owned(), a.hour), a.calls))
        .collect();
    let shown: BTreeMap<(String, u32), u64> = cells
        .iter()
        .filter(|c| c.2 > 0)
        .map(|(d, h, n)| ((d.clone(), *h), *n))
        .collect();
    assert_eq!(shown, want);
    assert_eq!(
        shown,
        BTreeMap::from([(("Wed".into(), 10), 2), (("Wed".into(), 12), 1)]),
        "the seeded calls, in New York hours"
    );

    let plan = stats(&app)
        .get_staffing_plan(pb::GetStaffingPlanRequest {
            queue_id: "general".into(),
            from: ts(ny_day().0),
            to: ts(ny_day().1),
            patience: secs(120),
            ..Default::default()
        })
        .await
        .expect("staffing plan")
        .into_inner();
    assert_eq!(plan.hours.len(), 24);
    let now_hour = at("2026-11-25T17:00:00Z");
    for h in &plan.hours {
        let start = DateTime::from_timestamp(h.start.as_ref().unwrap().seconds, 0).unwrap();
        let marker = format!("<tr data-start=\"{}\"", start.to_rfc3339());
        if h.arrivals_per_hour == 0.0 && start != now_hour {
            assert!(!page.body.contains(&marker), "quiet hour {start} listed");
            continue;
        }
        let v = row_values(&page.body, &marker);
        assert_eq!(num(&v, "arrivals"), Some(h.arrivals_per_hour), "{start}");
        assert_eq!(
            num(&v, "erlang_c"),
            h.erlang_c.as_ref().map(|s| f64::from(s.agents)),
            "{start}"
        );
        assert_eq!(
            num(&v, "erlang_a"),
            h.erlang_a.as_ref().map(|s| f64::from(s.agents)),
            "{start}"
        );
    }
    assert!(plan.hours[10].erlang_c.is_some(), "10:00 had calls");
    assert!(
        page.body.contains(r#"id="quiet-hours" data-value="22""#),
        "the day's 24 hours less 10:00 and 12:00, the hours with calls"
    );
    // a1 (busy) and a2 (available) are logged in; the clock is in the 12:00 hour.
    assert!(page.body.contains(r#"id="staffed-now" data-value="2""#));
    let noon = row_values(&page.body, "data-start=\"2026-11-25T17:00:00+00:00\"");
    assert_eq!(num(&noon, "staffed"), Some(2.0));
}

/// The session cookie and CSRF token an open-mode console hands a first visitor.
async fn session(app: &TestApp) -> (String, String) {
    let page = get(app, "/staffing?queue=general").await;
    assert_eq!(page.status, 200, "{}", page.body);
    let cookie = page
        .header("set-cookie")
        .expect("session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let csrf = Regex::new(r#"name="csrf" value="([0-9a-f]+)""#)
        .unwrap()
        .captures(&page.body)
        .expect("the what-if form carries a CSRF token")[1]
        .to_owned();
    (cookie, csrf)
}

fn what_if_body(csrf: &str, fields: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("csrf".to_owned(), csrf.to_owned()),
        ("queue".to_owned(), "general".to_owned()),
        ("from".to_owned(), "2026-11-25".to_owned()),
        ("to".to_owned(), "2026-11-25".to_owned()),
    ];
    pairs.extend(
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", v.replace('%', "%25").replace(' ', "+")))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn what_if_recomputes_the_plan_as_the_staffing_rpc_does() {
    let app = spawn_app().await;
    let (cookie, csrf) = session(&app).await;
    let body = what_if_body(
        &csrf,
        &[
            ("sl_target", "80"),
            ("answer_secs", "20"),
            ("aht_secs", "180"),
            ("patience_secs", "90"),
            ("f09", "200"),
            ("f10", "37.5"),
        ],
    );
    let console = app.console_addr.unwrap();
    let page = http(console, "POST", "/staffing/what-if", &cookie, &body).await;
    assert_eq!(page.status, 200, "{}", page.body);
    // `general` plans for 80% within 20 s: the RPC with the same inputs, one hour.
    for (hour, calls) in [(9, 200.0), (10, 37.5)] {
        let rpc = stats(&app)
            .get_staffing_plan(pb::GetStaffingPlanRequest {
                queue_id: "general".into(),
                from: ts(at(WEEKDAY_NOON)),
                to: ts(at(WEEKDAY_NOON) + Duration::hours(1)),
                patience: secs(90),
                arrivals_per_hour: Some(calls),
                average_handle_time: secs(180),
            })
            .await
            .unwrap()
            .into_inner();
        let want = &rpc.hours[0];
        let v = row_values(&page.body, &format!("<tr data-hour=\"{hour}\""));
        let c = want.erlang_c.as_ref().unwrap();
        let a = want.erlang_a.as_ref().unwrap();
        assert_eq!(num(&v, "arrivals"), Some(calls));
        assert_eq!(num(&v, "erlang_c"), Some(f64::from(c.agents)), "{hour}");
        assert_eq!(num(&v, "service_level_c"), Some(c.service_level));
        assert_eq!(num(&v, "erlang_a"), Some(f64::from(a.agents)), "{hour}");
        assert_eq!(num(&v, "service_level_a"), Some(a.service_level));
        assert_eq!(num(&v, "abandoning_a"), Some(a.probability_of_abandoning));
    }
    let quiet = row_values(&page.body, "<tr data-hour=\"3\"");
    assert_eq!(num(&quiet, "erlang_c"), None, "no calls, nothing to plan");
    assert!(
        page.body.contains(r#"value="37.5""#),
        "the inputs stay as entered"
    );
}

#[tokio::test]
async fn what_if_with_bad_inputs_says_why_with_400_and_no_plan() {
    let app = spawn_app().await;
    let (cookie, csrf) = session(&app).await;
    let body = what_if_body(
        &csrf,
        &[
            ("sl_target", "150"),
            ("answer_secs", "20"),
            ("aht_secs", "abc"),
            ("f07", "-4"),
        ],
    );
    let console = app.console_addr.unwrap();
    let page = http(console, "POST", "/staffing/what-if", &cookie, &body).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("The plan was not recomputed"));
    assert!(page
        .body
        .contains("sl_target: must be above 0 and below 100"));
    assert!(text(&page).contains("aht_secs: 'abc' is not a number"));
    assert!(page.body.contains("f07: calls in hour 07:00 must be 0 to"));
    assert!(
        !page.body.contains("what-if-plan"),
        "no plan for bad inputs"
    );
    assert!(
        page.body.contains(r#"value="abc""#),
        "the inputs stay as entered"
    );
    // Without the session's CSRF token nothing is recomputed.
    let forged = what_if_body("00", &[("sl_target", "80")]);
    let r = http(console, "POST", "/staffing/what-if", &cookie, &forged).await;
    assert_eq!(r.status, 403);
}

#[tokio::test]
async fn bad_page_parameters_are_400_pages_that_say_why() {
    let app = spawn_app().await;
    for (path, says) in [
        (
            "/staffing?from=yesterday",
            "from: 'yesterday' is not a date",
        ),
        (
            "/staffing?queue=nope",
            "queue: queue 'nope' is not in the active plan",
        ),
        (
            "/staffing?from=2026-11-20&to=2026-11-10",
            "to: must not be before from",
        ),
        (
            "/staffing?patience=-3",
            "patience: must be a positive number",
        ),
        ("/kpis?period=month", "period: must be day or week"),
        ("/kpis?date=25.11.2026", "date: '25.11.2026' is not a date"),
        ("/kpis?queue=nope", "queue 'nope' is not in the active plan"),
        (
            "/kpis.csv?queue=nope",
            "queue 'nope' is not in the active plan",
        ),
    ] {
        let r = get(&app, path).await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(text(&r).contains(says), "{path}: {}", r.body);
    }
}

#[tokio::test]
async fn kpi_day_page_and_csv_show_the_kpi_report_per_queue_and_in_total() {
    let app = spawn_app().await;
    seed(&app).await;
    let page = get(&app, "/kpis?period=day&date=2026-11-25&queue=general").await;
    assert_eq!(page.status, 200, "{}", page.body);
    // The period is New York's day (the queue's zone), by hour.
    let general = report(&app, "general", ny_day(), Some(3600)).await;
    let all = report(&app, "", ny_day(), Some(3600)).await;
    let sales = report(&app, "sales", ny_day(), Some(3600)).await;
    assert_figures(
        &row_values(&page.body, r#"data-scope="general""#),
        general.total.as_ref().unwrap(),
    );
    assert_figures(
        &row_values(&page.body, r#"data-scope="*""#),
        all.total.as_ref().unwrap(),
    );
    assert_figures(
        &row_values(&page.body, r#"data-scope="sales""#),
        sales.total.as_ref().unwrap(),
    );
    assert_eq!(general.intervals.len(), 24);
    for r in &general.intervals {
        let start = DateTime::from_timestamp(r.start.as_ref().unwrap().seconds, 0).unwrap();
        let v = row_values(
            &page.body,
            &format!("<tr data-start=\"{}\"", start.to_rfc3339()),
        );
        assert_figures(&v, r);
    }
    let f = general.total.as_ref().unwrap().figures.as_ref().unwrap();
    assert_eq!((f.csat, f.ces, f.nps), (Some(0.5), Some(4.0), Some(0.0)));
    let ten = &general.intervals[10];
    assert_eq!(
        ten.counts.as_ref().unwrap().offered,
        2,
        "the seeded 10:00 calls"
    );
    assert_eq!(page.body.matches("<svg class=\"line-chart\"").count(), 10);
    assert_eq!(page.body.matches("<svg class=\"bar-chart\"").count(), 2);

    let csv = get(&app, "/kpis.csv?period=day&date=2026-11-25&queue=general").await;
    assert_eq!(csv.status, 200, "{}", csv.body);
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert_eq!(
        csv.header("content-disposition"),
        Some("attachment; filename=\"holdless-kpis-day-2026-11-25-general.csv\"")
    );
    let mut lines = csv.body.split("\r\n").filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let rows: Vec<BTreeMap<&str, &str>> = lines
        .map(|l| header.iter().copied().zip(l.split(',')).collect())
        .collect();
    let as_page = |row: &BTreeMap<&str, &str>| -> BTreeMap<String, String> {
        row.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let general_rows: Vec<_> = rows.iter().filter(|r| r["queue"] == "general").collect();
    assert_eq!(general_rows.len(), 25, "24 hours and the total");
    for (row, want) in general_rows.iter().zip(&general.intervals) {
        assert_eq!(row["row"], "interval");
        let start = DateTime::from_timestamp(want.start.as_ref().unwrap().seconds, 0).unwrap();
        assert_eq!(row["start"], start.to_rfc3339());
        assert_figures(&as_page(row), want);
    }
    let total = general_rows.last().unwrap();
    assert_eq!(total["row"], "total");
    assert_figures(&as_page(total), general.total.as_ref().unwrap());
    let all_total = rows
        .iter()
        .find(|r| r["queue"] == "*" && r["row"] == "total")
        .expect("all queues' total");
    assert_figures(&as_page(all_total), all.total.as_ref().unwrap());
}

#[tokio::test]
async fn kpi_week_page_lists_each_local_day_as_its_own_report() {
    let app = spawn_app().await;
    seed(&app).await;
    let page = get(&app, "/kpis?period=week&date=2026-11-25&queue=general").await;
    assert_eq!(page.status, 200, "{}", page.body);
    // Monday 2026-11-23 to Sunday 2026-11-29 in New York.
    let monday = at("2026-11-23T05:00:00Z");
    for d in 0..7 {
        let from = monday + Duration::days(d);
        let day = report(&app, "general", (from, from + Duration::days(1)), None).await;
        let v = row_values(
            &page.body,
            &format!("<tr data-start=\"{}\"", from.to_rfc3339()),
        );
        assert_figures(&v, day.total.as_ref().unwrap());
    }
    let week = report(&app, "general", (monday, monday + Duration::days(7)), None).await;
    assert_figures(
        &row_values(&page.body, r#"data-scope="general""#),
        week.total.as_ref().unwrap(),
    );
    assert_eq!(week.total.unwrap().counts.unwrap().offered, 3);
}
