//! Persistence. The [`Store`] trait speaks domain types only and every write method
//! returns `Ok` only once the write is durable (on disk, not only in the page cache), so
//! an OK reply to a client can be trusted after a crash or power loss.
//!
//! - `sled/`: the embedded backend (the default), the only module that imports sled.
//! - `postgres/`: [`PgStore`], the PostgreSQL backend, the only module that imports the
//!   driver; it also holds the fencing hook for a cluster of nodes.
//! - `conformance`: the behaviour every backend must show, one suite run against each.
//! - [`pgtest`]: the PostgreSQL server the tests use.

#[cfg(test)]
pub(crate) mod conformance;
#[doc(hidden)]
pub mod pgtest;
mod postgres;
mod sled;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::audit::AuditEntry;
use crate::domain::callback::{Callback, CallbackState, DispatchOutcome};
use crate::domain::contact::ContactRecord;
use crate::domain::{Customer, CustomerId};
use crate::metrics::kpi::{KpiCounters, Survey};

pub use self::postgres::lease::PgLease;
pub use self::postgres::{PgOptions, PgStore};
pub(crate) use self::sled::content_hash;
pub use self::sled::SledStore;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StoreError {
    #[error("storage I/O failed: {0}")]
    Io(String),
    #[error("stored record is unreadable: {0}")]
    Corrupt(String),
    #[error("the active plan is version {actual}, not {expected}")]
    VersionConflict { expected: u64, actual: u64 },
    #[error("phone number {phone} is listed twice")]
    DuplicatePhone { phone: String },
    #[error("the store is shutting down")]
    Closed,
    #[error("callback {id} changed meanwhile (stale write refused)")]
    Stale { id: String },
    /// The principal used this request id before for a request with another body.
    #[error("request_id {request_id} was already used for a different request")]
    RequestIdReused { request_id: String },
    /// Another process holds the store's lock (sled allows one at a time).
    #[error("store {path} is in use by another process (a running holdless server?)")]
    InUse { path: String },
    /// `import` only writes into a store without plans, customers and callbacks.
    #[error("the store is not empty: it holds {what}")]
    NotEmpty { what: String },
    /// `import` was given records that would break the store's invariants.
    #[error("import refused: {0}")]
    BadImport(String),
    /// A write carried fencing epoch `epoch` but the cluster lease is at `current`:
    /// another node took the lead, so this one may no longer write (PostgreSQL only).
    #[error("this node's leader epoch {epoch} was superseded by epoch {current}: write refused")]
    Fenced { epoch: u64, current: u64 },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A state's stored name (as the JSON documents and PostgreSQL's `state` column hold it).
pub(crate) fn state_name(s: CallbackState) -> &'static str {
    match s {
        CallbackState::Pending => "pending",
        CallbackState::Dispatched => "dispatched",
        CallbackState::Completed => "completed",
        CallbackState::Failed => "failed",
        CallbackState::Cancelled => "cancelled",
        CallbackState::Expired => "expired",
    }
}

fn outcome_name(o: DispatchOutcome) -> &'static str {
    match o {
        DispatchOutcome::Connected => "connected",
        DispatchOutcome::NoAnswer => "no_answer",
        DispatchOutcome::Busy => "busy",
        DispatchOutcome::Voicemail => "voicemail",
        DispatchOutcome::Failed => "failed",
        DispatchOutcome::InvalidNumber => "invalid_number",
    }
}

/// Refuses a customer that lists one phone number twice (every backend checks it
/// before writing, as the phone index keys on the number).
pub(crate) fn check_unique_phones(customer: &Customer) -> StoreResult<()> {
    let mut seen = std::collections::HashSet::new();
    match customer.phones.iter().find(|p| !seen.insert(*p)) {
        Some(p) => Err(StoreError::DuplicatePhone { phone: p.clone() }),
        None => Ok(()),
    }
}

/// Counts a stored callback change in the process metrics (every backend calls it
/// once per committed change).
pub(crate) fn note_transition(old: Option<&Callback>, new: &Callback) {
    note_state_change(old.map(|o| o.state), new);
}

/// [`note_transition`] from the stored state alone (`None`: just created).
pub(crate) fn note_state_change(old: Option<CallbackState>, new: &Callback) {
    if old != Some(new.state) {
        metrics::counter!("holdless_callback_transitions_total", "state" => state_name(new.state))
            .increment(1);
    }
    if let (Some(o), Some(outcome)) = (old, new.last_outcome) {
        if o == CallbackState::Dispatched && new.state != CallbackState::Dispatched {
            metrics::counter!("holdless_dispatch_outcomes_total", "outcome" => outcome_name(outcome))
                .increment(1);
        }
    }
}

/// What the scheduler keeps in memory of an open callback, its index entry: when it is
/// due and when it expires, its queue, priority and place, its number (dedupe) and the
/// attempt it is out on. [`Store::scan_open_callbacks`] reads only these fields, so a
/// start-up or takeover with a million open callbacks never holds their records.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenCallbackRef<'a> {
    pub id: &'a str,
    pub state: CallbackState,
    pub phone: &'a str,
    pub queue_id: &'a str,
    pub priority: i32,
    pub virtual_enqueued_at: DateTime<Utc>,
    pub not_before: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// A scheduled callback's slot start.
    pub slot_start: Option<DateTime<Utc>>,
    /// A dispatched callback's attempt id and lease end.
    pub lease: Option<(&'a str, DateTime<Utc>)>,
}

impl<'a> OpenCallbackRef<'a> {
    pub fn of(cb: &'a Callback) -> Self {
        Self {
            id: &cb.id,
            state: cb.state,
            phone: &cb.phone,
            queue_id: &cb.queue_id,
            priority: cb.priority,
            virtual_enqueued_at: cb.virtual_enqueued_at,
            not_before: cb.not_before,
            expires_at: cb.expires_at,
            slot_start: cb.kind.slot_start(),
            lease: cb.lease.as_ref().map(|l| (l.attempt_id.as_str(), l.until)),
        }
    }
}

/// The visitor of [`Store::scan_open_callbacks`].
pub type OpenVisitor<'v> = dyn for<'a> FnMut(OpenCallbackRef<'a>) + Send + 'v;

/// One immutable version of the routing plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub version: u64,
    pub author: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    /// Hex SHA-256 of `toml`.
    pub content_hash: String,
    pub toml: String,
}

/// A plan to store as the next version.
#[derive(Debug, Clone)]
pub struct NewPlan {
    pub author: String,
    pub comment: String,
    pub created_at: DateTime<Utc>,
    pub toml: String,
    /// Idempotency key: a second apply with the same key (within the retention) returns
    /// the version the first one created and changes nothing.
    pub request_id: Option<String>,
    /// Written in the same transaction as the version; the store sets its `seq` and
    /// its `target` (`plan vN`).
    pub audit: AuditEntry,
}

/// The outcome of [`Store::apply_plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedPlan {
    pub record: PlanRecord,
    /// The request id had been seen: `record` is the first answer, nothing changed.
    pub replayed: bool,
}

/// What `create_callback` did.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackCreate {
    Created(Callback),
    /// An open callback for the same number and queue exists: no twin is created.
    Existing(Callback),
    /// The request id was seen before: the first answer.
    Replayed(Callback),
}

/// A callback request's idempotency key (AIP-155): scoped to the principal that sent
/// it, so two channels that both number their requests 1, 2, 3 never meet, and bound to
/// a fingerprint of the request's body, so a reused key with another body is refused
/// rather than answered with the first callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    pub principal: String,
    pub request_id: String,
    /// Hex SHA-256 of the request's fields (`service::callbacks`); equal bodies, equal
    /// fingerprints.
    pub fingerprint: String,
}

/// Filters of `list_callbacks`; `None` matches all.
#[derive(Debug, Clone, Default)]
pub struct CallbackFilter {
    pub queue_id: Option<String>,
    pub state: Option<CallbackState>,
    pub phone: Option<String>,
    /// Only callbacks this principal requested.
    pub created_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpsertOutcome {
    pub customer: Customer,
    pub created: bool,
}

/// One queue's KPI counters in one 15-minute interval.
#[derive(Debug, Clone, PartialEq)]
pub struct KpiBucket {
    pub queue_id: String,
    pub start: DateTime<Utc>,
    pub counters: KpiCounters,
}

/// What `submit_survey` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SurveyOutcome {
    Recorded,
    /// The contact was surveyed before; nothing changed.
    AlreadyTaken,
    /// No such contact in the contact history.
    UnknownContact,
}

/// What [`Store::import`] writes into an empty store (a restored export).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreImport {
    /// Every plan version to keep, with its version number.
    pub plans: Vec<PlanRecord>,
    /// The active version; must be one of `plans` (`None` only without plans).
    pub active_version: Option<u64>,
    pub customers: Vec<Customer>,
    /// Open (pending or dispatched) callbacks only.
    pub callbacks: Vec<Callback>,
}

/// How many records of each kind an export or import holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordCounts {
    pub plans: u64,
    pub customers: u64,
    pub callbacks: u64,
}

impl StoreImport {
    pub fn counts(&self) -> RecordCounts {
        let n = |len: usize| u64::try_from(len).unwrap_or(u64::MAX);
        RecordCounts {
            plans: n(self.plans.len()),
            customers: n(self.customers.len()),
            callbacks: n(self.callbacks.len()),
        }
    }

    /// The invariants the store relies on: plan versions are 1..=N without gaps
    /// (versions only grow, none is ever deleted) and the active one is among them;
    /// customer ids, customer phone numbers, callback ids and open (phone, queue)
    /// pairs are each unique; every callback is open.
    pub fn check(&self) -> StoreResult<()> {
        use std::collections::HashSet;
        let bad = |m: String| Err(StoreError::BadImport(m));
        let mut versions = HashSet::new();
        for p in &self.plans {
            if !versions.insert(p.version) {
                return bad(format!("plan version {} appears twice", p.version));
            }
        }
        let n = u64::try_from(self.plans.len()).unwrap_or(u64::MAX);
        if let Some(v) = self
            .plans
            .iter()
            .map(|p| p.version)
            .find(|v| !(1..=n).contains(v))
        {
            return bad(format!(
                "plan versions must run from 1 to {n} without gaps; version {v} does not"
            ));
        }
        match self.active_version {
            Some(v) if !versions.contains(&v) => {
                return bad(format!("active plan version {v} is not among the plans"))
            }
            None if !self.plans.is_empty() => return bad("no plan version is active".into()),
            _ => {}
        }
        let mut ids = HashSet::new();
        let mut phones = HashSet::new();
        for c in &self.customers {
            if !ids.insert(c.id.as_str()) {
                return bad(format!("customer {} appears twice", c.id.as_str()));
            }
            for p in &c.phones {
                if !phones.insert(p.as_str()) {
                    return bad(format!("phone number {p} belongs to two customers"));
                }
            }
        }
        let mut ids = HashSet::new();
        let mut open = HashSet::new();
        for c in &self.callbacks {
            if !c.state.is_open() {
                return bad(format!("callback {} is {:?}, not open", c.id, c.state));
            }
            if !ids.insert(c.id.as_str()) {
                return bad(format!("callback {} appears twice", c.id));
            }
            if !open.insert((c.phone.as_str(), c.queue_id.as_str())) {
                return bad(format!(
                    "two open callbacks for {} in queue {}",
                    c.phone, c.queue_id
                ));
            }
        }
        Ok(())
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The active plan, if any was ever applied.
    async fn active_plan(&self) -> StoreResult<Option<PlanRecord>>;
    async fn plan_version(&self, version: u64) -> StoreResult<Option<PlanRecord>>;
    /// Stores `plan` as the next version and makes it active. With `expected_version`,
    /// fails with [`StoreError::VersionConflict`] unless that version is active now
    /// (0 means "no plan yet"). Durable when it returns.
    /// A plan whose `request_id` was already used returns the first answer
    /// (`replayed`), checked before `expected_version`. The plan's audit entry is
    /// written in the same transaction.
    async fn apply_plan(
        &self,
        plan: NewPlan,
        expected_version: Option<u64>,
    ) -> StoreResult<AppliedPlan>;
    /// Every plan version with its document, oldest first (export).
    async fn all_plans(&self) -> StoreResult<Vec<PlanRecord>>;
    /// Plan versions below `before` (all when `None`), newest first, at most `limit`;
    /// `toml` is left empty (a listing, not the documents).
    async fn list_plans(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<PlanRecord>>;
    /// Forgets plan request ids recorded before `before`; returns how many. Durable
    /// when it returns.
    async fn prune_plan_requests(&self, before: DateTime<Utc>) -> StoreResult<usize>;

    /// Creates or replaces a customer. A phone number belongs to one customer: listing
    /// it here takes it off any other customer (the CRM's latest word wins). `audit` is
    /// written in the same transaction (its detail gets "created"/"updated" prefixed).
    /// Durable when it returns.
    async fn upsert_customer(
        &self,
        customer: Customer,
        audit: AuditEntry,
    ) -> StoreResult<UpsertOutcome>;
    /// `customer`, `customer_by_phone` and `recent_contacts` read on the calling
    /// thread and never wait on another task (sled: its trees; PostgreSQL: the read
    /// cache the backend keeps), so they are plain methods: RouteCall makes them
    /// without an await (or the boxed future each async method of this trait costs).
    fn customer(&self, id: &CustomerId) -> StoreResult<Option<Customer>>;
    /// Every customer, in id order (export).
    async fn all_customers(&self) -> StoreResult<Vec<Customer>>;
    fn customer_by_phone(&self, e164: &str) -> StoreResult<Option<Customer>>;
    /// Deletes a customer; `false` when there was none (then nothing is audited).
    /// `audit` is written in the same transaction. Durable when it returns.
    async fn delete_customer(&self, id: &CustomerId, audit: AuditEntry) -> StoreResult<bool>;

    /// Appends an entry to the audit log on its own, for changes whose own write is
    /// not in this store's transaction; prefer passing the entry with the change.
    /// Returns it with its `seq`. Durable when it returns.
    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditEntry>;
    /// Audit entries with `seq >= from`, oldest first, at most `limit`.
    async fn list_audit(&self, from: u64, limit: usize) -> StoreResult<Vec<AuditEntry>>;

    /// Creates or replaces the contact record of a call (keyed by call id). Durable
    /// when it returns.
    async fn record_contact(&self, contact: ContactRecord) -> StoreResult<()>;
    /// Like `record_contact`, and in the same durable write counts the call's KPIs
    /// (`metrics::kpi::contact_delta`, with the queue's service-level threshold
    /// `target_secs`) and marks earlier answered calls of the same customer or number
    /// within 7 days as not resolved at first contact.
    async fn record_call(&self, contact: ContactRecord, target_secs: f64) -> StoreResult<()>;
    /// Adds `delta` to a queue's counters in the interval holding `at`. Durable when it
    /// returns.
    async fn add_kpi(
        &self,
        queue_id: String,
        at: DateTime<Utc>,
        delta: KpiCounters,
    ) -> StoreResult<()>;
    /// Records the survey of a call in its queue and interval, at most once per call
    /// (atomic check). Durable when it returns.
    async fn submit_survey(
        &self,
        call_id: String,
        survey: Survey,
        at: DateTime<Utc>,
    ) -> StoreResult<SurveyOutcome>;
    /// Interval counters of one queue (or all) with interval start in `[from, to)`.
    async fn kpi_buckets(
        &self,
        queue_id: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<KpiBucket>>;
    /// Contacts of a customer (by id) and of a number, that entered a queue at or after
    /// `since`, newest first, at most `limit`.
    fn recent_contacts(
        &self,
        customer_id: Option<&str>,
        caller: Option<&str>,
        since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<ContactRecord>>;
    /// Contacts that entered a queue at or after `since`, newest first, at most
    /// `limit` (a full scan of the contact history, done off the async threads).
    async fn contacts_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<ContactRecord>>;
    /// Deletes contacts last updated before `before`; returns how many. Durable when
    /// it returns.
    async fn prune_contacts(&self, before: DateTime<Utc>) -> StoreResult<usize>;

    /// Creates a callback unless the principal's `request` key was seen before
    /// (returns the first answer, or [`StoreError::RequestIdReused`] when the
    /// fingerprint differs) or an open callback exists for the same phone and queue
    /// (returns it). Atomic across the three checks; durable when it returns.
    async fn create_callback(
        &self,
        callback: Callback,
        request: Option<RequestKey>,
    ) -> StoreResult<CallbackCreate>;
    /// Stores a changed callback (and counts its KPIs: `metrics::kpi::callback_delta`).
    /// Refused with [`StoreError::Stale`] unless the stored
    /// version is exactly one less (a concurrent change wins). Durable when it returns.
    async fn update_callback(&self, callback: Callback) -> StoreResult<()>;
    /// [`Store::update_callback`] for the change that records attempt `attempt_id`'s
    /// outcome, remembering (until pruned with the request ids) that it is settled.
    async fn settle_callback(&self, callback: Callback, attempt_id: String) -> StoreResult<()>;
    /// The callback id of a settled attempt, while it is remembered.
    async fn settled_attempt(&self, attempt_id: &str) -> StoreResult<Option<String>>;
    async fn callback(&self, id: &str) -> StoreResult<Option<Callback>>;
    /// The callback a principal's earlier request with this key answered with, if the
    /// key is remembered; [`StoreError::RequestIdReused`] when its fingerprint differs.
    /// Lets a retry get its first answer even when what the request named is gone
    /// (the offered call already left the line).
    async fn requested_callback(&self, request: &RequestKey) -> StoreResult<Option<Callback>>;
    /// Every pending or dispatched callback whole (export).
    async fn open_callbacks(&self) -> StoreResult<Vec<Callback>>;
    /// Calls `visit` with the index fields of every pending or dispatched callback, in
    /// no set order, reading only those fields (start-up and takeover rebuild the
    /// scheduler from them; records are read when a callback is acted on). Returns how
    /// many were visited. sled reads on the calling thread (outside the runtime's
    /// cooperative budget where the runtime allows it).
    async fn scan_open_callbacks(&self, visit: &mut OpenVisitor<'_>) -> StoreResult<u64>;
    /// About how many callbacks [`Store::scan_open_callbacks`] will visit, for sizing
    /// tables before it fills them: a figure the backend keeps anyway (PostgreSQL's
    /// statistics of its index of open callbacks, as of the last vacuum or analyze;
    /// sled's count kept when the store last closed), so it costs no scan and may be
    /// stale; never use it as a count. `None` (the default) when the backend has no
    /// such figure.
    async fn open_callbacks_estimate(&self) -> StoreResult<Option<u64>> {
        Ok(None)
    }
    /// Keeps the scheduler's warm-start image (its index of the open callbacks, as
    /// written at a clean stop) for the next start, which then reads it instead of
    /// [`Store::scan_open_callbacks`]. Called after the last change of the run and
    /// before [`Store::close`]. The store hands it out ([`Store::take_warm_image`])
    /// only if no callback changed after this call, whoever changed it; otherwise the
    /// next start scans. sled keeps it for the one opening after a clean close (its
    /// count of changes lives in the process, so a crash or any other opening voids
    /// it); PostgreSQL until it is taken or a callback is written (a statement
    /// trigger deletes it in the writer's transaction). The default keeps nothing.
    async fn save_warm_image(&self, image: Vec<u8>) -> StoreResult<()> {
        let _ = image;
        Ok(())
    }
    /// Whether [`Store::save_warm_image`] keeps anything (so a stop need not write an
    /// image the store would drop).
    fn keeps_warm_image(&self) -> bool {
        false
    }
    /// The image [`Store::save_warm_image`] kept, if it is still what the callbacks
    /// are; handed out once.
    async fn take_warm_image(&self) -> StoreResult<Option<Vec<u8>>> {
        Ok(None)
    }
    /// Callbacks in id (creation) order after `after`, at most `limit`.
    async fn list_callbacks(
        &self,
        filter: &CallbackFilter,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Callback>>;
    /// Folds the KPI counts a backend appends as deltas (PostgreSQL) into one record
    /// per queue and interval, so reads stay small; what `kpi_buckets` answers is the
    /// same before and after. Returns how many records were folded away. The leader's
    /// housekeeping calls it every few seconds; the default has nothing to fold.
    async fn fold_kpi_deltas(&self) -> StoreResult<u64> {
        Ok(0)
    }
    /// Forgets request ids and settled attempts older than `before`; returns how many.
    async fn prune_callback_requests(&self, before: DateTime<Utc>) -> StoreResult<usize>;
    /// Checks that the indexes the backend keeps beside the records (the dedupe index;
    /// on PostgreSQL its due index too) agree with them; returns a description of
    /// every disagreement (empty when consistent).
    async fn check_callback_indexes(&self) -> StoreResult<Vec<String>>;

    /// Restores an export: writes `import` (plan versions with their numbers and the
    /// active one, customers with their phone index, open callbacks with their due and
    /// dedupe indexes) all or nothing: a failure or crash leaves nothing behind (one
    /// transaction on PostgreSQL; durable batches under an "unfinished" mark on sled).
    /// Refused with [`StoreError::NotEmpty`] when the store already holds a plan, a
    /// customer or a callback, and with [`StoreError::BadImport`] when
    /// [`StoreImport::check`] fails. No audit entries or KPI counts are written (they
    /// are history, not state). Durable when it returns.
    async fn import(&self, import: StoreImport) -> StoreResult<RecordCounts>;

    /// [`Store::import`] for exports too large to hold in memory: `import` carries the
    /// plans and customers (its `callbacks` are written first), and `batches` the open
    /// callbacks, already checked by the caller ([`crate::export::read_with`]), a
    /// batch at a time. An `Err` batch, or a channel that closes after fewer than
    /// `expected_callbacks` (a reader that failed), aborts the import. Same refusals
    /// and the same all-or-nothing outcome as `import`: a backend that writes the
    /// batches one by one must make a failed or interrupted import leave nothing
    /// behind. This default collects the batches and calls `import` (one transaction).
    async fn import_batches(
        &self,
        mut import: StoreImport,
        expected_callbacks: u64,
        mut batches: tokio::sync::mpsc::Receiver<StoreResult<Vec<Callback>>>,
    ) -> StoreResult<RecordCounts> {
        while let Some(batch) = batches.recv().await {
            import.callbacks.extend(batch?);
        }
        if u64::try_from(import.callbacks.len()).unwrap_or(u64::MAX) != expected_callbacks {
            return Err(StoreError::BadImport(format!(
                "expected {expected_callbacks} callbacks, the reader gave {}",
                import.callbacks.len()
            )));
        }
        self.import(import).await
    }

    /// Waits until everything written so far is durable, and every write begun so far
    /// has its outcome in the store (a create whose caller gave up included).
    async fn flush(&self) -> StoreResult<()>;

    /// Makes everything durable and stops background work; later writes fail with
    /// [`StoreError::Closed`]. The last handle dropped releases the store's lock.
    async fn close(&self);
}
