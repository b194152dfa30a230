//! The day simulator: a contact-center day played through the real floor, callback
//! offer rule, callback state machine, calling windows and KPI counting, on a virtual
//! clock, as fast as the CPU allows (`holdless simulate-day`, `SimulateDay`).
//!
//! An event-driven simulation: a binary heap of events (arrival, abandon, end of work,
//! end of a dial, callback due, interval tick) ordered by virtual time, then by the
//! order they were scheduled, so one seed gives one day exactly. Each event is applied
//! to [`Floor`] as the platform would report it, and the scheduler's side of matching
//! is played as [`crate::scheduler`] plays it (take each match, then dispatch it or
//! park it while the customer's calling window is closed).
//!
//! What is modelled, and the choices made where a real day has more detail:
//! - **Arrivals** name their queue, as the KPIs count them. A recorded call that kept
//!   its routing facts is decided again by [`crate::routing::decide`] under the plan
//!   being simulated (its priority and callback-offer override, and its queue when
//!   that queue is simulated too); a synthetic call has priority 0 and the queue's own
//!   offer policy.
//! - **Agents** of a queue have exactly its skills and serve only it. A staffing drop
//!   logs idle agents off at once and busy ones when they finish; there is no wrap-up.
//! - **Callers** hang up when their patience runs out while waiting. A caller offered
//!   a callback (the floor's estimated wait above the offer threshold, per
//!   [`crate::routing::offer::callback_offer`]) accepts with the given probability and
//!   leaves the line keeping their place.
//! - **Callbacks** are dialed agent-first (an agent is held, then the customer rung
//!   for `ring_secs`); the customer answers with the given probability; unanswered
//!   attempts are retried after the queue's backoff up to its attempts, and a
//!   connected callback takes the caller's own handle time. Customer-first queues are
//!   dialed agent-first too (the simulator keeps one protocol).
//! - **Close**: arrivals stop at the end of the day; callers still waiting are served
//!   or hang up (agents stay until then); callbacks not connected by then are
//!   reported as still pending at close (dialing stops).
//! - **KPIs** are counted by [`crate::metrics::kpi`]'s contact and callback deltas,
//!   the same code the store runs for a live day, with the short-abandon threshold
//!   given (the live server's is [`crate::metrics::kpi::ABANDON_GRACE_SECS`]).
//! - **Occupancy** = agent time spent talking or held for a callback dial / time
//!   logged in, per 15-minute interval (busy time counted in the interval it ends).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;

use crate::domain::agent::{AgentState, Skills};
use crate::domain::callback::{Callback, CallbackKind, CallbackState, DispatchOutcome};
use crate::domain::contact::ContactRecord;
use crate::domain::Call;
use crate::live::{CallEvent, EventOutcome, Floor, LiveConfig, RoutedCall};
use crate::metrics::kpi::{callback_delta, contact_delta_with_grace, KpiCounters, BUCKET_SECS};
use crate::routing::offer::callback_offer;
use crate::routing::plan::{OfferCallback, Queue};
use crate::routing::CompiledPlan;
use crate::scheduler::policy;
use crate::service::queue_info;

pub mod dist;
pub mod recorded;
pub mod report;
pub mod scenario;
#[cfg(test)]
mod tests;

pub use dist::Dist;

/// Length of a simulated interval (the KPI store's).
pub const INTERVAL_MS: i64 = BUCKET_SECS * 1000;
/// How long an agent is held for a callback while the customer's phone rings.
pub const DEFAULT_RING_SECS: f64 = 20.0;

/// Everything a simulated day is made of.
#[derive(Debug, Clone)]
pub struct DayInput {
    pub plan: Arc<CompiledPlan>,
    /// Start of the first interval.
    pub start: DateTime<Utc>,
    /// Number of 15-minute intervals in the day.
    pub intervals: usize,
    pub queues: Vec<QueueLoad>,
    pub callbacks: CallbackParams,
    /// An abandon counts against the abandonment rate only after this wait.
    pub short_abandon_secs: f64,
    /// Staffing as recorded: each recorded call answered in the recorded day is
    /// answered after the same wait, by an agent of its own who comes free then, and
    /// `QueueLoad::agents` is ignored. A recorded day replayed so, unchanged, counts
    /// what the live server counted.
    pub as_recorded: bool,
}

/// The load and staffing of one queue of the plan.
#[derive(Debug, Clone)]
pub struct QueueLoad {
    pub queue: String,
    pub arrivals: Arrivals,
    pub handle: Dist,
    pub patience: Dist,
    /// Agents logged in per interval; the last value holds for later intervals.
    pub agents: Vec<u32>,
}

#[derive(Debug, Clone)]
pub enum Arrivals {
    /// Expected calls per interval (a Poisson process, rate constant within each).
    Poisson(Vec<f64>),
    /// Calls of a recorded day, in arrival order.
    Recorded(Vec<RecordedCall>),
}

/// A call of a recorded day.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// Since the start of the day.
    pub offset_ms: i64,
    /// How long the agent talked (`None`: drawn from the queue's handle distribution).
    pub handle_ms: Option<i64>,
    /// How long the caller would wait (`None`: drawn from the queue's patience).
    pub patience_ms: Option<i64>,
    /// How long the call waited before it was answered, when it was.
    pub answered_after_ms: Option<i64>,
    /// The call as it was routed, to be decided again under the simulated plan.
    pub call: Option<Box<Call>>,
}

/// The callback parameters a plan does not hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallbackParams {
    /// Offer when the estimated wait exceeds this (default: each queue's policy).
    pub offer_after_ewt_secs: Option<u32>,
    /// Share of offered callers who accept.
    pub acceptance: f64,
    /// Share of dial attempts the customer answers.
    pub answer_rate: f64,
    pub ring_secs: f64,
    /// The customers' time zone for calling windows (default: the queue's business
    /// hours zone, else UTC).
    pub customer_tz: Option<Tz>,
}

impl Default for CallbackParams {
    fn default() -> Self {
        Self {
            offer_after_ewt_secs: None,
            acceptance: 0.5,
            answer_rate: 0.8,
            ring_secs: DEFAULT_RING_SECS,
            customer_tz: None,
        }
    }
}

/// What one interval of one queue saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IntervalCounts {
    /// The product's KPI counters (calls by enqueue interval, callbacks by request).
    pub kpi: KpiCounters,
    /// Waits of abandoned calls (for the mean wait of all callers, Erlang A's).
    pub abandon_wait_ms: u64,
    pub busy_ms: u64,
    pub staffed_ms: u64,
    /// Calls waiting and callbacks open at the start of the interval.
    pub waiting_at_start: u32,
    pub callbacks_open_at_start: u32,
}

impl IntervalCounts {
    pub fn add(&mut self, o: &IntervalCounts) {
        self.kpi.add(&o.kpi);
        self.abandon_wait_ms += o.abandon_wait_ms;
        self.busy_ms += o.busy_ms;
        self.staffed_ms += o.staffed_ms;
        self.waiting_at_start += o.waiting_at_start;
        self.callbacks_open_at_start += o.callbacks_open_at_start;
    }
}

/// One simulated day: per queue (in input order), per interval.
#[derive(Debug, Clone, PartialEq)]
pub struct DayCounts {
    pub queues: Vec<String>,
    pub intervals: Vec<Vec<IntervalCounts>>,
    /// Callbacks still open when the day closed, per queue.
    pub callbacks_open_at_close: Vec<u32>,
    /// Events applied (for the speed figure).
    pub events: u64,
}

/// Why a day cannot be simulated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> InputError {
    InputError {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks an input: every queue in the plan, distributions and rates sensible.
pub fn check(input: &DayInput) -> Result<(), InputError> {
    if input.intervals == 0 {
        return Err(bad("hours", "the day must last at least one interval"));
    }
    if input.queues.is_empty() {
        return Err(bad("queue", "no queue to simulate"));
    }
    for (i, q) in input.queues.iter().enumerate() {
        if input.plan.queue(&q.queue).is_none() {
            return Err(bad(
                format!("queues[{i}].queue"),
                format!("queue '{}' is not in the plan", q.queue),
            ));
        }
        q.handle
            .check()
            .map_err(|m| bad(format!("queues[{i}].handle"), m))?;
        if q.handle == Dist::Infinite {
            return Err(bad(format!("queues[{i}].handle"), "handle time must end"));
        }
        q.patience
            .check()
            .map_err(|m| bad(format!("queues[{i}].patience"), m))?;
        if let Arrivals::Poisson(rates) = &q.arrivals {
            if rates.iter().any(|r| !(r.is_finite() && *r >= 0.0)) {
                return Err(bad(
                    format!("queues[{i}].arrivals"),
                    "calls per interval must be finite and not negative",
                ));
            }
        }
    }
    let p = &input.callbacks;
    for (name, v) in [
        ("acceptance_rate", p.acceptance),
        ("answer_rate", p.answer_rate),
    ] {
        if !(0.0..=1.0).contains(&v) {
            return Err(bad(name, format!("{v} is not a share between 0 and 1")));
        }
    }
    if !(p.ring_secs.is_finite() && p.ring_secs >= 0.0) {
        return Err(bad("ring_secs", "must be a duration"));
    }
    if !(input.short_abandon_secs.is_finite() && input.short_abandon_secs >= 0.0) {
        return Err(bad("short_abandon_secs", "must be a duration"));
    }
    Ok(())
}

/// Simulates the day with seed `seed`, with or without callbacks. The arrivals, handle
/// times and patience of each queue come from their own seeded stream, so both runs of
/// a seed see the same callers.
pub fn run(input: &DayInput, seed: u64, with_callbacks: bool) -> Result<DayCounts, InputError> {
    check(input)?;
    let mut sim = Sim::new(input, seed, with_callbacks);
    sim.play();
    Ok(sim.finish())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Tick(usize),
    Arrival(usize),
    Abandon(usize),
    WorkEnd(usize),
    DialEnd(usize),
    CallbackDue(usize),
    AgentIn(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    Idle,
    Call(usize),
    Dialing(usize),
    Callback(usize),
}

struct Agent {
    id: String,
    queue: usize,
    last_report: DateTime<Utc>,
    logged_in: bool,
    leaving: bool,
    work: Work,
    work_since: i64,
    /// When the agent last finished a piece of work.
    last_end_ms: i64,
    /// A recorded call's own agent (as-recorded staffing): gone after that call.
    private: bool,
}

struct SimCall {
    queue: usize,
    handle_ms: i64,
    waiting: bool,
    answered: Option<ContactRecord>,
}

struct SimCallback {
    cb: Callback,
    queue: usize,
    handle_ms: i64,
    agent: Option<usize>,
}

struct SimQueue {
    plan_queue: Queue,
    target_secs: f64,
    tz: Tz,
    agents: Vec<usize>,
    arrivals_rng: fastrand::Rng,
    next_recorded: usize,
}

struct Sim<'a> {
    input: &'a DayInput,
    with_callbacks: bool,
    floor: Floor,
    heap: BinaryHeap<Reverse<(i64, u64, Ev)>>,
    seq: u64,
    now_ms: i64,
    closed: bool,
    rng: fastrand::Rng,
    queues: Vec<SimQueue>,
    agents: Vec<Agent>,
    agent_by_id: HashMap<String, usize>,
    calls: Vec<SimCall>,
    callbacks: Vec<SimCallback>,
    counts: Vec<Vec<IntervalCounts>>,
    events: u64,
}

fn index(id: &str, prefix: char) -> Option<usize> {
    id.strip_prefix(prefix)?.parse().ok()
}

impl<'a> Sim<'a> {
    fn new(input: &'a DayInput, seed: u64, with_callbacks: bool) -> Self {
        let queues = input
            .queues
            .iter()
            .enumerate()
            .map(|(i, load)| {
                let mut q = input
                    .plan
                    .queue(&load.queue)
                    .expect("checked: every queue is in the plan")
                    .clone();
                q.callback.enabled = with_callbacks;
                if let Some(t) = input.callbacks.offer_after_ewt_secs {
                    q.callback.offer_after_ewt_secs = t;
                }
                let tz = input.callbacks.customer_tz.unwrap_or_else(|| {
                    q.business_hours.as_ref().map_or(Tz::UTC, |h| h.time_zone())
                });
                SimQueue {
                    target_secs: f64::from(q.service_level_secs),
                    plan_queue: q,
                    tz,
                    agents: Vec::new(),
                    arrivals_rng: fastrand::Rng::with_seed(
                        seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                            .wrapping_add(i as u64 + 1),
                    ),
                    next_recorded: 0,
                }
            })
            .collect();
        let mut floor = Floor::new(LiveConfig {
            // Nothing is forgotten or dropped while the day runs.
            stale_call_after: Duration::days(3650),
            ..LiveConfig::default()
        });
        let start = input.start;
        floor.set_dispatching(with_callbacks, start);
        Self {
            input,
            with_callbacks,
            floor,
            heap: BinaryHeap::new(),
            seq: 0,
            now_ms: 0,
            closed: false,
            rng: fastrand::Rng::with_seed(seed ^ 0x5EED_CA11_BAC6),
            queues,
            agents: Vec::new(),
            agent_by_id: HashMap::new(),
            calls: Vec::new(),
            callbacks: Vec::new(),
            counts: vec![vec![IntervalCounts::default(); input.intervals]; input.queues.len()],
            events: 0,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        self.input.start + Duration::milliseconds(self.now_ms)
    }

    fn interval_of(&self, t: DateTime<Utc>) -> usize {
        let ms = (t - self.input.start).num_milliseconds().max(0);
        ((ms / INTERVAL_MS) as usize).min(self.input.intervals - 1)
    }

    fn at(&mut self, ms: i64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((ms, self.seq, ev)));
    }

    fn play(&mut self) {
        for i in 0..=self.input.intervals {
            self.at(i as i64 * INTERVAL_MS, Ev::Tick(i));
        }
        for q in 0..self.queues.len() {
            self.schedule_arrival(q, 0);
        }
        while let Some(Reverse((ms, _, ev))) = self.heap.pop() {
            self.now_ms = ms;
            self.events += 1;
            match ev {
                Ev::Tick(i) => self.tick(i),
                Ev::Arrival(q) => self.arrival(q),
                Ev::Abandon(c) => self.abandon(c),
                Ev::WorkEnd(a) => self.work_end(a),
                Ev::DialEnd(b) => self.dial_end(b),
                Ev::CallbackDue(b) => self.callback_due(b),
                Ev::AgentIn(a) => self.report(a, AgentState::Available),
            }
            self.play_scheduler();
        }
    }

    fn finish(mut self) -> DayCounts {
        // Agents stayed after close until the last caller was served: that time is
        // staffed time of the last interval.
        let close = self.input.intervals as i64 * INTERVAL_MS;
        let last = self.input.intervals - 1;
        for a in &self.agents {
            if a.logged_in && a.last_end_ms > close {
                self.counts[a.queue][last].staffed_ms += (a.last_end_ms - close) as u64;
            }
        }
        let mut open = vec![0u32; self.queues.len()];
        for b in &self.callbacks {
            if b.cb.state.is_open() {
                open[b.queue] += 1;
            }
        }
        DayCounts {
            queues: self.input.queues.iter().map(|q| q.queue.clone()).collect(),
            intervals: self.counts,
            callbacks_open_at_close: open,
            events: self.events,
        }
    }

    /// Schedules queue `q`'s next arrival after `from_ms`.
    fn schedule_arrival(&mut self, q: usize, from_ms: i64) {
        let day_ms = self.input.intervals as i64 * INTERVAL_MS;
        let next = match &self.input.queues[q].arrivals {
            Arrivals::Poisson(rates) => {
                // A piecewise-constant rate: spend one unit-exponential of "expected
                // calls" across the intervals.
                let mut need = dist::exp1(&mut self.queues[q].arrivals_rng);
                let mut t = from_ms;
                loop {
                    if t >= day_ms {
                        break None;
                    }
                    let i = (t / INTERVAL_MS) as usize;
                    let end = (i as i64 + 1) * INTERVAL_MS;
                    let rate = rates.get(i).copied().unwrap_or(0.0) / INTERVAL_MS as f64;
                    let mass = rate * (end - t) as f64;
                    if mass >= need {
                        break Some(t + (need / rate).ceil() as i64);
                    }
                    need -= mass;
                    t = end;
                }
            }
            Arrivals::Recorded(calls) => calls
                .get(self.queues[q].next_recorded)
                .map(|c| c.offset_ms.max(from_ms)),
        };
        if let Some(t) = next.filter(|&t| t < day_ms) {
            self.at(t, Ev::Arrival(q));
        }
    }

    fn tick(&mut self, i: usize) {
        let now = self.now();
        if i == self.input.intervals {
            // Close: dialing stops; those still waiting are served by the agents on.
            self.closed = true;
            self.floor.set_dispatching(false, now);
            return;
        }
        for q in 0..self.queues.len() {
            let load = &self.input.queues[q];
            let want = load
                .agents
                .get(i)
                .or(load.agents.last())
                .copied()
                .unwrap_or(0) as usize;
            self.staff(q, want);
            let logged = self.queues[q]
                .agents
                .iter()
                .filter(|&&a| self.agents[a].logged_in && !self.agents[a].leaving)
                .count();
            let c = &mut self.counts[q][i];
            c.staffed_ms += logged as u64 * INTERVAL_MS as u64;
            c.waiting_at_start = self
                .floor
                .snapshot(queue_info(&self.queues[q].plan_queue), now)
                .waiting;
        }
        for b in &self.callbacks {
            if b.cb.state.is_open() {
                self.counts[b.queue][i].callbacks_open_at_start += 1;
            }
        }
        self.floor.sweep(now);
    }

    /// Brings queue `q` to `want` agents logged in.
    fn staff(&mut self, q: usize, want: usize) {
        let on: Vec<usize> = self.queues[q]
            .agents
            .iter()
            .copied()
            .filter(|&a| self.agents[a].logged_in && !self.agents[a].leaving)
            .collect();
        if on.len() < want {
            let mut need = want - on.len();
            // Agents about to leave stay instead; then those logged off come back;
            // then new ones.
            for a in self.queues[q].agents.clone() {
                if need == 0 {
                    break;
                }
                if self.agents[a].leaving {
                    self.agents[a].leaving = false;
                    need -= 1;
                }
            }
            for a in self.queues[q].agents.clone() {
                if need == 0 {
                    break;
                }
                if !self.agents[a].logged_in {
                    self.report(a, AgentState::Available);
                    need -= 1;
                }
            }
            for _ in 0..need {
                let a = self.new_agent(q);
                self.queues[q].agents.push(a);
                self.report(a, AgentState::Available);
            }
        } else {
            // Idle agents leave first; busy ones when they finish.
            let mut extra = on.len() - want;
            let (idle, busy): (Vec<usize>, Vec<usize>) = on
                .into_iter()
                .partition(|&a| self.agents[a].work == Work::Idle);
            for a in idle.into_iter().rev().chain(busy) {
                if extra == 0 {
                    break;
                }
                if self.agents[a].work == Work::Idle {
                    self.report(a, AgentState::Offline);
                } else {
                    self.agents[a].leaving = true;
                }
                extra -= 1;
            }
        }
    }

    /// A new agent with queue `q`'s skills, logged off.
    fn new_agent(&mut self, q: usize) -> usize {
        let a = self.agents.len();
        let id = format!("a{a}");
        self.agent_by_id.insert(id.clone(), a);
        self.agents.push(Agent {
            id,
            queue: q,
            last_report: self.input.start - Duration::seconds(1),
            logged_in: false,
            leaving: false,
            work: Work::Idle,
            work_since: 0,
            last_end_ms: 0,
            private: false,
        });
        a
    }

    /// Reports an agent's state to the floor as the platform would, then gives a freed
    /// agent the call the floor held them for.
    fn report(&mut self, a: usize, state: AgentState) {
        let now = self.now();
        let agent = &mut self.agents[a];
        // Reports of one agent must be strictly newer than the last.
        let at = now.max(agent.last_report + Duration::microseconds(1));
        agent.last_report = at;
        agent.logged_in = state != AgentState::Offline;
        agent.leaving = false;
        let skills: Skills = self.queues[agent.queue]
            .plan_queue
            .skills
            .iter()
            .map(|s| (s.clone(), 1))
            .collect();
        self.floor.report_agent(&agent.id, skills, state, at, now);
        if state == AgentState::Available {
            self.take_held(a);
        }
    }

    /// Answers the call the floor holds agent `a` for, if it holds them for a call.
    fn take_held(&mut self, a: usize) {
        if self.agents[a].work != Work::Idle {
            return;
        }
        let Some(c) = self
            .floor
            .hold_of(&self.agents[a].id)
            .and_then(|id| index(id, 'c'))
        else {
            return;
        };
        self.answer(c, a);
    }

    fn arrival(&mut self, q: usize) {
        let now = self.now();
        let load = &self.input.queues[q];
        let sq = &mut self.queues[q];
        let (handle_ms, patience_ms, call, answered_after) = match &load.arrivals {
            Arrivals::Poisson(_) => {
                let h = load.handle.sample_ms(&mut sq.arrivals_rng).unwrap_or(0);
                (h, load.patience.sample_ms(&mut sq.arrivals_rng), None, None)
            }
            Arrivals::Recorded(calls) => {
                let r = &calls[sq.next_recorded];
                sq.next_recorded += 1;
                let h = load.handle.sample_ms(&mut sq.arrivals_rng).unwrap_or(0);
                let p = load.patience.sample_ms(&mut sq.arrivals_rng);
                (
                    r.handle_ms.unwrap_or(h),
                    r.patience_ms.or(p),
                    r.call.as_deref(),
                    r.answered_after_ms,
                )
            }
        };
        // A recorded call is decided again under the simulated plan.
        let (mut target, mut priority, mut offer_rule) = (q, 0, OfferCallback::Auto);
        if let Some(call) = call {
            let d = crate::routing::decide(&self.input.plan, call, None, now);
            if let Some(i) = self.input.queues.iter().position(|l| l.queue == d.queue_id) {
                target = i;
            }
            priority = d.priority;
            offer_rule = d.offer_callback;
        }
        self.schedule_arrival(q, self.now_ms);

        // As recorded: the call waits for an agent of its own (a preferred agent, busy
        // until the recorded answer), so nobody else takes it and it takes nobody's.
        let mut own = None;
        if self.input.as_recorded {
            let a = self.new_agent(target);
            self.agents[a].private = true;
            self.report(a, AgentState::Busy);
            let hold = answered_after.or(patience_ms).unwrap_or(0);
            own = Some((a, (hold / 1000 + 2) as u32));
            if let Some(w) = answered_after {
                self.at(self.now_ms + w, Ev::AgentIn(a));
            }
        }
        let c = self.calls.len();
        let id = format!("c{c}");
        self.calls.push(SimCall {
            queue: target,
            handle_ms,
            waiting: true,
            answered: None,
        });
        let queue = &self.queues[target].plan_queue;
        let (placement, _) = self.floor.route_call(
            RoutedCall {
                call_id: &id,
                caller: None,
                customer_id: None,
                priority,
                extra_skills: &[],
                preferred_agent: own.map(|(a, _)| self.agents[a].id.as_str()),
                preferred_wait_secs: own.map_or(0, |(_, w)| w),
            },
            queue_info(queue),
            now,
            || None,
        );
        let offer = callback_offer(
            queue,
            offer_rule,
            queue.is_open(now),
            placement.queue_full,
            placement.reserved_agent.is_some(),
            placement.estimated_wait,
        );
        if let Some(agent) = placement.reserved_agent {
            if let Some(&a) = self.agent_by_id.get(&agent) {
                self.answer(c, a);
            }
            return;
        }
        if offer.is_some() {
            let i = self.interval_of(now);
            self.counts[target][i].kpi.cb_offered += 1;
            if self.rng.f64() < self.input.callbacks.acceptance {
                let ewt = placement.estimated_wait.map(|w| w.as_secs_f64());
                self.accept(c, ewt);
                return;
            }
        }
        if let Some(p) = patience_ms {
            self.at(self.now_ms + p, Ev::Abandon(c));
        }
    }

    /// Connects waiting call `c` to agent `a`.
    fn answer(&mut self, c: usize, a: usize) {
        let now = self.now();
        let id = format!("c{c}");
        let agent = self.agents[a].id.clone();
        let Ok(EventOutcome::Applied(Some(rec))) =
            self.floor
                .call_event(&id, CallEvent::Answered { agent }, |_| None, now)
        else {
            return;
        };
        self.count_contact(None, &rec);
        let call = &mut self.calls[c];
        call.waiting = false;
        call.answered = Some(rec);
        let end = self.now_ms + call.handle_ms;
        let agent = &mut self.agents[a];
        agent.work = Work::Call(c);
        agent.work_since = self.now_ms;
        self.at(end, Ev::WorkEnd(a));
    }

    fn count_contact(&mut self, old: Option<&ContactRecord>, rec: &ContactRecord) {
        let q = self.calls[index(&rec.call_id, 'c').unwrap_or(0)].queue;
        let target = self.queues[q].target_secs;
        let d = contact_delta_with_grace(old, rec, target, self.input.short_abandon_secs);
        let i = self.interval_of(rec.enqueued_at);
        let c = &mut self.counts[q][i];
        if d.abandoned > 0 {
            c.abandon_wait_ms += (rec.wait_secs.unwrap_or(0.0) * 1000.0).round() as u64;
        }
        c.kpi.add(&d);
    }

    fn count_callback(&mut self, b: usize, old: Option<&Callback>) {
        let d = callback_delta(old, &self.callbacks[b].cb);
        let i = self.interval_of(self.callbacks[b].cb.created_at);
        self.counts[self.callbacks[b].queue][i].kpi.add(&d);
    }

    /// The caller of waiting call `c` accepted a callback: it takes the call's place.
    fn accept(&mut self, c: usize, ewt_secs: Option<f64>) {
        let now = self.now();
        let Ok(taken) = self.floor.take_call(&format!("c{c}"), now) else {
            return;
        };
        self.calls[c].waiting = false;
        let q = self.calls[c].queue;
        let sq = &self.queues[q];
        let b = self.callbacks.len();
        let cb = Callback {
            id: format!("b{b}"),
            state: CallbackState::Pending,
            kind: CallbackKind::Asap,
            phone: String::new(),
            customer_id: None,
            queue_id: sq.plan_queue.id.clone(),
            time_zone: sq.tz.name().to_owned(),
            virtual_enqueued_at: taken.enqueued_at,
            priority: taken.priority,
            attempts: 0,
            max_attempts: sq.plan_queue.callback.max_attempts,
            not_before: now,
            expires_at: policy::expires_at(&sq.plan_queue.callback, now),
            lease: None,
            last_outcome: None,
            cancel_reason: None,
            origin_call_id: Some(format!("c{c}")),
            notes: String::new(),
            ewt_at_request_secs: ewt_secs,
            created_by: "simulate-day".into(),
            created_at: now,
            updated_at: now,
            version: 0,
        };
        self.callbacks.push(SimCallback {
            cb,
            queue: q,
            handle_ms: self.calls[c].handle_ms,
            agent: None,
        });
        self.count_callback(b, None);
        self.floor.enqueue_callback(
            &format!("b{b}"),
            queue_info(&self.queues[q].plan_queue),
            taken.priority,
            taken.enqueued_at,
            Some(taken.seq),
            now,
        );
    }

    fn abandon(&mut self, c: usize) {
        if !self.calls[c].waiting {
            return;
        }
        let now = self.now();
        if let Ok(EventOutcome::Applied(Some(rec))) =
            self.floor
                .call_event(&format!("c{c}"), CallEvent::Abandoned, |_| None, now)
        {
            self.count_contact(None, &rec);
        }
        self.calls[c].waiting = false;
    }

    fn work_end(&mut self, a: usize) {
        let now = self.now();
        let work = self.agents[a].work;
        let busy = (self.now_ms - self.agents[a].work_since).max(0) as u64;
        let q = self.agents[a].queue;
        let i = self.interval_of(now);
        self.counts[q][i].busy_ms += busy;
        self.agents[a].last_end_ms = self.now_ms;
        if let Work::Call(c) = work {
            let handle = std::time::Duration::from_millis(self.calls[c].handle_ms as u64);
            if let Ok(EventOutcome::Applied(Some(rec))) = self.floor.call_event(
                &format!("c{c}"),
                CallEvent::Ended {
                    handle_time: Some(handle),
                },
                |_| None,
                now,
            ) {
                let old = self.calls[c].answered.take();
                self.count_contact(old.as_ref(), &rec);
            }
        }
        self.agents[a].work = Work::Idle;
        if self.agents[a].leaving || self.agents[a].private {
            self.report(a, AgentState::Offline);
        } else {
            self.report(a, AgentState::Available);
        }
    }

    /// The scheduler's side: every callback matched to an agent is dispatched, or
    /// parked while the customer may not be called, or expired.
    fn play_scheduler(&mut self) {
        if !self.with_callbacks {
            return;
        }
        loop {
            let matched = self.floor.take_matches(64);
            if matched.is_empty() {
                return;
            }
            for (id, agent) in matched {
                let (Some(b), Some(&a)) = (index(&id, 'b'), self.agent_by_id.get(&agent)) else {
                    continue;
                };
                self.dispatch(b, a);
            }
        }
    }

    fn dispatch(&mut self, b: usize, a: usize) {
        let now = self.now();
        let id = format!("b{b}");
        let q = self.callbacks[b].queue;
        let sq = &self.queues[q];
        if policy::is_expired(
            &sq.plan_queue.callback,
            self.callbacks[b].cb.created_at,
            now,
        ) {
            let old = self.callbacks[b].cb.clone();
            if self.callbacks[b].cb.expire(now).is_ok() {
                self.count_callback(b, Some(&old));
            }
            self.floor.remove_callback(&id, now);
            self.take_held(a);
            return;
        }
        if !policy::can_dial(&sq.plan_queue, sq.tz, now) {
            let next = policy::next_dial_opportunity(&sq.plan_queue, sq.tz, now);
            self.floor.park_callback(&id, now);
            if let Some(t) = next {
                let ms = (t - self.input.start).num_milliseconds();
                self.at(ms.max(self.now_ms), Ev::CallbackDue(b));
            }
            self.take_held(a);
            return;
        }
        let ring_ms = (self.input.callbacks.ring_secs * 1000.0).round() as i64;
        let old = self.callbacks[b].cb.clone();
        let attempt = format!("{id}-{}", old.attempts + 1);
        if self.callbacks[b]
            .cb
            .dispatch(
                attempt,
                "sim".into(),
                Some(self.agents[a].id.clone()),
                now + Duration::hours(1),
                now,
            )
            .is_err()
        {
            return;
        }
        self.count_callback(b, Some(&old));
        self.floor
            .dispatched(&id, &self.agents[a].id, now + Duration::hours(1));
        self.callbacks[b].agent = Some(a);
        self.agents[a].work = Work::Dialing(b);
        self.agents[a].work_since = self.now_ms;
        self.at(self.now_ms + ring_ms, Ev::DialEnd(b));
    }

    fn dial_end(&mut self, b: usize) {
        let now = self.now();
        let Some(a) = self.callbacks[b].agent.take() else {
            return;
        };
        let answered = self.rng.f64() < self.input.callbacks.answer_rate;
        let q = self.callbacks[b].queue;
        let old = self.callbacks[b].cb.clone();
        let attempt = old
            .lease
            .as_ref()
            .map(|l| l.attempt_id.clone())
            .unwrap_or_default();
        let (outcome, retry_at) = if answered {
            (DispatchOutcome::Connected, None)
        } else {
            let retry =
                policy::next_attempt_at(&self.queues[q].plan_queue.callback, old.attempts, now);
            (DispatchOutcome::NoAnswer, retry)
        };
        if self.callbacks[b]
            .cb
            .outcome(&attempt, outcome, retry_at, now)
            .is_ok()
        {
            self.count_callback(b, Some(&old));
        }
        let id = format!("b{b}");
        let agent_id = self.agents[a].id.clone();
        self.floor.end_hold(&agent_id, &id, answered, now);
        if answered {
            // The agent keeps the time already spent ringing as busy time.
            self.agents[a].work = Work::Callback(b);
            self.at(self.now_ms + self.callbacks[b].handle_ms, Ev::WorkEnd(a));
            return;
        }
        let i = self.interval_of(now);
        self.counts[q][i].busy_ms += (self.now_ms - self.agents[a].work_since).max(0) as u64;
        self.agents[a].last_end_ms = self.now_ms;
        self.agents[a].work = Work::Idle;
        if self.agents[a].leaving {
            self.report(a, AgentState::Offline);
        } else {
            self.take_held(a);
        }
        if let Some(t) = retry_at {
            let ms = (t - self.input.start).num_milliseconds();
            self.at(ms.max(self.now_ms), Ev::CallbackDue(b));
        }
    }

    /// A callback's backoff is over, or its calling window opened: it is matched from
    /// its place in line (its virtual enqueue time, as the scheduler keeps it).
    fn callback_due(&mut self, b: usize) {
        if self.closed || self.callbacks[b].cb.state != CallbackState::Pending {
            return;
        }
        let now = self.now();
        let id = format!("b{b}");
        if self.floor.has_callback(&id) {
            self.floor.unpark_callback(&id, now);
        } else {
            let cb = &self.callbacks[b].cb;
            let (priority, at) = (cb.priority, cb.virtual_enqueued_at);
            let q = self.callbacks[b].queue;
            self.floor.enqueue_callback(
                &id,
                queue_info(&self.queues[q].plan_queue),
                priority,
                at,
                None,
                now,
            );
        }
    }
}
