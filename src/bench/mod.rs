//! `holdless bench`: a load generator for a running server (like redis-benchmark or
//! pgbench), with an optional no-op baseline measured in the same run.
//!
//! Two modes. Closed loop (default): `clients` tasks send as fast as replies come back,
//! which measures throughput at saturation. Open loop (`--rate R`): requests are
//! scheduled at a fixed rate and each latency is counted from its *scheduled* send
//! time, so a stall shows up in the percentiles instead of silently lowering the rate
//! (the correction wrk2 makes for coordinated omission).

pub mod baseline;
pub mod skim;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::api::pb;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// RouteCall for distinct calls from a mix of callers and dialed numbers.
    Route,
    /// Durable RequestCallback (ASAP), each for a number never used before.
    Callback,
    /// A contact-center day: agents report available, calls are routed, answered or
    /// abandoned and ended, abandoned callers ask for a callback, and a dialer takes
    /// the callbacks the scheduler dispatches and reports their outcomes. Every RPC a
    /// client sends counts as one request.
    Mixed,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub scenario: Scenario,
    pub clients: usize,
    /// HTTP/2 connections the clients share.
    pub connections: usize,
    pub duration: Duration,
    /// Stop after this many requests (overrides `duration` when reached first).
    pub requests: Option<u64>,
    /// Open loop at this many requests per second.
    pub rate: Option<f64>,
    pub warmup: Duration,
    /// Agents each target is told of before the run (busy, able to serve every queue
    /// of the example plan): the live state of a staffed center.
    pub agents: usize,
    /// Wallboard streams (`WatchQueueStats`, every queue) kept open on each holdless
    /// target and read throughout the run, as a console and wallboards would.
    pub watchers: usize,
}

/// Name of the no-op target of `--baseline` (it serves no wallboards).
pub const BASELINE: &str = "baseline";

/// `n` wallboard streams on `channels`, each read by its own task until the returned
/// guards drop. A watcher the server drops for falling behind is counted in
/// `dropped` and subscribes again, so `n` stay connected.
async fn open_watchers(
    channels: &[Channel],
    n: usize,
    dropped: &Arc<AtomicU64>,
) -> Result<Vec<AbortOnDrop>, String> {
    let mut guards = Vec::with_capacity(n);
    for i in 0..n {
        let mut client =
            pb::stats_service_client::StatsServiceClient::new(channels[i % channels.len()].clone());
        let request = pb::WatchQueueStatsRequest::default();
        let mut stream = client
            .watch_queue_stats(request.clone())
            .await
            .map_err(|e| format!("WatchQueueStats: {}", e.message()))?
            .into_inner();
        let dropped = dropped.clone();
        guards.push(AbortOnDrop(tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return,
                    Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        match client.watch_queue_stats(request.clone()).await {
                            Ok(s) => stream = s.into_inner(),
                            Err(_) => return,
                        }
                    }
                    Err(_) => return,
                }
            }
        })));
    }
    Ok(guards)
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target: String,
    pub scenario: Scenario,
    pub mode: &'static str,
    pub clients: usize,
    pub ok: u64,
    pub errors: u64,
    /// Failed requests by gRPC status code (e.g. `RESOURCE_EXHAUSTED`), so a run that
    /// hit a server limit says which one instead of a bare count.
    pub error_codes: BTreeMap<&'static str, u64>,
    pub elapsed_secs: f64,
    pub throughput_per_sec: f64,
    pub latency: Latency,
    /// Wallboard streams open and read on this target during the run.
    pub watchers: usize,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

const CALLERS: &[&str] = &[
    "+12125550100",
    "+13125550101",
    "+14165550100",
    "+442079460958",
    "+441315550100",
    "+33142685300",
    "+4930123456",
    "+61291234567",
];
const DIALED: &[&str] = &["+18005550100", "+18005550199", "+18005550142"];

/// Live calls per client. A contact center's live state is the calls in its queues
/// now, not every call of the day: each client keeps this many calls waiting and asks
/// for each of them in turn, so the server holds a steady 64 x 100 = 6,400 waiting
/// calls (a busy center) while every request still does a routing decision, the
/// customer and contact-history reads, and a place-in-line update. A call asked about
/// again is still waiting in the same queue, so it keeps its place (the floor takes it
/// out of the line and puts it back). Fresh call ids with nobody answering would grow
/// the floor without bound, which production never sees.
pub const CALLS_PER_CLIENT: u64 = 100;

/// The `route` scenario's request `n` of client `client` (also used by the
/// `route_path` criterion bench, which makes the same decisions without gRPC).
pub fn route_request(run: &str, client: usize, n: u64) -> pb::RouteCallRequest {
    let slot = n % CALLS_PER_CLIENT;
    let i = slot as usize + client;
    // Callers vary in their last four digits, so most calls are from numbers not seen
    // before (while sharing area codes and exchanges, as real callers do).
    let base = CALLERS[i % CALLERS.len()];
    let last4 = (slot.wrapping_mul(2_654_435_761) ^ client as u64) % 10_000;
    pb::RouteCallRequest {
        call_id: format!("bench-{run}-{client}-{slot}"),
        caller_number: format!("{}{last4:04}", &base[..base.len() - 4]),
        dialed_number: DIALED[i % DIALED.len()].into(),
        intent: if i.is_multiple_of(5) {
            "billing".into()
        } else {
            String::new()
        },
        ..Default::default()
    }
}

/// US area codes the callback scenario dials (all allocated).
const AREAS: &[u32] = &[212, 312, 415, 617, 713, 202, 305, 404];

/// A valid number per request, unique within a run of up to 64 million requests: an
/// area code, an exchange from 200 to 999 and four digits, from the sequence number.
fn callback_request(run_seed: u64, _client: usize, n: u64) -> pb::RequestCallbackRequest {
    let area = AREAS[((run_seed + n / 8_000_000) % AREAS.len() as u64) as usize];
    let exchange = 200 + (n / 10_000) % 800;
    pb::RequestCallbackRequest {
        queue_id: "general".into(),
        phone_number: format!("+1{area}{exchange}{:04}", n % 10_000),
        ..Default::default()
    }
}

/// One client's connection to every service a scenario uses.
struct Clients {
    routing: pb::routing_service_client::RoutingServiceClient<Channel>,
    /// RouteCall for the route scenario, reading what a call router reads of a reply.
    router: skim::Router,
    callbacks: pb::callback_service_client::CallbackServiceClient<Channel>,
    /// Where the client is in its current call (mixed scenario).
    day: Day,
}

/// Skills of the mixed scenario's agents: every queue of the example plan.
const AGENT_SKILLS: &[&str] = &[
    "support",
    "priority",
    "uk",
    "sales",
    "billing",
    "fraud",
    "supervisor",
    "spanish",
];

/// One platform line of the mixed scenario: a call at a time, one RPC per step.
#[derive(Debug, Default)]
struct Day {
    /// Calls this client has started.
    calls: u64,
    step: DayStep,
    call_id: String,
    /// The current call was answered (else abandoned).
    answered: bool,
    /// The agent holdless reserved for the current call, if any.
    agent: Option<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum DayStep {
    /// Report an agent available (the client's own at first, then the one that took
    /// the last call).
    #[default]
    AgentFree,
    Route,
    /// Answered by the reserved agent, or abandoned (no agent, or one call in four
    /// where the caller gives up first).
    AnswerOrAbandon,
    /// Ended after the conversation, or, for every other abandoned call, a callback
    /// request from the web for a number never used before.
    EndOrCallback,
}

fn agent_report(agent: &str, state: pb::AgentState) -> pb::ReportAgentStateRequest {
    pb::ReportAgentStateRequest {
        agent_id: agent.to_owned(),
        skills: AGENT_SKILLS.iter().map(|s| ((*s).to_owned(), 5)).collect(),
        state: state as i32,
        event_time: Some(crate::api::convert::timestamp(chrono::Utc::now())),
    }
}

/// Tells the server behind `channels` of `n` busy agents (`bench-agent-0` ...), with
/// the skills of every queue of the example plan.
async fn staff(channels: &[Channel], n: usize) -> Result<(), String> {
    let Some(channel) = channels.first() else {
        return Ok(());
    };
    let mut client = pb::routing_service_client::RoutingServiceClient::new(channel.clone());
    for i in 0..n {
        client
            .report_agent_state(agent_report(
                &format!("bench-agent-{i}"),
                pb::AgentState::Busy,
            ))
            .await
            .map_err(|e| format!("reporting agent {i}: {}", e.message()))?;
    }
    Ok(())
}

fn call_event(call_id: &str, kind: pb::CallEventType, agent: &str) -> pb::ReportCallEventRequest {
    pb::ReportCallEventRequest {
        call_id: call_id.to_owned(),
        r#type: kind as i32,
        agent_id: agent.to_owned(),
        handle_time: (kind == pb::CallEventType::Ended).then_some(prost_types::Duration {
            seconds: 180,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// The next step of client `client`'s day; `n` is the run-wide request number.
async fn day_step(c: &mut Clients, run: &str, client: usize, n: u64) -> Outcome {
    let own_agent = format!("bench-agent-{client}");
    let day = &mut c.day;
    // An abandoned call is followed by a web callback request one time in two (one
    // call in eight or so): about what a center that offers callbacks sees, and within
    // what 64 agents can call back, so the callback queue stays at a steady size.
    if day.step == DayStep::EndOrCallback && !day.answered && day.calls % 2 == 1 {
        day.step = DayStep::AgentFree;
    }
    match day.step {
        DayStep::AgentFree => {
            let agent = day.agent.take().unwrap_or(own_agent);
            day.step = DayStep::Route;
            outcome(
                c.routing
                    .report_agent_state(agent_report(&agent, pb::AgentState::Available))
                    .await,
            )
        }
        DayStep::Route => {
            day.calls += 1;
            let mut req = route_request(run, client, day.calls);
            req.call_id = format!("bench-{run}-{client}-call-{}", day.calls);
            day.call_id = req.call_id.clone();
            day.step = DayStep::AnswerOrAbandon;
            match c.routing.route_call(req).await {
                Ok(r) => {
                    day.agent = r
                        .into_inner()
                        .decision
                        .map(|d| d.reserved_agent_id)
                        .filter(|a| !a.is_empty());
                    Ok(())
                }
                Err(s) => Err(s.code()),
            }
        }
        DayStep::AnswerOrAbandon => {
            day.step = DayStep::EndOrCallback;
            let gives_up = day.calls.is_multiple_of(4);
            let (kind, agent) = match (&day.agent, gives_up) {
                (Some(a), false) => (pb::CallEventType::Answered, a.clone()),
                _ => (pb::CallEventType::Abandoned, String::new()),
            };
            if kind == pb::CallEventType::Abandoned {
                // The reservation lapses with the call; the agent is reported free next.
                day.agent.get_or_insert(own_agent);
            }
            day.answered = kind == pb::CallEventType::Answered;
            outcome(
                c.routing
                    .report_call_event(call_event(&day.call_id, kind, &agent))
                    .await,
            )
        }
        DayStep::EndOrCallback => {
            day.step = DayStep::AgentFree;
            if day.answered {
                let agent = day.agent.clone().unwrap_or_default();
                outcome(
                    c.routing
                        .report_call_event(call_event(
                            &day.call_id,
                            pb::CallEventType::Ended,
                            &agent,
                        ))
                        .await,
                )
            } else {
                outcome(
                    c.callbacks
                        .request_callback(daytime_callback_request(n, chrono::Utc::now()))
                        .await,
                )
            }
        }
    }
}

/// Cities whose numbers the mixed scenario's callbacks use: (time zone, number prefix,
/// digits after it). The first where it is now between 09:00 and 19:00 is used, so
/// the scheduler may dispatch at any hour of the day the bench runs.
const DAYTIME_CITIES: &[(chrono_tz::Tz, &str, u32)] = &[
    (chrono_tz::Europe::London, "+44207", 7),
    (chrono_tz::America::New_York, "+1212", 7),
    (chrono_tz::Asia::Tokyo, "+813", 8),
    (chrono_tz::Australia::Sydney, "+612", 8),
    (chrono_tz::America::Los_Angeles, "+1415", 7),
];

/// An ASAP callback in the 24-hour `priority` queue for a number never used before in
/// a city where it is daytime at `now`.
fn daytime_callback_request(
    n: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> pb::RequestCallbackRequest {
    use chrono::Timelike;
    let (_, prefix, digits) = DAYTIME_CITIES
        .iter()
        .find(|(tz, _, _)| (9..19).contains(&now.with_timezone(tz).hour()))
        .unwrap_or(&DAYTIME_CITIES[0]);
    // A leading 2..9 keeps the subscriber number in an allocated range.
    let span = 10u64.pow(digits - 1);
    let first = 2 + (n / span) % 8;
    pb::RequestCallbackRequest {
        queue_id: "priority".into(),
        phone_number: format!(
            "{prefix}{first}{:0width$}",
            n % span,
            width = (digits - 1) as usize
        ),
        ..Default::default()
    }
}

/// The mixed scenario's dialer: takes every dispatch, reports CONNECTED (one in five
/// NO_ANSWER) and the agent free again, until the stream ends or the task is dropped.
async fn dialer(ch: Channel, run: String) {
    let mut dispatch = pb::dispatch_service_client::DispatchServiceClient::new(ch.clone());
    let mut routing = pb::routing_service_client::RoutingServiceClient::new(ch);
    let Ok(stream) = dispatch
        .watch_dispatches(pb::WatchDispatchesRequest {
            dialer_id: format!("bench-{run}-dialer"),
        })
        .await
    else {
        return; // the baseline has no dispatch service
    };
    let mut stream = stream.into_inner();
    let mut n = 0u64;
    while let Ok(Some(d)) = stream.message().await {
        n += 1;
        let outcome = if n.is_multiple_of(5) {
            pb::DispatchOutcome::NoAnswer
        } else {
            pb::DispatchOutcome::Connected
        };
        let _ = dispatch
            .report_dispatch_outcome(pb::ReportDispatchOutcomeRequest {
                attempt_id: d.attempt_id,
                outcome: outcome as i32,
            })
            .await;
        if !d.agent_id.is_empty() {
            let _ = routing
                .report_agent_state(agent_report(&d.agent_id, pb::AgentState::Available))
                .await;
        }
    }
}

/// The gRPC status code of a failed request.
type Outcome = Result<(), tonic::Code>;

fn outcome<T>(r: Result<T, tonic::Status>) -> Outcome {
    r.map(drop).map_err(|s| s.code())
}

async fn one(
    c: &mut Clients,
    scenario: Scenario,
    run: &str,
    calls: &str,
    seed: u64,
    client: usize,
    n: u64,
) -> Outcome {
    match scenario {
        Scenario::Route => outcome(c.router.route_call(route_request(calls, client, n)).await),
        Scenario::Callback => outcome(
            c.callbacks
                .request_callback(callback_request(seed, client, n))
                .await,
        ),
        Scenario::Mixed => day_step(c, run, client, n).await,
    }
}

/// The canonical name of a gRPC status code (as grpcurl and the gRPC docs spell it),
/// for the bench's count of failed requests by status.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Connects `n` HTTP/2 connections to `target`.
pub async fn connect(target: &str, n: usize) -> Result<Vec<Channel>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let ch = Endpoint::from_shared(target.to_owned())
            .map_err(|e| format!("bad target {target}: {e}"))?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot reach {target}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

/// A measurement in progress: latencies (µs), errors, time spent.
#[derive(Debug, Default)]
pub struct Sample {
    latencies: Vec<u64>,
    errors: Errors,
    elapsed_secs: f64,
}

/// Failed requests by status code.
pub type Errors = BTreeMap<&'static str, u64>;

fn add_errors(to: &mut Errors, from: Errors) {
    for (code, n) in from {
        *to.entry(code).or_default() += n;
    }
}

impl Sample {
    fn add(&mut self, mut other: Sample) {
        self.latencies.append(&mut other.latencies);
        add_errors(&mut self.errors, other.errors);
        self.elapsed_secs += other.elapsed_secs;
    }

    /// The report of everything measured so far.
    pub fn report(mut self, target: &str, opts: &BenchOptions) -> Report {
        self.latencies.sort_unstable();
        let lat = &self.latencies;
        let ok = lat.len() as u64;
        Report {
            target: target.to_owned(),
            scenario: opts.scenario,
            mode: if opts.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            clients: opts.clients,
            ok,
            errors: self.errors.values().sum(),
            error_codes: self.errors,
            elapsed_secs: self.elapsed_secs,
            throughput_per_sec: ok as f64 / self.elapsed_secs.max(1e-9),
            watchers: if target == BASELINE { 0 } else { opts.watchers },
            latency: Latency {
                p50_us: percentile(lat, 50.0),
                p90_us: percentile(lat, 90.0),
                p99_us: percentile(lat, 99.0),
                max_us: lat.last().copied().unwrap_or(0),
            },
        }
    }
}

/// Runs `rounds` alternating measurements of each target (same options, the
/// duration split between rounds), so background load on a shared machine falls on
/// all targets alike. Returns one report per target, in the order given.
/// A soak: measures `target` in `windows` consecutive windows of `opts.duration /
/// windows` each over the same connections (warm-up before the first only) and hands
/// each window's report to `on_window` as it ends, so drift in latency or memory
/// over a long run shows window by window.
pub async fn soak(
    target: &str,
    opts: &BenchOptions,
    windows: u32,
    mut on_window: impl FnMut(u32, Report),
) -> Result<(), String> {
    let windows = windows.max(1);
    let channels = connect(target, opts.connections).await?;
    staff(&channels, opts.agents).await?;
    let dropped = Arc::new(AtomicU64::new(0));
    let _watchers = open_watchers(&channels, opts.watchers, &dropped).await?;
    let calls = ulid::Ulid::new().to_string();
    // The clients' calls carry on from one window to the next: a window ending
    // mid-call must not leave the call unfinished on the server (it would be
    // remembered until `stale_call_after` and look like a leak).
    let mut days = Vec::new();
    let each = BenchOptions {
        duration: opts.duration / windows,
        requests: opts.requests.map(|r| r.div_ceil(u64::from(windows))),
        ..opts.clone()
    };
    for w in 0..windows {
        let window = BenchOptions {
            warmup: if w == 0 { opts.warmup } else { Duration::ZERO },
            ..each.clone()
        };
        on_window(
            w + 1,
            measure(&channels, &calls, &mut days, &window)
                .await
                .report(target, opts),
        );
    }
    Ok(())
}

/// The group-commit flushes of the holdless store in this process (an `--embedded`
/// run, warm-up included), and how many were slow: a durable scenario's tail is the
/// disk's when its stalls show here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreFlushes {
    pub flushes: u64,
    pub over_25ms: u64,
    pub over_50ms: u64,
    pub over_100ms: u64,
}

impl StoreFlushes {
    /// Read from the process's `holdless_store_flush_seconds` histogram.
    pub fn of_this_process() -> Option<Self> {
        Self::from_exposition(&crate::metrics::prometheus::handle()?.render())
    }

    /// From a Prometheus text exposition; `None` without the histogram.
    pub fn from_exposition(text: &str) -> Option<Self> {
        let value_of = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        let flushes = value_of("holdless_store_flush_seconds_count ")?;
        let over = |le: &str| {
            value_of(&format!(
                "holdless_store_flush_seconds_bucket{{le=\"{le}\"}} "
            ))
            .map(|at_most| (flushes - at_most).max(0.0) as u64)
        };
        Some(Self {
            flushes: flushes as u64,
            over_25ms: over("0.025")?,
            over_50ms: over("0.05")?,
            over_100ms: over("0.1")?,
        })
    }

    pub fn render(&self) -> String {
        format!(
            "holdless store: {} group-commit flushes, {} over 25 ms, {} over 50 ms, {} over 100 ms\n",
            self.flushes, self.over_25ms, self.over_50ms, self.over_100ms
        )
    }
}

/// Resident memory of this process in bytes (Linux), for soak reports.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

pub async fn compare(
    targets: &[(&str, &str)],
    opts: &BenchOptions,
    rounds: u32,
) -> Result<Vec<Report>, String> {
    let rounds = rounds.max(1);
    let mut conns = Vec::new();
    let dropped = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for (name, url) in targets {
        let channels = connect(url, opts.connections).await?;
        staff(&channels, opts.agents).await?;
        if *name != BASELINE {
            watchers.extend(open_watchers(&channels, opts.watchers, &dropped).await?);
        }
        conns.push(channels);
    }
    let per_round = BenchOptions {
        duration: opts.duration / rounds,
        requests: opts.requests.map(|r| r.div_ceil(u64::from(rounds))),
        ..opts.clone()
    };
    let mut samples: Vec<Sample> = targets.iter().map(|_| Sample::default()).collect();
    // One set of waiting calls per target for the whole run, warm-up included: the
    // `route` scenario's steady 6,400 (at 64 clients) must not grow by a fresh set
    // each round.
    let calls: Vec<String> = targets
        .iter()
        .map(|_| ulid::Ulid::new().to_string())
        .collect();
    let mut days: Vec<Vec<Day>> = targets.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        for (i, channels) in conns.iter().enumerate() {
            let warm = if round == 0 {
                opts.warmup
            } else {
                Duration::ZERO
            };
            samples[i].add(
                measure(
                    channels,
                    &calls[i],
                    &mut days[i],
                    &BenchOptions {
                        warmup: warm,
                        ..per_round.clone()
                    },
                )
                .await,
            );
        }
    }
    drop(watchers);
    let dropped = dropped.load(Ordering::Relaxed);
    if dropped > 0 {
        eprintln!(
            "holdless bench: the server dropped {dropped} wallboard watchers that fell behind"
        );
    }
    Ok(samples
        .into_iter()
        .zip(targets)
        .map(|(s, (name, _))| s.report(name, opts))
        .collect())
}

/// One measurement. Each drive gets its own run id (the callback scenario's numbers
/// and the mixed day's calls are new every time); the route scenario asks about
/// `calls`, the same waiting calls every time, and the mixed scenario's clients go
/// on with their calls where `days` left them.
async fn measure(
    channels: &[Channel],
    calls: &str,
    days: &mut Vec<Day>,
    opts: &BenchOptions,
) -> Sample {
    let run_id = ulid::Ulid::new().to_string();
    // Warm-up: same load, results discarded.
    if !opts.warmup.is_zero() {
        let warm = BenchOptions {
            duration: opts.warmup,
            requests: None,
            warmup: Duration::ZERO,
            ..opts.clone()
        };
        drive(channels, &format!("{run_id}w"), calls, days, &warm).await;
    }
    let started = Instant::now();
    let (latencies, errors) = drive(channels, &run_id, calls, days, opts).await;
    Sample {
        latencies,
        errors,
        elapsed_secs: started.elapsed().as_secs_f64(),
    }
}

fn seed_of(run: &str) -> u64 {
    run.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Drives the load; returns successful latencies (µs) and the failures by code. Client
/// `c` starts its day at `days[c]` (a new day when there is none) and leaves it there.
async fn drive(
    channels: &[Channel],
    run_id: &str,
    calls: &str,
    days: &mut Vec<Day>,
    opts: &BenchOptions,
) -> (Vec<u64>, Errors) {
    let start = Instant::now();
    let deadline = start + opts.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let limit = opts.requests.unwrap_or(u64::MAX);
    let interval = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let dialer = (opts.scenario == Scenario::Mixed)
        .then(|| AbortOnDrop(tokio::spawn(dialer(channels[0].clone(), run_id.to_owned()))));
    let paced = match interval.map(|iv| pace(start, iv, deadline, limit)) {
        None => None,
        Some(Ok(due)) => Some(Arc::new(tokio::sync::Mutex::new(due))),
        Some(Err(e)) => {
            // Counted as a failed request, so the report cannot pass for a clean run.
            eprintln!("holdless bench: cannot start the pacing thread: {e}");
            return (Vec::new(), Errors::from([("PACING_THREAD", 1)]));
        }
    };
    let clients = opts.clients.max(1);
    days.resize_with(clients, Day::default);
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let ch = channels[c % channels.len()].clone();
        let mut client = Clients {
            routing: pb::routing_service_client::RoutingServiceClient::new(ch.clone()),
            router: skim::Router::new(ch.clone()),
            callbacks: pb::callback_service_client::CallbackServiceClient::new(ch),
            day: std::mem::take(&mut days[c]),
        };
        let scenario = opts.scenario;
        let seed = seed_of(run_id);
        let issued = issued.clone();
        let run_id = run_id.to_owned();
        let calls = calls.to_owned();
        let paced = paced.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = Errors::new();
            loop {
                // Open loop: request n is due at start + n * interval, and the latency
                // counts from then.
                let (n, scheduled) = match (&paced, interval) {
                    (Some(due), Some(iv)) => {
                        let next = due.lock().await.recv().await;
                        match next {
                            Some(n) => (n, start + iv.mul_f64(n as f64)),
                            None => break,
                        }
                    }
                    _ => {
                        let n = issued.fetch_add(1, Ordering::Relaxed);
                        let now = Instant::now();
                        if n >= limit || now >= deadline {
                            break;
                        }
                        (n, now)
                    }
                };
                match one(&mut client, scenario, &run_id, &calls, seed, c, n).await {
                    Ok(()) => lat.push(scheduled.elapsed().as_micros() as u64),
                    Err(code) => *errors.entry(code_name(code)).or_default() += 1,
                }
            }
            (lat, errors, client.day)
        }));
    }
    let mut all = Vec::new();
    let mut errors = Errors::new();
    for (t, day) in tasks.into_iter().zip(days.iter_mut()) {
        if let Ok((mut l, e, d)) = t.await {
            all.append(&mut l);
            add_errors(&mut errors, e);
            *day = d;
        }
    }
    drop(dialer);
    (all, errors)
}

/// Open-loop pacing: hands out request numbers at their due times (`start + n *
/// interval`) from a thread of its own. tokio's timers fire on a millisecond wheel, so
/// tasks sleeping until their due time set off up to a millisecond late, and the
/// latency, counted from the due time, charged that to the server: the no-op baseline
/// measured a p50 of 1.2 ms at 5,000/s that way. A thread's sleep wakes within tens of
/// microseconds.
fn pace(
    start: Instant,
    interval: Duration,
    deadline: Instant,
    limit: u64,
) -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<u64>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            for n in 0..limit {
                let due = start + interval.mul_f64(n as f64);
                if due >= deadline {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send(n).is_err() {
                    break;
                }
            }
        })?;
    Ok(rx)
}

/// Stops a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A readable report line block: the figures, then the failures by status code.
pub fn render(r: &Report) -> String {
    let mut out = format!(
        "{:<10} {} loop, {} clients: {} ok, {} errors in {:.1} s = {:.0}/s; latency p50 {} us, p90 {} us, p99 {} us, max {} us\n",
        r.target,
        r.mode,
        r.clients,
        r.ok,
        r.errors,
        r.elapsed_secs,
        r.throughput_per_sec,
        r.latency.p50_us,
        r.latency.p90_us,
        r.latency.p99_us,
        r.latency.max_us
    );
    for (code, n) in &r.error_codes {
        out.push_str(&format!("{:<10}   {code}: {n}\n", ""));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    #[test]
    fn slow_flushes_are_counted_from_the_flush_histogram() {
        let text = "\
# TYPE holdless_store_flush_seconds histogram
holdless_store_flush_seconds_bucket{le=\"0.01\"} 900
holdless_store_flush_seconds_bucket{le=\"0.025\"} 990
holdless_store_flush_seconds_bucket{le=\"0.05\"} 996
holdless_store_flush_seconds_bucket{le=\"0.1\"} 999
holdless_store_flush_seconds_bucket{le=\"+Inf\"} 1000
holdless_store_flush_seconds_sum 3.5
holdless_store_flush_seconds_count 1000
holdless_store_sync_seconds_count 1000
";
        assert_eq!(
            StoreFlushes::from_exposition(text),
            Some(StoreFlushes {
                flushes: 1000,
                over_25ms: 10,
                over_50ms: 4,
                over_100ms: 1,
            })
        );
        let other = "holdless_rpc_requests_total{method=\"x\",code=\"OK\"} 5\n";
        assert_eq!(StoreFlushes::from_exposition(other), None);
    }

    #[tokio::test]
    async fn pacing_hands_out_each_number_in_order_never_before_it_is_due() {
        let start = Instant::now();
        let iv = Duration::from_millis(2);
        let mut due = pace(start, iv, start + Duration::from_secs(60), 20).unwrap();
        let mut got = Vec::new();
        while let Some(n) = due.recv().await {
            assert!(
                start.elapsed() >= iv * n as u32,
                "request {n} handed out early"
            );
            got.push(n);
        }
        assert_eq!(got, (0..20).collect::<Vec<u64>>());
    }

    #[tokio::test]
    async fn pacing_stops_at_the_deadline() {
        let start = Instant::now();
        let ms = Duration::from_millis(1);
        let mut due = pace(start, ms * 4, start + ms * 18, u64::MAX).unwrap();
        let mut got = Vec::new();
        while let Some(n) = due.recv().await {
            got.push(n);
        }
        // Due at 0, 4, 8, 12 and 16 ms; the next, at 20 ms, is past the deadline.
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    /// At every hour of the day the mixed scenario's callback numbers are valid and
    /// belong to a city where it is daytime, so the scheduler may dispatch them.
    #[test]
    fn daytime_callbacks_are_valid_numbers_in_daytime() {
        let plan = crate::routing::compile_toml(crate::service::EXAMPLE_PLAN, 1).unwrap();
        for hour in 0..24 {
            let now = chrono::Utc
                .with_ymd_and_hms(2026, 7, 1, hour, 30, 0)
                .unwrap();
            for n in [0, 1, 9_999_999, 12_345_678] {
                let req = daytime_callback_request(n, now);
                let phone = crate::domain::PhoneNumber::parse(&req.phone_number).unwrap();
                assert!(phone.is_valid(), "{}", req.phone_number);
                let zone = crate::routing::location::resolve_location(&plan, Some(&phone))
                    .time_zone
                    .expect("zone known");
                let local = now.with_timezone(&zone).hour();
                assert!(
                    (9..19).contains(&local),
                    "{} at {hour}:30 UTC",
                    req.phone_number
                );
            }
        }
    }
}
