//! `holdless torture`: crash consistency of a real server, checked against what its
//! clients were told.
//!
//! Each run starts `holdless serve` as a child process (loopback port 0, the same store
//! every run, a plan whose one queue is always open so dispatch happens at any hour),
//! drives it with callback requests, dialers and agents ([`load`]), kills it with SIGKILL
//! at a random moment (seeded), and checks a copy of the crashed store against the
//! [`Ledger`] of every OK reply so far ([`check`]). The copy is what the checker opens,
//! so the next server recovers the crashed files itself, as it would in production.
//! State accumulates across runs (bounded by `runs x callbacks_per_run`). After the last
//! run the server is started once more: it answers what was left unanswered, its
//! `ListCallbacks` must show exactly the store's records, and it must stop cleanly on
//! SIGTERM; the store is then checked in place.
//!
//! SIGKILL is a process crash: the page cache survives it, so this tests ordering
//! (nothing acknowledged before it is applied, recovery of sled's files, the scheduler's
//! rebuild), not `fdatasync` against power loss.

pub mod check;
pub mod failover;
pub mod load;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

pub use check::{check, check_store, Kind, Ledger, Problem, Report};
use load::{LoadShape, Tasks, Workload};

use crate::api::pb;

/// The store directory inside the data directory.
const STORE_DIR: &str = "store";
/// Where the crashed store is copied for checking.
const CHECK_DIR: &str = "check";
const PLAN_FILE: &str = "plan.toml";
const LEDGER_FILE: &str = "ledger.json";
const LOG_FILE: &str = "server.log";
/// How long a server may take to report SERVING (a large store on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the final server may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the final server gets to answer what was left unanswered.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Server log lines kept for error messages.
const LOG_TAIL: usize = 40;
/// Problems listed in the summary (all are counted).
const MAX_LISTED: usize = 50;

/// The plan every torture server runs: one queue, open around the clock, calling window
/// the whole day, short retry backoff (attempts and retries happen within a run),
/// expiry far beyond any torture.
pub const TORTURE_PLAN: &str = r#"# holdless torture: one queue, always open, quick retries.
[[queues]]
id = "torture"
name = "Torture"
skills = ["support"]
[queues.callback]
window_start = "00:00"
window_end = "24:00"
max_attempts = 3
retry_backoff_secs = [1]
expiry_secs = 604800

[default_route]
queue = "torture"
"#;

#[derive(Debug, Clone)]
pub struct TortureOptions {
    pub runs: u32,
    pub seed: u64,
    /// Keep everything here (it must not hold a store yet); `None`: a temporary directory.
    pub data_dir: Option<PathBuf>,
    /// The holdless binary to start as the server.
    pub binary: PathBuf,
    pub clients: usize,
    pub dialers: usize,
    pub agents: usize,
    pub callbacks_per_run: u64,
    /// The server is killed between these two delays after it reports SERVING.
    pub min_kill: Duration,
    pub max_kill: Duration,
    /// The server's `callbacks.lease_secs`.
    pub lease_secs: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TortureError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Io(String),
    /// The server did not start, or died by itself: a finding, with its last log lines.
    #[error("{0}")]
    Server(String),
}

fn io(what: &str, e: impl std::fmt::Display) -> TortureError {
    TortureError::Io(format!("{what}: {e}"))
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub runs: u32,
    pub seed: u64,
    /// Distinct callbacks acknowledged to a client.
    pub acked: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub inconsistent: usize,
    /// Callback records in the store at the end.
    pub records: usize,
    pub dispatches: usize,
    pub outcomes_acked: usize,
    pub retried_requests: u64,
    pub retried_outcomes: u64,
    pub stale_reports: u64,
    pub wall_secs: f64,
    /// Where the store, ledger and server log were kept (none: removed).
    pub data_dir: Option<PathBuf>,
    /// The first problems found (all are counted above).
    pub problems: Vec<Problem>,
}

impl Summary {
    /// `runs=N acked=N lost=N duplicated=N inconsistent=N`
    pub fn line(&self) -> String {
        format!(
            "runs={} acked={} lost={} duplicated={} inconsistent={}",
            self.runs, self.acked, self.lost, self.duplicated, self.inconsistent
        )
    }

    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.inconsistent == 0
    }
}

/// Findings of every check, each counted once.
#[derive(Default)]
struct Findings(BTreeMap<(Kind, String), String>);

impl Findings {
    /// Adds `problems`; returns the ones not seen before.
    fn add(&mut self, problems: impl IntoIterator<Item = Problem>) -> Vec<Problem> {
        let mut new = Vec::new();
        for p in problems {
            if let std::collections::btree_map::Entry::Vacant(e) =
                self.0.entry((p.kind, p.key.clone()))
            {
                e.insert(p.detail.clone());
                new.push(p);
            }
        }
        new
    }

    fn count(&self, kind: Kind) -> usize {
        self.0.keys().filter(|(k, _)| *k == kind).count()
    }

    fn listed(&self) -> Vec<Problem> {
        self.0
            .iter()
            .take(MAX_LISTED)
            .map(|((kind, key), detail)| Problem {
                kind: *kind,
                key: key.clone(),
                detail: detail.clone(),
            })
            .collect()
    }
}

/// A `holdless serve` child.
struct Server {
    child: tokio::process::Child,
    addr: String,
    tail: Arc<Mutex<VecDeque<String>>>,
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let t = tail.lock().unwrap_or_else(|e| e.into_inner());
    t.iter().map(|l| format!("  | {l}\n")).collect()
}

fn keep_line(tail: &Mutex<VecDeque<String>>, log: &Mutex<std::fs::File>, line: &str) {
    use std::io::Write;
    let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
    if t.len() == LOG_TAIL {
        t.pop_front();
    }
    t.push_back(line.to_owned());
    let mut f = log.lock().unwrap_or_else(|e| e.into_inner());
    let _ = writeln!(f, "{line}");
}

/// The address in a `holdless is SERVING addr=...` line.
fn serving_addr(line: &str) -> Option<String> {
    if !line.contains("holdless is SERVING") {
        return None;
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .map(|a| format!("http://{a}"))
}

/// `holdless serve` of `binary` in `dir` as the tortures start it: stderr piped (its
/// log tells the address), killed with its handle, only the settings the torture gives
/// (none of the caller's `HOLDLESS*` variables, no holdless.toml), gRPC and `/metrics`
/// on loopback port 0, and no web console (several servers on one machine would share
/// its port).
pub(crate) fn serve_command(binary: &Path, dir: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("serve")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HOLDLESS") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOLDLESS__SERVER__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__METRICS__LISTEN", "127.0.0.1:0")
        .env("HOLDLESS__CONSOLE__ENABLED", "false");
    cmd
}

impl Server {
    /// Starts `holdless serve` on the torture's store; returns once it reports SERVING.
    async fn start(
        opts: &TortureOptions,
        dir: &Path,
        log: &Arc<Mutex<std::fs::File>>,
        life: u32,
    ) -> Result<Server, TortureError> {
        let mut cmd = serve_command(&opts.binary, dir);
        cmd.env("HOLDLESS__STORE__PATH", dir.join(STORE_DIR))
            .env("HOLDLESS__PLAN__FILE", dir.join(PLAN_FILE))
            .env(
                "HOLDLESS__CALLBACKS__LEASE_SECS",
                opts.lease_secs.to_string(),
            )
            // One principal asking for many numbers on purpose.
            .env(
                "HOLDLESS__LIMITS__CALLBACK_REQUESTS_PER_PHONE_PER_HOUR",
                "0",
            )
            .env(
                "HOLDLESS__LIMITS__CALLBACK_REQUESTS_PER_PRINCIPAL_PER_HOUR",
                "0",
            )
            .env("HOLDLESS_LOG", "info");
        let mut child = cmd
            .spawn()
            .map_err(|e| io(&format!("cannot start {}", opts.binary.display()), e))?;
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        keep_line(&tail, log, &format!("=== torture: server life {life} ==="));
        let Some(stderr) = child.stderr.take() else {
            return Err(TortureError::Io("the server's stderr is not piped".into()));
        };
        let mut lines = BufReader::new(stderr).lines();
        let wait = async {
            while let Ok(Some(line)) = lines.next_line().await {
                keep_line(&tail, log, &line);
                if let Some(addr) = serving_addr(&line) {
                    return Some(addr);
                }
            }
            None
        };
        let addr = match tokio::time::timeout(START_TIMEOUT, wait).await {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                let status = child
                    .wait()
                    .await
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                return Err(TortureError::Server(format!(
                    "server life {life} exited before SERVING ({status}); last log lines:\n{}",
                    tail_text(&tail)
                )));
            }
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(TortureError::Server(format!(
                    "server life {life} did not report SERVING within {} s; last log lines:\n{}",
                    START_TIMEOUT.as_secs(),
                    tail_text(&tail)
                )));
            }
        };
        // Keep reading the log so the child never blocks on a full pipe.
        let (t, l) = (tail.clone(), log.clone());
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                keep_line(&t, &l, &line);
            }
        });
        Ok(Server { child, addr, tail })
    }

    /// Fails when the server already exited by itself.
    fn still_running(&mut self, life: u32) -> Result<(), TortureError> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(TortureError::Server(format!(
                "server life {life} exited by itself ({status}); last log lines:\n{}",
                tail_text(&self.tail)
            ))),
            Err(e) => Err(io("cannot poll the server", e)),
        }
    }

    /// SIGKILL, then waits for the process to be gone.
    async fn kill9(&mut self, life: u32) -> Result<(), TortureError> {
        self.still_running(life)?;
        self.child
            .start_kill()
            .map_err(|e| io("cannot kill the server", e))?;
        self.child
            .wait()
            .await
            .map_err(|e| io("cannot reap the server", e))?;
        Ok(())
    }

    /// SIGTERM (through `kill(1)`), then waits up to [`STOP_TIMEOUT`]; returns whether
    /// the server exited with status 0.
    async fn terminate(&mut self, life: u32) -> Result<bool, TortureError> {
        self.still_running(life)?;
        let Some(pid) = self.child.id() else {
            return Ok(false);
        };
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|e| io("cannot run kill(1) to send SIGTERM", e))?;
        if !sent.success() {
            return Err(TortureError::Io(format!("kill -TERM {pid} failed: {sent}")));
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) => Ok(status.success()),
            Ok(Err(e)) => Err(io("cannot reap the server", e)),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                Ok(false)
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Copies the crashed store aside and checks the copy.
async fn check_copy(dir: &Path, ledger: &Ledger) -> Result<Report, TortureError> {
    let (from, to) = (dir.join(STORE_DIR), dir.join(CHECK_DIR));
    let copy_to = to.clone();
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&copy_to);
        copy_dir(&from, &copy_to)
    })
    .await
    .map_err(|e| io("copying the store failed", e))?
    .map_err(|e| io("cannot copy the store", e))?;
    let (report, _) = check_store(&to, ledger)
        .await
        .map_err(|e| io("cannot read the store", e))?;
    let _ = std::fs::remove_dir_all(&to);
    Ok(report)
}

/// Every callback the server lists, through the API.
async fn list_all(addr: &str) -> Result<Vec<pb::Callback>, TortureError> {
    let ch = tonic::transport::Endpoint::from_shared(addr.to_owned())
        .map_err(|e| io("bad server address", e))?
        .connect()
        .await
        .map_err(|e| io("cannot reach the final server", e))?;
    let mut api = pb::callback_service_client::CallbackServiceClient::new(ch);
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_callbacks(pb::ListCallbacksRequest {
                page_size: crate::service::callbacks::MAX_PAGE as i32,
                page_token: token,
                ..Default::default()
            })
            .await
            .map_err(|e| io("ListCallbacks failed", e))?
            .into_inner();
        out.extend(page.callbacks);
        if page.next_page_token.is_empty() {
            return Ok(out);
        }
        token = page.next_page_token;
    }
}

/// What the final server listed against what its store holds, record by record.
fn compare_listing(
    listed: &[pb::Callback],
    records: &[crate::domain::callback::Callback],
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut wrong = |id: &str, detail: String| {
        problems.push(Problem {
            kind: Kind::Inconsistent,
            key: format!("api:{id}"),
            detail,
        })
    };
    let stored: BTreeMap<&str, &crate::domain::callback::Callback> =
        records.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut seen = std::collections::HashSet::new();
    for l in listed {
        if !seen.insert(l.callback_id.as_str()) {
            wrong(
                &l.callback_id,
                format!("ListCallbacks lists {} twice", l.callback_id),
            );
            continue;
        }
        match stored.get(l.callback_id.as_str()) {
            None => wrong(
                &l.callback_id,
                format!("ListCallbacks lists {}, which is not stored", l.callback_id),
            ),
            Some(c) => {
                let state = load::state_from_pb(l.state);
                if state != Some(c.state) || l.attempts != c.attempts || l.phone_number != c.phone {
                    wrong(
                        &c.id,
                        format!(
                            "ListCallbacks shows {} as {:?} after {} attempts for {}; stored {:?} after {} for {}",
                            c.id, state, l.attempts, l.phone_number, c.state, c.attempts, c.phone
                        ),
                    );
                }
            }
        }
    }
    for c in records {
        if !seen.contains(c.id.as_str()) {
            wrong(
                &c.id,
                format!("stored callback {} is missing from ListCallbacks", c.id),
            );
        }
    }
    problems
}

fn write_ledger(dir: &Path, ledger: &Ledger) -> Result<(), TortureError> {
    let text = serde_json::to_vec(ledger).map_err(|e| io("cannot encode the ledger", e))?;
    std::fs::write(dir.join(LEDGER_FILE), text).map_err(|e| io("cannot write the ledger", e))
}

fn read_ledger(dir: &Path) -> Result<Ledger, TortureError> {
    let path = dir.join(LEDGER_FILE);
    let text =
        std::fs::read(&path).map_err(|e| io(&format!("cannot read {}", path.display()), e))?;
    serde_json::from_slice(&text).map_err(|e| io(&format!("{} is not a ledger", path.display()), e))
}

/// The data directory: the given one (created if missing; it must not hold a store
/// yet, so every record in it came from this torture) or a temporary one.
fn data_dir(opts: &TortureOptions) -> Result<(PathBuf, Option<tempfile::TempDir>), TortureError> {
    match &opts.data_dir {
        Some(d) => {
            let store = d.join(STORE_DIR);
            if store.exists() {
                return Err(TortureError::Usage(format!(
                    "{} already holds a store; give an empty --data-dir (or --check-only to check it)",
                    d.display()
                )));
            }
            std::fs::create_dir_all(d)
                .map_err(|e| io(&format!("cannot create {}", d.display()), e))?;
            Ok((d.clone(), None))
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("holdless-torture-")
                .tempdir()
                .map_err(|e| io("cannot create a temporary directory", e))?;
            Ok((t.path().to_owned(), Some(t)))
        }
    }
}

fn validate(opts: &TortureOptions) -> Result<(), TortureError> {
    let bad = |m: &str| Err(TortureError::Usage(m.into()));
    if opts.runs == 0 {
        return bad("--runs must be at least 1");
    }
    if opts.min_kill > opts.max_kill {
        return bad("--min-kill-ms must not exceed --max-kill-ms");
    }
    if opts.clients == 0 || opts.dialers == 0 || opts.agents == 0 {
        return bad("--clients, --dialers and --agents must be at least 1");
    }
    if opts.lease_secs == 0 {
        return bad("--lease-secs must be at least 1");
    }
    if opts.callbacks_per_run == 0 {
        return bad("--callbacks-per-run must be at least 1");
    }
    Ok(())
}

/// Runs the torture; `progress` gets one line per run.
pub async fn run(
    opts: &TortureOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<Summary, TortureError> {
    validate(opts)?;
    let started = Instant::now();
    let (dir, temp) = data_dir(opts)?;
    std::fs::write(dir.join(PLAN_FILE), TORTURE_PLAN)
        .map_err(|e| io("cannot write the plan", e))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG_FILE))
        .map_err(|e| io("cannot open the server log", e))?;
    let log = Arc::new(Mutex::new(log));
    let lease_ms = i64::try_from(opts.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let w = Arc::new(Workload::new(
        opts.seed,
        LoadShape {
            clients: opts.clients,
            dialers: opts.dialers,
            agents: opts.agents,
            callbacks_per_run: opts.callbacks_per_run,
            spread: opts.max_kill,
        },
        lease_ms,
    ));
    let mut rng = fastrand::Rng::with_seed(opts.seed);
    let mut findings = Findings::default();

    let result = async {
        for run in 1..=opts.runs {
            let mut server = Server::start(opts, &dir, &log, run).await?;
            let tasks = Arc::new(Tasks::default());
            let before = w.sizes();
            w.start(&server.addr, run, &tasks);
            let min = u64::try_from(opts.min_kill.as_millis()).unwrap_or(u64::MAX);
            let max = u64::try_from(opts.max_kill.as_millis()).unwrap_or(u64::MAX);
            let delay = rng.u64(min..=max);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            server.kill9(run).await?;
            tasks.stop().await;
            w.end_run();

            let checking = Instant::now();
            let report = check_copy(&dir, &w.ledger()).await?;
            let new = findings.add(report.problems.iter().cloned().chain(w.live_problems()));
            let after = w.sizes();
            let (retry_req, retry_out) = w.pending_retries();
            progress(format!(
                "run {run}/{}: killed {delay} ms after SERVING; acked {} (+{}), dispatches +{}, outcomes +{}, unanswered {}+{}; store {} callbacks, checked in {} ms: {}",
                opts.runs,
                report.acked,
                after.0 - before.0,
                after.1 - before.1,
                after.2 - before.2,
                retry_req,
                retry_out,
                report.records,
                checking.elapsed().as_millis(),
                if new.is_empty() {
                    "ok".to_owned()
                } else {
                    new.iter()
                        .map(|p| format!("\n  {:?}: {}", p.kind, p.detail))
                        .collect()
                }
            ));
        }

        // The last life: answer what is left, list, stop cleanly, check in place.
        let life = opts.runs + 1;
        let mut server = Server::start(opts, &dir, &log, life).await?;
        let settled = tokio::time::timeout(SETTLE_TIMEOUT, w.settle(&server.addr)).await;
        if settled.is_err() {
            findings.add([Problem {
                kind: Kind::Inconsistent,
                key: "final:settle".into(),
                detail: format!(
                    "the final server did not answer the unanswered requests and reports within {} s",
                    SETTLE_TIMEOUT.as_secs()
                ),
            }]);
        }
        let listed = list_all(&server.addr).await?;
        if !server.terminate(life).await? {
            findings.add([Problem {
                kind: Kind::Inconsistent,
                key: "final:shutdown".into(),
                detail: format!(
                    "the final server did not exit 0 within {} s of SIGTERM; last log lines:\n{}",
                    STOP_TIMEOUT.as_secs(),
                    tail_text(&server.tail)
                ),
            }]);
        }
        let ledger = w.ledger();
        let (report, records) = check_store(&dir.join(STORE_DIR), &ledger)
            .await
            .map_err(|e| io("cannot read the store", e))?;
        let new = findings.add(
            report
                .problems
                .iter()
                .cloned()
                .chain(w.live_problems())
                .chain(compare_listing(&listed, &records)),
        );
        progress(format!(
            "final: restarted, {} listed, stopped with SIGTERM; store {} callbacks: {}",
            listed.len(),
            report.records,
            if new.is_empty() {
                "ok".to_owned()
            } else {
                new.iter()
                    .map(|p| format!("\n  {:?}: {}", p.kind, p.detail))
                    .collect()
            }
        ));
        Ok::<_, TortureError>((report, ledger))
    }
    .await;

    // Keep the evidence when something went wrong (or when asked to).
    let ledger = w.ledger();
    let _ = write_ledger(&dir, &ledger);
    let failed = result.is_err() || !findings.0.is_empty();
    let kept = match temp {
        Some(t) if failed => Some(t.keep()),
        Some(_) => None,
        None => Some(dir.clone()),
    };
    let (report, ledger) = result.map_err(|e| match (&e, &kept) {
        (TortureError::Server(m), Some(d)) => TortureError::Server(format!(
            "{m}(store, ledger and log kept in {})",
            d.display()
        )),
        _ => e,
    })?;
    let c = &w.counters;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(Summary {
        runs: opts.runs,
        seed: opts.seed,
        acked: report.acked,
        lost: findings.count(Kind::Lost),
        duplicated: findings.count(Kind::Duplicated),
        inconsistent: findings.count(Kind::Inconsistent),
        records: report.records,
        dispatches: ledger.grants.len(),
        outcomes_acked: ledger.acked_outcomes.len(),
        retried_requests: c.retried_requests.load(Relaxed),
        retried_outcomes: c.retried_outcomes.load(Relaxed),
        stale_reports: c.stale_reports.load(Relaxed),
        wall_secs: started.elapsed().as_secs_f64(),
        data_dir: kept,
        problems: findings.listed(),
    })
}

/// Checks the store in `dir` against the ledger a torture left there (no server may
/// have the store open).
pub async fn check_only(dir: &Path) -> Result<Summary, TortureError> {
    let started = Instant::now();
    let ledger = read_ledger(dir)?;
    let (report, _) = check_store(&dir.join(STORE_DIR), &ledger)
        .await
        .map_err(|e| io("cannot read the store", e))?;
    let mut findings = Findings::default();
    findings.add(report.problems.iter().cloned());
    Ok(Summary {
        runs: 0,
        seed: 0,
        acked: report.acked,
        lost: findings.count(Kind::Lost),
        duplicated: findings.count(Kind::Duplicated),
        inconsistent: findings.count(Kind::Inconsistent),
        records: report.records,
        dispatches: ledger.grants.len(),
        outcomes_acked: ledger.acked_outcomes.len(),
        retried_requests: 0,
        retried_outcomes: 0,
        stale_reports: 0,
        wall_secs: started.elapsed().as_secs_f64(),
        data_dir: Some(dir.to_owned()),
        problems: findings.listed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_torture_plan_compiles() {
        let plan = crate::routing::compile::compile_toml(TORTURE_PLAN, 1).expect("valid");
        let q = plan.queue(load::QUEUE).expect("the torture queue");
        assert_eq!(q.skills, vec![load::SKILL.to_owned()]);
    }

    #[test]
    fn the_serving_line_gives_the_address() {
        let line =
            "2026-11-25T10:00:00Z  INFO holdless::app: holdless is SERVING addr=127.0.0.1:40123";
        assert_eq!(
            serving_addr(line).as_deref(),
            Some("http://127.0.0.1:40123")
        );
        assert_eq!(
            serving_addr("INFO gRPC and /metrics listening; starting up addr=127.0.0.1:1"),
            None
        );
    }

    #[test]
    fn findings_count_each_key_once() {
        let p = |kind, key: &str| Problem {
            kind,
            key: key.into(),
            detail: "d".into(),
        };
        let mut f = Findings::default();
        assert_eq!(f.add([p(Kind::Lost, "a"), p(Kind::Lost, "a")]).len(), 1);
        assert_eq!(
            f.add([p(Kind::Lost, "a"), p(Kind::Inconsistent, "a")])
                .len(),
            1
        );
        assert_eq!((f.count(Kind::Lost), f.count(Kind::Inconsistent)), (1, 1));
    }
}
