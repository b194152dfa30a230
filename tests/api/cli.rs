//! The real binary: admin commands against a server on port 0, and `serve` itself.

use std::process::{Command, Stdio};

use crate::helpers::*;

fn holdless() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdless"));
    c.env_remove("HOLDLESS_SERVER");
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

#[test]
fn bench_tool_runs_a_tiny_comparison_with_the_baseline() {
    let out = holdless()
        .args([
            "bench",
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
            "--json",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let reports = v["reports"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["target"], "baseline");
    assert_eq!(reports[1]["target"], "holdless");
    for r in reports {
        assert_eq!(r["ok"], 200, "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert!(
            r["latency"]["p99_us"].as_u64().unwrap() >= r["latency"]["p50_us"].as_u64().unwrap()
        );
    }
    assert!(v["throughput_ratio"].as_f64().unwrap() > 0.0);
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
