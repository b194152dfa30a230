//! The operations holdless offers, over the store, the active plan and the clock. The
//! gRPC layer (`api`) converts wire types and calls these; nothing here knows tonic.
//! Plan operations (versions, rollback, simulation, reload, audit) are in `plans`.

mod plans;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::Mutex;

use crate::clock::Clock;
use crate::domain::agent::{AgentState, Skills};
use crate::domain::audit::{Actor, AuditAction, SYSTEM};
use crate::domain::contact::{CallFacts, ContactRecord};
use crate::domain::{Call, Customer, CustomerId, FieldViolation};
use crate::live::{
    CallEvent, EventOutcome, Floor, LiveConfig, LiveError, Placement, QueueInfo, QueueSnapshot,
    RoutedCall,
};
use crate::routing::offer::{callback_offer, OfferReason};
use crate::routing::plan::Queue;
use crate::routing::{self, CompiledPlan, Decision};
use crate::store::{NewPlan, Store, StoreError, UpsertOutcome};

pub use plans::{
    PlanSource, ReloadOutcome, ReplaySource, Rollback, SimulationOutcome, DEFAULT_SIMULATION_DAYS,
    MAX_SIMULATED_CALLS, MAX_SIMULATION_DAYS, PLAN_FILE_AUTHOR, PLAN_REQUEST_RETENTION_HOURS,
};

/// How far back the agent's context looks for earlier contacts.
pub const CONTEXT_DAYS: i64 = 7;
/// Most earlier contacts shown to the agent.
pub const MAX_RECENT_CONTACTS: usize = 10;
/// Service-level threshold for calls of a queue no longer in the plan.
pub const DEFAULT_SERVICE_LEVEL_SECS: u32 = 20;

/// A routed call: the decision, where the call stands, and the context for the agent.
#[derive(Debug, Clone)]
pub struct RouteOutcome {
    pub decision: Decision,
    pub placement: Placement,
    pub offer: Option<OfferReason>,
    pub recent_contacts: Vec<ContactRecord>,
    pub transfer_count: u32,
    pub transfer_loop: bool,
    pub visited_queues: Vec<String>,
    /// The clock's time of the decision (the time part of its id).
    pub decided_at: chrono::DateTime<chrono::Utc>,
    /// A what-if answer: nothing was placed, reserved or recorded.
    pub dry_run: bool,
}

/// The floor's view of a plan queue.
pub fn queue_info(q: &Queue) -> QueueInfo<'_> {
    QueueInfo {
        id: &q.id,
        skills: &q.skills,
        default_aht_secs: q.default_aht_secs,
        max_waiting: q.max_waiting,
    }
}

impl From<LiveError> for ServiceError {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::UnknownCall(_) | LiveError::Impossible { .. } => {
                ServiceError::FailedPrecondition(e.to_string())
            }
            LiveError::UnknownQueue(q) => ServiceError::InvalidArgument(vec![FieldViolation::new(
                "queue_id",
                format!("queue '{q}' is not in the active plan"),
            )]),
        }
    }
}

pub mod board;
pub mod callbacks;
pub mod kpi;

pub use board::{BoardWatch, CallbackCounts, QueueBoard};

/// The example plan shipped in `deploy/plan.example.toml`, used when no plan file is
/// configured and the store is empty.
pub const EXAMPLE_PLAN: &str = include_str!("../../deploy/plan.example.toml");

/// Author of the version imported into an empty store from the built-in example plan.
pub const IMPORT_AUTHOR: &str = "holdless (import)";

/// What can go wrong in an operation; mapped to a gRPC status in `api::error` only.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid request")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::VersionConflict { .. } => ServiceError::Aborted(e.to_string()),
            StoreError::DuplicatePhone { phone } => {
                ServiceError::InvalidArgument(vec![FieldViolation::new(
                    "customer.phone_numbers",
                    format!("{phone} is listed twice"),
                )])
            }
            StoreError::Closed | StoreError::InUse { .. } | StoreError::Fenced { .. } => {
                ServiceError::Unavailable(e.to_string())
            }
            StoreError::NotEmpty { .. } | StoreError::BadImport(_) => {
                ServiceError::FailedPrecondition(e.to_string())
            }
            StoreError::Stale { .. } => ServiceError::Aborted(e.to_string()),
            StoreError::RequestIdReused { .. } => {
                ServiceError::InvalidArgument(vec![FieldViolation::new(
                    "request_id",
                    "was already used for a different request (another number, queue, slot, \
                     customer or notes); use a new request_id for a new request",
                )])
            }
            StoreError::Io(_) | StoreError::Corrupt(_) => ServiceError::Internal(e.to_string()),
        }
    }
}

/// A summary of a valid plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanSummary {
    pub queues: usize,
    pub rules: usize,
    pub campaigns: usize,
}

pub struct Holdless {
    store: Arc<dyn Store>,
    plan: ArcSwap<CompiledPlan>,
    clock: Arc<dyn Clock>,
    /// Serializes plan changes so the in-memory plan always equals the stored active one.
    plan_writer: Mutex<()>,
    /// Live state; locked briefly, never across an `.await`.
    floor: std::sync::Mutex<Floor>,
    /// The callback scheduler, attached once started.
    scheduler: std::sync::OnceLock<crate::scheduler::Scheduler>,
    /// Failed plan reloads (SIGHUP) since start.
    reload_failures: AtomicU64,
    /// Held while offers taken from the floor (`Floor::take_offers`) are being
    /// written, so a KPI report that flushes first waits for a flush already under way
    /// instead of reading the store before its offers are there.
    offers_flush: tokio::sync::Mutex<()>,
    /// How many local days ahead scheduled slots are listed and booked
    /// (`callbacks.slot_horizon_days`).
    slot_horizon_days: u32,
    /// Wallboards: dirty marks, caches and the watchers' publisher.
    boards: board::Boards,
}

impl Holdless {
    /// Loads the active plan from the store; an empty store first imports `plan_text`
    /// as version 1.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        plan_text: &str,
        live: LiveConfig,
    ) -> Result<Self, ServiceError> {
        Self::start_from(store, clock, plan_text, None, live).await
    }

    /// [`Holdless::start`] where `plan_text` was read from `plan_file`: a version
    /// imported from it is authored [`PLAN_FILE_AUTHOR`], so a SIGHUP can tell
    /// whether the active version is still the file's.
    pub async fn start_from(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        plan_text: &str,
        plan_file: Option<&std::path::Path>,
        live: LiveConfig,
    ) -> Result<Self, ServiceError> {
        let record = match store.active_plan().await? {
            Some(r) => r,
            None => {
                routing::compile_toml(plan_text, 0).map_err(ServiceError::InvalidArgument)?;
                let now = clock.now();
                let (author, comment) = match plan_file {
                    Some(f) => (
                        PLAN_FILE_AUTHOR,
                        format!("imported from {} at first start", f.display()),
                    ),
                    None => (IMPORT_AUTHOR, "imported at first start".to_owned()),
                };
                let r = store
                    .apply_plan(
                        NewPlan {
                            author: author.into(),
                            comment: comment.clone(),
                            created_at: now,
                            toml: plan_text.to_owned(),
                            request_id: None,
                            audit: crate::domain::audit::AuditEntry {
                                author: author.into(),
                                ..Actor::new(SYSTEM, "").entry(
                                    now,
                                    AuditAction::PlanApply,
                                    "",
                                    comment,
                                )
                            },
                        },
                        Some(0),
                    )
                    .await?
                    .record;
                tracing::info!(
                    version = r.version,
                    author,
                    "imported routing plan into empty store"
                );
                r
            }
        };
        let plan = routing::compile_toml(&record.toml, record.version).map_err(|issues| {
            ServiceError::Internal(format!(
                "stored plan version {} no longer validates: {}",
                record.version,
                issues
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        tracing::info!(
            version = plan.version,
            rules = plan.rules.len(),
            "routing plan active"
        );
        Ok(Self {
            store,
            plan: ArcSwap::from_pointee(plan),
            clock,
            plan_writer: Mutex::new(()),
            floor: std::sync::Mutex::new(Floor::new(live)),
            scheduler: std::sync::OnceLock::new(),
            reload_failures: AtomicU64::new(0),
            offers_flush: tokio::sync::Mutex::new(()),
            slot_horizon_days: crate::scheduler::policy::DEFAULT_SLOT_HORIZON_DAYS,
            boards: board::Boards::new(board::DEFAULT_WATCH_MAX_PER_SEC),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Runs `f` with the live floor locked (never across an `.await`).
    /// When the change matched callbacks to agents, the scheduler is woken to dial
    /// them.
    pub fn with_floor<T>(&self, f: impl FnOnce(&mut Floor) -> T) -> T {
        let (out, matched) = {
            let mut floor = self.floor();
            let out = f(&mut floor);
            (out, floor.has_matches())
        };
        self.boards.mark();
        if matched {
            self.kick_scheduler();
        }
        out
    }

    fn kick_scheduler(&self) {
        if let Some(s) = self.scheduler.get() {
            s.kick();
        }
    }

    fn floor(&self) -> std::sync::MutexGuard<'_, Floor> {
        // A panic while holding the lock cannot leave the floor half-updated in a way
        // that matters more than refusing all calls would; keep serving.
        self.floor.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The plan routing uses now.
    pub fn active_plan(&self) -> Arc<CompiledPlan> {
        self.plan.load_full()
    }

    /// Routes one call: looks up the customer (by id, else by caller number), decides,
    /// places the call in line or reserves an agent, and gathers the agent's context.
    /// An unknown customer id is not an error: the call routes as an unknown caller.
    /// Nothing here waits (the store's reads answer at once, the floor's lock is held
    /// for microseconds), so it is a plain function: RouteCall's future stays small.
    pub fn route(&self, call: &Call) -> Result<RouteOutcome, ServiceError> {
        self.route_as(call, false)
    }

    /// Where a call would go, placing, reserving and recording nothing (RouteCall's
    /// `dry_run`, `holdless route`): the same decision, agent and place in line as
    /// routing it now would give, with the floor, the KPI counters and the decision
    /// metrics untouched.
    pub fn what_if(&self, call: &Call) -> Result<RouteOutcome, ServiceError> {
        self.route_as(call, true)
    }

    fn route_as(&self, call: &Call, dry_run: bool) -> Result<RouteOutcome, ServiceError> {
        let mut customer = match (&call.customer_id, &call.caller) {
            (Some(id), _) => self.store.customer(id)?,
            (None, Some(caller)) => self.store.customer_by_phone(caller.as_str())?,
            (None, None) => None,
        };
        let now = self.clock.now();
        let customer_key: Option<&str> = customer
            .as_ref()
            .map(|c| c.id.as_str())
            .or_else(|| call.customer_id.as_ref().map(|c| c.as_str()));
        let caller: Option<&str> = call.caller.as_ref().map(|c| c.as_str());
        let mut recent_contacts = self.store.recent_contacts(
            customer_key,
            caller,
            now - chrono::Duration::days(CONTEXT_DAYS),
            MAX_RECENT_CONTACTS + 1,
        )?;
        recent_contacts.retain(|c| c.call_id != call.call_id.as_str());
        recent_contacts.truncate(MAX_RECENT_CONTACTS);
        let customer_key = customer_key.map(str::to_owned);
        // The CRM's last agent wins; else the agent of the latest answered contact.
        if let Some(c) = customer.as_mut().filter(|c| c.last_agent_id.is_empty()) {
            if let Some(agent) = recent_contacts.iter().find_map(|r| r.agent_id.clone()) {
                c.last_agent_id = agent;
            }
        }

        let plan = self.plan.load();
        let mut call = std::borrow::Cow::Borrowed(call);
        // Decided first as for a call in no transfer loop, which nearly every call is;
        // the floor then tells, under the same lock that places the call, whether it
        // is one: flagged as looping already, or sent back to a queue it visited
        // (after a transfer). Then it is decided again knowing it, so a rule can send
        // it to a supervisor.
        let mut decision = routing::decide(&plan, &call, customer.as_ref(), now);
        let mut floor = self.floor();
        if !call.transfer_loop && floor.would_loop(call.call_id.as_str(), &decision.queue_id) {
            drop(floor);
            call.to_mut().transfer_loop = true;
            decision = routing::decide(&plan, &call, customer.as_ref(), now);
            floor = self.floor();
        }
        let queue = plan.queue(&decision.queue_id).ok_or_else(|| {
            ServiceError::Internal("decision names a queue not in its plan".into())
        })?;
        let routed = RoutedCall {
            call_id: call.call_id.as_str(),
            caller,
            customer_id: customer_key.as_deref(),
            priority: decision.priority,
            extra_skills: &decision.extra_skills,
            preferred_agent: decision.preferred_agent_id.as_deref(),
            preferred_wait_secs: decision.preferred_agent_timeout_secs,
        };
        let (placement, after) = if dry_run {
            let mut after = floor.history(call.call_id.as_str()).unwrap_or_default();
            if after.visited.last() != Some(&decision.queue_id) {
                after.visited.push(decision.queue_id.clone());
            }
            (floor.what_if(routed, queue_info(queue)), after)
        } else {
            floor.route_call(routed, queue_info(queue), now, || {
                Some(CallFacts::from_call(&call, now))
            })
        };
        // One answer about the preferred agent: reserved, or waited for (and nobody
        // else reserved); when neither (logged out, unable, no wait), none is named.
        let preferred_stands = placement.preferred_wait.is_some()
            || placement.reserved_agent.is_some()
                && placement.reserved_agent == decision.preferred_agent_id;
        if !preferred_stands {
            decision.preferred_agent_id = None;
            decision.preferred_agent_timeout_secs = 0;
        } else if let Some(left) = placement.preferred_wait {
            decision.preferred_agent_timeout_secs = left.as_secs_f64().ceil() as u32;
        }
        let offer = callback_offer(
            queue,
            decision.offer_callback,
            decision.queue_open,
            placement.queue_full,
            placement.reserved_agent.is_some(),
            placement.estimated_wait,
        );
        if offer.is_some() && !dry_run {
            // Counted in memory, under the lock already held, and written by
            // housekeeping (`flush_offers`), so routing never waits for a disk flush; a
            // crash loses at most a second of offers.
            floor.count_offer(crate::metrics::kpi::bucket_start(now), &decision.queue_id);
        }
        let matched = floor.has_matches();
        drop(floor);
        if matched {
            self.kick_scheduler();
        }
        if !dry_run {
            plan.count_decision(decision.rule_index, decision.queue_index);
            self.boards.mark();
        }
        Ok(RouteOutcome {
            decision,
            placement,
            offer,
            recent_contacts,
            transfer_count: after.transfers,
            transfer_loop: call.transfer_loop,
            visited_queues: after.visited,
            decided_at: now,
            dry_run,
        })
    }

    /// Applies an agent state report; `false` when it was older than the last one.
    pub fn report_agent(
        &self,
        agent_id: &str,
        skills: Skills,
        state: AgentState,
        at: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        let now = self.clock.now();
        self.with_floor(|f| f.report_agent(agent_id, skills, state, at, now))
    }

    /// Applies a call event; persists the call's contact record before answering.
    /// Returns `true` when the event was a repeat.
    pub async fn report_call_event(
        &self,
        call_id: &str,
        event: CallEvent,
    ) -> Result<bool, ServiceError> {
        let plan = self.plan.load_full();
        let now = self.clock.now();
        let outcome = self
            .with_floor(|f| f.call_event(call_id, event, |q| plan.queue(q).map(queue_info), now))?;
        match outcome {
            EventOutcome::Duplicate => Ok(true),
            EventOutcome::Applied(record) => {
                if let Some(r) = record {
                    let answered = r.outcome == crate::domain::contact::ContactOutcome::Answered;
                    let (caller, queue) = (r.caller.clone(), r.queue_id.clone());
                    let customer_id = r.customer_id.clone();
                    let target = plan
                        .queue(&queue)
                        .map_or(f64::from(DEFAULT_SERVICE_LEVEL_SECS), |q| {
                            f64::from(q.service_level_secs)
                        });
                    self.store.record_call(r, target).await?;
                    self.boards.kpi_changed(&queue);
                    // The customer reached us inbound: their pending callback in that
                    // queue is no longer owed, whichever of their numbers it is for.
                    if let (true, Some(s)) = (answered, self.scheduler.get()) {
                        let numbers = self.customer_numbers(customer_id.as_deref(), caller);
                        if !numbers.is_empty() {
                            s.answered_inbound(numbers, queue).await;
                        }
                    }
                }
                Ok(false)
            }
        }
    }

    /// The numbers that reach the customer of an answered call: the caller's, and
    /// every number on the record of the customer RouteCall identified (by the
    /// platform's customer id or the caller's number). A callback to any of them is
    /// the same customer's. A customer record that cannot be read leaves the caller's
    /// number alone (logged): the call is answered either way.
    fn customer_numbers(&self, customer_id: Option<&str>, caller: Option<String>) -> Vec<String> {
        let mut numbers: Vec<String> = caller.into_iter().collect();
        let Some(id) = customer_id else {
            return numbers;
        };
        match self
            .store
            .customer(&crate::domain::CustomerId::new_checked(id.to_owned()))
        {
            Ok(Some(c)) => {
                for p in &c.phones {
                    if !numbers.iter().any(|n| n == p.as_str()) {
                        numbers.push(p.as_str().to_owned());
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(customer_id = %id, error = %e, "customer unreadable; auto-cancel by the caller's number only")
            }
        }
        numbers
    }

    /// Sets the scheduled-slot horizon (`callbacks.slot_horizon_days`, checked by the
    /// config) before the service is shared.
    pub fn with_slot_horizon_days(mut self, days: u32) -> Self {
        self.slot_horizon_days = days;
        self
    }

    /// Sets the highest wallboard rate (`stats.watch_max_per_sec`, checked by the
    /// config: positive and finite) before the service is shared.
    pub fn with_board_rate(mut self, max_per_sec: f64) -> Self {
        self.boards = board::Boards::new(max_per_sec);
        self
    }

    /// How many local days ahead slots are listed and booked.
    pub fn slot_horizon_days(&self) -> u32 {
        self.slot_horizon_days
    }

    /// How the scheduler found the open callbacks (None before it has started).
    pub fn scheduler_started_from(&self) -> Option<crate::scheduler::StartedFrom> {
        self.scheduler.get().map(|s| s.started_from())
    }

    /// Open callbacks the scheduler holds in memory (None before it has started).
    pub fn open_callbacks_in_memory(&self) -> Option<usize> {
        self.scheduler.get().map(|s| s.open_count())
    }

    /// Live figures of one queue (or all queues of the active plan).
    pub fn queue_stats(
        &self,
        queue_id: Option<&str>,
    ) -> Result<Vec<(String, QueueSnapshot)>, ServiceError> {
        let plan = self.plan.load_full();
        let now = self.clock.now();
        let queues: Vec<&Queue> = match queue_id {
            Some(id) => vec![plan.queue(id).ok_or_else(|| {
                ServiceError::NotFound(format!("queue {id} is not in the active plan"))
            })?],
            None => plan.queues.iter().collect(),
        };
        let mut floor = self.floor();
        Ok(queues
            .into_iter()
            .map(|q| (q.id.clone(), floor.snapshot(queue_info(q), now)))
            .collect())
    }

    /// Adds the callback offers counted since the last call to the KPI store.
    pub async fn flush_offers(&self) -> Result<(), ServiceError> {
        let _flushing = self.offers_flush.lock().await;
        let pending = self.floor().take_offers();
        for (at, queue, n) in pending
            .into_iter()
            .flat_map(|(at, queues)| queues.into_iter().map(move |(q, n)| (at, q, n)))
        {
            let offered = crate::metrics::kpi::KpiCounters {
                cb_offered: n,
                ..Default::default()
            };
            self.store.add_kpi(queue, at, offered).await?;
        }
        Ok(())
    }

    /// Housekeeping: lapsed reservations, stale calls.
    pub fn sweep(&self) {
        let now = self.clock.now();
        self.floor().sweep(now);
        self.boards.mark();
    }

    /// Deletes contact history older than `days`.
    pub async fn prune_contacts(&self, days: u32) -> Result<usize, ServiceError> {
        let before = self.clock.now() - chrono::Duration::days(i64::from(days));
        Ok(self.store.prune_contacts(before).await?)
    }

    /// Creates or replaces a customer, audited in the same transaction.
    pub async fn upsert_customer(
        &self,
        mut c: Customer,
        actor: &Actor,
    ) -> Result<UpsertOutcome, ServiceError> {
        c.updated_at = self.clock.now();
        let audit = actor.entry(
            c.updated_at,
            AuditAction::CustomerUpsert,
            format!("customer {}", c.id.as_str()),
            "",
        );
        Ok(self.store.upsert_customer(c, audit).await?)
    }

    pub async fn customer(&self, id: &CustomerId) -> Result<Customer, ServiceError> {
        self.store
            .customer(id)?
            .ok_or_else(|| ServiceError::NotFound(format!("customer {} not found", id.as_str())))
    }

    pub async fn customer_by_phone(&self, e164: &str) -> Result<Customer, ServiceError> {
        self.store
            .customer_by_phone(e164)?
            .ok_or_else(|| ServiceError::NotFound(format!("no customer has number {e164}")))
    }

    /// Deletes a customer, audited in the same transaction.
    pub async fn delete_customer(
        &self,
        id: &CustomerId,
        actor: &Actor,
    ) -> Result<(), ServiceError> {
        let audit = actor.entry(
            self.clock.now(),
            AuditAction::CustomerDelete,
            format!("customer {}", id.as_str()),
            "",
        );
        if self.store.delete_customer(id, audit).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound(format!(
                "customer {} not found",
                id.as_str()
            )))
        }
    }

    /// Starts the callback scheduler for this instance (after the store is open).
    pub async fn start_scheduler(
        self: &Arc<Self>,
        config: crate::scheduler::SchedulerConfig,
    ) -> Result<(), ServiceError> {
        let s = crate::scheduler::Scheduler::start(self.clone(), config).await?;
        let _ = self.scheduler.set(s);
        Ok(())
    }

    /// Makes everything durable and stops the store's background work. With
    /// `warm_start` (a clean stop: nothing else can change a callback any more, every
    /// request answered), the store keeps the scheduler's warm-start image for the
    /// next start.
    pub async fn close(&self, warm_start: bool) {
        self.boards.stop();
        let image = match self.scheduler.get() {
            Some(s) => s.stop(warm_start && self.store.keeps_warm_image()).await,
            None => None,
        };
        if let Err(e) = self.flush_offers().await {
            tracing::warn!(error = %e, "writing callback offer counts failed at shutdown");
        }
        match self.store.flush().await {
            Ok(()) => {
                if let Some(image) = image {
                    let bytes = image.len();
                    let saving = std::time::Instant::now();
                    match self.store.save_warm_image(image).await {
                        Ok(()) => tracing::info!(
                            bytes,
                            ms = saving.elapsed().as_millis() as u64,
                            "warm-start image saved"
                        ),
                        Err(e) => tracing::warn!(error = %e, "the warm-start image was not saved"),
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "final store flush failed"),
        }
        self.store.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::PhoneNumber;
    use std::collections::HashMap;

    /// Offers are counted per (queue, 15-minute interval): calls offered a callback a
    /// fraction of a second apart share one counter and one store write.
    #[tokio::test]
    async fn offers_in_one_interval_share_one_counter() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        // Sunday 03:00:00.123 in New York: the North American queues are closed.
        let start = "2026-11-29T08:00:00.123Z".parse().unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let hl = Holdless::start(store, clock.clone(), EXAMPLE_PLAN, LiveConfig::default())
            .await
            .unwrap();
        let mut offered: HashMap<String, u64> = HashMap::new();
        for i in 0..5 {
            let mut call = Call::new(&format!("call-{i}"));
            call.caller = Some(PhoneNumber::parse(&format!("+1212555010{i}")).unwrap());
            let out = hl.route(&call).unwrap();
            if out.offer.is_some() {
                *offered.entry(out.decision.queue_id).or_default() += 1;
            }
            clock.advance(chrono::Duration::milliseconds(250));
        }
        assert!(!offered.is_empty(), "a closed queue offers a callback");
        let pending = hl.with_floor(|f| f.take_offers());
        let bucket = crate::metrics::kpi::bucket_start(start);
        let offered: crate::live::PendingOffers = [(bucket, offered.into_iter().collect())]
            .into_iter()
            .collect();
        assert_eq!(pending, offered);
    }

    /// A callback the store created without the scheduler hearing of it (its request
    /// was dropped between the two) is tracked after a recheck, and is in the
    /// warm-start image the next start reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rechecked_callback_is_tracked_and_kept_in_the_warm_start_image() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new("2026-09-21T12:00:00Z".parse().unwrap()));
        let start = |store: Arc<dyn Store>| {
            let clock = clock.clone();
            async move {
                let hl = Holdless::start(store, clock, EXAMPLE_PLAN, LiveConfig::default())
                    .await
                    .unwrap();
                let hl = Arc::new(hl);
                hl.start_scheduler(crate::scheduler::SchedulerConfig::default())
                    .await
                    .unwrap();
                hl
            }
        };
        let pending_in = |hl: Arc<Holdless>| async move {
            let counts = hl.scheduler.get().unwrap().callback_counts().await.unwrap();
            counts.get("general").map_or(0, |c| c.pending)
        };
        let store: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        let hl = start(store.clone()).await;
        let cb = crate::store::conformance::open_callback(
            "01J0000000000000000000000A",
            "+12125550100",
            crate::domain::callback::CallbackState::Pending,
        );
        store.create_callback(cb.clone(), None).await.unwrap();
        assert_eq!(pending_in(hl.clone()).await, 0, "not told");
        hl.scheduler.get().unwrap().recheck(cb.id.clone());
        let mut tracked = false;
        for _ in 0..500 {
            if pending_in(hl.clone()).await == 1 {
                tracked = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(tracked, "tracked after the recheck");
        hl.close(true).await;
        drop(hl);
        drop(store);
        let store: Arc<dyn Store> = loop {
            match crate::store::SledStore::open(dir.path()) {
                Err(StoreError::InUse { .. }) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                opened => break Arc::new(opened.unwrap()),
            }
        };
        let hl = start(store).await;
        assert_eq!(
            hl.scheduler_started_from(),
            Some(crate::scheduler::StartedFrom::Image)
        );
        assert_eq!(pending_in(hl.clone()).await, 1);
        hl.close(false).await;
    }
}
