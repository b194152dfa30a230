//! Reloading the configured plan file without a restart: through the service (the
//! method SIGHUP calls) and with a real SIGHUP to a running `holdless serve`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use crate::helpers::*;
use crate::plans::uk_to_sales;
use holdless::clock::ManualClock;
use holdless::domain::audit::Actor;
use holdless::domain::audit::AuditAction;
use holdless::live::LiveConfig;
use holdless::service::{Holdless, PlanSource, ReloadOutcome, EXAMPLE_PLAN, PLAN_FILE_AUTHOR};
use holdless::store::{SledStore, Store};

/// A second variant of the example plan (uk calls to billing).
fn uk_to_billing() -> String {
    EXAMPLE_PLAN.replace(
        "[rules.action]\nqueue = \"uk_support\"\n",
        "[rules.action]\nqueue = \"billing\"\n",
    )
}

async fn start_with_file(dir: &std::path::Path, file: &std::path::Path) -> Holdless {
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir.join("store")).unwrap());
    let clock = Arc::new(ManualClock::new(at(WEEKDAY_NOON)));
    let text = std::fs::read_to_string(file).unwrap();
    Holdless::start_from(store, clock, &text, Some(file), LiveConfig::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_plan_file_keeps_the_active_plan_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, EXAMPLE_PLAN).unwrap();
    let h = start_with_file(dir.path(), &file).await;

    std::fs::write(&file, "[default_route]\nqueue = \"nowhere\"\n").unwrap();
    assert!(h
        .reload_plan_file(Some(&file), PlanSource::Api)
        .await
        .is_err());
    assert!(h
        .reload_plan_file(Some(&dir.path().join("missing.toml")), PlanSource::Api)
        .await
        .is_err());
    assert_eq!(h.plan_reload_failures(), 2);
    assert_eq!(h.active_plan().version, 1);

    std::fs::write(&file, uk_to_sales()).unwrap();
    let ReloadOutcome::Applied(r) = h
        .reload_plan_file(Some(&file), PlanSource::Api)
        .await
        .unwrap()
    else {
        panic!("a changed file is applied while the active version is the file's");
    };
    assert_eq!((r.version, r.author.as_str()), (2, PLAN_FILE_AUTHOR));
    assert_eq!(h.active_plan().version, 2);
    assert_eq!(
        h.reload_plan_file(Some(&file), PlanSource::Api)
            .await
            .unwrap(),
        ReloadOutcome::Unchanged {
            active: 2,
            imported: Some(2)
        }
    );
    assert_eq!(h.plan_reload_failures(), 2);
    let log = h.audit_log(0, 10).await.unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.action, last.principal.as_str()),
        (AuditAction::PlanReload, "system")
    );
    h.close(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_never_imports_the_example_nor_replaces_a_version_applied_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, EXAMPLE_PLAN).unwrap();
    let h = start_with_file(dir.path(), &file).await;
    let supervisor = Actor::new("supervisor", "");
    let applied = h
        .apply_plan(
            uk_to_sales(),
            1,
            "ops".into(),
            "via API".into(),
            &supervisor,
        )
        .await
        .unwrap();
    assert_eq!(applied.version, 2);

    // No plan.file (the shipped deploy/holdless.toml): the plan is left alone.
    assert_eq!(
        h.reload_plan_file(None, PlanSource::Api).await.unwrap(),
        ReloadOutcome::NoFile { active: 2 }
    );
    // The file has not changed since v1 was imported from it: nothing to do.
    assert_eq!(
        h.reload_plan_file(Some(&file), PlanSource::Api)
            .await
            .unwrap(),
        ReloadOutcome::Unchanged {
            active: 2,
            imported: Some(1)
        }
    );
    // It changed, but v2 came through the API since: refused.
    std::fs::write(&file, uk_to_billing()).unwrap();
    assert_eq!(
        h.reload_plan_file(Some(&file), PlanSource::Api)
            .await
            .unwrap(),
        ReloadOutcome::Refused {
            active: 2,
            imported: Some(1)
        }
    );
    assert_eq!(h.active_plan().version, 2);
    assert_eq!(h.plan_record(0).await.unwrap().toml, uk_to_sales());
    // With the file as the source of truth, the changed file wins (and is audited).
    let ReloadOutcome::Applied(r) = h
        .reload_plan_file(Some(&file), PlanSource::File)
        .await
        .unwrap()
    else {
        panic!("plan.source = \"file\" imports a changed file");
    };
    assert_eq!((r.version, r.toml.as_str()), (3, uk_to_billing().as_str()));
    let last = h.audit_log(0, 10).await.unwrap().pop().unwrap();
    assert_eq!(last.action, AuditAction::PlanReload);
    assert_eq!(h.plan_reload_failures(), 0);
    h.close(false).await;
}

#[tokio::test]
async fn the_api_may_not_claim_the_plan_files_author() {
    let app = spawn_app().await;
    let status = app
        .plans()
        .apply_plan(holdless::api::pb::ApplyPlanRequest {
            plan_toml: uk_to_sales(),
            author: PLAN_FILE_AUTHOR.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(violations(&status), vec!["author"]);
}

/// Reads the child's log lines until one contains `want`; returns them all.
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    want: &str,
) -> Vec<String> {
    read_until_any(lines, &[want])
}

/// Reads the child's log lines until one contains any of `wants`; returns them all.
fn read_until_any(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    wants: &[&str],
) -> Vec<String> {
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let found = wants.iter().any(|w| line.contains(w));
        seen.push(line);
        if found {
            return seen;
        }
    }
    panic!("log ended before any of {wants:?}: {seen:#?}");
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

/// A running `holdless serve` in `dir` (ports 0, store in `dir/data`) with the given
/// plan file (empty: none): the process, its log lines, and its gRPC address.
fn serve(
    dir: &std::path::Path,
    plan_file: &std::ffi::OsStr,
) -> (
    KillOnDrop,
    impl Iterator<Item = std::io::Result<String>>,
    String,
) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdless"))
        .arg("serve")
        .current_dir(dir)
        .env_remove("HOLDLESS_SERVER")
        .env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__CONSOLE__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__STORE__PATH", dir.join("data"))
        .env("HOLDLESS__PLAN__FILE", plan_file)
        .env("HOLDLESS_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = KillOnDrop(child);
    let mut lines = BufReader::new(stderr).lines();
    let start = read_until(&mut lines, "SERVING");
    let addr = start
        .iter()
        .rev()
        .find_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("addr=")))
        .expect("the log names the address")
        .to_owned();
    (child, lines, format!("http://{addr}"))
}

#[test]
fn sighup_without_a_plan_file_keeps_a_plan_applied_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines, server) = serve(dir.path(), "".as_ref());
    let edited = dir.path().join("edited.toml");
    std::fs::write(&edited, uk_to_sales()).unwrap();
    let edited = edited.to_str().unwrap().to_owned();
    cli(
        &server,
        &["plan", "apply", &edited, "--expected-version", "1"],
    );

    // `systemctl reload` after a certificate rotation.
    signal(child.0.id(), "-HUP");
    // Before: "plan reloaded" (the built-in example imported as v3).
    let seen = read_until_any(&mut lines, &["plan unchanged", "plan reloaded"]);
    assert!(
        seen.last()
            .unwrap()
            .contains("no plan.file; plan unchanged"),
        "{seen:#?}"
    );
    assert_eq!(cli(&server, &["plan", "export"]), uk_to_sales());
    let history = cli(&server, &["plan", "history"]);
    assert!(history.lines().any(|l| l.starts_with("*  2")), "{history}");
    assert_eq!(history.lines().count(), 3, "{history}");

    signal(child.0.id(), "-TERM");
    let _rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

#[test]
fn sighup_reloads_the_plan_file_of_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plan.toml");
    std::fs::write(&file, EXAMPLE_PLAN).unwrap();
    let (mut child, mut lines, server) = serve(dir.path(), file.as_os_str());
    let child = &mut child.0;

    std::fs::write(&file, uk_to_sales()).unwrap();
    signal(child.id(), "-HUP");
    read_until(&mut lines, "imported as a new version");
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
