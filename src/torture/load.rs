//! The torture's traffic against one server life: clients requesting callbacks, dialers
//! taking dispatches and reporting outcomes, agents reporting themselves available.
//! Every reply that matters goes into the [`Ledger`] the moment it arrives; requests and
//! reports that got no answer (the server died under them) are sent again, with the same
//! request id or attempt id, once the next server is up, as real clients would.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use super::check::{AckedOutcome, AckedRequest, Grant, Kind, Ledger, Problem, SentOutcome};
use crate::api::pb;
use crate::domain::callback::{CallbackState, DispatchOutcome};
use crate::sync::lock;

/// The queue of the torture plan.
pub const QUEUE: &str = "torture";
/// The skill its agents have.
pub const SKILL: &str = "support";
/// Pause before sending again after a transport error (server gone or not yet up).
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How often every agent is reported AVAILABLE again.
const AGENT_REPORT_EVERY: Duration = Duration::from_millis(200);
/// US area codes the numbers are drawn from (all allocated, none premium-rate).
const AREAS: &[u32] = &[212, 312, 415, 617, 713, 202, 305, 404];

/// Live problems kept (a broken server could produce one per reply).
const MAX_LIVE_PROBLEMS: usize = 1_000;

#[derive(Debug, Clone, Copy)]
pub struct LoadShape {
    pub clients: usize,
    pub dialers: usize,
    pub agents: usize,
    /// New callback requests per server life (retries come on top).
    pub callbacks_per_run: u64,
    /// New requests are spread over this long (the longest a server lives).
    pub spread: Duration,
}

/// Counters for the progress line and the summary.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests sent again after the server died under them.
    pub retried_requests: AtomicU64,
    /// Outcome reports sent again after the server died under them.
    pub retried_outcomes: AtomicU64,
    /// Requests refused with a definite error (not retried).
    pub refused: AtomicU64,
    /// Outcome reports answered NOT_FOUND or FAILED_PRECONDITION (attempt no longer live).
    pub stale_reports: AtomicU64,
}

/// The whole torture's traffic state, shared by every task of every run.
pub struct Workload {
    epoch: Instant,
    seed: u64,
    shape: LoadShape,
    ledger: Mutex<Ledger>,
    next_number: AtomicU64,
    /// Requests sent and not answered yet: request id -> number.
    unanswered_requests: Mutex<BTreeMap<String, String>>,
    /// Requests to send again in the next run.
    retry_requests: Mutex<Vec<(String, String)>>,
    /// Outcome reports sent and not answered yet: attempt id -> outcome.
    unanswered_outcomes: Mutex<BTreeMap<String, DispatchOutcome>>,
    retry_outcomes: Mutex<Vec<(String, DispatchOutcome)>>,
    /// Last agent event time handed out (ms since the epoch), so reports are ordered.
    agent_clock: AtomicI64,
    live_problems: Mutex<Vec<Problem>>,
    pub counters: Counters,
}

/// The tasks of one server life; all are stopped together when the server is killed.
#[derive(Default)]
pub struct Tasks {
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Tasks {
    pub fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        lock(&self.handles).push(tokio::spawn(f));
    }

    /// Aborts every task (and the tasks they started) and waits until all are gone.
    pub async fn stop(&self) {
        loop {
            let handles = std::mem::take(&mut *lock(&self.handles));
            if handles.is_empty() {
                return;
            }
            for h in &handles {
                h.abort();
            }
            for h in handles {
                let _ = h.await;
            }
        }
    }
}

/// A channel to `addr`, retried until it connects (the caller's task is aborted when
/// the run ends, so this cannot outlive the server).
async fn connect(addr: &str) -> Channel {
    loop {
        if let Ok(e) = Endpoint::from_shared(addr.to_owned()) {
            if let Ok(ch) = e
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
            {
                return ch;
            }
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// An allocated US number, different for every `n` below 64 million: an area code, an
/// exchange from 200 to 999 and four digits.
pub fn number(n: u64) -> String {
    let area = AREAS[((n / 8_000_000) % AREAS.len() as u64) as usize];
    let exchange = 200 + (n / 10_000) % 800;
    format!("+1{area}{exchange}{:04}", n % 10_000)
}

fn state_of(s: i32) -> Option<CallbackState> {
    match pb::CallbackState::try_from(s).ok()? {
        pb::CallbackState::Pending => Some(CallbackState::Pending),
        pb::CallbackState::Dispatched => Some(CallbackState::Dispatched),
        pb::CallbackState::Completed => Some(CallbackState::Completed),
        pb::CallbackState::Failed => Some(CallbackState::Failed),
        pb::CallbackState::Cancelled => Some(CallbackState::Cancelled),
        pb::CallbackState::Expired => Some(CallbackState::Expired),
        pb::CallbackState::Unspecified => None,
    }
}

pub fn state_from_pb(s: i32) -> Option<CallbackState> {
    state_of(s)
}

fn outcome_to_pb(o: DispatchOutcome) -> pb::DispatchOutcome {
    match o {
        DispatchOutcome::Connected => pb::DispatchOutcome::Connected,
        DispatchOutcome::NoAnswer => pb::DispatchOutcome::NoAnswer,
        DispatchOutcome::Busy => pb::DispatchOutcome::Busy,
        DispatchOutcome::Voicemail => pb::DispatchOutcome::Voicemail,
        DispatchOutcome::Failed => pb::DispatchOutcome::Failed,
        DispatchOutcome::InvalidNumber => pb::DispatchOutcome::InvalidNumber,
    }
}

/// What a dialer does with a dispatch.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// `None`: never report (the lease runs out and the attempt goes out again).
    outcome: Option<DispatchOutcome>,
    delay: Duration,
    report_twice: bool,
}

/// A dialer's choice: mostly prompt reports with a mix of outcomes; some late (around
/// the lease deadline, racing the re-dispatch), some sent twice, some never.
fn plan(rng: &mut fastrand::Rng) -> Plan {
    let outcome = match rng.u32(0..100) {
        0..8 => None,
        8..45 => Some(DispatchOutcome::Connected),
        45..70 => Some(DispatchOutcome::NoAnswer),
        70..80 => Some(DispatchOutcome::Busy),
        80..90 => Some(DispatchOutcome::Voicemail),
        90..95 => Some(DispatchOutcome::Failed),
        _ => Some(DispatchOutcome::InvalidNumber),
    };
    let delay = if rng.u32(0..100) < 10 {
        Duration::from_millis(rng.u64(900..=1500))
    } else {
        Duration::from_millis(rng.u64(0..=30))
    };
    Plan {
        outcome,
        delay,
        report_twice: rng.u32(0..100) < 5,
    }
}

impl Workload {
    pub fn new(seed: u64, shape: LoadShape, lease_ms: i64) -> Self {
        Self {
            epoch: Instant::now(),
            seed,
            shape,
            ledger: Mutex::new(Ledger {
                lease_ms,
                ..Default::default()
            }),
            next_number: AtomicU64::new(0),
            unanswered_requests: Mutex::default(),
            retry_requests: Mutex::default(),
            unanswered_outcomes: Mutex::default(),
            retry_outcomes: Mutex::default(),
            agent_clock: AtomicI64::new(0),
            live_problems: Mutex::default(),
            counters: Counters::default(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// A generator for one task of one run, derived from the torture's seed.
    fn rng(&self, run: u32, role: u64, index: usize) -> fastrand::Rng {
        let mix = (u64::from(run) << 32) ^ (role << 24) ^ index as u64;
        fastrand::Rng::with_seed(
            self.seed
                .wrapping_add(mix.wrapping_mul(0x9E37_79B9_7F4A_7C15))
                .rotate_left(17),
        )
    }

    pub fn ledger(&self) -> Ledger {
        lock(&self.ledger).clone()
    }

    /// (acknowledged requests, dispatches received, outcomes acknowledged) so far.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let l = lock(&self.ledger);
        (l.acked.len(), l.grants.len(), l.acked_outcomes.len())
    }

    pub fn live_problems(&self) -> Vec<Problem> {
        lock(&self.live_problems).clone()
    }

    fn problem(&self, kind: Kind, key: String, detail: String) {
        let mut p = lock(&self.live_problems);
        if p.len() < MAX_LIVE_PROBLEMS {
            p.push(Problem { kind, key, detail });
        }
    }

    /// Everything sent and not answered in the run that just ended is sent again in
    /// the next one.
    pub fn end_run(&self) {
        let requests = std::mem::take(&mut *lock(&self.unanswered_requests));
        lock(&self.retry_requests).extend(requests);
        let outcomes = std::mem::take(&mut *lock(&self.unanswered_outcomes));
        lock(&self.retry_outcomes).extend(outcomes);
    }

    /// Requests and reports still waiting for an answer.
    pub fn pending_retries(&self) -> (usize, usize) {
        (
            lock(&self.retry_requests).len(),
            lock(&self.retry_outcomes).len(),
        )
    }

    /// Starts one server life's traffic against `addr`.
    pub fn start(self: &Arc<Self>, addr: &str, run: u32, tasks: &Arc<Tasks>) {
        let budget = Arc::new(AtomicU64::new(self.shape.callbacks_per_run));
        for c in 0..self.shape.clients.max(1) {
            tasks.spawn(self.clone().client(addr.to_owned(), run, c, budget.clone()));
        }
        for d in 0..self.shape.dialers.max(1) {
            tasks.spawn(self.clone().dialer(addr.to_owned(), run, d, tasks.clone()));
        }
        tasks.spawn(self.clone().agents(addr.to_owned()));
        let outcomes = std::mem::take(&mut *lock(&self.retry_outcomes));
        if !outcomes.is_empty() {
            let w = self.clone();
            let addr = addr.to_owned();
            tasks.spawn(async move {
                let mut api =
                    pb::dispatch_service_client::DispatchServiceClient::new(connect(&addr).await);
                for (attempt, outcome) in outcomes {
                    w.counters.retried_outcomes.fetch_add(1, Ordering::Relaxed);
                    w.send_outcome(&mut api, attempt, outcome).await;
                }
            });
        }
    }

    /// Sends every request and report still unanswered until each has an answer (the
    /// server is up and stays up). Returns once nothing is left.
    pub async fn settle(self: &Arc<Self>, addr: &str) {
        let ch = connect(addr).await;
        let mut callbacks = pb::callback_service_client::CallbackServiceClient::new(ch.clone());
        let requests = std::mem::take(&mut *lock(&self.retry_requests));
        for (rid, phone) in requests {
            self.counters
                .retried_requests
                .fetch_add(1, Ordering::Relaxed);
            self.request(&mut callbacks, rid, phone).await;
        }
        let mut dispatch = pb::dispatch_service_client::DispatchServiceClient::new(ch);
        let outcomes = std::mem::take(&mut *lock(&self.retry_outcomes));
        for (attempt, outcome) in outcomes {
            self.counters
                .retried_outcomes
                .fetch_add(1, Ordering::Relaxed);
            self.send_outcome(&mut dispatch, attempt, outcome).await;
        }
    }

    /// A client: first what the last server never answered, then new requests spread
    /// over the run, each for a number never asked for before. Now and then a request
    /// is sent twice with the same request id (a client retrying after a timeout).
    async fn client(self: Arc<Self>, addr: String, run: u32, c: usize, budget: Arc<AtomicU64>) {
        let mut rng = self.rng(run, 1, c);
        let mut api = pb::callback_service_client::CallbackServiceClient::new(connect(&addr).await);
        let per_client = (self.shape.callbacks_per_run / self.shape.clients.max(1) as u64).max(1);
        let pace = self.shape.spread / u32::try_from(per_client).unwrap_or(u32::MAX);
        loop {
            let retry = lock(&self.retry_requests).pop();
            let (rid, phone) = match retry {
                Some(r) => {
                    self.counters
                        .retried_requests
                        .fetch_add(1, Ordering::Relaxed);
                    r
                }
                None => {
                    if budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                        .is_err()
                    {
                        return;
                    }
                    let n = self.next_number.fetch_add(1, Ordering::Relaxed);
                    // Uniform on [0, 2 x pace): the budget spreads over the whole window.
                    let jitter = pace.mul_f64(2.0 * rng.f64());
                    tokio::time::sleep(jitter).await;
                    (format!("torture-{n}"), number(n))
                }
            };
            let answered = self.request(&mut api, rid.clone(), phone.clone()).await;
            if answered && rng.u32(0..100) < 5 {
                self.request(&mut api, rid, phone).await;
            }
        }
    }

    /// Sends one request until it gets an answer; `true` when the answer was OK.
    async fn request(
        &self,
        api: &mut pb::callback_service_client::CallbackServiceClient<Channel>,
        rid: String,
        phone: String,
    ) -> bool {
        lock(&self.unanswered_requests).insert(rid.clone(), phone.clone());
        let req = pb::RequestCallbackRequest {
            request_id: rid.clone(),
            queue_id: QUEUE.into(),
            phone_number: phone.clone(),
            ..Default::default()
        };
        loop {
            match api.request_callback(req.clone()).await {
                Ok(r) => {
                    lock(&self.unanswered_requests).remove(&rid);
                    let r = r.into_inner();
                    match r.callback {
                        Some(cb) => lock(&self.ledger).acked.push(AckedRequest {
                            request_id: rid,
                            callback_id: cb.callback_id,
                            phone: cb.phone_number,
                            queue_id: cb.queue_id,
                        }),
                        None => self.problem(
                            Kind::Inconsistent,
                            format!("reply:{rid}"),
                            format!("RequestCallback {rid} answered OK without a callback"),
                        ),
                    }
                    return true;
                }
                Err(s) if definite(s.code()) => {
                    lock(&self.unanswered_requests).remove(&rid);
                    self.counters.refused.fetch_add(1, Ordering::Relaxed);
                    self.problem(
                        Kind::Inconsistent,
                        format!("refused:{rid}"),
                        format!(
                            "RequestCallback {rid} for {phone} was refused: {:?} {}",
                            s.code(),
                            s.message()
                        ),
                    );
                    return false;
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    }

    /// A dialer: takes dispatches and reports on them as [`plan`] says.
    async fn dialer(self: Arc<Self>, addr: String, run: u32, d: usize, tasks: Arc<Tasks>) {
        let id = format!("dialer-{d}");
        let mut rng = self.rng(run, 2, d);
        let ch = connect(&addr).await;
        let mut api = pb::dispatch_service_client::DispatchServiceClient::new(ch.clone());
        let mut stream = loop {
            match api
                .watch_dispatches(pb::WatchDispatchesRequest {
                    dialer_id: id.clone(),
                })
                .await
            {
                Ok(s) => break s.into_inner(),
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        };
        while let Ok(Some(msg)) = stream.message().await {
            let received_us = self.now_us();
            let until = msg
                .lease_deadline
                .as_ref()
                .and_then(crate::api::convert::instant);
            let (Some(cb), Some(until)) = (msg.callback.as_ref(), until) else {
                self.problem(
                    Kind::Inconsistent,
                    format!("reply:{}", msg.attempt_id),
                    format!(
                        "dispatch of attempt {} came without a callback or lease deadline",
                        msg.attempt_id
                    ),
                );
                continue;
            };
            lock(&self.ledger).grants.push(Grant {
                callback_id: cb.callback_id.clone(),
                attempt_id: msg.attempt_id.clone(),
                attempt_number: msg.attempt_number,
                dialer_id: id.clone(),
                lease_until: until,
                received_us,
            });
            let p = plan(&mut rng);
            let Some(outcome) = p.outcome else {
                continue;
            };
            let w = self.clone();
            let ch = ch.clone();
            let attempt = msg.attempt_id.clone();
            let agent = msg.agent_id.clone();
            tasks.spawn(async move {
                tokio::time::sleep(p.delay).await;
                let mut api = pb::dispatch_service_client::DispatchServiceClient::new(ch.clone());
                w.send_outcome(&mut api, attempt.clone(), outcome).await;
                if p.report_twice {
                    w.send_outcome(&mut api, attempt, outcome).await;
                }
                // The call ends: the agent is free again.
                if outcome == DispatchOutcome::Connected && !agent.is_empty() {
                    let mut routing = pb::routing_service_client::RoutingServiceClient::new(ch);
                    let _ = routing.report_agent_state(w.agent_report(&agent)).await;
                }
            });
        }
    }

    /// Reports one outcome until it gets an answer.
    async fn send_outcome(
        &self,
        api: &mut pb::dispatch_service_client::DispatchServiceClient<Channel>,
        attempt: String,
        outcome: DispatchOutcome,
    ) {
        lock(&self.unanswered_outcomes).insert(attempt.clone(), outcome);
        lock(&self.ledger).sent_outcomes.push(SentOutcome {
            attempt_id: attempt.clone(),
            sent_us: self.now_us(),
        });
        let req = pb::ReportDispatchOutcomeRequest {
            attempt_id: attempt.clone(),
            outcome: outcome_to_pb(outcome) as i32,
        };
        loop {
            match api.report_dispatch_outcome(req.clone()).await {
                Ok(r) => {
                    lock(&self.unanswered_outcomes).remove(&attempt);
                    let r = r.into_inner();
                    let state = r.callback.as_ref().and_then(|c| state_of(c.state));
                    match (r.callback, state) {
                        (Some(cb), Some(state)) => {
                            lock(&self.ledger).acked_outcomes.push(AckedOutcome {
                                callback_id: cb.callback_id,
                                attempt_id: attempt,
                                outcome,
                                duplicate: r.duplicate,
                                state,
                                attempts: cb.attempts,
                            })
                        }
                        _ => self.problem(
                            Kind::Inconsistent,
                            format!("reply:{attempt}"),
                            format!(
                                "outcome of attempt {attempt} answered OK without a callback state"
                            ),
                        ),
                    }
                    return;
                }
                // The attempt is not live (its outcome was recorded by a server that
                // died before answering, or another report settled it): harmless.
                Err(s) if matches!(s.code(), Code::NotFound | Code::FailedPrecondition) => {
                    lock(&self.unanswered_outcomes).remove(&attempt);
                    self.counters.stale_reports.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(s) if definite(s.code()) => {
                    lock(&self.unanswered_outcomes).remove(&attempt);
                    self.problem(
                        Kind::Inconsistent,
                        format!("refused:{attempt}"),
                        format!(
                            "outcome of attempt {attempt} was refused: {:?} {}",
                            s.code(),
                            s.message()
                        ),
                    );
                    return;
                }
                Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
    }

    fn agent_report(&self, agent: &str) -> pb::ReportAgentStateRequest {
        // Strictly increasing event times: the server ignores a report not newer than
        // the last one applied for the agent.
        let now = chrono::Utc::now().timestamp_millis();
        let prev = self
            .agent_clock
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(now);
        let ms = now.max(prev + 1);
        pb::ReportAgentStateRequest {
            agent_id: agent.to_owned(),
            skills: [(SKILL.to_owned(), 1)].into_iter().collect(),
            state: pb::AgentState::Available as i32,
            event_time: Some(prost_types::Timestamp {
                seconds: ms.div_euclid(1000),
                nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
            }),
        }
    }

    /// The agents: every one AVAILABLE at start and again every
    /// [`AGENT_REPORT_EVERY`] (a held agent stays held; a busy one becomes free).
    async fn agents(self: Arc<Self>, addr: String) {
        let mut api = pb::routing_service_client::RoutingServiceClient::new(connect(&addr).await);
        loop {
            for a in 0..self.shape.agents.max(1) {
                let _ = api
                    .report_agent_state(self.agent_report(&format!("agent-{a}")))
                    .await;
            }
            tokio::time::sleep(AGENT_REPORT_EVERY).await;
        }
    }
}

/// Errors that are an answer (sending again would get the same), as opposed to a
/// server that is gone, starting, stopping or shedding load.
fn definite(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::FailedPrecondition
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Unauthenticated
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_distinct_valid_and_allocated() {
        let mut seen = std::collections::HashSet::new();
        for n in (0..200_000).chain(63_990_000..64_000_000) {
            let s = number(n);
            assert!(seen.insert(s.clone()), "{s} twice");
            if n % 9_973 == 0 {
                let p = crate::domain::PhoneNumber::parse(&s).expect("parses");
                assert!(p.is_valid() && !p.is_premium_rate(), "{s}");
            }
        }
    }

    #[test]
    fn agent_event_times_strictly_increase() {
        let w = Workload::new(
            1,
            LoadShape {
                clients: 1,
                dialers: 1,
                agents: 1,
                callbacks_per_run: 1,
                spread: Duration::from_millis(1),
            },
            1000,
        );
        let mut last = (i64::MIN, i32::MIN);
        for _ in 0..1000 {
            let t = w.agent_report("a").event_time.expect("set");
            assert!((t.seconds, t.nanos) > last);
            last = (t.seconds, t.nanos);
        }
    }
}
