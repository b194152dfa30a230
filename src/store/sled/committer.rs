//! Group commit on two threads. Writers hand their change (a short sled batch) to the
//! applier thread and wait. The applier runs every change queued, one after the other
//! (no two writers contend, none runs on the async threads), and hands what they wrote
//! to the flusher whenever the flusher is free. The flusher makes it durable once:
//! `Db::flush` followed by `fdatasync` of sled's data file (sled's own flush uses
//! `sync_file_range`, which survives a process crash but not a power loss), and only
//! then answers each writer of the batch, with its own result. Running the next changes
//! overlaps flushing the last. `flush` is only ever called from the flusher (sled 0.34.7
//! deadlocks when many tasks flush at once).
//!
//! Callback creates and updates are staged ([`Committer::write_staged`]): they leave
//! their changes with the store, which applies all of them staged since the last flush
//! as one sled batch (see `store::callbacks`) when the flusher is free, or before the
//! next change that is not staged. If that batch fails, each staged writer gets the
//! error.

use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::sled_store::SledStore;
use crate::store::{StoreError, StoreResult};

/// Changes waiting for the writer before senders feel back-pressure.
const QUEUE_DEPTH: usize = 65_536;
/// Most changes applied per durable flush.
const MAX_BATCH: usize = 8_192;

/// Answers a writer once its batch is durable (or not).
pub(crate) type Finisher = Box<dyn FnOnce(StoreResult<()>) + Send>;
/// A change: applied on the writer thread, returns how to answer its writer.
pub(crate) type Job = Box<dyn FnOnce(&SledStore) -> Finisher + Send>;

enum Msg {
    /// A change, and whether it stages its writes in the store.
    Job(Job, bool),
    /// The flusher finished a flush and can take the next batch.
    FlusherIdle,
    Stop,
}

#[derive(Debug, Default)]
pub struct CommitStats {
    /// Durable flushes done.
    pub flushes: AtomicU64,
    /// Changes acknowledged.
    pub acknowledged: AtomicU64,
    /// Sled batches applied for staged changes.
    pub staged_batches: AtomicU64,
}

pub struct Committer {
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub stats: Arc<CommitStats>,
}

impl Committer {
    /// A committer not running yet; `start` gives it its thread.
    pub fn new() -> Self {
        Self {
            tx: Mutex::new(None),
            thread: Mutex::new(None),
            stats: Arc::new(CommitStats::default()),
        }
    }

    /// Starts the writer thread over `store`, whose data file is `data_file`.
    pub fn start(&self, store: SledStore, db: sled::Db, data_file: File) -> StoreResult<()> {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = self.stats.clone();
        let wake = tx.downgrade();
        let handle = std::thread::Builder::new()
            .name("holdless-writer".into())
            .spawn(move || run(store, db, data_file, rx, wake, stats))
            .map_err(|e| StoreError::Io(format!("cannot start the writer thread: {e}")))?;
        *self.tx.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(())
    }

    fn sender(&self) -> StoreResult<mpsc::Sender<Msg>> {
        self.tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)
    }

    /// Applies `f` on the writer thread and returns its result once it is durable.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&SledStore) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, false).await
    }

    /// As [`Self::write`], for a change that only stages its writes in the store
    /// (callback creates and updates), applied with the others of its run.
    pub async fn write_staged<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&SledStore) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, true).await
    }

    async fn submit<T, F>(&self, f: F, staged: bool) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&SledStore) -> StoreResult<T> + Send + 'static,
    {
        let (done, result) = oneshot::channel::<StoreResult<T>>();
        let job: Job = Box::new(move |store| {
            let out = f(store);
            Box::new(move |flushed: StoreResult<()>| {
                let answer = match (out, flushed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                };
                let _ = done.send(answer);
            })
        });
        self.sender()?
            .send(Msg::Job(job, staged))
            .await
            .map_err(|_| StoreError::Closed)?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    /// Returns once everything written before this call is durable.
    pub async fn durable(&self) -> StoreResult<()> {
        self.write(|_| Ok(())).await
    }

    /// Finishes what is queued, stops the thread and lets go of its store handle;
    /// later writes fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(tx) = tx {
            let _ = tx.send(Msg::Stop).await;
        }
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// The applier: runs queued changes in order and hands what they wrote to the flusher
/// when the flusher is free. Staged writes wait for that moment, so a flush cycle
/// applies them as one sled batch: each `apply_batch` costs sled two log-buffer
/// writes of its own (see `store::callbacks`), so applying per cycle rather than per
/// wake-up is what keeps the disk free for the flushes themselves. Changes that are
/// not staged apply at once, after the staged ones before them.
fn run(
    store: SledStore,
    db: sled::Db,
    data_file: File,
    mut rx: mpsc::Receiver<Msg>,
    wake: mpsc::WeakSender<Msg>,
    stats: Arc<CommitStats>,
) {
    let flusher_idle = Arc::new(AtomicBool::new(true));
    let (to_flusher, flusher_rx) = std::sync::mpsc::channel::<Vec<Finisher>>();
    let flusher = {
        let idle = flusher_idle.clone();
        let stats = stats.clone();
        std::thread::Builder::new()
            .name("holdless-flusher".into())
            .spawn(move || flush_loop(db, data_file, flusher_rx, idle, wake, stats))
    };
    let flusher = match flusher {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the flusher thread; writes are refused");
            return;
        }
    };
    let mut batch = Vec::new();
    // Writers whose writes are staged (not applied yet), and writers whose writes are
    // applied, both waiting for a flush.
    let mut staged: Vec<Finisher> = Vec::new();
    let mut applied: Vec<Finisher> = Vec::new();
    let mut stop = false;
    loop {
        let waiting = !staged.is_empty() || !applied.is_empty();
        let hand_over_now = waiting && flusher_idle.load(Ordering::Acquire);
        // Block for work only when nothing can be handed over now.
        if !stop && !hand_over_now {
            match rx.blocking_recv() {
                Some(m) => batch.push(m),
                None => stop = true,
            }
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        for msg in batch.drain(..) {
            match msg {
                Msg::Job(job, true) => staged.push(job(&store)),
                Msg::Job(job, false) => {
                    apply_staged(&store, &mut staged, &mut applied, &stats);
                    applied.push(job(&store));
                }
                Msg::FlusherIdle => {}
                Msg::Stop => stop = true,
            }
        }
        let waiting = !staged.is_empty() || !applied.is_empty();
        if waiting && (stop || flusher_idle.load(Ordering::Acquire)) {
            apply_staged(&store, &mut staged, &mut applied, &stats);
            if let Err(e) = store.write_pending_kpi() {
                // The batch's changes are applied but their counters are not: refuse
                // the writes rather than acknowledge numbers that would not add up.
                tracing::error!(error = %e, "writing KPI counters failed; writes in this batch are refused");
                for f in applied.drain(..) {
                    f(Err(e.clone()));
                }
            }
            if !applied.is_empty() {
                flusher_idle.store(false, Ordering::Release);
                if to_flusher.send(std::mem::take(&mut applied)).is_err() {
                    break;
                }
            }
        }
        if stop {
            break;
        }
    }
    drop(to_flusher);
    let _ = flusher.join();
}

/// Applies the staged changes of `staged`'s writers: they join `finishers` (to be
/// answered after the flush), or get the error now.
fn apply_staged(
    store: &SledStore,
    staged: &mut Vec<Finisher>,
    finishers: &mut Vec<Finisher>,
    stats: &CommitStats,
) {
    if staged.is_empty() {
        return;
    }
    stats.staged_batches.fetch_add(1, Ordering::Relaxed);
    match store.apply_staged() {
        Ok(()) => finishers.append(staged),
        Err(e) => {
            tracing::error!(error = %e, "applying staged callback changes failed; their writes are refused");
            for f in staged.drain(..) {
                f(Err(e.clone()));
            }
        }
    }
}

/// The flusher: one `flush` + `fdatasync` acknowledges every change applied before it
/// began (all the batches queued by then).
fn flush_loop(
    db: sled::Db,
    data_file: File,
    rx: std::sync::mpsc::Receiver<Vec<Finisher>>,
    idle: Arc<AtomicBool>,
    wake: mpsc::WeakSender<Msg>,
    stats: Arc<CommitStats>,
) {
    let mut slow_flushes = SlowFlushes::default();
    while let Ok(mut finishers) = rx.recv() {
        while let Ok(mut more) = rx.try_recv() {
            finishers.append(&mut more);
        }
        let started = std::time::Instant::now();
        let written = db.flush().map(|_| ());
        let syncing = std::time::Instant::now();
        let result = written
            .map_err(|e| StoreError::Io(e.to_string()))
            .and_then(|()| {
                let synced = data_file
                    .sync_data()
                    .map_err(|e| StoreError::Io(e.to_string()));
                metrics::histogram!("holdless_store_sync_seconds")
                    .record(syncing.elapsed().as_secs_f64());
                synced
            });
        let took = started.elapsed();
        metrics::histogram!("holdless_store_flush_seconds").record(took.as_secs_f64());
        if let Err(e) = &result {
            tracing::error!(error = %e, "store flush failed; writes in this batch are refused");
        }
        if let Some(slow) = slow_flushes.note(took, started) {
            tracing::warn!(
                flush_ms = took.as_millis() as u64,
                sled_write_ms = syncing.duration_since(started).as_millis() as u64,
                fdatasync_ms = took.saturating_sub(syncing.duration_since(started)).as_millis() as u64,
                slow_flushes = slow,
                "the disk was slow to make a batch durable; its writers waited (see holdless_store_sync_seconds)"
            );
        }
        tracing::trace!(
            batch = finishers.len(),
            flush_us = took.as_micros() as u64,
            "durable"
        );
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats
            .acknowledged
            .fetch_add(finishers.len() as u64, Ordering::Relaxed);
        for f in finishers {
            f(result.clone());
        }
        // Free for the next batch: tell the applier, which may be waiting for work. A
        // full queue needs no wake-up (the applier has work and checks the flag), and
        // an applier gone for good has no writers left.
        idle.store(true, Ordering::Release);
        if let Some(tx) = wake.upgrade() {
            let _ = tx.try_send(Msg::FlusherIdle);
        }
    }
}

/// A flush this long delays every writer of its batch, and the batches queued behind
/// it, by as much: worth a warning, since it is the disk (not holdless) that a p99
/// above a few milliseconds then points at.
const SLOW_FLUSH: std::time::Duration = std::time::Duration::from_millis(50);
/// At most one slow-flush warning this often; the ones in between are counted in it.
const SLOW_FLUSH_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Counts slow flushes and says when to warn, so a disk that stalls often fills the
/// log with one line per interval rather than one per batch.
#[derive(Debug, Default)]
struct SlowFlushes {
    since_warning: u64,
    warned_at: Option<std::time::Instant>,
}

impl SlowFlushes {
    /// Notes a flush that took `took`, finished about `at`; returns the number of slow
    /// flushes to report when a warning is due.
    fn note(&mut self, took: std::time::Duration, at: std::time::Instant) -> Option<u64> {
        if took < SLOW_FLUSH {
            return None;
        }
        self.since_warning += 1;
        let due = self
            .warned_at
            .is_none_or(|w| at.saturating_duration_since(w) >= SLOW_FLUSH_WARN_EVERY);
        if !due {
            return None;
        }
        self.warned_at = Some(at);
        Some(std::mem::take(&mut self.since_warning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn slow_flushes_warn_once_per_interval_with_the_count_in_between() {
        let mut slow = SlowFlushes::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(slow.note(ms(3), t0), None, "a fast flush is not counted");
        assert_eq!(slow.note(ms(80), t0), Some(1), "the first slow flush warns");
        assert_eq!(slow.note(ms(60), t0 + ms(1_000)), None);
        assert_eq!(slow.note(ms(2), t0 + ms(2_000)), None);
        assert_eq!(slow.note(ms(90), t0 + ms(9_000)), None);
        assert_eq!(
            slow.note(ms(70), t0 + ms(10_000)),
            Some(3),
            "ten seconds on: one warning for the three slow flushes since the last"
        );
        assert_eq!(slow.note(ms(50), t0 + ms(10_001)), None);
    }
}
