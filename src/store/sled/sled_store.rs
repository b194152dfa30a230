//! The embedded store over sled 0.34. Every change runs on the committer's single
//! applier thread (short transactions or atomic batches, never on the async threads,
//! never across an `.await`); durability comes from the group committer's flusher.
//!
//! Layout (values are JSON):
//! - `plans`: version (u64 big-endian) -> [`PlanRecord`]
//! - `plan_requests`: request id -> [`PlanRequest`] (idempotency keys of plan changes)
//! - `meta`: `active_plan` -> u64 big-endian; `audit_seq` -> last audit seq, u64 BE
//! - `audit`: seq (u64 big-endian) -> [`AuditEntry`], append-only
//! - `customers`: customer id -> [`Customer`]
//! - `customer_phones`: E.164 -> customer id
//! - `contacts`: call id -> [`ContactRecord`]
//! - `contacts_by_party`: `c:<customer id>` or `p:<E.164>`, 0x00, enqueue time (i64
//!   milliseconds, big-endian, sign bit flipped), call id -> empty
//! - `callbacks`: see `store::callbacks`; `kpi`: see `store::kpi`

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

use super::committer::{CommitStats, Committer};
use super::known::KnownNumbers;
use super::kpi::get_tx;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::audit::AuditEntry;
use crate::domain::callback::Callback;
use crate::domain::contact::ContactRecord;
use crate::domain::{Customer, CustomerId};
use crate::metrics::kpi::{KpiCounters, Survey};
use crate::store::{
    AppliedPlan, CallbackCreate, CallbackFilter, KpiBucket, NewPlan, PlanRecord, RecordCounts,
    RequestKey, Store, StoreError, StoreImport, StoreResult, SurveyOutcome, UpsertOutcome,
};
use crate::sync::lock;

const ACTIVE_PLAN: &[u8] = b"active_plan";
const AUDIT_SEQ: &[u8] = b"audit_seq";
/// In `meta` while an import is being written. An import writes its callbacks in
/// batches, each durable on its own, so a crash can leave some of them behind; the
/// mark says so, and [`SledStore::open`] removes them (the store was empty before an
/// import, so that restores it exactly). Import stays all-or-nothing.
const IMPORT_UNFINISHED: &[u8] = b"import_unfinished";
/// `meta` key: about how many callbacks are open (u64, big-endian): the last start-up
/// scan's count plus the callbacks created and imported since, written when the store
/// closes, so the next start can size its tables before scanning (sled keeps no count
/// of its own, and counting is a scan). A crash keeps the figure of the close before.
const OPEN_ESTIMATE: &[u8] = b"open_callbacks_estimate";
/// `meta` key: the scheduler's warm-start image in [`WARM_IMAGE_FILE`] is what the
/// callbacks are (u64, big-endian: the number the file starts with). Written at a
/// clean close only when no callback changed after the image was saved, and removed
/// (durably) by the next open before anything else, so a store that was written to
/// after its last clean close never has it (see [`Store::save_warm_image`]).
const WARM_IMAGE: &[u8] = b"warm_image";
/// The scheduler's warm-start image, in the store's directory.
const WARM_IMAGE_FILE: &str = "warm-start.image";
/// Records deleted per writer job when pruning: each job is short, so durable writes
/// queued behind it wait a few milliseconds at most.
pub(crate) const PRUNE_CHUNK: usize = 1_000;

/// What a plan request id produced, kept for the idempotency retention.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlanRequest {
    version: u64,
    at: DateTime<Utc>,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

fn tx_u64(v: Option<sled::IVec>) -> TxResult<u64> {
    match v {
        None => Ok(0),
        Some(v) => match u64_of(&v) {
            Ok(v) => Ok(v),
            Err(e) => abort(e),
        },
    }
}

fn tx_decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    match decode(bytes) {
        Ok(v) => Ok(v),
        Err(e) => abort(e),
    }
}

/// Appends an audit entry inside a transaction: the next seq comes from `meta`, so
/// entries are numbered in commit order.
fn tx_audit(
    audit: &TransactionalTree,
    meta: &TransactionalTree,
    mut entry: AuditEntry,
) -> TxResult<AuditEntry> {
    let seq = tx_u64(meta.get(AUDIT_SEQ)?)? + 1;
    entry.seq = seq;
    meta.insert(AUDIT_SEQ, &seq.to_be_bytes())?;
    audit.insert(&seq.to_be_bytes(), encode(&entry))?;
    Ok(entry)
}

#[derive(Clone)]
pub struct SledStore {
    plans: sled::Tree,
    plan_requests: sled::Tree,
    meta: sled::Tree,
    audit: sled::Tree,
    customers: sled::Tree,
    phones: sled::Tree,
    pub(crate) contacts: sled::Tree,
    pub(crate) contacts_by_party: sled::Tree,
    pub(crate) kpi: sled::Tree,
    pub(crate) trees: Arc<CallbackTrees>,
    /// KPI deltas of the batch being applied, per bucket key (writer thread only).
    pub(crate) kpi_pending:
        Arc<std::sync::Mutex<std::collections::HashMap<Vec<u8>, crate::metrics::kpi::KpiCounters>>>,
    /// Callback changes of the group being applied (writer thread only).
    pub(crate) staged: Arc<super::callbacks::Staged>,
    committer: Arc<Committer>,
    /// Every number in `phones` and in the callers of `contacts_by_party` (see
    /// `store::known`): a number not in it has no customer and no contacts.
    pub(crate) known: Arc<KnownNumbers>,
    warm: Arc<WarmImage>,
}

/// The callback tree (see `store::callbacks`).
pub(crate) struct CallbackTrees {
    pub callbacks: sled::Tree,
    /// Open callbacks, roughly: the last start-up scan's count plus every callback
    /// created or imported since (closed ones are not taken off). Kept in `meta` at
    /// [`OPEN_ESTIMATE`] for [`Store::open_callbacks_estimate`].
    pub open_estimate: std::sync::atomic::AtomicU64,
    /// Changes of callbacks applied since the store opened (writer thread): a
    /// warm-start image saved at one count is the store's only while it holds.
    pub changes: std::sync::atomic::AtomicU64,
}

/// The warm-start image's bookkeeping (see [`WARM_IMAGE`]).
pub(crate) struct WarmImage {
    /// The file.
    file: std::path::PathBuf,
    /// The number [`WARM_IMAGE`] held when this store opened: the file is the image
    /// of the callbacks as opened, if it starts with it.
    found: std::sync::Mutex<Option<u64>>,
    /// The image saved by this run: its number, and the callback changes then.
    saved: std::sync::Mutex<Option<(u64, u64)>>,
}

pub(crate) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(corrupt)
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("domain records serialize to JSON")
}

fn u64_of(bytes: &[u8]) -> StoreResult<u64> {
    <[u8; 8]>::try_from(bytes)
        .map(u64::from_be_bytes)
        .map_err(|_| corrupt("u64 key is not 8 bytes"))
}

/// Maps a transaction's outcome: our own aborts carry a [`StoreError`].
pub(crate) fn tx_result<T>(r: Result<T, TransactionError<StoreError>>) -> StoreResult<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => io(e),
    })
}

pub(crate) fn abort<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Creates the store directory (and missing parents) readable by the owner only: the
/// store holds customer names, numbers and notes, and sled creates its files with the
/// process umask (0644 under the usual 022), so the directory is what keeps them private.
/// An existing directory keeps the mode the operator gave it (a backup group, a
/// systemd `StateDirectoryMode`); one that others may enter gets a warning.
fn private_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !path.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)?;
        }
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o007 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the store directory is open to other users; customer data should be 0700"
            );
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(path)
}

/// Makes the files sled created (and its `blobs` directory) owner-only: 0600 and
/// 0700. Files sled creates later (snapshots) get the umask's mode but sit inside
/// the directory [`private_dir`] made unreachable to others.
fn private_files(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fn walk(dir: &Path, depth: u8) -> std::io::Result<()> {
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700))?;
                    if depth > 0 {
                        walk(&entry.path(), depth - 1)?;
                    }
                } else if kind.is_file() {
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
                }
            }
            Ok(())
        }
        // sled's layout is flat: conf, db, snapshots, and blobs/ one level down.
        walk(path, 1)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Writes the warm-start image durably: `number`, then the image, in a file renamed
/// into place once synced (a crash leaves the old file or none, never half of one;
/// the mark in `meta` decides whether either is used).
fn write_warm_image(file: &Path, number: u64, image: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension("tmp");
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(true);
    // Numbers of customers: owner-only, as the rest of the store.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let mut f = open.open(&tmp)?;
    f.write_all(&number.to_be_bytes())?;
    f.write_all(image)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl SledStore {
    /// Opens (or creates) the store in `path` and starts its writer threads. Blocking,
    /// so call it from `spawn_blocking` on a busy runtime. Call [`Store::close`] before
    /// dropping the last handle: the writer threads hold the database open until then.
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with_cache(path, crate::config::DEFAULT_STORE_CACHE_MB * 1024 * 1024)
    }

    /// [`SledStore::open`] with a page cache of `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> StoreResult<Self> {
        private_dir(path).map_err(io)?;
        let started = std::time::Instant::now();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match e {
                // sled takes an exclusive flock on its data file; another process
                // holding it (a running server) surfaces only as this message.
                sled::Error::Io(ref err) if err.to_string().contains("could not acquire lock") => {
                    StoreError::InUse {
                        path: path.display().to_string(),
                    }
                }
                other => io(other),
            })?;
        let data_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path.join("db"))
            .map_err(io)?;
        private_files(path).map_err(io)?;
        tracing::info!(
            open_ms = started.elapsed().as_millis() as u64,
            rss_mb = crate::memory::resident_mb(),
            "store opened"
        );
        let callbacks = db.open_tree("callbacks").map_err(io)?;
        let meta = db.open_tree("meta").map_err(io)?;
        // Start-up repairs are made durable before anything else is written.
        let durable = || -> StoreResult<()> {
            db.flush().map_err(io)?;
            data_file.sync_data().map_err(io)
        };
        // The warm-start image is good for this opening only: its mark goes first.
        let warm_file = path.join(WARM_IMAGE_FILE);
        let found = match meta.remove(WARM_IMAGE).map_err(io)? {
            Some(mark) => {
                durable()?;
                <[u8; 8]>::try_from(&*mark).ok().map(u64::from_be_bytes)
            }
            None => {
                // Left by a run that did not close cleanly, or already used.
                let _ = std::fs::remove_file(&warm_file);
                None
            }
        };
        if meta.contains_key(IMPORT_UNFINISHED).map_err(io)? {
            let n = super::callbacks::remove_imported(&callbacks)?;
            meta.remove(IMPORT_UNFINISHED).map_err(io)?;
            durable()?;
            tracing::warn!(
                removed = n,
                "an import into this store did not finish: the callbacks it wrote are \
                 removed and the store is empty again; run the import again"
            );
        }
        let dropping = std::time::Instant::now();
        let dropped = super::callbacks::drop_due_index(&callbacks)?;
        if dropped > 0 {
            durable()?;
            tracing::info!(
                entries = dropped,
                ms = dropping.elapsed().as_millis() as u64,
                "removed the due index an earlier release kept (once; nothing reads it)"
            );
        }
        let phones = db.open_tree("customer_phones").map_err(io)?;
        let contacts_by_party = db.open_tree("contacts_by_party").map_err(io)?;
        let known = Arc::new(known_numbers(&phones, &contacts_by_party)?);
        let store = Self {
            plans: db.open_tree("plans").map_err(io)?,
            plan_requests: db.open_tree("plan_requests").map_err(io)?,
            meta,
            audit: db.open_tree("audit").map_err(io)?,
            customers: db.open_tree("customers").map_err(io)?,
            phones,
            contacts: db.open_tree("contacts").map_err(io)?,
            contacts_by_party,
            kpi: db.open_tree("kpi").map_err(io)?,
            kpi_pending: Default::default(),
            staged: Default::default(),
            trees: Arc::new(CallbackTrees {
                callbacks,
                open_estimate: Default::default(),
                changes: Default::default(),
            }),
            committer: Arc::new(Committer::new()),
            known,
            warm: Arc::new(WarmImage {
                file: warm_file,
                found: std::sync::Mutex::new(found),
                saved: Default::default(),
            }),
        };
        store.committer.start(store.clone(), db, data_file)?;
        Ok(store)
    }

    /// Marks the warm-start image `number` as the store's, unless a callback changed
    /// after it was saved (at `changes`). Writer thread.
    fn note_warm_image(&self, number: u64, changes: u64) -> StoreResult<bool> {
        if self
            .trees
            .changes
            .load(std::sync::atomic::Ordering::Relaxed)
            != changes
        {
            return Ok(false);
        }
        self.meta
            .insert(WARM_IMAGE, &number.to_be_bytes())
            .map_err(io)?;
        Ok(true)
    }

    /// Keeps `n` as the estimate of open callbacks (see [`OPEN_ESTIMATE`]); durable
    /// with the writer's next flush.
    pub(crate) fn note_open_estimate(&self, n: u64) -> StoreResult<()> {
        self.meta
            .insert(OPEN_ESTIMATE, &n.to_be_bytes())
            .map_err(io)?;
        Ok(())
    }

    /// Group-commit counters (flushes done, writers acknowledged).
    pub fn commit_stats(&self) -> Arc<CommitStats> {
        self.committer.stats.clone()
    }

    /// Applies `f` (a short sled transaction) on the writer thread and returns its
    /// result once the change is durable.
    /// Runs a read-only scan on the blocking pool (never on the writer thread).
    pub(crate) async fn scan<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce() -> StoreResult<T> + Send + 'static,
    {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| io(format!("scan task failed: {e}")))?
    }

    /// Runs `job` on the writer thread over `keys` (found by a read-only scan) in
    /// chunks of [`PRUNE_CHUNK`], so durable writes queued meanwhile wait little.
    /// Returns the sum of what the jobs return.
    pub(crate) async fn in_jobs<F>(&self, keys: Vec<sled::IVec>, job: F) -> StoreResult<usize>
    where
        F: Fn(&SledStore, &[sled::IVec]) -> StoreResult<usize> + Clone + Send + 'static,
    {
        let mut done = 0;
        for chunk in keys.chunks(PRUNE_CHUNK) {
            let chunk = chunk.to_vec();
            let job = job.clone();
            done += self.write(move |s| job(s, &chunk)).await?;
        }
        Ok(done)
    }

    /// Removes `keys` (found by a read-only scan) from the tree `tree` picks, in writer
    /// jobs (see [`SledStore::in_jobs`]). Returns how many keys it was given.
    pub(crate) async fn remove_in_jobs(
        &self,
        tree: fn(&SledStore) -> &sled::Tree,
        keys: Vec<sled::IVec>,
    ) -> StoreResult<usize> {
        self.in_jobs(keys, move |s, chunk| {
            let mut batch = sled::Batch::default();
            for k in chunk {
                batch.remove(k.clone());
            }
            tree(s).apply_batch(batch).map_err(io)?;
            Ok(chunk.len())
        })
        .await
    }

    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&SledStore) -> StoreResult<T> + Send + 'static,
    {
        self.committer.write(f).await
    }

    fn read_customer(
        tree: &TransactionalTree,
        id: &[u8],
    ) -> Result<Option<Customer>, ConflictableTransactionError<StoreError>> {
        match tree.get(id)? {
            None => Ok(None),
            Some(v) => match decode(&v) {
                Ok(c) => Ok(Some(c)),
                Err(e) => abort(e),
            },
        }
    }
}

impl SledStore {
    /// Runs on the writer thread only, so the emptiness check and the mark cannot race
    /// another write: refuses a store that holds anything, then marks it as holding
    /// an unfinished import (durable before the first batch is written).
    fn begin_import_blocking(&self) -> StoreResult<()> {
        let mut held = Vec::new();
        if !self.plans.is_empty() {
            held.push("plans");
        }
        if !self.customers.is_empty() {
            held.push("customers");
        }
        if self.has_callbacks()? {
            held.push("callbacks");
        }
        if !held.is_empty() {
            return Err(StoreError::NotEmpty {
                what: held.join(", "),
            });
        }
        self.meta
            .insert(IMPORT_UNFINISHED, &[] as &[u8])
            .map_err(io)?;
        Ok(())
    }

    /// Runs on the writer thread only. The last step of an import: plans, the active
    /// version, customers and their numbers, and the end of the unfinished mark, in one
    /// transaction. The plans come last, so a store cut short never looks restored.
    fn finish_import_blocking(&self, import: &StoreImport) -> StoreResult<()> {
        let r = (&self.plans, &self.meta, &self.customers, &self.phones).transaction(
            |(plans, meta, customers, phones)| {
                for p in &import.plans {
                    plans.insert(&p.version.to_be_bytes(), encode(p))?;
                }
                if let Some(active) = import.active_version {
                    meta.insert(ACTIVE_PLAN, &active.to_be_bytes())?;
                }
                for c in &import.customers {
                    let id = c.id.as_str().as_bytes();
                    for p in &c.phones {
                        phones.insert(p.as_bytes(), id)?;
                    }
                    customers.insert(id, encode(c))?;
                }
                meta.remove(IMPORT_UNFINISHED)?;
                Ok(())
            },
        );
        tx_result(r)?;
        for p in import.customers.iter().flat_map(|c| &c.phones) {
            self.known.insert(p);
        }
        Ok(())
    }

    /// Runs on the writer thread only: removes what an import that failed wrote, and
    /// its mark.
    fn abandon_import_blocking(&self) -> StoreResult<u64> {
        let n = super::callbacks::remove_imported(&self.trees.callbacks)?;
        self.meta.remove(IMPORT_UNFINISHED).map_err(io)?;
        Ok(n)
    }

    /// The import both `import` and `import_batches` run: the mark, `first` and then
    /// each batch as its own durable writer job (memory stays bounded by a batch, and
    /// no job holds the writer long), then the plans and customers. On any failure
    /// the callbacks written are removed again; a crash on the way leaves the mark,
    /// and the next [`SledStore::open`] removes them (see [`IMPORT_UNFINISHED`]).
    async fn import_in_batches(
        &self,
        head: StoreImport,
        first: Vec<Callback>,
        expected_callbacks: u64,
        mut batches: tokio::sync::mpsc::Receiver<StoreResult<Vec<Callback>>>,
    ) -> StoreResult<RecordCounts> {
        self.write(|s| s.begin_import_blocking()).await?;
        let written = async {
            let mut n = 0u64;
            for chunk in chunks(first) {
                n += self
                    .write(move |s| s.import_callbacks_blocking(&chunk))
                    .await?;
            }
            while let Some(batch) = batches.recv().await {
                let batch = batch?;
                n += self
                    .write(move |s| s.import_callbacks_blocking(&batch))
                    .await?;
            }
            if n != expected_callbacks {
                return Err(StoreError::BadImport(format!(
                    "expected {expected_callbacks} callbacks, {n} arrived"
                )));
            }
            let head = Arc::new(head);
            let h = head.clone();
            self.write(move |s| s.finish_import_blocking(&h)).await?;
            let mut counts = head.counts();
            counts.callbacks = n;
            Ok(counts)
        }
        .await;
        if written.is_err() {
            if let Err(e) = self.write(|s| s.abandon_import_blocking()).await {
                tracing::warn!(
                    error = %e,
                    "cannot remove what the failed import wrote; the next open removes it"
                );
            }
        }
        written
    }
}

/// Callbacks written per writer job when [`Store::import`] is given them all at once.
const IMPORT_CHUNK: usize = 10_000;

fn chunks(mut v: Vec<Callback>) -> Vec<Vec<Callback>> {
    let mut out = Vec::new();
    while v.len() > IMPORT_CHUNK {
        let rest = v.split_off(IMPORT_CHUNK);
        out.push(std::mem::replace(&mut v, rest));
    }
    if !v.is_empty() {
        out.push(v);
    }
    out
}

/// The filter of every number the store holds: customers' phones and the callers of
/// the contact index (`p:<number>` keys), read once.
fn known_numbers(phones: &sled::Tree, contacts_by_party: &sled::Tree) -> StoreResult<KnownNumbers> {
    let mut numbers: Vec<Vec<u8>> = Vec::new();
    for k in phones.iter().keys() {
        numbers.push(k.map_err(io)?.to_vec());
    }
    let mut last: Option<Vec<u8>> = None;
    for k in contacts_by_party.scan_prefix(b"p:").keys() {
        let k = k.map_err(io)?;
        let rest = k.get(2..).unwrap_or_default();
        let number = &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())];
        // A caller's contacts are adjacent in the index: each number once.
        if last.as_deref() != Some(number) {
            numbers.push(number.to_vec());
            last = Some(number.to_vec());
        }
    }
    Ok(KnownNumbers::build(
        numbers.iter().map(|n| String::from_utf8_lossy(n)),
    ))
}

/// Index keys of a contact: one per party (customer, number).
pub(crate) fn party_keys(c: &ContactRecord) -> Vec<Vec<u8>> {
    let time = (c.enqueued_at.timestamp_millis() as u64 ^ (1 << 63)).to_be_bytes();
    let mut keys = Vec::with_capacity(2);
    let parties = [
        c.customer_id.as_deref().map(|id| format!("c:{id}")),
        c.caller.as_deref().map(|p| format!("p:{p}")),
    ];
    for party in parties.into_iter().flatten() {
        let mut k = party.into_bytes();
        k.push(0);
        k.extend_from_slice(&time);
        k.extend_from_slice(c.call_id.as_bytes());
        keys.push(k);
    }
    keys
}

/// The newest (at most `limit`) calls of `party` (`c:<customer id>` or `p:<number>`)
/// entered at or after `since` in the contact index, newest first, as (entered, call id).
pub(crate) fn party_contacts_newest(
    index: &sled::Tree,
    party: &str,
    since: DateTime<Utc>,
    limit: usize,
) -> StoreResult<Vec<(DateTime<Utc>, Vec<u8>)>> {
    let from = (since.timestamp_millis() as u64 ^ (1 << 63)).to_be_bytes();
    let mut start = party.as_bytes().to_vec();
    start.push(0);
    let mut end = start.clone();
    if let Some(last) = end.last_mut() {
        *last = 1;
    }
    start.extend_from_slice(&from);
    let short = || corrupt("contact index key too short");
    let mut out = Vec::new();
    for item in index.range(start..end).rev().take(limit) {
        let (k, _) = item.map_err(io)?;
        let sep = k.iter().position(|&b| b == 0).ok_or_else(short)?;
        let time: [u8; 8] = k
            .get(sep + 1..sep + 9)
            .and_then(|t| t.try_into().ok())
            .ok_or_else(short)?;
        let millis = (u64::from_be_bytes(time) ^ (1 << 63)) as i64;
        let at = DateTime::from_timestamp_millis(millis).ok_or_else(short)?;
        let call_id = k.get(sep + 9..).ok_or_else(short)?;
        out.push((at, call_id.to_vec()));
    }
    Ok(out)
}

pub(crate) fn content_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[async_trait]
impl Store for SledStore {
    async fn active_plan(&self) -> StoreResult<Option<PlanRecord>> {
        let Some(v) = self.meta.get(ACTIVE_PLAN).map_err(io)? else {
            return Ok(None);
        };
        self.plan_version(u64_of(&v)?).await
    }

    async fn plan_version(&self, version: u64) -> StoreResult<Option<PlanRecord>> {
        self.plans
            .get(version.to_be_bytes())
            .map_err(io)?
            .map(|v| decode(&v))
            .transpose()
    }

    async fn apply_plan(
        &self,
        plan: NewPlan,
        expected_version: Option<u64>,
    ) -> StoreResult<AppliedPlan> {
        self.write(move |s| {
            let hash = content_hash(&plan.toml);
            let r = (&s.plans, &s.meta, &s.audit, &s.plan_requests).transaction(
                |(plans, meta, audit, requests)| {
                    if let Some(id) = &plan.request_id {
                        if let Some(seen) = requests.get(id.as_bytes())? {
                            let seen: PlanRequest = tx_decode(&seen)?;
                            let Some(first) = plans.get(seen.version.to_be_bytes())? else {
                                return abort(corrupt(format!(
                                    "request {id} names missing plan version {}",
                                    seen.version
                                )));
                            };
                            return Ok(AppliedPlan {
                                record: tx_decode(&first)?,
                                replayed: true,
                            });
                        }
                    }
                    let active = tx_u64(meta.get(ACTIVE_PLAN)?)?;
                    if let Some(expected) = expected_version {
                        if expected != active {
                            return abort(StoreError::VersionConflict {
                                expected,
                                actual: active,
                            });
                        }
                    }
                    // Versions only grow, also after a rollback made an old one active.
                    let mut next = active + 1;
                    while plans.get(next.to_be_bytes())?.is_some() {
                        next += 1;
                    }
                    let record = PlanRecord {
                        version: next,
                        author: plan.author.clone(),
                        comment: plan.comment.clone(),
                        created_at: plan.created_at,
                        content_hash: hash.clone(),
                        toml: plan.toml.clone(),
                    };
                    plans.insert(&next.to_be_bytes(), encode(&record))?;
                    meta.insert(ACTIVE_PLAN, &next.to_be_bytes())?;
                    if let Some(id) = &plan.request_id {
                        let seen = PlanRequest {
                            version: next,
                            at: plan.created_at,
                        };
                        requests.insert(id.as_bytes(), encode(&seen))?;
                    }
                    let mut entry = plan.audit.clone();
                    entry.target = format!("plan v{next}");
                    tx_audit(audit, meta, entry)?;
                    Ok(AppliedPlan {
                        record,
                        replayed: false,
                    })
                },
            );
            tx_result(r)
        })
        .await
    }

    async fn all_plans(&self) -> StoreResult<Vec<PlanRecord>> {
        let plans = self.plans.clone();
        tokio::task::spawn_blocking(move || {
            plans
                .iter()
                .values()
                .map(|v| decode(&v.map_err(io)?))
                .collect()
        })
        .await
        .map_err(|e| io(format!("read task failed: {e}")))?
    }

    async fn list_plans(&self, before: Option<u64>, limit: usize) -> StoreResult<Vec<PlanRecord>> {
        let end = before.unwrap_or(u64::MAX).to_be_bytes();
        let mut out = Vec::new();
        for item in self.plans.range(..end).rev().take(limit) {
            let (_, v) = item.map_err(io)?;
            let mut r: PlanRecord = decode(&v)?;
            r.toml = String::new();
            out.push(r);
        }
        Ok(out)
    }

    async fn prune_plan_requests(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        self.write(move |s| {
            let mut pruned = 0;
            for item in s.plan_requests.iter() {
                let (k, v) = item.map_err(io)?;
                let seen: PlanRequest = decode(&v)?;
                if seen.at < before {
                    s.plan_requests.remove(k).map_err(io)?;
                    pruned += 1;
                }
            }
            Ok(pruned)
        })
        .await
    }

    async fn upsert_customer(
        &self,
        customer: Customer,
        audit: AuditEntry,
    ) -> StoreResult<UpsertOutcome> {
        crate::store::check_unique_phones(&customer)?;
        for p in &customer.phones {
            self.known.insert(p);
        }
        self.write(move |s| {
            let r = (&s.customers, &s.phones, &s.audit, &s.meta).transaction(
                |(customers, phones, audit_tree, meta)| {
                    let id = customer.id.as_str().as_bytes();
                    let existing = Self::read_customer(customers, id)?;
                    if let Some(old) = &existing {
                        for p in old.phones.iter().filter(|p| !customer.phones.contains(p)) {
                            if phones.get(p.as_bytes())?.as_deref() == Some(id) {
                                phones.remove(p.as_bytes())?;
                            }
                        }
                    }
                    for p in &customer.phones {
                        if let Some(owner) = phones.get(p.as_bytes())? {
                            if owner.as_ref() != id {
                                // The number moved to this customer: take it off the other.
                                if let Some(mut other) = Self::read_customer(customers, &owner)? {
                                    other.phones.retain(|q| q != p);
                                    customers.insert(owner.as_ref(), encode(&other))?;
                                }
                            }
                        }
                        phones.insert(p.as_bytes(), id)?;
                    }
                    customers.insert(id, encode(&customer))?;
                    let mut entry = audit.clone();
                    let what = if existing.is_none() {
                        "created"
                    } else {
                        "updated"
                    };
                    entry.detail = if entry.detail.is_empty() {
                        what.to_owned()
                    } else {
                        format!("{what}: {}", entry.detail)
                    };
                    tx_audit(audit_tree, meta, entry)?;
                    Ok(UpsertOutcome {
                        customer: customer.clone(),
                        created: existing.is_none(),
                    })
                },
            );
            tx_result(r)
        })
        .await
    }

    fn customer(&self, id: &CustomerId) -> StoreResult<Option<Customer>> {
        self.customers
            .get(id.as_str().as_bytes())
            .map_err(io)?
            .map(|v| decode(&v))
            .transpose()
    }

    async fn all_customers(&self) -> StoreResult<Vec<Customer>> {
        let customers = self.customers.clone();
        tokio::task::spawn_blocking(move || {
            customers
                .iter()
                .values()
                .map(|v| decode(&v.map_err(io)?))
                .collect()
        })
        .await
        .map_err(|e| io(format!("read task failed: {e}")))?
    }

    fn customer_by_phone(&self, e164: &str) -> StoreResult<Option<Customer>> {
        if !self.known.may_contain(e164) {
            return Ok(None);
        }
        let Some(id) = self.phones.get(e164.as_bytes()).map_err(io)? else {
            return Ok(None);
        };
        self.customers
            .get(id)
            .map_err(io)?
            .map(|v| decode(&v))
            .transpose()
    }

    async fn delete_customer(&self, id: &CustomerId, audit: AuditEntry) -> StoreResult<bool> {
        let id = id.clone();
        self.write(move |s| {
            let r = (&s.customers, &s.phones, &s.audit, &s.meta).transaction(
                |(customers, phones, audit_tree, meta)| {
                    let key = id.as_str().as_bytes();
                    let Some(old) = Self::read_customer(customers, key)? else {
                        return Ok(false);
                    };
                    for p in &old.phones {
                        if phones.get(p.as_bytes())?.as_deref() == Some(key) {
                            phones.remove(p.as_bytes())?;
                        }
                    }
                    customers.remove(key)?;
                    tx_audit(audit_tree, meta, audit.clone())?;
                    Ok(true)
                },
            );
            tx_result(r)
        })
        .await
    }

    async fn record_contact(&self, contact: ContactRecord) -> StoreResult<()> {
        self.write(move |s| s.record_call_blocking(contact, None))
            .await
    }

    async fn record_call(&self, contact: ContactRecord, target_secs: f64) -> StoreResult<()> {
        self.write(move |s| s.record_call_blocking(contact, Some(target_secs)))
            .await
    }

    async fn add_kpi(
        &self,
        queue_id: String,
        at: DateTime<Utc>,
        delta: KpiCounters,
    ) -> StoreResult<()> {
        self.write(move |s| s.add_kpi_blocking(&queue_id, at, &delta))
            .await
    }

    async fn submit_survey(
        &self,
        call_id: String,
        survey: Survey,
        at: DateTime<Utc>,
    ) -> StoreResult<SurveyOutcome> {
        self.write(move |s| s.submit_survey_blocking(&call_id, survey, at))
            .await
    }

    async fn kpi_buckets(
        &self,
        queue_id: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<Vec<KpiBucket>> {
        let this = self.clone();
        let queue_id = queue_id.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            this.kpi_buckets_blocking(queue_id.as_deref(), from, to)
        })
        .await
        .map_err(|e| io(format!("read task failed: {e}")))?
    }

    fn recent_contacts(
        &self,
        customer_id: Option<&str>,
        caller: Option<&str>,
        since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<ContactRecord>> {
        // Each party's newest `limit` are enough: the merged newest `limit` are among
        // them. Reading newest first keeps a frequent caller's routing as cheap as a
        // first-time caller's, however many calls their week holds.
        let mut ids = std::collections::BTreeSet::new();
        let parties = [
            customer_id.map(|id| format!("c:{id}")),
            caller
                .filter(|p| self.known.may_contain(p))
                .map(|p| format!("p:{p}")),
        ];
        for party in parties.into_iter().flatten() {
            for (_, call_id) in
                party_contacts_newest(&self.contacts_by_party, &party, since, limit)?
            {
                ids.insert(call_id);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = self.contacts.get(&id).map_err(io)? {
                out.push(decode::<ContactRecord>(&v)?);
            }
        }
        out.sort_by(|a, b| {
            b.enqueued_at
                .cmp(&a.enqueued_at)
                .then(b.call_id.cmp(&a.call_id))
        });
        out.truncate(limit);
        Ok(out)
    }

    async fn contacts_since(
        &self,
        since: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<Vec<ContactRecord>> {
        let contacts = self.contacts.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for item in contacts.iter() {
                let (_, v) = item.map_err(io)?;
                let c: ContactRecord = decode(&v)?;
                if c.enqueued_at >= since {
                    out.push(c);
                }
            }
            out.sort_by(|a, b| {
                b.enqueued_at
                    .cmp(&a.enqueued_at)
                    .then(b.call_id.cmp(&a.call_id))
            });
            out.truncate(limit);
            Ok(out)
        })
        .await
        .map_err(|e| io(format!("scan task failed: {e}")))?
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<AuditEntry> {
        self.write(move |s| {
            let r = (&s.audit, &s.meta)
                .transaction(|(audit, meta)| tx_audit(audit, meta, entry.clone()));
            tx_result(r)
        })
        .await
    }

    async fn list_audit(&self, from: u64, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for item in self.audit.range(from.to_be_bytes()..).take(limit) {
            let (_, v) = item.map_err(io)?;
            out.push(decode(&v)?);
        }
        Ok(out)
    }

    async fn prune_contacts(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        // Found by a read-only scan off the writer thread, deleted in short writer
        // jobs: a month of history is never walked while durable writes wait.
        let this = self.clone();
        let old = self
            .scan(move || {
                let mut old = Vec::new();
                for item in this.contacts.iter() {
                    let (k, v) = item.map_err(io)?;
                    if decode::<ContactRecord>(&v)?.updated_at < before {
                        old.push(k);
                    }
                }
                Ok(old)
            })
            .await?;
        let pruned = self
            .in_jobs(old, move |s, chunk| {
                let r = (&s.contacts, &s.contacts_by_party).transaction(|(contacts, index)| {
                    let mut n = 0;
                    for k in chunk {
                        // Updated since the scan: kept.
                        let Some(c) = get_tx::<ContactRecord>(contacts, k)? else {
                            continue;
                        };
                        if c.updated_at >= before {
                            continue;
                        }
                        for pk in party_keys(&c) {
                            index.remove(pk)?;
                        }
                        contacts.remove(k)?;
                        n += 1;
                    }
                    Ok(n)
                });
                tx_result(r)
            })
            .await?;
        self.prune_kpi_marks(before).await?;
        Ok(pruned)
    }

    async fn create_callback(
        &self,
        callback: Callback,
        request: Option<RequestKey>,
    ) -> StoreResult<CallbackCreate> {
        self.committer
            .write_staged(move |s| s.create_callback_blocking(callback, request))
            .await
    }

    async fn update_callback(&self, callback: Callback) -> StoreResult<()> {
        self.committer
            .write_staged(move |s| s.update_callback_blocking(callback, None))
            .await
    }

    async fn settle_callback(&self, callback: Callback, attempt_id: String) -> StoreResult<()> {
        self.committer
            .write_staged(move |s| s.update_callback_blocking(callback, Some(&attempt_id)))
            .await
    }

    async fn settled_attempt(&self, attempt_id: &str) -> StoreResult<Option<String>> {
        self.settled_attempt_blocking(attempt_id)
    }

    async fn callback(&self, id: &str) -> StoreResult<Option<Callback>> {
        self.get_callback(id)
    }

    async fn requested_callback(&self, request: &RequestKey) -> StoreResult<Option<Callback>> {
        self.requested_callback_blocking(request)
    }

    async fn open_callbacks(&self) -> StoreResult<Vec<Callback>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.open_callbacks_blocking())
            .await
            .map_err(|e| io(format!("read task failed: {e}")))?
    }

    async fn open_callbacks_estimate(&self) -> StoreResult<Option<u64>> {
        let kept = self.meta.get(OPEN_ESTIMATE).map_err(io)?;
        Ok(kept.and_then(|v| Some(u64::from_be_bytes(v.as_ref().try_into().ok()?))))
    }

    async fn scan_open_callbacks(
        &self,
        visit: &mut crate::store::OpenVisitor<'_>,
    ) -> StoreResult<u64> {
        // The visitor borrows the caller's state, so the scan runs on this thread; on a
        // multi-threaded runtime the worker hands its other tasks off first.
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi {
            tokio::task::block_in_place(|| self.scan_open_callbacks_blocking(visit))
        } else {
            self.scan_open_callbacks_blocking(visit)
        }
    }

    async fn list_callbacks(
        &self,
        filter: &CallbackFilter,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Callback>> {
        let this = self.clone();
        let filter = filter.clone();
        let after = after.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            this.list_callbacks_blocking(&filter, after.as_deref(), limit)
        })
        .await
        .map_err(|e| io(format!("read task failed: {e}")))?
    }

    async fn prune_callback_requests(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        self.prune_request_ids(before).await
    }

    async fn check_callback_indexes(&self) -> StoreResult<Vec<String>> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.check_callback_indexes_blocking())
            .await
            .map_err(|e| io(format!("read task failed: {e}")))?
    }

    async fn import(&self, mut import: StoreImport) -> StoreResult<RecordCounts> {
        import.check()?;
        let callbacks = std::mem::take(&mut import.callbacks);
        let n = u64::try_from(callbacks.len()).unwrap_or(u64::MAX);
        let (_, none) = tokio::sync::mpsc::channel(1);
        self.import_in_batches(import, callbacks, n, none).await
    }

    async fn import_batches(
        &self,
        mut import: StoreImport,
        expected_callbacks: u64,
        batches: tokio::sync::mpsc::Receiver<StoreResult<Vec<Callback>>>,
    ) -> StoreResult<RecordCounts> {
        import.check()?;
        let first = std::mem::take(&mut import.callbacks);
        let expected = expected_callbacks.saturating_add(u64::try_from(first.len()).unwrap_or(0));
        self.import_in_batches(import, first, expected, batches)
            .await
    }

    async fn flush(&self) -> StoreResult<()> {
        self.committer.durable().await
    }

    fn keeps_warm_image(&self) -> bool {
        true
    }

    async fn save_warm_image(&self, image: Vec<u8>) -> StoreResult<()> {
        let changes = self
            .trees
            .changes
            .load(std::sync::atomic::Ordering::Relaxed);
        let number = fastrand::u64(..);
        let file = self.warm.file.clone();
        tokio::task::spawn_blocking(move || write_warm_image(&file, number, &image))
            .await
            .map_err(io)?
            .map_err(io)?;
        *lock(&self.warm.saved) = Some((number, changes));
        Ok(())
    }

    async fn take_warm_image(&self) -> StoreResult<Option<Vec<u8>>> {
        let Some(number) = lock(&self.warm.found).take() else {
            return Ok(None);
        };
        let file = self.warm.file.clone();
        tokio::task::spawn_blocking(move || {
            let read = std::fs::read(&file);
            // Used once: the mark is gone already, and the file goes too.
            let _ = std::fs::remove_file(&file);
            let mut bytes = read.map_err(io)?;
            match bytes.first_chunk::<8>() {
                Some(head) if u64::from_be_bytes(*head) == number => {
                    // In place: no second copy of a large image.
                    bytes.drain(..8);
                    Ok(Some(bytes))
                }
                _ => Ok(None),
            }
        })
        .await
        .map_err(io)?
    }

    async fn close(&self) {
        let saved = lock(&self.warm.saved).take();
        if let Some((number, changes)) = saved {
            match self
                .committer
                .write(move |s| s.note_warm_image(number, changes))
                .await
            {
                Ok(true) => {}
                Ok(false) => tracing::info!(
                    "a callback changed after the warm-start image was saved; the next \
                     start reads the store"
                ),
                Err(e) => tracing::warn!(error = %e, "the warm-start image was not kept"),
            }
        }
        let n = self
            .trees
            .open_estimate
            .load(std::sync::atomic::Ordering::Relaxed);
        if n > 0 {
            // A hint only: a store that cannot take it still closes.
            if let Err(e) = self.committer.write(move |s| s.note_open_estimate(n)).await {
                tracing::debug!(error = %e, "the open-callback estimate was not kept");
            }
        }
        self.committer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::audit::AuditAction;
    use crate::domain::callback::CallbackState;
    use crate::store::conformance::{
        assert_consistent, assert_open_and_consistent, audit, contact, customer, open_callback, utc,
    };

    /// A store written by a release that kept a due index loses it on open, once;
    /// its callbacks and their dedupe entries stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_a_store_removes_the_due_index_of_earlier_releases() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let cb = open_callback("01J0000000000000000000000A", "+441", CallbackState::Pending);
        s.create_callback(cb.clone(), None).await.unwrap();
        assert_eq!(s.legacy_due_entries(), 0, "new writes keep no due index");
        s.put_legacy_due_entry(&cb).unwrap();
        s.close().await;
        drop(s);

        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.legacy_due_entries(), 0);
        assert_eq!(s.open_callbacks().await.unwrap(), vec![cb.clone()]);
        assert_consistent(&s).await;
        let twin = open_callback("01J0000000000000000000000B", "+441", CallbackState::Pending);
        assert!(matches!(
            s.create_callback(twin, None).await.unwrap(),
            CallbackCreate::Existing(c) if c.id == cb.id
        ));
        s.close().await;
    }

    /// The next start sizes its tables from the open callbacks of the last run: those
    /// its start-up scan found plus those created since, kept when the store closes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_store_tells_the_next_start_about_how_many_callbacks_are_open() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.open_callbacks_estimate().await.unwrap(), None);
        let ids = [
            "01J0000000000000000000000A",
            "01J0000000000000000000000B",
            "01J0000000000000000000000C",
        ];
        let mut written = Vec::new();
        for (id, phone) in ids.iter().zip(["+441", "+442", "+443"]) {
            let cb = open_callback(id, phone, CallbackState::Pending);
            s.create_callback(cb.clone(), None).await.unwrap();
            written.push(cb);
        }
        s.close().await;
        drop(s);

        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.open_callbacks_estimate().await.unwrap(), Some(3));
        let mut done = written[0].clone();
        done.cancel("test".into(), utc("2026-12-07T10:00:00Z"))
            .unwrap();
        s.update_callback(done).await.unwrap();
        // Closing a callback does not count down; the next scan counts again.
        let scanned = s.scan_open_callbacks(&mut |_| {}).await.unwrap();
        assert_eq!(scanned, 2);
        let cb = open_callback("01J0000000000000000000000D", "+444", CallbackState::Pending);
        s.create_callback(cb, None).await.unwrap();
        s.close().await;
        drop(s);

        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.open_callbacks_estimate().await.unwrap(), Some(3));
        s.close().await;
    }

    /// On sled the warm-start image is good for the one opening after the clean close
    /// that kept it: an opening that does not take it uses it up all the same (a crash
    /// after that opening must not find it), and the file goes with it. (What every
    /// backend does with an image is in the conformance suite.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_warm_start_image_is_good_for_one_opening_after_a_clean_close() {
        let dir = tempfile::tempdir().unwrap();
        let image = b"the scheduler's image".to_vec();
        let s = SledStore::open(dir.path()).unwrap();
        s.save_warm_image(image.clone()).await.unwrap();
        s.close().await;
        drop(s);
        assert!(dir.path().join(WARM_IMAGE_FILE).exists());
        // Opened and closed without taking it or saving another.
        let s = SledStore::open(dir.path()).unwrap();
        s.close().await;
        drop(s);
        let s = SledStore::open(dir.path()).unwrap();
        assert_eq!(s.take_warm_image().await.unwrap(), None);
        assert!(!dir.path().join(WARM_IMAGE_FILE).exists());
        s.close().await;
    }

    /// A crash between two batches of an import leaves written callbacks and the
    /// unfinished mark: the next open removes them, and the import can run again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_import_cut_short_is_removed_when_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let written: Vec<Callback> = ["01J0000000000000000000000A", "01J0000000000000000000000B"]
            .iter()
            .zip(["+441", "+442"])
            .map(|(id, phone)| open_callback(id, phone, CallbackState::Pending))
            .collect();
        s.write(|s| s.begin_import_blocking()).await.unwrap();
        let batch = written.clone();
        s.write(move |s| s.import_callbacks_blocking(&batch))
            .await
            .unwrap();
        // The process dies here: the batch is durable, the plans never came.
        s.close().await;
        drop(s);

        let s = SledStore::open(dir.path()).unwrap();
        assert!(s.open_callbacks().await.unwrap().is_empty());
        assert!(!s.meta.contains_key(IMPORT_UNFINISHED).unwrap());
        let counts = s
            .import(StoreImport {
                callbacks: written.clone(),
                ..StoreImport::default()
            })
            .await
            .unwrap();
        assert_eq!(counts.callbacks, 2);
        assert_eq!(s.open_callbacks().await.unwrap(), written);
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sixty_four_concurrent_writers_finish_and_share_flushes() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let stats = s.commit_stats();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for j in 0..10 {
                    s.upsert_customer(
                        customer(&format!("c{i}-{j}"), &[]),
                        audit(AuditAction::CustomerUpsert),
                    )
                    .await
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            tokio::time::timeout(std::time::Duration::from_secs(60), t)
                .await
                .expect("writers must not deadlock")
                .unwrap();
        }
        let flushes = stats.flushes.load(std::sync::atomic::Ordering::Relaxed);
        let acked = stats
            .acknowledged
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(acked, 640);
        assert!(
            flushes < acked,
            "group commit: {flushes} flushes for {acked} writes"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn staged_creates_wait_for_a_free_flusher_and_apply_together() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let stats = s.commit_stats();
        // 8 waves of 64 concurrent creates: while a flush runs, the creates behind it
        // stage, and go to sled as one batch when the flusher is free again.
        for wave in 0..8 {
            let mut tasks = Vec::new();
            for i in 0..64 {
                let s = s.clone();
                tasks.push(tokio::spawn(async move {
                    let id = format!("01J{wave:03}{i:020}");
                    let phone = format!("+44{wave}{i:04}");
                    s.create_callback(open_callback(&id, &phone, CallbackState::Pending), None)
                        .await
                        .unwrap()
                }));
            }
            for t in tasks {
                assert!(matches!(t.await.unwrap(), CallbackCreate::Created(_)));
            }
        }
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        let (flushes, batches) = (load(&stats.flushes), load(&stats.staged_batches));
        assert_eq!(load(&stats.acknowledged), 512);
        assert!(
            batches <= flushes,
            "{batches} staged batches for {flushes} flushes: at most one per flush"
        );
        assert!(
            flushes < 512,
            "group commit: {flushes} flushes for 512 creates"
        );
        assert_open_and_consistent(&s, 512).await;
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_after_staged_ones_in_its_group_sees_them() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        // Hold the writer so the next two changes queue up behind it and are taken
        // as one group: a staged create, then a plain change that reads the tree.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let s = s.clone();
            tokio::spawn(async move {
                s.write(move |_| {
                    let _ = hold.recv();
                    Ok(())
                })
                .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let id = "01J0000000000000000000000A";
        let create = {
            let s = s.clone();
            tokio::spawn(async move {
                s.create_callback(open_callback(id, "+441", CallbackState::Pending), None)
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let read = {
            let s = s.clone();
            tokio::spawn(async move { s.write(move |s| s.get_callback(id)).await })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        assert!(matches!(
            create.await.unwrap().unwrap(),
            CallbackCreate::Created(_)
        ));
        assert_eq!(
            read.await.unwrap().unwrap().map(|c| c.id),
            Some(id.to_string())
        );
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pruning_more_than_a_chunk_deletes_old_contacts_their_index_and_marks_only() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        let old = PRUNE_CHUNK * 2 + 7;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..old {
            let s = s.clone();
            let c = contact(&format!("o{i}"), None, "+441", "2026-10-01T10:00:00Z");
            tasks.spawn(async move { s.record_call(c, 20.0).await });
        }
        for i in 0..3 {
            let s = s.clone();
            let c = contact(&format!("r{i}"), None, "+441", "2026-11-20T10:00:00Z");
            tasks.spawn(async move { s.record_call(c, 20.0).await });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        let marks = |s: &SledStore| s.kpi.scan_prefix(b"a").count();
        assert_eq!(marks(&s), old + 3);
        let before = utc("2026-11-01T00:00:00Z");
        assert_eq!(s.prune_contacts(before).await.unwrap(), old);
        assert_eq!(s.contacts.len(), 3);
        assert_eq!(s.contacts_by_party.len(), 3);
        assert_eq!(marks(&s), 3);
        let since = chrono::DateTime::<Utc>::UNIX_EPOCH;
        let left = s.recent_contacts(None, Some("+441"), since, 100).unwrap();
        assert_eq!(left.len(), 3);
        // Nothing left to prune.
        assert_eq!(s.prune_contacts(before).await.unwrap(), 0);
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_callbacks_come_back_in_id_order_across_many_decode_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        // More records than several decode chunks hold, written out of order.
        let n = 10_000;
        let mut callbacks: Vec<Callback> = (0..n)
            .map(|i| {
                open_callback(
                    &format!("01J{:023}", (i * 7_919) % n),
                    &format!("+44{i}"),
                    CallbackState::Pending,
                )
            })
            .collect();
        callbacks.reverse();
        let import = StoreImport {
            plans: Vec::new(),
            active_version: None,
            customers: Vec::new(),
            callbacks,
        };
        s.import(import).await.unwrap();
        // Two of them are no longer open.
        for id in ["01J00000000000000000000017", "01J00000000000000000009998"] {
            let mut done = s.callback(id).await.unwrap().unwrap();
            done.cancel("test".into(), done.updated_at).unwrap();
            s.update_callback(done).await.unwrap();
        }
        let expected: Vec<String> = (0..n)
            .filter(|i| ![17, 9_998].contains(i))
            .map(|i| format!("01J{i:023}"))
            .collect();
        let ids = |c: Vec<Callback>| c.into_iter().map(|c| c.id).collect::<Vec<_>>();
        assert_eq!(ids(s.open_callbacks().await.unwrap()), expected);
        // With several decoders taking turns, the chunks are put back in order.
        for decoders in [1, 2] {
            let this = s.clone();
            let got = tokio::task::spawn_blocking(move || this.open_callbacks_decoded_by(decoders))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(ids(got), expected, "{decoders} decoders");
        }
        s.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_open_elsewhere_is_reported_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path()).unwrap();
        assert!(matches!(
            SledStore::open(dir.path()),
            Err(StoreError::InUse { .. })
        ));
        s.close().await;
    }
}
