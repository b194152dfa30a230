//! The callback scheduler: one actor task that owns the open callbacks (its index of
//! them rebuilt from the store at start), decides when each is due, reserves an agent,
//! leases the callback to one connected dialer, and applies outcomes, retries, expiry
//! and cancellations. Every change is persisted (durably) before it is acted on or
//! acknowledged.
//!
//! Shape (after mini-redis's expiry worker and console's aggregator): a loop over one
//! `select!` of commands (bounded channel, oneshot replies), the next timer (from the
//! injected clock) and "something changed" kicks (agents freed, clock moved). Dialers
//! are fed through bounded channels with `try_send`: a slow dialer is skipped, never
//! allowed to stall the actor, and its lease simply runs out.
//!
//! Due work: an ASAP callback holds its place in its queue's line (ordered with live
//! calls by priority, then virtual enqueue time); it is dispatched when no live call is
//! ahead of it, the queue is open, the customer's local time is inside the calling
//! window, and (agent-first) an agent with the skills is free and gets reserved. A
//! scheduled callback joins the line at its slot start. Retries wait out the backoff
//! off the line, then return to their original place.
//!
//! Memory: the actor keeps an index entry per open callback (id, queue, number, due
//! time, timer, state: [`index::Entry`]), not its record; a callback's record is read from the
//! store when it is acted on (its timer fires, it is matched, dialed, reported on,
//! cancelled). So start-up and a cluster takeover read only the index fields
//! ([`crate::store::Store::scan_open_callbacks`]), and a million open callbacks take a
//! few hundred bytes each rather than their records.

mod image;
mod index;
mod numbers;
pub mod policy;
mod warm;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::domain::callback::{Callback, CallbackState, DispatchOutcome};
use crate::live::DueCallback;
use crate::routing::plan::{CompiledPlan, Dialing};
use crate::service::{Holdless, ServiceError};
use crate::store::OpenCallbackRef;

/// Commands waiting for the actor before senders feel back-pressure.
const COMMAND_QUEUE: usize = 4_096;
/// The most open callbacks the start-up sizes its tables for ahead of the scan.
const MAX_PRESIZE: usize = 10_000_000;
/// Dispatches buffered per dialer before it counts as slow.
const DIALER_QUEUE: usize = 64;

/// A dispatch sent to a dialer.
#[derive(Debug, Clone)]
pub struct DispatchMsg {
    pub callback: Callback,
    pub attempt_id: String,
    pub agent_id: Option<String>,
    pub lease_until: DateTime<Utc>,
}

/// Scheduler tunables.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How long a dialer has to report an outcome before the attempt is re-dispatched.
    pub lease: chrono::Duration,
    /// Start from the warm-start image the store kept at the last clean stop, when it
    /// has one (see [`image`]); otherwise, and when false, read the store.
    pub warm_start: bool,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            lease: chrono::Duration::seconds(60),
            warm_start: true,
        }
    }
}

/// How the scheduler found its open callbacks at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartedFrom {
    /// The warm-start image of the last clean stop.
    Image,
    /// The store's records.
    Store,
}

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

enum Command {
    Added(Box<Callback>),
    /// A callback may have been created without [`Command::Added`] following (its
    /// request was dropped half-way): once the store has the outcome of every write
    /// begun so far, [`Command::Reread`] it.
    Recheck(String),
    /// Track the callback if the store has it open (the second half of a recheck).
    Reread(String),
    Cancel {
        id: String,
        reason: String,
        reply: Reply<Callback>,
    },
    Reschedule {
        id: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        reply: Reply<Callback>,
    },
    Outcome {
        attempt_id: String,
        outcome: DispatchOutcome,
        reply: Reply<(bool, Callback)>,
    },
    Watch {
        dialer_id: String,
        tx: mpsc::Sender<DispatchMsg>,
        reply: oneshot::Sender<()>,
    },
    /// A customer was answered inbound in `queue`; `phones` are every number of theirs.
    AnsweredInbound {
        phones: Vec<String>,
        queue: String,
    },
    /// Scheduled callbacks per slot start in a queue (slot capacity).
    Booked {
        queue: String,
        reply: oneshot::Sender<HashMap<DateTime<Utc>, u32>>,
    },
    /// Creates a scheduled callback after checking capacity (serialized here).
    CreateScheduled {
        callback: Box<Callback>,
        request: Option<crate::store::RequestKey>,
        capacity: u32,
        reply: Reply<crate::store::CallbackCreate>,
    },
    /// Open callbacks per queue, for the wallboards.
    Counts(oneshot::Sender<HashMap<String, crate::service::CallbackCounts>>),
    /// Stops the actor; with `image`, answers its warm-start image (see [`image`]).
    Stop {
        image: bool,
        done: oneshot::Sender<Option<Vec<u8>>>,
    },
}

/// The handle services use to talk to the scheduler.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::Sender<Command>,
    kick: Arc<Notify>,
    /// Open callbacks the actor holds in memory, as of its last pass.
    open_count: Arc<AtomicUsize>,
    /// Dialers connected (`WatchDispatches` streams), as of the actor's last pass.
    dialer_count: Arc<AtomicUsize>,
    started_from: StartedFrom,
    /// Rechecks asked for and not yet read by the actor (see [`Scheduler::recheck`]).
    rechecks_in_flight: Arc<AtomicUsize>,
}

/// Open callbacks from which start-up returns the memory its load freed to the
/// operating system at once (see [`crate::memory::give_back_freed`]).
const GIVE_BACK_AFTER: u64 = 100_000;

fn gone() -> ServiceError {
    ServiceError::Unavailable("the callback scheduler is stopping".into())
}

impl Scheduler {
    /// Starts the actor: reads the open callbacks' index fields from the store first.
    pub async fn start(
        holdless: Arc<Holdless>,
        config: SchedulerConfig,
    ) -> Result<Self, ServiceError> {
        let loading = std::time::Instant::now();
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let kick = Arc::new(Notify::new());
        let mut actor = Actor {
            hl: holdless,
            config,
            rx,
            kick: kick.clone(),
            open: index::Index::default(),
            by_attempt: HashMap::new(),
            dialers: Vec::new(),
            next_dialer: 0,
            waiting_window: HashMap::new(),
            orphaned: HashSet::new(),
            booked: HashMap::new(),
            slot_of: HashMap::new(),
            open_count: Arc::new(AtomicUsize::new(0)),
            dialer_count: Arc::new(AtomicUsize::new(0)),
            rechecks_in_flight: Arc::new(AtomicUsize::new(0)),
            to_self: tx.downgrade(),
        };
        let now = actor.hl.clock().now();
        // Start-up: one plan snapshot and one floor lock for the whole lot. Each id is
        // allocated once, shared by the floor's line and every lookup here.
        let plan = actor.hl.active_plan();
        let store = actor.hl.store().clone();
        // Sized once when the store can say roughly how many there are (a stale
        // figure only costs a regrowth or some slack); capped so a wild one cannot.
        let estimate = match store.open_callbacks_estimate().await {
            Ok(Some(n)) => usize::try_from(n).unwrap_or(0).min(MAX_PRESIZE),
            Ok(None) => 0,
            Err(e) => {
                tracing::warn!(error = %e, "no estimate of the open callbacks; growing as they come");
                0
            }
        };
        actor.open.reserve(estimate);
        let mut due = Vec::with_capacity(estimate);
        // The plan's queues the due callbacks name, each once (a plan has a handful).
        let mut queues: Vec<crate::live::QueueInfo<'_>> = Vec::new();
        // Always taken (an image is good once), used only when asked for.
        let image = match store.take_warm_image().await {
            Ok(image) => image.filter(|_| actor.config.warm_start),
            Err(e) => {
                tracing::warn!(error = %e, "the warm-start image could not be read; reading the store");
                None
            }
        };
        let restored = match image {
            Some(image) => match actor.restore(&image, &plan, now, &mut queues, &mut due) {
                Ok(n) => Some(n),
                Err(e) => {
                    tracing::warn!(error = %e, "reading the store instead");
                    actor.forget_all();
                    actor.open.reserve(estimate);
                    due.clear();
                    queues.clear();
                    None
                }
            },
            None => None,
        };
        let started_from = match restored {
            Some(_) => StartedFrom::Image,
            None => StartedFrom::Store,
        };
        let n = match restored {
            Some(n) => n,
            None => {
                store
                    .scan_open_callbacks(&mut |r| {
                        let timer = actor.timer_for(&r, now);
                        let id = actor.open.load(r.id, fields(&r), timer);
                        actor.note_refs(&id, &r);
                        if r.state == CallbackState::Pending && r.not_before <= now {
                            if let Some(queue) = warm::line_of(&mut queues, &plan, r.queue_id) {
                                due.push(DueCallback {
                                    id,
                                    at: r.virtual_enqueued_at,
                                    priority: r.priority,
                                    queue,
                                });
                            }
                        }
                    })
                    .await?
            }
        };
        let loaded_ms = loading.elapsed().as_millis() as u64;
        let loaded_rss_mb = crate::memory::resident_mb();
        // The lines on one thread while this one files the entries by id, number and
        // timer.
        let hl = actor.hl.clone();
        std::thread::scope(|s| {
            let lines = s.spawn(|| hl.with_floor(|f| f.enqueue_callbacks(&queues, due)));
            actor.open.finish_load();
            // A panic on the other thread surfaces here, as it would have inline.
            if let Err(panic) = lines.join() {
                std::panic::resume_unwind(panic);
            }
        });
        actor.open_count.store(actor.open.len(), Ordering::Relaxed);
        if n >= GIVE_BACK_AFTER {
            crate::memory::give_back_freed();
        }
        tracing::info!(
            open = n,
            from = ?started_from,
            load_ms = loaded_ms,
            index_ms = loading.elapsed().as_millis() as u64 - loaded_ms,
            loaded_rss_mb,
            rss_mb = crate::memory::resident_mb(),
            "callback scheduler started"
        );
        let open_count = actor.open_count.clone();
        let dialer_count = actor.dialer_count.clone();
        let rechecks_in_flight = actor.rechecks_in_flight.clone();
        tokio::spawn(actor.run());
        Ok(Self {
            tx,
            kick,
            open_count,
            dialer_count,
            started_from,
            rechecks_in_flight,
        })
    }

    /// Whether this start read the warm-start image or the store.
    pub fn started_from(&self) -> StartedFrom {
        self.started_from
    }

    /// Pending and dispatched callbacks held in memory (the scheduler's share of the
    /// process's memory grows with it), as of the scheduler's last pass.
    pub fn open_count(&self) -> usize {
        self.open_count.load(Ordering::Relaxed)
    }

    /// Dialers connected, as of the scheduler's last pass (a dialer that hung up
    /// counts until the next pass notices).
    pub fn dialers_connected(&self) -> usize {
        self.dialer_count.load(Ordering::Relaxed)
    }

    /// Something the scheduler depends on changed (an agent freed up): look again.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ServiceError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    pub async fn added(&self, cb: Callback) {
        let _ = self.tx.send(Command::Added(Box::new(cb))).await;
    }

    /// Asks the actor to look up callback `id` in the store and track it if it is
    /// open; for a create whose [`Self::added`] may never come (its request was
    /// dropped while the create was under way). Does not wait, so it can be called
    /// from `Drop`.
    pub fn recheck(&self, id: String) {
        // Counted from here until the actor has read the callback (`Command::Reread`):
        // no warm-start image is written while one is on its way (the image would not
        // have the callback).
        self.rechecks_in_flight.fetch_add(1, Ordering::SeqCst);
        match self.tx.try_send(Command::Recheck(id)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.rechecks_in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Err(mpsc::error::TrySendError::Full(cmd)) => {
                let (tx, in_flight) = (self.tx.clone(), self.rechecks_in_flight.clone());
                match tokio::runtime::Handle::try_current() {
                    Ok(rt) => {
                        rt.spawn(async move {
                            if tx.send(cmd).await.is_err() {
                                in_flight.fetch_sub(1, Ordering::SeqCst);
                            }
                        });
                    }
                    Err(_) => {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    pub async fn cancel(&self, id: String, reason: String) -> Result<Callback, ServiceError> {
        self.ask(|reply| Command::Cancel { id, reason, reply })
            .await
    }

    pub async fn reschedule(
        &self,
        id: String,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<Callback, ServiceError> {
        self.ask(|reply| Command::Reschedule {
            id,
            start,
            end,
            reply,
        })
        .await
    }

    pub async fn outcome(
        &self,
        attempt_id: String,
        outcome: DispatchOutcome,
    ) -> Result<(bool, Callback), ServiceError> {
        self.ask(|reply| Command::Outcome {
            attempt_id,
            outcome,
            reply,
        })
        .await
    }

    pub async fn create_scheduled(
        &self,
        callback: Callback,
        request: Option<crate::store::RequestKey>,
        capacity: u32,
    ) -> Result<crate::store::CallbackCreate, ServiceError> {
        self.ask(|reply| Command::CreateScheduled {
            callback: Box::new(callback),
            request,
            capacity,
            reply,
        })
        .await
    }

    /// Registers a dialer; dispatches arrive on the returned channel until it is dropped.
    pub async fn watch(
        &self,
        dialer_id: String,
    ) -> Result<mpsc::Receiver<DispatchMsg>, ServiceError> {
        let (tx, rx) = mpsc::channel(DIALER_QUEUE);
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Command::Watch {
                dialer_id,
                tx,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        done.await.map_err(|_| gone())?;
        Ok(rx)
    }

    /// Cancels (`answered_inbound`) the pending callback in `queue` of any of
    /// `phones`: the numbers of a customer who was just answered there.
    pub async fn answered_inbound(&self, phones: Vec<String>, queue: String) {
        let _ = self
            .tx
            .send(Command::AnsweredInbound { phones, queue })
            .await;
    }

    pub async fn booked(&self, queue: String) -> HashMap<DateTime<Utc>, u32> {
        let (reply, rx) = oneshot::channel();
        if self
            .tx
            .send(Command::Booked { queue, reply })
            .await
            .is_err()
        {
            return HashMap::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Open callbacks per queue (pending, dispatched, due); `None` once stopping.
    /// One pass over the open callbacks: the wallboards ask only after a change.
    pub async fn callback_counts(&self) -> Option<HashMap<String, crate::service::CallbackCounts>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Counts(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Stops the actor after the commands queued before this call; with `image`,
    /// returns its warm-start image (`None` if it was stopped already or has none).
    pub async fn stop(&self, image: bool) -> Option<Vec<u8>> {
        let (done, answer) = oneshot::channel();
        self.tx.send(Command::Stop { image, done }).await.ok()?;
        answer.await.ok().flatten()
    }
}

struct Dialer {
    id: String,
    tx: mpsc::Sender<DispatchMsg>,
}

struct Actor {
    hl: Arc<Holdless>,
    config: SchedulerConfig,
    rx: mpsc::Receiver<Command>,
    kick: Arc<Notify>,
    /// Pending and dispatched callbacks: their index entries, found by id, by number
    /// and queue (dedupe, auto-cancel) and by timer (each one's next instant of
    /// interest: expiry, retry, slot, lease, window).
    open: index::Index,
    /// Attempt id -> callback id, for dispatched callbacks.
    by_attempt: HashMap<String, Id>,
    dialers: Vec<Dialer>,
    next_dialer: usize,
    /// Due callbacks the calling window or business hours keep from dialing, and when
    /// they may be dialed next.
    waiting_window: HashMap<String, DateTime<Utc>>,
    /// Dispatched callbacks whose lease ran out while no dialer was connected.
    orphaned: HashSet<String>,
    /// Open scheduled callbacks per (queue, slot start), and each one's slot.
    booked: HashMap<(Arc<str>, DateTime<Utc>), u32>,
    /// Keyed by the shared id and naming the shared queue id: no allocation per
    /// scheduled callback (a tenth of a million at start-up, say).
    slot_of: HashMap<Id, (Arc<str>, DateTime<Utc>)>,
    /// `open.len()` for the metrics, published after each pass.
    open_count: Arc<AtomicUsize>,
    /// `dialers.len()` likewise.
    dialer_count: Arc<AtomicUsize>,
    /// [`Scheduler::recheck`]'s, shared: decremented when the actor reads the
    /// callback ([`Command::Reread`]).
    rechecks_in_flight: Arc<AtomicUsize>,
    /// The actor's own queue, for a recheck's second half (weak: the actor ends when
    /// every [`Scheduler`] is gone).
    to_self: mpsc::WeakSender<Command>,
}

use index::Id;

/// The index fields of an open callback.
fn fields<'a>(r: &OpenCallbackRef<'a>) -> index::Fields<'a> {
    index::Fields {
        phone: r.phone,
        queue: r.queue_id,
        not_before: r.not_before,
        state: r.state,
    }
}

/// What reading an indexed callback's record found.
enum Read {
    Open(Box<Callback>),
    /// Closed or missing in the store: dropped from the index.
    Gone,
    /// The store did not answer: kept, and looked at again shortly.
    Failed,
}

/// Matched callbacks taken from the floor per pass (a line of callbacks all outside
/// their calling window, parked one by one, leaves room for commands between passes).
const MATCHES_PER_PASS: usize = 256;

/// Seconds a matched callback that could not be dialed (no dialer took it, the store
/// refused the dispatch) waits parked before it is matched again.
const RETRY_SECS: i64 = 5;

fn customer_tz(cb: &Callback) -> Tz {
    cb.time_zone.parse().unwrap_or(chrono_tz::UTC)
}

impl Actor {
    async fn run(mut self) {
        let mut clock_moves = self.hl.clock().subscribe();
        // Woken only to count for the wallboards: nothing to announce unless the pass
        // itself changed the open callbacks.
        let mut counting_only = false;
        loop {
            let now = self.hl.clock().now();
            let shape = (self.open.len(), self.by_attempt.len());
            self.step(now).await;
            self.open_count.store(self.open.len(), Ordering::Relaxed);
            self.dialer_count
                .store(self.dialers.len(), Ordering::Relaxed);
            if !counting_only || shape != (self.open.len(), self.by_attempt.len()) {
                self.hl.boards().callbacks_changed();
            }
            counting_only = false;
            let next = self.next_wakeup(self.hl.clock().now());
            let sleep = async {
                match (&mut clock_moves, next) {
                    // A manual clock moves by hand: wait for it to move.
                    (Some(rx), _) => {
                        if rx.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    (None, Some(at)) => {
                        let wait = (at - self.hl.clock().now())
                            .to_std()
                            .unwrap_or(Duration::ZERO);
                        tokio::time::sleep(wait.min(Duration::from_secs(3600))).await;
                    }
                    (None, None) => tokio::time::sleep(Duration::from_secs(3600)).await,
                }
            };
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    Some(Command::Stop { image, done }) => {
                        self.stop(image, done);
                        return;
                    }
                    Some(cmd) => {
                        counting_only = matches!(cmd, Command::Counts(_));
                        self.handle(cmd).await;
                        // Take what else is queued before the next pass.
                        for _ in 0..COMMAND_QUEUE {
                            match self.rx.try_recv() {
                                Ok(Command::Stop { image, done }) => {
                                    self.stop(image, done);
                                    return;
                                }
                                Ok(cmd) => {
                                    counting_only &= matches!(cmd, Command::Counts(_));
                                    self.handle(cmd).await
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    None => return,
                },
                _ = self.kick.notified() => {}
                _ = sleep => {}
            }
        }
    }

    /// The earliest instant something becomes due.
    fn next_wakeup(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.open.next_timer().map(|t| t.max(now))
    }

    fn timer_for(&self, cb: &OpenCallbackRef<'_>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match cb.state {
            CallbackState::Pending => {
                let mut t = cb.expires_at;
                if cb.not_before > now {
                    t = t.min(cb.not_before);
                }
                if !self.waiting_window.is_empty() {
                    if let Some(w) = self.waiting_window.get(cb.id) {
                        t = t.min(*w);
                    }
                }
                Some(t)
            }
            CallbackState::Dispatched => cb.lease.map(|(_, until)| until),
            _ => None,
        }
    }

    /// Keeps an open callback in the index with its timer; a due pending one takes its
    /// place in line.
    fn track(&mut self, cb: &Callback, now: DateTime<Utc>) {
        if cb.state == CallbackState::Pending && cb.not_before <= now {
            let plan = self.hl.active_plan();
            if let Some(q) = plan.queue(&cb.queue_id) {
                let parked = self.waiting_window.get(&cb.id).is_some_and(|w| *w > now);
                self.hl.with_floor(|f| {
                    // Put in its line once; one its window keeps back stays parked.
                    if !f.has_callback(&cb.id) {
                        f.enqueue_callback(
                            &cb.id,
                            crate::service::queue_info(q),
                            cb.priority,
                            cb.virtual_enqueued_at,
                            None,
                            now,
                        );
                    }
                    if parked {
                        f.park_callback(&cb.id, now);
                    }
                });
            }
        }
        self.index(&OpenCallbackRef::of(cb), now);
    }

    /// The index entry of an open callback (everything but its place in line), new or
    /// replacing the one it had, with its timer and its other lookups: by attempt, its
    /// slot booking.
    fn index(&mut self, cb: &OpenCallbackRef<'_>, now: DateTime<Utc>) {
        let timer = self.timer_for(cb, now);
        let id = self.open.upsert(cb.id, fields(cb), timer);
        self.note_refs(&id, cb);
    }

    /// The lookups of an open callback besides its entry: by attempt, and its slot
    /// booking.
    fn note_refs(&mut self, id: &Id, cb: &OpenCallbackRef<'_>) {
        self.unbook(cb.id);
        self.file_refs(id, cb.queue_id, cb.lease.map(|(a, _)| a), cb.slot_start);
    }

    /// [`Self::note_refs`] of an entry that had none (just loaded): the attempt it is
    /// out on, and the slot of `queue` starting at `slot_start` it books.
    fn file_refs(
        &mut self,
        id: &Id,
        queue: &str,
        attempt: Option<&str>,
        slot_start: Option<DateTime<Utc>>,
    ) {
        if let Some(attempt) = attempt {
            self.by_attempt.insert(attempt.to_owned(), id.clone());
        }
        if let Some(start) = slot_start {
            let slot = (self.open.queue_named(queue), start);
            *self.booked.entry(slot.clone()).or_insert(0) += 1;
            self.slot_of.insert(id.clone(), slot);
        }
    }

    /// Files a timer for an open callback at `at` (replacing its own), e.g. to try again
    /// after its record could not be read.
    fn rearm(&mut self, id: &str, at: DateTime<Utc>) {
        self.open.set_timer(id, Some(at));
    }

    fn unbook(&mut self, id: &str) {
        if self.slot_of.is_empty() {
            return;
        }
        if let Some(slot) = self.slot_of.remove(id) {
            if let Some(n) = self.booked.get_mut(&slot) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.booked.remove(&slot);
                }
            }
        }
    }

    async fn persist(&self, cb: &Callback) -> Result<(), ServiceError> {
        self.hl
            .store()
            .update_callback(cb.clone())
            .await
            .map_err(ServiceError::from)
    }

    /// Drops a callback that is no longer open from the index and its line. `attempt`
    /// is the attempt it was out on, if any.
    fn forget(&mut self, id: &str, attempt: Option<&str>) {
        self.unbook(id);
        self.open.remove(id);
        if let Some(a) = attempt {
            self.by_attempt.remove(a);
        }
        self.waiting_window.remove(id);
        self.orphaned.remove(id);
        self.hl
            .with_floor(|f| f.remove_callback(id, self.hl.clock().now()));
    }

    async fn handle(&mut self, cmd: Command) {
        let now = self.hl.clock().now();
        match cmd {
            Command::Added(cb) => self.track(&cb, now),
            Command::Recheck(id) => {
                // A create begun before this command is in the store (or refused) once
                // the flush returns, which on PostgreSQL may take a commit's time: the
                // flush is waited for beside the actor. Still counted in flight.
                let (store, to_self) = (self.hl.store().clone(), self.to_self.clone());
                let in_flight = self.rechecks_in_flight.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.flush().await {
                        tracing::warn!(callback_id = %id, error = %e, "store flush failed before a recheck");
                    }
                    let sent = match to_self.upgrade() {
                        Some(tx) => tx.send(Command::Reread(id)).await.is_ok(),
                        None => false,
                    };
                    if !sent {
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
            Command::Reread(id) => {
                self.rechecks_in_flight.fetch_sub(1, Ordering::SeqCst);
                match self.hl.store().callback(&id).await {
                    Ok(Some(cb)) if cb.state.is_open() => self.track(&cb, now),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(callback_id = %id, error = %e, "could not read a callback to recheck")
                    }
                }
            }
            Command::Counts(reply) => {
                let mut counts: HashMap<String, crate::service::CallbackCounts> = HashMap::new();
                for cb in self.open.iter() {
                    let queue = self.open.queue_of(cb);
                    let c = match counts.get_mut(&**queue) {
                        Some(c) => c,
                        None => counts.entry(String::from(&**queue)).or_default(),
                    };
                    match cb.state {
                        CallbackState::Pending => {
                            c.pending += 1;
                            if cb.not_before <= now {
                                c.due += 1;
                                // Held back by the calling window or business hours
                                // is waiting as promised, not overdue.
                                let held =
                                    self.waiting_window.get(&*cb.id).is_some_and(|w| *w > now);
                                if !held && now - cb.not_before > policy::overdue_after() {
                                    c.overdue += 1;
                                }
                            }
                        }
                        CallbackState::Dispatched => c.dispatched += 1,
                        _ => {}
                    }
                }
                let _ = reply.send(counts);
            }
            Command::Cancel { id, reason, reply } => {
                let _ = reply.send(self.cancel(&id, reason, now).await);
            }
            Command::Reschedule {
                id,
                start,
                end,
                reply,
            } => {
                let r = self
                    .change(&id, now, |cb| cb.reschedule(start, end, now))
                    .await;
                if r.is_ok() {
                    self.hl.with_floor(|f| f.remove_callback(&id, now));
                }
                let _ = reply.send(r);
            }
            Command::Outcome {
                attempt_id,
                outcome,
                reply,
            } => {
                let _ = reply.send(self.outcome(&attempt_id, outcome, now).await);
            }
            Command::Watch {
                dialer_id,
                tx,
                reply,
            } => {
                tracing::info!(dialer = %dialer_id, "dialer connected");
                self.dialers.push(Dialer { id: dialer_id, tx });
                let _ = reply.send(());
                let plan = self.hl.active_plan();
                for id in std::mem::take(&mut self.orphaned) {
                    self.redispatch(&id, &plan, now).await;
                }
            }
            Command::AnsweredInbound { phones, queue } => {
                let ids: Vec<Id> = phones
                    .iter()
                    .filter_map(|phone| self.open.by_number(&numbers::Phone::of(phone), &queue))
                    .filter(|id| {
                        self.open
                            .get(id)
                            .is_some_and(|c| c.state == CallbackState::Pending)
                    })
                    .cloned()
                    .collect();
                for id in ids {
                    match self.cancel(&id, "answered_inbound".into(), now).await {
                        Ok(_) => {
                            tracing::info!(callback_id = %id, "callback cancelled: customer answered inbound")
                        }
                        Err(e) => {
                            tracing::warn!(callback_id = %id, error = %e, "auto-cancel failed")
                        }
                    }
                }
            }
            Command::Booked { queue, reply } => {
                let _ = reply.send(self.booked(&queue));
            }
            Command::CreateScheduled {
                callback,
                request,
                capacity,
                reply,
            } => {
                let r = self
                    .create_scheduled(*callback, request, capacity, now)
                    .await;
                let _ = reply.send(r);
            }
            Command::Stop { image, done } => self.stop(image, done),
        }
    }

    fn booked(&self, queue: &str) -> HashMap<DateTime<Utc>, u32> {
        self.booked
            .iter()
            .filter(|((q, _), _)| &**q == queue)
            .map(|((_, start), n)| (*start, *n))
            .collect()
    }

    async fn create_scheduled(
        &mut self,
        cb: Callback,
        request: Option<crate::store::RequestKey>,
        capacity: u32,
        now: DateTime<Utc>,
    ) -> Result<crate::store::CallbackCreate, ServiceError> {
        if let Some(start) = cb.kind.slot_start() {
            // One open callback per number and queue: a twin request gets the first,
            // whatever the slot's capacity. A keyed twin still goes to the store, which
            // checks the key against its first use and remembers it.
            let twin = self
                .open
                .by_number(&numbers::Phone::of(&cb.phone), &cb.queue_id)
                .cloned();
            match twin {
                Some(existing) if request.is_none() => {
                    let existing = self.load(&existing).await?;
                    return Ok(crate::store::CallbackCreate::Existing(existing));
                }
                Some(_) => {}
                None => {
                    let taken = self.booked(&cb.queue_id).get(&start).copied().unwrap_or(0);
                    if taken >= capacity {
                        return Err(ServiceError::FailedPrecondition(format!(
                            "the slot starting {start} is full ({capacity} callbacks)"
                        )));
                    }
                }
            }
        }
        let out = self.hl.store().create_callback(cb, request).await?;
        if let crate::store::CallbackCreate::Created(c) = &out {
            self.track(c, now);
        }
        Ok(out)
    }

    /// Reads a callback's record (the store holds it; the index only its entry).
    async fn load(&self, id: &str) -> Result<Callback, ServiceError> {
        self.hl
            .store()
            .callback(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("callback {id} not found")))
    }

    /// Applies a transition to an open callback, persists it, updates memory.
    async fn change(
        &mut self,
        id: &str,
        now: DateTime<Utc>,
        f: impl FnOnce(&mut Callback) -> Result<(), crate::domain::callback::TransitionError>,
    ) -> Result<Callback, ServiceError> {
        let mut cb = self.load(id).await?;
        let attempt = cb.lease.as_ref().map(|l| l.attempt_id.clone());
        f(&mut cb).map_err(|e| ServiceError::FailedPrecondition(e.to_string()))?;
        self.persist(&cb).await?;
        if cb.state.is_open() {
            self.track(&cb, now);
        } else {
            self.forget(&cb.id, attempt.as_deref());
        }
        Ok(cb)
    }

    async fn cancel(
        &mut self,
        id: &str,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<Callback, ServiceError> {
        self.change(id, now, |cb| cb.cancel(reason, now)).await
    }

    async fn outcome(
        &mut self,
        attempt_id: &str,
        outcome: DispatchOutcome,
        now: DateTime<Utc>,
    ) -> Result<(bool, Callback), ServiceError> {
        let Some(id) = self.by_attempt.get(attempt_id).cloned() else {
            // Not live: settled already (the store keeps settled attempts for
            // `callbacks.request_id_retention_hours`, across restarts), or unknown.
            let stored = self.hl.store().settled_attempt(attempt_id).await?;
            return match stored {
                Some(id) => Ok((true, self.load(&id).await?)),
                None => Err(ServiceError::NotFound(format!(
                    "attempt {attempt_id} is not known"
                ))),
            };
        };
        let mut cb = self.load(&id).await?;
        let plan = self.hl.active_plan();
        let retry_at = plan
            .queue(&cb.queue_id)
            .map(|q| &q.callback)
            .and_then(|p| policy::next_attempt_at(p, cb.attempts, now));
        let agent = cb
            .outcome(attempt_id, outcome, retry_at, now)
            .map_err(|e| ServiceError::FailedPrecondition(e.to_string()))?;
        self.hl
            .store()
            .settle_callback(cb.clone(), attempt_id.to_owned())
            .await
            .map_err(ServiceError::from)?;
        self.by_attempt.remove(attempt_id);
        if let Some(agent) = agent {
            let connected = outcome == DispatchOutcome::Connected;
            self.hl
                .with_floor(|f| f.end_hold(&agent, &cb.id, connected, now));
            self.kick.notify_one();
        }
        tracing::debug!(callback_id = %cb.id, attempt_id, ?outcome, state = ?cb.state, "dispatch outcome");
        if cb.state.is_open() {
            self.track(&cb, now);
        } else {
            self.forget(&cb.id, None);
        }
        Ok((false, cb))
    }

    /// One pass: fire the timers that are due, then dispatch from the heads of the
    /// lines that may have changed.
    async fn step(&mut self, now: DateTime<Utc>) {
        let plan = self.hl.active_plan();
        self.dialers.retain(|d| !d.tx.is_closed());
        while let Some(id) = self.open.pop_due(now) {
            self.fire(&id, &plan, now).await;
        }
        // Callbacks are matched to agents only while somebody can dial them.
        let dialing = !self.dialers.is_empty();
        self.hl.with_floor(|f| f.set_dispatching(dialing, now));
        if !dialing {
            return;
        }
        let matched = self.hl.with_floor(|f| f.take_matches(MATCHES_PER_PASS));
        for (id, agent) in matched {
            self.dispatch_matched(&id, agent, &plan, now).await;
        }
        if self.hl.with_floor(|f| f.has_matches()) {
            // More than a pass takes: the next pass goes on after any commands.
            self.kick.notify_one();
        }
    }

    /// A callback's timer went off: expire it, put it in line, or re-lease it.
    async fn fire(&mut self, id: &str, plan: &CompiledPlan, now: DateTime<Utc>) {
        if !self.open.contains(id) {
            return;
        }
        let Some(cb) = self.read_open(id, now).await else {
            return;
        };
        match cb.state {
            CallbackState::Pending if cb.expires_at <= now => {
                match self.change(id, now, |cb| cb.expire(now)).await {
                    Ok(_) => tracing::info!(callback_id = %id, "callback expired"),
                    Err(e) => {
                        tracing::warn!(callback_id = %id, error = %e, "expiring callback failed")
                    }
                }
            }
            CallbackState::Dispatched if cb.lease.as_ref().is_some_and(|l| l.until <= now) => {
                self.redispatch(id, plan, now).await;
            }
            _ => {
                if self.waiting_window.get(id).is_some_and(|w| *w <= now) {
                    self.waiting_window.remove(id);
                    self.hl.with_floor(|f| f.unpark_callback(id, now));
                }
                self.track(&cb, now);
            }
        }
    }

    /// A callback at the head of its line was matched to a free agent (held for it):
    /// dial it, or, when its calling window or the queue's hours keep it from being
    /// dialed now, park it in its place (the agent goes to the next in line) until
    /// the window opens.
    async fn dispatch_matched(
        &mut self,
        id: &str,
        agent: String,
        plan: &CompiledPlan,
        now: DateTime<Utc>,
    ) {
        let pending = self
            .open
            .get(id)
            .is_some_and(|e| e.state == CallbackState::Pending);
        let cb = match pending {
            true => match self.read_record(id, now).await {
                Read::Open(cb) => Some(*cb),
                Read::Gone => None,
                // Parked in its place (which let the agent go) and looked at again
                // shortly.
                Read::Failed => return,
            },
            false => None,
        };
        let queue = cb
            .filter(|cb| cb.state == CallbackState::Pending)
            .and_then(|cb| plan.queue(&cb.queue_id).map(|q| (q, customer_tz(&cb), cb)));
        let Some((queue, tz, cb)) = queue else {
            // Settled or gone meanwhile: the agent is free again.
            self.hl.with_floor(|f| {
                f.remove_callback(id, now);
                f.end_hold(&agent, id, false, now);
            });
            return;
        };
        let kept_back = self.waiting_window.get(id).is_some_and(|w| *w > now);
        if kept_back || !policy::can_dial(queue, tz, now) {
            let at = policy::next_dial_opportunity(queue, tz, now)
                .unwrap_or(now + chrono::Duration::hours(1));
            self.waiting_window.insert(id.to_owned(), at);
            self.hl.with_floor(|f| f.park_callback(id, now));
            self.index(&OpenCallbackRef::of(&cb), now);
            return;
        }
        self.dispatch(cb, agent, queue.callback.dialing, now).await;
    }

    /// Reads an open callback's record to act on it. When the store cannot answer, the
    /// callback keeps its entry and place (parked: an agent held for it goes to the
    /// next in line), and its timer is filed a few seconds on, so it is looked at
    /// again; a record that is no longer open (or gone) leaves the index.
    async fn read_record(&mut self, id: &str, now: DateTime<Utc>) -> Read {
        match self.hl.store().callback(id).await {
            Ok(Some(cb)) if cb.state.is_open() => Read::Open(Box::new(cb)),
            Ok(_) => {
                tracing::warn!(callback_id = %id, "indexed callback is no longer open in the store; dropping it");
                self.forget(id, None);
                Read::Gone
            }
            Err(e) => {
                tracing::warn!(callback_id = %id, error = %e, "could not read callback; trying again shortly");
                self.hl.with_floor(|f| f.park_callback(id, now));
                self.waiting_window
                    .insert(id.to_owned(), now + chrono::Duration::seconds(RETRY_SECS));
                self.rearm(id, now + chrono::Duration::seconds(RETRY_SECS));
                Read::Failed
            }
        }
    }

    /// [`Self::read_record`] for callers that act on an open record only.
    async fn read_open(&mut self, id: &str, now: DateTime<Utc>) -> Option<Callback> {
        match self.read_record(id, now).await {
            Read::Open(cb) => Some(*cb),
            Read::Gone | Read::Failed => None,
        }
    }

    /// A matched callback that could not be dialed this time keeps its place, parked
    /// for a few seconds (its agent goes to the next in line meanwhile).
    fn retry_later(&mut self, cb: &Callback, now: DateTime<Utc>) {
        self.waiting_window
            .insert(cb.id.clone(), now + chrono::Duration::seconds(RETRY_SECS));
        self.hl.with_floor(|f| f.park_callback(&cb.id, now));
        self.index(&OpenCallbackRef::of(cb), now);
    }

    fn pick_dialer(&mut self, avoid: Option<&str>) -> Option<usize> {
        let n = self.dialers.len();
        if n == 0 {
            return None;
        }
        for k in 0..n {
            let i = (self.next_dialer + k) % n;
            if n > 1 && avoid == Some(self.dialers[i].id.as_str()) {
                continue;
            }
            self.next_dialer = i + 1;
            return Some(i);
        }
        None
    }

    /// Dials a callback with `agent` held for it: an agent-first dispatch names the
    /// agent; a customer-first one names none (the platform connects the customer to
    /// the next free agent once they answer), and the held agent only counts, so no
    /// more customers are dialed than agents can take them.
    async fn dispatch(
        &mut self,
        cb: Callback,
        agent: String,
        dialing: Dialing,
        now: DateTime<Utc>,
    ) {
        let Some(d) = self.pick_dialer(None) else {
            self.retry_later(&cb, now);
            return;
        };
        let dialer_id = self.dialers[d].id.clone();
        let until = now + self.config.lease;
        let attempt_id = ulid::Ulid::new().to_string();
        let mut out = cb.clone();
        let id = cb.id.as_str();
        if out
            .dispatch(
                attempt_id.clone(),
                dialer_id.clone(),
                Some(agent.clone()),
                until,
                now,
            )
            .is_err()
        {
            self.hl.with_floor(|f| f.remove_callback(id, now));
            return;
        }
        // Durable before the dialer hears of it: a crash never dials twice unknowingly.
        if let Err(e) = self.persist(&out).await {
            tracing::error!(callback_id = %id, error = %e, "could not persist dispatch; not dialing");
            self.retry_later(&cb, now);
            return;
        }
        self.hl.with_floor(|f| f.dispatched(id, &agent, until));
        self.track(&out, now);
        self.send(
            d,
            DispatchMsg {
                callback: out,
                attempt_id,
                agent_id: (dialing == Dialing::AgentFirst).then_some(agent),
                lease_until: until,
            },
        );
    }

    async fn redispatch(&mut self, id: &str, plan: &CompiledPlan, now: DateTime<Utc>) {
        let Some(cb) = self.read_open(id, now).await else {
            return;
        };
        let previous = cb.lease.as_ref().map(|l| l.dialer_id.clone());
        let Some(d) = self.pick_dialer(previous.as_deref()) else {
            // No dialer: it waits, leased to nobody, for the next one to connect.
            self.orphaned.insert(id.to_owned());
            return;
        };
        let dialer_id = self.dialers[d].id.clone();
        let until = now + self.config.lease;
        let mut cb = cb;
        if cb.re_lease(dialer_id, until, now).is_err() {
            return;
        }
        if let Err(e) = self.persist(&cb).await {
            tracing::error!(callback_id = %id, error = %e, "could not persist re-lease");
            return;
        }
        let held = cb.lease.as_ref().and_then(|l| l.agent_id.clone());
        // The agent held for the attempt, again if still free for it (the floor may
        // have given them to the next in line when the lease ran out).
        if let Some(a) = &held {
            self.hl.with_floor(|f| f.reserve_until(a, id, until));
        }
        let agent = match plan.queue(&cb.queue_id).map(|q| q.callback.dialing) {
            Some(Dialing::CustomerFirst) => None,
            _ => held,
        };
        let attempt_id = cb
            .lease
            .as_ref()
            .map(|l| l.attempt_id.clone())
            .unwrap_or_default();
        tracing::info!(callback_id = %id, attempt_id = %attempt_id, "lease ran out; dispatching the same attempt again");
        self.track(&cb, now);
        self.send(
            d,
            DispatchMsg {
                callback: cb,
                attempt_id,
                agent_id: agent,
                lease_until: until,
            },
        );
    }

    fn send(&mut self, d: usize, msg: DispatchMsg) {
        if let Err(e) = self.dialers[d].tx.try_send(msg) {
            // Slow or gone: the lease runs out and the attempt goes to another dialer.
            tracing::warn!(dialer = %self.dialers[d].id, error = %e, "dialer did not take a dispatch");
            if self.dialers[d].tx.is_closed() {
                self.dialers.remove(d);
            }
        }
    }
}
