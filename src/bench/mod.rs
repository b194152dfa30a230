//! `holdless bench`: a load generator for a running server (like redis-benchmark or
//! pgbench), with an optional no-op baseline measured in the same run.
//!
//! Two modes. Closed loop (default): `clients` tasks send as fast as replies come back,
//! which measures throughput at saturation. Open loop (`--rate R`): requests are
//! scheduled at a fixed rate and each latency is counted from its *scheduled* send
//! time, so a stall shows up in the percentiles instead of silently lowering the rate
//! (the correction wrk2 makes for coordinated omission).

pub mod baseline;

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
    pub elapsed_secs: f64,
    pub throughput_per_sec: f64,
    pub latency: Latency,
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
const CALLS_PER_CLIENT: u64 = 100;

fn route_request(run: &str, client: usize, n: u64) -> pb::RouteCallRequest {
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
    callbacks: pb::callback_service_client::CallbackServiceClient<Channel>,
}

async fn one(
    c: &mut Clients,
    scenario: Scenario,
    run: &str,
    seed: u64,
    client: usize,
    n: u64,
) -> bool {
    match scenario {
        Scenario::Route => c
            .routing
            .route_call(route_request(run, client, n))
            .await
            .is_ok(),
        Scenario::Callback => c
            .callbacks
            .request_callback(callback_request(seed, client, n))
            .await
            .is_ok(),
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
    errors: u64,
    elapsed_secs: f64,
}

impl Sample {
    fn add(&mut self, mut other: Sample) {
        self.latencies.append(&mut other.latencies);
        self.errors += other.errors;
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
            errors: self.errors,
            elapsed_secs: self.elapsed_secs,
            throughput_per_sec: ok as f64 / self.elapsed_secs.max(1e-9),
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
pub async fn compare(
    targets: &[(&str, &str)],
    opts: &BenchOptions,
    rounds: u32,
) -> Result<Vec<Report>, String> {
    let rounds = rounds.max(1);
    let mut conns = Vec::new();
    for (_, url) in targets {
        conns.push(connect(url, opts.connections).await?);
    }
    let per_round = BenchOptions {
        duration: opts.duration / rounds,
        requests: opts.requests.map(|r| r.div_ceil(u64::from(rounds))),
        ..opts.clone()
    };
    let mut samples: Vec<Sample> = targets.iter().map(|_| Sample::default()).collect();
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
                    &BenchOptions {
                        warmup: warm,
                        ..per_round.clone()
                    },
                )
                .await,
            );
        }
    }
    Ok(samples
        .into_iter()
        .zip(targets)
        .map(|(s, (name, _))| s.report(name, opts))
        .collect())
}

async fn measure(channels: &[Channel], opts: &BenchOptions) -> Sample {
    let run_id = ulid::Ulid::new().to_string();
    // Warm-up: same load, results discarded.
    if !opts.warmup.is_zero() {
        let warm = BenchOptions {
            duration: opts.warmup,
            requests: None,
            warmup: Duration::ZERO,
            ..opts.clone()
        };
        drive(channels, &format!("{run_id}w"), &warm).await;
    }
    let started = Instant::now();
    let (latencies, errors) = drive(channels, &run_id, opts).await;
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

/// Drives the load; returns successful latencies (µs) and the error count.
async fn drive(channels: &[Channel], run_id: &str, opts: &BenchOptions) -> (Vec<u64>, u64) {
    let start = Instant::now();
    let deadline = start + opts.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let limit = opts.requests.unwrap_or(u64::MAX);
    let interval = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    let mut tasks = Vec::with_capacity(opts.clients);
    for c in 0..opts.clients.max(1) {
        let ch = channels[c % channels.len()].clone();
        let mut client = Clients {
            routing: pb::routing_service_client::RoutingServiceClient::new(ch.clone()),
            callbacks: pb::callback_service_client::CallbackServiceClient::new(ch),
        };
        let scenario = opts.scenario;
        let seed = seed_of(run_id);
        let issued = issued.clone();
        let errors = errors.clone();
        let run_id = run_id.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                // Open loop: request n is due at start + n * interval.
                let scheduled = match interval {
                    Some(iv) => {
                        let due = start + iv.mul_f64(n as f64);
                        if due >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(due.into()).await;
                        due
                    }
                    None => {
                        let now = Instant::now();
                        if now >= deadline {
                            break;
                        }
                        now
                    }
                };
                if one(&mut client, scenario, &run_id, seed, c, n).await {
                    lat.push(scheduled.elapsed().as_micros() as u64);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(mut l) = t.await {
            all.append(&mut l);
        }
    }
    (all, errors.load(Ordering::Relaxed))
}

/// A readable report line block.
pub fn render(r: &Report) -> String {
    format!(
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
    )
}
