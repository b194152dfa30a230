//! `holdless torture` through the real binary: a short clean run, and the checker
//! failing (exit 1) when the store does not hold what the clients were told.

use std::path::Path;
use std::process::{Command, Output};

fn torture(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_holdless"))
        .arg("torture")
        .args(args)
        .output()
        .expect("run holdless torture")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The numbers of a `runs=N acked=N lost=N duplicated=N inconsistent=N` line.
fn summary(stdout: &str) -> Vec<(String, u64)> {
    let line = stdout.lines().last().unwrap_or_default();
    line.split(' ')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}"));
            (k.to_owned(), v.parse().unwrap_or_else(|_| panic!("{line}")))
        })
        .collect()
}

const SHORT: &[&str] = &[
    "--seed",
    "7",
    "--min-kill-ms",
    "300",
    "--max-kill-ms",
    "700",
    "--callbacks-per-run",
    "60",
];

#[test]
fn two_kill_and_restart_cycles_lose_nothing() {
    let out = torture(&[&["--runs", "2"], SHORT].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let s = summary(&stdout);
    let keys: Vec<&str> = s.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["runs", "acked", "lost", "duplicated", "inconsistent"],
        "{stdout}"
    );
    assert_eq!(s[0].1, 2);
    assert!(s[1].1 > 0, "something was acknowledged: {stdout}");
    assert_eq!((s[2].1, s[3].1, s[4].1), (0, 0, 0), "{stdout}\n{stderr}");
    assert!(stderr.contains("run 2/2: killed"), "{stderr}");
    assert!(stderr.contains("stopped with SIGTERM"), "{stderr}");
}

/// Adds an acknowledgement the server never gave: a callback that is not in the store.
fn forge_lost_callback(dir: &Path) {
    let path = dir.join("ledger.json");
    let mut ledger: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("ledger written")).expect("json");
    ledger["acked"]
        .as_array_mut()
        .expect("acked list")
        .push(serde_json::json!({
            "request_id": "forged",
            "callback_id": "01KZZZZZZZZZZZZZZZZZZZZZZZ",
            "phone": "+12129990000",
            "queue_id": "torture",
        }));
    std::fs::write(&path, serde_json::to_vec(&ledger).expect("json")).expect("write");
}

#[test]
fn check_only_fails_when_an_acknowledged_callback_is_missing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let data_s = data.to_str().expect("utf-8 path");
    let out = torture(&[&["--runs", "1", "--data-dir", data_s], SHORT].concat());
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");

    // The untouched store passes on its own.
    let out = torture(&["--check-only", "--data-dir", data_s]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(summary(&stdout)[2], ("lost".into(), 0));

    forge_lost_callback(&data);
    let out = torture(&["--check-only", "--data-dir", data_s]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert_eq!(summary(&stdout)[2], ("lost".into(), 1), "{stdout}");
    assert!(stderr.contains("01KZZZZZZZZZZZZZZZZZZZZZZZ"), "{stderr}");

    // A torture never starts on a store it did not write.
    let out = torture(&["--runs", "1", "--data-dir", data_s]);
    assert_eq!(out.status.code(), Some(64), "{:?}", text(&out));
}

/// `--backend` names the store: the failover torture runs on PostgreSQL only, the
/// single-server crash test on sled only; a mismatch is refused as bad usage (64)
/// before anything starts.
#[test]
fn a_backend_that_does_not_fit_the_torture_is_refused() {
    for (args, says) in [
        (
            &["--backend", "sled", "--failover"][..],
            "--backend postgres",
        ),
        (&["--backend", "postgres"][..], "add --failover"),
    ] {
        let out = torture(args);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let out = torture(&["--backend", "oracle"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses an unknown backend"
    );
}
