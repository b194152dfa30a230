//! Wallboards: one board per queue (waiting, longest wait, EWT, agents by state,
//! open callbacks, today's service level and abandonment so far), read once
//! ([`Holdless::queue_boards`]) or watched ([`Holdless::watch_boards`], behind
//! `StatsService.WatchQueueStats`, the web console and wallboards).
//!
//! Routing must not pay for watchers. The paths that change a queue (RouteCall,
//! agent and call events, callback changes, plan apply, housekeeping) only mark the
//! boards dirty: one relaxed load, and on the first change since the last publish one
//! atomic swap and a `Notify`. One publisher task does the rest: at most
//! `stats.watch_max_per_sec` times a second it computes every queue's board once (one
//! floor lock for all of them), and hands each watcher the boards that differ from
//! the ones it last sent, through the watcher's bounded channel with `try_reserve`
//! (after tokio-console's aggregator). A watcher whose channel is full has fallen
//! behind: it is dropped and counted (`holdless_stats_watchers_dropped_total`),
//! never waited for. A watcher that asked for a lower rate keeps its changes pending
//! until its next slot, so bursts coalesce into one message.
//!
//! Figures that are not live floor state are cached, so neither a board nor a
//! message reads the store: today's KPI counters per queue are re-read by the
//! publisher only after a call of that queue was recorded (at most once per publish)
//! or the day turned, and the open callbacks per queue are asked of the scheduler only
//! after it changed something.
//!
//! "Today" is the queue's local day, from midnight to now in the time zone of the
//! queue's business hours (the zone its KPI report uses for arrivals), UTC for a queue
//! without business hours. Its figures follow the KPI definitions exactly (a call
//! counts in the 15-minute interval it entered the queue).
//!
//! Agent states on a board: holdless knows `available`, `reserved`, `busy`, `wrap_up`
//! and `offline`. `agents_busy` counts busy and reserved agents (a reserved agent is
//! taken for a call or callback already; `agents_reserved` says how many of them),
//! `agents_away` counts agents who reported before and whose last state is offline.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, Notify};

use super::{queue_info, Holdless, ServiceError};
use crate::domain::FieldViolation;
use crate::metrics::kpi::{bucket_start, KpiCounters, KpiFigures, BUCKET_SECS};
use crate::routing::plan::Queue;
use crate::sync::lock;

/// Messages a watcher gets per second unless it asks for fewer
/// (`stats.watch_max_per_sec`); also the most the publisher computes boards.
pub const DEFAULT_WATCH_MAX_PER_SEC: f64 = 2.0;
/// The lowest rate a watcher may ask for: one message every 100 s.
pub const MIN_WATCH_PER_SEC: f64 = 0.01;
/// Messages buffered per watcher. A full buffer means the watcher (or the network to
/// it) has not taken the last few seconds of boards: it is dropped.
pub const WATCH_BUFFER: usize = 8;
/// Watchers connected at once; more are refused (UNAVAILABLE) rather than let the
/// publisher's work grow without bound.
pub const MAX_BOARD_WATCHERS: usize = 1_024;
/// With the system clock, boards are recomputed at least this often while someone
/// watches: the longest wait grows and callbacks fall due without any event.
const TICK: Duration = Duration::from_secs(1);
/// While someone watches, open callbacks are counted again at least this often.
const CALLBACKS_REASK: Duration = Duration::from_secs(30);
/// Open callbacks are counted at most this often (each count is a pass over all).
const CALLBACKS_GAP: Duration = Duration::from_secs(1);

/// One queue's wallboard figures.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueBoard {
    pub queue_id: String,
    pub name: String,
    pub waiting: u32,
    pub longest_wait_secs: u64,
    /// Estimated wait for a call arriving now, in seconds; 0 while unknown (nobody
    /// staffed: `ewt_known` is false).
    pub ewt_secs: u64,
    pub agents_available: u32,
    /// Busy and reserved agents.
    pub agents_busy: u32,
    pub agents_wrap_up: u32,
    /// Known agents whose last state is offline.
    pub agents_away: u32,
    /// Pending callbacks (`callbacks_due` of them due now).
    pub callbacks_pending: u32,
    /// Callbacks leased to a dialer, outcome not reported yet.
    pub callbacks_dispatched: u32,
    pub callbacks_due: u32,
    pub offered_today: u64,
    pub answered_today: u64,
    pub abandoned_today: u64,
    /// Fraction 0..1; `None` while nothing counts towards it.
    pub service_level_today: Option<f64>,
    /// Fraction, from the plan's queue.
    pub service_level_target: f64,
    /// The plan's service-level threshold.
    pub answer_target_secs: u64,
    /// Abandoned after the 5 s grace / offered; `None` before the first offered call.
    pub abandon_rate_today: Option<f64>,
    pub at: DateTime<Utc>,
    /// Of `agents_busy`, the agents reserved for a call or callback.
    pub agents_reserved: u32,
    /// Whether `ewt_secs` is an estimate (false: nobody staffed, wait unknown).
    pub ewt_known: bool,
}

impl QueueBoard {
    /// Equal figures, whenever computed: a board that only aged is not a change.
    fn same_figures(&self, other: &QueueBoard) -> bool {
        let mut o = other.clone();
        o.at = self.at;
        *self == o
    }
}

/// Open callbacks of one queue, as the scheduler holds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallbackCounts {
    pub pending: u32,
    pub dispatched: u32,
    /// Pending and due now (`not_before` passed): in line or held by the calling window.
    pub due: u32,
    /// Due for longer than [`crate::scheduler::policy::OVERDUE_AFTER_SECS`] and not
    /// held back by the calling window or business hours.
    pub overdue: u32,
}

/// A subscription: the boards, and whether the watcher was dropped for falling behind
/// (set before the channel closes, so a closed channel with the flag set means
/// "dropped", without it "holdless is stopping").
#[derive(Debug)]
pub struct BoardWatch {
    pub boards: mpsc::Receiver<Vec<QueueBoard>>,
    pub dropped: Arc<AtomicBool>,
}

#[derive(Debug, Clone)]
struct TodayKpi {
    day_start: DateTime<Utc>,
    counters: KpiCounters,
}

struct Watcher {
    /// `None`: every queue of the active plan.
    queues: Option<Vec<String>>,
    interval: Duration,
    tx: mpsc::Sender<Vec<QueueBoard>>,
    dropped: Arc<AtomicBool>,
    last: HashMap<String, QueueBoard>,
    next_at: tokio::time::Instant,
    /// Changes seen before `next_at`: the publisher wakes for them then.
    pending: bool,
}

/// The shared side of the boards: dirty marks from the hot paths, caches, and
/// watchers waiting to be adopted by the publisher.
pub(crate) struct Boards {
    dirty: AtomicBool,
    wake: Arc<Notify>,
    stopped: AtomicBool,
    max_per_sec: f64,
    kpi_stale: std::sync::Mutex<HashSet<String>>,
    /// One refresh of today's counters at a time (publisher and scrape), so an older
    /// read never lands over a newer one.
    refreshing: tokio::sync::Mutex<()>,
    today: std::sync::Mutex<HashMap<String, TodayKpi>>,
    callbacks: std::sync::Mutex<HashMap<String, CallbackCounts>>,
    callbacks_gen: AtomicU64,
    new_watchers: std::sync::Mutex<Vec<Watcher>>,
    /// Watchers registered and not yet removed.
    watching: std::sync::atomic::AtomicUsize,
}

impl Boards {
    pub(crate) fn new(max_per_sec: f64) -> Self {
        Self {
            dirty: AtomicBool::new(false),
            wake: Arc::new(Notify::new()),
            stopped: AtomicBool::new(false),
            max_per_sec,
            kpi_stale: Default::default(),
            refreshing: Default::default(),
            today: Default::default(),
            callbacks: Default::default(),
            callbacks_gen: AtomicU64::new(1),
            new_watchers: Default::default(),
            watching: Default::default(),
        }
    }

    /// Something a board shows may have changed. Called on the routing path: a load,
    /// and only for the first change since the last publish a swap and a wake-up.
    pub(crate) fn mark(&self) {
        if !self.dirty.load(Ordering::Relaxed) && !self.dirty.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// A call of `queue` was recorded: today's counters of it are re-read.
    pub(crate) fn kpi_changed(&self, queue: &str) {
        {
            let mut stale = lock(&self.kpi_stale);
            if !stale.contains(queue) {
                stale.insert(queue.to_owned());
            }
        }
        self.mark();
    }

    /// The scheduler changed its open callbacks: their counts are asked again.
    pub(crate) fn callbacks_changed(&self) {
        self.callbacks_gen.fetch_add(1, Ordering::Relaxed);
        self.mark();
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.wake.notify_one();
    }
}

/// The local midnight that began `now`'s day in `tz` (a midnight that does not exist,
/// skipped by a DST change, moves to the first valid instant after it), on the KPI grid.
fn day_start(now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
    use chrono::TimeZone;
    let date = now.with_timezone(&tz).date_naive();
    let midnight = date.and_hms_opt(0, 0, 0).unwrap_or_default();
    let start = (0..=24)
        .map(|h| midnight + chrono::Duration::hours(h))
        .find_map(|t| tz.from_local_datetime(&t).earliest())
        .map_or(now, |t| t.with_timezone(&Utc));
    bucket_start(start.min(now))
}

fn queue_tz(q: &Queue) -> Tz {
    q.business_hours
        .as_ref()
        .map_or(chrono_tz::UTC, |h| h.time_zone())
}

fn rate_violation(message: String) -> ServiceError {
    ServiceError::InvalidArgument(vec![FieldViolation::new("max_updates_per_second", message)])
}

impl Holdless {
    pub(crate) fn boards(&self) -> &Boards {
        &self.boards
    }

    /// Open callbacks per queue as the wallboards last heard from the scheduler
    /// (the `/metrics` gauges read these, never the store).
    pub fn callback_counts(&self) -> HashMap<String, CallbackCounts> {
        lock(&self.boards.callbacks).clone()
    }

    /// Dialers connected now (`None` before the scheduler started).
    pub fn dialers_connected(&self) -> Option<usize> {
        self.scheduler.get().map(|s| s.dialers_connected())
    }

    /// Current boards of the named queues (all queues of the active plan when empty),
    /// in the order named; NotFound for a queue not in the plan.
    pub fn queue_boards(&self, queue_ids: &[String]) -> Result<Vec<QueueBoard>, ServiceError> {
        let plan = self.active_plan();
        let queues = selected_queues(&plan, queue_ids)?;
        Ok(self.compute_boards(&queues))
    }

    /// Subscribes: the first message holds every requested queue, later ones the queues
    /// that changed, at most `max_per_sec` messages per second (coalesced). The
    /// receiver is closed when the watcher fell behind (it was dropped and counted).
    pub fn watch_boards(
        &self,
        queue_ids: &[String],
        max_per_sec: f64,
    ) -> Result<mpsc::Receiver<Vec<QueueBoard>>, ServiceError> {
        self.subscribe_boards(queue_ids, max_per_sec)
            .map(|w| w.boards)
    }

    /// [`Holdless::watch_boards`], also telling whether the watcher was dropped.
    /// `max_per_sec` 0 means the configured rate; otherwise it must lie between
    /// [`MIN_WATCH_PER_SEC`] and the configured `stats.watch_max_per_sec`.
    pub fn subscribe_boards(
        &self,
        queue_ids: &[String],
        max_per_sec: f64,
    ) -> Result<BoardWatch, ServiceError> {
        let max = self.boards.max_per_sec;
        let rate = if max_per_sec == 0.0 {
            max
        } else if !max_per_sec.is_finite() || max_per_sec < 0.0 {
            return Err(rate_violation(
                "must be a positive number of messages per second (0: the server's rate)".into(),
            ));
        } else if max_per_sec < MIN_WATCH_PER_SEC {
            return Err(rate_violation(format!(
                "at least {MIN_WATCH_PER_SEC} (one message every {} s)",
                1.0 / MIN_WATCH_PER_SEC
            )));
        } else if max_per_sec > max {
            return Err(rate_violation(format!(
                "at most {max} (this server's stats.watch_max_per_sec)"
            )));
        } else {
            max_per_sec
        };
        let plan = self.active_plan();
        let queues = selected_queues(&plan, queue_ids)?;
        if self.boards.watching.load(Ordering::Relaxed) >= MAX_BOARD_WATCHERS {
            return Err(ServiceError::Unavailable(format!(
                "{MAX_BOARD_WATCHERS} wallboard watchers are connected already; try again later"
            )));
        }
        let first = self.compute_boards(&queues);
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let last = first
            .iter()
            .map(|b| (b.queue_id.clone(), b.clone()))
            .collect();
        // A fresh channel has room: the snapshot goes out at once, whatever the
        // publisher is doing.
        if tx.try_send(first).is_err() {
            return Err(ServiceError::Internal(
                "a new watcher's channel refused its first message".into(),
            ));
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_secs_f64(1.0 / rate);
        let watcher = Watcher {
            queues: (!queue_ids.is_empty()).then(|| queues.iter().map(|q| q.id.clone()).collect()),
            interval,
            tx,
            dropped: dropped.clone(),
            last,
            next_at: tokio::time::Instant::now() + interval,
            pending: false,
        };
        self.boards.watching.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("holdless_stats_watchers").increment(1.0);
        lock(&self.boards.new_watchers).push(watcher);
        self.boards.wake.notify_one();
        Ok(BoardWatch {
            boards: rx,
            dropped,
        })
    }

    /// Boards of `queues` now: live figures from the floor (one lock for all), open
    /// callbacks and today's counters from the caches.
    fn compute_boards(&self, queues: &[&Queue]) -> Vec<QueueBoard> {
        let now = self.clock.now();
        let snapshots: Vec<_> = {
            let mut floor = self.floor();
            queues
                .iter()
                .map(|q| floor.snapshot(queue_info(q), now))
                .collect()
        };
        let callbacks = lock(&self.boards.callbacks).clone();
        let today = lock(&self.boards.today);
        queues
            .iter()
            .zip(snapshots)
            .map(|(q, s)| {
                let cb = callbacks.get(&q.id).copied().unwrap_or_default();
                let start = day_start(now, queue_tz(q));
                let counters = today
                    .get(&q.id)
                    .filter(|t| t.day_start == start)
                    .map(|t| t.counters.clone())
                    .unwrap_or_default();
                let figures = KpiFigures::of(&counters);
                QueueBoard {
                    queue_id: q.id.clone(),
                    name: q.name.clone(),
                    waiting: s.waiting,
                    longest_wait_secs: s.longest_wait.as_secs(),
                    ewt_secs: s.estimated_wait.map_or(0, |d| d.as_secs()),
                    ewt_known: s.estimated_wait.is_some(),
                    agents_available: s.agents.available,
                    agents_busy: s.agents.busy + s.agents.reserved,
                    agents_reserved: s.agents.reserved,
                    agents_wrap_up: s.agents.wrap_up,
                    agents_away: s.agents.offline,
                    callbacks_pending: cb.pending,
                    callbacks_dispatched: cb.dispatched,
                    callbacks_due: cb.due,
                    offered_today: counters.offered,
                    answered_today: counters.answered,
                    abandoned_today: counters.abandoned,
                    service_level_today: figures.service_level,
                    service_level_target: q.service_level_target,
                    answer_target_secs: u64::from(q.service_level_secs),
                    abandon_rate_today: figures.abandonment_rate,
                    at: now,
                }
            })
            .collect()
    }

    /// Re-reads today's counters of the queues that had calls recorded, that are not
    /// cached yet, or whose day turned.
    async fn refresh_today(&self) {
        let _one = self.boards.refreshing.lock().await;
        let plan = self.active_plan();
        let now = self.clock.now();
        let stale = std::mem::take(&mut *lock(&self.boards.kpi_stale));
        let wanted: Vec<(String, DateTime<Utc>)> = {
            let today = lock(&self.boards.today);
            plan.queues
                .iter()
                .map(|q| (q, day_start(now, queue_tz(q))))
                .filter(|(q, start)| {
                    stale.contains(&q.id) || today.get(&q.id).is_none_or(|t| t.day_start != *start)
                })
                .map(|(q, start)| (q.id.clone(), start))
                .collect()
        };
        let to = bucket_start(now) + chrono::Duration::seconds(BUCKET_SECS);
        for (queue, start) in wanted {
            match self.store.kpi_buckets(Some(&queue), start, to).await {
                Ok(buckets) => {
                    let mut counters = KpiCounters::default();
                    for b in &buckets {
                        counters.add(&b.counters);
                    }
                    lock(&self.boards.today).insert(
                        queue,
                        TodayKpi {
                            day_start: start,
                            counters,
                        },
                    );
                }
                Err(e) => {
                    // Read again at the next publish rather than show a wrong day.
                    tracing::warn!(queue = %queue, error = %e, "reading today's KPI counters failed");
                    lock(&self.boards.kpi_stale).insert(queue);
                }
            }
        }
    }

    /// Asks the scheduler for its open callbacks per queue now (one pass over them),
    /// keeps the answer for the boards, and returns it. `/metrics` calls this at each
    /// scrape: whether a callback is overdue changes with time alone.
    pub async fn callback_counts_now(&self) -> HashMap<String, CallbackCounts> {
        self.refresh_callbacks().await;
        self.callback_counts()
    }

    /// Brings today's cached counters up to date now (only queues with calls recorded
    /// since, or whose day turned, are read): `/metrics` calls this at each scrape so
    /// its figures include every call recorded before it.
    pub async fn refresh_today_now(&self) {
        self.refresh_today().await;
    }

    /// Asks the scheduler for its open callbacks per queue.
    async fn refresh_callbacks(&self) {
        if let Some(s) = self.scheduler.get() {
            if let Some(counts) = s.callback_counts().await {
                *lock(&self.boards.callbacks) = counts;
            }
        }
    }

    /// Fills the caches and starts the publisher (after the scheduler, before serving).
    pub async fn start_boards(self: &Arc<Self>) {
        self.refresh_today().await;
        self.refresh_callbacks().await;
        tokio::spawn(publish(Arc::downgrade(self)));
    }
}

/// The plan's queues named by `ids` (every queue when empty), without repeats.
fn selected_queues<'p>(
    plan: &'p crate::routing::CompiledPlan,
    ids: &[String],
) -> Result<Vec<&'p Queue>, ServiceError> {
    if ids.is_empty() {
        return Ok(plan.queues.iter().collect());
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match plan.queue(id) {
            Some(q) if seen.insert(id.as_str()) => out.push(q),
            Some(_) => {}
            None => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        return Err(ServiceError::NotFound(format!(
            "queue {} {} not in the active plan",
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" }
        )));
    }
    Ok(out)
}

/// The publisher: waits for a change (or a watcher's slot, or the tick), computes
/// every board once, and feeds each watcher its changed boards without ever waiting
/// on one. Holds the service weakly: it ends when the service is gone or stopped.
async fn publish(hl: Weak<Holdless>) {
    let Some(first) = hl.upgrade() else {
        return;
    };
    let boards_gap = Duration::from_secs_f64(1.0 / first.boards.max_per_sec);
    let mut clock_moves = first.clock().subscribe();
    let wake = first.boards.wake.clone();
    drop(first);
    let mut watchers: Vec<Watcher> = Vec::new();
    let mut callbacks_seen = 0u64;
    let mut callbacks_asked = tokio::time::Instant::now();
    let mut last_publish: Option<tokio::time::Instant> = None;
    loop {
        {
            let Some(hl) = hl.upgrade() else { break };
            let b = &hl.boards;
            if b.stopped.load(Ordering::Acquire) {
                break;
            }
            // Open callbacks changed but were counted less than a second ago: count
            // them when the second is up.
            let recount = (b.callbacks_gen.load(Ordering::Relaxed) != callbacks_seen)
                .then_some(callbacks_asked + CALLBACKS_GAP);
            let slot = watchers
                .iter()
                .filter(|w| w.pending)
                .map(|w| w.next_at)
                .min();
            let tick = (!watchers.is_empty() && clock_moves.is_none())
                .then(|| tokio::time::Instant::now() + TICK);
            let wake_at = [slot, tick, recount].into_iter().flatten().min();
            drop(hl);
            let notified = wake.notified();
            tokio::select! {
                _ = notified => {}
                _ = async {
                    match wake_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
                _ = async {
                    match clock_moves.as_mut() {
                        Some(rx) => {
                            if rx.changed().await.is_err() {
                                std::future::pending::<()>().await;
                            }
                        }
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
        // At most `stats.watch_max_per_sec` publishes a second, whatever the traffic:
        // changes meanwhile coalesce into the next one.
        if let Some(last) = last_publish {
            tokio::time::sleep_until(last + boards_gap).await;
        }
        let Some(hl) = hl.upgrade() else { break };
        let b = &hl.boards;
        if b.stopped.load(Ordering::Acquire) {
            break;
        }
        b.dirty.store(false, Ordering::Release);
        last_publish = Some(tokio::time::Instant::now());
        watchers.append(&mut lock(&b.new_watchers));
        hl.refresh_today().await;
        let generation = b.callbacks_gen.load(Ordering::Relaxed);
        // Asked again after a change (at most once a second: each ask is a pass over
        // every open callback), and now and then anyway: a callback becomes overdue
        // with time alone.
        let asked_ago = callbacks_asked.elapsed();
        if generation != callbacks_seen && asked_ago >= CALLBACKS_GAP
            || asked_ago >= CALLBACKS_REASK
        {
            callbacks_seen = generation;
            callbacks_asked = tokio::time::Instant::now();
            hl.refresh_callbacks().await;
        }
        if watchers.is_empty() {
            continue;
        }
        let plan = hl.active_plan();
        let all: Vec<&Queue> = plan.queues.iter().collect();
        let current: HashMap<String, QueueBoard> = hl
            .compute_boards(&all)
            .into_iter()
            .map(|b| (b.queue_id.clone(), b))
            .collect();
        let now = tokio::time::Instant::now();
        let before = watchers.len();
        watchers.retain_mut(|w| feed(w, &plan, &current, now));
        let gone = before - watchers.len();
        if gone > 0 {
            b.watching.fetch_sub(gone, Ordering::Relaxed);
            metrics::gauge!("holdless_stats_watchers").decrement(gone as f64);
        }
    }
    // Stopping: every stream ends now.
    let mut gone = watchers.len();
    if let Some(hl) = hl.upgrade() {
        let mut new = lock(&hl.boards.new_watchers);
        gone += new.len();
        new.clear();
        hl.boards.watching.fetch_sub(gone, Ordering::Relaxed);
    }
    metrics::gauge!("holdless_stats_watchers").decrement(gone as f64);
}

/// Sends `w` its changed boards if its slot has come; `false` when it is to be
/// removed (gone, or dropped for falling behind).
fn feed(
    w: &mut Watcher,
    plan: &crate::routing::CompiledPlan,
    current: &HashMap<String, QueueBoard>,
    now: tokio::time::Instant,
) -> bool {
    if w.tx.is_closed() {
        return false;
    }
    let ids: Vec<&str> = match &w.queues {
        Some(ids) => ids.iter().map(String::as_str).collect(),
        None => plan.queues.iter().map(|q| q.id.as_str()).collect(),
    };
    let changed: Vec<QueueBoard> = ids
        .iter()
        .filter_map(|id| current.get(*id))
        .filter(|b| w.last.get(&b.queue_id).is_none_or(|l| !l.same_figures(b)))
        .cloned()
        .collect();
    if changed.is_empty() {
        w.pending = false;
        return true;
    }
    if w.next_at > now {
        w.pending = true;
        return true;
    }
    match w.tx.try_reserve() {
        Ok(permit) => {
            for b in &changed {
                w.last.insert(b.queue_id.clone(), b.clone());
            }
            permit.send(changed);
            w.next_at = now + w.interval;
            w.pending = false;
            true
        }
        Err(mpsc::error::TrySendError::Full(())) => {
            w.dropped.store(true, Ordering::Release);
            metrics::counter!("holdless_stats_watchers_dropped_total").increment(1);
            tracing::info!("a wallboard watcher fell behind and was dropped");
            false
        }
        Err(mpsc::error::TrySendError::Closed(())) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::domain::{Call, PhoneNumber};
    use crate::live::LiveConfig;
    use crate::store::Store;

    async fn holdless() -> (Arc<Holdless>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(crate::store::SledStore::open(dir.path()).unwrap());
        // Wednesday 10:00 in New York: "general" is open.
        let clock = Arc::new(ManualClock::new("2026-11-25T15:00:00Z".parse().unwrap()));
        let hl = Holdless::start(
            store,
            clock,
            super::super::EXAMPLE_PLAN,
            LiveConfig::default(),
        )
        .await
        .unwrap()
        .with_board_rate(4.0);
        let hl = Arc::new(hl);
        hl.start_boards().await;
        (hl, dir)
    }

    fn route(hl: &Holdless, id: &str) {
        let mut call = Call::new(id);
        call.caller = Some(PhoneNumber::parse("+12125550100").unwrap());
        hl.route(&call).unwrap();
    }

    /// In paused tokio time: a burst of 50 routed calls right after the snapshot is
    /// one message, sent when the watcher's slot comes (1 s at 1 a second), and the
    /// next change waits for the slot after that.
    #[tokio::test(start_paused = true)]
    async fn a_burst_is_one_message_at_the_watchers_next_slot() {
        let (hl, _dir) = holdless().await;
        let t0 = tokio::time::Instant::now();
        let mut rx = hl.watch_boards(&["general".to_owned()], 1.0).unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!((first.len(), first[0].waiting), (1, 0));
        for i in 0..50 {
            route(&hl, &format!("burst-{i}"));
        }
        let second = rx.recv().await.unwrap();
        let at = tokio::time::Instant::now();
        assert!(
            at - t0 >= Duration::from_secs(1),
            "sent {:?} after",
            at - t0
        );
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].waiting, 50, "the burst in one message");
        tokio::task::yield_now().await;
        assert!(rx.try_recv().is_err(), "nothing more for the burst");

        route(&hl, "later");
        let third = rx.recv().await.unwrap();
        assert!(tokio::time::Instant::now() - at >= Duration::from_secs(1));
        assert_eq!(third[0].waiting, 51);
    }

    /// A watcher that never reads is dropped once its buffer is full, and the others
    /// keep their boards; routing never waits for it.
    #[tokio::test(start_paused = true)]
    async fn a_full_watcher_is_dropped_and_the_others_go_on() {
        let (hl, _dir) = holdless().await;
        let slow = hl.subscribe_boards(&[], 0.0).unwrap();
        let mut fast = hl.watch_boards(&["general".to_owned()], 0.0).unwrap();
        fast.recv().await.unwrap();
        for i in 0..=WATCH_BUFFER {
            route(&hl, &format!("c{i}"));
            let b = fast.recv().await.unwrap();
            assert_eq!(b[0].waiting, i as u32 + 1);
        }
        assert!(slow.dropped.load(Ordering::Acquire));
        let mut slow = slow.boards;
        let mut backlog = 0;
        while slow.recv().await.is_some() {
            backlog += 1;
        }
        assert_eq!(backlog, WATCH_BUFFER, "what it had buffered, then closed");
    }

    #[test]
    fn the_day_starts_at_local_midnight() {
        let now: DateTime<Utc> = "2026-11-25T03:30:00Z".parse().unwrap();
        // 22:30 the day before in New York.
        assert_eq!(
            day_start(now, chrono_tz::America::New_York),
            "2026-11-24T05:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            day_start(now, chrono_tz::UTC),
            "2026-11-25T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
