//! Reloading the configured plan file without a restart: through the service (the
//! method SIGHUP calls) and with a real SIGHUP to a running `holdless serve`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::helpers::*;
use crate::plans::uk_to_sales;
use holdless::clock::ManualClock;
use holdless::domain::audit::AuditAction;
use holdless::live::LiveConfig;
use holdless::service::{Holdless, ReloadOutcome, EXAMPLE_PLAN};
use holdless::store::{SledStore, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plan_file_keeps_the_active_plan_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
    let clock = Arc::new(ManualClock::new(at(WEEKDAY_NOON)));
    let h = Holdless::start(store, clock, EXAMPLE_PLAN, LiveConfig::default())
        .await
        .unwrap();
    let file = dir.path().join("plan.toml");

    std::fs::write(&file, "[default_route]\nqueue = \"nowhere\"\n").unwrap();
    assert!(h.reload_plan_file(Some(&file)).await.is_err());
    assert!(h
        .reload_plan_file(Some(&dir.path().join("missing.toml")))
        .await
        .is_err());
    assert_eq!(h.plan_reload_failures(), 2);
    assert_eq!(h.active_plan().version, 1);

    // The built-in example is the configured file when none is set: unchanged.
    assert_eq!(
        h.reload_plan_file(None).await.unwrap(),
        ReloadOutcome::Unchanged(1)
    );
    std::fs::write(&file, uk_to_sales()).unwrap();
    let ReloadOutcome::Applied(r) = h.reload_plan_file(Some(&file)).await.unwrap() else {
        panic!("a changed file is applied");
    };
    assert_eq!(r.version, 2);
    assert_eq!(h.active_plan().version, 2);
    assert_eq!(
        h.reload_plan_file(Some(&file)).await.unwrap(),
        ReloadOutcome::Unchanged(2)
    );
    assert_eq!(h.plan_reload_failures(), 2);
    let log = h.audit_log(0, 10).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.action, last.principal.as_str()),
        (AuditAction::PlanReload, "system")
    );
    h.close().await;
}

/// Reads the child's log lines until one contains `want`; returns them all.
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    want: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let found = line.contains(want);
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!("log ended before '{want}': {seen:#?}");
}

/// Kills the server if the test fails half-way, so no daemon outlives it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success());
}

fn cli(server: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_holdless"))
        .args(args)
        .args(["--server", server])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn sighup_reloads_the_plan_file_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, EXAMPLE_PLAN).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdless"))
        .arg("serve")
        .current_dir(dir.path())
        .env_remove("HOLDLESS_SERVER")
        .env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__STORE__PATH", dir.path().join("data"))
        .env("HOLDLESS__PLAN__FILE", &file)
        .env("HOLDLESS_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = KillOnDrop(child);
    let child = &mut child.0;
    let mut lines = BufReader::new(stderr).lines();
    let start = read_until(&mut lines, "SERVING");
    let addr = start
        .iter()
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .expect("the log names the address")
        .to_owned();
    let server = format!("http://{addr}");

    std::fs::write(&file, uk_to_sales()).unwrap();
    signal(child.id(), "-HUP");
    read_until(&mut lines, "plan reloaded");
    // The daemon runs on the wall clock: check the version, not hour-dependent queues.
    let routed = cli(&server, &["route", "--caller", "+442079460958", "--json"]);
    assert!(routed.contains("\"plan_version\": 2"), "{routed}");
    assert_eq!(cli(&server, &["plan", "export"]), uk_to_sales());

    std::fs::write(&file, "this is not a plan").unwrap();
    signal(child.id(), "-HUP");
    read_until(&mut lines, "plan reload failed");
    let history = cli(&server, &["plan", "history"]);
    assert!(history.lines().any(|l| l.starts_with("*  2")), "{history}");

    signal(child.id(), "-TERM");
    let _rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
