//! `holdless torture --backend postgres --failover`: leader failover of a real cluster,
//! checked against what its clients were told.
//!
//! Three (`nodes`) `holdless serve` processes share one PostgreSQL database with a short
//! lease. Each run finds the leader (the node reporting SERVING), drives it with the
//! torture's workload ([`super::load`]) and then, alternately:
//!
//! - **kill**: SIGKILL the leader; another node must be SERVING within the lease + 2 s;
//!   the killed node is started again (it rejoins as a follower);
//! - **stall**: SIGSTOP the leader past its lease while its clients and dialers stay
//!   connected to it; another node must take over within the lease + 2 s and take load;
//!   then SIGCONT: the stalled node must commit nothing and exit 75 ("lost lease").
//!
//! "Commit nothing" is read from the database: every node process connects with its own
//! `application_name`, and a trigger on every holdless table logs the writer and the
//! database time of each committed row change (a fenced transaction rolls back with its
//! log rows). A write by the stalled process after the new leader's claim is a finding.
//!
//! At the end the last leader answers everything left unanswered, and the store is
//! checked against the ledger: every acknowledged callback exactly once, no callback
//! leased to two dialers at once, states and attempts as acknowledged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_postgres::NoTls;

use super::check::{check_open_store, Kind, Problem};
use super::load::{LoadShape, Tasks, Workload};
use super::{TortureError, TORTURE_PLAN};

/// How long the first leader may take to report SERVING.
const FIRST_LEADER: Duration = Duration::from_secs(60);
/// The bound on a takeover, on top of the lease.
const TAKEOVER_SLACK: Duration = Duration::from_secs(2);
/// Callbacks acknowledged by a leader before its fault is injected.
const ACKED_PER_PHASE: usize = 30;
/// How long a phase may take to see them.
const PHASE_LIMIT: Duration = Duration::from_secs(30);
/// Server log lines kept per node for error messages.
const LOG_TAIL: usize = 200;

#[derive(Debug, Clone)]
pub struct FailoverOptions {
    pub runs: u32,
    pub seed: u64,
    pub nodes: usize,
    /// A database the torture may fill (its own: the write log's triggers go on every
    /// table).
    pub postgres_url: String,
    pub binary: std::path::PathBuf,
    pub lease_ttl_secs: u64,
    /// The servers' `callbacks.lease_secs`.
    pub lease_secs: u64,
    pub clients: usize,
    pub dialers: usize,
    pub agents: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailoverSummary {
    pub runs: u32,
    pub seed: u64,
    pub acked: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub inconsistent: usize,
    pub records: usize,
    pub dispatches: usize,
    /// Row changes committed by a stalled leader after another node's claim.
    pub stale_writes: i64,
    /// From each fault (SIGKILL or SIGSTOP) to another node reporting SERVING, in ms.
    pub takeover_ms: Vec<u64>,
    pub wall_secs: f64,
    pub problems: Vec<Problem>,
}

impl FailoverSummary {
    pub fn line(&self) -> String {
        format!(
            "runs={} acked={} lost={} duplicated={} inconsistent={} stale_writes={} takeover_ms_max={}",
            self.runs,
            self.acked,
            self.lost,
            self.duplicated,
            self.inconsistent,
            self.stale_writes,
            self.takeover_ms.iter().max().copied().unwrap_or(0)
        )
    }

    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.inconsistent == 0 && self.stale_writes == 0
    }
}

/// One `holdless serve` process of the cluster.
struct Node {
    /// `application_name` and `cluster.node_id`: new for every process life.
    name: String,
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    addr: String,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Node {
    async fn start(
        opts: &FailoverOptions,
        dir: &std::path::Path,
        name: String,
    ) -> Result<Node, TortureError> {
        let mut cmd = super::serve_command(&opts.binary, dir);
        let url = &opts.postgres_url;
        let sep = if url.contains('?') { '&' } else { '?' };
        cmd.env("HOLDLESS__STORE__BACKEND", "postgres")
            .env(
                "HOLDLESS__STORE__POSTGRES__URL",
                format!("{url}{sep}application_name={name}"),
            )
            .env("HOLDLESS__STORE__PATH", dir.join("unused-sled"))
            .env("HOLDLESS__PLAN__FILE", dir.join("plan.toml"))
            .env(
                "HOLDLESS__CALLBACKS__LEASE_SECS",
                opts.lease_secs.to_string(),
            )
            .env(
                "HOLDLESS__LIMITS__CALLBACK_REQUESTS_PER_PHONE_PER_HOUR",
                "0",
            )
            .env(
                "HOLDLESS__LIMITS__CALLBACK_REQUESTS_PER_PRINCIPAL_PER_HOUR",
                "0",
            )
            .env(
                "HOLDLESS__CLUSTER__LEASE_TTL_SECS",
                opts.lease_ttl_secs.to_string(),
            )
            .env("HOLDLESS__CLUSTER__NODE_ID", &name)
            .env("HOLDLESS_LOG", "info");
        let mut child = cmd.spawn().map_err(|e| {
            TortureError::Io(format!("cannot start {}: {e}", opts.binary.display()))
        })?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| TortureError::Io("the server's stderr is not piped".into()))?;
        let log = Arc::new(Mutex::new(VecDeque::with_capacity(LOG_TAIL)));
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let keep = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening") {
                    let addr = line
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("addr="))
                        .map(|a| format!("http://{a}"));
                    if let (Some(a), Some(tx)) = (addr, addr_tx.take()) {
                        let _ = tx.send(a);
                    }
                }
                let mut l = keep.lock().unwrap_or_else(|e| e.into_inner());
                if l.len() == LOG_TAIL {
                    l.pop_front();
                }
                l.push_back(line);
            }
        });
        let addr = match tokio::time::timeout(FIRST_LEADER, addr_rx).await {
            Ok(Ok(a)) => a,
            _ => {
                let tail = tail_of(&name, &log);
                return Err(TortureError::Server(format!(
                    "{name} did not start listening:\n{tail}"
                )));
            }
        };
        Ok(Node {
            name,
            child,
            addr,
            log,
        })
    }

    fn signal(&self, sig: &str) -> Result<(), TortureError> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| TortureError::Server(format!("{} already exited", self.name)))?;
        let ok = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .map_err(|e| TortureError::Io(format!("cannot run kill: {e}")))?
            .success();
        if ok {
            Ok(())
        } else {
            Err(TortureError::Io(format!("kill {sig} {} failed", self.name)))
        }
    }

    /// The `load_ms` of its last "SERVING as the cluster leader" line: how long it
    /// took from winning the lease to serving.
    fn load_ms(&self) -> Option<u64> {
        let l = self.log.lock().unwrap_or_else(|e| e.into_inner());
        l.iter()
            .rev()
            .find(|line| line.contains("SERVING as the cluster leader"))?
            .split_whitespace()
            .find_map(|w| w.strip_prefix("load_ms="))?
            .parse()
            .ok()
    }

    fn tail(&self) -> String {
        tail_of(&self.name, &self.log)
    }
}

fn tail_of(name: &str, log: &Mutex<VecDeque<String>>) -> String {
    let l = log.lock().unwrap_or_else(|e| e.into_inner());
    l.iter()
        .rev()
        .take(40)
        .rev()
        .map(|line| format!("  {name} | {line}\n"))
        .collect()
}

/// Whether the node at `addr` answers SERVING on health within 300 ms.
async fn serving(addr: &str) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let check = async {
        let ch = tonic::transport::Endpoint::from_shared(addr.to_owned())
            .ok()?
            .connect_timeout(Duration::from_millis(200))
            .connect()
            .await
            .ok()?;
        let r = HealthClient::new(ch)
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .ok()?;
        Some(r.into_inner().status == ServingStatus::Serving as i32)
    };
    tokio::time::timeout(Duration::from_millis(300), check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// The first of `candidates` to report SERVING (polled every 20 ms, at most `limit`).
async fn find_leader(
    nodes: &[Node],
    candidates: &[usize],
    limit: Duration,
) -> Result<(usize, Duration), TortureError> {
    let t0 = Instant::now();
    loop {
        for &i in candidates {
            if serving(&nodes[i].addr).await {
                return Ok((i, t0.elapsed()));
            }
        }
        if t0.elapsed() > limit {
            let logs: String = candidates.iter().map(|&i| nodes[i].tail()).collect();
            return Err(TortureError::Server(format!(
                "no leader within {limit:?}; last log lines:\n{logs}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `n` more callbacks were acknowledged (at most [`PHASE_LIMIT`]).
async fn acked_more(w: &Workload, n: usize) -> Result<(), TortureError> {
    let start = w.sizes().0;
    let t0 = Instant::now();
    while w.sizes().0 < start + n {
        if t0.elapsed() > PHASE_LIMIT {
            return Err(TortureError::Server(format!(
                "only {} of {n} callbacks acknowledged in {PHASE_LIMIT:?}",
                w.sizes().0 - start
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn db(url: &str) -> Result<tokio_postgres::Client, TortureError> {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| TortureError::Io(format!("connecting to PostgreSQL: {e}")))?;
    tokio::spawn(conn);
    Ok(client)
}

fn sql(e: tokio_postgres::Error) -> TortureError {
    TortureError::Io(format!("PostgreSQL: {e}"))
}

/// Logs every committed row change of every table with the writer's
/// `application_name` and the database's clock (see the module docs).
async fn install_write_log(db: &tokio_postgres::Client) -> Result<(), TortureError> {
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS torture_writes (
             app text NOT NULL, tbl text NOT NULL,
             at timestamptz NOT NULL DEFAULT clock_timestamp());
         CREATE OR REPLACE FUNCTION torture_log_write() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           INSERT INTO torture_writes (app, tbl)
             VALUES (current_setting('application_name'), TG_TABLE_NAME);
           RETURN NULL;
         END $$;
         DO $$
         DECLARE t text;
         BEGIN
           FOR t IN SELECT tablename FROM pg_tables
                     WHERE schemaname = current_schema() AND tablename <> 'torture_writes'
           LOOP
             EXECUTE format('DROP TRIGGER IF EXISTS torture_log_write ON %I', t);
             EXECUTE format('CREATE TRIGGER torture_log_write AFTER INSERT OR UPDATE OR DELETE
                             ON %I FOR EACH ROW EXECUTE FUNCTION torture_log_write()', t);
           END LOOP;
         END $$;",
    )
    .await
    .map_err(sql)
}

/// Runs the failover torture; `progress` gets one line per run.
pub async fn run(
    opts: &FailoverOptions,
    progress: &mut dyn FnMut(String),
) -> Result<FailoverSummary, TortureError> {
    let started = Instant::now();
    let nodes_wanted = opts.nodes.max(2);
    let ttl = Duration::from_secs(opts.lease_ttl_secs);
    let takeover_limit = ttl + TAKEOVER_SLACK;
    let dir = tempfile::tempdir().map_err(|e| TortureError::Io(e.to_string()))?;
    std::fs::write(dir.path().join("plan.toml"), TORTURE_PLAN)
        .map_err(|e| TortureError::Io(format!("writing the plan: {e}")))?;
    let db = db(&opts.postgres_url).await?;

    let mut life = 0u32;
    let mut next_name = |i: usize| {
        life += 1;
        format!("n{i}_{life}")
    };
    let mut nodes = Vec::with_capacity(nodes_wanted);
    for i in 0..nodes_wanted {
        nodes.push(Node::start(opts, dir.path(), next_name(i)).await?);
    }
    let all: Vec<usize> = (0..nodes.len()).collect();
    let (mut leader, _) = find_leader(&nodes, &all, FIRST_LEADER).await?;
    install_write_log(&db).await?;

    let lease_ms = i64::try_from(opts.lease_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let w = Arc::new(Workload::new(
        opts.seed,
        LoadShape {
            clients: opts.clients,
            dialers: opts.dialers,
            agents: opts.agents,
            // About 100 requests a second in all: enough to have writes in flight
            // at every fault, light enough for debug builds on two cores.
            callbacks_per_run: 2_000,
            spread: Duration::from_secs(20),
        },
        lease_ms,
    ));
    let mut takeover_ms = Vec::new();
    let mut problems = Vec::new();
    let mut stale_writes = 0i64;
    let mut current = Arc::new(Tasks::default());
    w.start(&nodes[leader].addr, 0, &current);
    for run in 0..opts.runs {
        acked_more(&w, ACKED_PER_PHASE).await?;
        let others: Vec<usize> = all.iter().copied().filter(|&i| i != leader).collect();
        let stall = run % 2 == 1;
        let fault = Instant::now();
        if !stall {
            nodes[leader].signal("-KILL")?;
            let _ = nodes[leader].child.wait().await;
            current.stop().await;
            w.end_run();
            let (next, took) = find_leader(&nodes, &others, takeover_limit * 2).await?;
            let _ = took;
            takeover_ms.push(took_ms(fault.elapsed()));
            let old = leader;
            nodes[old] = Node::start(opts, dir.path(), next_name(old)).await?;
            leader = next;
            current = Arc::new(Tasks::default());
            w.start(&nodes[leader].addr, run + 1, &current);
        } else {
            nodes[leader].signal("-STOP")?;
            let (next, _) = match find_leader(&nodes, &others, takeover_limit * 2).await {
                Ok(found) => found,
                Err(e) => {
                    let _ = nodes[leader].signal("-CONT");
                    return Err(e);
                }
            };
            takeover_ms.push(took_ms(fault.elapsed()));
            let claimed: Option<chrono::DateTime<chrono::Utc>> = db
                .query_one(
                    "SELECT min(at) FROM torture_writes WHERE app = $1 AND tbl = 'cluster_lease'",
                    &[&nodes[next].name],
                )
                .await
                .map_err(sql)?
                .get(0);
            // The stalled node's clients and dialers stay on it; new ones go to the
            // new leader, which must be taking load before the stalled one wakes.
            let stuck = std::mem::replace(&mut current, Arc::new(Tasks::default()));
            w.start(&nodes[next].addr, run + 1, &current);
            acked_more(&w, ACKED_PER_PHASE / 2).await?;
            nodes[leader].signal("-CONT")?;
            let exit = tokio::time::timeout(takeover_limit * 4, nodes[leader].child.wait()).await;
            match exit {
                Ok(Ok(status)) if status.code() == Some(i32::from(crate::cluster::EXIT_LOST_LEASE)) => {}
                other => problems.push(Problem {
                    kind: Kind::Inconsistent,
                    key: format!("exit:{}", nodes[leader].name),
                    detail: format!(
                        "the stalled leader {} did not exit {} after SIGCONT ({other:?}); last log lines:\n{}",
                        nodes[leader].name,
                        crate::cluster::EXIT_LOST_LEASE,
                        nodes[leader].tail()
                    ),
                }),
            }
            let _ = nodes[leader].child.start_kill();
            let _ = nodes[leader].child.wait().await;
            stuck.stop().await;
            // The log must see store writes by node, or "no stale writes" means nothing.
            let seen: i64 = db
                .query_one(
                    "SELECT count(*) FROM torture_writes WHERE app = $1 AND tbl <> 'cluster_lease'",
                    &[&nodes[next].name],
                )
                .await
                .map_err(sql)?
                .get(0);
            if seen == 0 {
                return Err(TortureError::Server(format!(
                    "the write log saw no store write by {} (is application_name passed on?)",
                    nodes[next].name
                )));
            }
            if let Some(claimed) = claimed {
                let n: i64 = db
                    .query_one(
                        "SELECT count(*) FROM torture_writes WHERE app = $1 AND at >= $2",
                        &[&nodes[leader].name, &claimed],
                    )
                    .await
                    .map_err(sql)?
                    .get(0);
                if n > 0 {
                    problems.push(Problem {
                        kind: Kind::Inconsistent,
                        key: format!("stale-writes:{}", nodes[leader].name),
                        detail: format!(
                            "{} committed {n} row changes after {} claimed the lease",
                            nodes[leader].name, nodes[next].name
                        ),
                    });
                }
                stale_writes += n;
            }
            let old = leader;
            nodes[old] = Node::start(opts, dir.path(), next_name(old)).await?;
            leader = next;
        }
        let (acked, grants, _) = w.sizes();
        progress(format!(
            "run {}/{}: {} the leader, takeover {} ms (store load {} ms); {acked} acknowledged, {grants} dispatched",
            run + 1,
            opts.runs,
            if stall { "stalled" } else { "killed" },
            takeover_ms.last().copied().unwrap_or(0),
            nodes[leader].load_ms().map_or("?".into(), |ms| ms.to_string()),
        ));
    }
    current.stop().await;
    w.end_run();
    tokio::time::timeout(Duration::from_secs(120), w.settle(&nodes[leader].addr))
        .await
        .map_err(|_| {
            TortureError::Server("the last leader did not answer everything left".into())
        })?;
    for n in &mut nodes {
        let _ = n.signal("-TERM");
    }
    for n in &mut nodes {
        let _ = tokio::time::timeout(Duration::from_secs(30), n.child.wait()).await;
        let _ = n.child.start_kill();
    }

    let store = crate::store::PgStore::open(&crate::store::PgOptions {
        url: opts.postgres_url.clone(),
        pool_size: 2,
        synchronous_commit: "on".into(),
        ca_file: None,
    })
    .await
    .map_err(|e| TortureError::Io(format!("opening the store to check it: {e}")))?;
    let ledger = w.ledger();
    let (report, records) = check_open_store(&store, &ledger)
        .await
        .map_err(|e| TortureError::Io(format!("reading the store: {e}")))?;
    problems.extend(w.live_problems());
    problems.extend(report.problems.iter().cloned());
    let count = |k: Kind| {
        problems
            .iter()
            .filter(|p| p.kind == k)
            .map(|p| p.key.as_str())
            .collect::<std::collections::HashSet<_>>()
            .len()
    };
    Ok(FailoverSummary {
        runs: opts.runs,
        seed: opts.seed,
        acked: report.acked,
        lost: count(Kind::Lost),
        duplicated: count(Kind::Duplicated),
        inconsistent: count(Kind::Inconsistent),
        records: records.len(),
        dispatches: ledger.grants.len(),
        stale_writes,
        takeover_ms,
        wall_secs: started.elapsed().as_secs_f64(),
        problems: problems.into_iter().take(50).collect(),
    })
}

fn took_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
