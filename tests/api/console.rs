//! The web console through its real HTTP listener: sign-in and its cookie, refusals,
//! CSRF, server-rendered pages, a cancel that lands in the service and the audit log,
//! the live wallboard stream, and the loopback rule without principals.

use std::net::SocketAddr;
use std::time::Duration;

use holdless::api::pb;
use holdless::auth::Role;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tonic::Request;

use crate::auth::{principals, token_for};
use crate::helpers::{call, http_exchange, spawn_app, spawn_app_with, HttpReply, TestApp};

/// Sends one request (`Connection: close`) and reads the whole reply.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> HttpReply {
    http_exchange(addr, method, path, headers, body, Duration::from_secs(10)).await
}

fn console(app: &TestApp) -> SocketAddr {
    app.console_addr.expect("console enabled")
}

fn form(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        (b as char).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Signs in with `token`; returns the `Cookie` header value of the session.
async fn sign_in(app: &TestApp, token: &str) -> String {
    let r = http(
        console(app),
        "POST",
        "/signin",
        &[],
        &form(&[("token", token)]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let set = r.header("set-cookie").expect("session cookie");
    set.split(';').next().unwrap().to_owned()
}

/// The CSRF token a page's forms carry.
fn csrf_of(html: &str) -> String {
    let re = regex::Regex::new(r#"name="csrf" value="([0-9a-f]+)""#).unwrap();
    re.captures(html).expect("a form with a CSRF token")[1].to_owned()
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

async fn secured_callback(app: &TestApp) -> String {
    let mut cb = pb::callback_service_client::CallbackServiceClient::new(app.channel.clone());
    cb.request_callback(with_token(
        pb::RequestCallbackRequest {
            queue_id: "general".into(),
            phone_number: "+12125550123".into(),
            ..Default::default()
        },
        &token_for(Role::Supervisor),
    ))
    .await
    .expect("callback requested")
    .into_inner()
    .callback
    .expect("callback")
    .callback_id
}

async fn callback_state(app: &TestApp, id: &str) -> i32 {
    let mut cb = pb::callback_service_client::CallbackServiceClient::new(app.channel.clone());
    cb.get_callback(with_token(
        pb::GetCallbackRequest {
            callback_id: id.into(),
        },
        &token_for(Role::Supervisor),
    ))
    .await
    .expect("get callback")
    .into_inner()
    .callback
    .expect("callback")
    .state
}

#[tokio::test]
async fn sign_in_sets_an_http_only_same_site_strict_session_cookie() {
    let app = spawn_app_with(|s| s.auth.principals = principals()).await;
    let r = http(
        console(&app),
        "POST",
        "/signin",
        &[],
        &form(&[("token", &token_for(Role::Supervisor))]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("location"), Some("/wallboard"));
    let cookie = r.header("set-cookie").expect("a session cookie");
    assert!(cookie.starts_with("holdless_session="), "{cookie}");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(part), "{part} missing: {cookie}");
    }
    // Plain HTTP here: a Secure cookie would never come back.
    assert!(!cookie.contains("Secure"), "{cookie}");
    let session = cookie.split(';').next().unwrap();
    let page = http(
        console(&app),
        "GET",
        "/wallboard",
        &[("Cookie", session)],
        "",
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.body);

    let wrong = http(
        console(&app),
        "POST",
        "/signin",
        &[],
        &form(&[("token", "nope")]),
    )
    .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.header("set-cookie").is_none());
}

#[tokio::test]
async fn pages_without_a_valid_session_redirect_to_sign_in() {
    let app = spawn_app_with(|s| s.auth.principals = principals()).await;
    for path in [
        "/wallboard",
        "/callbacks",
        "/plan",
        "/staffing",
        "/kpis",
        "/wallboard/events",
    ] {
        let r = http(console(&app), "GET", path, &[], "").await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/signin")),
            "{path}"
        );
        let r = http(
            console(&app),
            "GET",
            path,
            &[("Cookie", "holdless_session=0123456789abcdef")],
            "",
        )
        .await;
        assert_eq!(
            (r.status, r.header("location")),
            (303, Some("/signin")),
            "{path}"
        );
    }
    let signin = http(console(&app), "GET", "/signin", &[], "").await;
    assert_eq!(signin.status, 200);
    assert!(signin.body.contains(r#"name="token""#), "{}", signin.body);
}

#[tokio::test]
async fn customer_and_telephony_tokens_get_403() {
    let app = spawn_app_with(|s| s.auth.principals = principals()).await;
    for role in [Role::Customer, Role::Telephony] {
        let token = token_for(role);
        let r = http(
            console(&app),
            "POST",
            "/signin",
            &[],
            &form(&[("token", &token)]),
        )
        .await;
        assert_eq!(r.status, 403, "{role:?} sign-in: {}", r.body);
        assert!(r.header("set-cookie").is_none(), "{role:?} got a session");
        let bearer = format!("Bearer {token}");
        let r = http(
            console(&app),
            "GET",
            "/wallboard",
            &[("Authorization", &bearer)],
            "",
        )
        .await;
        assert_eq!(r.status, 403, "{role:?} bearer: {}", r.body);
        assert!(!r.body.contains("data-queue"), "{role:?} saw tiles");
    }
    let bearer = format!("Bearer {}", token_for(Role::Supervisor));
    let r = http(
        console(&app),
        "GET",
        "/wallboard",
        &[("Authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn a_change_without_the_csrf_token_is_refused_and_changes_nothing() {
    let app = spawn_app_with(|s| s.auth.principals = principals()).await;
    let id = secured_callback(&app).await;
    let session = sign_in(&app, &token_for(Role::Supervisor)).await;
    let path = format!("/callbacks/{id}/cancel");
    let no_token = http(
        console(&app),
        "POST",
        &path,
        &[("Cookie", &session)],
        &form(&[("reason", "x")]),
    )
    .await;
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    let wrong = http(
        console(&app),
        "POST",
        &path,
        &[("Cookie", &session)],
        &form(&[("reason", "x"), ("csrf", "00ff")]),
    )
    .await;
    assert_eq!(wrong.status, 403, "{}", wrong.body);
    assert_eq!(
        callback_state(&app, &id).await,
        pb::CallbackState::Pending as i32
    );

    // Another session's token is not this session's.
    let other = sign_in(&app, &token_for(Role::Supervisor)).await;
    let page = http(
        console(&app),
        "GET",
        &format!("/callbacks/{id}"),
        &[("Cookie", &other)],
        "",
    )
    .await;
    let others_csrf = csrf_of(&page.body);
    let r = http(
        console(&app),
        "POST",
        &path,
        &[("Cookie", &session)],
        &form(&[("csrf", &others_csrf)]),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        callback_state(&app, &id).await,
        pb::CallbackState::Pending as i32
    );
}

#[tokio::test]
async fn pages_are_rendered_on_the_server_with_queue_names_and_figures() {
    let app = spawn_app().await;
    app.route(call("console-call-1", "+12125550100")).await;
    // Open mode (no principals, loopback): no sign-in, a session is handed out.
    let r = http(console(&app), "GET", "/wallboard", &[], "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r
        .header("set-cookie")
        .is_some_and(|c| c.contains("HttpOnly")));
    for name in [
        "General support (North America)",
        "Sales",
        "Billing",
        r#"data-queue="general""#,
    ] {
        assert!(r.body.contains(name), "{name} not in the wallboard HTML");
    }
    let tile = tile_of(&r.body, "general");
    assert!(
        tile.contains(r#"<span class="value" data-field="waiting">1</span>"#),
        "{tile}"
    );
    for (path, needle) in [
        ("/plan", "v1"),
        ("/callbacks", "Callbacks"),
        ("/staffing", "Staffing"),
        ("/kpis", "KPIs"),
    ] {
        let r = http(console(&app), "GET", path, &[], "").await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        assert!(r.body.contains(needle), "{path} lacks {needle}");
    }
    let css = http(console(&app), "GET", "/assets/htmx.min.js", &[], "").await;
    assert_eq!(css.status, 200);
    assert!(css
        .header("cache-control")
        .is_some_and(|c| c.contains("immutable")));
}

/// The HTML of one queue's tile.
fn tile_of<'a>(html: &'a str, queue: &str) -> &'a str {
    let start = html
        .find(&format!(r#"data-queue="{queue}""#))
        .unwrap_or_else(|| panic!("no tile for {queue}"));
    let rest = &html[start..];
    &rest[..rest.find("</article>").unwrap_or(rest.len())]
}

#[tokio::test]
async fn cancel_from_the_console_cancels_the_callback_and_audits_the_supervisor() {
    let app = spawn_app_with(|s| s.auth.principals = principals()).await;
    let id = secured_callback(&app).await;
    let session = sign_in(&app, &token_for(Role::Supervisor)).await;
    let list = http(
        console(&app),
        "GET",
        "/callbacks?state=pending",
        &[("Cookie", &session)],
        "",
    )
    .await;
    assert!(list.body.contains(&id), "{}", list.body);
    let page = http(
        console(&app),
        "GET",
        &format!("/callbacks/{id}"),
        &[("Cookie", &session)],
        "",
    )
    .await;
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    let r = http(
        console(&app),
        "POST",
        &format!("/callbacks/{id}/cancel"),
        &[("Cookie", &session)],
        &form(&[("csrf", &csrf), ("reason", "customer asked by email")]),
    )
    .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some(format!("/callbacks/{id}").as_str())),
        "{}",
        r.body
    );
    assert_eq!(
        callback_state(&app, &id).await,
        pb::CallbackState::Cancelled as i32
    );

    let mut plans = pb::plan_service_client::PlanServiceClient::new(app.channel.clone());
    let audit = plans
        .list_audit(with_token(
            pb::ListAuditRequest::default(),
            &token_for(Role::Supervisor),
        ))
        .await
        .unwrap()
        .into_inner();
    let entry = audit
        .entries
        .iter()
        .find(|e| e.action == pb::AuditAction::CallbackCancel as i32)
        .expect("a callback_cancel entry");
    assert_eq!(entry.principal, "supervisor-principal");
    assert_eq!(entry.target, format!("callback {id}"));
    assert_eq!(entry.detail, "customer asked by email");

    // Cancelled already: a second cancel is a conflict, not a 200.
    let again = http(
        console(&app),
        "POST",
        &format!("/callbacks/{id}/cancel"),
        &[("Cookie", &session)],
        &form(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
}

#[tokio::test]
async fn the_wallboard_stream_shows_a_routed_call_without_a_reload() {
    let app = spawn_app().await;
    let mut s = tokio::net::TcpStream::connect(console(&app)).await.unwrap();
    s.write_all(b"GET /wallboard/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(s).lines();
    // Reads `data:` lines until one carries a general tile with `waiting` at `want`.
    async fn until_waiting(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::TcpStream>>,
        want: u32,
    ) {
        let needle = format!(r#"data-field="waiting">{want}<"#);
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(data) = line.strip_prefix("data:") {
                    if data.contains(r#"data-queue="general""#)
                        && tile_of(data, "general").contains(&needle)
                    {
                        return;
                    }
                }
            }
            panic!("event stream ended");
        };
        tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .unwrap_or_else(|_| panic!("no tile with {want} waiting within 5 s"));
    }
    until_waiting(&mut lines, 0).await;
    // How soon it comes is the board stream's coalescing slot (half a second at the
    // default 2 per second, checked in paused time in `service::board`) and the browser test's
    // 1 s check; a wall-clock bound here would only measure how loaded the machine is.
    app.route(call("live-call-1", "+12125550100")).await;
    until_waiting(&mut lines, 1).await;
}

#[test]
fn serve_refuses_a_public_console_without_principals() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_holdless"))
        .arg("serve")
        .current_dir(dir.path())
        .env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__CONSOLE__LISTEN", "0.0.0.0:0")
        .env("HOLDLESS__STORE__PATH", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("console"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "created the store");
}

async fn plan_of(app: &TestApp, version: u64) -> pb::GetPlanResponse {
    let mut plans = pb::plan_service_client::PlanServiceClient::new(app.channel.clone());
    plans
        .get_plan(with_token(
            pb::GetPlanRequest { version },
            &token_for(Role::Supervisor),
        ))
        .await
        .expect("get plan")
        .into_inner()
}

async fn audit_entries(app: &TestApp) -> Vec<pb::AuditEntry> {
    let mut plans = pb::plan_service_client::PlanServiceClient::new(app.channel.clone());
    plans
        .list_audit(with_token(
            pb::ListAuditRequest::default(),
            &token_for(Role::Supervisor),
        ))
        .await
        .unwrap()
        .into_inner()
        .entries
}

#[tokio::test]
async fn plan_apply_and_rollback_from_the_console_are_audited_and_a_stale_base_is_refused() {
    let app = spawn_app_with(|s| s.auth.principals = principals()).await;
    let session = sign_in(&app, &token_for(Role::Supervisor)).await;
    let page = http(console(&app), "GET", "/plan", &[("Cookie", &session)], "").await;
    assert_eq!(page.status, 200);
    let csrf = csrf_of(&page.body);
    let v1 = plan_of(&app, 0).await;
    assert_eq!(v1.version.as_ref().unwrap().version, 1);
    let candidate = v1
        .plan_toml
        .replacen("name = \"Sales\"", "name = \"Sales desk\"", 1);
    assert_ne!(candidate, v1.plan_toml);

    let sim = http(
        console(&app),
        "POST",
        "/plan/simulate",
        &[("Cookie", &session)],
        &form(&[
            ("csrf", &csrf),
            ("text", &candidate),
            ("base_version", "1"),
            ("days", "7"),
        ]),
    )
    .await;
    assert_eq!(sim.status, 200, "{}", sim.body);
    assert!(sim.body.contains("would change queue"), "{}", sim.body);
    assert!(
        sim.body
            .contains(r#"<span class="add">+ name = &quot;Sales desk&quot;"#),
        "{}",
        sim.body
    );
    assert_eq!(
        plan_of(&app, 0).await.version.unwrap().version,
        1,
        "a simulation applied"
    );

    let apply = |base: &'static str| {
        let body = form(&[
            ("csrf", &csrf),
            ("text", &candidate),
            ("base_version", base),
            ("comment", "rename sales"),
        ]);
        let session = session.clone();
        let addr = console(&app);
        async move { http(addr, "POST", "/plan/apply", &[("Cookie", &session)], &body).await }
    };
    let r = apply("1").await;
    assert_eq!(r.status, 303, "{}", r.body);
    let v2 = plan_of(&app, 0).await;
    assert_eq!(v2.version.as_ref().unwrap().version, 2);
    assert_eq!(v2.plan_toml, candidate);
    assert_eq!(v2.version.unwrap().author, "supervisor-principal");

    // Based on v1 while v2 is active: refused, nothing applied.
    let stale = apply("1").await;
    assert_eq!(stale.status, 409, "{}", stale.body);
    assert_eq!(plan_of(&app, 0).await.version.unwrap().version, 2);
    let bad = http(
        console(&app),
        "POST",
        "/plan/apply",
        &[("Cookie", &session)],
        &form(&[
            ("csrf", &csrf),
            ("text", "not = [a plan"),
            ("base_version", "2"),
        ]),
    )
    .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(plan_of(&app, 0).await.version.unwrap().version, 2);

    let r = http(
        console(&app),
        "POST",
        "/plan/rollback",
        &[("Cookie", &session)],
        &form(&[("csrf", &csrf), ("version", "1"), ("base_version", "2")]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let v3 = plan_of(&app, 0).await;
    assert_eq!(v3.version.unwrap().version, 3);
    assert_eq!(v3.plan_toml, v1.plan_toml);

    let audit = audit_entries(&app).await;
    let by_console: Vec<(i32, &str)> = audit
        .iter()
        .filter(|e| e.principal == "supervisor-principal")
        .map(|e| (e.action, e.detail.as_str()))
        .collect();
    assert_eq!(
        by_console.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        vec![
            pb::AuditAction::PlanApply as i32,
            pb::AuditAction::PlanRollback as i32
        ],
        "{audit:#?}"
    );

    let diff = http(
        console(&app),
        "GET",
        "/plan/diff?from=1&to=2",
        &[("Cookie", &session)],
        "",
    )
    .await;
    assert_eq!(diff.status, 200);
    assert!(
        diff.body
            .contains(r#"<span class="del">- name = &quot;Sales&quot;"#),
        "{}",
        diff.body
    );
    let missing = http(
        console(&app),
        "GET",
        "/plan/diff?from=1&to=99",
        &[("Cookie", &session)],
        "",
    )
    .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn a_callback_is_rescheduled_into_an_offered_slot_and_bad_filters_are_400() {
    let app = spawn_app_with(|s| s.auth.principals = principals()).await;
    let id = secured_callback(&app).await;
    let session = sign_in(&app, &token_for(Role::Supervisor)).await;
    let page = http(
        console(&app),
        "GET",
        &format!("/callbacks/{id}"),
        &[("Cookie", &session)],
        "",
    )
    .await;
    let csrf = csrf_of(&page.body);
    let re = regex::Regex::new(r#"<option value="([^"|]+\|[^"]+)""#).unwrap();
    let slot = re.captures(&page.body).expect("a slot offered")[1].to_owned();
    let r = http(
        console(&app),
        "POST",
        &format!("/callbacks/{id}/reschedule"),
        &[("Cookie", &session)],
        &form(&[("csrf", &csrf), ("slot", &slot)]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let mut cb = pb::callback_service_client::CallbackServiceClient::new(app.channel.clone());
    let got = cb
        .get_callback(with_token(
            pb::GetCallbackRequest {
                callback_id: id.clone(),
            },
            &token_for(Role::Supervisor),
        ))
        .await
        .unwrap()
        .into_inner()
        .callback
        .unwrap();
    let start = slot.split('|').next().unwrap();
    let start = chrono::DateTime::parse_from_rfc3339(start)
        .unwrap()
        .timestamp();
    assert_eq!(got.slot_start.map(|t| t.seconds), Some(start));

    let bad = http(
        console(&app),
        "POST",
        &format!("/callbacks/{id}/reschedule"),
        &[("Cookie", &session)],
        &form(&[("csrf", &csrf), ("slot", "yesterday")]),
    )
    .await;
    assert_eq!(bad.status, 400);
    for q in ["/callbacks?phone=12345", "/callbacks?state=lost"] {
        let r = http(console(&app), "GET", q, &[("Cookie", &session)], "").await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
    }
    let missing = http(
        console(&app),
        "GET",
        "/callbacks/01ARZ3NDEKTSV4RRFFQ69G5FAV",
        &[("Cookie", &session)],
        "",
    )
    .await;
    assert_eq!(missing.status, 404);
}

/// An open wallboard (a live event stream) does not hold up shutdown: the stream ends
/// and `run` returns.
#[tokio::test]
async fn an_open_wallboard_stream_ends_at_shutdown() {
    let app = spawn_app().await;
    let mut s = tokio::net::TcpStream::connect(console(&app)).await.unwrap();
    s.write_all(b"GET /wallboard/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(s).lines();
    let first = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with("data:") {
                return;
            }
        }
    });
    first.await.expect("first tiles");
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("shutdown within 10 s")
        .expect("clean shutdown");
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while lines.next_line().await.ok().flatten().is_some() {}
    });
    rest.await.expect("the stream was closed");
}
