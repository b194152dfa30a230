//! Group commit. Writers apply their sled transaction, then wait here; one task runs
//! `Db::flush` on a blocking thread followed by `fdatasync` of sled's data file (sled's
//! own flush uses `sync_file_range`, which survives a process crash but not a power
//! loss) and wakes every writer that was queued before that flush began. One flush
//! acknowledges a whole batch, and `flush` is never called concurrently (sled 0.34.7
//! deadlocks when many tasks flush at once).

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{StoreError, StoreResult};

/// Writers that may wait for one flush before `durable` applies back-pressure.
const QUEUE_DEPTH: usize = 65_536;

type Waiter = oneshot::Sender<StoreResult<()>>;

#[derive(Debug, Default)]
pub struct CommitStats {
    /// Flushes done.
    pub flushes: AtomicU64,
    /// Writers acknowledged.
    pub acknowledged: AtomicU64,
}

pub struct Committer {
    tx: Mutex<Option<mpsc::Sender<Waiter>>>,
    task: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    pub stats: Arc<CommitStats>,
}

impl Committer {
    /// Starts the committer task for `db`, whose data file is `data_file`.
    pub fn start(db: sled::Db, data_file: File) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let stats = Arc::new(CommitStats::default());
        let task = tokio::spawn(run(db, Arc::new(data_file), rx, stats.clone()));
        Self {
            tx: Mutex::new(Some(tx)),
            task: tokio::sync::Mutex::new(Some(task)),
            stats,
        }
    }

    /// Returns once every write that finished before this call is on disk.
    pub async fn durable(&self) -> StoreResult<()> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Closed)?;
        let (waiter, done) = oneshot::channel();
        tx.send(waiter).await.map_err(|_| StoreError::Closed)?;
        done.await.map_err(|_| StoreError::Closed)?
    }

    /// Flushes what is queued, stops the task and lets go of its `Db` handle; later
    /// writes fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(task) = self.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

async fn run(
    db: sled::Db,
    data_file: Arc<File>,
    mut rx: mpsc::Receiver<Waiter>,
    stats: Arc<CommitStats>,
) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let db = db.clone();
        let file = data_file.clone();
        let result = tokio::task::spawn_blocking(move || -> StoreResult<()> {
            db.flush().map_err(|e| StoreError::Io(e.to_string()))?;
            file.sync_data().map_err(|e| StoreError::Io(e.to_string()))
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Io(format!("flush task failed: {e}"))));
        if let Err(e) = &result {
            tracing::error!(error = %e, "store flush failed; writes in this batch are refused");
        }
        stats.flushes.fetch_add(1, Ordering::Relaxed);
        stats
            .acknowledged
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for waiter in batch.drain(..) {
            // A writer that gave up waiting (client went away) is not an error.
            let _ = waiter.send(result.clone());
        }
    }
}
