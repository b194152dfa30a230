//! Callback persistence in sled: one tree, `callbacks`, with these key spaces (and
//! `s`, settled attempts, below).
//!
//! - `c` + id (ULID, so creation order) -> [`Callback`] (postcard)
//! - `o` + phone + 0x00 + queue -> id, for every open callback (dedupe)
//! - `r` + principal length (u16, big-endian) + principal + request id ->
//!   [`RequestRecord`] (idempotency per principal, pruned)
//!
//! Every change of a callback and its index entries goes into one `apply_batch` on that
//! one tree, which sled applies atomically. Changes only ever run on the store's single
//! writer thread, so reading the current state and then applying the batch cannot race
//! another writer; readers on other threads see a change whole or not at all.
//!
//! Creates and updates are staged: the writer collects the changes of a whole group
//! of writers (see `committer`) in [`Staged`], reads through it, and applies the group
//! as one batch before the group's flush. sled rolls its log buffer twice for every
//! `apply_batch` (each roll a separate write and `sync_file_range` on its I/O threads),
//! so a batch per change made that the ceiling of durable callback writes. Nothing
//! staged is acknowledged before it is applied and flushed.

use std::sync::atomic::Ordering;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::sled_store::{corrupt, decode, encode, io, SledStore};

/// Callback records are postcard (compact binary): a million of them load at start-up
/// several times faster than JSON and take less disk.
fn encode_cb(c: &Callback) -> Vec<u8> {
    postcard::to_stdvec(c).expect("callbacks serialize")
}

fn decode_cb(bytes: &[u8]) -> StoreResult<Callback> {
    postcard::from_bytes(bytes).map_err(corrupt)
}
use crate::domain::callback::{Callback, CallbackKind, CallbackState};
use crate::store::{
    CallbackCreate, CallbackFilter, OpenCallbackRef, OpenVisitor, RequestKey, StoreError,
    StoreResult,
};

/// The leading fields of a stored [`Callback`], in its field order, borrowed from the
/// record's bytes: postcard writes fields in order, so decoding this prefix reads the
/// scheduler's index fields without allocating or decoding the rest.
#[derive(Deserialize)]
struct CallbackHead<'a> {
    id: &'a str,
    state: CallbackState,
    kind: CallbackKind,
    phone: &'a str,
    _customer_id: Option<&'a str>,
    queue_id: &'a str,
    _time_zone: &'a str,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    virtual_enqueued_at: DateTime<Utc>,
    priority: i32,
    _attempts: u32,
    _max_attempts: u32,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    not_before: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    expires_at: DateTime<Utc>,
    lease: Option<LeaseHead<'a>>,
}

/// The leading fields of a stored lease (see [`CallbackHead`]).
#[derive(Deserialize)]
struct LeaseHead<'a> {
    attempt_id: &'a str,
    _dialer_id: &'a str,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    until: DateTime<Utc>,
}

fn decode_head(bytes: &[u8]) -> StoreResult<OpenCallbackRef<'_>> {
    let (h, _rest): (CallbackHead<'_>, _) = postcard::take_from_bytes(bytes).map_err(corrupt)?;
    Ok(OpenCallbackRef {
        id: h.id,
        state: h.state,
        phone: h.phone,
        queue_id: h.queue_id,
        priority: h.priority,
        virtual_enqueued_at: h.virtual_enqueued_at,
        not_before: h.not_before,
        expires_at: h.expires_at,
        slot_start: h.kind.slot_start(),
        lease: h.lease.map(|l| (l.attempt_id, l.until)),
    })
}

const RECORD: u8 = b'c';
/// The due index of earlier releases: `d` + not-before time + id for every pending
/// callback. Nothing reads it any more (the scheduler rebuilds its timers from the
/// records, and a record holds its not-before time), and it cost a million keys for
/// a million callbacks: a third of the tree's pages, which sled holds in memory from
/// the moment it opens and walks at start-up. [`drop_due_index`] removes it once.
const DUE: u8 = b'd';
const OPEN: u8 = b'o';
const REQUEST: u8 = b'r';
/// `s` + attempt id -> [`SettledRecord`]: an attempt whose outcome is stored, so a
/// repeated report is recognized as a repeat after a restart too.
const SETTLED: u8 = b's';

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RequestRecord {
    pub callback_id: String,
    pub at: DateTime<Utc>,
    /// The first request's [`RequestKey::fingerprint`]; a retry must match it.
    #[serde(default)]
    pub fingerprint: String,
}

/// The callback an attempt belonged to, and when its outcome was stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SettledRecord {
    pub callback_id: String,
    pub at: DateTime<Utc>,
}

fn key(space: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(rest.len() + 1);
    k.push(space);
    k.extend_from_slice(rest);
    k
}

fn record_key(id: &str) -> Vec<u8> {
    key(RECORD, id.as_bytes())
}

pub(crate) fn open_key(phone: &str, queue: &str) -> Vec<u8> {
    let mut k = vec![OPEN];
    k.extend_from_slice(phone.as_bytes());
    k.push(0);
    k.extend_from_slice(queue.as_bytes());
    k
}

/// The principal's name is length-prefixed, so no pair of principal and request id
/// can spell another pair's key.
fn request_key(r: &RequestKey) -> Vec<u8> {
    let principal = r.principal.as_bytes();
    let len = u16::try_from(principal.len()).unwrap_or(u16::MAX);
    let mut k = Vec::with_capacity(3 + principal.len() + r.request_id.len());
    k.push(REQUEST);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(&principal[..usize::from(len)]);
    k.extend_from_slice(r.request_id.as_bytes());
    k
}

/// Changes to the callback tree, key -> new value (`None`: removed); the last change
/// of a key wins, as in a `sled::Batch`, which cannot be read back.
#[derive(Default)]
pub(crate) struct Writes(std::collections::HashMap<sled::IVec, Option<sled::IVec>>);

impl Writes {
    fn insert(&mut self, k: impl Into<sled::IVec>, v: impl Into<sled::IVec>) {
        self.0.insert(k.into(), Some(v.into()));
    }

    fn remove(&mut self, k: impl Into<sled::IVec>) {
        self.0.insert(k.into(), None);
    }

    fn into_batch(self) -> sled::Batch {
        let mut b = sled::Batch::default();
        for (k, v) in self.0 {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        b
    }
}

/// The staged changes of the group the writer is applying (writer thread only).
pub(crate) type Staged = std::sync::Mutex<Writes>;

/// Adds `c`'s record and the index entries its state calls for to `b`.
fn put(b: &mut Writes, c: &Callback) {
    if c.state.is_open() {
        b.insert(open_key(&c.phone, &c.queue_id), c.id.as_bytes());
    }
    b.insert(record_key(&c.id), encode_cb(c));
}

/// Removes every callback record and index entry (request ids and settled attempts
/// stay): what an import that did not finish wrote into a store that held no callback
/// before it. Removed in batches, so memory stays bounded. Returns the records removed.
pub(crate) fn remove_imported(tree: &sled::Tree) -> StoreResult<u64> {
    let records = remove_space(tree, RECORD)?;
    remove_space(tree, OPEN)?;
    remove_space(tree, DUE)?;
    Ok(records)
}

/// Removes the due index of a store written by an earlier release (see [`DUE`]);
/// returns how many entries it held.
pub(crate) fn drop_due_index(tree: &sled::Tree) -> StoreResult<u64> {
    remove_space(tree, DUE)
}

/// Removes every key of one key space, [`REMOVE_CHUNK`] keys per batch.
fn remove_space(tree: &sled::Tree, space: u8) -> StoreResult<u64> {
    /// Keys removed per batch.
    const REMOVE_CHUNK: usize = 10_000;
    let mut n = 0u64;
    loop {
        let mut batch = sled::Batch::default();
        let mut len = 0;
        for k in tree.scan_prefix([space]).keys().take(REMOVE_CHUNK) {
            batch.remove(k.map_err(io)?);
            len += 1;
        }
        if len == 0 {
            return Ok(n);
        }
        tree.apply_batch(batch).map_err(io)?;
        n += len;
    }
}

impl SledStore {
    /// Runs on the writer thread only. Writes one batch of an import into the callback
    /// tree: the same records and index entries `create_callback` writes (KPIs are not
    /// counted again). Refused, writing nothing, when a callback is not open or its id
    /// or its open (phone, queue) pair is already stored: the caller checked the file,
    /// this keeps the indexes whole whatever it sends.
    pub(crate) fn import_callbacks_blocking(&self, callbacks: &[Callback]) -> StoreResult<u64> {
        let bad = |m: String| Err(StoreError::BadImport(m));
        let mut b = Writes::default();
        let tree = &self.trees.callbacks;
        for c in callbacks {
            if !c.state.is_open() {
                return bad(format!("callback {} is {:?}, not open", c.id, c.state));
            }
            let rk = record_key(&c.id);
            if b.0.contains_key(rk.as_slice()) || tree.contains_key(&rk).map_err(io)? {
                return bad(format!("callback {} appears twice", c.id));
            }
            let ok = open_key(&c.phone, &c.queue_id);
            if b.0.contains_key(ok.as_slice()) || tree.contains_key(&ok).map_err(io)? {
                return bad(format!(
                    "two open callbacks for {} in queue {}",
                    c.phone, c.queue_id
                ));
            }
            put(&mut b, c);
        }
        self.trees.changes.fetch_add(1, Ordering::Relaxed);
        tree.apply_batch(b.into_batch()).map_err(io)?;
        let n = u64::try_from(callbacks.len()).unwrap_or(u64::MAX);
        self.trees.open_estimate.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

impl SledStore {
    fn staged(&self) -> std::sync::MutexGuard<'_, Writes> {
        self.staged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A key of the callback tree as the writer sees it: staged changes first.
    fn writer_get(&self, k: &[u8]) -> StoreResult<Option<sled::IVec>> {
        if let Some(v) = self.staged().0.get(k) {
            return Ok(v.clone());
        }
        self.trees.callbacks.get(k).map_err(io)
    }

    fn writer_read_callback(&self, id: &[u8]) -> StoreResult<Option<Callback>> {
        self.writer_get(&key(RECORD, id))?
            .map(|v| decode_cb(&v))
            .transpose()
    }

    /// The writes that replace `old` (if any) with `new`, index entries included (reads
    /// through the staged changes).
    fn change(&self, old: Option<&Callback>, new: &Callback) -> StoreResult<Writes> {
        let mut b = Writes::default();
        if let Some(old) = old {
            if old.state.is_open() && !new.state.is_open() {
                let k = open_key(&old.phone, &old.queue_id);
                if self.writer_get(&k)?.as_deref() == Some(old.id.as_bytes()) {
                    b.remove(k);
                }
            }
        }
        put(&mut b, new);
        Ok(b)
    }

    fn stage(&self, writes: Writes) {
        self.trees.changes.fetch_add(1, Ordering::Relaxed);
        self.staged().0.extend(writes.0);
    }

    /// Applies the staged changes as one batch (writer thread only; the committer
    /// calls it before any other change and before each flush).
    pub(crate) fn apply_staged(&self) -> StoreResult<()> {
        let writes = std::mem::take(&mut *self.staged());
        if writes.0.is_empty() {
            return Ok(());
        }
        self.trees
            .callbacks
            .apply_batch(writes.into_batch())
            .map_err(io)
    }

    fn read_callback(&self, id: &[u8]) -> StoreResult<Option<Callback>> {
        self.trees
            .callbacks
            .get(key(RECORD, id))
            .map_err(io)?
            .map(|v| decode_cb(&v))
            .transpose()
    }

    /// Runs on the writer thread only.
    pub(crate) fn create_callback_blocking(
        &self,
        cb: Callback,
        request: Option<RequestKey>,
    ) -> StoreResult<CallbackCreate> {
        if let Some(r) = &request {
            if let Some(v) = self.writer_get(&request_key(r))? {
                let rec: RequestRecord = decode(&v)?;
                if rec.fingerprint != r.fingerprint {
                    return Err(StoreError::RequestIdReused {
                        request_id: r.request_id.clone(),
                    });
                }
                return match self.writer_read_callback(rec.callback_id.as_bytes())? {
                    Some(c) => Ok(CallbackCreate::Replayed(c)),
                    None => Err(corrupt(format!(
                        "request {} names missing callback {}",
                        r.request_id, rec.callback_id
                    ))),
                };
            }
        }
        let existing = match self.writer_get(&open_key(&cb.phone, &cb.queue_id))? {
            Some(id) => self.writer_read_callback(&id)?,
            None => None,
        };
        let (mut batch, outcome, id) = match existing {
            Some(c) => {
                let id = c.id.clone();
                (Writes::default(), CallbackCreate::Existing(c), id)
            }
            None => (
                self.change(None, &cb)?,
                CallbackCreate::Created(cb.clone()),
                cb.id.clone(),
            ),
        };
        if let Some(r) = &request {
            let rec = RequestRecord {
                callback_id: id,
                at: cb.created_at,
                fingerprint: r.fingerprint.clone(),
            };
            batch.insert(request_key(r), encode(&rec));
        }
        self.stage(batch);
        if let CallbackCreate::Created(c) = &outcome {
            self.count_callback_blocking(None, c)?;
            self.trees.open_estimate.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }

    /// Whether any callback record exists (request ids alone do not count).
    pub(crate) fn has_callbacks(&self) -> StoreResult<bool> {
        Ok(self
            .trees
            .callbacks
            .scan_prefix([RECORD])
            .next()
            .transpose()
            .map_err(io)?
            .is_some())
    }

    /// Runs on the writer thread only.
    /// Stores a changed callback; with `settled`, also that the attempt's outcome is
    /// in this change (in the same batch).
    pub(crate) fn update_callback_blocking(
        &self,
        cb: Callback,
        settled: Option<&str>,
    ) -> StoreResult<()> {
        let old = self.writer_read_callback(cb.id.as_bytes())?;
        match &old {
            Some(o) if o.version + 1 == cb.version => {}
            _ => return Err(StoreError::Stale { id: cb.id.clone() }),
        }
        let mut batch = self.change(old.as_ref(), &cb)?;
        if let Some(attempt) = settled {
            let rec = SettledRecord {
                callback_id: cb.id.clone(),
                at: cb.updated_at,
            };
            batch.insert(key(SETTLED, attempt.as_bytes()), encode(&rec));
        }
        self.stage(batch);
        self.count_callback_blocking(old.as_ref(), &cb)
    }

    /// The callback of an attempt whose outcome is stored, if it is remembered.
    pub(crate) fn settled_attempt_blocking(&self, attempt_id: &str) -> StoreResult<Option<String>> {
        self.trees
            .callbacks
            .get(key(SETTLED, attempt_id.as_bytes()))
            .map_err(io)?
            .map(|v| decode::<SettledRecord>(&v).map(|r| r.callback_id))
            .transpose()
    }

    /// See [`crate::store::Store::requested_callback`] (a read of what is applied; the writer
    /// checks the key again, atomically, when it creates).
    pub(crate) fn requested_callback_blocking(
        &self,
        r: &RequestKey,
    ) -> StoreResult<Option<Callback>> {
        let Some(v) = self.trees.callbacks.get(request_key(r)).map_err(io)? else {
            return Ok(None);
        };
        let rec: RequestRecord = decode(&v)?;
        if rec.fingerprint != r.fingerprint {
            return Err(StoreError::RequestIdReused {
                request_id: r.request_id.clone(),
            });
        }
        match self.read_callback(rec.callback_id.as_bytes())? {
            Some(c) => Ok(Some(c)),
            None => Err(corrupt(format!(
                "request {} names missing callback {}",
                r.request_id, rec.callback_id
            ))),
        }
    }

    pub(crate) fn get_callback(&self, id: &str) -> StoreResult<Option<Callback>> {
        self.read_callback(id.as_bytes())
    }

    /// [`crate::store::Store::scan_open_callbacks`]: one pass over the records, each
    /// decoded only as far as its index fields. A second thread walks sled's tree and
    /// hands over chunks of records while this one decodes and visits (the walk is
    /// about half of the work).
    pub(crate) fn scan_open_callbacks_blocking(
        &self,
        visit: &mut OpenVisitor<'_>,
    ) -> StoreResult<u64> {
        /// Records handed over at a time.
        const CHUNK: usize = 4_096;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<StoreResult<Vec<sled::IVec>>>(4);
            let trees = &self.trees;
            scope.spawn(move || {
                let mut chunk = Vec::with_capacity(CHUNK);
                for v in trees.callbacks.scan_prefix([RECORD]).values() {
                    match v {
                        Ok(v) => chunk.push(v),
                        Err(e) => {
                            let _ = tx.send(Err(io(e)));
                            return;
                        }
                    }
                    if chunk.len() == CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                        // The visiting side stopped (it failed): nothing more to do.
                        if tx.send(Ok(full)).is_err() {
                            return;
                        }
                    }
                }
                let _ = tx.send(Ok(chunk));
            });
            let mut n = 0;
            for chunk in rx {
                for v in chunk? {
                    let head = decode_head(&v)?;
                    if head.state.is_open() {
                        visit(head);
                        n += 1;
                    }
                }
            }
            trees.open_estimate.store(n, Ordering::Relaxed);
            Ok(n)
        })
    }

    /// Every open callback whole (export): one sequential scan of the records (much
    /// faster than following the open index record by record), decoded on the other
    /// cores while the scan goes on. Records come back in id order.
    pub(crate) fn open_callbacks_blocking(&self) -> StoreResult<Vec<Callback>> {
        let decoders = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1);
        self.open_callbacks_decoded_by(decoders)
    }

    /// [`Self::open_callbacks_blocking`] with `decoders` decoding threads (at least one).
    pub(crate) fn open_callbacks_decoded_by(&self, decoders: usize) -> StoreResult<Vec<Callback>> {
        /// Records handed to a decoder at a time.
        const CHUNK: usize = 4_096;
        type Decoded = StoreResult<Vec<(usize, Vec<Callback>)>>;
        let decoders = decoders.max(1);
        let scan = self.trees.callbacks.scan_prefix([RECORD]).values();
        let (scanned, decoded) = std::thread::scope(|scope| {
            let mut feeds = Vec::with_capacity(decoders);
            let mut handles = Vec::with_capacity(decoders);
            for _ in 0..decoders {
                let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, Vec<sled::IVec>)>(2);
                feeds.push(tx);
                handles.push(scope.spawn(move || -> Decoded {
                    let mut out = Vec::new();
                    for (n, chunk) in rx {
                        let mut part = Vec::with_capacity(chunk.len());
                        for v in &chunk {
                            let c = decode_cb(v)?;
                            if c.state.is_open() {
                                part.push(c);
                            }
                        }
                        out.push((n, part));
                    }
                    Ok(out)
                }));
            }
            // This thread reads; the decoders take turns with the chunks.
            let mut scanned: StoreResult<()> = Ok(());
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut n = 0;
            for v in scan {
                match v {
                    Ok(v) => chunk.push(v),
                    Err(e) => {
                        scanned = Err(io(e));
                        break;
                    }
                }
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    // A decoder that stopped has failed; its error is reported below.
                    if feeds[n % decoders].send((n, full)).is_err() {
                        break;
                    }
                    n += 1;
                }
            }
            if !chunk.is_empty() {
                let _ = feeds[n % decoders].send((n, chunk));
            }
            drop(feeds);
            let decoded: Vec<Decoded> = handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(corrupt("decoding callbacks panicked")))
                })
                .collect();
            (scanned, decoded)
        });
        scanned?;
        let mut parts = Vec::new();
        for d in decoded {
            parts.extend(d?);
        }
        parts.sort_unstable_by_key(|(n, _)| *n);
        let mut out = Vec::with_capacity(parts.iter().map(|(_, p)| p.len()).sum());
        for (_, part) in parts {
            out.extend(part);
        }
        Ok(out)
    }

    pub(crate) fn list_callbacks_blocking(
        &self,
        filter: &CallbackFilter,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<Callback>> {
        let mut out = Vec::new();
        let start = match after {
            Some(a) => {
                let mut k = record_key(a);
                k.push(0);
                k
            }
            None => vec![RECORD],
        };
        for item in self.trees.callbacks.range(start..vec![RECORD + 1]) {
            let (_, v) = item.map_err(io)?;
            let c = decode_cb(&v)?;
            if filter.queue_id.as_ref().is_some_and(|q| q != &c.queue_id)
                || filter.state.is_some_and(|s| s != c.state)
                || filter.phone.as_ref().is_some_and(|p| p != &c.phone)
                || filter
                    .created_by
                    .as_ref()
                    .is_some_and(|p| p != &c.created_by)
            {
                continue;
            }
            out.push(c);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Runs on the writer thread only.
    /// Forgets request ids answered before `before` and settled attempts stored before
    /// it. Found by a read-only scan, deleted in short writer jobs (neither record's
    /// time ever changes).
    pub(crate) async fn prune_request_ids(&self, before: DateTime<Utc>) -> StoreResult<usize> {
        let this = self.clone();
        let old = self
            .scan(move || {
                let mut old = Vec::new();
                for item in this.trees.callbacks.scan_prefix([REQUEST]) {
                    let (k, v) = item.map_err(io)?;
                    if decode::<RequestRecord>(&v)?.at < before {
                        old.push(k);
                    }
                }
                for item in this.trees.callbacks.scan_prefix([SETTLED]) {
                    let (k, v) = item.map_err(io)?;
                    if decode::<SettledRecord>(&v)?.at < before {
                        old.push(k);
                    }
                }
                Ok(old)
            })
            .await?;
        self.remove_in_jobs(|s| &s.trees.callbacks, old).await
    }

    pub(crate) fn check_callback_indexes_blocking(&self) -> StoreResult<Vec<String>> {
        let mut problems = Vec::new();
        let mut open = std::collections::BTreeMap::new();
        for item in self.trees.callbacks.scan_prefix([RECORD]) {
            let (_, v) = item.map_err(io)?;
            let c = decode_cb(&v)?;
            if c.state.is_open()
                && open
                    .insert(open_key(&c.phone, &c.queue_id), c.id.clone())
                    .is_some()
            {
                problems.push(format!(
                    "two open callbacks for {} in {}",
                    c.phone, c.queue_id
                ));
            }
        }
        for item in self.trees.callbacks.scan_prefix([OPEN]) {
            let (k, v) = item.map_err(io)?;
            let id = String::from_utf8_lossy(&v).into_owned();
            if open.remove(k.as_ref()) != Some(id.clone()) {
                problems.push(format!(
                    "open index holds {id}, which is not the open callback for its number and queue"
                ));
            }
        }
        for (_, id) in open {
            problems.push(format!("open callback {id} is missing from the open index"));
        }
        Ok(problems)
    }
}

/// Damage on purpose, for tests of the consistency checks (`torture::check`): writes
/// that bypass [`change`], as a torn or buggy write would.
#[cfg(test)]
impl SledStore {
    /// Deletes a callback's record and leaves its index entries behind.
    pub(crate) fn remove_callback_record_only(&self, id: &str) -> StoreResult<()> {
        self.trees.callbacks.remove(record_key(id)).map_err(io)?;
        Ok(())
    }

    /// Writes the due-index entry an earlier release kept for a pending callback.
    pub(crate) fn put_legacy_due_entry(&self, cb: &Callback) -> StoreResult<()> {
        let mut k = vec![DUE];
        k.extend_from_slice(&(cb.not_before.timestamp_millis() as u64 ^ (1 << 63)).to_be_bytes());
        k.extend_from_slice(cb.id.as_bytes());
        self.trees.callbacks.insert(k, &[] as &[u8]).map_err(io)?;
        Ok(())
    }

    /// How many due-index entries the tree holds.
    pub(crate) fn legacy_due_entries(&self) -> usize {
        self.trees.callbacks.scan_prefix([DUE]).count()
    }

    /// Writes a callback's record without its index entries.
    pub(crate) fn put_callback_record_only(&self, cb: &Callback) -> StoreResult<()> {
        self.trees
            .callbacks
            .insert(record_key(&cb.id), encode_cb(cb))
            .map_err(io)?;
        Ok(())
    }
}
