//! Prometheus exposition: `GET /metrics` on `metrics.listen`.
//!
//! The `metrics` facade records into one process-wide Prometheus recorder, installed
//! once (the facade has one global recorder; several `Application`s in one process, as
//! in the tests, share it, so counters are process totals). Live figures (queues,
//! agents, EWT and its error) are read from the floor at scrape time and set as gauges,
//! so they are never stale.
//!
//! Families (all prefixed `holdless_`):
//! - `rpc_requests_total{method,code}`, `rpc_duration_seconds{method,code}`: every gRPC
//!   call, by full method path and status code (from the response headers: streams
//!   count as OK when they start; a later stream error is not re-counted)
//! - `routing_decisions_total{rule,queue}` (`rule="default"` for the default route)
//! - `queue_waiting{queue}`, `queue_agents{queue,state}`, `queue_ewt_seconds{queue}`,
//!   `ewt_mean_absolute_error_seconds{queue}`
//! - `callback_transitions_total{state}`: callbacks entering each state (created ones
//!   as `pending`), `dispatch_outcomes_total{outcome}`
//! - `store_flush_seconds`: group-commit flush (`flush` + `fdatasync`) latency, and
//!   `store_sync_seconds`: its `fdatasync` alone (the disk's part: when the two track
//!   each other, a slow flush is the disk's doing)
//! - `plan_reloads_total{result}` (SIGHUP's plan step: `applied`, `unchanged`,
//!   `no_file`, `refused`, `failed`), `tls_reloads_total{result}` (`ok`, `failed`)
//! - `build_info{version}`: always 1, to join other series with the version running
//! - `dialers_connected`; per queue `queue_service_level_today`,
//!   `queue_service_level_target`, `queue_abandon_rate_today`,
//!   `queue_calls_today{outcome}` (the queue's local day) and
//!   `queue_callbacks{state}` (`pending`, `due`, `overdue`, `dispatched`), written at
//!   scrape time like the other live gauges
//! - `stats_watchers`: wallboard streams (`WatchQueueStats`) connected now;
//!   `stats_watchers_dropped_total`: watchers dropped for falling behind
//!
//! Counters with a fixed set of labels (transitions, outcomes, reloads) are exported
//! at 0 from start, so `rate()` and alerts see the series before the first event;
//! the per-method and per-rule ones appear with their first call. Also exported:
//! the standard `process_*` families (CPU seconds, resident and virtual memory, open
//! and maximum file descriptors, threads, start time) from `metrics-process`.
//!
//! The live gauges (queues, EWT, calls and callbacks held) are written at scrape time
//! from the floor of the serving `Application`, not through the recorder: a queue that
//! left the plan leaves the output, and a queue whose wait is unknown (nobody staffed)
//! has no `queue_ewt_seconds` series rather than a NaN that breaks averages and alerts.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::api::Ready;

/// Latency buckets in seconds: 50 us to 10 s. `holdless bench` counts slow store
/// flushes from the 25, 50 and 100 ms bounds (`bench::StoreFlushes`).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle; installs the recorder on first use. `None` if
/// another recorder was installed first (then nothing is exported).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder was already installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// How often recorded latency samples are folded into their histogram buckets.
///
/// The recorder keeps every sample until then (8 bytes each), and only a scrape or an
/// upkeep folds them: a server that nobody scrapes grew by 8 bytes per RPC (~1.4 GB an
/// hour at 50,000 RPC/s). `PrometheusBuilder::install` runs this upkeep every 5 s from
/// its own exporter; holdless serves `/metrics` itself, so it runs the upkeep itself.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Name of the thread that folds samples, one per process like the recorder.
pub const UPKEEP_THREAD: &str = "metrics-upkeep";

fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name(UPKEEP_THREAD.into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; latency samples are folded only when /metrics is scraped");
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "holdless_rpc_requests_total",
        "gRPC calls by method and status code"
    );
    describe_histogram!(
        "holdless_rpc_duration_seconds",
        Unit::Seconds,
        "gRPC call latency to response headers"
    );
    describe_counter!(
        "holdless_routing_decisions_total",
        "routing decisions by matching rule and queue"
    );
    describe_counter!(
        "holdless_callback_transitions_total",
        "callbacks entering each state"
    );
    describe_counter!(
        "holdless_dispatch_outcomes_total",
        "dialer outcomes of callback attempts"
    );
    describe_histogram!(
        "holdless_store_flush_seconds",
        Unit::Seconds,
        "group-commit flush latency"
    );
    describe_histogram!(
        "holdless_store_sync_seconds",
        Unit::Seconds,
        "fdatasync latency of a group-commit flush (the disk's part)"
    );
    describe_counter!(
        "holdless_plan_reloads_total",
        "SIGHUP plan reloads by result (applied, unchanged, no_file, refused, failed)"
    );
    describe_counter!(
        "holdless_tls_reloads_total",
        "SIGHUP TLS certificate reloads by result (ok, failed)"
    );
    describe_gauge!(
        "holdless_build_info",
        "always 1; the version label says which holdless is running"
    );
    metrics::gauge!("holdless_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    describe_gauge!(
        "holdless_stats_watchers",
        "wallboard streams (WatchQueueStats) connected now"
    );
    describe_counter!(
        "holdless_stats_watchers_dropped_total",
        "wallboard watchers dropped because they fell behind (their buffer was full)"
    );
    metrics::gauge!("holdless_stats_watchers").increment(0.0);
    metrics::counter!("holdless_stats_watchers_dropped_total").increment(0);
    for state in [
        "pending",
        "dispatched",
        "completed",
        "failed",
        "cancelled",
        "expired",
    ] {
        metrics::counter!("holdless_callback_transitions_total", "state" => state).increment(0);
    }
    for outcome in [
        "connected",
        "no_answer",
        "busy",
        "voicemail",
        "failed",
        "invalid_number",
    ] {
        metrics::counter!("holdless_dispatch_outcomes_total", "outcome" => outcome).increment(0);
    }
    for result in ["applied", "unchanged", "no_file", "refused", "failed"] {
        metrics::counter!("holdless_plan_reloads_total", "result" => result).increment(0);
    }
    for result in ["ok", "failed"] {
        metrics::counter!("holdless_tls_reloads_total", "result" => result).increment(0);
    }
    process_collector().describe();
}

/// The `process_*` collector, read at each scrape.
fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The live gauges of the serving instance, in the text format, appended to the
/// recorder's output at each scrape.
fn render_live(
    ready: &Ready,
    callbacks: &std::collections::HashMap<String, crate::service::CallbackCounts>,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let Some(holdless) = ready.get() else {
        return out;
    };
    let mut family = |name: &str, help: &str, rows: &[(String, f64)]| {
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    // What the process's memory grows with, next to its RSS.
    let (calls, in_line) = holdless.with_floor(|f| f.tracked());
    family(
        "holdless_live_calls",
        "calls the live floor remembers: waiting, answered, and recently finished",
        &[(String::new(), calls as f64)],
    );
    family(
        "holdless_callbacks_in_line",
        "due callbacks holding a place in a queue's line",
        &[(String::new(), in_line as f64)],
    );
    if let Some(open) = holdless.open_callbacks_in_memory() {
        family(
            "holdless_callbacks_open",
            "pending and dispatched callbacks the scheduler holds in memory",
            &[(String::new(), open as f64)],
        );
    }
    if let Some(from) = holdless.scheduler_started_from() {
        family(
            "holdless_callbacks_warm_started",
            "1 when this start read the open callbacks from the warm-start image of the last clean stop, 0 when it read the store",
            &[(
                String::new(),
                f64::from(u8::from(from == crate::scheduler::StartedFrom::Image)),
            )],
        );
    }
    if let Some(n) = holdless.dialers_connected() {
        family(
            "holdless_dialers_connected",
            "dialers holding a WatchDispatches stream",
            &[(String::new(), n as f64)],
        );
    }
    if let Ok(boards) = holdless.queue_boards(&[]) {
        let (mut sl, mut target, mut abandon, mut today, mut cbs) =
            (vec![], vec![], vec![], vec![], vec![]);
        for b in &boards {
            let q = escape_label(&b.queue_id);
            let label = format!("{{queue=\"{q}\"}}");
            // Unset while nothing counts towards it: no series, never NaN.
            if let Some(v) = b.service_level_today {
                sl.push((label.clone(), v));
            }
            target.push((label.clone(), b.service_level_target));
            if let Some(v) = b.abandon_rate_today {
                abandon.push((label.clone(), v));
            }
            for (outcome, n) in [
                ("offered", b.offered_today),
                ("answered", b.answered_today),
                ("abandoned", b.abandoned_today),
            ] {
                today.push((format!("{{queue=\"{q}\",outcome=\"{outcome}\"}}"), n as f64));
            }
            let c = callbacks.get(&b.queue_id).copied().unwrap_or_default();
            for (state, n) in [
                ("pending", c.pending),
                ("due", c.due),
                ("overdue", c.overdue),
                ("dispatched", c.dispatched),
            ] {
                cbs.push((format!("{{queue=\"{q}\",state=\"{state}\"}}"), f64::from(n)));
            }
        }
        family(
            "holdless_queue_service_level_today",
            "share answered within the queue's target today so far (its local day); absent until a call counts",
            &sl,
        );
        family(
            "holdless_queue_service_level_target",
            "the plan's service-level target of the queue, as a share",
            &target,
        );
        family(
            "holdless_queue_abandon_rate_today",
            "share of today's offered calls abandoned after 5 s; absent before the first",
            &abandon,
        );
        family(
            "holdless_queue_calls_today",
            "calls of the queue today so far (its local day), by outcome",
            &today,
        );
        family(
            "holdless_queue_callbacks",
            "open callbacks of the queue: pending (due of them due now, overdue of those due over 30 min and not held by the calling window) and dispatched",
            &cbs,
        );
    }
    let Ok(queues) = holdless.queue_stats(None) else {
        return out;
    };
    let (mut waiting, mut agents, mut ewt, mut mae) = (vec![], vec![], vec![], vec![]);
    for (queue, s) in queues {
        let q = escape_label(&queue);
        waiting.push((format!("{{queue=\"{q}\"}}"), f64::from(s.waiting)));
        for (state, n) in [
            ("available", s.agents.available),
            ("reserved", s.agents.reserved),
            ("busy", s.agents.busy),
            ("wrap_up", s.agents.wrap_up),
        ] {
            agents.push((format!("{{queue=\"{q}\",state=\"{state}\"}}"), f64::from(n)));
        }
        // Unknown (nobody staffed): no series, never NaN.
        if let Some(d) = s.estimated_wait {
            ewt.push((format!("{{queue=\"{q}\"}}"), d.as_secs_f64()));
        }
        if let Some(m) = s.ewt_mae {
            mae.push((format!("{{queue=\"{q}\"}}"), m.as_secs_f64()));
        }
    }
    family("holdless_queue_waiting", "calls waiting now", &waiting);
    family(
        "holdless_queue_agents",
        "agents able to serve the queue, by state",
        &agents,
    );
    family(
        "holdless_queue_ewt_seconds",
        "estimated wait for a call arriving now, in seconds; absent while unknown",
        &ewt,
    );
    family(
        "holdless_ewt_mean_absolute_error_seconds",
        "mean absolute error of the waits told against the waits had, in seconds",
        &mae,
    );
    out
}

/// A label value in the text format: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ready: Ready,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let handle = handle();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let ready = ready.clone();
            async move {
                process_collector().collect();
                let callbacks = match ready.get() {
                    Some(h) => {
                        h.refresh_today_now().await;
                        h.callback_counts_now().await
                    }
                    None => Default::default(),
                };
                let mut body = handle.map(|h| h.render()).unwrap_or_default();
                body.push_str(&render_live(&ready, &callbacks));
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Tower layer counting and timing every gRPC call.
#[derive(Debug, Clone, Copy, Default)]
pub struct RpcMetricsLayer;

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner }
    }
}

#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let handles = super::handles::rpc(req.uri().path());
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let code = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0),
                Err(_) => 2,
            };
            let (count, latency) = handles.for_code(code);
            count.increment(1);
            latency.record(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// The canonical name of a gRPC status code (the numbers are fixed by the protocol).
pub(crate) fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}
