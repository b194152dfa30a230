//! The command line. `serve` runs the daemon; `export` and `import` work on a stopped
//! server's store (sled holds an exclusive lock, so they refuse while a server runs);
//! `simulate-day` reads a plan file, or asks a running server for its plan (with
//! `--from-store`, a stopped server's store); every other command is a gRPC client of
//! a running server.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use tonic::transport::Channel;

use crate::api::pb;
use crate::app::Application;
use crate::clock::SystemClock;
use crate::config::Settings;

/// Exit status for bad configuration or usage (BSD `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit status when the server cannot be reached (BSD `EX_UNAVAILABLE`).
pub const EXIT_UNAVAILABLE: u8 = 69;

mod backup;
mod kpi;
mod simulate;

pub use backup::{EXIT_INVALID, EXIT_IN_USE};

#[derive(Debug, Parser)]
#[command(
    name = "holdless",
    version,
    about = "Call routing and callbacks for contact centers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// Config file (default: ./holdless.toml if present).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Allow a non-loopback listen address without any [[auth.principals]]
        /// (every caller may then call everything: only behind an authenticating proxy).
        #[arg(long)]
        insecure: bool,
    },
    /// Ask a running server where a call would go, and why.
    Route(RouteArgs),
    /// Read, validate and apply the routing plan.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Read and change customer records.
    #[command(subcommand)]
    Customer(CustomerCommand),
    /// List, show and cancel callbacks.
    #[command(subcommand)]
    Callbacks(CallbacksCommand),
    /// Load-test a server (with `--baseline`: and a no-op handler on the same server
    /// stack, in the same run).
    Bench(BenchArgs),
    /// Ask a server's gRPC health service; exit 0 when SERVING, 69 otherwise (not
    /// serving, an unknown --service, or no answer within 5 s), for container and
    /// service-manager health checks; health needs no token.
    Health {
        /// Service to check, e.g. holdless.v1.RoutingService (default: the server).
        #[arg(long, default_value = "")]
        service: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show the audit log: plan, customer and callback changes, oldest first.
    Audit {
        /// Show at most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        server: ServerArg,
    },
    /// KPI report: service level, ASA, abandonment, transfers, FCR, callbacks, surveys.
    Stats(kpi::StatsArgs),
    /// Agents needed per hour for a queue's service-level target (Erlang C / A).
    Staffing(kpi::StaffingArgs),
    /// Simulate a day of a plan on a virtual clock, with callbacks and without:
    /// abandonment, ASA, service level, hold time avoided, callbacks, occupancy.
    SimulateDay(Box<simulate::SimulateDayArgs>),
    /// Write a stopped server's store (plan versions, customers, open callbacks) to a
    /// JSON Lines file (docs/EXPORT.md). Exits 75 while a server holds the store.
    Export {
        /// Output file; `-` writes to standard output. Appears complete or not at all.
        #[arg(long)]
        out: PathBuf,
        /// Config file, as for `serve` (default: ./holdless.toml if present); the
        /// store at its `store.path` is exported.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Restore an export file into an empty or new store (the server stopped). The
    /// whole file is checked first; exits 2 naming each bad line, importing nothing.
    Import {
        /// Export file; `-` reads standard input.
        file: PathBuf,
        /// Config file, as for `serve`; the file is imported into its `store.path`.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Callbacks written per durable batch (tests set it small to import in many
        /// batches).
        #[arg(long, hide = true, default_value_t = backup::IMPORT_BATCH)]
        batch: usize,
    },
    /// Crash test: start `holdless serve`, load it, SIGKILL it, check the store against
    /// every acknowledged write; repeat.
    Torture(TortureArgs),
}

#[derive(Debug, Args)]
pub struct TortureArgs {
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 10)]
    pub runs: u32,
    /// Seed for the kill moments and the dialers' choices (default: a fresh one,
    /// printed). Thread timing still differs between two runs with the same seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Keep the store, plan, ledger and server log here (it must not hold a store
    /// yet). Default: a temporary directory, removed unless a problem is found.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The holdless binary to run as the server (default: this one).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// Clients requesting callbacks.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Dialers on WatchDispatches.
    #[arg(long, default_value_t = 2)]
    pub dialers: usize,
    /// Agents reported available.
    #[arg(long, default_value_t = 4)]
    pub agents: usize,
    /// New callback requests per run, spread over --max-kill-ms (requests the last
    /// server never answered are sent again on top).
    #[arg(long, default_value_t = 200)]
    pub callbacks_per_run: u64,
    /// The server is killed between --min-kill-ms and --max-kill-ms after SERVING.
    #[arg(long, default_value_t = 50)]
    pub min_kill_ms: u64,
    /// Latest kill moment after SERVING, in milliseconds (see --min-kill-ms).
    #[arg(long, default_value_t = 1500)]
    pub max_kill_ms: u64,
    /// The server's callbacks.lease_secs: short, so leases run out and attempts go
    /// out again within a run.
    #[arg(long, default_value_t = 1)]
    pub lease_secs: u64,
    /// Only check the store in --data-dir against the ledger.json a torture left
    /// there (no server may have it open).
    #[arg(long, requires = "data_dir")]
    pub check_only: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Leader failover instead of single-server crashes: --nodes servers share one
    /// PostgreSQL database; each run SIGKILLs the leader or (every other run) SIGSTOPs
    /// it past its lease and SIGCONTs it once another node leads.
    #[arg(long)]
    pub failover: bool,
    /// The store the servers use: `sled` for the single-server crash test (the
    /// default), `postgres` for --failover (which runs on PostgreSQL only and implies
    /// it).
    #[arg(long, value_enum)]
    pub backend: Option<crate::config::StoreBackend>,
    /// With --failover: the database to fill (its own; triggers go on every table).
    /// Default: a private PostgreSQL cluster started from the machine's binaries.
    #[arg(long, env = "HOLDLESS_TORTURE_POSTGRES", requires = "failover")]
    pub postgres_url: Option<String>,
    /// With --failover: servers in the cluster.
    #[arg(long, default_value_t = 3, requires = "failover")]
    pub nodes: usize,
    /// With --failover: the servers' cluster.lease_ttl_secs.
    #[arg(long, default_value_t = 2, requires = "failover")]
    pub lease_ttl_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum CallbacksCommand {
    /// List callbacks (newest last), optionally filtered.
    List {
        /// Only callbacks of this queue.
        #[arg(long)]
        queue: Option<String>,
        /// pending, dispatched, completed, failed, cancelled or expired.
        #[arg(long)]
        state: Option<String>,
        /// Only callbacks to this number (E.164).
        #[arg(long)]
        phone: Option<String>,
        /// Show at most this many callbacks.
        #[arg(long, default_value_t = 50)]
        limit: i32,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show one callback.
    Show {
        /// Callback id.
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Cancel a pending callback.
    Cancel {
        /// Callback id.
        id: String,
        /// Why, kept with the callback and in the audit log.
        #[arg(long, default_value = "supervisor")]
        reason: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What each request does.
    #[arg(long, value_enum, default_value = "route")]
    pub scenario: crate::bench::Scenario,
    /// Concurrent clients.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// HTTP/2 connections shared by the clients.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many requests.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop: requests per second, latency from each request's scheduled time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of warm-up before measuring (not counted).
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Before measuring, tell each server of this many agents, busy, able to serve
    /// every queue of the example plan (a staffed center's live state).
    #[arg(long, default_value_t = 0)]
    pub agents: usize,
    /// Keep this many wallboard streams (WatchQueueStats, every queue) open on the
    /// holdless target and read them during the run, to measure what watchers cost
    /// routing (with --baseline: compare the ratio with and without).
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,
    /// Start holdless inside the bench process on a temporary store instead of
    /// using --server (configured like `serve`: ./holdless.toml and HOLDLESS__*, but
    /// on loopback port 0, without principals or callback abuse limits).
    #[arg(long)]
    pub embedded: bool,
    /// Also measure a no-op handler behind holdless's server stack (the same protos,
    /// transport, request gate and RPC-metrics layers), and print the ratio
    /// holdless / baseline.
    #[arg(long)]
    pub baseline: bool,
    /// With --baseline: the no-op server without holdless's layers (a bare tonic
    /// server), to see what gRPC alone costs.
    #[arg(long, requires = "baseline")]
    pub bare_baseline: bool,
    /// With --baseline: alternate this many rounds of baseline and holdless, so
    /// background load on a shared machine falls on both alike. Rounds of about a
    /// second follow a VM whose speed changes every few seconds; rounds of several
    /// seconds let one side catch a fast spell the other missed.
    #[arg(long, default_value_t = 12)]
    pub rounds: u32,
    /// Soak: split the run into this many consecutive windows and print each window's
    /// figures (and, with --embedded, the process's resident memory) as it ends.
    /// Not with --baseline.
    #[arg(long, conflicts_with = "baseline")]
    pub windows: Option<u32>,
    /// Write callbacks (the callback and mixed scenarios) into a --server store that
    /// already holds callbacks. Without it the bench refuses: its thousands of test
    /// callbacks would be dialed like real ones.
    #[arg(long)]
    pub yes: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Args)]
pub struct ServerArg {
    /// Server to talk to: a URL (http://HOST:PORT, https://HOST:PORT) or HOST:PORT as
    /// grpcurl takes it (plaintext, or TLS when --ca-cert is given).
    #[arg(
        long,
        env = "HOLDLESS_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub server: String,
    /// Print JSON instead of a readable summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Bearer token sent as `authorization: Bearer <token>`. Prefer the environment
    /// variable: command-line arguments are visible to other users in `ps`.
    #[arg(long, env = "HOLDLESS_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM CA certificate that signed the server's certificate (for https:// servers).
    #[arg(long, env = "HOLDLESS_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate, for servers that require mutual TLS (with --client-key).
    #[arg(
        long,
        env = "HOLDLESS_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(
        long,
        env = "HOLDLESS_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RouteArgs {
    /// Caller number in E.164 (leave out for a withheld number).
    #[arg(long)]
    pub caller: Option<String>,
    /// Dialed number (DNIS).
    #[arg(long)]
    pub dialed: Option<String>,
    /// Customer id (the CRM's), when the platform knows it.
    #[arg(long)]
    pub customer: Option<String>,
    /// IVR intent, e.g. billing.
    #[arg(long)]
    pub intent: Option<String>,
    /// Caller's language, e.g. es.
    #[arg(long)]
    pub language: Option<String>,
    /// Campaign tracking code.
    #[arg(long)]
    pub tracking_code: Option<String>,
    /// Call attribute as key=value (repeatable).
    #[arg(long = "attr", value_parser = parse_key_value)]
    pub attributes: Vec<(String, String)>,
    /// Call id (default: a fresh one).
    #[arg(long)]
    pub call_id: Option<String>,
    /// Show every rule checked and why it did not match.
    #[arg(long)]
    pub explain: bool,
    /// Route a real call: place it in line and reserve an agent, as the telephony
    /// platform's RouteCall does. Without it the question is what-if: the server
    /// answers where the call would go and changes nothing.
    #[arg(long)]
    pub live: bool,
    #[command(flatten)]
    pub server: ServerArg,
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Print the active plan (or a version) as TOML.
    Export {
        /// The version to print (0: the active one).
        #[arg(long, default_value_t = 0)]
        version: u64,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Check a plan file; exits 2 when it has issues (with --json, the issues are
    /// printed as JSON on standard output either way).
    Validate {
        /// The plan file (TOML).
        file: PathBuf,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Validate and activate a plan file as a new version. The change is based on the
    /// version active when the command starts (or --based-on): if another change
    /// lands first, it is refused (exit 1) instead of overwriting it.
    Apply {
        /// The plan file (TOML).
        file: PathBuf,
        #[command(flatten)]
        base: BaseVersion,
        /// Why: kept with the version and in the audit log.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who: kept with the version and in the audit log.
        #[arg(long, env = "USER", default_value = "cli")]
        author: String,
        /// Idempotency key (default: a fresh one per invocation).
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Replay recorded (or given) calls through a plan file and the active plan, and
    /// show which calls would change queue.
    Simulate {
        /// The candidate plan file (TOML).
        file: PathBuf,
        /// Replay the calls recorded in the last N days.
        #[arg(long, default_value_t = 7)]
        days: u32,
        /// Replay these calls instead: a JSON array of RouteCallRequest objects
        /// (call_id, caller_number, dialed_number, customer_id, intent, language,
        /// tracking_code, attributes, received_time as RFC 3339).
        #[arg(long)]
        calls: Option<PathBuf>,
        /// Compare with this version instead of the active one.
        #[arg(long, default_value_t = 0)]
        base_version: u64,
        /// Sample call ids per move.
        #[arg(long, default_value_t = 5)]
        samples: u32,
        #[command(flatten)]
        server: ServerArg,
    },
    /// List plan versions, newest first (`*` marks the active one).
    History {
        /// Show at most this many versions.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Show the text difference between two plans: each a version number or a file;
    /// TO defaults to the active plan.
    Diff {
        /// A version number or a plan file.
        from: String,
        /// A version number or a plan file (default: the active plan).
        to: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Apply an earlier version again, as a new version. Checked against the active
    /// version like `apply`; rolling back to the text already active changes nothing.
    Rollback {
        /// The version to apply again.
        version: u64,
        #[command(flatten)]
        base: BaseVersion,
        /// Why: kept with the version and in the audit log.
        #[arg(long, default_value = "")]
        comment: String,
        /// Who: kept with the version and in the audit log.
        #[arg(long, env = "USER", default_value = "cli")]
        author: String,
        /// Idempotency key (default: a fresh one per invocation).
        #[arg(long)]
        request_id: Option<String>,
        #[command(flatten)]
        server: ServerArg,
    },
}

/// Which version a plan change is based on. Never blind by default: the server
/// refuses the change (ABORTED) when the active version is no longer this one.
#[derive(Debug, Args)]
pub struct BaseVersion {
    /// The version this change is based on (default: the version active when the
    /// command starts). `--expected-version` is the old name.
    #[arg(long, alias = "expected-version", conflicts_with = "force")]
    pub based_on: Option<u64>,
    /// Apply whatever version is active by then (no concurrency check).
    #[arg(long)]
    pub force: bool,
}

impl BaseVersion {
    /// The `expected_version` to send (0: no check).
    async fn expected(
        &self,
        c: &mut pb::plan_service_client::PlanServiceClient<Conn>,
    ) -> Result<u64, Failure> {
        if self.force {
            return Ok(0);
        }
        if let Some(v) = self.based_on {
            return Ok(v);
        }
        let active = c
            .get_plan(pb::GetPlanRequest { version: 0 })
            .await?
            .into_inner()
            .version
            .map(|v| v.version)
            .unwrap_or_default();
        Ok(active)
    }
}

#[derive(Debug, Subcommand)]
pub enum CustomerCommand {
    /// Show a customer by id or phone number.
    Get {
        /// Customer id, or an E.164 number.
        key: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Create or replace a customer (fields left out are cleared).
    Upsert {
        /// Customer id (the CRM's), given like `customer get ID` and `customer delete ID`.
        #[arg(required_unless_present = "id_option")]
        id: Option<String>,
        /// The id as an option: the earlier form, kept so existing scripts still run.
        #[arg(long = "id", id = "id_option", hide = true, conflicts_with = "id")]
        id_option: Option<String>,
        /// Display name shown to the agent.
        #[arg(long, default_value = "")]
        name: String,
        /// Phone number in E.164 (repeatable); a number belongs to one customer.
        #[arg(long = "phone")]
        phones: Vec<String>,
        /// Status label the plan's rules match on, e.g. gold, at_risk.
        #[arg(long, default_value = "")]
        status: String,
        /// Preferred language, e.g. en or es.
        #[arg(long, default_value = "")]
        language: String,
        /// Context shown to the agent.
        #[arg(long, default_value = "")]
        notes: String,
        /// The agent who served the customer last (tried first by rules that say so).
        #[arg(long, default_value = "")]
        last_agent: String,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Delete a customer.
    Delete {
        /// Customer id.
        id: String,
        #[command(flatten)]
        server: ServerArg,
    },
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("'{s}' is not key=value"))
}

/// Runs a parsed command line; returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("holdless: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config, insecure } => runtime.block_on(serve(config, insecure)),
        other => runtime.block_on(admin(other)),
    }
}

fn init_tracing(format: crate::config::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOLDLESS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        crate::config::LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // Fields at the top level next to `message`, so a shipper indexes them as they
        // are; the span stack is left out (handlers' spans carry ids, not context).
        crate::config::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// The config file `Settings::load` read, for the start-up log line.
fn config_file_used(config: Option<&std::path::Path>) -> String {
    match config {
        Some(f) => f.display().to_string(),
        None if std::path::Path::new(crate::config::DEFAULT_CONFIG_FILE).is_file() => {
            crate::config::DEFAULT_CONFIG_FILE.to_owned()
        }
        None => "none (defaults and environment)".to_owned(),
    }
}

async fn serve(config: Option<PathBuf>, insecure: bool) -> ExitCode {
    let settings = match Settings::load(config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("holdless: bad config: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = crate::auth::check_exposure(&settings, insecure) {
        eprintln!("holdless: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    init_tracing(settings.log.format);
    let config_file = config_file_used(config.as_deref());
    let store = settings.store.path.clone();
    let plan_file = settings.plan.file.clone();
    // Everything `build` refuses is configuration (a bad plan or TLS file, a port in
    // use): one message, exit 64, and nothing created yet.
    let app = match Application::build(settings, Arc::new(SystemClock)).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("holdless: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %config_file,
        store = %store.display(),
        plan_file = %plan_file,
        addr = %app.local_addr(),
        metrics_addr = %app.metrics_addr(),
        "holdless starting"
    );
    match app.run(shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ crate::app::AppError::LostLease(_)) => {
            tracing::error!(
                error = %e,
                exit_status = crate::cluster::EXIT_LOST_LEASE,
                "holdless stopped serving and exits; restart it to rejoin as a follower"
            );
            ExitCode::from(crate::cluster::EXIT_LOST_LEASE)
        }
        Err(e) => {
            // Once, through the log (stderr), not a second time by hand.
            tracing::error!(error = %e, "holdless stopped");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is called,
/// not when the future is first polled: a SIGTERM that arrives just after start-up
/// (before `run` gets to wait on it) must not kill the process with the default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt());
        let term = signal(SignalKind::terminate());
        async move {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = wait(int) => tracing::info!("SIGINT received"),
                _ = wait(term) => tracing::info!("SIGTERM received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("Ctrl-C received");
    }
}

/// `holdless torture --failover`: see [`crate::torture::failover`].
async fn torture_failover(a: TortureArgs) -> ExitCode {
    use crate::torture::failover::{self, FailoverOptions};
    let binary = match a.binary.clone().map_or_else(std::env::current_exe, Ok) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("holdless: cannot find this executable ({e}); pass --binary");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let postgres_url = match a.postgres_url.clone() {
        Some(u) => u,
        None => crate::store::pgtest::test_postgres().await,
    };
    let seed = a.seed.unwrap_or_else(|| fastrand::u64(..));
    eprintln!(
        "torture: failover, seed={seed} runs={} nodes={}",
        a.runs, a.nodes
    );
    let opts = FailoverOptions {
        runs: a.runs,
        seed,
        nodes: a.nodes,
        postgres_url,
        binary,
        lease_ttl_secs: a.lease_ttl_secs,
        lease_secs: a.lease_secs.max(1),
        clients: a.clients,
        dialers: a.dialers,
        agents: a.agents,
    };
    match failover::run(&opts, &mut |line| eprintln!("torture: {line}")).await {
        Ok(summary) => {
            if a.json {
                print!("{}", to_json(&summary));
            } else {
                for p in &summary.problems {
                    eprintln!("torture: {:?} {}: {}", p.kind, p.key, p.detail);
                }
                println!("{}", summary.line());
            }
            if summary.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("holdless: torture: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An admin command failed: print why, exit with `code`.
struct Failure {
    code: u8,
    message: String,
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        use tonic_types::StatusExt;
        let mut message = format!("{:?}: {}", s.code(), s.message());
        if let Some(br) = s.get_details_bad_request() {
            for v in br.field_violations {
                message.push_str(&format!("\n  {}: {}", v.field, v.description));
            }
        }
        // Validation errors (a bad plan, bad input) exit 2, like `plan validate`.
        let code = if s.code() == tonic::Code::InvalidArgument {
            2
        } else {
            1
        };
        Failure { code, message }
    }
}

/// Adds `authorization: Bearer <token>` to every call when a token is given.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A connection to the server, carrying the token.
pub type Conn = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// The URL for `--server`. An address without a scheme (`127.0.0.1:50051`, as
/// grpcurl takes it) means plaintext `http://`, or `https://` when `--ca-cert` is
/// given: naming a CA only makes sense for TLS.
fn server_url(server: &str, tls: bool) -> String {
    if server.contains("://") {
        server.to_owned()
    } else if tls {
        format!("https://{server}")
    } else {
        format!("http://{server}")
    }
}

/// Why a connection failed, in one line an operator can act on. tonic reports every
/// failure as "transport error"; the cause is further down the error's `source()`
/// chain (tonic -> hyper -> the io error of the socket, the resolver or TLS).
fn connect_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut chain = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        chain.push(err);
        next = err.source();
    }
    let innermost = chain.last().map(|e| e.to_string()).unwrap_or_default();
    let io_kind = chain
        .iter()
        .find_map(|e| e.downcast_ref::<std::io::Error>().map(std::io::Error::kind));
    let said = |words: &[&str]| {
        chain.iter().any(|e| {
            let text = e.to_string().to_ascii_lowercase();
            words.iter().any(|w| text.contains(w))
        })
    };
    use std::io::ErrorKind;
    if io_kind == Some(ErrorKind::ConnectionRefused) {
        "connection refused (is holdless running and listening on that address?)".into()
    } else if said(&[
        "dns error",
        "failed to lookup address",
        "name or service not known",
    ]) {
        format!("name not resolved ({innermost})")
    } else if said(&[
        "certificate",
        "tls",
        "handshake",
        "invalidcontenttype",
        "alert",
    ]) {
        format!("TLS failure: {innermost}")
    } else if io_kind == Some(ErrorKind::TimedOut) || said(&["timed out"]) {
        "connection timed out".into()
    } else if io_kind == Some(ErrorKind::ConnectionReset) {
        "connection reset by the server".into()
    } else {
        innermost
    }
}

async fn connect(server: &ServerArg) -> Result<Conn, Failure> {
    let usage = |message: String| Failure {
        code: EXIT_CONFIG,
        message,
    };
    let url = server_url(&server.server, server.ca_cert.is_some());
    let mut endpoint = Channel::from_shared(url.clone())
        .map_err(|e| usage(format!("bad --server {}: {e}", server.server)))?;
    let https = url.starts_with("https://");
    if https || server.ca_cert.is_some() || server.client_cert.is_some() {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let Some(ca) = &server.ca_cert else {
            return Err(usage(
                "an https:// server needs --ca-cert (the CA that signed its certificate)".into(),
            ));
        };
        if !https {
            return Err(usage(
                "--ca-cert and --client-cert need an https:// --server".into(),
            ));
        }
        let pem = |p: &PathBuf| {
            std::fs::read(p).map_err(|e| usage(format!("cannot read {}: {e}", p.display())))
        };
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem(ca)?));
        if let (Some(cert), Some(key)) = (&server.client_cert, &server.client_key) {
            tls = tls.identity(Identity::from_pem(pem(cert)?, pem(key)?));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| usage(format!("bad TLS settings: {e}")))?;
    }
    let bearer =
        match &server.token {
            Some(t) if !t.is_empty() => Some(format!("Bearer {t}").parse().map_err(|_| {
                usage("the token has characters not allowed in a gRPC header".into())
            })?),
            _ => None,
        };
    let channel = endpoint.connect().await.map_err(|e| Failure {
        code: EXIT_UNAVAILABLE,
        message: format!("cannot reach {url}: {}", connect_cause(&e)),
    })?;
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer(bearer),
    ))
}

async fn admin(command: Command) -> ExitCode {
    let result = match command {
        Command::Torture(args) => return torture(args).await,
        Command::Serve { .. } => unreachable!("serve is handled by run"),
        Command::Route(args) => route(args).await,
        Command::Plan(cmd) => plan(cmd).await,
        Command::Customer(cmd) => customer(cmd).await,
        Command::Bench(args) => bench(args).await,
        Command::Health { service, server } => health(service, server).await,
        Command::Callbacks(cmd) => callbacks(cmd).await,
        Command::Audit { limit, server } => audit(limit, server).await,
        Command::Stats(args) => kpi::stats(args).await,
        Command::Staffing(args) => kpi::staffing(args).await,
        Command::SimulateDay(args) => simulate::simulate_day(*args).await,
        Command::Export { out, config } => {
            init_tracing(crate::config::LogFormat::Text);
            backup::export(config, out).await
        }
        Command::Import {
            file,
            config,
            batch,
        } => {
            init_tracing(crate::config::LogFormat::Text);
            backup::import(config, file, batch).await
        }
    };
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("holdless: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
}

async fn route(a: RouteArgs) -> Result<String, Failure> {
    let mut client =
        pb::routing_service_client::RoutingServiceClient::new(connect(&a.server).await?);
    let reply = client
        .route_call(pb::RouteCallRequest {
            call_id: a
                .call_id
                .unwrap_or_else(|| format!("cli-{}", ulid::Ulid::new())),
            caller_number: a.caller.unwrap_or_default(),
            dialed_number: a.dialed.unwrap_or_default(),
            customer_id: a.customer.unwrap_or_default(),
            intent: a.intent.unwrap_or_default(),
            language: a.language.unwrap_or_default(),
            tracking_code: a.tracking_code.unwrap_or_default(),
            attributes: a.attributes.into_iter().collect(),
            location: None,
            received_time: None,
            explain: a.explain,
            dry_run: !a.live,
        })
        .await?
        .into_inner();
    let d = reply.decision.unwrap_or_default();
    if a.server.json {
        return Ok(to_json(&decision_json(&d)));
    }
    Ok(render_decision(&d))
}

fn decision_json(d: &pb::RoutingDecision) -> serde_json::Value {
    let loc = d.location.clone().unwrap_or_default();
    let ctx = d.agent_context.clone().unwrap_or_default();
    serde_json::json!({
        "decision_id": d.decision_id,
        "queue_id": d.queue_id,
        "queue_contact_uri": d.queue_contact_uri,
        "priority": d.priority,
        "rule_id": d.rule_id,
        "default_route": d.default_route,
        "plan_version": d.plan_version,
        "location": {"country": loc.country, "region": loc.region, "time_zone": loc.time_zone},
        "campaign_id": d.campaign_id,
        "queue_open": d.queue_open,
        "position": d.position,
        "estimated_wait_secs": d.estimated_wait.map(|w| w.seconds),
        "reserved_agent_id": d.reserved_agent_id,
        "preferred_agent_timeout_secs": d.preferred_agent_timeout_seconds,
        "dry_run": d.dry_run,
        "offer_callback": d.offer_callback,
        "offer_reason": pb::OfferReason::try_from(d.offer_reason).map(|r| r.as_str_name()).unwrap_or(""),
        "transfer_count": ctx.transfer_count,
        "transfer_loop": ctx.transfer_loop,
        "recent_contacts": ctx.recent_contacts.iter().map(|c| serde_json::json!({
            "call_id": c.call_id, "queue_id": c.queue_id, "agent_id": c.agent_id,
            "outcome": pb::ContactOutcome::try_from(c.outcome).map(|o| o.as_str_name()).unwrap_or(""),
        })).collect::<Vec<_>>(),
        "extra_skills": d.extra_skills,
        "preferred_agent_id": d.preferred_agent_id,
        "agent_context": {
            "customer_id": ctx.customer_id, "customer_name": ctx.customer_name,
            "customer_status": ctx.customer_status, "customer_notes": ctx.customer_notes,
            "language": ctx.language, "campaign_id": ctx.campaign_id,
            "campaign_script": ctx.campaign_script, "rule_note": ctx.rule_note,
        },
        "explanation": d.explanation.iter().map(|t| serde_json::json!({
            "rule_id": t.rule_id,
            "outcome": outcome_name(t.outcome),
            "failed_matcher": t.failed_matcher,
            "detail": t.detail,
        })).collect::<Vec<_>>(),
    })
}

fn outcome_name(o: i32) -> &'static str {
    match pb::RuleOutcome::try_from(o) {
        Ok(pb::RuleOutcome::Matched) => "matched",
        Ok(pb::RuleOutcome::Failed) => "failed",
        Ok(pb::RuleOutcome::Disabled) => "disabled",
        _ => "unknown",
    }
}

/// A supervisor-readable decision.
pub fn render_decision(d: &pb::RoutingDecision) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let loc = d.location.clone().unwrap_or_default();
    let ctx = d.agent_context.clone().unwrap_or_default();
    let dash = |v: &str| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.to_owned()
        }
    };
    let _ = writeln!(
        s,
        "queue      {} (priority {}, {})",
        d.queue_id,
        d.priority,
        if d.queue_open { "open" } else { "closed" }
    );
    if !d.queue_contact_uri.is_empty() {
        let _ = writeln!(s, "contact    {}", d.queue_contact_uri);
    }
    let _ = writeln!(
        s,
        "rule       {}",
        if d.default_route {
            "(default route)".to_owned()
        } else {
            d.rule_id.clone()
        }
    );
    let _ = writeln!(s, "plan       version {}", d.plan_version);
    let _ = writeln!(
        s,
        "location   country {}, region {}, zone {}",
        dash(&loc.country),
        dash(&loc.region),
        dash(&loc.time_zone)
    );
    if !d.campaign_id.is_empty() {
        let _ = writeln!(s, "campaign   {}", d.campaign_id);
    }
    if !ctx.customer_id.is_empty() {
        let _ = writeln!(
            s,
            "customer   {} {} (status {})",
            ctx.customer_id,
            ctx.customer_name,
            dash(&ctx.customer_status)
        );
    }
    if !d.reserved_agent_id.is_empty() {
        let _ = writeln!(s, "reserved   agent {}", d.reserved_agent_id);
    } else {
        if !d.preferred_agent_id.is_empty() {
            let _ = writeln!(
                s,
                "preferred  waits up to {} s for agent {}",
                d.preferred_agent_timeout_seconds, d.preferred_agent_id
            );
        }
        let wait = d
            .estimated_wait
            .map(|w| format!("{} s", w.seconds))
            .unwrap_or_else(|| "unknown (no agents staffed)".into());
        let _ = writeln!(
            s,
            "line       position {}, estimated wait {wait}",
            d.position
        );
    }
    if d.dry_run {
        let _ = writeln!(
            s,
            "what-if    nothing was placed, reserved or recorded (--live routes a real call)"
        );
    }
    if d.offer_callback {
        let why = pb::OfferReason::try_from(d.offer_reason)
            .map(|r| {
                r.as_str_name()
                    .trim_start_matches("OFFER_REASON_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        let _ = writeln!(s, "callback   offer it ({why})");
    }
    if !ctx.recent_contacts.is_empty() {
        let _ = writeln!(
            s,
            "history    {} contact(s) in the last 7 days:",
            ctx.recent_contacts.len()
        );
        for c in &ctx.recent_contacts {
            let outcome = pb::ContactOutcome::try_from(c.outcome)
                .map(|o| {
                    o.as_str_name()
                        .trim_start_matches("CONTACT_OUTCOME_")
                        .to_ascii_lowercase()
                })
                .unwrap_or_default();
            let when = c
                .time
                .as_ref()
                .and_then(crate::api::convert::instant)
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "             {when}  {}  {outcome}  {}",
                c.queue_id, c.agent_id
            );
        }
    }
    if ctx.transfer_count > 0 {
        let _ = writeln!(
            s,
            "transfers  {}{} (queues: {})",
            ctx.transfer_count,
            if ctx.transfer_loop { ", LOOP" } else { "" },
            ctx.visited_queues.join(" -> ")
        );
    }
    if !d.preferred_agent_id.is_empty() {
        let _ = writeln!(
            s,
            "agent      try {} first for {} s",
            d.preferred_agent_id, d.preferred_agent_timeout_seconds
        );
    }
    for (label, v) in [
        ("notes", &ctx.customer_notes),
        ("script", &ctx.campaign_script),
        ("note", &ctx.rule_note),
    ] {
        if !v.is_empty() {
            let _ = writeln!(s, "{label:<10} {v}");
        }
    }
    if !d.explanation.is_empty() {
        let _ = writeln!(s, "\nrules checked, in order:");
        let width = d
            .explanation
            .iter()
            .map(|t| t.rule_id.len())
            .max()
            .unwrap_or(4);
        for t in &d.explanation {
            let what = match pb::RuleOutcome::try_from(t.outcome) {
                Ok(pb::RuleOutcome::Matched) => "MATCHED".to_owned(),
                Ok(pb::RuleOutcome::Disabled) => "disabled".to_owned(),
                _ => format!("{}: {}", t.failed_matcher, t.detail),
            };
            let _ = writeln!(s, "  {:<width$}  {}", t.rule_id, what);
        }
        if d.default_route {
            let _ = writeln!(s, "  no rule matched: default route");
        }
    }
    s
}

fn read_file(path: &PathBuf) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure {
        code: EXIT_CONFIG,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

async fn plan(cmd: PlanCommand) -> Result<String, Failure> {
    match cmd {
        PlanCommand::Export { version, server } => {
            let mut c = pb::plan_service_client::PlanServiceClient::new(connect(&server).await?);
            let r = c
                .get_plan(pb::GetPlanRequest { version })
                .await?
                .into_inner();
            Ok(r.plan_toml)
        }
        PlanCommand::Validate { file, server } => {
            let text = read_file(&file)?;
            let mut c = pb::plan_service_client::PlanServiceClient::new(connect(&server).await?);
            let r = c
                .validate_plan(pb::ValidatePlanRequest { plan_toml: text })
                .await?
                .into_inner();
            if server.json {
                let issues: Vec<_> = r
                    .issues
                    .iter()
                    .map(|i| serde_json::json!({"path": i.path, "message": i.message}))
                    .collect();
                let out = to_json(&serde_json::json!({"valid": r.valid, "issues": issues}));
                if r.valid {
                    return Ok(out);
                }
                // The JSON goes to standard output like any --json answer (a script
                // reads it there); the exit status and one line on stderr say invalid.
                print!("{out}");
                return Err(Failure {
                    code: 2,
                    message: format!("{}: {} issue(s)", file.display(), r.issues.len()),
                });
            }
            if r.valid {
                Ok(format!(
                    "{}: valid ({} queues, {} rules, {} campaigns)\n",
                    file.display(),
                    r.queue_count,
                    r.rule_count,
                    r.campaign_count
                ))
            } else {
                let mut m = format!("{}: {} issue(s)", file.display(), r.issues.len());
                for i in &r.issues {
                    m.push_str(&format!("\n  {}: {}", i.path, i.message));
                }
                Err(Failure {
                    code: 2,
                    message: m,
                })
            }
        }
        PlanCommand::Apply {
            file,
            base,
            comment,
            author,
            request_id,
            server,
        } => {
            let text = read_file(&file)?;
            let mut c = pb::plan_service_client::PlanServiceClient::new(connect(&server).await?);
            let expected_version = base.expected(&mut c).await?;
            let r = c
                .apply_plan(pb::ApplyPlanRequest {
                    plan_toml: text,
                    expected_version,
                    author,
                    comment,
                    request_id: request_id.unwrap_or_else(|| format!("cli-{}", ulid::Ulid::new())),
                })
                .await?
                .into_inner();
            let v = r.version.unwrap_or_default();
            if server.json {
                return Ok(to_json(&version_json(&v)));
            }
            Ok(format!(
                "applied: version {} ({})\n",
                v.version, v.content_hash
            ))
        }
        PlanCommand::Simulate {
            file,
            days,
            calls,
            base_version,
            samples,
            server,
        } => plan_simulate(file, days, calls, base_version, samples, server).await,
        PlanCommand::History { limit, server } => plan_history(limit, server).await,
        PlanCommand::Diff { from, to, server } => plan_diff(from, to, server).await,
        PlanCommand::Rollback {
            version,
            base,
            comment,
            author,
            request_id,
            server,
        } => {
            let mut c = pb::plan_service_client::PlanServiceClient::new(connect(&server).await?);
            let expected_version = base.expected(&mut c).await?;
            let r = c
                .rollback_plan(pb::RollbackPlanRequest {
                    version,
                    expected_version,
                    author,
                    comment,
                    request_id: request_id.unwrap_or_else(|| format!("cli-{}", ulid::Ulid::new())),
                })
                .await?
                .into_inner();
            let v = r.version.unwrap_or_default();
            if server.json {
                let mut out = version_json(&v);
                out["unchanged"] = r.unchanged.into();
                return Ok(to_json(&out));
            }
            if r.unchanged {
                return Ok(format!(
                    "version {version} is already active (as version {}, same text): nothing changed\n",
                    v.version
                ));
            }
            Ok(format!(
                "rolled back to version {version}: now version {} ({})\n",
                v.version, v.content_hash
            ))
        }
    }
}

async fn customer(cmd: CustomerCommand) -> Result<String, Failure> {
    use pb::customer_service_client::CustomerServiceClient;
    use pb::get_customer_request::Lookup;
    let render = |c: pb::Customer| {
        format!(
            "{} {}\n  phones {}\n  status {}, language {}, last agent {}\n  notes  {}\n",
            c.customer_id,
            c.display_name,
            c.phone_numbers.join(", "),
            c.status,
            c.language,
            c.last_agent_id,
            c.notes
        )
    };
    match cmd {
        CustomerCommand::Get { key, server } => {
            let mut c = CustomerServiceClient::new(connect(&server).await?);
            let lookup = if key.starts_with('+') {
                Lookup::PhoneNumber(key)
            } else {
                Lookup::CustomerId(key)
            };
            let r = c
                .get_customer(pb::GetCustomerRequest {
                    lookup: Some(lookup),
                })
                .await?
                .into_inner();
            Ok(render(r.customer.unwrap_or_default()))
        }
        CustomerCommand::Upsert {
            id,
            id_option,
            name,
            phones,
            status,
            language,
            notes,
            last_agent,
            server,
        } => {
            let mut c = CustomerServiceClient::new(connect(&server).await?);
            let r = c
                .upsert_customer(pb::UpsertCustomerRequest {
                    customer: Some(pb::Customer {
                        customer_id: id.or(id_option).unwrap_or_default(),
                        display_name: name,
                        phone_numbers: phones,
                        status,
                        language,
                        notes,
                        last_agent_id: last_agent,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            Ok(format!(
                "{}: {}",
                if r.created { "created" } else { "updated" },
                render(r.customer.unwrap_or_default())
            ))
        }
        CustomerCommand::Delete { id, server } => {
            let mut c = CustomerServiceClient::new(connect(&server).await?);
            c.delete_customer(pb::DeleteCustomerRequest { customer_id: id })
                .await?;
            Ok("deleted\n".into())
        }
    }
}

async fn bench(a: BenchArgs) -> Result<String, Failure> {
    use crate::bench::{self, BenchOptions};
    let secs = |v: f64, what: &str| {
        if v.is_finite() && v >= 0.0 {
            Ok(std::time::Duration::from_secs_f64(v))
        } else {
            Err(Failure {
                code: EXIT_CONFIG,
                message: format!("--{what} must be a non-negative number of seconds"),
            })
        }
    };
    let opts = BenchOptions {
        scenario: a.scenario,
        clients: a.clients.max(1),
        connections: a.connections.max(1),
        duration: secs(a.duration, "duration")?,
        requests: a.requests,
        rate: a.rate,
        warmup: secs(a.warmup, "warmup")?,
        agents: a.agents,
        watchers: a.watchers,
    };
    let fail = |message: String| Failure {
        code: EXIT_UNAVAILABLE,
        message,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.changed().await;
    };
    // An embedded server takes the same configuration as `serve` (./holdless.toml,
    // HOLDLESS__*), so a run can be tuned like a server; address, store, principals
    // and abuse limits are the bench's own.
    let embedded_settings = if a.embedded {
        let mut settings = Settings::load(None).map_err(|e| Failure {
            code: EXIT_CONFIG,
            message: format!("bad config: {e}"),
        })?;
        settings.auth.principals.clear();
        settings.server.listen = "127.0.0.1:0".parse().expect("loopback port 0 parses");
        settings.metrics.listen = "127.0.0.1:0".parse().expect("loopback port 0 parses");
        // Nobody looks at an embedded server's console; it must not take the port of a
        // real server's.
        settings.console.enabled = false;
        // A load test is one principal hammering many numbers on purpose: the abuse
        // limits would refuse it after a few hundred callbacks.
        settings.limits.callback_requests_per_phone_per_hour = 0;
        settings.limits.callback_requests_per_principal_per_hour = 0;
        Some(settings)
    } else {
        None
    };
    let mut targets: Vec<(&str, String)> = Vec::new();
    if a.baseline {
        // The no-op handler runs behind the server stack holdless runs behind, with
        // the embedded server's settings (a remote server's are not known here: the
        // defaults).
        let server = embedded_settings
            .as_ref()
            .map_or_else(|| Settings::default().server, |s| s.server.clone());
        let addr = bench::baseline::start(&server, !a.bare_baseline, stopped(stop_rx.clone()))
            .await
            .map_err(|e| fail(format!("cannot start the baseline: {e}")))?;
        targets.push((bench::BASELINE, format!("http://{addr}")));
    }
    let _embedded_dir;
    let target = if let Some(mut settings) = embedded_settings {
        let dir = tempfile::tempdir().map_err(|e| fail(e.to_string()))?;
        settings.store.path = dir.path().join("store");
        let app = Application::build(settings, Arc::new(SystemClock))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let addr = app.local_addr();
        tokio::spawn(app.run(stopped(stop_rx.clone())));
        _embedded_dir = dir;
        let target = format!("http://{addr}");
        wait_until_serving(&target).await.map_err(fail)?;
        target
    } else {
        let target = server_url(&a.server.server, false);
        if a.scenario != bench::Scenario::Route && !a.yes {
            refuse_a_store_with_callbacks(&target).await?;
        }
        target
    };
    let mut failed = bench::Errors::new();
    let mut count_failures = |r: &bench::Report| {
        for (code, n) in &r.error_codes {
            *failed.entry(code).or_default() += n;
        }
    };
    if let Some(windows) = a.windows {
        let embedded = a.embedded;
        let json = a.server.json;
        bench::soak(&target, &opts, windows, |w, r| {
            count_failures(&r);
            let rss = if embedded {
                bench::resident_bytes().map(|b| b / (1024 * 1024))
            } else {
                None
            };
            let line = if json {
                format!(
                    "{}\n",
                    serde_json::json!({ "window": w, "report": r, "rss_mib": rss })
                )
            } else {
                format!(
                    "window {w:>3}: rss {} | {}",
                    rss.map_or("-".to_owned(), |m| format!("{m} MiB")),
                    bench::render(&r)
                )
            };
            // As it happens: a soak runs for minutes.
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        })
        .await
        .map_err(fail)?;
        let _ = stop_tx.send(true);
        return failures(failed, String::new());
    }
    targets.push(("holdless", target));
    let named: Vec<(&str, &str)> = targets.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let rounds = if a.baseline { a.rounds } else { 1 };
    let reports = bench::compare(&named, &opts, rounds).await.map_err(fail)?;
    let _ = stop_tx.send(true);
    reports.iter().for_each(&mut count_failures);

    let ratio = match reports.as_slice() {
        [base, hl] if base.throughput_per_sec > 0.0 => {
            Some(hl.throughput_per_sec / base.throughput_per_sec)
        }
        _ => None,
    };
    // Only an embedded server's store is in this process; one that flushed shows its
    // slow flushes next to the latencies they explain.
    let flushes = a
        .embedded
        .then(bench::StoreFlushes::of_this_process)
        .flatten()
        .filter(|f| f.flushes > 0);
    if a.server.json {
        let out = to_json(&serde_json::json!({
            "reports": reports,
            "throughput_ratio": ratio,
            "store_flushes": flushes,
        }));
        return failures(failed, out);
    }
    let mut out: String = reports.iter().map(bench::render).collect();
    if let Some(r) = ratio {
        out.push_str(&format!("throughput ratio holdless/baseline: {r:.2}\n"));
    }
    if let Some(f) = flushes {
        out.push_str(&f.render());
    }
    failures(failed, out)
}

/// A bench run with failed requests is not a measurement of the server's speed: the
/// report still goes to standard output, and the run exits 1 with the failures by
/// status code (a limit the server enforces shows as RESOURCE_EXHAUSTED, say).
fn failures(failed: crate::bench::Errors, out: String) -> Result<String, Failure> {
    if failed.is_empty() {
        return Ok(out);
    }
    print!("{out}");
    let total: u64 = failed.values().sum();
    let by_code: Vec<String> = failed.iter().map(|(c, n)| format!("{c}: {n}")).collect();
    Err(Failure {
        code: 1,
        message: format!("{total} request(s) failed: {}", by_code.join(", ")),
    })
}

/// Refuses to bench the callback and mixed scenarios against a server whose store
/// already holds callbacks (one ListCallbacks of one entry): those are a contact
/// center's real customers, and the bench's callbacks would queue among them and be
/// dialed. `--yes` overrides; a check that cannot be made refuses too.
async fn refuse_a_store_with_callbacks(target: &str) -> Result<(), Failure> {
    let unreachable = |message: String| Failure {
        code: EXIT_UNAVAILABLE,
        message,
    };
    let channel = crate::bench::connect(target, 1)
        .await
        .map_err(unreachable)?
        .remove(0);
    let mut c = pb::callback_service_client::CallbackServiceClient::new(channel);
    let listed = c
        .list_callbacks(pb::ListCallbacksRequest {
            page_size: 1,
            ..Default::default()
        })
        .await;
    let why = match listed {
        Ok(r) if r.get_ref().callbacks.is_empty() => return Ok(()),
        Ok(_) => format!("{target} already holds callbacks"),
        Err(s) => format!(
            "cannot tell whether {target} holds callbacks ({:?}: {})",
            s.code(),
            s.message()
        ),
    };
    Err(Failure {
        code: EXIT_CONFIG,
        message: format!(
            "{why}: this scenario writes test callbacks that would be dialed like real ones; \
             pass --yes to write them anyway"
        ),
    })
}

/// One gRPC health check, answered within 5 s.
async fn health(service: String, server: ServerArg) -> Result<String, Failure> {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let unavailable = |message: String| Failure {
        code: EXIT_UNAVAILABLE,
        message,
    };
    let name = if service.is_empty() {
        "the server".to_owned()
    } else {
        format!("service '{service}'")
    };
    let connecting = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut client = HealthClient::new(connect(&server).await?);
        // Not SERVING, whatever the reason, is exit 69, as documented: a service the
        // server does not know (NOT_FOUND) is not serving, and a probe must not
        // mistake it for a usage error.
        client
            .check(HealthCheckRequest { service })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => {
                    unavailable(format!("SERVICE_UNKNOWN: the server has no {name}"))
                }
                _ => unavailable(format!("{:?}: {}", s.code(), s.message())),
            })
    });
    let reply = connecting
        .await
        .map_err(|_| {
            unavailable(format!(
                "no health answer from {} within 5 s",
                server.server
            ))
        })??
        .into_inner();
    match ServingStatus::try_from(reply.status).unwrap_or(ServingStatus::Unknown) {
        ServingStatus::Serving => Ok("SERVING\n".into()),
        other => Err(unavailable(format!("{}: {name}", other.as_str_name()))),
    }
}

/// `holdless torture`: exit 0 when clean, 1 when anything was lost, duplicated or
/// inconsistent (or the server died by itself), 64 on bad usage.
async fn torture(a: TortureArgs) -> ExitCode {
    use crate::config::StoreBackend;
    use crate::torture::{self, TortureError, TortureOptions};
    let refused = match (a.backend, a.failover) {
        (Some(StoreBackend::Sled), true) => {
            Some("--failover runs several servers on one PostgreSQL database: --backend postgres")
        }
        (Some(StoreBackend::Postgres), false) => Some(
            "on PostgreSQL the torture kills and stalls cluster leaders: add --failover \
             (the single-server crash test runs on sled)",
        ),
        _ => None,
    };
    if let Some(why) = refused {
        eprintln!("holdless: torture: {why}");
        return ExitCode::from(EXIT_CONFIG);
    }
    if a.failover {
        return torture_failover(a).await;
    }
    let result = if a.check_only {
        match &a.data_dir {
            Some(dir) => torture::check_only(dir).await,
            None => Err(TortureError::Usage("--check-only needs --data-dir".into())),
        }
    } else {
        let binary = match a.binary.clone().map_or_else(std::env::current_exe, Ok) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("holdless: cannot find this executable ({e}); pass --binary");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let seed = a.seed.unwrap_or_else(|| fastrand::u64(..));
        eprintln!("torture: seed={seed} runs={}", a.runs);
        let opts = TortureOptions {
            runs: a.runs,
            seed,
            data_dir: a.data_dir.clone(),
            binary,
            clients: a.clients,
            dialers: a.dialers,
            agents: a.agents,
            callbacks_per_run: a.callbacks_per_run,
            min_kill: std::time::Duration::from_millis(a.min_kill_ms),
            max_kill: std::time::Duration::from_millis(a.max_kill_ms),
            lease_secs: a.lease_secs,
        };
        torture::run(&opts, &mut |line| eprintln!("torture: {line}")).await
    };
    match result {
        Ok(summary) => {
            if a.json {
                print!("{}", to_json(&summary));
            } else {
                for p in &summary.problems {
                    eprintln!("torture: {:?} {}: {}", p.kind, p.key, p.detail);
                }
                if let Some(d) = &summary.data_dir {
                    eprintln!("torture: store, ledger and server log in {}", d.display());
                }
                eprintln!(
                    "torture: {} callbacks stored, {} dispatches, {} outcomes acknowledged; sent again after a crash: {} requests, {} reports ({} found the attempt already settled); {:.1} s",
                    summary.records,
                    summary.dispatches,
                    summary.outcomes_acked,
                    summary.retried_requests,
                    summary.retried_outcomes,
                    summary.stale_reports,
                    summary.wall_secs
                );
                println!("{}", summary.line());
            }
            if summary.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("holdless: torture: {e}");
            ExitCode::from(match e {
                TortureError::Usage(_) => EXIT_CONFIG,
                TortureError::Io(_) | TortureError::Server(_) => 1,
            })
        }
    }
}

/// Waits for health SERVING on `target`, at most 30 s.
async fn wait_until_serving(target: &str) -> Result<(), String> {
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let channel = crate::bench::connect(target, 1).await?.remove(0);
    let mut health = HealthClient::new(channel);
    let mut stream = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let wait = async {
        while let Ok(Some(m)) = stream.message().await {
            if m.status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
                return Ok(());
            }
        }
        Err("health stream ended before SERVING".to_string())
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), wait)
        .await
        .map_err(|_| "server did not become SERVING within 30 s".to_string())?
}

fn callback_line(c: &pb::Callback) -> String {
    let state = pb::CallbackState::try_from(c.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("CALLBACK_STATE_")
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let when = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(crate::api::convert::instant)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let place = if c.position > 0 {
        format!(" #{}", c.position)
    } else {
        String::new()
    };
    format!(
        "{}  {:<10} {:<12} {:<16} attempts {}/{}  next {}{}{}\n",
        c.callback_id,
        state,
        c.queue_id,
        c.phone_number,
        c.attempts,
        c.max_attempts,
        when(&c.next_attempt_time),
        place,
        if c.cancel_reason.is_empty() {
            String::new()
        } else {
            format!("  ({})", c.cancel_reason)
        }
    )
}

async fn callbacks(cmd: CallbacksCommand) -> Result<String, Failure> {
    use pb::callback_service_client::CallbackServiceClient;
    match cmd {
        CallbacksCommand::List {
            queue,
            state,
            phone,
            limit,
            server,
        } => {
            let state = match state.as_deref() {
                None => pb::CallbackState::Unspecified,
                Some(s) => pb::CallbackState::from_str_name(&format!(
                    "CALLBACK_STATE_{}",
                    s.to_ascii_uppercase()
                ))
                .ok_or_else(|| Failure {
                    code: EXIT_CONFIG,
                    message: format!("unknown state '{s}'"),
                })?,
            };
            let mut c = CallbackServiceClient::new(connect(&server).await?);
            let r = c
                .list_callbacks(pb::ListCallbacksRequest {
                    queue_id: queue.unwrap_or_default(),
                    state: state as i32,
                    phone_number: phone.unwrap_or_default(),
                    page_size: limit,
                    page_token: String::new(),
                })
                .await?
                .into_inner();
            if server.json {
                let items: Vec<_> = r.callbacks.iter().map(callback_json).collect();
                return Ok(to_json(
                    &serde_json::json!({"callbacks": items, "next_page_token": r.next_page_token}),
                ));
            }
            let mut out: String = r.callbacks.iter().map(callback_line).collect();
            if out.is_empty() {
                out = "no callbacks\n".into();
            }
            Ok(out)
        }
        CallbacksCommand::Show { id, server } => {
            let mut c = CallbackServiceClient::new(connect(&server).await?);
            let cb = c
                .get_callback(pb::GetCallbackRequest { callback_id: id })
                .await?
                .into_inner()
                .callback
                .unwrap_or_default();
            if server.json {
                return Ok(to_json(&callback_json(&cb)));
            }
            Ok(callback_line(&cb))
        }
        CallbacksCommand::Cancel { id, reason, server } => {
            let mut c = CallbackServiceClient::new(connect(&server).await?);
            let cb = c
                .cancel_callback(pb::CancelCallbackRequest {
                    callback_id: id,
                    reason,
                })
                .await?
                .into_inner()
                .callback
                .unwrap_or_default();
            Ok(callback_line(&cb))
        }
    }
}

fn callback_json(c: &pb::Callback) -> serde_json::Value {
    serde_json::json!({
        "callback_id": c.callback_id,
        "state": pb::CallbackState::try_from(c.state).map(|s| s.as_str_name()).unwrap_or(""),
        "queue_id": c.queue_id,
        "phone_number": c.phone_number,
        "attempts": c.attempts,
        "max_attempts": c.max_attempts,
        "position": c.position,
        "estimated_wait_secs": c.estimated_wait.map(|w| w.seconds),
        "cancel_reason": c.cancel_reason,
        "time_zone": c.time_zone,
    })
}
fn time_text(t: Option<&prost_types::Timestamp>, format: &str) -> String {
    t.and_then(crate::api::convert::instant)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

fn version_json(v: &pb::PlanVersion) -> serde_json::Value {
    serde_json::json!({
        "version": v.version,
        "author": v.author,
        "comment": v.comment,
        "create_time": time_text(v.create_time.as_ref(), "%Y-%m-%dT%H:%M:%SZ"),
        "content_hash": v.content_hash,
    })
}

/// Rows as a left-aligned table with a header, columns two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut s = line(header.to_vec());
    for r in rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

/// A call in a `plan simulate --calls` file: RouteCallRequest's fields by name.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CallJson {
    call_id: String,
    caller_number: String,
    dialed_number: String,
    customer_id: String,
    intent: String,
    language: String,
    tracking_code: String,
    attributes: std::collections::HashMap<String, String>,
    /// RFC 3339.
    received_time: Option<String>,
}

fn read_calls(path: &PathBuf) -> Result<Vec<pb::RouteCallRequest>, Failure> {
    let bad = |m: String| Failure {
        code: EXIT_CONFIG,
        message: format!("{}: {m}", path.display()),
    };
    let calls: Vec<CallJson> =
        serde_json::from_str(&read_file(path)?).map_err(|e| bad(e.to_string()))?;
    calls
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let received_time = match c.received_time {
                None => None,
                Some(t) => {
                    let t = chrono::DateTime::parse_from_rfc3339(&t)
                        .map_err(|e| bad(format!("[{i}].received_time: {e}")))?;
                    Some(crate::api::convert::timestamp(
                        t.with_timezone(&chrono::Utc),
                    ))
                }
            };
            Ok(pb::RouteCallRequest {
                call_id: c.call_id,
                caller_number: c.caller_number,
                dialed_number: c.dialed_number,
                customer_id: c.customer_id,
                intent: c.intent,
                language: c.language,
                tracking_code: c.tracking_code,
                attributes: c.attributes,
                location: None,
                received_time,
                explain: false,
                dry_run: false,
            })
        })
        .collect()
}

async fn plan_simulate(
    file: PathBuf,
    days: u32,
    calls: Option<PathBuf>,
    base_version: u64,
    samples: u32,
    server: ServerArg,
) -> Result<String, Failure> {
    let text = read_file(&file)?;
    let calls = match &calls {
        Some(p) => read_calls(p)?,
        None => Vec::new(),
    };
    let from_file = !calls.is_empty();
    let mut c = pb::plan_service_client::PlanServiceClient::new(connect(&server).await?);
    let r = c
        .simulate_plan(pb::SimulatePlanRequest {
            plan_toml: text,
            base_version,
            days,
            calls,
            samples_per_move: samples,
        })
        .await?
        .into_inner();
    if server.json {
        return Ok(to_json(&serde_json::json!({
            "base_version": r.base_version,
            "calls_replayed": r.calls_replayed,
            "calls_moved": r.calls_moved,
            "moves": r.moves.iter().map(|m| serde_json::json!({
                "from_queue_id": m.from_queue_id,
                "to_queue_id": m.to_queue_id,
                "call_count": m.call_count,
                "sample_call_ids": m.sample_call_ids,
            })).collect::<Vec<_>>(),
            "unmatched_rule_ids": r.unmatched_rule_ids,
            "truncated": r.truncated,
            "calls_without_facts": r.calls_without_facts,
        })));
    }
    let source = if from_file {
        "given calls".to_owned()
    } else {
        format!("calls of the last {days} day(s)")
    };
    let mut s = format!(
        "{} vs version {}: {} {source} replayed, {} change queue\n",
        file.display(),
        r.base_version,
        r.calls_replayed,
        r.calls_moved
    );
    if r.truncated {
        s.push_str("(only the newest 100,000 recorded calls were replayed)\n");
    }
    if r.calls_without_facts > 0 {
        s.push_str(&format!(
            "({} recorded call(s) predate routing facts: replayed with caller and customer only)\n",
            r.calls_without_facts
        ));
    }
    if !r.moves.is_empty() {
        s.push('\n');
        let rows: Vec<Vec<String>> = r
            .moves
            .iter()
            .map(|m| {
                vec![
                    m.from_queue_id.clone(),
                    m.to_queue_id.clone(),
                    m.call_count.to_string(),
                    m.sample_call_ids.join(", "),
                ]
            })
            .collect();
        s.push_str(&table(&["FROM", "TO", "CALLS", "SAMPLE CALL IDS"], &rows));
    }
    if !r.unmatched_rule_ids.is_empty() {
        s.push_str(&format!(
            "\nrules that matched no call: {}\n",
            r.unmatched_rule_ids.join(", ")
        ));
    }
    Ok(s)
}

async fn plan_history(limit: usize, server: ServerArg) -> Result<String, Failure> {
    let mut c = pb::plan_service_client::PlanServiceClient::new(connect(&server).await?);
    let mut versions = Vec::new();
    let mut token = String::new();
    let mut active = 0;
    while versions.len() < limit {
        let r = c
            .list_plan_versions(pb::ListPlanVersionsRequest {
                page_size: u32::try_from(limit - versions.len()).unwrap_or(u32::MAX),
                page_token: token,
            })
            .await?
            .into_inner();
        active = r.active_version;
        versions.extend(r.versions);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    versions.truncate(limit);
    if server.json {
        return Ok(to_json(&serde_json::json!({
            "active_version": active,
            "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
        })));
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                if v.version == active { "*" } else { "" }.to_owned(),
                v.version.to_string(),
                time_text(v.create_time.as_ref(), "%Y-%m-%d %H:%M:%S"),
                v.author.clone(),
                v.content_hash.chars().take(12).collect(),
                v.comment.clone(),
            ]
        })
        .collect();
    Ok(table(
        &["", "VERSION", "CREATED (UTC)", "AUTHOR", "HASH", "COMMENT"],
        &rows,
    ))
}

/// A plan named on the command line: a version number, or a file.
async fn plan_text(
    c: &mut pb::plan_service_client::PlanServiceClient<Conn>,
    which: Option<&str>,
) -> Result<(String, String), Failure> {
    match which {
        None => {
            let r = c
                .get_plan(pb::GetPlanRequest { version: 0 })
                .await?
                .into_inner();
            let v = r.version.map(|v| v.version).unwrap_or_default();
            Ok((format!("version {v} (active)"), r.plan_toml))
        }
        Some(w) => match w.parse::<u64>() {
            Ok(version) => {
                let r = c
                    .get_plan(pb::GetPlanRequest { version })
                    .await?
                    .into_inner();
                Ok((format!("version {version}"), r.plan_toml))
            }
            Err(_) => {
                let path = PathBuf::from(w);
                Ok((w.to_owned(), read_file(&path)?))
            }
        },
    }
}

async fn plan_diff(from: String, to: Option<String>, server: ServerArg) -> Result<String, Failure> {
    let mut c = pb::plan_service_client::PlanServiceClient::new(connect(&server).await?);
    let (from_name, from_text) = plan_text(&mut c, Some(&from)).await?;
    let (to_name, to_text) = plan_text(&mut c, to.as_deref()).await?;
    let diff = similar::TextDiff::from_lines(&from_text, &to_text);
    let unified = diff
        .unified_diff()
        .context_radius(3)
        .header(&from_name, &to_name)
        .to_string();
    if server.json {
        return Ok(to_json(&serde_json::json!({
            "from": from_name,
            "to": to_name,
            "identical": from_text == to_text,
            "unified_diff": unified,
        })));
    }
    if from_text == to_text {
        return Ok(format!("{from_name} and {to_name} are identical\n"));
    }
    Ok(unified)
}

async fn audit(limit: usize, server: ServerArg) -> Result<String, Failure> {
    let mut c = pb::plan_service_client::PlanServiceClient::new(connect(&server).await?);
    let mut entries = Vec::new();
    let mut token = String::new();
    while entries.len() < limit {
        let r = c
            .list_audit(pb::ListAuditRequest {
                page_size: u32::try_from(limit - entries.len()).unwrap_or(u32::MAX),
                page_token: token,
            })
            .await?
            .into_inner();
        entries.extend(r.entries);
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    entries.truncate(limit);
    let action = |a: i32| {
        pb::AuditAction::try_from(a)
            .map(|a| {
                a.as_str_name()
                    .trim_start_matches("AUDIT_ACTION_")
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    };
    if server.json {
        return Ok(to_json(
            &entries
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "sequence": e.sequence,
                        "time": time_text(e.time.as_ref(), "%Y-%m-%dT%H:%M:%SZ"),
                        "principal": e.principal,
                        "author": e.author,
                        "action": action(e.action),
                        "target": e.target,
                        "request_id": e.request_id,
                        "detail": e.detail,
                    })
                })
                .collect::<Vec<_>>(),
        ));
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.sequence.to_string(),
                time_text(e.time.as_ref(), "%Y-%m-%d %H:%M:%S"),
                e.principal.clone(),
                e.author.clone(),
                action(e.action),
                e.target.clone(),
                e.request_id.clone(),
                e.detail.clone(),
            ]
        })
        .collect();
    Ok(table(
        &[
            "SEQ",
            "TIME (UTC)",
            "PRINCIPAL",
            "AUTHOR",
            "ACTION",
            "TARGET",
            "REQUEST ID",
            "DETAIL",
        ],
        &rows,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for in `--help`.
    #[test]
    fn every_argument_has_help_text() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "holdless", &mut missing);
        assert!(missing.is_empty(), "arguments without help: {missing:#?}");
    }

    /// Without --based-on or --force, a plan change is based on the version active
    /// when the command starts, never sent blind (expected_version 0).
    #[tokio::test]
    async fn a_plan_change_is_based_on_the_active_version_by_default() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::default();
        settings.server.listen = "127.0.0.1:0".parse().expect("address");
        settings.metrics.listen = "127.0.0.1:0".parse().expect("address");
        settings.console.enabled = false;
        settings.store.path = dir.path().join("store");
        let clock = Arc::new(crate::clock::ManualClock::new(chrono::Utc::now()));
        let app = Application::build(settings, clock)
            .await
            .expect("app builds");
        let server = ServerArg {
            server: app.local_addr().to_string(),
            json: false,
            token: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        wait_until_serving(&server_url(&server.server, false))
            .await
            .expect("SERVING");
        let c = match connect(&server).await {
            Ok(conn) => pb::plan_service_client::PlanServiceClient::new(conn),
            Err(f) => panic!("connect: {}", f.message),
        };
        let base = |based_on, force| BaseVersion { based_on, force };
        let expected = |b: BaseVersion| {
            let mut c = c.clone();
            async move {
                match b.expected(&mut c).await {
                    Ok(v) => v,
                    Err(f) => panic!("{}", f.message),
                }
            }
        };
        assert_eq!(expected(base(None, false)).await, 1, "the active version");
        assert_eq!(expected(base(Some(7), false)).await, 7);
        assert_eq!(expected(base(None, true)).await, 0, "--force: no check");
        let _ = stop.send(());
        running.await.expect("app task").expect("clean stop");
    }

    #[test]
    fn a_server_without_a_scheme_gets_one() {
        assert_eq!(
            server_url("127.0.0.1:50051", false),
            "http://127.0.0.1:50051"
        );
        assert_eq!(server_url("db.example:443", true), "https://db.example:443");
        assert_eq!(server_url("https://h:1", false), "https://h:1");
    }
}
