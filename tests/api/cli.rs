//! The real binary: admin commands against a server on port 0, and `serve` itself.

use std::process::{Command, Stdio};

use crate::helpers::*;

fn holdless() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdless"));
    c.env_remove("HOLDLESS_SERVER");
    c.env_remove("HOLDLESS_TOKEN");
    c.env_remove("HOLDLESS_CA_CERT");
    c
}

#[tokio::test]
async fn route_command_prints_the_decision_and_explanation() {
    let app = spawn_app().await;
    let server = format!("http://{}", app.addr);
    let out = tokio::task::spawn_blocking(move || {
        holdless()
            .args([
                "route",
                "--caller",
                "+442079460958",
                "--explain",
                "--server",
                &server,
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("queue      uk_support"), "{stdout}");
    assert!(
        stdout.contains("contact    sip:uk-support@queues.example.com"),
        "{stdout}"
    );
    assert!(
        stdout.contains("vip") && stdout.contains("customer_statuses"),
        "{stdout}"
    );
    assert!(stdout.contains("MATCHED"), "{stdout}");
}

#[tokio::test]
async fn plan_validate_exits_2_and_lists_issues() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[queues]]\nid = \"a\"\n[default_route]\nqueue = \"b\"\n",
    )
    .unwrap();
    let server = format!("http://{}", app.addr);
    let out = tokio::task::spawn_blocking(move || {
        holdless()
            .args(["plan", "validate"])
            .arg(&file)
            .args(["--server", &server])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("default_route.queue: unknown queue 'b'"),
        "{stderr}"
    );
}

#[test]
fn serve_with_bad_config_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("holdless.toml");
    std::fs::write(&file, "[server]\nlisten = \"127.0.0.1:0\"\nbogus = 1\n").unwrap();
    let out = holdless()
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("bogus"), "{stderr}");
}

#[test]
fn serve_with_a_bad_plan_file_exits_64_with_one_message_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(&plan, "this is not a plan\n").unwrap();
    let out = holdless()
        .arg("serve")
        .current_dir(dir.path())
        .env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__CONSOLE__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__PLAN__FILE", &plan)
        .env("HOLDLESS_LOG", "info")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    // One message: a first line naming the file, then the TOML error with its caret
    // lines intact, and nothing else (no log lines, no second copy).
    assert!(
        stderr.starts_with(&format!(
            "holdless: plan file {} is invalid:\n",
            plan.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.matches("holdless").count(), 1, "{stderr}");
    assert!(stderr.contains("TOML parse error at line 1"), "{stderr}");
    assert!(stderr.contains("1 | this is not a plan"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.trim_start().starts_with("|") && l.contains('^')),
        "{stderr}"
    );
    // Nothing was created: no store directory beside the plan.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("plan.toml")]);
}

#[test]
fn unreachable_server_exits_69() {
    let out = holdless()
        .args([
            "route",
            "--caller",
            "+12125550100",
            "--server",
            "http://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
}

#[test]
fn serve_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = holdless()
        .arg("serve")
        .current_dir(dir.path())
        .env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__CONSOLE__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__STORE__PATH", dir.path().join("data"))
        .env("HOLDLESS_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let serving = line.contains("SERVING");
        seen.push(line);
        if serving {
            break;
        }
    }
    assert!(seen.iter().any(|l| l.contains("SERVING")), "{seen:#?}");
    // SAFETY-free: kill(2) through the shell utility keeps the test free of libc.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{rest:#?}");
    assert!(
        rest.iter().any(|l| l.contains("store flushed")),
        "{rest:#?}"
    );
}

/// Starts `holdless serve` in `dir` (ports 0, info logs on stderr), waits for SERVING,
/// sends SIGTERM and returns the exit code with every log line.
fn serve_once(dir: &std::path::Path, envs: &[(&str, &std::ffi::OsStr)]) -> (i32, Vec<String>) {
    use std::io::{BufRead, BufReader};
    let mut cmd = holdless();
    cmd.arg("serve")
        .current_dir(dir)
        .env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__CONSOLE__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS_LOG", "info")
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let serving = line.contains("SERVING");
        seen.push(line);
        if serving {
            break;
        }
    }
    if seen.iter().any(|l| l.contains("SERVING")) {
        assert!(Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
    }
    seen.extend(lines.map_while(Result::ok));
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, seen)
}

#[test]
fn the_default_store_is_private_to_the_service_user() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (code, log) = serve_once(dir.path(), &[]);
    assert_eq!(code, 0, "{log:#?}");
    let data = dir.path().join("holdless-data");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "{}", data.display());
    let mut files = 0;
    for entry in std::fs::read_dir(&data).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            files += 1;
            assert_eq!(mode(&path), 0o600, "{}", path.display());
        } else {
            assert_eq!(mode(&path), 0o700, "{}", path.display());
        }
    }
    assert!(files >= 2, "sled's conf and db");
}

/// Runs `holdless bench` with `args`; it must succeed. Returns what it printed.
fn bench(args: &[&str]) -> String {
    let out = holdless().arg("bench").args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn bench_tool_runs_a_tiny_comparison_with_the_baseline() {
    let stdout = bench(&[
        "--embedded",
        "--baseline",
        "--clients",
        "4",
        "--connections",
        "1",
        "--requests",
        "200",
        "--warmup",
        "0",
        "--rounds",
        "2",
        "--agents",
        "3",
        "--watchers",
        "3",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let reports = v["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["target"], "baseline");
    assert_eq!(reports[1]["target"], "holdless");
    // Wallboards watch holdless (the no-op baseline serves none).
    assert_eq!(
        (&reports[0]["watchers"], &reports[1]["watchers"]),
        (&0.into(), &3.into())
    );
    for r in reports {
        assert_eq!(r["ok"], 200, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(
            r["latency"]["p99_us"].as_u64().unwrap() >= r["latency"]["p50_us"].as_u64().unwrap()
        );
    }
    assert!(v["throughput_ratio"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_open_loop_sends_every_scheduled_request() {
    let stdout = bench(&[
        "--embedded",
        "--scenario",
        "callback",
        "--clients",
        "4",
        "--connections",
        "1",
        "--rate",
        "500",
        "--requests",
        "50",
        "--warmup",
        "0",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let r = &v["reports"][0];
    assert_eq!(r["ok"], 50, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    // 50 requests at 500/s are due over 98 ms: a paced run cannot be faster.
    assert!(r["elapsed_secs"].as_f64().unwrap() >= 0.098, "{r}");
    // Each durable request waited for a group-commit flush of the embedded store, and
    // the report says how many flushes there were and how many were slow: at most one
    // per request, plus the few of start-up (the plan and its audit entry).
    let f = &v["store_flushes"];
    let flushes = f["flushes"].as_u64().unwrap_or_default();
    assert!((1..=60).contains(&flushes), "{v}");
    assert!(f["over_25ms"].as_u64().unwrap() <= flushes, "{v}");
}

#[tokio::test]
async fn callbacks_commands_list_show_and_cancel() {
    let app = spawn_app().await;
    let mut c =
        holdless::api::pb::callback_service_client::CallbackServiceClient::new(app.channel.clone());
    let cb = c
        .request_callback(holdless::api::pb::RequestCallbackRequest {
            queue_id: "general".into(),
            phone_number: "+12125550142".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .callback
        .unwrap();
    let server = format!("http://{}", app.addr);
    let id = cb.callback_id.clone();
    let out = tokio::task::spawn_blocking(move || {
        let list = holdless()
            .args([
                "callbacks",
                "list",
                "--state",
                "pending",
                "--server",
                &server,
            ])
            .output()
            .unwrap();
        let show = holdless()
            .args(["callbacks", "show", &id, "--json", "--server", &server])
            .output()
            .unwrap();
        let cancel = holdless()
            .args([
                "callbacks",
                "cancel",
                &id,
                "--reason",
                "duplicate",
                "--server",
                &server,
            ])
            .output()
            .unwrap();
        (list, show, cancel)
    })
    .await
    .unwrap();
    let list = String::from_utf8_lossy(&out.0.stdout);
    assert!(
        list.contains(&cb.callback_id) && list.contains("pending") && list.contains("+12125550142"),
        "{list}"
    );
    let show: serde_json::Value = serde_json::from_slice(&out.1.stdout).unwrap();
    assert_eq!(show["state"], "CALLBACK_STATE_PENDING");
    let cancel = String::from_utf8_lossy(&out.2.stdout);
    assert!(
        out.2.status.success() && cancel.contains("cancelled") && cancel.contains("duplicate"),
        "{cancel}"
    );
}
/// Runs the real binary against `app`; returns (exit code, stdout, stderr).
async fn run_cli(app: &TestApp, args: &[&str]) -> (Option<i32>, String, String) {
    let server = format!("http://{}", app.addr);
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        holdless()
            .args(&args)
            .args(["--server", &server])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn plan_apply_history_diff_rollback_and_audit_through_the_cli() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, crate::plans::uk_to_sales()).unwrap();
    let path = file.display().to_string();

    let (code, out, err) = run_cli(
        &app,
        &[
            "plan",
            "apply",
            &path,
            "--comment",
            "uk to sales",
            "--author",
            "sam",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("applied: version 2 ("), "{out}");

    let (code, out, _) = run_cli(&app, &["plan", "history"]).await;
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("VERSION") && lines[0].contains("COMMENT"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("*  2") && lines[1].contains("sam"),
        "{out}"
    );
    assert!(lines[1].ends_with("uk to sales"), "{out}");
    assert!(lines[2].starts_with("   1"), "{out}");

    let (code, out, _) = run_cli(&app, &["plan", "diff", "1"]).await;
    assert_eq!(code, Some(0));
    assert!(
        out.contains("--- version 1\n+++ version 2 (active)"),
        "{out}"
    );
    assert!(
        out.contains("\n-queue = \"uk_support\"\n+queue = \"sales\"\n"),
        "{out}"
    );
    let (_, out, _) = run_cli(&app, &["plan", "diff", "2", &path]).await;
    assert!(out.contains("are identical"), "{out}");

    let (code, out, err) =
        run_cli(&app, &["plan", "rollback", "1", "--expected-version", "2"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("now version 3"), "{out}");
    // A stale editor is refused with a non-zero exit.
    let (code, _, err) = run_cli(&app, &["plan", "rollback", "1", "--expected-version", "2"]).await;
    assert_eq!(code, Some(1));
    assert!(err.contains("Aborted"), "{err}");

    let (_, out, _) = run_cli(&app, &["plan", "history", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["active_version"], 3);
    assert_eq!(v["versions"].as_array().unwrap().len(), 3);

    let (_, out, _) = run_cli(&app, &["audit", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let actions: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["plan_apply", "plan_apply", "plan_rollback"]);
    assert!(v[1]["request_id"].as_str().unwrap().starts_with("cli-"));
    let (_, out, _) = run_cli(&app, &["audit"]).await;
    assert!(
        out.lines().nth(3).unwrap().contains("plan_rollback"),
        "{out}"
    );
}

#[tokio::test]
async fn plan_simulate_prints_a_table_of_moves_and_json() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, crate::plans::uk_to_sales()).unwrap();
    let calls = dir.path().join("calls.json");
    std::fs::write(
        &calls,
        r#"[
          {"call_id": "a", "caller_number": "+442079460958"},
          {"call_id": "b", "caller_number": "+12125550100", "intent": "billing"},
          {"call_id": "c", "caller_number": "+35314567890", "received_time": "2026-11-25T15:00:00Z"}
        ]"#,
    )
    .unwrap();
    let (path, calls) = (file.display().to_string(), calls.display().to_string());
    let (code, out, err) = run_cli(&app, &["plan", "simulate", &path, "--calls", &calls]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("3 given calls replayed, 2 change queue"),
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with("uk_support")).unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells, vec!["uk_support", "sales", "2", "a,", "c"], "{out}");
    assert!(
        out.contains("rules that matched no call: transfer-loop"),
        "{out}"
    );

    let (code, out, _) = run_cli(
        &app,
        &["plan", "simulate", &path, "--calls", &calls, "--json"],
    )
    .await;
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["calls_moved"], 2);
    assert_eq!(
        v["moves"][0]["sample_call_ids"],
        serde_json::json!(["a", "c"])
    );
}

#[tokio::test]
async fn plan_apply_of_an_invalid_plan_exits_2_and_changes_nothing() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[queues]]\nid = \"a\"\n[default_route]\nqueue = \"b\"\n",
    )
    .unwrap();
    let (code, _, err) = run_cli(&app, &["plan", "apply", &file.display().to_string()]).await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("default_route.queue"), "{err}");
    let (_, out, _) = run_cli(&app, &["plan", "history", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["active_version"], 1);
}

#[tokio::test]
async fn admin_commands_send_the_token_from_the_environment() {
    use holdless::auth::Role;
    let app = crate::auth::spawn_secured_app().await;
    let server = format!("http://{}", app.addr);
    let run = |token: Option<String>| {
        let server = server.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = holdless();
            c.args(["route", "--caller", "+442079460958", "--server", &server]);
            if let Some(t) = token {
                c.env("HOLDLESS_TOKEN", t);
            }
            c.output().unwrap()
        })
    };
    let out = run(None).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Unauthenticated"), "{stderr}");
    let out = run(Some(crate::auth::token_for(Role::Supervisor)))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PermissionDenied"), "{stderr}");
    let out = run(Some(crate::auth::token_for(Role::Telephony)))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn serve_refuses_a_public_address_without_principals() {
    let dir = tempfile::tempdir().unwrap();
    let out = holdless()
        .arg("serve")
        .current_dir(dir.path())
        .env("HOLDLESS__SERVER__LISTEN", "0.0.0.0:0")
        .env("HOLDLESS__STORE__PATH", dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");
}

#[test]
fn bench_mixed_soak_reports_each_window() {
    let stdout = bench(&[
        "--embedded",
        "--scenario",
        "mixed",
        "--clients",
        "4",
        "--connections",
        "1",
        "--requests",
        "400",
        "--windows",
        "2",
        "--warmup",
        "0",
        "--json",
    ]);
    let windows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(windows.len(), 2, "{stdout}");
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w["window"], i as u64 + 1);
        // Every step of every call (agent free, route, answer or abandon, end or
        // callback request) was accepted.
        assert_eq!(w["report"]["ok"], 200, "{w}");
        assert_eq!(w["report"]["errors"], 0, "{w}");
        assert_eq!(w["report"]["scenario"], "mixed");
        assert!(w["rss_mib"].as_u64().unwrap() > 0, "{w}");
    }
}

/// A soak's windows go on with the clients' calls where the last window left them: a
/// window ending mid-call must leave nothing unfinished on the server, or a long soak
/// would show the floor's memory growing by a few calls every window.
#[tokio::test]
async fn bench_soak_windows_leave_no_call_unfinished() {
    let app = spawn_app_with(|s| {
        s.limits.callback_requests_per_phone_per_hour = 0;
        s.limits.callback_requests_per_principal_per_hour = 0;
    })
    .await;
    let server = format!("http://{}", app.addr);
    let stdout = tokio::task::spawn_blocking(move || {
        bench(&[
            "--server",
            &server,
            "--scenario",
            "mixed",
            "--clients",
            "4",
            "--connections",
            "1",
            "--requests",
            "960",
            "--windows",
            "12",
            "--warmup",
            "0",
        ])
    })
    .await
    .unwrap();
    assert_eq!(stdout.lines().count(), 12, "{stdout}");
    // Finished calls are forgotten after an hour; a call never reported ended is kept
    // for four. Two hours on, the floor remembers only the calls still in progress:
    // at most one per client.
    app.clock.advance(chrono::Duration::hours(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let calls = gauge(&scrape(&app).await, "holdless_live_calls").unwrap_or(f64::MAX);
        if calls <= 4.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{calls} calls remembered after the soak, at most 4 in progress"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn health_command_exits_0_when_serving_and_69_when_unreachable() {
    let app = spawn_app().await;
    let server = format!("http://{}", app.addr);
    // A port nothing listens on: bind one, note it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (up, service, down) = tokio::task::spawn_blocking(move || {
        let up = holdless()
            .args(["health", "--server", &server])
            .output()
            .unwrap();
        let service = holdless()
            .args([
                "health",
                "--service",
                "holdless.v1.RoutingService",
                "--server",
                &server,
            ])
            .output()
            .unwrap();
        let down = holdless()
            .args(["health", "--server", &closed_addr])
            .output()
            .unwrap();
        (up, service, down)
    })
    .await
    .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&up.stdout), "SERVING\n");
    assert!(service.status.success());
    assert_eq!(down.status.code(), Some(69));
}

#[tokio::test]
async fn server_without_a_scheme_is_plaintext_like_grpcurl_takes_it() {
    let app = spawn_app().await;
    let bare = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        holdless()
            .args(["health", "--server", &bare])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "SERVING\n");
}

#[test]
fn connection_errors_name_the_cause_not_transport_error() {
    // A port nothing listens on: bind one, note it, close it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    for (server, cause) in [
        (closed_addr.as_str(), "connection refused"),
        ("nosuch.invalid:50051", "name not resolved"),
    ] {
        let out = holdless()
            .args(["stats", "--server", server])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{stderr}");
        assert!(stderr.contains(cause), "{server}: {stderr}");
        assert!(!stderr.contains("transport error"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[tokio::test]
async fn customer_commands_take_the_id_the_same_way() {
    let app = spawn_app().await;
    let (code, out, err) = run_cli(
        &app,
        &[
            "customer",
            "upsert",
            "cust-9",
            "--name",
            "Ada",
            "--phone",
            "+442079460958",
        ],
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("created: cust-9 Ada"), "{out}");
    let (code, out, err) = run_cli(&app, &["customer", "get", "cust-9"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("cust-9 Ada"), "{out}");
    let (code, _, err) = run_cli(&app, &["customer", "delete", "cust-9"]).await;
    assert_eq!(code, Some(0), "{err}");
    // Scripts written for the earlier `--id` form still run.
    let (code, out, err) = run_cli(&app, &["customer", "upsert", "--id", "cust-8"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("created: cust-8"), "{out}");
    let (code, _, _) = run_cli(&app, &["customer", "upsert"]).await;
    assert_eq!(code, Some(2), "an id is required");
}

#[tokio::test]
async fn health_of_an_unknown_service_exits_69_as_documented() {
    let app = spawn_app().await;
    let (code, out, err) = run_cli(&app, &["health", "--service", "nope"]).await;
    assert_eq!(code, Some(69), "{out} {err}");
    assert!(
        err.contains("SERVICE_UNKNOWN") && err.contains("'nope'"),
        "{err}"
    );
}

#[tokio::test]
async fn stats_of_an_unknown_queue_is_an_error() {
    let app = spawn_app().await;
    let (code, out, err) = run_cli(&app, &["stats", "--queue", "nosuch"]).await;
    assert_eq!(code, Some(2), "{out} {err}");
    assert!(err.contains("queue_id") && err.contains("nosuch"), "{err}");
    let (code, _, err) = run_cli(&app, &["stats", "--queue", "general"]).await;
    assert_eq!(code, Some(0), "{err}");
}

#[tokio::test]
async fn plan_validate_json_prints_the_issues_as_json_on_stdout() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[queues]]\nid = \"a\"\n[default_route]\nqueue = \"b\"\n",
    )
    .unwrap();
    let path = file.display().to_string();
    let (code, out, _) = run_cli(&app, &["plan", "validate", &path, "--json"]).await;
    assert_eq!(code, Some(2));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON on stdout");
    assert_eq!(v["valid"], false);
    assert_eq!(v["issues"][0]["path"], "default_route.queue");
}

#[tokio::test]
async fn plan_apply_and_rollback_never_overwrite_a_change_they_did_not_see() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, crate::plans::uk_to_sales()).unwrap();
    let path = file.display().to_string();
    // Based on the active version (1) by default.
    let (code, out, err) = run_cli(&app, &["plan", "apply", &path]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("applied: version 2"), "{out}");
    // An editor who started from version 1 is refused now that 2 is active.
    let (code, _, err) = run_cli(&app, &["plan", "apply", &path, "--based-on", "1"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Aborted"), "{err}");
    let (code, _, err) = run_cli(&app, &["plan", "rollback", "1", "--based-on", "1"]).await;
    assert_eq!(code, Some(1), "{err}");
    // --force applies over whatever is active.
    let (code, out, err) = run_cli(&app, &["plan", "rollback", "1", "--force"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("now version 3"), "{out}");
    // Rolling back to the text already active says so.
    let (code, out, err) = run_cli(&app, &["plan", "rollback", "1"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("already active (as version 3, same text): nothing changed"),
        "{out}"
    );
    let (_, out, _) = run_cli(&app, &["plan", "history", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["versions"].as_array().unwrap().len(), 3);
}

/// Runs `holdless bench` with `args`; returns (exit code, stdout, stderr).
fn bench_status(args: Vec<String>) -> (Option<i32>, String, String) {
    let out = holdless().arg("bench").args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn args(s: &str, server: &str) -> Vec<String> {
    s.split_whitespace()
        .map(str::to_owned)
        .chain(["--server".to_owned(), server.to_owned()])
        .collect()
}

/// An operator benching callbacks against a server with a per-principal callback
/// limit: the requests past the limit fail, and the run says so and how.
#[tokio::test]
async fn bench_exits_1_and_counts_failures_by_status_code() {
    let app = spawn_app_with(|s| {
        s.limits.callback_requests_per_phone_per_hour = 0;
        s.limits.callback_requests_per_principal_per_hour = 5;
    })
    .await;
    let server = app.addr.to_string();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        bench_status(args(
            "--scenario callback --clients 1 --connections 1 --requests 20 --warmup 0",
            &server,
        ))
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{out} {err}");
    assert!(out.contains("5 ok, 15 errors"), "{out}");
    assert!(out.contains("RESOURCE_EXHAUSTED: 15"), "{out}");
    assert!(
        err.contains("15 request(s) failed: RESOURCE_EXHAUSTED: 15"),
        "{err}"
    );
}

#[tokio::test]
async fn bench_refuses_to_write_callbacks_into_a_store_that_holds_some_unless_told_yes() {
    let app = spawn_app_with(|s| {
        s.limits.callback_requests_per_phone_per_hour = 0;
        s.limits.callback_requests_per_principal_per_hour = 0;
    })
    .await;
    let mut c =
        holdless::api::pb::callback_service_client::CallbackServiceClient::new(app.channel.clone());
    c.request_callback(holdless::api::pb::RequestCallbackRequest {
        queue_id: "general".into(),
        phone_number: "+12125550142".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let server = format!("http://{}", app.addr);
    let run = "--scenario callback --clients 1 --connections 1 --requests 3 --warmup 0";
    let (refused, allowed, route) = tokio::task::spawn_blocking(move || {
        (
            bench_status(args(run, &server)),
            bench_status(args(&format!("{run} --yes"), &server)),
            bench_status(args(
                "--scenario route --clients 1 --connections 1 --requests 3 --warmup 0",
                &server,
            )),
        )
    })
    .await
    .unwrap();
    assert_eq!(refused.0, Some(64), "{refused:?}");
    assert!(
        refused.2.contains("already holds callbacks") && refused.2.contains("--yes"),
        "{refused:?}"
    );
    assert_eq!(allowed.0, Some(0), "{allowed:?}");
    assert!(allowed.1.contains("3 ok, 0 errors"), "{allowed:?}");
    // RouteCall writes no callbacks: no question asked.
    assert_eq!(route.0, Some(0), "{route:?}");
    let listed = c
        .list_callbacks(holdless::api::pb::ListCallbacksRequest {
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.callbacks.len(), 4, "the refused run wrote nothing");
}
